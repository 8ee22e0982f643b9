import json
import os
import pathlib
import socket
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import tiny_batch
from conftest import tiny_student
from conftest import tiny_teacher

import kd_keras
from kd_keras import strategy as kd_strategy

# Subprocesses, trainings and conversions: the large tier (`pytest -m large`).
pytestmark = pytest.mark.large

TESTS = pathlib.Path(__file__).parent
ENV = {
    **os.environ,
    "PYTHONPATH": os.pathsep.join([str(TESTS), str(TESTS.parent)]),
    "TF_CPP_MIN_LOG_LEVEL": "2",
}


def _run_mirrored(mode):
    result = subprocess.run(
        [sys.executable, str(TESTS / "mirrored_run.py"), mode],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_strategies_by_name():
    assert kd_strategy.get("default") is tf.distribute.get_strategy()
    mirrored = kd_strategy.get("mirrored")
    assert isinstance(mirrored, tf.distribute.MirroredStrategy)
    # One per process: a second MirroredStrategy would reuse collective keys.
    assert kd_strategy.get("mirrored") is mirrored
    assert kd_strategy.get(mirrored) is mirrored
    with mirrored.scope():
        assert kd_strategy.get("default") is mirrored  # the strategy in effect
    assert kd_strategy.is_chief(mirrored) and not kd_strategy.is_multi_worker(mirrored)
    with pytest.raises(ValueError, match="Unknown strategy 'tpu'"):
        kd_strategy.get("tpu")


@pytest.mark.parametrize(
    "tf_config, message",
    [
        (None, "TF_CONFIG, which is not set"),
        ("{not json", "TF_CONFIG is not valid"),
        (
            '{"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 2}}',
            "task index 2 is not in the 2 workers",
        ),
    ],
)
def test_multiworker_needs_a_valid_tf_config(monkeypatch, tf_config, message):
    if tf_config is None:
        monkeypatch.delenv("TF_CONFIG", raising=False)
    else:
        monkeypatch.setenv("TF_CONFIG", tf_config)
    with pytest.raises(ValueError, match=message):
        kd_strategy.get("multiworker")


def test_split_cpu_must_come_first():
    tf.constant(1.0)  # TensorFlow is running in this process
    with pytest.raises(RuntimeError, match="split_cpu first"):
        kd_strategy.split_cpu(2)
    with pytest.raises(ValueError, match="integer >= 1"):
        kd_strategy.split_cpu(0)


def test_place_builds_in_scope_or_copies_with_the_weights():
    strategy = kd_strategy.get("mirrored")
    outside = tiny_student()
    before = [w.numpy().copy() for w in outside.weights]
    with strategy.scope():
        built = kd_strategy.place(tiny_student, strategy)
        copied = kd_strategy.place(outside, strategy)
        assert kd_strategy.place(built, strategy) is built
    assert kd_strategy.in_scope(built, strategy) and kd_strategy.in_scope(copied, strategy)
    assert not kd_strategy.in_scope(outside, strategy)
    assert copied is not outside
    for a, b in zip(before, copied.weights):
        np.testing.assert_array_equal(a, keras.ops.convert_to_numpy(b))
    with pytest.raises(TypeError, match="returned 3, not a keras.Model"):
        kd_strategy.place(lambda: 3, strategy)


def test_a_config_made_outside_the_scope_builds_inside_it():
    # A config is data: kd_keras.distill builds its augmenter in the scope,
    # so the augmenter's seed variable is mirrored.
    x, y = tiny_batch(count=16)
    config = kd_keras.recipes.get("mixup", {"epochs": 1})
    distiller = kd_keras.distill(
        tiny_teacher,
        tiny_student,
        (x, y),
        recipe=config,
        batch_size=8,
        strategy="mirrored",
        verbose=0,
    )
    strategy = distiller.distribute_strategy
    assert strategy.num_replicas_in_sync >= 1
    assert kd_strategy.in_scope(distiller.augmenter, strategy)


def test_deterministic_recipes_under_mirrored_match_one_device():
    report = _run_mirrored("deterministic")
    for name in ("kd", "kd_xla", "backward"):
        assert report[name]["replicas"] == 2, name
        assert report[name]["steps"] == 4, name
        assert report[name]["loss_diff"] < 1e-5, name
        assert report[name]["weight_diff"] < 1e-5, name
    # jit_compile=True under a strategy compiles each replica's step.
    assert report["kd_xla"]["replica_jit_compile"]
    assert not report["kd"]["replica_jit_compile"]  # "auto" on CPU


def test_random_recipes_run_under_mirrored():
    report = _run_mirrored("random")
    for name, result in report.items():
        losses = [value for value in result["loss"] if value > 0]  # 0: policy epochs
        assert np.isfinite(losses).all(), name
        assert losses[-1] < losses[0], name
        assert result["replicas_agree"], name
        # Each replica draws its own augmentation of the same images.
        assert result["views_differ_per_replica"], name
    for name, steps in (("hard", 2), ("tst", 2)):
        assert report[name]["augmenter_steps"] == steps
        assert np.isfinite(report[name]["augmenter_objective"]).all()


def _free_port():
    with socket.socket() as sock:
        sock.bind(("localhost", 0))
        return sock.getsockname()[1]


def test_multiworker_over_loopback_matches_one_process(tmp_path):
    workers = [f"localhost:{_free_port()}", f"localhost:{_free_port()}"]
    processes = []
    for index in range(2):
        config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
        processes.append(
            subprocess.Popen(
                [sys.executable, str(TESTS / "multiworker_run.py"), str(tmp_path / f"{index}.npz")],
                env={**ENV, "TF_CONFIG": json.dumps(config)},
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    env = {key: value for key, value in ENV.items() if key != "TF_CONFIG"}
    processes.append(
        subprocess.Popen(
            [sys.executable, str(TESTS / "multiworker_run.py"), str(tmp_path / "single.npz")],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
    )
    try:
        for process in processes:
            _, stderr = process.communicate(timeout=180)
            assert process.returncode == 0, stderr[-2000:]
    finally:
        for process in processes:
            process.kill()
    first, second, single = (np.load(tmp_path / f"{name}.npz") for name in ("0", "1", "single"))
    assert int(first["replicas"]) == 2 and int(single["replicas"]) == 1
    assert first.files == second.files
    for key in first.files:
        np.testing.assert_array_equal(first[key], second[key], err_msg=key)
    assert int(first["hard_augmenter_steps"]) == 2  # the second optimiser trained
    for key in single.files:
        if key != "replicas":
            np.testing.assert_allclose(first[key], single[key], atol=1e-5, err_msg=key)
