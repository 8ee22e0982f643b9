"""kd_keras.Distiller is a drop-in superset of keras.distillation.Distiller."""

import keras
import numpy as np
import pytest
from conftest import tiny_batch

import kd_keras


def teacher_model(seed=1):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((8, 8, 1))
    features = keras.layers.Conv2D(4, 3, padding="same", name="teacher_features")(inputs)
    x = keras.layers.ReLU()(features)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(4)(x), name="teacher")


def student_model(seed=2):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((8, 8, 1))
    features = keras.layers.Conv2D(4, 3, padding="same", name="student_features")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.ReLU()(features))
    x = keras.layers.Dense(8, activation="relu")(x)
    return keras.Model(inputs, keras.layers.Dense(4)(x), name="student")


def logits_loss():
    return keras.distillation.LogitsDistillation(temperature=3.0, loss=keras.losses.KLDivergence())


def feature_loss():
    return keras.distillation.FeatureDistillation(
        loss="mse", teacher_layer_name="teacher_features", student_layer_name="student_features"
    )


class BatchLogs(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.logs = []

    def on_train_batch_end(self, batch, logs=None):
        self.logs.append(dict(logs))


LOSS_SETS = {
    "logits": lambda: dict(distillation_losses=logits_loss()),
    "features": lambda: dict(distillation_losses=feature_loss()),
    "both": lambda: dict(
        distillation_losses=[logits_loss(), feature_loss()], distillation_loss_weights=[1.0, 0.5]
    ),
}


def train(distiller_class, losses, loss, steps=6):
    distiller = distiller_class(
        teacher_model(), student_model(), student_loss_weight=0.3, **LOSS_SETS[losses]()
    )
    distiller.compile(
        optimizer=keras.optimizers.SGD(0.1, momentum=0.9), loss=loss, metrics=["accuracy"]
    )
    x, y = tiny_batch(count=8 * steps, seed=3)
    record = BatchLogs()
    distiller.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0, callbacks=[record])
    return distiller, record.logs, (x, y)


@pytest.mark.parametrize("losses", sorted(LOSS_SETS))
def test_same_losses_and_weights_as_keras_distiller(losses):
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    ours, our_logs, (x, y) = train(kd_keras.Distiller, losses, loss)
    theirs, their_logs, _ = train(keras.distillation.Distiller, losses, loss)
    assert len(our_logs) == len(their_logs) == 6
    for mine, reference in zip(our_logs, their_logs):
        for key in ("loss", "total_loss", "student_loss", "distillation_loss", "accuracy"):
            np.testing.assert_allclose(mine[key], reference[key], rtol=1e-6, atol=1e-6)
    for a, b in zip(ours.student.weights, theirs.student.weights):
        np.testing.assert_allclose(np.array(a), np.array(b), rtol=1e-6, atol=1e-6)
    # evaluate and predict behave as Keras'.
    mine = ours.evaluate(x, y, batch_size=8, return_dict=True, verbose=0)
    reference = theirs.evaluate(x, y, batch_size=8, return_dict=True, verbose=0)
    for key in ("loss", "total_loss", "student_loss", "distillation_loss", "accuracy"):
        np.testing.assert_allclose(mine[key], reference[key], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ours.predict(x, verbose=0), theirs.predict(x, verbose=0), atol=1e-6)


def test_a_keras_string_loss_gives_keras_numbers_and_a_warning():
    # Keras reads "sparse_categorical_crossentropy" as a loss of probabilities
    # even for logits; a drop-in does the same, and says so.
    with pytest.warns(UserWarning, match="reads the student's outputs as probabilities"):
        _, our_logs, _ = train(kd_keras.Distiller, "logits", "sparse_categorical_crossentropy", 2)
    _, their_logs, _ = train(
        keras.distillation.Distiller, "logits", "sparse_categorical_crossentropy", 2
    )
    np.testing.assert_allclose(our_logs[-1]["loss"], their_logs[-1]["loss"], rtol=1e-6)


def test_feature_distillation_round_trips_in_a_keras_file(tmp_path):
    distiller, _, (x, y) = train(kd_keras.Distiller, "both", None, steps=2)
    path = tmp_path / "distiller.keras"
    distiller.save(path)
    restored = keras.saving.load_model(path)
    assert [type(loss) for loss in restored.distillation_losses] == [
        type(loss) for loss in distiller.distillation_losses
    ]
    assert restored.distillation_loss_weights == [1.0, 0.5]
    before = distiller.evaluate(x, y, return_dict=True, verbose=0)
    after = restored.evaluate(x, y, return_dict=True, verbose=0)
    for key in ("total_loss", "distillation_loss", "accuracy"):
        np.testing.assert_allclose(after[key], before[key], rtol=1e-6)
    for a, b in zip(restored.optimizer.variables, distiller.optimizer.variables):
        np.testing.assert_array_equal(np.array(a), np.array(b))


