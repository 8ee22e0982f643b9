"""The model zoo: `kd_keras.models.get(name, input_shape, num_classes)`.

Every zoo model outputs logits. Importing a zoo module registers its builders.
"""

from kd_keras.models import mobilenetv2_cifar
from kd_keras.models import resnet_cifar
from kd_keras.models import resnetv2_cifar
from kd_keras.models import shufflenetv2_cifar
from kd_keras.models import signals
from kd_keras.models import small
from kd_keras.models import text
from kd_keras.models import vae
from kd_keras.models import vgg_cifar
from kd_keras.models import wide_resnet
from kd_keras.models.cast import cast_model
from kd_keras.models.mobilenetv2_cifar import mobilenetv2
from kd_keras.models.registry import get
from kd_keras.models.registry import names
from kd_keras.models.registry import register
from kd_keras.models.resnet_cifar import resnet8
from kd_keras.models.resnet_cifar import resnet8x4
from kd_keras.models.resnet_cifar import resnet14
from kd_keras.models.resnet_cifar import resnet20
from kd_keras.models.resnet_cifar import resnet32
from kd_keras.models.resnet_cifar import resnet32x4
from kd_keras.models.resnet_cifar import resnet44
from kd_keras.models.resnet_cifar import resnet56
from kd_keras.models.resnet_cifar import resnet110
from kd_keras.models.resnetv2_cifar import resnet18
from kd_keras.models.resnetv2_cifar import resnet50
from kd_keras.models.shufflenetv2_cifar import shufflev2
from kd_keras.models.signals import mnist1d_cnn
from kd_keras.models.signals import mnist1d_mlp
from kd_keras.models.small import cnn
from kd_keras.models.small import mlp
from kd_keras.models.small import small_cnn
from kd_keras.models.strip_softmax import check_logits
from kd_keras.models.strip_softmax import ends_in_softmax
from kd_keras.models.strip_softmax import strip_softmax
from kd_keras.models.text import TextClassifier
from kd_keras.models.text import text_cnn
from kd_keras.models.text import text_transformer
from kd_keras.models.vae import VAE
from kd_keras.models.vae import train_vae
from kd_keras.models.vgg_cifar import vgg8
from kd_keras.models.vgg_cifar import vgg13
from kd_keras.models.wide_resnet import wrn
from kd_keras.models.wide_resnet import wrn_16_1
from kd_keras.models.wide_resnet import wrn_16_2
from kd_keras.models.wide_resnet import wrn_40_1
from kd_keras.models.wide_resnet import wrn_40_2
