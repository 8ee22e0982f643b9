"""TST: a learned augmentation policy, op magnitudes and probabilities, for what the student misses."""

import math

import keras
import numpy as np
from keras import ops

from kd_keras import losses as kd_losses
from kd_keras.augment import ops as image_ops
from kd_keras.augment.base import Augmenter
from kd_keras.augment.base import View
from kd_keras.augment.base import Views

# How draws are shared: one op set and one gate per op for the batch (the
# official code) or per image; signed ops in one direction (the official
# surrogates, m in (0, 1)) or a random one per image.
PER = ("batch", "image")
DIRECTIONS = ("one", "random")
# Cutout: the official one (a box of half to all of each side, one per draw,
# filled with the batch mean; `kd_keras.augment.ops.tst_cutout`) or
# AutoAugment's square per image whose side the op's magnitude sets.
CUTOUTS = ("official", "magnitude")
# Added inside -log(1 - p_s(y | x~) + eps): the paper's 1e-8.
_EPSILON = 1e-8
# Keeps the logistic noise of the relaxed Bernoulli finite.
_UNIFORM_CLIP = 1e-7


def relaxed_bernoulli(logits, uniform, temperature):
    """Return relaxed Bernoulli (binary Concrete) gates from their logits and uniform noise.

    `b = sigmoid((logits + log(u) - log(1 - u)) / temperature)`: a value in
    `[0, 1]`, differentiable with respect to the logits, that tends to the
    hard gate `1[u > 1 - p]` (a Bernoulli(p) draw, `p = sigmoid(logits)`) as
    the temperature tends to 0.

    References:
        Maddison, Mnih, Teh. The Concrete Distribution, ICLR 2017; Jang, Gu,
        Poole. Categorical Reparameterization with Gumbel-Softmax, ICLR 2017.

    Args:
        logits: `log(p / (1 - p))`, any shape.
        uniform: `U(0, 1)` noise broadcastable to `logits`.
        temperature: relaxation temperature (> 0).

    Returns:
        float32 gates of the broadcast shape, in `[0, 1]`.

    Example:
    ```python
    u = keras.random.uniform((batch, ops_count))
    gates = kd_keras.augment.tst.relaxed_bernoulli(theta_p, u, 0.05)
    ```
    """
    uniform = ops.clip(ops.cast(uniform, "float32"), _UNIFORM_CLIP, 1.0 - _UNIFORM_CLIP)
    noise = ops.log(uniform) - ops.log(1.0 - uniform)
    return ops.sigmoid((ops.cast(logits, "float32") + noise) / temperature)


def _prior(value, names, what):
    if isinstance(value, dict):
        unknown = sorted(set(value) - set(names))
        if unknown:
            raise ValueError(
                f"initial_{what} names ops the policy does not use: "
                f"{', '.join(unknown)} (its ops: {', '.join(names)})."
            )
        values = [float(value.get(name, 0.5)) for name in names]
    else:
        values = [float(value)] * len(names)
    for name, v in zip(names, values):
        if not 0.0 < v < 1.0:
            raise ValueError(
                f"initial_{what} of {name} must be in (0, 1) (it is a sigmoid), got {v}."
            )
    return values


