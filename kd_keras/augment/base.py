"""The augmenter contract: how a method shows data to teacher and student."""

import dataclasses
import random
from typing import Any

import keras
import tensorflow as tf

from kd_keras.augment.seed import ReplicaSeedGenerator


@dataclasses.dataclass
class View:
    """One batch a distillation step trains on, with the weights of its loss terms.

    Every network that sees the view sees exactly `x` (one sampled
    transformation for all of them). In the step's loss each term is the
    per-view mean, weighted and summed over views, so an augmenter that
    shows `[x, x']` gives `KD(x) + KD(x')` as the papers write it
    (`kd_keras.Distiller` has the full formula).

    Args:
        x: the inputs of the view.
        y: labels aligned with `x` (integer ids or per-class probabilities).
        teacher_logits: the teacher's logits on `x` when the augmenter already
            computed them (e.g. to score candidates), so the Distiller does not
            run the teacher a second time; `None` otherwise.
        label_weight: weight of the view's label (student-loss) term: a
            number, or per-sample weights (the term is then the mean of
            weight times loss). 0 drops the labels, e.g. on a
            teacher-relabelled mixed view.
        distill_weight: weight of the view's distillation terms, a number or
            per-sample weights (per-sample weights need losses that give
            per-sample values, as `kd_keras.losses.TemperatureKL` does).
        deterministic: True when `x` is the batch as it came in (the same
            every epoch for the same sample), so cached teacher outputs may
            serve it.
        teacher_features: the teacher's intermediate outputs on `x` (a dict,
            layer name -> tensor) from the pass that gave `teacher_logits`,
            as `teacher_outputs` returns them; None when the Distiller needs
            none (no feature loss) or they were not computed.
    """

    x: Any
    y: Any
    teacher_logits: Any = None
    label_weight: Any = 1.0
    distill_weight: Any = 1.0
    deterministic: bool = False
    teacher_features: Any = None


class Views:
    """The views one step trains on, in order: `Views(View(x, y), View(x_mixed, ...))`.

    Put the clean batch first when the augmenter keeps it: the student's
    compiled metrics are computed on the first view.

    Args:
        *views: one or more `kd_keras.augment.View`.

    Example:
    ```python
    views = kd_keras.augment.Views(
        kd_keras.augment.View(x, y, deterministic=True),
        kd_keras.augment.View(x_mixed, y, label_weight=0.0),
    )
    ```
    """

    def __init__(self, *views):
        if not views or not all(isinstance(view, View) for view in views):
            raise TypeError(f"Views takes one or more kd_keras.augment.View, got {views!r}.")
        self.views = tuple(views)

    def __iter__(self):
        return iter(self.views)

    def __len__(self):
        return len(self.views)

    def __getitem__(self, index):
        return self.views[index]

    @property
    def x(self):
        """Every view's inputs, concatenated along the batch."""
        return _concatenate([view.x for view in self.views])

    @property
    def y(self):
        """Every view's labels, concatenated along the batch."""
        return _concatenate([view.y for view in self.views])

    @property
    def teacher_logits(self):
        """Every view's teacher logits, concatenated; None unless every view has them."""
        if any(view.teacher_logits is None for view in self.views):
            return None
        return _concatenate([view.teacher_logits for view in self.views])


def teacher_outputs(teacher_fn, x):
    """The teacher's logits on `x` and the features the distillation losses need, in one pass.

    An augmenter that hands teacher logits to the Distiller
    (`View.teacher_logits`) computes them with this function and passes the
    features on too (`View.teacher_features`, sliced, picked and
    concatenated as the logits are, see `map_features`), so a feature loss
    (`keras.distillation.FeatureDistillation`,
    `kd_keras.losses.HintDistillation`) costs no second pass of the
    teacher. The Distiller's `teacher_fn` has a `with_features(x)` method;
    any other callable gives logits and no features.

    Args:
        teacher_fn: the `teacher_fn` an augmenter's `views` receives.
        x: a batch of inputs.

    Returns:
        `(logits, features)`: `features` is a dict (layer name -> tensor),
        or None when no loss needs the teacher's features.

    Example:
    ```python
    logits, features = kd_keras.augment.base.teacher_outputs(teacher_fn, x_mixed)
    view = kd_keras.augment.View(x_mixed, y, logits, teacher_features=features)
    ```
    """
    with_features = getattr(teacher_fn, "with_features", None)
    if with_features is None:
        return teacher_fn(x), None
    return with_features(x)


