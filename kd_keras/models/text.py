"""Text classifiers that read token ids or token distributions: a transformer teacher, a CNN student."""

import keras

from kd_keras.layers import PositionEmbedding
from kd_keras.layers import TokenEmbedding
from kd_keras.layers import is_distribution
from kd_keras.models.registry import register


@keras.saving.register_keras_serializable(package="kd_keras")
class TextClassifier(keras.Model):
    """A classifier of token sequences: a `TokenEmbedding` followed by an encoder.

    Its input is a batch of token ids `(batch, sequence_length)` (int32), the
    form it is served and exported in. It also accepts relaxed one-hot
    token distributions `(batch, sequence_length, vocabulary_size)` (float),
    embedded as `P @ E`, so an augmenter can take gradients with respect to
    its input, as `kd_keras.augment.BackwardPerturbation` does for text.

    It is a functional model (ids in, logits out) whose `call` sends float
    inputs through the same two layers, so it saves, exports and summarises
    like any functional model.

    References:
        Jafari, Rezagholizadeh, Ghodsi 2023, "Improved knowledge
        distillation by utilizing backward pass knowledge in neural
        networks".

    Args:
        embedding: a `kd_keras.layers.TokenEmbedding`.
        encoder: a `keras.Model` (or layer) mapping `(batch,
            sequence_length, embedding.output_dim)` embeddings to logits.
        sequence_length: the number of tokens of each input.
        **kwargs: passed to `keras.Model` (e.g. `name`).

    Returns:
        A `keras.Model` mapping ids or distributions to logits.

    Example:
    ```python
    embedding = kd_keras.layers.TokenEmbedding(1000, 32)
    inputs = keras.Input((64, 32))
    encoder = keras.Model(inputs, keras.layers.Dense(2)(
        keras.layers.GlobalAveragePooling1D()(inputs)))
    model = kd_keras.models.TextClassifier(embedding, encoder, sequence_length=64)
    ```
    """

    def __init__(self, embedding, encoder, sequence_length, **kwargs):
        token_ids = keras.Input((int(sequence_length),), dtype="int32", name="token_ids")
        outputs = encoder(embedding(token_ids))
        super().__init__(token_ids, outputs, **kwargs)
        self.embedding = embedding
        self.encoder = encoder
        self.sequence_length = int(sequence_length)
        # The functional input spec admits ids only; TokenEmbedding checks
        # both forms itself.
        self.input_spec = None

    @property
    def vocabulary_size(self):
        """The size of the vocabulary the model reads."""
        return self.embedding.vocabulary_size

    def call(self, inputs, training=None, mask=None):
        if is_distribution(inputs):
            return self.encoder(self.embedding(inputs), training=training)
        return super().call(inputs, training=training, mask=mask)

    def get_config(self):
        # The constructor's arguments, not the functional graph (as
        # keras_hub models do): from_config rebuilds the graph from them.
        return {
            "name": self.name,
            "trainable": self.trainable,
            "embedding": keras.saving.serialize_keras_object(self.embedding),
            "encoder": keras.saving.serialize_keras_object(self.encoder),
            "sequence_length": self.sequence_length,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        for key in ("embedding", "encoder"):
            config[key] = keras.saving.deserialize_keras_object(config[key])
        return cls(**config)


def _sequence_length(input_shape, vocabulary_size, name):
    if vocabulary_size is None:
        raise ValueError(
            f"{name} needs vocabulary_size: kd_keras.data.load gives it for text "
            "data sets in DataBundle.model_kwargs."
        )
    if len(input_shape) != 1:
        raise ValueError(
            f"{name} reads token ids of shape (sequence_length,), got input_shape "
            f"{tuple(input_shape)}."
        )
    return int(input_shape[0])


@register("text_transformer")
def text_transformer(
    input_shape=(64,),
    num_classes=2,
    vocabulary_size=None,
    embedding_dim=48,
    num_layers=2,
    num_heads=4,
    intermediate_dim=96,
    dropout=0.1,
    name="text_transformer",
):
    """A small pre-norm transformer encoder over tokens; the default text teacher.

    Token embeddings plus learned positions, `num_layers` blocks of
    self-attention and a ReLU feed-forward network (each with a residual
    connection and layer normalisation first), mean pooling over positions
    and a linear layer to logits. Padding is not masked: a model reading
    distributions has no ids to mask with, so both networks learn what the
    padding token means.

    Args:
        input_shape: `(sequence_length,)`.
        num_classes: number of output logits.
        vocabulary_size: size of the token vocabulary (required).
        embedding_dim: size of the token vectors and of the model.
        num_layers: transformer blocks.
        num_heads: attention heads (`embedding_dim` must divide by it).
        intermediate_dim: hidden units of each feed-forward network.
        dropout: dropout of attention, feed-forward and pooled features.
        name: the model's name.

    Returns:
        A `kd_keras.models.TextClassifier` mapping ids or distributions to
        logits.

    Example:
    ```python
    teacher = kd_keras.models.text_transformer((64,), 4, vocabulary_size=1000)
    ```
    """
    length = _sequence_length(input_shape, vocabulary_size, "text_transformer")
    if embedding_dim % num_heads:
        raise ValueError(
            f"embedding_dim ({embedding_dim}) must be a multiple of num_heads ({num_heads})."
        )
    inputs = keras.Input((length, embedding_dim), name="token_vectors")
    x = PositionEmbedding(length)(inputs)
    for _ in range(num_layers):
        h = keras.layers.LayerNormalization(epsilon=1e-6)(x)
        h = keras.layers.MultiHeadAttention(num_heads, embedding_dim // num_heads, dropout=dropout)(
            h, h
        )
        x = x + keras.layers.Dropout(dropout)(h)
        h = keras.layers.LayerNormalization(epsilon=1e-6)(x)
        h = keras.layers.Dense(intermediate_dim, activation="relu")(h)
        h = keras.layers.Dense(embedding_dim)(h)
        x = x + keras.layers.Dropout(dropout)(h)
    x = keras.layers.LayerNormalization(epsilon=1e-6)(x)
    x = keras.layers.GlobalAveragePooling1D()(x)
    x = keras.layers.Dropout(dropout)(x)
    outputs = keras.layers.Dense(num_classes, name="logits")(x)
    encoder = keras.Model(inputs, outputs, name=f"{name}_encoder")
    embedding = TokenEmbedding(vocabulary_size, embedding_dim, name="token_embedding")
    return TextClassifier(embedding, encoder, length, name=name)


@register("text_cnn")
def text_cnn(
    input_shape=(64,),
    num_classes=2,
    vocabulary_size=None,
    embedding_dim=32,
    filters=32,
    kernel_sizes=(3, 5),
    dropout=0.2,
    name="text_cnn",
):
    """A one-layer convolutional text classifier (Kim 2014); the default text student.

    Token embeddings, one bank of 1-D convolutions per kernel size (ReLU),
    max pooling over positions, dropout and a linear layer to logits. It
    sees n-grams up to the largest kernel size and no further, which is
    what separates it from the transformer teacher. Convolutions, unlike a
    GRU, compile under XLA on CPU.

    References:
        Kim. Convolutional Neural Networks for Sentence Classification,
        EMNLP 2014.

    Args:
        input_shape: `(sequence_length,)`.
        num_classes: number of output logits.
        vocabulary_size: size of the token vocabulary (required; shared
            with the teacher).
        embedding_dim: size of the token vectors.
        filters: filters per kernel size.
        kernel_sizes: widths of the convolutions, in tokens.
        dropout: dropout of the pooled features.
        name: the model's name.

    Returns:
        A `kd_keras.models.TextClassifier` mapping ids or distributions to
        logits.

    Example:
    ```python
    student = kd_keras.models.text_cnn((64,), 4, vocabulary_size=1000)
    ```
    """
    length = _sequence_length(input_shape, vocabulary_size, "text_cnn")
    inputs = keras.Input((length, embedding_dim), name="token_vectors")
    pooled = [
        keras.layers.GlobalMaxPooling1D()(
            keras.layers.Conv1D(filters, size, padding="same", activation="relu")(inputs)
        )
        for size in kernel_sizes
    ]
    x = pooled[0] if len(pooled) == 1 else keras.layers.Concatenate()(pooled)
    x = keras.layers.Dropout(dropout)(x)
    outputs = keras.layers.Dense(num_classes, name="logits")(x)
    encoder = keras.Model(inputs, outputs, name=f"{name}_encoder")
    embedding = TokenEmbedding(vocabulary_size, embedding_dim, name="token_embedding")
    return TextClassifier(embedding, encoder, length, name=name)
