"""AutoAugment's image ops with a magnitude: batched, XLA-safe, differentiable where learned.

One implementation of each op for the whole project: the learned TST policy
(`kd_keras.augment.LearnedPolicy`) calls them with learnable magnitudes, and
fixed-magnitude policies (PBA) call the same functions with fixed ones.

Conventions shared by every op `op(images, magnitude, ...)`:

- `images` is a float `(batch, height, width, channels)` tensor in `[0, 1]`
  with 1 or 3 channels; the output has the same shape, dtype and range.
- `magnitude` is a scalar or a `(batch,)` tensor (one per image) in `[0, 1]`,
  mapped linearly onto the op's documented range; `0` is the identity
  (exactly, bit for bit). Ops whose direction is arbitrary (the geometric
  ones and the four enhancements) are **signed**: they take magnitudes in
  `[-1, 1]`, the sign choosing the direction (AutoAugment negates them at
  random; so does the learned policy). Values outside the range are clipped.
- Equalize, Invert and AutoContrast have no magnitude: they ignore it and
  always apply fully, as in AutoAugment; a policy turns them off with its
  probability, not with a magnitude of 0.
- Geometric ops go through `kd_keras.augment.warp` (bilinear sampling about
  the image centre, `fill_value` outside the image, 0 by default where
  AutoAugment fills grey 128: pass `fill_value=0.5` for that).
- Posterize and Solarize are piecewise constant in their magnitude, so their
  forward pass is the exact op and their backward pass a straight-through
  estimate from a smooth relaxation (see each op). Brightness, Color,
  Contrast, Sharpness and the geometric ops are differentiable as they are.
  Equalize, Invert, AutoContrast and Cutout give no gradient to a magnitude.

`OPS` maps each op's AutoAugment name to an `Op` record (function, whether it
is signed, learnable, has a magnitude), and `TST_OPS` lists TST's library.
"""

import dataclasses
import math
from collections.abc import Callable

import keras
import tensorflow as tf

from kd_keras.augment import warp

# PIL's ITU-R 601-2 luma transform, used by its "L" conversion.
_LUMA = (0.299, 0.587, 0.114)
# PIL's ImageFilter.SMOOTH kernel, the degenerate image of ImageEnhance.Sharpness.
_SMOOTH = ((1.0, 1.0, 1.0), (1.0, 5.0, 1.0), (1.0, 1.0, 1.0))
# Width, in intensity units, of the sigmoid standing in for Solarize's step in
# the backward pass: pixels within a few widths of the threshold carry the
# magnitude's gradient.
SOLARIZE_SMOOTHNESS = 0.05


def value_range(value):
    """Return `value` as a `(low, high)` pair of floats, or raise a one-line `ValueError`.

    Policies whose ops work in `[0, 1]` (PBA, TST) take inputs in another
    fixed range (standardised signals, say) as `value_range=(low, high)`,
    mapped onto `[0, 1]` for the ops and back.

    Args:
        value: two finite numbers with `low < high`.

    Returns:
        `(low, high)`, floats.
    """
    try:
        low, high = (float(number) for number in value)
    except (TypeError, ValueError):
        raise ValueError(f"value_range must be (low, high), two numbers, got {value!r}.") from None
    if not (math.isfinite(low) and math.isfinite(high) and low < high):
        raise ValueError(f"value_range must be finite with low < high, got {value!r}.")
    return low, high


def _prepare(images, magnitude, signed):
    images = tf.convert_to_tensor(images)
    if images.shape.rank != 4 or images.shape[-1] not in (1, 3):
        raise ValueError(
            "Image ops take a batch of shape (batch, height, width, channels) "
            f"with 1 or 3 channels, got shape {images.shape}."
        )
    if not images.dtype.is_floating:
        images = tf.cast(images, "float32")
    magnitude = tf.cast(magnitude, images.dtype)
    if magnitude.shape.rank not in (0, 1):
        raise ValueError(
            f"magnitude must be a scalar or one value per image, got shape {magnitude.shape}."
        )
    magnitude = tf.clip_by_value(magnitude, -1.0 if signed else 0.0, 1.0)
    return images, tf.broadcast_to(magnitude, tf.shape(images)[:1])


