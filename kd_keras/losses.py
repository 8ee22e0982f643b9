"""Distillation losses and the log-probabilities the augmenters' objectives need, all from logits."""

import math

import keras
from keras import ops

# Stands in for log(0) where a class is masked out: far below any finite
# log-probability of float32 logits, and finite, so no gradient meets inf.
_LOG_ZERO = -1e30


@keras.saving.register_keras_serializable(package="kd_keras")
class TemperatureKL(keras.losses.Loss):
    """Hinton's distillation loss `T^2 * KL(softmax(t / T) || softmax(s / T))`.

    Computed in float32 whatever the models' compute dtype, so it stays exact
    under mixed precision. It is a regular Keras loss whose `y_true` is the
    teacher's logits and `y_pred` the student's, and it also honours the
    `keras.distillation.DistillationLoss` contract (`compute_loss`), so the
    `kd_keras.Distiller` and `keras.distillation.Distiller` both accept it.

    References:
        Hinton, Vinyals, Dean. Distilling the Knowledge in a Neural Network,
        2015 (arXiv:1503.02531).

    Args:
        temperature: softmax temperature `T` (> 0). The `T^2` factor keeps the
            gradient scale independent of `T`.
        reduction: Keras loss reduction; the default averages over the batch.
        name: the loss name, used for its metric in the Distiller's logs.
        **kwargs: passed to `keras.losses.Loss`.

    Returns:
        A loss object; calling it returns the batch-averaged loss.

    Example:
    ```python
    loss = kd_keras.losses.TemperatureKL(temperature=4.0)
    value = loss(teacher_logits, student_logits)
    ```
    """

    def __init__(
        self,
        temperature=4.0,
        reduction="sum_over_batch_size",
        name="kd",
        **kwargs,
    ):
        kwargs.setdefault("dtype", "float32")
        super().__init__(reduction=reduction, name=name, **kwargs)
        if not temperature > 0:
            raise ValueError(f"temperature must be positive, got {temperature}: use e.g. 4.0.")
        self.temperature = float(temperature)

    def call(self, y_true, y_pred):
        return kl_per_sample(y_true, y_pred, self.temperature) * self.temperature**2

    def compute_loss(self, teacher_outputs, student_outputs, **kwargs):
        """Return the batch mean, as the distillation-loss contract asks.

        Unlike `__call__`, which (like every Keras loss) divides by the number
        of replicas when called inside a `tf.distribute` replica, this is the
        plain mean over the replica's batch: the Distiller scales the total
        loss once, itself.
        """
        return ops.mean(self.call(teacher_outputs, student_outputs))

    def validate_outputs(self, teacher_outputs, student_outputs):
        if teacher_outputs.shape[-1] != student_outputs.shape[-1]:
            raise ValueError(
                f"Teacher and student output {teacher_outputs.shape[-1]} and "
                f"{student_outputs.shape[-1]} classes: they must agree."
            )

    def validate_model_compatibility(self, teacher, student):
        self.validate_outputs(teacher.outputs[0], student.outputs[0])

    def get_config(self):
        return {**super().get_config(), "temperature": self.temperature}


# `projection` values of HintDistillation: a regressor when the widths differ, always, never.
PROJECTIONS = ("auto", True, False)


