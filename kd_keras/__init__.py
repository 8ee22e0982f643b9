"""kd_keras: knowledge distillation for Keras 3 where the data is part of the model."""

from kd_keras import augment
from kd_keras import data
from kd_keras import losses
from kd_keras import models
from kd_keras import recipes
from kd_keras.distill import distill
from kd_keras.distiller import Distiller
from kd_keras.teacher import train_teacher
from kd_keras.version import __version__
