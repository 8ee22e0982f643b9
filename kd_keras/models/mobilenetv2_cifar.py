"""The CIFAR MobileNetV2 of the distillation benchmarks (RepDistiller `mobile_half`)."""

import keras

from kd_keras.models.registry import register

# PyTorch's BatchNorm2d defaults (momentum 0.1 == Keras 0.9, eps 1e-5), so
# recipes tuned on RepDistiller carry over.
_BN = dict(momentum=0.9, epsilon=1e-5)


def _conv_bn(x, filters, kernel_size, strides, name):
    x = keras.layers.Conv2D(
        filters,
        kernel_size,
        strides=strides,
        padding="same",
        use_bias=False,
        kernel_initializer="he_normal",
        name=f"{name}_conv",
    )(x)
    return keras.layers.BatchNormalization(**_BN, name=f"{name}_bn")(x)


def _inverted_residual(x, out_channels, strides, expansion, name):
    in_channels = x.shape[-1]
    hidden = in_channels * expansion
    # Unlike torchvision, RepDistiller keeps the 1x1 expansion even when the
    # expansion factor is 1; it matters for the parameter count.
    out = _conv_bn(x, hidden, 1, 1, f"{name}_expand")
    out = keras.layers.ReLU(name=f"{name}_expand_relu")(out)
    out = keras.layers.DepthwiseConv2D(
        3,
        strides=strides,
        padding="same",
        use_bias=False,
        depthwise_initializer="he_normal",
        name=f"{name}_depthwise",
    )(out)
    out = keras.layers.BatchNormalization(**_BN, name=f"{name}_depthwise_bn")(out)
    out = keras.layers.ReLU(name=f"{name}_depthwise_relu")(out)
    out = _conv_bn(out, out_channels, 1, 1, f"{name}_project")
    if strides == 1 and in_channels == out_channels:
        out = keras.layers.Add(name=f"{name}_add")([x, out])
    return out


@register("mobilenetv2")
def mobilenetv2(
    input_shape=(32, 32, 3),
    num_classes=100,
    expansion=6,
    width_mult=0.5,
    name="mobilenetv2",
):
    """MobileNetV2 for 32x32 images at half width: RepDistiller's `mobile_half`.

    The cross-architecture student of the CRD tables (teachers vgg13 and
    ResNet50); about 0.81M parameters. As in RepDistiller it uses plain
    ReLU (not ReLU6), a stride-2 stem and a 1280-wide last convolution, so a
    32x32 image ends as a 2x2 map before global pooling.

    References: Sandler et al. 2018, "MobileNetV2: Inverted Residuals and
    Linear Bottlenecks"; Tian et al. 2020, "Contrastive Representation
    Distillation" (RepDistiller `mobile_half`).

    Args:
        input_shape: shape of one image, `(height, width, channels)`.
        num_classes: number of output logits.
        expansion: expansion factor `T` of the inverted residual blocks
            after the first.
        width_mult: multiplier of every block's width; the last convolution
            stays 1280 wide unless it is above 1.
        name: the model's name.

    Returns:
        A functional `keras.Model` mapping images to logits.

    Example:
    ```python
    student = kd_keras.models.mobilenetv2((32, 32, 3), 100)
    ```
    """
    # (expansion, channels, blocks, stride of the first block)
    setting = (
        (1, 16, 1, 1),
        (expansion, 24, 2, 1),
        (expansion, 32, 3, 2),
        (expansion, 64, 4, 2),
        (expansion, 96, 3, 1),
        (expansion, 160, 3, 2),
        (expansion, 320, 1, 1),
    )
    inputs = keras.Input(input_shape, name="image")
    x = _conv_bn(inputs, int(32 * width_mult), 3, 2, "stem")
    x = keras.layers.ReLU(name="stem_relu")(x)
    for stage, (t, channels, blocks, first_stride) in enumerate(setting):
        for block in range(blocks):
            strides = first_stride if block == 0 else 1
            x = _inverted_residual(
                x, int(channels * width_mult), strides, t, f"stage{stage}_block{block + 1}"
            )
    last_channels = int(1280 * width_mult) if width_mult > 1.0 else 1280
    x = _conv_bn(x, last_channels, 1, 1, "last")
    x = keras.layers.ReLU(name="last_relu")(x)
    # Global pooling instead of RepDistiller's AvgPool2d(input_size // 16):
    # identical on 32x32 and 64x64 inputs, and it also accepts 28x28 digits.
    x = keras.layers.GlobalAveragePooling2D(name="avgpool")(x)
    outputs = keras.layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, outputs, name=name)
