"""Benchmark: backward-pass KD (Jafari et al.) on MNIST-1D, full and 20% training splits.

The paper's claim: distilling also on auxiliary samples made by gradient
ascent on the teacher-student divergence (`kd_keras.augment.BackwardPerturbation`,
recipe `backward`) gives a more accurate student that agrees more with its
teacher, notably where training data are scarce. The shipped MNIST-1D CNN
teacher into the paper's MLP 100-100 (`mnist1d_mlp`), with the settings of
`benchmarks/kd_thrives.py` (Adam 1e-2 constant, batch 100, KD at T = 4 with
`0.1 CE + 0.9 KD`), on the full training split (4,000 sequences) and a
stratified 20% split (800). Rows:

- CE only: the student alone (recipe `kd` with the KD weight at 0);
- KD: recipe `kd`, `0.1 CE(x) + 0.9 KD(x)`;
- backward: recipe `backward`, `0.1 CE(x) + 0.9 [KD(x) + KD(x_k)]`, `x_k`
  made from `x` by `--steps` normalised ascent steps on `KL(p_t^4 || p_s^4)`
  inside a `--norm` ball of radius `--epsilon` (MNIST-1D is standardised,
  so no value range is clipped);
- noise: the control, the same loss with `x_k` replaced by `x + delta`,
  `delta` a random direction scaled to the ball's radius (l2: a uniform
  direction of length `epsilon`; linf: random signs times `epsilon`, a
  corner of the cube, where sign steps end), drawn afresh every step
  (`RandomPerturbation` below, passed to `kd_keras.Distiller` as its
  augmenter). Same inputs, radius and labels as backward: only the
  direction differs.

Columns: test accuracy and teacher-student agreement (top-1 on the test
split), mean ± std over seeds. With `--validation` a stratified 20% of
the training split (800 sequences) is held out and scored instead of the
test split; the full and 20% rows then train on the other 3,200 and on 800
of them. The backward settings (`--epsilon`, `--norm`, `--steps`,
`--step_size`) were chosen with `--validation` only (README). The teacher
was trained on all 4,000 training sequences, the validation part included.
Writes `--json` and a PNG of test accuracy and agreement vs epochs.

Usage:
    PYTHONPATH=. python benchmarks/backward_mnist1d.py                 # 3 seeds, 60 epochs
    PYTHONPATH=. python benchmarks/backward_mnist1d.py --validation --seeds=1 --epsilon=2  # tuning
    PYTHONPATH=. python benchmarks/backward_mnist1d.py --quick         # smoke run
"""

import json
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from absl import app  # noqa: E402
from absl import flags  # noqa: E402
from keras import ops  # noqa: E402

import kd_keras  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_integer("epochs", 60, "Training epochs of every row.")
flags.DEFINE_integer("seeds", 3, "Seeds per row (0, 1, ...).")
flags.DEFINE_list("rows", None, "Rows to run (default: all): CE only, KD, backward, noise.")
flags.DEFINE_list("splits", ["full", "20%"], "Training splits: full and/or 20%.")
flags.DEFINE_enum("norm", "l2", ["l2", "linf"], "Norm of the ball and of the ascent steps.")
flags.DEFINE_float("epsilon", 3.4, "Radius of the ball (MNIST-1D sequences have l2 norm ~6.2).")
flags.DEFINE_integer("steps", 3, "Gradient-ascent steps k.")
flags.DEFINE_float("step_size", None, "Length eta of each step (default 2.5 * epsilon / steps).")
flags.DEFINE_integer("every", 5, "Score the student every this many epochs (for the plot).")
flags.DEFINE_bool("validation", False, "Hold out 20% of the training split and score on it.")
flags.DEFINE_bool("quick", False, "Smoke run: 1 seed, 2 epochs, 20% split only.")
flags.DEFINE_string("json", "benchmarks/backward_mnist1d.json", "Results file ('' for none).")
flags.DEFINE_string("plot", "benchmarks/backward_mnist1d.png", "Plot file ('' for none).")

ROWS = ("CE only", "KD", "backward", "noise")
FRACTIONS = {"full": 1.0, "20%": 0.2}
SETTINGS = {
    "optimizer": {"class_name": "Adam", "learning_rate": 0.01},
    "schedule": None,
}


@keras.saving.register_keras_serializable(package="benchmarks")
class RandomPerturbation(kd_keras.augment.Augmenter):
    """The control of backward KD: `[x, x + delta]`, `delta` random at the ball's radius.

    The second view is labelled by the teacher alone (label weight 0), as
    `BackwardPerturbation`'s auxiliary view; `delta` is drawn per sample and
    step: a uniformly random direction of l2 length `epsilon`, or random
    signs times `epsilon` (`norm="linf"`).
    """

    def __init__(self, epsilon, norm="l2", seed=None, **kwargs):
        super().__init__(seed=seed, **kwargs)
        self.epsilon = float(epsilon)
        self.norm = norm

    def views(self, x, y, teacher_fn, student_fn, training=True):
        if not training:
            return kd_keras.augment.View(x, y, deterministic=True)
        x = ops.cast(x, "float32")
        axes = tuple(range(1, len(x.shape)))
        if self.norm == "linf":
            draw = keras.random.uniform(ops.shape(x), -1.0, 1.0, seed=self.seed_generator)
            delta = self.epsilon * ops.sign(draw)
        else:
            draw = keras.random.normal(ops.shape(x), seed=self.seed_generator)
            length = ops.sqrt(ops.sum(draw**2, axis=axes, keepdims=True))
            delta = self.epsilon * draw / (length + 1e-12)
        return kd_keras.augment.Views(
            kd_keras.augment.View(x, y, deterministic=True),
            kd_keras.augment.View(x + delta, y, label_weight=0.0),
        )

    def get_config(self):
        return {**super().get_config(), "epsilon": self.epsilon, "norm": self.norm}


