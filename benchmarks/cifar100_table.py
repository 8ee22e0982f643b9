"""The CIFAR-100 table of KD + augmentation: seven teacher/student pairs, the papers' numbers.

The pairs, recipes and published top-1 accuracies of METHODS.md section 2
(Wang et al., arXiv:2012.02909, Table 3, mean of 3 runs), with the CRD
teachers' accuracies (Tian et al., CRD, ICLR 2020, Tables 1-2: the teachers
every table distils from, trained with `kd-keras train-teacher
--schedule=crd`). `benchmarks/cifar100.py` trains and distils them and
prints `table(...)`: ours beside the paper's.
"""

import dataclasses

# The paper's columns (METHODS.md section 2); CRD is another method, shown
# for reference.
PAPER_COLUMNS = ("KD", "KD 960ep", "+TL-CutMix", "+pick", "+pick 960ep", "CRD")


@dataclasses.dataclass(frozen=True)
class Pair:
    """One teacher -> student pair of the CIFAR-100 table.

    Args:
        label: the paper's name of the pair, e.g. `"ResNet56 -> ResNet20"`.
        teacher: the teacher's `kd_keras.models` zoo name.
        student: the student's zoo name.
        teacher_accuracy: the CRD teacher's CIFAR-100 top-1 (%).
        paper: top-1 (%) of each of `PAPER_COLUMNS`.
    """

    label: str
    teacher: str
    student: str
    teacher_accuracy: float
    paper: dict


def _paper(*values):
    return dict(zip(PAPER_COLUMNS, values))


PAIRS = (
    Pair(
        "WRN-40-2 -> WRN-16-2",
        "wrn_40_2",
        "wrn_16_2",
        75.61,
        _paper(74.92, 75.68, 75.34, 75.59, 76.41, 75.64),
    ),
    Pair(
        "ResNet56 -> ResNet20",
        "resnet56",
        "resnet20",
        72.34,
        _paper(70.66, 71.79, 70.77, 70.99, 71.66, 71.63),
    ),
    Pair(
        "ResNet32x4 -> ResNet8x4",
        "resnet32x4",
        "resnet8x4",
        79.42,
        _paper(73.33, 73.14, 74.91, 74.78, 75.12, 75.46),
    ),
    Pair("VGG13 -> VGG8", "vgg13", "vgg8", 74.64, _paper(72.98, 74.00, 74.16, 74.43, 75.00, 74.29)),
    Pair(
        "VGG13 -> MobileNetV2",
        "vgg13",
        "mobilenetv2",
        74.64,
        _paper(67.37, 68.77, 68.79, 69.49, 70.47, 69.94),
    ),
    Pair(
        "ResNet50 -> VGG8",
        "resnet50",
        "vgg8",
        79.34,
        _paper(73.81, 74.04, 74.85, 74.95, 76.13, 74.58),
    ),
    Pair(
        "ResNet32x4 -> ShuffleV2",
        "resnet32x4",
        "shufflev2",
        79.42,
        _paper(74.45, 74.64, 76.61, 76.90, 77.90, 76.05),
    ),
)


@dataclasses.dataclass(frozen=True)
class Run:
    """One column of our table: a recipe with options, and the paper's column it reproduces.

    Args:
        name: the column's name.
        recipe: a `kd_keras.recipes` name.
        options: recipe overrides (e.g. `{"patient": True}`).
        paper_column: the matching entry of `PAPER_COLUMNS`, or None when
            the paper reports no such number (e.g. mixup).
    """

    name: str
    recipe: str
    options: dict
    paper_column: str = None


RUNS = {
    run.name: run
    for run in (
        Run("kd", "kd", {}, "KD"),
        Run("kd_960", "kd", {"epochs": 960}, "KD 960ep"),
        Run("mixup", "mixup", {}),
        Run("cutmix", "cutmix", {}, "+TL-CutMix"),
        Run("cutmix_pick", "cutmix_pick", {}, "+pick"),
        Run("cutmix_pick_960", "cutmix_pick", {"patient": True}, "+pick 960ep"),
    )
}
DEFAULT_RUNS = ("kd", "mixup", "cutmix", "cutmix_pick")


def get_pair(label):
    """Return the `Pair` whose label (or `"teacher->student"` zoo names) is `label`.

    Args:
        label: e.g. `"ResNet56 -> ResNet20"` or `"resnet56->resnet20"`.

    Returns:
        A `cifar100_table.Pair`.

    Example:
    ```python
    pair = cifar100_table.get_pair("resnet56->resnet20")
    ```
    """
    for pair in PAIRS:
        if label in (pair.label, f"{pair.teacher}->{pair.student}"):
            return pair
    names = ", ".join(f"{p.teacher}->{p.student}" for p in PAIRS)
    raise ValueError(f"Unknown pair {label!r}: choose one of {names}.")


def table(results, teacher_results=None, runs=DEFAULT_RUNS, pairs=PAIRS):
    """Format our CIFAR-100 top-1 beside the paper's, one row per pair (markdown).

    Each cell reads `ours (paper)`; `-` marks a run not made and `n/a` a
    number the paper does not report.

    Args:
        results: `{(pair label, run name): top-1 in %}` of our runs.
        teacher_results: `{pair label: our teacher's top-1 in %}`, shown
            beside the CRD teacher's.
        runs: names of `RUNS`, the columns.
        pairs: the `Pair`s, the rows.

    Returns:
        The table as a string.

    Example:
    ```python
    print(cifar100_table.table({("ResNet56 -> ResNet20", "kd"): 70.1}))
    ```
    """
    unknown = [name for name in runs if name not in RUNS]
    if unknown:
        raise ValueError(f"Unknown run {', '.join(unknown)}: choose from {', '.join(RUNS)}.")
    teacher_results = teacher_results or {}
    header = ["T -> S", "teacher (CRD)", *runs]
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for pair in pairs:
        cells = [pair.label, _cell(teacher_results.get(pair.label), pair.teacher_accuracy)]
        for name in runs:
            column = RUNS[name].paper_column
            cells.append(
                _cell(results.get((pair.label, name)), pair.paper[column] if column else None)
            )
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _cell(ours, paper):
    ours = "-" if ours is None else f"{ours:.2f}"
    paper = "n/a" if paper is None else f"{paper:.2f}"
    return f"{ours} ({paper})"
