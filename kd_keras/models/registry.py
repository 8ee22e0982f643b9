"""Name -> builder registry behind `kd_keras.models.get`."""

from kd_keras.quantization import quantize

_BUILDERS = {}


def register(name):
    """Register a model builder under `name` for `kd_keras.models.get`.

    A builder is a function `(input_shape, num_classes, **kwargs) ->
    keras.Model` returning a model that outputs logits.

    Args:
        name: the zoo name, e.g. `"resnet20"`.

    Returns:
        A decorator that registers and returns the builder unchanged.

    Example:
    ```python
    @kd_keras.models.register("tiny")
    def tiny(input_shape, num_classes):
        ...
    ```
    """

    def decorator(builder):
        if name in _BUILDERS:
            raise ValueError(f"A model named {name!r} is already registered.")
        _BUILDERS[name] = builder
        return builder

    return decorator


def names():
    """Return the sorted names of every model in the zoo."""
    return sorted(_BUILDERS)


def get(name, input_shape=(28, 28, 1), num_classes=10, bits=None, **kwargs):
    """Build a zoo model by name; every zoo model outputs logits.

    Args:
        name: a name from `kd_keras.models.names()`.
        input_shape: shape of one input, without the batch axis.
        num_classes: number of output logits.
        bits: if given, a low-bit student: the model passed through
            `kd_keras.quantize(model, bits)` (DoReFa weights and activations
            of `bits` bits, first and last layers full precision).
        **kwargs: passed to the builder (e.g. `width` for `mlp`).

    Returns:
        An unbuilt-weights `keras.Model` named after `name`.

    Example:
    ```python
    student = kd_keras.models.get("mlp", input_shape=(28, 28, 1), num_classes=10)
    low_bit = kd_keras.models.get("resnet18", (32, 32, 3), 100, bits=2)
    ```
    """
    if name not in _BUILDERS:
        raise ValueError(f"Unknown model {name!r}: choose one of {', '.join(sorted(_BUILDERS))}.")
    model = _BUILDERS[name](tuple(input_shape), int(num_classes), **kwargs)
    return model if bits is None else quantize(model, bits)
