import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import LearnableOffset
from conftest import same_weights
from conftest import tiny_batch
from conftest import tiny_student
from conftest import tiny_teacher
from conftest import weights_of

import kd_keras
from kd_keras.augment import Augmenter
from kd_keras.augment import View


def softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def make(augmenter=None, **kwargs):
    return kd_keras.Distiller(tiny_teacher(), tiny_student(), augmenter=augmenter, **kwargs)


def test_student_step_changes_only_the_student():
    distiller = make(LearnableOffset())
    distiller.compile(optimizer=keras.optimizers.SGD(0.1), augmenter_optimizer="adam")
    teacher, student, augmenter = (
        weights_of(distiller.teacher),
        weights_of(distiller.student),
        weights_of(distiller.augmenter),
    )
    x, y = tiny_batch()
    distiller.fit(x, y, batch_size=8, epochs=1, verbose=0)
    assert same_weights(teacher, distiller.teacher)  # BN moving stats included
    assert same_weights(augmenter, distiller.augmenter)
    assert not same_weights(student, distiller.student)


def test_augmenter_phase_changes_only_the_augmenter():
    distiller = make(LearnableOffset())
    distiller.compile(optimizer=keras.optimizers.SGD(0.1), augmenter_optimizer="adam")
    distiller.phase = "augmenter"
    teacher, student = weights_of(distiller.teacher), weights_of(distiller.student)
    x, y = tiny_batch()
    distiller.fit(x, y, batch_size=8, epochs=1, verbose=0)
    assert same_weights(teacher, distiller.teacher)
    assert same_weights(student, distiller.student)
    assert float(distiller.augmenter.offset) != 0.0
    assert int(distiller.augmenter_optimizer.iterations) == 2
    assert int(distiller.optimizer.iterations) == 0


def test_loss_matches_hand_computation():
    distiller = make(student_loss_weight=0.3, distillation_loss_weights=[0.5])
    distiller.compile(optimizer=keras.optimizers.SGD(0.0))
    x, y = tiny_batch(count=8)
    t = np.array(distiller.teacher(x, training=False))
    s = np.array(distiller.student(x, training=False))
    ce = -np.mean(np.log(softmax(s)[np.arange(8), y]))
    p, q = softmax(t / 4), softmax(s / 4)
    kd = 16 * np.mean(np.sum(p * np.log(p / q), axis=-1))
    logs = distiller.fit(x, y, batch_size=8, epochs=1, verbose=0).history
    np.testing.assert_allclose(logs["student_loss"][0], ce, rtol=1e-4)
    np.testing.assert_allclose(logs["kd"][0], kd, rtol=1e-4)
    # Keras' convention: a * student_loss + (1 - a) * sum_i w_i * L_i.
    np.testing.assert_allclose(logs["distillation_loss"][0], 0.5 * kd, rtol=1e-4)
    np.testing.assert_allclose(logs["loss"][0], 0.3 * ce + 0.7 * 0.5 * kd, rtol=1e-4)
    np.testing.assert_allclose(logs["total_loss"][0], logs["loss"][0])
    np.testing.assert_allclose(logs["agreement"][0], np.mean(t.argmax(1) == s.argmax(1)))
    np.testing.assert_allclose(logs["accuracy"][0], np.mean(s.argmax(1) == y))


def test_sparse_and_one_hot_labels_train_identically():
    x, y = tiny_batch()
    histories = []
    for labels in (y, np.eye(4, dtype="float32")[y]):
        distiller = make()
        distiller.compile(optimizer=keras.optimizers.SGD(0.1))
        histories.append(distiller.fit(x, labels, batch_size=8, epochs=2, shuffle=False, verbose=0))
        histories[-1] = (histories[-1].history, weights_of(distiller.student))
    (first, first_weights), (second, second_weights) = histories
    np.testing.assert_allclose(first["loss"], second["loss"], rtol=1e-5)
    for a, b in zip(first_weights, second_weights):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_keras_logits_distillation_is_accepted():
    distiller = make(
        distillation_losses=keras.distillation.LogitsDistillation(
            temperature=4.0, loss=keras.losses.KLDivergence()
        ),
    )
    reference = make()
    x, y = tiny_batch(count=8)
    logs = []
    for model in (distiller, reference):
        model.compile(optimizer=keras.optimizers.SGD(0.0))
        logs.append(model.fit(x, y, batch_size=8, epochs=1, verbose=0).history)
    np.testing.assert_allclose(logs[0]["loss"], logs[1]["loss"], rtol=1e-4)
    assert "logitsdistillation" in logs[0]


