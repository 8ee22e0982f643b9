"""HARD: learned adversarial augmenters that seek teacher-student disagreement."""

import math

import keras
from keras import ops

from kd_keras import losses as kd_losses
from kd_keras.augment import warp
from kd_keras.augment.base import Augmenter
from kd_keras.augment.base import View
from kd_keras.augment.base import Views
from kd_keras.augment.seed import ReplicaSeedGenerator

# The head's outputs, in the order affine_parameters unpacks them.
_PARAMETERS = ("rotation", "scale", "shear_x", "shear_y", "translate_x", "translate_y")


class _HardAugmenter(Augmenter):
    """What HARD's augmenter families share: noise, views, objective.

    A subclass defines `augment(x, noise=None)`, the differentiable view, and
    sets `noise_dim`, `label_views`, `temperature`, `lambda_t` and
    `seed_generator`.
    """

    def sample_noise(self, x):
        """Draw the per-sample noise `z ~ N(0, 1)` of shape `(batch, noise_dim)`.

        Args:
            x: the image batch the noise is for.

        Returns:
            A float32 tensor of shape `(batch, noise_dim)`.
        """
        return keras.random.normal(
            (ops.shape(x)[0], self.noise_dim), seed=self.seed_generator
        )

    def views(self, x, y, teacher_fn, student_fn, training=True):
        if not training:
            return View(x, y, deterministic=True)
        x_tilde = self.augment(x)
        # The student phase trains the student only; cutting the graph here
        # keeps an outer tape from differentiating through the augmenter.
        return Views(
            View(ops.cast(x, x_tilde.dtype), y, deterministic=True),
            View(ops.stop_gradient(x_tilde), y, label_weight=self.label_views),
        )

    def objective(self, x, y, teacher_fn, student_fn):
        # Disagreement on x~, minus the teacher's drift from x: the same loss
        # for every family, so they optimise the same thing.
        x_tilde = self.augment(x)
        teacher_tilde = teacher_fn(x_tilde)
        disagreement = kd_losses.kl_per_sample(
            teacher_tilde, student_fn(x_tilde), self.temperature
        )
        consistency = kd_losses.kl_per_sample(
            ops.stop_gradient(teacher_fn(ops.cast(x, x_tilde.dtype))),
            teacher_tilde,
            self.temperature,
        )
        return ops.mean(-disagreement + self.lambda_t * consistency)

    def call(self, inputs, training=False):
        if not training:
            return inputs
        return self.augment(inputs)


