"""The CIFAR ShuffleNetV2 of the distillation benchmarks (RepDistiller `ShuffleV2`): shufflev2."""

import keras
from keras import ops

from kd_keras.models.registry import register

# PyTorch's BatchNorm2d defaults (momentum 0.1 == Keras 0.9, eps 1e-5), so
# recipes tuned on RepDistiller carry over.
_BN = dict(momentum=0.9, epsilon=1e-5)
# RepDistiller leaves ShuffleNetV2 at PyTorch's default initialisation,
# kaiming_uniform_(a=sqrt(5)): U(+-1/sqrt(fan_in)). A depthwise kernel's
# PyTorch fan_in (9) is Keras's fan_out, since Keras counts the channels
# in fan_in.
_TORCH_DEFAULT = keras.initializers.VarianceScaling(1.0 / 3.0, "fan_in", "uniform")
_TORCH_DEFAULT_DEPTHWISE = keras.initializers.VarianceScaling(1.0 / 3.0, "fan_out", "uniform")
# RepDistiller's `configs`: net_size -> (stage widths, last conv width),
# basic blocks per stage. `ShuffleV2` is net_size 1.
_CONFIGS = {
    0.2: ((40, 80, 160), 512, (3, 3, 3)),
    0.3: ((40, 80, 160), 512, (3, 7, 3)),
    0.5: ((48, 96, 192), 1024, (3, 7, 3)),
    1: ((116, 232, 464), 1024, (3, 7, 3)),
    1.5: ((176, 352, 704), 1024, (3, 7, 3)),
    2: ((224, 488, 976), 2048, (3, 7, 3)),
}
_STEM_CHANNELS = 24


