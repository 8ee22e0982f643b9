"""Subprocess of test_distiller: one device vs MirroredStrategy on 2 logical CPUs.

Logical devices must be configured before TensorFlow starts, hence a process
of its own. Prints JSON: the largest weight and loss differences.
"""

import json
import sys

import tensorflow as tf

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

import keras  # noqa: E402
import numpy as np  # noqa: E402
from conftest import LearnableOffset  # noqa: E402
from conftest import tiny_batch  # noqa: E402
from conftest import tiny_student  # noqa: E402
from conftest import tiny_teacher  # noqa: E402

import kd_keras  # noqa: E402


def train(strategy):
    x, y = tiny_batch(count=32)
    with strategy.scope():
        distiller = kd_keras.Distiller(tiny_teacher(), tiny_student(), augmenter=LearnableOffset())
        distiller.compile(
            optimizer=keras.optimizers.SGD(0.1, momentum=0.9),
            augmenter_optimizer=keras.optimizers.SGD(0.5),
        )
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)
    losses = distiller.fit(data, epochs=2, verbose=0, shuffle=False).history["loss"]
    distiller.phase = "augmenter"
    objective = distiller.fit(data, epochs=1, verbose=0, shuffle=False).history[
        "augmenter_objective"
    ]
    weights = [keras.ops.convert_to_numpy(w) for w in distiller.student.weights]
    weights.append(keras.ops.convert_to_numpy(distiller.augmenter.offset))
    return np.array(losses + objective), weights


single_losses, single_weights = train(tf.distribute.get_strategy())
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
mirrored_losses, mirrored_weights = train(strategy)
json.dump(
    {
        "replicas": strategy.num_replicas_in_sync,
        "loss_diff": float(np.abs(single_losses - mirrored_losses).max()),
        "weight_diff": max(
            float(np.abs(a - b).max()) for a, b in zip(single_weights, mirrored_weights)
        ),
        "offset": float(single_weights[-1]),
    },
    sys.stdout,
)
