"""Detect and remove a final softmax so a classifier outputs logits."""

import keras


def ends_in_softmax(model):
    """Return True when `model`'s last layer turns logits into probabilities.

    Detects a final `Softmax` layer, a final `Activation("softmax")` and a final
    layer (e.g. `Dense`) built with `activation="softmax"`.

    Args:
        model: a `keras.Model`.

    Returns:
        `True` if the model outputs probabilities rather than logits.

    Example:
    ```python
    kd_keras.models.ends_in_softmax(keras.applications.MobileNetV2())  # True
    ```
    """
    if not model.layers:
        return False
    last = model.layers[-1]
    if isinstance(last, keras.layers.Softmax):
        return True
    activation = getattr(last, "activation", None)
    return activation is not None and getattr(activation, "__name__", "") == "softmax"


def strip_softmax(model):
    """Return a model with the same weights that outputs logits instead of probabilities.

    Use it on a teacher trained with a softmax head before distilling: the
    distillation losses apply their own temperature to logits.

    Args:
        model: a functional or sequential `keras.Model` ending in a softmax.

    Returns:
        A new `keras.Model` sharing `model`'s layers and weights, or `model`
        itself when it already outputs logits.

    Example:
    ```python
    teacher = kd_keras.models.strip_softmax(keras.models.load_model("t.keras"))
    ```
    """
    if not ends_in_softmax(model):
        return model
    last = model.layers[-1]
    if isinstance(last, keras.layers.Softmax) or isinstance(last, keras.layers.Activation):
        return keras.Model(model.inputs, last.input, name=f"{model.name}_logits")
    config = last.get_config()
    config["activation"] = "linear"
    config["name"] = f"{last.name}_logits"
    logits_layer = last.__class__.from_config(config)
    outputs = logits_layer(last.input)
    logits_layer.set_weights(last.get_weights())
    return keras.Model(model.inputs, outputs, name=f"{model.name}_logits")
