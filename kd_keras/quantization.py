"""DoReFa quantisation-aware training: k-bit weights and activations for low-bit students.

The quantisers follow DoReFa-Net. Weights are squashed by `tanh`, scaled into
`[0, 1]` by the layer's largest magnitude, rounded to `2^k` levels and mapped
back to `[-1, 1]`; 1-bit weights are `sign(w) * mean|w|`. Activations are
clipped to `[0, 1]` and rounded to `2^k` levels. Rounding passes gradients
straight through. At 32 bits or more a quantiser is the identity.

`quantize(model, bits)` rebuilds a functional model with the same layers, its
`Dense`, `Conv2D` and `DepthwiseConv2D` layers replaced by their quantised
versions (first and last full precision by default) and a `QuantActivation`
after each ReLU that feeds a low-bit layer, weights copied.

The rounding is a plain `round` whose gradient is overridden, not the
`x + stop_gradient(q - x)` form: both train identically, but the exported
graph computes `q` alone rather than `x + (q - x)` (one SUB and one ADD
fewer per quantiser in an int8 model). At conversion the weight quantisers
fold into constant kernels. TFLite has no integer ROUND kernel, so an int8
model runs each activation quantiser's rounding in float between a
DEQUANTIZE and a QUANTIZE: LiteRT on a CPU runs it, an integer-only
accelerator would hand those ops back to the CPU.
"""

import numbers

import keras
from keras import ops

# Above this a quantiser is the identity (DoReFa's "32 bits").
FULL_PRECISION_BITS = 32


def _straight_through(*args, upstream=None):
    # TensorFlow and JAX pass the upstream gradient positionally, PyTorch by name.
    if upstream is None:
        (upstream,) = args
    return upstream


@ops.custom_gradient
def _round_straight_through(x):
    return ops.round(x), _straight_through


@ops.custom_gradient
def _sign_straight_through(x):
    # sign(0) is +1, so the result is truly binary.
    return ops.where(x >= 0, ops.ones_like(x), -ops.ones_like(x)), _straight_through


def _quantize_unit(x, bits):
    # DoReFa's quantize_k: x in [0, 1] onto 2^k evenly spaced levels.
    levels = float(2**bits - 1)
    return ops.divide(_round_straight_through(ops.multiply(x, levels)), levels)


def _check_bits(bits, name="bits"):
    if isinstance(bits, bool) or not isinstance(bits, numbers.Integral) or bits < 1:
        raise ValueError(
            f"{name} must be a whole number of bits >= 1, got {bits!r}: pass "
            f"e.g. {name}=2 (or {FULL_PRECISION_BITS} for full precision)."
        )
    return int(bits)


def quantize_weights(w, bits):
    """Quantise weights to `bits` bits with DoReFa's weight quantiser.

    For `bits >= 2`: `2 * quantize_k(tanh(w) / (2 max|tanh(w)|) + 0.5) - 1`,
    `2^bits` levels in `[-1, 1]`, where `quantize_k(x) = round((2^k - 1) x) /
    (2^k - 1)`. For `bits == 1`: `sign(w) * mean|w|`, with `sign(0) = +1` so
    the weights are truly binary. At 32 bits or more `w` is returned as it is.
    Rounding and sign pass the gradient straight through; for `bits >= 2` it
    also flows through `tanh` and the maximum, as in the reference code.
    Use it inside a layer's call on its kernel, as `QuantDense` does.

    References:
        Zhou et al. 2016, "DoReFa-Net: Training Low Bitwidth Convolutional
        Neural Networks with Low Bitwidth Gradients" (arXiv 1606.06160).

    Args:
        w: a float tensor (a kernel), any shape.
        bits: bits per weight, an integer >= 1.

    Returns:
        A tensor of `w`'s shape and dtype holding the quantised weights.

    Example:
    ```python
    q = kd_keras.quantization.quantize_weights(layer.kernel, bits=2)
    ```
    """
    bits = _check_bits(bits)
    w = ops.convert_to_tensor(w)
    if bits >= FULL_PRECISION_BITS:
        return w
    if bits == 1:
        # DoReFa's sign(w / E) * E: the gradient reaches w unscaled. The floor
        # keeps an all-zero kernel finite.
        scale = ops.stop_gradient(ops.maximum(ops.mean(ops.abs(w)), keras.backend.epsilon()))
        return ops.multiply(_sign_straight_through(ops.divide(w, scale)), scale)
    squashed = ops.tanh(w)
    # An all-zero kernel (e.g. zero-initialised) would divide by zero.
    largest = ops.maximum(ops.max(ops.abs(squashed)), keras.backend.epsilon())
    unit = ops.divide(squashed, 2.0 * largest) + 0.5
    return 2.0 * _quantize_unit(unit, bits) - 1.0


