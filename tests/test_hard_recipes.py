"""The HARD recipes: the Distiller they build, both phases in a short run, views.png."""

import keras
import numpy as np
import pytest
from conftest import tiny_student
from conftest import tiny_teacher

import kd_keras
from kd_keras import recipes
from kd_keras.augment import GenerativeAugmenter
from kd_keras.augment import SpatialAugmenter
from kd_keras.callbacks import PhaseSchedule
from kd_keras.recipes import build

DIGITS_SHAPE = (28, 28, 1)


def _check_student_settings(distiller):
    assert distiller.student_loss_weight == 0.1
    assert distiller.distillation_loss_weights == [1.0]  # 0.9 [KD(x) + KD(x~)]
    assert distiller.distillation_losses[0].temperature == 4.0
    assert distiller.augmenter.label_views == 0.0  # cross-entropy on x only
    assert distiller.augmenter.lambda_t == 0.1
    assert distiller.augmenter.temperature == 1.0


def _check_shared_settings(config, distiller):
    _check_student_settings(distiller)
    assert distiller.learnable_augmenter
    (schedule,) = build.callbacks(config, 30)
    assert isinstance(schedule, PhaseSchedule)
    assert (schedule.student_steps, schedule.augmenter_steps) == (4, 1)
    build.compile(distiller, config, steps_per_epoch=10, epochs=240)
    assert isinstance(distiller.optimizer, kd_keras.optimizers.CoupledSGD)
    assert isinstance(distiller.augmenter_optimizer, keras.optimizers.Adam)
    assert float(distiller.augmenter_optimizer.learning_rate) == pytest.approx(1e-2)
    assert (config["epochs"], config["batch_size"]) == (240, 64)
    # 240 epochs of 10 steps give the student 4/5 of 2400 steps: its rate
    # decays at 150/180/210 of 240 of those 1920, i.e. steps 1200/1440/1680.
    schedule = keras.optimizers.serialize(distiller.optimizer)["config"]["learning_rate"]
    assert schedule["config"]["boundaries"] == [1199, 1439, 1679]


def test_hard_builds_a_distiller_with_the_worst_of_k_search():
    config = recipes.get("hard")
    distiller = build.distiller(config, tiny_teacher(), tiny_student())
    augmenter = distiller.augmenter
    assert isinstance(augmenter, SpatialAugmenter)
    assert (augmenter.sampler, augmenter.candidates, augmenter.score) == ("uniform", 4, "teacher")
    assert augmenter.groups_per_view == 1 and augmenter.adaptive_groups
    assert augmenter.interpolation == "nearest"
    assert augmenter.max_translation == 0.25 and augmenter.max_rotation == 30.0
    _check_student_settings(distiller)
    # The search has no weights: no augmenter phase, every step the student's.
    assert not distiller.learnable_augmenter
    assert build.callbacks(config, 30) == [] and config["augmenter_optimizer"] is None
    build.compile(distiller, config, steps_per_epoch=10, epochs=240)
    schedule = keras.optimizers.serialize(distiller.optimizer)["config"]["learning_rate"]
    assert schedule["config"]["boundaries"] == [1499, 1799, 2099]
    learned = recipes.get("hard", {"sampler": "network", "augmenter_steps": 0})
    with pytest.raises(ValueError, match="augmenter_steps must be an integer >= 1"):
        build.callbacks(learned, 30)


def test_spatial_augmenter_defaults_are_the_hard_recipes():
    import inspect

    recipe = inspect.signature(recipes.hard).parameters
    augmenter = inspect.signature(SpatialAugmenter.__init__).parameters
    renamed = {"augmenter_temperature": "temperature"}
    shared = 0
    for name, parameter in recipe.items():
        if name == "temperature":  # the recipe's is the student's KD temperature
            continue
        target = renamed.get(name, name)
        if target in augmenter:
            shared += 1
            assert augmenter[target].default == parameter.default, name
    assert shared >= 20


def test_hard_with_a_learned_sampler_alternates_phases():
    config = recipes.get("hard", {"sampler": "network", "candidates": 1})
    distiller = build.distiller(config, tiny_teacher(), tiny_student())
    assert not distiller.augmenter.image_conditioned
    _check_shared_settings(config, distiller)


def test_hard_vae_builds_a_distiller_with_the_shipped_vae():
    config = recipes.get("hard_vae")
    teacher = tiny_teacher(DIGITS_SHAPE, 10)
    distiller = build.distiller(config, teacher, tiny_student(DIGITS_SHAPE, 10))
    assert isinstance(distiller.augmenter, GenerativeAugmenter)
    assert tuple(distiller.augmenter.vae.input_shape) == DIGITS_SHAPE
    assert not distiller.augmenter.vae.trainable
    assert distiller.augmenter.max_delta == 1.0
    _check_shared_settings(config, distiller)


@pytest.mark.parametrize("recipe", ["hard", "hard_vae"])
def test_one_epoch_runs_both_phases(digits, recipe):
    x, y = digits.train
    # 80 samples in batches of 16: one full 4 + 1 cycle.
    distiller = kd_keras.distill(
        tiny_teacher(DIGITS_SHAPE, 10),
        tiny_student(DIGITS_SHAPE, 10),
        (x[:80], y[:80]),
        recipe=recipe,
        epochs=1,
        batch_size=16,
        verbose=0,
    )
    if recipe == "hard":  # the search: 5 student steps, no augmenter phase
        assert int(distiller.optimizer.iterations.numpy()) == 5
        assert distiller.augmenter_optimizer is None
        assert np.isfinite(distiller.history.history["loss"]).all()
        return
    assert int(distiller.optimizer.iterations.numpy()) == 4
    assert int(distiller.augmenter_optimizer.iterations.numpy()) == 1
    assert np.isfinite(distiller.history.history["augmenter_objective"]).all()


@pytest.mark.large
def test_distill_job_writes_the_views(tmp_path):
    metrics = kd_keras.jobs.distill_job(
        recipe="hard",
        epochs=1,
        out=tmp_path / "run",
        export_formats=("keras",),
        verbose=0,
    )
    assert metrics["recipe"] == "hard"
    student = keras.saving.load_model(tmp_path / "run" / "student.keras")
    shifted = kd_keras.data.load_digits().test_shifted
    assert metrics["student_accuracy_shifted"] == pytest.approx(
        kd_keras.resolve.evaluate(student, shifted), abs=1e-9
    )
    image = keras.utils.load_img(tmp_path / "run" / "views.png")
    # 8 originals over 8 views, each 28x28 digit drawn 112 px wide.
    assert image.size[0] > 8 * 112 and 2 * 112 < image.size[1] < 3 * 112
