"""The differentiable affine warp: exact identity, conventions, gradients, XLA."""

import math

import numpy as np
import pytest
import tensorflow as tf

from kd_keras.augment import warp


def _images(shape, seed=0, dtype="float32"):
    return np.random.default_rng(seed).random(shape).astype(dtype)


def _smooth_images(batch, size, channels, dtype="float64"):
    # Smooth content keeps finite differences away from bilinear kinks
    # mattering much and exercises every pixel.
    rows, cols = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
    images = np.zeros((batch, size, size, channels), dtype)
    for b in range(batch):
        for c in range(channels):
            phase = 0.7 * b + 1.3 * c
            images[b, :, :, c] = np.sin(0.5 * rows + phase) * np.cos(0.35 * cols - phase) + np.exp(
                -((rows - 5.5) ** 2 + (cols - 6.0) ** 2) / 10.0
            )
    return images


@pytest.mark.parametrize("interpolation", ["bilinear", "nearest"])
def test_identity_is_exact(interpolation):
    images = _images((3, 7, 9, 2))
    for matrices in (
        warp.affine_matrix(),
        np.eye(3, dtype="float32"),
        np.tile(np.eye(3, dtype="float32")[:2][None], (3, 1, 1)),
        warp.affine_matrix(rotation=tf.zeros([3]), scale=tf.ones([3])),
    ):
        out = warp.affine_warp(images, matrices, interpolation=interpolation)
        np.testing.assert_array_equal(out.numpy(), images)


def test_whole_pixel_translation_matches_roll_with_fill():
    images = _images((3, 8, 10, 2), seed=1)
    shifts = [(2, -1), (-3, 0), (0, 4)]  # (right, down) in pixels
    matrices = warp.affine_matrix(
        translate_x=[float(dx) for dx, _ in shifts],
        translate_y=[float(dy) for _, dy in shifts],
    )
    for fill in (0.0, 0.5):
        out = warp.affine_warp(images, matrices, fill_value=fill).numpy()
        for b, (dx, dy) in enumerate(shifts):
            expected = np.roll(images[b], (dy, dx), axis=(0, 1))
            if dx > 0:
                expected[:, :dx] = fill
            elif dx < 0:
                expected[:, dx:] = fill
            if dy > 0:
                expected[:dy] = fill
            elif dy < 0:
                expected[dy:] = fill
            np.testing.assert_allclose(out[b], expected, atol=1e-6)


@pytest.mark.parametrize("size", [6, 5])
def test_rotation_matches_rot90_counter_clockwise(size):
    images = _images((2, size, size, 3), seed=2)
    for quarter_turns in (1, -1, 2):
        matrices = warp.affine_matrix(rotation=quarter_turns * math.pi / 2)
        out = warp.affine_warp(images, matrices).numpy()
        expected = np.rot90(images, k=quarter_turns, axes=(1, 2))
        np.testing.assert_allclose(out, expected, atol=1e-5)


@pytest.mark.parametrize(
    "parameters, dot, moved_to",
    [
        # Centred (x, y) of a dot in a 9x9 image, before and after: x is the
        # column to the right, y the row downwards.
        ({"scale": 0.5}, (2, -4), (1, -2)),
        ({"shear_x": 1.0}, (1, -2), (-1, -2)),  # x += shear_x * y
        ({"shear_y": 1.0}, (1, -2), (1, -1)),  # y += shear_y * x
        ({"translate_x": 3.0, "translate_y": 1.0}, (1, -2), (4, -1)),
        ({"rotation": math.pi / 2}, (3, 0), (0, -3)),  # right -> up
    ],
)
def test_content_moves_by_the_forward_parameters(parameters, dot, moved_to):
    images = np.zeros((1, 9, 9, 1), "float32")
    images[0, 4 + dot[1], 4 + dot[0], 0] = 1.0
    out = warp.affine_warp(images, warp.affine_matrix(**parameters)).numpy()
    expected = np.zeros_like(images)
    expected[0, 4 + moved_to[1], 4 + moved_to[0], 0] = 1.0
    np.testing.assert_allclose(out, expected, atol=1e-6)


