"""Wide ResNets of the distillation benchmarks: wrn_16_1, wrn_16_2, wrn_40_1, wrn_40_2."""

import keras

from kd_keras.models.registry import register

# PyTorch's BatchNorm2d defaults (momentum 0.1 == Keras 0.9, eps 1e-5), so
# recipes tuned on RepDistiller carry over.
_BN = dict(momentum=0.9, epsilon=1e-5)


def _conv(filters, kernel_size, strides, name):
    return keras.layers.Conv2D(
        filters,
        kernel_size,
        strides=strides,
        padding="same",
        use_bias=False,
        kernel_initializer="he_normal",
        name=name,
    )


def _bn_relu(x, name):
    x = keras.layers.BatchNormalization(**_BN, name=f"{name}_bn")(x)
    return keras.layers.ReLU(name=f"{name}_relu")(x)


def _block(x, out_planes, strides, dropout_rate, name):
    # Pre-activation block as in RepDistiller's wrn.py: when the width
    # changes the projection shortcut reads the *activated* input, otherwise
    # the identity shortcut carries the raw input.
    identity = x.shape[-1] == out_planes and strides == 1
    activated = _bn_relu(x, f"{name}_1")
    out = _conv(out_planes, 3, strides, f"{name}_1_conv")(activated)
    out = _bn_relu(out, f"{name}_2")
    if dropout_rate > 0:
        out = keras.layers.Dropout(dropout_rate, name=f"{name}_dropout")(out)
    out = _conv(out_planes, 3, 1, f"{name}_2_conv")(out)
    shortcut = x if identity else _conv(out_planes, 1, strides, f"{name}_shortcut")(activated)
    return keras.layers.Add(name=f"{name}_add")([shortcut, out])


def wrn(
    input_shape=(32, 32, 3),
    num_classes=100,
    depth=16,
    widen_factor=2,
    dropout_rate=0.0,
    name=None,
):
    """A Wide ResNet WRN-depth-widen_factor for 32x32 images.

    Use it for widths or depths the zoo does not register, e.g. WRN-28-10;
    `wrn_16_2` and friends call it.

    References: Zagoruyko & Komodakis 2016, "Wide Residual Networks";
    Tian et al. 2020, "Contrastive Representation Distillation"
    (RepDistiller `wrn.py`).

    Args:
        input_shape: shape of one image, `(height, width, channels)`.
        num_classes: number of output logits.
        depth: total depth, `6n + 4` (n pre-activation blocks per stage).
        widen_factor: the stages are 16, 32 and 64 times this wide.
        dropout_rate: dropout between a block's two convolutions; the
            distillation benchmarks use 0.
        name: the model's name; `None` gives `"wrn_{depth}_{widen_factor}"`.

    Returns:
        A functional `keras.Model` mapping images to logits.

    Example:
    ```python
    teacher = kd_keras.models.wrn((32, 32, 3), 100, depth=28, widen_factor=10)
    ```
    """
    if (depth - 4) % 6:
        raise ValueError(f"A Wide ResNet's depth is 6n+4 (16, 22, 28, 40, ...), got {depth}.")
    blocks = (depth - 4) // 6
    inputs = keras.Input(input_shape, name="image")
    x = _conv(16, 3, 1, "stem_conv")(inputs)
    for stage, planes in enumerate((16 * widen_factor, 32 * widen_factor, 64 * widen_factor), 1):
        for block in range(blocks):
            strides = 2 if stage > 1 and block == 0 else 1
            x = _block(x, planes, strides, dropout_rate, f"block{stage}_{block + 1}")
    x = _bn_relu(x, "final")
    # Global pooling instead of RepDistiller's avg_pool2d(8): identical on
    # 32x32 inputs, and it also accepts 28x28 digits.
    x = keras.layers.GlobalAveragePooling2D(name="avgpool")(x)
    outputs = keras.layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, outputs, name=name or f"wrn_{depth}_{widen_factor}")


@register("wrn_16_1")
def wrn_16_1(input_shape=(32, 32, 3), num_classes=100, name="wrn_16_1"):
    """WRN-16-1: 2 pre-activation blocks per stage, widths 16/32/64.

    A small Wide ResNet student; about 0.18M parameters.

    References: Zagoruyko & Komodakis 2016, "Wide Residual Networks";
    Tian et al. 2020, "Contrastive Representation Distillation"
    (RepDistiller `wrn_16_1`).

    Args:
        input_shape: shape of one image, `(height, width, channels)`.
        num_classes: number of output logits.
        name: the model's name.

    Returns:
        A functional `keras.Model` mapping images to logits.

    Example:
    ```python
    student = kd_keras.models.wrn_16_1((32, 32, 3), 100)
    ```
    """
    return wrn(input_shape, num_classes, depth=16, widen_factor=1, name=name)


@register("wrn_16_2")
def wrn_16_2(input_shape=(32, 32, 3), num_classes=100, name="wrn_16_2"):
    """WRN-16-2: 2 pre-activation blocks per stage, widths 32/64/128.

    The student of the wrn_40_2 teacher in the CRD tables; about 0.70M
    parameters.

    References: Zagoruyko & Komodakis 2016, "Wide Residual Networks";
    Tian et al. 2020, "Contrastive Representation Distillation"
    (RepDistiller `wrn_16_2`).

    Args:
        input_shape: shape of one image, `(height, width, channels)`.
        num_classes: number of output logits.
        name: the model's name.

    Returns:
        A functional `keras.Model` mapping images to logits.

    Example:
    ```python
    student = kd_keras.models.wrn_16_2((32, 32, 3), 100)
    ```
    """
    return wrn(input_shape, num_classes, depth=16, widen_factor=2, name=name)


@register("wrn_40_1")
def wrn_40_1(input_shape=(32, 32, 3), num_classes=100, name="wrn_40_1"):
    """WRN-40-1: 6 pre-activation blocks per stage, widths 16/32/64.

    The student of the wrn_40_2 teacher in the CRD tables; about 0.57M
    parameters.

    References: Zagoruyko & Komodakis 2016, "Wide Residual Networks";
    Tian et al. 2020, "Contrastive Representation Distillation"
    (RepDistiller `wrn_40_1`).

    Args:
        input_shape: shape of one image, `(height, width, channels)`.
        num_classes: number of output logits.
        name: the model's name.

    Returns:
        A functional `keras.Model` mapping images to logits.

    Example:
    ```python
    student = kd_keras.models.wrn_40_1((32, 32, 3), 100)
    ```
    """
    return wrn(input_shape, num_classes, depth=40, widen_factor=1, name=name)


@register("wrn_40_2")
def wrn_40_2(input_shape=(32, 32, 3), num_classes=100, name="wrn_40_2"):
    """WRN-40-2: 6 pre-activation blocks per stage, widths 32/64/128.

    A teacher of the CRD tables (students wrn_16_2 and wrn_40_1); about 2.3M
    parameters.

    References: Zagoruyko & Komodakis 2016, "Wide Residual Networks";
    Tian et al. 2020, "Contrastive Representation Distillation"
    (RepDistiller `wrn_40_2`).

    Args:
        input_shape: shape of one image, `(height, width, channels)`.
        num_classes: number of output logits.
        name: the model's name.

    Returns:
        A functional `keras.Model` mapping images to logits.

    Example:
    ```python
    teacher = kd_keras.models.wrn_40_2((32, 32, 3), 100)
    ```
    """
    return wrn(input_shape, num_classes, depth=40, widen_factor=2, name=name)
