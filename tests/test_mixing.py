"""Tests of the mixing augmenters (MixUp, CutMix, CutMixPick, FunctionMatching) and recipes."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402
from scipy import stats  # noqa: E402

import kd_keras  # noqa: E402
from kd_keras.augment import cutmix_pick  # noqa: E402
from kd_keras.augment import mixing  # noqa: E402

SHAPE = (8, 8, 1)
CLASSES = 4
AUGMENTERS = (
    kd_keras.augment.MixUp,
    kd_keras.augment.CutMix,
    kd_keras.augment.CutMixPick,
    kd_keras.augment.FunctionMatching,
)


class Record(keras.layers.Layer):
    """Identity layer that keeps every input it sees (eager runs only)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.seen = []

    def call(self, x):
        if tf.executing_eagerly():
            self.seen.append(x.numpy())
        return x

    def compute_output_shape(self, input_shape):
        return input_shape


def teacher_model(seed=1, record=False):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input(SHAPE)
    x = Record(name="record")(inputs) if record else inputs
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(CLASSES)(x)
    return keras.Model(inputs, outputs, name="teacher")


def student_model(seed=2, record=False):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input(SHAPE)
    x = Record(name="record")(inputs) if record else inputs
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(16, activation="relu")(x)
    outputs = keras.layers.Dense(CLASSES)(x)
    return keras.Model(inputs, outputs, name="student")


def batch(count=8, seed=0, shape=SHAPE):
    rng = np.random.default_rng(seed)
    x = rng.uniform(size=(count, *shape)).astype("float32")
    y = rng.integers(0, CLASSES, size=count).astype("int32")
    return x, y


def constant_images(count, shape):
    # Image i is filled with i + 1, so a pixel's value says which image it came from.
    return (np.arange(count, dtype="float32") + 1)[:, None, None, None] * np.ones(
        (count, *shape), "float32"
    )


def log_softmax(z):
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def kl_np(t, s, temperature):
    log_p, log_q = log_softmax(t / temperature), log_softmax(s / temperature)
    return (np.exp(log_p) * (log_p - log_q)).sum(-1)


def ce_np(labels, logits):
    log_q = log_softmax(logits)
    if labels.ndim == 1:
        return -log_q[np.arange(len(labels)), labels]
    return -(labels * log_q).sum(-1)


@pytest.mark.parametrize("alpha", [1.0, 0.4])
def test_cutmix_box_area_is_the_recomputed_lambda(alpha):
    count, shape = 32, (12, 10, 2)
    x = constant_images(count, shape)
    augmenter = kd_keras.augment.CutMix(alpha=alpha, seed=3)
    for _ in range(3):
        mixed, partner, lam = (np.array(v) for v in augmenter.mix_images(x))
        own = mixed == x
        other = mixed == x[partner]
        assert np.all(own ^ other)
        fraction = other.mean(axis=(1, 2, 3))
        np.testing.assert_allclose(fraction, 1.0 - lam, atol=1e-6)
        pasted = other[..., 0]
        for box in pasted:
            rows, cols = box.any(axis=1), box.any(axis=0)
            np.testing.assert_array_equal(box, np.outer(rows, cols))
    assert 0.0 < lam.min() and lam.max() <= 1.0


def test_no_image_is_paired_with_itself():
    for size in (2, 3, 7, 64):
        generator = keras.random.SeedGenerator(0)
        for _ in range(20):
            partner = np.array(mixing.derangement(size, seed=generator))
            assert sorted(partner) == list(range(size))
            assert not np.any(partner == np.arange(size))
    x, _ = batch(16)
    for cls in (kd_keras.augment.MixUp, kd_keras.augment.CutMix, kd_keras.augment.FunctionMatching):
        partner = np.array(cls(seed=5).mix_images(x)[1])
        assert sorted(partner) == list(range(16))
        assert not np.any(partner == np.arange(16))


def test_pairing_compiles_with_a_dynamic_batch():
    generator = keras.random.SeedGenerator(1)

    @tf.function(jit_compile=True, input_signature=[tf.TensorSpec([None], tf.float32)])
    def pair(keys):
        return mixing.derangement(tf.shape(keys)[0], seed=generator)

    for size in (5, 9):
        partner = pair(tf.zeros(size)).numpy()
        assert sorted(partner) == list(range(size))
        assert not np.any(partner == np.arange(size))


