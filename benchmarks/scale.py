"""Scale and speed on CPU: images/s per recipe, 1 device vs MirroredStrategy, bfloat16, XLA.

Four tables, every number from the same interleaved rounds of one process (the
machine is shared and noisy, so ratios are paired within each round, then the
median and 25-75% range over rounds, as in benchmarks/step_time.py, whose
timing and floor this reuses):

1. Images/s of each recipe's training step (student phase; the augmenter
   phase of a learned augmenter, tst's, as a row of its own) on one device
   in float32 without XLA, its ratio to the floor (a student train step plus a teacher
   forward pass on the same batch), and the speed of MirroredStrategy over
   2 logical CPU devices, of a mixed_bfloat16 student and of XLA, each
   relative to the one-device float32 step.
2. The reduced-precision teacher: forward speed-up of a bfloat16 / float16
   copy (kd_keras.models.cast_model) and the error of its soft targets
   (mean KL(p_t^4 float32 || p_t^4 reduced), argmax agreement) on the digits
   test set, and the KD step with it.
3. The input pipeline alone (kd_keras.data.pipeline iterated without a model)
   against the KD step fed by it and fed a constant batch.

The CPU is split into 2 logical devices first thing, so the mirrored steps
run in this process, timed in the same rounds as the rest; one-device steps
run on the first logical device (both share the CPU's thread pools).

    python benchmarks/scale.py                      # digits CNN teacher -> MLP, batch 64
    python benchmarks/scale.py --rounds=5 --steps=10 --recipes=kd,hard
"""

import os
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import keras  # noqa: E402
import numpy as np  # noqa: E402
import step_time  # noqa: E402  (its flags: --student --batch_size --steps --rounds)
import tensorflow as tf  # noqa: E402
from absl import app  # noqa: E402
from absl import flags  # noqa: E402
from absl import logging  # noqa: E402

import kd_keras  # noqa: E402
from kd_keras import precision as kd_precision  # noqa: E402
from kd_keras import strategy as kd_strategy  # noqa: E402
from kd_keras.recipes import build  # noqa: E402

flags.DEFINE_list(
    "recipes", ["kd", "mixup", "cutmix_pick", "hard", "tst", "backward"], "Recipes to time."
)
flags.DEFINE_integer("replicas", 2, "Logical CPU devices of the mirrored candidates.")
FLAGS = flags.FLAGS

CONFIGS = ("float32", "mirrored", "mixed_bfloat16", "xla")


def _distiller(recipe, teacher, student_name, shape, config, teacher_dtype=None):
    strategy = kd_strategy.get("mirrored" if config == "mirrored" else "default")
    with strategy.scope():
        chosen = kd_keras.recipes.get(recipe, {"jit_compile": config == "xla"})
        if teacher_dtype is not None:
            teacher = kd_keras.models.cast_model(teacher, teacher_dtype)
        teacher = kd_strategy.place(teacher, strategy)
        keras.utils.set_random_seed(0)
        with kd_precision.policy(config if config == "mixed_bfloat16" else "float32"):
            student = kd_keras.models.get(student_name, shape, 10)
        distiller = build.distiller(chosen, teacher, student)
        build.compile(distiller, chosen, steps_per_epoch=1000, epochs=240)
    return distiller, strategy


def _steps(distiller, strategy, iterator_of):
    """One callable per phase, each traced (in its phase) before timing."""
    steps = {}
    phases = ["augmenter", "student"] if distiller.learnable_augmenter else ["student"]
    for phase in phases:
        distiller.phase = phase
        function = distiller.make_train_function()
        iterator = iterator_of(strategy)
        function(iterator)
        steps[phase] = lambda function=function, iterator=iterator: function(iterator)
    return steps


def _constant(x, y):
    def iterator_of(strategy):
        dataset = tf.data.Dataset.from_tensors((x, y)).repeat()
        if strategy is not tf.distribute.get_strategy():
            dataset = strategy.experimental_distribute_dataset(dataset)
        return iter(dataset)

    return iterator_of


def _floor(teacher, student_name, x, y):
    keras.utils.set_random_seed(0)
    alone = kd_keras.models.get(student_name, x.shape[1:], 10)
    alone.compile(
        optimizer=keras.optimizers.SGD(0.01, momentum=0.9),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=False,
    )
    alone.make_train_function()
    iterator = step_time._batches(x, y)
    forward = tf.function(lambda inputs: teacher(inputs, training=False))
    return (lambda: alone.train_function(iterator)), (lambda: forward(x))


def _pipeline_alone(train, batch_size):
    iterator = iter(kd_keras.data.pipeline(train, batch_size, training=True).repeat())
    return lambda: next(iterator)


def _median_rate(times, images):
    return images / statistics.median(times)


