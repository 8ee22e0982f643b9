import json
import os

import keras
import numpy as np
import pytest
from conftest import tiny_student
from conftest import tiny_teacher
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

import kd_keras
from kd_keras import recipes
from kd_keras.recipes import build


def test_kd_recipe_has_the_papers_settings():
    config = recipes.get("kd")
    assert config["student_loss_weight"] == 0.1
    assert config["distillation_loss_weights"] == [1.0]
    assert config["distillation_losses"] == [{"class_name": "TemperatureKL", "temperature": 4.0}]
    assert config["optimizer"] == {
        "class_name": "CoupledSGD",
        "learning_rate": 0.05,
        "momentum": 0.9,
        "nesterov": False,
        "coupled_weight_decay": 5e-4,
    }
    assert (config["epochs"], config["batch_size"]) == (240, 64)


def test_every_config_is_plain_json_and_round_trips():
    for name in recipes.names():
        config = recipes.get(name)
        assert json.loads(recipes.to_json(config)) == config, name
        assert config["name"] == name


def test_small_students_take_the_official_lower_rate():
    assert recipes.get("kd", student="mobilenetv2")["optimizer"]["learning_rate"] == 0.01
    assert recipes.get("kd", student="shufflev2")["optimizer"]["learning_rate"] == 0.01
    assert recipes.get("kd", student="resnet20")["optimizer"]["learning_rate"] == 0.05
    # An explicit rate wins.
    chosen = recipes.get("kd", {"optimizer.learning_rate": 0.2}, student="mobilenetv2")
    assert chosen["optimizer"]["learning_rate"] == 0.2


def test_learning_rate_drops_at_150_180_210_of_240_as_pytorch():
    schedule = build.learning_rate_schedule(0.05, recipes.get("kd")["schedule"], 240 * 10)
    # PyTorch's MultiStepLR: epoch 150 (0-based), i.e. step 1500, is the first at x0.1.
    rates = {step: float(schedule(step)) for step in (0, 1499, 1500, 1799, 1800, 2099, 2100)}
    np.testing.assert_allclose(
        list(rates.values()), [0.05, 0.05, 0.005, 0.005, 5e-4, 5e-4, 5e-5], rtol=1e-5
    )


def test_step_phases_decay_over_the_students_own_steps():
    learned = recipes.get("hard", {"sampler": "network"})
    optimizer = build.optimizer(learned, steps_per_epoch=10, epochs=240)
    schedule = keras.optimizers.serialize(optimizer)["config"]["learning_rate"]["config"]
    # 4 student steps in 5: the student takes 1920 of the 2400 steps.
    assert schedule["boundaries"] == [1199, 1439, 1679]


def test_recipe_builds_and_compiles_a_distiller():
    config = recipes.get("kd", {"temperature": 2.0, "student_loss_weight": 0.5})
    distiller = build.distiller(config, tiny_teacher(), tiny_student())
    build.compile(distiller, config, steps_per_epoch=5, epochs=2)
    assert isinstance(distiller, kd_keras.Distiller)
    assert distiller.student_loss_weight == 0.5
    assert distiller.distillation_losses[0].temperature == 2.0
    assert isinstance(distiller.optimizer, kd_keras.optimizers.CoupledSGD)
    assert distiller.optimizer.coupled_weight_decay == 5e-4
    assert distiller.optimizer.built


@keras.saving.register_keras_serializable(package="my_project")
class HalfMixUp(kd_keras.augment.MixUp):
    """A user's own augmenter: MixUp with a flag of its own."""

    def __init__(self, half=True, **kwargs):
        super().__init__(**kwargs)
        self.half = half


def test_a_config_names_a_users_registered_augmenter_as_keras_does():
    config = recipes.get("mixup")
    config["augmenter"] = {
        **config["augmenter"],
        "class_name": "my_project>HalfMixUp",
        "half": False,
    }
    distiller = build.distiller(config, tiny_teacher(), tiny_student())
    assert type(distiller.augmenter) is HalfMixUp and distiller.augmenter.half is False
    assert distiller.augmenter.per == config["augmenter"]["per"]
    config["augmenter"]["class_name"] = "my_project>Missing"
    with pytest.raises(
        ValueError,
        match="Unknown augmenter 'my_project>Missing'.*MixUp.*register_keras_serializable",
    ):
        build.distiller(config, tiny_teacher(), tiny_student())


