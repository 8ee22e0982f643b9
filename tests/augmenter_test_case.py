"""One harness every augmenter runs, as Keras' `run_layer_test` is for layers.

`run_augmenter_test(make)` checks what the augmenter contract promises
(kd_keras/augment/base.py), for an augmenter built by `make(seed)`:

- its config round-trips (`from_config(get_config())`, and Keras'
  serialisation), and it saves and loads inside a Distiller `.keras` file
  with its weights and its views;
- `training=False` is the identity: one view, the inputs themselves;
- the views are consistent: every view's inputs have the batch's sample
  shape, labels one per sample, weights one per sample (or scalars);
- a seeded augmenter reproduces its views, another seed draws others, and
  tf.distribute replicas draw differently (through its seed generator);
- a Distiller step trains with it (under XLA where it claims to compile),
  changes the student, never the teacher, and a learnable augmenter's phase
  changes its weights.
"""

import json
import warnings

import keras
import numpy as np
import tensorflow as tf
from conftest import tiny_batch
from conftest import tiny_student
from conftest import tiny_teacher

import kd_keras
from kd_keras.augment.base import as_views


def _json(config):
    return json.loads(json.dumps(config, default=repr))


def _numpy(tensor):
    return np.asarray(keras.ops.convert_to_numpy(tensor))


def _views(augmenter, x, y, teacher, student, training=True):
    return as_views(
        augmenter.views(
            keras.ops.convert_to_tensor(x),
            keras.ops.convert_to_tensor(y),
            lambda inputs: teacher(inputs, training=False),
            lambda inputs: student(inputs, training=False),
            training=training,
        )
    )


def _view_arrays(views):
    return [_numpy(view.x) for view in views]


class _Replica:
    """A replica context of a sync group of two, as a strategy would enter."""

    def __init__(self, replica_id):
        self.replica_id_in_sync_group = tf.constant(replica_id, tf.int32)


def _as_replica(replica_id, function):
    original = tf.distribute.get_replica_context
    tf.distribute.get_replica_context = lambda: _Replica(replica_id)
    try:
        return function()
    finally:
        tf.distribute.get_replica_context = original


def run_augmenter_test(
    make,
    input_shape=(8, 8, 1),
    num_classes=4,
    batch=8,
    learnable=False,
    random=True,
    xla=True,
    tmp_path=None,
    inputs=None,
):
    """Run the contract checks on the augmenter `make(seed)` builds.

    Args:
        make: `seed -> Augmenter`.
        input_shape: one input's shape (the tiny teacher and student take it).
        num_classes: classes of the tiny models.
        batch: batch size.
        learnable: the augmenter has trainable weights and an objective.
        random: its views depend on its seed (False for deterministic ones).
        xla: its Distiller step compiles with `jit_compile=True`.
        tmp_path: a directory for the `.keras` round trip.
        inputs: `(x, y)` to use instead of random normal inputs.
    """
    x, y = inputs or tiny_batch(count=batch, input_shape=input_shape, num_classes=num_classes)
    teacher = tiny_teacher(input_shape, num_classes)
    student = tiny_student(input_shape, num_classes)

    augmenter = make(7)
    _check_config(augmenter)

    augmenter.build((None, *input_shape))
    identity = _views(augmenter, x, y, teacher, student, training=False)
    assert len(identity) == 1, "training=False must give one view"
    np.testing.assert_array_equal(_numpy(identity[0].x), x)
    np.testing.assert_array_equal(_numpy(identity[0].y), y)

    views = _views(augmenter, x, y, teacher, student)
    _check_views(views, x, input_shape)

    if random:
        again = make(7)
        again.build((None, *input_shape))
        np.testing.assert_allclose(
            np.concatenate([v.ravel() for v in _view_arrays(views)]),
            np.concatenate(
                [v.ravel() for v in _view_arrays(_views(again, x, y, teacher, student))]
            ),
            rtol=1e-6,
            atol=1e-6,
            err_msg="the same seed must draw the same views",
        )
        other = make(8)
        other.build((None, *input_shape))
        assert not _same(views, _views(other, x, y, teacher, student)), (
            "another seed drew the same views"
        )
        first, second = (make(7), make(7))
        for layer in (first, second):
            layer.build((None, *input_shape))
        replica_0 = _as_replica(0, lambda: _views(first, x, y, teacher, student))
        replica_1 = _as_replica(1, lambda: _views(second, x, y, teacher, student))
        assert not _same(replica_0, replica_1), "two replicas drew the same views"

    _check_training(make, x, y, input_shape, num_classes, learnable, xla)
    if tmp_path is not None:
        _check_keras_file(make, x, y, input_shape, num_classes, learnable, tmp_path)


