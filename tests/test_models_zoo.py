"""The CIFAR zoo of the distillation papers' tables: shapes, logits, parameter counts."""

import functools

import numpy as np
import pytest

import kd_keras.models

CIFAR_ZOO = (
    "resnet8",
    "resnet14",
    "resnet20",
    "resnet32",
    "resnet44",
    "resnet56",
    "resnet110",
    "resnet8x4",
    "resnet32x4",
    "wrn_16_1",
    "wrn_16_2",
    "wrn_40_1",
    "wrn_40_2",
    "vgg8",
    "vgg13",
    "mobilenetv2",
)

# Trainable parameters of RepDistiller's PyTorch models with 100 classes,
# counted by hand from its models/*.py (BatchNorm: weight + bias only; its
# running statistics are buffers, non-trainable weights in Keras).
#
# resnet (resnet.py): stem 3*9*f0 + 2*f0; a same-width BasicBlock c->c is
#   2*(9c^2 + 2c); a first block i->o with stride 2 or i != o adds a 1x1
#   projection: 9io + 2o + 9o^2 + 2o + io + 2o; fc 64*100 + 100 (x4: 256*100 + 100).
#   resnet20 = 464 + 3*4672 + (14528 + 2*18560) + (57728 + 2*73984) + 6500 = 278324.
#   resnet8x4's first block is 32->64, so it has a projection too.
# wrn (wrn.py): stem 3*9*16; block i->o: 2i + 9io + 2o + 9o^2 (+ io when
#   i != o, a 1x1 conv without BatchNorm); final BN 2*64k; fc 64k*100 + 100.
#   wrn_16_2 = 432 + (14432 + 18560) + (57536 + 73984) + (229760 + 295424)
#              + 256 + 12900 = 703284.
# vgg (vgg.py, *_bn): every 3x3 conv keeps its bias: 9io + o, BN 2o; fc 512*100 + 100.
#   vgg8 = (1792+128) + (73856+256) + (295168+512) + (1180160+1024)
#          + (2359808+1024) + 51300 = 3965028.
# mobile_half (mobilenetv2.py, T=6, width 0.5): stem 3*9*16 + 32; block
#   i->o with hidden h = i*t: i*h + 2h + 9h + 2h + h*o + 2o (the expansion
#   conv exists even for t=1); last conv 160*1280 + 2560; fc 1280*100 + 100.
REFERENCE_PARAMS = {
    "resnet8": 83_892,
    "resnet14": 181_108,
    "resnet20": 278_324,
    "resnet32": 472_756,
    "resnet44": 667_188,
    "resnet56": 861_620,
    "resnet110": 1_736_564,
    "resnet8x4": 1_233_540,
    "resnet32x4": 7_433_860,
    "wrn_16_1": 180_916,
    "wrn_16_2": 703_284,
    "wrn_40_1": 569_780,
    "wrn_40_2": 2_255_156,
    "vgg8": 3_965_028,
    "vgg13": 9_462_180,
    "mobilenetv2": 812_836,
}

# Side of the map RepDistiller average-pools on a 32x32 input: a wrong stride
# leaves the parameter count unchanged but moves this.
FINAL_MAP_SIDE = {name: 8 for name in CIFAR_ZOO}
FINAL_MAP_SIDE.update(vgg8=4, vgg13=4, mobilenetv2=2)


@functools.lru_cache(maxsize=None)
def _cifar100(name):
    # Shared by the tests below so each model is built once.
    return kd_keras.models.get(name, input_shape=(32, 32, 3), num_classes=100)


def _trainable_params(model):
    return sum(int(np.prod(weight.shape)) for weight in model.trainable_weights)


def test_every_cifar_model_is_registered():
    assert set(CIFAR_ZOO) <= set(kd_keras.models.names())


@pytest.mark.parametrize("name", CIFAR_ZOO)
def test_outputs_logits_for_a_batch(name):
    model = _cifar100(name)
    images = np.random.default_rng(0).random((2, 32, 32, 3), dtype=np.float32)
    logits = np.asarray(model(images, training=False))
    assert logits.shape == (2, 100)
    assert np.all(np.isfinite(logits))
    assert not kd_keras.models.ends_in_softmax(model)
    assert model.name == name


@pytest.mark.parametrize("name", CIFAR_ZOO)
def test_parameter_count_matches_repdistiller(name):
    measured = _trainable_params(_cifar100(name))
    assert measured == pytest.approx(REFERENCE_PARAMS[name], rel=0.02)


@pytest.mark.parametrize("name", CIFAR_ZOO)
def test_final_feature_map_matches_repdistiller(name):
    pooled = _cifar100(name).get_layer("avgpool").input
    assert tuple(pooled.shape[1:3]) == (FINAL_MAP_SIDE[name],) * 2


def test_resnet20_on_digits():
    model = kd_keras.models.get("resnet20", (28, 28, 1), 10)
    images = np.random.default_rng(0).random((2, 28, 28, 1), dtype=np.float32)
    assert np.asarray(model(images, training=False)).shape == (2, 10)


@pytest.mark.parametrize("name", CIFAR_ZOO)
def test_accepts_digit_sized_inputs(name):
    model = kd_keras.models.get(name, (28, 28, 1), 10)
    images = np.random.default_rng(0).random((2, 28, 28, 1), dtype=np.float32)
    assert np.asarray(model(images, training=False)).shape == (2, 10)