def test_mixed_labels_sum_to_one_and_follow_lambda():
    x, y = batch(16)
    augmenter = kd_keras.augment.CutMix(num_classes=CLASSES, seed=0)
    mixed_x, partner, lam = augmenter.mix_images(x)
    labels = np.array(augmenter.mix_labels(y, partner, lam))
    np.testing.assert_allclose(labels.sum(axis=1), 1.0, atol=1e-6)
    one_hot = np.eye(CLASSES)[y]
    lam, partner = np.array(lam)[:, None], np.array(partner)
    np.testing.assert_allclose(labels, lam * one_hot + (1 - lam) * one_hot[partner], atol=1e-6)
    soft = np.array(mixing.mix_labels(one_hot.astype("float32"), partner, lam[:, 0]))
    np.testing.assert_allclose(soft, labels, atol=1e-6)
    _, y_mixed = kd_keras.augment.MixUp(num_classes=CLASSES, seed=0).mix(x, y)
    np.testing.assert_allclose(np.array(y_mixed).sum(axis=1), 1.0, atol=1e-6)
    with pytest.raises(ValueError, match="num_classes"):
        kd_keras.augment.MixUp(seed=0).mix(x, y)


@pytest.mark.parametrize("alpha", [1.0, 0.4, 3.0])
def test_beta_sampler_matches_beta_distribution(alpha):
    samples = np.array(mixing.sample_beta((100_000,), alpha, seed=keras.random.SeedGenerator(7)))
    assert samples.min() >= 0.0 and samples.max() <= 1.0
    variance = 1.0 / (4.0 * (2.0 * alpha + 1.0))
    standard_error = np.sqrt(variance / samples.size)
    assert abs(samples.mean() - 0.5) < 5 * standard_error
    assert abs(samples.var() - variance) < 0.02 * variance + 5e-4
    assert stats.kstest(samples, stats.beta(alpha, alpha).cdf).pvalue > 1e-3


def test_beta_sampler_compiles_and_is_reproducible():
    def draw(seed):
        generator = keras.random.SeedGenerator(seed)
        return tf.function(jit_compile=True)(
            lambda: mixing.sample_beta((1000,), 0.4, seed=generator)
        )()

    first, again, other = draw(11), draw(11), draw(12)
    np.testing.assert_array_equal(first, again)
    assert not np.allclose(first, other)
    assert abs(float(np.mean(first)) - 0.5) < 0.05


@pytest.mark.parametrize("criterion", cutmix_pick.CRITERIA)
def test_cutmix_pick_keeps_the_top_b_candidates(criterion):
    teacher, student = teacher_model(), student_model()
    x, y = batch(8)
    calls = {"teacher": [], "student": []}

    def teacher_fn(inputs):
        calls["teacher"].append(inputs.shape[0])
        return teacher(inputs, training=False)

    def student_fn(inputs):
        calls["student"].append(inputs.shape[0])
        return student(inputs, training=False)

    augmenter = kd_keras.augment.CutMixPick(criterion=criterion, seed=4)
    views = augmenter.views(x, y, teacher_fn, student_fn)
    reference = kd_keras.augment.CutMixPick(criterion=criterion, seed=4)
    candidates = np.array(reference.candidates(x)[0])
    assert candidates.shape == (16, *SHAPE)

    t = np.array(teacher(candidates, training=False))
    s = np.array(student(candidates, training=False))
    if criterion == "kl":
        scores = kl_np(t, s, 4.0)
    else:
        logits = t if criterion == "teacher_entropy" else s
        p = np.exp(log_softmax(logits))
        scores = -(p * np.log(p)).sum(-1)
    expected = np.argsort(-scores, kind="stable")[:8]
    assert scores[expected].min() > np.delete(scores, expected).max()

    clean, picked = views
    np.testing.assert_array_equal(np.array(clean.x), x)
    np.testing.assert_allclose(np.array(picked.x), candidates[expected], atol=1e-6)
    for view in views:
        np.testing.assert_allclose(
            np.array(view.teacher_logits),
            np.array(teacher(np.array(view.x), training=False)),
            atol=1e-5,
        )
    assert (clean.label_weight, picked.label_weight) == (1.0, 0.0)
    assert clean.deterministic and not picked.deterministic
    assert calls["teacher"] == [24]
    assert calls["student"] == ([] if criterion == "teacher_entropy" else [16])


