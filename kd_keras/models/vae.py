"""A small convolutional VAE: the pretrained generator of HARD's generative augmenter."""

import keras
import numpy as np
import tensorflow as tf
from keras import ops

# Probabilities are clipped away from 0 and 1 before the log of the binary
# cross-entropy, as keras.losses.binary_crossentropy does.
_EPSILON = 1e-7


@keras.saving.register_keras_serializable(package="kd_keras")
class VAE(keras.Model):
    """A small convolutional variational autoencoder for images in `[0, 1]`.

    The encoder (two strided convolutions, then dense heads) maps an image to
    the mean and log-variance of a diagonal Gaussian over a `latent_dim` code;
    the decoder (dense, then transposed convolutions, then a sigmoid) maps a
    code back to an image in `[0, 1]`. `fit()` minimises the negative ELBO
    per image: binary cross-entropy summed over pixels plus `beta` times
    `KL(q(z|x) || N(0, I))`, with one reparameterised sample per image;
    `evaluate()` decodes the mean, so it is deterministic. `call(x)` is the
    reconstruction of the mean code. Use it as the frozen generator of
    `kd_keras.augment.GenerativeAugmenter`, which moves codes and decodes
    them; train it with `kd_keras.models.train_vae`.

    Args:
        input_shape: shape of one image, `(height, width, channels)`, with
            height and width divisible by 4.
        latent_dim: size of the latent code.
        filters: filters of the first convolution; the second uses twice as
            many (the decoder mirrors them). Small values keep the saved file
            small.
        beta: weight of the KL term (1 is the plain VAE; larger values give
            a smoother latent space and blurrier reconstructions).
        **kwargs: passed to `keras.Model` (e.g. `name`).

    Returns:
        A built `keras.Model` with `encoder` and `decoder` sub-models.

    Example:
    ```python
    vae = kd_keras.models.VAE((28, 28, 1), latent_dim=16)
    vae = kd_keras.models.train_vae(vae, data.train[0], epochs=60)
    mean, log_var = vae.encode(images)
    ```
    """

    def __init__(self, input_shape=(28, 28, 1), latent_dim=16, filters=16, beta=1.0, **kwargs):
        kwargs.setdefault("name", "vae")
        super().__init__(**kwargs)
        input_shape = tuple(int(d) for d in input_shape)
        if len(input_shape) != 3 or input_shape[0] % 4 or input_shape[1] % 4:
            raise ValueError(
                "VAE takes images of shape (height, width, channels) with height "
                f"and width divisible by 4 (two stride-2 stages), got {input_shape}: "
                "pad or crop the images, e.g. to (28, 28, 1)."
            )
        if int(latent_dim) < 1 or int(filters) < 1:
            raise ValueError(
                f"latent_dim and filters must be >= 1, got {latent_dim} and {filters}."
            )
        if not beta >= 0:
            raise ValueError(f"beta must be >= 0, got {beta}.")
        self.input_shape = input_shape
        self.latent_dim = int(latent_dim)
        self.filters = int(filters)
        self.beta = float(beta)
        self.encoder = _encoder(self.input_shape, self.latent_dim, self.filters)
        self.decoder = _decoder(self.input_shape, self.latent_dim, self.filters)
        # keras.Model.__init__(trainable=False), as when a frozen VAE is
        # deserialised, ran before the sub-models existed: pass the flag on,
        # or their variables would stay trainable inside a parent layer.
        self.encoder.trainable = self.trainable
        self.decoder.trainable = self.trainable
        self.seed_generator = keras.random.SeedGenerator()
        self._trackers = {
            name: keras.metrics.Mean(name=name)
            for name in ("loss", "reconstruction_loss", "kl_loss")
        }
        self.built = True

    def encode(self, x):
        """Return the posterior's parameters `(mean, log_var)` of a batch of images.

        Args:
            x: `(batch, height, width, channels)` images in `[0, 1]`.

        Returns:
            Two float tensors of shape `(batch, latent_dim)`.
        """
        mean, log_var = self.encoder(x, training=False)
        return mean, log_var

    def decode(self, z):
        """Render latent codes as images in `[0, 1]`.

        Args:
            z: `(batch, latent_dim)` codes.

        Returns:
            `(batch, height, width, channels)` images.
        """
        return self.decoder(z, training=False)

    def call(self, inputs, training=False):
        mean, _ = self.encoder(inputs, training=training)
        return self.decoder(mean, training=training)

    def _loss_terms(self, x, sample, training):
        mean, log_var = self.encoder(x, training=training)
        mean = ops.cast(mean, "float32")
        log_var = ops.cast(log_var, "float32")
        z = mean
        if sample:
            noise = keras.random.normal(ops.shape(mean), seed=self.seed_generator)
            z = mean + ops.exp(0.5 * log_var) * noise
        reconstruction = self.decoder(z, training=training)
        reconstruction_loss = ops.mean(binary_crossentropy_per_image(x, reconstruction))
        kl_loss = ops.mean(
            -0.5 * ops.sum(1.0 + log_var - ops.square(mean) - ops.exp(log_var), axis=-1)
        )
        return {
            "loss": reconstruction_loss + self.beta * kl_loss,
            "reconstruction_loss": reconstruction_loss,
            "kl_loss": kl_loss,
        }

    def train_step(self, data):
        x, _, _ = keras.utils.unpack_x_y_sample_weight(data)
        with tf.GradientTape() as tape:
            terms = self._loss_terms(x, sample=True, training=True)
            scaled = self.optimizer.scale_loss(terms["loss"])
        gradients = tape.gradient(scaled, self.trainable_variables)
        self.optimizer.apply(gradients, self.trainable_variables)
        return self._update_trackers(terms)

    def test_step(self, data):
        x, _, _ = keras.utils.unpack_x_y_sample_weight(data)
        return self._update_trackers(self._loss_terms(x, sample=False, training=False))

    def _update_trackers(self, terms):
        for name, value in terms.items():
            self._trackers[name].update_state(value)
        return {name: tracker.result() for name, tracker in self._trackers.items()}

    @property
    def metrics(self):
        return list(self._trackers.values())

    def get_config(self):
        return {
            **super().get_config(),
            "input_shape": list(self.input_shape),
            "latent_dim": self.latent_dim,
            "filters": self.filters,
            "beta": self.beta,
        }