def _per_image(values):
    return values[:, None, None, None]


def _size(images, axis):
    return tf.cast(tf.shape(images)[axis], images.dtype)


def _warp(images, fill_value, **motion):
    return warp.affine_warp(images, warp.affine_matrix(**motion), fill_value=fill_value)


def shear_x(images, magnitude, max_shear=0.3, fill_value=0.0):
    """Shear horizontally: a pixel at height `y` from the centre moves `s * y` right.

    Range: shear factor `s = magnitude * max_shear` in `[-0.3, 0.3]` by
    default (AutoAugment's). Signed, differentiable.

    Args:
        images: `(batch, height, width, channels)` floats in `[0, 1]`.
        magnitude: scalar or `(batch,)` in `[-1, 1]`.
        max_shear: shear factor at magnitude 1.
        fill_value: value of pixels sheared in from outside.

    Returns:
        The sheared images.

    Example:
    ```python
    sheared = kd_keras.augment.ops.shear_x(images, 0.5)
    ```
    """
    images, magnitude = _prepare(images, magnitude, signed=True)
    return _warp(images, fill_value, **_shear_x_motion(images, magnitude, max_shear))


def _shear_x_motion(images, magnitude, max_shear=0.3):
    return {"shear_x": magnitude * max_shear}


def shear_y(images, magnitude, max_shear=0.3, fill_value=0.0):
    """Shear vertically: a pixel at `x` from the centre moves `s * x` down.

    Range: shear factor `s = magnitude * max_shear` in `[-0.3, 0.3]` by
    default. Signed, differentiable.

    Args:
        images: `(batch, height, width, channels)` floats in `[0, 1]`.
        magnitude: scalar or `(batch,)` in `[-1, 1]`.
        max_shear: shear factor at magnitude 1.
        fill_value: value of pixels sheared in from outside.

    Returns:
        The sheared images.

    Example:
    ```python
    sheared = kd_keras.augment.ops.shear_y(images, -0.5)
    ```
    """
    images, magnitude = _prepare(images, magnitude, signed=True)
    return _warp(images, fill_value, **_shear_y_motion(images, magnitude, max_shear))


def _shear_y_motion(images, magnitude, max_shear=0.3):
    return {"shear_y": magnitude * max_shear}


def translate_x(images, magnitude, max_translation=0.45, fill_value=0.0):
    """Translate right by `magnitude * max_translation * width` pixels.

    Range: up to 45% of the width by default (AutoAugment's 150 px of 331;
    PBA uses 10 px of 32, about 0.31). Signed (negative moves left),
    differentiable; whole-pixel shifts are exact.

    Args:
        images: `(batch, height, width, channels)` floats in `[0, 1]`.
        magnitude: scalar or `(batch,)` in `[-1, 1]`.
        max_translation: translation at magnitude 1, as a fraction of the width.
        fill_value: value of pixels moved in from outside.

    Returns:
        The translated images.

    Example:
    ```python
    shifted = kd_keras.augment.ops.translate_x(images, 0.2)
    ```
    """
    images, magnitude = _prepare(images, magnitude, signed=True)
    return _warp(images, fill_value, **_translate_x_motion(images, magnitude, max_translation))


def _translate_x_motion(images, magnitude, max_translation=0.45):
    return {"translate_x": magnitude * max_translation * _size(images, 2)}


