"""Every private Keras / TensorFlow attribute kd_keras relies on, in one place.

A Keras or TensorFlow upgrade that renames one of these breaks here (and in
`tests/test_keras_compat.py`, one test per use), not across the package.
The Distiller also overrides two private `keras.Model` hooks, listed in
`OVERRIDDEN_HOOKS`; the tests check that Keras still calls them.
"""

# keras.Model methods the Distiller overrides: `_maybe_symbolic_build` (a
# distributed fit builds without data) and `_get_metrics_result_or_logs`
# (epoch logs from the metrics, whichever phase the last step trained).
OVERRIDDEN_HOOKS = ("_maybe_symbolic_build", "_get_metrics_result_or_logs")


def flatten_layers(model, include_self=True):
    """Every layer of `model`, nested ones included (Keras' `_flatten_layers`)."""
    return model._flatten_layers(include_self=include_self)


def distributed(model):
    """True when `model` was created under a `tf.distribute` strategy."""
    return model._distribute_strategy is not None


def symbolic_build(model):
    """Build `model`'s metrics and compile state without a data batch."""
    model._symbolic_build(data_batch=None)


def set_initial_epoch(model, epoch):
    """Make the next `fit` start at `epoch`, as `BackupAndRestore` does."""
    model._initial_epoch = epoch


def in_multi_worker_mode(strategy):
    """True when a strategy spans several workers (TensorFlow's `_in_multi_worker_mode`)."""
    return bool(strategy.extended._in_multi_worker_mode())


def variable_index(optimizer, variable):
    """The index of `variable`'s slots in a Keras optimizer (`_get_variable_index`)."""
    return optimizer._get_variable_index(variable)