def test_matrix_is_the_inverse_of_the_documented_forward_map():
    rng = np.random.default_rng(3)
    n = 5
    rotation = rng.uniform(-1, 1, n)
    scale = rng.uniform(0.5, 1.5, n)
    shear_x, shear_y = rng.uniform(-0.5, 0.5, (2, n))
    translate_x, translate_y = rng.uniform(-4, 4, (2, n))
    matrices = warp.affine_matrix(
        rotation, scale, shear_x, shear_y, translate_x, translate_y
    ).numpy()
    assert matrices.shape == (n, 3, 3) and matrices.dtype == np.float64
    for b in range(n):
        c, s = math.cos(rotation[b]), math.sin(rotation[b])
        forward = np.eye(3)
        forward[:2, :2] = (
            scale[b]
            * np.array([[c, s], [-s, c]])
            @ np.array([[1, shear_x[b]], [0, 1]])
            @ np.array([[1, 0], [shear_y[b], 1]])
        )
        forward[:2, 2] = translate_x[b], translate_y[b]
        np.testing.assert_allclose(matrices[b] @ forward, np.eye(3), atol=1e-12)


def test_gradients_match_finite_differences():
    images = _smooth_images(2, 12, 2)
    weights = np.random.default_rng(4).standard_normal(images.shape)
    # Generic, non-integer motions so no sample sits on a bilinear kink.
    values = np.array(
        [
            [0.31, -0.17],  # rotation
            [1.13, 0.87],  # scale
            [0.12, -0.21],  # shear_x
            [-0.08, 0.15],  # shear_y
            [0.73, -1.41],  # translate_x
            [-1.29, 0.37],  # translate_y
        ]
    )

    def loss(parameters, images):
        out = warp.affine_warp(images, warp.affine_matrix(*tf.unstack(parameters)))
        return tf.reduce_sum(out * weights)

    parameters = tf.constant(values)
    image_tensor = tf.constant(images)
    with tf.GradientTape() as tape:
        tape.watch([parameters, image_tensor])
        value = loss(parameters, image_tensor)
    grad_parameters, grad_images = tape.gradient(value, [parameters, image_tensor])

    eps = 1e-6
    numeric = np.zeros_like(values)
    for index in np.ndindex(values.shape):
        step = np.zeros_like(values)
        step[index] = eps
        numeric[index] = (
            loss(tf.constant(values + step), image_tensor)
            - loss(tf.constant(values - step), image_tensor)
        ).numpy() / (2 * eps)
    error = np.max(np.abs(grad_parameters.numpy() - numeric)) / np.max(np.abs(numeric))
    assert error < 1e-6, error
    assert np.all(np.abs(numeric) > 1e-3)  # every parameter matters

    # The warp is linear in the images: a directional derivative is exact.
    direction = np.random.default_rng(5).standard_normal(images.shape)
    numeric_images = (
        loss(parameters, image_tensor + direction) - loss(parameters, image_tensor)
    ).numpy()
    analytic = np.sum(grad_images.numpy() * direction)
    np.testing.assert_allclose(analytic, numeric_images, rtol=1e-9)


def test_jit_compiles_and_matches_eager():
    images = tf.constant(_images((4, 10, 10, 3), seed=6))
    parameters = tf.constant(
        np.random.default_rng(7).uniform(-0.3, 0.3, (6, 4)).astype("float32")
        + np.array([[0], [1], [0], [0], [0], [0]], "float32")
    )

    def forward_and_gradient(parameters, images):
        with tf.GradientTape() as tape:
            tape.watch(parameters)
            out = warp.affine_warp(
                images, warp.affine_matrix(*tf.unstack(parameters)), fill_value=0.2
            )
            value = tf.reduce_sum(out**2)
        return out, tape.gradient(value, parameters)

    jitted = tf.function(forward_and_gradient, jit_compile=True)
    out, gradient = forward_and_gradient(parameters, images)
    jit_out, jit_gradient = jitted(parameters, images)
    np.testing.assert_allclose(jit_out.numpy(), out.numpy(), atol=1e-5)
    np.testing.assert_allclose(jit_gradient.numpy(), gradient.numpy(), rtol=1e-4)
    # The function really went through XLA (no silent fallback).
    hlo = jitted.experimental_get_compiler_ir(parameters, images)(stage="hlo")
    assert "gather" in hlo


def test_far_outside_is_fill_and_shapes_are_checked():
    images = _images((2, 5, 5, 1), seed=8)
    matrices = warp.affine_matrix(translate_x=[1e9, -100.0])
    out = warp.affine_warp(images, matrices, fill_value=-1.0).numpy()
    np.testing.assert_array_equal(out, -np.ones_like(images))
    with pytest.raises(ValueError, match="batch, height, width, channels"):
        warp.affine_warp(images[0], warp.affine_matrix())
    with pytest.raises(ValueError, match="matrices must have shape"):
        warp.affine_warp(images, np.eye(2, dtype="float32"))
    with pytest.raises(ValueError, match="interpolation"):
        warp.affine_warp(images, warp.affine_matrix(), interpolation="bicubic")
