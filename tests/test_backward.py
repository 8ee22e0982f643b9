"""Tests for backward-pass KD: `kd_keras.augment.BackwardPerturbation` and its recipe."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import per_sample
from conftest import tiny_batch
from conftest import tiny_student
from conftest import tiny_teacher

import kd_keras
from kd_keras import jobs
from kd_keras.augment.backward import BackwardPerturbation
from kd_keras.augment.backward import project_to_simplex
from kd_keras.losses import kl_per_sample

VOCABULARY = 12
LENGTH = 6


def _images(count=16, seed=0):
    x, y = tiny_batch(count, seed=seed)
    return (x - x.min()) / (x.max() - x.min()), y


def _functions(teacher, student):
    return (
        lambda x: teacher(x, training=False),
        lambda x: student(x, training=False),
    )


def _text_models():
    keras.utils.set_random_seed(3)
    teacher = kd_keras.models.get(
        "text_transformer",
        (LENGTH,),
        3,
        vocabulary_size=VOCABULARY,
        embedding_dim=8,
        num_heads=2,
        intermediate_dim=8,
        num_layers=1,
    )
    student = kd_keras.models.get(
        "text_cnn",
        (LENGTH,),
        3,
        vocabulary_size=VOCABULARY,
        embedding_dim=4,
        filters=4,
    )
    return teacher, student


def _ids(count=8, seed=0):
    rng = np.random.default_rng(seed)
    return (
        rng.integers(0, VOCABULARY, (count, LENGTH)).astype("int32"),
        rng.integers(0, 3, count).astype("int32"),
    )


def _augmenter(input_shape, **kwargs):
    augmenter = BackwardPerturbation(seed=1, **kwargs)
    augmenter.build((None, *input_shape))
    return augmenter


def _per_sample_norms(delta):
    flat = np.reshape(delta, (len(delta), -1))
    return np.linalg.norm(flat, axis=1), np.abs(flat).max(axis=1)


@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_perturbation_increases_the_kl_and_stays_in_the_ball_and_range(norm):
    teacher_fn, student_fn = _functions(tiny_teacher(), tiny_student())
    x, _ = _images()
    epsilon = {"l2": 0.5, "linf": 0.05}[norm]
    augmenter = _augmenter((8, 8, 1), norm=norm, epsilon=epsilon)
    x_k, teacher_clean, teacher_k = augmenter.perturb(tf.constant(x), teacher_fn, student_fn)
    before = kl_per_sample(teacher_fn(x), student_fn(x), 4.0).numpy()
    after = kl_per_sample(teacher_fn(x_k), student_fn(x_k), 4.0).numpy()
    assert np.all(after > before), (before, after)
    l2, linf = _per_sample_norms(x_k.numpy() - x)
    assert np.all((l2 if norm == "l2" else linf) <= epsilon + 1e-5)
    assert np.all((l2 if norm == "l2" else linf) > 0.5 * epsilon)  # it moves
    assert x_k.numpy().min() >= 0.0 and x_k.numpy().max() <= 1.0
    # The returned teacher logits are the teacher's on x and on x_k.
    np.testing.assert_allclose(teacher_clean, teacher_fn(x), atol=1e-5)
    np.testing.assert_allclose(teacher_k, teacher_fn(x_k), atol=1e-5)


def _brute_force_simplex(v):
    # Try every support size; the projection is the feasible candidate
    # closest to v.
    best = None
    u = np.sort(v)[::-1]
    for k in range(1, len(v) + 1):
        candidate = np.maximum(v - (u[:k].sum() - 1) / k, 0)
        if abs(candidate.sum() - 1) < 1e-9:
            distance = np.sum((candidate - v) ** 2)
            if best is None or distance < best[0]:
                best = (distance, candidate)
    return best[1]


def test_simplex_projection_is_valid_and_exact():
    rng = np.random.default_rng(0)
    v = np.concatenate(
        [rng.normal(size=(50, 7)), 3 * rng.normal(size=(50, 7)), np.eye(7)[:3] * 5]
    ).astype("float64")
    projected = project_to_simplex(tf.constant(v, "float32")).numpy()
    assert projected.min() >= 0.0
    np.testing.assert_allclose(projected.sum(-1), 1.0, atol=1e-5)
    expected = np.stack([_brute_force_simplex(row) for row in v])
    np.testing.assert_allclose(projected, expected, atol=1e-5)
    # Points already on the simplex do not move.
    on_simplex = rng.dirichlet(np.ones(7), size=10).astype("float32")
    np.testing.assert_allclose(project_to_simplex(on_simplex), on_simplex, atol=1e-6)


@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_text_perturbs_token_distributions_on_the_simplex(norm):
    teacher, student = _text_models()
    teacher_fn, student_fn = _functions(teacher, student)
    ids, _ = _ids()
    epsilon = {"l2": 1.0, "linf": 0.5}[norm]
    augmenter = _augmenter((LENGTH,), norm=norm, epsilon=epsilon, vocabulary_size=VOCABULARY)
    x_k, teacher_clean, _ = augmenter.perturb(tf.constant(ids), teacher_fn, student_fn)
    x_k = x_k.numpy()
    assert x_k.shape == (8, LENGTH, VOCABULARY)
    assert x_k.min() >= 0.0
    np.testing.assert_allclose(x_k.sum(-1), 1.0, atol=1e-5)
    l2, linf = _per_sample_norms(x_k - np.eye(VOCABULARY)[ids])
    assert np.all((l2 if norm == "l2" else linf) <= epsilon + 1e-5)
    before = kl_per_sample(teacher(ids), student(ids), 4.0).numpy()
    after = kl_per_sample(teacher_fn(x_k), student_fn(x_k), 4.0).numpy()
    assert np.mean(after > before) >= 0.9 and after.mean() > before.mean()
    np.testing.assert_allclose(teacher_clean, teacher(ids), atol=1e-5)


class _Recorder(keras.layers.Layer):
    """Counts the samples that pass through it (in graph mode too)."""

    def build(self, input_shape):
        self.samples = self.add_weight(shape=(), initializer="zeros", trainable=False)

    def call(self, x):
        self.samples.assign_add(keras.ops.cast(keras.ops.shape(x)[0], "float32"))
        return x


def _recording(model):
    recorder = _Recorder()
    inputs = keras.Input(model.input_shape[1:])
    return keras.Model(inputs, model(recorder(inputs))), recorder


@pytest.mark.parametrize("jit_compile", [False, True])
def test_the_step_reuses_the_teachers_logits_and_compiles(jit_compile):
    teacher, teacher_samples = _recording(tiny_teacher())
    student, student_samples = _recording(tiny_student())
    x, y = _images(16)
    distiller = kd_keras.Distiller(
        teacher,
        student,
        augmenter=BackwardPerturbation(steps=3, seed=0),
        distillation_loss_weights=[1.8],
    )
    distiller.compile(optimizer="sgd", jit_compile=jit_compile)
    frozen = [w for w in teacher.weights if w is not teacher_samples.samples]
    before = [w.numpy().copy() for w in frozen]
    distiller.train_on_batch(x, y)
    assert distiller.jit_compile is jit_compile  # nothing turned XLA off
    # Teacher: x_0, x_1, x_2 with gradients and x_3 for the targets; no
    # second pass over the 2B views.
    assert teacher_samples.samples.numpy() == 4 * 16
    # Student: 3 ascent steps (inference) and one training pass over [x, x_3].
    assert student_samples.samples.numpy() == 3 * 16 + 2 * 16
    assert all(np.array_equal(b, w.numpy()) for b, w in zip(before, frozen))


def test_views_train_on_clean_and_perturbed_with_labels_on_clean_only():
    teacher_fn, student_fn = _functions(tiny_teacher(), tiny_student())
    x, y = _images(8)
    augmenter = _augmenter((8, 8, 1))
    views = augmenter.views(tf.constant(x), tf.constant(y), teacher_fn, student_fn)
    assert views.x.shape == (16, 8, 8, 1)
    np.testing.assert_allclose(views.x[:8], x)
    np.testing.assert_array_equal(views.y, np.concatenate([y, y]))
    np.testing.assert_array_equal(per_sample(views, "label_weight"), [1] * 8 + [0] * 8)
    np.testing.assert_allclose(views.teacher_logits, teacher_fn(views.x), atol=1e-5)
    np.testing.assert_array_equal(per_sample(views, "distill_weight"), [1] * 16)
    identity = augmenter.views(x, y, teacher_fn, student_fn, training=False)
    assert identity.x is x and identity.teacher_logits is None


def test_fraction_perturbs_only_that_fraction_of_the_batch():
    teacher_fn, student_fn = _functions(tiny_teacher(), tiny_student())
    x, y = _images(16)
    augmenter = _augmenter((8, 8, 1), fraction=0.25)
    views = augmenter.views(tf.constant(x), tf.constant(y), teacher_fn, student_fn)
    assert views.x.shape == (16 + 4, 8, 8, 1)
    np.testing.assert_array_equal(per_sample(views, "label_weight"), [1] * 16 + [0] * 4)
    clean, perturbed = views.x[:16].numpy(), views.x[16:].numpy()
    # The clean half is the batch (in a random order, labels alongside) ...
    order = [int(np.argmin(np.abs(x - c).sum(axis=(1, 2, 3)))) for c in clean]
    assert sorted(order) == list(range(16))
    np.testing.assert_allclose(clean, x[order])
    np.testing.assert_array_equal(views.y[:16], y[order])
    # ... and each auxiliary sample is a perturbed copy of one clean sample.
    np.testing.assert_array_equal(views.y[16:], views.y[:4])
    l2 = np.linalg.norm((perturbed - clean[:4]).reshape(4, -1), axis=1)
    assert np.all(l2 > 0.1) and np.all(l2 <= 1.0 + 1e-5)
    np.testing.assert_allclose(views.teacher_logits, teacher_fn(views.x), atol=1e-5)


def test_pool_stays_bounded_and_feeds_the_views():
    teacher_fn, student_fn = _functions(tiny_teacher(), tiny_student())
    augmenter = _augmenter((8, 8, 1), pool_size=10, pool_fraction=0.5)
    assert not augmenter.trainable_weights
    seen = []
    for step in range(4):
        x, y = _images(6, seed=step)
        views = augmenter.views(tf.constant(x), tf.constant(y), teacher_fn, student_fn)
        # 6 clean, 3 new auxiliary samples, 3 drawn from the pool.
        assert views.x.shape == (12, 8, 8, 1)
        np.testing.assert_array_equal(per_sample(views, "label_weight"), [1] * 6 + [0] * 6)
        pool = augmenter.pool.numpy()
        assert pool.shape == (10, 8, 8, 1)
        seen.append(views.x[6:9].numpy())
        assert int(augmenter.pool_filled.numpy()) == min(3 * (step + 1), 10)
        assert int(augmenter.pool_next.numpy()) == 3 * (step + 1) % 10
        filled = pool[: int(augmenter.pool_filled.numpy())]
        for drawn in views.x[9:].numpy():
            assert np.min(np.abs(filled - drawn).sum(axis=(1, 2, 3))) < 1e-6
        np.testing.assert_allclose(views.teacher_logits, teacher_fn(views.x), atol=1e-5)
        np.testing.assert_array_equal(views.y[9:], np.argmax(views.teacher_logits[9:], axis=-1))
    # The ring buffer holds the last 10 samples made: steps 2-4 and the
    # last of step 1, which overwrote the oldest.
    made = np.concatenate(seen)
    np.testing.assert_allclose(np.roll(augmenter.pool.numpy(), -2, axis=0), made[-10:])


@pytest.mark.large
def test_text_step_with_pool_and_fraction_compiles_under_xla():
    teacher, student = _text_models()
    ids, labels = _ids(8)
    augmenter = BackwardPerturbation(
        vocabulary_size=VOCABULARY, fraction=0.5, pool_size=6, pool_fraction=0.5, seed=0
    )
    distiller = kd_keras.Distiller(
        teacher, student, augmenter=augmenter, distillation_loss_weights=[1.8]
    )
    distiller.compile(optimizer="sgd", jit_compile=True)
    for _ in range(2):
        logs = distiller.train_on_batch(ids, labels, return_dict=True)
    assert distiller.jit_compile is True
    assert np.isfinite(logs["loss"])
    assert augmenter.pool.shape == (6, LENGTH, VOCABULARY)
    assert int(augmenter.pool_filled.numpy()) == 4  # 2 new samples per step
    pool = augmenter.pool.numpy()[:4]
    np.testing.assert_allclose(pool.sum(-1), 1.0, atol=1e-5)


def test_config_round_trip_and_argument_errors():
    augmenter = BackwardPerturbation(
        steps=2,
        step_size=0.1,
        epsilon=0.3,
        norm="linf",
        fraction=0.5,
        value_range=None,
        vocabulary_size=7,
        pool_size=4,
        pool_fraction=0.25,
        seed=3,
    )
    config = augmenter.get_config()
    clone = BackwardPerturbation.from_config(config)
    assert clone.get_config() == config
    assert BackwardPerturbation().radius(text=False) == (1.0, 2.5 * 1.0 / 3)
    assert BackwardPerturbation(norm="linf").radius(text=True) == (0.5, 2.5 * 0.5 / 3)
    for kwargs, message in (
        ({"steps": 0}, "steps must be at least 1"),
        ({"norm": "l1"}, "norm must be one of l2, linf"),
        ({"fraction": 0.0}, r"fraction must be in \(0, 1\]"),
        ({"pool_fraction": 1.0}, "pool never fills"),
        ({"value_range": (1, 0)}, "low < high"),
        ({"epsilon": -1}, "epsilon must be positive"),
    ):
        with pytest.raises(ValueError, match=message):
            BackwardPerturbation(**kwargs)
    ids, labels = _ids()
    teacher, student = _text_models()
    with pytest.raises(ValueError, match="pass vocabulary_size"):
        BackwardPerturbation().views(ids, labels, *_functions(teacher, student))


def test_recipe_has_the_documented_settings():
    config = kd_keras.recipes.get("backward", {"augmenter.vocabulary_size": 50})
    assert config["student_loss_weight"] == 0.1
    assert config["distillation_loss_weights"] == [1.0]
    assert config["distillation_losses"][0]["temperature"] == 4.0
    assert (config["optimizer"]["learning_rate"], config["epochs"], config["batch_size"]) == (
        0.05,
        240,
        64,
    )
    augmenter = kd_keras.recipes.build.augmenter(config)
    assert isinstance(augmenter, BackwardPerturbation)
    assert (augmenter.steps, augmenter.norm, augmenter.vocabulary_size) == (3, "l2", 50)
    assert augmenter.temperature == 4.0


@pytest.mark.large
def test_the_digits_command_runs(tmp_path):
    metrics = jobs.distill_job(
        recipe="backward", epochs=1, out=tmp_path / "run", export_formats=("keras",), verbose=0
    )
    assert metrics["recipe"] == "backward" and metrics["dataset"] == "digits"
    assert metrics["student_accuracy"] > 0.15  # chance is 0.1 after one epoch
    assert (tmp_path / "run" / "views.png").exists()


@pytest.mark.large
def test_the_text_command_runs_and_saves_the_vocabulary(tmp_path):
    # One ascent step and large batches keep an epoch over the 16,000
    # reviews short; the defaults are tested above.
    metrics = jobs.distill_job(
        recipe="backward",
        dataset="text-default",
        epochs=1,
        batch_size=256,
        steps=1,
        out=tmp_path / "run",
        export_formats=("keras", "tflite"),
        verbose=0,
    )
    assert metrics["teacher"] == "shipped:text_default" and metrics["student"] == "text_cnn"
    assert metrics["teacher_accuracy"] > 0.9
    assert metrics["student_accuracy"] > 0.4  # chance is 0.25
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert saved["exports"]["tflite"]["agreement"] == 1.0
    vocabulary = (tmp_path / "run" / "vocabulary.txt").read_text().split("\n")
    assert vocabulary[:2] == ["", "[UNK]"] and "good" in vocabulary
    student = keras.saving.load_model(tmp_path / "run" / "student.keras", safe_mode=True)
    tokenizer = kd_keras.data.text.load_tokenizer(tmp_path / "run" / "vocabulary.txt", 40)
    serve = kd_keras.data.text.serving_model(tokenizer, student)
    texts, _ = kd_keras.data.reviews.synthetic_reviews(5, seed=99)
    np.testing.assert_allclose(
        serve.predict(tf.constant(texts), verbose=0),
        student.predict(kd_keras.data.text.tokenize(tokenizer, texts), verbose=0),
        atol=1e-5,
    )
