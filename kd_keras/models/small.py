"""Small models for the embedded digits default: a CNN teacher, MLP and CNN students."""

import keras

from kd_keras.models.registry import register

# PyTorch's BatchNorm defaults, as the CIFAR zoo uses: Keras' default moving
# momentum 0.99 leaves the statistics of a short run (a quick teacher, a
# search trial: a few hundred steps) far from the data's, so such a network
# evaluated at chance on the test set while training at 100%.
_BN = {"momentum": 0.9, "epsilon": 1e-5}


@register("cnn")
def cnn(input_shape=(28, 28, 1), num_classes=10, width=32, name="cnn"):
    """A small convolutional network with global pooling; the default teacher.

    Convolutions and global average pooling make it (nearly) shift
    equivariant, which is the inductive bias the HARD toy transfers to an MLP.

    Args:
        input_shape: shape of one image, `(height, width, channels)`.
        num_classes: number of output logits.
        width: filters of the first block; later blocks use twice as many.
        name: the model's name.

    Returns:
        A functional `keras.Model` mapping images to logits.

    Example:
    ```python
    teacher = kd_keras.models.cnn((28, 28, 1), 10)
    ```
    """
    inputs = keras.Input(input_shape, name="image")
    x = inputs
    for filters in (width, 2 * width, 2 * width):
        x = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False)(x)
        x = keras.layers.BatchNormalization(**_BN)(x)
        x = keras.layers.ReLU()(x)
        x = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False)(x)
        x = keras.layers.BatchNormalization(**_BN)(x)
        x = keras.layers.ReLU()(x)
        x = keras.layers.MaxPooling2D(2, padding="same")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, outputs, name=name)


@register("small_cnn")
def small_cnn(input_shape=(28, 28, 1), num_classes=10, width=8, name="small_cnn"):
    """A three-block CNN student (about 5% of the `cnn` teacher) with global pooling.

    Three blocks of 3x3 convolution, BatchNorm, ReLU and max pooling (`width`,
    `2 * width`, `4 * width` filters), then global average pooling: nearly
    shift invariant, the CNN student for spatial augmentation. (With two
    blocks and no BatchNorm it sat at chance for many epochs under the
    recipes' SGD 0.05: 3x3 detectors pooled over ~10 px windows of a 16 px
    digit, averaged over the canvas, barely tell digits apart, and the
    near-constant start stayed at the class prior.)

    Args:
        input_shape: shape of one image, `(height, width, channels)`.
        num_classes: number of output logits.
        width: filters of the first block; the next use twice and four times as many.
        name: the model's name.

    Returns:
        A functional `keras.Model` mapping images to logits.

    Example:
    ```python
    student = kd_keras.models.small_cnn((28, 28, 1), 10)
    ```
    """
    inputs = keras.Input(input_shape, name="image")
    x = inputs
    for filters in (width, 2 * width, 4 * width):
        x = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False)(x)
        x = keras.layers.BatchNormalization(**_BN)(x)
        x = keras.layers.ReLU()(x)
        x = keras.layers.MaxPooling2D(2, padding="same")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, outputs, name=name)


@register("mlp")
def mlp(input_shape=(28, 28, 1), num_classes=10, width=128, depth=2, name="mlp"):
    """A fully connected student with no spatial inductive bias.

    It is the student of the HARD shift-equivariance toy: trained on centred
    digits it cannot classify shifted ones unless the data teaches it to.

    Args:
        input_shape: shape of one input; it is flattened.
        num_classes: number of output logits.
        width: units of each hidden layer.
        depth: number of hidden layers.
        name: the model's name.

    Returns:
        A functional `keras.Model` mapping inputs to logits.

    Example:
    ```python
    student = kd_keras.models.mlp((28, 28, 1), 10, width=256)
    ```
    """
    inputs = keras.Input(input_shape, name="image")
    x = keras.layers.Flatten()(inputs)
    for _ in range(depth):
        x = keras.layers.Dense(width, activation="relu")(x)
    outputs = keras.layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, outputs, name=name)