def test_tst_takes_the_pairs_official_settings():
    pair = recipes.get("tst", teacher="vgg13", student="vgg8")
    assert pair["phases"]["starts"] == [32, 62, 92, 122, 152, 182, 212]
    assert pair["phases"]["length"] == 5 and pair["phases"]["inserted"]
    assert pair["optimizer"]["nesterov"] and pair["optimizer"]["coupled_weight_decay"] == 1e-4
    assert recipes.get("tst", teacher="resnet110", student="resnet32")[
        "distillation_loss_weights"
    ] == [0.5]
    assert recipes.get("tst", teacher="resnet32x4", student="shufflev1")["batch_size"] == 64
    unknown = recipes.get("tst", teacher="cnn", student="mlp")
    default = recipes.get("tst", teacher="wrn_40_2", student="wrn_16_2")
    # Unlisted pairs: the official default pair with our student rate.
    assert default["optimizer"]["learning_rate"] == 0.1
    assert unknown["optimizer"]["learning_rate"] == 0.01
    unknown["optimizer"]["learning_rate"] = 0.1
    assert unknown == default
    assert unknown["student_forward"] == "joint" and unknown["student_loss_weight"] == 0.5


def test_inserted_phases_come_on_top_of_the_student_epochs():
    phases = recipes.blocks.epoch_phases([30, 90], 30, 240)
    # A 240-epoch run: 30 augmenter epochs before student epoch 30, 30 more
    # before student epoch 90 (fit epoch 90 + 30).
    assert build.augmenter_windows(phases, 240) == {30: 30, 120: 30}
    assert build.fit_epochs({"phases": phases}, 240) == 300
    # Scaled to a 30-epoch run: 4 epochs before student epochs 4 and 11.
    assert build.augmenter_windows(phases, 30) == {4: 4, 15: 4}
    replacing = dict(phases, inserted=False)
    assert build.augmenter_windows(replacing, 240) == {30: 30, 90: 30}
    assert build.fit_epochs({"phases": replacing}, 240) == 240


def test_relabel_false_weighs_mixed_labels_by_one_minus_a_over_a():
    config = recipes.get("cutmix", {"relabel": False, "student_loss_weight": 0.2})
    assert build.augmenter(config).mixed_label_weight == pytest.approx(4.0)
    with pytest.raises(ValueError, match="relabel=False weighs the mixed labels"):
        build.augmenter(recipes.get("mixup", {"relabel": False, "student_loss_weight": 0.0}))


def test_the_vae_is_loaded_by_build_only():
    config = recipes.get("hard_vae")
    assert config["augmenter"]["vae"] == "shipped:digits_vae"
    augmenter = build.augmenter(config)
    assert isinstance(augmenter.vae, kd_keras.models.VAE)


def test_dotted_overrides_change_the_config_and_nothing_else():
    base = recipes.get("cutmix")
    changed = recipes.get(
        "cutmix",
        {
            "augmenter.alpha": 0.4,
            "optimizer.momentum": 0.5,
            "distillation_losses.0.temperature": 2.0,
            "epochs": 30,
        },
    )
    assert changed["augmenter"]["alpha"] == 0.4 and changed["optimizer"]["momentum"] == 0.5
    assert changed["distillation_losses"][0]["temperature"] == 2.0 and changed["epochs"] == 30
    for key in ("augmenter", "optimizer", "distillation_losses", "epochs"):
        changed[key] = base[key]
    assert changed == base
    # A config given as a dict is copied, not modified.
    assert recipes.get(base, {"epochs": 3})["epochs"] == 3 and base["epochs"] == 240