def map_features(function, *features):
    """Apply `function` to each layer's tensors of one or more feature dicts.

    Slices, picks and concatenates teacher features the way an augmenter
    treats the logits of the same pass; None (no features) stays None.

    Args:
        function: `(*tensors) -> tensor`, called once per layer name.
        *features: feature dicts with the same keys, or None.

    Returns:
        A dict with the same keys, or None when any input is None.

    Example:
    ```python
    picked = kd_keras.augment.base.map_features(
        lambda f: keras.ops.take(f, indices, axis=0), features)
    ```
    """
    if not features or any(feature is None for feature in features):
        return None
    return {name: function(*(f[name] for f in features)) for name in features[0]}


def as_views(made):
    """Return `made` (a `View` or `Views`, as `Augmenter.views` returns) as `Views`."""
    if isinstance(made, View):
        return Views(made)
    if isinstance(made, Views):
        return made
    raise TypeError(
        f"An augmenter's views() must return a kd_keras.augment.View or Views, got "
        f"{type(made).__name__}."
    )


def _concatenate(tensors):
    if len(tensors) == 1:
        return tensors[0]
    dtype = tensors[0].dtype
    return keras.ops.concatenate([keras.ops.cast(t, dtype) for t in tensors], axis=0)


@keras.saving.register_keras_serializable(package="kd_keras")
class Augmenter(keras.layers.Layer):
    """Base class of kd_keras augmenters: a layer that makes the views of a step.

    Subclasses override `views`; a learnable augmenter (one with trainable
    weights) also overrides `objective`, the scalar its own optimiser
    minimises during the Distiller's augmenter phase. Networks are passed in
    as callables and never stored, so their weights are not tracked twice.
    `training=False` must be the identity. The base class is the identity
    augmenter, which is plain KD.

    Every augmenter draws its randomness from `self.seed_generator`, a
    `kd_keras.augment.ReplicaSeedGenerator` (different draws on each
    tf.distribute replica). An augmenter made with `seed=None` takes its seed
    when it is first built, so `keras.utils.set_random_seed` before training
    fixes its draws even when it was constructed earlier.

    Args:
        seed: seed of the augmenter's draws (an int), or None.
        **kwargs: passed to `keras.layers.Layer`.

    Example:
    ```python
    class Flip(kd_keras.augment.Augmenter):
        def views(self, x, y, teacher_fn, student_fn, training=True):
            if not training:
                return kd_keras.augment.View(x, y)
            return kd_keras.augment.View(keras.ops.flip(x, axis=2), y)
    ```
    """

    def __init__(self, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.seed = seed
        self.seed_generator = ReplicaSeedGenerator(seed)

    def build(self, input_shape):
        # Only eagerly: an assign traced into a tf.data function would reset
        # the state every batch.
        if self.seed is None and tf.executing_eagerly():
            state = self.seed_generator.state
            state.assign(keras.ops.cast([random.randint(1, int(1e9)), 0], state.dtype))
        super().build(input_shape)

    def get_config(self):
        return {**super().get_config(), "seed": self.seed}

    @property
    def input_range(self):
        """The `(low, high)` range of input values its views assume, or None for any.

        Augmenters of image ops (TST's policy, a VAE's decoder, a clipped
        perturbation) make views in `[0, 1]`; `kd_keras.distill` refuses
        inputs outside such a range before training rather than clip them
        into garbage.
        """
        return None

    @property
    def keeps_input(self):
        """True when the first view `views` returns is its input, unchanged."""
        return True

    def views(self, x, y, teacher_fn, student_fn, training=True):
        """Return the `Views` one step trains the student on.

        Args:
            x: a batch of inputs.
            y: the batch's labels.
            teacher_fn: `inputs -> teacher logits` (frozen, inference mode).
            student_fn: `inputs -> student logits` (inference mode, for scoring).
            training: `False` returns the inputs unchanged.

        Returns:
            A `kd_keras.augment.View` or `kd_keras.augment.Views`.
        """
        return View(x, y, deterministic=True)

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
