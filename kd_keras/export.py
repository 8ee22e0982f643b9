"""Export a trained student and prove every artefact reproduces it.

`export_student` writes the student in the requested deployment formats and
runs each artefact on real inputs, comparing its logits with the Keras
student's. An artefact that disagrees beyond its tolerance is deleted and
`ParityError` is raised, so a directory written by `export_student` only ever
holds artefacts that were checked.

Formats and files:

- `"keras"`: `student.keras`, the native Keras archive.
- `"saved_model"`: `saved_model/`, a TensorFlow SavedModel with a `serve`
  endpoint (TF Serving, TF.js, the TFLite converter).
- `"tflite"`: `student.tflite`, float32 LiteRT model.
- `"tflite_float16"`: `student_float16.tflite`, float16 weights, half the
  size, float32 input and output.
- `"tflite_int8"`: `student_int8.tflite`, full-integer quantisation with
  int8 input and output. Integer-only targets (microcontrollers, Edge TPU,
  NPUs) need integer I/O; `tflite_predict` quantises inputs and dequantises
  logits with the tensors' scale and zero point, so callers still see floats.

TFLite models are converted from a SavedModel, which is what
`tf.lite.TFLiteConverter.from_keras_model` does with Keras 3 anyway; going
through the SavedModel directly keeps the conversion source explicit.

The student must have one input (float, or int token ids) and one output
(the logits).
"""

import os
import shutil
import tempfile

import keras
import numpy as np
import tensorflow as tf
from ai_edge_litert.interpreter import Interpreter

from kd_keras import atomic
from kd_keras import quiet

FORMATS = ("keras", "saved_model", "tflite", "tflite_float16", "tflite_int8")

_FILENAMES = {
    "keras": "student.keras",
    "saved_model": "saved_model",
    "tflite": "student.tflite",
    "tflite_float16": "student_float16.tflite",
    "tflite_int8": "student_int8.tflite",
}

# Keras and SavedModel run the same TF kernels, so anything but round-off is
# a bug; quantised models are judged on the decision, not on the logits.
_DEFAULT_TOLERANCES = {
    "keras": {"max_abs_diff": 1e-4, "agreement": 1.0},
    "saved_model": {"max_abs_diff": 1e-4, "agreement": 1.0},
    "tflite": {"max_abs_diff": 1e-3},
    "tflite_float16": {"agreement": 0.98},
    "tflite_int8": {"agreement": 0.95},
}

_BATCH_SIZE = 256


class ParityError(RuntimeError):
    """An exported artefact disagrees with the Keras student."""


def export_student(
    student,
    out_dir,
    formats=("keras", "saved_model", "tflite"),
    check_data=None,
    representative_data=None,
    tolerances=None,
    overwrite=False,
):
    """Export a student in deployment formats and check each one's parity.

    Use this once a student is trained, to produce the files you ship. Each
    format is written to `out_dir`, reloaded with its own runtime and run on
    `check_data`; its logits are compared with `student.predict(check_data)`.
    The first artefact that fails its tolerance is deleted and `ParityError`
    is raised; artefacts already checked stay. Arguments are validated before
    anything is written, and an artefact already in `out_dir` is never
    overwritten unless `overwrite=True`. Each artefact is written under a
    temporary name and renamed, so none is ever half-written.

    Default tolerances: `keras` and `saved_model` need `max_abs_diff <= 1e-4`
    and `agreement == 1.0`; `tflite` needs `max_abs_diff <= 1e-3`;
    `tflite_float16` needs `agreement >= 0.98`; `tflite_int8` needs
    `agreement >= 0.95`.

    Args:
        student: a `keras.Model` with one float input mapping to logits.
        out_dir: directory to write to; created if missing.
        formats: names from `FORMATS`, exported in the order given.
        check_data: NumPy array of real inputs (a few hundred held-out
            samples) on which every artefact is compared with the student.
            Required: parity checks are not optional.
        representative_data: NumPy array of real training inputs (100-200
            samples) used to calibrate int8 ranges. Required for
            `"tflite_int8"`, ignored otherwise.
        tolerances: optional overrides, e.g.
            `{"tflite_int8": {"agreement": 0.9}}`. Keys per format are
            `"max_abs_diff"` (upper bound) and `"agreement"` (lower bound on
            the top-1 agreement rate); given keys replace the defaults.
        overwrite: replace artefacts of `formats` already in `out_dir`
            (e.g. left by an interrupted export of the same student).

    Returns:
        A dict mapping each format to `{"path": str, "bytes": int,
        "max_abs_diff": float, "agreement": float}`.

    Example:
    ```python
    report = kd_keras.export.export_student(
        student, "export", formats=kd_keras.export.FORMATS,
        check_data=x_test[:500], representative_data=x_train[:200])
    print(report["tflite_int8"]["agreement"])
    ```
    """
    formats = _validate(formats, check_data, representative_data)
    thresholds = _merge_tolerances(tolerances)
    if overwrite:
        for fmt in formats:
            _remove(os.path.join(out_dir, _FILENAMES[fmt]))
    _prepare_out_dir(out_dir, formats)
    check_data = _as_inputs(check_data)
    reference = student.predict(check_data, batch_size=_BATCH_SIZE, verbose=0)
    report = {}
    # The TFLite converter reads a SavedModel; a scratch copy keeps out_dir
    # free of it when "saved_model" itself is not requested.
    with tempfile.TemporaryDirectory() as scratch:
        for fmt in formats:
            path = os.path.join(out_dir, _FILENAMES[fmt])
            report[fmt] = _export_checked(
                student,
                fmt,
                path,
                scratch,
                check_data,
                reference,
                representative_data,
                thresholds[fmt],
            )
    return report


