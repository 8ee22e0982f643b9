"""The CIFAR-100 table of METHODS.md section 2, ours beside the paper's (for GPUs).

On a machine with a GPU (or with --full) it trains each pair's teacher with
the CRD recipe (`kd-keras train-teacher --schedule=crd`: SGD 0.05, x0.1 at
150/180/210 of 240 epochs, pad-crop-flip; or loads `<teacher_dir>/<zoo
name>.keras` if there), distils the student with each recipe at the
recipe's defaults (240 epochs, batch 64, the CRD schedule), and prints the
table with the paper's numbers and the CRD teachers' accuracies. Each run is
a `kd_keras.jobs.distill_job`, so its run directory (metrics.json, the
exported student, TensorBoard logs) stays under --out.

Without a GPU it runs a smoke configuration instead: CIFAR-100 is not
available offline here, so `tfds.testing.mock_data` stands in (random
32x32x3 images and labels, the real shapes and 100 classes), one pair, one
epoch: it checks that every piece runs, and its accuracies mean nothing.

    python benchmarks/cifar100.py                       # GPU: the whole table
    python benchmarks/cifar100.py --pairs=resnet56->resnet20 --seeds=3
    python benchmarks/cifar100.py --strategy=mirrored --precision=mixed_float16
    python benchmarks/cifar100.py --smoke               # any machine, a minute or two
"""

import json
import os
import pathlib
import statistics
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import cifar100_table as cifar100  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import app  # noqa: E402
from absl import flags  # noqa: E402
from absl import logging  # noqa: E402

import kd_keras  # noqa: E402

flags.DEFINE_list("pairs", None, "Pairs as teacher->student zoo names (default: all seven).")
flags.DEFINE_list("runs", list(cifar100.DEFAULT_RUNS), f"Columns: {', '.join(cifar100.RUNS)}.")
flags.DEFINE_integer("seeds", 1, "Runs per cell (the paper averages 3).")
flags.DEFINE_integer("epochs", None, "Distillation epochs (default: each recipe's, 240).")
flags.DEFINE_integer("teacher_epochs", None, "Teacher epochs (default: CRD's 240).")
flags.DEFINE_string("teacher_dir", "runs/cifar100/teachers", "Where teachers are saved and reused.")
flags.DEFINE_string("out", "runs/cifar100", "Directory of the run directories.")
flags.DEFINE_string("data_dir", None, "TFDS data directory.")
flags.DEFINE_enum("strategy", "default", ["default", "mirrored", "multiworker"], "tf.distribute.")
flags.DEFINE_enum(
    "precision", "float32", ["float32", "mixed_float16", "mixed_bfloat16"], "Students' precision."
)
flags.DEFINE_boolean("smoke", None, "Tiny mock configuration (default: when there is no GPU).")
FLAGS = flags.FLAGS

SMOKE_PAIR = "resnet56->resnet20"
SMOKE_EXAMPLES = 64


def _pairs(smoke):
    if FLAGS.pairs:
        return [cifar100.get_pair(label) for label in FLAGS.pairs]
    return [cifar100.get_pair(SMOKE_PAIR)] if smoke else list(cifar100.PAIRS)


def _teacher(pair, smoke, dataset, root):
    path = pathlib.Path(root["teacher_dir"]) / f"{pair.teacher}.keras"
    if path.exists():  # trained by an earlier run: its card has the accuracy
        card = json.loads(path.with_suffix(".json").read_text())
        return str(path), 100 * card["test_accuracy"]
    card = kd_keras.jobs.train_teacher_job(
        pair.teacher,
        dataset,
        epochs=1 if smoke else FLAGS.teacher_epochs,
        batch_size=64,
        schedule="crd",
        out=path,
        data_dir=FLAGS.data_dir,
        download=True if smoke else "auto",
        strategy=FLAGS.strategy,
        precision=FLAGS.precision,
        verbose=0 if smoke else "auto",
        command="benchmarks/cifar100.py",
        # Random mock labels leave any teacher at chance; a real one must not be.
        allow_weak_teacher=smoke,
    )
    return str(path), 100 * card["test_accuracy"]


def _distil(pair, run, teacher_path, seed, smoke, dataset, root):
    out = pathlib.Path(root["out"]) / f"{pair.teacher}-{pair.student}" / f"{run.name}-seed{seed}"
    if (out / "metrics.json").exists():  # a finished cell of an earlier, interrupted table
        return 100 * json.loads((out / "metrics.json").read_text())["student_accuracy"]
    # A column's own length (kd_960's epochs) is the job's epochs argument,
    # not a recipe override; --epochs still shortens every column alike.
    options = dict(run.options)
    epochs = options.pop("epochs", None)
    metrics = kd_keras.jobs.distill_job(
        recipe=run.recipe,
        dataset=dataset,
        teacher=teacher_path,
        student=pair.student,
        epochs=1 if smoke else FLAGS.epochs or epochs,
        seed=seed,
        out=out,
        export_formats=("keras",),
        data_dir=FLAGS.data_dir,
        download=True if smoke else "auto",
        strategy=FLAGS.strategy,
        precision=FLAGS.precision,
        verbose=0 if smoke else "auto",
        allow_weak_teacher=smoke,
        **options,
    )
    return 100 * metrics["student_accuracy"]


def _table(smoke, root):
    dataset = "tfds:cifar100"
    pairs = _pairs(smoke)
    runs = [cifar100.RUNS[name] for name in FLAGS.runs]
    missing = sorted(
        {name for p in pairs for name in (p.teacher, p.student)} - set(kd_keras.models.names())
    )
    results, teachers = {}, {}
    for pair in pairs:
        if pair.teacher in missing or pair.student in missing:
            print(f"skipping {pair.label}: not in the model zoo ({', '.join(missing)})")
            continue
        teacher_path, teachers[pair.label] = _teacher(pair, smoke, dataset, root)
        for run in runs:
            accuracies = [
                _distil(pair, run, teacher_path, seed, smoke, dataset, root)
                for seed in range(FLAGS.seeds)
            ]
            results[(pair.label, run.name)] = statistics.mean(accuracies)
            print(f"{pair.label} {run.name}: {results[(pair.label, run.name)]:.2f}", flush=True)
    return cifar100.table(results, teachers, runs=FLAGS.runs, pairs=pairs)


def main(_):
    # TFDS's mock and Keras' retracing notes would bury the table.
    logging.set_verbosity(logging.WARNING)
    tf.get_logger().setLevel("ERROR")
    smoke = FLAGS.smoke
    if smoke is None:
        smoke = not tf.config.list_physical_devices("GPU")
    if smoke:
        import tensorflow_datasets as tfds

        print(
            "SMOKE RUN: no GPU, so CIFAR-100 is replaced by tfds.testing.mock_data "
            f"({SMOKE_EXAMPLES} random images per split) and every run lasts 1 epoch; "
            "the accuracies below only show that the pipeline runs."
        )
        # Mock teachers and students must never be mistaken for real ones.
        with tfds.testing.mock_data(num_examples=SMOKE_EXAMPLES):
            with tempfile.TemporaryDirectory() as tmp:
                root = {"out": f"{tmp}/runs", "teacher_dir": f"{tmp}/teachers"}
                table = _table(smoke=True, root=root)
    else:
        table = _table(smoke=False, root={"out": FLAGS.out, "teacher_dir": FLAGS.teacher_dir})
    print(
        "\nCIFAR-100 top-1 (%), ours (paper: Wang et al. 2020, Table 3; teachers: CRD), "
        f"mean of {FLAGS.seeds} seed(s)\n"
    )
    print(table)


if __name__ == "__main__":
    app.run(main)
