"""kd_keras.augment.Stack: augmenters in order, several learnable, saved, compiled, stacked recipes."""

import keras
import numpy as np
import pytest
from conftest import LearnableOffset
from conftest import tiny_batch
from conftest import tiny_student
from conftest import tiny_teacher

import kd_keras
from kd_keras.augment import Stack


def functions():
    teacher, student = tiny_teacher(), tiny_student()
    return (
        teacher,
        student,
        (lambda v: teacher(v, training=False)),
        (lambda v: student(v, training=False)),
    )


def test_each_stage_augments_the_newest_view_and_keeps_its_weights():
    _, _, teacher_fn, student_fn = functions()
    x, y = tiny_batch(count=8)
    x = (x - x.min()) / (x.max() - x.min())
    policy = kd_keras.augment.LearnedPolicy(
        ops=["Invert"], num_ops=1, initial_probability=1 - 1e-6, seed=0
    )
    stack = Stack([policy, kd_keras.augment.CutMixPick(seed=1)])
    stack.build(x.shape)
    views = stack.views(x, y, teacher_fn, student_fn)
    assert len(views) == 3
    clean, inverted, picked = views
    np.testing.assert_allclose(np.array(clean.x), x)
    np.testing.assert_allclose(np.array(inverted.x), 1 - x, atol=1e-5)
    # The policy's view keeps its labels; CutMixPick mixed *it* (pixels of 1 - x).
    assert (clean.label_weight, inverted.label_weight, picked.label_weight) == (1.0, 1.0, 0.0)
    assert clean.deterministic and not inverted.deterministic and not picked.deterministic
    mixed = np.array(picked.x)
    sources = np.concatenate([1 - x, x])
    flat = sources.reshape(len(sources), -1)
    assert all(np.isin(image.ravel(), flat[:8].ravel()).all() for image in mixed)
    np.testing.assert_allclose(
        np.array(picked.teacher_logits), np.array(teacher_fn(mixed)), atol=1e-5
    )


def test_several_learnable_stages_each_minimise_their_own_objective():
    teacher, student, teacher_fn, student_fn = functions()
    x, y = tiny_batch(count=8)
    first, second = LearnableOffset(name="first"), LearnableOffset(name="second")
    stack = Stack([first, second])
    stack.build(x.shape)
    first.offset.assign(0.5)
    second.offset.assign(-0.25)
    # The second stage's objective is computed on the first stage's view.
    expected = first.objective(x, y, teacher_fn, student_fn) + second.objective(
        x + 0.5, y, teacher_fn, student_fn
    )
    np.testing.assert_allclose(
        float(stack.objective(x, y, teacher_fn, student_fn)), float(expected), rtol=1e-6
    )
    distiller = kd_keras.Distiller(teacher, student, augmenter=stack)
    distiller.compile(optimizer="sgd", augmenter_optimizer=keras.optimizers.SGD(1.0))
    distiller.phase = "augmenter"
    distiller.fit(
        x,
        y,
        batch_size=8,
        epochs=1,
        verbose=0,
        callbacks=[kd_keras.callbacks.PhaseSchedule(augmenter_epochs={0: 1})],
    )
    assert float(first.offset.numpy()) != 0.5 and float(second.offset.numpy()) != -0.25


def test_a_stacked_distiller_round_trips_and_compiles_under_xla(tmp_path):
    x, y = tiny_batch(count=16)
    stack = Stack([kd_keras.augment.MixUp(seed=3), kd_keras.augment.CutMix(seed=4)])
    distiller = kd_keras.Distiller(
        tiny_teacher(), tiny_student(), augmenter=stack, student_loss_weight=0.1
    )
    distiller.compile(optimizer=keras.optimizers.SGD(0.01), jit_compile=True)
    history = distiller.fit(x, y, batch_size=8, epochs=1, verbose=0).history
    assert distiller.jit_compile is True and np.isfinite(history["loss"]).all()
    path = tmp_path / "stacked.keras"
    distiller.save(path)
    restored = keras.saving.load_model(path)
    assert [type(s) for s in restored.augmenter.stages] == [
        kd_keras.augment.MixUp,
        kd_keras.augment.CutMix,
    ]
    assert [s.seed for s in restored.augmenter.stages] == [3, 4]
    for a, b in zip(restored.student.weights, distiller.student.weights):
        np.testing.assert_array_equal(np.array(a), np.array(b))
    # A .keras file keeps the seeds, not the generators' positions (the
    # epoch backup keeps those): the restored stack draws as a fresh one.
    fresh = kd_keras.Distiller(
        tiny_teacher(),
        tiny_student(),
        augmenter=Stack([kd_keras.augment.MixUp(seed=3), kd_keras.augment.CutMix(seed=4)]),
    )
    views = [np.array(v.x) for v in restored.make_views(x[:8], y[:8])]
    again = [np.array(v.x) for v in fresh.make_views(x[:8], y[:8])]
    assert len(views) == 3
    for a, b in zip(views, again):
        np.testing.assert_allclose(a, b)
    assert not np.allclose(views[1], views[2])


