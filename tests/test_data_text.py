"""Tests for `kd_keras.data.text`: the offline synthetic task, TFDS text sets, the tokenizer."""

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

import kd_keras
from kd_keras import data as kd_data
from kd_keras.data import reviews
from kd_keras.data import text as text_data

# Subprocesses, trainings and conversions: the large tier (`pytest -m large`).
pytestmark = pytest.mark.large


def _oracle(text):
    """Label a synthetic review by its documented rule, from its words alone."""
    words = text.rstrip(".").replace(",", "").split()
    topic = next(t for t, nouns in enumerate(reviews._TOPIC_NOUNS) if set(words) & set(nouns))
    votes, negated = 0, False
    for word in words:
        if word == "the":
            negated = False  # a clause starts
        elif word in reviews._NEGATIONS:
            negated = True
        elif word in reviews._POSITIVE or word in reviews._NEGATIVE:
            votes += 1 if (word in reviews._POSITIVE) != negated else -1
    return 2 * topic + int(votes > 0)


def test_synthetic_reviews_follow_their_documented_rule():
    texts, labels = reviews.synthetic_reviews(2000, seed=5)
    assert [_oracle(text) for text in texts] == list(labels)
    assert np.all(np.bincount(labels, minlength=4) > 400)
    # Sentiment is not in the words alone: every adjective appears in
    # reviews of both sentiments, negated or not.
    good = [label % 2 for text, label in zip(texts, labels) if "good" in text.split()]
    assert 0.2 < np.mean(good) < 0.8
    # Deterministic, and a smaller count is a prefix of a larger one.
    fewer, fewer_labels = reviews.synthetic_reviews(3, seed=5)
    assert fewer == texts[:3] and list(fewer_labels) == list(labels[:3])


def test_offline_default_loads_and_is_deterministic():
    bundle = kd_data.load("text-default")
    assert isinstance(bundle, text_data.TextDataBundle)
    (x_train, y_train), (x_test, y_test) = bundle.train, bundle.test
    assert x_train.shape == (16000, 40) and x_test.shape == (2000, 40)
    assert x_train.dtype == np.int32 and y_train.dtype == np.int32 and y_test.dtype == np.int32
    assert bundle.input_shape == (40,) and bundle.num_classes == 4
    vocabulary_size = bundle.model_kwargs["vocabulary_size"]
    assert vocabulary_size == len(reviews.vocabulary()) + 2
    assert x_train.max() < vocabulary_size and not np.any(x_train == 1)  # no OOV
    assert bundle.sample("test", 3).dtype == np.int32
    again = text_data.load_text_default()
    np.testing.assert_array_equal(again.train[0], x_train)
    assert again.tokenizer.get_vocabulary() == bundle.tokenizer.get_vocabulary()


def test_tokenizer_round_trips_through_its_vocabulary_file(tmp_path):
    texts = ["The plot was NOT good!", "a brand new word, twice: word"]
    tokenizer = text_data.make_tokenizer(8, texts=texts + ["the plot"])
    path = text_data.save_vocabulary(tokenizer, tmp_path / "vocabulary.txt")
    reloaded = text_data.load_tokenizer(path, 8)
    assert reloaded.get_vocabulary() == tokenizer.get_vocabulary()
    np.testing.assert_array_equal(
        text_data.tokenize(reloaded, texts), text_data.tokenize(tokenizer, texts)
    )
    ids = text_data.tokenize(tokenizer, ["the plot was not good"])
    vocabulary = tokenizer.get_vocabulary()
    assert [vocabulary[i] for i in ids[0] if i] == ["the", "plot", "was", "not", "good"]


def test_serving_model_takes_raw_strings_and_gives_the_students_logits(tmp_path):
    bundle = text_data.load_text_default(train_size=10, test_size=10)
    keras.utils.set_random_seed(0)
    student = kd_keras.models.get(
        "text_cnn", bundle.input_shape, bundle.num_classes, **bundle.model_kwargs
    )
    serve = text_data.serving_model(bundle.tokenizer, student)
    texts, _ = reviews.synthetic_reviews(6, seed=7)
    expected = student.predict(text_data.tokenize(bundle.tokenizer, texts), verbose=0)
    np.testing.assert_allclose(serve.predict(tf.constant(texts), verbose=0), expected, atol=1e-6)
    serve.save(tmp_path / "serving.keras")
    loaded = keras.saving.load_model(tmp_path / "serving.keras", safe_mode=True)
    np.testing.assert_allclose(loaded.predict(tf.constant(texts), verbose=0), expected, atol=1e-6)


