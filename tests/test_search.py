"""kd_keras.search: population-based search of PBA agents on Ray Tune (local Ray, tiny runs)."""

import json
import os
import pathlib
import subprocess
import sys

import keras
import numpy as np
import pytest
import search_faults
from conftest import tiny_teacher

import kd_keras
from kd_keras.augment import pba

# Subprocesses, trainings and conversions: the large tier (`pytest -m large`).
pytestmark = pytest.mark.large

# Two trials of a one-layer MLP on 96 digits: a whole PBT search in seconds.
TINY = dict(
    model="mlp",
    model_kwargs={"width": 8, "depth": 1},
    population=2,
    perturbation_interval=1,
    train_size=96,
    validation_size=64,
    batch_size=32,
    initial_policy="random",
    verbose=0,
)


def on_grid(flat):
    return (
        len(flat) == 60
        and all(isinstance(level, int) for level in flat)
        and all(0 <= level <= 10 for level in flat[0::2])
        and all(0 <= level <= 9 for level in flat[1::2])
    )


def result_grid(experiment):
    # Ray's own record of each trial's last result and checkpoint (its
    # result.json files are rewritten from stale copies when PBT restores).
    from ray import tune

    return tune.Tuner.restore(str(experiment), trainable=kd_keras.search.train_trial).get_results()


def checkpoint_file(result, name):
    with result.checkpoint.as_directory() as directory:
        return json.loads((pathlib.Path(directory) / name).read_text())


def all_trained_to(experiment, epochs, trials=2):
    results = list(result_grid(experiment))
    return len(results) == trials and all(
        not result.error
        and result.metrics["epoch"] == epochs
        and checkpoint_file(result, "training_metadata.json")["epoch"] == epochs
        for result in results
    )


@pytest.fixture(scope="module")
def ray_session():
    ray, _ = kd_keras.search.import_ray()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def teacher_search(ray_session, tmp_path_factory):
    out = tmp_path_factory.mktemp("teacher_search")
    schedule = kd_keras.search.search(role="teacher", epochs=3, out=out, seed=1, **TINY)
    return schedule, out


# --- the explore step, the policy log, the split (no Ray) -----------------------------


def test_explore_keeps_policies_on_grid_and_shifts_at_most_three_levels():
    explore = kd_keras.search.PolicyExplore(resample_probability=0.0, seed=0)
    top = pba.Policy.from_flat([10, 9] * 30).flat()
    for start in (pba.Policy.zeros().flat(), top, pba.Policy.random(3).flat()):
        config = {"policy": start, "other": "kept"}
        for _ in range(50):
            explored = explore(config)
            assert explored["other"] == "kept"
            assert on_grid(explored["policy"])
            assert max(abs(a - b) for a, b in zip(explored["policy"], config["policy"])) <= 3
            config = explored
    # Starting from all-zero levels, an upward shift must occur somewhere.
    assert explore({"policy": pba.Policy.zeros().flat()})["policy"] != pba.Policy.zeros().flat()


def test_explore_resamples_anywhere_on_the_grid_and_leaves_its_input_alone():
    explore = kd_keras.search.PolicyExplore(resample_probability=1.0, seed=0)
    config = {"policy": pba.Policy.zeros().flat()}
    draws = np.array([explore(config)["policy"] for _ in range(200)])
    assert config["policy"] == pba.Policy.zeros().flat()
    assert all(on_grid(list(map(int, row))) for row in draws)
    # Resampling reaches the top of both grids, far beyond a shift of 3.
    assert draws[:, 0::2].max() == 10 and draws[:, 1::2].max() == 9
    with pytest.raises(ValueError, match="resample_probability must be in"):
        kd_keras.search.PolicyExplore(resample_probability=1.5)


def _log_line(trial, cloned, iteration, cloned_iteration, cloned_policy, new_policy):
    return json.dumps(
        [
            trial,
            cloned,
            iteration,
            cloned_iteration,
            {"policy": cloned_policy},
            {"policy": new_policy},
        ]
    )


def test_policy_history_follows_the_lineage_in_the_pbt_log(tmp_path):
    a, b, c, d, e = ([level] * 60 for level in range(5))
    # The trial cloned a trial at its epoch 2 (started under a, then b from
    # epoch 1), then later re-cloned at epoch 2 with policy d and finally at
    # epoch 6 (the end of a 6-epoch run) with e, which it never trained under.
    lines = [
        _log_line("1", "0", 1, 1, a, b),
        _log_line("2", "1", 2, 3, b, c),
        _log_line("2", "1", 3, 2, b, d),
        _log_line("2", "0", 6, 6, d, e),
    ]
    kd_keras.search.policy_log_path(tmp_path, "t2").write_text("\n".join(lines) + "\n")
    history = kd_keras.search.policy_history(tmp_path, "t2", policy=e, epochs=6)
    assert history == [(0, a), (1, b), (2, d)]
    # A trial that never exploited has no log: its own policy throughout.
    assert kd_keras.search.policy_history(tmp_path, "t9", policy=c, epochs=6) == [(0, c)]