@keras.saving.register_keras_serializable(package="kd_keras")
class ChannelShuffle(keras.layers.Layer):
    """Interleaves the channel groups of a feature map (ShuffleNet's channel shuffle).

    Channels `[g0 | g1 | ...]` become `[g0[0], g1[0], ..., g0[1], g1[1], ...]`,
    so the next block's split mixes channels from both branches of the
    previous one; PyTorch's `view(N, g, C/g, H, W).permute(0, 2, 1, 3, 4)`
    on channels-last maps.

    References: Ma et al. 2018, "ShuffleNet V2: Practical Guidelines for
    Efficient CNN Architecture Design".

    Args:
        groups: number of channel groups; must divide the channels.
        **kwargs: passed to `keras.layers.Layer`.

    Returns:
        A layer mapping `(..., channels)` to the same shape, channels permuted.

    Example:
    ```python
    x = kd_keras.models.shufflenetv2_cifar.ChannelShuffle(groups=2)(x)
    ```
    """

    def __init__(self, groups=2, **kwargs):
        super().__init__(**kwargs)
        if int(groups) < 1:
            raise ValueError(f"groups must be a positive integer, got {groups}.")
        self.groups = int(groups)

    def build(self, input_shape):
        if input_shape[-1] % self.groups:
            raise ValueError(
                f"ChannelShuffle with groups={self.groups} needs channels divisible "
                f"by {self.groups}, got {input_shape[-1]}: change groups or the width."
            )

    def call(self, inputs):
        channels = inputs.shape[-1]
        grouped = ops.reshape(inputs, (-1, self.groups, channels // self.groups))
        return ops.reshape(ops.swapaxes(grouped, 1, 2), ops.shape(inputs))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "groups": self.groups}


@keras.saving.register_keras_serializable(package="kd_keras")
class ChannelSplit(keras.layers.Layer):
    """Splits a feature map's channels in two: the first `int(channels * ratio)` and the rest.

    ShuffleNetV2's basic unit passes the first part through unchanged and
    convolves the second (RepDistiller's `SplitBlock`).

    References: Ma et al. 2018, "ShuffleNet V2: Practical Guidelines for
    Efficient CNN Architecture Design".

    Args:
        ratio: fraction of the channels in the first part, in (0, 1).
        **kwargs: passed to `keras.layers.Layer`.

    Returns:
        A layer mapping `(..., channels)` to a list of two tensors.

    Example:
    ```python
    kept, convolved = kd_keras.models.shufflenetv2_cifar.ChannelSplit(0.5)(x)
    ```
    """

    def __init__(self, ratio=0.5, **kwargs):
        super().__init__(**kwargs)
        if not 0.0 < float(ratio) < 1.0:
            raise ValueError(
                f"ratio is the first part's share of the channels, in (0, 1); got {ratio}."
            )
        self.ratio = float(ratio)

    def call(self, inputs):
        first = int(inputs.shape[-1] * self.ratio)
        return [inputs[..., :first], inputs[..., first:]]

    def compute_output_shape(self, input_shape):
        first = int(input_shape[-1] * self.ratio)
        return [(*input_shape[:-1], first), (*input_shape[:-1], input_shape[-1] - first)]

    def get_config(self):
        return {**super().get_config(), "ratio": self.ratio}


def _conv_bn(x, filters, name, relu):
    x = keras.layers.Conv2D(
        filters,
        1,
        use_bias=False,
        kernel_initializer=_TORCH_DEFAULT,
        name=f"{name}_conv",
    )(x)
    x = keras.layers.BatchNormalization(**_BN, name=f"{name}_bn")(x)
    return keras.layers.ReLU(name=f"{name}_relu")(x) if relu else x


def _depthwise_bn(x, strides, name):
    x = keras.layers.DepthwiseConv2D(
        3,
        strides=strides,
        padding="same",
        use_bias=False,
        depthwise_initializer=_TORCH_DEFAULT_DEPTHWISE,
        name=f"{name}_depthwise",
    )(x)
    return keras.layers.BatchNormalization(**_BN, name=f"{name}_depthwise_bn")(x)


def _basic_unit(x, name):
    kept, branch = ChannelSplit(0.5, name=f"{name}_split")(x)
    branch = _conv_bn(branch, branch.shape[-1], f"{name}_1", relu=True)
    branch = _depthwise_bn(branch, 1, f"{name}_2")
    branch = _conv_bn(branch, branch.shape[-1], f"{name}_3", relu=True)
    out = keras.layers.Concatenate(name=f"{name}_concat")([kept, branch])
    return ChannelShuffle(2, name=f"{name}_shuffle")(out)


def _down_unit(x, out_channels, name):
    half = out_channels // 2
    left = _depthwise_bn(x, 2, f"{name}_left_1")
    left = _conv_bn(left, half, f"{name}_left_2", relu=True)
    right = _conv_bn(x, half, f"{name}_right_1", relu=True)
    right = _depthwise_bn(right, 2, f"{name}_right_2")
    right = _conv_bn(right, half, f"{name}_right_3", relu=True)
    out = keras.layers.Concatenate(name=f"{name}_concat")([left, right])
    return ChannelShuffle(2, name=f"{name}_shuffle")(out)


@register("shufflev2")
def shufflev2(input_shape=(32, 32, 3), num_classes=100, net_size=1, name="shufflev2"):
    """ShuffleNetV2 for 32x32 images: RepDistiller's `ShuffleV2` (net_size 1).

    The student of the CRD table's "ResNet32x4 -> ShuffleV2" pair; about
    1.36M parameters. As in RepDistiller the stem is a 1x1 convolution
    without max-pool, and each of the three stages starts with a stride-2
    down-sampling unit, so a 32x32 image ends as a 4x4 map before global
    pooling. Basic units split the channels in half, convolve one half,
    concatenate and shuffle.

    References: Ma et al. 2018, "ShuffleNet V2: Practical Guidelines for
    Efficient CNN Architecture Design"; Tian et al. 2020, "Contrastive
    Representation Distillation" (RepDistiller `ShuffleV2`,
    models/ShuffleNetv2.py).

    Args:
        input_shape: shape of one image, `(height, width, channels)`.
        num_classes: number of output logits.
        net_size: a key of RepDistiller's width table: 0.2, 0.3, 0.5, 1,
            1.5 or 2.
        name: the model's name.

    Returns:
        A functional `keras.Model` mapping images to logits.

    Example:
    ```python
    student = kd_keras.models.shufflev2((32, 32, 3), 100)
    ```
    """
    if net_size not in _CONFIGS:
        raise ValueError(
            f"Unknown ShuffleNetV2 net_size {net_size!r}: choose one of "
            f"{', '.join(str(size) for size in _CONFIGS)}."
        )
    widths, last_channels, blocks_per_stage = _CONFIGS[net_size]
    inputs = keras.Input(input_shape, name="image")
    x = _conv_bn(inputs, _STEM_CHANNELS, "stem", relu=True)
    for stage, (width, blocks) in enumerate(zip(widths, blocks_per_stage), start=1):
        x = _down_unit(x, width, f"layer{stage}_down")
        for index in range(blocks):
            x = _basic_unit(x, f"layer{stage}_block{index + 1}")
    x = _conv_bn(x, last_channels, "last", relu=True)
    # Global pooling instead of RepDistiller's avg_pool2d(4): identical on
    # 32x32 inputs, and it also accepts 28x28 digits.
    x = keras.layers.GlobalAveragePooling2D(name="avgpool")(x)
    outputs = keras.layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, outputs, name=name)
