"""Backward-pass KD: auxiliary samples where the student diverges from the teacher.

`BackwardPerturbation` moves each input a few normalised gradient-ascent
steps up the teacher-student divergence `KL(p_t^T || p_s^T)` (the gradient
with respect to the input is the "backward pass knowledge"), keeps it in an
eps-ball around the original and in the valid input range, and lets the
teacher label the result (METHODS.md §5). Images are perturbed directly;
text is perturbed as relaxed one-hot token distributions, which both
networks read through `kd_keras.layers.TokenEmbedding`.
"""

import math

import keras
import tensorflow as tf
from keras import ops

from kd_keras.augment.base import Augmenter
from kd_keras.augment.base import View
from kd_keras.augment.base import Views
from kd_keras.augment.base import map_features
from kd_keras.augment.base import teacher_outputs
from kd_keras.layers import is_distribution
from kd_keras.losses import kl_per_sample

NORMS = ("l2", "linf")

# Default radii of the eps-ball, per kind of input and norm, chosen on the
# offline defaults (single-seed sweeps, 30 epochs of digits with the MLP
# student, 20 of text-default with the text CNN). Images are in [0, 1]: l2
# 1.0 is about a tenth of a 28x28 digit's own norm (0.5 and 1.0 did as well
# as KD or better, 1.5 and 3.0 worse); linf 0.1 is 25/255. Token
# distributions: moving a whole position to another token is an l2 step of
# sqrt(2) ~ 1.41, so l2 0.5 is about a third of one word substitution per
# sequence (0.5 beat 0.25, 1.0 and 2.0, the last by 10 points); linf 0.5
# lets every position put up to half its mass on other tokens (0.25 to 1.0
# did alike).
IMAGE_EPSILON = {"l2": 1.0, "linf": 0.1}
TEXT_EPSILON = {"l2": 0.5, "linf": 0.5}


def project_to_simplex(v):
    """Euclidean projection of each vector along the last axis onto the probability simplex.

    The sort-based algorithm: sort `v` in decreasing order as `u`, find the
    largest `rho` with `u_rho - (sum_{i<=rho} u_i - 1) / rho > 0`, and
    return `max(v - theta, 0)` with `theta = (sum_{i<=rho} u_i - 1) / rho`.
    Fixed shapes only (a sort, a cumulative sum, a gather), so it compiles
    under XLA.

    References:
        Held, Wolfe, Crowder. Validation of subgradient optimization,
        Math. Programming 6, 1974; Duchi et al. Efficient projections onto
        the l1-ball for learning in high dimensions, ICML 2008.

    Args:
        v: a float tensor `(..., n)`.

    Returns:
        A tensor of `v`'s shape whose last-axis vectors are non-negative and
        sum to 1, each the closest such vector to its row of `v`.

    Example:
    ```python
    p = kd_keras.augment.backward.project_to_simplex(keras.ops.array([[0.8, 0.6, -0.1]]))
    # [[0.6, 0.4, 0.0]]
    ```
    """
    v = ops.cast(v, "float32")
    size = v.shape[-1]
    u = ops.flip(ops.sort(v, axis=-1), axis=-1)
    cumulative = ops.cumsum(u, axis=-1) - 1.0
    index = ops.arange(1, size + 1, dtype="float32")
    support = ops.sum(ops.cast(u - cumulative / index > 0, "int32"), axis=-1, keepdims=True)
    # rho >= 1 always holds in exact arithmetic (u_1 - (u_1 - 1) = 1 > 0).
    support = ops.maximum(support, 1)
    theta = ops.take_along_axis(cumulative, support - 1, axis=-1) / ops.cast(support, "float32")
    return ops.maximum(v - theta, 0.0)


def _per_sample(function, x):
    # Reduce over every axis but the batch, keeping them for broadcasting.
    return function(x, axis=tuple(range(1, len(x.shape))), keepdims=True)