def test_split_holds_out_validation_and_keeps_a_fixed_subset():
    x = np.arange(100, dtype="float32")[:, None]
    y = np.arange(100)
    (x_train, y_train), (x_val, y_val) = kd_keras.search.split_train_validation(
        (x, y), train_size=30, validation_size=0.2, seed=4
    )
    assert len(y_train) == 30 and len(y_val) == 20
    assert not set(y_train) & set(y_val)
    np.testing.assert_array_equal(x_train[:, 0], y_train)
    again, _ = kd_keras.search.split_train_validation((x, y), 30, 0.2, seed=4)
    other, _ = kd_keras.search.split_train_validation((x, y), 30, 0.2, seed=5)
    np.testing.assert_array_equal(again[1], y_train)
    assert set(other[1]) != set(y_train)
    with pytest.raises(ValueError, match="only 80 training samples are left"):
        kd_keras.search.split_train_validation((x, y), train_size=81, validation_size=20)


def test_missing_ray_names_the_extra_to_install(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(ImportError, match=r'pip install "kd_keras\[search\]"'):
        kd_keras.search.search(out=tmp_path / "never")
    assert not (tmp_path / "never").exists()


def test_importing_kd_keras_does_not_import_ray():
    code = "import sys, kd_keras, kd_keras.search; print(sorted(m for m in sys.modules if m.split('.')[0] == 'ray'))"
    printed = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    ).stdout
    assert printed.strip().splitlines()[-1] == "[]"


def test_bad_settings_fail_before_any_training(tmp_path):
    with pytest.raises(ValueError, match="role must be 'teacher' or 'student'"):
        kd_keras.search.search(role="coach", out=tmp_path)
    with pytest.raises(ValueError, match="teacher and recipe overrides are for role 'student'"):
        kd_keras.search.search(role="teacher", teacher="shipped:digits_cnn", out=tmp_path)
    with pytest.raises(ValueError, match="population must be an integer >= 1"):
        kd_keras.search.search(population=0, out=tmp_path)
    assert not (tmp_path / "ray").exists()


def test_equal_rewards_are_reported_as_an_arbitrary_schedule(capsys):
    from kd_keras import cli
    from kd_keras.search.pbt import reward_summary

    assert reward_summary([0.119, 0.2, 0.119]) == {
        "final_rewards": [0.119, 0.119, 0.2],
        "rewards_all_equal": False,
    }
    assert reward_summary([0.119] * 4)["rewards_all_equal"]
    assert not reward_summary([0.5])["rewards_all_equal"]  # one trial ranks nothing
    report = {
        "role": "teacher",
        "model": "cnn",
        "population": 4,
        "epochs": 3,
        "best_trial": "a",
        "best_validation_accuracy": 0.119,
        "trial_epochs": 12,
        "exploits": 2,
        "seconds_per_trial_epoch": 1.0,
        "schedule": "s.json",
        "experiment": "ray",
        **reward_summary([0.119] * 4),
    }
    assert "final rewards              all equal (11.90%): the schedule is arbitrary" in (
        cli._search_table(report)
    )
    report.update(reward_summary([0.1, 0.3, 0.2]))
    assert "10.00% to 30.00% over 3 trials" in cli._search_table(report)


def test_a_student_search_refuses_a_teacher_at_chance_before_any_trial(tmp_path, monkeypatch):
    # A teacher that predicts class 0 whatever it sees.
    inputs = keras.Input((28, 28, 1))
    flat = keras.layers.Flatten()(inputs)
    outputs = keras.layers.Dense(
        10,
        kernel_initializer="zeros",
        bias_initializer=keras.initializers.Constant([5.0] + [0.0] * 9),
    )(flat)
    keras.Model(inputs, outputs).save(tmp_path / "constant.keras")
    ray, _ = kd_keras.search.import_ray()
    monkeypatch.setattr(ray, "init", lambda *a, **k: pytest.fail("started Ray"))
    settings = {**TINY, "model_kwargs": {"width": 8, "depth": 1}}
    with pytest.raises(
        kd_keras.resolve.RunError,
        match=r"near chance on the search's validation data: accuracy \d+\.\d+%.*kappa 0\.00.*--allow_weak_teacher",
    ):
        kd_keras.search.search(
            role="student",
            teacher=str(tmp_path / "constant.keras"),
            out=tmp_path / "search",
            **settings,
        )
    assert not (tmp_path / "search").exists()