def translate_y(images, magnitude, max_translation=0.45, fill_value=0.0):
    """Translate down by `magnitude * max_translation * height` pixels.

    Range: up to 45% of the height by default. Signed (negative moves up),
    differentiable; whole-pixel shifts are exact.

    Args:
        images: `(batch, height, width, channels)` floats in `[0, 1]`.
        magnitude: scalar or `(batch,)` in `[-1, 1]`.
        max_translation: translation at magnitude 1, as a fraction of the height.
        fill_value: value of pixels moved in from outside.

    Returns:
        The translated images.

    Example:
    ```python
    shifted = kd_keras.augment.ops.translate_y(images, -0.2)
    ```
    """
    images, magnitude = _prepare(images, magnitude, signed=True)
    return _warp(images, fill_value, **_translate_y_motion(images, magnitude, max_translation))


def _translate_y_motion(images, magnitude, max_translation=0.45):
    return {"translate_y": magnitude * max_translation * _size(images, 1)}


def rotate(images, magnitude, max_degrees=30.0, fill_value=0.0):
    """Rotate about the centre by `magnitude * max_degrees`, counter-clockwise.

    Range: `[-30, 30]` degrees by default (AutoAugment's). Signed,
    differentiable.

    Args:
        images: `(batch, height, width, channels)` floats in `[0, 1]`.
        magnitude: scalar or `(batch,)` in `[-1, 1]`.
        max_degrees: angle at magnitude 1, in degrees.
        fill_value: value of pixels rotated in from outside.

    Returns:
        The rotated images.

    Example:
    ```python
    rotated = kd_keras.augment.ops.rotate(images, 1.0)  # 30 degrees
    ```
    """
    images, magnitude = _prepare(images, magnitude, signed=True)
    return _warp(images, fill_value, **_rotate_motion(images, magnitude, max_degrees))


def _rotate_motion(images, magnitude, max_degrees=30.0):
    return {"rotation": magnitude * (max_degrees * math.pi / 180.0)}


def _enhance(images, magnitude, max_change, degenerate):
    # PIL's ImageEnhance: blend(degenerate, image, factor) with factor
    # 1 + change, written as x + change * (x - d) so that a change of 0 gives
    # x exactly.
    change = _per_image(magnitude * max_change)
    return tf.clip_by_value(images + change * (images - degenerate), 0.0, 1.0)


def _luminance(images):
    if images.shape[-1] == 1:
        return images
    weights = tf.constant(_LUMA, images.dtype)
    return tf.reduce_sum(images * weights, axis=-1, keepdims=True)


def brightness(images, magnitude, max_change=0.9):
    """Scale intensities by `1 + magnitude * max_change` (PIL's Brightness), clipped.

    Range: factor `[0.1, 1.9]` by default (AutoAugment's). Signed,
    differentiable (except where clipped).

    Args:
        images: `(batch, height, width, channels)` floats in `[0, 1]`.
        magnitude: scalar or `(batch,)` in `[-1, 1]`.
        max_change: factor change at magnitude 1.

    Returns:
        The adjusted images.

    Example:
    ```python
    darker = kd_keras.augment.ops.brightness(images, -0.5)
    ```
    """
    images, magnitude = _prepare(images, magnitude, signed=True)
    return _enhance(images, magnitude, max_change, tf.zeros_like(images))


def color(images, magnitude, max_change=0.9):
    """Adjust saturation by `1 + magnitude * max_change` (PIL's Color), clipped.

    Blends each pixel with its grey level (PIL's luma). Range: factor
    `[0.1, 1.9]` by default. Signed, differentiable. Single-channel images
    have no colour: for them this is the identity (and has no gradient).

    Args:
        images: `(batch, height, width, channels)` floats in `[0, 1]`.
        magnitude: scalar or `(batch,)` in `[-1, 1]`.
        max_change: factor change at magnitude 1.

    Returns:
        The adjusted images.

    Example:
    ```python
    greyer = kd_keras.augment.ops.color(rgb_images, -0.8)
    ```
    """
    images, magnitude = _prepare(images, magnitude, signed=True)
    if images.shape[-1] == 1:
        return images
    return _enhance(images, magnitude, max_change, _luminance(images))


