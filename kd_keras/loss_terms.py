"""How the Distiller reads its losses: which outputs each term takes, and how a view weighs it."""

import warnings

import keras
from keras import ops

# The key of a model's logits among the outputs of its feature extractor.
FINAL_OUTPUT = "final_output"


def warn_if_logits_kl(loss):
    """Warn when a `LogitsDistillation` would take the KL of raw logits."""
    # keras.distillation.LogitsDistillation's default loss="kl_divergence"
    # becomes the function kl_divergence, not a KLDivergence instance, so no
    # softmax is applied: the KL of logits clipped to [1e-7, 1] teaches nothing.
    if not isinstance(loss, keras.distillation.LogitsDistillation):
        return
    if any(function is keras.losses.kl_divergence for function in keras.tree.flatten(loss.loss)):
        warnings.warn(
            "LogitsDistillation(loss='kl_divergence') applies no softmax in Keras "
            f"{keras.__version__} (it takes the KL of clipped logits, which trains "
            "to chance): pass loss=keras.losses.KLDivergence() or use "
            "kd_keras.losses.TemperatureKL(temperature).",
            stacklevel=3,
        )


def layer_names(distillation_losses, attribute):
    """The distinct layer names the losses read through `attribute`, in order."""
    names = []
    for loss in distillation_losses:
        name = getattr(loss, attribute, None)
        if name and name not in names:
            names.append(name)
    return names


def feature_extractor(model, layer_names):
    """A model giving `model`'s logits and the named layers' outputs in one pass."""
    if not layer_names:
        return None
    if getattr(model, "inputs", None) is None:
        raise ValueError(
            f"Cannot create feature extractor for {model.name}. The model has no "
            "symbolic inputs attribute."
        )
    final = model.layers[-1].output if isinstance(model, keras.Sequential) else model.output
    outputs = {FINAL_OUTPUT: final}
    for name in layer_names:
        outputs[name] = model.get_layer(name=name).output
    return keras.Model(model.inputs, outputs, name=f"{model.name}_multi_feature_extractor")


def loss_inputs(distillation_loss, teacher_outputs, student_outputs):
    """The teacher and student outputs one distillation term compares: logits or named layers."""
    teacher_layer = getattr(distillation_loss, "teacher_layer_name", None)
    if not teacher_layer:
        return teacher_outputs[FINAL_OUTPUT], student_outputs[FINAL_OUTPUT]
    student_layer = distillation_loss.student_layer_name or FINAL_OUTPUT
    return teacher_outputs[teacher_layer], student_outputs[student_layer]


def as_loss_function(loss):
    """A `(y, y_pred) -> per-sample values` function for a Keras loss argument."""
    if isinstance(loss, str):
        function = keras.losses.get(loss)
        if function is None:
            raise ValueError(f"Unknown loss function: '{loss}'.")
        if function in _PROBABILITY_LOSSES:
            warnings.warn(
                f"loss={loss!r} reads the student's outputs as probabilities, but a "
                "distillation student outputs logits: pass e.g. "
                "keras.losses.SparseCategoricalCrossentropy(from_logits=True), or "
                "loss=None for the logits cross-entropy.",
                stacklevel=4,
            )
        return function
    if isinstance(loss, keras.losses.Loss):
        # The unreduced values: the Distiller weights and averages them per view.
        return loss.call
    if callable(loss):
        return loss
    raise ValueError(f"loss must be a Keras loss, a function or a name, got {loss!r}.")


_PROBABILITY_LOSSES = (
    keras.losses.sparse_categorical_crossentropy,
    keras.losses.categorical_crossentropy,
)


def is_scalar(weight):
    """Whether a view's weight is one number (not per-sample weights)."""
    return isinstance(weight, (int, float)) or len(getattr(weight, "shape", ())) == 0


def is_zero(weight):
    """Whether a weight is known to be 0 while tracing, so its term can be skipped."""
    # Only a weight known to be 0 while tracing skips its term's computation.
    return isinstance(weight, (int, float)) and weight == 0


def weighted_mean(values, weight):
    """Mean over a view of `weight * values` (a number or per-sample weights)."""
    values = ops.cast(values, "float32")
    count = ops.maximum(ops.cast(ops.size(values), "float32"), 1.0)
    return ops.sum(values * ops.cast(weight, "float32")) / count


def per_sample(distillation_loss, teacher_logits, student_logits):
    """Per-sample values of a distillation term, for per-sample view weights."""
    per_sample = getattr(distillation_loss, "call", None)
    if per_sample is None:
        raise TypeError(
            f"{type(distillation_loss).__name__} gives no per-sample values, which "
            "this augmenter's per-sample distillation weights need: use "
            "kd_keras.losses.TemperatureKL."
        )
    return per_sample(teacher_logits, student_logits)


def unique_names(distillation_losses, reserved):
    """One log name per distillation term, none repeated and none in `reserved`."""
    names = []
    for loss in distillation_losses:
        base = getattr(loss, "name", None) or type(loss).__name__.lower()
        name, index = base, 1
        while name in names or name in reserved:
            index += 1
            name = f"{base}_{index}"
        names.append(name)
    return names
