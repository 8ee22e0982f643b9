"""HARD: spatial augmenters that seek teacher-student disagreement (recipe `hard`)."""

import math

import keras
import tensorflow as tf
from keras import ops

from kd_keras import losses as kd_losses
from kd_keras.augment import warp
from kd_keras.augment.base import Augmenter
from kd_keras.augment.base import View
from kd_keras.augment.base import Views
from kd_keras.augment.base import map_features
from kd_keras.augment.base import teacher_outputs

# The head's outputs, in the order affine_parameters unpacks them.
_PARAMETERS = ("rotation", "scale", "shear_x", "shear_y", "translate_x", "translate_y")
# What still moves content along a single row (a 1-D signal as a 1 x L image).
_ALONG_WIDTH = ("scale", "translate_x")
SAMPLERS = ("uniform", "gaussian", "network")
CONSISTENCIES = ("kl", "ce")
SCORES = ("teacher", "student")
# Transform groups of `groups_per_view`, as rows of a 0/1 matrix over _PARAMETERS.
_GROUPS = ("rotation", "scale", "shear", "translation")
# Running-average decay of the adaptive groups' win rates (about 50 steps).
_GROUP_RATE_DECAY = 0.98
_GROUP_MATRIX = (
    (1.0, 0.0, 0.0, 0.0, 0.0, 0.0),
    (0.0, 1.0, 0.0, 0.0, 0.0, 0.0),
    (0.0, 0.0, 1.0, 1.0, 0.0, 0.0),
    (0.0, 0.0, 0.0, 0.0, 1.0, 1.0),
)


