"""DoReFa quantisers, the quantised layers, `quantize` and a 2-bit student trained and exported."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import weights_of

import kd_keras
from kd_keras.quantization import QuantActivation
from kd_keras.quantization import QuantConv2D
from kd_keras.quantization import QuantDense
from kd_keras.quantization import QuantDepthwiseConv2D
from kd_keras.quantization import quantize_activations
from kd_keras.quantization import quantize_weights


def numpy_weights(w, bits):
    # DoReFa-Net's fw for bits >= 2, in float64; also the values it rounds.
    w = np.asarray(w, dtype="float64")
    levels = 2**bits - 1
    scaled = (np.tanh(w) / (2 * np.max(np.abs(np.tanh(w)))) + 0.5) * levels
    return 2 * np.round(scaled) / levels - 1, scaled


@pytest.mark.parametrize("bits", [1, 2, 4])
def test_activation_quantiser_matches_numpy_with_2_to_the_k_levels(bits):
    x = np.linspace(-0.5, 1.5, 4001, dtype="float32")
    levels = np.float32(2**bits - 1)
    expected = np.round(np.clip(x, 0, 1) * levels) / levels  # float32, as TF computes
    quantized = np.asarray(quantize_activations(x, bits))
    np.testing.assert_array_equal(quantized, expected)
    assert len(np.unique(quantized)) == 2**bits
    assert quantized.min() == 0.0 and quantized.max() == 1.0


@pytest.mark.parametrize("bits", [2, 4])
def test_weight_quantiser_matches_numpy_with_2_to_the_k_levels_in_range(bits):
    w = np.linspace(-3.0, 2.0, 4001, dtype="float32")
    quantized = np.asarray(quantize_weights(w, bits))
    expected, scaled = numpy_weights(w, bits)
    # float32 vs float64 tanh may round the other way within an ulp of a tie.
    clear = np.abs(scaled - np.floor(scaled) - 0.5) > 1e-4
    assert clear.mean() > 0.99
    np.testing.assert_allclose(quantized[clear], expected[clear], atol=1e-6)
    assert len(np.unique(quantized.round(6))) == 2**bits
    assert quantized.min() == pytest.approx(-1.0) and quantized.max() == pytest.approx(1.0)


def test_one_bit_weights_are_sign_times_mean_magnitude():
    w = np.linspace(-3.0, 2.0, 4001, dtype="float32")  # holds an exact 0, taken as +
    quantized = np.asarray(quantize_weights(w, 1))
    expected = np.where(w >= 0, 1.0, -1.0) * np.mean(np.abs(w.astype("float64")))
    np.testing.assert_allclose(quantized, expected, rtol=1e-6)
    assert len(np.unique(quantized)) == 2


def test_gradients_pass_straight_through():
    x = tf.constant(np.linspace(-0.5, 1.5, 400, dtype="float32") + 1e-3)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = tf.reduce_sum(quantize_activations(x, 2))
    inside = (x.numpy() > 0) & (x.numpy() < 1)
    np.testing.assert_array_equal(tape.gradient(y, x).numpy(), inside.astype("float32"))

    w = tf.constant(np.random.default_rng(0).normal(size=(5, 7)).astype("float32"))
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(w)
        rounded = tf.reduce_sum(quantize_weights(w, 2))
        # DoReFa's fw before rounding; rounding must not change its gradient.
        squashed = tf.tanh(w)
        unrounded = tf.reduce_sum(squashed / tf.reduce_max(tf.abs(squashed)))
        binary = tf.reduce_sum(quantize_weights(w, 1))
    np.testing.assert_allclose(
        tape.gradient(rounded, w).numpy(), tape.gradient(unrounded, w).numpy(), rtol=1e-5
    )
    np.testing.assert_array_equal(tape.gradient(binary, w).numpy(), np.ones((5, 7)))


def test_32_bits_is_the_identity():
    x = np.random.default_rng(0).normal(size=(64,)).astype("float32") * 3
    np.testing.assert_array_equal(np.asarray(quantize_activations(x, 32)), x)
    np.testing.assert_array_equal(np.asarray(quantize_weights(x, 32)), x)


def small_cnn_teacher():
    keras.utils.set_random_seed(0)
    return kd_keras.models.cnn((8, 8, 1), 4, width=4)


def test_quantize_keeps_first_and_last_float_and_quantizes_the_middle():
    model = small_cnn_teacher()
    quantized = kd_keras.quantize(model, 2)
    weight_layers = [
        layer
        for layer in quantized.layers
        if isinstance(layer, (keras.layers.Dense, keras.layers.Conv2D))
    ]
    assert type(weight_layers[0]) is keras.layers.Conv2D
    assert type(weight_layers[-1]) is keras.layers.Dense
    assert [type(layer) for layer in weight_layers[1:-1]] == [QuantConv2D] * 5
    assert all(layer.bits == 2 for layer in weight_layers[1:-1])
    # Every ReLU feeding a low-bit conv is quantised; the last feeds the float head.
    relus = [layer.name for layer in model.layers if isinstance(layer, keras.layers.ReLU)]
    quantizers = [layer for layer in quantized.layers if isinstance(layer, QuantActivation)]
    assert [layer.name for layer in quantizers] == [f"{name}_quant" for name in relus[:-1]]
    assert all(layer.bits == 2 for layer in quantizers)

    everything = kd_keras.quantize(model, 4, activation_bits=3, keep_first_and_last=False)
    kinds = [type(layer) for layer in everything.layers]
    assert kinds.count(QuantConv2D) == 6 and kinds.count(QuantDense) == 1
    activation_bits = [
        layer.bits for layer in everything.layers if isinstance(layer, QuantActivation)
    ]
    assert activation_bits == [3] * 6


def test_quantize_copies_weights_into_new_variables():
    model = small_cnn_teacher()
    x = np.random.default_rng(0).random((4, 8, 8, 1), dtype=np.float32)
    model(x, training=True)  # moves the BatchNorm statistics off their initial values
    quantized = kd_keras.quantize(model, 2)
    for layer in model.layers:
        copy = quantized.get_layer(layer.name)
        for original, copied in zip(layer.weights, copy.weights):
            np.testing.assert_array_equal(np.asarray(original), np.asarray(copied))
            assert original is not copied
    # At 32 bits the copy computes exactly what the original does.
    full = kd_keras.quantize(model, 32)
    np.testing.assert_array_equal(np.asarray(full(x)), np.asarray(model(x)))
    assert not np.allclose(np.asarray(quantized(x)), np.asarray(model(x)))


def test_quantized_mlp_computes_dorefa_by_hand():
    keras.utils.set_random_seed(0)
    model = kd_keras.models.mlp((4, 4, 1), 3, width=8)
    quantized = kd_keras.quantize(model, 2)
    x = np.random.default_rng(1).random((5, 4, 4, 1), dtype=np.float32)
    (w0, b0), (w1, b1), (w2, b2) = [
        layer.get_weights() for layer in model.layers if isinstance(layer, keras.layers.Dense)
    ]
    hidden = np.maximum(x.reshape(5, -1) @ w0 + b0, 0)
    hidden = np.round(np.clip(hidden, 0, 1) * 3) / 3
    hidden = np.maximum(hidden @ np.asarray(quantize_weights(w1, 2)) + b1, 0)
    np.testing.assert_allclose(np.asarray(quantized(x)), hidden @ w2 + b2, atol=1e-5)


def test_zoo_get_with_bits_returns_a_quantized_model():
    student = kd_keras.models.get("mlp", (8, 8, 1), 4, bits=2, width=8)
    assert [type(layer) for layer in student.layers].count(QuantDense) == 1
    plain = kd_keras.models.get("mlp", (8, 8, 1), 4, width=8)
    assert not any(isinstance(layer, QuantDense) for layer in plain.layers)


def test_sequential_models_are_quantized_too():
    model = keras.Sequential(
        [
            keras.Input((6,)),
            keras.layers.Dense(5, activation="relu"),
            keras.layers.Dense(5, activation="relu"),
            keras.layers.Dense(2),
        ]
    )
    quantized = kd_keras.quantize(model, 2)
    assert [type(layer).__name__ for layer in quantized.layers[1:]] == [
        "Dense",
        "QuantActivation",
        "QuantDense",
        "Dense",
    ]


@pytest.mark.parametrize("bits", [0, 2.5, True, "2"])
def test_bad_bits_are_refused_with_the_fix(bits):
    with pytest.raises(ValueError, match=r"bits must be a whole number .* pass e.g. bits=2"):
        kd_keras.quantize(small_cnn_teacher(), bits)


def test_models_quantize_cannot_handle_are_refused_with_the_fix():
    two_layers = kd_keras.models.mlp((4, 4, 1), 3, width=8, depth=1)
    with pytest.raises(ValueError, match="keep_first_and_last=False"):
        kd_keras.quantize(two_layers, 2)
    with pytest.raises(ValueError, match="activation_bits must be"):
        kd_keras.quantize(small_cnn_teacher(), 2, activation_bits=0)

    class Subclassed(keras.Model):
        def call(self, x):
            return x

    with pytest.raises(ValueError, match="functional API"):
        kd_keras.quantize(Subclassed(), 2)


def test_layers_round_trip_through_keras_files(tmp_path):
    inputs = keras.Input((6, 6, 2))
    x = QuantConv2D(4, 3, bits=1, padding="same", activation="relu")(inputs)
    x = QuantActivation(bits=2)(x)
    x = QuantDepthwiseConv2D(3, bits=4, padding="same")(x)
    x = keras.layers.Flatten()(x)
    outputs = QuantDense(3, bits=3)(x)
    model = keras.Model(inputs, outputs)
    model.save(tmp_path / "model.keras")
    loaded = keras.saving.load_model(tmp_path / "model.keras", safe_mode=True)
    assert [getattr(layer, "bits", None) for layer in loaded.layers] == [None, 1, 2, 4, None, 3]
    x = np.random.default_rng(0).normal(size=(2, 6, 6, 2)).astype("float32")
    np.testing.assert_array_equal(np.asarray(loaded(x)), np.asarray(model(x)))


@pytest.fixture(scope="module")
def two_bit_student(digits, shipped_teacher):
    keras.utils.set_random_seed(0)
    student = kd_keras.models.get("mlp", bits=2, width=32)
    before = weights_of(student)
    x, y = digits.train
    distiller = kd_keras.distill(
        shipped_teacher, student, (x[:256], y[:256]), epochs=3, batch_size=64, verbose=0
    )
    return before, distiller


def test_two_bit_student_trains_under_kd(two_bit_student):
    before, distiller = two_bit_student
    losses = distiller.history.history["loss"]
    assert losses[-1] < losses[0]
    student = distiller.student
    low_bit = next(layer for layer in student.layers if isinstance(layer, QuantDense))
    index = [weight.path for weight in student.weights].index(low_bit.kernel.path)
    assert not np.array_equal(before[index], np.asarray(low_bit.kernel))


def test_two_bit_student_exports_with_parity(two_bit_student, digits, tmp_path):
    _, distiller = two_bit_student
    report = kd_keras.export.export_student(
        distiller.student,
        tmp_path,
        formats=("keras", "saved_model", "tflite", "tflite_int8"),
        check_data=digits.test[0][:256],
        representative_data=digits.train[0][:100],
    )
    assert report["tflite_int8"]["agreement"] >= 0.95
    reloaded = keras.saving.load_model(tmp_path / "student.keras", safe_mode=True)
    assert any(isinstance(layer, QuantDense) and layer.bits == 2 for layer in reloaded.layers)
