"""Extra distillation losses on top of a recipe's: kd_keras.distill(extra_losses=...), the config keys, --hint."""

import json
import os
import pathlib
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import tiny_batch

import kd_keras
from kd_keras import cli
from kd_keras import jobs
from kd_keras import resolve
from kd_keras.losses import HintDistillation


def conv_model(name, width, seed):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((8, 8, 1))
    features = keras.layers.Conv2D(width, 3, padding="same", name=f"{name}_features")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.ReLU()(features))
    return keras.Model(inputs, keras.layers.Dense(4)(x), name=name)


def log_softmax(z):
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


def test_distill_adds_the_extra_losses_with_their_weights_in_keras_convention():
    teacher, student = conv_model("teacher", 4, 1), conv_model("student", 6, 2)
    hint = HintDistillation("teacher_features", "student_features")
    x, y = tiny_batch(count=16)
    # One batch of every sample, so the logged loss is the first step's, by hand:
    # 0.1 CE + 0.9 [KD_4 + 3 hint] with the recipe's KD weight 1.
    distiller = kd_keras.distill(
        teacher,
        student,
        (x, y),
        recipe="kd",
        epochs=1,
        batch_size=16,
        verbose=0,
        extra_losses=[hint],
        extra_loss_weights=[3.0],
        callbacks=[_FirstStep(teacher, student, hint, x, y)],
    )
    assert distiller.distillation_losses[1] is hint  # the caller's object, trained
    assert isinstance(distiller.distillation_losses[0], kd_keras.losses.TemperatureKL)
    assert distiller.distillation_loss_weights == [1.0, 3.0]
    t = np.array(teacher(x, training=False), "float64")
    s, expected_hint = _FirstStep.seen
    kd = 16.0 * np.mean(
        np.sum(np.exp(log_softmax(t / 4)) * (log_softmax(t / 4) - log_softmax(s / 4)), -1)
    )
    ce = -np.mean(log_softmax(s)[np.arange(16), y])
    history = distiller.history.history
    np.testing.assert_allclose(history["hint"][0], expected_hint, rtol=1e-5)
    np.testing.assert_allclose(history["kd"][0], kd, rtol=1e-4)
    np.testing.assert_allclose(
        history["loss"][0], 0.1 * ce + 0.9 * (kd + 3.0 * expected_hint), rtol=1e-4
    )


class _FirstStep(keras.callbacks.Callback):
    """Reads the student's logits and the hint before the first step changes them."""

    seen = None

    def __init__(self, teacher, student, hint, x, y):
        super().__init__()
        self.arguments = (teacher, student, hint, x)

    def on_train_begin(self, logs=None):
        teacher, _, hint, x = self.arguments
        student = self.model.student
        t = keras.Model(teacher.input, teacher.get_layer("teacher_features").output)(x)
        s = keras.Model(student.input, student.get_layer("student_features").output)(x)
        _FirstStep.seen = (
            np.array(student(x, training=False), "float64"),
            float(hint.compute_loss(t, s)),
        )


def test_extra_losses_are_a_recipe_config_key_also_in_stacked_recipes():
    spec = {
        "class_name": "HintDistillation",
        "teacher_layer_name": "teacher_features",
        "student_layer_name": "student_features",
    }
    for recipe in ("cutmix_pick", "tst+cutmix_pick"):
        config = kd_keras.recipes.get(recipe, {"extra_losses": [spec], "extra_loss_weights": [2.0]})
        distiller = kd_keras.recipes.build.distiller(
            config, conv_model("teacher", 4, 1), conv_model("student", 4, 2)
        )
        assert [type(loss) for loss in distiller.distillation_losses] == [
            kd_keras.losses.TemperatureKL,
            HintDistillation,
        ]
        assert distiller.distillation_loss_weights[1:] == [2.0]
        assert distiller.distillation_losses[1].regressor is None  # same widths
    assert kd_keras.recipes.get("kd")["extra_losses"] == []