def tflite_predict(path, x, batch_size=_BATCH_SIZE):
    """Run a LiteRT (TFLite) model on a batch of inputs and return logits.

    Works for float32, float16 and full-int8 models alike: integer inputs
    are quantised and integer outputs dequantised with each tensor's scale
    and zero point. The input tensor is resized to the chunk size, so large
    arrays run in a few invocations rather than one per sample.

    Args:
        path: path to a `.tflite` file with one input and one output.
        x: NumPy array of float inputs (or int token ids), batch dimension first.
        batch_size: samples per interpreter invocation.

    Returns:
        A float32 NumPy array of logits, one row per sample of `x`.

    Example:
    ```python
    logits = kd_keras.export.tflite_predict("export/student_int8.tflite", x)
    ```
    """
    x = _as_inputs(x)
    chunks = []
    # LiteRT announces its XNNPACK delegate on stderr from C++.
    with quiet.native_stderr_captured():
        interpreter = Interpreter(model_path=os.fspath(path))
        input_detail = interpreter.get_input_details()[0]
        output_detail = interpreter.get_output_details()[0]
        for start in range(0, len(x), batch_size):
            chunk = _quantize(x[start : start + batch_size], input_detail)
            interpreter.resize_tensor_input(input_detail["index"], chunk.shape)
            interpreter.allocate_tensors()
            interpreter.set_tensor(input_detail["index"], chunk)
            interpreter.invoke()
            chunks.append(
                _dequantize(interpreter.get_tensor(output_detail["index"]), output_detail)
            )
    return np.concatenate(chunks)


def _as_inputs(x):
    # Token ids stay integers, as int32 (what the exported signatures take);
    # everything else is float32.
    x = np.asarray(x)
    return x.astype("int32") if np.issubdtype(x.dtype, np.integer) else x.astype("float32")


def _validate(formats, check_data, representative_data):
    if isinstance(formats, str):
        formats = (formats,)
    formats = tuple(formats)
    unknown = [fmt for fmt in formats if fmt not in FORMATS]
    if unknown or not formats:
        raise ValueError(
            f"Unknown or no export formats in {list(formats)}; valid formats are {list(FORMATS)}."
        )
    if "tflite_int8" in formats and (representative_data is None or len(representative_data) == 0):
        raise ValueError(
            "'tflite_int8' needs representative_data: pass 100-200 "
            "representative training inputs to calibrate int8 ranges."
        )
    if check_data is None or len(check_data) == 0:
        raise ValueError(
            "check_data is required: pass a few hundred real inputs; every "
            "exported artefact is checked against the Keras student on them."
        )
    if "tflite_int8" in formats and np.issubdtype(np.asarray(check_data).dtype, np.integer):
        raise ValueError(
            "'tflite_int8' quantises float inputs, but this student reads "
            "integer token ids: export it as 'tflite' or 'tflite_float16'."
        )
    return formats


def _merge_tolerances(tolerances):
    thresholds = {fmt: dict(limits) for fmt, limits in _DEFAULT_TOLERANCES.items()}
    for fmt, limits in (tolerances or {}).items():
        if fmt not in FORMATS:
            raise ValueError(
                f"Unknown format {fmt!r} in tolerances; valid formats are {list(FORMATS)}."
            )
        unknown = set(limits) - {"max_abs_diff", "agreement"}
        if unknown:
            raise ValueError(
                f"Unknown tolerance keys {sorted(unknown)} for {fmt!r}; "
                "use 'max_abs_diff' and 'agreement'."
            )
        thresholds[fmt].update(limits)
    return thresholds