class Scores(keras.callbacks.Callback):
    """The student's accuracy and teacher agreement on the scored split, every few epochs."""

    def __init__(self, student, scored, teacher_classes, every, epochs):
        super().__init__()
        self.student, (self.x, self.y) = student, scored
        self.teacher_classes, self.every, self.epochs = teacher_classes, every, epochs
        self.scores = {}

    def on_epoch_end(self, epoch, logs=None):
        if (epoch + 1) % self.every == 0 or epoch + 1 == self.epochs:
            predicted = np.argmax(self.student.predict(self.x, batch_size=1000, verbose=0), -1)
            self.scores[epoch + 1] = {
                "accuracy": float(np.mean(predicted == self.y)),
                "agreement": float(np.mean(predicted == self.teacher_classes)),
            }


def splits(validation):
    """`{name: (x, y)}` training splits and the `(x, y)` split that is scored."""
    from sklearn.model_selection import train_test_split

    data = kd_keras.data.load_mnist1d()
    x, y = data.train
    scored = data.test
    if validation:
        x, x_held, y, y_held = train_test_split(x, y, test_size=0.2, stratify=y, random_state=0)
        scored = (x_held, y_held)
    chosen = {}
    for name in FLAGS.splits:
        # The 20% split keeps 800 sequences (20% of the 4,000) in either mode.
        size = round(FRACTIONS[name] * len(data.train[1]))
        if size >= len(y):
            chosen[name] = (x, y)
        else:
            kept_x, _, kept_y, _ = train_test_split(
                x, y, train_size=size, stratify=y, random_state=0
            )
            chosen[name] = (kept_x, kept_y)
    return data, chosen, scored


def backward_config():
    config = kd_keras.recipes.get(
        "backward",
        {
            "norm": FLAGS.norm,
            "epsilon": FLAGS.epsilon,
            "steps": FLAGS.steps,
            "step_size": FLAGS.step_size,
            **SETTINGS,
        },
    )
    # MNIST-1D is standardised, not in [0, 1]: the ball alone bounds x_k.
    config["augmenter"]["value_range"] = None
    return config


def displacement(distiller, x):
    """Mean l2 and linf distance of backward samples from their `x`, with the trained student."""
    augmenter = distiller.augmenter
    teacher, student = distiller.teacher, distiller.student
    moved, _, _ = augmenter.perturb(
        ops.convert_to_tensor(x),
        lambda v: teacher(v, training=False),
        lambda v: student(v, training=False),
    )
    delta = np.asarray(moved).reshape(len(x), -1) - x.reshape(len(x), -1)
    return {
        "l2": float(np.linalg.norm(delta, axis=1).mean()),
        "linf": float(np.abs(delta).max(axis=1).mean()),
    }


def train(row, seed, data, train_split, scored, teacher, teacher_classes, epochs):
    keras.utils.set_random_seed(seed)
    student = kd_keras.models.get("mnist1d_mlp", data.input_shape, data.num_classes)
    scores = Scores(student, scored, teacher_classes, FLAGS.every, epochs)
    extra = {}
    if row == "noise":
        distiller = kd_keras.Distiller(
            teacher,
            student,
            kd_keras.losses.TemperatureKL(4.0),
            student_loss_weight=0.1,
            augmenter=RandomPerturbation(FLAGS.epsilon, FLAGS.norm),
        )
        distiller.compile(optimizer=keras.optimizers.Adam(0.01))
        distiller.fit(
            kd_keras.data.pipeline(train_split, 100, seed=seed),
            epochs=epochs,
            verbose=0,
            shuffle=False,
            callbacks=[scores],
        )
    else:
        recipe, overrides = "kd", dict(SETTINGS)
        if row == "CE only":
            overrides.update(student_loss_weight=1.0, distillation_loss_weights=[0.0])
        elif row == "backward":
            recipe, overrides = backward_config(), {}
        distiller = kd_keras.distill(
            teacher,
            student,
            train_split,
            recipe=recipe,
            epochs=epochs,
            batch_size=100,
            seed=seed,
            verbose=0,
            callbacks=[scores],
            **overrides,
        )
        if row == "backward":
            extra["displacement"] = displacement(distiller, train_split[0][:500])
    return scores.scores, extra


