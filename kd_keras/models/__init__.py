"""The model zoo: `kd_keras.models.get(name, input_shape, num_classes)`."""

from kd_keras.models.registry import get
from kd_keras.models.registry import names
from kd_keras.models.registry import register
from kd_keras.models.small import cnn
from kd_keras.models.small import mlp
from kd_keras.models.small import small_cnn
from kd_keras.models.strip_softmax import ends_in_softmax
from kd_keras.models.strip_softmax import strip_softmax