@pytest.mark.parametrize(
    "arguments, message",
    [
        (lambda: (object(), student_model()), "Teacher must be a keras.Model"),
        (lambda: (teacher_model(), "student"), "Student must be a keras.Model"),
        (
            lambda: (
                teacher_model(),
                keras.Sequential(
                    [keras.Input((6, 6, 1)), keras.layers.Flatten(), keras.layers.Dense(4)]
                ),
            ),
            "shape",
        ),
        (
            lambda: (
                teacher_model(),
                keras.Sequential(
                    [keras.Input((8, 8, 1)), keras.layers.Flatten(), keras.layers.Dense(3)]
                ),
            ),
            "",
        ),
    ],
)
def test_models_keras_refuses_are_refused(arguments, message):
    teacher, student = arguments()
    loss = logits_loss()
    with pytest.raises(ValueError, match=message):
        keras.distillation.Distiller(teacher, student, loss)
    with pytest.raises(ValueError, match=message):
        kd_keras.Distiller(teacher, student, loss)


def test_input_dtypes_that_differ_are_refused_as_keras_refuses_them():
    keras.utils.set_random_seed(2)
    inputs = keras.Input((8, 8, 1), dtype="float16")
    student = keras.Model(inputs, keras.layers.Dense(4)(keras.layers.Flatten()(inputs)))
    message = "Teacher and student input dtypes must match. Teacher: float32, Student: float16."
    for distiller_class in (keras.distillation.Distiller, kd_keras.Distiller):
        with pytest.raises(ValueError, match=message):
            distiller_class(teacher_model(), student, logits_loss())


def test_a_mixed_precision_student_is_a_superset_keras_refuses():
    # Keras also requires equal output dtypes, which refuses a float16
    # student (mixed_float16) under a float32 teacher; kd_keras computes
    # its losses in float32 and accepts it.
    with kd_keras.precision.policy("mixed_float16"):
        student = student_model()
    assert student.outputs[0].dtype == "float16"
    with pytest.raises(ValueError, match="output dtypes must match"):
        keras.distillation.Distiller(teacher_model(), student, logits_loss())
    distiller = kd_keras.Distiller(teacher_model(), student, logits_loss())
    distiller.compile(optimizer="sgd")
    x, y = tiny_batch(count=8)
    assert np.isfinite(distiller.train_on_batch(x, y, return_dict=True)["loss"])


def test_steps_per_execution_gives_keras_numbers():
    # Several steps per compiled call: the same losses and weights as
    # keras.distillation's, at the logs Keras reports every 3 steps.
    runs = []
    for distiller_class in (kd_keras.Distiller, keras.distillation.Distiller):
        distiller = distiller_class(
            teacher_model(), student_model(), student_loss_weight=0.3, **LOSS_SETS["both"]()
        )
        distiller.compile(
            optimizer=keras.optimizers.SGD(0.1, momentum=0.9),
            steps_per_execution=3,
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=["accuracy"],
        )
        x, y = tiny_batch(count=48, seed=3)
        record = BatchLogs()
        distiller.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0, callbacks=[record])
        runs.append((distiller, record.logs))
    (ours, our_logs), (theirs, their_logs) = runs
    assert int(ours.optimizer.iterations) == int(theirs.optimizer.iterations) == 6
    assert len(our_logs) == len(their_logs) == 2
    for mine, reference in zip(our_logs, their_logs):
        for key in ("loss", "total_loss", "student_loss", "distillation_loss", "accuracy"):
            np.testing.assert_allclose(mine[key], reference[key], rtol=1e-6, atol=1e-6)
    for a, b in zip(ours.student.weights, theirs.student.weights):
        np.testing.assert_allclose(np.array(a), np.array(b), rtol=1e-6, atol=1e-6)


def test_weights_of_the_wrong_length_and_bad_loss_weights_are_refused():
    for distiller_class in (keras.distillation.Distiller, kd_keras.Distiller):
        with pytest.raises(ValueError, match="must match number of distillation_losses"):
            distiller_class(
                teacher_model(),
                student_model(),
                [logits_loss()],
                distillation_loss_weights=[1.0, 2.0],
            )
        with pytest.raises(ValueError, match="between 0.0 and 1.0"):
            distiller_class(
                teacher_model(), student_model(), logits_loss(), student_loss_weight=1.5
            )
    with pytest.raises(ValueError, match="metrics must be a list or tuple"):
        kd_keras.Distiller(teacher_model(), student_model()).compile(metrics="accuracy")


