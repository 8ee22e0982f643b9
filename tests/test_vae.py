"""The VAE behind the generative augmenter: shapes, training, saving, the shipped model."""

import json

import keras
import numpy as np
import pytest

import kd_keras
from kd_keras import shipped
from kd_keras.jobs import train_vae_job
from kd_keras.models import VAE
from kd_keras.models import train_vae
from kd_keras.models.vae import binary_crossentropy_per_image
from kd_keras.models.vae import evaluate_vae
from kd_keras.resolve import RunError


def _small_vae(seed=0, **kwargs):
    keras.utils.set_random_seed(seed)
    return VAE((28, 28, 1), latent_dim=4, filters=4, **kwargs)


def test_shapes_and_outputs_in_unit_interval(digits):
    x = digits.test[0][:8]
    vae = _small_vae()
    mean, log_var = vae.encode(x)
    assert tuple(mean.shape) == (8, 4) and tuple(log_var.shape) == (8, 4)
    images = vae.decode(np.random.default_rng(0).normal(size=(8, 4)).astype("float32") * 5)
    assert tuple(images.shape) == (8, 28, 28, 1)
    reconstruction = vae(x).numpy()
    assert reconstruction.shape == x.shape
    assert reconstruction.min() >= 0.0 and reconstruction.max() <= 1.0
    np.testing.assert_allclose(reconstruction, vae.decode(mean).numpy(), atol=1e-6)

    colour = VAE((12, 8, 3), latent_dim=2, filters=2)
    assert tuple(colour(np.zeros((2, 12, 8, 3), "float32")).shape) == (2, 12, 8, 3)
    with pytest.raises(ValueError, match="divisible by 4"):
        VAE((10, 12, 1))


def test_binary_crossentropy_per_image_by_hand():
    images = np.array([[[[1.0], [0.0]]], [[[0.5], [1.0]]]], "float32")  # (2, 1, 2, 1)
    probabilities = np.array([[[[0.9], [0.2]]], [[[0.5], [0.6]]]], "float32")
    expected = [
        -np.log(0.9) - np.log(0.8),
        -(0.5 * np.log(0.5) + 0.5 * np.log(0.5)) - np.log(0.6),
    ]
    np.testing.assert_allclose(
        binary_crossentropy_per_image(images, probabilities).numpy(), expected, rtol=1e-5
    )


def _negative_elbo_by_hand(vae, x, noise=None):
    # float64 NumPy from the encoder's and decoder's outputs; the decoder
    # renders the mean code (evaluation) or mean + sigma * noise (training).
    mean, log_var = (np.asarray(v, "float64") for v in vae.encode(x))
    z = mean if noise is None else mean + np.exp(0.5 * log_var) * noise
    p = np.clip(np.asarray(vae.decode(z.astype("float32")), "float64"), 1e-7, 1 - 1e-7)
    x = np.asarray(x, "float64")
    bce = -(x * np.log(p) + (1 - x) * np.log(1 - p)).reshape(len(x), -1).sum(-1)
    kl = -0.5 * (1 + log_var - mean**2 - np.exp(log_var)).sum(-1)
    return bce.mean(), kl.mean()


@pytest.mark.parametrize("beta", [0.5, 3.0])
def test_loss_is_the_negative_elbo_by_hand(digits, beta):
    x = digits.test[0][:16]
    vae = _small_vae(beta=beta)
    # A posterior far from N(0, I), so the KL term weighs in the loss.
    head = vae.encoder.get_layer("log_var")
    kernel, bias = head.get_weights()
    head.set_weights([kernel, bias + 2.0])
    vae.compile(optimizer=keras.optimizers.SGD(0.0))
    bce, kl = _negative_elbo_by_hand(vae, x)
    assert kl > 0.01 * bce  # far above the 1e-5 tolerance
    logs = vae.test_on_batch(x, return_dict=True)
    assert logs["reconstruction_loss"] == pytest.approx(bce, rel=1e-5)
    assert logs["kl_loss"] == pytest.approx(kl, rel=1e-5)
    assert logs["loss"] == pytest.approx(bce + beta * kl, rel=1e-5)
    # Training samples one code per image with the model's seed generator.
    twin = keras.random.SeedGenerator()
    twin.state.assign(vae.seed_generator.state)
    noise = np.asarray(keras.random.normal((16, vae.latent_dim), seed=twin), "float64")
    bce, kl = _negative_elbo_by_hand(vae, x, noise)
    logs = vae.train_on_batch(x, return_dict=True)
    assert logs["reconstruction_loss"] == pytest.approx(bce, rel=1e-5)
    assert logs["loss"] == pytest.approx(bce + beta * kl, rel=1e-5)