@pytest.mark.large
@pytest.mark.parametrize("recipe", ["tst+cutmix_pick", "hard+mixup", "rolewise+backward"])
def test_stacked_recipes_train(digits, recipe):
    x, y = digits.train
    teacher = tiny_teacher((28, 28, 1), 10)
    distiller = kd_keras.distill(
        teacher,
        tiny_student((28, 28, 1), 10),
        (x[:96], y[:96]),
        recipe=recipe,
        epochs=2,
        batch_size=32,
        verbose=0,
        **(
            {"phases.starts": [1], "phases.length": 1, "phases.full_epochs": 2}
            if recipe.startswith("tst")
            else {}
        ),
    )
    history = distiller.history.history
    assert all(np.isfinite(v).all() for v in history.values())
    stages = (
        distiller.augmenter.stages
        if isinstance(distiller.augmenter, Stack)
        else [distiller.augmenter]
    )
    if recipe == "rolewise+backward":
        assert isinstance(distiller.augmenter, kd_keras.augment.BackwardPerturbation)
    elif recipe == "hard+mixup":
        # HARD's default search has no weights: every step is the student's.
        assert len(stages) == 2 and distiller.augmenter_optimizer is None
    else:
        assert len(stages) == 2 and distiller.augmenter_optimizer is not None
        assert int(distiller.augmenter_optimizer.iterations.numpy()) > 0


def test_view_snapshots_show_a_row_per_stage(tmp_path):
    x, y = tiny_batch(count=4)
    distiller = kd_keras.Distiller(
        tiny_teacher(),
        tiny_student(),
        augmenter=Stack([kd_keras.augment.MixUp(seed=0), kd_keras.augment.CutMix(seed=1)]),
    )
    snapshots = kd_keras.callbacks.ViewSnapshots(tmp_path, x, count=4)
    snapshots.set_model(distiller)
    snapshots.snapshot()
    single = kd_keras.callbacks.ViewSnapshots(tmp_path, x, count=4)
    single.set_model(
        kd_keras.Distiller(tiny_teacher(), tiny_student(), augmenter=kd_keras.augment.MixUp(seed=0))
    )
    single.snapshot()
    # original, the MixUp view, the CutMix of it: one row more than one stage.
    assert len(snapshots.last_boxes) == 3 and len(single.last_boxes) == 2
    assert all(len(row) == 4 for row in snapshots.last_boxes)


def unit_batch(count=16, shape=(8, 8, 1)):
    x, y = tiny_batch(count=count, input_shape=shape)
    return (x - x.min()) / (x.max() - x.min()), y  # [0, 1], as the image ops assume


@pytest.mark.large  # XLA compiles both phases' steps
def test_a_learnable_stack_compiles_under_xla_and_round_trips(tmp_path):
    x, y = unit_batch()
    stack = Stack([kd_keras.augment.LearnedPolicy(seed=0), kd_keras.augment.CutMixPick(seed=1)])
    distiller = kd_keras.Distiller(
        tiny_teacher(), tiny_student(), augmenter=stack, student_loss_weight=0.5
    )
    distiller.compile(
        optimizer=keras.optimizers.SGD(0.01),
        augmenter_optimizer=keras.optimizers.SGD(0.1),
        jit_compile=True,
    )
    policy_before = [np.array(w) for w in stack.stages[0].trainable_weights]
    history = distiller.fit(
        x,
        y,
        batch_size=8,
        epochs=2,
        verbose=0,
        callbacks=[kd_keras.callbacks.PhaseSchedule(student_steps=1, augmenter_steps=1)],
    ).history
    assert distiller.jit_compile is True
    assert int(distiller.optimizer.iterations) == 2
    assert int(distiller.augmenter_optimizer.iterations) == 2
    assert np.isfinite(history["loss"]).all() and np.isfinite(history["augmenter_objective"]).all()
    assert any(
        not np.allclose(a, np.array(b))
        for a, b in zip(policy_before, stack.stages[0].trainable_weights)
    )
    path = tmp_path / "learnable_stack.keras"
    distiller.save(path)
    restored = keras.saving.load_model(path)
    assert [type(s) for s in restored.augmenter.stages] == [
        kd_keras.augment.LearnedPolicy,
        kd_keras.augment.CutMixPick,
    ]
    assert restored.learnable_augmenter
    for a, b in zip(restored.augmenter.weights, distiller.augmenter.weights):
        np.testing.assert_array_equal(np.array(a), np.array(b))
    for a, b in zip(
        restored.augmenter_optimizer.variables, distiller.augmenter_optimizer.variables
    ):
        np.testing.assert_array_equal(np.array(a), np.array(b))
    # The restored stack trains on (compiled as saved, XLA included).
    assert restored.jit_compile is True
    restored.phase = "augmenter"
    restored.fit(
        x,
        y,
        batch_size=8,
        epochs=1,
        verbose=0,
        callbacks=[kd_keras.callbacks.PhaseSchedule(augmenter_epochs={0: 1})],
    )
    assert int(restored.augmenter_optimizer.iterations) == 4  # on from the saved 2


