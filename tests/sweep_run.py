"""Run recipe x data x model x strategy cases of the robustness sweep; print one JSON line each.

Run by tests/test_sweep.py in a subprocess, so a MirroredStrategy over two
logical CPUs can be set up before TensorFlow starts:

    python tests/sweep_run.py CASES.json [--replicas=2]

Each case trains a Distiller for a few steps with `kd_keras.distill` on
data and models built here (not the shipped ones) and reports what
happened: the error's first line if it raised, else whether every logged
term is finite, whether the student's weights changed and the teacher's
did not, and whether the Distiller survives a `.keras` round trip.
"""

import json
import os
import sys
import tempfile
import traceback

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def data(shape_name, classes, seed):
    import numpy as np

    rng = np.random.default_rng(seed)
    shape = SHAPES[shape_name]
    count = 48
    if shape_name == "signal":  # standardised, as MNIST-1D
        x = rng.normal(size=(count, *shape)).astype("float32")
        x = (x - x.mean()) / x.std()
    else:
        x = rng.uniform(size=(count, *shape)).astype("float32")
    y = (np.arange(count) % classes).astype("int32")
    return x, y


SHAPES = {
    "grey16": (16, 16, 1),
    "colour32": (32, 32, 3),
    "wide20x28": (20, 28, 1),
    "signal": (1, 40, 1),
}


def model(kind, shape, classes, name):
    import keras

    inputs = keras.Input(shape)
    if kind == "mlp":
        h = keras.layers.Flatten()(inputs)
        h = keras.layers.Dense(32, activation="relu")(h)
    elif kind == "cnn":
        h = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(inputs)
        h = keras.layers.MaxPooling2D(2, padding="same")(h)
        h = keras.layers.Conv2D(16, 3, padding="same", activation="relu")(h)
        h = keras.layers.GlobalMaxPooling2D()(h)
    elif kind == "bn_dropout":
        h = keras.layers.Conv2D(8, 3, padding="same")(inputs)
        h = keras.layers.BatchNormalization()(h)
        h = keras.layers.ReLU()(h)
        h = keras.layers.GlobalAveragePooling2D()(h)
        h = keras.layers.Dropout(0.2)(h)
        h = keras.layers.Dense(16, activation="relu")(h)
    else:
        raise ValueError(kind)
    return keras.Model(inputs, keras.layers.Dense(classes)(h), name=name)


def run_case(case, strategy):
    import keras
    import numpy as np

    import kd_keras

    recipe, shape_name, classes = case["recipe"], case["data"], case["classes"]
    shape = SHAPES[shape_name]
    x, y = data(shape_name, classes, case.get("seed", 0))
    keras.utils.set_random_seed(1)
    # The teacher is built (and "trained") outside any scope; the student
    # inside the strategy's scope or outside it, as the case says.
    teacher = model(case["teacher"], shape, classes, "teacher")
    teacher.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    teacher.fit(x, y, epochs=1, batch_size=16, verbose=0)
    if strategy is not None and case.get("student_in_scope", True):
        with strategy.scope():
            student = model(case["student"], shape, classes, "student")
    else:
        student = model(case["student"], shape, classes, "student")
    teacher_before = [np.array(w) for w in teacher.weights]
    student_before = [np.array(w) for w in student.weights]
    result = {**case}
    try:
        distiller = kd_keras.distill(
            teacher,
            student,
            (x, y),
            recipe=recipe,
            epochs=1,
            batch_size=16,
            verbose=0,
            strategy=strategy,
            **case.get("overrides", {}),
        )
    except Exception as error:  # noqa: BLE001 - the sweep reports every failure
        lines = [line for line in str(error).splitlines() if line.strip()]
        result.update(
            status="raised",
            error_type=type(error).__name__,
            error=lines[0] if lines else "",
            error_lines=len(lines),
            student_unchanged=all(
                np.array_equal(a, np.array(b)) for a, b in zip(student_before, student.weights)
            ),
            traceback=traceback.format_exc()[-1500:],
        )
        return result
    history = distiller.history.history
    result.update(
        status="trained",
        logged=sorted(history),
        finite=all(np.all(np.isfinite(values)) for values in history.values()),
        student_changed=any(
            not np.array_equal(a, np.array(b))
            for a, b in zip(student_before, distiller.student.weights)
        ),
        augmenter_steps=(
            0
            if distiller.augmenter_optimizer is None
            else int(distiller.augmenter_optimizer.iterations.numpy())
        ),
        teacher_unchanged=all(
            np.array_equal(a, np.array(b))
            for a, b in zip(teacher_before, distiller.teacher.weights)
        ),
    )
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "distiller.keras")
        distiller.save(path)
        loaded = keras.saving.load_model(path)
        result["round_trip"] = all(
            np.array_equal(np.array(a), np.array(b))
            for a, b in zip(distiller.student.weights, loaded.student.weights)
        ) and type(loaded.augmenter) is type(distiller.augmenter)
    return result


def main():
    cases = json.loads(open(sys.argv[1]).read())
    replicas = 1
    for argument in sys.argv[2:]:
        if argument.startswith("--replicas="):
            replicas = int(argument.split("=", 1)[1])
    strategy = None
    if replicas > 1:
        from kd_keras import strategy as kd_strategy

        kd_strategy.split_cpu(replicas)
        import tensorflow as tf

        strategy = tf.distribute.MirroredStrategy([f"/cpu:{i}" for i in range(replicas)])
    for case in cases:
        print(json.dumps(run_case(case, strategy)), flush=True)


if __name__ == "__main__":
    main()
