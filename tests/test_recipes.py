import keras
import numpy as np
import pytest
from conftest import tiny_student
from conftest import tiny_teacher

import kd_keras
from kd_keras import recipes


def test_kd_recipe_has_the_papers_settings():
    recipe = recipes.get("kd")
    assert recipe.student_loss_weight == 0.1
    assert recipe.distillation_loss_weights == [0.9]
    assert recipe.distillation_losses[0].temperature == 4.0
    assert (recipe.learning_rate, recipe.momentum, recipe.weight_decay) == (0.05, 0.9, 5e-4)
    assert (recipe.epochs, recipe.batch_size) == (240, 64)


def test_learning_rate_decays_at_150_180_210_of_240():
    schedule = recipes.get("kd").learning_rate_schedule(steps_per_epoch=10, epochs=240)
    rates = {step: float(schedule(step)) for step in (0, 1499, 1501, 1799, 1801, 2099, 2101)}
    np.testing.assert_allclose(
        list(rates.values()), [0.05, 0.05, 0.005, 0.005, 5e-4, 5e-4, 5e-5], rtol=1e-5
    )
    # A shorter run decays at the same fractions.
    short = recipes.get("kd").learning_rate_schedule(steps_per_epoch=10, epochs=24)
    assert float(short(149)) == pytest.approx(0.05) and float(short(151)) == pytest.approx(0.005)


def test_recipe_builds_and_compiles_a_distiller():
    recipe = recipes.get("kd", temperature=2.0, student_loss_weight=0.5)
    distiller = recipe.build(tiny_teacher(), tiny_student())
    recipe.compile(distiller, steps_per_epoch=5, epochs=2)
    assert isinstance(distiller, kd_keras.Distiller)
    assert distiller.student_loss_weight == 0.5
    assert isinstance(distiller.optimizer, keras.optimizers.SGD)
    assert distiller.optimizer.built


def test_recipe_lookup_errors():
    assert "kd" in recipes.names()
    with pytest.raises(ValueError, match="Unknown recipe 'hinton'.*kd"):
        recipes.get("hinton")
    with pytest.raises(ValueError, match="no option lr.*learning_rate"):
        recipes.get("kd", lr=0.1)
    recipe = recipes.get("kd")
    assert recipes.get(recipe) is recipe
    with pytest.raises(ValueError, match="Overrides apply to recipe names"):
        recipes.get(recipe, temperature=3.0)
