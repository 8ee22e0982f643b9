"""CIFAR ResNets of the distillation benchmarks: resnet8 ... resnet110, resnet8x4, resnet32x4."""

import keras

from kd_keras.models.registry import register

# PyTorch's BatchNorm2d defaults (momentum 0.1 == Keras 0.9, eps 1e-5), so
# recipes tuned on RepDistiller carry over.
_BN = dict(momentum=0.9, epsilon=1e-5)
_NARROW = (16, 16, 32, 64)
_WIDE = (32, 64, 128, 256)


def _conv_bn(x, filters, kernel_size, strides, name, initializer="he_normal"):
    x = keras.layers.Conv2D(
        filters,
        kernel_size,
        strides=strides,
        padding="same",
        use_bias=False,
        kernel_initializer=initializer,
        name=f"{name}_conv",
    )(x)
    return keras.layers.BatchNormalization(**_BN, name=f"{name}_bn")(x)


def _basic_block(x, planes, strides, name, initializer="he_normal"):
    residual = x
    out = _conv_bn(x, planes, 3, strides, f"{name}_1", initializer)
    out = keras.layers.ReLU(name=f"{name}_1_relu")(out)
    out = _conv_bn(out, planes, 3, 1, f"{name}_2", initializer)
    if strides != 1 or x.shape[-1] != planes:
        residual = _conv_bn(x, planes, 1, strides, f"{name}_shortcut", initializer)
    out = keras.layers.Add(name=f"{name}_add")([out, residual])
    return keras.layers.ReLU(name=f"{name}_out")(out)


def _resnet(input_shape, num_classes, depth, num_filters, name):
    if (depth - 2) % 6:
        raise ValueError(f"A CIFAR ResNet's depth is 6n+2 (8, 20, 56, ...), got {depth}.")
    blocks = (depth - 2) // 6
    inputs = keras.Input(input_shape, name="image")
    x = _conv_bn(inputs, num_filters[0], 3, 1, "stem")
    x = keras.layers.ReLU(name="stem_relu")(x)
    for stage, planes in enumerate(num_filters[1:], start=1):
        for block in range(blocks):
            strides = 2 if stage > 1 and block == 0 else 1
            x = _basic_block(x, planes, strides, f"layer{stage}_block{block + 1}")
    # Global pooling instead of RepDistiller's AvgPool2d(8): identical on
    # 32x32 inputs, and it also accepts 28x28 digits.
    x = keras.layers.GlobalAveragePooling2D(name="avgpool")(x)
    outputs = keras.layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, outputs, name=name)


@register("resnet8")
def resnet8(input_shape=(32, 32, 3), num_classes=100, name="resnet8"):
    """The 8-layer CIFAR ResNet (1 basic block per stage, widths 16/32/64).

    The smallest student of the ResNet family; about 0.08M parameters.

    References: He et al. 2016, "Deep Residual Learning for Image
    Recognition"; Tian et al. 2020, "Contrastive Representation
    Distillation" (RepDistiller `resnet8`).

    Args:
        input_shape: shape of one image, `(height, width, channels)`.
        num_classes: number of output logits.
        name: the model's name.

    Returns:
        A functional `keras.Model` mapping images to logits.

    Example:
    ```python
    student = kd_keras.models.resnet8((32, 32, 3), 100)
    ```
    """
    return _resnet(input_shape, num_classes, 8, _NARROW, name)


@register("resnet14")
def resnet14(input_shape=(32, 32, 3), num_classes=100, name="resnet14"):
    """The 14-layer CIFAR ResNet (2 basic blocks per stage, widths 16/32/64).

    About 0.18M parameters.

    References: He et al. 2016, "Deep Residual Learning for Image
    Recognition"; Tian et al. 2020, "Contrastive Representation
    Distillation" (RepDistiller `resnet14`).

    Args:
        input_shape: shape of one image, `(height, width, channels)`.
        num_classes: number of output logits.
        name: the model's name.

    Returns:
        A functional `keras.Model` mapping images to logits.

    Example:
    ```python
    student = kd_keras.models.resnet14((32, 32, 3), 100)
    ```
    """
    return _resnet(input_shape, num_classes, 14, _NARROW, name)


@register("resnet20")
def resnet20(input_shape=(32, 32, 3), num_classes=100, name="resnet20"):
    """The 20-layer CIFAR ResNet (3 basic blocks per stage, widths 16/32/64).

    The student of the resnet56 and resnet110 teachers in the CRD tables;
    about 0.28M parameters.

    References: He et al. 2016, "Deep Residual Learning for Image
    Recognition"; Tian et al. 2020, "Contrastive Representation
    Distillation" (RepDistiller `resnet20`).

    Args:
        input_shape: shape of one image, `(height, width, channels)`.
        num_classes: number of output logits.
        name: the model's name.

    Returns:
        A functional `keras.Model` mapping images to logits.

    Example:
    ```python
    student = kd_keras.models.resnet20((32, 32, 3), 100)
    ```
    """
    return _resnet(input_shape, num_classes, 20, _NARROW, name)


