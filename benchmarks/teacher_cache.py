"""Benchmark: the teacher-output cache against the KD step's floor and keras.distillation.

On the digits default (shipped CNN teacher, an MLP student or --student, batch 64), epochs of
`fit` are timed in interleaved rounds, so every ratio compares runs made side
by side on this noisy shared machine:

- floor: the student's own training step (cross-entropy, same pipeline) plus
  the teacher's forward pass on the same batches, the KD step's floor;
- kd live / kd cached: `kd_keras.distill(..., teacher_cache=False|True)`;
- keras.distillation: `keras.distillation.Distiller` with the same KD loss;
- each mixing recipe with and without the cache (its clean half is cached).

Prints the median epoch time of each and its ratio to the floor.

Usage:
    PYTHONPATH=. python benchmarks/teacher_cache.py              # 7 rounds
    PYTHONPATH=. python benchmarks/teacher_cache.py --rounds=3 --quick
    PYTHONPATH=. python benchmarks/teacher_cache.py --student=small_cnn --batch_size=128
"""

import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import app  # noqa: E402
from absl import flags  # noqa: E402

import kd_keras  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_integer("rounds", 7, "Interleaved rounds (median reported).")
flags.DEFINE_integer("epochs", 2, "Timed epochs per measurement (after one warm-up epoch).")
flags.DEFINE_bool("quick", False, "kd only, a smoke run.")
flags.DEFINE_string("student", "mlp", "Student zoo model (mlp, small_cnn, ...).")
flags.DEFINE_integer("batch_size", 64, "Batch size.")


def main(argv):
    del argv
    data = kd_keras.data.load_digits()
    x, y = data.train
    teacher = kd_keras.resolve.load_model(kd_keras.shipped.path(kd_keras.shipped.DIGITS_TEACHER))
    batches = kd_keras.data.pipeline((x, y), FLAGS.batch_size)
    steps = int(batches.cardinality())

    def student():
        keras.utils.set_random_seed(0)
        return kd_keras.models.get(FLAGS.student, data.input_shape, data.num_classes)

    def timed_fit(fit):
        fit(1)  # warm-up: traces the step
        started = time.perf_counter()
        fit(FLAGS.epochs)
        return (time.perf_counter() - started) / FLAGS.epochs

    def floor():
        model = student()
        model.compile(
            optimizer=kd_keras.optimizers.CoupledSGD(0.05, momentum=0.9),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
        own = timed_fit(lambda e: model.fit(batches, epochs=e, verbose=0))

        @tf.function
        def teacher_epoch():
            total = tf.constant(0.0)
            for images, _ in batches:
                total += tf.reduce_sum(teacher(images, training=False))
            return total

        teacher_epoch()
        started = time.perf_counter()
        for _ in range(FLAGS.epochs):
            teacher_epoch().numpy()
        return own + (time.perf_counter() - started) / FLAGS.epochs

    def recipe(name, cache):
        # distill builds, compiles and traces the step (one epoch); then the
        # same Distiller is timed on a pipeline of the same element type.
        distiller = kd_keras.distill(
            teacher,
            student(),
            (x, y),
            recipe=name,
            epochs=1,
            batch_size=FLAGS.batch_size,
            verbose=0,
            teacher_cache=cache,
        )
        pipeline = _pipeline(x, y, teacher if cache else None)
        return timed_fit(lambda e: distiller.fit(pipeline, epochs=e, verbose=0))

    def keras_distiller():
        distiller = keras.distillation.Distiller(
            teacher,
            student(),
            keras.distillation.LogitsDistillation(4.0, loss=keras.losses.KLDivergence()),
            student_loss_weight=0.1,
        )
        distiller.compile(
            optimizer=kd_keras.optimizers.CoupledSGD(0.05, momentum=0.9),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
        return timed_fit(lambda e: distiller.fit(batches, epochs=e, verbose=0))

    rows = {
        "floor": floor,
        "kd live": lambda: recipe("kd", False),
        "kd cached": lambda: recipe("kd", True),
        "keras.distillation": keras_distiller,
    }
    if not FLAGS.quick:
        for name in ("mixup", "cutmix", "cutmix_pick"):
            rows[f"{name} live"] = lambda name=name: recipe(name, False)
            rows[f"{name} cached"] = lambda name=name: recipe(name, True)
    times = {name: [] for name in rows}
    for _ in range(FLAGS.rounds):
        for name, measure in rows.items():
            times[name].append(measure())
    print(
        f"digits, student {FLAGS.student}, batch {FLAGS.batch_size}, {steps} steps per epoch; "
        f"median of {FLAGS.rounds} rounds (ratios per round, then median [quartiles])\n"
    )
    print(f"{'run':22s} {'epoch s':>8s} {'ms/step':>8s} {'x floor':>20s}")
    floor_times = np.asarray(times["floor"])
    for name, values in times.items():
        value = np.median(values)
        ratios = np.asarray(values) / floor_times
        quartiles = np.percentile(ratios, [25, 75])
        print(
            f"{name:22s} {value:8.3f} {1e3 * value / steps:8.2f} "
            f"{np.median(ratios):8.2f} [{quartiles[0]:.2f}, {quartiles[1]:.2f}]"
        )


def _pipeline(x, y, teacher):
    if teacher is None:
        return kd_keras.data.pipeline((x, y), FLAGS.batch_size)
    logits = teacher.predict(x, batch_size=256, verbose=0)
    inputs = {kd_keras.distiller.INPUTS: x, kd_keras.distiller.TEACHER_LOGITS: logits}
    return kd_keras.data.pipeline((inputs, y), FLAGS.batch_size)


if __name__ == "__main__":
    app.run(main)