def quantize_activations(x, bits):
    """Quantise activations to `bits` bits with DoReFa's activation quantiser.

    Computes `quantize_k(clip(x, 0, 1))`: `2^bits` evenly spaced levels in
    `[0, 1]`, `quantize_k(x) = round((2^k - 1) x) / (2^k - 1)`. The gradient
    is 1 inside `[0, 1]` and 0 outside (the clip's; rounding passes it
    straight through). At 32 bits or more `x` is returned as it is, unclipped.
    Use it on non-negative activations (after a ReLU), as `QuantActivation`
    does.

    References:
        Zhou et al. 2016, "DoReFa-Net: Training Low Bitwidth Convolutional
        Neural Networks with Low Bitwidth Gradients" (arXiv 1606.06160).

    Args:
        x: a float tensor.
        bits: bits per activation, an integer >= 1.

    Returns:
        A tensor of `x`'s shape and dtype.

    Example:
    ```python
    q = kd_keras.quantization.quantize_activations(keras.ops.relu(x), bits=2)
    ```
    """
    bits = _check_bits(bits)
    x = ops.convert_to_tensor(x)
    if bits >= FULL_PRECISION_BITS:
        return x
    return _quantize_unit(ops.clip(x, 0.0, 1.0), bits)


@keras.saving.register_keras_serializable(package="kd_keras")
class QuantDense(keras.layers.Dense):
    """A `Dense` layer whose kernel is quantised to `bits` bits in every call.

    The float kernel is the trained variable; each call multiplies by
    `quantize_weights(kernel, bits)` (the bias stays float, as in DoReFa).
    Use it for the hidden layers of a low-bit student, or let `quantize`
    place it.

    References:
        Zhou et al. 2016, "DoReFa-Net: Training Low Bitwidth Convolutional
        Neural Networks with Low Bitwidth Gradients" (arXiv 1606.06160).

    Args:
        units: output units.
        bits: bits per weight (default 2, the role-wise KD paper's students).
        **kwargs: passed to `keras.layers.Dense`.

    Returns:
        A layer like `keras.layers.Dense` with quantised weights.

    Example:
    ```python
    x = kd_keras.quantization.QuantDense(128, bits=2, activation="relu")(x)
    ```
    """

    def __init__(self, units, bits=2, **kwargs):
        super().__init__(units, **kwargs)
        self.bits = _check_bits(bits)

    def call(self, inputs, training=None):
        x = ops.matmul(inputs, quantize_weights(self.kernel, self.bits))
        if self.bias is not None:
            x = ops.add(x, self.bias)
        if self.activation is not None:
            x = self.activation(x)
        return x

    def get_config(self):
        return {**super().get_config(), "bits": self.bits}


@keras.saving.register_keras_serializable(package="kd_keras")
class QuantConv2D(keras.layers.Conv2D):
    """A `Conv2D` layer whose kernel is quantised to `bits` bits in every call.

    Each call convolves with `quantize_weights(kernel, bits)`; the bias stays
    float.

    References:
        Zhou et al. 2016, "DoReFa-Net: Training Low Bitwidth Convolutional
        Neural Networks with Low Bitwidth Gradients" (arXiv 1606.06160).

    Args:
        filters: output channels.
        kernel_size: size of the convolution window.
        bits: bits per weight (default 2).
        **kwargs: passed to `keras.layers.Conv2D`.

    Returns:
        A layer like `keras.layers.Conv2D` with quantised weights.

    Example:
    ```python
    x = kd_keras.quantization.QuantConv2D(64, 3, bits=2, padding="same")(x)
    ```
    """

    def __init__(self, filters, kernel_size, bits=2, **kwargs):
        super().__init__(filters, kernel_size, **kwargs)
        self.bits = _check_bits(bits)

    def convolution_op(self, inputs, kernel):
        return super().convolution_op(inputs, quantize_weights(kernel, self.bits))

    def get_config(self):
        return {**super().get_config(), "bits": self.bits}


