"""Each private Keras / TensorFlow attribute kd_keras uses still means what it did."""

import keras
import numpy as np
import tensorflow as tf

from kd_keras import _keras_compat


def small_model():
    inputs = keras.Input((4,))
    inner = keras.Sequential([keras.layers.Dense(3, name="inner_dense")], name="inner")
    return keras.Model(inputs, keras.layers.Dense(2, name="head")(inner(inputs)))


def test_flatten_layers_reaches_nested_layers():
    model = small_model()
    names = [layer.name for layer in _keras_compat.flatten_layers(model, include_self=False)]
    assert "inner_dense" in names and "head" in names and model.name not in names
    assert _keras_compat.flatten_layers(model)[0] is model


def test_distributed_tells_models_made_under_a_strategy():
    assert not _keras_compat.distributed(small_model())
    with tf.distribute.MirroredStrategy(["/cpu:0"]).scope():
        assert _keras_compat.distributed(small_model())


def test_symbolic_build_builds_the_optimizer_without_data():
    # What the Distiller needs under a strategy: a built model whose only
    # missing state is its optimizer's, built without fetching a batch.
    model = small_model()
    model.compile(optimizer="sgd")
    assert not model.optimizer.built
    _keras_compat.symbolic_build(model)
    assert model.optimizer.built


def test_set_initial_epoch_makes_fit_start_there():
    model = small_model()
    model.compile(optimizer="sgd", loss="mse")
    seen = []
    record = keras.callbacks.LambdaCallback(on_epoch_begin=lambda epoch, logs: seen.append(epoch))
    _keras_compat.set_initial_epoch(model, 2)
    model.fit(np.zeros((4, 4)), np.zeros((4, 2)), epochs=4, verbose=0, callbacks=[record])
    assert seen == [2, 3]


def test_in_multi_worker_mode():
    assert not _keras_compat.in_multi_worker_mode(tf.distribute.MirroredStrategy(["/cpu:0"]))


def test_variable_index_finds_each_variables_slot():
    variables = [keras.Variable(np.zeros(2)), keras.Variable(np.zeros(3))]
    optimizer = keras.optimizers.SGD(0.1, momentum=0.9)
    optimizer.build(variables)
    for index, variable in enumerate(variables):
        assert _keras_compat.variable_index(optimizer, variable) == index
        assert optimizer.momentums[index].shape == variable.shape


def test_the_overridden_hooks_are_still_called_by_fit():
    calls = []

    class Recording(keras.Model):
        pass

    for hook in _keras_compat.OVERRIDDEN_HOOKS:
        assert callable(getattr(keras.Model, hook)), hook

        def recorder(self, *args, _hook=hook, **kwargs):
            calls.append(_hook)
            return getattr(keras.Model, _hook)(self, *args, **kwargs)

        setattr(Recording, hook, recorder)
    inputs = keras.Input((4,))
    model = Recording(inputs, keras.layers.Dense(2)(inputs))
    model.compile(optimizer="sgd", loss="mse")
    model.fit(np.zeros((4, 4)), np.zeros((4, 2)), epochs=1, verbose=0)
    assert set(calls) == set(_keras_compat.OVERRIDDEN_HOOKS)