@keras.saving.register_keras_serializable(package="kd_keras")
class SpatialAugmenter(_HardAugmenter):
    """HARD's spatial augmenter: learned affine warps on which the networks disagree.

    A small network reads each image and a fresh noise vector and outputs an
    affine transform (rotation, scale, shear, translation), each bounded by a
    `tanh` to its configured range; a differentiable bilinear sampler
    (`kd_keras.augment.warp`) renders the view `x~`. It starts as the
    identity (the last layer is zero-initialised). In the Distiller's
    augmenter phase (teacher and student frozen) its optimiser minimises

        mean[-KL(p_t^T(x~) || p_s^T(x~)) + lambda_t * KL(p_t^T(x) || p_t^T(x~))],

    seeking views on which the student fails to match the teacher while the
    teacher still sees the same sample; in the student phase the student
    trains on `[x, x~]`, distilled on both, with labels weighted by 1 on `x`
    and `label_views` on `x~`. Use it to transfer an invariance the teacher
    has and the student lacks, e.g. shift invariance from a CNN to an MLP
    trained on centred digits. Set a range to 0 to disable that parameter.

    With `image_conditioned=False` the network ignores the image: the raw
    parameters are `A z`, a linear, bias-free map of the noise, so the
    augmenter learns a zero-mean *distribution* of transforms (how large
    and how correlated), symmetric because `z` and `-z` are equally likely.
    The objective above is an expectation over `z` whose optimum, for an
    image-conditioned network, maps every noise draw to the single hardest
    transform; on the digits toy that collapse is what happens (every view
    of every image moved by the same few pixels in one direction, chasing
    the student), and the noise-only network transferred more shift
    invariance (see `kd_keras.recipes.hard`).

    References:
        Nix, Burg, Sinz 2023, "HARD: Hard Augmentations for Robust
        Distillation". The paper's text was not available: the objective,
        the network and the parameter ranges here are our formalisation
        (METHODS.md section 3).

    Args:
        noise_dim: size of the noise vector `z ~ N(0, 1)` drawn per sample,
            which lets one image receive different transforms.
        max_rotation: largest rotation, in degrees (either direction).
        max_scale: largest relative zoom: the scale factor lies in
            `[1 - max_scale, 1 + max_scale]`; in `[0, 1)`.
        max_shear: largest shear factor (tangent of the shear angle) along
            each axis.
        max_translation: largest translation along each axis, as a fraction
            of the image's width (horizontal) or height (vertical).
        filters: filters of the network's two strided convolutions.
        units: units of its hidden dense layer.
        label_views: weight of the label (cross-entropy) term on the views
            `x~`; 0 (the default) distils them from the teacher alone.
        temperature: softmax temperature of both divergences in the
            objective.
        lambda_t: weight of the teacher-consistency term
            `KL(p_t^T(x) || p_t^T(x~))`, which keeps views recognisable.
        fill_value: value of pixels warped in from outside the image.
        image_conditioned: `True` (the default) reads the image and the
            noise through the network (`filters`, `units`); `False` maps
            the noise alone linearly (no bias) to the parameters, a
            symmetric distribution of transforms (`filters` and `units`
            are then unused).
        seed: seed of the noise (an int), or `None`.
        **kwargs: passed to `keras.layers.Layer`.

    Returns:
        An `Augmenter` with trainable weights; pass it to
        `kd_keras.Distiller(augmenter=...)`.

    Example:
    ```python
    augmenter = kd_keras.augment.SpatialAugmenter(max_translation=0.3, seed=0)
    noise_only = kd_keras.augment.SpatialAugmenter(image_conditioned=False)
    distiller = kd_keras.Distiller(teacher, student, augmenter=augmenter)
    distiller.compile(optimizer="adam", augmenter_optimizer=keras.optimizers.Adam(1e-3))
    ```
    """

    def __init__(
        self,
        noise_dim=8,
        max_rotation=30.0,
        max_scale=0.2,
        max_shear=0.3,
        max_translation=0.25,
        filters=16,
        units=32,
        label_views=0.0,
        temperature=1.0,
        lambda_t=1.0,
        fill_value=0.0,
        image_conditioned=True,
        seed=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if not 0.0 <= max_scale < 1.0:
            raise ValueError(
                f"max_scale must be in [0, 1) (scale factor in [1 - max_scale, "
                f"1 + max_scale]), got {max_scale}."
            )
        for name, value in (
            ("max_rotation", max_rotation),
            ("max_shear", max_shear),
            ("max_translation", max_translation),
        ):
            if value < 0:
                raise ValueError(f"{name} must be >= 0, got {value}.")
        if not temperature > 0:
            raise ValueError(f"temperature must be positive, got {temperature}.")
        if int(noise_dim) < 1:
            raise ValueError(f"noise_dim must be >= 1, got {noise_dim}.")
        self.noise_dim = int(noise_dim)
        self.max_rotation = float(max_rotation)
        self.max_scale = float(max_scale)
        self.max_shear = float(max_shear)
        self.max_translation = float(max_translation)
        self.filters = int(filters)
        self.units = int(units)
        self.label_views = float(label_views)
        self.temperature = float(temperature)
        self.lambda_t = float(lambda_t)
        self.fill_value = float(fill_value)
        self.image_conditioned = bool(image_conditioned)
        self.seed = seed
        self.seed_generator = ReplicaSeedGenerator(seed)
        if self.image_conditioned:
            self._convolutions = [
                keras.layers.Conv2D(
                    self.filters, 3, strides=2, padding="same", activation="relu"
                )
                for _ in range(2)
            ]
            self._pool = keras.layers.GlobalAveragePooling2D()
            self._hidden = keras.layers.Dense(self.units, activation="relu")
        # Zero weights make every raw parameter 0, hence tanh(0) = 0 and the
        # identity transform: training starts from the clean images. Without
        # the image the head is linear and bias-free, so the raw parameters
        # `A z` are an odd function of the symmetric noise: the transforms
        # stay a zero-mean distribution and cannot all collapse onto one.
        self._head = keras.layers.Dense(
            len(_PARAMETERS),
            use_bias=self.image_conditioned,
            kernel_initializer="zeros",
            bias_initializer="zeros",
        )

    def build(self, input_shape):
        if input_shape is None or len(input_shape) != 4:
            raise ValueError(
                "SpatialAugmenter warps images of shape (batch, height, width, "
                f"channels), got input shape {input_shape}: call "
                "augmenter.build((None, height, width, channels))."
            )
        if not self.image_conditioned:
            self._head.build((input_shape[0], self.noise_dim))
            return
        # Two coordinate channels let the globally pooled features say where
        # the content is, which the translation head needs.
        shape = (*input_shape[:-1], input_shape[-1] + 2)
        for convolution in self._convolutions:
            convolution.build(shape)
            shape = convolution.compute_output_shape(shape)
        self._hidden.build((input_shape[0], self.filters + self.noise_dim))
        self._head.build((input_shape[0], self.units))

    def affine_parameters(self, x, noise=None):
        """Return the per-sample transform parameters the network chooses.

        Args:
            x: `(batch, height, width, channels)` images.
            noise: `(batch, noise_dim)` noise, or `None` to draw it fresh.

        Returns:
            A dict of float32 `(batch,)` tensors: `rotation` (radians),
            `scale` (factor), `shear_x`, `shear_y` (factors), `translate_x`,
            `translate_y` (pixels), the arguments of
            `kd_keras.augment.warp.affine_matrix`.
        """
        if noise is None:
            noise = self.sample_noise(x)
        x = ops.cast(x, self.compute_dtype)
        shape = ops.shape(x)
        if self.image_conditioned:
            features = ops.concatenate(
                [self._image_features(x), ops.cast(noise, x.dtype)], axis=-1
            )
            raw = self._head(self._hidden(features))
        else:
            raw = self._head(ops.cast(noise, self.compute_dtype))
        raw = ops.tanh(ops.cast(raw, "float32"))
        rotation, scale, shear_x, shear_y, translate_x, translate_y = ops.unstack(
            raw, axis=-1
        )
        height = ops.cast(shape[1], "float32")
        width = ops.cast(shape[2], "float32")
        return {
            "rotation": rotation * (self.max_rotation * math.pi / 180.0),
            "scale": 1.0 + scale * self.max_scale,
            "shear_x": shear_x * self.max_shear,
            "shear_y": shear_y * self.max_shear,
            "translate_x": translate_x * (self.max_translation * width),
            "translate_y": translate_y * (self.max_translation * height),
        }

    def _image_features(self, x):
        shape = ops.shape(x)
        rows = ops.linspace(-1.0, 1.0, shape[1])
        cols = ops.linspace(-1.0, 1.0, shape[2])
        grid = ops.stack(ops.meshgrid(rows, cols, indexing="ij"), axis=-1)
        grid = ops.broadcast_to(
            ops.cast(grid, x.dtype)[None], (shape[0], shape[1], shape[2], 2)
        )
        features = ops.concatenate([x, grid], axis=-1)
        for convolution in self._convolutions:
            features = convolution(features)
        return self._pool(features)

    def augment(self, x, noise=None):
        """Return the warped view `x~` of a batch (differentiable w.r.t. the weights).

        Args:
            x: `(batch, height, width, channels)` images.
            noise: `(batch, noise_dim)` noise, or `None` to draw it fresh;
                fixing it makes the view reproducible.

        Returns:
            The warped images, with `x`'s shape and (float) dtype.
        """
        matrices = warp.affine_matrix(**self.affine_parameters(x, noise))
        return warp.affine_warp(x, matrices, fill_value=self.fill_value)

    def get_config(self):
        return {
            **super().get_config(),
            "noise_dim": self.noise_dim,
            "max_rotation": self.max_rotation,
            "max_scale": self.max_scale,
            "max_shear": self.max_shear,
            "max_translation": self.max_translation,
            "filters": self.filters,
            "units": self.units,
            "label_views": self.label_views,
            "temperature": self.temperature,
            "lambda_t": self.lambda_t,
            "fill_value": self.fill_value,
            "image_conditioned": self.image_conditioned,
            "seed": self.seed,
        }


@keras.saving.register_keras_serializable(package="kd_keras")
class GenerativeAugmenter(_HardAugmenter):
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
        super().__init__(**kwargs)
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
        self.seed = seed
        self.seed_generator = ReplicaSeedGenerator(seed)
        self._hidden = keras.layers.Dense(self.units, activation="relu")
        # Zero weights make the raw output 0, hence delta = 0: training starts
        # from the VAE's reconstructions.
        self._head = keras.layers.Dense(
            self.vae.latent_dim, kernel_initializer="zeros", bias_initializer="zeros"
        )

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