def contrast(images, magnitude, max_change=0.9):
    """Scale contrast by `1 + magnitude * max_change` around each image's mean grey level.

    PIL's Contrast: blends with a constant image at the mean luma (PIL rounds
    that mean to a whole 8-bit level; here it is exact). Range: factor
    `[0.1, 1.9]` by default. Signed, differentiable.

    Args:
        images: `(batch, height, width, channels)` floats in `[0, 1]`.
        magnitude: scalar or `(batch,)` in `[-1, 1]`.
        max_change: factor change at magnitude 1.

    Returns:
        The adjusted images.

    Example:
    ```python
    flatter = kd_keras.augment.ops.contrast(images, -0.5)
    ```
    """
    images, magnitude = _prepare(images, magnitude, signed=True)
    mean = tf.reduce_mean(_luminance(images), axis=[1, 2, 3], keepdims=True)
    return _enhance(images, magnitude, max_change, mean)


def sharpness(images, magnitude, max_change=0.9):
    """Sharpen (or blur) by `1 + magnitude * max_change` (PIL's Sharpness).

    Blends with PIL's SMOOTH-filtered image (3x3 kernel, centre weight 5,
    border pixels kept). Range: factor `[0.1, 1.9]` by default (below 1
    blurs). Signed, differentiable. Images under 3 pixels on a side (one-row
    signals) have only border pixels and come back unchanged.

    Args:
        images: `(batch, height, width, channels)` floats in `[0, 1]`.
        magnitude: scalar or `(batch,)` in `[-1, 1]`.
        max_change: factor change at magnitude 1.

    Returns:
        The adjusted images.

    Example:
    ```python
    sharper = kd_keras.augment.ops.sharpness(images, 0.5)
    ```
    """
    images, magnitude = _prepare(images, magnitude, signed=True)
    channels = images.shape[-1]
    kernel = tf.constant(_SMOOTH, images.dtype) / 13.0
    kernel = tf.tile(kernel[:, :, None, None], [1, 1, channels, 1])
    # SAME, not VALID plus padding: the interior is the same and the border
    # is replaced below, and TF returns a VALID convolution of an empty batch
    # (a PBA op group no image chose) with the input's spatial size.
    smooth = tf.nn.depthwise_conv2d(images, kernel, [1, 1, 1, 1], "SAME")
    # Border pixels are kept: an image under 3 pixels on a side (a one-row
    # signal) has no interior, and Sharpness leaves it unchanged, as PIL does.
    height, width = tf.shape(images)[1], tf.shape(images)[2]
    rows, cols = tf.range(height), tf.range(width)
    inner_rows = (rows > 0) & (rows < height - 1)
    inner_cols = (cols > 0) & (cols < width - 1)
    interior = inner_rows[None, :, None, None] & inner_cols[None, None, :, None]
    degenerate = tf.where(interior, smooth, images)
    return _enhance(images, magnitude, max_change, degenerate)


def _posterize(images, dropped_bits):
    step = _per_image(tf.pow(tf.constant(2.0, images.dtype), dropped_bits))
    levels = tf.round(images * 255.0)
    quantised = tf.floor(levels / step) * step / 255.0
    return tf.where(_per_image(dropped_bits) > 0, quantised, images)


def posterize(images, magnitude, max_bits=4):
    """Keep `8 - round(magnitude * max_bits)` of each 8-bit intensity's bits (PIL's Posterize).

    Range: 8 bits (identity) to 4 bits by default (AutoAugment's range).
    Images are read as 8-bit levels `round(255 x)`; at 0 dropped bits they
    are returned untouched. Learnable by a straight-through estimate: the
    forward pass is the exact op; the backward pass differentiates the linear
    interpolation between the two neighbouring whole numbers of dropped bits,
    so d/d(magnitude) is `max_bits * (P(k + 1) - P(k))`.

    Args:
        images: `(batch, height, width, channels)` floats in `[0, 1]`.
        magnitude: scalar or `(batch,)` in `[0, 1]`.
        max_bits: bits dropped at magnitude 1 (1 to 8).

    Returns:
        The posterized images.

    Example:
    ```python
    four_bit = kd_keras.augment.ops.posterize(images, 1.0)
    ```
    """
    if not 1 <= int(max_bits) <= 8:
        raise ValueError(f"max_bits must be in 1..8, got {max_bits}.")
    images, magnitude = _prepare(images, magnitude, signed=False)
    bits = magnitude * float(max_bits)
    hard = _posterize(images, tf.round(bits))
    low = tf.minimum(tf.floor(bits), float(max_bits) - 1.0)
    fraction = _per_image(bits - low)
    relaxed = (1.0 - fraction) * _posterize(images, low) + fraction * _posterize(images, low + 1.0)
    # Forward: exactly `hard`; backward: the gradient of `relaxed`.
    return hard + (relaxed - tf.stop_gradient(relaxed))


