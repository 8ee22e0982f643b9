"""Mixing augmenters: MixUp and CutMix, and the draws every mixing view shares.

Each one shows the student a mixed batch `x'` on top of the standard batch `x`
(METHODS.md §1 and §2). By default the teacher labels `x'` ("TL"): its mixed
labels are thrown away and the label term sees the clean half only.

Every random draw uses `keras.random` with a `keras.random.SeedGenerator`
stored on the layer, and every op compiles under XLA on CPU. Keras's own
`keras.random.beta` does not (its StatelessRandomGammaV3 kernel is missing),
so `sample_beta` draws Beta(alpha, alpha) from normals and uniforms.
"""

import math

import keras
from keras import ops

from kd_keras.augment.base import Augmenter
from kd_keras.augment.base import View
from kd_keras.augment.base import Views
from kd_keras.augment.base import teacher_outputs

# How often a mixing ratio (and a CutMix box) is drawn: once per batch, as
# the official code of Wang et al. does, or once per sample.
PER = ("batch", "sample")


def sample_beta(shape, alpha, seed=None, attempts=8):
    """Draw Beta(alpha, alpha) samples with ops that compile under XLA on CPU.

    `alpha == 1` is Uniform(0, 1) and is drawn directly. Otherwise
    `lambda = X / (X + Y) = sigmoid(log X - log Y)` with `X, Y ~ Gamma(alpha)`,
    each drawn by Marsaglia and Tsang's method from normals and uniforms,
    vectorised as a fixed number of rejection `attempts` per sample (the first
    accepted one is kept). Shapes below 1 use the boost
    `Gamma(a) = Gamma(a + 1) * U^(1/a)`, so every attempt is accepted with
    probability above 0.95 and all 8 attempts fail with probability below
    `0.05**8`, about 4e-11 (the sample then falls back to the Gamma's mean).
    Working in log space keeps small shapes (`U^(1/a)` underflowing) finite.

    References:
        Marsaglia, Tsang. A Simple Method for Generating Gamma Variables,
        ACM TOMS 26(3), 2000.

    Args:
        shape: output shape (may hold a dynamic batch size).
        alpha: the Beta's concentration (> 0).
        seed: an int, a `keras.random.SeedGenerator` or None.
        attempts: rejection attempts per Gamma sample.

    Returns:
        A float32 tensor of `shape` with values in [0, 1].

    Example:
    ```python
    lam = kd_keras.augment.mixing.sample_beta((64,), 0.4, seed=seed_generator)
    ```
    """
    alpha = float(alpha)
    if not alpha > 0:
        raise ValueError(f"alpha must be positive, got {alpha}: use e.g. 1.0.")
    if alpha == 1.0:
        return keras.random.uniform(shape, dtype="float32", seed=seed)
    log_x = _log_gamma(shape, alpha, seed, attempts)
    log_y = _log_gamma(shape, alpha, seed, attempts)
    return ops.sigmoid(log_x - log_y)


def _log_gamma(shape, alpha, seed, attempts):
    boosted = alpha < 1.0
    shape_parameter = alpha + 1.0 if boosted else alpha
    d = shape_parameter - 1.0 / 3.0
    c = 1.0 / math.sqrt(9.0 * d)
    tries = (*shape, attempts)
    z = keras.random.normal(tries, dtype="float32", seed=seed)
    u = keras.random.uniform(tries, dtype="float32", seed=seed)
    v = (1.0 + c * z) ** 3
    positive = v > 0
    log_v = ops.log(ops.where(positive, v, 1.0))
    accepted = positive & (ops.log(ops.maximum(u, 1e-37)) < 0.5 * z**2 + d - d * v + d * log_v)
    first = ops.argmax(ops.cast(accepted, "int32"), axis=-1)
    log_v = ops.squeeze(ops.take_along_axis(log_v, first[..., None], axis=-1), -1)
    log_v = ops.where(ops.any(accepted, axis=-1), log_v, 0.0)
    log_g = math.log(d) + log_v
    if boosted:
        boost = keras.random.uniform(shape, dtype="float32", seed=seed)
        log_g = log_g + ops.log(ops.maximum(boost, 1e-37)) / alpha
    return log_g


