"""kd_keras: knowledge distillation for Keras 3 where the data is part of the model.

Submodules load on first use (`kd_keras.data`, `kd_keras.distill`, ...), so
`import kd_keras` and `kd-keras --help` do not wait for TensorFlow.
"""

import importlib
import os
import sys
import types

from kd_keras.version import __version__

# TensorFlow's C++ INFO lines (SavedModel loader, TFLite converter) drown the
# progress bar and summary; warnings and errors still show. A user's own
# setting wins. Set here, before anything imports TensorFlow.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")

_SUBMODULES = (
    "atomic", "augment", "backup", "callbacks", "cifar100", "data", "export", "faults",
    "layers", "losses", "models", "precision", "quantization", "recipes", "run", "search",
    "shipped", "strategy", "text_data",
)
# Public names defined in a submodule: name -> the module holding it.
_ATTRIBUTES = {
    "distill": "kd_keras.distill",
    "Distiller": "kd_keras.distiller",
    "quantize": "kd_keras.quantization",
    "train_teacher": "kd_keras.teacher",
}
__all__ = [*_SUBMODULES, *_ATTRIBUTES, "__version__"]


def __getattr__(name):
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    if name in _ATTRIBUTES:
        return getattr(importlib.import_module(_ATTRIBUTES[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted({*globals(), *__all__})


class _Package(types.ModuleType):
    def __setattr__(self, name, value):
        # Importing the submodule kd_keras.distill binds `kd_keras.distill`
        # to that module; the package's `distill` is the function in it.
        if name == "distill" and isinstance(value, types.ModuleType):
            value = value.distill
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
