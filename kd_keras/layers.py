"""Layers for text models that read token ids or relaxed token distributions."""

import keras
from keras import ops


def is_distribution(inputs):
    """True when `inputs` are float token distributions rather than integer ids.

    Args:
        inputs: a tensor of token ids (integers) or distributions (floats).

    Returns:
        A Python bool, decided by the dtype alone.

    Example:
    ```python
    kd_keras.layers.is_distribution(keras.ops.one_hot(ids, 1000))  # True
    ```
    """
    return "float" in keras.backend.standardize_dtype(inputs.dtype)


@keras.saving.register_keras_serializable(package="kd_keras")
class TokenEmbedding(keras.layers.Layer):
    """Embeds token ids by lookup, or token distributions as `P @ E`.

    Integer inputs `(..., seq)` are ids and are looked up in the embedding
    matrix `E` of shape `(vocabulary_size, output_dim)`, like
    `keras.layers.Embedding`. Float inputs `(..., seq, vocabulary_size)` are
    distributions over the vocabulary (relaxed one-hot vectors) and are
    embedded as their expectation `P @ E`; the one-hot vectors of some ids
    give exactly the ids' embeddings. A model built on this layer can be
    served on ids and differentiated with respect to its input
    distributions, which is how `kd_keras.augment.BackwardPerturbation`
    perturbs text: teacher and student must share the vocabulary, and may
    have different `output_dim`.

    References:
        Jafari, Rezagholizadeh, Ghodsi 2023, "Improved knowledge
        distillation by utilizing backward pass knowledge in neural
        networks" (perturbing a continuous relaxation of discrete inputs).

    Args:
        vocabulary_size: number of tokens; ids lie in `[0, vocabulary_size)`.
        output_dim: size of each embedding vector.
        embeddings_initializer: initializer of `E`.
        embeddings_regularizer: optional regularizer of `E`.
        **kwargs: passed to `keras.layers.Layer`.

    Returns:
        A layer mapping `(..., seq)` ids or `(..., seq, vocabulary_size)`
        distributions to `(..., seq, output_dim)` embeddings.

    Example:
    ```python
    embedding = kd_keras.layers.TokenEmbedding(1000, 64)
    from_ids = embedding(token_ids)
    from_distributions = embedding(keras.ops.one_hot(token_ids, 1000))
    ```
    """

    def __init__(
        self,
        vocabulary_size,
        output_dim,
        embeddings_initializer="uniform",
        embeddings_regularizer=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if int(vocabulary_size) < 1 or int(output_dim) < 1:
            raise ValueError(
                "vocabulary_size and output_dim must be positive, got "
                f"{vocabulary_size} and {output_dim}."
            )
        self.vocabulary_size = int(vocabulary_size)
        self.output_dim = int(output_dim)
        self.embeddings_initializer = keras.initializers.get(embeddings_initializer)
        self.embeddings_regularizer = keras.regularizers.get(embeddings_regularizer)

    def build(self, input_shape=None):
        self.embeddings = self.add_weight(
            shape=(self.vocabulary_size, self.output_dim),
            initializer=self.embeddings_initializer,
            regularizer=self.embeddings_regularizer,
            name="embeddings",
        )

    def call(self, inputs):
        if is_distribution(inputs):
            if inputs.shape[-1] != self.vocabulary_size:
                raise ValueError(
                    "Float inputs are token distributions of shape (..., "
                    f"{self.vocabulary_size}), got shape {inputs.shape}: pass "
                    "token ids as integers."
                )
            return ops.matmul(inputs, ops.cast(self.embeddings, inputs.dtype))
        return ops.take(self.embeddings, ops.cast(inputs, "int32"), axis=0)

    def get_config(self):
        return {
            **super().get_config(),
            "vocabulary_size": self.vocabulary_size,
            "output_dim": self.output_dim,
            "embeddings_initializer": keras.initializers.serialize(self.embeddings_initializer),
            "embeddings_regularizer": keras.regularizers.serialize(self.embeddings_regularizer),
        }


@keras.saving.register_keras_serializable(package="kd_keras")
class PositionEmbedding(keras.layers.Layer):
    """Adds a learned embedding of each position to a sequence of vectors.

    Attention has no notion of order; a text transformer adds one learned
    vector per position to its token embeddings (as
    `keras_hub.layers.PositionEmbedding` does, without the dependency).

    Args:
        sequence_length: the longest sequence the layer accepts.
        embeddings_initializer: initializer of the position vectors.
        **kwargs: passed to `keras.layers.Layer`.

    Returns:
        A layer mapping `(batch, seq, dim)` to `(batch, seq, dim)`, `seq <=
        sequence_length`.

    Example:
    ```python
    x = kd_keras.layers.PositionEmbedding(64)(token_vectors)
    ```
    """

    def __init__(self, sequence_length, embeddings_initializer="glorot_uniform", **kwargs):
        super().__init__(**kwargs)
        self.sequence_length = int(sequence_length)
        self.embeddings_initializer = keras.initializers.get(embeddings_initializer)

    def build(self, input_shape):
        self.position_embeddings = self.add_weight(
            shape=(self.sequence_length, input_shape[-1]),
            initializer=self.embeddings_initializer,
            name="position_embeddings",
        )

    def call(self, inputs):
        length = ops.shape(inputs)[-2]
        positions = ops.cast(self.position_embeddings[:length], inputs.dtype)
        return inputs + positions

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {
            **super().get_config(),
            "sequence_length": self.sequence_length,
            "embeddings_initializer": keras.initializers.serialize(self.embeddings_initializer),
        }