def derangement(batch_size, seed=None):
    """Return a random pairing of a batch in which no index is paired with itself.

    A uniformly random order of the batch is rolled by a random non-zero
    offset: `partner[order[i]] = order[(i + offset) % batch_size]`. A batch of
    one can only be paired with itself.

    Args:
        batch_size: int or scalar tensor.
        seed: an int, a `keras.random.SeedGenerator` or None.

    Returns:
        An int32 tensor `partner` of shape `(batch_size,)`.

    Example:
    ```python
    partner = kd_keras.augment.mixing.derangement(64, seed=7)
    ```
    """
    keys = keras.random.uniform((batch_size,), dtype="float32", seed=seed)
    order = ops.cast(ops.argsort(keys), "int32")
    position = ops.cast(ops.argsort(order), "int32")
    size = ops.cast(batch_size, "int32")
    draw = keras.random.uniform((), dtype="float32", seed=seed)
    offset = 1 + ops.cast(ops.floor(draw * ops.cast(size - 1, "float32")), "int32")
    # float32 rounding can turn u * (n - 1) into n - 1, i.e. an offset of n.
    offset = ops.clip(offset, 1, ops.maximum(size - 1, 1))
    return ops.take(order, (position + offset) % size)


def mix_labels(y, partner, lam, num_classes=None):
    """Mix labels like their images: `lam * y + (1 - lam) * y[partner]`.

    Integer labels become one-hot first, so the result always sums to 1.

    Args:
        y: integer labels `(batch,)` or per-class probabilities `(batch, classes)`.
        partner: int indices `(batch,)` of each sample's mixing partner.
        lam: `(batch,)` fraction of each mixed sample taken from itself.
        num_classes: needed for integer labels.

    Returns:
        Float32 soft labels `(batch, classes)`.

    Example:
    ```python
    y_mixed = kd_keras.augment.mixing.mix_labels(y, partner, lam, num_classes=10)
    ```
    """
    return _blend_labels(y, ops.take(y, partner, axis=0), lam, num_classes)


def _blend_labels(y_a, y_b, lam, num_classes):
    y_a = _soft(y_a, num_classes)
    y_b = _soft(y_b, num_classes)
    lam = ops.reshape(ops.cast(lam, "float32"), (-1, 1))
    return lam * y_a + (1.0 - lam) * y_b


def _soft(y, num_classes):
    if not _is_sparse(y):
        return ops.cast(y, "float32")
    if num_classes is None:
        raise ValueError(
            "Integer labels need num_classes to be mixed: pass num_classes=... "
            "to the augmenter, or one-hot labels."
        )
    return ops.one_hot(ops.reshape(ops.cast(y, "int32"), (-1,)), int(num_classes))


def _is_sparse(y):
    rank = len(y.shape)
    integer = "int" in keras.backend.standardize_dtype(y.dtype)
    return rank == 1 or (rank == 2 and y.shape[-1] == 1 and integer)


def _dominant(y_a, y_b, lam):
    # The label of whichever image covers more of the mix: only the training
    # accuracy metric reads it (its label weight is zero).
    keep = ops.reshape(lam >= 0.5, (-1,) + (1,) * (len(y_a.shape) - 1))
    return ops.where(keep, y_a, y_b)


def _broadcast(lam, x):
    return ops.reshape(lam, (-1,) + (1,) * (len(x.shape) - 1))


