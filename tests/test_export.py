"""Tests for `kd_keras.export`: every format exports and matches the student."""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from kd_keras import export

# Subprocesses, trainings and conversions: the large tier (`pytest -m large`).
pytestmark = pytest.mark.large

NUM_CLASSES = 10
# One blob centre per class on a 28x28 canvas.
CENTRES = [(r, c) for r in (6, 14, 22) for c in (5, 11, 17, 23)][:NUM_CLASSES]
ALL_FILES = {
    "student.keras",
    "saved_model",
    "student.tflite",
    "student_float16.tflite",
    "student_int8.tflite",
}


def _blobs(n, seed):
    """Images with one noisy, jittered blob whose position is the class."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, NUM_CLASSES, n)
    centres = np.array(CENTRES, dtype="float32")[y] + rng.normal(0, 1.5, (n, 2))
    rows, cols = np.mgrid[0:28, 0:28].astype("float32")
    d2 = (rows - centres[:, 0, None, None]) ** 2 + (cols - centres[:, 1, None, None]) ** 2
    x = np.exp(-d2 / (2 * 2.5**2)) + rng.normal(0, 0.2, (n, 28, 28))
    return x[..., None].astype("float32"), y


@pytest.fixture(scope="module")
def data():
    x_train, y_train = _blobs(1024, seed=0)
    x_check, y_check = _blobs(500, seed=1)
    return x_train, y_train, x_check, y_check


@pytest.fixture(scope="module")
def student(data):
    x_train, y_train, _, _ = data
    keras.utils.set_random_seed(0)
    inputs = keras.Input((28, 28, 1))
    x = keras.layers.Conv2D(4, 3, activation="relu")(inputs)
    x = keras.layers.MaxPooling2D(4)(x)
    x = keras.layers.Flatten()(x)
    outputs = keras.layers.Dense(NUM_CLASSES)(x)
    model = keras.Model(inputs, outputs)
    model.compile(
        keras.optimizers.Adam(1e-2),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    model.fit(x_train, y_train, batch_size=64, epochs=3, verbose=0)
    return model


@pytest.fixture(scope="module")
def exported(student, data, tmp_path_factory):
    x_train, _, x_check, _ = data
    out_dir = tmp_path_factory.mktemp("export") / "all"
    report = export.export_student(
        student,
        out_dir,
        formats=export.FORMATS,
        check_data=x_check,
        representative_data=x_train[:200],
    )
    return out_dir, report


def test_student_has_learnt_the_classes(student, data):
    # Parity on a constant predictor would prove nothing.
    _, _, x_check, y_check = data
    predictions = np.argmax(student.predict(x_check, verbose=0), axis=-1)
    assert np.mean(predictions == y_check) > 0.8
    assert len(np.unique(predictions)) == NUM_CLASSES


def test_every_format_exports_and_only_artefacts_are_written(exported):
    out_dir, report = exported
    assert tuple(report) == export.FORMATS
    assert set(os.listdir(out_dir)) == ALL_FILES


def _artefact_outputs(fmt, path, x):
    # Each artefact run by its own runtime, as a user would.
    if fmt == "keras":
        return keras.saving.load_model(path, safe_mode=True).predict(x, verbose=0)
    if fmt == "saved_model":
        loaded = tf.saved_model.load(str(path))  # owns the variables serve reads
        return loaded.serve(tf.constant(x)).numpy()
    return export.tflite_predict(path, x)


def _parity(outputs, reference):
    return (
        float(np.max(np.abs(outputs - reference))),
        float(np.mean(np.argmax(outputs, -1) == np.argmax(reference, -1))),
    )


def test_report_entries_are_what_each_artefact_measures(exported, student, data):
    _, report = exported
    x_check = data[2]
    reference = student.predict(x_check, verbose=0)
    for fmt, entry in report.items():
        assert set(entry) == {"path", "bytes", "max_abs_diff", "agreement"}, fmt
        assert entry["bytes"] == _tree_size(entry["path"]), fmt
        max_abs_diff, agreement = _parity(_artefact_outputs(fmt, entry["path"], x_check), reference)
        # Batch sizes other than the export's may round differently (~1e-6).
        assert entry["max_abs_diff"] == pytest.approx(max_abs_diff, rel=1e-4, abs=1e-5), fmt
        assert entry["agreement"] == agreement, fmt
    # Quantisation really changes the logits: the comparison is not of a model with itself.
    assert report["tflite_int8"]["max_abs_diff"] > 1e-3
    assert report["tflite_int8"]["bytes"] < report["tflite_float16"]["bytes"]
    assert report["tflite_float16"]["bytes"] < report["tflite"]["bytes"]


def _tree_size(path):
    if os.path.isfile(path):
        return os.path.getsize(path)
    return sum(
        os.path.getsize(os.path.join(root, name))
        for root, _, names in os.walk(path)
        for name in names
    )


def test_report_meets_default_tolerances(exported):
    _, report = exported
    for fmt in ("keras", "saved_model"):
        assert report[fmt]["max_abs_diff"] <= 1e-4, fmt
        assert report[fmt]["agreement"] == 1.0, fmt
    assert report["tflite"]["max_abs_diff"] <= 1e-3
    assert report["tflite_float16"]["agreement"] >= 0.98
    assert report["tflite_int8"]["agreement"] >= 0.95


def test_reloaded_keras_model_gives_identical_outputs(exported, student, data):
    out_dir, _ = exported
    x_check = data[2]
    reloaded = keras.saving.load_model(out_dir / "student.keras", safe_mode=True)
    np.testing.assert_array_equal(
        reloaded.predict(x_check, verbose=0), student.predict(x_check, verbose=0)
    )


def test_tflite_predict_is_chunk_independent(exported, student, data):
    out_dir, _ = exported
    x_check = data[2]
    whole = export.tflite_predict(out_dir / "student.tflite", x_check)
    # 64 does not divide 500, so the last chunk has a different size.
    chunked = export.tflite_predict(out_dir / "student.tflite", x_check, batch_size=64)
    assert whole.shape == (len(x_check), NUM_CLASSES)
    np.testing.assert_allclose(chunked, whole, atol=1e-5)
    np.testing.assert_allclose(whole, student.predict(x_check, verbose=0), atol=1e-3)


def test_tflite_predict_dequantises_int8(exported, student, data):
    out_dir, _ = exported
    x_check = data[2]
    logits = export.tflite_predict(out_dir / "student_int8.tflite", x_check)
    assert logits.dtype == np.float32
    reference = student.predict(x_check, verbose=0)
    # Dequantised logits live on the float scale, not the int8 one.
    assert np.max(np.abs(logits - reference)) < 0.1 * np.ptp(reference)


def test_failed_parity_raises_and_removes_only_that_artefact(student, data, tmp_path):
    x_train, _, x_check, _ = data
    with pytest.raises(export.ParityError) as error:
        export.export_student(
            student,
            tmp_path,
            formats=("tflite", "tflite_int8"),
            check_data=x_check,
            representative_data=x_train[:200],
            tolerances={"tflite_int8": {"agreement": 1.01}},
        )
    message = str(error.value)
    assert "tflite_int8" in message and "1.01" in message and "\n" not in message
    assert os.listdir(tmp_path) == ["student.tflite"]


def test_failed_saved_model_parity_removes_the_directory(student, data, tmp_path):
    with pytest.raises(export.ParityError, match="saved_model.*max_abs_diff"):
        export.export_student(
            student,
            tmp_path,
            formats=("saved_model",),
            check_data=data[2],
            tolerances={"saved_model": {"max_abs_diff": -1.0}},
        )
    assert os.listdir(tmp_path) == []


def test_unknown_format_raises_before_writing(student, data, tmp_path):
    out_dir = tmp_path / "out"
    with pytest.raises(ValueError, match="valid formats.*tflite_int8"):
        export.export_student(student, out_dir, formats=("keras", "onnx"), check_data=data[2])
    assert not out_dir.exists()


def test_int8_without_representative_data_raises_before_writing(student, data, tmp_path):
    out_dir = tmp_path / "out"
    with pytest.raises(ValueError, match="representative training inputs"):
        export.export_student(
            student, out_dir, formats=("keras", "tflite_int8"), check_data=data[2]
        )
    assert not out_dir.exists()


def test_missing_check_data_raises_before_writing(student, tmp_path):
    out_dir = tmp_path / "out"
    with pytest.raises(ValueError, match="check_data is required"):
        export.export_student(student, out_dir, formats=("keras",))
    assert not out_dir.exists()


def test_unknown_tolerance_key_raises_before_writing(student, data, tmp_path):
    out_dir = tmp_path / "out"
    with pytest.raises(ValueError, match="Unknown tolerance keys"):
        export.export_student(
            student,
            out_dir,
            formats=("keras",),
            check_data=data[2],
            tolerances={"keras": {"top1": 0.5}},
        )
    assert not out_dir.exists()


def test_existing_artefact_is_never_overwritten(student, data, tmp_path):
    (tmp_path / "notes.txt").write_text("keep me")
    (tmp_path / "student.keras").write_text("an earlier export")
    with pytest.raises(FileExistsError, match="already holds student.keras"):
        export.export_student(student, tmp_path, formats=("keras",), check_data=data[2])
    assert (tmp_path / "student.keras").read_text() == "an earlier export"
    assert sorted(os.listdir(tmp_path)) == ["notes.txt", "student.keras"]


def test_other_files_may_share_the_directory(student, data, tmp_path):
    (tmp_path / "metrics.json").write_text("{}")
    report = export.export_student(student, tmp_path, formats=("keras",), check_data=data[2])
    assert report["keras"]["agreement"] == 1.0
    assert sorted(os.listdir(tmp_path)) == ["metrics.json", "student.keras"]


def test_overwrite_replaces_the_artefacts_of_an_interrupted_export(student, data, tmp_path):
    (tmp_path / "student.keras").write_text("left by a killed attempt")
    (tmp_path / "student.partial.keras").write_text("half of a file")
    report = export.export_student(
        student, tmp_path, formats=("keras",), check_data=data[2], overwrite=True
    )
    assert report["keras"]["agreement"] == 1.0
    assert sorted(os.listdir(tmp_path)) == ["student.keras"]


@pytest.fixture(scope="module")
def bias_shift(student, data):
    # A shift of the last bias that flips about a third of the predictions.
    reference = student.predict(data[2], verbose=0)
    rng = np.random.default_rng(5)
    for spread in np.linspace(0.1, 10.0, 100):
        shift = (spread * rng.normal(size=NUM_CLASSES)).astype("float32")
        agreement = np.mean(np.argmax(reference + shift, -1) == np.argmax(reference, -1))
        if agreement < 0.7:
            return shift
    raise AssertionError("no shift flips the predictions")


def test_parity_measures_a_real_difference(student, data, bias_shift, tmp_path, monkeypatch):
    # Every artefact is written from a copy of the student whose last bias is
    # shifted, so each logit differs by exactly that shift: the report must
    # measure max|shift| and the agreement NumPy computes from the reference.
    shifted = keras.models.clone_model(student)
    shifted.set_weights(student.get_weights())
    head = shifted.layers[-1]
    kernel, bias = head.get_weights()
    head.set_weights([kernel, bias + bias_shift])
    write = export._write
    monkeypatch.setattr(export, "_write", lambda model, *args: write(shifted, *args))
    x_check = data[2]
    reference = student.predict(x_check, verbose=0)
    expected_diff = float(np.abs(bias_shift).max())
    expected_agreement = float(
        np.mean(np.argmax(reference + bias_shift, -1) == np.argmax(reference, -1))
    )
    assert 0.3 < expected_agreement < 0.7
    report = export.export_student(
        student,
        tmp_path,
        formats=("keras", "saved_model", "tflite"),
        check_data=x_check,
        tolerances={
            fmt: {"max_abs_diff": 100.0, "agreement": 0.0}
            for fmt in ("keras", "saved_model", "tflite")
        },
    )
    for fmt in ("keras", "saved_model"):
        assert report[fmt]["max_abs_diff"] == pytest.approx(expected_diff, rel=1e-5), fmt
        assert report[fmt]["agreement"] == expected_agreement, fmt
    assert report["tflite"]["max_abs_diff"] == pytest.approx(expected_diff, abs=2e-3)
    assert abs(report["tflite"]["agreement"] - expected_agreement) <= 2 / len(x_check)


@pytest.mark.parametrize("fmt", ["keras", "saved_model"])
def test_default_tolerances_reject_a_real_difference(
    fmt, student, data, bias_shift, tmp_path, monkeypatch
):
    shifted = keras.models.clone_model(student)
    shifted.set_weights(student.get_weights())
    head = shifted.layers[-1]
    kernel, bias = head.get_weights()
    # Small enough to keep every prediction: only max_abs_diff can fail.
    head.set_weights([kernel, bias + 1e-3 * bias_shift / np.abs(bias_shift).max()])
    write = export._write
    monkeypatch.setattr(export, "_write", lambda model, *args: write(shifted, *args))
    with pytest.raises(export.ParityError, match=f"{fmt}: max_abs_diff 0.001 exceeds"):
        export.export_student(student, tmp_path, formats=(fmt,), check_data=data[2])
    assert os.listdir(tmp_path) == []
