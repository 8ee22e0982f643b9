"""The CIFAR zoo of the distillation papers' tables: shapes, logits, parameter counts."""

import functools

import keras
import numpy as np
import pytest

import kd_keras
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
    "resnet18",
    "resnet50",
    "wrn_16_1",
    "wrn_16_2",
    "wrn_40_1",
    "wrn_40_2",
    "vgg8",
    "vgg13",
    "mobilenetv2",
    "shufflev2",
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
# resnet18, resnet50 (resnetv2.py): counted in test_resnet18_... and
#   test_resnet50_parameter_count_is_repdistillers_exactly.
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
# ShuffleV2 (ShuffleNetv2.py): counted in
#   test_shufflev2_parameter_count_is_repdistillers_exactly.
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
    "resnet18": 11_220_132,
    "resnet50": 23_705_252,
    "wrn_16_1": 180_916,
    "wrn_16_2": 703_284,
    "wrn_40_1": 569_780,
    "wrn_40_2": 2_255_156,
    "vgg8": 3_965_028,
    "vgg13": 9_462_180,
    "mobilenetv2": 812_836,
    "shufflev2": 1_355_528,
}

# Side of the map RepDistiller average-pools on a 32x32 input: a wrong stride
# leaves the parameter count unchanged but moves this.
FINAL_MAP_SIDE = {name: 8 for name in CIFAR_ZOO}
FINAL_MAP_SIDE.update(vgg8=4, vgg13=4, mobilenetv2=2, resnet18=4, resnet50=4, shufflev2=4)


@functools.cache
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
    assert _trainable_params(_cifar100(name)) == REFERENCE_PARAMS[name]


@pytest.mark.parametrize("name", CIFAR_ZOO)
def test_final_feature_map_matches_repdistiller(name):
    pooled = _cifar100(name).get_layer("avgpool").input
    assert tuple(pooled.shape[1:3]) == (FINAL_MAP_SIDE[name],) * 2


def test_resnet18_parameter_count_is_repdistillers_exactly():
    # resnetv2.py's ResNet18: 3x3 stem 3->64 + BN; BasicBlocks [2, 2, 2, 2]
    # at 64/128/256/512, each two 3x3 convs + BN, the first block of stages
    # 2-4 with a 1x1 projection + BN; fc 512 -> 100.
    def block(i, o):
        projection = i * o + 2 * o if i != o else 0
        return 9 * i * o + 2 * o + 9 * o * o + 2 * o + projection

    count = 3 * 9 * 64 + 2 * 64
    widths = (64, 64, 128, 256, 512)
    for previous, planes in zip(widths, widths[1:]):
        count += block(previous, planes) + block(planes, planes)
    count += 512 * 100 + 100
    assert _trainable_params(_cifar100("resnet18")) == count == REFERENCE_PARAMS["resnet18"]


def test_resnet50_parameter_count_is_repdistillers_exactly():
    # resnetv2.py's ResNet50: 3x3 stem 3->64 + BN; Bottlenecks [3, 4, 6, 3]
    # at planes 64/128/256/512: 1x1 i->p, 3x3 p->p, 1x1 p->4p, each + BN;
    # a 1x1 projection i->4p + BN where stride 2 or i != 4p (the first block
    # of every stage, layer1's too: 64 != 256); fc 2048 -> 100.
    def bottleneck(i, p):
        o = 4 * p
        projection = i * o + 2 * o if i != o else 0
        return i * p + 2 * p + 9 * p * p + 2 * p + p * o + 2 * o + projection

    count = 3 * 9 * 64 + 2 * 64
    in_channels = 64
    for planes, blocks in zip((64, 128, 256, 512), (3, 4, 6, 3)):
        for _ in range(blocks):
            count += bottleneck(in_channels, planes)
            in_channels = 4 * planes
    count += 2048 * 100 + 100
    assert _trainable_params(_cifar100("resnet50")) == count == REFERENCE_PARAMS["resnet50"]


def test_shufflev2_parameter_count_is_repdistillers_exactly():
    # ShuffleNetv2.py's ShuffleV2 (net_size 1): 1x1 stem 3->24 + BN; per
    # stage a DownBlock i->o (half h = o/2; left: depthwise 3x3 on i + BN,
    # 1x1 i->h + BN; right: 1x1 i->h + BN, depthwise 3x3 on h + BN, 1x1
    # h->h + BN), then 3/7/3 BasicBlocks on o (half h: 1x1 h->h + BN,
    # depthwise 3x3 + BN, 1x1 h->h + BN) at 116/232/464; 1x1 464->1024 + BN;
    # fc 1024 -> 100. Depthwise convs have 9 weights per channel.
    def down(i, o):
        h = o // 2
        left = 9 * i + 2 * i + i * h + 2 * h
        right = i * h + 2 * h + 9 * h + 2 * h + h * h + 2 * h
        return left + right

    def basic(o):
        h = o // 2
        return 2 * (h * h + 2 * h) + 9 * h + 2 * h

    count = 3 * 24 + 2 * 24
    in_channels = 24
    for out_channels, blocks in zip((116, 232, 464), (3, 7, 3)):
        count += down(in_channels, out_channels) + blocks * basic(out_channels)
        in_channels = out_channels
    count += 464 * 1024 + 2 * 1024 + 1024 * 100 + 100
    assert _trainable_params(_cifar100("shufflev2")) == count == REFERENCE_PARAMS["shufflev2"]


def test_resnet20_on_digits():
    model = kd_keras.models.get("resnet20", (28, 28, 1), 10)
    images = np.random.default_rng(0).random((2, 28, 28, 1), dtype=np.float32)
    assert np.asarray(model(images, training=False)).shape == (2, 10)


@pytest.mark.parametrize("name", CIFAR_ZOO)
def test_accepts_digit_sized_inputs(name):
    model = kd_keras.models.get(name, (28, 28, 1), 10)
    images = np.random.default_rng(0).random((2, 28, 28, 1), dtype=np.float32)
    assert np.asarray(model(images, training=False)).shape == (2, 10)


@pytest.mark.large
def test_small_cnn_learns_digits_under_the_recipes_sgd(digits):
    # It sat at chance for ~10 epochs under the kd recipe's SGD 0.05 (two
    # blocks, no BatchNorm); scored on held-out training digits, not the test split.
    x, y = digits.train
    fit, held_out = slice(0, 1000), slice(1000, None)
    teacher = kd_keras.resolve.load_model(kd_keras.shipped.path(kd_keras.shipped.DIGITS_TEACHER))
    keras.utils.set_random_seed(0)
    student = kd_keras.models.get("small_cnn", digits.input_shape, 10)
    kd_keras.distill(teacher, student, (x[fit], y[fit]), recipe="kd", epochs=6, verbose=0)
    assert kd_keras.resolve.evaluate(student, (x[held_out], y[held_out])) > 0.6
