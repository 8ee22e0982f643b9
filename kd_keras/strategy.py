"""tf.distribute strategies by name, and the rule for creating models under one."""

import json
import os

import keras
import tensorflow as tf

from kd_keras import _keras_compat

STRATEGIES = ("default", "mirrored", "multiworker")

# One strategy of each kind per process: two MirroredStrategy objects over
# the same devices reuse collective keys, and the second one's all-reduces
# then meet the first one's ("Shape mismatch in the collective instance").
_CREATED = {}


def get(name="default"):
    """Return a `tf.distribute.Strategy` by name (or the strategy given).

    `"default"` is the strategy in effect: TensorFlow's default (one
    device), or the one whose scope the call is in. `"mirrored"` is
    `tf.distribute.MirroredStrategy` over every local GPU, or over the
    logical CPU devices when there is no GPU (one replica unless
    `split_cpu` made several). `"multiworker"` is
    `tf.distribute.MultiWorkerMirroredStrategy`, which reads the cluster and
    this process's task from the `TF_CONFIG` environment variable; every
    worker runs the same program. A `TPUStrategy` (or any other) instance is
    passed through unchanged. Each name makes its strategy once per process
    and returns the same object afterwards, as TensorFlow requires.

    Args:
        name: one of `STRATEGIES`, or a `tf.distribute.Strategy`.

    Returns:
        A `tf.distribute.Strategy`.

    Example:
    ```python
    strategy = kd_keras.strategy.get("mirrored")
    distiller = kd_keras.distill(teacher, student, data.train, strategy=strategy)
    ```
    """
    if isinstance(name, tf.distribute.Strategy):
        return name
    if name == "default":
        return tf.distribute.get_strategy()
    if name not in _CREATED:
        if name == "mirrored":
            _CREATED[name] = tf.distribute.MirroredStrategy()
        elif name == "multiworker":
            _check_tf_config()
            _CREATED[name] = tf.distribute.MultiWorkerMirroredStrategy()
        else:
            raise ValueError(f"Unknown strategy {name!r}: choose one of {', '.join(STRATEGIES)}.")
    return _CREATED[name]


def _check_tf_config():
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        raise ValueError(
            "The multiworker strategy reads its cluster from TF_CONFIG, which is "
            'not set: export TF_CONFIG=\'{"cluster": {"worker": ["host1:port", '
            '"host2:port"]}, "task": {"type": "worker", "index": 0}}\' on each worker.'
        )
    try:
        config = json.loads(raw)
        workers = config["cluster"]["worker"]
        task = config["task"]
    except (ValueError, KeyError, TypeError) as error:
        raise ValueError(
            f"TF_CONFIG is not valid ({type(error).__name__}: {error}): it must be JSON "
            'with "cluster": {"worker": [...]} and "task": {"type", "index"}.'
        ) from error
    if task.get("type") == "worker" and not 0 <= int(task.get("index", -1)) < len(workers):
        raise ValueError(
            f"TF_CONFIG's task index {task.get('index')} is not in the {len(workers)} "
            "workers of its cluster: give each worker its own index from 0."
        )


def split_cpu(count):
    """Split the CPU into `count` logical devices, so "mirrored" has `count` replicas.

    For running and testing distributed code on a machine without GPUs: the
    replicas share the CPU's cores, so this is not faster. It must run before
    TensorFlow executes its first operation (hence first in a program).

    Args:
        count: number of logical CPU devices (>= 1).

    Returns:
        The logical CPU device names.

    Example:
    ```python
    kd_keras.strategy.split_cpu(2)  # first thing in the program
    strategy = kd_keras.strategy.get("mirrored")  # 2 replicas
    ```
    """
    if int(count) != count or count < 1:
        raise ValueError(f"count must be an integer >= 1, got {count!r}.")
    cpu = tf.config.list_physical_devices("CPU")[0]
    try:
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * int(count)
        )
    except RuntimeError as error:
        raise RuntimeError(
            "The CPU can no longer be split: TensorFlow has already run an "
            "operation. Call kd_keras.strategy.split_cpu first in the program."
        ) from error
    return [device.name for device in tf.config.list_logical_devices("CPU")]


def is_multi_worker(strategy):
    """True when `strategy` is a MultiWorkerMirroredStrategy over several worker processes."""
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return False
    # TensorFlow's own test, the one Keras uses to pick its cross-worker reduction.
    return _keras_compat.in_multi_worker_mode(strategy)


def is_chief(strategy):
    """True on the process that writes files: the only one, or worker 0 of a cluster."""
    if not is_multi_worker(strategy):
        return True
    resolver = strategy.cluster_resolver
    return resolver.task_type == "chief" or (
        resolver.task_type == "worker"
        and resolver.task_id == 0
        and "chief" not in resolver.cluster_spec().as_dict()
    )


def place(model, strategy):
    """Return `model` with its variables created under `strategy`'s scope.

    Keras 3 needs every variable of a distributed model created inside
    `strategy.scope()`. Call this inside the scope. A zero-argument callable
    is called (the cheapest way: the model is built there); a model whose
    variables already belong to the strategy is returned as it is; any other
    model is cloned with its weights copied, so the caller's object is left
    untouched (use the returned model, e.g. `distiller.student`).

    Args:
        model: a `keras.Model` or a zero-argument callable returning one.
        strategy: the `tf.distribute.Strategy` whose scope is entered.

    Returns:
        A `keras.Model` whose variables belong to `strategy`.

    Example:
    ```python
    with strategy.scope():
        student = kd_keras.strategy.place(lambda: kd_keras.models.get("mlp"), strategy)
    ```
    """
    if not isinstance(model, keras.Model):
        if not callable(model):
            raise TypeError(f"Expected a keras.Model or a function that builds one, got {model!r}.")
        model = model()
        if not isinstance(model, keras.Model):
            raise TypeError(f"The model builder returned {model!r}, not a keras.Model.")
        return model
    if in_scope(model, strategy):
        return model
    clone = keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    return clone


def in_scope(model, strategy):
    """True when every variable of `model` was created under `strategy`'s scope."""
    return all(
        strategy.extended.variable_created_in_scope(variable.value) for variable in model.variables
    )