@keras.saving.register_keras_serializable(package="kd_keras")
class HintDistillation(keras.layers.Layer, keras.distillation.DistillationLoss):
    """FitNets' hint loss: the mean squared error between a teacher's and a student's features.

    The features are the outputs of the layers named `teacher_layer_name` and
    `student_layer_name`, taken (as `keras.distillation.FeatureDistillation`
    takes them) from the same forward pass as the logits. When the widths
    (last axes) differ, a learned projection, FitNets' regressor, maps the
    student's features to the teacher's width: a `Dense` layer on the last
    axis, i.e. a 1x1 convolution on `(batch, height, width, channels)`
    features, so the spatial sizes must agree. The loss is
    `mean((t - r(s))^2)` over every feature element (without a projection:
    `FeatureDistillation(loss="mse")`'s value), computed in float32.

    The projection belongs to the student's side: `kd_keras.Distiller`
    trains it with the student's optimiser, saves it in the Distiller's
    `.keras` file, and never exports it (the student alone is shipped). It
    is built from the models' layer shapes when the Distiller is made. Use
    one instance per Distiller.

    References:
        Romero et al. FitNets: Hints for Thin Deep Nets, ICLR 2015.

    Args:
        teacher_layer_name: the name of the teacher layer giving the hint.
        student_layer_name: the name of the student layer it guides.
        projection: `"auto"` adds the learned projection when the widths
            differ, `True` always, `False` never (the widths must agree).
        name: the loss name, used for its metric in the Distiller's logs.
        **kwargs: passed to `keras.layers.Layer` (the projection computes
            in float32 unless `dtype` says otherwise).

    Returns:
        A distillation loss (a layer): `compute_loss(teacher_features,
        student_features)` is the batch mean, calling it gives per-sample
        values.

    Example:
    ```python
    hint = kd_keras.losses.HintDistillation("teacher_conv", "student_conv")
    distiller = kd_keras.Distiller(
        teacher, student, [kd_keras.losses.TemperatureKL(4.0), hint],
        distillation_loss_weights=[1.0, 10.0], student_loss_weight=0.1)
    ```
    """

    def __init__(
        self,
        teacher_layer_name,
        student_layer_name,
        projection="auto",
        name="hint",
        **kwargs,
    ):
        kwargs.setdefault("dtype", "float32")
        super().__init__(name=name, **kwargs)
        if not teacher_layer_name or not student_layer_name:
            raise ValueError(
                "HintDistillation needs both layer names, got teacher_layer_name="
                f"{teacher_layer_name!r} and student_layer_name={student_layer_name!r}."
            )
        # Booleans by identity: 1 and 0 are not choices.
        if not (projection == "auto" or projection is True or projection is False):
            raise ValueError(f"projection must be one of {PROJECTIONS}, got {projection!r}.")
        self.teacher_layer_name = teacher_layer_name
        self.student_layer_name = student_layer_name
        self.projection = projection
        self.regressor = None

    def build(self, teacher_features_shape, student_features_shape):
        teacher_shape = tuple(teacher_features_shape)
        student_shape = tuple(student_features_shape)
        if len(teacher_shape) != len(student_shape) or teacher_shape[1:-1] != student_shape[1:-1]:
            raise ValueError(
                f"The hint {self.teacher_layer_name!r} has shape {teacher_shape} and the "
                f"guided layer {self.student_layer_name!r} {student_shape}: the projection "
                "maps widths only (a 1x1 convolution), so pick layers of the same rank "
                "and spatial size (e.g. after the same number of downsamplings)."
            )
        widths_differ = teacher_shape[-1] != student_shape[-1]
        if widths_differ and self.projection is False:
            raise ValueError(
                f"The hint {self.teacher_layer_name!r} is {teacher_shape[-1]} wide and "
                f"{self.student_layer_name!r} {student_shape[-1]}: use projection='auto' "
                "to learn a projection between them."
            )
        if self.projection is True or (self.projection == "auto" and widths_differ):
            self.regressor = keras.layers.Dense(
                teacher_shape[-1], dtype=self.dtype_policy, name="regressor"
            )
            self.regressor.build(student_shape)

    def validate_model_compatibility(self, teacher, student):
        """Find both layers and build the projection from their output shapes."""
        shapes = [
            _layer_output_shape(model, layer, role)
            for model, layer, role in (
                (teacher, self.teacher_layer_name, "teacher"),
                (student, self.student_layer_name, "student"),
            )
        ]
        if not self.built:
            self.build(*shapes)
        else:
            self.validate_outputs(keras.KerasTensor(shapes[0]), keras.KerasTensor(shapes[1]))

    def validate_outputs(self, teacher_outputs, student_outputs):
        student_shape = tuple(student_outputs.shape)
        width = student_shape[-1] if self.regressor is None else self.regressor.units
        expected = (*student_shape[1:-1], width)
        if tuple(teacher_outputs.shape[1:]) != expected:
            raise ValueError(
                f"The hint {self.teacher_layer_name!r} has shape "
                f"{tuple(teacher_outputs.shape)}, the (projected) features of "
                f"{self.student_layer_name!r} {(student_shape[0], *expected)}: they must agree."
            )

    def call(self, teacher_features, student_features):
        student = ops.cast(student_features, "float32")
        if self.regressor is not None:
            student = ops.cast(self.regressor(student), "float32")
        error = ops.square(ops.cast(teacher_features, "float32") - student)
        return ops.mean(error, axis=tuple(range(1, len(error.shape))))

    def compute_loss(self, teacher_outputs, student_outputs, **kwargs):
        """Return the batch mean of the per-sample mean squared errors."""
        return ops.mean(self.call(teacher_outputs, student_outputs))

    def get_config(self):
        return {
            **super().get_config(),
            "teacher_layer_name": self.teacher_layer_name,
            "student_layer_name": self.student_layer_name,
            "projection": self.projection,
        }


def _layer_output_shape(model, layer_name, role):
    if getattr(model, "inputs", None) is None:
        raise ValueError(
            f"HintDistillation reads the {role}'s layer {layer_name!r}, which needs a "
            f"Functional or Sequential model; the {role} {model.name!r} is subclassed."
        )
    try:
        layer = model.get_layer(name=layer_name)
    except ValueError as error:
        raise ValueError(f"In the {role} model: {error}") from None
    return tuple(layer.output.shape)


def kl_per_sample(teacher_logits, student_logits, temperature=1.0):
    """Per-sample `KL(softmax(t / T) || softmax(s / T))` in float32, without `T^2`.

    The building block of every divergence in kd_keras (the loss above, the
    CutMixPick score, the augmenters' objectives); log-softmax keeps it finite
    when probabilities underflow.

    Args:
        teacher_logits: `(batch, classes)` logits of the reference distribution.
        student_logits: `(batch, classes)` logits of the approximating one.
        temperature: softmax temperature.

    Returns:
        A float32 tensor of shape `(batch,)`.

    Example:
    ```python
    kl = kd_keras.losses.kl_per_sample(t_logits, s_logits, temperature=4.0)
    ```
    """
    t = ops.cast(teacher_logits, "float32") / temperature
    s = ops.cast(student_logits, "float32") / temperature
    log_p = ops.log_softmax(t, axis=-1)
    log_q = ops.log_softmax(s, axis=-1)
    return ops.sum(ops.exp(log_p) * (log_p - log_q), axis=-1)


