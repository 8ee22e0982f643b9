"""Subprocess of the strategy tests: one device vs MirroredStrategy on 2 logical CPUs.

Logical devices must be configured before TensorFlow starts, hence a process
of its own. Modes (first argument):

- `distiller` (default, test_distiller): a Distiller with a learnable
  augmenter, both phases; the largest weight and loss differences.
- `deterministic` (test_strategy): `kd_keras.distill(..., strategy=...)` on
  the recipes whose steps draw nothing random (kd, kd with per-replica XLA,
  backward), one device vs mirrored with the same global batch.
- `random` (test_strategy): the recipes that draw random views (mixup,
  cutmix_pick, hard, tst) under mirrored: their losses, whether the
  augmenter phases trained, whether the replicas' copies agree, and whether
  two replicas given the same images draw different views.

Prints one line of JSON.
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


def train_distiller(strategy):
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


def compare_distiller():
    single_losses, single_weights = train_distiller(tf.distribute.get_strategy())
    strategy = kd_keras.strategy.get("mirrored")
    mirrored_losses, mirrored_weights = train_distiller(strategy)
    return {
        "replicas": strategy.num_replicas_in_sync,
        "loss_diff": float(np.abs(single_losses - mirrored_losses).max()),
        "weight_diff": max(
            float(np.abs(a - b).max()) for a, b in zip(single_weights, mirrored_weights)
        ),
        "offset": float(single_weights[-1]),
    }


def distil(recipe, strategy, epochs=2, **overrides):
    x, y = tiny_batch(count=32)
    x = 1 / (1 + np.exp(-x))  # images in [0, 1], as tst's and backward's views
    # Builders: the models are created in the strategy's scope.
    return kd_keras.distill(
        tiny_teacher,
        tiny_student,
        (x, y),
        recipe=recipe,
        epochs=epochs,
        batch_size=16,
        strategy=strategy,
        verbose=0,
        **overrides,
    )


def compare_deterministic():
    report = {}
    for name, recipe, overrides in (
        ("kd", "kd", {}),
        ("kd_xla", "kd", {"jit_compile": True}),
        ("backward", "backward", {}),
    ):
        single = distil(recipe, None, **overrides)
        mirrored = distil(recipe, "mirrored", **overrides)
        report[name] = {
            "replicas": mirrored.distribute_strategy.num_replicas_in_sync,
            "replica_jit_compile": bool(mirrored.replica_jit_compile),
            "loss_diff": max(
                abs(a - b)
                for key in ("loss", "kd", "student_loss")
                for a, b in zip(single.history.history[key], mirrored.history.history[key])
            ),
            "weight_diff": max(
                float(np.abs(np.asarray(a) - np.asarray(b)).max())
                for a, b in zip(single.student.weights, mirrored.student.weights)
            ),
            "steps": int(keras.ops.convert_to_numpy(mirrored.optimizer.iterations)),
        }
    return report


def run_random():
    strategy = kd_keras.strategy.get("mirrored")
    report = {}
    for recipe, epochs, overrides in (
        ("mixup", 2, {}),
        ("cutmix_pick", 2, {}),
        (
            "hard",
            2,
            {
                "student_steps": 1,
                "augmenter_steps": 1,
                "sampler": "network",
                "candidates": 1,
                "interpolation": "bilinear",
            },
        ),
        ("tst", 4, {}),  # policy phases at epochs 1 and 2 of 4
    ):
        distiller = distil(recipe, "mirrored", epochs=epochs, **overrides)
        history = distiller.history.history
        copies = [
            [keras.ops.convert_to_numpy(c) for c in v.value.values]
            for v in distiller.student.weights + distiller.augmenter.weights
        ]
        optimizer = distiller.augmenter_optimizer
        report[recipe] = {
            "loss": history["loss"],
            "augmenter_objective": history.get("augmenter_objective"),
            "augmenter_steps": 0
            if optimizer is None
            else int(keras.ops.convert_to_numpy(optimizer.iterations)),
            "replicas_agree": all(
                all(np.array_equal(c[0], other) for other in c[1:]) for c in copies
            ),
            "views_differ_per_replica": _views_differ(distiller, strategy),
        }
    return report


def _views_differ(distiller, strategy):
    x, y = tiny_batch(count=8)

    def views():
        made = distiller.augmenter.views(
            x, y, distiller._teacher_fn, distiller._student_fn, training=True
        )
        return made.x

    per_replica = strategy.experimental_local_results(strategy.run(tf.function(views)))
    first, second = (keras.ops.convert_to_numpy(v) for v in per_replica)
    return bool(np.abs(first - second).max() > 1e-6)


MODES = {
    "distiller": compare_distiller,
    "deterministic": compare_deterministic,
    "random": run_random,
}
json.dump(MODES[sys.argv[1] if len(sys.argv) > 1 else "distiller"](), sys.stdout)
