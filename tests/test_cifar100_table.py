import pathlib
import sys

import pytest

import kd_keras

# The paper's table lives with the benchmark that fills it.
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "benchmarks"))
import cifar100_table as cifar100  # noqa: E402


def test_the_seven_pairs_carry_the_papers_table():
    assert len(cifar100.PAIRS) == 7
    pair = cifar100.get_pair("resnet56->resnet20")
    assert pair is cifar100.get_pair("ResNet56 -> ResNet20")
    # METHODS.md section 2, Table 3 of the paper, row ResNet56 -> ResNet20.
    assert [pair.paper[c] for c in cifar100.PAPER_COLUMNS] == [
        70.66,
        71.79,
        70.77,
        70.99,
        71.66,
        71.63,
    ]
    assert pair.teacher_accuracy == 72.34  # CRD's resnet56
    for pair in cifar100.PAIRS:
        assert set(pair.paper) == set(cifar100.PAPER_COLUMNS)
    with pytest.raises(ValueError, match="Unknown pair 'a->b'"):
        cifar100.get_pair("a->b")


def test_every_run_is_a_recipe_with_valid_options():
    for run in cifar100.RUNS.values():
        config = kd_keras.recipes.get(run.recipe, run.options)
        assert run.paper_column is None or run.paper_column in cifar100.PAPER_COLUMNS
        if run.name.endswith("_960"):
            assert config["epochs"] == 960


def test_table_puts_ours_beside_the_papers():
    label = "ResNet56 -> ResNet20"
    text = cifar100.table(
        {(label, "kd"): 70.5, (label, "mixup"): 71.25},
        teacher_results={label: 72.0},
        runs=("kd", "mixup", "cutmix"),
        pairs=[cifar100.get_pair(label), cifar100.get_pair("vgg13->vgg8")],
    )
    lines = text.splitlines()
    assert lines[0] == "| T -> S | teacher (CRD) | kd | mixup | cutmix |"
    assert lines[2] == (
        "| ResNet56 -> ResNet20 | 72.00 (72.34) | 70.50 (70.66) | 71.25 (n/a) | - (70.77) |"
    )
    assert lines[3] == "| VGG13 -> VGG8 | - (74.64) | - (72.98) | - (n/a) | - (74.16) |"
    with pytest.raises(ValueError, match="Unknown run mixup_960"):
        cifar100.table({}, runs=("mixup_960",))
