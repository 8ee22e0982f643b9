"""Benchmark: "KD thrives on data augmentation" (Wang et al.) on MNIST-1D, at 30 to 960 epochs.

The paper's central observation: with data augmentation, KD keeps gaining
from longer training while cross-entropy does not, and teacher-relabelled
mixing (TL-MixUp, TL-CutMix) and CutMixPick add to it. On MNIST-1D (the
shipped CNN teacher, 90.0%, into the paper's MLP 100-100) every row trains
once for the longest length and is scored on the test split at each length
of `--lengths` (Adam 1e-2, constant, batch 100, as MNIST-1D's own probes;
KD at T = 4 with `0.1 CE + 0.9 KD`, the mixing recipes adding `0.9 KD(x')`):

- CE, CE + shifts: the student alone (Keras `fit`), without and with random
  shifts of up to 8 samples (`kd_keras.data.standard_augmentation(8)` on a
  one-row signal: zero-filled translation);
- KD, KD + shifts; KD + shifts + TL-MixUp / TL-CutMix / CutMixPick: the
  recipes `kd`, `mixup`, `cutmix`, `cutmix_pick` with the shifts as the
  data's own augmentation, so `x` is the shifted batch and `x'` mixes it.

Nothing was tuned: the settings are MNIST-1D's probes and the recipes'
defaults. Prints mean ± std over seeds per length, writes `--json` and a
PNG of test accuracy vs epochs.

Usage:
    PYTHONPATH=. python benchmarks/kd_thrives.py                       # 3 seeds, 960 epochs
    PYTHONPATH=. python benchmarks/kd_thrives.py --seeds=1 --lengths=2,4 --rows=KD,CE  # smoke
    # rows or seeds in parallel processes, then one table and plot:
    PYTHONPATH=. python benchmarks/kd_thrives.py --rows=KD --first_seed=1 --json=a.json --plot=
    PYTHONPATH=. python benchmarks/kd_thrives.py --merge=a.json,b.json
"""

import json
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from absl import app  # noqa: E402
from absl import flags  # noqa: E402

import kd_keras  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_integer("seeds", 3, "Seeds per row.")
flags.DEFINE_integer("first_seed", 0, "The first seed: seeds first_seed, first_seed + 1, ...")
flags.DEFINE_list(
    "merge",
    None,
    "Train nothing: merge these --json files (rows and seeds run in separate "
    "processes) into one table, --json and --plot.",
)
flags.DEFINE_list(
    "lengths", ["30", "60", "240", "960"], "Epochs at which the test split is scored."
)
flags.DEFINE_list("rows", None, "Rows to run (default: all).")
flags.DEFINE_integer("max_shift", 8, "Largest random shift, in samples.")
flags.DEFINE_string("json", "benchmarks/kd_thrives_mnist1d.json", "Where to write the results.")
flags.DEFINE_string(
    "plot", "benchmarks/kd_thrives_mnist1d.png", "Where to draw the curves ('' for none)."
)

ROWS = {
    # name: (recipe or None for CE, shifted)
    "CE": (None, False),
    "CE + shifts": (None, True),
    "KD": ("kd", False),
    "KD + shifts": ("kd", True),
    "KD + shifts + TL-MixUp": ("mixup", True),
    "KD + shifts + TL-CutMix": ("cutmix", True),
    "KD + shifts + CutMixPick": ("cutmix_pick", True),
}
SETTINGS = {
    "optimizer": {"class_name": "Adam", "learning_rate": 0.01},
    "schedule": None,
}


class Scores(keras.callbacks.Callback):
    """The student's test accuracy at the chosen epochs."""

    def __init__(self, student, test, lengths):
        super().__init__()
        self.student, self.test, self.lengths = student, test, set(lengths)
        self.scores = {}

    def on_epoch_end(self, epoch, logs=None):
        if epoch + 1 in self.lengths:
            self.scores[epoch + 1] = kd_keras.resolve.evaluate(self.student, self.test)


