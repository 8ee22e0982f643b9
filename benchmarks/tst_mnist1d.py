"""Benchmark: TST's learned augmentation policy vs the same ops not learned, on MNIST-1D.

TST's central claim (Shao et al., IJCAI 2023, METHODS.md §4): a policy
*trained* to make views the teacher gets right and the student gets wrong
teaches better than the same ops applied without that training. On MNIST-1D
(the shipped CNN teacher, 90.0%, into the paper's MLP 100-100), rows:

- KD: no augmentation;
- KD + shifts: random shifts of up to 8 samples (the hand-told augmentation
  of `benchmarks/kd_thrives.py`, as a reference);
- KD + TST ops at the prior: TST's augmenter (`kd_keras.augment.LearnedPolicy`,
  the same ops, k = 4 per batch, relaxed-Bernoulli gates) frozen at its
  prior m = p = 0.5 for every op: the recipe `tst` with no policy phase.
  This is exactly the policy TST starts from, so the row differs from TST
  only by the policy training (the main control);
- KD + TST ops at random: the same augmenter with every op's magnitude and
  probability redrawn uniformly in (0.02, 0.98) for every batch, never
  trained (RandAugment-like: random, not learned);
- TST: the recipe `tst`, its policy trained in its phases at the recipe's
  fractions of the run (starts 30 and 90 of 240 epochs, 30 epochs each:
  at 60 epochs, two phases of 8 epochs inserted before student epochs 8
  and 23), SGD 0.01 momentum 0.9 reset per phase (the recipe's).

Every row uses `benchmarks/kd_thrives.py`'s settings, not the TST recipe's
CIFAR ones: Adam 1e-2 constant, batch 100 (TST and the TST-ops rows train on
the 100 clean + 100 augmented of each batch together, as TST does), T = 4,
`0.1 CE + 0.9 KD` (on both halves for the TST rows), 60 epochs.

Adaptations MNIST-1D needs (no library change):

- TST's ops assume inputs in [0, 1]; MNIST-1D is standardised (train range
  -5.48..4.53). All rows train on `x01 = 0.5 + x / 11` and teacher and
  student are wrapped in a weightless `Rescaling` back to `x`, so the
  networks see MNIST-1D's values; translations and Cutout fill with 0.5
  (the standardised 0, as the shifts row does).
- The op set: TST's 14 ops minus those that do nothing on a one-row, one-
  channel signal (ShearX, Color, Equalize: identity; measured) or fail on
  it (Sharpness, whose 3x3 smoothing needs height >= 3): ShearY,
  TranslateX, TranslateY, Rotate, Brightness, Contrast, Posterize,
  Solarize, Invert, Cutout. On one row, TranslateX is a shift along the
  signal, ShearY/TranslateY/Rotate blend the signal towards the fill.

Scores: student test accuracy at the end (and each epoch, for the plot) and
its agreement with the teacher on the test split, mean ± std over seeds,
on the full training split and a stratified 20% split. `--validation`
scores on 800 held-out training sequences instead (training on the other
3,200, or 20% of them), for any tuning; nothing here was tuned.

Usage:
    PYTHONPATH=. python benchmarks/tst_mnist1d.py                 # 60 epochs, 3 seeds
    PYTHONPATH=. python benchmarks/tst_mnist1d.py --quick         # smoke run
"""

import json
import math
import os
import time
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import app  # noqa: E402
from absl import flags  # noqa: E402

import kd_keras  # noqa: E402
import kd_keras.shipped  # noqa: E402
from kd_keras.augment.tst import LearnedPolicy  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_integer("epochs", 60, "Student epochs of every row.")
flags.DEFINE_integer("seeds", 3, "Seeds per row (0, 1, ...).")
flags.DEFINE_list("rows", None, "Rows to run (default: all).")
flags.DEFINE_list("settings", ["full", "20%"], "Training splits: full and/or 20%.")
flags.DEFINE_bool("quick", False, "Smoke run: 2 epochs, 1 seed, the 20% split.")
flags.DEFINE_bool(
    "validation",
    False,
    "Score on 800 held-out training sequences (train on the rest), never the test split.",
)
flags.DEFINE_integer("max_shift", 8, "Largest shift of the shifts row, in samples.")
flags.DEFINE_string(
    "json", "benchmarks/tst_mnist1d.json", "Where to write the results ('' for none)."
)
flags.DEFINE_string("plot", "benchmarks/tst_mnist1d.png", "Where to draw the figure ('' for none).")

