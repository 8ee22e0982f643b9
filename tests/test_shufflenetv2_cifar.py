"""ShuffleNetV2's channel split and shuffle layers; the model's table is in test_models_zoo.py."""

import keras
import numpy as np
import pytest

import kd_keras
from kd_keras.models.shufflenetv2_cifar import ChannelShuffle
from kd_keras.models.shufflenetv2_cifar import ChannelSplit


def _torch_channel_shuffle(images, groups):
    # RepDistiller's ShuffleBlock on NCHW, written out in NumPy.
    nchw = np.transpose(images, (0, 3, 1, 2))
    n, c, h, w = nchw.shape
    shuffled = nchw.reshape(n, groups, c // groups, h, w).transpose(0, 2, 1, 3, 4)
    return np.transpose(shuffled.reshape(n, c, h, w), (0, 2, 3, 1))


@pytest.mark.parametrize("groups", [2, 3])
def test_channel_shuffle_matches_repdistillers(groups):
    images = np.random.default_rng(0).normal(size=(2, 3, 5, 12)).astype("float32")
    shuffled = np.asarray(ChannelShuffle(groups)(images))
    np.testing.assert_array_equal(shuffled, _torch_channel_shuffle(images, groups))
    assert not np.array_equal(shuffled, images)


def test_channel_shuffle_rejects_indivisible_channels():
    with pytest.raises(ValueError, match="groups=2 needs channels divisible by 2, got 5"):
        ChannelShuffle(2)(np.zeros((1, 2, 2, 5), "float32"))


def test_channel_split_returns_the_first_share_and_the_rest():
    images = np.random.default_rng(1).normal(size=(2, 3, 3, 7)).astype("float32")
    first, rest = ChannelSplit(0.5)(images)
    np.testing.assert_array_equal(np.asarray(first), images[..., :3])
    np.testing.assert_array_equal(np.asarray(rest), images[..., 3:])
    with pytest.raises(ValueError, match=r"in \(0, 1\); got 1"):
        ChannelSplit(1)


def test_shufflev2_saves_loads_and_quantises():
    model = kd_keras.models.shufflev2((16, 16, 3), 5, net_size=0.2)
    images = np.random.default_rng(2).random((2, 16, 16, 3), dtype=np.float32)
    expected = np.asarray(model(images, training=False))
    restored = keras.saving.deserialize_keras_object(
        keras.saving.serialize_keras_object(model), safe_mode=True
    )
    restored.set_weights(model.get_weights())
    np.testing.assert_allclose(np.asarray(restored(images, training=False)), expected, atol=1e-6)
    full_precision = kd_keras.quantize(model, bits=32)
    np.testing.assert_allclose(
        np.asarray(full_precision(images, training=False)), expected, atol=1e-6
    )


def test_shufflev2_rejects_an_unknown_net_size():
    with pytest.raises(ValueError, match="Unknown ShuffleNetV2 net_size 3: choose one of 0.2"):
        kd_keras.models.shufflev2(net_size=3)
