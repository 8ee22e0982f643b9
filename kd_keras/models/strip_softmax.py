"""Detect and remove a final softmax so a classifier outputs logits."""

import keras
import numpy as np


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


def check_logits(model, inputs, role="teacher"):
    """Raise `ValueError` unless `model` outputs finite logits on real `inputs`.

    Catches what `ends_in_softmax` cannot see: a softmax inside the last
    layer's code or after it in a subclassed model. Probabilities (every row
    in `[0, 1]`, summing to 1) and NaN/Inf outputs are refused with the fix.

    Args:
        model: a single-output classifier.
        inputs: a batch of real inputs (a few dozen are enough).
        role: what to call the model in the message, e.g. `"teacher"`.

    Returns:
        The outputs on `inputs`, as a NumPy array.

    Example:
    ```python
    kd_keras.models.check_logits(teacher, x_train[:64])
    ```
    """
    outputs = model(inputs, training=False)
    if isinstance(outputs, (list, tuple, dict)):
        return outputs  # multi-output models are checked by their losses
    outputs = np.asarray(keras.ops.convert_to_numpy(outputs), dtype="float64")
    count = len(outputs)
    if not np.all(np.isfinite(outputs)):
        raise ValueError(
            f"The {role} outputs NaN or Inf on {count} training inputs: its "
            "weights are broken, or the inputs are outside the range it was "
            "trained on (e.g. pixels in [0, 255] for a [0, 1] model)."
        )
    probabilities = (
        outputs.ndim == 2
        and outputs.shape[1] > 1
        and np.all(outputs >= 0.0)
        and np.allclose(outputs.sum(axis=1), 1.0, atol=1e-3)
    )
    if probabilities:
        raise ValueError(
            f"The {role} outputs probabilities (rows in [0, 1] summing to 1 on "
            f"{count} training inputs), but distillation needs logits: pass "
            f"kd_keras.models.strip_softmax({role}) or rebuild it without its "
            "final softmax."
        )
    return outputs