class _Mixing(Augmenter):
    """Shared machinery of the mixing augmenters: pairing, labels, views."""

    def __init__(
        self,
        alpha=1.0,
        relabel=True,
        include_clean=True,
        num_classes=None,
        seed=None,
        mixed_label_weight=9.0,
        per="batch",
        **kwargs,
    ):
        super().__init__(seed=seed, **kwargs)
        if not float(alpha) > 0:
            raise ValueError(f"alpha must be positive, got {alpha}: use e.g. 1.0.")
        if per not in PER:
            raise ValueError(f"per must be one of {PER}, got {per!r}.")
        self.per = per
        self.alpha = float(alpha)
        self.relabel = bool(relabel)
        self.include_clean = bool(include_clean)
        self.mixed_label_weight = float(mixed_label_weight)
        self.num_classes = None if num_classes is None else int(num_classes)

    @property
    def keeps_input(self):
        return self.include_clean

    def mix_images(self, x):
        """Mix a batch of images; returns `(x_mixed, partner, lam)`."""
        raise NotImplementedError("abstract: MixUp and CutMix define how images mix")

    def _draws(self, batch):
        """How many ratios (and boxes) a batch of `batch` samples draws."""
        return 1 if self.per == "batch" else batch

    def mix_labels(self, y, partner, lam):
        """Mix labels as `mix_images` mixed their images (soft labels summing to 1).

        Args:
            y: integer labels (needs the layer's `num_classes`) or soft labels.
            partner: the `partner` returned by `mix_images`.
            lam: the `lam` returned by `mix_images`.

        Returns:
            Float32 soft labels `(batch, classes)`.
        """
        return mix_labels(y, partner, lam, self.num_classes)

    def mix(self, x, y=None):
        """Mix a batch without any network, e.g. in `tf.data`: `(x_mixed, y_mixed)`.

        Args:
            x: a batch of images.
            y: its labels, or None.

        Returns:
            `(x_mixed, y_mixed)`; `y_mixed` is None when `y` is.
        """
        x_mixed, partner, lam = self.mix_images(x)
        if y is None:
            return x_mixed, None
        return x_mixed, self.mix_labels(y, partner, lam)

    def call(self, inputs, training=False):
        if not training:
            return inputs
        if isinstance(inputs, (tuple, list)):
            return self.mix(*inputs)
        return self.mix_images(inputs)[0]

    def views(self, x, y, teacher_fn, student_fn, training=True):
        if not training:
            return View(x, y, deterministic=True)
        x_mixed, partner, lam = self.mix_images(x)
        batch = ops.arange(ops.shape(x)[0], dtype="int32")
        return self._assemble(x, y, x_mixed, batch, partner, lam, None, teacher_fn)

    def _assemble(self, x, y, x_new, source, partner, lam, teacher, teacher_fn):
        """Views `[x, x_new]`; `x_new[i]` mixes `x[source[i]]` with `x[partner[i]]`.

        `teacher` is None or the teacher's `(logits, features)` on `x` and on
        `x_new` (see `kd_keras.augment.base.teacher_outputs`).
        """
        y = ops.convert_to_tensor(y)
        (teacher_clean, features_clean), (teacher_new, features_new) = teacher or (
            (None, None),
            (None, None),
        )
        y_source = ops.take(y, source, axis=0)
        y_partner = ops.take(y, partner, axis=0)
        clean = View(x, y, teacher_clean, deterministic=True, teacher_features=features_clean)
        if self.relabel:
            # The dominant label only feeds the training accuracy metric.
            mixed = View(
                x_new,
                _dominant(y_source, y_partner, lam),
                teacher_new,
                label_weight=0.0,
                teacher_features=features_new,
            )
            return Views(clean, mixed) if self.include_clean else mixed
        num_classes = self.num_classes
        if num_classes is None and _is_sparse(y):
            # The teacher's logits tell the number of classes the one-hot
            # labels need; it runs on the clean view anyway, so the view
            # keeps them (and the features of the same pass).
            if teacher_clean is None:
                teacher_clean, features_clean = teacher_outputs(teacher_fn, x)
            num_classes = teacher_clean.shape[-1]
        # The paper's no-relabelling baseline: mixed one-hot labels on x' and
        # no KD there, 0.1 CE(y, x) + 0.9 CE(y_mixed, x') + 0.9 KD(x) with a
        # student_loss_weight of 0.1 and a mixed_label_weight of 9.
        y_mixed = _blend_labels(y_source, y_partner, lam, num_classes)
        if not self.include_clean:
            return View(x_new, y_mixed, teacher_new, teacher_features=features_new)
        mixed = View(
            x_new,
            y_mixed,
            teacher_new,
            label_weight=self.mixed_label_weight,
            distill_weight=0.0,
            teacher_features=features_new,
        )
        clean = View(
            x,
            _soft(y, num_classes),
            teacher_clean,
            deterministic=True,
            teacher_features=features_clean,
        )
        return Views(clean, mixed)

    def get_config(self):
        return {
            **super().get_config(),
            "alpha": self.alpha,
            "relabel": self.relabel,
            "include_clean": self.include_clean,
            "mixed_label_weight": self.mixed_label_weight,
            "num_classes": self.num_classes,
            "seed": self.seed,
            "per": self.per,
        }