def test_distiller_runs_the_teacher_once_with_cutmix_pick():
    teacher, student = teacher_model(record=True), student_model(record=True)
    record_t, record_s = teacher.get_layer("record"), student.get_layer("record")
    distiller = kd_keras.Distiller(teacher, student, augmenter=kd_keras.augment.CutMixPick(seed=0))
    distiller.compile(optimizer="sgd", run_eagerly=True)
    x, y = batch(8)
    distiller.train_on_batch(x, y)
    assert [len(seen) for seen in record_t.seen] == [24]
    # Scoring the candidates, then training on x and on the picked views,
    # each a batch of its own (the official code's separate BN batches).
    assert [len(seen) for seen in record_s.seen] == [16, 8, 8]


@pytest.mark.parametrize("relabel", [True, False])
def test_loss_is_the_papers_with_teacher_relabelling(relabel):
    teacher, student = teacher_model(), student_model()
    config = kd_keras.recipes.get("cutmix", {"relabel": relabel, "per": "sample"})
    distiller = kd_keras.recipes.build.distiller(config, teacher, student)
    augmenter = distiller.augmenter
    reference = kd_keras.augment.CutMix.from_config(augmenter.get_config())
    reference.seed_generator.state.assign(augmenter.seed_generator.state)
    distiller.compile(optimizer=keras.optimizers.SGD(0.0))
    x, y = batch(8)
    logs = distiller.train_on_batch(x, y, return_dict=True)

    views = reference.views(x, y, lambda v: teacher(v, training=False), None)
    inputs = np.array(views.x)
    t = np.array(teacher(inputs, training=False))
    s = np.array(student(inputs, training=True))
    kd_clean, kd_mixed = 16 * kl_np(t[:8], s[:8], 4.0), 16 * kl_np(t[8:], s[8:], 4.0)
    clean, mixed = views
    if relabel:
        assert (clean.label_weight, mixed.label_weight) == (1.0, 0.0)
        student_loss = ce_np(y, s[:8]).mean()
        # The paper's weights, as written: 0.1 CE(x) + 0.9 [KD(x) + KD(x')].
        expected = 0.1 * student_loss + 0.9 * (kd_clean.mean() + kd_mixed.mean())
    else:
        # The paper's baseline: 0.1 CE(y, x) + 0.9 CE(y_mixed, x') + 0.9 KD(x).
        assert (clean.distill_weight, mixed.distill_weight) == (1.0, 0.0)
        assert mixed.label_weight == pytest.approx(9.0)
        labels = np.array(views.y)
        np.testing.assert_allclose(labels.sum(axis=1), 1.0, atol=1e-6)
        np.testing.assert_allclose(labels[:8], np.eye(CLASSES)[y])
        assert np.any((labels[8:] > 0) & (labels[8:] < 1))
        ce = ce_np(labels, s)
        student_loss = ce[:8].mean() + 9 * ce[8:].mean()
        expected = 0.1 * ce[:8].mean() + 0.9 * ce[8:].mean() + 0.9 * kd_clean.mean()
    np.testing.assert_allclose(logs["student_loss"], student_loss, rtol=1e-4)
    np.testing.assert_allclose(logs["loss"], expected, rtol=1e-4)


@pytest.mark.large
@pytest.mark.parametrize("cls", AUGMENTERS, ids=lambda c: c.__name__)
def test_jitted_distillation_step_runs(cls):
    distiller = kd_keras.Distiller(
        teacher_model(),
        student_model(),
        augmenter=cls(seed=0),
        student_loss_weight=0.1,
    )
    distiller.compile(optimizer=keras.optimizers.SGD(0.01), jit_compile=True)
    # 20 samples in batches of 8: the last, partial batch retraces the step.
    x, y = batch(20)
    state = distiller.augmenter.seed_generator.state.numpy()
    history = distiller.fit(x, y, batch_size=8, epochs=1, verbose=0)
    assert distiller.jit_compile is True
    assert np.isfinite(history.history["loss"][-1])
    assert not np.array_equal(state, distiller.augmenter.seed_generator.state.numpy())


