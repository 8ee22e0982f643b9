"""kd_keras.losses.HintDistillation: FitNets' hint MSE, its learned projection, training and saving."""

import keras
import numpy as np
import pytest
from conftest import tiny_batch

import kd_keras
from kd_keras.losses import HintDistillation


def conv_model(name, width, seed, spatial=8):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((8, 8, 1))
    x = inputs if spatial == 8 else keras.layers.MaxPooling2D(8 // spatial)(inputs)
    features = keras.layers.Conv2D(width, 3, padding="same", name=f"{name}_features")(x)
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.ReLU()(features))
    return keras.Model(inputs, keras.layers.Dense(4)(x), name=name)


def features(model, x):
    extractor = keras.Model(model.input, model.get_layer(f"{model.name}_features").output)
    return np.array(extractor(x, training=False), "float64")


def distiller(student_width=6, projection="auto", **kwargs):
    hint = HintDistillation("teacher_features", "student_features", projection=projection)
    return kd_keras.Distiller(
        conv_model("teacher", 4, seed=1),
        conv_model("student", student_width, seed=2),
        hint,
        **kwargs,
    ), hint


def test_value_without_projection_is_the_mean_squared_error_as_keras_computes_it():
    rng = np.random.default_rng(0)
    t = rng.normal(size=(3, 5, 5, 4)).astype("float32")
    s = rng.normal(size=(3, 5, 5, 4)).astype("float32")
    hint = HintDistillation("a", "b", projection=False)
    hint.build(t.shape, s.shape)
    by_hand = ((t.astype("float64") - s) ** 2).reshape(3, -1).mean(axis=1)
    np.testing.assert_allclose(np.array(hint(t, s)), by_hand, rtol=1e-6)
    np.testing.assert_allclose(float(hint.compute_loss(t, s)), by_hand.mean(), rtol=1e-6)
    keras_mse = keras.distillation.FeatureDistillation(loss="mse").compute_loss(t, s)
    np.testing.assert_allclose(float(hint.compute_loss(t, s)), float(keras_mse), rtol=1e-6)


def test_projection_is_a_learned_1x1_convolution_to_the_teachers_width():
    model, hint = distiller(student_width=6)
    hint.regressor.bias.assign(np.linspace(-1, 1, 4))  # not the initial zeros
    kernel, bias = (np.array(w, "float64") for w in hint.regressor.weights)
    assert kernel.shape == (6, 4) and bias.shape == (4,)
    x, _ = tiny_batch(count=4)
    t, s = features(model.teacher, x), features(model.student, x)
    projected = np.einsum("bhwc,cd->bhwd", s, kernel) + bias
    by_hand = ((t - projected) ** 2).mean()
    np.testing.assert_allclose(float(hint.compute_loss(t, s)), by_hand, rtol=1e-5)


@pytest.mark.parametrize(
    "student_width, projection, regressor",
    [(4, "auto", False), (6, "auto", True), (4, True, True), (4, False, False)],
)
def test_a_projection_is_added_when_the_widths_differ_or_when_asked(
    student_width, projection, regressor
):
    _, hint = distiller(student_width, projection)
    assert (hint.regressor is not None) == regressor


@pytest.mark.parametrize(
    "build, message",
    [
        (lambda: distiller(6, projection=False), "use projection='auto'"),
        (
            lambda: kd_keras.Distiller(
                conv_model("teacher", 4, 1),
                conv_model("student", 4, 2, spatial=4),
                HintDistillation("teacher_features", "student_features"),
            ),
            "same rank and spatial size",
        ),
        (
            lambda: kd_keras.Distiller(
                conv_model("teacher", 4, 1),
                conv_model("student", 4, 2),
                HintDistillation("teacher_features", "nowhere"),
            ),
            "In the student model",
        ),
        (
            lambda: HintDistillation("teacher_features", "student_features", projection=1),
            "projection must be one of",
        ),
    ],
)
def test_layers_that_cannot_be_matched_are_refused_with_the_fix(build, message):
    with pytest.raises(ValueError, match=message):
        build()


def test_the_student_optimiser_trains_the_projection_by_its_gradient():
    # Only the hint (a = 0): one SGD step moves the projection by
    # -lr * dL/dW, L = mean((t - s W - b)^2), computed here by hand.
    model, hint = distiller(student_width=6, student_loss_weight=0.0)
    model.compile(optimizer=keras.optimizers.SGD(0.5))
    x, y = tiny_batch(count=8)
    t, s = features(model.teacher, x), features(model.student, x)
    kernel, bias = (np.array(w, "float64") for w in hint.regressor.weights)
    residual = t - (np.einsum("bhwc,cd->bhwd", s, kernel) + bias)
    count = residual.size
    kernel_gradient = -2.0 / count * np.einsum("bhwc,bhwd->cd", s, residual)
    bias_gradient = -2.0 / count * residual.sum(axis=(0, 1, 2))
    assert any(v is hint.regressor.kernel for v in model.student_variables)
    student_before = [np.array(w) for w in model.student.weights]
    logs = model.train_on_batch(x, y, return_dict=True)
    np.testing.assert_allclose(logs["hint"], (residual**2).mean(), rtol=1e-5)
    np.testing.assert_allclose(
        np.array(hint.regressor.kernel), kernel - 0.5 * kernel_gradient, rtol=1e-4, atol=1e-6
    )
    np.testing.assert_allclose(
        np.array(hint.regressor.bias), bias - 0.5 * bias_gradient, rtol=1e-4, atol=1e-6
    )
    # The student's guided layer learns from the hint too; the exported
    # student holds no projection.
    assert any(
        not np.allclose(a, np.array(b)) for a, b in zip(student_before, model.student.weights)
    )
    assert not any("regressor" in w.path for w in model.student.weights)


def test_the_projection_round_trips_in_the_distillers_keras_file(tmp_path):
    model, hint = distiller(
        student_width=6, distillation_loss_weights=[2.0], student_loss_weight=0.2
    )
    model.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9))
    x, y = tiny_batch(count=16)
    initial = np.array(hint.regressor.kernel)
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    assert not np.allclose(initial, np.array(hint.regressor.kernel))
    model.save(tmp_path / "distiller.keras")
    restored = keras.saving.load_model(tmp_path / "distiller.keras")
    (loaded,) = restored.distillation_losses
    assert isinstance(loaded, HintDistillation)
    assert loaded.get_config() == hint.get_config()
    for a, b in zip(loaded.regressor.weights, hint.regressor.weights):
        np.testing.assert_array_equal(np.array(a), np.array(b))
    # The optimiser's slots of the projection come back with it.
    assert len(restored.optimizer.variables) == len(model.optimizer.variables)
    for a, b in zip(restored.optimizer.variables, model.optimizer.variables):
        np.testing.assert_array_equal(np.array(a), np.array(b))
    before = model.evaluate(x, y, return_dict=True, verbose=0)
    after = restored.evaluate(x, y, return_dict=True, verbose=0)
    np.testing.assert_allclose(after["hint"], before["hint"], rtol=1e-6)