@keras.saving.register_keras_serializable(package="kd_keras")
class MixUp(_Mixing):
    """MixUp views: each image blended with a partner, `lam * x + (1 - lam) * x[partner]`.

    Use it to distil on mixed images labelled by the teacher ("TL", Wang et
    al.): the views are `x` (with its labels) and `x'` (label weight 0), each
    distilled, so a Distiller with `student_loss_weight=0.1` trains on the
    paper's `0.1 CE(x) + 0.9 [KD(x) + KD(x')]` (`kd_keras.recipes.mixup`).

    `lam ~ Beta(alpha, alpha)` is drawn once per batch (`per="batch"`, as
    the official code does) or once per sample (`per="sample"`); partners
    come from a random pairing without fixed points, so no image is mixed
    with itself (the official MixUp's plain permutation may pair an image
    with itself, about once per batch).

    `relabel=False` is the paper's baseline without teacher relabelling:
    `x'` keeps its mixed labels `lam * y + (1 - lam) * y[partner]`, with
    label weight `mixed_label_weight` and no KD term; with
    `student_loss_weight=0.1` and `mixed_label_weight=9` (what
    `kd_keras.recipes.mixup(relabel=False)` sets) the step minimises
    `0.1 CE(y, x) + 0.9 CE(y_mixed, x') + 0.9 KD(x)`.

    Outside a Distiller, `mix(x, y)` (or calling the layer on `(x, y)` with
    `training=True`) mixes a batch in `tf.data`.

    References:
        Zhang et al. mixup: Beyond Empirical Risk Minimization, ICLR 2018;
        Wang et al. What Makes a "Good" Data Augmentation in Knowledge
        Distillation, arXiv:2012.02909 (seed 001).

    Args:
        alpha: concentration of the Beta(alpha, alpha) mixing ratio.
        relabel: True (default) lets the teacher label `x'`; False keeps the
            mixed one-hot labels (the no-relabelling baseline).
        include_clean: True (default) trains on `[x, x']`; False on `x'` only.
        mixed_label_weight: with `relabel=False`, the weight of the mixed
            labels relative to the clean ones (0.9 / 0.1 in the paper).
        num_classes: number of classes, needed to mix integer labels outside
            a Distiller (inside one, the teacher's logits tell).
        seed: int seed of the layer's `SeedGenerator`; None seeds it when the
            layer is built (so `keras.utils.set_random_seed` controls it).
        per: `"batch"` or `"sample"`: how often `lam` is drawn.
        **kwargs: passed to `keras.layers.Layer`.

    Returns:
        An augmenter; `views(...)` returns `kd_keras.augment.Views`.

    Example:
    ```python
    augmenter = kd_keras.augment.MixUp(alpha=1.0)
    distiller = kd_keras.Distiller(teacher, student, augmenter=augmenter,
                                   student_loss_weight=0.1)
    ```
    """

    def mix_images(self, x):
        """Return `(x_mixed, partner, lam)`: the mixed batch, pairing and ratios."""
        batch = ops.shape(x)[0]
        lam = sample_beta((self._draws(batch),), self.alpha, seed=self.seed_generator)
        lam = lam * ops.ones((batch,), "float32")
        partner = derangement(batch, seed=self.seed_generator)
        if not keras.backend.is_float_dtype(ops.dtype(x)):
            x = ops.cast(x, "float32")
        weight = ops.cast(_broadcast(lam, x), x.dtype)
        return weight * x + (1 - weight) * ops.take(x, partner, axis=0), partner, lam


