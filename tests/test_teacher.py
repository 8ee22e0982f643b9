import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import tiny_batch
from conftest import tiny_teacher

import kd_keras


def test_train_teacher_decays_over_the_whole_run():
    x, y = tiny_batch(count=32)
    teacher = kd_keras.train_teacher(tiny_teacher(), (x, y), epochs=2, batch_size=8, verbose=0)
    assert int(teacher.optimizer.iterations) == 8
    # Cosine decay spans exactly the run's 8 steps: it ends at zero.
    assert float(teacher.optimizer.learning_rate) == 0.0
    schedule = keras.optimizers.schedules.CosineDecay(1e-3, 8)
    np.testing.assert_allclose(float(schedule(4)), 5e-4, rtol=1e-6)


def test_unknown_length_data_keeps_a_constant_rate():
    x, y = tiny_batch(count=32)
    # A filter hides the length: the cosine schedule has nothing to span.
    data = tf.data.Dataset.from_tensor_slices((x, y)).filter(lambda a, b: True)
    assert int(data.cardinality()) < 0
    teacher = kd_keras.train_teacher(tiny_teacher(), data, epochs=2, batch_size=8, verbose=0)
    assert int(teacher.optimizer.iterations) >= 8
    np.testing.assert_allclose(float(teacher.optimizer.learning_rate), 1e-3, rtol=1e-6)


def test_crd_schedule_is_sgd_with_the_step_decay_of_the_crd_teachers():
    x, y = tiny_batch(count=32)
    teacher = kd_keras.train_teacher(
        tiny_teacher(), (x, y), epochs=2, batch_size=8, verbose=0, schedule="crd"
    )
    optimizer = teacher.optimizer
    # PyTorch's SGD with coupled weight decay, as CRD's train_teacher.py.
    assert isinstance(optimizer, kd_keras.optimizers.CoupledSGD)
    assert optimizer.momentum == 0.9
    np.testing.assert_allclose(optimizer.coupled_weight_decay, 5e-4)
    # 8 steps: x0.1 from 150/240, 180/240 and 210/240 of them on (steps 5, 6, 7).
    rates = [float(optimizer._learning_rate(step)) for step in range(9)]
    np.testing.assert_allclose(rates, [0.05] * 5 + [0.005, 5e-4, 5e-5, 5e-5], rtol=1e-6)


def test_crd_schedule_needs_a_known_length_and_unknown_schedules_fail():
    x, y = tiny_batch(count=32)
    data = tf.data.Dataset.from_tensor_slices((x, y)).filter(lambda a, b: True)
    with pytest.raises(ValueError, match="no known length"):
        kd_keras.train_teacher(tiny_teacher(), data, epochs=1, schedule="crd", verbose=0)
    with pytest.raises(ValueError, match="Unknown schedule 'sgd'"):
        kd_keras.train_teacher(tiny_teacher(), (x, y), schedule="sgd", verbose=0)


@pytest.mark.large
def test_a_short_run_of_the_digits_cnn_evaluates_as_it_trains(digits):
    # 66 steps: with Keras' default BatchNorm momentum (0.99) the moving
    # statistics were still mostly their initial values and the network
    # scored 13.6% in inference mode (chance) while training at 97%.
    keras.utils.set_random_seed(0)  # the weights too, not only the run
    teacher = kd_keras.models.get("cnn", digits.input_shape, digits.num_classes)
    norms = [
        layer for layer in teacher.layers if isinstance(layer, keras.layers.BatchNormalization)
    ]
    assert len(norms) == 6 and all((n.momentum, n.epsilon) == (0.9, 1e-5) for n in norms)
    kd_keras.train_teacher(teacher, digits.train, epochs=3, seed=0, verbose=0)
    x, y = digits.test
    inference = np.mean(teacher.predict(x, verbose=0).argmax(1) == y)
    training_mode = np.mean(np.asarray(teacher(x, training=True)).argmax(1) == y)
    # Converged statistics: inference mode scores about what training mode
    # does (with momentum 0.99 the gap was 0.85: chance vs 97%).
    assert training_mode > 0.9 and inference > training_mode - 0.2, (inference, training_mode)
