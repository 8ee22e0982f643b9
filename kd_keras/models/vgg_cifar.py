"""CIFAR VGGs with batch normalization of the distillation benchmarks: vgg8, vgg13."""

import keras

from kd_keras.models.registry import register

# PyTorch's BatchNorm2d defaults (momentum 0.1 == Keras 0.9, eps 1e-5), so
# recipes tuned on RepDistiller carry over.
_BN = dict(momentum=0.9, epsilon=1e-5)
# Filters of each convolution of the five blocks; RepDistiller's cfg "S"
# (vgg8) and cfg "B" (vgg13).
_VGG8 = ((64,), (128,), (256,), (512,), (512,))
_VGG13 = ((64, 64), (128, 128), (256, 256), (512, 512), (512, 512))


def _vgg(input_shape, num_classes, blocks, name):
    inputs = keras.Input(input_shape, name="image")
    x = inputs
    for index, block in enumerate(blocks):
        for conv, filters in enumerate(block, start=1):
            # RepDistiller's VGG keeps the convolution bias even before
            # BatchNorm; keeping it keeps the parameter count identical.
            x = keras.layers.Conv2D(
                filters,
                3,
                padding="same",
                kernel_initializer="he_normal",
                name=f"block{index}_conv{conv}",
            )(x)
            x = keras.layers.BatchNormalization(**_BN, name=f"block{index}_bn{conv}")(x)
            x = keras.layers.ReLU(name=f"block{index}_relu{conv}")(x)
        # Blocks 0-2 halve the resolution (32 -> 4); the pool after block 3
        # only exists for 64x64 inputs, as in RepDistiller, so blocks 3 and 4
        # both run at 4x4. "same" padding lets 28x28 digits go 28->14->7->4.
        if index < 3 or (index == 3 and input_shape[0] == 64):
            x = keras.layers.MaxPooling2D(2, padding="same", name=f"pool{index}")(x)
    x = keras.layers.GlobalAveragePooling2D(name="avgpool")(x)
    outputs = keras.layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, outputs, name=name)


@register("vgg8")
def vgg8(input_shape=(32, 32, 3), num_classes=100, name="vgg8"):
    """VGG-8 with batch normalization: one 3x3 convolution per block, 64 to 512 wide.

    The student of the vgg13 (and ResNet50) teachers in the CRD tables;
    about 4.0M parameters. Like RepDistiller's `vgg8_bn` it has no hidden
    fully connected layers: global pooling feeds the classifier.

    References: Simonyan & Zisserman 2015, "Very Deep Convolutional Networks
    for Large-Scale Image Recognition"; Tian et al. 2020, "Contrastive
    Representation Distillation" (RepDistiller `vgg8_bn`).

    Args:
        input_shape: shape of one image, `(height, width, channels)`.
        num_classes: number of output logits.
        name: the model's name.

    Returns:
        A functional `keras.Model` mapping images to logits.

    Example:
    ```python
    student = kd_keras.models.vgg8((32, 32, 3), 100)
    ```
    """
    return _vgg(input_shape, num_classes, _VGG8, name)


@register("vgg13")
def vgg13(input_shape=(32, 32, 3), num_classes=100, name="vgg13"):
    """VGG-13 with batch normalization: two 3x3 convolutions per block, 64 to 512 wide.

    A teacher of the CRD tables (students vgg8 and mobilenetv2); about 9.5M
    parameters. Like RepDistiller's `vgg13_bn` it has no hidden fully
    connected layers: global pooling feeds the classifier.

    References: Simonyan & Zisserman 2015, "Very Deep Convolutional Networks
    for Large-Scale Image Recognition"; Tian et al. 2020, "Contrastive
    Representation Distillation" (RepDistiller `vgg13_bn`).

    Args:
        input_shape: shape of one image, `(height, width, channels)`.
        num_classes: number of output logits.
        name: the model's name.

    Returns:
        A functional `keras.Model` mapping images to logits.

    Example:
    ```python
    teacher = kd_keras.models.vgg13((32, 32, 3), 100)
    ```
    """
    return _vgg(input_shape, num_classes, _VGG13, name)