def test_distill_appends_to_the_configs_extra_losses():
    feature = keras.distillation.FeatureDistillation(
        loss="mse", teacher_layer_name="teacher_features", student_layer_name="student_features"
    )
    spec = {
        "class_name": "HintDistillation",
        "teacher_layer_name": "teacher_features",
        "student_layer_name": "student_features",
    }
    x, y = tiny_batch(count=8)
    config = kd_keras.recipes.get("mixup", {"extra_losses": [spec], "extra_loss_weights": [0.5]})
    distiller = kd_keras.distill(
        conv_model("teacher", 4, 1),
        conv_model("student", 4, 2),
        (x, y),
        recipe=config,
        epochs=1,
        batch_size=8,
        verbose=0,
        extra_losses=[feature],
    )
    assert [type(loss) for loss in distiller.distillation_losses] == [
        kd_keras.losses.TemperatureKL,
        HintDistillation,
        keras.distillation.FeatureDistillation,
    ]
    assert distiller.distillation_loss_weights == [1.0, 0.5, 1.0]
    assert np.isfinite(distiller.history.history["featuredistillation"]).all()


@pytest.mark.parametrize(
    "arguments, message",
    [
        (
            dict(extra_losses=[HintDistillation("a", "b")], extra_loss_weights=[1.0, 2.0]),
            "2 weights for 1 extra losses",
        ),
        (dict(extra_loss_weights=[1.0]), "without extra_losses"),
        (dict(extra_losses=["mse"]), "is not a distillation loss"),
        (dict(extra_losses=[{"class_name": "Hint"}]), "Unknown loss 'Hint'"),
        (
            dict(recipe=kd_keras.recipes.get("kd", {"extra_loss_weights": [1.0]})),
            "one weight per extra loss",
        ),
    ],
)
def test_bad_extra_losses_are_refused_before_training(arguments, message):
    x, y = tiny_batch(count=8)
    with pytest.raises(ValueError, match=message):
        kd_keras.distill(
            conv_model("teacher", 4, 1),
            conv_model("student", 4, 2),
            (x, y),
            epochs=1,
            batch_size=8,
            verbose=0,
            **arguments,
        )


def test_hint_flags_reach_the_job_as_extra_losses(monkeypatch, capsys):
    seen = {}

    def recording_job(**kwargs):
        seen.update(kwargs)
        raise resolve.RunError("stop here: nothing to fix.")

    monkeypatch.setattr(jobs, "distill_job", recording_job)
    with pytest.raises(SystemExit):
        cli.main(
            cli.parse(
                [
                    "kd-keras",
                    "distill",
                    "--recipe=cutmix_pick",
                    "--hint=conv2d_5:conv2d_3:10",
                    "--hint=global_average_pooling2d:dense_1",
                    "--set=extra_losses=[{'class_name': 'TemperatureKL', 'temperature': 2.0}]",
                ]
            )
        )
    assert seen["extra_losses"] == [
        {"class_name": "TemperatureKL", "temperature": 2.0},
        {
            "class_name": "HintDistillation",
            "teacher_layer_name": "conv2d_5",
            "student_layer_name": "conv2d_3",
        },
        {
            "class_name": "HintDistillation",
            "teacher_layer_name": "global_average_pooling2d",
            "student_layer_name": "dense_1",
        },
    ]
    assert seen["extra_loss_weights"] == [1.0, 10.0, 1.0]
    for bad in ("--hint=onlyone", "--hint=a:b:heavy", "--hint=a::1"):
        with pytest.raises(SystemExit) as exit_:
            cli.main(cli.parse(["kd-keras", "distill", bad]))
        assert exit_.value.code == 2
        assert "--hint expects TEACHER_LAYER:STUDENT_LAYER" in capsys.readouterr().err


@pytest.mark.large
def test_the_cli_distils_cutmix_pick_on_top_of_a_hint(tmp_path):
    # The shipped digits CNN's pooled features (64) guide the MLP student's
    # second hidden layer (128), through a learned projection.
    env = {**os.environ, "PYTHONPATH": str(pathlib.Path(kd_keras.__file__).resolve().parent.parent)}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "kd_keras.cli",
            "distill",
            "--recipe=cutmix_pick",
            "--epochs=1",
            "--hint=global_average_pooling2d:dense_1:5",
            "--out=run",
            "--export=keras",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["extra_losses"] == [
        {
            "class_name": "HintDistillation",
            "teacher_layer_name": "global_average_pooling2d",
            "student_layer_name": "dense_1",
        }
    ]
    assert config["extra_loss_weights"] == [5.0]
    hints = []
    for path in (tmp_path / "run" / "logs" / "train").rglob("events.out.tfevents.*"):
        for record in tf.data.TFRecordDataset(str(path)):
            event = tf.compat.v1.Event.FromString(record.numpy())
            hints += [
                float(tf.make_ndarray(value.tensor))
                for value in event.summary.value
                if value.tag.endswith("hint")
            ]
    assert hints and all(np.isfinite(hints)) and all(h > 0 for h in hints)
