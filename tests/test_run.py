import dataclasses
import json
import pathlib

import keras
import numpy as np
import pytest

import kd_keras
from kd_keras import jobs
from kd_keras import resolve
from kd_keras import run_directory

# Subprocesses, trainings and conversions: the large tier (`pytest -m large`).
pytestmark = pytest.mark.large


def test_corrupt_teacher_file_is_reported(tmp_path):
    corrupt = tmp_path / "teacher.keras"
    corrupt.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(resolve.RunError) as error:
        resolve.load_model(corrupt)
    message = str(error.value)
    assert "teacher.keras is not a valid .keras file" in message
    # Keras' own "File not found" is wrong for a file that is there; no card, no card advice.
    assert "not found" not in message.lower() and "card" not in message
    assert "model.save" in message
    (tmp_path / "teacher.json").write_text(json.dumps({"command": "kd-keras train-teacher"}))
    with pytest.raises(
        resolve.RunError, match=r"rebuild it with the command in its card .*teacher\.json"
    ):
        resolve.load_model(corrupt)
    with pytest.raises(resolve.RunError, match="does not exist"):
        resolve.load_model(tmp_path / "absent.keras")
    teacher = kd_keras.models.get("mlp", (28, 28, 1), 10, width=8)
    teacher.save(tmp_path / "whole.keras")
    whole = (tmp_path / "whole.keras").read_bytes()
    (tmp_path / "truncated.keras").write_bytes(whole[: len(whole) // 2])
    with pytest.raises(resolve.RunError, match="truncated.keras is not a valid .keras file"):
        resolve.load_model(tmp_path / "truncated.keras")
    # A zip archive that is no Keras model: Keras' reason is kept.
    import zipfile

    with zipfile.ZipFile(tmp_path / "other.keras", "w") as archive:
        archive.writestr("notes.txt", "hello")
    with pytest.raises(resolve.RunError, match=r"other.keras is not a valid .keras file \(\w+: "):
        resolve.load_model(tmp_path / "other.keras")


def test_python_code_in_a_model_file_needs_an_explicit_opt_in(digits, tmp_path):
    inputs = keras.Input(digits.input_shape)
    scaled = keras.layers.Lambda(lambda x: x * 2.0)(inputs)
    outputs = keras.layers.Dense(10)(keras.layers.Flatten()(scaled))
    keras.Model(inputs, outputs).save(tmp_path / "lambda.keras")
    with pytest.raises(resolve.RunError, match="contains Python code .*--unsafe_deserialization"):
        resolve.resolve_teacher(str(tmp_path / "lambda.keras"), digits)
    teacher = resolve.resolve_teacher(str(tmp_path / "lambda.keras"), digits, safe_mode=False)
    assert teacher.output_shape == (None, 10)


def test_a_malformed_schedule_file_is_one_line_before_any_work(tmp_path, monkeypatch):
    monkeypatch.setattr(kd_keras.data, "load", lambda *a, **k: pytest.fail("loaded data"))
    (tmp_path / "schedule.json").write_text('{"entries": [')
    with pytest.raises(ValueError) as error:
        jobs.distill_job(
            recipe="rolewise", policy=str(tmp_path / "schedule.json"), out=tmp_path / "run"
        )
    assert "not valid JSON" in str(error.value) and len(str(error.value).splitlines()) == 1
    assert not (tmp_path / "run").exists()


def test_teacher_of_another_data_set_is_refused(digits, tmp_path):
    other = kd_keras.models.get("small_cnn", (32, 32, 3), 10)
    other.save(tmp_path / "cifar_teacher.keras")
    with pytest.raises(resolve.RunError, match=r"shape \(32, 32, 3\) but digits has \(28, 28, 1\)"):
        resolve.resolve_teacher(str(tmp_path / "cifar_teacher.keras"), digits)
    wrong_classes = kd_keras.models.get("small_cnn", (28, 28, 1), 7)
    wrong_classes.save(tmp_path / "seven.keras")
    with pytest.raises(resolve.RunError, match="outputs 7 classes but digits has 10"):
        resolve.resolve_teacher(str(tmp_path / "seven.keras"), digits)
    with pytest.raises(resolve.RunError, match="Unknown teacher 'gpt'"):
        resolve.resolve_teacher("gpt", digits)


def test_a_failed_export_keeps_the_training_and_a_rerun_only_exports(tmp_path, monkeypatch):
    export_student = kd_keras.export.export_student

    def failing_export(student, out_dir, **kwargs):
        (out_dir / "student.keras").write_bytes(b"an artefact of the failed attempt")
        raise kd_keras.export.ParityError("tflite: max |diff| 1.0 above 1e-3")

    monkeypatch.setattr(kd_keras.export, "export_student", failing_export)
    out = tmp_path / "run"
    with pytest.raises(kd_keras.export.ParityError):
        jobs.distill_job(epochs=2, out=out, export_formats=("keras",), verbose=0)
    assert not (out / "metrics.json").exists()
    assert kd_keras.callbacks.backup.read_checkpoint(out / "backup")["epoch"] == 2
    monkeypatch.setattr(kd_keras.export, "export_student", export_student)
    metrics = jobs.distill_job(epochs=2, out=out, export_formats=("keras",), verbose=0)
    assert metrics["resumed_from_epoch"] == 2  # nothing trained again
    assert metrics["optimizer_steps"] == {"student": 2 * 22}
    assert metrics["exports"]["keras"]["agreement"] == 1.0
    assert sorted(p.name for p in out.iterdir()) == [
        "config.json",
        "logs",
        "metrics.json",
        "run.json",
        "student.keras",
    ]


def test_bad_data_found_in_the_run_directory_leaves_nothing(tmp_path, monkeypatch):
    digits = kd_keras.data.load_digits()
    x, y = digits.train
    x = x.copy()
    x[5, 3, 3, 0] = np.nan
    monkeypatch.setattr(
        kd_keras.data, "load", lambda *a, **k: dataclasses.replace(digits, train=(x, y))
    )
    with pytest.raises(kd_keras.data.DataError, match="1 inputs hold NaN or Inf .*sample 5"):
        jobs.distill_job(epochs=1, out=tmp_path / "run", verbose=0)
    assert not (tmp_path / "run").exists()


def test_an_interrupted_run_keeps_its_checkpoint_only_once_it_has_one(tmp_path, monkeypatch):
    class Interrupt(keras.callbacks.Callback):
        def __init__(self, epoch):
            super().__init__()
            self.at = epoch

        def on_epoch_begin(self, epoch, logs=None):
            if epoch == self.at:
                raise KeyboardInterrupt

    tensorboard = kd_keras.callbacks.TensorBoard

    def interrupted_at(epoch):
        monkeypatch.setattr(
            kd_keras.callbacks,
            "TensorBoard",
            lambda log_dir: [tensorboard(log_dir), Interrupt(epoch)][1],
        )

    interrupted_at(0)
    with pytest.raises(run_directory.Interrupted) as error:
        jobs.distill_job(epochs=2, out=tmp_path / "early", export_formats=("keras",), verbose=0)
    assert not (tmp_path / "early").exists()
    assert (error.value.kept, error.value.checkpoint_epoch) == (False, None)
    interrupted_at(1)
    with pytest.raises(run_directory.Interrupted) as error:
        jobs.distill_job(epochs=2, out=tmp_path / "late", export_formats=("keras",), verbose=0)
    assert kd_keras.callbacks.backup.read_checkpoint(tmp_path / "late" / "backup")["epoch"] == 1
    assert (error.value.out, error.value.kept, error.value.checkpoint_epoch) == (
        tmp_path / "late",
        True,
        1,
    )
    with pytest.raises(resolve.RunError, match="unfinished run of another command"):
        jobs.distill_job(epochs=3, out=tmp_path / "late", verbose=0)
    # A lower learning rate (the fix for a NaN) resumes the same run.
    monkeypatch.setattr(kd_keras.callbacks, "TensorBoard", tensorboard)
    metrics = jobs.distill_job(
        epochs=2,
        out=tmp_path / "late",
        export_formats=("keras",),
        verbose=0,
        **{"optimizer.learning_rate": 0.01},
    )
    assert metrics["resumed_from_epoch"] == 1 and metrics["optimizer_steps"] == {"student": 44}


def test_a_zoo_teacher_is_trained_once_per_run(tmp_path, monkeypatch):
    class Interrupt(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            raise KeyboardInterrupt

    out = tmp_path / "run"
    monkeypatch.setattr(kd_keras.callbacks, "TensorBoard", lambda log_dir: Interrupt())
    with pytest.raises(KeyboardInterrupt):
        jobs.distill_job(teacher="mlp", teacher_epochs=1, epochs=1, out=out, verbose=0)
    assert (out / "teacher.keras").exists()
    saved = keras.saving.load_model(out / "teacher.keras").get_weights()

    def must_not_train(*args, **kwargs):
        raise AssertionError("the run's teacher was trained again")

    monkeypatch.setattr(resolve, "train_teacher", must_not_train)
    monkeypatch.setattr(
        kd_keras.callbacks, "TensorBoard", lambda log_dir: keras.callbacks.Callback()
    )
    captured = {}
    distill = jobs.distill

    def recording_distill(teacher, *args, **kwargs):
        captured["teacher"] = teacher.get_weights()
        return distill(teacher, *args, **kwargs)

    monkeypatch.setattr(jobs, "distill", recording_distill)
    jobs.distill_job(
        teacher="mlp", teacher_epochs=1, epochs=1, out=out, export_formats=("keras",), verbose=0
    )
    for a, b in zip(captured["teacher"], saved):
        np.testing.assert_array_equal(a, b)


def test_an_output_directory_that_cannot_be_written_is_refused_first(tmp_path, monkeypatch):
    (tmp_path / "file").write_text("not a directory")
    monkeypatch.setattr(kd_keras.data, "load", lambda *a, **k: pytest.fail("loaded data"))
    with pytest.raises(resolve.RunError, match="file is a file; choose another --out"):
        jobs.distill_job(out=tmp_path / "file" / "run")
    with pytest.raises(resolve.RunError, match="epochs must be an integer >= 1, got 0"):
        jobs.distill_job(epochs=0, out=tmp_path / "run")


def test_bad_arguments_fail_before_any_work(tmp_path):
    with pytest.raises(resolve.RunError, match="Unknown export format onnx"):
        jobs.distill_job(out=tmp_path / "a", export_formats=("onnx",))
    with pytest.raises(resolve.RunError, match="Unknown student 'bert'"):
        jobs.distill_job(out=tmp_path / "b", student="bert")
    assert not any(tmp_path.iterdir())


def test_finished_run_is_never_overwritten(tmp_path):
    (tmp_path / "metrics.json").write_text(json.dumps({"recipe": "kd"}))
    with pytest.raises(resolve.RunError, match="already holds a finished run"):
        jobs.distill_job(epochs=1, out=tmp_path, verbose=0)
    assert json.loads((tmp_path / "metrics.json").read_text()) == {"recipe": "kd"}


def test_zoo_teacher_is_trained_before_distilling(digits):
    teacher = resolve.resolve_teacher("mlp", digits, epochs=2, verbose=0)
    x, y = digits.test
    accuracy = np.mean(teacher.predict(x, verbose=0).argmax(1) == y)
    assert accuracy > 0.2  # far above chance after one epoch; an untrained one is ~0.1


def test_the_whole_gpu_command_runs_on_mock_cifar(tmp_path):
    # `kd-keras distill --recipe=cutmix_pick --dataset=tfds:cifar10 --teacher=resnet8
    # --student=resnet8`, on TFDS mock data and a tiny schedule.
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=16):
        metrics = jobs.distill_job(
            recipe="cutmix_pick",
            dataset="tfds:cifar10",
            teacher="resnet8",
            student="resnet8",
            epochs=1,
            batch_size=8,
            teacher_epochs=1,
            out=tmp_path / "run",
            export_formats=("keras",),
            data_dir=str(tmp_path / "tfds"),
            download=True,
            verbose=0,
            allow_weak_teacher=True,  # a teacher of 16 random images is at chance
        )
        bundle = kd_keras.data.load("tfds:cifar10", data_dir=str(tmp_path / "tfds"), download=True)
    assert metrics["recipe"] == "cutmix_pick" and metrics["dataset"] == "tfds:cifar10"
    student = keras.saving.load_model(tmp_path / "run" / "student.keras")
    assert metrics["student_accuracy"] == pytest.approx(
        kd_keras.resolve.evaluate(student, bundle.test), abs=1e-9
    )
    assert "student_accuracy_shifted" not in metrics
    assert (tmp_path / "run" / "student.keras").exists()


def test_standard_augmentation_crops_and_flips():
    import tensorflow as tf

    image = np.arange(4 * 4, dtype="float32").reshape(4, 4, 1)
    augment = kd_keras.data.standard_augmentation(padding=1, flip=True)
    outputs = {augment(tf.constant(image), 0)[0].numpy().tobytes() for _ in range(60)}
    assert len(outputs) > 5
    for _ in range(20):
        out = augment(tf.constant(image), 0)[0].numpy()
        assert out.shape == image.shape
        # Every output is a window of the zero-padded image, maybe mirrored.
        padded = np.pad(image[..., 0], 1)
        windows = [padded[r : r + 4, c : c + 4] for r in range(3) for c in range(3)]
        windows += [w[:, ::-1] for w in windows]
        assert any(np.array_equal(out[..., 0], w) for w in windows)


def test_augmenter_runs_save_the_views_grid(tmp_path):
    metrics = jobs.distill_job(
        recipe="mixup", epochs=1, out=tmp_path / "run", export_formats=("keras",), verbose=0
    )
    image = keras.utils.load_img(tmp_path / "run" / "views.png")
    assert image.size[0] > 8 * 112 and 2 * 112 < image.size[1] < 3 * 112  # x4 digits, 2 rows
    assert metrics["recipe"] == "mixup"
    plain = jobs.distill_job(epochs=1, out=tmp_path / "plain", export_formats=("keras",), verbose=0)
    assert not (tmp_path / "plain" / "views.png").exists() and plain["recipe"] == "kd"


def test_learned_policy_runs_save_the_trajectory(tmp_path):
    jobs.distill_job(
        recipe="tst", epochs=2, out=tmp_path / "run", export_formats=("keras",), verbose=0
    )
    trajectory = json.loads((tmp_path / "run" / "policy.json").read_text())
    assert trajectory and (tmp_path / "run" / "policy.png").exists()
    assert (tmp_path / "run" / "views.png").exists()


def test_a_batch_larger_than_the_data_leaves_no_runs_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(resolve.RunError, match="batch_size must be an integer >= 1, got 0"):
        jobs.distill_job(batch_size=0, verbose=0)
    with pytest.raises(kd_keras.data.DataError, match="1347 samples, fewer than one batch of 5000"):
        jobs.distill_job(batch_size=5000, verbose=0)
    with pytest.raises(kd_keras.data.DataError, match="fewer than one batch of 5000"):
        jobs.train_teacher_job("small_cnn", batch_size=5000, verbose=0)
    assert not any(tmp_path.iterdir())


def test_a_run_that_fails_early_removes_the_folders_it_made(tmp_path, monkeypatch):
    def failing_distill(*args, **kwargs):
        raise kd_keras.data.DataError("found while training: fix the data.")

    monkeypatch.setattr(jobs, "distill", failing_distill)
    (tmp_path / "kept").mkdir()
    with pytest.raises(kd_keras.data.DataError):
        jobs.distill_job(epochs=1, out=tmp_path / "kept" / "runs" / "deep" / "run", verbose=0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kept"]
    assert not any((tmp_path / "kept").iterdir())
    # A parent holding something else (another run) stays.
    (tmp_path / "runs" / "other").mkdir(parents=True)
    with pytest.raises(kd_keras.data.DataError):
        jobs.distill_job(epochs=1, out=tmp_path / "runs" / "run", verbose=0)
    assert [p.name for p in (tmp_path / "runs").iterdir()] == ["other"]


def test_export_into_a_file_is_refused_before_anything_loads(tmp_path, monkeypatch):
    (tmp_path / "afile").write_text("not a directory")
    monkeypatch.setattr(resolve, "load_model", lambda *a, **k: pytest.fail("loaded the model"))
    with pytest.raises(resolve.RunError) as error:
        jobs.export_job("student.keras", tmp_path / "afile", ("keras",))
    message = str(error.value)
    assert "afile is a file; choose another --out" in message and "Errno" not in message
    student = kd_keras.models.get("mlp", (28, 28, 1), 10, width=8)
    with pytest.raises(
        ValueError, match="afile' is a file, not a directory: export into a directory"
    ):
        kd_keras.export.export_student(
            student, tmp_path / "afile", formats=("keras",), check_data=np.zeros((4, 28, 28, 1))
        )
    assert (tmp_path / "afile").read_text() == "not a directory"


def test_an_explicit_teacher_is_never_replaced_and_must_fit_the_data(tmp_path):
    with pytest.raises(resolve.RunError) as error:
        jobs.distill_job(
            dataset="text-default", teacher="shipped:digits_cnn", out=tmp_path / "run", verbose=0
        )
    message = str(error.value)
    assert "teacher takes inputs of shape (28, 28, 1) but text-default has (40,)" in message
    assert "no --teacher for its default" in message and "--dataset=digits" in message
    assert not (tmp_path / "run").exists()


def test_export_of_a_student_of_other_data_names_the_dataset_flag(tmp_path):
    student = kd_keras.models.get("text_cnn", (40,), 4, vocabulary_size=50)
    student.save(tmp_path / "text_student.keras")
    with pytest.raises(resolve.RunError) as error:
        jobs.export_job(tmp_path / "text_student.keras", tmp_path / "out", ("keras",))
    message = str(error.value)
    assert "takes inputs of shape (40,) but digits has (28, 28, 1)" in message
    assert "pass the --dataset it was trained on" in message and "--dataset=text-default" in message
    assert not (tmp_path / "out").exists()


def test_the_same_call_without_out_resumes_its_latest_unfinished_run(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    tensorboard = kd_keras.callbacks.TensorBoard

    class Interrupt(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 1:
                raise KeyboardInterrupt

    monkeypatch.setattr(
        kd_keras.callbacks, "TensorBoard", lambda log_dir: [tensorboard(log_dir), Interrupt()][1]
    )
    with pytest.raises(run_directory.Interrupted) as error:
        jobs.distill_job(epochs=2, export_formats=("keras",), verbose=0)
    first = error.value.out
    assert first.parent == pathlib.Path("runs") and first.name.startswith("distill-kd-digits-")
    assert error.value.checkpoint_epoch == 1
    # Later unfinished runs of other commands, and a finished one, are not taken.
    for name, settings in (("99991231-235959", {"recipe": "hard"}), ("99991231-235958", None)):
        decoy = pathlib.Path("runs") / f"distill-kd-digits-{name}"
        (decoy / "backup").mkdir(parents=True)
        (decoy / "backup" / "checkpoint.json").write_text("{}")
        (decoy / "run.json").write_text(
            json.dumps(settings or json.loads((first / "run.json").read_text()))
        )
        if settings is None:
            (decoy / "metrics.json").write_text("{}")
    monkeypatch.setattr(kd_keras.callbacks, "TensorBoard", tensorboard)
    capsys.readouterr()
    metrics = jobs.distill_job(epochs=2, export_formats=("keras",), verbose=0)
    assert metrics["out"] == str(first) and metrics["resumed_from_epoch"] == 1
    assert metrics["optimizer_steps"] == {"student": 44}
    assert f"Resuming the unfinished run {first} of the same command, from the end of epoch 1" in (
        capsys.readouterr().out
    )
    assert len(list(pathlib.Path("runs").iterdir())) == 3  # no new directory
    signature = json.loads((first / "run.json").read_text())
    assert (
        run_directory.find_unfinished("runs/distill-kd-digits-", signature) is None
    )  # now finished


def constant_teacher(path, input_shape=(28, 28, 1), favourite=3):
    """A teacher that predicts one class whatever it sees, saved to `path`."""
    inputs = keras.Input(input_shape)
    bias = [0.0] * 10
    bias[favourite] = 5.0
    outputs = keras.layers.Dense(
        10, kernel_initializer="zeros", bias_initializer=keras.initializers.Constant(bias)
    )(keras.layers.Flatten()(inputs))
    keras.Model(inputs, outputs).save(path)
    return path


def test_teacher_quality_is_cohens_kappa():
    from sklearn.metrics import cohen_kappa_score

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 5, size=400)
    # Right 60% of the time, otherwise a guess biased towards class 0.
    guesses = np.where(rng.random(400) < 0.5, 0, rng.integers(0, 5, size=400))
    predicted = np.where(rng.random(400) < 0.6, labels, guesses)
    logits = np.eye(5)[predicted] + rng.normal(0, 0.01, (400, 5))
    quality = resolve.teacher_quality(logits, labels)
    assert quality["accuracy"] == np.mean(predicted == labels)
    assert np.isclose(quality["kappa"], cohen_kappa_score(labels, predicted))
    expected_chance = sum(np.mean(predicted == k) * np.mean(labels == k) for k in range(5))
    assert np.isclose(quality["chance"], expected_chance)
    # One-hot labels give the same; a constant predictor has kappa 0 whatever the balance.
    assert resolve.teacher_quality(logits, np.eye(5)[labels]) == quality
    skewed = np.array([1] * 90 + [0] * 10)
    constant = resolve.teacher_quality(np.tile([0.0, 1.0], (100, 1)), skewed)
    assert constant["accuracy"] == 0.9 and constant["kappa"] == 0.0


def test_a_teacher_at_chance_is_refused_by_distill(tmp_path):
    path = constant_teacher(tmp_path / "constant.keras")
    with pytest.raises(resolve.RunError) as error:
        jobs.distill_job(teacher=str(path), epochs=1, out=tmp_path / "run", verbose=0)
    message = str(error.value)
    assert len(message.splitlines()) == 1
    digits = kd_keras.data.load_digits()
    share = np.mean(digits.test[1] == 3)
    assert (
        f"near chance on the digits test data: accuracy {share:.2%}, chance {share:.2%}" in message
    )
    assert "kappa 0.00 < 0.1" in message and "--allow_weak_teacher" in message
    assert not (tmp_path / "run").exists()
    metrics = jobs.distill_job(
        teacher=str(path),
        epochs=1,
        out=tmp_path / "run",
        export_formats=("keras",),
        verbose=0,
        allow_weak_teacher=True,
    )
    assert metrics["teacher_accuracy"] == share


def test_train_teacher_writes_a_teacher_at_chance_but_says_so(tmp_path, monkeypatch):
    # Training that leaves the network as initialised (at chance).
    monkeypatch.setattr(jobs, "train_teacher", lambda teacher, *args, **kwargs: teacher)
    out = tmp_path / "teacher.keras"
    with pytest.raises(resolve.RunError) as error:
        jobs.train_teacher_job("mlp", epochs=1, out=out, verbose=0)
    message = str(error.value)
    assert message.startswith(f"{out} and its card are written, but the teacher is near chance")
    assert "--allow_weak_teacher" in message
    card = json.loads(out.with_suffix(".json").read_text())
    assert card["test_kappa"] < resolve.WEAK_TEACHER_KAPPA and out.exists()
    assert (
        f"accuracy {card['test_accuracy']:.2%}, chance {card['test_chance_accuracy']:.2%}"
        in message
    )
    card = jobs.train_teacher_job(
        "mlp", epochs=1, out=tmp_path / "again.keras", verbose=0, allow_weak_teacher=True
    )
    assert card["test_kappa"] < resolve.WEAK_TEACHER_KAPPA


def test_a_host_side_policy_run_saves_the_views_grid(tmp_path):
    import tensorflow as tf

    from kd_keras.augment import pba

    schedule = pba.Schedule.constant(pba.HAND_SET_POLICY, epochs=1)
    jobs.distill_job(
        recipe="rolewise",
        policy=schedule,
        epochs=1,
        out=tmp_path / "run",
        export_formats=("keras",),
        verbose=0,
        augment_seed=3,
    )
    grid = np.asarray(keras.utils.load_img(tmp_path / "run" / "views.png"))
    assert grid.shape[1] > 8 * 112 and 2 * 112 < grid.shape[0] < 3 * 112
    # The view row is what the run's host policy (its seed, epoch 0) makes of the test images.
    x = kd_keras.data.load_digits().test[0][:8]
    host = kd_keras.recipes.build.host_augment(
        kd_keras.recipes.get("rolewise", {"policy": schedule, "augment_seed": 3})
    )
    assert host.cutout == 0.5  # PBA's final Cutout is part of the view
    views = host.augment_batch(x, np.zeros(8, "int32"))[0].numpy()
    assert not np.array_equal(views, x)
    _, boxes = kd_keras.plots.image_grid(
        [("original", np.repeat(x, 3, -1)), ("view", np.repeat(views, 3, -1))],
        [["T 0  S 0"] * 8] * 2,
        title="T, S: the teacher's and the student's predicted class",
    )
    for row, images in ((0, x), (1, views)):
        for (top, left), image in zip(boxes[row], images):
            expected = np.round(np.clip(image[..., 0], 0, 1) * 255).astype("uint8")
            shown = grid[top : top + 112, left : left + 112, 0]
            np.testing.assert_array_equal(shown, np.repeat(np.repeat(expected, 4, 0), 4, 1))
    events = tf.io.gfile.glob(str(tmp_path / "run" / "logs" / "views" / "events.out.tfevents.*"))
    tags = {
        value.tag
        for path in events
        for event in tf.compat.v1.train.summary_iterator(path)
        for value in event.summary.value
    }
    assert "views" in tags  # the same grid in TensorBoard


def test_two_jobs_with_one_seed_train_the_same_student(tmp_path):
    # The student's initial weights come from the run's seed, not from what
    # the process drew before (a second job in one process draws on).
    students = []
    for name in ("first", "second"):
        jobs.distill_job(
            epochs=1, out=tmp_path / name, export_formats=("keras",), verbose=0, seed=4
        )
        students.append(keras.saving.load_model(tmp_path / name / "student.keras"))
    for a, b in zip(students[0].weights, students[1].weights):
        np.testing.assert_array_equal(np.array(a), np.array(b))
    other = tmp_path / "other-seed"
    jobs.distill_job(epochs=1, out=other, export_formats=("keras",), verbose=0, seed=5)
    changed = keras.saving.load_model(other / "student.keras")
    assert not np.array_equal(np.array(changed.weights[0]), np.array(students[0].weights[0]))