def test_a_learned_spatial_sampler_then_mixup_trains_in_both_phases():
    x, y = unit_batch()
    spatial = kd_keras.augment.SpatialAugmenter(sampler="network", candidates=1, seed=0)
    stack = Stack([spatial, kd_keras.augment.MixUp(seed=1)])
    distiller = kd_keras.Distiller(
        tiny_teacher(), tiny_student(), augmenter=stack, student_loss_weight=0.1
    )
    distiller.compile(
        optimizer=keras.optimizers.SGD(0.05), augmenter_optimizer=keras.optimizers.Adam(1e-2)
    )
    network_before = [np.array(w) for w in spatial.trainable_weights]
    student_before = [np.array(w) for w in distiller.student.weights]
    views = distiller.make_views(x[:8], y[:8])
    # x, the warp of x, then MixUp of the warp: one view per stage on top of x.
    assert len(views) == 3 and np.allclose(np.array(views[0].x), x[:8])
    history = distiller.fit(
        x,
        y,
        batch_size=8,
        epochs=2,
        verbose=0,
        callbacks=[kd_keras.callbacks.PhaseSchedule(student_steps=1, augmenter_steps=1)],
    ).history
    assert int(distiller.optimizer.iterations) == 2
    assert int(distiller.augmenter_optimizer.iterations) == 2
    assert np.isfinite(history["augmenter_objective"]).all()
    assert any(
        not np.allclose(a, np.array(b)) for a, b in zip(network_before, spatial.trainable_weights)
    )
    assert any(
        not np.allclose(a, np.array(b)) for a, b in zip(student_before, distiller.student.weights)
    )


@pytest.mark.large
def test_rolewise_then_backward_trains_on_the_host_policys_views():
    # All-white images: without the host policy every auxiliary sample stays
    # within l2 distance 1 of white (at most 4 pixels below 0.5); PBA's final
    # Cutout (half the side, zeros) alone darkens at least a 7 x 7 corner.
    shape = (28, 28, 1)
    x = np.ones((64, *shape), "float32")
    y = np.random.default_rng(0).integers(0, 10, size=64)
    distiller = kd_keras.distill(
        tiny_teacher(shape, 10),
        tiny_student(shape, 10),
        (x, y),
        recipe="rolewise+backward",
        epochs=1,
        batch_size=32,
        verbose=0,
        pool_size=64,
    )
    backward = distiller.augmenter
    assert isinstance(backward, kd_keras.augment.BackwardPerturbation)
    filled = int(backward.pool_filled.numpy())
    assert filled > 0
    pooled = np.array(backward.pool)[:filled]
    dark = (pooled < 0.5).reshape(filled, -1).sum(axis=1)
    assert dark.min() >= 40, dark


@pytest.mark.large
def test_the_cli_distils_a_stacked_recipe(tmp_path):
    import json
    import os
    import pathlib
    import subprocess
    import sys

    env = {**os.environ, "PYTHONPATH": str(pathlib.Path(kd_keras.__file__).resolve().parent.parent)}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "kd_keras.cli",
            "distill",
            "--recipe=tst+cutmix_pick",
            "--epochs=1",
            "--out=run",
            "--export=keras",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    run = tmp_path / "run"
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["recipe"] == "tst+cutmix_pick" and metrics["epochs"] == 1
    config = json.loads((run / "config.json").read_text())
    assert [stage["class_name"] for stage in config["augmenter"]["stages"]] == [
        "LearnedPolicy",
        "CutMixPick",
    ]
    # One row of originals and one per stage, each 28x28 digit drawn 112 px tall.
    height = keras.utils.load_img(run / "views.png").size[1]
    assert 3 * 112 < height < 4 * 112
