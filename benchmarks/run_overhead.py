"""Benchmark: where the default `kd-keras distill` run spends its training time.

The default job (digits, shipped CNN teacher -> MLP, recipe kd, 30 epochs)
runs end to end through `kd_keras.jobs.distill_job`, with a clock callback
added to its watchers. Its `fit` is split into: the first epoch (tracing the
step), the later epochs' training steps, validation, and the rest
(callbacks, iterators). The same Distiller's steady step time is then
measured alone (`fit` on the same pipeline, no callbacks, no validation), in
the same round, and the ratio `fit seconds / (steps x steady step time)` is
reported per round, median over rounds.

Usage:
    PYTHONPATH=. python benchmarks/run_overhead.py              # 3 rounds
    PYTHONPATH=. python benchmarks/run_overhead.py --rounds=1 --epochs=3
"""

import os
import statistics
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
from absl import app  # noqa: E402
from absl import flags  # noqa: E402

import kd_keras  # noqa: E402
from kd_keras import jobs  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_integer("rounds", 3, "Rounds (median reported).")
flags.DEFINE_integer("epochs", None, "Epochs of the job (default: the digits default, 30).")


class Clock(keras.callbacks.Callback):
    """Times a fit: first epoch, later training epochs, validation, the rest."""

    def on_train_begin(self, logs=None):
        self.began = time.perf_counter()
        self.first_epoch = self.validation = self.steps = 0.0
        self.batches = 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch_began = time.perf_counter()
        self.epoch = epoch

    def on_train_batch_begin(self, batch, logs=None):
        self.batch_began = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        if self.epoch > 0:
            self.steps += time.perf_counter() - self.batch_began
            self.batches += 1

    def on_test_begin(self, logs=None):
        self.test_began = time.perf_counter()

    def on_test_end(self, logs=None):
        self.validation += time.perf_counter() - self.test_began

    def on_epoch_end(self, epoch, logs=None):
        if epoch == 0:
            self.first_epoch = time.perf_counter() - self.epoch_began

    def on_train_end(self, logs=None):
        self.total = time.perf_counter() - self.began


def main(argv):
    del argv
    watchers = jobs._watchers
    clocks = []

    def watched(*args, **kwargs):
        callbacks, snapshots, collapse = watchers(*args, **kwargs)
        clocks.append(Clock())
        return [clocks[-1], *callbacks], snapshots, collapse

    jobs._watchers = watched
    rows = []
    for _ in range(FLAGS.rounds):
        with tempfile.TemporaryDirectory() as out:
            started = time.perf_counter()
            metrics = jobs.distill_job(
                out=os.path.join(out, "run"),
                epochs=FLAGS.epochs,
                export_formats=("keras",),
                verbose=0,
            )
            job_seconds = time.perf_counter() - started
        clock = clocks[-1]
        steps = metrics["optimizer_steps"]["student"]
        rows.append(
            dict(
                job=job_seconds,
                fit=clock.total,
                first=clock.first_epoch,
                steps=clock.steps,
                validation=clock.validation,
                rest=clock.total - clock.first_epoch - clock.steps - clock.validation,
                step=_steady_step_seconds(),
                total_steps=steps,
                later_steps=steps - steps // metrics["epochs"],
            )
        )
    print(f"default run: {rows[0]['total_steps']} steps; median of {FLAGS.rounds} rounds\n")
    for name in ("job", "fit", "first", "steps", "validation", "rest"):
        values = [row[name] for row in rows]
        print(f"{name + ' s':18s} {statistics.median(values):7.2f}")
    step = statistics.median(row["step"] for row in rows)
    print(f"{'steady step ms':18s} {1e3 * step:7.2f}")
    ratios = [row["fit"] / (row["total_steps"] * row["step"]) for row in rows]
    later = [(row["fit"] - row["first"]) / (row["later_steps"] * row["step"]) for row in rows]
    print(f"{'fit / (steps x step)':22s} {statistics.median(ratios):5.2f}")
    print(f"{'  after the first epoch':22s} {statistics.median(later):5.2f}")


def _steady_step_seconds():
    """The default pair's KD step alone: the job's Distiller on its pipeline, nothing else."""
    data = kd_keras.data.load_digits()
    teacher = kd_keras.resolve.load_model(kd_keras.shipped.path(kd_keras.shipped.DIGITS_TEACHER))
    keras.utils.set_random_seed(0)
    student = kd_keras.models.get("mlp", data.input_shape, data.num_classes)
    distiller = kd_keras.distill(teacher, student, data.train, epochs=1, verbose=0)
    logits = teacher.predict(data.train[0], batch_size=256, verbose=0)
    inputs = {kd_keras.distiller.INPUTS: data.train[0], kd_keras.distiller.TEACHER_LOGITS: logits}
    pipeline = kd_keras.data.pipeline((inputs, data.train[1]), 64)
    epochs = 5
    started = time.perf_counter()
    distiller.fit(pipeline, epochs=epochs, verbose=0)
    return (time.perf_counter() - started) / (epochs * int(pipeline.cardinality()))


if __name__ == "__main__":
    app.run(main)