def _same(views, others):
    first, second = _view_arrays(views), _view_arrays(others)
    return len(first) == len(second) and all(
        a.shape == b.shape and np.allclose(a, b) for a, b in zip(first, second)
    )


def _check_config(augmenter):
    config = augmenter.get_config()
    assert config["seed"] == 7
    clone = type(augmenter).from_config(config)
    assert clone.get_config() == config
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(augmenter))
    assert type(restored) is type(augmenter) and restored.get_config() == config


def _check_views(views, x, input_shape):
    total = 0
    for view in views:
        count = int(view.x.shape[0])
        total += count
        assert tuple(view.x.shape[1:]) == tuple(input_shape), (view.x.shape, input_shape)
        assert int(view.y.shape[0]) == count
        assert np.all(np.isfinite(_numpy(view.x)))
        for field in ("label_weight", "distill_weight"):
            weight = _numpy(getattr(view, field))
            assert weight.ndim == 0 or weight.shape == (count,), (field, weight.shape)
            assert np.all(weight >= 0)
        if view.teacher_logits is not None:
            assert int(view.teacher_logits.shape[0]) == count
    assert total >= len(x)


def _distiller(make, input_shape, num_classes, learnable):
    keras.utils.set_random_seed(3)
    distiller = kd_keras.Distiller(
        tiny_teacher(input_shape, num_classes),
        tiny_student(input_shape, num_classes),
        kd_keras.losses.TemperatureKL(4.0),
        student_loss_weight=0.1,
        augmenter=make(7),
    )
    return distiller


def _check_training(make, x, y, input_shape, num_classes, learnable, xla):
    distiller = _distiller(make, input_shape, num_classes, learnable)
    distiller.compile(
        optimizer=keras.optimizers.SGD(0.1),
        augmenter_optimizer=keras.optimizers.SGD(0.1) if learnable else None,
        jit_compile=xla,
    )
    teacher_before = [_numpy(w) for w in distiller.teacher.weights]
    student_before = [_numpy(w) for w in distiller.student.weights]
    with warnings.catch_warnings():  # a bare fit of a learnable augmenter says what it trains
        warnings.simplefilter("ignore", UserWarning)
        history = distiller.fit(x, y, batch_size=len(x), epochs=1, verbose=0).history
    assert all(np.isfinite(values[-1]) for values in history.values()), history
    assert any(
        not np.array_equal(a, _numpy(b)) for a, b in zip(student_before, distiller.student.weights)
    ), "the student did not change"
    for a, b in zip(teacher_before, distiller.teacher.weights):
        np.testing.assert_array_equal(a, _numpy(b))
    assert bool(distiller.augmenter.trainable_weights) == learnable
    if learnable:
        augmenter_before = [_numpy(w) for w in distiller.augmenter.trainable_weights]
        distiller.phase = "augmenter"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            distiller.fit(x, y, batch_size=len(x), epochs=1, verbose=0)
        assert any(
            not np.array_equal(a, _numpy(b))
            for a, b in zip(augmenter_before, distiller.augmenter.trainable_weights)
        ), "the augmenter phase did not change the augmenter"


def _check_keras_file(make, x, y, input_shape, num_classes, learnable, tmp_path):
    distiller = _distiller(make, input_shape, num_classes, learnable)
    distiller.compile(
        optimizer=keras.optimizers.SGD(0.1),
        augmenter_optimizer=keras.optimizers.SGD(0.1) if learnable else None,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        distiller.fit(x, y, batch_size=len(x), epochs=1, verbose=0)
    path = tmp_path / f"{type(distiller.augmenter).__name__}.keras"
    distiller.save(path)
    loaded = keras.saving.load_model(path)
    assert type(loaded.augmenter) is type(distiller.augmenter)
    # As JSON: a nested build_config's shape comes back as a list, not a tuple.
    assert _json(loaded.augmenter.get_config()) == _json(distiller.augmenter.get_config())
    for a, b in zip(distiller.augmenter.weights, loaded.augmenter.weights):
        np.testing.assert_array_equal(_numpy(a), _numpy(b))
    for a, b in zip(distiller.student.weights, loaded.student.weights):
        np.testing.assert_array_equal(_numpy(a), _numpy(b))
