"""Numerics: every loss and augmenter objective is finite, with finite gradients, for extreme logits.

The values are compared with float64 NumPy computations of the same
formulas, and evaluated inside `tf.function`, where TensorFlow's graph
rewrites run (the TST bug only showed there: `1 - p + 1e-8` became
`(1 + 1e-8) - p`, which is 0 when `p` rounds to 1).
"""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import kd_keras
from kd_keras import losses as kd_losses
from kd_keras.augment import BackwardPerturbation
from kd_keras.augment import CutMixPick
from kd_keras.augment import GenerativeAugmenter
from kd_keras.augment import LearnedPolicy
from kd_keras.augment import SpatialAugmenter

LIMIT = 1e4
DTYPES = ("float32", "float16", "bfloat16")
EPSILON = 1e-8  # TST's


def _log_softmax(z):
    z = np.asarray(z, "float64")
    shifted = z - z.max(-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))


def _log_weighted_sum_exp(values, weights):
    # log sum_c w_c exp(v_c) in float64, -inf when every weight is 0.
    with np.errstate(divide="ignore"):
        terms = values + np.log(weights)
    top = terms.max(-1, keepdims=True)
    safe = np.where(np.isfinite(top), top, 0.0)
    return (safe + np.log(np.exp(terms - safe).sum(-1, keepdims=True)))[..., 0]


def _as_float64(tensor):
    return np.asarray(tf.cast(tensor, "float32"), "float64")


def _finite(*arrays):
    return all(np.all(np.isfinite(np.asarray(tf.cast(a, "float32")))) for a in arrays)


logit_values = st.one_of(
    st.floats(-LIMIT, LIMIT, width=32),
    st.sampled_from([-LIMIT, -100.0, 0.0, 100.0, LIMIT]),
)


@st.composite
def logit_batches(draw, count=2):
    """`count` logit arrays of one shape, a dtype, and labels (ids and soft)."""
    batch = draw(st.integers(1, 4))
    classes = draw(st.integers(2, 7))
    arrays = [
        draw(hnp.arrays("float32", (batch, classes), elements=logit_values)) for _ in range(count)
    ]
    dtype = draw(st.sampled_from(DTYPES))
    ids = draw(hnp.arrays("int32", (batch,), elements=st.integers(0, classes - 1)))
    # Soft labels: a two-class mixture, or one-hot (a weight of exactly 1).
    partner = draw(hnp.arrays("int32", (batch,), elements=st.integers(0, classes - 1)))
    lam = draw(st.sampled_from([1.0, 0.7, 0.5, 0.01]))
    soft = lam * np.eye(classes)[ids] + (1 - lam) * np.eye(classes)[partner]
    return [tf.cast(a, dtype) for a in arrays], ids, soft.astype("float32")


def _value_and_gradients(function, *tensors):
    @tf.function(reduce_retracing=True)
    def run(*inputs):
        with tf.GradientTape() as tape:
            tape.watch(inputs)
            value = function(*inputs)
            total = tf.reduce_sum(value)
        return value, tape.gradient(total, inputs)

    value, gradients = run(*tensors)
    for tensor, gradient in zip(tensors, gradients):
        assert gradient is not None and gradient.dtype == tensor.dtype
    return value.numpy().astype("float64"), gradients


def _close(got, expected, logits):
    # float32 keeps ~7 digits of the largest logit: allow that much absolutely.
    scale = 1.0 + max(float(np.abs(_as_float64(z)).max()) for z in logits)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5 * scale)


@settings(max_examples=40, deadline=None)
@given(logit_batches(), st.sampled_from([0.5, 1.0, 4.0]))
def test_kl_and_temperature_kl_are_finite_and_exact(batch, temperature):
    (t, s), _, _ = batch
    log_p = _log_softmax(_as_float64(t) / temperature)
    log_q = _log_softmax(_as_float64(s) / temperature)
    expected = np.sum(np.exp(log_p) * (log_p - log_q), -1)
    value, gradients = _value_and_gradients(
        lambda a, b: kd_losses.kl_per_sample(a, b, temperature), t, s
    )
    assert _finite(value, *gradients)
    _close(value, expected, [t, s])
    loss = kd_losses.TemperatureKL(temperature)
    value, gradients = _value_and_gradients(loss.compute_loss, t, s)
    assert _finite(value, *gradients)
    _close(value, temperature**2 * expected.mean(), [t, s])


