"""Cost of TensorFlow's deterministic ops (`--deterministic`) on a distillation step.

`tf.config.experimental.enable_op_determinism()` is process-wide, so each
candidate is built, traced and timed with the setting it measures, switched
on and off (TensorFlow's own `disable_op_determinism`) before each of its
rounds. Candidates are timed in interleaved rounds in one process and the
ratio on/off is paired within each round, then the median (and the 25-75%
range) over rounds is reported.

    python benchmarks/determinism.py --rounds=9         # mlp and small_cnn students, batch 64
    python benchmarks/determinism.py --students=small_cnn --batch_size=128
"""

import os
import statistics

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import step_time  # noqa: E402  (its flags: --batch_size --steps --rounds)
import tensorflow as tf  # noqa: E402
from absl import app  # noqa: E402
from absl import flags  # noqa: E402
from tensorflow.python.framework import config as tf_config  # noqa: E402

import kd_keras  # noqa: E402

flags.DEFINE_list("students", ["mlp", "small_cnn"], "Student zoo names.")
flags.DEFINE_list("augmenters", ["none", "spatial"], "none (plain KD) and/or spatial (HARD's).")
FLAGS = flags.FLAGS


def _set(deterministic):
    if deterministic:
        tf.config.experimental.enable_op_determinism()
    else:
        tf_config.disable_op_determinism()


def _candidate(teacher, student_name, augmenter_name, x, y, deterministic):
    _set(deterministic)
    keras.utils.set_random_seed(0)
    student = kd_keras.models.get(student_name, x.shape[1:], 10)
    augmenter = None
    if augmenter_name == "spatial":
        augmenter = kd_keras.augment.SpatialAugmenter(
            sampler="network",
            image_conditioned=True,
            candidates=1,
            interpolation="bilinear",
            seed=0,
        )
    distiller = kd_keras.Distiller(teacher, student, augmenter=augmenter)
    distiller.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9), jit_compile=False)
    distiller.make_train_function()
    iterator = iter(tf.data.Dataset.from_tensors((x, y)).repeat())
    step = lambda: distiller.train_function(iterator)  # noqa: E731
    step()  # trace outside the timing
    return step


def main(_):
    data = kd_keras.data.load_digits()
    x = data.train[0][: FLAGS.batch_size]
    y = data.train[1][: FLAGS.batch_size]
    teacher = kd_keras.resolve.load_model(kd_keras.shipped.path(kd_keras.shipped.DIGITS_TEACHER))
    candidates = {
        (student, augmenter, deterministic): _candidate(
            teacher, student, augmenter, x, y, deterministic
        )
        for student in FLAGS.students
        for augmenter in FLAGS.augmenters
        for deterministic in (False, True)
    }
    times = {key: [] for key in candidates}
    for _ in range(FLAGS.rounds):
        for key, step in candidates.items():
            _set(key[2])
            times[key].append(step_time._time(step, FLAGS.steps))
    _set(False)

    print(
        f"\nDistillation step with and without deterministic ops, shipped digits CNN "
        f"teacher, batch {FLAGS.batch_size}, {FLAGS.rounds} rounds x {FLAGS.steps} "
        f"steps, TF {tf.__version__}, Keras {keras.__version__}, {os.cpu_count()} CPUs\n"
    )
    print(
        "| student | augmenter | ms/step off | ms/step on | on / off (paired median [25%, 75%]) |"
    )
    print("|---|---|---|---|---|")
    for student in FLAGS.students:
        for augmenter in FLAGS.augmenters:
            off = times[(student, augmenter, False)]
            on = times[(student, augmenter, True)]
            print(
                f"| {student} | {augmenter} | {statistics.median(off) * 1e3:.2f} | "
                f"{statistics.median(on) * 1e3:.2f} | {step_time._paired(on, off)} |"
            )


if __name__ == "__main__":
    app.run(main)