# Standardised x <-> x01 = 0.5 + x / (2 * SCALE): the train split's range fits.
SCALE = 5.5
FILL = 0.5
# TST's ops that change a one-row, one-channel signal (see the docstring).
OPS = (
    "ShearY",
    "TranslateX",
    "TranslateY",
    "Rotate",
    "Brightness",
    "Contrast",
    "Posterize",
    "Solarize",
    "Invert",
    "Cutout",
)
PRIOR = 0.5
ROWS = {
    # name (no commas: --rows is a comma-separated list): (augmenter: None,
    # "prior", "random" or "learned"; shifts)
    "KD": (None, False),
    "KD + shifts": (None, True),
    "KD + TST ops at the prior": ("prior", False),
    "KD + TST ops at random": ("random", False),
    "TST": ("learned", False),
}
SPLITS = {"full": 1.0, "20%": 0.2}
SETTINGS = {
    "optimizer": {"class_name": "Adam", "learning_rate": 0.01},
    "schedule": None,
    "batch_size": 100,
    "student_loss_weight": 0.1,  # 0.1 CE + 0.9 KD
}


@keras.saving.register_keras_serializable(package="kd_keras_benchmarks")
class RandomPolicy(LearnedPolicy):
    """TST's augmenter with every magnitude and probability redrawn per batch, never trained."""

    def augment(self, x, seed=None):
        generator = self.seed_generator if seed is None else seed
        draws = keras.random.uniform((2, len(self.ops)), 0.02, 0.98, seed=generator)
        logits = keras.ops.log(draws) - keras.ops.log(1.0 - draws)
        self.magnitude_logits.assign(logits[0])
        self.probability_logits.assign(logits[1])
        return super().augment(x, seed=seed)


# The frozen rows train no policy on purpose; kd_keras warns that they do not.
warnings.filterwarnings(
    "ignore", message="The augmenter has trainable weights but no PhaseSchedule"
)


def to_unit(x):
    return (0.5 + x / (2 * SCALE)).astype("float32")


def wrapped(model, name):
    """`model` behind a weightless map from x01 back to the standardised signal."""
    return keras.Sequential(
        [keras.Input((1, 40, 1)), keras.layers.Rescaling(2 * SCALE, offset=-SCALE), model],
        name=name,
    )


def shifts(max_shift, fill):
    """Random shifts of a (1, L, C) signal by up to `max_shift` samples, filled with `fill`."""

    # Plain TF ops: AutoGraph has nothing to convert (and warns on the closure).
    @tf.autograph.experimental.do_not_convert
    def augment(image, label):
        padded = tf.pad(image, [[0, 0], [max_shift, max_shift], [0, 0]], constant_values=fill)
        return tf.image.random_crop(padded, tf.shape(image)), label

    return augment


def splits(fraction, validation):
    """(train, scored) pairs of x01 signals: the test split, or held-out training data."""
    data = kd_keras.data.load_mnist1d()
    x, y = data.train
    scored = data.test
    if validation:
        from sklearn.model_selection import train_test_split

        x, x_held, y, y_held = train_test_split(x, y, test_size=800, stratify=y, random_state=0)
        scored = (x_held, y_held)
    if fraction < 1:
        from sklearn.model_selection import train_test_split

        x, _, y, _ = train_test_split(x, y, train_size=fraction, stratify=y, random_state=0)
    return (to_unit(x), y), (to_unit(scored[0]), scored[1])


def recipe(augmenter):
    """The recipe config of a row: `kd`, or `tst` with its policy learned, frozen or redrawn."""
    if augmenter is None:
        return kd_keras.recipes.get("kd", SETTINGS)
    config = kd_keras.recipes.get("tst", {"fill_value": FILL, **SETTINGS})
    config["augmenter"]["ops"] = list(OPS)
    config["distillation_loss_weights"] = [1.0]
    if augmenter != "learned":
        config["phases"] = None  # the policy never trains
        config["augmenter_optimizer"] = None
    if augmenter == "random":
        config["augmenter"]["class_name"] = "kd_keras_benchmarks>RandomPolicy"
    return config