@keras.saving.register_keras_serializable(package="kd_keras")
class BackwardPerturbation(Augmenter):
    """Auxiliary samples by gradient ascent on the teacher-student KL, labelled by the teacher.

    Use it to distil where the student is furthest from the teacher, near
    the training data: from each input `x_0 = x` it takes `steps`
    normalised gradient-ascent steps

        x_{j+1} = Proj(x_j + step_size * d(grad_x KL(p_t^T(x_j) || p_s^T(x_j))))

    where `d(g)` is `g / ||g||_2` (`norm="l2"`) or `sign(g)` (`"linf"`),
    per sample, and `Proj` keeps `x_{j+1}` within `epsilon` of `x` in that
    norm and in the valid input range. The student then trains on `[x,
    x_k]`: cross-entropy on `x` only (label weight 0 on `x_k`), KD on both,
    with the teacher's logits on `x_k` as the targets. Both networks run in
    inference mode and neither is written; the augmenter has no trainable
    weights, so it has no phase of its own and works inside the student's
    step.

    Passes per step, for a batch of `B` fully perturbed: teacher forward on
    `x_0 ... x_k` (`(k + 1) B`, `k B` of them with a backward pass),
    student forward and backward on `x_0 ... x_{k-1}` (`k B`). The teacher's
    logits on `x_0` and `x_k` are returned in the views, so the Distiller
    does not run the teacher again.

    **Text.** Integer inputs are token ids: they become one-hot
    distributions `(batch, seq, vocabulary_size)` and the perturbation
    moves those, as `TokenEmbedding` embeds them (`P @ E`); teacher and
    student must share the vocabulary and may differ in embedding size. The
    gradient is centred over the vocabulary first (its component along the
    all-ones direction would only be undone), each step is projected onto
    the simplex at every position (`project_to_simplex`), then shrunk
    towards `x` until it lies in the eps-ball: a convex combination of two
    points of the simplex stays on it. For `"l2"` that last step is the
    ball's exact projection; for `"linf"` it is a feasible retraction, not
    the Euclidean projection onto the intersection. Both halves of the
    views are then distributions (the clean half one-hot), so both networks
    must accept distributions, as `kd_keras.models.TextClassifier` does.

    **Fraction.** With `fraction < 1` only `ceil(fraction * B)` samples,
    drawn at random from the batch, are perturbed; the views hold all `B`
    clean samples and those auxiliary ones.

    **Pool.** The paper augments the training set with its auxiliary
    samples; `pool_size > 0` keeps them in a fixed-size ring buffer (a
    non-trainable variable, so shapes never change under XLA). Each step
    makes `fresh = count - drawn` new auxiliary samples, where `count =
    ceil(fraction * B)` and `drawn = floor(pool_fraction * count)`, writes
    them into the pool (overwriting the oldest once it is full; only the
    last `pool_size` when there are more), then draws `drawn` samples
    uniformly from the filled part of the pool, this step's included.
    The auxiliary half is `[fresh samples, pool draws]`. The teacher labels
    the draws again (one forward pass over them): it is frozen, so this is
    the label it gave when they were made, and storing logits would need
    the class count when the layer is built. Their `Views.y` is the
    teacher's class (their label weight is zero; only the training accuracy
    metric reads it). The pool holds `pool_size` inputs in float32: for
    text, `pool_size * seq * vocabulary_size * 4` bytes.

    References:
        Jafari, Rezagholizadeh, Ghodsi 2023, "Improved knowledge
        distillation by utilizing backward pass knowledge in neural
        networks" (seed 004). The paper's step size, number of steps and
        norm were not available: the normalised, projected ascent, the
        defaults, the simplex handling of text and the pool are our
        formalisation (METHODS.md §5). Madry et al. 2018 (PGD) for the
        projected steps and the `2.5 * epsilon / steps` step size.

    Args:
        steps: gradient-ascent steps `k` (>= 1).
        step_size: `eta`, the length of each normalised step; None is
            `2.5 * epsilon / steps`.
        epsilon: radius of the ball around `x`; None takes
            `IMAGE_EPSILON[norm]` for float inputs and `TEXT_EPSILON[norm]`
            for token ids.
        norm: `"l2"` or `"linf"`, of the ball and of the step direction.
        temperature: softmax temperature of the KL that is ascended.
        fraction: fraction of each batch that is perturbed, in (0, 1].
        value_range: `(low, high)` valid range of float inputs (default
            `(0, 1)`, kd_keras's image range), or None for no clipping.
            Token distributions always stay on the simplex.
        vocabulary_size: number of tokens; required for token-id inputs.
        pool_size: capacity of the pool of auxiliary samples; 0 disables it.
        pool_fraction: fraction of each step's auxiliary samples drawn from
            the pool, in [0, 1).
        seed: int seed of the layer's `SeedGenerator` (batch subsets, pool
            draws); None seeds it when the layer is built.
        **kwargs: passed to `keras.layers.Layer`.

    Returns:
        An augmenter without trainable weights; `views(...)` returns
        `kd_keras.augment.Views` with `teacher_logits` set.

    Example:
    ```python
    augmenter = kd_keras.augment.BackwardPerturbation(steps=3, norm="l2")
    distiller = kd_keras.Distiller(teacher, student, augmenter=augmenter,
                                   student_loss_weight=0.1)
    ```
    """

    def __init__(
        self,
        steps=3,
        step_size=None,
        epsilon=None,
        norm="l2",
        temperature=4.0,
        fraction=1.0,
        value_range=(0.0, 1.0),
        vocabulary_size=None,
        pool_size=0,
        pool_fraction=0.5,
        seed=None,
        **kwargs,
    ):
        super().__init__(seed=seed, **kwargs)
        if int(steps) < 1:
            raise ValueError(f"steps must be at least 1, got {steps}: use e.g. 3.")
        if norm not in NORMS:
            raise ValueError(f"norm must be one of {', '.join(NORMS)}, got {norm!r}.")
        for name, value in (("step_size", step_size), ("epsilon", epsilon)):
            if value is not None and not float(value) > 0:
                raise ValueError(f"{name} must be positive or None, got {value}.")
        if not float(temperature) > 0:
            raise ValueError(f"temperature must be positive, got {temperature}.")
        if not 0 < float(fraction) <= 1:
            raise ValueError(f"fraction must be in (0, 1], got {fraction}.")
        if value_range is not None:
            value_range = tuple(float(v) for v in value_range)
            if len(value_range) != 2 or not value_range[0] < value_range[1]:
                raise ValueError(
                    f"value_range must be (low, high) with low < high, got {value_range}."
                )
        if int(pool_size) < 0:
            raise ValueError(f"pool_size must be >= 0, got {pool_size}.")
        if not 0 <= float(pool_fraction) < 1:
            raise ValueError(
                f"pool_fraction must be in [0, 1), got {pool_fraction}: some "
                "auxiliary samples must be new, or the pool never fills."
            )
        self.steps = int(steps)
        self.step_size = None if step_size is None else float(step_size)
        self.epsilon = None if epsilon is None else float(epsilon)
        self.norm = norm
        self.temperature = float(temperature)
        self.fraction = float(fraction)
        self.value_range = value_range
        self.vocabulary_size = None if vocabulary_size is None else int(vocabulary_size)
        self.pool_size = int(pool_size)
        self.pool_fraction = float(pool_fraction)

    @property
    def input_range(self):
        return self.value_range

    def build(self, input_shape):
        if self.pool_size:
            if input_shape is None or any(d is None for d in input_shape[1:]):
                raise ValueError(
                    "The pool needs the input shape: call "
                    "augmenter.build((None, *input_shape)) or give the teacher "
                    f"a known input shape (got {input_shape})."
                )
            sample_shape = tuple(input_shape[1:])
            if self.vocabulary_size is not None:
                sample_shape += (self.vocabulary_size,)
            # Each replica keeps its own pool; checkpoints store the first's.
            self.pool = self.add_weight(
                shape=(self.pool_size, *sample_shape),
                initializer="zeros",
                trainable=False,
                name="pool",
                aggregation="only_first_replica",
            )
            self.pool_next = self.add_weight(
                shape=(),
                dtype="int32",
                initializer="zeros",
                trainable=False,
                name="pool_next",
                aggregation="only_first_replica",
            )
            self.pool_filled = self.add_weight(
                shape=(),
                dtype="int32",
                initializer="zeros",
                trainable=False,
                name="pool_filled",
                aggregation="only_first_replica",
            )
        super().build(input_shape)

    def radius(self, text):
        """Return `(epsilon, step_size)` for token ids (`text=True`) or float inputs."""
        defaults = TEXT_EPSILON if text else IMAGE_EPSILON
        epsilon = self.epsilon if self.epsilon is not None else defaults[self.norm]
        step_size = self.step_size if self.step_size is not None else 2.5 * epsilon / self.steps
        return epsilon, step_size

    def relax(self, x):
        """Return the continuous form of a batch: one-hot float32 distributions of ids, float32 otherwise."""
        if is_distribution(x):
            return ops.cast(x, "float32")
        if self.vocabulary_size is None:
            raise ValueError(
                "Integer inputs are token ids, which BackwardPerturbation "
                "perturbs as one-hot distributions: pass vocabulary_size=..."
            )
        return ops.one_hot(ops.cast(x, "int32"), self.vocabulary_size, dtype="float32")

    def direction(self, gradient, text):
        """The normalised ascent direction of a gradient (centred over tokens for text)."""
        if text:
            gradient = gradient - ops.mean(gradient, axis=-1, keepdims=True)
        if self.norm == "linf":
            return ops.sign(gradient)
        # Scaled by its largest entry first, so the squares neither overflow
        # (huge logits) nor underflow (a saturated KL's tiny gradients): the
        # direction has unit norm whenever the gradient is not 0.
        largest = _per_sample(ops.max, ops.abs(gradient))
        gradient = gradient / ops.where(largest > 0.0, largest, 1.0)
        return gradient / (ops.sqrt(_per_sample(ops.sum, gradient**2)) + 1e-12)

    def project(self, x_new, x, text, epsilon):
        """Bring `x_new` back into the eps-ball around `x` and the valid inputs."""
        if text:
            delta = project_to_simplex(x_new) - x
            if self.norm == "linf":
                size = _per_sample(ops.max, ops.abs(delta))
            else:
                size = ops.sqrt(_per_sample(ops.sum, delta**2))
            return x + delta * ops.minimum(1.0, epsilon / (size + 1e-12))
        delta = x_new - x
        if self.norm == "linf":
            delta = ops.clip(delta, -epsilon, epsilon)
        else:
            size = ops.sqrt(_per_sample(ops.sum, delta**2))
            delta = delta * ops.minimum(1.0, epsilon / (size + 1e-12))
        x_new = x + delta
        if self.value_range is not None:
            # x lies in the range, so clipping only moves each coordinate
            # towards it: the point stays in the ball.
            x_new = ops.clip(x_new, *self.value_range)
        return x_new

    def perturb(self, x, teacher_fn, student_fn):
        """Run the projected ascent from `x`; return `(x_k, teacher(x), teacher(x_k))`.

        Args:
            x: a batch of float inputs or token ids.
            teacher_fn: `inputs -> teacher logits`, differentiable w.r.t. inputs.
            student_fn: `inputs -> student logits`, differentiable w.r.t. inputs.

        Returns:
            The auxiliary batch `x_k` (float32; distributions for token ids)
            and the teacher's logits on `x` and on `x_k`, without gradients.
        """
        return self._perturb(x, teacher_fn, student_fn)[:3]

    def _perturb(self, x, teacher_fn, student_fn):
        # perturb, plus the teacher's features on x and x_k from the passes
        # that gave their logits (None when no loss needs them).
        text = not is_distribution(x)
        epsilon, step_size = self.radius(text)
        origin = self.relax(x)
        current = origin
        clean_logits = clean_features = None
        for _ in range(self.steps):
            with tf.GradientTape(watch_accessed_variables=False) as tape:
                tape.watch(current)
                if clean_logits is None:
                    # The first pass is on x itself: it labels the clean view.
                    teacher_logits, clean_features = teacher_outputs(teacher_fn, current)
                    clean_logits = teacher_logits
                else:
                    teacher_logits = teacher_fn(current)
                divergence = ops.sum(
                    kl_per_sample(teacher_logits, student_fn(current), self.temperature)
                )
            gradient = ops.cast(tape.gradient(divergence, current), "float32")
            step = current + step_size * self.direction(gradient, text)
            current = ops.stop_gradient(self.project(step, origin, text, epsilon))
        teacher_moved, moved_features = teacher_outputs(teacher_fn, current)
        return (
            current,
            ops.stop_gradient(clean_logits),
            ops.stop_gradient(teacher_moved),
            map_features(ops.stop_gradient, clean_features),
            map_features(ops.stop_gradient, moved_features),
        )

    def views(self, x, y, teacher_fn, student_fn, training=True):
        if not training:
            return View(x, y, deterministic=True)
        y = ops.convert_to_tensor(y)
        batch = ops.shape(x)[0]
        if self.fraction < 1:
            order = ops.argsort(
                keras.random.uniform((batch,), dtype="float32", seed=self.seed_generator)
            )
            x, y = ops.take(x, order, axis=0), ops.take(y, order, axis=0)
        count, drawn = self._counts(batch)
        fresh = count - drawn
        x_fresh, teacher_clean, teacher_fresh, features_clean, features_fresh = self._perturb(
            x[:fresh], teacher_fn, student_fn
        )
        clean = self.relax(x)
        if self.fraction < 1 or self.pool_size:
            rest, features_rest = teacher_outputs(teacher_fn, clean[fresh:])
            teacher_clean = ops.concatenate([teacher_clean, ops.stop_gradient(rest)], axis=0)
            features_clean = map_features(
                lambda first, second: ops.concatenate([first, ops.stop_gradient(second)], axis=0),
                features_clean,
                features_rest,
            )
        inputs, teacher_logits, labels = [x_fresh], [teacher_fresh], [y[:fresh]]
        features = [features_fresh]
        if self.pool_size:
            self._remember(x_fresh)
            x_drawn = self._draw(drawn)
            teacher_drawn, features_drawn = teacher_outputs(teacher_fn, x_drawn)
            teacher_drawn = ops.stop_gradient(teacher_drawn)
            inputs.append(x_drawn)
            teacher_logits.append(teacher_drawn)
            features.append(map_features(ops.stop_gradient, features_drawn))
            labels.append(_as_labels(teacher_drawn, y))
        # The clean batch keeps the labels; the auxiliary samples (fresh and
        # from the pool, one view) are labelled by the teacher alone. With
        # fraction < 1 the clean view is shuffled, so it is not deterministic.
        return Views(
            View(
                clean,
                y,
                teacher_clean,
                deterministic=self.fraction >= 1,
                teacher_features=features_clean,
            ),
            View(
                ops.concatenate(inputs, axis=0),
                ops.concatenate(labels, axis=0),
                ops.concatenate(teacher_logits, axis=0),
                label_weight=0.0,
                teacher_features=map_features(
                    lambda *parts: ops.concatenate(parts, axis=0), *features
                ),
            ),
        )

    def _counts(self, batch):
        """`(count, drawn)`: auxiliary samples per step, and how many come from the pool."""
        if isinstance(batch, int):
            count = math.ceil(self.fraction * batch)
            drawn = math.floor(self.pool_fraction * count) if self.pool_size else 0
            return count, drawn
        count = ops.cast(ops.ceil(self.fraction * ops.cast(batch, "float32")), "int32")
        if not self.pool_size:
            return count, 0
        drawn = ops.cast(ops.floor(self.pool_fraction * ops.cast(count, "float32")), "int32")
        return count, drawn

    def _remember(self, samples):
        samples = samples[ops.maximum(ops.shape(samples)[0] - self.pool_size, 0) :]
        written = ops.shape(samples)[0]
        indices = (self.pool_next + ops.arange(written, dtype="int32")) % self.pool_size
        self.pool.assign(tf.tensor_scatter_nd_update(self.pool.value, indices[:, None], samples))
        self.pool_next.assign((self.pool_next + written) % self.pool_size)
        self.pool_filled.assign(ops.minimum(self.pool_filled + written, self.pool_size))

    def _draw(self, drawn):
        filled = ops.maximum(self.pool_filled, 1)
        draws = keras.random.uniform((drawn,), dtype="float32", seed=self.seed_generator)
        indices = ops.minimum(ops.cast(draws * ops.cast(filled, "float32"), "int32"), filled - 1)
        return ops.take(self.pool, indices, axis=0)

    def get_config(self):
        return {
            **super().get_config(),
            "steps": self.steps,
            "step_size": self.step_size,
            "epsilon": self.epsilon,
            "norm": self.norm,
            "temperature": self.temperature,
            "fraction": self.fraction,
            "value_range": None if self.value_range is None else list(self.value_range),
            "vocabulary_size": self.vocabulary_size,
            "pool_size": self.pool_size,
            "pool_fraction": self.pool_fraction,
            "seed": self.seed,
        }


def _as_labels(teacher_logits, y):
    """The teacher's classes in the format of `y` (integer ids or one-hot rows)."""
    classes = ops.argmax(teacher_logits, axis=-1)
    if len(y.shape) >= 2 and y.shape[-1] != 1:
        return ops.cast(ops.one_hot(classes, teacher_logits.shape[-1]), y.dtype)
    return ops.cast(ops.reshape(classes, (-1, *y.shape[1:])), y.dtype)
