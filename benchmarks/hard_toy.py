"""Benchmark: HARD's toys, a CNN teacher's shift invariance distilled into an MLP.

Two datasets (`--dataset`):

- `digits`, the toy of Nix, Burg, Sinz (HARD, 2023; METHODS.md §3): the
  shipped digits CNN teacher (shift equivariant by construction) is distilled
  into an MLP (`kd_keras.models.mlp`, 128 x 2) on *centred* digits only, and
  the student is tested on the centred test digits and on their copy shifted
  by random whole pixels in [-6, 6]^2 (`kd_keras.data.load_digits()`). Every
  distillation row uses its recipe (SGD 0.05, batch 64, T = 4, ...) with the
  schedule shortened to --epochs (30 by default).
- `mnist1d` (Greydanus & Kobak; offline `make_dataset`, never `get_dataset`):
  4,000 / 1,000 standardised sequences of length 40 given as (1, 40, 1)
  images. The teacher is a CNN of 3 x Conv (25 filters, kernel 5 along the
  sequence, stride 2, ReLU) -> dense, trained here with Adam 1e-2, batch 100,
  and cached under /tmp; the student an MLP 100-100. Every row trains with
  Adam 1e-2, batch 100, for --epochs (60 by default), with the recipe's
  losses, augmenter and phase schedule. There is one test set (MNIST-1D is
  already translated), so the score is test accuracy.

Rows (`ROWS`, every variant of the study in benchmarks/HARD_STUDY.md, kept or
not): the MLP trained with cross-entropy, plain KD, the reference *told*
about translations (KD with a host-side random whole-pixel roll of every
training image: [-6, 6]^2 on digits, whose canvas margins are 6 pixels so
nothing wraps; [-8, 8] samples on MNIST-1D, circular like MNIST-1D's own
translation), KD on `[x, x~]` with told random translations, and HARD with
each `SpatialAugmenter` sampler. HARD's warps are never told which
transformation matters: rotation 30 degrees, scale 0.2, shear 0.3,
translation 0.25 of the side (on 1-row inputs only scale and translation
along the row).

Columns: clean and shifted accuracy (digits) or test accuracy (MNIST-1D),
mean ± std over seeds; training time per epoch relative to KD (measured in
this run; the machine may be shared); the epochs a run needs to reach 90% of
its final (shifted on digits, test on MNIST-1D) accuracy, mean over seeds.
The accuracy is measured after every epoch, for that column and the plot
(--plot, a PNG of accuracy vs epoch for KD, the told reference and HARD).

--validation trains on three quarters of the training split and scores on
the held-out quarter (and, on digits, a shifted copy of it), never on the
test set: that is how the `hard` defaults were chosen. `--rows` picks rows by
key; `--hard_overrides` adds a row `hard+` with the `hard` recipe and these
key=value overrides.

Usage:
    PYTHONPATH=. python benchmarks/hard_toy.py                    # digits, 30 epochs, 3 seeds
    PYTHONPATH=. python benchmarks/hard_toy.py --dataset=mnist1d  # 60 epochs, 3 seeds
    PYTHONPATH=. python benchmarks/hard_toy.py --validation --seeds=1 --rows=kd,hard
    PYTHONPATH=. python benchmarks/hard_toy.py --quick            # smoke run
"""

import ast
import dataclasses
import json
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402

# The benchmark shares a 2-core machine: one thread, like every experiment
# of the study (set before TensorFlow runs any op).
tf.config.threading.set_intra_op_parallelism_threads(1)
tf.config.threading.set_inter_op_parallelism_threads(1)

import keras  # noqa: E402
import numpy as np  # noqa: E402
from absl import app  # noqa: E402
from absl import flags  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402

