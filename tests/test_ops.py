"""The image-op library: identity at zero, range, gradients, XLA, batching, PIL references."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image
from PIL import ImageEnhance
from PIL import ImageOps

from kd_keras.augment import ops
from kd_keras.augment import warp

NAMES = list(ops.OPS)
LEARNABLE = [name for name in NAMES if ops.OPS[name].learnable]
MAGNITUDE_FREE = [name for name in NAMES if not ops.OPS[name].has_magnitude]


def _images(channels=3, count=4, seed=0, height=10, width=12):
    """Smooth random images on the 8-bit grid (so PIL sees the same pixels)."""
    rng = np.random.default_rng(seed)
    coarse = rng.random((count, height // 2 + 1, width // 2 + 1, channels))
    fine = np.repeat(np.repeat(coarse, 2, axis=1), 2, axis=2)[:, :height, :width]
    noisy = 0.8 * fine + 0.2 * rng.random((count, height, width, channels))
    return (np.round(noisy * 255.0) / 255.0).astype("float32")


def _call(name, images, magnitude, seed=3):
    op = ops.OPS[name]
    options = {"seed": seed} if op.takes_seed else {}
    return op.function(images, magnitude, **options)


def _magnitudes(name, count):
    values = np.linspace(0.2, 1.0, count).astype("float32")
    if ops.OPS[name].signed:
        values[::2] *= -1.0
    return values


def _pil(images, function):
    out = []
    for image in images:
        pixels = np.round(image * 255.0).astype("uint8")
        mode = "L" if pixels.shape[-1] == 1 else "RGB"
        result = function(Image.fromarray(pixels.squeeze(-1) if mode == "L" else pixels, mode))
        out.append(np.asarray(result, dtype="float32").reshape(image.shape) / 255.0)
    return np.stack(out)


def test_library_lists_autoaugment_ops():
    assert set(ops.TST_OPS) == set(NAMES) - {"AutoContrast"}
    assert len(NAMES) == 15
    assert set(MAGNITUDE_FREE) == {"Equalize", "Invert", "AutoContrast"}
    assert not ops.OPS["Cutout"].learnable
    with pytest.raises(ValueError, match="Unknown op"):
        ops.get("Flip")


@pytest.mark.parametrize("name", [n for n in NAMES if n not in MAGNITUDE_FREE])
@pytest.mark.parametrize("channels", [1, 3])
def test_identity_at_zero_magnitude(name, channels):
    images = _images(channels)
    np.testing.assert_array_equal(_call(name, images, 0.0).numpy(), images)
    per_image = np.zeros(len(images), "float32")
    np.testing.assert_array_equal(_call(name, images, per_image).numpy(), images)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("channels", [1, 3])
def test_range_and_shape_preserved(name, channels):
    images = _images(channels)
    for magnitude in (_magnitudes(name, len(images)), 1.0, -1.0):
        out = _call(name, images, magnitude).numpy()
        assert out.shape == images.shape and out.dtype == np.float32
        assert out.min() >= 0.0 and out.max() <= 1.0, (name, magnitude)


@pytest.mark.parametrize("name", NAMES)
def test_empty_batch_gives_an_empty_batch(name):
    # PBA runs each op on the group of images that chose it, often none.
    images = _images(3)[:0]
    out = _call(name, images, tf.zeros([0])).numpy()
    assert out.shape == images.shape


@pytest.mark.parametrize("name", LEARNABLE)
def test_gradient_with_respect_to_magnitude(name):
    images = tf.constant(_images(3))
    weights = tf.constant(np.random.default_rng(1).random(images.shape), "float32")
    magnitude = tf.Variable(0.3)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(_call(name, images, magnitude) * weights)
    gradient = tape.gradient(loss, magnitude)
    assert gradient is not None, name
    assert np.isfinite(gradient.numpy()) and abs(float(gradient)) > 1e-4, (name, gradient)


@pytest.mark.parametrize("name", NAMES)
def test_compiles_under_xla_with_per_sample_magnitudes(name):
    images = tf.constant(_images(3))
    magnitudes = tf.constant(_magnitudes(name, 4))
    op = ops.OPS[name]

    @tf.function(jit_compile=True)
    def apply(x, m):
        options = {"seed": 3} if op.takes_seed else {}
        return op.function(x, m, **options)

    out = apply(images, magnitudes).numpy()
    assert out.shape == images.shape and np.isfinite(out).all()
    if not op.takes_seed:
        np.testing.assert_allclose(out, _call(name, images, magnitudes).numpy(), atol=1e-5)


@pytest.mark.parametrize("name", [n for n in NAMES if not ops.OPS[n].takes_seed])
def test_per_sample_magnitudes_apply_per_image(name):
    images = _images(3)
    magnitudes = _magnitudes(name, len(images))
    batched = _call(name, images, magnitudes).numpy()
    for index in range(len(images)):
        alone = _call(name, images[index : index + 1], magnitudes[index]).numpy()
        np.testing.assert_allclose(batched[index : index + 1], alone, atol=1e-6)


def test_invert_and_auto_contrast_values():
    images = _images(3)
    np.testing.assert_array_equal(ops.invert(images).numpy(), 1.0 - images)
    low = images.min(axis=(1, 2), keepdims=True)
    high = images.max(axis=(1, 2), keepdims=True)
    np.testing.assert_allclose(
        ops.auto_contrast(images).numpy(), (images - low) / (high - low), atol=1e-6
    )
    flat = np.full((1, 4, 4, 1), 0.3, "float32")
    np.testing.assert_array_equal(ops.auto_contrast(flat).numpy(), flat)
    # PIL truncates its lookup table to whole levels.
    np.testing.assert_allclose(
        ops.auto_contrast(images).numpy(), _pil(images, ImageOps.autocontrast), atol=1.01 / 255
    )


def test_solarize_threshold():
    images = _images(1)
    out = ops.solarize(images, 0.25).numpy()  # PIL threshold 192
    level = np.round(images * 255.0)
    np.testing.assert_allclose(out, np.where(level >= 192, 1.0 - images, images), atol=1e-7)
    np.testing.assert_allclose(
        out, _pil(images, lambda image: ImageOps.solarize(image, 192)), atol=1e-6
    )
    np.testing.assert_allclose(ops.solarize(images, 1.0).numpy(), 1.0 - images, atol=1e-7)


@pytest.mark.parametrize("magnitude, bits", [(0.25, 7), (0.5, 6), (1.0, 4)])
def test_posterize_bits(magnitude, bits):
    images = _images(3)
    level = np.round(images * 255.0).astype("uint8")
    expected = (level & np.uint8((0xFF << (8 - bits)) & 0xFF)).astype("float32") / 255.0
    np.testing.assert_allclose(ops.posterize(images, magnitude).numpy(), expected, atol=1e-6)
    np.testing.assert_allclose(
        expected, _pil(images, lambda image: ImageOps.posterize(image, bits)), atol=1e-6
    )


def test_posterize_straight_through_gradient():
    images = tf.constant(_images(1))
    magnitude = tf.Variable(0.3)  # 1.2 dropped bits: 1 in the forward pass
    with tf.GradientTape() as tape:
        out = ops.posterize(images, magnitude)
        total = tf.reduce_sum(out)
    np.testing.assert_allclose(out.numpy(), ops.posterize(images, 0.25).numpy())
    gradient = tape.gradient(total, magnitude).numpy()
    one, two = ops.posterize(images, 0.25), ops.posterize(images, 0.5)
    np.testing.assert_allclose(gradient, 4.0 * float(tf.reduce_sum(two - one)), rtol=1e-4)


@pytest.mark.parametrize("magnitude", [0.5, -0.5])
def test_brightness_is_a_blend_with_black(magnitude):
    images = _images(3)
    factor = 1.0 + 0.9 * magnitude
    expected = np.clip(factor * images, 0.0, 1.0)
    np.testing.assert_allclose(ops.brightness(images, magnitude).numpy(), expected, atol=1e-6)
    pil = _pil(images, lambda image: ImageEnhance.Brightness(image).enhance(factor))
    np.testing.assert_allclose(expected, pil, atol=1.01 / 255)


@pytest.mark.parametrize("channels", [1, 3])
def test_contrast_scales_around_the_mean_grey_level(channels):
    images = _images(channels)
    factor = 1.0 + 0.9 * 0.6
    grey = images if channels == 1 else images @ np.array([0.299, 0.587, 0.114])[:, None]
    mean = grey.mean(axis=(1, 2, 3), keepdims=True)
    expected = np.clip(mean + factor * (images - mean), 0.0, 1.0)
    np.testing.assert_allclose(ops.contrast(images, 0.6).numpy(), expected, atol=1e-6)
    # PIL rounds the mean to a whole level: half a level, times the factor.
    pil = _pil(images, lambda image: ImageEnhance.Contrast(image).enhance(factor))
    np.testing.assert_allclose(expected, pil, atol=2.01 / 255)


def test_color_and_sharpness_match_pil():
    images = _images(3)
    for function, enhancer in (
        (ops.color, ImageEnhance.Color),
        (ops.sharpness, ImageEnhance.Sharpness),
    ):
        for magnitude in (0.7, -0.7):
            factor = 1.0 + 0.9 * magnitude
            pil = _pil(
                images,
                lambda image, enhancer=enhancer, factor=factor: enhancer(image).enhance(factor),
            )
            np.testing.assert_allclose(function(images, magnitude).numpy(), pil, atol=2.01 / 255)
    grey = _images(1)
    np.testing.assert_array_equal(ops.color(grey, 1.0).numpy(), grey)


def test_sharpness_leaves_one_row_signals_unchanged():
    # A one-row image (a 1-D signal, e.g. MNIST-1D) has only border pixels,
    # which PIL's Sharpness keeps; it used to fail building a (-1)-row mask.
    rng = np.random.default_rng(0)
    for shape in ((4, 1, 40, 1), (4, 2, 40, 1), (4, 40, 1, 1)):
        signals = rng.uniform(size=shape).astype("float32")
        np.testing.assert_array_equal(ops.sharpness(signals, 0.8).numpy(), signals)
        np.testing.assert_array_equal(ops.sharpness(signals, -0.8).numpy(), signals)
    # Three rows have an interior row, which changes.
    images = rng.uniform(size=(4, 3, 40, 1)).astype("float32")
    changed = ops.sharpness(images, 0.8).numpy() != images
    assert changed[:, 1, 1:-1].any() and not changed[:, [0, 2]].any()


@pytest.mark.parametrize("channels", [1, 3])
def test_equalize_matches_pil(channels):
    images = _images(channels, height=16, width=16)
    images[0] = 128 / 255  # a single level: untouched
    np.testing.assert_allclose(
        ops.equalize(images).numpy(), _pil(images, ImageOps.equalize), atol=1e-6
    )
    np.testing.assert_array_equal(ops.equalize(images).numpy()[0], images[0])


def test_translate_by_whole_pixels_is_a_roll_with_zero_fill():
    images = _images(1, count=2)
    width, height = images.shape[2], images.shape[1]
    moved = ops.translate_x(images, np.float32(2 / (0.45 * width))).numpy()
    expected = np.roll(images, 2, axis=2)
    expected[:, :, :2] = 0.0
    np.testing.assert_allclose(moved, expected, atol=1e-5)
    moved = ops.translate_y(images, np.float32(-3 / (0.45 * height))).numpy()
    expected = np.roll(images, -3, axis=1)
    expected[:, -3:] = 0.0
    np.testing.assert_allclose(moved, expected, atol=1e-5)


def test_rotate_by_ninety_degrees_is_rot90():
    images = _images(1, height=9, width=9)
    rotated = ops.rotate(images, 1.0, max_degrees=90.0).numpy()
    np.testing.assert_allclose(rotated, np.rot90(images, 1, axes=(1, 2)), atol=1e-5)


def test_cutout_fills_one_square_of_the_given_side():
    images = np.full((6, 20, 20, 1), 0.5, "float32")
    out = ops.cutout(images, 0.4, max_size=0.5, fill_value=1.0, seed=5).numpy()
    filled = (out == 1.0).sum(axis=(1, 2, 3))
    # Side 0.4 * 0.5 * 20 = 4 pixels, clipped at the borders.
    assert filled.max() == 16 and filled.min() >= 4
    assert set(np.unique(out)) <= {0.5, 1.0}


def test_cutout_at_puts_the_square_where_the_centres_say():
    images = np.full((3, 20, 20, 1), 0.5, "float32")
    centres = np.array([[0.0, 0.0], [0.5, 0.25], [0.999, 0.6]], "float32")
    out = ops.cutout_at(images, 0.4, centres, max_size=0.5, fill_value=1.0).numpy()[..., 0]
    # Side 4 about pixel (floor(20 c0), floor(20 c1)): rows and columns
    # [centre - 2, centre + 2), clipped at the borders.
    for image, (row, col) in zip(out, [(0, 0), (10, 5), (19, 12)]):
        expected = np.full((20, 20), 0.5, "float32")
        expected[max(row - 2, 0) : row + 2, max(col - 2, 0) : col + 2] = 1.0
        np.testing.assert_array_equal(image, expected)
    # cutout draws its centres from its seed, as keras.random.uniform does.
    drawn = ops.cutout(images, 0.4, max_size=0.5, fill_value=1.0, seed=5)
    centres = keras.random.uniform((3, 2), seed=5)
    np.testing.assert_array_equal(
        drawn, ops.cutout_at(images, 0.4, centres, max_size=0.5, fill_value=1.0)
    )


def _official_tst_cutout(images, mean, std, height_loc, width_loc, size):
    """TST's `Cutout(size)` (datas/Augmention.py) transcribed: normalise, zero the box, undo.

    `_gen_cutout_coord` with `random.randint` replaced by the given
    locations; `mask = ones_like(img)` over the whole batch, so one box for
    every image and channel.
    """
    normalised = (images - mean) / std
    h, w = normalised.shape[1:3]  # the NHWC transcription of img.shape[-2:]
    upper = (max(0, height_loc - size // 2), max(0, width_loc - size // 2))
    lower = (min(h, height_loc + size // 2), min(w, width_loc + size // 2))
    assert lower[0] - upper[0] > 0 and lower[1] - upper[1] > 0
    mask = np.ones_like(normalised)
    mask[:, upper[0] : lower[0], upper[1] : lower[1], :] = 0
    return (normalised * mask) * std + mean


@pytest.mark.parametrize("side", [32, 8])
def test_tst_cutout_is_the_official_cutout_at_every_centre(side):
    # On CIFAR the official Cutout(32) takes the image side; with the batch's
    # channel mean as the normalisation mean, zeroing the normalised box is
    # filling it with that mean, and every centre gives the same pixels.
    images = _images(3, count=3, height=side, width=side)
    mean = images.mean(axis=(0, 1, 2))
    std = np.array([0.27, 0.26, 0.28], "float32")
    extents = set()
    for height_loc in range(side):
        for width_loc in range(0, side, 3):
            centres = np.array([[(height_loc + 0.5) / side, (width_loc + 0.5) / side]])
            out = ops.tst_cutout_at(images, centres).numpy()
            expected = _official_tst_cutout(images, mean, std, height_loc, width_loc, side)
            np.testing.assert_allclose(out, expected, atol=1e-6)
            extents.add(int((out != images).all(axis=(0, 3)).any(axis=1).sum()))
    # Rows cut: side/2 (a centre on the border) up to the whole side.
    assert extents == set(range(side // 2, side + 1))


def test_tst_cutout_draws_one_box_per_batch_of_half_to_all_of_each_side():
    images = _images(3, count=5, height=32, width=32)
    mean = images.mean(axis=(0, 1, 2))
    sides = []
    for seed in range(40):
        out = ops.tst_cutout(images, seed=seed).numpy()
        cut = (out != images).any(axis=3)
        # One box: the same pixels of every image, a rectangle of the mean.
        assert (cut == cut[0]).all()
        rows, cols = np.nonzero(cut[0].any(axis=1))[0], np.nonzero(cut[0].any(axis=0))[0]
        assert cut[0].sum() == len(rows) * len(cols)
        assert np.ptp(rows) == len(rows) - 1 and np.ptp(cols) == len(cols) - 1
        np.testing.assert_allclose(out[cut], np.broadcast_to(mean, out.shape)[cut], atol=1e-6)
        sides += [len(rows), len(cols)]
    assert min(sides) >= 16 and max(sides) <= 32 and len(set(sides)) > 5
    # per_image: a box for each image.
    out = ops.tst_cutout(images, per_image=True, seed=0).numpy()
    cut = (out != images).any(axis=3)
    assert len({c.tobytes() for c in cut}) > 1


def test_tst_cutout_on_one_row_cuts_half_to_all_of_the_row():
    signals = np.random.default_rng(0).random((4, 1, 40, 1)).astype("float32")
    lengths = set()
    for seed in range(30):
        cut = (ops.tst_cutout(signals, per_image=True, seed=seed).numpy() != signals)[:, 0, :, 0]
        for row in cut:
            where = np.nonzero(row)[0]
            assert len(where) == np.ptp(where) + 1  # one segment
            lengths.add(len(where))
    assert min(lengths) >= 20 and max(lengths) <= 40


def test_tst_cutout_compiles_under_xla_and_passes_gradients_outside_the_box():
    images = tf.constant(_images(3, count=4, height=8, width=8))

    @tf.function(jit_compile=True)
    def apply(x):
        return ops.tst_cutout_at(x, tf.constant([[0.3, 0.6]]))

    eager = ops.tst_cutout_at(images, tf.constant([[0.3, 0.6]]))
    np.testing.assert_allclose(apply(images).numpy(), eager.numpy(), atol=1e-6)
    assert np.isfinite(
        tf.function(lambda x: ops.tst_cutout(x, seed=2), jit_compile=True)(images).numpy()
    ).all()
    with tf.GradientTape() as tape:
        tape.watch(images)
        out = ops.tst_cutout_at(images, tf.constant([[0.3, 0.6]]))
        loss = tf.reduce_sum(out)
    gradient = tape.gradient(loss, images).numpy()
    # As the official image * mask: 1 outside the box, 0 inside (constant fill).
    np.testing.assert_array_equal(gradient, (out.numpy() == images.numpy()).astype("float32"))


@pytest.mark.parametrize("name", [n for n in NAMES if ops.OPS[n].motion is not None])
def test_motion_is_the_warp_the_geometric_op_makes(name):
    # `motion` lets a caller warp once for several ops (PBA): the matrix it
    # gives must warp exactly as the op itself does.
    images = _images(3, count=6)
    magnitudes = _magnitudes(name, 6)
    options = {"fill_value": 0.25}
    expected = ops.OPS[name].function(images, magnitudes, **options)
    arguments = ops.OPS[name].motion(tf.constant(images), tf.constant(magnitudes))
    warped = warp.affine_warp(images, warp.affine_matrix(**arguments), **options)
    np.testing.assert_array_equal(warped, expected)
    assert np.any(warped != images)


def test_only_the_geometric_ops_have_a_motion():
    geometric = {"ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate"}
    assert {name for name in NAMES if ops.OPS[name].motion is not None} == geometric
