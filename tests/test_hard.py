"""HARD's SpatialAugmenter: identity start, bounds, phases, objective, XLA."""

import math

import keras
import numpy as np
import pytest
from conftest import per_sample
from sklearn.datasets import load_digits

import kd_keras
from kd_keras.augment import SpatialAugmenter
from kd_keras.losses import kl_per_sample
from kd_keras.models import small

SHAPE = (12, 12, 1)
# These tests are about the "network" sampler (learned warps from image and
# noise), no longer SpatialAugmenter's default; tests/test_hard_samplers.py
# covers the others.
NETWORK = dict(
    sampler="network",
    image_conditioned=True,
    candidates=1,
    interpolation="bilinear",
    groups_per_view=0,
    adaptive_groups=False,
    lambda_t=1.0,
)


@pytest.fixture(scope="module")
def digits():
    # Real digits centred on a 12x12 canvas, the HARD toy in miniature.
    data = load_digits()
    x = np.zeros((32, *SHAPE), "float32")
    x[:, 2:10, 2:10, 0] = data.images[:32] / 16.0
    return x, data.target[:32].astype("int32")


def _networks(seed=0):
    keras.utils.set_random_seed(seed)
    return small.cnn(SHAPE, 10, width=4), small.mlp(SHAPE, 10, width=16)


def _augmenter(**kwargs):
    augmenter = SpatialAugmenter(seed=1, **{**NETWORK, **kwargs})
    # Built before the Distiller sees it: Distiller.__init__ creates its
    # metric trackers before it builds the augmenter, and would otherwise not
    # know the augmenter is learnable (no augmenter_objective tracker).
    augmenter.build((None, *SHAPE))
    return augmenter


def _distiller(augmenter, jit_compile="auto", learning_rate=1e-2):
    teacher, student = _networks()
    distiller = kd_keras.Distiller(teacher, student, augmenter=augmenter)
    distiller.compile(
        optimizer=keras.optimizers.Adam(1e-2),
        augmenter_optimizer=keras.optimizers.Adam(learning_rate),
        jit_compile=jit_compile,
    )
    return distiller


def _values(variables):
    return [np.array(v.numpy()) for v in variables]


def _same(before, variables):
    return all(np.array_equal(b, v.numpy()) for b, v in zip(before, variables))


def test_identity_at_initialisation(digits):
    x, y = digits
    augmenter = _augmenter()
    np.testing.assert_array_equal(augmenter.augment(x).numpy(), x)
    views = augmenter.views(x, y, None, None, training=True)
    np.testing.assert_array_equal(views.x.numpy(), np.concatenate([x, x]))
    np.testing.assert_array_equal(views.y.numpy(), np.concatenate([y, y]))
    np.testing.assert_array_equal(per_sample(views, "label_weight"), np.repeat([1.0, 0.0], len(x)))
    labelled = _augmenter(label_views=0.5).views(x, y, None, None)
    np.testing.assert_array_equal(
        per_sample(labelled, "label_weight"), np.repeat([1.0, 0.5], len(x))
    )


def test_training_false_is_identity(digits):
    x, y = digits
    augmenter = _augmenter()
    for weight in augmenter.trainable_weights:
        weight.assign(np.full(weight.shape, 0.5, "float32"))
    views = augmenter.views(x, y, None, None, training=False)
    assert views.x is x and views.y is y and views.label_weight == 1.0
    np.testing.assert_array_equal(augmenter(x, training=False), x)
    assert not np.allclose(augmenter(x, training=True), x)


def test_parameters_stay_in_range_with_large_weights(digits):
    x, _ = digits
    # A non-square canvas checks that x translations scale with the width.
    x = np.pad(x, ((0, 0), (0, 0), (2, 2), (0, 0)))
    ranges = dict(max_rotation=10.0, max_scale=0.1, max_shear=0.2, max_translation=0.5)
    augmenter = SpatialAugmenter(seed=2, **NETWORK, **ranges)
    augmenter.build(x.shape)
    rng = np.random.default_rng(0)
    for weight in augmenter.trainable_weights:
        weight.assign(50.0 * rng.standard_normal(weight.shape).astype("float32"))
    parameters = {k: v.numpy() for k, v in augmenter.affine_parameters(x).items()}
    bounds = {
        "rotation": 10.0 * math.pi / 180.0,
        "shear_x": 0.2,
        "shear_y": 0.2,
        "translate_x": 0.5 * 16,
        "translate_y": 0.5 * 12,
    }
    for name, bound in bounds.items():
        assert np.all(np.abs(parameters[name]) <= bound * (1 + 1e-6)), name
        assert np.max(np.abs(parameters[name])) > 0.9 * bound, name  # saturated
    assert np.all(np.abs(parameters["scale"] - 1.0) <= 0.1 + 1e-6)

    fixed = SpatialAugmenter(max_rotation=0.0, max_translation=0.0, **NETWORK)
    fixed.build(x.shape)
    for weight in fixed.trainable_weights:
        weight.assign(50.0 * rng.standard_normal(weight.shape).astype("float32"))
    parameters = fixed.affine_parameters(x)
    for name in ("rotation", "translate_x", "translate_y"):
        np.testing.assert_array_equal(parameters[name].numpy(), 0.0)