class Track(keras.callbacks.Callback):
    """Per student epoch: accuracy and teacher agreement on the scored split; the policy."""

    def __init__(self, scored, teacher_labels):
        super().__init__()
        self.x = tf.constant(scored[0])
        self.y, self.teacher_labels = scored[1], teacher_labels
        self.accuracy, self.agreement, self.policy = [], [], []

    def on_epoch_end(self, epoch, logs=None):
        distiller = self.model
        if getattr(distiller, "phase", "student") == "augmenter":
            return
        labels = np.argmax(distiller.student(self.x, training=False), axis=-1)
        self.accuracy.append(float(np.mean(labels == self.y)))
        self.agreement.append(float(np.mean(labels == self.teacher_labels)))
        augmenter = getattr(distiller, "augmenter", None)
        if augmenter is not None and hasattr(augmenter, "log_scalars"):
            self.policy.append(augmenter.log_scalars())


def train(row, seed, train_data, scored, teacher, teacher_labels, epochs):
    augmenter, shifted = ROWS[row]
    keras.utils.set_random_seed(seed)
    student = wrapped(kd_keras.models.get("mnist1d_mlp", (1, 40, 1), 10), "student")
    track = Track(scored, teacher_labels)
    kd_keras.distill(
        teacher,
        student,
        train_data,
        recipe=recipe(augmenter),
        epochs=epochs,
        seed=seed,
        verbose=0,
        callbacks=[track],
        data_augmentation=shifts(FLAGS.max_shift, FILL) if shifted else None,
    )
    result = {"seed": seed, "accuracy": track.accuracy, "agreement": track.agreement}
    if augmenter == "learned":
        result["policy"] = track.policy
    return result


def cell(values):
    values = 100 * np.asarray(values)
    return f"{values.mean():.1f} ± {values.std():.1f}"


def main(argv):
    del argv
    epochs, seeds, settings = FLAGS.epochs, FLAGS.seeds, FLAGS.settings
    if FLAGS.quick:
        epochs, seeds, settings = 2, 1, ["20%"]
    unknown = set(settings) - set(SPLITS)
    if unknown or not settings:
        raise app.UsageError(f"--settings={','.join(settings)}: use full and/or 20%")
    rows = FLAGS.rows or list(ROWS)
    unknown = set(rows) - set(ROWS)
    if unknown:
        raise app.UsageError(f"Unknown rows {sorted(unknown)}: choose from {list(ROWS)}")
    teacher = wrapped(
        kd_keras.resolve.load_model(kd_keras.shipped.path(kd_keras.shipped.MNIST1D_TEACHER)),
        "teacher",
    )
    data = {name: splits(SPLITS[name], FLAGS.validation) for name in settings}
    scored = data[settings[0]][1]
    teacher_labels = np.argmax(teacher.predict(scored[0], batch_size=1000, verbose=0), axis=-1)
    teacher_accuracy = float(np.mean(teacher_labels == scored[1]))
    what = "held-out training data (validation)" if FLAGS.validation else "test split"
    print(
        f"MNIST-1D, scored on the {what}: teacher {teacher_accuracy:.1%}; student mnist1d_mlp; "
        f"{epochs} epochs; {seeds} seed(s); train sizes "
        + ", ".join(f"{name} {len(split[0][1])}" for name, split in data.items()),
        flush=True,
    )
    results = {name: {} for name in settings}
    for row in rows:
        for name in settings:
            runs = []
            for seed in range(seeds):
                started = time.perf_counter()
                run = train(row, seed, *data[name], teacher, teacher_labels, epochs)
                run["seconds"] = time.perf_counter() - started
                runs.append(run)
                print(
                    f"  {row:<26} {name:>4} seed {seed}: {100 * run['accuracy'][-1]:.1f}% "
                    f"(agreement {100 * run['agreement'][-1]:.1f}%, {run['seconds']:.0f} s)",
                    flush=True,
                )
            results[name][row] = runs

    header = f"{'row':<26} " + " ".join(
        f"{f'{kind} {name} (%)':>15}" for kind in ("acc", "agree") for name in settings
    )
    print(
        f"\nMNIST-1D {what} accuracy and teacher agreement, mean ± std over {seeds} "
        f"seed(s), {epochs} epochs\n{header}\n" + "-" * len(header)
    )
    for row in rows:
        cells = [cell([r["accuracy"][-1] for r in results[name][row]]) for name in settings]
        cells += [cell([r["agreement"][-1] for r in results[name][row]]) for name in settings]
        print(f"{row:<26} " + " ".join(f"{c:>15}" for c in cells))

    policies = policy_summary(results, settings)
    if policies:
        print(f"\nTST's learned policy at the end (mean over seeds; prior {PRIOR})")
        print(f"{'op':<12} " + " ".join(f"{'m ' + n:>9} {'p ' + n:>9}" for n in settings))
        for op in OPS:
            values = []
            for name in settings:
                for kind in ("magnitude", "probability"):
                    value = policies.get(name, {}).get(f"{kind}/{op}")
                    values.append(f"{value:9.3f}" if value is not None else f"{'-':>9}")
            print(f"{op:<12} " + " ".join(values))

    if FLAGS.json:
        with open(FLAGS.json, "w") as handle:
            json.dump(
                {
                    "epochs": epochs,
                    "seeds": seeds,
                    "validation": FLAGS.validation,
                    "teacher_accuracy": teacher_accuracy,
                    "ops": list(OPS),
                    "prior": PRIOR,
                    "settings": {
                        "optimizer": "Adam 1e-2 constant",
                        "batch_size": 100,
                        "temperature": 4,
                        "loss": "0.1 CE + 0.9 KD",
                    },
                    "results": results,
                    "final_policy": policies,
                },
                handle,
                indent=1,
            )
    if FLAGS.plot:
        plot(FLAGS.plot, results, settings, policies, teacher_accuracy)