@keras.saving.register_keras_serializable(package="kd_keras")
class LearnedPolicy(Augmenter):
    """TST's augmentation policy: image ops with learned magnitudes and probabilities.

    Each op `i` of the library (`kd_keras.augment.ops`) has a magnitude
    `m_i = sigmoid(theta_m_i)` and a probability `p_i = sigmoid(theta_p_i)`.
    For each image the policy picks `num_ops` distinct ops at random and a
    relaxed Bernoulli gate `b_i ~ RelaxedBernoulli(p_i, temperature)` for
    each, and makes the view

        x~ = clip(x + sum_i b_i * (op_i(x; +-m_i) - x), 0, 1)

    (the ops act on `x` side by side, not in sequence). As the official code
    does by default, the op set and the gates are drawn once per batch
    (`per="batch"`; `"image"` draws them per image: the same expectation,
    less variance) and signed ops (shears, translations, rotation, the
    colour enhancers) move one way, by `+m` (`directions="one"`, the official
    surrogates' `m = sigmoid(theta)` in `(0, 1)`; `"random"` draws a sign per
    image). In the Distiller's augmenter phase (teacher and
    student frozen, inference mode) its optimiser minimises

        mean[-log p_t(y | x~)] + mean[-log(1 - p_s(y | x~) + 1e-8)],

    views the teacher still gets right and the student gets wrong, with
    gradients flowing through both networks and the differentiable ops into
    `theta`. Magnitudes are learned for the ops with `Op.learnable`; the
    others (Equalize, Invert and Cutout in TST's library) learn only their
    probability. Cutout is the official one by default (`cutout="official"`,
    `kd_keras.augment.ops.tst_cutout`): one box per batch (per image with
    `per="image"`) spanning half to all of each side (16..32 px of 32,
    4..8 of 8; a one-row signal loses a segment of half to all of its
    length), filled with the batch's channel mean (the official code zeroes
    normalised images, i.e. fills the dataset mean); it is one of the ops
    drawn and gated like the others, its magnitude unused.
    `cutout="magnitude"` cuts a square per image whose side is the Cutout
    magnitude (kept at its prior) times 62.5% of the shorter side, filled
    with `fill_value`.
    In the student phase the student trains on `[x, x~]` with the labels
    kept on both halves, so a Distiller with `student_loss_weight=1` and a
    `KD_4` weight of 1 minimises TST's
    `0.5 [CE + KD_4](x~) + 0.5 [CE + KD_4](x)` (`kd_keras.recipes.tst`).

    The official code applies neural surrogates of the ops; here the ops are
    exact (Posterize and Solarize with straight-through gradients). It also
    feeds probabilities where the relaxed Bernoulli expects logits (an
    effective p in 0.5..0.73); here the logits are `theta_p`. Its Cutout's
    fill is the dataset mean, ours the batch mean. The final clip to
    `[0, 1]` is ours.

    References:
        Shao et al., "Teaching What You Should Teach: A Data-Based
        Distillation Method", IJCAI 2023 (METHODS.md section 4); official
        code github.com/shaoshitong/TST (SDAKD_FOR_BASELINE). The exact ops
        and the clip are our formalisation.

    Args:
        ops: op names from `kd_keras.augment.ops.OPS`; defaults to TST's 14
            (`kd_keras.augment.ops.TST_OPS`).
        num_ops: ops drawn per image (`k`, at most `len(ops)`).
        temperature: relaxed Bernoulli temperature; towards 0 the gates
            become hard 0/1 draws (and their gradients rarer and larger).
        initial_magnitude: the prior magnitude in `(0, 1)`, one number for
            every op or `{op name: value}` (others 0.5). 0.5 is the official
            initialisation (`theta = 0`).
        initial_probability: the prior probability, likewise.
        fill_value: value of pixels the geometric ops (and Cutout with
            `cutout="magnitude"`) bring in, in the inputs' units.
        per: `"batch"` (official) or `"image"`: how often ops, gates and
            the official Cutout's box are drawn.
        directions: `"one"` (official: signed ops move by `+m`) or `"random"`.
        cutout: `"official"` (TST's box, filled with the batch mean) or
            `"magnitude"` (a square per image sized by the Cutout magnitude,
            filled with `fill_value`).
        value_range: `(low, high)`, the inputs' range: the ops see it
            mapped onto their `[0, 1]` and the view comes back in it (e.g.
            the training min and max of standardised MNIST-1D).
        seed: seed of the draws (an int), or `None`.
        **kwargs: passed to `keras.layers.Layer`.

    Returns:
        An `Augmenter` with trainable weights `magnitude_logits` and
        `probability_logits`; pass it to `kd_keras.Distiller(augmenter=...)`.

    Example:
    ```python
    policy = kd_keras.augment.LearnedPolicy(num_ops=4, seed=0)
    distiller = kd_keras.Distiller(teacher, student, augmenter=policy,
                                   student_loss_weight=0.5, student_forward="joint")
    distiller.compile(optimizer="sgd",
                      augmenter_optimizer=keras.optimizers.SGD(0.01, momentum=0.9))
    ```
    """

    def __init__(
        self,
        ops=None,
        num_ops=4,
        temperature=0.05,
        initial_magnitude=0.5,
        initial_probability=0.5,
        fill_value=0.0,
        per="batch",
        directions="one",
        cutout="official",
        value_range=(0.0, 1.0),
        seed=None,
        **kwargs,
    ):
        super().__init__(seed=seed, **kwargs)
        if per not in PER:
            raise ValueError(f"per must be one of {PER}, got {per!r}.")
        if directions not in DIRECTIONS:
            raise ValueError(f"directions must be one of {DIRECTIONS}, got {directions!r}.")
        if cutout not in CUTOUTS:
            raise ValueError(f"cutout must be one of {CUTOUTS}, got {cutout!r}.")
        self.per = per
        self.directions = directions
        self.cutout = cutout
        names = list(image_ops.TST_OPS if ops is None else ops)
        if not names:
            raise ValueError("ops is empty: give at least one op name.")
        if len(set(names)) != len(names):
            raise ValueError(f"ops lists an op twice: {names}.")
        self._ops = [image_ops.get(name) for name in names]
        if not 1 <= int(num_ops) <= len(names):
            raise ValueError(
                f"num_ops must be in 1..{len(names)} (the number of ops), got {num_ops}."
            )
        if not temperature > 0:
            raise ValueError(f"temperature must be positive, got {temperature}.")
        self.ops = names
        self.num_ops = int(num_ops)
        self.temperature = float(temperature)
        self.initial_magnitude = initial_magnitude
        self.initial_probability = initial_probability
        self._initial_magnitudes = _prior(initial_magnitude, names, "magnitude")
        self._initial_probabilities = _prior(initial_probability, names, "probability")
        self.fill_value = float(fill_value)
        self.value_range = image_ops.value_range(value_range)

    @property
    def input_range(self):
        # The ops and the final clip work in [0, 1], the inputs mapped onto it.
        return self.value_range

    def build(self, input_shape):
        if input_shape is None or len(input_shape) != 4 or input_shape[-1] not in (1, 3):
            raise ValueError(
                "LearnedPolicy augments images of shape (batch, height, width, "
                f"channels) with 1 or 3 channels, got input shape {input_shape}."
            )

        def logits(probabilities):
            values = [math.log(p / (1.0 - p)) for p in probabilities]
            return keras.initializers.Constant(np.array(values, "float32"))

        count = len(self._ops)
        self.magnitude_logits = self.add_weight(
            shape=(count,),
            initializer=logits(self._initial_magnitudes),
            dtype="float32",
            name="magnitude_logits",
        )
        self.probability_logits = self.add_weight(
            shape=(count,),
            initializer=logits(self._initial_probabilities),
            dtype="float32",
            name="probability_logits",
        )

    def magnitudes(self):
        """Return the ops' magnitudes `sigmoid(theta_m)`, a float32 `(len(ops),)` tensor.

        Only the learnable ops' entries carry a gradient.
        """
        learnable = ops.array([op.learnable for op in self._ops])
        logits = ops.where(
            learnable, self.magnitude_logits, ops.stop_gradient(self.magnitude_logits)
        )
        return ops.sigmoid(logits)

    def probabilities(self):
        """Return the ops' probabilities `sigmoid(theta_p)`, a float32 `(len(ops),)` tensor."""
        return ops.sigmoid(self.probability_logits)

    def augment(self, x, seed=None):
        """Return the view `x~` of a batch, differentiable w.r.t. the policy's weights.

        Args:
            x: `(batch, height, width, channels)` images in `value_range`.
            seed: a `keras.random.SeedGenerator` for the draws (ops, gates,
                signs, Cutout's squares), or `None` for the layer's own; a
                fresh generator with a fixed seed makes the view
                reproducible.

        Returns:
            float32 images of `x`'s shape in `value_range`.
        """
        seed = self.seed_generator if seed is None else seed
        low, high = self.value_range
        x = (ops.cast(x, "float32") - low) / (high - low)
        fill_value = (self.fill_value - low) / (high - low)
        count = len(self._ops)
        batch = ops.shape(x)[0]
        # One draw for the batch (broadcast to every image) or one per image.
        draws = 1 if self.per == "batch" else batch
        # k distinct ops: the k largest of n uniform keys.
        keys = keras.random.uniform((draws, count), seed=seed)
        kth = ops.top_k(keys, self.num_ops, sorted=True)[0][:, -1:]
        chosen = ops.broadcast_to(ops.cast(keys >= kth, "float32"), (batch, count))
        gates = ops.broadcast_to(
            relaxed_bernoulli(
                self.probability_logits[None, :],
                keras.random.uniform((draws, count), seed=seed),
                self.temperature,
            ),
            (batch, count),
        )
        if self.directions == "random":
            flips = keras.random.uniform((batch, count), seed=seed) < 0.5
            signs = ops.where(flips, -1.0, 1.0)
        else:  # the official surrogates take m = sigmoid(theta) in (0, 1): one way
            signs = ops.ones((batch, count))
        magnitudes = self.magnitudes()
        total = ops.zeros_like(x)
        for index, op in enumerate(self._ops):
            magnitude = magnitudes[index] * ops.ones((batch,))
            if op.signed:
                magnitude = magnitude * signs[:, index]
            options = {}
            if op.takes_fill_value:
                options["fill_value"] = fill_value
            if op.takes_seed:
                options["seed"] = seed
            if op.name == "Cutout" and self.cutout == "official":
                view = image_ops.tst_cutout(x, per_image=self.per == "image", seed=seed)
            else:
                view = op.function(x, magnitude, **options)
            change = view - x
            weight = chosen[:, index] * gates[:, index]
            total = total + weight[:, None, None, None] * change
        return ops.clip(x + total, 0.0, 1.0) * (high - low) + low

    def views(self, x, y, teacher_fn, student_fn, training=True):
        if not training:
            return View(x, y, deterministic=True)
        # The student phase trains the student only; cutting the graph here
        # keeps an outer tape from differentiating through the policy.
        x_tilde = ops.stop_gradient(self.augment(x))
        return Views(
            View(ops.cast(x, x_tilde.dtype), y, deterministic=True),
            View(x_tilde, y),
        )

    def objective(self, x, y, teacher_fn, student_fn, seed=None):
        """Return TST's policy loss: teacher right, student wrong, on `x~`.

        `mean[-log p_t(y | x~)] + mean[-log(1 - p_s(y | x~) + 1e-8)]`, in
        float32, differentiable w.r.t. the policy's weights through both
        networks. Both terms are computed from logits (the teacher's as a
        cross-entropy, which for soft labels is `-sum_c y_c log p_t(c)`; the
        student's by `kd_keras.losses.log_one_minus_label_probability`, with
        `p_s(y) = sum_c y_c p_s(c)`), so they stay finite however confident
        the networks are.

        Args:
            x: a batch of images in `[0, 1]`.
            y: its labels (integer ids or per-class probabilities).
            teacher_fn: `inputs -> teacher logits`.
            student_fn: `inputs -> student logits`.
            seed: a `keras.random.SeedGenerator` for the view's draws, or
                `None` for the layer's own (see `augment`).

        Returns:
            A float32 scalar tensor.
        """
        x_tilde = self.augment(x, seed=seed)
        teacher_logits = ops.cast(teacher_fn(x_tilde), "float32")
        student_logits = ops.cast(student_fn(x_tilde), "float32")
        teacher_wrong = kd_losses.cross_entropy_per_sample(y, teacher_logits)
        student_right = -kd_losses.log_one_minus_label_probability(y, student_logits, _EPSILON)
        return ops.mean(teacher_wrong) + ops.mean(student_right)

    def log_scalars(self):
        """Return the current policy for logging: `{"magnitude/<op>": m, "probability/<op>": p}`.

        Ops without a magnitude (Equalize, Invert, AutoContrast) have no
        magnitude entry; Cutout's is its fixed prior (unused with
        `cutout="official"`). `kd_keras.callbacks.ViewSnapshots` writes these to
        TensorBoard each epoch and `PolicyTrajectory` records them.

        Returns:
            A dict of Python floats.
        """
        magnitudes = ops.convert_to_numpy(self.magnitudes())
        probabilities = ops.convert_to_numpy(self.probabilities())
        scalars = {}
        for op, magnitude in zip(self._ops, magnitudes):
            if op.has_magnitude:
                scalars[f"magnitude/{op.name}"] = float(magnitude)
        for op, probability in zip(self._ops, probabilities):
            scalars[f"probability/{op.name}"] = float(probability)
        return scalars

    def call(self, inputs, training=False):
        if not training:
            return inputs
        return self.augment(inputs)

    def get_config(self):
        return {
            **super().get_config(),
            "ops": list(self.ops),
            "num_ops": self.num_ops,
            "temperature": self.temperature,
            "initial_magnitude": self.initial_magnitude,
            "initial_probability": self.initial_probability,
            "fill_value": self.fill_value,
            "per": self.per,
            "directions": self.directions,
            "cutout": self.cutout,
            "value_range": list(self.value_range),
        }