def train(row, seed, data, teacher, lengths):
    recipe, shifted = ROWS[row]
    augmentation = (
        kd_keras.data.standard_augmentation(FLAGS.max_shift, flip=False) if shifted else None
    )
    keras.utils.set_random_seed(seed)
    student = kd_keras.models.get("mnist1d_mlp", data.input_shape, data.num_classes)
    scores = Scores(student, data.test, lengths)
    epochs = max(lengths)
    if recipe is None:
        student.compile(
            keras.optimizers.Adam(0.01),
            keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
        train_data = kd_keras.data.pipeline(data.train, 100, augment=augmentation, seed=seed)
        student.fit(train_data, epochs=epochs, verbose=0, callbacks=[scores])
    else:
        kd_keras.distill(
            teacher,
            student,
            data.train,
            recipe=recipe,
            epochs=epochs,
            batch_size=100,
            seed=seed,
            verbose=0,
            callbacks=[scores],
            data_augmentation=augmentation,
            **SETTINGS,
        )
    return scores.scores


def main(argv):
    del argv
    if FLAGS.merge:
        lengths, results = merged(FLAGS.merge)
    else:
        lengths, results = run()
    report(lengths, results)
    if FLAGS.json:
        with open(FLAGS.json, "w") as handle:
            json.dump({"lengths": lengths, "results": results}, handle, indent=1)
    if FLAGS.plot:
        plot(FLAGS.plot, results, lengths)


def run():
    lengths = sorted(int(length) for length in FLAGS.lengths)
    rows = FLAGS.rows or list(ROWS)
    data = kd_keras.data.load_mnist1d()
    teacher = kd_keras.resolve.load_model(kd_keras.shipped.path(kd_keras.shipped.MNIST1D_TEACHER))
    results = {}
    for row in rows:
        results[row] = []
        for seed in range(FLAGS.first_seed, FLAGS.first_seed + FLAGS.seeds):
            started = time.perf_counter()
            scores = train(row, seed, data, teacher, lengths)
            results[row].append(
                {"seed": seed, "scores": scores, "seconds": time.perf_counter() - started}
            )
            print(
                f"{row} seed {seed}: "
                + ", ".join(
                    f"{epoch} ep {100 * score:.1f}%" for epoch, score in sorted(scores.items())
                ),
                flush=True,
            )
    return lengths, results


def merged(paths):
    """The runs of several --json files, rows in the order of ROWS, scored at the common lengths."""
    lengths, runs = None, {}
    for path in paths:
        with open(path) as handle:
            found = json.load(handle)
        lengths = set(found["lengths"]) if lengths is None else lengths & set(found["lengths"])
        for row, row_runs in found["results"].items():
            for entry in row_runs:
                entry["scores"] = {int(epoch): score for epoch, score in entry["scores"].items()}
            runs.setdefault(row, []).extend(row_runs)
    order = [row for row in ROWS if row in runs] + [row for row in runs if row not in ROWS]
    return sorted(lengths), {row: sorted(runs[row], key=lambda run: run["seed"]) for row in order}


def report(lengths, results):
    seeds = sorted({run["seed"] for runs in results.values() for run in runs})
    header = f"{'row':28s}" + "".join(f"{f'{length} ep':>16s}" for length in lengths)
    print(f"\nMNIST-1D test accuracy (%), mean ± std over seeds {seeds}; teacher 90.0%\n" + header)
    for row, runs in results.items():
        cells = ""
        for length in lengths:
            values = 100 * np.array([run["scores"][length] for run in runs])
            cells += f"{f'{values.mean():.1f} ± {values.std():.1f}':>16s}"
        row_seeds = sorted(run["seed"] for run in runs)
        note = "" if row_seeds == seeds else f"  (seeds {row_seeds})"
        print(f"{row:28s}{cells}{note}")


def plot(path, results, lengths):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 4.5))
    for row, runs in results.items():
        values = 100 * np.array([[run["scores"][length] for length in lengths] for run in runs])
        style = "--" if row.startswith("CE") else "-"
        axis.errorbar(
            lengths,
            values.mean(0),
            yerr=values.std(0),
            label=row,
            linestyle=style,
            marker="o",
            capsize=3,
        )
    axis.set_xscale("log")
    axis.set_xticks(lengths, [str(length) for length in lengths])
    axis.set_xlabel("training epochs")
    axis.set_ylabel("test accuracy (%)")
    axis.set_title("MNIST-1D, CNN teacher -> MLP: KD thrives on augmentation")
    axis.legend(fontsize=8)
    axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=120)


if __name__ == "__main__":
    app.run(main)