def cross_entropy_per_sample(labels, logits):
    """Per-sample cross-entropy in float32 for integer or soft (one-hot, mixed) labels.

    Integer labels of shape `(batch,)` (or `(batch, 1)`) use the sparse form;
    float labels of shape `(batch, classes)` the categorical one.

    Args:
        labels: integer class ids or per-class probabilities.
        logits: `(batch, classes)` logits.

    Returns:
        A float32 tensor of shape `(batch,)`.

    Example:
    ```python
    ce = kd_keras.losses.cross_entropy_per_sample(y, student_logits)
    ```
    """
    logits = ops.cast(logits, "float32")
    if _is_sparse(labels, logits):
        labels = ops.reshape(ops.cast(labels, "int32"), (-1,))
        return keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True)
    return keras.losses.categorical_crossentropy(
        ops.cast(labels, "float32"), logits, from_logits=True
    )


def entropy_per_sample(logits, temperature=1.0):
    """Per-sample entropy of `softmax(logits / T)` in float32, in nats.

    Computed from log-softmax, so a confident distribution (probabilities
    underflowing to 0) has entropy 0, not NaN.

    Args:
        logits: `(batch, classes)` logits, any float dtype.
        temperature: softmax temperature.

    Returns:
        A float32 tensor of shape `(batch,)`.

    Example:
    ```python
    h = kd_keras.losses.entropy_per_sample(teacher_logits)
    ```
    """
    log_p = ops.log_softmax(ops.cast(logits, "float32") / temperature, axis=-1)
    return -ops.sum(ops.exp(log_p) * log_p, axis=-1)


def log_one_minus_label_probability(labels, logits, epsilon=0.0):
    """Per-sample `log(1 - p(y) + epsilon)` under `softmax(logits)`, in float32.

    `1 - p(y)` is the probability of the other classes, so its log is
    `logsumexp` of the other logits minus `logsumexp` of all (for soft labels
    the classes weighted by `1 - y_c`), and `epsilon` is added in log space
    (`logaddexp` with `log(epsilon)`). Unlike `log(1 - softmax(z)[y])` it does
    not reach `log(0)` when the model is certain, and no graph rewrite can
    fold `epsilon` away (TensorFlow's turns `1 - p + eps` into `(1 + eps) -
    p`, which is 0 in float32 when `p` rounds to 1).

    Args:
        labels: `(batch,)` (or `(batch, 1)`) class ids, or `(batch, classes)`
            per-class probabilities.
        logits: `(batch, classes)` logits, any float dtype.
        epsilon: added to `1 - p(y)` inside the log (>= 0); with 0 the
            result is about `-1e30` for a single class.

    Returns:
        A float32 tensor of shape `(batch,)`.

    Example:
    ```python
    # TST's student term, -log(1 - p_s(y) + 1e-8):
    term = -kd_keras.losses.log_one_minus_label_probability(y, logits, 1e-8)
    ```
    """
    if not epsilon >= 0:
        raise ValueError(f"epsilon must be >= 0, got {epsilon}: use e.g. 1e-8.")
    log_p = ops.log_softmax(ops.cast(logits, "float32"), axis=-1)
    if _is_sparse(labels, log_p):
        ids = ops.reshape(ops.cast(labels, "int32"), (-1,))
        others = 1.0 - ops.one_hot(ids, log_p.shape[-1], dtype="float32")
    else:
        others = 1.0 - ops.cast(labels, "float32")
    log_rest = _log_weighted_sum_exp(log_p, others)
    if epsilon > 0:
        log_rest = ops.logaddexp(log_rest, math.log(epsilon))
    return log_rest


def _log_weighted_sum_exp(values, weights):
    # log sum_c w_c exp(v_c) for weights in [0, 1]; a zero weight is masked
    # before its log is taken, so neither the value nor a gradient meets log(0).
    weights = ops.clip(weights, 0.0, 1.0)
    positive = weights > 0.0
    log_weights = ops.log(ops.where(positive, weights, 1.0))
    return ops.logsumexp(ops.where(positive, values + log_weights, _LOG_ZERO), axis=-1)


def predicted_class(labels_or_logits):
    """Class ids from integer labels, one-hot/soft labels or logits (argmax)."""
    if len(labels_or_logits.shape) >= 2 and labels_or_logits.shape[-1] != 1:
        return ops.cast(ops.argmax(labels_or_logits, axis=-1), "int32")
    return ops.reshape(ops.cast(labels_or_logits, "int32"), (-1,))


def _is_sparse(labels, logits):
    rank = len(labels.shape)
    return rank == 1 or (rank == 2 and labels.shape[-1] == 1 and logits.shape[-1] != 1)