def test_objective_at_identity_is_minus_the_divergence(digits):
    x, y = digits
    teacher, student = _networks()
    augmenter = _augmenter(temperature=2.0)
    objective = augmenter.objective(x, y, teacher, student).numpy()
    expected = -np.mean(kl_per_sample(teacher(x), student(x), 2.0).numpy())
    np.testing.assert_allclose(objective, expected, rtol=1e-5)


def test_each_phase_changes_only_its_own_weights(digits):
    x, y = digits
    augmenter = _augmenter()
    distiller = _distiller(augmenter)
    teacher, student = distiller.teacher, distiller.student
    networks = [*teacher.variables, *student.variables]

    networks_before = _values(networks)
    augmenter_before = _values(augmenter.trainable_variables)
    distiller.phase = "augmenter"
    history = distiller.fit(x, y, batch_size=16, epochs=2, verbose=0)
    assert np.isfinite(history.history["augmenter_objective"]).all()
    assert _same(networks_before, networks)
    assert not _same(augmenter_before, augmenter.trainable_variables)

    teacher_before = _values(teacher.variables)
    student_before = _values(student.trainable_variables)
    augmenter_before = _values(augmenter.trainable_variables)
    distiller.phase = "student"
    distiller.fit(x, y, batch_size=16, epochs=1, verbose=0)
    assert _same(teacher_before, teacher.variables)
    assert _same(augmenter_before, augmenter.trainable_variables)
    assert all(
        not np.array_equal(b, v.numpy())
        for b, v in zip(student_before, student.trainable_variables)
    )


def test_augmenter_phase_increases_teacher_student_divergence(digits):
    x, y = digits
    augmenter = _augmenter()
    distiller = _distiller(augmenter, learning_rate=1e-2)
    teacher, student = distiller.teacher, distiller.student
    noise = np.random.default_rng(3).standard_normal((len(x), 8)).astype("float32")

    def divergence():
        views = augmenter.augment(x, noise=noise)
        return float(np.mean(kl_per_sample(teacher(views), student(views))))

    before = divergence()
    distiller.phase = "augmenter"
    steps = 40
    distiller.fit(
        np.tile(x, (steps, 1, 1, 1)),
        np.tile(y, steps),
        batch_size=len(x),
        shuffle=False,
        verbose=0,
    )
    after = divergence()
    assert after > 1.5 * before, (before, after)


def test_get_config_round_trip():
    augmenter = SpatialAugmenter(
        **{**NETWORK, "lambda_t": 2.0},
        noise_dim=4,
        max_rotation=12.0,
        max_scale=0.3,
        max_shear=0.1,
        max_translation=0.4,
        filters=8,
        units=16,
        label_views=0.25,
        temperature=4.0,
        fill_value=0.5,
        seed=7,
        name="hard_spatial",
    )
    config = augmenter.get_config()
    clone = SpatialAugmenter.from_config(config)
    assert clone.get_config() == config
    assert config["lambda_t"] == 2.0 and config["max_translation"] == 0.4
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(augmenter))
    assert isinstance(restored, SpatialAugmenter)
    assert restored.get_config() == config
    restored.build((None, *SHAPE))
    augmenter.build((None, *SHAPE))
    assert [w.shape for w in restored.weights] == [w.shape for w in augmenter.weights]


@pytest.mark.large
def test_jitted_steps_compile(digits):
    x, y = digits
    augmenter = _augmenter()
    distiller = _distiller(augmenter, jit_compile=True)
    assert distiller.jit_compile  # Keras did not fall back to jit_compile=False
    distiller.phase = "augmenter"
    history = distiller.fit(x, y, batch_size=16, epochs=1, verbose=0)
    assert distiller.jit_compile
    assert np.isfinite(history.history["augmenter_objective"]).all()
    distiller.phase = "student"
    history = distiller.fit(x, y, batch_size=16, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"]).all()


def test_noise_only_network_is_a_symmetric_distribution_of_transforms(digits):
    x, y = digits
    augmenter = _augmenter(image_conditioned=False)
    # One bias-free linear map of the noise: no image features, no offset.
    assert [tuple(w.shape) for w in augmenter.trainable_weights] == [(8, 6)]
    np.testing.assert_array_equal(augmenter.augment(x).numpy(), x)

    distiller = _distiller(augmenter)
    distiller.phase = "augmenter"
    distiller.fit(np.tile(x, (4, 1, 1, 1)), np.tile(y, 4), batch_size=16, verbose=0)
    noise = np.random.default_rng(4).standard_normal((len(x), 8)).astype("float32")
    parameters = {k: v.numpy() for k, v in augmenter.affine_parameters(x, noise).items()}
    mirrored = {k: v.numpy() for k, v in augmenter.affine_parameters(x, -noise).items()}
    assert np.abs(parameters["translate_x"]).max() > 0.01  # it has learned
    identity = {name: 0.0 for name in parameters}
    identity["scale"] = 1.0
    for name, value in parameters.items():
        # -z gives the opposite transform, so the distribution is centred.
        np.testing.assert_allclose(
            mirrored[name] - identity[name], identity[name] - value, atol=1e-6
        )
    # The image is ignored: the same noise moves every image alike.
    other = augmenter.affine_parameters(x[::-1], noise)
    for name, value in other.items():
        np.testing.assert_allclose(value.numpy(), parameters[name], atol=1e-6)

    config = augmenter.get_config()
    assert config["image_conditioned"] is False
    clone = SpatialAugmenter.from_config(config)
    clone.build((None, *SHAPE))
    assert [w.shape for w in clone.weights] == [w.shape for w in augmenter.weights]
