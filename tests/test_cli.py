"""The installed `kd-keras` command, end to end, as a user runs it."""

import json
import os
import shutil
import signal
import subprocess
import time
import zipfile

import keras
import numpy as np
import pytest
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

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


def test_distill_with_a_two_bit_student(tmp_path):
    result = kd_keras_command(
        "distill", "--bits=2", "--epochs=1", "--export=keras", "--out=run", "--verbose=0",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["student_bits"] == 2
    assert metrics["exports"]["keras"]["agreement"] == 1.0
    assert "student bits" in result.stdout
    # The saved student is the quantised one: its layers say so in the archive.
    with zipfile.ZipFile(tmp_path / "run" / "student.keras") as archive:
        config = archive.read("config.json").decode()
    assert '"QuantDense"' in config and '"bits": 2' in config


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
        (["distill", "--strategy=multiworker"], "reads its cluster from TF_CONFIG"),
    ],
)
def test_bad_input_gives_one_line_and_writes_nothing(tmp_path, args, message):
    result = kd_keras_command(*args, "--out=run", cwd=tmp_path)
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("kd-keras: error:")]
    assert len(errors) == 1 and message in errors[0], result.stderr[-2000:]
    assert not (tmp_path / "run").exists()


def test_distill_on_two_replicas_in_mixed_precision_ships_float32(tmp_path):
    result = kd_keras_command(
        "distill", "--cpu_devices=2", "--strategy=mirrored", "--precision=mixed_bfloat16",
        "--teacher_precision=bfloat16", "--epochs=1", "--export=keras", "--out=run",
        "--verbose=0", cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["replicas"] == 2 and metrics["strategy"] == "MirroredStrategy"
    assert metrics["precision"] == "mixed_bfloat16"
    assert metrics["teacher_precision"] == "bfloat16"
    assert metrics["teacher_accuracy"] > 0.95  # scored in float32
    assert "2 (MirroredStrategy)" in result.stdout  # the summary's replicas row
    with zipfile.ZipFile(tmp_path / "run" / "student.keras") as archive:
        config = archive.read("config.json").decode()
    assert "bfloat16" not in config and '"float32"' in config


def test_train_teacher_with_the_crd_schedule(tmp_path):
    result = kd_keras_command(
        "train-teacher", "--model=small_cnn", "--schedule=crd", "--epochs=1",
        "--precision=mixed_bfloat16", "--out=teacher.keras", "--verbose=0", cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    card = json.loads((tmp_path / "teacher.json").read_text())
    assert card["schedule"] == "crd" and card["precision"] == "mixed_bfloat16"
    with zipfile.ZipFile(tmp_path / "teacher.keras") as archive:
        assert "bfloat16" not in archive.read("config.json").decode()


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


def test_a_killed_run_resumes_to_the_student_of_an_uninterrupted_one(tmp_path):
    # HARD alternating 1:1 with 11 steps per epoch: the checkpoint after an
    # odd number of epochs resumes in the augmenter's phase.
    args = (
        "distill", "--recipe=hard", "--epochs=3", "--batch_size=128", "--set=student_steps=1",
        "--set=augmenter_steps=1", "--set=sampler=network", "--set=candidates=1",
        "--set=interpolation=bilinear", "--export=keras", "--verbose=0", "--deterministic",
    )
    whole = kd_keras_command(*args, "--out=whole", cwd=tmp_path)
    assert whole.returncode == 0, whole.stderr[-2000:]

    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    killed = subprocess.Popen(
        [KD_KERAS, *args, "--out=resumed"], cwd=tmp_path, env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    checkpoint = tmp_path / "resumed" / "backup" / "checkpoint.json"
    deadline = time.monotonic() + 300
    while not checkpoint.exists() and killed.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    killed.send_signal(signal.SIGKILL)
    killed.wait(timeout=60)
    assert killed.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    assert not (tmp_path / "resumed" / "metrics.json").exists()

    resumed = kd_keras_command(*args, "--out=resumed", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    first = json.loads((tmp_path / "whole" / "metrics.json").read_text())
    second = json.loads((tmp_path / "resumed" / "metrics.json").read_text())
    assert first["optimizer_steps"] == second["optimizer_steps"] == {"student": 17, "augmenter": 16}
    assert first["resumed_from_epoch"] == 0 and 1 <= second["resumed_from_epoch"] <= 3
    assert second["student_accuracy"] == first["student_accuracy"]
    assert not (tmp_path / "resumed" / "backup").exists()
    students = [keras.saving.load_model(tmp_path / d / "student.keras") for d in ("whole", "resumed")]
    for a, b in zip(*(s.get_weights() for s in students)):
        np.testing.assert_array_equal(a, b)


@pytest.fixture
def cli():
    from kd_keras import cli

    yield cli
    cli.FLAGS.unparse_flags()


@pytest.mark.parametrize(
    "argv, message",
    [
        (["distill", "--epoch=3"], "Unknown command line flag 'epoch'"),
        (["distill", "--verbose=9"], "flag --verbose=9"),
        (["distill", "--epochs=three"], "flag --epochs=three"),
        (["distill", "--precision=float8"], "flag --precision=float8"),
    ],
)
def test_bad_flag_values_give_one_line(cli, capsys, argv, message):
    with pytest.raises(SystemExit) as exit_:
        cli._parse(["kd-keras", *argv])
    assert exit_.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("kd-keras: error:") and message in lines[0]


@pytest.mark.parametrize(
    "raised, code, message",
    [
        ("fault", 2, "kd-keras: error: Non-finite loss kd=nan at step 7"),
        (OSError(28, "No space left on device"), 2, "kd-keras: error: [Errno 28] No space left"),
        (KeyboardInterrupt(), 130, "kd-keras: interrupted; rerun the same command to resume"),
    ],
)
def test_failures_during_a_run_end_in_one_line(cli, capsys, monkeypatch, tmp_path, raised, code, message):
    from kd_keras import faults
    from kd_keras import run

    if raised == "fault":
        raised = faults.NumericalFault("Non-finite loss kd=nan at step 7 (epoch 2, batch 3): ...")

    def failing_job(**kwargs):
        raise raised

    monkeypatch.setattr(run, "distill_job", failing_job)
    argv = cli._parse(["kd-keras", "distill", f"--out={tmp_path / 'run'}"])
    with pytest.raises(SystemExit) as exit_:
        cli.main(argv)
    assert exit_.value.code == code
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(message)


def test_sigterm_becomes_a_keyboard_interrupt(cli):
    with pytest.raises(KeyboardInterrupt):
        cli._interrupt(signal.SIGTERM, None)


def test_set_overrides_parse_literals_and_refuse_malformed_pairs(cli):
    assert cli._overrides(["temperature=2", "image_conditioned=True", "note=hot", "x=[1, 2]"]) == {
        "temperature": 2, "image_conditioned": True, "note": "hot", "x": [1, 2],
    }
    for bad in ("temperature", "=3", "two words=1"):
        with pytest.raises(ValueError, match="--set expects KEY=VALUE"):
            cli._overrides([bad])


@settings(max_examples=200, deadline=None)
@given(pairs=st.lists(st.text(max_size=30) | st.from_regex(r"[a-z_]{1,8}=.{0,20}", fullmatch=True), max_size=4))
def test_set_overrides_fuzz_give_a_dict_or_a_clean_error(pairs):
    from kd_keras import cli

    try:
        overrides = cli._overrides(pairs)
    except ValueError as error:
        assert len(str(error).splitlines()) == 1
        return
    assert all(key.isidentifier() for key in overrides)
    assert len(overrides) <= len(pairs)
