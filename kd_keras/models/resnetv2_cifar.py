"""The ImageNet-width ResNets adapted to CIFAR (RepDistiller's resnetv2.py): resnet18, resnet50."""

import functools

import keras

from kd_keras.models import resnet_cifar
from kd_keras.models.registry import register

# RepDistiller initialises convolutions with kaiming_normal_(mode="fan_out").
_KAIMING_FAN_OUT = keras.initializers.VarianceScaling(2.0, "fan_out", "untruncated_normal")
_STAGES = (64, 128, 256, 512)
_BOTTLENECK_EXPANSION = 4

# The CIFAR ResNets' conv-BN and basic block, with RepDistiller's resnetv2 initialiser.
_conv_bn = functools.partial(resnet_cifar._conv_bn, initializer=_KAIMING_FAN_OUT)
_basic_block = functools.partial(resnet_cifar._basic_block, initializer=_KAIMING_FAN_OUT)


def _bottleneck(x, planes, strides, name):
    expanded = planes * _BOTTLENECK_EXPANSION
    residual = x
    # As in RepDistiller (and torchvision v1.5), the stride sits on the 3x3
    # convolution, not on the first 1x1.
    out = _conv_bn(x, planes, 1, 1, f"{name}_1")
    out = keras.layers.ReLU(name=f"{name}_1_relu")(out)
    out = _conv_bn(out, planes, 3, strides, f"{name}_2")
    out = keras.layers.ReLU(name=f"{name}_2_relu")(out)
    out = _conv_bn(out, expanded, 1, 1, f"{name}_3")
    if strides != 1 or x.shape[-1] != expanded:
        residual = _conv_bn(x, expanded, 1, strides, f"{name}_shortcut")
    out = keras.layers.Add(name=f"{name}_add")([out, residual])
    return keras.layers.ReLU(name=f"{name}_out")(out)


def _resnet(input_shape, num_classes, block, blocks_per_stage, name):
    inputs = keras.Input(input_shape, name="image")
    x = _conv_bn(inputs, _STAGES[0], 3, 1, "stem")
    x = keras.layers.ReLU(name="stem_relu")(x)
    for stage, (planes, blocks) in enumerate(zip(_STAGES, blocks_per_stage), start=1):
        for index in range(blocks):
            strides = 2 if stage > 1 and index == 0 else 1
            x = block(x, planes, strides, f"layer{stage}_block{index + 1}")
    x = keras.layers.GlobalAveragePooling2D(name="avgpool")(x)
    outputs = keras.layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, outputs, name=name)


@register("resnet18")
def resnet18(input_shape=(32, 32, 3), num_classes=100, name="resnet18"):
    """ResNet-18 for CIFAR: 3x3 stem without max-pool, 2 basic blocks per stage, widths 64-512.

    The ImageNet ResNet-18's stages on a 3x3, stride-1 stem, so a 32x32
    image reaches the last stage at 4x4. A strong CIFAR teacher, and the
    network the role-wise augmentation paper quantises to a 2-bit student
    (`kd_keras.models.get("resnet18", bits=2)`); about 11.2M parameters.

    References: He et al. 2016, "Deep Residual Learning for Image
    Recognition"; Tian et al. 2020, "Contrastive Representation
    Distillation" (RepDistiller `ResNet18`, models/resnetv2.py).

    Args:
        input_shape: shape of one image, `(height, width, channels)`.
        num_classes: number of output logits.
        name: the model's name.

    Returns:
        A functional `keras.Model` mapping images to logits.

    Example:
    ```python
    teacher = kd_keras.models.resnet18((32, 32, 3), 100)
    ```
    """
    return _resnet(input_shape, num_classes, _basic_block, (2, 2, 2, 2), name)


@register("resnet50")
def resnet50(input_shape=(32, 32, 3), num_classes=100, name="resnet50"):
    """ResNet-50 for CIFAR: 3x3 stem without max-pool, bottleneck blocks [3, 4, 6, 3].

    The ImageNet ResNet-50's bottleneck stages (widths 64-512, expanded 4x
    to 256-2048) on a 3x3, stride-1 stem, so a 32x32 image reaches the last
    stage at 4x4. The teacher of the CRD table's "ResNet50 -> VGG8" and
    "ResNet50 -> MobileNetV2" pairs; about 23.7M parameters.

    References: He et al. 2016, "Deep Residual Learning for Image
    Recognition"; Tian et al. 2020, "Contrastive Representation
    Distillation" (RepDistiller `ResNet50`, models/resnetv2.py).

    Args:
        input_shape: shape of one image, `(height, width, channels)`.
        num_classes: number of output logits.
        name: the model's name.

    Returns:
        A functional `keras.Model` mapping images to logits.

    Example:
    ```python
    teacher = kd_keras.models.resnet50((32, 32, 3), 100)
    ```
    """
    return _resnet(input_shape, num_classes, _bottleneck, (3, 4, 6, 3), name)