import kd_keras  # noqa: E402
import kd_keras.shipped  # noqa: E402
from kd_keras.recipes import build  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_enum("dataset", "digits", ["digits", "mnist1d"], "Which toy.")
flags.DEFINE_integer("epochs", None, "Training epochs (default 30 digits, 60 mnist1d).")
flags.DEFINE_integer("seeds", 3, "Seeds per method (mean ± std).")
flags.DEFINE_bool(
    "validation",
    False,
    "Train on 3/4 of the training split and score on the held-out 1/4 (and a "
    "shifted copy of it on digits) instead of the test set.",
)
flags.DEFINE_list("rows", [], "Row keys to run (default: all); see ROWS.")
flags.DEFINE_list(
    "hard_overrides",
    [],
    "Add a row 'hard+': the hard recipe with key=value overrides, e.g. candidates=4.",
)
flags.DEFINE_string("plot", None, "Write a PNG of accuracy vs epoch here.")
flags.DEFINE_string("json", None, "Write every run's scores and curves here (JSON).")
flags.DEFINE_bool(
    "quick", False, "Smoke run: 1 epoch, 1 seed (and a 1-epoch MNIST-1D teacher, not cached)."
)

MAX_SHIFT = {"digits": 6, "mnist1d": 8}  # the told reference's shifts
# The validation split is fixed, whatever the training seed.
VALIDATION_SEED = 100
MNIST1D_TEACHER = "/tmp/kd_keras_hard_mnist1d_teacher_{split}.keras"


@dataclasses.dataclass
class Row:
    key: str
    label: str
    recipe: str = "hard"  # None: cross-entropy only, no teacher.
    overrides: dict = dataclasses.field(default_factory=dict)
    shift: bool = False  # host-side random shifts of every training image
    plot: bool = False  # drawn in --plot


