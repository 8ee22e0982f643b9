"""Precision of a run: the Keras dtype policy students are built under, and the teacher's."""

import contextlib

import keras

from kd_keras import _keras_compat

PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")
TEACHER_PRECISIONS = ("float32", "bfloat16", "float16")


def check(precision, teacher_precision="float32"):
    """Raise a one-line ValueError for an unknown precision name.

    Args:
        precision: one of `PRECISIONS` (the student's, and of models built by a run).
        teacher_precision: one of `TEACHER_PRECISIONS` (the frozen teacher's).
    """
    if precision not in PRECISIONS:
        raise ValueError(f"Unknown precision {precision!r}: choose one of {', '.join(PRECISIONS)}.")
    if teacher_precision not in TEACHER_PRECISIONS:
        raise ValueError(
            f"Unknown teacher precision {teacher_precision!r}: choose one of "
            f"{', '.join(TEACHER_PRECISIONS)}."
        )


@contextlib.contextmanager
def policy(precision):
    """Build models under the global Keras dtype policy `precision`, then restore the old one.

    Keras layers take the global policy when they are created, so models
    (and the Distiller, whose optimiser then scales the loss under
    `mixed_float16`) must be built inside. Layers loaded from a `.keras` file
    keep the policy they were saved with: a float32 teacher stays float32.

    Args:
        precision: one of `PRECISIONS`.

    Example:
    ```python
    with kd_keras.precision.policy("mixed_bfloat16"):
        student = kd_keras.models.get("resnet20")
    ```
    """
    check(precision)
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(precision)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def computes_in(model, dtype):
    """True when some layer of `model` computes in `dtype` (e.g. `"float16"`)."""
    return any(
        layer.dtype_policy.compute_dtype == dtype
        for layer in _keras_compat.flatten_layers(model, include_self=False)
        # Containers and inputs compute nothing; their policy is the global
        # one at load time even in a float32 model.
        if not isinstance(layer, (keras.Model, keras.layers.InputLayer))
    )
