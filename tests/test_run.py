import json

import keras
import numpy as np
import pytest

import kd_keras
from kd_keras import run


def test_corrupt_teacher_file_is_reported(tmp_path):
    corrupt = tmp_path / "teacher.keras"
    corrupt.write_bytes(b"not a zip archive")
    with pytest.raises(run.RunError, match="corrupt or not a .keras file"):
        run.load_model(corrupt)
    with pytest.raises(run.RunError, match="does not exist"):
        run.load_model(tmp_path / "absent.keras")


def test_teacher_of_another_data_set_is_refused(digits, tmp_path):
    other = kd_keras.models.get("small_cnn", (32, 32, 3), 10)
    other.save(tmp_path / "cifar_teacher.keras")
    with pytest.raises(run.RunError, match=r"shape \(32, 32, 3\) but digits has \(28, 28, 1\)"):
        run.resolve_teacher(str(tmp_path / "cifar_teacher.keras"), digits)
    wrong_classes = kd_keras.models.get("small_cnn", (28, 28, 1), 7)
    wrong_classes.save(tmp_path / "seven.keras")
    with pytest.raises(run.RunError, match="outputs 7 classes but digits has 10"):
        run.resolve_teacher(str(tmp_path / "seven.keras"), digits)
    with pytest.raises(run.RunError, match="Unknown teacher 'gpt'"):
        run.resolve_teacher("gpt", digits)


def test_failed_run_leaves_no_partial_directory(tmp_path, monkeypatch):
    def failing_export(*args, **kwargs):
        raise kd_keras.export.ParityError("tflite: max |diff| 1.0 above 1e-3")

    monkeypatch.setattr(kd_keras.export, "export_student", failing_export)
    out = tmp_path / "run"
    with pytest.raises(kd_keras.export.ParityError):
        run.distill_job(epochs=1, out=out, verbose=0)
    assert not out.exists()


def test_bad_arguments_fail_before_any_work(tmp_path):
    with pytest.raises(run.RunError, match="Unknown export format onnx"):
        run.distill_job(out=tmp_path / "a", export_formats=("onnx",))
    with pytest.raises(run.RunError, match="Unknown student 'bert'"):
        run.distill_job(out=tmp_path / "b", student="bert")
    assert not any(tmp_path.iterdir())


def test_finished_run_is_never_overwritten(tmp_path):
    (tmp_path / "metrics.json").write_text(json.dumps({"recipe": "kd"}))
    with pytest.raises(run.RunError, match="already holds a finished run"):
        run.distill_job(epochs=1, out=tmp_path, verbose=0)
    assert json.loads((tmp_path / "metrics.json").read_text()) == {"recipe": "kd"}


def test_zoo_teacher_is_trained_before_distilling(digits):
    teacher = run.resolve_teacher("mlp", digits, epochs=2, verbose=0)
    x, y = digits.test
    accuracy = np.mean(teacher.predict(x, verbose=0).argmax(1) == y)
    assert accuracy > 0.2  # far above chance after one epoch; an untrained one is ~0.1


def test_the_whole_gpu_command_runs_on_mock_cifar(tmp_path):
    # `kd-keras distill --recipe=cutmix_pick --dataset=tfds:cifar10 --teacher=resnet8
    # --student=resnet8`, on TFDS mock data and a tiny schedule.
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=16):
        metrics = run.distill_job(
            recipe="cutmix_pick", dataset="tfds:cifar10", teacher="resnet8", student="resnet8",
            epochs=1, batch_size=8, teacher_epochs=1, out=tmp_path / "run",
            export_formats=("keras",), data_dir=str(tmp_path / "tfds"), download=True, verbose=0,
        )
    assert metrics["recipe"] == "cutmix_pick" and metrics["dataset"] == "tfds:cifar10"
    assert 0.0 <= metrics["student_accuracy"] <= 1.0
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
        windows = [padded[r:r + 4, c:c + 4] for r in range(3) for c in range(3)]
        windows += [w[:, ::-1] for w in windows]
        assert any(np.array_equal(out[..., 0], w) for w in windows)


def test_augmenter_runs_save_the_views_grid(tmp_path):
    metrics = run.distill_job(
        recipe="mixup", epochs=1, out=tmp_path / "run", export_formats=("keras",), verbose=0
    )
    image = keras.utils.load_img(tmp_path / "run" / "views.png")
    assert image.size == (8 * 29 - 1, 2 * 28 + 1)
    assert metrics["recipe"] == "mixup"
    plain = run.distill_job(epochs=1, out=tmp_path / "plain", export_formats=("keras",), verbose=0)
    assert not (tmp_path / "plain" / "views.png").exists() and plain["recipe"] == "kd"


def test_learned_policy_runs_save_the_trajectory(tmp_path):
    run.distill_job(recipe="tst", epochs=2, out=tmp_path / "run", export_formats=("keras",), verbose=0)
    trajectory = json.loads((tmp_path / "run" / "policy.json").read_text())
    assert trajectory and (tmp_path / "run" / "policy.png").exists()
    assert (tmp_path / "run" / "views.png").exists()
