"""kd_keras: knowledge distillation for Keras 3 where the data is part of the model."""

import os

# TensorFlow's C++ INFO lines (SavedModel loader, TFLite converter) drown the
# progress bar and summary; warnings and errors still show. A user's own
# setting wins.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")

from kd_keras import atomic
from kd_keras import augment
from kd_keras import backup
from kd_keras import callbacks
from kd_keras import cifar100
from kd_keras import data
from kd_keras import export
from kd_keras import faults
from kd_keras import layers
from kd_keras import losses
from kd_keras import models
from kd_keras import optimizers
from kd_keras import precision
from kd_keras import quantization
from kd_keras import recipes
from kd_keras import run
from kd_keras import search
from kd_keras import shipped
from kd_keras import strategy
from kd_keras import text_data
from kd_keras.distill import distill
from kd_keras.distiller import Distiller
from kd_keras.quantization import quantize
from kd_keras.teacher import train_teacher
from kd_keras.version import __version__
