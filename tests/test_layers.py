"""Tests for `kd_keras.layers` and the text models built on them."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import kd_keras
from kd_keras.layers import PositionEmbedding
from kd_keras.layers import TokenEmbedding

VOCABULARY = 30


def _ids(shape=(4, 7), seed=0):
    return np.random.default_rng(seed).integers(0, VOCABULARY, shape).astype("int32")


def test_ids_and_their_one_hot_distributions_embed_identically():
    embedding = TokenEmbedding(VOCABULARY, 5)
    ids = _ids()
    from_ids = embedding(ids)
    from_one_hot = embedding(keras.ops.one_hot(ids, VOCABULARY))
    assert from_ids.shape == from_one_hot.shape == (4, 7, 5)
    np.testing.assert_allclose(from_one_hot, from_ids, rtol=0, atol=1e-7)
    # A mixture embeds as the mixture of the embeddings.
    mixed = 0.25 * keras.ops.one_hot(ids, VOCABULARY) + 0.75 * keras.ops.one_hot(
        ids[::-1], VOCABULARY
    )
    np.testing.assert_allclose(
        embedding(mixed), 0.25 * from_ids + 0.75 * embedding(ids[::-1]), atol=1e-6
    )


def test_gradient_flows_to_the_distribution():
    embedding = TokenEmbedding(VOCABULARY, 5)
    distribution = tf.Variable(keras.ops.one_hot(_ids(), VOCABULARY))
    with tf.GradientTape() as tape:
        value = keras.ops.sum(embedding(distribution) ** 2)
    gradient = tape.gradient(value, distribution)
    assert gradient.shape == (4, 7, VOCABULARY)
    # d/dP sum((P E)^2) = 2 (P E) E^T, non-zero for a random E.
    expected = 2 * embedding(distribution) @ keras.ops.transpose(embedding.embeddings)
    np.testing.assert_allclose(gradient, expected, rtol=1e-5, atol=1e-6)


def test_float_inputs_of_the_wrong_width_are_refused():
    embedding = TokenEmbedding(VOCABULARY, 5)
    with pytest.raises(ValueError, match=r"distributions of shape \(\.\.\., 30\).*as integers"):
        embedding(np.zeros((2, 7), "float32"))
    with pytest.raises(ValueError, match="must be positive"):
        TokenEmbedding(0, 5)


def test_layers_round_trip_their_config():
    embedding = TokenEmbedding(VOCABULARY, 5, embeddings_initializer="zeros", name="e")
    clone = TokenEmbedding.from_config(embedding.get_config())
    assert (clone.vocabulary_size, clone.output_dim, clone.name) == (VOCABULARY, 5, "e")
    positions = PositionEmbedding(9)
    assert PositionEmbedding.from_config(positions.get_config()).sequence_length == 9
    vectors = np.zeros((2, 6, 4), "float32")
    out = positions(vectors)
    np.testing.assert_allclose(out, np.broadcast_to(positions.position_embeddings[:6], (2, 6, 4)))


@pytest.mark.parametrize("name", ["text_transformer", "text_cnn"])
def test_text_models_read_ids_and_distributions_and_survive_saving(name, tmp_path):
    keras.utils.set_random_seed(0)
    model = kd_keras.models.get(name, (7,), 3, vocabulary_size=VOCABULARY)
    assert isinstance(model, kd_keras.models.TextClassifier)
    assert model.input_shape == (None, 7) and model.output_shape == (None, 3)
    ids = _ids()
    from_ids = model.predict(ids, verbose=0)
    from_one_hot = model(keras.ops.one_hot(ids, VOCABULARY), training=False)
    np.testing.assert_allclose(from_one_hot, from_ids, atol=1e-5)
    model.save(tmp_path / "model.keras")
    loaded = keras.saving.load_model(tmp_path / "model.keras", safe_mode=True)
    np.testing.assert_allclose(loaded.predict(ids, verbose=0), from_ids, atol=1e-6)
    np.testing.assert_allclose(
        loaded(keras.ops.one_hot(ids, VOCABULARY), training=False), from_ids, atol=1e-5
    )


def test_text_models_need_a_vocabulary_and_a_sequence_shape():
    with pytest.raises(ValueError, match="needs vocabulary_size"):
        kd_keras.models.get("text_cnn", (7,), 3)
    with pytest.raises(ValueError, match=r"shape \(sequence_length,\)"):
        kd_keras.models.get("text_cnn", (28, 28, 1), 3, vocabulary_size=VOCABULARY)