class CountCalls(keras.layers.Layer):
    """The identity, counting how often it runs (eagerly) and on how many samples."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.calls = []

    def call(self, inputs):
        self.calls.append(int(inputs.shape[0]))
        return inputs


def counted(model):
    """`model` with its features layer counting the samples of every forward pass."""
    counter = CountCalls()
    layer = model.get_layer(f"{model.name}_features")
    original = layer.call
    layer.call = lambda inputs: original(counter(inputs))
    return model, counter


def tiny_vae():
    keras.utils.set_random_seed(5)
    vae = kd_keras.models.VAE((8, 8, 1), latent_dim=4, filters=4)
    vae(np.zeros((1, 8, 8, 1), "float32"))
    return vae


# Every augmenter class (and a stack): those marked True hand the Distiller
# teacher logits they computed themselves, so features must come with them.
AUGMENTERS = {
    "MixUp": (lambda: kd_keras.augment.MixUp(seed=0), False),
    "MixUp relabel=False": (lambda: kd_keras.augment.MixUp(relabel=False, seed=0), True),
    "CutMix": (lambda: kd_keras.augment.CutMix(seed=0), False),
    "CutMixPick": (lambda: kd_keras.augment.CutMixPick(seed=0), True),
    "CutMixPick without x": (
        lambda: kd_keras.augment.CutMixPick(include_clean=False, seed=0),
        True,
    ),
    "FunctionMatching": (lambda: kd_keras.augment.FunctionMatching(flip=False, seed=0), False),
    "SpatialAugmenter search": (lambda: kd_keras.augment.SpatialAugmenter(seed=0), True),
    "SpatialAugmenter student score": (
        lambda: kd_keras.augment.SpatialAugmenter(score="student", seed=0),
        True,
    ),
    "SpatialAugmenter network": (
        lambda: kd_keras.augment.SpatialAugmenter(sampler="network", candidates=1, seed=0),
        False,
    ),
    "GenerativeAugmenter": (
        lambda: kd_keras.augment.GenerativeAugmenter(tiny_vae(), units=8, seed=0),
        False,
    ),
    "LearnedPolicy": (lambda: kd_keras.augment.LearnedPolicy(seed=0), False),
    "BackwardPerturbation": (lambda: kd_keras.augment.BackwardPerturbation(seed=0), True),
    "BackwardPerturbation pool": (
        lambda: kd_keras.augment.BackwardPerturbation(fraction=0.5, pool_size=8, seed=0),
        True,
    ),
    "Stack": (
        lambda: kd_keras.augment.Stack(
            [kd_keras.augment.LearnedPolicy(seed=0), kd_keras.augment.CutMixPick(seed=1)]
        ),
        True,
    ),
}


def one_counted_step(augmenter, losses):
    """One eager step; returns the logs, the views it trained on and the passes counted."""
    (teacher, teacher_counter), (student, student_counter) = (
        counted(teacher_model()),
        counted(student_model()),
    )
    distiller = kd_keras.Distiller(
        teacher, student, losses, student_loss_weight=0.1, augmenter=augmenter
    )
    made = []
    views = distiller.augmenter.views

    def recording(*args, **kwargs):
        made.append(kd_keras.augment.base.as_views(views(*args, **kwargs)))
        return made[-1]

    distiller.augmenter.views = recording
    # A rate of 0: the logged loss is that of the weights the check reads.
    distiller.compile(optimizer=keras.optimizers.SGD(0.0), run_eagerly=True)
    x, y = tiny_batch(count=8)
    x = (x - x.min()) / (x.max() - x.min())  # [0, 1], as the image augmenters assume
    logs = distiller.train_on_batch(x, y, return_dict=True)
    return distiller, logs, made[0], teacher_counter.calls, student_counter.calls


@pytest.mark.parametrize("name", sorted(AUGMENTERS))
def test_features_come_from_the_one_forward_pass_per_view(name):
    # Wang et al. report CutMixPick gains on top of feature losses: with a
    # feature loss each network runs exactly as often, on as many samples,
    # as without one (features and logits of a view come from one pass,
    # the augmenter's own teacher passes included), and the feature term is
    # that of the views the step trained on.
    make, reuses = AUGMENTERS[name]
    _, _, _, teacher_calls, student_calls = one_counted_step(make(), [logits_loss()])
    distiller, logs, views, teacher_with, student_with = one_counted_step(
        make(), [logits_loss(), feature_loss()]
    )
    assert teacher_with == teacher_calls
    assert student_with == student_calls
    assert any(view.teacher_logits is not None for view in views) == reuses
    if reuses:  # the features travelled with the logits the augmenter computed
        assert all(
            (view.teacher_logits is None) == (view.teacher_features is None) for view in views
        )
    # The same term from fresh passes over the views the step trained on.
    layers = ("teacher_features", "student_features")
    extractors = [
        keras.Model(model.input, model.get_layer(layer).output)
        for model, layer in zip((distiller.teacher, distiller.student), layers)
    ]
    expected = 0.0
    for view in views:
        teacher_features, student_features = (
            np.array(extractor(view.x, training=False)) for extractor in extractors
        )
        weight = float(np.array(view.distill_weight))
        expected += weight * np.mean((teacher_features - student_features) ** 2)
    assert expected > 0
    np.testing.assert_allclose(logs["featuredistillation"], expected, rtol=1e-5)


def test_cutmix_counts_one_teacher_call_and_one_student_pass_per_view():
    _, logs, _, teacher_calls, student_calls = one_counted_step(
        kd_keras.augment.CutMix(seed=0), [logits_loss(), feature_loss()]
    )
    assert np.isfinite(logs["featuredistillation"]) and logs["featuredistillation"] > 0
    # The teacher labels [x, x'] in one call; the student sees each view as
    # a batch of its own (separate BatchNorm statistics, as the official code).
    assert teacher_calls == [16]
    assert student_calls == [8, 8]