def _prepare_out_dir(out_dir, formats):
    # A stale artefact from an earlier export would sit beside checked ones
    # and look just as trustworthy, so refuse to overwrite or mix them. Other
    # files (a run's logs and metrics) may share the directory.
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise ValueError(
            f"{os.fspath(out_dir)!r} is a file, not a directory: export into a "
            "directory (a new path or an existing folder)."
        )
    stale = [
        _FILENAMES[fmt] for fmt in formats if os.path.exists(os.path.join(out_dir, _FILENAMES[fmt]))
    ]
    if stale:
        raise FileExistsError(
            f"{os.fspath(out_dir)!r} already holds {', '.join(stale)}; export into a new directory."
        )
    os.makedirs(out_dir, exist_ok=True)


def _export_checked(
    student,
    fmt,
    path,
    scratch,
    check_data,
    reference,
    representative_data,
    thresholds,
):
    try:
        _write(student, fmt, path, scratch, representative_data)
        outputs = _predict(fmt, path, check_data)
        entry = {"path": path, "bytes": _size(path), **_compare(outputs, reference)}
        _check(fmt, entry, thresholds)
    except BaseException:
        _remove(path)
        raise
    return entry


def _write(student, fmt, path, scratch, representative_data):
    with atomic.replacing(path) as temporary:
        if fmt == "keras":
            student.save(temporary)
        elif fmt == "saved_model":
            student.export(str(temporary), format="tf_saved_model", verbose=False)
        else:
            source = _scratch_saved_model(student, scratch)
            temporary.write_bytes(_convert(source, fmt, representative_data))


def _scratch_saved_model(student, scratch):
    source = os.path.join(scratch, "saved_model")
    if not os.path.isdir(source):
        student.export(source, format="tf_saved_model", verbose=False)
    return source


def _convert(saved_model_dir, fmt, representative_data):
    converter = tf.lite.TFLiteConverter.from_saved_model(saved_model_dir)
    if fmt == "tflite_float16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif fmt == "tflite_int8":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = _representative_dataset(representative_data)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
    # The converter's C++ warnings ("Ignored output_format.") are no news to a user.
    with quiet.native_stderr_captured():
        return converter.convert()


def _representative_dataset(representative_data):
    samples = np.asarray(representative_data, dtype="float32")

    def generate():
        # The calibrator expects one batch-of-one sample per step.
        for sample in samples:
            yield [sample[np.newaxis]]

    return generate


def _predict(fmt, path, x):
    if fmt == "keras":
        model = keras.saving.load_model(path, safe_mode=True)
        return model.predict(x, batch_size=_BATCH_SIZE, verbose=0)
    if fmt == "saved_model":
        # The loaded object owns the variables; `serve` alone would outlive them.
        loaded = tf.saved_model.load(path)
        return np.concatenate(
            [
                loaded.serve(tf.constant(x[start : start + _BATCH_SIZE])).numpy()
                for start in range(0, len(x), _BATCH_SIZE)
            ]
        )
    return tflite_predict(path, x)


def _compare(outputs, reference):
    outputs = np.asarray(outputs, dtype="float32")
    return {
        "max_abs_diff": float(np.max(np.abs(outputs - reference))),
        "agreement": float(np.mean(np.argmax(outputs, axis=-1) == np.argmax(reference, axis=-1))),
    }


def _check(fmt, entry, thresholds):
    limit = thresholds.get("max_abs_diff")
    if limit is not None and not entry["max_abs_diff"] <= limit:
        raise ParityError(
            f"{fmt}: max_abs_diff {entry['max_abs_diff']:.3g} exceeds "
            f"tolerance {limit:.3g}; artefact removed."
        )
    limit = thresholds.get("agreement")
    if limit is not None and not entry["agreement"] >= limit:
        raise ParityError(
            f"{fmt}: top-1 agreement {entry['agreement']:.4f} is below "
            f"threshold {limit:.4f}; artefact removed."
        )


def _quantize(x, detail):
    scale, zero_point = detail["quantization"]
    # Float inputs, and integer inputs that are not quantised (token ids,
    # scale 0), are passed as they are.
    if not np.issubdtype(detail["dtype"], np.integer) or scale == 0:
        return x.astype(detail["dtype"])
    info = np.iinfo(detail["dtype"])
    q = np.round(x / scale + zero_point)
    return np.clip(q, info.min, info.max).astype(detail["dtype"])


def _dequantize(y, detail):
    scale, zero_point = detail["quantization"]
    if not np.issubdtype(detail["dtype"], np.integer):
        return y.astype("float32")
    return ((y.astype("float32") - zero_point) * scale).astype("float32")


def _size(path):
    if os.path.isfile(path):
        return os.path.getsize(path)
    return sum(
        os.path.getsize(os.path.join(root, name))
        for root, _, names in os.walk(path)
        for name in names
    )


def _remove(path):
    if os.path.isdir(path):
        shutil.rmtree(path)
    elif os.path.exists(path):
        os.remove(path)