@keras.saving.register_keras_serializable(package="kd_keras")
class QuantDepthwiseConv2D(keras.layers.DepthwiseConv2D):
    """A `DepthwiseConv2D` layer whose kernel is quantised to `bits` bits in every call.

    Each call convolves with `quantize_weights(kernel, bits)`; the bias stays
    float. MobileNet students need it next to `QuantConv2D`.

    References:
        Zhou et al. 2016, "DoReFa-Net: Training Low Bitwidth Convolutional
        Neural Networks with Low Bitwidth Gradients" (arXiv 1606.06160).

    Args:
        kernel_size: size of the convolution window.
        bits: bits per weight (default 2).
        **kwargs: passed to `keras.layers.DepthwiseConv2D`.

    Returns:
        A layer like `keras.layers.DepthwiseConv2D` with quantised weights.

    Example:
    ```python
    x = kd_keras.quantization.QuantDepthwiseConv2D(3, bits=2, padding="same")(x)
    ```
    """

    def __init__(self, kernel_size, bits=2, **kwargs):
        super().__init__(kernel_size, **kwargs)
        self.bits = _check_bits(bits)

    def call(self, inputs):
        outputs = ops.depthwise_conv(
            inputs,
            quantize_weights(self.kernel, self.bits),
            strides=self.strides,
            padding=self.padding,
            dilation_rate=self.dilation_rate,
            data_format=self.data_format,
        )
        if self.use_bias:
            # The bias is per output channel, on the channel axis.
            channel_axis = -1 if self.data_format == "channels_last" else 1
            shape = [1] * len(outputs.shape)
            shape[channel_axis] = -1
            outputs = ops.add(outputs, ops.reshape(self.bias, shape))
        if self.activation is not None:
            return self.activation(outputs)
        return outputs

    def get_config(self):
        return {**super().get_config(), "bits": self.bits}


@keras.saving.register_keras_serializable(package="kd_keras")
class QuantActivation(keras.layers.Layer):
    """Quantises activations to `bits` bits: `quantize_k(clip(x, 0, 1))`.

    Put it after a ReLU whose output feeds a low-bit layer, so that layer
    reads `2^bits`-level inputs (DoReFa's bounded activation). At 32 bits or
    more it is the identity.

    References:
        Zhou et al. 2016, "DoReFa-Net: Training Low Bitwidth Convolutional
        Neural Networks with Low Bitwidth Gradients" (arXiv 1606.06160).

    Args:
        bits: bits per activation (default 2).
        **kwargs: passed to `keras.layers.Layer`.

    Returns:
        A layer mapping a tensor to its quantised copy, same shape.

    Example:
    ```python
    x = kd_keras.quantization.QuantActivation(bits=2)(keras.layers.ReLU()(x))
    ```
    """

    def __init__(self, bits=2, **kwargs):
        super().__init__(**kwargs)
        self.bits = _check_bits(bits)

    def call(self, inputs):
        return quantize_activations(inputs, self.bits)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "bits": self.bits}


_QUANTIZED_CLASS = {
    keras.layers.Dense: QuantDense,
    keras.layers.Conv2D: QuantConv2D,
    keras.layers.DepthwiseConv2D: QuantDepthwiseConv2D,
}
_RELU_FUNCTIONS = (keras.activations.relu, keras.activations.relu6)


