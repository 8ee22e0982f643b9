"""kd_keras: knowledge distillation for Keras 3 where the data is part of the model."""

import importlib
import os
import sys

from kd_keras.version import __version__

# TensorFlow's C++ INFO lines (SavedModel loader, TFLite converter) drown the
# progress bar and summary; warnings and errors still show. A user's own
# setting wins. Set here, before anything imports TensorFlow.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")

_SUBMODULES = (
    "atomic",
    "augment",
    "callbacks",
    "data",
    "export",
    "jobs",
    "layers",
    "losses",
    "models",
    "optimizers",
    "precision",
    "quantization",
    "quiet",
    "recipes",
    "resolve",
    "run_directory",
    "search",
    "shipped",
    "strategy",
)
# Public names defined in a submodule: name -> the module holding it.
_ATTRIBUTES = {
    "distill": "kd_keras.distill",
    "Distiller": "kd_keras.distiller",
    "quantize": "kd_keras.quantization",
    "train_teacher": "kd_keras.teacher",
}
__all__ = [*_SUBMODULES, *_ATTRIBUTES, "__version__"]


def import_all():
    """Import every submodule: the package's API, and the classes `.keras` files name.

    `import kd_keras` does this, so `keras.saving.load_model` finds every
    registered kd_keras class; only the `kd-keras` command defers it until
    its flags are parsed, so that `--help` answers without TensorFlow.
    """
    for name in _SUBMODULES:
        importlib.import_module(f"{__name__}.{name}")
    # After the submodules: importing kd_keras.distill bound the name to the module.
    for name, module in _ATTRIBUTES.items():
        globals()[name] = getattr(importlib.import_module(module), name)


def __getattr__(name):
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    if name in _ATTRIBUTES:
        return getattr(importlib.import_module(_ATTRIBUTES[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _running_the_command():
    # The console script (argv[0] .../kd-keras) or `python -m kd_keras.cli`.
    argv = list(getattr(sys, "orig_argv", sys.argv))
    script = os.path.splitext(os.path.basename(sys.argv[0] if sys.argv else ""))[0]
    module = argv[argv.index("-m") + 1] if "-m" in argv[:-1] else None
    return script == "kd-keras" or module == "kd_keras.cli"


if not _running_the_command():
    import_all()