@settings(max_examples=40, deadline=None)
@given(logit_batches(count=1))
def test_cross_entropies_and_entropy_are_finite_and_exact(batch):
    (z,), ids, soft = batch
    log_p = _log_softmax(_as_float64(z))
    for labels, expected in (
        (ids, -log_p[np.arange(len(ids)), ids]),
        (soft, -np.sum(soft * log_p, -1)),
    ):
        value, (gradient,) = _value_and_gradients(
            lambda a, labels=labels: kd_losses.cross_entropy_per_sample(labels, a), z
        )
        assert _finite(value, gradient)
        _close(value, expected, [z])
    value, (gradient,) = _value_and_gradients(kd_losses.entropy_per_sample, z)
    assert _finite(value, gradient)
    _close(value, -np.sum(np.exp(log_p) * log_p, -1), [z])


@settings(max_examples=30, deadline=None)
@given(logit_batches(count=1), st.sampled_from([0.0, EPSILON]))
def test_log_one_minus_label_probability_is_finite_and_exact(batch, epsilon):
    (z,), ids, soft = batch
    log_p = _log_softmax(_as_float64(z))
    one_hot = np.eye(z.shape[-1])[ids]
    for labels, weights in ((ids, one_hot), (soft, np.clip(soft, 0.0, 1.0).astype("float64"))):
        value, (gradient,) = _value_and_gradients(
            lambda a, labels=labels: kd_losses.log_one_minus_label_probability(labels, a, epsilon),
            z,
        )
        assert _finite(value, gradient)
        expected = _log_weighted_sum_exp(log_p, np.clip(1.0 - weights, 0.0, 1.0))
        if epsilon:
            expected = np.logaddexp(expected, math.log(epsilon))
            _close(value, expected, [z])
        else:
            # A weight of exactly 1 leaves nothing: log(0), a large finite negative.
            certain = np.isneginf(expected)
            assert np.all(value[certain] <= -1e29)
            _close(value[~certain], expected[~certain], [z])


def test_log_one_minus_label_probability_of_a_certain_model_is_log_epsilon_in_a_graph():
    # p(y) rounds to 1 in float32: the old -log(1 - p + 1e-8) was inf in a tf.function.
    logits = np.array([[60.0, 0.0, -10.0], [0.0, 60.0, 0.0]], "float32")
    labels = np.array([0, 0])
    got = tf.function(kd_losses.log_one_minus_label_probability)(labels, logits, EPSILON)
    expected = [math.log(EPSILON), np.logaddexp(math.log(EPSILON), _log_softmax(logits)[1, 1])]
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-6)
    # One class: 1 - p(y) is 0, and only epsilon is left.
    one = tf.function(kd_losses.log_one_minus_label_probability)(
        np.array([0]), np.array([[5.0]], "float32"), EPSILON
    )
    np.testing.assert_allclose(one.numpy(), [math.log(EPSILON)], rtol=1e-6)


def test_log_one_minus_label_probability_refuses_a_negative_epsilon():
    with pytest.raises(ValueError, match="epsilon must be >= 0"):
        kd_losses.log_one_minus_label_probability([0], np.zeros((1, 2), "float32"), -1.0)


# --- augmenter objectives ---------------------------------------------------

SHAPE = (8, 8, 1)
CLASSES = 5


def _images(count=4, seed=0):
    return np.random.default_rng(seed).uniform(size=(count, *SHAPE)).astype("float32")


def _linear(scale, dtype, seed):
    # logits = scale * x W, in `dtype`: |logits| up to about `scale`.
    weights = np.random.default_rng(seed).normal(size=(int(np.prod(SHAPE)), CLASSES))
    weights = tf.constant(weights / np.abs(weights).sum(0).max(), "float32")

    def logits(x):
        flat = tf.reshape(tf.cast(x, "float32"), (tf.shape(x)[0], -1))
        return tf.cast(tf.clip_by_value(scale * flat @ weights, -LIMIT, LIMIT), dtype)

    return logits