def quantize(model, bits, activation_bits=None, keep_first_and_last=True):
    """Return a low-bit copy of a model: DoReFa weights and activations, weights copied.

    The copy has the model's layers and names. Its `Dense`, `Conv2D` and
    `DepthwiseConv2D` layers (exactly those classes) become `QuantDense`,
    `QuantConv2D` and `QuantDepthwiseConv2D` with `bits`-bit weights, except
    the first and last of them, which stay full precision by default (as in
    DoReFa-Net and the role-wise KD paper). A `QuantActivation` with
    `activation_bits` is inserted after every ReLU (a `ReLU` layer, an
    `Activation("relu")` or a layer built with `activation="relu"`) whose
    output reaches a low-bit layer through layers without weights, so every
    low-bit layer reads quantised inputs, while the full-precision last
    layer reads float ones as in the reference code. The copy starts from
    the model's weights; train it (e.g. as a `kd_keras.Distiller` student)
    to adapt them. Layers inside nested models are copied unchanged.

    References:
        Zhou et al. 2016, "DoReFa-Net: Training Low Bitwidth Convolutional
        Neural Networks with Low Bitwidth Gradients" (arXiv 1606.06160);
        Fu et al. 2020, "Role-Wise Data Augmentation for Knowledge
        Distillation" (arXiv 2004.08861), 2-bit DoReFa students.

    Args:
        model: a functional or built `keras.Sequential` model.
        bits: bits per weight, an integer >= 1 (32 or more: full precision).
        activation_bits: bits per quantised activation; defaults to `bits`.
        keep_first_and_last: keep the first and last weight layers at full
            precision.

    Returns:
        A new functional `keras.Model` with the model's name.

    Example:
    ```python
    student = kd_keras.quantize(kd_keras.models.get("cnn"), bits=2)
    ```
    """
    bits = _check_bits(bits, "bits")
    activation_bits = (
        bits if activation_bits is None else _check_bits(activation_bits, "activation_bits")
    )
    model = _as_functional(model)
    weight_layers = [layer for layer in model.layers if type(layer) in _QUANTIZED_CLASS]
    low_bit = weight_layers[1:-1] if keep_first_and_last else weight_layers
    if not low_bit:
        raise ValueError(
            f"{model.name!r} has {len(weight_layers)} Dense/Conv2D/"
            "DepthwiseConv2D layers and keep_first_and_last=True keeps the "
            "first and last at full precision, leaving none to quantise: pass "
            "keep_first_and_last=False or a deeper model."
        )
    low_bit_names = {layer.name for layer in low_bit}
    quantized_relus = set()
    if activation_bits < FULL_PRECISION_BITS:
        quantized_relus = _relus_feeding(model, low_bit_names)
    pairs = []
    followed_by_quantizer = set()

    def clone_layer(layer):
        config = layer.get_config()
        if layer.name in low_bit_names:
            clone = _QUANTIZED_CLASS[type(layer)].from_config({**config, "bits": bits})
        else:
            clone = layer.__class__.from_config(config)
        if layer.name in quantized_relus:
            followed_by_quantizer.add(id(clone))
        pairs.append((layer, clone))
        return clone

    quantizer_names = set()

    def call_layer(layer, *args, **kwargs):
        outputs = layer(*args, **kwargs)
        if id(layer) not in followed_by_quantizer:
            return outputs
        # A shared layer is called more than once; layer names must stay unique.
        name = f"{layer.name}_quant"
        while name in quantizer_names:
            name += "_"
        quantizer_names.add(name)
        return QuantActivation(activation_bits, name=name)(outputs)

    quantized = keras.models.clone_model(
        model, clone_function=clone_layer, call_function=call_layer
    )
    for layer, clone in pairs:
        clone.set_weights(layer.get_weights())
    return quantized


def _as_functional(model):
    if isinstance(model, keras.Sequential):
        if not model.built or not model.inputs:
            raise ValueError(
                f"Sequential model {model.name!r} is not built: start it with "
                "keras.Input(shape) before quantising it."
            )
        return keras.Model(model.inputs, model.outputs, name=model.name)
    try:
        config = model.get_config()
    except NotImplementedError:
        config = {}
    if not isinstance(config, dict) or "input_layers" not in config:
        raise ValueError(
            f"quantize rebuilds a functional model layer by layer, but "
            f"{model.name!r} is a subclassed {type(model).__name__}: build the "
            "student with the functional API (every kd_keras.models builder does)."
        )
    return model


def _is_relu(layer):
    if isinstance(layer, keras.layers.ReLU):
        return not layer.negative_slope and not layer.threshold
    return getattr(layer, "activation", None) in _RELU_FUNCTIONS


def _relus_feeding(model, low_bit_names):
    # The functional config names each layer's inbound layers; walking it
    # downstream finds the ReLUs whose output reaches a low-bit layer without
    # crossing another weight layer.
    consumers = {layer.name: set() for layer in model.layers}
    for layer_config in model.get_config()["layers"]:
        for inbound in _inbound_names(layer_config["inbound_nodes"]):
            consumers[inbound].add(layer_config["name"])
    weight_names = {
        layer.name for layer in model.layers if isinstance(layer, tuple(_QUANTIZED_CLASS))
    }
    reaches = {}

    def reaches_low_bit(name):
        if name not in reaches:
            reaches[name] = any(
                consumer in low_bit_names
                or (consumer not in weight_names and reaches_low_bit(consumer))
                for consumer in consumers[name]
            )
        return reaches[name]

    return {layer.name for layer in model.layers if _is_relu(layer) and reaches_low_bit(layer.name)}


def _inbound_names(value):
    if isinstance(value, dict):
        history = value.get("keras_history")
        names = {history[0]} if history else set()
        for item in value.values():
            names |= _inbound_names(item)
        return names
    if isinstance(value, (list, tuple)):
        return set().union(*(_inbound_names(item) for item in value))
    return set()