# The shipped default of `hard` is the row "hard"; the others spell out what
# they change. "told" rows know that translations matter; no HARD row does.
TRANSLATION_ONLY = dict(max_rotation=0.0, max_scale=0.0, max_shear=0.0)
ROWS = (
    Row("ce", "MLP from scratch (CE)", recipe=None),
    Row("kd", "KD", recipe="kd", plot=True),
    Row("told", "KD + random shifts (reference, told)", recipe="kd", shift=True, plot=True),
    Row(
        "told_views",
        "KD on [x, x~], x~ random translation (told)",
        overrides=dict(sampler="uniform", candidates=1, **TRANSLATION_ONLY),
    ),
    Row(
        "told_views_nearest",
        "KD on [x, x~], x~ random translation, nearest (told)",
        overrides=dict(
            sampler="uniform", candidates=1, interpolation="nearest", **TRANSLATION_ONLY
        ),
    ),
    Row(
        "network_noise",
        "HARD network, noise only (previous default)",
        overrides=dict(sampler="network", image_conditioned=False, candidates=1),
    ),
    Row(
        "network_image",
        "HARD network, image-conditioned",
        overrides=dict(sampler="network", image_conditioned=True, candidates=1, lambda_t=1.0),
    ),
    Row(
        "network_floor",
        "HARD network, image-conditioned + spread floor 0.3",
        overrides=dict(sampler="network", image_conditioned=True, candidates=1, spread_floor=0.3),
    ),
    Row(
        "uniform",
        "random affine, full family (k=1)",
        overrides=dict(sampler="uniform", candidates=1),
    ),
    Row(
        "uniform_nearest",
        "random affine, full family (k=1), nearest",
        overrides=dict(sampler="uniform", candidates=1, interpolation="nearest"),
    ),
    Row("worst4", "HARD worst-of-4 random affine", overrides=dict(sampler="uniform", candidates=4)),
    Row("worst8", "HARD worst-of-8 random affine", overrides=dict(sampler="uniform", candidates=8)),
    Row(
        "worst16",
        "HARD worst-of-16 random affine",
        overrides=dict(sampler="uniform", candidates=16),
    ),
    Row(
        "worst4_pgd",
        "HARD worst-of-4 + 2 PGD steps",
        overrides=dict(sampler="uniform", candidates=4, refine_steps=2),
    ),
    Row(
        "worst8_nearest",
        "HARD worst-of-8 random affine, nearest",
        overrides=dict(sampler="uniform", candidates=8, interpolation="nearest"),
    ),
    Row(
        "g1_worst4",
        "HARD worst-of-4 random affine, one group per draw, nearest",
        overrides=dict(sampler="uniform", candidates=4, groups_per_view=1, interpolation="nearest"),
    ),
    Row(
        "g1_worst8",
        "HARD worst-of-8 random affine, one group per draw, nearest",
        overrides=dict(sampler="uniform", candidates=8, groups_per_view=1, interpolation="nearest"),
    ),
    Row(
        "ag_worst4",
        "HARD worst-of-4, one group per draw, learned group rates, nearest",
        overrides=dict(
            sampler="uniform",
            candidates=4,
            groups_per_view=1,
            adaptive_groups=True,
            interpolation="nearest",
        ),
    ),
    Row(
        "s8",
        "HARD worst-of-8 random affine, student-scored, nearest",
        overrides=dict(sampler="uniform", candidates=8, score="student", interpolation="nearest"),
    ),
    Row(
        "s32",
        "HARD worst-of-32 random affine, student-scored, nearest",
        overrides=dict(sampler="uniform", candidates=32, score="student", interpolation="nearest"),
    ),
    Row(
        "s32_told",
        "worst-of-32 random translation, student-scored, nearest (told)",
        overrides=dict(
            sampler="uniform",
            candidates=32,
            score="student",
            interpolation="nearest",
            **TRANSLATION_ONLY,
        ),
    ),
    Row(
        "gaussian",
        "HARD learned Gaussian per image, entropy 0.1",
        overrides=dict(
            sampler="gaussian", image_conditioned=True, candidates=1, entropy_weight=0.1
        ),
    ),
    Row(
        "gaussian_ce",
        "HARD learned Gaussian per image, entropy 0.1, CE consistency",
        overrides=dict(
            sampler="gaussian",
            image_conditioned=True,
            candidates=1,
            entropy_weight=0.1,
            consistency="ce",
        ),
    ),
    Row(
        "gaussian_worst4",
        "HARD learned Gaussian, worst of 4 draws",
        overrides=dict(
            sampler="gaussian", image_conditioned=True, candidates=4, entropy_weight=0.1
        ),
    ),
    Row(
        "gaussian_global",
        "HARD learned Gaussian, shared by all images, entropy 0.1",
        overrides=dict(
            sampler="gaussian", image_conditioned=False, candidates=1, entropy_weight=0.1
        ),
    ),
    Row(
        "gaussian_global_worst4",
        "HARD learned shared Gaussian, worst of 4 draws, nearest",
        overrides=dict(
            sampler="gaussian",
            image_conditioned=False,
            candidates=4,
            entropy_weight=0.1,
            interpolation="nearest",
        ),
    ),
    Row("hard", "HARD (recipe default)", plot=True),
)


def random_shift(max_shift, axes):
    """A host-side `(image, label)` map rolling the image by whole pixels on `axes`."""

    def shift(image, label):
        offsets = tf.random.uniform((len(axes),), -max_shift, max_shift + 1, tf.int32)
        return tf.roll(image, offsets, axis=axes), label

    return shift


def digits_splits(validation):
    """Return `(train, clean, shifted)` `(x, y)` pairs of the chosen evaluation."""
    bundle = kd_keras.data.load_digits(max_shift=MAX_SHIFT["digits"])
    if not validation:
        return bundle.train, bundle.test, bundle.test_shifted
    x, y = bundle.train
    x_fit, x_val, y_fit, y_val = train_test_split(
        x, y, test_size=0.25, stratify=y, random_state=VALIDATION_SEED
    )
    # Cut the 16 x 16 digits back out of the canvas and paste them shifted,
    # exactly as load_digits builds test_shifted.
    canvas, side = x.shape[1], 16
    top = (canvas - side) // 2
    digits = x_val[:, top : top + side, top : top + side, 0]
    rng = np.random.default_rng(VALIDATION_SEED)
    offsets = rng.integers(-MAX_SHIFT["digits"], MAX_SHIFT["digits"] + 1, (len(x_val), 2))
    shifted = kd_keras.data.place_on_canvas(digits, canvas, offsets)
    return (x_fit, y_fit), (x_val, y_val), (shifted, y_val)