def _generative():
    keras.utils.set_random_seed(0)
    return GenerativeAugmenter(
        kd_keras.models.VAE(input_shape=SHAPE, latent_dim=2, filters=2), units=4, seed=1
    )


AUGMENTERS = {
    "tst": lambda: LearnedPolicy(ops=["Rotate", "Contrast", "Solarize", "Cutout"], seed=1),
    # The learned sampler: the default search has no weights, so no objective.
    "hard_spatial": lambda: SpatialAugmenter(
        filters=2, units=4, seed=1, sampler="network", candidates=1, interpolation="bilinear"
    ),
    "hard_generative": _generative,
}
scales = st.sampled_from([1e-3, 1.0, 30.0, 1e3, 1e4])


@pytest.mark.parametrize("name", sorted(AUGMENTERS))
@settings(max_examples=12, deadline=None)
@given(
    teacher_scale=scales,
    student_scale=scales,
    dtype=st.sampled_from(DTYPES),
    soft=st.booleans(),
    seed=st.integers(0, 3),
)
def test_augmenter_objectives_and_their_gradients_are_finite(
    name, teacher_scale, student_scale, dtype, soft, seed
):
    augmenter = AUGMENTERS[name]()
    augmenter.build((None, *SHAPE))
    x = _images(seed=seed)
    y = np.arange(len(x)) % CLASSES
    if soft:
        y = (0.5 * np.eye(CLASSES)[y] + 0.5 * np.eye(CLASSES)[(y + 1) % CLASSES]).astype("float32")
    teacher_fn = _linear(teacher_scale, dtype, seed)
    student_fn = _linear(student_scale, dtype, seed + 10)

    @tf.function
    def objective_and_gradients():
        with tf.GradientTape() as tape:
            objective = augmenter.objective(x, y, teacher_fn, student_fn)
        return objective, tape.gradient(objective, augmenter.trainable_variables)

    objective, gradients = objective_and_gradients()
    assert objective.dtype == "float32" and _finite(objective)
    assert any(g is not None for g in gradients)
    assert _finite(*[g for g in gradients if g is not None])


@settings(max_examples=30, deadline=None)
@given(logit_batches(), st.sampled_from(["kl", "teacher_entropy", "student_entropy"]))
def test_cutmixpick_scores_are_finite_and_exact(batch, criterion):
    (t, s), _, _ = batch
    layer = CutMixPick(criterion=criterion, temperature=4.0)
    if criterion == "kl":
        value, gradients = _value_and_gradients(layer.score, t, s)
    elif criterion == "teacher_entropy":
        value, gradients = _value_and_gradients(lambda a: layer.score(a, s), t)
    else:
        value, gradients = _value_and_gradients(lambda b: layer.score(t, b), s)
    assert _finite(value, *gradients)
    if criterion == "kl":
        log_p, log_q = _log_softmax(_as_float64(t) / 4.0), _log_softmax(_as_float64(s) / 4.0)
        expected = np.sum(np.exp(log_p) * (log_p - log_q), -1)
    else:
        log_p = _log_softmax(_as_float64(t if criterion == "teacher_entropy" else s))
        expected = -np.sum(np.exp(log_p) * log_p, -1)
    _close(value, expected, [t, s])


def _saturated(seed):
    # Both certain of class 0 (margin ~300 at T=4): the KL and its input
    # gradient are ~exp(-75), whose squares underflow in float32.
    linear = _linear(1.0, "float32", seed)
    return lambda v: linear(v) + tf.constant([300.0] + [0.0] * (CLASSES - 1))


def _huge(sign):
    # Logits ~1e22: the input gradient's squares overflow in float32.
    linear = _linear(1.0, "float32", 0)
    return lambda v: sign * 1e22 * linear(v)


PAIRS = {
    "ordinary": lambda: (_linear(3.0, "float32", 0), _linear(3.0, "float32", 7)),
    "saturated": lambda: (_saturated(0), _saturated(7)),
    "huge": lambda: (_huge(1.0), _huge(-1.0)),
}