def test_train_step_decreases_loss(digits):
    x = digits.train[0][:64]
    vae = _small_vae()
    vae.compile(optimizer=keras.optimizers.Adam(3e-3))
    before = vae.evaluate(x, batch_size=64, verbose=0, return_dict=True)
    losses = [float(vae.train_on_batch(x, return_dict=True)["loss"]) for _ in range(15)]
    after = vae.evaluate(x, batch_size=64, verbose=0, return_dict=True)
    assert np.isfinite(losses).all()
    assert losses[-1] < losses[0]
    assert after["loss"] < 0.9 * before["loss"], (before, after)
    assert set(after) == {"loss", "reconstruction_loss", "kl_loss"}


def test_save_load_round_trip(digits, tmp_path):
    x = digits.test[0][:16]
    vae = train_vae(_small_vae(beta=0.5), digits.train[0][:64], epochs=1, verbose=0)
    path = tmp_path / "vae.keras"
    vae.save(path)
    restored = keras.saving.load_model(path, safe_mode=True)
    assert isinstance(restored, VAE)
    assert restored.get_config() == vae.get_config()
    assert restored.beta == 0.5 and restored.input_shape == (28, 28, 1)
    np.testing.assert_array_equal(restored(x).numpy(), vae(x).numpy())
    for a, b in zip(restored.encode(x), vae.encode(x)):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    clone = VAE.from_config(vae.get_config())
    assert [w.shape for w in clone.weights] == [w.shape for w in vae.weights]
    # A frozen VAE deserialised inside a parent layer stays frozen there.
    frozen = VAE.from_config({**vae.get_config(), "trainable": False})
    assert not any(v.trainable for v in frozen.variables)
    parent = keras.layers.Layer()
    parent.vae = frozen
    assert parent.trainable_weights == []


def test_train_vae_rejects_bad_images():
    vae = _small_vae()
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        train_vae(vae, np.full((4, 28, 28, 1), 255.0, "float32"), epochs=1)
    with pytest.raises(ValueError, match="shape"):
        train_vae(vae, np.zeros((4, 8, 8, 1), "float32"), epochs=1)


def test_shipped_vae_matches_its_card(digits):
    path = shipped.path(shipped.DIGITS_VAE)
    card = json.loads(path.with_suffix(".json").read_text())
    vae = keras.saving.load_model(path, safe_mode=True)
    assert isinstance(vae, VAE)
    assert path.stat().st_size < 1_000_000
    assert card["latent_dim"] == vae.latent_dim
    assert card["parameters"] == vae.count_params()
    assert card["command"] == (
        f"kd-keras train-vae --epochs={card['epochs']} --seed={card['seed']} "
        "--out=saved_models/digits_vae.keras"
    )
    scores = evaluate_vae(vae, digits.test[0])
    np.testing.assert_allclose(scores["mse"], card["test_mse"], rtol=1e-4)
    np.testing.assert_allclose(scores["bce"], card["test_bce_per_image"], rtol=1e-4)
    # Recognisable reconstructions, not blobs: far below predicting the mean image.
    baseline = float(np.mean((digits.test[0] - digits.train[0].mean(axis=0)) ** 2))
    assert card["test_mse"] < 0.25 * baseline, (card["test_mse"], baseline)


def test_train_vae_job_writes_model_and_card(tmp_path):
    out = tmp_path / "models" / "vae.keras"
    card = train_vae_job(
        epochs=1, latent_dim=4, filters=4, seed=3, out=out, command="cmd", verbose=0
    )
    assert out.exists()
    written = json.loads(out.with_suffix(".json").read_text())
    assert written == card
    for key in (
        "model",
        "latent_dim",
        "epochs",
        "batch_size",
        "seed",
        "parameters",
        "test_bce_per_image",
        "test_mse",
        "keras_version",
        "command",
    ):
        assert key in card, key
    assert card["command"] == "cmd" and card["epochs"] == 1 and card["latent_dim"] == 4
    vae = keras.saving.load_model(out, safe_mode=True)
    assert not vae.compiled  # shipped without optimiser state
    scores = evaluate_vae(vae, kd_keras.data.load_digits().test[0])
    np.testing.assert_allclose(scores["mse"], card["test_mse"], rtol=1e-5)
    with pytest.raises(RunError, match="must end in .keras"):
        train_vae_job(epochs=1, out=tmp_path / "vae.h5")
