"""`kd-keras train-vae`: train the generative augmenter's VAE, save it with a card."""

import json
import os
import pathlib
import time

import keras
import numpy as np

from kd_keras import data as kd_data
from kd_keras.models.vae import VAE
from kd_keras.models.vae import evaluate_vae
from kd_keras.models.vae import train_vae


def train_vae_job(
    dataset=kd_data.DIGITS,
    epochs=100,
    batch_size=64,
    latent_dim=16,
    filters=16,
    beta=1.0,
    learning_rate=1e-3,
    seed=0,
    out="saved_models/digits_vae.keras",
    command=None,
    verbose="auto",
):
    """Train a VAE on a data set's training images, save it with a card; return the card.

    What `kd-keras train-vae` runs: load the data, train
    `kd_keras.models.VAE` with `kd_keras.models.train_vae`, score the mean
    reconstructions of the test images (binary cross-entropy per image and
    pixel MSE, deterministic), and write `out` plus its card `<out>.json`.
    The model is saved without its optimiser: it is used frozen, and that
    keeps the file small.

    Args:
        dataset: `"digits"` (offline) or `"tfds:NAME"` (images in `[0, 1]`
            with height and width divisible by 4).
        epochs: training epochs.
        batch_size: batch size.
        latent_dim: size of the latent code.
        filters: filters of the VAE's first convolution.
        beta: weight of the KL term.
        learning_rate: Adam's learning rate.
        seed: seed of everything random.
        out: path of the `.keras` file to write.
        command: the command line to record in the card (how to rebuild it).
        verbose: Keras `fit` verbosity.

    Returns:
        The card dictionary.

    Example:
    ```python
    card = kd_keras.vae_job.train_vae_job(epochs=100, seed=0, out="vae.keras")
    ```
    """
    out = pathlib.Path(out)
    if out.suffix != ".keras":
        raise ValueError(f"out must end in .keras, got {out}.")
    started = time.perf_counter()
    bundle = kd_data.load(dataset)
    train_images = _images(bundle, "train")
    test_images = _images(bundle, "test")
    keras.utils.set_random_seed(seed)
    vae = VAE(bundle.input_shape, latent_dim=latent_dim, filters=filters, beta=beta)
    train_vae(
        vae, train_images, epochs=epochs, batch_size=batch_size,
        learning_rate=learning_rate, seed=seed, verbose=verbose,
    )
    scores = evaluate_vae(vae, test_images)
    card = {
        "model": "vae",
        "dataset": dataset,
        "latent_dim": latent_dim,
        "filters": filters,
        "beta": beta,
        "epochs": epochs,
        "batch_size": batch_size,
        "learning_rate": learning_rate,
        "seed": seed,
        "parameters": int(vae.count_params()),
        "test_bce_per_image": scores["bce"],
        "test_mse": scores["mse"],
        "train_seconds": time.perf_counter() - started,
        "keras_version": keras.__version__,
        "command": command,
    }
    # An uncompiled copy carries no optimiser state (three times the weights).
    shipped = VAE.from_config(vae.get_config())
    shipped.set_weights(vae.get_weights())
    out.parent.mkdir(parents=True, exist_ok=True)
    shipped.save(out)
    _write_json(out.with_suffix(".json"), card)
    return card


def _images(bundle, split):
    source = {"train": bundle.train, "test": bundle.test}[split]
    if isinstance(source, tuple):
        return np.asarray(source[0], dtype="float32")
    return np.stack([image for image, _ in source.as_numpy_iterator()]).astype("float32")


def _write_json(path, content):
    # Written to a temporary name and renamed, so a reader never sees half a file.
    temporary = pathlib.Path(f"{path}.partial")
    temporary.write_text(json.dumps(content, indent=2, sort_keys=True) + "\n")
    os.replace(temporary, path)
