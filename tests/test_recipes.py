import json
import os

import keras
import numpy as np
import pytest
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st
from conftest import tiny_student
from conftest import tiny_teacher

import kd_keras
from kd_keras import recipes


def test_kd_recipe_has_the_papers_settings():
    recipe = recipes.get("kd")
    assert recipe.student_loss_weight == 0.1
    assert recipe.distillation_loss_weights == [1.0]
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


def test_override_values_of_the_wrong_kind_are_refused_early():
    with pytest.raises(ValueError, match="option temperature takes a finite number > 0.*got 'hot'"):
        recipes.get("kd", temperature="hot")
    with pytest.raises(ValueError, match="option temperature takes a finite number > 0.*got 0"):
        recipes.get("kd", temperature=0)
    with pytest.raises(ValueError, match="option epochs takes a whole number >= 1.*got 2.5"):
        recipes.get("kd", epochs=2.5)
    with pytest.raises(ValueError, match="option batch_size takes a whole number >= 1"):
        recipes.get("kd", batch_size=0)
    with pytest.raises(ValueError, match="option learning_rate takes a finite number >= 0.0.*nan"):
        recipes.get("kd", learning_rate=float("nan"))
    with pytest.raises(ValueError, match="option image_conditioned takes True or False"):
        recipes.get("hard", image_conditioned="yes")
    assert recipes.get("kd", temperature=2, epochs=3.0).epochs == 3.0
    assert recipes.get("kd", jit_compile=True).jit_compile is True


VALUES = (
    st.none() | st.booleans() | st.integers(-10**30, 10**30)
    | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=8)
    | st.lists(st.integers(-3, 300), max_size=3)
)


@settings(max_examples=80, deadline=None)
@given(data=st.data())
def test_recipe_overrides_fuzz_give_a_recipe_or_a_clean_error(data):
    name = data.draw(st.sampled_from(recipes.names()) | st.text(max_size=6))
    options = recipes.options(name) if name in recipes.names() else ["temperature"]
    keys = st.sampled_from(options) | st.text(min_size=1, max_size=6)
    overrides = data.draw(st.dictionaries(keys, VALUES, max_size=3))
    try:
        recipe = recipes.get(name, **overrides)
    except (ValueError, TypeError) as error:
        assert len(str(error).splitlines()) == 1, str(error)
        return
    assert isinstance(recipe, recipes.Recipe) and recipe.name == name


JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 20) | st.floats() | st.text(max_size=6),
    lambda children: st.lists(children, max_size=3)
    | st.dictionaries(st.text(max_size=8), children, max_size=3),
    max_leaves=8,
)


@settings(max_examples=80, deadline=None)
@given(data=st.data())
def test_schedule_file_fuzz_gives_a_recipe_or_a_one_line_error(data):
    import tempfile

    from kd_keras.augment import pba

    document = pba.Schedule.constant(pba.Policy.random(0)).to_json()
    mode = data.draw(st.sampled_from(["replace", "delete", "document", "text"]))
    if mode in ("replace", "delete"):
        entry = document["schedule"][0]
        holder = data.draw(st.sampled_from([document, entry, entry["policy"][0]]))
        key = data.draw(st.sampled_from(sorted(holder)))
        if mode == "delete":
            del holder[key]
        else:
            holder[key] = data.draw(JSON)
        text = json.dumps(document)
    elif mode == "document":
        text = json.dumps(data.draw(JSON))
    else:
        text = data.draw(st.text(max_size=40))
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "schedule.json")
        with open(path, "w", encoding="utf-8", errors="surrogatepass") as handle:
            handle.write(text)
        try:
            recipe = recipes.get("rolewise", policy=path)
        except ValueError as error:
            assert len(str(error).splitlines()) == 1, str(error)
            return
    assert isinstance(recipe, recipes.Recipe)
