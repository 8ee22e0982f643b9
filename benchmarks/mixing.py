"""Benchmark: KD with mixed views (MixUp, CutMix, CutMixPick, function matching) on digits.

Reproduces, at CPU scale, the comparison of Wang et al. (arXiv:2012.02909,
METHODS.md §2) and Beyer et al.'s function matching (§1) on the embedded
digits, with the full training split and a 20% split (the low-data setting
where augmentation should matter most). Rows: the student trained from
scratch with cross-entropy, plain KD, KD + teacher-labelled MixUp, KD +
teacher-labelled CutMix, KD + CutMixPick, function matching, and KD + CutMix
with mixed one-hot labels (no teacher relabelling). Columns: student test
accuracy, mean ± std over seeds; step time relative to plain KD, measured
side by side in this run; forward passes per step of teacher (T) and student
(S), in samples for a batch of B, for kd_keras and for the official code.

Every method uses its kd_keras recipe (SGD 0.05, batch 64, T = 4, ...) with
the schedule shortened to --epochs (decays at the same fractions); function
matching runs without flips (digits are not mirror-symmetric) and, like all
rows, for --epochs rather than its long default.

Usage:
    PYTHONPATH=. python benchmarks/mixing.py                # 30 epochs, 3 seeds
    PYTHONPATH=. python benchmarks/mixing.py --student=small_cnn
    PYTHONPATH=. python benchmarks/mixing.py --quick        # smoke run
    PYTHONPATH=. python benchmarks/mixing.py --quick --settings=full   # smaller smoke run

BatchNorm batches (`--student_forward=per_view,joint`): rows KD and, for each
of --forward_recipes, the recipe with the student run on `x` and `x'` as two
batches of B in train mode (`per_view`, the official Good-DA-in-KD code:
separate BatchNorm statistics) or as one batch of 2B (`joint`); it prints
the joint / per_view step time and accuracy difference per recipe. Use a
student with BatchNorm (`--student=small_cnn`):

    PYTHONPATH=. python benchmarks/mixing.py --student=small_cnn --settings=full \
        --student_forward=per_view,joint
"""

import dataclasses
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import app  # noqa: E402
from absl import flags  # noqa: E402

import kd_keras  # noqa: E402
import kd_keras.shipped  # noqa: E402
from kd_keras.recipes import build  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_integer("epochs", 30, "Training epochs of every method.")
flags.DEFINE_integer("seeds", 3, "Seeds per method (mean ± std).")
# mlp by default, the README's tables; small_cnn (conv-BN blocks, 99.1% with
# plain KD in 30 epochs) is the student with BatchNorm for --student_forward.
flags.DEFINE_enum("student", "mlp", ["mlp", "small_cnn"], "Student architecture.")
flags.DEFINE_integer("timing_steps", 20, "Steps per method and round of the timing.")
flags.DEFINE_integer("timing_rounds", 5, "Interleaved timing rounds (the median is kept).")
flags.DEFINE_bool("quick", False, "Smoke run: 1 epoch, 1 seed, a few timed steps.")
flags.DEFINE_list(
    "student_forward",
    [],
    "Compare the Distiller's student_forward modes (per_view, joint) on "
    "--forward_recipes instead of the method table; empty: the method table.",
)
flags.DEFINE_list(
    "forward_recipes", ["cutmix", "mixup"], "Recipes of the --student_forward comparison."
)
FORWARDS = ("per_view", "joint")

SETTINGS = (("full", 1.0), ("20%", 0.2))
flags.DEFINE_list(
    "settings",
    [name for name, _ in SETTINGS],
    "Training splits to run, the accuracy columns: full and/or 20%.",
)


@dataclasses.dataclass
class Method:
    label: str
    recipe: str  # None: cross-entropy only, no teacher.
    overrides: dict
    passes: str  # forward passes per step, kd_keras
    official: str  # forward passes per step, the official code


