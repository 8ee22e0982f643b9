"""Function matching's view: one aggressive crop, flip and mixup shown to both networks."""

import math

import keras
from keras import ops

from kd_keras.augment.mixing import MixUp


@keras.saving.register_keras_serializable(package="kd_keras")
class FunctionMatching(MixUp):
    """Function matching's view: inception crop, flip and mixup, the same for both networks.

    Use it for "consistent and patient" distillation: every step shows teacher
    and student one aggressive view of the batch (the Distiller runs both on
    `Views.x`), trained with the KD term alone (label weight 0 everywhere,
    `kd_keras.recipes.funmatch`). The view is a random resized crop of each
    image (area fraction uniform in `crop_area`, aspect ratio log-uniform in
    `aspect_ratio`, the box clipped to the image rather than re-drawn),
    resized back to the input size with bilinear interpolation written as two
    small matrix products (XLA-friendly, no ImageProjectiveTransform), an
    optional horizontal flip with probability 0.5 (turn it off for digits),
    then MixUp with `alpha` (the paper's `p=1`: every view is mixed) and a
    pairing without fixed points.

    References:
        Beyer et al. Knowledge distillation: A good teacher is patient and
        consistent, CVPR 2022.

    Args:
        alpha: concentration of mixup's Beta(alpha, alpha) ratio.
        flip: flip each view horizontally with probability 0.5.
        crop_area: `(min, max)` fraction of the image area a crop covers.
        aspect_ratio: `(min, max)` width/height ratio of the crops.
        relabel: True (default) keeps the teacher as the only label source.
        include_clean: False (default) trains on the aggressive view only.
        num_classes: number of classes, for mixing integer labels outside a
            Distiller.
        seed: int seed of the layer's `SeedGenerator`, or None (seeded at build).
        per: `"batch"` or `"sample"`: how often `lam` (and a box) is drawn.
        **kwargs: passed to `keras.layers.Layer`.

    Returns:
        An augmenter; `views(...)` returns `kd_keras.augment.Views`.

    Example:
    ```python
    augmenter = kd_keras.augment.FunctionMatching(flip=False)
    ```
    """

    def __init__(
        self,
        alpha=1.0,
        flip=True,
        crop_area=(0.05, 1.0),
        aspect_ratio=(3 / 4, 4 / 3),
        relabel=True,
        include_clean=False,
        num_classes=None,
        seed=None,
        per="batch",
        **kwargs,
    ):
        super().__init__(
            alpha=alpha,
            relabel=relabel,
            include_clean=include_clean,
            num_classes=num_classes,
            seed=seed,
            per=per,
            **kwargs,
        )
        crop_area = tuple(float(a) for a in crop_area)
        aspect_ratio = tuple(float(r) for r in aspect_ratio)
        if not (len(crop_area) == 2 and 0 < crop_area[0] <= crop_area[1] <= 1):
            raise ValueError(
                f"crop_area must be (min, max) with 0 < min <= max <= 1, got {crop_area}."
            )
        if not (len(aspect_ratio) == 2 and 0 < aspect_ratio[0] <= aspect_ratio[1]):
            raise ValueError(
                f"aspect_ratio must be (min, max) with 0 < min <= max, got {aspect_ratio}."
            )
        self.flip = bool(flip)
        self.crop_area = crop_area
        self.aspect_ratio = aspect_ratio

    def crop_and_flip(self, x):
        """Return the randomly cropped, resized (and flipped) batch, before mixup."""
        if len(x.shape) != 4:
            raise ValueError(
                "FunctionMatching crops images of shape (batch, height, width, "
                f"channels), got shape {x.shape}."
            )
        if not keras.backend.is_float_dtype(ops.dtype(x)):
            x = ops.cast(x, "float32")
        shape = ops.shape(x)
        batch, height, width = shape[0], shape[1], shape[2]

        def draw(low, high):
            return keras.random.uniform(
                (batch,), low, high, dtype="float32", seed=self.seed_generator
            )

        area = draw(*self.crop_area)
        ratio = ops.exp(draw(math.log(self.aspect_ratio[0]), math.log(self.aspect_ratio[1])))
        crop_h = ops.minimum(ops.sqrt(area / ratio), 1.0)
        crop_w = ops.minimum(ops.sqrt(area * ratio), 1.0)
        top = draw(0.0, 1.0) * (1.0 - crop_h)
        left = draw(0.0, 1.0) * (1.0 - crop_w)
        flipped = draw(0.0, 1.0) < 0.5 if self.flip else None
        rows = _resampler(top, crop_h, height, None)
        cols = _resampler(left, crop_w, width, flipped)
        dtype = x.dtype
        out = ops.einsum("bik,bkwc->biwc", ops.cast(rows, dtype), x)
        return ops.einsum("bjw,biwc->bijc", ops.cast(cols, dtype), out)

    def mix_images(self, x):
        """Return `(x_view, partner, lam)`: crop, flip, then MixUp."""
        return super().mix_images(self.crop_and_flip(x))

    def get_config(self):
        return {
            **super().get_config(),
            "flip": self.flip,
            "crop_area": list(self.crop_area),
            "aspect_ratio": list(self.aspect_ratio),
        }


def _resampler(start, length, size, flipped):
    """`(batch, size, size)` bilinear weights reading `[start, start+length)` of an axis.

    Output pixel `i` reads source coordinate `u` (pixel centres, in pixels);
    the triangle kernel `max(0, 1 - |u - k|)` is exactly bilinear
    interpolation, so resizing is a batched matrix product.
    """
    size_f = ops.cast(size, "float32")
    index = ops.cast(ops.arange(size), "float32")[None, :]
    if flipped is not None:
        index = ops.where(flipped[:, None], size_f - 1.0 - index, index)
    u = (start[:, None] + (index + 0.5) / size_f * length[:, None]) * size_f - 0.5
    u = ops.clip(u, 0.0, size_f - 1.0)
    source = ops.cast(ops.arange(size), "float32")[None, None, :]
    return ops.relu(1.0 - ops.abs(u[:, :, None] - source))