class HardAugmenter(Augmenter):
    """What HARD's augmenter families share: noise, views, objective.

    A subclass defines `augment(x, noise=None)`, the differentiable view, and
    sets `noise_dim`, `label_views`, `temperature`, `lambda_t` and
    `seed_generator`.
    """

    @property
    def learnable(self):
        """True: the augmenter has weights its own optimiser trains."""
        return True

    def sample_noise(self, x):
        """Draw the per-sample noise `z ~ N(0, 1)` of shape `(batch, noise_dim)`.

        Args:
            x: the image batch the noise is for.

        Returns:
            A float32 tensor of shape `(batch, noise_dim)`.
        """
        return keras.random.normal((ops.shape(x)[0], self.noise_dim), seed=self.seed_generator)

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
        disagreement = kd_losses.kl_per_sample(teacher_tilde, student_fn(x_tilde), self.temperature)
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
class SpatialAugmenter(HardAugmenter):
    """HARD's spatial augmenter: affine warps on which teacher and student disagree.

    Each view `x~` is an affine warp of `x` (rotation, scale, shear,
    translation), every parameter bounded to its configured range; a
    differentiable bilinear sampler (`kd_keras.augment.warp`) renders it.
    How the parameters are drawn is the `sampler`:

    - `"uniform"`: uniformly in the ranges; no weights. With
      `candidates=k > 1` this is HARD's search without an amortised
      network: `k` warps are drawn per image, teacher and student score all
      of them (no gradients), and the view is the warp with the largest
      `KL(p_t^T(x~) || p_s^T(x~))` among those on which the teacher keeps
      the class it gives `x` (`x` itself when none does).
    - `"gaussian"`: a learned distribution per image: a small network reads
      the image and outputs the mean and log-scale of each (pre-`tanh`)
      parameter; a reparameterised sample, squashed by `tanh` into the
      range, is the warp. The objective gains `entropy_weight` times the
      entropy of the squashed distribution, so it cannot collapse to a
      point. With `image_conditioned=False` the distribution is a learned
      zero-mean scale per parameter, the same for every image.
    - `"network"`: a network maps (image, noise) to the parameters through
      a `tanh` (the first implementation). With `image_conditioned=False`
      the raw parameters are `A z`, a bias-free linear map of the noise: a
      learned zero-mean distribution. Image-conditioned, it collapses on the
      digits toy onto one translation shared by every view (the objective
      is an expectation over `z` whose optimum ignores it).

    Learned samplers start at the identity (`"network"`) or at a small
    spread (`"gaussian"`, `initial_std`), and in the Distiller's augmenter
    phase (teacher and student frozen) their optimiser minimises

        mean[-KL(p_t^T(x~) || p_s^T(x~)) + lambda_t * C(x, x~)]
            - entropy_weight * H + spread penalty,

    where `C` is `KL(p_t^T(x) || p_t^T(x~))` (`consistency="kl"`) or the
    cross-entropy of `p_t^T(x~)` to the teacher's class on `x`
    (`consistency="ce"`), and the spread penalty is
    `sum_j max(0, spread_floor - std_batch(a_j))` over the active squashed
    parameters `a_j` in `[-1, 1]`. `candidates` and `refine_steps` (a few
    steps of sign-gradient ascent on each image's own parameters, from its
    sampled start, projected back into the ranges) apply to the views of
    every sampler. In the student phase the student trains on `[x, x~]`,
    distilled on both, with labels weighted by 1 on `x` and `label_views`
    on `x~`.

    Inputs with a single row (`height == 1`, e.g. a 1-D signal as a
    `(1, length, channels)` image) are warped along the width only: scale
    and horizontal translation; rotation, both shears and vertical
    translation are switched off, so no row moves.

    References:
        Nix, Burg, Sinz 2023, "HARD: Hard Augmentations for Robust
        Distillation". The paper's text was not available: the objective,
        the samplers, the search and the parameter ranges here are our
        formalisation (METHODS.md section 3; benchmarks/HARD_STUDY.md).

    Args:
        noise_dim: size of the noise vector `z ~ N(0, 1)` of the
            `"network"` sampler.
        max_rotation: largest rotation, in degrees (either direction).
        max_scale: largest relative zoom: the scale factor lies in
            `[1 - max_scale, 1 + max_scale]`; in `[0, 1)`.
        max_shear: largest shear factor (tangent of the shear angle) along
            each axis.
        max_translation: largest translation along each axis, as a fraction
            of the image's width (horizontal) or height (vertical).
        filters: filters of the image network's two strided convolutions.
        units: units of its hidden dense layer.
        label_views: weight of the label (cross-entropy) term on the views
            `x~`; 0 distils them from the teacher alone.
        temperature: softmax temperature of the objective's and the
            search's divergences.
        lambda_t: weight of the teacher-consistency term `C`.
        fill_value: value of pixels warped in from outside the image (0 is
            black for images in `[0, 1]` and the mean for standardised
            signals).
        image_conditioned: the learned samplers read the image (`True`) or
            not (`False`: a distribution shared by all images).
        sampler: `"uniform"`, `"gaussian"` or `"network"` (see above).
        candidates: warps drawn per image for each view; the hardest one on
            which the teacher keeps its class is kept (1: no search).
        refine_steps: steps of projected sign-gradient ascent of each
            candidate's parameters on the disagreement minus
            `lambda_t * C` before the choice (0: none).
        refine_step_size: the ascent's step, in units of the ranges.
        entropy_weight: weight of the entropy bonus (`"gaussian"`).
        initial_std: initial scale of the `"gaussian"` sampler's
            pre-`tanh` parameters.
        spread_floor: floor of the batch std of each squashed parameter
            below which the objective is penalised (0: off).
        consistency: `"kl"` or `"ce"`, the teacher-consistency term `C`.
        score: how the search ranks candidates: `"teacher"` runs teacher
            and student on every candidate and ranks by
            `KL(p_t^T(x~) || p_s^T(x~))` among those the teacher keeps in
            its class; `"student"` runs only the student on the candidates
            and ranks by `KL(p_t^T(x) || p_s^T(x~))` (the teacher's view of
            the clean image as the target), and the teacher sees only the
            kept view, which falls back to `x` if the teacher relabels it:
            `candidates - 1` fewer teacher passes per step.
        groups_per_view: `"uniform"` sampler: each draw transforms only
            this many of the groups rotation, scale, shear (both axes) and
            translation (both axes), chosen uniformly among those with a
            non-zero range, the others left at the identity: sparse
            compositions, among which a search can find a pure translation
            (0: every parameter in every draw).
        adaptive_groups: with `groups_per_view`, learn which groups to
            draw: each group's probability follows its running win rate in
            the search (see `group_probabilities`), a learned distribution
            over the kinds of transformation.
        group_floor: with `adaptive_groups`, the share of the probability
            spread evenly over the groups (exploration), in `[0, 1]`.
        interpolation: `"bilinear"` or `"nearest"`, how the student phase's
            views are rendered (the objective always uses bilinear, which is
            differentiable in the parameters).
        seed: seed of the noise (an int), or `None`.
        **kwargs: passed to `keras.layers.Layer`.

    Returns:
        An `Augmenter`; pass it to `kd_keras.Distiller(augmenter=...)`. It
        has trainable weights (and so an augmenter phase) unless
        `sampler="uniform"`.

    Example:
    ```python
    search = kd_keras.augment.SpatialAugmenter(sampler="uniform", candidates=8, seed=0)
    learned = kd_keras.augment.SpatialAugmenter(sampler="gaussian", entropy_weight=0.1)
    distiller = kd_keras.Distiller(teacher, student, augmenter=learned)
    distiller.compile(optimizer="adam", augmenter_optimizer=keras.optimizers.Adam(1e-2))
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
        lambda_t=0.1,
        fill_value=0.0,
        image_conditioned=False,
        sampler="uniform",
        candidates=4,
        refine_steps=0,
        refine_step_size=0.25,
        entropy_weight=0.1,
        initial_std=0.5,
        spread_floor=0.0,
        consistency="kl",
        interpolation="nearest",
        score="teacher",
        groups_per_view=1,
        adaptive_groups=True,
        group_floor=0.25,
        seed=None,
        **kwargs,
    ):
        super().__init__(seed=seed, **kwargs)
        if not 0.0 <= max_scale < 1.0:
            raise ValueError(
                f"max_scale must be in [0, 1) (scale factor in [1 - max_scale, "
                f"1 + max_scale]), got {max_scale}."
            )
        for name, value in (
            ("max_rotation", max_rotation),
            ("max_shear", max_shear),
            ("max_translation", max_translation),
            ("refine_step_size", refine_step_size),
            ("entropy_weight", entropy_weight),
            ("spread_floor", spread_floor),
        ):
            if value < 0:
                raise ValueError(f"{name} must be >= 0, got {value}.")
        if not temperature > 0:
            raise ValueError(f"temperature must be positive, got {temperature}.")
        if not initial_std > 0:
            raise ValueError(f"initial_std must be positive, got {initial_std}.")
        if int(noise_dim) < 1:
            raise ValueError(f"noise_dim must be >= 1, got {noise_dim}.")
        if int(candidates) != candidates or candidates < 1:
            raise ValueError(f"candidates must be an integer >= 1, got {candidates!r}.")
        if int(groups_per_view) != groups_per_view or groups_per_view < 0:
            raise ValueError(f"groups_per_view must be an integer >= 0, got {groups_per_view!r}.")
        if not 0.0 <= group_floor <= 1.0:
            raise ValueError(f"group_floor must be in [0, 1], got {group_floor}.")
        if adaptive_groups and sampler != "uniform":
            adaptive_groups = False  # only the uniform sampler draws groups
        if adaptive_groups and groups_per_view < 1:
            raise ValueError(
                "adaptive_groups learns which groups the uniform sampler's "
                "draws transform: give groups_per_view >= 1 (or "
                "adaptive_groups=False)."
            )
        if int(refine_steps) != refine_steps or refine_steps < 0:
            raise ValueError(f"refine_steps must be an integer >= 0, got {refine_steps!r}.")
        for name, value, allowed in (
            ("sampler", sampler, SAMPLERS),
            ("consistency", consistency, CONSISTENCIES),
            ("interpolation", interpolation, warp.INTERPOLATIONS),
            ("score", score, SCORES),
        ):
            if value not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {value!r}.")
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
        self.sampler = sampler
        self.candidates = int(candidates)
        self.refine_steps = int(refine_steps)
        self.refine_step_size = float(refine_step_size)
        self.entropy_weight = float(entropy_weight)
        self.initial_std = float(initial_std)
        self.spread_floor = float(spread_floor)
        self.consistency = consistency
        self.interpolation = interpolation
        self.score = score
        self.groups_per_view = int(groups_per_view)
        self.adaptive_groups = bool(adaptive_groups)
        self.group_floor = float(group_floor)
        self._active = None  # per-parameter 0/1 mask, set in build
        learned = sampler != "uniform"
        if learned and self.image_conditioned:
            self._convolutions = [
                keras.layers.Conv2D(self.filters, 3, strides=2, padding="same", activation="relu")
                for _ in range(2)
            ]
            self._pool = keras.layers.GlobalAveragePooling2D()
            self._hidden = keras.layers.Dense(self.units, activation="relu")
        if sampler == "network":
            # Zero weights make every raw parameter 0, hence tanh(0) = 0 and
            # the identity transform: training starts from the clean images.
            # Without the image the head is linear and bias-free, so the raw
            # parameters `A z` are an odd function of the symmetric noise:
            # the transforms stay a zero-mean distribution.
            self._head = keras.layers.Dense(
                len(_PARAMETERS),
                use_bias=self.image_conditioned,
                kernel_initializer="zeros",
                bias_initializer="zeros",
            )
        elif sampler == "gaussian" and self.image_conditioned:
            # Means start at 0 (the identity) and log-scales at
            # log(initial_std) for every image.
            log_std = math.log(self.initial_std)
            self._mean_head = keras.layers.Dense(
                len(_PARAMETERS), kernel_initializer="zeros", bias_initializer="zeros"
            )
            self._log_std_head = keras.layers.Dense(
                len(_PARAMETERS),
                kernel_initializer="zeros",
                bias_initializer=keras.initializers.Constant(log_std),
            )

    @property
    def learnable(self):
        """True when the sampler has weights to train (an augmenter phase)."""
        return self.sampler != "uniform"

    def build(self, input_shape):
        if input_shape is None or len(input_shape) != 4:
            raise ValueError(
                "SpatialAugmenter warps images of shape (batch, height, width, "
                f"channels), got input shape {input_shape}: call "
                "augmenter.build((None, height, width, channels)); give 1-D "
                "signals as (None, 1, length, channels)."
            )
        ranges = dict(zip(_PARAMETERS, self._ranges()))
        one_row = input_shape[1] == 1
        self._active = [
            float(ranges[name] > 0 and (not one_row or name in _ALONG_WIDTH))
            for name in _PARAMETERS
        ]
        if self.sampler == "uniform":
            if self.adaptive_groups:
                # Running averages (not trained by gradients): the share of
                # draws of each group and of kept, hardest views of it. Equal
                # starts make the first rates even.
                for name in ("group_draws", "group_wins"):
                    setattr(
                        self,
                        name,
                        self.add_weight(
                            shape=(len(_GROUPS),),
                            initializer=keras.initializers.Constant(1.0),
                            trainable=False,
                            name=name,
                        ),
                    )
            return
        if self.sampler == "gaussian" and not self.image_conditioned:
            self.log_std = self.add_weight(
                shape=(len(_PARAMETERS),),
                initializer=keras.initializers.Constant(math.log(self.initial_std)),
                name="log_std",
            )
            return
        if not self.image_conditioned:
            self._head.build((input_shape[0], self.noise_dim))
            return
        # Two coordinate channels let the globally pooled features say where
        # the content is, which the translation head needs.
        shape = (*input_shape[:-1], input_shape[-1] + 2)
        for convolution in self._convolutions:
            convolution.build(shape)
            shape = convolution.compute_output_shape(shape)
        if self.sampler == "network":
            self._hidden.build((input_shape[0], self.filters + self.noise_dim))
            self._head.build((input_shape[0], self.units))
        else:
            self._hidden.build((input_shape[0], self.filters))
            self._mean_head.build((input_shape[0], self.units))
            self._log_std_head.build((input_shape[0], self.units))

    def _ranges(self):
        return (
            self.max_rotation,
            self.max_scale,
            self.max_shear,
            self.max_shear,
            self.max_translation,
            self.max_translation,
        )

    def sample_noise(self, x):
        """Draw the per-sample noise of the sampler.

        Args:
            x: the image batch the noise is for.

        Returns:
            A float32 tensor: `(batch, noise_dim)` standard normal
            (`"network"`), `(batch, 6)` standard normal (`"gaussian"`, the
            reparameterisation's `eps`) or `(batch, 6)` uniform in `[-1, 1]`
            (`"uniform"`, the squashed parameters themselves).
        """
        batch = ops.shape(x)[0]
        if self.sampler == "uniform":
            noise = keras.random.uniform(
                (batch, len(_PARAMETERS)), -1.0, 1.0, seed=self.seed_generator
            )
            if self.groups_per_view:
                noise = noise * self._group_mask(batch)
            return noise
        size = self.noise_dim if self.sampler == "network" else len(_PARAMETERS)
        return keras.random.normal((batch, size), seed=self.seed_generator)

    def _group_mask(self, batch):
        # Each row keeps `groups_per_view` of the transform groups (rotation,
        # scale, shear, translation) that have an active parameter, drawn
        # uniformly: the top scores of random keys, -1 for inactive groups.
        # With adaptive groups the keys are Gumbel-perturbed log-probabilities,
        # whose top entries are a draw without replacement from them.
        groups = ops.convert_to_tensor(_GROUP_MATRIX, "float32")  # (4, 6)
        active = ops.convert_to_tensor(self._active, "float32")
        usable = ops.cast(ops.max(groups * active[None], axis=-1) > 0, "float32")
        uniform = keras.random.uniform(
            (batch, len(_GROUPS)), 1e-6, 1.0 - 1e-6, seed=self.seed_generator
        )
        if self.adaptive_groups:
            keys = ops.log(self.group_probabilities())[None] - ops.log(-ops.log(uniform))
        else:
            keys = uniform
        keys = ops.where(usable[None] > 0, keys, -1e9)
        count = max(1, min(self.groups_per_view, len(_GROUPS)))
        threshold = ops.top_k(keys, count)[0][:, -1:]
        chosen = ops.cast(keys >= threshold, "float32") * usable[None]
        return ops.minimum(ops.matmul(chosen, groups), 1.0)

    def group_probabilities(self):
        """The probability of each group (rotation, scale, shear, translation) per draw.

        Uniform over the groups with a non-zero range, unless
        `adaptive_groups`: then `group_floor` of the mass is spread evenly
        and the rest follows each group's running win rate in the search
        (how often a draw of that group is the kept, hardest view, per draw
        of it), so proposals move to the transformations the student has
        not learned. Not a gradient-trained weight: the rates are running
        averages updated by every student-phase search.

        Returns:
            A float32 tensor of shape `(4,)` summing to 1.
        """
        groups = ops.convert_to_tensor(_GROUP_MATRIX, "float32")
        active = ops.convert_to_tensor(self._active, "float32")
        usable = ops.cast(ops.max(groups * active[None], axis=-1) > 0, "float32")
        even = usable / ops.sum(usable)
        if not self.adaptive_groups:
            return even
        rate = usable * self.group_wins / ops.maximum(self.group_draws, 1e-6)
        total = ops.sum(rate)
        learned = ops.where(total > 0, rate / ops.maximum(total, 1e-12), even)
        return self.group_floor * even + (1.0 - self.group_floor) * learned

    def _update_group_rates(self, squashed, kept, found):
        groups = ops.convert_to_tensor(_GROUP_MATRIX, "float32")
        # A draw belongs to every group whose parameters it moves.
        drawn = ops.cast(ops.matmul(ops.abs(squashed), ops.transpose(groups)) > 0, "float32")
        won = ops.cast(ops.matmul(ops.abs(kept), ops.transpose(groups)) > 0, "float32")
        won = won * ops.cast(found, "float32")[:, None]
        decay = _GROUP_RATE_DECAY
        self.group_draws.assign(decay * self.group_draws + (1.0 - decay) * ops.mean(drawn, axis=0))
        self.group_wins.assign(
            decay * self.group_wins
            + (1.0 - decay) * ops.sum(won, axis=0) / ops.cast(ops.shape(squashed)[0], "float32")
        )

    def squashed_parameters(self, x, noise=None):
        """Return the parameters in `[-1, 1]` (before scaling to the ranges).

        Args:
            x: `(batch, height, width, channels)` images.
            noise: the sampler's noise (see `sample_noise`), or `None` to draw it.

        Returns:
            `(squashed, entropy)`: a float32 `(batch, 6)` tensor in `[-1, 1]`,
            zero for inactive parameters, in the order rotation, scale,
            shear_x, shear_y, translate_x, translate_y; and the per-sample
            entropy estimate of the squashed distribution over the active
            parameters (`"gaussian"`; `None` for the other samplers).
        """
        if noise is None:
            noise = self.sample_noise(x)
        noise = ops.cast(noise, "float32")
        active = ops.convert_to_tensor(self._active, "float32")
        if self.sampler == "uniform":
            return ops.clip(noise, -1.0, 1.0) * active, None
        x = ops.cast(x, self.compute_dtype)
        if self.sampler == "network":
            if self.image_conditioned:
                features = ops.concatenate(
                    [self._image_features(x), ops.cast(noise, x.dtype)], axis=-1
                )
                raw = self._head(self._hidden(features))
            else:
                raw = self._head(ops.cast(noise, self.compute_dtype))
            return ops.tanh(ops.cast(raw, "float32")) * active, None
        if self.image_conditioned:
            hidden = self._hidden(self._image_features(x))
            mean = ops.cast(self._mean_head(hidden), "float32")
            log_std = ops.cast(self._log_std_head(hidden), "float32")
        else:
            mean = ops.zeros_like(noise)
            log_std = ops.broadcast_to(ops.cast(self.log_std, "float32")[None], ops.shape(noise))
        # Keep the scales in a range where tanh neither saturates every draw
        # nor sits at a point.
        log_std = ops.clip(log_std, -5.0, 2.0)
        squashed = ops.tanh(mean + ops.exp(log_std) * noise)
        # Entropy of tanh(u), u ~ N(mean, std): H(u) + E[log(1 - tanh(u)^2)],
        # one draw per sample, constants dropped.
        entropy = ops.sum(active * (log_std + ops.log(1.0 - ops.square(squashed) + 1e-6)), axis=-1)
        return squashed * active, entropy

    def scaled_parameters(self, squashed, x):
        """Scale `[-1, 1]` parameters to the ranges, as `warp.affine_matrix` arguments.

        Args:
            squashed: `(batch, 6)` parameters in `[-1, 1]`.
            x: the images they warp (for their size).

        Returns:
            A dict of float32 `(batch,)` tensors: `rotation` (radians),
            `scale` (factor), `shear_x`, `shear_y` (factors), `translate_x`,
            `translate_y` (pixels).
        """
        shape = ops.shape(x)
        height = ops.cast(shape[1], "float32")
        width = ops.cast(shape[2], "float32")
        rotation, scale, shear_x, shear_y, translate_x, translate_y = ops.unstack(
            ops.cast(squashed, "float32"), axis=-1
        )
        return {
            "rotation": rotation * (self.max_rotation * math.pi / 180.0),
            "scale": 1.0 + scale * self.max_scale,
            "shear_x": shear_x * self.max_shear,
            "shear_y": shear_y * self.max_shear,
            "translate_x": translate_x * (self.max_translation * width),
            "translate_y": translate_y * (self.max_translation * height),
        }

    def affine_parameters(self, x, noise=None):
        """Return the per-sample transform parameters of one draw.

        Args:
            x: `(batch, height, width, channels)` images.
            noise: the sampler's noise, or `None` to draw it fresh.

        Returns:
            A dict of float32 `(batch,)` tensors: `rotation` (radians),
            `scale` (factor), `shear_x`, `shear_y` (factors), `translate_x`,
            `translate_y` (pixels), the arguments of
            `kd_keras.augment.warp.affine_matrix`.
        """
        squashed, _ = self.squashed_parameters(x, noise)
        return self.scaled_parameters(squashed, x)

    def _image_features(self, x):
        shape = ops.shape(x)
        rows = ops.linspace(-1.0, 1.0, shape[1])
        cols = ops.linspace(-1.0, 1.0, shape[2])
        grid = ops.stack(ops.meshgrid(rows, cols, indexing="ij"), axis=-1)
        grid = ops.broadcast_to(ops.cast(grid, x.dtype)[None], (shape[0], shape[1], shape[2], 2))
        features = ops.concatenate([x, grid], axis=-1)
        for convolution in self._convolutions:
            features = convolution(features)
        return self._pool(features)

    def _render(self, x, squashed, interpolation="bilinear"):
        matrices = warp.affine_matrix(**self.scaled_parameters(squashed, x))
        return warp.affine_warp(
            x, matrices, fill_value=self.fill_value, interpolation=interpolation
        )

    def augment(self, x, noise=None):
        """Return one warped view `x~` of a batch (differentiable w.r.t. the weights).

        Args:
            x: `(batch, height, width, channels)` images.
            noise: the sampler's noise (see `sample_noise`), or `None` to
                draw it fresh; fixing it makes the view reproducible.

        Returns:
            The warped images, with `x`'s shape and (float) dtype.
        """
        squashed, _ = self.squashed_parameters(x, noise)
        return self._render(x, squashed)

    def _consistency(self, teacher_clean, teacher_tilde):
        if self.consistency == "kl":
            return kd_losses.kl_per_sample(teacher_clean, teacher_tilde, self.temperature)
        target = ops.argmax(teacher_clean, axis=-1)
        log_q = ops.log_softmax(ops.cast(teacher_tilde, "float32") / self.temperature, axis=-1)
        return -ops.take_along_axis(log_q, target[:, None], axis=-1)[:, 0]

    def hardest_views(self, x, teacher_fn, student_fn):
        """Search for each image's hardest warp among `candidates` draws.

        Draws `candidates` warps per image from the sampler, refines them by
        `refine_steps` steps of projected sign-gradient ascent, and keeps
        for each image the one with the largest `KL(p_t^T(x~) || p_s^T(x~))`
        among those on which the teacher's class is the one it gives `x`
        (`x` itself when there is none). No gradient leaves this function.

        Args:
            x: `(batch, height, width, channels)` images.
            teacher_fn: `inputs -> teacher logits`.
            student_fn: `inputs -> student logits`.

        Returns:
            `(x_tilde, teacher_tilde, teacher_clean, squashed)`: the views,
            the teacher's logits on them and on `x`, and the kept
            parameters in `[-1, 1]`, `(batch, 6)`.
        """
        return self._search(x, teacher_fn, student_fn)[:4]

    def _search(self, x, teacher_fn, student_fn):
        # hardest_views, plus the teacher's features on the views and on x
        # from the passes that gave their logits (None when no loss needs them).
        x = ops.convert_to_tensor(x)
        if not x.dtype.is_floating:
            x = ops.cast(x, "float32")
        k = self.candidates
        batch = ops.shape(x)[0]
        teacher_clean, features_clean = teacher_outputs(teacher_fn, x)
        teacher_clean = ops.stop_gradient(teacher_clean)
        features_clean = map_features(ops.stop_gradient, features_clean)
        tiled = ops.tile(x, (k, 1, 1, 1))
        teacher_tiled = ops.tile(teacher_clean, (k, 1))
        squashed, _ = self.squashed_parameters(tiled)
        squashed = ops.stop_gradient(squashed)
        active = ops.convert_to_tensor(self._active, "float32")
        by_teacher = self.score == "teacher"
        for _ in range(self.refine_steps):
            with tf.GradientTape() as tape:
                tape.watch(squashed)
                views = self._render(tiled, squashed)
                if by_teacher:
                    teacher_views = teacher_fn(views)
                    gain = kd_losses.kl_per_sample(
                        teacher_views, student_fn(views), self.temperature
                    ) - self.lambda_t * self._consistency(teacher_tiled, teacher_views)
                else:  # the student alone, against the teacher's view of x
                    gain = kd_losses.kl_per_sample(
                        teacher_tiled, student_fn(views), self.temperature
                    )
            gradient = tape.gradient(gain, squashed)  # of the sum over samples
            squashed = ops.clip(
                squashed + self.refine_step_size * ops.sign(gradient) * active,
                -1.0,
                1.0,
            )
            squashed = ops.stop_gradient(squashed)
        views = ops.stop_gradient(self._render(tiled, squashed, self.interpolation))
        student_views = ops.stop_gradient(student_fn(views))
        if by_teacher:
            teacher_views, features_views = teacher_outputs(teacher_fn, views)
            teacher_views = ops.stop_gradient(teacher_views)
            score = kd_losses.kl_per_sample(teacher_views, student_views, self.temperature)
            keeps = ops.argmax(teacher_views, axis=-1) == ops.argmax(teacher_tiled, axis=-1)
            # KL >= 0, so -1 marks a candidate the teacher relabels.
            score = ops.where(keeps, score, -1.0)
        else:
            score = kd_losses.kl_per_sample(teacher_tiled, student_views, self.temperature)
        score = ops.reshape(score, (k, batch))
        best = ops.argmax(score, axis=0)

        def pick(values):
            values = ops.reshape(values, (k, batch, *ops.shape(values)[1:]))
            values = ops.moveaxis(values, 0, 1)
            return tf.gather(values, best, axis=1, batch_dims=1)

        if by_teacher:
            found = ops.max(score, axis=0) >= 0.0
            teacher_picked = pick(teacher_views)
            features_picked = map_features(pick, features_views)
        else:
            # Only the kept view meets the teacher, which must keep its class.
            teacher_picked, features_picked = teacher_outputs(teacher_fn, pick(views))
            teacher_picked = ops.stop_gradient(teacher_picked)
            found = ops.argmax(teacher_picked, axis=-1) == ops.argmax(teacher_clean, axis=-1)

        def where_found(values, fallback):
            mask = ops.reshape(found, (batch,) + (1,) * (len(values.shape) - 1))
            return ops.where(mask, values, ops.cast(fallback, values.dtype))

        x_tilde = where_found(pick(views), x)
        teacher_tilde = where_found(teacher_picked, teacher_clean)
        features_tilde = map_features(
            lambda picked, clean: ops.stop_gradient(where_found(picked, clean)),
            features_picked,
            features_clean,
        )
        kept = where_found(pick(squashed), ops.zeros_like(squashed[:batch]))
        if self.adaptive_groups:
            self._update_group_rates(squashed, kept, found)
        return x_tilde, teacher_tilde, teacher_clean, kept, features_tilde, features_clean

    def views(self, x, y, teacher_fn, student_fn, training=True):
        if not training:
            return View(x, y, deterministic=True)
        if self.candidates == 1 and self.refine_steps == 0:
            if self.interpolation == "bilinear":
                return super().views(x, y, teacher_fn, student_fn, training)
            squashed, _ = self.squashed_parameters(x)
            x_tilde = self._render(x, squashed, self.interpolation)
            teacher_clean = teacher_tilde = features_clean = features_tilde = None
        else:
            x_tilde, teacher_tilde, teacher_clean, _, features_tilde, features_clean = self._search(
                x, teacher_fn, student_fn
            )
        # The search already ran the teacher on both views: its logits (and
        # the features of the same passes) serve.
        return Views(
            View(
                ops.cast(x, x_tilde.dtype),
                y,
                teacher_clean,
                deterministic=True,
                teacher_features=features_clean,
            ),
            View(
                ops.stop_gradient(x_tilde),
                y,
                teacher_tilde,
                label_weight=self.label_views,
                teacher_features=features_tilde,
            ),
        )

    def objective(self, x, y, teacher_fn, student_fn):
        squashed, entropy = self.squashed_parameters(x)
        x_tilde = self._render(x, squashed)
        teacher_tilde = teacher_fn(x_tilde)
        disagreement = kd_losses.kl_per_sample(teacher_tilde, student_fn(x_tilde), self.temperature)
        teacher_clean = ops.stop_gradient(teacher_fn(ops.cast(x, x_tilde.dtype)))
        loss = ops.mean(
            -disagreement + self.lambda_t * self._consistency(teacher_clean, teacher_tilde)
        )
        if entropy is not None and self.entropy_weight > 0:
            loss = loss - self.entropy_weight * ops.mean(entropy)
        if self.spread_floor > 0:
            active = ops.convert_to_tensor(self._active, "float32")
            # sqrt(var + eps): the std of a collapsed batch has no gradient.
            spread = ops.sqrt(ops.var(squashed, axis=0) + 1e-8)
            loss = loss + ops.sum(active * ops.relu(self.spread_floor - spread))
        return loss

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
            "sampler": self.sampler,
            "candidates": self.candidates,
            "refine_steps": self.refine_steps,
            "refine_step_size": self.refine_step_size,
            "entropy_weight": self.entropy_weight,
            "initial_std": self.initial_std,
            "spread_floor": self.spread_floor,
            "consistency": self.consistency,
            "interpolation": self.interpolation,
            "score": self.score,
            "groups_per_view": self.groups_per_view,
            "adaptive_groups": self.adaptive_groups,
            "group_floor": self.group_floor,
            "seed": self.seed,
        }