def test_function_matching_shows_the_same_view_to_both_networks():
    teacher, student = teacher_model(record=True), student_model(record=True)
    augmenter = kd_keras.augment.FunctionMatching(seed=0)
    distiller = kd_keras.Distiller(
        teacher,
        student,
        augmenter=augmenter,
        student_loss_weight=0.0,
        distillation_loss_weights=[1.0],
    )
    distiller.compile(optimizer="sgd", run_eagerly=True)
    x, y = batch(8)
    distiller.train_on_batch(x, y)
    (seen_t,), (seen_s,) = teacher.get_layer("record").seen, student.get_layer("record").seen
    np.testing.assert_array_equal(seen_t, seen_s)
    assert seen_t.shape == x.shape and not np.allclose(seen_t, x)
    views = kd_keras.augment.FunctionMatching(seed=1).views(x, y, None, None)
    assert views.label_weight == 0.0 and views.x.shape == x.shape


def test_function_matching_full_crop_is_identity_or_flip():
    x, _ = batch(16, shape=(6, 9, 2))
    still = kd_keras.augment.FunctionMatching(
        crop_area=(1.0, 1.0), aspect_ratio=(1.0, 1.0), flip=False, seed=0
    )
    np.testing.assert_allclose(np.array(still.crop_and_flip(x)), x, atol=1e-5)
    flipping = kd_keras.augment.FunctionMatching(
        crop_area=(1.0, 1.0), aspect_ratio=(1.0, 1.0), seed=0
    )
    out = np.array(flipping.crop_and_flip(x))
    flipped = [np.allclose(o, i[:, ::-1], atol=1e-5) for o, i in zip(out, x)]
    kept = [np.allclose(o, i, atol=1e-5) for o, i in zip(out, x)]
    assert all(f or k for f, k in zip(flipped, kept)) and any(flipped) and any(kept)
    cropped = np.array(kd_keras.augment.FunctionMatching(flip=False, seed=0).crop_and_flip(x))
    assert cropped.shape == x.shape and not np.allclose(cropped, x)
    assert cropped.min() >= x.min() - 1e-6 and cropped.max() <= x.max() + 1e-6


@pytest.mark.parametrize(
    "augmenter",
    [
        kd_keras.augment.MixUp(alpha=0.4, relabel=False, num_classes=4, seed=3),
        kd_keras.augment.CutMix(alpha=0.7, include_clean=False, seed=1),
        kd_keras.augment.CutMixPick(n_run=3, criterion="student_entropy", temperature=2.0, seed=2),
        kd_keras.augment.FunctionMatching(
            flip=False, crop_area=(0.3, 0.9), aspect_ratio=(0.5, 2.0), seed=4
        ),
    ],
    ids=lambda a: type(a).__name__,
)
def test_get_config_round_trips(augmenter):
    config = augmenter.get_config()
    clone = type(augmenter).from_config(config)
    assert clone.get_config() == config
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(augmenter))
    assert type(restored) is type(augmenter) and restored.get_config() == config
    x, _ = batch(8)
    np.testing.assert_array_equal(
        np.array(clone.mix_images(x)[0]), np.array(restored.mix_images(x)[0])
    )


@pytest.mark.parametrize("cls", AUGMENTERS, ids=lambda c: c.__name__)
def test_training_false_is_the_identity(cls):
    x, y = batch(8)
    augmenter = cls(seed=0)
    view = augmenter.views(x, y, None, None, training=False)
    assert view.x is x and view.y is y and view.deterministic
    assert view.teacher_logits is None and view.label_weight == 1.0
    np.testing.assert_array_equal(np.array(augmenter(x)), x)
    assert np.array(augmenter(x, training=True)).shape == x.shape


@pytest.mark.parametrize("cls", [kd_keras.augment.MixUp, kd_keras.augment.CutMix])
def test_mixes_batches_in_tf_data(cls):
    x, y = batch(12)
    augmenter = cls(num_classes=CLASSES, seed=0)
    dataset = (
        tf.data.Dataset.from_tensor_slices((x, y))
        .batch(6)
        .map(lambda images, labels: augmenter((images, labels), training=True))
    )
    epochs = [list(dataset.as_numpy_iterator()) for _ in range(2)]
    for images, labels in epochs[0]:
        assert images.shape == (6, *SHAPE) and labels.shape == (6, CLASSES)
        np.testing.assert_allclose(labels.sum(axis=1), 1.0, atol=1e-6)
    assert not np.allclose(epochs[0][0][0], epochs[1][0][0])