def solarize(images, magnitude, smoothness=SOLARIZE_SMOOTHNESS):
    """Invert the pixels at or above a threshold (PIL's Solarize).

    A pixel is inverted (`x -> 1 - x`) when its 8-bit level `round(255 x)`
    is at least `256 * (1 - magnitude)`, PIL's threshold: at magnitude 0 no
    pixel is, at 1 every pixel is (then it equals Invert). Learnable by a
    straight-through estimate: the forward pass is the exact op, the
    backward pass replaces the step by
    `sigmoid((x - threshold / 255) / smoothness)`.

    Args:
        images: `(batch, height, width, channels)` floats in `[0, 1]`.
        magnitude: scalar or `(batch,)` in `[0, 1]`.
        smoothness: width of the sigmoid of the backward pass, in `[0, 1]`
            intensity units.

    Returns:
        The solarized images.

    Example:
    ```python
    solarized = kd_keras.augment.ops.solarize(images, 0.5)
    ```
    """
    images, magnitude = _prepare(images, magnitude, signed=False)
    threshold = _per_image(256.0 * (1.0 - magnitude))
    inverted = 1.0 - images
    # Compared as 8-bit levels: 192 / 255 * 255 is not 192 in float32.
    hard = tf.where(tf.round(images * 255.0) >= threshold, inverted, images)
    gate = tf.sigmoid((images - threshold / 255.0) / smoothness)
    relaxed = images + gate * (inverted - images)
    return hard + (relaxed - tf.stop_gradient(relaxed))