def test_evaluate_reports_clean_student_accuracy_and_agreement():
    distiller = make(LearnableOffset())
    distiller.compile(optimizer="sgd")
    distiller.augmenter.offset.assign(5.0)  # evaluation must not see the augmenter
    x, y = tiny_batch(count=32, seed=4)
    result = distiller.evaluate(x, y, batch_size=8, return_dict=True, verbose=0)
    t = np.array(distiller.teacher(x, training=False)).argmax(1)
    s = np.array(distiller.student(x, training=False)).argmax(1)
    np.testing.assert_allclose(result["accuracy"], np.mean(s == y))
    np.testing.assert_allclose(result["agreement"], np.mean(s == t))
    np.testing.assert_allclose(distiller.predict(x, verbose=0), distiller.student(x), atol=1e-6)


def test_save_and_load_restores_both_optimisers_and_phase(tmp_path):
    distiller = make(LearnableOffset())
    distiller.compile(
        optimizer=keras.optimizers.SGD(0.1, momentum=0.9),
        augmenter_optimizer=keras.optimizers.Adam(0.01),
    )
    x, y = tiny_batch()
    distiller.fit(x, y, batch_size=8, epochs=1, verbose=0)
    distiller.phase = "augmenter"
    distiller.fit(x, y, batch_size=8, epochs=1, verbose=0)
    path = tmp_path / "distiller.keras"
    distiller.save(path)
    restored = keras.saving.load_model(path)
    assert isinstance(restored, kd_keras.Distiller)
    assert restored.phase == "augmenter"
    assert restored.student_loss_weight == distiller.student_loss_weight
    assert int(restored.optimizer.iterations) == 2
    assert int(restored.augmenter_optimizer.iterations) == 2
    for optimizer, original in (
        (restored.optimizer, distiller.optimizer),
        (restored.augmenter_optimizer, distiller.augmenter_optimizer),
    ):
        assert len(optimizer.variables) == len(original.variables)
        for a, b in zip(optimizer.variables, original.variables):
            np.testing.assert_array_equal(np.array(a), np.array(b))
    np.testing.assert_allclose(restored.predict(x, verbose=0), distiller.predict(x, verbose=0))
    # Training resumes in the restored phase, from the restored state.
    restored.fit(x, y, batch_size=8, epochs=1, verbose=0)
    assert int(restored.augmenter_optimizer.iterations) == 4


def test_student_round_trips_alone(tmp_path):
    distiller = make()
    distiller.compile(optimizer="sgd")
    x, y = tiny_batch()
    distiller.fit(x, y, batch_size=8, epochs=1, verbose=0)
    distiller.student.save(tmp_path / "student.keras")
    student = keras.saving.load_model(tmp_path / "student.keras", safe_mode=True)
    assert student.count_params() == distiller.student.count_params()
    np.testing.assert_allclose(student.predict(x, verbose=0), distiller.predict(x, verbose=0))


def test_phase_flip_swaps_compiled_steps_without_retracing():
    distiller = make(LearnableOffset())
    distiller.compile(optimizer="sgd", augmenter_optimizer="adam")
    x, y = tiny_batch()
    distiller.fit(x, y, batch_size=8, epochs=1, verbose=0)
    student_step = distiller.train_function
    distiller.phase = "augmenter"
    distiller.fit(x, y, batch_size=8, epochs=1, verbose=0)
    augmenter_step = distiller.train_function
    distiller.phase = "student"
    assert distiller.train_function is student_step
    distiller.phase = "augmenter"
    assert distiller.train_function is augmenter_step
    assert student_step is not augmenter_step


def test_phase_errors():
    distiller = make()
    with pytest.raises(ValueError, match="no augmenter phase"):
        distiller.phase = "augmenter"
    with pytest.raises(ValueError, match="phase must be one of"):
        make(LearnableOffset()).phase = "teacher"
    with pytest.raises(ValueError, match="augmenter has no trainable weights"):
        distiller.compile(optimizer="sgd", augmenter_optimizer="adam")


def test_jit_compile_auto_is_off_on_cpu_only_machines():
    distiller = make()
    distiller.compile(optimizer="sgd")
    has_accelerator = any(d.device_type != "CPU" for d in tf.config.list_physical_devices())
    assert distiller.jit_compile == has_accelerator


def test_jit_compiled_step_matches_eager_free_step():
    x, y = tiny_batch()
    results = []
    for jit in (False, True):
        distiller = make()
        distiller.compile(optimizer=keras.optimizers.SGD(0.1), jit_compile=jit)
        distiller.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
        results.append(weights_of(distiller.student))
    for a, b in zip(*results):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_incompatible_models_are_refused_with_the_fix():
    with pytest.raises(ValueError, match="outputs 4 classes and the student 3"):
        kd_keras.Distiller(tiny_teacher(), tiny_student(num_classes=3))
    with pytest.raises(ValueError, match=r"student \(6, 6, 1\)"):
        kd_keras.Distiller(tiny_teacher(), tiny_student(input_shape=(6, 6, 1)))
    with pytest.raises(TypeError, match="not a distillation loss"):
        kd_keras.Distiller(tiny_teacher(), tiny_student(), distillation_losses=["kl"])
    with pytest.raises(ValueError, match="must match number of distillation_losses"):
        kd_keras.Distiller(tiny_teacher(), tiny_student(), distillation_loss_weights=[1, 2])


