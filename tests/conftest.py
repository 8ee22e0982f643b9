"""Shared fixtures: the digits data, the shipped teacher and tiny models."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

import kd_keras  # noqa: E402
from kd_keras import shipped  # noqa: E402
from kd_keras.augment import Augmenter  # noqa: E402
from kd_keras.augment import View  # noqa: E402
from kd_keras.augment import Views  # noqa: E402


@pytest.fixture(scope="session")
def digits():
    return kd_keras.data.load_digits()


@pytest.fixture(scope="session")
def shipped_teacher():
    return keras.saving.load_model(shipped.path(shipped.DIGITS_TEACHER), safe_mode=True)


def tiny_teacher(input_shape=(8, 8, 1), num_classes=4, seed=1):
    """A small CNN with BatchNorm, whose moving statistics must never change."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input(input_shape)
    x = keras.layers.Conv2D(4, 3, padding="same")(inputs)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(num_classes)(x)
    return keras.Model(inputs, outputs, name="tiny_teacher")


def tiny_student(input_shape=(8, 8, 1), num_classes=4, seed=2):
    """A one-hidden-layer MLP: deterministic in training mode (no BN, no dropout)."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input(input_shape)
    x = keras.layers.Flatten()(inputs)
    x = keras.layers.Dense(16, activation="relu")(x)
    outputs = keras.layers.Dense(num_classes)(x)
    return keras.Model(inputs, outputs, name="tiny_student")


def tiny_batch(count=16, input_shape=(8, 8, 1), num_classes=4, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(count, *input_shape)).astype("float32")
    y = rng.integers(0, num_classes, size=count).astype("int32")
    return x, y


def per_sample(views, field):
    """A Views' label or distillation weights as one per-sample NumPy vector."""
    weights = []
    for view in kd_keras.augment.base.as_views(views):
        weight = np.asarray(keras.ops.convert_to_numpy(getattr(view, field)), "float32")
        weights.append(np.broadcast_to(weight, (int(view.x.shape[0]),)))
    return np.concatenate(weights)


def weights_of(model):
    return [keras.ops.convert_to_numpy(w) for w in model.weights]


def same_weights(before, model):
    return all(
        np.array_equal(a, keras.ops.convert_to_numpy(b)) for a, b in zip(before, model.weights)
    )


@keras.saving.register_keras_serializable(package="kd_keras_tests")
class LearnableOffset(Augmenter):
    """Adds a learned scalar to the inputs; its objective seeks disagreement."""

    def build(self, input_shape):
        self.offset = self.add_weight(shape=(), initializer="zeros", name="offset")

    def views(self, x, y, teacher_fn, student_fn, training=True):
        if not training:
            return View(x, y)
        return Views(View(x, y), View(x + self.offset, y))

    def objective(self, x, y, teacher_fn, student_fn):
        shifted = x + self.offset
        return -keras.ops.mean(
            kd_keras.losses.kl_per_sample(teacher_fn(shifted), student_fn(shifted))
        )

    def log_scalars(self):
        return {
            "offset": self.offset,
            "pair": keras.ops.stack([self.offset.value, 2.0 * self.offset.value]),
        }
