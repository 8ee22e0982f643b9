"""Subprocess of test_strategy: one worker of a MultiWorkerMirroredStrategy cluster.

With TF_CONFIG set, this process is one of the workers (the strategy must
exist before TensorFlow runs anything, hence first); without it, it is the
one-process reference with the same global batch. It distils with the kd
recipe; a worker then distils with hard too (a learnable augmenter, its own
optimiser, phases alternating every step; its random views differ per
replica, so it has no one-process reference). The final weights go to the
.npz given as the first argument.
"""

import os
import sys

import kd_keras  # noqa: F401  (sets TensorFlow's log level first)
from kd_keras import strategy as kd_strategy

strategy = kd_strategy.get("multiworker" if "TF_CONFIG" in os.environ else "default")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from conftest import tiny_batch  # noqa: E402
from conftest import tiny_student  # noqa: E402
from conftest import tiny_teacher  # noqa: E402


def distil(recipe, **overrides):
    x, y = tiny_batch(count=32)
    return kd_keras.distill(
        tiny_teacher,
        tiny_student,
        (x, y),
        recipe=recipe,
        epochs=2,
        batch_size=16,
        strategy=strategy,
        verbose=0,
        **overrides,
    )


kd = distil("kd")
to_numpy = keras.ops.convert_to_numpy
arrays = {f"kd_{i}": to_numpy(w) for i, w in enumerate(kd.student.weights)}
if kd_strategy.is_multi_worker(strategy):
    hard = distil(
        "hard",
        student_steps=1,
        augmenter_steps=1,
        sampler="network",
        candidates=1,
        interpolation="bilinear",
    )
    arrays.update(
        {f"hard_{i}": to_numpy(w) for i, w in enumerate(hard.augmenter.trainable_weights)}
    )
    arrays["hard_augmenter_steps"] = to_numpy(hard.augmenter_optimizer.iterations)
arrays["kd_loss"] = np.asarray(kd.history.history["loss"])
arrays["replicas"] = np.asarray(strategy.num_replicas_in_sync)
np.savez(sys.argv[1], **arrays)
