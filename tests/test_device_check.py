"""benchmarks/device_check.py: the table it prints, and that a silent XLA fallback fails it."""

import math
import os
import pathlib
import subprocess
import sys

import keras
import pytest
import tensorflow as tf
from absl import flags
from absl import logging
from absl.testing import flagsaver

import kd_keras
from kd_keras.models import registry

# A subprocess run and XLA compilations: the large tier (`pytest -m large`).
pytestmark = pytest.mark.large

ROOT = pathlib.Path(__file__).resolve().parent.parent
BENCHMARKS = ROOT / "benchmarks"
ENV = {
    **os.environ,
    "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    "TF_CPP_MIN_LOG_LEVEL": "2",
}
COLUMNS = (
    "recipe",
    "phase",
    "precision",
    "XLA asked",
    "XLA",
    "img/s",
    "step ms",
    "teacher share",
    "peak MiB",
    "compile s",
    "steps",
)


def _import_device_check():
    sys.path.insert(0, str(BENCHMARKS))
    import device_check

    return device_check


def _tables(text):
    """Every Markdown table of `text`, as lists of {column: cell} rows."""
    tables, header = [], None
    for line in text.splitlines():
        if not line.startswith("|"):
            header = None
            continue
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if header is None:
            header = cells
            tables.append([])
        elif not set("".join(cells)) <= set("-"):
            tables[-1].append(dict(zip(header, cells)))
    return tables


