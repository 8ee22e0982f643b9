"""Differentiable affine warps: a bilinear sampler made of gathers (XLA-safe).

Coordinate convention (shared by every function here): a point is `(x, y)` in
pixels, `x` along the width (to the right), `y` along the height (downwards),
with the origin at the image centre, i.e. pixel `(row i, column j)` of an
`H x W` image is the point `(j - (W - 1) / 2, i - (H - 1) / 2)`.

`affine_warp` takes matrices that map OUTPUT points to INPUT points (the
inverse map, as samplers need), while `affine_matrix` is parameterised by the
forward motion of the image content (rotate it by +30 degrees, move it 3
pixels right) and returns the inverse map ready for `affine_warp`.
"""

import tensorflow as tf

INTERPOLATIONS = ("bilinear", "nearest")


def affine_warp(images, matrices, fill_value=0.0, interpolation="bilinear"):
    """Warp a batch of images with one affine transform per image.

    Bilinear sampling built from gathers, so, unlike
    `keras.ops.image.affine_transform` (ImageProjectiveTransformV3), it
    compiles under XLA and is differentiable with respect to both the images
    and the matrices. Output pixels whose source point falls outside the
    image take `fill_value`; along the border the four bilinear neighbours
    that fall outside count as `fill_value`, so content fades smoothly into
    the fill and the gradient stays defined there.

    Output pixel `p = (x, y)` (centred coordinates, see the module docstring)
    is read from the input at `A @ [x, y, 1]`, where `A` is the top `2 x 3`
    block of the matrix. The identity matrix returns the images unchanged
    (exactly, with either interpolation).

    Args:
        images: `(batch, height, width, channels)` tensor. Integer images are
            converted to float32.
        matrices: `(batch, 2, 3)` or `(batch, 3, 3)` output-to-input affine
            matrices, or a single `(2, 3)` / `(3, 3)` matrix for the whole
            batch. The third row of a `3 x 3` matrix is ignored (affine
            only), so `affine_matrix`'s output composes by `matmul`.
        fill_value: value of pixels sampled from outside the image.
        interpolation: `"bilinear"` (differentiable w.r.t. the matrices) or
            `"nearest"` (gradients only w.r.t. the images).

    Returns:
        A tensor with the shape of `images` and their (float) dtype.

    Example:
    ```python
    matrices = kd_keras.augment.warp.affine_matrix(
        rotation=tf.fill([batch], 0.3), translate_x=tf.fill([batch], 2.0)
    )
    warped = kd_keras.augment.warp.affine_warp(images, matrices)
    ```
    """
    if interpolation not in INTERPOLATIONS:
        raise ValueError(f"interpolation must be one of {INTERPOLATIONS}, got {interpolation!r}.")
    images = tf.convert_to_tensor(images)
    if images.shape.rank != 4:
        raise ValueError(
            "affine_warp expects images of shape (batch, height, width, "
            f"channels), got shape {images.shape}."
        )
    if not images.dtype.is_floating:
        images = tf.cast(images, "float32")
    # Coordinates in float32 at least: in float16 a 200-pixel coordinate
    # keeps barely a tenth of a pixel of precision.
    coordinate_dtype = "float64" if images.dtype == tf.float64 else "float32"
    matrices = tf.cast(tf.convert_to_tensor(matrices), coordinate_dtype)
    if matrices.shape.rank not in (2, 3) or tuple(matrices.shape[-2:]) not in (
        (2, 3),
        (3, 3),
    ):
        raise ValueError(
            "matrices must have shape (batch, 2, 3), (batch, 3, 3), (2, 3) or "
            f"(3, 3), got {matrices.shape}."
        )

    shape = tf.shape(images)
    batch, height, width, channels = shape[0], shape[1], shape[2], shape[3]
    if matrices.shape.rank == 2:
        matrices = tf.broadcast_to(matrices[None], [batch, *matrices.shape])
    affine = matrices[:, :2, :]

    h = tf.cast(height, coordinate_dtype)
    w = tf.cast(width, coordinate_dtype)
    centre_x = (w - 1.0) / 2.0
    centre_y = (h - 1.0) / 2.0
    rows, cols = tf.meshgrid(
        tf.cast(tf.range(height), coordinate_dtype),
        tf.cast(tf.range(width), coordinate_dtype),
        indexing="ij",
    )
    points = tf.stack(
        [
            tf.reshape(cols, [-1]) - centre_x,
            tf.reshape(rows, [-1]) - centre_y,
            tf.ones([height * width], coordinate_dtype),
        ],
        axis=0,
    )
    source = tf.einsum("bij,jn->bin", affine, points)
    source_x = source[:, 0, :] + centre_x
    source_y = source[:, 1, :] + centre_y

    flat = tf.reshape(images, [batch, height * width, channels])
    fill = tf.cast(fill_value, images.dtype)

    def read(index_x, index_y):
        # Clipping before the cast keeps far-away points (huge translations)
        # from overflowing int32; they stay outside and read the fill.
        index_x = tf.cast(tf.clip_by_value(index_x, -1.0, w), "int32")
        index_y = tf.cast(tf.clip_by_value(index_y, -1.0, h), "int32")
        inside = (index_x >= 0) & (index_x < width) & (index_y >= 0) & (index_y < height)
        index = tf.clip_by_value(index_y, 0, height - 1) * width + tf.clip_by_value(
            index_x, 0, width - 1
        )
        values = tf.gather(flat, index, batch_dims=1)
        return tf.where(inside[..., None], values, fill)

    if interpolation == "nearest":
        output = read(tf.floor(source_x + 0.5), tf.floor(source_y + 0.5))
    else:
        x0 = tf.floor(source_x)
        y0 = tf.floor(source_y)
        # floor() has no gradient; the coordinates' gradient flows through
        # these fractional weights.
        wx1 = tf.cast(source_x - x0, images.dtype)[..., None]
        wy1 = tf.cast(source_y - y0, images.dtype)[..., None]
        wx0 = 1.0 - wx1
        wy0 = 1.0 - wy1
        output = wy0 * (wx0 * read(x0, y0) + wx1 * read(x0 + 1.0, y0)) + wy1 * (
            wx0 * read(x0, y0 + 1.0) + wx1 * read(x0 + 1.0, y0 + 1.0)
        )
    return tf.reshape(output, shape)