METHODS = (
    Method("student from scratch (CE)", None, {}, "T 0 | S B", "T 0 | S B"),
    Method("KD", "kd", {}, "T B | S B", "T B | S B"),
    Method("KD + TL-MixUp", "mixup", {}, "T 2B | S 2B", "T 2B | S 2B"),
    Method("KD + TL-CutMix", "cutmix", {}, "T 2B | S 2B", "T 2B | S 2B"),
    # Scoring: one gradient-free student pass over the 2B candidates; the
    # official code also re-runs the teacher on the B picked samples.
    Method("KD + CutMixPick", "cutmix_pick", {}, "T 3B | S 2B+2B", "T 4B | S 2B+2B"),
    Method("funmatch", "funmatch", {"flip": False}, "T B | S B", "T B | S B"),
    # The official baseline has no KD term on x' (teacher skips it); here
    # the Distiller's KD term covers x' too (see kd_keras.augment.CutMix).
    Method("KD + CutMix, mixed 1-hot", "cutmix", {"relabel": False}, "T 2B | S 2B", "T B | S 2B"),
)


def forward_methods(forwards, recipes):
    """KD (the timing's reference) and each recipe under each `student_forward` mode.

    Args:
        forwards: `student_forward` values, `"per_view"` and/or `"joint"`.
        recipes: recipe names, e.g. `["cutmix", "mixup"]`.

    Returns:
        A list of `Method`s, KD first.
    """
    labels = {"cutmix": "KD + TL-CutMix", "mixup": "KD + TL-MixUp"}
    methods = [METHODS[1]]
    for recipe in recipes:
        for forward in forwards:
            methods.append(
                Method(
                    f"{labels.get(recipe, recipe)}, {forward}",
                    recipe,
                    {"student_forward": forward},
                    "T 2B | S B+B" if forward == "per_view" else "T 2B | S 2B",
                    # The official code: two student passes of B in train mode.
                    "T 2B | S B+B",
                )
            )
    return methods


def chosen_methods():
    """The rows of this run: the method table, or the student_forward comparison."""
    if not FLAGS.student_forward:
        return METHODS
    unknown = set(FLAGS.student_forward) - set(FORWARDS)
    if unknown:
        raise app.UsageError(
            f"--student_forward={','.join(FLAGS.student_forward)}: use per_view and/or joint"
        )
    return forward_methods(FLAGS.student_forward, FLAGS.forward_recipes)


def load_teacher():
    return kd_keras.resolve.load_model(kd_keras.shipped.path(kd_keras.shipped.DIGITS_TEACHER))


def build_student(seed, bundle):
    keras.utils.set_random_seed(seed)
    return kd_keras.models.get(FLAGS.student, bundle.input_shape, bundle.num_classes)


def accuracy(model, data):
    x, y = data
    logits = model.predict(x, batch_size=256, verbose=0)
    return float(np.mean(np.argmax(logits, axis=-1) == y))


def compile_scratch(student, steps_per_epoch, epochs):
    """Cross-entropy only, with the kd recipe's optimiser and schedule."""
    student.compile(
        optimizer=build.optimizer(kd_keras.recipes.get("kd"), steps_per_epoch, epochs),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )


def train_scratch(student, bundle, epochs, seed):
    keras.utils.set_random_seed(seed)
    batch_size = kd_keras.recipes.get("kd")["batch_size"]
    train = kd_keras.data.pipeline(bundle.train, batch_size, True, seed=seed)
    compile_scratch(student, int(train.cardinality()), epochs)
    student.fit(train, epochs=epochs, verbose=0)
    return student


def train(method, teacher, bundle, epochs, seed):
    student = build_student(seed, bundle)
    if method.recipe is None:
        return train_scratch(student, bundle, epochs, seed)
    distiller = kd_keras.distill(
        teacher,
        student,
        bundle.train,
        recipe=method.recipe,
        epochs=epochs,
        seed=seed,
        verbose=0,
        **method.overrides,
    )
    return distiller.student


def step_times(methods, teacher, bundle, steps, rounds):
    """Seconds per training step of each method, timed in interleaved rounds."""
    x, y = bundle.train
    batch = kd_keras.recipes.get("kd")["batch_size"]
    # Tensors, not NumPy arrays: each new array would retrace the step.
    x, y = tf.constant(x[:batch]), tf.constant(y[:batch])
    runners = []
    for method in methods:
        student = build_student(0, bundle)
        if method.recipe is None:
            compile_scratch(student, steps_per_epoch=100, epochs=1)
            runners.append(student)
            continue
        config = kd_keras.recipes.get(method.recipe, method.overrides)
        distiller = build.distiller(config, teacher, student)
        build.compile(distiller, config, steps_per_epoch=100, epochs=1)
        runners.append(distiller)
    for runner in runners:  # trace and warm up
        for _ in range(3):
            runner.train_on_batch(x, y)
    times = [[] for _ in methods]
    for _ in range(rounds):
        for index, runner in enumerate(runners):
            start = time.perf_counter()
            for _ in range(steps):
                runner.train_on_batch(x, y)
            times[index].append((time.perf_counter() - start) / steps)
    return [float(np.median(t)) for t in times]


