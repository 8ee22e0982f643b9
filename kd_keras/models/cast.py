"""`cast_model`: a copy of a model that computes (and stores) in another precision."""

import keras


def cast_model(model, dtype):
    """Return a copy of `model` whose layers use the dtype policy `dtype`, weights cast.

    Use it for a reduced-precision teacher: `cast_model(teacher, "bfloat16")`
    stores the frozen teacher's weights in bfloat16 and runs its forward pass
    in bfloat16, while the student trains in float32 (logits are cast to
    float32 before every softmax, so only the teacher's forward is affected;
    `benchmarks/scale.py` measures the speed-up and the error of its soft
    targets). `"mixed_bfloat16"` / `"mixed_float16"` keep float32 weights and
    compute in reduced precision, as for a trained student; `"float32"`
    turns a mixed-precision student back into a float32 one (e.g. to export
    it). The input layers keep their dtype, and `model` is not modified.

    Args:
        model: a `keras.Model` built from its config (functional, sequential,
            or serialisable subclassed).
        dtype: a Keras dtype policy name: `"float32"`, `"bfloat16"`,
            `"float16"`, `"mixed_bfloat16"` or `"mixed_float16"`.

    Returns:
        A new `keras.Model` with the same architecture and weights.

    Example:
    ```python
    fast_teacher = kd_keras.models.cast_model(teacher, "bfloat16")
    ```
    """
    policy = keras.dtype_policies.get(dtype)
    config = _with_policy(model.get_config(), policy.name)
    clone = type(model).from_config(config)
    clone.set_weights([_as_numpy(w) for w in model.weights])
    return clone


def _with_policy(config, name):
    if isinstance(config, list):
        return [_with_policy(item, name) for item in config]
    if not isinstance(config, dict):
        return config
    config = {key: _with_policy(value, name) for key, value in config.items()}
    inner = config.get("config")
    if (
        "class_name" in config
        and config["class_name"] != "InputLayer"
        and isinstance(inner, dict)
        and "dtype" in inner
    ):
        config["config"] = {**inner, "dtype": name}
    return config


def _as_numpy(variable):
    return keras.ops.convert_to_numpy(keras.ops.cast(variable, "float32"))