def affine_matrix(
    rotation=0.0,
    scale=1.0,
    shear_x=0.0,
    shear_y=0.0,
    translate_x=0.0,
    translate_y=0.0,
):
    """Build output-to-input affine matrices for `affine_warp` from motion parameters.

    The parameters describe how the image content moves (the forward map);
    the returned matrix is its exact inverse, computed in closed form so it
    is differentiable everywhere. A content point `p` (centred pixel
    coordinates, `y` down; see the module docstring) moves to
    `M @ p + t`, with `M = scale * R(rotation) @ Sx(shear_x) @ Sy(shear_y)`,
    `Sx = [[1, shear_x], [0, 1]]`, `Sy = [[1, 0], [shear_y, 1]]` (so `M` is
    invertible for any shears and `scale > 0`) and `t = (translate_x,
    translate_y)`. Every argument is a scalar or a `(batch,)` tensor; they
    broadcast together. With the defaults the result is exactly the identity.

    Args:
        rotation: angle in radians; positive turns the content
            counter-clockwise as displayed (row 0 at the top), like
            `np.rot90` and `keras.layers.RandomRotation`.
        scale: zoom factor (> 0); `2.0` doubles the content's size about the
            image centre.
        shear_x: horizontal shear factor (tangent of the shear angle): a
            content point moves right by `shear_x * y`.
        shear_y: vertical shear factor: a content point moves down by
            `shear_y * x`.
        translate_x: displacement to the right, in pixels (multiply a
            fraction by the width to translate by a fraction of the size).
        translate_y: displacement downwards, in pixels.

    Returns:
        A `(batch, 3, 3)` tensor (`(3, 3)` if all arguments are scalars),
        float64 if any argument is float64 and float32 otherwise; the last
        row is `[0, 0, 1]`.

    Example:
    ```python
    rotate = kd_keras.augment.warp.affine_matrix(rotation=math.pi / 2)
    rotated = kd_keras.augment.warp.affine_warp(images, rotate)
    ```
    """
    parameters = [
        tf.convert_to_tensor(value)
        for value in (rotation, scale, shear_x, shear_y, translate_x, translate_y)
    ]
    dtype = "float64" if any(p.dtype == tf.float64 for p in parameters) else "float32"
    parameters = [tf.cast(p, dtype) for p in parameters]
    shape = parameters[0].shape
    for p in parameters[1:]:
        shape = tf.broadcast_static_shape(shape, p.shape)
    if shape.rank not in (0, 1):
        raise ValueError(
            "affine_matrix parameters must be scalars or (batch,) tensors, "
            f"got a broadcast shape {shape}."
        )
    dynamic_shape = tf.shape(parameters[0])
    for p in parameters[1:]:
        dynamic_shape = tf.broadcast_dynamic_shape(dynamic_shape, tf.shape(p))
    rotation, scale, shear_x, shear_y, translate_x, translate_y = (
        tf.broadcast_to(p, dynamic_shape) for p in parameters
    )

    cos = tf.cos(rotation)
    sin = tf.sin(rotation)
    # R(a) = [[cos, sin], [-sin, cos]] turns content counter-clockwise on a
    # y-down screen. The inverse M^-1 = Sy^-1 Sx^-1 R(-a) / scale is written
    # out instead of calling tf.linalg.inv: exact at the identity, no
    # batched-inverse op for XLA, and a gradient free of 1/det terms.
    shear_xy = 1.0 + shear_x * shear_y
    inverse_scale = 1.0 / scale
    m00 = (cos - shear_x * sin) * inverse_scale
    m01 = (-sin - shear_x * cos) * inverse_scale
    m10 = (shear_xy * sin - shear_y * cos) * inverse_scale
    m11 = (shear_xy * cos + shear_y * sin) * inverse_scale
    # p_in = M^-1 (p_out - t)
    m02 = -(m00 * translate_x + m01 * translate_y)
    m12 = -(m10 * translate_x + m11 * translate_y)
    zero = tf.zeros_like(m00)
    one = tf.ones_like(m00)
    rows = [
        tf.stack([m00, m01, m02], axis=-1),
        tf.stack([m10, m11, m12], axis=-1),
        tf.stack([zero, zero, one], axis=-1),
    ]
    return tf.stack(rows, axis=-2)
