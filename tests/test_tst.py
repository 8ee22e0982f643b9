"""TST's LearnedPolicy: gates, views, objective, phases, recipe, logging, XLA."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import tiny_student
from conftest import tiny_teacher
from PIL import Image
from sklearn.datasets import load_digits

import kd_keras
from kd_keras.augment import LearnedPolicy
from kd_keras.augment import ops as image_ops
from kd_keras.augment.tst import relaxed_bernoulli
from kd_keras.callbacks import PolicyTrajectory
from kd_keras.models import small

SHAPE = (8, 8, 1)


@pytest.fixture(scope="module")
def digits():
    data = load_digits()
    x = (data.images[:, :, :, None] / 16.0).astype("float32")
    return x, data.target.astype("int32")


def _policy(**kwargs):
    kwargs.setdefault("seed", 1)
    policy = LearnedPolicy(**kwargs)
    policy.build((None, *SHAPE))
    return policy


def _values(variables):
    return [np.array(v.numpy()) for v in variables]


def test_relaxed_gates_are_in_unit_interval_and_harden_as_temperature_falls():
    rng = np.random.default_rng(0)
    probabilities = rng.uniform(0.05, 0.95, size=(2000,)).astype("float32")
    logits = np.log(probabilities / (1 - probabilities))
    uniform = rng.uniform(size=(2000,)).astype("float32")
    hard = (uniform > 1 - probabilities).astype("float32")
    clear = np.abs(uniform - (1 - probabilities)) > 0.01
    distances = []
    for temperature in (1.0, 0.05, 1e-4):
        gates = relaxed_bernoulli(logits, uniform, temperature).numpy()
        assert gates.min() >= 0.0 and gates.max() <= 1.0
        distances.append(np.abs(gates - hard)[clear].mean())
    assert distances[0] > distances[1] > distances[2]
    assert distances[2] < 1e-6
    # As a Bernoulli(p) draw: the mean gate over many draws is p.
    many = rng.uniform(size=(20000, 1)).astype("float32")
    means = relaxed_bernoulli(np.float32([-1.0, 0.0, 2.0]), many, 0.05).numpy().mean(0)
    np.testing.assert_allclose(means, 1 / (1 + np.exp([1.0, 0.0, -2.0])), atol=0.02)


def test_prior_and_log_scalars():
    policy = _policy(initial_magnitude={"Rotate": 0.2}, initial_probability=0.3)
    scalars = policy.log_scalars()
    assert scalars["magnitude/Rotate"] == pytest.approx(0.2)
    assert scalars["magnitude/ShearX"] == pytest.approx(0.5)
    assert all(scalars[f"probability/{name}"] == pytest.approx(0.3) for name in image_ops.TST_OPS)
    assert "magnitude/Invert" not in scalars and "magnitude/Equalize" not in scalars
    assert len(scalars) == 2 * len(image_ops.TST_OPS) - 2
    with pytest.raises(ValueError, match="does not use"):
        LearnedPolicy(initial_magnitude={"AutoContrast": 0.5})
    with pytest.raises(ValueError, match=r"in \(0, 1\)"):
        LearnedPolicy(initial_probability=1.0)
    with pytest.raises(ValueError, match="num_ops"):
        LearnedPolicy(ops=["Invert", "Rotate"], num_ops=3)


def test_views_training_false_is_identity(digits):
    x, y = digits[0][:16], digits[1][:16]
    policy = _policy()
    views = policy.views(x, y, None, None, training=False)
    assert views.x is x and views.y is y
    np.testing.assert_array_equal(policy(x, training=False), x)


def test_views_are_clean_then_augmented_with_labels_kept(digits):
    x, y = digits[0][:16], digits[1][:16]
    views = _policy().views(x, y, None, None, training=True)
    np.testing.assert_array_equal(views.x[:16].numpy(), x)
    augmented = views.x[16:].numpy()
    assert augmented.min() >= 0.0 and augmented.max() <= 1.0
    assert not np.allclose(augmented, x)
    np.testing.assert_array_equal(views.y.numpy(), np.concatenate([y, y]))
    assert [(v.label_weight, v.distill_weight) for v in views] == [(1.0, 1.0)] * 2
    assert views[0].deterministic and not views[1].deterministic
    # With every gate shut the view is the image itself.
    shut = _policy(initial_probability=1e-6).views(x, y, None, None)
    np.testing.assert_allclose(shut.x[16:].numpy(), x, atol=1e-6)


def _drawn_pairs(per, directions, seed=0):
    # On a flat 0.2 image with every gate open, each op moves the pixels by
    # its own amount: Invert +0.6, Brightness +-0.18, Posterize to 4 bits
    # -0.0118 (level 51 -> 48), so each value tells which two ops were drawn.
    x = np.full((64, *SHAPE), 0.2, "float32")
    policy = _policy(
        ops=["Invert", "Brightness", "Posterize"],
        num_ops=2,
        initial_magnitude=1 - 1e-7,
        initial_probability=1 - 1e-6,
        per=per,
        directions=directions,
        seed=seed,
    )
    values = policy.augment(x).numpy()[:, 0, 0, 0]
    posterize = 48 / 255 - 0.2
    pairs = {
        ("Invert", "Brightness+"): 0.2 + 0.6 + 0.18,
        ("Invert", "Brightness-"): 0.2 + 0.6 - 0.18,
        ("Invert", "Posterize"): 0.2 + 0.6 + posterize,
        ("Brightness+", "Posterize"): 0.2 + 0.18 + posterize,
        ("Brightness-", "Posterize"): 0.2 - 0.18 + posterize,
    }
    drawn = []
    for v in values:
        (name,) = [name for name, p in pairs.items() if abs(v - p) < 1e-4]
        drawn.append(name)
    return drawn


def test_views_apply_num_ops_ops_per_image():
    drawn = _drawn_pairs("image", "random")
    # Each image draws its own pair and its own direction of Brightness.
    assert len(set(drawn)) >= 4
    assert any("Brightness-" in pair for pair in drawn)


def test_official_draws_one_op_set_per_batch_and_signed_ops_one_way():
    batches = [_drawn_pairs("batch", "one", seed=seed) for seed in range(8)]
    for drawn in batches:
        assert len(set(drawn)) == 1  # one op set for the batch
        assert not any("Brightness-" in pair for pair in drawn)  # +m only
    assert len({drawn[0] for drawn in batches}) >= 2  # batches draw different sets
    assert kd_keras.recipes.get("tst")["augmenter"]["per"] == "batch"
    assert kd_keras.recipes.get("tst")["augmenter"]["directions"] == "one"
    with pytest.raises(ValueError, match="per must be one of"):
        LearnedPolicy(per="pixel")
    with pytest.raises(ValueError, match="directions must be one of"):
        LearnedPolicy(directions="both")


def test_official_cutout_is_one_mean_box_per_batch_inside_the_gated_ops(digits):
    x = digits[0][:32]
    assert LearnedPolicy().cutout == "official"
    assert kd_keras.recipes.get("tst")["augmenter"]["cutout"] == "official"
    mean = x.mean(axis=(0, 1, 2))
    sides = set()
    for seed in range(12):
        # Cutout alone, its gate b (one per batch) near 1 but soft: the view
        # is x + b (mean - x) inside one box shared by the batch, x outside.
        policy = _policy(
            ops=["Cutout"], num_ops=1, temperature=1.0, initial_probability=0.9, seed=seed
        )
        view = policy.augment(x).numpy()
        cut = np.abs(view - x) > 1e-7
        footprint = cut.any(axis=0)[..., 0]
        rows, cols = np.nonzero(footprint.any(axis=1))[0], np.nonzero(footprint.any(axis=0))[0]
        assert footprint.sum() == len(rows) * len(cols)  # a rectangle
        assert 4 <= len(rows) <= 8 and 4 <= len(cols) <= 8  # half to all of 8 px
        sides.update([len(rows), len(cols)])
        inside = footprint[None, :, :, None] & np.ones_like(cut)
        differs = inside & (np.abs(mean - x) > 1e-3)
        gate = (view - x)[differs] / (mean - x)[differs]
        np.testing.assert_allclose(gate, gate[0], rtol=1e-4)  # one gate
        assert 0.0 < gate[0] <= 1.0
        np.testing.assert_array_equal(view[~inside], x[~inside])
    assert len(sides) >= 3
    # per="image": a box per image.
    policy = _policy(ops=["Cutout"], num_ops=1, initial_probability=1 - 1e-6, per="image")
    cut = np.abs(policy.augment(x).numpy() - x) > 1e-7
    assert len({c.any(axis=-1).tobytes() for c in cut}) > 1
    with pytest.raises(ValueError, match="cutout must be one of"):
        LearnedPolicy(cutout="square")


def test_magnitude_cutout_is_a_square_per_image_of_fill_value():
    x = np.full((16, 20, 20, 1), 0.5, "float32")
    policy = LearnedPolicy(
        ops=["Cutout"],
        num_ops=1,
        initial_probability=1 - 1e-6,
        initial_magnitude=0.8,
        fill_value=1.0,
        cutout="magnitude",
        seed=3,
    )
    policy.build((None, 20, 20, 1))
    view = policy.augment(x).numpy()
    filled = np.isclose(view, 1.0, atol=1e-4)
    # Side 0.8 * 0.625 * 20 = 10 px, clipped at the borders; each image its own.
    assert filled.sum(axis=(1, 2, 3)).max() == 100 and filled.sum(axis=(1, 2, 3)).min() >= 25
    assert len({f.tobytes() for f in filled}) > 1


def test_cutout_probability_gets_a_gradient_and_its_magnitude_none(digits):
    x, y = digits[0][:16], digits[1][:16] % 4
    teacher, student = tiny_teacher(), tiny_student()
    for cutout in ("official", "magnitude"):
        policy = _policy(
            ops=["Cutout", "Invert", "Rotate"], num_ops=3, temperature=1.0, cutout=cutout
        )
        with tf.GradientTape() as tape:
            loss = policy.objective(
                x, y, lambda v: teacher(v, training=False), lambda v: student(v, training=False)
            )
        d_magnitude, d_probability = tape.gradient(
            loss, [policy.magnitude_logits, policy.probability_logits]
        )
        assert np.isfinite(float(loss))
        assert abs(float(d_probability[0])) > 1e-5, cutout  # Cutout's gate learns
        assert float(d_magnitude[0]) == 0.0, cutout  # its size does not
        assert abs(float(d_magnitude[2])) > 1e-6, cutout  # Rotate's does


def test_student_loss_is_tst_loss(digits):
    x, y = digits[0][:32], (digits[1][:32] % 4)
    teacher, student = tiny_teacher(), tiny_student()
    # Invert alone, always on: x~ = 1 - x, so the loss can be computed by hand.
    config = kd_keras.recipes.get(
        "tst",
        {
            "augmenter": {
                "class_name": "LearnedPolicy",
                "ops": ["Invert"],
                "num_ops": 1,
                "initial_probability": 1 - 1e-6,
            },
        },
    )
    distiller = kd_keras.recipes.build.distiller(config, teacher, student)
    distiller.compile(optimizer=keras.optimizers.SGD(0.0))
    logs = distiller.train_on_batch(x, y, return_dict=True)

    def ce_plus_kd(inputs):
        t = teacher(inputs, training=False).numpy().astype("float64")
        s = student(inputs, training=True).numpy().astype("float64")

        def log_softmax(z):
            z = z - z.max(-1, keepdims=True)
            return z - np.log(np.exp(z).sum(-1, keepdims=True))

        ce = -log_softmax(s)[np.arange(len(y)), y]
        p_t, log_p_t, log_p_s = np.exp(log_softmax(t / 4)), log_softmax(t / 4), log_softmax(s / 4)
        kd = 16.0 * (p_t * (log_p_t - log_p_s)).sum(-1)
        return (ce + kd).mean()

    expected = 0.5 * ce_plus_kd(1.0 - x) + 0.5 * ce_plus_kd(x)
    assert logs["loss"] == pytest.approx(expected, rel=1e-4)
    # 0.5 [CE + KD](x~) + 0.5 [CE + KD](x), written as the official code does.
    assert distiller.student_loss_weight == 0.5
    assert distiller.distillation_loss_weights == [1.0]
    assert distiller.student_forward == "joint"


def _log_softmax(z):
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


@pytest.mark.parametrize("labels", ["ids", "soft"])
def test_objective_is_tst_loss_computed_in_numpy(digits, labels):
    # Invert alone, always on: x~ = 1 - x. Linear networks, the student
    # certain on half the views (p_s(y) rounds to 1 in float32, so its term
    # is -log(1e-8)), the teacher unsure: both terms are large and distinct.
    x, ids = digits[0][:16], digits[1][:16]
    rng = np.random.default_rng(0)
    w_t, w_s = rng.normal(size=(64, 10)), rng.normal(size=(64, 10))
    flat_tilde = (1.0 - x).reshape(16, -1).astype("float64")
    z_t = flat_tilde @ w_t
    z_s = flat_tilde @ w_s
    # Make the student's logit of the label +60 on the first 8 views.
    boost = np.zeros((16, 10))
    boost[np.arange(8), ids[:8]] = 60.0 - z_s[np.arange(8), ids[:8]] + z_s[:8].max(-1)
    z_s = z_s + boost
    if labels == "ids":
        y = ids
        weights = np.eye(10)[ids]
    else:
        y = (0.6 * np.eye(10)[ids] + 0.4 * np.eye(10)[(ids + 3) % 10]).astype("float32")
        weights = y.astype("float64")

    def network(w, offset):
        w = keras.ops.convert_to_tensor(w.astype("float32"))
        offset = keras.ops.convert_to_tensor(offset.astype("float32"))
        return lambda v: keras.ops.reshape(v, (16, -1)) @ w + offset

    teacher_fn = network(w_t, np.zeros((16, 10)))
    student_fn = network(w_s, boost)
    log_p_t, p_s = _log_softmax(z_t), np.exp(_log_softmax(z_s))
    teacher_term = -(weights * log_p_t).sum(-1)
    student_term = -np.log(1.0 - (weights * p_s).sum(-1) + 1e-8)
    expected = teacher_term.mean() + student_term.mean()
    assert student_term.mean() > 0.5 and teacher_term.mean() > 5.0
    policy = LearnedPolicy(ops=["Invert"], num_ops=1, initial_probability=1 - 1e-6, seed=0)
    policy.build((None, *SHAPE))
    eager = float(policy.objective(x, y, teacher_fn, student_fn))
    graph = float(tf.function(lambda: policy.objective(x, y, teacher_fn, student_fn))())
    assert eager == pytest.approx(expected, rel=1e-5)
    assert graph == pytest.approx(expected, rel=1e-5)


def test_recipe_scales_policy_phases_to_the_run():
    config = kd_keras.recipes.get("tst", teacher="wrn_40_2", student="wrn_16_2")
    assert config["epochs"] == 240 and config["batch_size"] == 128
    assert config["optimizer"]["learning_rate"] == 0.1 and config["optimizer"]["nesterov"]
    build = kd_keras.recipes.build
    windows = {e: [c.augmenter_epochs for c in build.callbacks(config, e)] for e in (1, 4, 30, 240)}
    # Inserted phases: 30 epochs before student epochs 30 and 90 of 240, the
    # same fractions of shorter runs.
    assert windows == {1: [], 4: [{1: 1, 3: 1}], 30: [{4: 4, 15: 4}], 240: [{30: 30, 120: 30}]}
    assert build.fit_epochs(config, 240) == 300
    (schedule,) = build.callbacks(config, 240)
    assert schedule.reset_augmenter_optimizer
    optimizer = build._optimizer(config["augmenter_optimizer"])
    assert isinstance(optimizer, keras.optimizers.SGD) and optimizer.global_clipnorm is None
    assert optimizer.momentum == 0.9 and float(optimizer.learning_rate) == pytest.approx(0.01)
    augmenter = build.augmenter(config)
    assert augmenter.num_ops == 4 and augmenter.temperature == 0.05
    assert build.callbacks(kd_keras.recipes.get("kd"), 30) == []


def test_policy_phase_changes_only_theta(digits, tmp_path):
    x, y = digits[0][:128], digits[1][:128] % 4
    teacher, student = tiny_teacher(), tiny_student()
    snapshots = {}

    class Snapshot(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            model = self.model
            snapshots[epoch] = {
                "teacher": _values(model.teacher.variables),
                "student": _values(model.student.variables),
                "magnitude": model.augmenter.magnitude_logits.numpy().copy(),
                "probability": model.augmenter.probability_logits.numpy().copy(),
                "phase": model.phase,
            }

    student_before = _values(student.variables)
    teacher_before = _values(teacher.variables)
    trajectory = PolicyTrajectory(tmp_path)
    distiller = kd_keras.distill(
        teacher,
        student,
        (x, y),
        recipe="tst",
        epochs=2,
        verbose=0,
        # One policy epoch inserted before student epoch 1 of 2.
        **{
            "phases.starts": [1],
            "phases.length": 1,
            "phases.full_epochs": 2,
            "augmenter_optimizer.learning_rate": 0.5,
            "batch_size": 64,
        },
        callbacks=[Snapshot(), trajectory],
    )
    policy = distiller.augmenter
    prior_m = np.zeros(len(policy.ops), "float32")
    assert [snapshots[e]["phase"] for e in range(3)] == ["student", "augmenter", "student"]
    assert all(np.array_equal(a, b) for a, b in zip(teacher_before, snapshots[2]["teacher"]))
    # Epoch 0: the student learns, the policy does not.
    assert not all(np.array_equal(a, b) for a, b in zip(student_before, snapshots[0]["student"]))
    np.testing.assert_array_equal(snapshots[0]["magnitude"], prior_m)
    np.testing.assert_array_equal(snapshots[0]["probability"], prior_m)
    # Epoch 1: only theta moves, and only the learnable ops' magnitudes.
    assert all(
        np.array_equal(a, b) for a, b in zip(snapshots[0]["student"], snapshots[1]["student"])
    )
    learnable = np.array([image_ops.OPS[name].learnable for name in policy.ops])
    moved = snapshots[1]["magnitude"] != prior_m
    assert moved[learnable].any() and not moved[~learnable].any()
    assert (snapshots[1]["probability"] != prior_m).any()
    # Epoch 2: the policy is frozen again.
    np.testing.assert_array_equal(snapshots[2]["magnitude"], snapshots[1]["magnitude"])
    np.testing.assert_array_equal(snapshots[2]["probability"], snapshots[1]["probability"])

    records = json.loads((tmp_path / "policy.json").read_text())
    assert [r["epoch"] for r in records] == [0, 1, 2, 3]
    assert records[0]["magnitude/Rotate"] == pytest.approx(0.5)
    assert records[-1] == pytest.approx({"epoch": 3, **policy.log_scalars()})
    with Image.open(tmp_path / "policy.png") as image:
        assert image.format == "PNG" and image.size[0] > 2 * image.size[1]


def test_objective_decreases_over_a_policy_phase_on_fixed_networks(digits):
    x = np.zeros((len(digits[0]), 12, 12, 1), "float32")
    x[:, 2:10, 2:10] = digits[0]
    y = digits[1]
    keras.utils.set_random_seed(0)
    teacher = small.cnn((12, 12, 1), 10, width=8)
    student = small.mlp((12, 12, 1), 10, width=16)
    for model, epochs in ((teacher, 5), (student, 1)):
        model.compile(
            keras.optimizers.Adam(1e-2),
            keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
        model.fit(x[:512], y[:512], epochs=epochs, batch_size=64, verbose=0)
    x, y = x[:64], y[:64]
    policy = LearnedPolicy(seed=0)
    policy.build((None, 12, 12, 1))
    distiller = kd_keras.Distiller(teacher, student, augmenter=policy)
    distiller.compile(optimizer="sgd", augmenter_optimizer=keras.optimizers.SGD(1.0, momentum=0.9))
    networks_before = _values([*teacher.variables, *student.variables])

    def objective():
        # The same 8 draws before and after: the expected objective.
        return np.mean(
            [
                float(
                    policy.objective(
                        x,
                        y,
                        distiller._teacher_fn,
                        distiller._student_fn,
                        seed=keras.random.SeedGenerator(100 + s),
                    )
                )
                for s in range(8)
            ]
        )

    before = objective()
    distiller.phase = "augmenter"
    distiller.fit(np.tile(x, (40, 1, 1, 1)), np.tile(y, 40), batch_size=64, verbose=0)
    after = objective()
    assert after < before - 0.1, (before, after)
    networks_after = _values([*teacher.variables, *student.variables])
    assert all(np.array_equal(a, b) for a, b in zip(networks_before, networks_after))


def test_value_range_maps_inputs_onto_the_ops_range_and_back():
    # Standardised one-row signals (MNIST-1D) in [low, high]: the same draws,
    # ops and fill as on the inputs mapped onto [0, 1], mapped back.
    low, high = -5.5, 4.5
    rng = np.random.default_rng(0)
    unit = rng.uniform(0.05, 0.95, size=(16, 1, 40, 1)).astype("float32")
    ops = ["TranslateX", "Contrast", "Cutout", "Posterize"]
    settings = dict(ops=ops, num_ops=4, initial_probability=0.999, temperature=0.05)
    on_unit = LearnedPolicy(fill_value=0.25, **settings)
    ranged = LearnedPolicy(
        fill_value=low + 0.25 * (high - low), value_range=(low, high), **settings
    )
    assert ranged.input_range == (low, high) and on_unit.input_range == (0.0, 1.0)
    on_unit.build(unit.shape)
    ranged.build(unit.shape)
    inputs = unit * (high - low) + low
    expected = on_unit.augment(unit, seed=keras.random.SeedGenerator(5)).numpy()
    augmented = ranged.augment(inputs, seed=keras.random.SeedGenerator(5)).numpy()
    assert not np.allclose(augmented, inputs, atol=1e-3)
    np.testing.assert_allclose(augmented, expected * (high - low) + low, atol=1e-4)
    assert augmented.min() >= low - 1e-5 and augmented.max() <= high + 1e-5
    for bad in ((1.0, 1.0), (0.0, float("nan")), (0.0,), "ab"):
        with pytest.raises(ValueError, match="value_range must be"):
            LearnedPolicy(value_range=bad)


def test_a_range_refusal_names_the_recipes_value_range_and_the_fix_trains():
    rng = np.random.default_rng(1)
    x = rng.normal(0, 2, size=(64, 1, 40, 1)).astype("float32")
    y = rng.integers(0, 10, 64)
    teacher = kd_keras.models.get("mnist1d_cnn", (1, 40, 1), 10)
    student = kd_keras.models.get("mnist1d_mlp", (1, 40, 1), 10)
    with pytest.raises(
        ValueError, match=r"--set augmenter\.value_range=\[(-?[0-9.]+),([0-9.]+)\]"
    ) as refused:
        kd_keras.distill(teacher, student, (x, y), recipe="tst", epochs=1, batch_size=32, verbose=0)
    suggested = refused.value.args[0].split("value_range=")[1].split(")")[0]
    low, high = json.loads(suggested)
    assert low <= x.min() and high >= x.max() and high - low < x.max() - x.min() + 0.03
    config = kd_keras.recipes.get("tst", {"value_range": [low, high]})
    distiller = kd_keras.distill(
        teacher, student, (x, y), recipe=config, epochs=1, batch_size=32, verbose=0
    )
    assert distiller.augmenter.value_range == (low, high)


def test_recipe_ops_choose_the_policys_ops_and_a_string_is_refused():
    assert kd_keras.recipes.get("tst")["augmenter"]["ops"] == list(image_ops.TST_OPS)
    no_invert = [name for name in image_ops.TST_OPS if name != "Invert"]
    config = kd_keras.recipes.get("tst", {"ops": no_invert})
    teacher, student = tiny_teacher(SHAPE), tiny_student(SHAPE)
    distiller = kd_keras.recipes.build.distiller(config, teacher, student)
    assert distiller.augmenter.ops == no_invert
    assert "probability/Invert" not in distiller.augmenter.log_scalars()
    assert "probability/Rotate" in distiller.augmenter.log_scalars()
    with pytest.raises(ValueError, match=r"got the string '\[Rotate\]': quote each name"):
        kd_keras.recipes.get("tst", {"ops": "[Rotate]"})


def test_get_config_round_trip():
    policy = LearnedPolicy(
        ops=["Rotate", "Invert", "Cutout"],
        num_ops=2,
        temperature=0.1,
        initial_magnitude={"Rotate": 0.3},
        initial_probability=0.7,
        fill_value=0.5,
        value_range=(-2.0, 3.0),
        seed=4,
        name="tst_policy",
    )
    config = policy.get_config()
    assert config["value_range"] == [-2.0, 3.0]
    assert LearnedPolicy.from_config(config).get_config() == config
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(policy))
    assert isinstance(restored, LearnedPolicy) and restored.get_config() == config
    restored.build((None, *SHAPE))
    assert restored.log_scalars()["magnitude/Rotate"] == pytest.approx(0.3)
    assert restored.log_scalars()["probability/Cutout"] == pytest.approx(0.7)


@pytest.mark.large
def test_jitted_steps_compile(digits):
    x, y = digits[0][:32], digits[1][:32] % 4
    # One op of each kind (test_ops compiles every op on its own): a warp, a
    # blend, a convolution, both straight-through ops, a histogram, a random op.
    policy = _policy(
        ops=["Rotate", "Contrast", "Sharpness", "Posterize", "Solarize", "Equalize", "Cutout"]
    )
    distiller = kd_keras.Distiller(
        tiny_teacher(),
        tiny_student(),
        augmenter=policy,
        student_loss_weight=1.0,
        distillation_loss_weights=[1.0],
    )
    distiller.compile(
        optimizer="sgd",
        augmenter_optimizer=keras.optimizers.SGD(0.01, momentum=0.9),
        jit_compile=True,
    )
    distiller.phase = "augmenter"
    history = distiller.fit(x, y, batch_size=16, epochs=1, verbose=0)
    assert distiller.jit_compile  # Keras did not fall back to jit_compile=False
    assert np.isfinite(history.history["augmenter_objective"]).all()
    distiller.phase = "student"
    history = distiller.fit(x, y, batch_size=16, epochs=1, verbose=0)
    assert distiller.jit_compile
    assert np.isfinite(history.history["loss"]).all()


def test_trajectory_of_a_resumed_run_continues_the_stopped_one(tmp_path):
    class Model:
        augmenter = type("Policy", (), {"log_scalars": lambda self: {"magnitude/Rotate": 0.7}})()

    stopped = [{"epoch": e, "magnitude/Rotate": e / 10} for e in range(4)]
    (tmp_path / "policy.json").write_text(json.dumps(stopped))
    trajectory = PolicyTrajectory(tmp_path)
    trajectory.set_model(Model())
    trajectory.on_train_begin()
    # The checkpoint holds 2 epochs; the stopped run had also recorded a
    # third, which the resumed run trains again.
    trajectory.on_epoch_begin(2)
    assert [r["epoch"] for r in trajectory.history] == [0, 1, 2]
    trajectory.on_epoch_end(2)
    written = json.loads((tmp_path / "policy.json").read_text())
    assert written == stopped[:3] + [{"epoch": 3, "magnitude/Rotate": 0.7}]
    fresh = PolicyTrajectory(tmp_path / "fresh")
    fresh.set_model(Model())
    fresh.on_train_begin()
    fresh.on_epoch_begin(0)
    assert fresh.history == [{"epoch": 0, "magnitude/Rotate": 0.7}]