def mnist1d_splits(validation):
    """Return `(train, test, None)`: MNIST-1D as `(n, 1, 40, 1)` float32 images."""
    from mnist1d.data import get_dataset_args
    from mnist1d.data import make_dataset

    data = make_dataset(get_dataset_args())  # offline; get_dataset downloads

    def images(x):
        return np.asarray(x, "float32")[:, None, :, None]

    x, y = images(data["x"]), np.asarray(data["y"], "int32")
    if not validation:
        return (x, y), (images(data["x_test"]), np.asarray(data["y_test"], "int32")), None
    x_fit, x_val, y_fit, y_val = train_test_split(
        x, y, test_size=0.25, stratify=y, random_state=VALIDATION_SEED
    )
    return (x_fit, y_fit), (x_val, y_val), None


def mnist1d_teacher(train_data, validation, quick=False):
    """The MNIST-1D CNN teacher, trained once on `train_data` and cached in /tmp.

    `quick` trains it for one epoch and never caches it (nor reads the
    cache), so a smoke run neither waits for nor leaves behind a weak teacher.
    """
    path = MNIST1D_TEACHER.format(split="validation" if validation else "full")
    if os.path.exists(path) and not quick:
        return keras.saving.load_model(path)
    keras.utils.set_random_seed(0)
    inputs = keras.Input(train_data[0].shape[1:])
    h = inputs
    for _ in range(3):
        h = keras.layers.Conv2D(25, (1, 5), strides=(1, 2), padding="same", activation="relu")(h)
    outputs = keras.layers.Dense(10)(keras.layers.Flatten()(h))
    teacher = keras.Model(inputs, outputs, name="mnist1d_cnn")
    teacher.compile(
        keras.optimizers.Adam(1e-2),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    teacher.fit(*train_data, batch_size=100, epochs=1 if quick else 60, verbose=0)
    if not quick:
        teacher.save(path)
    return teacher


def parse_overrides(items):
    overrides = {}
    for item in items:
        key, _, value = item.partition("=")
        value = value.strip()
        try:
            overrides[key.strip()] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            overrides[key.strip()] = value  # a bare string, e.g. sampler=uniform
    return overrides


def accuracy(model, data):
    x, y = data
    logits = np.concatenate(
        [model(x[i : i + 512], training=False).numpy() for i in range(0, len(x), 512)]
    )
    return float(np.mean(np.argmax(logits, axis=-1) == y))


class Curve(keras.callbacks.Callback):
    """Scores the student after every epoch and times the epochs' training."""

    def __init__(self, student, evaluations):
        super().__init__()
        self.student = student
        self.evaluations = evaluations  # name -> (x, y)
        self.scores = {name: [] for name in evaluations}
        self.train_seconds = 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self._started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.train_seconds += time.perf_counter() - self._started
        for name, data in self.evaluations.items():
            self.scores[name].append(accuracy(self.student, data))


def train(row, teacher, train_data, evaluations, epochs, seed, dataset):
    """Train one student; return its `Curve` and its (student, augmenter) steps."""
    # Seeded before the recipe is built: the augmenters' noise seeds are
    # drawn when they are constructed.
    keras.utils.set_random_seed(seed)
    shape = train_data[0].shape[1:]
    width = 100 if dataset == "mnist1d" else 128
    student = kd_keras.models.get("mlp", shape, 10, width=width)
    curve = Curve(student, evaluations)
    shift = random_shift(MAX_SHIFT[dataset], [0, 1] if dataset == "digits" else [1])
    if row.recipe is None:
        config = kd_keras.recipes.get("kd")
        batch_size = 100 if dataset == "mnist1d" else config["batch_size"]
        batches = kd_keras.data.pipeline(train_data, batch_size, True, seed=seed)
        optimizer = (
            keras.optimizers.Adam(1e-2)
            if dataset == "mnist1d"
            else build.optimizer(config, int(batches.cardinality()), epochs)
        )
        student.compile(
            optimizer=optimizer,
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
        student.fit(batches, epochs=epochs, verbose=0, shuffle=False, callbacks=[curve])
        return curve, (int(student.optimizer.iterations.numpy()), 0)
    overrides = dict(row.overrides)
    if row.recipe == "hard" and dataset == "mnist1d":
        # Pixels warped in from outside a standardised signal read its mean.
        overrides.setdefault("fill_value", 0.0)
    config = kd_keras.recipes.get(row.recipe, overrides)
    # The told rows' shifts are the data's own augmentation: a config names
    # only the recipes' host policies (PBA), not a Python function.
    host_augment = shift if row.shift else None
    if dataset == "digits":
        distiller = kd_keras.distill(
            teacher,
            student,
            train_data,
            recipe=config,
            epochs=epochs,
            seed=seed,
            verbose=0,
            callbacks=[curve],
            data_augmentation=host_augment,
        )
    else:
        # MNIST-1D's setting: Adam 1e-2 at batch 100, no decay, no XLA, for
        # every row (the augmenter keeps its recipe's optimiser).
        config["optimizer"] = {"class_name": "Adam", "learning_rate": 1e-2}
        config["schedule"] = None
        config["jit_compile"] = False
        distiller = build.distiller(config, teacher, student)
        batches = kd_keras.data.pipeline(train_data, 100, True, augment=host_augment, seed=seed)
        build.compile(distiller, config, int(batches.cardinality()), epochs)
        distiller.fit(
            batches,
            epochs=build.fit_epochs(config, epochs),
            verbose=0,
            shuffle=False,
            callbacks=[*build.callbacks(config, epochs), curve],
        )
    augmenter_steps = (
        int(distiller.augmenter_optimizer.iterations.numpy())
        if distiller.augmenter_optimizer is not None
        else 0
    )
    if getattr(distiller.augmenter, "adaptive_groups", False):
        # What the augmenter learned to draw: rotation, scale, shear, translation.
        curve.groups = [round(float(p), 3) for p in distiller.augmenter.group_probabilities()]
    return curve, (int(distiller.optimizer.iterations.numpy()), augmenter_steps)


def epochs_to(curve, fraction=0.9):
    """The first epoch (1-based) at which `curve` reaches `fraction` of its final value."""
    curve = np.asarray(curve)
    return int(np.argmax(curve >= fraction * curve[-1])) + 1


def plot(path, results, rows, metric, title):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6.4, 4.2))
    for row in rows:
        curves = 100 * np.array([run["curves"][metric] for run in results[row.key]])
        epochs = np.arange(1, curves.shape[1] + 1)
        mean, std = curves.mean(axis=0), curves.std(axis=0)
        (line,) = axis.plot(epochs, mean, label=row.label)
        axis.fill_between(epochs, mean - std, mean + std, alpha=0.2, color=line.get_color())
    axis.set_xlabel("epoch")
    axis.set_ylabel(f"{metric} accuracy (%)")
    axis.set_title(title)
    axis.grid(alpha=0.3)
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def main(argv):
    del argv
    dataset = FLAGS.dataset
    epochs = FLAGS.epochs or (60 if dataset == "mnist1d" else 30)
    seeds = FLAGS.seeds
    if FLAGS.quick:
        epochs, seeds = 1, 1
    rows = list(ROWS)
    if FLAGS.hard_overrides:
        rows.append(
            Row(
                "hard+",
                f"hard + {','.join(FLAGS.hard_overrides)}",
                overrides=parse_overrides(FLAGS.hard_overrides),
            )
        )
    if FLAGS.rows:
        unknown = set(FLAGS.rows) - {row.key for row in rows}
        if unknown:
            raise app.UsageError(f"unknown rows {sorted(unknown)}")
        rows = [row for row in rows if row.key in FLAGS.rows or row.key == "hard+"]
    if dataset == "digits":
        train_data, clean, shifted = digits_splits(FLAGS.validation)
        teacher = kd_keras.resolve.load_model(
            kd_keras.shipped.path(kd_keras.shipped.DIGITS_TEACHER)
        )
        evaluations = {"clean": clean, "shifted": shifted}
        metric = "shifted"
    else:
        train_data, clean, _ = mnist1d_splits(FLAGS.validation)
        teacher = mnist1d_teacher(train_data, FLAGS.validation, quick=FLAGS.quick)
        evaluations = {"test": clean}
        metric = "test"
    split = "validation (held-out 1/4 of train)" if FLAGS.validation else "test"
    print(
        f"{dataset}, {split}: teacher "
        + ", ".join(f"{accuracy(teacher, d):.2%} {n}" for n, d in evaluations.items())
        + f"; student mlp; {epochs} epochs; {seeds} seed(s); "
        f"{len(train_data[1])} training samples",
        flush=True,
    )
    results = {}
    for row in rows:
        runs = []
        for seed in range(seeds):
            curve, steps = train(row, teacher, train_data, evaluations, epochs, seed, dataset)
            runs.append(
                {
                    "final": {name: scores[-1] for name, scores in curve.scores.items()},
                    "curves": curve.scores,
                    "train_seconds": curve.train_seconds,
                    "steps": steps,
                    "groups": getattr(curve, "groups", None),
                }
            )
        results[row.key] = runs
        print(
            f"  {row.key:<16} "
            + " ".join("/".join(f"{run['final'][n]:.2%}" for n in evaluations) for run in runs)
            + f"  ({np.mean([r['train_seconds'] for r in runs]):.0f} s training per run)"
            + "".join(f" groups(rot,scale,shear,trans)={r['groups']}" for r in runs if r["groups"]),
            flush=True,
        )
    if FLAGS.json:
        with open(FLAGS.json, "w") as file:
            json.dump(
                {
                    "dataset": dataset,
                    "split": split,
                    "epochs": epochs,
                    "labels": {r.key: r.label for r in rows},
                    "results": results,
                },
                file,
                indent=1,
            )

    baseline = np.mean([run["train_seconds"] for run in results["kd"]]) if "kd" in results else None
    names = list(evaluations)
    print()
    print(
        "| key | method | "
        + " | ".join(f"{n} (%)" for n in names)
        + f" | time vs KD | epochs to 90% ({metric}) | steps (student+augmenter) |"
    )
    print("|---|---|" + "---|" * (len(names) + 3))
    print(
        "| teacher | teacher (CNN) | "
        + " | ".join(f"{100 * accuracy(teacher, evaluations[n]):.2f}" for n in names)
        + " | - | - | - |"
    )
    for row in rows:
        runs = results[row.key]
        cells = []
        for name in names:
            scores = 100 * np.array([run["final"][name] for run in runs])
            cells.append(f"{scores.mean():.2f} ± {scores.std():.2f}")
        seconds = np.mean([run["train_seconds"] for run in runs])
        cost = f"{seconds / baseline:.2f}x" if baseline else f"{seconds:.0f} s"
        to90 = np.mean([epochs_to(run["curves"][metric]) for run in runs])
        steps = runs[0]["steps"]
        print(
            f"| {row.key} | {row.label} | "
            + " | ".join(cells)
            + f" | {cost} | {to90:.1f} | {steps[0]}+{steps[1]} |"
        )
    if FLAGS.plot:
        drawn = [row for row in rows if row.plot and row.key in results]
        plot(
            FLAGS.plot,
            results,
            drawn,
            metric,
            f"{dataset} ({split}), MLP student, mean ± std over {seeds} seed(s)",
        )
        print(f"\nwrote {FLAGS.plot}")


if __name__ == "__main__":
    app.run(main)
