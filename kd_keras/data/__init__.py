"""Data: loaders by name (digits, MNIST-1D, the text task, TFDS), checks and tf.data pipelines."""

# Text before images: the image family is the catch-all for "tfds:NAME".
from kd_keras.data import text  # noqa: I001
from kd_keras.data import reviews
from kd_keras.data.core import TFDS_PREFIX
from kd_keras.data.core import DataBundle
from kd_keras.data.core import DataError
from kd_keras.data.core import SetEpoch
from kd_keras.data.core import check_arrays
from kd_keras.data.core import check_dataset
from kd_keras.data.core import load
from kd_keras.data.core import names
from kd_keras.data.core import pipeline
from kd_keras.data.core import register
from kd_keras.data.core import register_tfds_family
from kd_keras.data.core import standard_augmentation
from kd_keras.data.images import DIGITS
from kd_keras.data.images import load_digits
from kd_keras.data.images import load_tfds
from kd_keras.data.images import load_tfds_images
from kd_keras.data.images import place_on_canvas
from kd_keras.data.signals import MNIST1D
from kd_keras.data.signals import load_mnist1d
from kd_keras.data.text import TEXT_DEFAULT
from kd_keras.data.text import TextDataBundle