@pytest.mark.parametrize(
    "name, classes", [("imdb_reviews", 2), ("ag_news_subset", 4), ("glue/sst2", 2)]
)
def test_tfds_text_sets_load_as_token_ids(name, classes, tmp_path):
    assert text_data.is_tfds_text(f"tfds:{name}")
    with tfds.testing.mock_data(num_examples=12):
        bundle = kd_data.load(f"tfds:{name}", data_dir=str(tmp_path), download=True)
        assert isinstance(bundle, text_data.TextDataBundle)
        assert bundle.name == f"tfds:{name}" and bundle.num_classes == classes
        assert bundle.input_shape == (256,)
        ids, labels = next(iter(bundle.train.batch(12)))
        assert ids.shape == (12, 256) and ids.dtype == tf.int32
        assert labels.dtype == tf.int32 and 0 <= int(tf.reduce_min(labels))
        vocabulary_size = bundle.model_kwargs["vocabulary_size"]
        assert vocabulary_size == bundle.tokenizer.vocabulary_size() > 2
        assert int(tf.reduce_max(ids)) < vocabulary_size and int(tf.reduce_max(ids)) > 1
        assert bundle.sample("test", 4).shape == (4, 256)


def test_text_sets_are_told_apart_from_image_sets(tmp_path):
    assert text_data.is_tfds_text("tfds:ag_news_subset")
    assert not text_data.is_tfds_text("tfds:mnist")
    assert not text_data.is_tfds_text("tfds:cifar10")  # its "id" feature is Text
    assert not text_data.is_tfds_text("tfds:no_such_data_set_xyz")
    assert not text_data.is_tfds_text("text-default")
    assert text_data.text_features(tfds.builder("ag_news_subset").info.features) == [
        "title",
        "description",
    ]
    with pytest.raises(kd_data.DataError, match="tfds build imdb_reviews"):
        kd_data.load("tfds:imdb_reviews", data_dir=str(tmp_path), download=False)


def test_a_text_student_exports_with_parity_and_int8_is_refused_clearly(tmp_path):
    keras.utils.set_random_seed(0)
    student = kd_keras.models.get("text_cnn", (12,), 3, vocabulary_size=40)
    ids = np.random.default_rng(0).integers(0, 40, (64, 12)).astype("int64")
    report = kd_keras.export.export_student(
        student,
        tmp_path / "ok",
        formats=("saved_model", "tflite", "tflite_float16"),
        check_data=ids,
    )
    assert report["saved_model"]["max_abs_diff"] < 1e-5
    assert report["tflite"]["max_abs_diff"] < 1e-4
    assert report["tflite_float16"]["agreement"] >= 0.98
    with pytest.raises(ValueError, match="'tflite_int8' quantises float inputs.*token ids"):
        kd_keras.export.export_student(
            student,
            tmp_path / "int8",
            formats=("tflite_int8",),
            check_data=ids,
            representative_data=ids,
        )
    assert not (tmp_path / "int8").exists()


def test_the_backward_command_runs_on_a_tfds_text_set(tmp_path):
    # `kd-keras distill --recipe=backward --dataset=tfds:imdb_reviews`, on TFDS
    # mock data: the default teacher becomes a zoo transformer trained first.
    with tfds.testing.mock_data(num_examples=16):
        metrics = kd_keras.jobs.distill_job(
            recipe="backward",
            dataset="tfds:imdb_reviews",
            epochs=1,
            batch_size=8,
            teacher_epochs=1,
            out=tmp_path / "run",
            export_formats=("keras",),
            data_dir=str(tmp_path / "tfds"),
            download=True,
            verbose=0,
            allow_weak_teacher=True,  # a teacher of 16 random reviews is at chance
        )
        bundle = kd_keras.data.load(
            "tfds:imdb_reviews", data_dir=str(tmp_path / "tfds"), download=True
        )
    assert metrics["teacher"] == "text_transformer" and metrics["student"] == "text_cnn"
    teacher = keras.saving.load_model(tmp_path / "run" / "teacher.keras")
    student = keras.saving.load_model(tmp_path / "run" / "student.keras")
    teacher_logits, _ = kd_keras.resolve.predict_split(teacher, bundle.test)
    student_logits, _ = kd_keras.resolve.predict_split(student, bundle.test)
    assert metrics["agreement"] == pytest.approx(
        np.mean(teacher_logits.argmax(-1) == student_logits.argmax(-1)), abs=1e-9
    )
    assert (tmp_path / "run" / "vocabulary.txt").exists()