def main(argv):
    del argv
    epochs, seeds, rows = FLAGS.epochs, FLAGS.seeds, FLAGS.rows or list(ROWS)
    if FLAGS.quick:
        epochs, seeds, FLAGS.splits, FLAGS.every = 2, 1, ["20%"], 1
    unknown = set(rows) - set(ROWS) | set(FLAGS.splits) - set(FRACTIONS)
    if unknown:
        raise app.UsageError(
            f"Unknown rows or splits {sorted(unknown)}: rows {ROWS}, splits full, 20%."
        )
    data, train_splits, scored = splits(FLAGS.validation)
    teacher = kd_keras.resolve.load_model(kd_keras.shipped.path(kd_keras.shipped.MNIST1D_TEACHER))
    teacher_classes = np.argmax(teacher.predict(scored[0], batch_size=1000, verbose=0), -1)
    where = "validation (20% of train, held out)" if FLAGS.validation else "test"
    teacher_accuracy = float(np.mean(teacher_classes == scored[1]))
    print(
        f"MNIST-1D, scored on {where}: teacher {100 * teacher_accuracy:.1f}%; mnist1d_mlp "
        f"student; {epochs} epochs; {seeds} seed(s); backward {FLAGS.norm} eps "
        f"{FLAGS.epsilon:g}, k {FLAGS.steps}, eta "
        f"{FLAGS.step_size if FLAGS.step_size is not None else 2.5 * FLAGS.epsilon / FLAGS.steps:g}",
        flush=True,
    )
    results = {}
    for split, train_split in train_splits.items():
        for row in rows:
            runs = results.setdefault(split, {}).setdefault(row, [])
            for seed in range(seeds):
                started = time.perf_counter()
                scores, extra = train(
                    row, seed, data, train_split, scored, teacher, teacher_classes, epochs
                )
                final = scores[epochs]
                runs.append(
                    {
                        "seed": seed,
                        "scores": scores,
                        **extra,
                        "seconds": time.perf_counter() - started,
                    }
                )
                print(
                    f"  {split} ({len(train_split[1])}), {row}, seed {seed}: accuracy "
                    f"{100 * final['accuracy']:.1f}%, agreement {100 * final['agreement']:.1f}%"
                    + (f", |x_k - x|_2 {extra['displacement']['l2']:.2f}" if extra else ""),
                    flush=True,
                )
    header = f"{'row':<12}" + "".join(
        f"{f'{split} acc':>16}{f'{split} agree':>16}" for split in train_splits
    )
    print(
        f"\nMNIST-1D {where} accuracy and teacher agreement (%), {epochs} epochs, mean ± std "
        f"over {seeds} seed(s)\n{header}\n{'-' * len(header)}"
    )
    for row in rows:
        cells = ""
        for split in train_splits:
            for key in ("accuracy", "agreement"):
                values = 100 * np.array([r["scores"][epochs][key] for r in results[split][row]])
                cells += f"{values.mean():.1f} ± {values.std():.1f}".rjust(16)
        print(f"{row:<12}{cells}")
    if FLAGS.json:
        settings = {
            "epochs": epochs,
            "seeds": seeds,
            "scored": where,
            "teacher_accuracy": teacher_accuracy,
            "norm": FLAGS.norm,
            "epsilon": FLAGS.epsilon,
            "steps": FLAGS.steps,
            "step_size": FLAGS.step_size,
            "train_sizes": {s: len(t[1]) for s, t in train_splits.items()},
        }
        with open(FLAGS.json, "w") as handle:
            json.dump({"settings": settings, "results": results}, handle, indent=1)
    if FLAGS.plot:
        plot(FLAGS.plot, results, rows, teacher_accuracy, where)


def plot(path, results, rows, teacher_accuracy, where):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(len(results), 2, figsize=(10, 3.6 * len(results)), squeeze=False)
    for line, (split, by_row) in enumerate(results.items()):
        for column, key in enumerate(("accuracy", "agreement")):
            axis = axes[line][column]
            for row in rows:
                runs = by_row[row]
                epochs = sorted(runs[0]["scores"])
                values = 100 * np.array([[r["scores"][e][key] for e in epochs] for r in runs])
                axis.plot(
                    epochs,
                    values.mean(0),
                    label=row,
                    linestyle="--" if row in ("CE only", "noise") else "-",
                )
                axis.fill_between(
                    epochs,
                    values.mean(0) - values.std(0),
                    values.mean(0) + values.std(0),
                    alpha=0.2,
                )
            if key == "accuracy":
                axis.axhline(100 * teacher_accuracy, color="grey", linewidth=0.8, linestyle=":")
            axis.set_title(f"{split} training split: {where} {key}", fontsize=10)
            axis.set_xlabel("epochs")
            axis.set_ylabel(f"{key} (%)")
            axis.grid(alpha=0.3)
            axis.legend(fontsize=8)
    figure.suptitle("MNIST-1D, CNN teacher -> MLP: backward-pass KD vs KD and a random control")
    figure.tight_layout()
    figure.savefig(path, dpi=110)


if __name__ == "__main__":
    app.run(main)