def test_recipe_lookup_errors():
    assert "kd" in recipes.names()
    with pytest.raises(ValueError, match="Unknown recipe 'hinton'.*kd"):
        recipes.get("hinton")
    with pytest.raises(ValueError, match="no option or setting 'lr'.*options are temperature"):
        recipes.get("kd", {"lr": 0.1})
    with pytest.raises(ValueError, match="no option or setting 'optimizer.lr'.*optimizer holds"):
        recipes.get("kd", {"optimizer.lr": 0.1})


def test_override_values_of_the_wrong_kind_are_refused_early():
    with pytest.raises(ValueError, match="option temperature takes a finite number > 0.*got 'hot'"):
        recipes.get("kd", {"temperature": "hot"})
    with pytest.raises(ValueError, match="option temperature takes a finite number > 0.*got 0"):
        recipes.get("kd", {"temperature": 0})
    with pytest.raises(ValueError, match="setting epochs takes a whole number >= 1.*got 2.5"):
        recipes.get("kd", {"epochs": 2.5})
    with pytest.raises(ValueError, match="setting batch_size takes a whole number >= 1"):
        recipes.get("kd", {"batch_size": 0})
    with pytest.raises(ValueError, match="learning_rate takes a finite number >= 0.0.*nan"):
        recipes.get("kd", {"optimizer.learning_rate": float("nan")})
    with pytest.raises(ValueError, match="option image_conditioned takes True or False"):
        recipes.get("hard", {"image_conditioned": "yes"})
    assert recipes.get("kd", {"temperature": 2, "epochs": 3.0})["epochs"] == 3.0
    assert recipes.get("kd", {"jit_compile": True})["jit_compile"] is True


VALUES = (
    st.none()
    | st.booleans()
    | st.integers(-(10**30), 10**30)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=8)
    | st.lists(st.integers(-3, 300), max_size=3)
)


@settings(max_examples=80, deadline=None)
@given(data=st.data())
def test_recipe_overrides_fuzz_give_a_config_or_a_clean_error(data):
    name = data.draw(st.sampled_from(recipes.names()) | st.text(max_size=6))
    options = recipes.options(name) if name in recipes.names() else ["temperature"]
    paths = ["epochs", "optimizer.learning_rate", "augmenter.alpha", "distillation_losses.0"]
    keys = st.sampled_from(options + paths) | st.text(min_size=1, max_size=6)
    overrides = data.draw(st.dictionaries(keys, VALUES, max_size=3))
    try:
        config = recipes.get(name, overrides)
    except (ValueError, TypeError) as error:
        assert len(str(error).splitlines()) == 1, str(error)
        return
    assert config["name"] == name


JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 20) | st.floats() | st.text(max_size=6),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=8,
)


@settings(max_examples=80, deadline=None)
@given(data=st.data())
def test_schedule_file_fuzz_gives_a_pipeline_or_a_one_line_error(data):
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
            augment = build.host_augment(recipes.get("rolewise", {"policy": path}))
        except ValueError as error:
            assert len(str(error).splitlines()) == 1, str(error)
            return
    assert isinstance(augment, pba.PBAAugment)


def test_a_teacher_file_with_a_card_takes_its_pairs_official_tst_settings(tmp_path):
    from kd_keras import jobs

    teacher = tmp_path / "teachers" / "vgg13.keras"
    teacher.parent.mkdir()
    teacher.write_bytes(b"")  # the card is all the lookup reads
    assert jobs.zoo_name(str(teacher)) == str(teacher)  # no card: unchanged
    (tmp_path / "teachers" / "vgg13.json").write_text(json.dumps({"model": "vgg13"}))
    assert jobs.zoo_name(str(teacher)) == "vgg13"
    assert jobs.zoo_name("resnet56") == "resnet56" and jobs.zoo_name(None) is None
    by_file = kd_keras.recipes.get("tst", teacher=jobs.zoo_name(str(teacher)), student="vgg8")
    by_name = kd_keras.recipes.get("tst", teacher="vgg13", student="vgg8")
    default = kd_keras.recipes.get("tst")
    assert by_file == by_name and by_file["phases"] != default["phases"]