def test_recipes_have_the_papers_settings():
    for name in ("mixup", "cutmix", "cutmix_pick", "funmatch"):
        assert name in kd_keras.recipes.names()
    cutmix = kd_keras.recipes.get("cutmix")
    assert cutmix["student_loss_weight"] == 0.1
    assert cutmix["distillation_loss_weights"] == [1.0]
    assert cutmix["distillation_losses"][0]["temperature"] == 4.0
    assert (cutmix["epochs"], cutmix["batch_size"]) == (240, 64)
    assert cutmix["optimizer"]["learning_rate"] == 0.05
    augmenter = kd_keras.recipes.build.augmenter(cutmix)
    assert isinstance(augmenter, kd_keras.augment.CutMix)
    assert augmenter.relabel and augmenter.per == "batch"
    assert cutmix["student_forward"] == "per_view"
    assert not kd_keras.recipes.get("mixup", {"relabel": False})["augmenter"]["relabel"]
    assert kd_keras.recipes.get("mixup", {"patient": True})["epochs"] == 960
    pick = kd_keras.recipes.get("cutmix_pick", {"criterion": "teacher_entropy", "patient": True})
    assert pick["epochs"] == 960 and pick["augmenter"]["criterion"] == "teacher_entropy"
    assert pick["augmenter"]["n_run"] == 2
    assert kd_keras.recipes.get("cutmix_pick")["augmenter"]["criterion"] == "student_entropy"
    funmatch = kd_keras.recipes.get("funmatch", {"flip": False})
    assert funmatch["student_loss_weight"] == 0.0
    funmatch_augmenter = kd_keras.recipes.build.augmenter(funmatch)
    assert not funmatch_augmenter.flip and not funmatch_augmenter.include_clean
    assert funmatch["epochs"] > 960


def official_box_sides(lam, size):
    # Good-DA-in-KD's rand_bbox: cut = int(W * sqrt(1 - lam)), [c - cut//2, c + cut//2).
    return 2 * (int(size * np.sqrt(1 - lam)) // 2)


def test_cutmix_per_batch_draws_one_official_box_for_the_whole_batch():
    x = np.zeros((16, 12, 12, 1), "float32")
    x += np.arange(16, dtype="float32")[:, None, None, None]  # each image its own value
    boxes = []
    for seed in range(40):
        cutmix = kd_keras.augment.CutMix(seed=seed)
        assert cutmix.per == "batch"
        mixed, partner, lam = (keras.ops.convert_to_numpy(t) for t in cutmix.mix_images(x))
        changed = mixed[..., 0] != x[..., 0]
        # One box, the same pixels in every image, filled from the partner.
        assert all(np.array_equal(changed[0], c) for c in changed)
        np.testing.assert_array_equal(mixed[changed], x[partner][changed])
        assert np.all(lam == lam[0])
        rows, cols = np.flatnonzero(changed[0].any(1)), np.flatnonzero(changed[0].any(0))
        area = len(rows) * len(cols)
        assert lam[0] == pytest.approx(1 - area / 144)
        boxes.append((rows, cols))
    # Unclipped boxes have the official side length; box centres spread
    # over the whole image, not pinned to a corner.
    centres = np.array([(r.mean(), c.mean()) for r, c in boxes if len(r) and len(c)])
    assert centres[:, 0].min() < 4 and centres[:, 0].max() > 8
    assert centres[:, 1].min() < 4 and centres[:, 1].max() > 8


def test_cutmix_box_side_is_the_official_formula():
    # With the centre in the middle nothing is clipped: the side is
    # 2 * (floor(W * sqrt(1 - lam)) // 2).
    cutmix = kd_keras.augment.CutMix(seed=0)
    size = 32
    for lam in (0.1, 0.37, 0.5, 0.8, 0.95):
        mask, count = cutmix._span(1, size, keras.ops.sqrt(1.0 - np.float32([lam])))
        mask = keras.ops.convert_to_numpy(mask)[0]
        stop = np.flatnonzero(mask)
        if 0 < stop.min() and stop.max() < size - 1:
            assert len(stop) == official_box_sides(lam, size)


def test_mixup_per_batch_and_per_sample_ratios():
    x, _ = batch(32)
    _, _, lam = kd_keras.augment.MixUp(seed=1).mix_images(x)
    assert np.unique(np.asarray(lam)).size == 1
    _, _, lam = kd_keras.augment.MixUp(seed=1, per="sample").mix_images(x)
    assert np.unique(np.asarray(lam)).size == 32
    with pytest.raises(ValueError, match="per must be one of"):
        kd_keras.augment.MixUp(per="pixel")
