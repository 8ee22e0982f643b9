"""HARD's GenerativeAugmenter: VAE-reconstruction start, bounds, phases, objective, saving, XLA."""

import keras
import numpy as np
import pytest
from conftest import per_sample

import kd_keras
from kd_keras import shipped
from kd_keras.augment import GenerativeAugmenter
from kd_keras.losses import kl_per_sample
from kd_keras.models import VAE

SHAPE = (28, 28, 1)
NOISE_DIM = 8


@pytest.fixture(scope="module")
def batch(digits):
    x, y = digits.train
    return x[:32], y[:32]


def _vae():
    # Loaded afresh for each augmenter: the augmenter freezes it in place.
    return keras.saving.load_model(shipped.path(shipped.DIGITS_VAE), safe_mode=True)


def _networks(seed=0):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input(SHAPE)
    x = keras.layers.Conv2D(4, 3, strides=2, padding="same")(inputs)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    teacher = keras.Model(inputs, keras.layers.Dense(10)(x), name="teacher")
    inputs = keras.Input(SHAPE)
    x = keras.layers.Dense(16, activation="relu")(keras.layers.Flatten()(inputs))
    student = keras.Model(inputs, keras.layers.Dense(10)(x), name="student")
    return teacher, student


def _augmenter(**kwargs):
    augmenter = GenerativeAugmenter(_vae(), noise_dim=NOISE_DIM, seed=1, **kwargs)
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
    return len(before) == len(variables) and all(
        np.array_equal(b, v.numpy()) for b, v in zip(before, variables)
    )


def _noise(count, seed=3):
    return np.random.default_rng(seed).standard_normal((count, NOISE_DIM)).astype("float32")


def test_starts_from_the_vae_reconstruction(batch):
    x, y = batch
    augmenter = _augmenter()
    assert augmenter.vae.trainable is False and not augmenter.vae.trainable_weights
    assert len(augmenter.trainable_weights) == 4  # the perturbation network only
    _, delta = augmenter.latent_perturbation(x)
    np.testing.assert_array_equal(delta.numpy(), 0.0)
    x_tilde = augmenter.augment(x).numpy()
    np.testing.assert_allclose(x_tilde, augmenter.vae(x).numpy(), atol=1e-6)
    assert not np.allclose(x_tilde, x, atol=1e-2)  # a reconstruction, not x
    views = augmenter.views(x, y, None, None, training=True)
    np.testing.assert_allclose(views.x.numpy(), np.concatenate([x, x_tilde]), atol=1e-6)
    np.testing.assert_array_equal(views.y.numpy(), np.concatenate([y, y]))
    np.testing.assert_array_equal(per_sample(views, "label_weight"), np.repeat([1.0, 0.0], len(x)))
    labelled = augmenter.__class__.from_config({**augmenter.get_config(), "label_views": 0.5})
    labelled.build((None, *SHAPE))
    np.testing.assert_array_equal(
        per_sample(labelled.views(x, y, None, None), "label_weight"), np.repeat([1.0, 0.5], len(x))
    )


def test_training_false_is_identity(batch):
    x, y = batch
    augmenter = _augmenter()
    for weight in augmenter.trainable_weights:
        weight.assign(np.full(weight.shape, 0.5, "float32"))
    views = augmenter.views(x, y, None, None, training=False)
    assert views.x is x and views.y is y and views.label_weight == 1.0
    np.testing.assert_array_equal(augmenter(x, training=False), x)
    assert not np.allclose(augmenter(x, training=True), augmenter.vae(x), atol=1e-3)


def test_delta_is_bounded_by_max_delta(batch):
    x, _ = batch
    augmenter = _augmenter(max_delta=0.7)
    rng = np.random.default_rng(0)
    for weight in augmenter.trainable_weights:
        weight.assign(50.0 * rng.standard_normal(weight.shape).astype("float32"))
    mean, delta = augmenter.latent_perturbation(x)
    delta = delta.numpy()
    assert delta.shape == (len(x), augmenter.vae.latent_dim)
    assert np.all(np.abs(delta) <= 0.7 * (1 + 1e-6))
    assert np.max(np.abs(delta)) > 0.9 * 0.7  # saturated
    np.testing.assert_allclose(mean.numpy(), augmenter.vae.encode(x)[0].numpy(), atol=1e-6)
    x_tilde = augmenter.augment(x).numpy()
    assert x_tilde.min() >= 0.0 and x_tilde.max() <= 1.0

    still = _augmenter(max_delta=0.0)
    for weight in still.trainable_weights:
        weight.assign(50.0 * rng.standard_normal(weight.shape).astype("float32"))
    np.testing.assert_allclose(still.augment(x).numpy(), still.vae(x).numpy(), atol=1e-6)


