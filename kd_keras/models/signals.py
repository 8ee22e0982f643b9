"""MNIST-1D's own models: the paper's MLP and CNN, for one-row `(1, length, 1)` signals."""

import keras

from kd_keras.models.registry import register
from kd_keras.models.small import mlp


@register("mnist1d_cnn")
def mnist1d_cnn(input_shape=(1, 40, 1), num_classes=10, channels=25, name="mnist1d_cnn"):
    """The MNIST-1D paper's CNN: three strided convolutions along the signal, then a linear layer.

    Three `Conv1D(channels, kernel 5, stride 2)` with ReLU (here as `(1, 5)`
    convolutions over a one-row image), flattened into the logits: ~93% on
    MNIST-1D where an MLP stays near 64%. It is the shipped MNIST-1D
    teacher (`shipped:mnist1d_cnn`).

    References:
        Greydanus, Kobak. Scaling down deep learning with MNIST-1D, ICML 2024
        (`ConvBase` of github.com/greydanus/mnist1d).

    Args:
        input_shape: `(1, length, channels)`.
        num_classes: number of output logits.
        channels: channels of each convolution.
        name: the model's name.

    Returns:
        A functional `keras.Model` mapping signals to logits.

    Example:
    ```python
    teacher = kd_keras.models.get("mnist1d_cnn", (1, 40, 1), 10)
    ```
    """
    inputs = keras.Input(input_shape, name="signal")
    x = inputs
    for _ in range(3):
        x = keras.layers.Conv2D(
            channels, (1, 5), strides=(1, 2), padding="same", activation="relu"
        )(x)
    outputs = keras.layers.Dense(num_classes, name="logits")(keras.layers.Flatten()(x))
    return keras.Model(inputs, outputs, name=name)


@register("mnist1d_mlp")
def mnist1d_mlp(input_shape=(1, 40, 1), num_classes=10, width=100, name="mnist1d_mlp"):
    """The MNIST-1D paper's MLP: two hidden layers of 100 ReLU units.

    References:
        Greydanus, Kobak. Scaling down deep learning with MNIST-1D, ICML 2024.

    Args:
        input_shape: `(1, length, channels)`; it is flattened.
        num_classes: number of output logits.
        width: units of each hidden layer.
        name: the model's name.

    Returns:
        A functional `keras.Model` mapping signals to logits.

    Example:
    ```python
    student = kd_keras.models.get("mnist1d_mlp", (1, 40, 1), 10)
    ```
    """
    return mlp(input_shape, num_classes, width=width, depth=2, name=name)
