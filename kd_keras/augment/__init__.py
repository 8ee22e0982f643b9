"""Augmenters: how each method makes the views a distillation step trains on."""

from kd_keras.augment.base import Augmenter
from kd_keras.augment.base import Views