# --- searches on a local Ray ----------------------------------------------------------


def test_search_writes_the_best_trials_schedule(teacher_search):
    schedule, out = teacher_search
    saved = pba.Schedule.load(out / "schedule.json")
    assert saved == schedule
    assert saved.epochs == 3
    assert all(on_grid(policy.flat()) for _, policy in saved.entries)
    summary = json.loads((out / "search.json").read_text())
    assert summary["train_size"] == 96 and summary["validation_size"] == 64
    assert all_trained_to(out / "ray", 3)
    # The reward is the accuracy of the best weights on the held-out split.
    best = result_grid(out / "ray").get_best_result("validation_accuracy", "max", "last")
    model = kd_keras.models.get("mlp", (28, 28, 1), 10, width=8, depth=1)
    with best.checkpoint.as_directory() as directory:
        model.load_weights(pathlib.Path(directory) / "latest.weights.h5")
    _, validation = kd_keras.search.split_train_validation(
        kd_keras.data.load_digits().train, train_size=96, validation_size=64, seed=1
    )
    assert kd_keras.resolve.evaluate(model, validation) == summary["best_validation_accuracy"]
    # Every trial's last reward, as Ray recorded it, and whether they tie.
    rewards = sorted(result.metrics["validation_accuracy"] for result in result_grid(out / "ray"))
    assert (
        summary["final_rewards"] == rewards and summary["best_validation_accuracy"] == rewards[-1]
    )
    assert summary["rewards_all_equal"] == (rewards[0] == rewards[-1])


def test_schedule_is_the_lineage_the_best_weights_were_trained_under(teacher_search):
    schedule, out = teacher_search
    summary = json.loads((out / "search.json").read_text())
    # The search's own best trial: with tied rewards another trial may rank first here.
    # A trial that exploited the finished best one holds a copy of its last
    # result; the best trial's own result is the one in its own directory.
    results = list(result_grid(out / "ray"))
    copies = [r for r in results if r.metrics["trial_id"] == summary["best_trial"]]
    (best,) = [r for r in copies if pathlib.Path(r.path).name == f"trial_{summary['best_trial']}"]
    assert all(r.metrics == best.metrics for r in copies)
    assert best.metrics["validation_accuracy"] == max(
        r.metrics["validation_accuracy"] for r in results
    )
    trained_under = checkpoint_file(best, "policies.json")
    assert len(trained_under) == 3
    assert [schedule.policy_at(epoch).flat() for epoch in range(3)] == trained_under
    # Every change after epoch 0 is a config change PBT logged for this trial.
    log = kd_keras.search.policy_log_path(out / "ray", summary["best_trial"])
    logged = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    for epoch, policy in summary["policy_history"][1:]:
        assert [epoch, policy] in [[line[3], line[5]["policy"]] for line in logged]
    # PBT's explores (the custom explore function) stayed on the grid.
    explored = out / "ray" / "pbt_global.txt"
    for line in explored.read_text().splitlines() if explored.exists() else []:
        assert on_grid(json.loads(line)[5]["policy"])


def test_resuming_a_finished_search_trains_nothing_more(teacher_search):
    schedule, out = teacher_search
    before = json.loads((out / "search.json").read_text())
    again = kd_keras.search.search(role="teacher", epochs=3, out=out, seed=1, resume=True, **TINY)
    after = json.loads((out / "search.json").read_text())
    assert again == schedule
    assert after["resumed"] and after["trial_epochs"] == before["trial_epochs"]
    with pytest.raises(kd_keras.resolve.RunError, match="already holds a search: pass resume=True"):
        kd_keras.search.search(role="teacher", epochs=3, out=out, seed=1, **TINY)
    with pytest.raises(kd_keras.resolve.RunError, match=r"Cannot resume .*\(epochs 3 -> 4\)"):
        kd_keras.search.search(role="teacher", epochs=4, out=out, seed=1, resume=True, **TINY)


