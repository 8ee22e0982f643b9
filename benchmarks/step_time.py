"""Distillation step time vs its floor and vs keras.distillation, with and without XLA.

The floor is what any KD step must do: one student train step (Keras' own
compiled step, cross-entropy) plus one teacher forward pass on the same batch,
each measured alone. All candidates are timed in interleaved rounds in one
process, so machine noise hits them alike. Ratios are paired: computed within
each round, then the median (and the 25-75% range) over rounds, which is far
steadier on a noisy machine than a ratio of medians.

    python benchmarks/step_time.py                  # digits CNN -> MLP, batch 64
    python benchmarks/step_time.py --student=small_cnn --batch_size=128
"""

import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import app  # noqa: E402
from absl import flags  # noqa: E402

import kd_keras  # noqa: E402

flags.DEFINE_string("student", "mlp", "Student zoo name.")
flags.DEFINE_integer("batch_size", 64, "Batch size.")
flags.DEFINE_integer("steps", 30, "Steps per round.")
flags.DEFINE_integer("rounds", 15, "Interleaved rounds.")
flags.DEFINE_list("jit", ["off", "on"], "XLA settings to measure.")
FLAGS = flags.FLAGS


def _batches(x, y):
    return iter(tf.data.Dataset.from_tensors((x, y)).repeat())


def _candidates(teacher, student_name, x, y, jit):
    def fresh_student():
        keras.utils.set_random_seed(0)
        return kd_keras.models.get(student_name, x.shape[1:], 10)

    def sgd():
        return keras.optimizers.SGD(0.01, momentum=0.9)

    ours = kd_keras.Distiller(teacher, fresh_student(), student_loss_weight=0.1)
    ours.compile(optimizer=sgd(), jit_compile=jit)

    theirs = keras.distillation.Distiller(
        teacher,
        fresh_student(),
        distillation_losses=keras.distillation.LogitsDistillation(
            temperature=4.0, loss=keras.losses.KLDivergence()
        ),
        student_loss_weight=0.1,
    )
    theirs.compile(
        optimizer=sgd(),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=jit,
    )

    alone = fresh_student()
    alone.compile(
        optimizer=sgd(),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=jit,
    )
    forward = tf.function(lambda inputs: teacher(inputs, training=False), jit_compile=jit)

    def keras_step(model):
        model.make_train_function()
        iterator = _batches(x, y)
        return lambda: model.train_function(iterator)

    return {
        "student train step": keras_step(alone),
        "teacher forward": lambda: forward(x),
        "kd_keras.Distiller": keras_step(ours),
        "keras.distillation": keras_step(theirs),
    }


def _time(step, steps):
    step()  # the first call after a round of others warms caches
    started = time.perf_counter()
    for _ in range(steps):
        result = step()
    # Reading a value waits for any asynchronous work of the last step.
    tf.nest.map_structure(lambda t: t.numpy() if hasattr(t, "numpy") else t, result)
    return (time.perf_counter() - started) / steps


def main(_):
    data = kd_keras.data.load_digits()
    x = data.train[0][: FLAGS.batch_size]
    y = data.train[1][: FLAGS.batch_size]
    teacher = kd_keras.resolve.load_model(kd_keras.shipped.path(kd_keras.shipped.DIGITS_TEACHER))
    rows, ratios, per_jit = [], {}, {}
    for jit_flag in FLAGS.jit:
        jit = jit_flag == "on"
        steps = _candidates(teacher, FLAGS.student, x, y, jit)
        for step in steps.values():
            step()  # trace and compile outside the timing
        times = {name: [] for name in steps}
        for _ in range(FLAGS.rounds):
            for name, step in steps.items():
                times[name].append(_time(step, FLAGS.steps))
        median = {name: statistics.median(values) for name, values in times.items()}
        floors = [
            student + forward
            for student, forward in zip(times["student train step"], times["teacher forward"])
        ]
        for name, values in times.items():
            rows.append((jit_flag, name, median[name] * 1e3, _paired(values, floors)))
        rows.append(
            (
                jit_flag,
                "floor (student step + teacher forward)",
                statistics.median(floors) * 1e3,
                "1",
            )
        )
        ratios[jit_flag] = _paired(times["kd_keras.Distiller"], times["keras.distillation"])
        per_jit[jit_flag] = times["kd_keras.Distiller"]

    print(
        f"\nKD step time, shipped digits CNN teacher -> {FLAGS.student}, batch "
        f"{FLAGS.batch_size}, {FLAGS.rounds} rounds x {FLAGS.steps} steps, "
        f"TF {tf.__version__}, Keras {keras.__version__}, "
        f"{os.cpu_count()} CPUs\n"
    )
    print("| XLA | step | ms/step (median) | x floor (paired median [25%, 75%]) |")
    print("|---|---|---|---|")
    for jit_flag, name, milliseconds, ratio in rows:
        print(f"| {jit_flag} | {name} | {milliseconds:.2f} | {ratio} |")
    print()
    for jit_flag, ratio in ratios.items():
        print(f"XLA {jit_flag}: kd_keras.Distiller / keras.distillation = {ratio}")
    if len(per_jit) == 2:
        print(f"kd_keras.Distiller XLA on / off = {_paired(per_jit['on'], per_jit['off'])}")


def _paired(values, references):
    ratios = sorted(v / r for v, r in zip(values, references))
    quartiles = statistics.quantiles(ratios, n=4)
    return f"{statistics.median(ratios):.3f} [{quartiles[0]:.3f}, {quartiles[2]:.3f}]"


if __name__ == "__main__":
    app.run(main)
