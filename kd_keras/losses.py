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
            raise ValueError(
                f"temperature must be positive, got {temperature}: use e.g. 4.0."
            )
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
        return keras.losses.sparse_categorical_crossentropy(
            labels, logits, from_logits=True
        )
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