@pytest.mark.parametrize("pair", sorted(PAIRS))
def test_backward_perturbation_takes_full_l2_steps_for_tiny_and_huge_gradients(pair):
    # Whatever the gradient's scale, one step of the normalised ascent moves
    # every sample by exactly step_size (the old direction g / (|g| + 1e-12)
    # gave steps of ~1e-21 for the saturated pair and 0 for the huge one).
    augmenter = BackwardPerturbation(
        steps=1, step_size=0.1, epsilon=1.0, norm="l2", value_range=None, seed=1
    )
    augmenter.build((None, *SHAPE))
    x = tf.constant(_images(count=3))
    teacher_fn, student_fn = PAIRS[pair]()
    x_k, clean, moved = augmenter.perturb(x, teacher_fn, student_fn)
    assert _finite(x_k, clean, moved)
    step = np.linalg.norm(np.reshape(x_k.numpy() - x.numpy(), (3, -1)), axis=1)
    np.testing.assert_allclose(step, 0.1, rtol=1e-4)


# --- the user's setup ---------------------------------------------------------


def test_tst_distils_a_confident_cnn_into_an_mlp_on_16x16_digits():
    # Issue 13: digits on a 16x16 canvas, a CNN teacher whose logits reach
    # ~3e3, an MLP student as certain as such a teacher makes it (here from
    # the start: its last layer has large weights). The policy phase (epoch
    # 1) used to stop with augmenter_objective=inf at the last batch: 3
    # samples (like the user's 1347 = 21 * 64 + 3), for which TensorFlow's
    # softmax rounds p_s(y) to exactly 1 (from 8 rows on, to 1 - 6e-8).
    data = kd_keras.data.load_digits(canvas_size=16, scale=1, max_shift=4)
    x, y = data.train[0][: 6 * 64 + 3], data.train[1][: 6 * 64 + 3]
    keras.utils.set_random_seed(0)
    inputs = keras.Input((16, 16, 1))
    h = keras.layers.Conv2D(8, 2, activation="relu")(inputs)
    h = keras.layers.Conv2D(16, 2, activation="relu")(h)
    h = keras.layers.GlobalMaxPooling2D()(h)
    teacher = keras.Model(inputs, keras.layers.Dense(10)(h))
    teacher.compile(
        keras.optimizers.Adam(1e-2),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    teacher.fit(x, y, epochs=3, batch_size=64, verbose=0)
    head = teacher.layers[-1]
    factor = 3e3 / np.abs(teacher.predict(x, verbose=0)).max()
    head.set_weights([w * factor for w in head.get_weights()])
    logits = teacher.predict(x, verbose=0)
    assert 2e3 < np.abs(logits).max() <= 3.01e3

    inputs = keras.Input((16, 16, 1))
    h = keras.layers.Flatten()(inputs)
    h = keras.layers.Dense(64, activation="relu")(h)
    h = keras.layers.Dense(64, activation="relu")(h)
    outputs = keras.layers.Dense(
        10, kernel_initializer=keras.initializers.RandomNormal(stddev=300.0)
    )(h)
    student = keras.Model(inputs, outputs)
    student_logits = np.sort(student.predict(x, verbose=0), -1)
    assert np.median(student_logits[:, -1] - student_logits[:, -2]) > 17  # p rounds to 1

    distiller = kd_keras.distill(
        teacher,
        student,
        (x, y),
        recipe="tst",
        epochs=2,
        batch_size=64,
        verbose=0,
        # A policy epoch inserted between the two student epochs.
        **{"phases.starts": [1], "phases.length": 1, "phases.full_epochs": 2},
    )
    history = distiller.history.history
    for name, values in history.items():
        assert np.all(np.isfinite(values)), (name, values)
    # Student epochs log the student, the policy epoch its objective only.
    assert len(history["loss"]) == 2 and min(history["loss"]) > 0
    assert len(history["augmenter_objective"]) == 1 and history["augmenter_objective"][0] > 0
    assert any(value != pytest.approx(0.5) for value in distiller.augmenter.log_scalars().values())