def _encoder(input_shape, latent_dim, filters):
    inputs = keras.Input(input_shape, name="image")
    x = inputs
    for depth in (filters, 2 * filters):
        x = keras.layers.Conv2D(depth, 3, strides=2, padding="same", activation="relu")(x)
    x = keras.layers.Flatten()(x)
    mean = keras.layers.Dense(latent_dim, name="mean")(x)
    log_var = keras.layers.Dense(latent_dim, name="log_var")(x)
    return keras.Model(inputs, [mean, log_var], name="encoder")


def _decoder(input_shape, latent_dim, filters):
    height, width, channels = input_shape
    inputs = keras.Input((latent_dim,), name="code")
    grid = (height // 4, width // 4, 2 * filters)
    x = keras.layers.Dense(grid[0] * grid[1] * grid[2], activation="relu")(inputs)
    x = keras.layers.Reshape(grid)(x)
    for depth in (2 * filters, filters):
        x = keras.layers.Conv2DTranspose(depth, 3, strides=2, padding="same", activation="relu")(x)
    # The sigmoid runs in float32 so the outputs stay in [0, 1] under mixed precision.
    outputs = keras.layers.Conv2D(
        channels, 3, padding="same", activation="sigmoid", dtype="float32", name="image"
    )(x)
    return keras.Model(inputs, outputs, name="decoder")


def binary_crossentropy_per_image(images, reconstructions):
    """Per-image binary cross-entropy summed over pixels, in float32.

    The VAE's reconstruction term: with targets in `[0, 1]` it is the negative
    log-likelihood of the image under independent Bernoulli pixels (up to the
    targets' own entropy when they are not binary).

    Args:
        images: `(batch, height, width, channels)` targets in `[0, 1]`.
        reconstructions: probabilities of the same shape.

    Returns:
        A float32 tensor of shape `(batch,)`.

    Example:
    ```python
    bce = kd_keras.models.vae.binary_crossentropy_per_image(x, vae(x))
    ```
    """
    images = ops.cast(images, "float32")
    p = ops.clip(ops.cast(reconstructions, "float32"), _EPSILON, 1.0 - _EPSILON)
    bce = -(images * ops.log(p) + (1.0 - images) * ops.log(1.0 - p))
    return ops.sum(ops.reshape(bce, (ops.shape(bce)[0], -1)), axis=-1)


def evaluate_vae(vae, images, batch_size=256):
    """Score a VAE's mean reconstructions: binary cross-entropy per image and pixel MSE.

    Deterministic (the mean code is decoded), so a saved model's card can be
    checked by re-running it.

    Args:
        vae: a `kd_keras.models.VAE`.
        images: `(n, height, width, channels)` images in `[0, 1]`.
        batch_size: images per forward pass.

    Returns:
        A dict with `"bce"` (summed over pixels, averaged over images) and
        `"mse"` (averaged over pixels and images), as Python floats.

    Example:
    ```python
    scores = kd_keras.models.vae.evaluate_vae(vae, data.test[0])
    ```
    """
    images = np.asarray(images, dtype="float32")
    bce, squared = [], []
    for start in range(0, len(images), batch_size):
        batch = images[start : start + batch_size]
        reconstruction = vae(batch, training=False)
        bce.append(ops.convert_to_numpy(binary_crossentropy_per_image(batch, reconstruction)))
        reconstruction = ops.convert_to_numpy(reconstruction).astype("float64")
        squared.append((reconstruction - batch) ** 2)
    return {
        "bce": float(np.mean(np.concatenate(bce))),
        "mse": float(np.mean(np.concatenate(squared))),
    }


def train_vae(
    vae,
    images,
    epochs=60,
    batch_size=64,
    learning_rate=1e-3,
    seed=0,
    validation_images=None,
    verbose="auto",
):
    """Train a VAE on images with Adam (the negative ELBO of `VAE.train_step`).

    Args:
        vae: a `kd_keras.models.VAE`.
        images: `(n, height, width, channels)` float images in `[0, 1]`;
            labels are not needed.
        epochs: training epochs.
        batch_size: batch size.
        learning_rate: Adam's learning rate.
        seed: seeds the shuffling and the reparameterisation noise.
        validation_images: optional held-out images, evaluated each epoch.
        verbose: Keras `fit` verbosity.

    Returns:
        The trained `vae`, compiled.

    Example:
    ```python
    data = kd_keras.data.load_digits()
    vae = kd_keras.models.train_vae(kd_keras.models.VAE(), data.train[0], epochs=60)
    ```
    """
    keras.utils.set_random_seed(seed)
    images = np.asarray(images, dtype="float32")
    if images.ndim != 4 or tuple(images.shape[1:]) != vae.input_shape:
        raise ValueError(
            f"The VAE takes images of shape {vae.input_shape}, got an array of shape "
            f"{images.shape}: pass (n, {', '.join(map(str, vae.input_shape))}) images."
        )
    if images.size and (images.min() < 0 or images.max() > 1):
        raise ValueError(
            f"VAE images must lie in [0, 1] (binary cross-entropy), got values in "
            f"[{images.min()}, {images.max()}]: rescale them, e.g. divide by 255."
        )
    vae.compile(optimizer=keras.optimizers.Adam(learning_rate))
    validation = None
    if validation_images is not None:
        validation = (np.asarray(validation_images, dtype="float32"),)
    vae.fit(
        images,
        epochs=epochs,
        batch_size=batch_size,
        shuffle=True,
        validation_data=validation,
        verbose=verbose,
    )
    return vae