@register("resnet32")
def resnet32(input_shape=(32, 32, 3), num_classes=100, name="resnet32"):
    """The 32-layer CIFAR ResNet (5 basic blocks per stage, widths 16/32/64).

    The student of the resnet110 teacher in the CRD tables; about 0.47M
    parameters.

    References: He et al. 2016, "Deep Residual Learning for Image
    Recognition"; Tian et al. 2020, "Contrastive Representation
    Distillation" (RepDistiller `resnet32`).

    Args:
        input_shape: shape of one image, `(height, width, channels)`.
        num_classes: number of output logits.
        name: the model's name.

    Returns:
        A functional `keras.Model` mapping images to logits.

    Example:
    ```python
    student = kd_keras.models.resnet32((32, 32, 3), 100)
    ```
    """
    return _resnet(input_shape, num_classes, 32, _NARROW, name)


@register("resnet44")
def resnet44(input_shape=(32, 32, 3), num_classes=100, name="resnet44"):
    """The 44-layer CIFAR ResNet (7 basic blocks per stage, widths 16/32/64).

    About 0.67M parameters.

    References: He et al. 2016, "Deep Residual Learning for Image
    Recognition"; Tian et al. 2020, "Contrastive Representation
    Distillation" (RepDistiller `resnet44`).

    Args:
        input_shape: shape of one image, `(height, width, channels)`.
        num_classes: number of output logits.
        name: the model's name.

    Returns:
        A functional `keras.Model` mapping images to logits.

    Example:
    ```python
    model = kd_keras.models.resnet44((32, 32, 3), 100)
    ```
    """
    return _resnet(input_shape, num_classes, 44, _NARROW, name)


@register("resnet56")
def resnet56(input_shape=(32, 32, 3), num_classes=100, name="resnet56"):
    """The 56-layer CIFAR ResNet (9 basic blocks per stage, widths 16/32/64).

    A teacher of the CRD tables (student resnet20); about 0.86M parameters.

    References: He et al. 2016, "Deep Residual Learning for Image
    Recognition"; Tian et al. 2020, "Contrastive Representation
    Distillation" (RepDistiller `resnet56`).

    Args:
        input_shape: shape of one image, `(height, width, channels)`.
        num_classes: number of output logits.
        name: the model's name.

    Returns:
        A functional `keras.Model` mapping images to logits.

    Example:
    ```python
    teacher = kd_keras.models.resnet56((32, 32, 3), 100)
    ```
    """
    return _resnet(input_shape, num_classes, 56, _NARROW, name)


@register("resnet110")
def resnet110(input_shape=(32, 32, 3), num_classes=100, name="resnet110"):
    """The 110-layer CIFAR ResNet (18 basic blocks per stage, widths 16/32/64).

    A teacher of the CRD tables (students resnet20 and resnet32); about 1.7M
    parameters.

    References: He et al. 2016, "Deep Residual Learning for Image
    Recognition"; Tian et al. 2020, "Contrastive Representation
    Distillation" (RepDistiller `resnet110`).

    Args:
        input_shape: shape of one image, `(height, width, channels)`.
        num_classes: number of output logits.
        name: the model's name.

    Returns:
        A functional `keras.Model` mapping images to logits.

    Example:
    ```python
    teacher = kd_keras.models.resnet110((32, 32, 3), 100)
    ```
    """
    return _resnet(input_shape, num_classes, 110, _NARROW, name)


@register("resnet8x4")
def resnet8x4(input_shape=(32, 32, 3), num_classes=100, name="resnet8x4"):
    """The 8-layer CIFAR ResNet four times as wide (stem 32, stages 64/128/256).

    The student of the resnet32x4 teacher in the CRD tables; about 1.2M
    parameters. Its stem is 32 wide and its first stage 64, so the first
    block has a 1x1 projection shortcut, as in RepDistiller.

    References: Tian et al. 2020, "Contrastive Representation Distillation"
    (RepDistiller `resnet8x4`).

    Args:
        input_shape: shape of one image, `(height, width, channels)`.
        num_classes: number of output logits.
        name: the model's name.

    Returns:
        A functional `keras.Model` mapping images to logits.

    Example:
    ```python
    student = kd_keras.models.resnet8x4((32, 32, 3), 100)
    ```
    """
    return _resnet(input_shape, num_classes, 8, _WIDE, name)


@register("resnet32x4")
def resnet32x4(input_shape=(32, 32, 3), num_classes=100, name="resnet32x4"):
    """The 32-layer CIFAR ResNet four times as wide (stem 32, stages 64/128/256).

    The strongest CIFAR-100 teacher of the CRD tables (student resnet8x4);
    about 7.4M parameters.

    References: Tian et al. 2020, "Contrastive Representation Distillation"
    (RepDistiller `resnet32x4`).

    Args:
        input_shape: shape of one image, `(height, width, channels)`.
        num_classes: number of output logits.
        name: the model's name.

    Returns:
        A functional `keras.Model` mapping images to logits.

    Example:
    ```python
    teacher = kd_keras.models.resnet32x4((32, 32, 3), 100)
    ```
    """
    return _resnet(input_shape, num_classes, 32, _WIDE, name)