def test_student_search_resumes_after_a_failure_with_the_teacher_frozen(ray_session, tmp_path):
    teacher = tiny_teacher((28, 28, 1), 10)  # BatchNorm: training mode would move its statistics
    teacher.save(tmp_path / "teacher.keras")
    marker = tmp_path / "failed_once"
    search_faults.register_by_value()
    settings = dict(
        role="student",
        teacher=str(tmp_path / "teacher.keras"),
        epochs=2,
        out=tmp_path / "search",
        max_failures=0,
        temperature=2.0,
        callbacks=[search_faults.FailOnce(marker)],
        allow_weak_teacher=True,  # an untrained teacher: the plumbing is under test
        **TINY,
    )
    with pytest.raises(kd_keras.resolve.RunError, match=r"1 of 2 trials failed .*resume=True"):
        kd_keras.search.search(**settings)
    assert marker.exists() and not (tmp_path / "search" / "schedule.json").exists()

    schedule = kd_keras.search.search(resume=True, **settings)
    assert pba.Schedule.load(tmp_path / "search" / "schedule.json") == schedule
    assert all_trained_to(tmp_path / "search" / "ray", 2)
    original = [keras.ops.convert_to_numpy(w) for w in teacher.weights]
    _, validation = kd_keras.search.split_train_validation(
        kd_keras.data.load_digits().train, train_size=96, validation_size=64, seed=0
    )
    for result in result_grid(tmp_path / "search" / "ray"):
        recipe = kd_keras.recipes.get("rolewise", {"policy": schedule})
        distiller = kd_keras.recipes.build.distiller(
            recipe,
            kd_keras.resolve.load_model(tmp_path / "teacher.keras"),
            kd_keras.models.get("mlp", (28, 28, 1), 10, width=8, depth=1),
        )
        kd_keras.recipes.build.compile(distiller, recipe, steps_per_epoch=3, epochs=2)
        student_before = [keras.ops.convert_to_numpy(w) for w in distiller.student.weights]
        with result.checkpoint.as_directory() as directory:
            distiller.load_weights(pathlib.Path(directory) / "latest.weights.h5")
        for saved, kept in zip(distiller.teacher.weights, original):
            np.testing.assert_array_equal(keras.ops.convert_to_numpy(saved), kept)
        # The reward is the student's accuracy on the held-out split.
        assert (
            kd_keras.resolve.evaluate(distiller.student, validation)
            == (result.metrics["validation_accuracy"])
        )
        # The student did train, so the checkpoint is not just the initial weights.
        assert any(
            not np.array_equal(keras.ops.convert_to_numpy(w), b)
            for w, b in zip(distiller.student.weights, student_before)
        )


def test_cli_search_survives_a_crashed_trial(tmp_path):
    marker = tmp_path / "failed_once"
    out = tmp_path / "cli_search"
    completed = subprocess.run(
        [
            sys.executable,
            str(pathlib.Path(__file__).parent / "search_faults.py"),
            str(marker),
            "search",
            "--role=teacher",
            "--model=mlp",
            "--population=1",
            "--epochs=1",
            "--train_size=64",
            "--batch_size=32",
            f"--out={out}",
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    summary = json.loads((out / "search.json").read_text())
    assert summary["role"] == "teacher" and summary["trial_epochs"] == 1
    assert f"{100 * summary['best_validation_accuracy']:.2f}%" in completed.stdout
    assert str(out / "schedule.json") in completed.stdout
    # Quiet by default: neither Tune's tables and boxes nor Ray's INFO/WARNING lines.
    for noise in (
        "Configuration for experiment",
        "View detailed results",
        "Trial status",
        "Token authentication",
        "INFO ",
        "╭",
    ):
        assert noise not in completed.stdout + completed.stderr, noise
    # One trial and no exploit: the schedule is its initial policy, PBA's zeros.
    assert pba.Schedule.load(out / "schedule.json") == pba.Schedule.constant(
        pba.Policy.zeros(), epochs=1
    )
    # The injected failure happened, and Ray restarted the trial to the end.
    assert marker.exists()
    errors = list((out / "ray").glob("trial_*/error.txt"))
    assert len(errors) == 1 and search_faults.MESSAGE in errors[0].read_text()
    assert all_trained_to(out / "ray", 1, trials=1)


def test_tied_rewards_name_the_first_trial_by_id_in_any_order(tmp_path):
    from kd_keras.search import pbt

    class Result:
        def __init__(self, trial_id, reward, level, directory=None):
            self.metrics = {"trial_id": trial_id, "validation_accuracy": reward}
            self.config = {"policy": [level] * 60}
            self.path = str(tmp_path / f"trial_{directory or trial_id}")

    class Grid(list):
        errors = []

        @property
        def num_terminated(self):
            return len(self)

    # Trial "d" exploited "a" after "a" had finished: it holds a copy of a's
    # last result under its own, explored config, which is not a's lineage.
    copy = Result("a", 0.5, 4, directory="d")
    trials = [copy, Result("b", 0.5, 2), Result("c", 0.25, 3), Result("a", 0.5, 1)]
    for order in (trials, trials[::-1]):
        schedule, summary = pbt._best_schedule(Grid(order), tmp_path, 3)
        assert summary["best_trial"] == "a"
        assert schedule.policy_at(0).flat() == [1] * 60