def test_quick_run_prints_a_verified_row_per_recipe_precision_and_xla():
    result = subprocess.run(
        [sys.executable, str(BENCHMARKS / "device_check.py"), "--quick", "--epochs_estimate"],
        cwd=ROOT,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "device_check OK" in result.stdout
    steps, estimates = _tables(result.stdout)
    assert tuple(steps[0]) == COLUMNS
    rows = [row for row in steps if row["recipe"] != "(teacher forward)"]
    forwards = [row for row in steps if row["recipe"] == "(teacher forward)"]
    assert [row["XLA"] for row in forwards] == ["off", "compiled"]

    # --quick: kd and mixup, float32 and the device's mixed policy, XLA off and on.
    precisions = {row["precision"] for row in rows}
    assert len(precisions) == 2 and "float32" in precisions
    assert precisions - {"float32"} <= {"mixed_bfloat16", "mixed_float16"}
    expected = {
        (recipe, precision, jit)
        for recipe in ("kd", "mixup")
        for precision in precisions
        for jit in ("off", "on")
    }
    assert {(row["recipe"], row["precision"], row["XLA asked"]) for row in rows} == expected
    assert len(rows) == len(expected)
    for row in rows:
        # What happened, verified: XLA compiled exactly the steps that asked for it.
        assert row["XLA"] == ("compiled" if row["XLA asked"] == "on" else "off"), row
        assert row["phase"] == "student"
        images_per_second = float(row["img/s"])
        assert math.isfinite(images_per_second) and images_per_second > 0, row
        assert float(row["step ms"]) > 0
        # "median [25%, 75%]" of teacher forward time / step time, paired per round.
        median, low, high = (
            float(value)
            for value in row["teacher share"]
            .replace("[", "")
            .replace("]", "")
            .replace(",", "")
            .split()
        )
        assert 0 < low <= median <= high, row
        assert float(row["compile s"]) > 0
        assert row["steps"] == "3x2"  # --quick's rounds x steps: not cut by the budget
    for row in estimates:
        assert float(row["hours, 240 epochs"]) > 0
        assert row["recipe's epochs (fit epochs)"] == "240 (240)"


class NoJit(keras.layers.Layer):
    """The identity, declaring it cannot be compiled with XLA (as some Keras layers do)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.supports_jit = False

    def call(self, inputs):
        return inputs


def _student_with_a_no_jit_layer(input_shape, num_classes):
    inputs = keras.Input(input_shape)
    x = keras.layers.GlobalAveragePooling2D()(NoJit()(inputs))
    return keras.Model(inputs, keras.layers.Dense(num_classes)(x))


def test_silent_fallback_fails_the_check(monkeypatch, capsys):
    device_check = _import_device_check()
    monkeypatch.setitem(registry._BUILDERS, "no_jit_student", _student_with_a_no_jit_layer)
    argv = [
        "device_check",
        "--quick",
        "--recipes=kd",
        "--precisions=float32",
        "--jit=on",
        "--student=no_jit_student",
    ]
    verbosity, tf_level = logging.get_verbosity(), tf.get_logger().level
    try:
        with flagsaver.flagsaver():
            flags.FLAGS(argv)
            status = device_check.main(argv)
    finally:  # main quietens both loggers, as a script may
        logging.set_verbosity(verbosity)
        tf.get_logger().setLevel(tf_level)
    output = capsys.readouterr()
    assert status == 1
    (row,) = [row for row in _tables(output.out)[0] if row["recipe"] == "kd"]
    # Keras turned XLA off for the whole model and said so only in a warning;
    # every signal of the check saw it.
    assert row["XLA"].startswith("FALLBACK"), row
    assert "Keras warned" in row["XLA"]
    assert "distiller.jit_compile is False" in row["XLA"]
    assert "without _XlaMustCompile" in row["XLA"]
    assert "device_check FAILED" in output.err
    assert "kd float32 XLA on: FALLBACK" in output.err


def test_xla_verdict_fails_on_each_signal_alone():
    verdict = _import_device_check().xla_verdict
    warned = "Model doesn't support `jit_compile=True`. Proceeding with `jit_compile=False`."
    assert verdict(True, True, None, [True, True]) == ("compiled", False)
    assert verdict(False, False, None, [False]) == ("off", False)
    for arguments in (
        (True, True, warned, [True]),  # only Keras' warning
        (True, False, None, [True]),  # only the resolved jit_compile
        (True, True, None, [True, False]),  # only one phase's traced step
    ):
        status, failed = verdict(*arguments)
        assert status.startswith("FALLBACK") and failed, arguments
    # No traced Keras step (e.g. Keras renamed it): unproven, so failed.
    assert verdict(True, True, None, [])[1]
    assert verdict(False, False, None, [True]) == (
        "MISMATCH: XLA off was asked, the step carries _XlaMustCompile",
        True,
    )


def test_explicit_xla_errors_are_named():
    explain = _import_device_check().explain_error
    # TensorFlow 2.21's message for keras.random.beta under jit_compile=True on a CPU.
    message = (
        "Graph execution error:\n\nDetected at node stateless_random_gamma/"
        "StatelessRandomGammaV3 defined at (most recent call last):\n<stack traces "
        "unavailable>\nDetected unsupported operations when trying to compile graph "
        "__inference_f_51[] on XLA_CPU_JIT: StatelessRandomGammaV3 (No registered "
        "'StatelessRandomGammaV3' OpKernel for XLA_CPU_JIT devices compatible with node "
        "{{node stateless_random_gamma/StatelessRandomGammaV3}})"
    )
    error = ValueError(message)
    assert explain(error, True) == "XLA error: StatelessRandomGammaV3 on XLA_CPU_JIT"
    assert explain(error, False).startswith("error: ValueError: Detected at node")


def test_budget_cuts_the_steps_to_what_is_left():
    device_check = _import_device_check()
    with flagsaver.flagsaver():
        flags.FLAGS(["device_check", "--budget_minutes=5", "--steps=50", "--rounds=4"])
        now = device_check.time.perf_counter()
        # Plenty left: --steps as given.
        assert device_check._steps_per_round(now, [0.01] * 10, 0.0, 0) == (50, None)
        # 200 s spent, 10 s margin, 4 rounds of (1 + steps) x 10 s: 90 s fit 1 step.
        steps, note = device_check._steps_per_round(now - 200, [1.0] * 10, 0.0, 0)
        assert steps == 1 and "cut from 50 to 1" in note
        # Later groups' expected compilation and their share are set aside.
        steps, _ = device_check._steps_per_round(now, [0.1] * 10, 80.0, 1)
        assert steps == 25  # (300 - 80 - 10) s / 2 groups / (4 rounds x 1 s) = 26.25, less 1
    with flagsaver.flagsaver():
        flags.FLAGS(["device_check", "--budget_minutes=0", "--steps=50"])
        assert device_check._steps_per_round(0.0, [100.0], 1e6, 3) == (50, None)


def test_projected_hours_by_phase_schedule():
    projected = _import_device_check().projected_hours
    steps = math.ceil(50_000 / 64)  # 782
    kd = kd_keras.recipes.get("kd")
    assert projected(kd, {"student": 0.1}, 64, 240) == pytest.approx(240 * steps * 0.1 / 3600)
    # Alternation every few steps: 4 student steps, then 1 augmenter step.
    alternating = {"phases": {"mode": "steps", "student_steps": 4, "augmenter_steps": 1}}
    assert projected(alternating, {"student": 0.1, "augmenter": 0.2}, 64, 240) == (
        pytest.approx(240 * steps * (4 * 0.1 + 0.2) / 5 / 3600)
    )
    # Inserted augmenter epochs come on top of the 240 student epochs.
    inserted = {
        "phases": {
            "mode": "epochs",
            "starts": [30, 90],
            "length": 30,
            "full_epochs": 240,
            "reset_optimizer": True,
            "inserted": True,
        }
    }
    assert projected(inserted, {"student": 0.1, "augmenter": 0.2}, 64, 240) == (
        pytest.approx(steps * (240 * 0.1 + 60 * 0.2) / 3600)
    )