@keras.saving.register_keras_serializable(package="kd_keras")
class CutMix(_Mixing):
    """CutMix views: a random box of each image replaced by its partner's pixels.

    Use it like `MixUp` (teacher-labelled `x'`, the paper's "TL-CutMix").
    `lam ~ Beta(alpha, alpha)` and the box are drawn once per batch
    (`per="batch"`, the official code) or per sample (`per="sample"`). The
    box is the official code's: sides `2 * (floor(sqrt(1 - lam) * size) // 2)`
    around a centre drawn uniformly over the pixels, clipped to the image;
    `lam` is then recomputed from the box's real area, so `1 - lam` is
    exactly the fraction of pixels taken from the partner. Pairing never
    matches an image with itself. Inputs are
    `(batch, height, width, channels)` images; on one-row inputs (signals as
    `(1, length, channels)` images) the box spans the row and cuts a segment
    of `floor((1 - lam) * length)` samples.

    `relabel=False` keeps the mixed labels instead of the teacher's (see
    `MixUp`); `mix_labels` mixes labels with the real-area `lam`.

    References:
        Yun et al. CutMix: Regularization Strategy to Train Strong Classifiers
        with Localizable Features, ICCV 2019; Wang et al. arXiv:2012.02909.

    Args:
        alpha: concentration of the Beta(alpha, alpha) mixing ratio.
        relabel: True (default) lets the teacher label `x'`; False keeps the
            mixed one-hot labels.
        include_clean: True (default) trains on `[x, x']`; False on `x'` only.
        num_classes: number of classes, needed to mix integer labels outside
            a Distiller.
        seed: int seed of the layer's `SeedGenerator`, or None (seeded at build).
        per: `"batch"` or `"sample"`: how often `lam` (and a box) is drawn.
        **kwargs: passed to `keras.layers.Layer`.

    Returns:
        An augmenter; `views(...)` returns `kd_keras.augment.Views`.

    Example:
    ```python
    augmenter = kd_keras.augment.CutMix()
    x_mixed, y_mixed = kd_keras.augment.CutMix(num_classes=10).mix(x, y)
    ```
    """

    def mix_images(self, x):
        """Return `(x_mixed, partner, lam)` with `lam` recomputed from the box area."""
        if len(x.shape) != 4:
            raise ValueError(
                f"CutMix mixes images of shape (batch, height, width, channels), "
                f"got shape {x.shape}: use MixUp for other inputs."
            )
        if x.shape[1] == 1 and x.shape[2] == 1:
            raise ValueError(
                f"CutMix cuts boxes out of images, got inputs of shape {x.shape} "
                "with a single pixel: use MixUp for such inputs."
            )
        shape = ops.shape(x)
        batch, height, width = shape[0], shape[1], shape[2]
        draws = self._draws(batch)
        lam = sample_beta((draws,), self.alpha, seed=self.seed_generator)
        partner = derangement(batch, seed=self.seed_generator)
        row_side, col_side = _box_sides(lam, x.shape[1], x.shape[2])
        rows, row_count = self._span(draws, height, row_side)
        cols, col_count = self._span(draws, width, col_side)
        inside = rows[:, :, None, None] & cols[:, None, :, None]
        area = ops.cast(height, "float32") * ops.cast(width, "float32")
        lam = (1.0 - row_count * col_count / area) * ops.ones((batch,), "float32")
        return ops.where(inside, ops.take(x, partner, axis=0), x), partner, lam

    def _span(self, draws, size, side):
        """`draws` masks `[start, stop)` along one axis: the official box, clipped.

        The box is `[c - h, c + h)` with `h = floor(floor(side * size) / 2)`
        and the centre `c` uniform over the axis' pixels (Wang et al.'s
        `rand_bbox`); `side=None` spans the whole axis.
        """
        size_f = ops.cast(size, "float32")
        index = ops.cast(ops.arange(size), "float32")[None, :]
        if side is None:
            return ops.ones((draws, size), "bool"), ops.full((draws,), size_f)
        half = ops.floor(ops.floor(side * size_f) / 2.0)
        draw = keras.random.uniform((draws,), dtype="float32", seed=self.seed_generator)
        centre = ops.minimum(ops.floor(draw * size_f), size_f - 1.0)
        start = ops.clip(centre - half, 0.0, size_f)
        stop = ops.clip(centre + half, 0.0, size_f)
        mask = (index >= start[:, None]) & (index < stop[:, None])
        return mask, stop - start


def _box_sides(lam, height, width):
    """Relative box sides along height and width (None: the whole axis).

    A square box (`sqrt(1 - lam)` of each side) on images; on one-row (or
    one-column) inputs such as signals shaped `(1, length, channels)` the box
    spans the single row and cuts `1 - lam` of the length, since a square
    box's side `floor(sqrt(1 - lam) * 1)` would be 0 and every mixed view a
    copy of its source.
    """
    if height == 1 and width != 1:
        return None, 1.0 - lam
    if width == 1 and height != 1:
        return 1.0 - lam, None
    side = ops.sqrt(1.0 - lam)
    return side, side
