"""The installed `kd-keras` command, end to end, as a user runs it."""

import json
import os
import shutil
import subprocess

import pytest

KD_KERAS = shutil.which("kd-keras")


def kd_keras_command(*args, cwd):
    assert KD_KERAS, "the kd-keras console script is missing: run `pip install .[test]` first"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run(
        [KD_KERAS, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("cli")
    result = kd_keras_command(
        "distill", "--epochs=2", "--out=run", "--verbose=0",
        "--export=keras,saved_model,tflite,tflite_float16,tflite_int8", cwd=cwd,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return cwd / "run", result.stdout


def test_distill_writes_the_run_directory(finished_run):
    out, _ = finished_run
    metrics = json.loads((out / "metrics.json").read_text())
    for key in (
        "recipe", "dataset", "epochs", "teacher_accuracy", "student_accuracy", "agreement",
        "wall_seconds", "teacher_accuracy_shifted", "student_accuracy_shifted",
    ):
        assert key in metrics, key
    assert metrics["recipe"] == "kd" and metrics["dataset"] == "digits" and metrics["epochs"] == 2
    assert metrics["teacher_accuracy"] > 0.97
    assert 0.5 < metrics["student_accuracy"] <= 1.0
    for name in ("student.keras", "saved_model", "student.tflite", "student_int8.tflite", "logs"):
        assert (out / name).exists(), name
    assert metrics["exports"]["tflite_int8"]["agreement"] >= 0.95
    assert any((out / "logs" / "train").iterdir()), "TensorBoard logs"


def test_distill_prints_the_summary(finished_run):
    _, stdout = finished_run
    for line in ("teacher accuracy", "student accuracy (shifted)", "teacher-student agreement",
                 "student parameters", "tflite_int8 size", "wall time"):
        assert line in stdout, line


def test_export_command_checks_parity(finished_run, tmp_path):
    out, _ = finished_run
    result = kd_keras_command(
        "export", f"--model={out / 'student.keras'}", "--out=exported",
        "--export=tflite_int8", cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "tflite_int8" in result.stdout and "agreement" in result.stdout
    assert (tmp_path / "exported" / "student_int8.tflite").exists()


def test_train_teacher_writes_model_and_card(tmp_path):
    result = kd_keras_command(
        "train-teacher", "--model=small_cnn", "--epochs=1", "--out=teacher.keras",
        "--verbose=0", cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    card = json.loads((tmp_path / "teacher.json").read_text())
    assert card["command"].startswith("kd-keras train-teacher --model=small_cnn")
    assert 0.0 <= card["test_accuracy"] <= 1.0 and "test_accuracy_shifted" in card
    assert (tmp_path / "teacher.keras").exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (["distill", "--recipe=nope"], "Unknown recipe 'nope'"),
        (["distill", "--teacher=missing.keras"], "missing.keras does not exist"),
        (["distill", "--dataset=imagenet"], "Unknown data set 'imagenet'"),
        (["frobnicate"], "expected a command"),
    ],
)
def test_bad_input_gives_one_line_and_writes_nothing(tmp_path, args, message):
    result = kd_keras_command(*args, "--out=run", cwd=tmp_path)
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("kd-keras: error:")]
    assert len(errors) == 1 and message in errors[0], result.stderr[-2000:]
    assert not (tmp_path / "run").exists()


def test_train_vae_writes_model_and_card(tmp_path):
    result = kd_keras_command(
        "train-vae", "--epochs=1", "--latent_dim=4", "--out=vae.keras", "--verbose=0",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    card = json.loads((tmp_path / "vae.json").read_text())
    assert card["command"] == "kd-keras train-vae --epochs=1 --latent_dim=4 --out=vae.keras --verbose=0"
    assert card["latent_dim"] == 4 and card["test_mse"] > 0
    assert (tmp_path / "vae.keras").exists()
