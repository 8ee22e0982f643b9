"""HARD's generative augmenter: learned moves in a frozen VAE's latent space (recipe `hard_vae`)."""

import keras
from keras import ops

from kd_keras.augment.hard import HardAugmenter


@keras.saving.register_keras_serializable(package="kd_keras")
class GenerativeAugmenter(HardAugmenter):
    """HARD's generative augmenter: learned moves in a frozen VAE's latent space.

    A pretrained VAE (`kd_keras.models.VAE`) encodes each image to its mean
    code `mu(x)`; a small network reads `mu(x)` and a fresh noise vector and
    outputs a perturbation `delta = max_delta * tanh(...)` of the code; the
    decoder renders the view `x~ = decoder(mu(x) + delta)`. Unlike the
    spatial augmenter's warps, such views can change stroke width, style or
    shape: image manipulations no fixed family describes. The network's last
    layer is zero-initialised, so training starts from `delta = 0`; note that
    this is the VAE's *reconstruction* `decoder(mu(x))`, not `x` itself (the
    views are only as sharp as the VAE). The VAE is part of the augmenter
    (saved with it) and frozen: its `trainable` is set to `False` here, and
    only the perturbation network learns. In the Distiller's augmenter phase
    (teacher and student frozen) its optimiser minimises the same objective
    as `SpatialAugmenter`,

        mean[-KL(p_t^T(x~) || p_s^T(x~)) + lambda_t * KL(p_t^T(x) || p_t^T(x~))],

    and in the student phase the student trains on `[x, x~]`, distilled on
    both, with labels weighted by 1 on `x` and `label_views` on `x~`. Use it
    when the invariance to transfer is not a geometric one.

    References:
        Nix, Burg, Sinz 2023, "HARD: Hard Augmentations for Robust
        Distillation". The paper's text was not available: the VAE, the
        perturbation network and its bound here are our formalisation
        (METHODS.md section 3).

    Args:
        vae: a trained `kd_keras.models.VAE` (anything with `encode`,
            `decode`, `latent_dim` and `input_shape`) whose input shape is
            the teacher's; frozen in place.
        noise_dim: size of the noise vector `z ~ N(0, 1)` drawn per sample,
            which lets one image receive different perturbations.
        max_delta: largest perturbation of each latent coordinate, in units
            of the prior's standard deviation (the prior is `N(0, I)`, so 1
            moves a coordinate by at most one prior std); 0 disables it.
        units: units of the perturbation network's hidden layer.
        label_views: weight of the label (cross-entropy) term on the views
            `x~`; 0 (the default) distils them from the teacher alone.
        temperature: softmax temperature of both divergences in the
            objective.
        lambda_t: weight of the teacher-consistency term
            `KL(p_t^T(x) || p_t^T(x~))`, which keeps views recognisable.
        seed: seed of the noise (an int), or `None`.
        **kwargs: passed to `keras.layers.Layer`.

    Returns:
        An `Augmenter` with trainable weights; pass it to
        `kd_keras.Distiller(augmenter=...)`.

    Example:
    ```python
    vae = keras.saving.load_model("saved_models/digits_vae.keras")
    augmenter = kd_keras.augment.GenerativeAugmenter(vae, max_delta=1.5, seed=0)
    distiller = kd_keras.Distiller(teacher, student, augmenter=augmenter)
    distiller.compile(optimizer="adam", augmenter_optimizer=keras.optimizers.Adam(1e-3))
    ```
    """

    def __init__(
        self,
        vae,
        noise_dim=8,
        max_delta=1.0,
        units=64,
        label_views=0.0,
        temperature=1.0,
        lambda_t=1.0,
        seed=None,
        **kwargs,
    ):
        super().__init__(seed=seed, **kwargs)
        for attribute in ("encode", "decode", "latent_dim", "input_shape"):
            if not hasattr(vae, attribute):
                raise TypeError(
                    f"vae must be a trained kd_keras.models.VAE, got {vae!r} "
                    f"(no {attribute!r}): train one with kd_keras.models.train_vae "
                    "or load saved_models/digits_vae.keras."
                )
        if not max_delta >= 0:
            raise ValueError(f"max_delta must be >= 0, got {max_delta}.")
        if not temperature > 0:
            raise ValueError(f"temperature must be positive, got {temperature}.")
        if int(noise_dim) < 1:
            raise ValueError(f"noise_dim must be >= 1, got {noise_dim}.")
        self.vae = vae
        self.vae.trainable = False
        self.noise_dim = int(noise_dim)
        self.max_delta = float(max_delta)
        self.units = int(units)
        self.label_views = float(label_views)
        self.temperature = float(temperature)
        self.lambda_t = float(lambda_t)
        self._hidden = keras.layers.Dense(self.units, activation="relu")
        # Zero weights make the raw output 0, hence delta = 0: training starts
        # from the VAE's reconstructions.
        self._head = keras.layers.Dense(
            self.vae.latent_dim, kernel_initializer="zeros", bias_initializer="zeros"
        )

    @property
    def input_range(self):
        # The VAE's decoder ends in a sigmoid: its views lie in [0, 1].
        return (0.0, 1.0)

    def build(self, input_shape):
        if (
            input_shape is None
            or len(input_shape) != 4
            or tuple(input_shape[1:]) != tuple(self.vae.input_shape)
        ):
            raise ValueError(
                f"GenerativeAugmenter's VAE takes images of shape "
                f"{tuple(self.vae.input_shape)}, got input shape {input_shape}: "
                "train a VAE on the teacher's inputs (kd_keras.models.train_vae)."
            )
        self._hidden.build((input_shape[0], self.noise_dim + self.vae.latent_dim))
        self._head.build((input_shape[0], self.units))

    def latent_perturbation(self, x, noise=None):
        """Return each image's mean code and the perturbation the network chooses.

        Args:
            x: `(batch, height, width, channels)` images.
            noise: `(batch, noise_dim)` noise, or `None` to draw it fresh.

        Returns:
            `(mean, delta)`: float32 tensors of shape `(batch, latent_dim)`,
            with `|delta| <= max_delta` elementwise.
        """
        if noise is None:
            noise = self.sample_noise(x)
        mean, _ = self.vae.encode(ops.cast(x, self.vae.compute_dtype))
        # The VAE is frozen: no gradient needs to reach its encoder.
        mean = ops.stop_gradient(ops.cast(mean, "float32"))
        features = ops.concatenate(
            [ops.cast(noise, self.compute_dtype), ops.cast(mean, self.compute_dtype)],
            axis=-1,
        )
        raw = ops.cast(self._head(self._hidden(features)), "float32")
        return mean, self.max_delta * ops.tanh(raw)

    def augment(self, x, noise=None):
        """Return the view `x~ = decoder(mu(x) + delta)`, differentiable w.r.t. the weights.

        Args:
            x: `(batch, height, width, channels)` images.
            noise: `(batch, noise_dim)` noise, or `None` to draw it fresh;
                fixing it makes the view reproducible.

        Returns:
            The rendered images in `[0, 1]`, with `x`'s shape, in the VAE
            decoder's output dtype.
        """
        mean, delta = self.latent_perturbation(x, noise)
        return self.vae.decode(ops.cast(mean + delta, self.vae.compute_dtype))

    def get_config(self):
        return {
            **super().get_config(),
            # The VAE is part of the augmenter, so it travels with its config
            # (and its weights with the augmenter's in a .keras file).
            "vae": keras.saving.serialize_keras_object(self.vae),
            "noise_dim": self.noise_dim,
            "max_delta": self.max_delta,
            "units": self.units,
            "label_views": self.label_views,
            "temperature": self.temperature,
            "lambda_t": self.lambda_t,
            "seed": self.seed,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["vae"] = keras.saving.deserialize_keras_object(config["vae"])
        return cls(**config)
