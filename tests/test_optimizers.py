"""CoupledSGD follows torch.optim.SGD's update rule step by step."""

import keras
import numpy as np
import pytest

import kd_keras


def torch_sgd(w, gradients, rates, momentum, weight_decay, nesterov):
    """torch.optim.SGD (dampening 0), written out in NumPy."""
    w, buffer, trajectory = w.copy(), None, []
    for gradient, rate in zip(gradients, rates):
        d = gradient(w) + weight_decay * w
        buffer = d if buffer is None else momentum * buffer + d
        w = w - rate * (d + momentum * buffer if nesterov else buffer)
        trajectory.append(w.copy())
    return trajectory


@pytest.mark.parametrize("nesterov", [False, True])
def test_updates_match_pytorch_with_a_step_decay(nesterov):
    target = np.array([1.0, -2.0, 0.5], "float32")
    start = np.array([0.3, 0.7, -1.1], "float32")
    # The rate drops x0.1 after 3 steps (Keras' schedule keeps the first
    # value while iterations <= 2), as the CRD schedule does.
    schedule = keras.optimizers.schedules.PiecewiseConstantDecay([2], [0.1, 0.01])
    rates = [0.1] * 3 + [0.01] * 5
    expected = torch_sgd(start, [lambda w: 2 * (w - target)] * 8, rates, 0.9, 5e-2, nesterov)

    variable = keras.Variable(start)
    optimizer = kd_keras.optimizers.CoupledSGD(
        schedule, momentum=0.9, nesterov=nesterov, coupled_weight_decay=5e-2
    )
    for step in range(8):
        gradient = 2 * (np.array(variable) - target)
        optimizer.apply([gradient], [variable])
        np.testing.assert_allclose(np.array(variable), expected[step], rtol=1e-5, atol=1e-6)

    # Keras' decoupled weight_decay is another rule altogether.
    keras_variable = keras.Variable(start)
    keras_sgd = keras.optimizers.SGD(schedule, momentum=0.9, nesterov=nesterov, weight_decay=5e-2)
    for _ in range(8):
        keras_sgd.apply([2 * (np.array(keras_variable) - target)], [keras_variable])
    assert np.abs(np.array(keras_variable) - expected[-1]).max() > 1e-3


def test_decay_shrinks_weights_with_zero_gradient_as_pytorch():
    # Steady state of pure decay through momentum: |w| shrinks ~10x faster
    # than Keras' decoupled decay at momentum 0.9.
    start = np.ones(4, "float32")
    variable = keras.Variable(start)
    optimizer = kd_keras.optimizers.CoupledSGD(0.05, momentum=0.9, coupled_weight_decay=5e-4)
    for _ in range(80):
        optimizer.apply([np.zeros(4, "float32")], [variable])
    expected = torch_sgd(start, [lambda w: 0 * w] * 80, [0.05] * 80, 0.9, 5e-4, False)[-1]
    np.testing.assert_allclose(np.array(variable), expected, rtol=1e-5)
    keras_variable = keras.Variable(start)
    decoupled = keras.optimizers.SGD(0.05, momentum=0.9, weight_decay=5e-4)
    for _ in range(80):
        decoupled.apply([np.zeros(4, "float32")], [keras_variable])
    coupled_shrink = 1 - float(np.array(variable)[0])
    decoupled_shrink = 1 - float(np.array(keras_variable)[0])
    assert coupled_shrink > 5 * decoupled_shrink


def test_config_round_trip_and_bad_arguments():
    optimizer = kd_keras.optimizers.CoupledSGD(
        0.1, momentum=0.9, nesterov=True, coupled_weight_decay=1e-4
    )
    restored = keras.optimizers.deserialize(keras.optimizers.serialize(optimizer))
    assert isinstance(restored, kd_keras.optimizers.CoupledSGD)
    assert (restored.coupled_weight_decay, restored.nesterov, restored.momentum) == (
        1e-4,
        True,
        0.9,
    )
    with pytest.raises(ValueError, match="not Keras' decoupled weight_decay"):
        kd_keras.optimizers.CoupledSGD(0.1, weight_decay=5e-4)
    with pytest.raises(ValueError, match="coupled_weight_decay must be >= 0"):
        kd_keras.optimizers.CoupledSGD(0.1, coupled_weight_decay=-1.0)
