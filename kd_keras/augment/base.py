"""The augmenter contract: how a method shows data to teacher and student."""

import dataclasses
from typing import Any

import keras


@dataclasses.dataclass
class Views:
    """The batch a distillation step trains on, as an augmenter made it.

    Every network that sees the batch sees exactly these inputs (one sampled
    transformation for all of them).

    Args:
        x: the inputs shown to teacher and student, e.g. `concat([x, x_mixed])`.
        y: labels aligned with `x` (integer ids or per-class probabilities).
        teacher_logits: the teacher's logits on `x` when the augmenter already
            computed them (e.g. to score candidates), so the Distiller does not
            run the teacher a second time; `None` otherwise.
        label_weight: per-sample weights of the label (cross-entropy) term,
            `None` for all ones. A zero removes the label from a sample, e.g. a
            teacher-relabelled mixed view.
        distill_weight: per-sample weights of the distillation terms, `None`
            (the usual case) for all ones. Non-uniform weights need losses
            that give per-sample values (`call(teacher, student)`, as every
            `keras.losses.Loss` such as `kd_keras.losses.TemperatureKL` does).
    """

    x: Any
    y: Any
    teacher_logits: Any = None
    label_weight: Any = None
    distill_weight: Any = None


@keras.saving.register_keras_serializable(package="kd_keras")
class Augmenter(keras.layers.Layer):
    """Base class of kd_keras augmenters: a layer that makes the views of a step.

    Subclasses override `views`; a learnable augmenter (one with trainable
    weights) also overrides `objective`, the scalar its own optimiser
    minimises during the Distiller's augmenter phase. Networks are passed in
    as callables and never stored, so their weights are not tracked twice.
    `training=False` must be the identity. The base class is the identity
    augmenter, which is plain KD.

    Args:
        **kwargs: passed to `keras.layers.Layer`.

    Example:
    ```python
    class Flip(kd_keras.augment.Augmenter):
        def views(self, x, y, teacher_fn, student_fn, training=True):
            if not training:
                return kd_keras.augment.Views(x, y)
            return kd_keras.augment.Views(keras.ops.flip(x, axis=2), y)
    ```
    """

    def views(self, x, y, teacher_fn, student_fn, training=True):
        """Return the `Views` one step trains the student on.

        Args:
            x: a batch of inputs.
            y: the batch's labels.
            teacher_fn: `inputs -> teacher logits` (frozen, inference mode).
            student_fn: `inputs -> student logits` (inference mode, for scoring).
            training: `False` returns the inputs unchanged.

        Returns:
            A `kd_keras.augment.Views`.
        """
        return Views(x, y)

    def objective(self, x, y, teacher_fn, student_fn):
        """Return the scalar the augmenter's optimiser minimises (learnable augmenters).

        Args:
            x: a batch of inputs.
            y: the batch's labels.
            teacher_fn: `inputs -> teacher logits`, differentiable w.r.t. inputs.
            student_fn: `inputs -> student logits`, differentiable w.r.t. inputs.

        Returns:
            A float32 scalar tensor.
        """
        raise TypeError(
            f"{type(self).__name__} has trainable weights but no objective(): "
            "define objective() or make its weights non-trainable."
        )

    def call(self, inputs, training=False):
        return inputs