def equalize(images, magnitude=None):
    """Equalize each channel's histogram of 8-bit levels (PIL's / AutoAugment's Equalize).

    The lookup table is AutoAugment's (TensorFlow TPU implementation, as
    torchvision's): `step = (pixels - count of the top level) // 255`,
    `lut[v] = (step // 2 + count below v) // step`; a channel with a single
    level (`step == 0`) is returned untouched. Has no magnitude (ignored)
    and no gradient.

    Args:
        images: `(batch, height, width, channels)` floats in `[0, 1]`.
        magnitude: ignored.

    Returns:
        The equalized images (multiples of 1/255 where changed).

    Example:
    ```python
    equalized = kd_keras.augment.ops.equalize(images)
    ```
    """
    images, _ = _prepare(images, 0.0, signed=False)
    shape = tf.shape(images)
    batch, channels = shape[0], shape[3]
    rows = batch * channels
    # One row per image channel: (batch * channels, pixels).
    original = tf.reshape(tf.transpose(images, [0, 3, 1, 2]), [rows, -1])
    flat = tf.cast(tf.round(tf.clip_by_value(original, 0.0, 1.0) * 255.0), "int32")
    # Histograms by a segment sum: XLA-safe, and no (pixels x 256) one-hot.
    segments = flat + 256 * tf.range(rows)[:, None]
    histogram = tf.math.unsorted_segment_sum(tf.ones_like(flat), segments, rows * 256)
    histogram = tf.reshape(histogram, [rows, 256])
    top = tf.gather(histogram, tf.reduce_max(flat, axis=1), batch_dims=1)
    step = (tf.shape(flat)[1] - top) // 255
    safe_step = tf.maximum(step, 1)[:, None]
    cumulative = tf.cumsum(histogram, axis=1, exclusive=True)
    lut = tf.minimum((cumulative + safe_step // 2) // safe_step, 255)
    equalized = tf.cast(tf.gather(lut, flat, batch_dims=1), images.dtype) / 255.0
    equalized = tf.where(step[:, None] > 0, equalized, original)
    equalized = tf.reshape(equalized, [batch, channels, shape[1], shape[2]])
    return tf.transpose(equalized, [0, 2, 3, 1])


def invert(images, magnitude=None):
    """Return `1 - x` (PIL's Invert). Has no magnitude (ignored).

    Args:
        images: `(batch, height, width, channels)` floats in `[0, 1]`.
        magnitude: ignored.

    Returns:
        The inverted images.

    Example:
    ```python
    negative = kd_keras.augment.ops.invert(images)
    ```
    """
    images, _ = _prepare(images, 0.0, signed=False)
    return 1.0 - images


def auto_contrast(images, magnitude=None):
    """Stretch each channel to the full `[0, 1]` range (PIL's AutoContrast, no cutoff).

    `(x - min) / (max - min)` per image and channel; a constant channel is
    returned untouched. Has no magnitude (ignored) and no gradient to one.

    Args:
        images: `(batch, height, width, channels)` floats in `[0, 1]`.
        magnitude: ignored.

    Returns:
        The stretched images.

    Example:
    ```python
    stretched = kd_keras.augment.ops.auto_contrast(images)
    ```
    """
    images, _ = _prepare(images, 0.0, signed=False)
    low = tf.reduce_min(images, axis=[1, 2], keepdims=True)
    high = tf.reduce_max(images, axis=[1, 2], keepdims=True)
    spread = high - low
    stretched = (images - low) / tf.where(spread > 0, spread, 1.0)
    return tf.where(spread > 0, tf.clip_by_value(stretched, 0.0, 1.0), images)


def cutout(images, magnitude, max_size=0.625, fill_value=0.0, seed=None):
    """Fill a square of side `magnitude * max_size * min(height, width)` at a random place.

    The square's centre is a uniformly random pixel per image and the square
    is clipped at the borders (AutoAugment's Cutout). Range: side up to 62.5%
    of the shorter side by default (AutoAugment's and PBA's 20 px of 32).
    No gradient to the magnitude: TST does not learn it.

    Args:
        images: `(batch, height, width, channels)` floats in `[0, 1]`.
        magnitude: scalar or `(batch,)` in `[0, 1]`.
        max_size: side at magnitude 1, as a fraction of the shorter side.
        fill_value: value of the square's pixels.
        seed: an int, a `keras.random.SeedGenerator` or `None`.

    Returns:
        The images with one square each filled.

    Example:
    ```python
    holes = kd_keras.augment.ops.cutout(images, 0.5, seed=0)
    ```
    """
    images, magnitude = _prepare(images, magnitude, signed=False)
    centres = keras.random.uniform((tf.shape(images)[0], 2), dtype=images.dtype, seed=seed)
    return _cutout_at(images, magnitude, centres, max_size, fill_value)


def cutout_at(images, magnitude, centres, max_size=0.625, fill_value=0.0):
    """`cutout` with the squares' centres given: draw them elsewhere, e.g. per image.

    Image `i`'s square is centred on pixel row `floor(centres[i, 0] *
    height)`, column `floor(centres[i, 1] * width)`; `cutout` is this with
    `centres` drawn by `keras.random.uniform` from its seed.

    Args:
        images: `(batch, height, width, channels)` floats in `[0, 1]`.
        magnitude: scalar or `(batch,)` in `[0, 1]`.
        centres: `(batch, 2)` floats in `[0, 1)`, cast to the images' dtype.
        max_size: side at magnitude 1, as a fraction of the shorter side.
        fill_value: value of the square's pixels.

    Returns:
        The images with one square each filled.

    Example:
    ```python
    holes = kd_keras.augment.ops.cutout_at(images, 0.5, tf.fill([batch, 2], 0.5))
    ```
    """
    images, magnitude = _prepare(images, magnitude, signed=False)
    return _cutout_at(images, magnitude, tf.cast(centres, images.dtype), max_size, fill_value)


def _cutout_at(images, magnitude, centres, max_size, fill_value):
    height, width = _size(images, 1), _size(images, 2)
    side = _per_image(magnitude * max_size * tf.minimum(height, width))
    centre_y = _per_image(tf.floor(centres[:, 0] * height))
    centre_x = _per_image(tf.floor(centres[:, 1] * width))
    rows = tf.cast(tf.range(tf.shape(images)[1]), images.dtype)[None, :, None, None]
    cols = tf.cast(tf.range(tf.shape(images)[2]), images.dtype)[None, None, :, None]
    inside = (
        (rows >= centre_y - side / 2)
        & (rows < centre_y + side / 2)
        & (cols >= centre_x - side / 2)
        & (cols < centre_x + side / 2)
    )
    return tf.where(inside, tf.cast(fill_value, images.dtype), images)


def tst_cutout(images, per_image=False, seed=None):
    """TST's official Cutout: a box of half to all of each side, filled with the batch mean.

    The official code (shaoshitong/TST, `datas/Augmention.py`, `Cutout(32)`
    on CIFAR, `Cutout(224)` on ImageNet: the size is the image side) draws a
    centre pixel `c` uniformly on each axis and zeroes `[max(0, c - S//2),
    min(S, c + S//2))` of every image of the batch: one box per batch whose
    extent on each axis is `S//2 .. S` pixels (16..32 of 32), its two sides
    independent. It zeroes normalised images, so in pixel space the box holds
    the dataset's channel mean; here, on `[0, 1]` images, it holds the
    batch's channel mean (over images and pixels), the estimate available
    inside a step. On other sizes each axis uses its own length (4..8 px on
    8x8 digits); an axis of length 1 (one-row signals shaped
    `(1, length, channels)`) is spanned whole, so the box cuts a segment of
    half to all of the row, where the official rule would give an empty box.

    Args:
        images: `(batch, height, width, channels)` floats in `[0, 1]`.
        per_image: False (official) draws one box for the batch; True one
            box per image.
        seed: an int, a `keras.random.SeedGenerator` or `None`.

    Returns:
        The images with the box filled with the batch's channel mean.

    Example:
    ```python
    holes = kd_keras.augment.ops.tst_cutout(images, seed=0)
    ```
    """
    images, _ = _prepare(images, 0.0, signed=False)
    draws = tf.shape(images)[0] if per_image else 1
    centres = keras.random.uniform((draws, 2), dtype=images.dtype, seed=seed)
    return _tst_cutout_at(images, centres)


def tst_cutout_at(images, centres):
    """`tst_cutout` with the box centres given: `(1, 2)` for the batch or `(batch, 2)`.

    The box is centred on pixel row `floor(centres[:, 0] * height)`, column
    `floor(centres[:, 1] * width)`; `tst_cutout` is this with `centres`
    drawn by `keras.random.uniform` from its seed.

    Args:
        images: `(batch, height, width, channels)` floats in `[0, 1]`.
        centres: `(1, 2)` (one box for the batch) or `(batch, 2)` floats in
            `[0, 1)`.

    Returns:
        The images with the box filled with the batch's channel mean.

    Example:
    ```python
    holes = kd_keras.augment.ops.tst_cutout_at(images, tf.fill([1, 2], 0.5))
    ```
    """
    images, _ = _prepare(images, 0.0, signed=False)
    return _tst_cutout_at(images, tf.cast(centres, images.dtype))


def _tst_span(length, size, centres):
    """`(draws, length)` masks of `[max(0, c - size//2), min(size, c + size//2))`."""
    index = tf.cast(tf.range(length), centres.dtype)[None, :]
    if isinstance(length, int) and length == 1:
        # The official half-extent 1 // 2 = 0 would cut nothing.
        return tf.ones_like(centres[:, None] * index, dtype=tf.bool)
    centre = tf.minimum(tf.floor(centres * size), size - 1.0)[:, None]
    half = tf.floor(size / 2.0)
    return (index >= centre - half) & (index < centre + half)


def _tst_cutout_at(images, centres):
    height, width = _size(images, 1), _size(images, 2)
    rows = _tst_span(images.shape[1] or tf.shape(images)[1], height, centres[:, 0])
    cols = _tst_span(images.shape[2] or tf.shape(images)[2], width, centres[:, 1])
    inside = rows[:, :, None, None] & cols[:, None, :, None]
    # A constant fill, as the official zero of normalised images is: no
    # gradient reaches the images through it.
    mean = tf.stop_gradient(tf.reduce_mean(images, axis=[0, 1, 2], keepdims=True))
    return tf.where(inside, mean, images)


@dataclasses.dataclass(frozen=True)
class Op:
    """One op of the library and what a policy needs to know to call it.

    Args:
        name: AutoAugment's name, e.g. `"ShearX"`.
        function: `function(images, magnitude, **options)`.
        signed: takes magnitudes in `[-1, 1]`, the sign choosing the
            direction; a policy draws the sign at random.
        learnable: the magnitude gets a useful gradient (TST learns it).
        has_magnitude: the magnitude changes the result (False for
            Equalize, Invert and AutoContrast).
        takes_fill_value: `function` accepts `fill_value`.
        takes_seed: `function` is random and accepts `seed`.
        motion: for the geometric ops, `motion(images, magnitude, **options)`
            returns the `kd_keras.augment.warp.affine_matrix` arguments that
            `function` warps with (`magnitude` cast to the images' dtype and
            clipped, as `function` does; `options` those of `function` but
            `fill_value`), so that a caller can warp once for several ops;
            None for the others.
    """

    name: str
    function: Callable
    signed: bool = False
    learnable: bool = False
    has_magnitude: bool = True
    takes_fill_value: bool = False
    takes_seed: bool = False
    motion: Callable | None = None


def _geometric(name, function, motion):
    return Op(name, function, signed=True, learnable=True, takes_fill_value=True, motion=motion)


def _enhancement(name, function):
    return Op(name, function, signed=True, learnable=True)


OPS = {
    op.name: op
    for op in (
        _geometric("ShearX", shear_x, _shear_x_motion),
        _geometric("ShearY", shear_y, _shear_y_motion),
        _geometric("TranslateX", translate_x, _translate_x_motion),
        _geometric("TranslateY", translate_y, _translate_y_motion),
        _geometric("Rotate", rotate, _rotate_motion),
        _enhancement("Brightness", brightness),
        _enhancement("Color", color),
        _enhancement("Contrast", contrast),
        _enhancement("Sharpness", sharpness),
        Op("Posterize", posterize, learnable=True),
        Op("Solarize", solarize, learnable=True),
        Op("Equalize", equalize, has_magnitude=False),
        Op("Invert", invert, has_magnitude=False),
        Op("AutoContrast", auto_contrast, has_magnitude=False),
        Op("Cutout", cutout, takes_fill_value=True, takes_seed=True),
    )
}

# TST's library (METHODS.md section 4): AutoAugment's ops without AutoContrast.
TST_OPS = tuple(name for name in OPS if name != "AutoContrast")


def get(name):
    """Return the `Op` record of an op name.

    Args:
        name: a key of `kd_keras.augment.ops.OPS`, e.g. `"Rotate"`.

    Returns:
        A `kd_keras.augment.ops.Op`.

    Example:
    ```python
    rotated = kd_keras.augment.ops.get("Rotate").function(images, 0.5)
    ```
    """
    if name not in OPS:
        raise ValueError(f"Unknown op {name!r}: choose from {', '.join(OPS)}.")
    return OPS[name]