def test_objective_at_initialisation(batch):
    x, y = batch
    teacher, student = _networks()
    augmenter = _augmenter(temperature=2.0, lambda_t=0.5)
    reconstruction = augmenter.vae(x)
    expected = np.mean(
        -kl_per_sample(teacher(reconstruction), student(reconstruction), 2.0).numpy()
        + 0.5 * kl_per_sample(teacher(x), teacher(reconstruction), 2.0).numpy()
    )
    objective = augmenter.objective(x, y, teacher, student).numpy()
    np.testing.assert_allclose(objective, expected, rtol=1e-4, atol=1e-7)


def test_each_phase_changes_only_its_own_weights(batch):
    x, y = batch
    augmenter = _augmenter()
    distiller = _distiller(augmenter)
    teacher, student, vae = distiller.teacher, distiller.student, augmenter.vae
    frozen = [*teacher.variables, *student.variables, *vae.weights]

    frozen_before = _values(frozen)
    augmenter_before = _values(augmenter.trainable_variables)
    distiller.phase = "augmenter"
    history = distiller.fit(x, y, batch_size=16, epochs=1, verbose=0)
    assert np.isfinite(history.history["augmenter_objective"]).all()
    assert _same(frozen_before, frozen)
    assert not _same(augmenter_before, augmenter.trainable_variables)

    frozen = [*teacher.variables, *vae.weights, *augmenter.trainable_variables]
    frozen_before = _values(frozen)
    student_before = _values(student.trainable_variables)
    distiller.phase = "student"
    distiller.fit(x, y, batch_size=16, epochs=1, verbose=0)
    assert _same(frozen_before, frozen)
    assert all(
        not np.array_equal(b, v.numpy())
        for b, v in zip(student_before, student.trainable_variables)
    )


def test_augmenter_phase_increases_teacher_student_divergence(batch):
    x, y = batch
    augmenter = _augmenter(max_delta=2.0)
    distiller = _distiller(augmenter, learning_rate=1e-2)
    teacher, student = distiller.teacher, distiller.student
    noise = _noise(len(x))

    def divergence():
        views = augmenter.augment(x, noise=noise)
        return float(np.mean(kl_per_sample(teacher(views), student(views))))

    before = divergence()
    distiller.phase = "augmenter"
    steps = 30
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
    augmenter = GenerativeAugmenter(
        _vae(),
        noise_dim=4,
        max_delta=1.5,
        units=16,
        label_views=0.25,
        temperature=4.0,
        lambda_t=2.0,
        seed=7,
        name="hard_generative",
    )
    config = augmenter.get_config()
    assert config["max_delta"] == 1.5 and config["lambda_t"] == 2.0
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(augmenter))
    assert isinstance(restored, GenerativeAugmenter)
    assert isinstance(restored.vae, VAE) and restored.vae.trainable is False
    assert restored.get_config() == config
    restored.build((None, *SHAPE))
    augmenter.build((None, *SHAPE))
    assert [w.shape for w in restored.weights] == [w.shape for w in augmenter.weights]
    assert [w.shape for w in restored.trainable_weights] == [
        w.shape for w in augmenter.trainable_weights
    ]
    with pytest.raises(ValueError, match="VAE takes images"):
        GenerativeAugmenter(_vae()).build((None, 12, 12, 1))
    with pytest.raises(TypeError, match="kd_keras.models.VAE"):
        GenerativeAugmenter(keras.layers.Dense(3))


def test_keras_round_trip_of_a_distiller_keeps_vae_and_perturbation(batch, tmp_path):
    x, y = batch
    augmenter = _augmenter()
    distiller = _distiller(augmenter)
    distiller.phase = "augmenter"
    distiller.fit(x, y, batch_size=16, epochs=1, verbose=0)
    path = tmp_path / "distiller.keras"
    distiller.save(path)

    restored = keras.saving.load_model(path, safe_mode=True)
    restored_augmenter = restored.augmenter
    assert isinstance(restored_augmenter, GenerativeAugmenter)
    assert restored_augmenter.vae.trainable is False
    assert _same(_values(augmenter.vae.weights), restored_augmenter.vae.weights)
    assert _same(_values(augmenter.trainable_weights), restored_augmenter.trainable_weights)
    noise = _noise(len(x))
    np.testing.assert_allclose(
        restored_augmenter.augment(x, noise=noise).numpy(),
        augmenter.augment(x, noise=noise).numpy(),
        atol=1e-6,
    )
    np.testing.assert_allclose(restored.predict(x, verbose=0), distiller.predict(x, verbose=0))


@pytest.mark.large
def test_jitted_steps_compile(batch):
    x, y = batch
    augmenter = _augmenter()
    distiller = _distiller(augmenter, jit_compile=True)
    assert distiller.jit_compile
    distiller.phase = "augmenter"
    history = distiller.fit(x, y, batch_size=16, epochs=1, verbose=0)
    assert distiller.jit_compile  # Keras did not fall back to jit_compile=False
    assert np.isfinite(history.history["augmenter_objective"]).all()
    distiller.phase = "student"
    history = distiller.fit(x, y, batch_size=16, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
