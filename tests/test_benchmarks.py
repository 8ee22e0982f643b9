"""Every benchmark and example runs, in its smallest configuration, as the README runs it.

Each script is a subprocess (`python benchmarks/NAME.py ...` with the
kd_keras under test on PYTHONPATH) and each check reads what it prints: the
table's header, a row per method, numbers that are numbers. The runs are
smoke configurations (1 epoch, 1 seed, a round or two of timing): they show
that a script works, not what it measures.
"""

import json
import math
import os
import pathlib
import re
import subprocess
import sys

import pytest

import kd_keras
from kd_keras.augment import pba

# Subprocesses that train: the large tier (`pytest -m large`).
pytestmark = pytest.mark.large

# The scripts live in the checkout; the package they import is the one under test.
CHECKOUT = pathlib.Path(__file__).resolve().parents[1]
ENV = {
    **{k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
    "PYTHONPATH": str(pathlib.Path(kd_keras.__file__).resolve().parent.parent),
    "TF_CPP_MIN_LOG_LEVEL": "2",
}
# "12.34 ± 0.56", an accuracy cell; "1.23x", a ratio to a baseline.
MEAN_STD = re.compile(r"(-?\d+\.\d+) ± (\d+\.\d+)")
RATIO = re.compile(r"(\d+\.\d+)x")
NOT_A_NUMBER = re.compile(r"\b(nan|inf)\b", re.IGNORECASE)


def run(script, *args, cwd):
    result = subprocess.run(
        [sys.executable, str(CHECKOUT / script), *args],
        cwd=cwd,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, f"{script} {' '.join(args)}:\n{result.stderr[-3000:]}"
    assert not NOT_A_NUMBER.search(result.stdout), result.stdout
    return result.stdout


def rows_after(stdout, header):
    """The lines of the table whose header line starts with `header`, up to a blank line."""
    lines = stdout.splitlines()
    starts = [i for i, line in enumerate(lines) if line.startswith(header)]
    assert starts, f"no table headed {header!r} in:\n{stdout}"
    rows = []
    for line in lines[starts[-1] + 1 :]:
        if not line.strip():
            break
        if not set(line) <= set("-|"):  # a separator line
            rows.append(line)
    return rows


def row(rows, label):
    """The row whose first cell is `label` (plain or markdown tables)."""
    found = [
        r
        for r in rows
        if r.startswith(f"| {label} |") or (r.startswith(label) and r[len(label) :][:2] == "  ")
    ]
    assert len(found) == 1, f"{label!r} in {rows}"
    return found[0]


def accuracies(line, count):
    """The `count` mean ± std cells of a row, checked to be percentages."""
    cells = [(float(m), float(s)) for m, s in MEAN_STD.findall(line)]
    assert len(cells) == count, line
    for mean, std in cells:
        assert 0 <= mean <= 100 and 0 <= std <= 100, line
    return cells


def ratios(line):
    """The `1.23x` cells of a row, checked to be positive."""
    values = [float(v) for v in RATIO.findall(line)]
    assert values and all(0 < v < math.inf for v in values), line
    return values


def test_mixing(tmp_path):
    stdout = run("benchmarks/mixing.py", "--quick", "--settings=full", cwd=tmp_path)
    rows = rows_after(stdout, "method ")
    labels = [
        "student from scratch (CE)",
        "KD",
        "KD + TL-MixUp",
        "KD + TL-CutMix",
        "KD + CutMixPick",
        "funmatch",
        "KD + CutMix, mixed 1-hot",
    ]
    assert len(rows) == len(labels)
    for label in labels:
        line = row(rows, label)
        accuracies(line, 1)  # the full training split
        ratios(line)
    assert ratios(row(rows, "KD")) == [1.0]


def test_mixing_student_forward(tmp_path):
    stdout = run(
        "benchmarks/mixing.py",
        "--quick",
        "--settings=full",
        "--student=small_cnn",
        "--student_forward=per_view,joint",
        "--forward_recipes=cutmix",
        cwd=tmp_path,
    )
    rows = rows_after(stdout, "method ")
    labels = ["KD", "KD + TL-CutMix, per_view", "KD + TL-CutMix, joint"]
    assert len(rows) == len(labels)
    for label in labels:
        accuracies(row(rows, label), 1)
        ratios(row(rows, label))
    (line,) = [line for line in stdout.splitlines() if line.startswith("  cutmix: ")]
    assert len(ratios(line)) == 1 and re.search(r"full [+-]\d+\.\d+ \(std ", line), line


def test_tst(tmp_path):
    # Two epochs: the second is preceded by a policy epoch (TST's phases at
    # the same fractions of the run), so the policy trains.
    labels = [
        "KD",
        "TST",
        "TST (KD's SGD)",
        "TST (KD's SGD; no Invert)",
        "KD + TL-MixUp",
        "KD + TL-CutMix",
        "KD + CutMixPick",
        "HARD",
    ]
    stdout = run(
        "benchmarks/tst.py",
        "--epochs=2",
        "--seeds=1",
        "--timing_rounds=1",
        "--timing_steps=1",
        "--settings=full",
        f"--methods={','.join(labels)}",  # every label passes through the list flag
        cwd=tmp_path,
    )
    rows = rows_after(stdout, "method ")
    assert len(rows) == len(labels)
    for label in labels:
        line = row(rows, label)
        accuracies(line, 2)  # clean and shifted
        ratios(line)
    for label in labels[1:4]:
        assert "policy step" in row(rows, label)
    tables = {}
    for section in stdout.split("\n\n"):
        title, _, table = section.strip().partition(": policy at the end of training")
        if table:
            tables[title] = rows_after(table.split("\n", 1)[1], "op ")
    assert list(tables) == labels[1:4]
    # AutoAugment's ops and Cutout; without Invert no Invert row.
    assert len(tables["TST"]) == 14
    assert [line.split()[0] for line in tables["TST (KD's SGD; no Invert)"]] == [
        line.split()[0] for line in tables["TST"] if not line.startswith("Invert ")
    ]
    values = []
    for line in tables["TST"]:
        values += [float(v) for v in line.split()[1:] if v != "-"]
    assert all(0 <= v <= 1 for v in values), tables["TST"]
    assert any(v != 0.5 for v in values), tables["TST"]  # moved from the prior


def test_tst_refuses_an_unknown_method_label(tmp_path):
    result = subprocess.run(
        [sys.executable, str(CHECKOUT / "benchmarks/tst.py"), "--methods=KD,TTS"],
        cwd=tmp_path,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode != 0
    assert "--methods: unknown TTS; choose among KD, TST," in result.stderr


def test_tst_mnist1d(tmp_path):
    # --quick: 2 epochs on the 20% split, 1 seed; TST's second epoch is
    # preceded by a policy epoch, so its policy trains.
    stdout = run(
        "benchmarks/tst_mnist1d.py",
        "--quick",
        f"--json={tmp_path / 'r.json'}",
        f"--plot={tmp_path / 'r.png'}",
        cwd=tmp_path,
    )
    assert "teacher 90.0%" in stdout
    rows = rows_after(stdout, "row ")
    labels = ["KD", "KD + shifts", "KD + TST ops at the prior", "KD + TST ops at random", "TST"]
    assert len(rows) == len(labels)
    for label in labels:
        for mean, _ in accuracies(row(rows, label), 2):  # accuracy, teacher agreement
            assert mean > 10  # above chance after two epochs
    policy = rows_after(stdout, "op ")
    assert [line.split()[0] for line in policy] == [
        "ShearY",
        "TranslateX",
        "TranslateY",
        "Rotate",
        "Brightness",
        "Contrast",
        "Posterize",
        "Solarize",
        "Invert",
        "Cutout",
    ]
    values = []
    for line in policy:
        values += [float(v) for v in line.split()[1:] if v != "-"]
    assert len(values) == 19 and all(0 <= v <= 1 for v in values), policy  # Invert: no m
    assert any(abs(v - 0.5) > 1e-3 for v in values), policy  # moved from the prior
    results = json.loads((tmp_path / "r.json").read_text())
    assert results["epochs"] == 2 and set(results["results"]["20%"]) == set(labels)
    for runs in results["results"]["20%"].values():
        assert len(runs) == 1 and len(runs[0]["accuracy"]) == 2  # one score per student epoch
    assert len(results["results"]["20%"]["TST"][0]["policy"]) == 2
    assert (tmp_path / "r.png").stat().st_size > 0


def test_rolewise_with_a_given_schedule(tmp_path):
    # A search takes minutes (Ray, a population); --schedule skips it.
    import numpy as np

    policy = pba.Policy.random(np.random.default_rng(0))
    schedule = pba.Schedule([(0, policy)], epochs=1).save(tmp_path / "schedule.json")
    stdout = run(
        "benchmarks/rolewise.py",
        f"--schedule={schedule}",
        "--epochs=1",
        "--seeds=1",
        cwd=tmp_path,
    )
    rows = rows_after(stdout, "student agent ")
    assert len(rows) == 3
    for label in ("KD, no augmentation", "KD + hand-set policy", "KD + searched agent"):
        accuracies(row(rows, label), 2)
    assert "Searched schedule (1 epochs, stretched to 1):" in stdout
    assert "from epoch 0: " in stdout


def test_rolewise_on_mnist1d_with_a_given_schedule(tmp_path):
    # MNIST-1D's standardised signals through value_range, one test column,
    # the one-row hand-set policy, the schedule plot and the JSON.
    import numpy as np

    policy = pba.Policy.random(np.random.default_rng(0))
    schedule = pba.Schedule([(0, policy), (1, pba.Policy.zeros())], epochs=2)
    schedule.save(tmp_path / "schedule.json")
    figure, record = tmp_path / "schedule.png", tmp_path / "rolewise.json"
    stdout = run(
        "benchmarks/rolewise.py",
        "--dataset=mnist1d",
        f"--schedule={tmp_path / 'schedule.json'}",
        "--epochs=1",
        "--seeds=1",
        f"--plot={figure}",
        f"--json={record}",
        cwd=tmp_path,
    )
    assert "student mnist1d_mlp at full precision" in stdout
    rows = rows_after(stdout, "student agent ")
    assert len(rows) == 3
    labels = ("KD, no augmentation", "KD + hand-set policy", "KD + searched agent")
    scores = {label: accuracies(row(rows, label), 1)[0][0] for label in labels}
    assert "Searched schedule (2 epochs, stretched to 1):" in stdout
    assert "from epoch 1: no augmentation" in stdout
    assert "from epoch 0: Contrast p0.3 m4, TranslateX p0.6 m5, Cutout p0.3 m4" in stdout
    assert figure.stat().st_size > 0
    saved = json.loads(record.read_text())
    assert saved["dataset"] == "mnist1d" and saved["search"] is None
    for label in labels:
        (accuracy,) = saved["results"][label]["acc (%)"]["per_seed"]
        assert 0.0 <= accuracy <= 1.0
        assert abs(100 * accuracy - scores[label]) < 0.01
    # One row rerun into the same JSON: the other rows and the schedule are kept.
    saved["results"]["KD + hand-set policy"]["acc (%)"]["per_seed"] = [0.5]
    record.write_text(json.dumps(saved))
    stdout = run(
        "benchmarks/rolewise.py",
        "--dataset=mnist1d",
        "--rows=none",
        "--epochs=1",
        "--seeds=1",
        f"--json={record}",
        cwd=tmp_path,
    )
    rows = rows_after(stdout, "student agent ")
    assert accuracies(row(rows, "KD + hand-set policy"), 1) == [(50.0, 0.0)]
    assert len(rows) == 3
    merged = json.loads(record.read_text())
    assert sorted(merged["results"]) == sorted(labels) and merged["schedule"] == saved["schedule"]


@pytest.mark.parametrize(
    "dataset, keys",
    [
        # The CE, told (host shifts) and search rows through kd_keras.distill.
        ("digits", ["ce", "kd", "told", "hard"]),
        # The rows built and compiled by hand, one with a learned augmenter.
        ("mnist1d", ["kd", "told", "network_noise"]),
    ],
)
def test_hard_toy(tmp_path, dataset, keys):
    figure, scores = tmp_path / "curves.png", tmp_path / "scores.json"
    stdout = run(
        "benchmarks/hard_toy.py",
        f"--dataset={dataset}",
        "--quick",
        f"--rows={','.join(keys)}",
        f"--plot={figure}",
        f"--json={scores}",
        cwd=tmp_path,
    )
    rows = rows_after(stdout, "| key |")
    assert len(rows) == len(keys) + 1  # and the teacher's
    columns = 2 if dataset == "digits" else 1  # clean and shifted, or test
    for key in keys:
        line = row(rows, key)
        accuracies(line, columns)
        ratios(line)
    assert ratios(row(rows, "kd")) == [1.0]
    augmenter_steps = int(row(rows, keys[-1]).rstrip(" |").rsplit("+", 1)[1])
    assert (augmenter_steps > 0) == (keys[-1] == "network_noise")
    assert figure.stat().st_size > 0
    assert sorted(json.loads(scores.read_text())["results"]) == sorted(keys)


def test_scale(tmp_path):
    stdout = run("benchmarks/scale.py", "--recipes=kd", "--rounds=2", "--steps=1", cwd=tmp_path)
    rows = rows_after(stdout, "| recipe | step |")
    assert len(rows) == 2  # the floor and kd's student step
    cells = row(rows, "kd").strip("| ").split(" | ")
    assert cells[:2] == ["kd", "student"] and float(cells[2]) > 0
    assert len(cells) == 7, cells
    teachers = rows_after(stdout, "| teacher |")
    for dtype in ("float32", "bfloat16", "float16"):
        agreement = float(row(teachers, dtype).strip("| ").split(" | ")[-1])
        assert 0.9 <= agreement <= 1
    pipeline = rows_after(stdout, "| what |")
    assert len(pipeline) == 3


def test_backward(tmp_path):
    stdout = run("benchmarks/backward.py", "--quick", cwd=tmp_path)
    # Two tables with the same header: images, then text.
    text_start = stdout.index("Text: text-default")
    images = rows_after(stdout[:text_start], "method ")
    text = rows_after(stdout[text_start:], "method ")
    # --quick keeps the image rows of kd, backward and mixup.
    labels = ["CE only", "KD", "backward l2", "backward linf"]
    assert len(images) == len(labels) + 1
    for label in [*labels, "KD + TL-MixUp"]:
        accuracies(row(images, label), 3)  # accuracy, agreement, shifted
    assert len(text) == len(labels)
    for label in labels:
        accuracies(row(text, label), 2)  # accuracy, agreement
    assert "backward l2" in stdout[stdout.index("Teacher-student agreement on text") :]


def test_backward_mnist1d(tmp_path):
    figure, scores = tmp_path / "curves.png", tmp_path / "scores.json"
    stdout = run(
        "benchmarks/backward_mnist1d.py",
        "--quick",
        f"--plot={figure}",
        f"--json={scores}",
        cwd=tmp_path,
    )
    rows = rows_after(stdout, "row ")
    labels = ["CE only", "KD", "backward", "noise"]
    assert len(rows) == len(labels)
    for label in labels:
        accuracies(row(rows, label), 2)  # --quick: the 20% split's accuracy, agreement
    saved = json.loads(scores.read_text())
    assert list(saved["results"]) == ["20%"]
    assert sorted(saved["results"]["20%"]) == sorted(labels)
    assert saved["settings"]["train_sizes"] == {"20%": 800}
    # The backward samples stay in the eps-ball, and the ascent goes most of the way out.
    epsilon = saved["settings"]["epsilon"]
    moved = saved["results"]["20%"]["backward"][0]["displacement"]["l2"]
    assert 0.5 * epsilon < moved <= epsilon * (1 + 1e-4), moved
    assert figure.stat().st_size > 0


def test_kd_thrives_runs_rows_apart_and_merges_them(tmp_path):
    first, second = tmp_path / "first.json", tmp_path / "second.json"
    for path, rows, first_seed in ((first, "CE", 0), (second, "KD,CE", 1)):
        stdout = run(
            "benchmarks/kd_thrives.py",
            "--seeds=1",
            f"--first_seed={first_seed}",
            "--lengths=1,2",
            f"--rows={rows}",
            f"--json={path}",
            "--plot=",
            cwd=tmp_path,
        )
        assert f"seeds [{first_seed}]" in stdout
    figure, merged = tmp_path / "curves.png", tmp_path / "merged.json"
    stdout = run(
        "benchmarks/kd_thrives.py",
        f"--merge={first},{second}",
        f"--json={merged}",
        f"--plot={figure}",
        cwd=tmp_path,
    )
    rows = rows_after(stdout, "row ")
    assert [line.split("  ")[0] for line in rows] == ["CE", "KD"]
    saved = json.loads(merged.read_text())
    assert saved["lengths"] == [1, 2]
    assert [run["seed"] for run in saved["results"]["CE"]] == [0, 1]
    ce = [run["scores"][str(length)] for run in saved["results"]["CE"] for length in (1, 2)]
    ce_mean = 100 * (ce[1] + ce[3]) / 2  # the 2-epoch column over seeds 0 and 1
    assert accuracies(row(rows, "CE"), 2)[1][0] == pytest.approx(ce_mean, abs=0.051)
    assert figure.stat().st_size > 0


def test_step_time(tmp_path):
    stdout = run("benchmarks/step_time.py", "--rounds=2", "--steps=1", "--jit=off", cwd=tmp_path)
    rows = rows_after(stdout, "| XLA | step |")
    names = [
        "student train step",
        "teacher forward",
        "kd_keras.Distiller",
        "keras.distillation",
        "floor (student step + teacher forward)",
    ]
    assert len(rows) == len(names)
    for name in names:
        cells = [r for r in rows if r.startswith(f"| off | {name} |")]
        assert len(cells) == 1 and float(cells[0].split(" | ")[2]) > 0, rows
    assert "XLA off: kd_keras.Distiller / keras.distillation = " in stdout


def test_determinism(tmp_path):
    stdout = run(
        "benchmarks/determinism.py",
        "--students=mlp",
        "--rounds=2",
        "--steps=1",
        cwd=tmp_path,
    )
    rows = rows_after(stdout, "| student | augmenter |")
    assert len(rows) == 2
    for augmenter in ("none", "spatial"):
        cells = [r for r in rows if r.startswith(f"| mlp | {augmenter} |")]
        assert len(cells) == 1
        off, on = (float(v) for v in cells[0].split(" | ")[2:4])
        assert off > 0 and on > 0


def test_teacher_cache(tmp_path):
    stdout = run("benchmarks/teacher_cache.py", "--quick", "--rounds=1", "--epochs=1", cwd=tmp_path)
    rows = rows_after(stdout, "run ")
    assert len(rows) == 4
    for name in ("floor", "kd live", "kd cached", "keras.distillation"):
        line = [r for r in rows if r.startswith(name + " ")]
        assert len(line) == 1
        epoch_seconds, milliseconds, to_floor = (float(v) for v in line[0].split()[-5:-2])
        assert epoch_seconds > 0 and milliseconds > 0 and to_floor > 0


def test_run_overhead(tmp_path):
    stdout = run("benchmarks/run_overhead.py", "--rounds=1", "--epochs=2", cwd=tmp_path)
    assert "default run: 44 steps" in stdout
    seconds = {
        line.rsplit(maxsplit=1)[0]: float(line.split()[-1])
        for line in stdout.splitlines()
        if line[:1].isalpha() and line.split()[-1][:1].isdigit()
    }
    parts = sum(seconds[f"{name} s"] for name in ("first", "steps", "validation", "rest"))
    assert abs(parts - seconds["fit s"]) < 0.02 and seconds["fit s"] < seconds["job s"]
    assert seconds["fit / (steps x step)"] > 0 and seconds["steady step ms"] > 0


def test_cifar100_smoke(tmp_path):
    # CIFAR-100 is not offline: --smoke stands in TFDS's mock data, 1 epoch.
    stdout = run("benchmarks/cifar100.py", "--smoke", "--runs=kd", cwd=tmp_path)
    assert "SMOKE RUN" in stdout
    rows = rows_after(stdout, "| T -> S |")
    assert len(rows) == 1
    assert re.fullmatch(
        r"\| ResNet56 -> ResNet20 \| \d+\.\d\d \(72\.34\) \| \d+\.\d\d \(70\.66\) \|", rows[0]
    ), rows
    assert not (tmp_path / "runs").exists()  # the mock runs stay in a temporary directory


def test_pba_pipeline(tmp_path):
    stdout = run("benchmarks/pba_pipeline.py", "--repeats=1", "--cifar_images=64", cwd=tmp_path)
    rows = rows_after(stdout, "data ")
    # 2 data sets, each without a map and with the old, graph and in-process
    # maps of every policy: images/s after the first batch and CPU ms per batch.
    for data in ("digits", "32x32x3"):
        names = " ".join(line for line in rows if data in line)
        assert all(name in names for name in ("no map", "old", "graph", "in_process")), names
    for line in rows:
        # images/s, first batch "N ms", images/s after it (0: one batch only), CPU ms.
        rate, first, _, after, cpu = line.split()[-5:]
        assert float(rate.replace(",", "")) > 0 and float(first) >= 0, line
        assert float(after.replace(",", "")) >= 0 and float(cpu) >= 0, line


def test_quickstart_example(tmp_path):
    stdout = run("examples/quickstart.py", "--smoke", cwd=tmp_path)
    exported = [line.split()[0] for line in stdout.splitlines() if " agreement " in line]
    assert exported == list(kd_keras.export.FORMATS)
    assert (tmp_path / "quickstart_export").is_dir()


def test_shift_equivariance_example(tmp_path):
    stdout = run("examples/shift_equivariance.py", "--smoke", cwd=tmp_path)
    for name in ("teacher (CNN)", "HARD student (MLP)"):
        line = [r for r in stdout.splitlines() if r.startswith(name)]
        assert len(line) == 1 and re.search(r"clean \d+\.\d\d%  shifted \d+\.\d\d%", line[0])
    groups = re.search(r"learned probability of each kind of warp: (.*)", stdout).group(1)
    probabilities = [float(part.split()[-1]) for part in groups.split(", ")]
    assert len(probabilities) == 4 and abs(sum(probabilities) - 1) < 0.02
