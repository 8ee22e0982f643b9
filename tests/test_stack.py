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
    return teacher, student, (lambda v: teacher(v, training=False)), (lambda v: student(v, training=False))


def test_each_stage_augments_the_newest_view_and_keeps_its_weights():
    _, _, teacher_fn, student_fn = functions()
    x, y = tiny_batch(count=8)
    x = (x - x.min()) / (x.max() - x.min())
    policy = kd_keras.augment.LearnedPolicy(ops=["Invert"], num_ops=1,
                                            initial_probability=1 - 1e-6, seed=0)
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
    distiller.fit(x, y, batch_size=8, epochs=1, verbose=0,
                  callbacks=[kd_keras.callbacks.PhaseSchedule(augmenter_epochs={0: 1})])
    assert float(first.offset.numpy()) != 0.5 and float(second.offset.numpy()) != -0.25


def test_a_stacked_distiller_round_trips_and_compiles_under_xla(tmp_path):
    x, y = tiny_batch(count=16)
    stack = Stack([kd_keras.augment.MixUp(seed=3), kd_keras.augment.CutMix(seed=4)])
    distiller = kd_keras.Distiller(tiny_teacher(), tiny_student(), augmenter=stack,
                                   student_loss_weight=0.1)
    distiller.compile(optimizer=keras.optimizers.SGD(0.01), jit_compile=True)
    history = distiller.fit(x, y, batch_size=8, epochs=1, verbose=0).history
    assert distiller.jit_compile is True and np.isfinite(history["loss"]).all()
    path = tmp_path / "stacked.keras"
    distiller.save(path)
    restored = keras.saving.load_model(path)
    assert [type(s) for s in restored.augmenter.stages] == [kd_keras.augment.MixUp, kd_keras.augment.CutMix]
    assert [s.seed for s in restored.augmenter.stages] == [3, 4]
    for a, b in zip(restored.student.weights, distiller.student.weights):
        np.testing.assert_array_equal(np.array(a), np.array(b))
    # A .keras file keeps the seeds, not the generators' positions (the
    # epoch backup keeps those): the restored stack draws as a fresh one.
    fresh = kd_keras.Distiller(tiny_teacher(), tiny_student(), augmenter=Stack(
        [kd_keras.augment.MixUp(seed=3), kd_keras.augment.CutMix(seed=4)]))
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
        teacher, tiny_student((28, 28, 1), 10), (x[:96], y[:96]), recipe=recipe,
        epochs=2, batch_size=32, verbose=0,
        **({"phases.starts": [1], "phases.length": 1, "phases.full_epochs": 2}
           if recipe.startswith("tst") else {}),
    )
    history = distiller.history.history
    assert all(np.isfinite(v).all() for v in history.values())
    stages = distiller.augmenter.stages if isinstance(distiller.augmenter, Stack) else [distiller.augmenter]
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
        tiny_teacher(), tiny_student(),
        augmenter=Stack([kd_keras.augment.MixUp(seed=0), kd_keras.augment.CutMix(seed=1)]),
    )
    snapshots = kd_keras.callbacks.ViewSnapshots(tmp_path, x, count=4)
    snapshots.set_model(distiller)
    snapshots.snapshot()
    single = kd_keras.callbacks.ViewSnapshots(tmp_path, x, count=4)
    single.set_model(kd_keras.Distiller(tiny_teacher(), tiny_student(),
                                        augmenter=kd_keras.augment.MixUp(seed=0)))
    single.snapshot()
    # original, the MixUp view, the CutMix of it: one row more than one stage.
    assert len(snapshots.last_boxes) == 3 and len(single.last_boxes) == 2
    assert all(len(row) == 4 for row in snapshots.last_boxes)