def main(argv):
    del argv
    epochs, seeds = FLAGS.epochs, FLAGS.seeds
    steps, rounds = FLAGS.timing_steps, FLAGS.timing_rounds
    if FLAGS.quick:
        epochs, seeds, steps, rounds = 1, 1, 3, 1
    teacher = load_teacher()
    unknown = set(FLAGS.settings) - {name for name, _ in SETTINGS}
    if unknown or not FLAGS.settings:
        raise app.UsageError(f"--settings={','.join(FLAGS.settings)}: use full and/or 20%")
    settings = [(name, f) for name, f in SETTINGS if name in FLAGS.settings]
    bundles = {name: kd_keras.data.load_digits(train_fraction=f) for name, f in settings}
    # The timing's batch and the teacher's score come from the full split.
    full = bundles["full"] if "full" in bundles else kd_keras.data.load_digits()
    print(
        f"digits: teacher {accuracy(teacher, full.test):.2%} test accuracy; student "
        f"{FLAGS.student}; {epochs} epochs; {seeds} seed(s); train sizes "
        + ", ".join(f"{name} {len(b.train[1])}" for name, b in bundles.items())
    )
    methods = chosen_methods()
    results = {}
    for method in methods:
        for name, bundle in bundles.items():
            scores = [
                accuracy(train(method, teacher, bundle, epochs, seed), bundle.test)
                for seed in range(seeds)
            ]
            results[method.label, name] = scores
            print(
                f"  {method.label:<26} {name:>4}: " + " ".join(f"{s:.2%}" for s in scores),
                flush=True,
            )
    times = step_times(methods, teacher, full, steps, rounds)
    kd_time = times[[m.recipe for m in methods].index("kd")]

    header = (
        f"{'method':<26} "
        + " ".join(f"{'acc ' + n + ' (%)':>14}" for n, _ in settings)
        + f" {'step vs KD':>10}  {'passes/step, kd_keras':<22} {'official':<16}"
    )
    print()
    print(header)
    print("-" * len(header))
    for method, seconds in zip(methods, times):
        cells = []
        for name, _ in settings:
            scores = 100 * np.array(results[method.label, name])
            cells.append(f"{scores.mean():6.2f} ± {scores.std():4.2f}".rjust(14))
        print(
            f"{method.label:<26} {' '.join(cells)} {seconds / kd_time:9.2f}x  "
            f"{method.passes:<22} {method.official:<16}"
        )
    print(
        "\npasses: samples through the teacher (T) and student (S) per step for a "
        "batch of B; S includes CutMixPick's gradient-free scoring pass over its 2B "
        f"candidates. Plain KD step: {1000 * kd_time:.1f} ms (batch 64, jit off)."
    )
    if set(FLAGS.student_forward) == set(FORWARDS):
        print_forward_comparison(methods, times, results, settings)


def print_forward_comparison(methods, times, results, settings):
    """Print, per recipe, the joint / per_view step time and accuracy difference.

    Args:
        methods: the run's `Method`s (from `forward_methods`).
        times: seconds per step, one per method.
        results: `{(label, setting): [accuracy per seed]}`.
        settings: the run's `(setting name, train fraction)` pairs.
    """
    print("\njoint vs per_view (accuracy: joint - per_view, pp; the per-seed std of each):")
    for recipe in FLAGS.forward_recipes:
        rows = {
            m.overrides["student_forward"]: i for i, m in enumerate(methods) if m.recipe == recipe
        }
        joint, per_view = methods[rows["joint"]], methods[rows["per_view"]]
        cells = []
        for name, _ in settings:
            a = 100 * np.array(results[joint.label, name])
            b = 100 * np.array(results[per_view.label, name])
            cells.append(f"{name} {a.mean() - b.mean():+.2f} (std {a.std():.2f} / {b.std():.2f})")
        print(
            f"  {recipe}: step time joint / per_view "
            f"{times[rows['joint']] / times[rows['per_view']]:.2f}x; " + "; ".join(cells)
        )


if __name__ == "__main__":
    app.run(main)
