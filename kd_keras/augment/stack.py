"""A stack of augmenters: each stage augments the newest view the stage before made."""

import dataclasses

import keras
from keras import ops

from kd_keras.augment.base import Augmenter
from kd_keras.augment.base import View
from kd_keras.augment.base import Views
from kd_keras.augment.base import as_views


@keras.saving.register_keras_serializable(package="kd_keras")
class Stack(Augmenter):
    """Augmenters composed in order, e.g. a learned policy, then CutMixPick on its views.

    Stage `k` receives the newest view stage `k - 1` made (for the first
    stage, the batch) and its views replace that view: `Stack([LearnedPolicy(),
    CutMixPick()])` trains on `[x, x~, pick(cutmix(x~))]`, each view with the
    label and distillation weights its stage gave it (a stage that keeps its
    input, as every kd_keras augmenter but `FunctionMatching` does, hands it
    on with the weights it came with). Several stages may be learnable: the
    Distiller's augmenter phase minimises the sum of their objectives, each
    computed on that stage's own input (the earlier stages' views, without
    gradient), with one optimiser over all their weights. Host-side
    augmentation (a PBA policy in tf.data) comes before every stage; stack
    it with recipes (`--recipe=rolewise+backward`, see `kd_keras.recipes.get`).

    Args:
        stages: a list of `kd_keras.augment.Augmenter`, applied in order.
        **kwargs: passed to `keras.layers.Layer`.

    Returns:
        An augmenter; `views(...)` returns `kd_keras.augment.Views`.

    Example:
    ```python
    stack = kd_keras.augment.Stack([kd_keras.augment.LearnedPolicy(),
                                    kd_keras.augment.CutMixPick()])
    distiller = kd_keras.Distiller(teacher, student, augmenter=stack)
    ```
    """

    def __init__(self, stages, **kwargs):
        super().__init__(**kwargs)
        stages = list(stages)
        if not stages or not all(isinstance(stage, Augmenter) for stage in stages):
            raise ValueError(
                f"Stack takes a non-empty list of kd_keras augmenters, got {stages!r}."
            )
        self.stages = stages

    def build(self, input_shape):
        for stage in self.stages:
            if not stage.built:
                stage.build(input_shape)
        super().build(input_shape)

    @property
    def keeps_input(self):
        return self.stages[0].keeps_input

    @property
    def input_range(self):
        ranges = [stage.input_range for stage in self.stages if stage.input_range is not None]
        if not ranges:
            return None
        return (max(low for low, _ in ranges), min(high for _, high in ranges))

    def views(self, x, y, teacher_fn, student_fn, training=True):
        if not training:
            return View(x, y, deterministic=True)
        views = [View(x, y, deterministic=True)]
        for stage in self.stages:
            views.extend(_stage_views(stage, views.pop(), teacher_fn, student_fn))
        return Views(*views)

    def objective(self, x, y, teacher_fn, student_fn):
        total = ops.zeros((), "float32")
        current = View(x, y, deterministic=True)
        for stage in self.stages:
            if stage.trainable_weights:
                total = total + ops.cast(
                    stage.objective(current.x, current.y, teacher_fn, student_fn), "float32"
                )
            if stage is not self.stages[-1]:
                newest = _stage_views(stage, current, teacher_fn, student_fn)[-1]
                current = dataclasses.replace(newest, x=ops.stop_gradient(newest.x))
        return total

    def call(self, inputs, training=False):
        for stage in self.stages:
            inputs = stage(inputs, training=training)
        return inputs

    def get_config(self):
        return {
            **super().get_config(),
            "stages": [keras.saving.serialize_keras_object(stage) for stage in self.stages],
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["stages"] = [keras.saving.deserialize_keras_object(s) for s in config["stages"]]
        return cls(**config)


def _stage_views(stage, given, teacher_fn, student_fn):
    made = list(as_views(stage.views(given.x, given.y, teacher_fn, student_fn, training=True)))
    if stage.keeps_input:
        # The stage's first view is its input: it keeps the weights and the
        # flags the input came with.
        first = made[0]
        # Teacher outputs, logits with the features of their pass, come
        # from the stage when it computed them, else from the stage before.
        source = first if first.teacher_logits is not None else given
        made[0] = dataclasses.replace(
            first,
            label_weight=given.label_weight,
            distill_weight=given.distill_weight,
            deterministic=given.deterministic,
            teacher_logits=source.teacher_logits,
            teacher_features=source.teacher_features,
        )
    return made