def policy_summary(results, settings):
    """{setting: {"magnitude/op": mean over seeds, ...}} of TST's final policy."""
    summary = {}
    for name in settings:
        runs = [run for run in results[name].get("TST", []) if run.get("policy")]
        if runs:
            keys = runs[0]["policy"][-1]
            summary[name] = {
                key: float(np.mean([run["policy"][-1][key] for run in runs])) for key in keys
            }
    return summary


def plot(path, results, settings, policies, teacher_accuracy):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = len(settings) + (1 if policies else 0)
    figure, axes = plt.subplots(1, panels, figsize=(5.5 * panels, 4.2), squeeze=False)
    axes = axes[0]
    for axis, name in zip(axes, settings):
        for row, runs in results[name].items():
            curves = 100 * np.array([run["accuracy"] for run in runs])
            epochs = np.arange(1, curves.shape[1] + 1)
            mean, std = curves.mean(0), curves.std(0)
            (line,) = axis.plot(epochs, mean, label=row, linewidth=1.4)
            axis.fill_between(epochs, mean - std, mean + std, color=line.get_color(), alpha=0.15)
        axis.axhline(100 * teacher_accuracy, color="k", linestyle=":", linewidth=1, label="teacher")
        axis.set_xlabel("student epoch")
        axis.set_ylabel("accuracy (%)")
        axis.set_title(f"MNIST-1D, CNN -> MLP, {name} train split")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=7, loc="lower right")
    if policies:
        axis = axes[-1]
        name = "full" if "full" in policies else next(iter(policies))
        positions = np.arange(len(OPS))
        width = 0.38
        magnitudes = [policies[name].get(f"magnitude/{op}", math.nan) for op in OPS]
        probabilities = [policies[name].get(f"probability/{op}", math.nan) for op in OPS]
        axis.bar(positions - width / 2, magnitudes, width, label="magnitude m")
        axis.bar(positions + width / 2, probabilities, width, label="probability p")
        axis.axhline(PRIOR, color="k", linestyle=":", linewidth=1, label="prior")
        axis.set_xticks(positions, OPS, rotation=60, fontsize=8)
        axis.set_ylim(0, 1)
        axis.set_title(f"TST's learned policy ({name} split, mean over seeds)")
        axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=110)


if __name__ == "__main__":
    app.run(main)