def main(_):
    kd_strategy.split_cpu(FLAGS.replicas)
    # Retracing notes (each candidate's step is made once, on purpose) and
    # collective all-reduce INFO lines would bury the tables.
    tf.get_logger().setLevel("ERROR")
    logging.set_verbosity(logging.ERROR)
    data = kd_keras.data.load_digits()
    batch = FLAGS.batch_size
    x, y = data.train[0][:batch], data.train[1][:batch]
    shape = x.shape[1:]
    teacher = kd_keras.resolve.load_model(kd_keras.shipped.path(kd_keras.shipped.DIGITS_TEACHER))
    constant = _constant(x, y)

    candidates = {}
    student_step, teacher_forward = _floor(teacher, FLAGS.student, x, y)
    candidates["floor: student step"] = student_step
    candidates["floor: teacher forward"] = teacher_forward
    for recipe in FLAGS.recipes:
        for config in CONFIGS:
            distiller, strategy = _distiller(recipe, teacher, FLAGS.student, shape, config)
            for phase, step in _steps(distiller, strategy, constant).items():
                candidates[(recipe, phase, config)] = step
            print(f"compiled {recipe} {config}", flush=True)

    fast_teachers = {"float32": teacher}
    for dtype in ("bfloat16", "float16"):
        fast_teachers[dtype] = kd_keras.models.cast_model(teacher, dtype)
    for dtype, model in fast_teachers.items():
        forward = tf.function(lambda inputs, model=model: model(inputs, training=False))
        forward(x)
        candidates[("teacher forward", dtype)] = lambda forward=forward: forward(x)
    distiller, strategy = _distiller(
        "kd", teacher, FLAGS.student, shape, "float32", teacher_dtype="bfloat16"
    )
    candidates[("kd", "student", "teacher bfloat16")] = _steps(distiller, strategy, constant)[
        "student"
    ]

    candidates["pipeline alone"] = _pipeline_alone(data.train, batch)
    distiller, strategy = _distiller("kd", teacher, FLAGS.student, shape, "float32")
    fed = _steps(
        distiller,
        strategy,
        lambda _: iter(kd_keras.data.pipeline(data.train, batch, training=True).repeat()),
    )
    candidates["kd step fed by the pipeline"] = fed["student"]
    candidates["kd step on a constant batch"] = candidates[("kd", "student", "float32")]

    for step in candidates.values():
        step()
    times = {name: [] for name in candidates}
    for round_index in range(FLAGS.rounds):
        started = time.perf_counter()
        for name, step in candidates.items():
            times[name].append(step_time._time(step, FLAGS.steps))
        print(
            f"round {round_index + 1}/{FLAGS.rounds}: {time.perf_counter() - started:.0f} s",
            flush=True,
        )

    floors = [a + b for a, b in zip(times["floor: student step"], times["floor: teacher forward"])]
    print(
        f"\nScale and speed, shipped digits CNN teacher -> {FLAGS.student}, batch {batch}, "
        f"{FLAGS.rounds} rounds x {FLAGS.steps} steps, TF {tf.__version__}, Keras "
        f"{keras.__version__}, {os.cpu_count()} CPUs; mirrored = {FLAGS.replicas} logical "
        "CPU devices; ratios paired per round: median [25%, 75%]\n"
    )
    print(
        "| recipe | step | 1 device f32 img/s | x floor | mirrored x2 / 1 device "
        "| mixed_bfloat16 / float32 | XLA on / off |"
    )
    print("|---|---|---|---|---|---|---|")
    print(
        f"| floor | student step + teacher forward | {_median_rate(floors, batch):.0f} | 1 | | | |"
    )
    for recipe in FLAGS.recipes:
        # An augmenter phase only where the recipe's augmenter learns (tst;
        # hard's default search has no weights): whatever _steps timed.
        phases = [p for p in ("student", "augmenter") if (recipe, p, "float32") in times]
        for phase in phases:
            base = times[(recipe, phase, "float32")]
            # A faster candidate has a higher speed: report speed ratios.
            speed = {
                config: step_time._paired(base, times[(recipe, phase, config)])
                for config in CONFIGS[1:]
            }
            print(
                f"| {recipe} | {phase} | {_median_rate(base, batch):.0f} | "
                f"{step_time._paired(base, floors)} | {speed['mirrored']} | "
                f"{speed['mixed_bfloat16']} | {speed['xla']} |"
            )

    print("\nReduced-precision teacher (cast_model), digits test set, T = 4\n")
    print(
        "| teacher | forward ms (batch "
        f"{batch}) | speed-up vs float32 | mean KL(p_t fp32 ‖ p_t) | max KL | "
        "argmax agreement |"
    )
    print("|---|---|---|---|---|---|")
    x_test = data.test[0]
    reference = teacher.predict(x_test, verbose=0)
    for dtype, model in fast_teachers.items():
        reduced = keras.ops.convert_to_numpy(
            keras.ops.cast(model.predict(x_test, verbose=0), "float32")
        )
        kl = keras.ops.convert_to_numpy(
            kd_keras.losses.kl_per_sample(reference, reduced, temperature=4.0)
        )
        forward = times[("teacher forward", dtype)]
        print(
            f"| {dtype} | {statistics.median(forward) * 1e3:.2f} | "
            f"{step_time._paired(times[('teacher forward', 'float32')], forward)} | "
            f"{kl.mean():.2e} | {kl.max():.2e} | "
            f"{np.mean(reference.argmax(1) == reduced.argmax(1)):.4f} |"
        )
    kd_base = times[("kd", "student", "float32")] if "kd" in FLAGS.recipes else None
    if kd_base is not None:
        print(
            "\nKD step with the bfloat16 teacher, speed vs float32 teacher: "
            f"{step_time._paired(kd_base, times[('kd', 'student', 'teacher bfloat16')])}"
        )

    print("\nInput pipeline (kd_keras.data.pipeline: cache, shuffle, batch, prefetch)\n")
    print("| what | img/s | speed vs the kd step on a constant batch |")
    print("|---|---|---|")
    constant_times = times["kd step on a constant batch"]
    for name in ("pipeline alone", "kd step fed by the pipeline", "kd step on a constant batch"):
        print(
            f"| {name} | {_median_rate(times[name], batch):.0f} | "
            f"{step_time._paired(constant_times, times[name])} |"
        )


if __name__ == "__main__":
    app.run(main)
