"""The installed `kd-keras` command, end to end, as a user runs it."""

import json
import os
import pathlib
import re
import signal
import subprocess
import sys
import time
import zipfile

import keras
import numpy as np
import pytest
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

import kd_keras

# Subprocesses, trainings and conversions: the large tier (`pytest -m large`).
pytestmark = pytest.mark.large

# The command of the kd_keras under test (a checkout or the installed
# package), run as the console script runs it.
KD_KERAS = (sys.executable, "-m", "kd_keras.cli")
KD_KERAS_ENV = {
    **{k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
    "PYTHONPATH": str(pathlib.Path(kd_keras.__file__).resolve().parent.parent),
}


def kd_keras_command(*args, cwd):
    return subprocess.run(
        [*KD_KERAS, *args],
        cwd=cwd,
        env=KD_KERAS_ENV,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("cli")
    # --verbose left at auto, with stdout a pipe (as in a log file).
    result = kd_keras_command(
        "distill",
        "--epochs=2",
        "--out=run",
        "--export=keras,saved_model,tflite,tflite_float16,tflite_int8",
        cwd=cwd,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return cwd / "run", result.stdout, result.stderr


def test_distill_writes_the_run_directory(finished_run):
    out, _, _ = finished_run
    metrics = json.loads((out / "metrics.json").read_text())
    for key in (
        "recipe",
        "dataset",
        "epochs",
        "teacher_accuracy",
        "student_accuracy",
        "agreement",
        "wall_seconds",
        "teacher_accuracy_shifted",
        "student_accuracy_shifted",
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
    _, stdout, _ = finished_run
    for line in (
        "teacher accuracy",
        "student accuracy (shifted)",
        "teacher-student agreement",
        "student parameters",
        "tflite_int8 size",
        "wall time",
    ):
        assert line in stdout, line


def test_distill_output_is_one_line_per_epoch_and_no_library_noise(finished_run):
    _, stdout, stderr = finished_run
    # No progress bars into a pipe: Keras' one line per epoch (verbose=2).
    assert "\x1b[" not in stdout and "━" not in stdout and "\r" not in stdout
    lines = stdout.splitlines()
    assert lines[0] == "Epoch 1/2" and lines[2] == "Epoch 2/2", lines[:4]
    assert all(lines[i].startswith("22/22 - ") and "val_accuracy" in lines[i] for i in (1, 3))
    assert lines[4].startswith("recipe ")  # then the summary
    # Nothing from TensorFlow, absl, the TFLite converter or LiteRT, with five exports.
    assert stderr.strip() == "", stderr[-2000:]


def test_verbose_auto_is_progress_bars_only_on_a_terminal(cli, monkeypatch):
    values = cli.COMMANDS["distill"].flag_values()
    values(["kd-keras distill"])
    for tty, expected in ((True, 1), (False, 2)):
        monkeypatch.setattr(sys.stdout, "isatty", lambda tty=tty: tty)
        assert cli._keras_verbose(values) == expected
    for level, expected in (("0", 0), ("1", 1), ("2", 2), ("3", 2)):
        values.verbose = level
        assert cli._keras_verbose(values) == expected


def test_native_stderr_is_held_back_and_replayed_on_failure(capfd):
    from kd_keras import quiet

    with quiet.native_stderr_captured():
        os.write(2, b"W0000 Ignored output_format.\n")
    assert capfd.readouterr().err == ""
    with pytest.raises(RuntimeError, match="conversion failed"):
        with quiet.native_stderr_captured():
            os.write(2, b"E0000 the converter's reason\n")
            raise RuntimeError("conversion failed")
    assert "the converter's reason" in capfd.readouterr().err
    quiet.show_native_logs()
    try:
        with quiet.native_stderr_captured():
            os.write(2, b"INFO: Created TensorFlow Lite XNNPACK delegate\n")
    finally:
        quiet.show_native_logs(False)
    assert "XNNPACK" in capfd.readouterr().err


def test_export_command_checks_parity(finished_run, tmp_path):
    out, _, _ = finished_run
    result = kd_keras_command(
        "export",
        f"--model={out / 'student.keras'}",
        "--out=exported",
        "--export=tflite_int8",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "tflite_int8" in result.stdout and "agreement" in result.stdout
    assert (tmp_path / "exported" / "student_int8.tflite").exists()


def test_distill_with_a_two_bit_student(tmp_path):
    result = kd_keras_command(
        "distill",
        "--bits=2",
        "--epochs=1",
        "--export=keras",
        "--out=run",
        "--verbose=0",
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
        "train-teacher",
        "--model=small_cnn",
        "--epochs=1",
        "--out=teacher.keras",
        "--verbose=0",
        "--allow_weak_teacher",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    card = json.loads((tmp_path / "teacher.json").read_text())
    assert card["command"].startswith("kd-keras train-teacher --model=small_cnn")
    assert {"test_accuracy_shifted", "test_chance_accuracy", "test_kappa"} <= set(card)
    # The card scores the file it describes.
    teacher = keras.saving.load_model(tmp_path / "teacher.keras")
    x, y = kd_keras.data.load_digits().test
    assert card["test_accuracy"] == np.mean(teacher.predict(x, verbose=0).argmax(1) == y)


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
        "distill",
        "--cpu_devices=2",
        "--strategy=mirrored",
        "--precision=mixed_bfloat16",
        "--teacher_precision=bfloat16",
        "--epochs=1",
        "--export=keras",
        "--out=run",
        "--verbose=0",
        cwd=tmp_path,
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
        "train-teacher",
        "--model=small_cnn",
        "--schedule=crd",
        "--epochs=1",
        "--precision=mixed_bfloat16",
        "--out=teacher.keras",
        "--verbose=0",
        "--allow_weak_teacher",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    card = json.loads((tmp_path / "teacher.json").read_text())
    assert card["schedule"] == "crd" and card["precision"] == "mixed_bfloat16"
    with zipfile.ZipFile(tmp_path / "teacher.keras") as archive:
        assert "bfloat16" not in archive.read("config.json").decode()


def test_train_vae_writes_model_and_card(tmp_path):
    result = kd_keras_command(
        "train-vae",
        "--epochs=1",
        "--latent_dim=4",
        "--out=vae.keras",
        "--verbose=0",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    card = json.loads((tmp_path / "vae.json").read_text())
    assert (
        card["command"]
        == "kd-keras train-vae --epochs=1 --latent_dim=4 --out=vae.keras --verbose=0"
    )
    assert card["latent_dim"] == 4 and card["test_mse"] > 0
    assert (tmp_path / "vae.keras").exists()


def test_a_killed_run_resumes_to_the_student_of_an_uninterrupted_one(tmp_path):
    # HARD alternating 1:1 with 11 steps per epoch: the checkpoint after an
    # odd number of epochs resumes in the augmenter's phase.
    args = (
        "distill",
        "--recipe=hard",
        "--epochs=3",
        "--batch_size=128",
        "--set=student_steps=1",
        "--set=augmenter_steps=1",
        "--set=sampler=network",
        "--set=candidates=1",
        "--set=interpolation=bilinear",
        "--export=keras",
        "--verbose=0",
        "--deterministic",
    )
    whole = kd_keras_command(*args, "--out=whole", cwd=tmp_path)
    assert whole.returncode == 0, whole.stderr[-2000:]

    killed = subprocess.Popen(
        [*KD_KERAS, *args, "--out=resumed"],
        cwd=tmp_path,
        env=KD_KERAS_ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
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
    students = [
        keras.saving.load_model(tmp_path / d / "student.keras") for d in ("whole", "resumed")
    ]
    for a, b in zip(*(s.get_weights() for s in students)):
        np.testing.assert_array_equal(a, b)


def interrupted_command(args, cwd, ready):
    """Start the command, send SIGINT once `ready()` holds; return (returncode, stderr)."""
    process = subprocess.Popen(
        [*KD_KERAS, *args],
        cwd=cwd,
        env=KD_KERAS_ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 300
    while not ready() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    return process.returncode, stderr


def test_ctrl_c_without_out_then_the_same_command_resumes(tmp_path):
    # Epochs after the first take ~0.2 s with the teacher cache: 20 of them
    # leave a loaded CI machine time to deliver the second Ctrl-C mid-run.
    args = ("distill", "--epochs=20", "--export=keras", "--verbose=0")
    runs = tmp_path / "runs"

    def started():
        return any(runs.glob("*/run.json"))

    code, stderr = interrupted_command(args, tmp_path, started)
    assert code == 130, stderr[-2000:]
    line = stderr.strip().splitlines()[-1]
    assert line.startswith(
        "kd-keras: interrupted before the first epoch checkpoint: nothing was saved"
    )
    assert "checkpoint of epoch" not in line and not runs.exists()  # nor the runs/ it made

    def checkpointed():
        return any(runs.glob("*/backup/checkpoint.json"))

    code, stderr = interrupted_command(args, tmp_path, checkpointed)
    assert code == 130, stderr[-2000:]
    (directory,) = runs.iterdir()
    line = stderr.strip().splitlines()[-1]
    assert "is kept in runs/distill-kd-digits-" in line and line.endswith(
        f"kd-keras distill --epochs=20 --export=keras --verbose=0 --out=runs/{directory.name}"
    ), line
    resumed = kd_keras_command(*args, cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert (
        f"Resuming the unfinished run runs/{directory.name} of the same command" in resumed.stdout
    )
    assert [p.name for p in runs.iterdir()] == [directory.name]
    metrics = json.loads((directory / "metrics.json").read_text())
    assert metrics["resumed_from_epoch"] >= 1 and metrics["optimizer_steps"] == {"student": 440}


@pytest.fixture
def cli():
    from kd_keras import cli

    return cli


@pytest.mark.parametrize(
    "argv, message",
    [
        (["distill", "--epoch=3"], "Unknown command line flag 'epoch'"),
        (["distill", "--verbose=9"], "flag --verbose=9"),
        (["distill", "--epochs=three"], "flag --epochs=three"),
        (["distill", "--precision=float8"], "flag --precision=float8"),
        (["distill", "--batch_size=0"], "flag --batch_size=0: 0 is not a positive integer"),
        # Each command has only its own flags.
        (["export", "--recipe=hard"], "Unknown command line flag 'recipe'"),
        (["train-teacher", "--teacher=x.keras"], "Unknown command line flag 'teacher'"),
        (["search", "--export=keras"], "Unknown command line flag 'export'"),
        (["distill", "extra"], "unexpected arguments extra"),
        (["frobnicate"], "expected a command"),
        ([], "expected a command"),
    ],
)
def test_bad_flag_values_give_one_line(cli, capsys, argv, message):
    with pytest.raises(SystemExit) as exit_:
        cli.parse(["kd-keras", *argv])
    assert exit_.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[-1].startswith("kd-keras: error:") and message in lines[-1]
    assert sum(line.startswith("kd-keras") for line in lines) == 1


@pytest.mark.parametrize(
    "command, present, absent",
    [
        (
            "distill",
            [
                "--recipe",
                "--teacher",
                "--student",
                "--export",
                "--set",
                "--deterministic",
                "--teacher_precision",
                "--bits",
                "--policy",
                "--cpu_devices",
            ],
            ["--role", "--population", "--schedule", "--latent_dim"],
        ),
        (
            "search",
            [
                "--role",
                "--population",
                "--perturbation_interval",
                "--train_size",
                "--resume",
                "--teacher",
                "--model",
                "--bits",
                "--set",
            ],
            ["--recipe", "--export", "--schedule", "--deterministic"],
        ),
        (
            "export",
            ["--model", "--out", "--export", "--dataset", "--unsafe_deserialization"],
            ["--recipe", "--epochs", "--role"],
        ),
        (
            "train-teacher",
            ["--model", "--schedule", "--policy", "--precision", "--strategy"],
            ["--recipe", "--teacher", "--role"],
        ),
        ("train-vae", ["--latent_dim", "--epochs", "--out"], ["--recipe", "--teacher"]),
    ],
)
def test_command_help_lists_that_commands_flags(cli, capsys, command, present, absent):
    with pytest.raises(SystemExit) as exit_:
        cli.parse(["kd-keras", command, "--epochs=3", "--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    assert text.startswith(f"usage: kd-keras {command} ")
    flag_lines = [
        line.split(":")[0].strip() for line in text.splitlines() if line.startswith("  --")
    ]
    names = {line.replace("--[no]", "--") for line in flag_lines}
    assert set(present) <= names and not set(absent) & names, names
    # Every flag has its help text, and says its default once.
    blocks = text.split("\n  --")[1:]
    assert len(blocks) == len(flag_lines)
    for block in blocks:
        assert len(block.split(": ", 1)[1]) > 5, block
        assert block.lower().count("default") >= 1, block
        assert block.count("(default: ") <= 1, block


def test_the_readme_command_reference_names_only_flags_each_command_has(cli):
    readme = (pathlib.Path(__file__).resolve().parent.parent / "README.md").read_text()
    section = readme.split("## Command line", 1)[1].split("```", 2)[1]
    commands, current = {}, None
    for line in section.splitlines():
        if line.startswith("kd-keras "):
            current = line.split()[1]
        if current:
            commands.setdefault(current, set()).update(re.findall(r"--(\w+)", line))
    assert set(commands) == set(cli.COMMANDS)
    for name, mentioned in commands.items():
        defined = set(cli.COMMANDS[name].flag_values())
        assert mentioned <= defined, (name, mentioned - defined)


def test_help_lists_the_commands(cli, capsys):
    for argv in (["--help"], ["-h"], ["help"]):
        with pytest.raises(SystemExit) as exit_:
            cli.parse(["kd-keras", *argv])
        assert exit_.value.code == 0
        text = capsys.readouterr().out
        assert all(f"  {name} " in text for name in cli.COMMANDS), text
    with pytest.raises(SystemExit):
        cli.parse(["kd-keras", "help", "search"])
    assert "--population" in capsys.readouterr().out


@pytest.mark.parametrize("argv", [["distill", "--help"], ["search", "--epoch=3"], ["--help"]])
def test_help_and_bad_flags_answer_without_tensorflow(tmp_path, argv):
    # They took 3 s when the command imported TensorFlow before parsing.
    result = subprocess.run(
        [sys.executable, "-X", "importtime", *KD_KERAS[1:], *argv],
        cwd=tmp_path,
        env=KD_KERAS_ENV,
        capture_output=True,
        text=True,
        timeout=120,
    )
    imported = [
        line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines() if "|" in line
    ]
    assert "kd_keras" in imported, result.stderr[-2000:]
    heavy = {"tensorflow", "keras", "numpy"} & {name.split(".")[0] for name in imported}
    assert not heavy, heavy
    assert result.returncode == (2 if "--epoch=3" in argv else 0), result.stderr[-2000:]


def test_import_kd_keras_registers_every_class_for_load_model(tmp_path):
    # A fresh process that names no kd_keras attribute still loads a Distiller.
    from conftest import tiny_student
    from conftest import tiny_teacher

    distiller = kd_keras.Distiller(tiny_teacher(), tiny_student())
    distiller.compile(optimizer="adam")
    distiller.save(tmp_path / "distiller.keras")
    probe = (
        "import kd_keras, keras, sys\n"
        f"model = keras.saving.load_model({str(tmp_path / 'distiller.keras')!r})\n"
        "print(type(model).__name__, kd_keras.distill.__name__)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=tmp_path,
        env=KD_KERAS_ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split()[-2:] == ["Distiller", "distill"]


def test_parsed_flags_reach_the_job(cli, monkeypatch, capsys):
    from kd_keras import jobs
    from kd_keras import resolve

    seen = {}

    def recording_job(**kwargs):
        seen.update(kwargs)
        raise resolve.RunError("stop here: nothing to fix.")

    monkeypatch.setattr(jobs, "distill_job", recording_job)
    parsed = cli.parse(
        [
            "kd-keras",
            "distill",
            "--recipe=hard",
            "--epochs=4",
            "--set=temperature=2",
            "--learning_rate=0.01",
            "--export=keras,tflite",
            "--verbose=2",
            "--allow_weak_teacher",
        ]
    )
    with pytest.raises(SystemExit) as exit_:
        cli.main(parsed)
    assert exit_.value.code == 2
    assert capsys.readouterr().err.strip() == "kd-keras: error: stop here: nothing to fix."
    assert seen["recipe"] == "hard" and seen["epochs"] == 4 and seen["verbose"] == 2
    assert seen["temperature"] == 2 and seen["optimizer.learning_rate"] == 0.01
    assert seen["export_formats"] == ("keras", "tflite") and seen["allow_weak_teacher"] is True
    # Not given: the job picks the data set's defaults.
    assert seen["teacher"] is None and seen["student"] is None and seen["batch_size"] is None


def test_errors_raised_outside_kd_keras_keep_their_traceback(cli, monkeypatch):
    from kd_keras import jobs

    def buggy_job(**kwargs):
        import numpy

        numpy.zeros(3).reshape(2)  # a ValueError raised inside NumPy: a bug, not bad input

    monkeypatch.setattr(jobs, "distill_job", buggy_job)
    with pytest.raises(ValueError, match="cannot reshape"):
        cli.main(cli.parse(["kd-keras", "distill"]))


@pytest.mark.parametrize(
    "raised, code, message",
    [
        ("fault", 2, "kd-keras: error: Non-finite loss kd=nan at step 7"),
        (OSError(28, "No space left on device"), 2, "kd-keras: error: [Errno 28] No space left"),
        (KeyboardInterrupt(), 130, "kd-keras: interrupted; nothing was saved."),
    ],
)
def test_failures_during_a_run_end_in_one_line(
    cli, capsys, monkeypatch, tmp_path, raised, code, message
):
    from kd_keras import jobs
    from kd_keras.callbacks import faults

    if raised == "fault":
        raised = faults.NumericalFault("Non-finite loss kd=nan at step 7 (epoch 2, batch 3): ...")

    def failing_job(**kwargs):
        raise raised

    monkeypatch.setattr(jobs, "distill_job", failing_job)
    parsed = cli.parse(["kd-keras", "distill", f"--out={tmp_path / 'run'}"])
    with pytest.raises(SystemExit) as exit_:
        cli.main(parsed)
    assert exit_.value.code == code
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(message)


@pytest.mark.parametrize(
    "epoch, kept, message",
    [
        (
            3,
            True,
            "kd-keras: interrupted; the checkpoint of epoch 3 is kept in runs/d-1: rerun the "
            "same command to resume, or exactly: kd-keras distill --recipe=hard "
            "'--set=note=a b' --out=runs/d-1",
        ),
        (None, True, "kd-keras: interrupted; the teacher it trained is kept in runs/d-1: rerun"),
        (
            None,
            False,
            "kd-keras: interrupted before the first epoch checkpoint: nothing was "
            "saved and runs/d-1 was removed.",
        ),
    ],
)
def test_an_interrupt_says_what_was_kept_and_how_to_resume(
    cli, capsys, monkeypatch, epoch, kept, message
):
    from kd_keras import jobs
    from kd_keras import run_directory

    def interrupted_job(**kwargs):
        raise run_directory.Interrupted("runs/d-1", epoch, kept)

    monkeypatch.setattr(jobs, "distill_job", interrupted_job)
    # Given or not, the --out of the message is the run's own.
    for out in ([], ["--out=elsewhere"], ["--out", "elsewhere"]):
        parsed = cli.parse(["kd-keras", "distill", "--recipe=hard", *out, "--set=note=a b"])
        with pytest.raises(SystemExit) as exit_:
            cli.main(parsed)
        assert exit_.value.code == 130
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(message), lines
        assert "elsewhere" not in lines[0]


def test_sigterm_becomes_a_keyboard_interrupt(cli):
    with pytest.raises(KeyboardInterrupt):
        cli._interrupt(signal.SIGTERM, None)


def test_set_overrides_parse_literals_and_refuse_malformed_pairs(cli):
    assert cli._overrides(["temperature=2", "image_conditioned=True", "note=hot", "x=[1, 2]"]) == {
        "temperature": 2,
        "image_conditioned": True,
        "note": "hot",
        "x": [1, 2],
    }
    for bad in ("temperature", "=3", "two words=1"):
        with pytest.raises(ValueError, match="--set expects KEY=VALUE"):
            cli._overrides([bad])


@settings(max_examples=200, deadline=None)
@given(
    pairs=st.lists(
        st.text(max_size=30) | st.from_regex(r"[a-z_]{1,8}=.{0,20}", fullmatch=True), max_size=4
    )
)
def test_set_overrides_fuzz_give_a_dict_or_a_clean_error(pairs):
    from kd_keras import cli

    try:
        overrides = cli._overrides(pairs)
    except ValueError as error:
        assert len(str(error).splitlines()) == 1
        return
    assert all(key.isidentifier() for key in overrides)
    assert len(overrides) <= len(pairs)


def test_distill_on_mnist1d_uses_the_data_sets_defaults(tmp_path):
    run = kd_keras_command(
        "distill",
        "--dataset=mnist1d",
        "--epochs=1",
        "--export=keras",
        "--verbose=0",
        "--out=run",
        cwd=tmp_path,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    card = json.loads(kd_keras.shipped.path("mnist1d_cnn_teacher.json").read_text())
    assert metrics["teacher"] == "shipped:mnist1d_cnn" and metrics["student"] == "mnist1d_mlp"
    assert metrics["teacher_accuracy"] == card["test_accuracy"]
    assert metrics["student_parameters"] == 15210 and metrics["epochs"] == 1
    refused = kd_keras_command(
        "distill", "--dataset=mnist1d", "--recipe=tst", "--epochs=1", "--out=tst", cwd=tmp_path
    )
    assert refused.returncode == 2
    assert "makes views in [0, 1], but the training inputs range over" in refused.stderr
    assert "(--set augmenter.value_range=[-5.4" in refused.stderr
    assert not (tmp_path / "tst").exists()