def test_softmax_teacher_is_detected_and_strip_softmax_fixes_it():
    logits_teacher = tiny_teacher()
    probabilities = keras.layers.Softmax()(logits_teacher.outputs[0])
    softmax_teacher = keras.Model(logits_teacher.inputs, probabilities)
    with pytest.raises(ValueError, match="ends in a softmax.*strip_softmax"):
        kd_keras.Distiller(softmax_teacher, tiny_student())
    fixed = kd_keras.models.strip_softmax(softmax_teacher)
    x, _ = tiny_batch(count=4)
    np.testing.assert_allclose(
        softmax(np.array(fixed(x))), np.array(softmax_teacher(x)), rtol=1e-5, atol=1e-6
    )
    kd_keras.Distiller(fixed, tiny_student())


def test_dense_softmax_head_is_stripped():
    inputs = keras.Input((5,))
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(inputs))
    assert kd_keras.models.ends_in_softmax(model)
    fixed = kd_keras.models.strip_softmax(model)
    assert not kd_keras.models.ends_in_softmax(fixed)
    x = np.random.default_rng(0).normal(size=(4, 5)).astype("float32")
    np.testing.assert_allclose(softmax(np.array(fixed(x))), np.array(model(x)), rtol=1e-5)


@pytest.mark.large
def test_mirrored_strategy_matches_one_device():
    import json
    import os
    import pathlib
    import subprocess
    import sys

    tests = pathlib.Path(__file__).parent
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tests), str(tests.parent)])}
    result = subprocess.run(
        [sys.executable, str(tests / "mirrored_run.py")],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["replicas"] == 2
    assert report["offset"] != 0.0  # the augmenter phase really trained
    assert report["loss_diff"] < 1e-5
    assert report["weight_diff"] < 1e-5


@keras.saving.register_keras_serializable(package="kd_keras_tests")
class DistilFirstHalf(Augmenter):
    """Duplicates the batch and distils on the first copy only."""

    def views(self, x, y, teacher_fn, student_fn, training=True):
        count = keras.ops.shape(x)[0]
        ones = keras.ops.ones((count,))
        return View(
            keras.ops.concatenate([x, -x]),
            keras.ops.concatenate([y, y]),
            distill_weight=keras.ops.concatenate([ones, 0.0 * ones]),
        )


def test_per_sample_distillation_weights():
    distiller = make(DistilFirstHalf(), student_loss_weight=0.0, distillation_loss_weights=[1.0])
    distiller.compile(optimizer=keras.optimizers.SGD(0.0))
    x, y = tiny_batch(count=8)
    t = np.array(distiller.teacher(x, training=False))
    s = np.array(distiller.student(x, training=False))
    p, q = softmax(t / 4), softmax(s / 4)
    # Per-sample weights average over the view: 8 weighted by 1, 8 by 0.
    expected = 16 * np.sum(np.sum(p * np.log(p / q), axis=-1)) / 16
    logs = distiller.train_on_batch(x, y, return_dict=True)
    np.testing.assert_allclose(logs["kd"], expected, rtol=1e-4)

    keras_loss = keras.distillation.LogitsDistillation(4.0, loss=keras.losses.KLDivergence())
    distiller = make(DistilFirstHalf(), distillation_losses=[keras_loss])
    distiller.compile(optimizer="sgd")
    with pytest.raises(TypeError, match="gives no per-sample values"):
        distiller.train_on_batch(x, y)


class CountTraces(keras.callbacks.Callback):
    """Counts how often fit's compiled steps were traced, epoch by epoch.

    A step function's Python body runs only while it is traced, so wrapping
    train_step and test_step counts traces.
    """

    def __init__(self, distiller):
        super().__init__()
        self.counts = {"train": 0, "test": 0}
        self.per_epoch = []
        for kind in self.counts:
            step = getattr(distiller, f"{kind}_step")
            setattr(distiller, f"{kind}_step", self._counted(kind, step))

    def _counted(self, kind, step):
        def counted(data):
            self.counts[kind] += 1
            return step(data)

        return counted

    def on_epoch_end(self, epoch, logs=None):
        self.per_epoch.append(dict(self.counts))


@pytest.mark.parametrize("phased", [False, True])
def test_long_runs_trace_each_step_once_not_per_epoch(phased):
    # 20 samples in batches of 8: a partial last batch every epoch.
    x, y = tiny_batch(count=20)
    distiller = make(LearnableOffset() if phased else None)
    counter = CountTraces(distiller)
    distiller.compile(optimizer="sgd", augmenter_optimizer="adam" if phased else None)
    callbacks = [counter]
    if phased:
        callbacks.insert(0, kd_keras.callbacks.PhaseSchedule(student_steps=2, augmenter_steps=1))
    distiller.fit(
        x, y, batch_size=8, epochs=6, validation_data=(x, y), verbose=0, callbacks=callbacks
    )
    # One trace per compiled step: the student's, the augmenter's, evaluation.
    assert counter.per_epoch[-1] == {"train": 2 if phased else 1, "test": 1}
    assert all(count == counter.per_epoch[-1] for count in counter.per_epoch[1:])
    if phased:
        assert int(distiller.augmenter_optimizer.iterations.numpy()) == 6


def test_the_backward_pool_stays_bounded_over_many_steps():
    x, y = tiny_batch(count=24)
    x = (x - x.min()) / (x.max() - x.min())
    augmenter = kd_keras.augment.BackwardPerturbation(pool_size=10, pool_fraction=0.5, seed=1)
    distiller = make(augmenter)
    counter = CountTraces(distiller)
    distiller.compile(optimizer="sgd")
    distiller.fit(x, y, batch_size=6, epochs=8, verbose=0, callbacks=[counter])
    assert int(distiller.optimizer.iterations.numpy()) == 32
    # 3 new samples per step for 32 steps went through a ring of 10.
    assert tuple(augmenter.pool.shape) == (10, 8, 8, 1)
    assert int(augmenter.pool_filled.numpy()) == 10
    assert int(augmenter.pool_next.numpy()) == 3 * 32 % 10
    assert counter.per_epoch[0] == counter.per_epoch[-1] == {"train": 1, "test": 0}


def test_distill_with_epoch_ordered_data_traces_once(monkeypatch):
    traces = []
    train_step = kd_keras.Distiller.train_step

    def counted(self, data):
        traces.append(1)
        return train_step(self, data)

    per_epoch = []
    record = keras.callbacks.LambdaCallback(
        on_epoch_end=lambda epoch, logs: per_epoch.append(len(traces))
    )
    monkeypatch.setattr(kd_keras.Distiller, "train_step", counted)
    x, y = tiny_batch(count=20)
    kd_keras.distill(
        tiny_teacher(),
        tiny_student(),
        (x, y),
        recipe="hard",
        epochs=5,
        batch_size=8,
        student_steps=1,
        augmenter_steps=1,
        sampler="network",
        candidates=1,
        callbacks=[record],
        verbose=0,
    )
    assert per_epoch == [2] * 5  # the student's step and the augmenter's


def test_a_trained_teachers_optimizer_raises_no_false_alarm_on_load(tmp_path):
    # A teacher trained and saved as train-teacher does: compiled, with Adam's
    # state. Restored with it, Keras warned "Skipping variable loading for
    # optimizer 'adam', because it has 1 variables whereas the saved optimizer
    # has N variables" although both of the Distiller's optimisers restored.
    x, y = tiny_batch(count=32)
    teacher = tiny_teacher()
    teacher.compile(
        optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    teacher.fit(x, y, epochs=1, verbose=0)
    distiller = kd_keras.Distiller(teacher, tiny_student(), augmenter=LearnableOffset())
    distiller.compile(optimizer=keras.optimizers.Adam(0.01), augmenter_optimizer="adam")
    distiller.fit(x, y, batch_size=8, epochs=1, verbose=0)
    distiller.phase = "augmenter"
    distiller.fit(x, y, batch_size=8, epochs=1, verbose=0)
    distiller.save(tmp_path / "distiller.keras")
    with pytest.warns() as caught:
        import warnings

        warnings.warn("sentinel", stacklevel=1)  # pytest.warns needs one; nothing else may come
        restored = keras.saving.load_model(tmp_path / "distiller.keras")
    # NumPy 2's DeprecationWarnings from inside Keras are not about this.
    assert [str(w.message) for w in caught if w.category is not DeprecationWarning] == ["sentinel"]
    assert not restored.teacher.compiled  # frozen here: no optimiser to restore
    for mine, original in (
        (restored.optimizer, distiller.optimizer),
        (restored.augmenter_optimizer, distiller.augmenter_optimizer),
        (restored.teacher, distiller.teacher),
    ):
        assert len(mine.variables) == len(original.variables) > 1
        for a, b in zip(mine.variables, original.variables):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert (
        int(restored.optimizer.iterations) == 4
        and int(restored.augmenter_optimizer.iterations) == 4
    )
