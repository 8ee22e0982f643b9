"""Text data: the offline reviews task, TFDS text sets, and the tokenizer.

Text data sets load as token ids `(n, sequence_length)` int32 with integer
labels; the tokenizer (a `keras.layers.TextVectorization`) that made the
ids travels in the bundle, so a trained model can be served on raw strings
(`serving_model`) and its vocabulary saved beside it (`save_vocabulary`).

`"text-default"` needs no download: it is **synthetic** (`kd_keras.data.reviews`:
reviews generated from a small grammar with a fixed seed); it exists to run the
text path (tokenizer, text models, distillation on token distributions,
export) offline end to end.
"""

import dataclasses
import pathlib
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from kd_keras import atomic
from kd_keras.data.core import TFDS_PREFIX
from kd_keras.data.core import DataBundle
from kd_keras.data.core import register
from kd_keras.data.core import register_tfds_family
from kd_keras.data.reviews import CLASS_NAMES
from kd_keras.data.reviews import synthetic_reviews
from kd_keras.data.reviews import vocabulary
from kd_keras.data.tfds import prepared_builder

TEXT_DEFAULT = "text-default"
# Runs on text default to the text zoo: the shipped transformer teacher on
# the offline task (a zoo transformer, trained first, on a TFDS text set)
# and a text CNN student.
TEXT_DEFAULT_TEACHER = "shipped:text_default"
TFDS_TEXT_TEACHER = "text_transformer"
TEXT_STUDENT = "text_cnn"
TEXT_DEFAULT_EPOCHS = 10


@dataclasses.dataclass
class TextDataBundle(DataBundle):
    """A `kd_keras.data.DataBundle` of token ids, with the tokenizer that made them.

    The other fields are `DataBundle`'s; `input_shape` is
    `(sequence_length,)` and `model_kwargs` holds `vocabulary_size`, which
    the text zoo models need.

    Args:
        tokenizer: the `keras.layers.TextVectorization` mapping strings to
            `(sequence_length,)` int ids.

    Example:
    ```python
    bundle = kd_keras.data.load("text-default")
    ids = bundle.tokenizer(["the plot was not good."])
    ```
    """

    tokenizer: Any = None

    def sample(self, split="train", count=256):
        """Return up to `count` token-id inputs of a split as an int32 NumPy array."""
        source = {"train": self.train, "test": self.test}[split]
        if isinstance(source, tf.data.Dataset):
            ids = [ids for ids, _ in source.take(count).as_numpy_iterator()]
            return np.stack(ids).astype("int32")
        return np.asarray(source[0][:count], dtype="int32")


def make_tokenizer(sequence_length, vocabulary=None, texts=None, max_tokens=20000):
    """Build the tokenizer: lowercase, strip punctuation, split on spaces, look up ids.

    Id 0 is padding and id 1 the out-of-vocabulary token; sequences are cut
    or padded to `sequence_length`.

    Args:
        sequence_length: tokens per sequence.
        vocabulary: a fixed word list (as `vocabulary()` returns), or None.
        texts: strings (list or `tf.data.Dataset`) to adapt a vocabulary on,
            when `vocabulary` is None.
        max_tokens: the largest vocabulary adapting may keep (with padding
            and OOV).

    Returns:
        A `keras.layers.TextVectorization`.

    Example:
    ```python
    tokenizer = kd_keras.data.text.make_tokenizer(32, texts=["a good film"])
    ```
    """
    if vocabulary is not None:
        return keras.layers.TextVectorization(
            output_sequence_length=sequence_length, vocabulary=list(vocabulary)
        )
    if texts is None:
        raise ValueError("make_tokenizer needs a vocabulary or texts to adapt on.")
    tokenizer = keras.layers.TextVectorization(
        max_tokens=max_tokens, output_sequence_length=sequence_length
    )
    tokenizer.adapt(texts)
    return tokenizer


def tokenize(tokenizer, texts, batch_size=1024):
    """Turn a list of strings into token ids with a tokenizer, in batches.

    Args:
        tokenizer: a `keras.layers.TextVectorization`.
        texts: a list of strings.
        batch_size: strings per tokenizer call.

    Returns:
        An int32 NumPy array `(len(texts), sequence_length)`.

    Example:
    ```python
    ids = kd_keras.data.text.tokenize(bundle.tokenizer, ["a good film."])
    ```
    """
    chunks = [
        tokenizer(tf.constant(texts[start : start + batch_size]))
        for start in range(0, len(texts), batch_size)
    ]
    return np.concatenate([keras.ops.convert_to_numpy(c) for c in chunks]).astype("int32")


def load_text_default(train_size=16000, test_size=2000, sequence_length=40, seed=0):
    """Load the offline synthetic reviews task (see the module docstring: not real text).

    Args:
        train_size: training reviews.
        test_size: test reviews (generated with another seed, so no review
            generation is shared between the splits).
        sequence_length: tokens per input; reviews have 20 words on
            average and rarely over 30 (at most 44), so 40 cuts almost none.
        seed: seed of the training split (the test split uses `seed + 1`).

    Returns:
        A `TextDataBundle` with int32 ids `(n, sequence_length)`, int32
        labels, 4 classes and the fixed-vocabulary tokenizer.

    Example:
    ```python
    bundle = kd_keras.data.text.load_text_default()
    x_train, y_train = bundle.train
    ```
    """
    tokenizer = make_tokenizer(sequence_length, vocabulary=vocabulary())
    texts, labels = synthetic_reviews(train_size, seed)
    test_texts, test_labels = synthetic_reviews(test_size, seed + 1)
    return TextDataBundle(
        name=TEXT_DEFAULT,
        train=(tokenize(tokenizer, texts), labels),
        test=(tokenize(tokenizer, test_texts), test_labels),
        num_classes=len(CLASS_NAMES),
        input_shape=(sequence_length,),
        model_kwargs={"vocabulary_size": tokenizer.vocabulary_size()},
        tokenizer=tokenizer,
        default_teacher=TEXT_DEFAULT_TEACHER,
        default_student=TEXT_STUDENT,
        default_epochs=TEXT_DEFAULT_EPOCHS,
    )


def text_features(features):
    """Names of the `tfds.features.Text` features of a TFDS data set, title first.

    Args:
        features: a `tfds.features.FeaturesDict` (a builder's `info.features`).

    Returns:
        A list of feature names, e.g. `["title", "description"]`.

    Example:
    ```python
    names = kd_keras.data.text.text_features(tfds.builder("ag_news_subset").info.features)
    ```
    """
    import tensorflow_datasets as tfds

    names = [name for name, feature in features.items() if isinstance(feature, tfds.features.Text)]
    return sorted(names, key=lambda name: name != "title")


def is_tfds_text(name, data_dir=None):
    """True when `"tfds:NAME"` is a TFDS set with text features and a class label.

    Args:
        name: a data set name, e.g. `"tfds:imdb_reviews"`.
        data_dir: TFDS data directory.

    Returns:
        A bool; False for unknown names (the image loader reports those).

    Example:
    ```python
    kd_keras.data.text.is_tfds_text("tfds:imdb_reviews")  # True
    ```
    """
    if not name.startswith(TFDS_PREFIX):
        return False
    import tensorflow_datasets as tfds

    try:
        builder = tfds.builder(name[len(TFDS_PREFIX) :], data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError:
        return False
    features = builder.info.features
    # Image sets carry text too (cifar10's 'id'): an image makes it an image set.
    return "label" in features and "image" not in features and bool(text_features(features))


def load_tfds_text(
    name,
    data_dir=None,
    download="auto",
    sequence_length=256,
    max_tokens=20000,
):
    """Load a TFDS text classification set as token ids, e.g. imdb_reviews, ag_news_subset, glue/sst2.

    Every `Text` feature is joined into one string per example (a title
    first: ag_news_subset reads "title. description"); the tokenizer is
    adapted on the training split. The held-out split is `"validation"`
    when the set has one (GLUE's test labels are hidden), else `"test"`.
    Offline, a set that is not prepared fails at once with the fix, as
    `kd_keras.data.load_tfds` does.

    Args:
        name: a TFDS name, e.g. `"imdb_reviews"` (without `"tfds:"`).
        data_dir: TFDS data directory.
        download: `True`, `False` or `"auto"` (see `kd_keras.data.load_tfds`).
        sequence_length: tokens per input.
        max_tokens: vocabulary size kept by the tokenizer.

    Returns:
        A `TextDataBundle` whose splits are unbatched `tf.data.Dataset`s of
        `(ids int32 (sequence_length,), label int32)`.

    Example:
    ```python
    bundle = kd_keras.data.text.load_tfds_text("imdb_reviews")
    ```
    """
    builder = prepared_builder(name, data_dir, download)
    features = builder.info.features
    keys = text_features(features)

    def to_text(example):
        text = tf.strings.join([example[key] for key in keys], separator=". ")
        return text, tf.cast(example["label"], tf.int32)

    def split(split_name):
        return builder.as_dataset(split=split_name).map(to_text, tf.data.AUTOTUNE)

    train = split("train")
    test = split("validation" if "validation" in builder.info.splits else "test")
    tokenizer = make_tokenizer(
        sequence_length,
        texts=train.map(lambda text, _: text).batch(1024),
        max_tokens=max_tokens,
    )

    def to_ids(dataset):
        # Example by example, not batched and unbatched: that would lose the
        # split's cardinality, which the learning-rate schedules read.
        return dataset.map(
            lambda text, label: (tf.cast(tokenizer(text), tf.int32), label),
            tf.data.AUTOTUNE,
        )

    return TextDataBundle(
        name=f"{TFDS_PREFIX}{name}",
        train=to_ids(train),
        test=to_ids(test),
        num_classes=features["label"].num_classes,
        input_shape=(sequence_length,),
        model_kwargs={"vocabulary_size": tokenizer.vocabulary_size()},
        tokenizer=tokenizer,
        # No shipped teacher for TFDS text: the zoo transformer is trained first.
        default_teacher=TFDS_TEXT_TEACHER,
        default_student=TEXT_STUDENT,
    )


def load(name, data_dir=None, download="auto"):
    """Load a text data set by name: `"text-default"` or a TFDS text set `"tfds:NAME"`.

    Args:
        name: `"text-default"` or `"tfds:<name>"` of a set with text features.
        data_dir: TFDS data directory.
        download: TFDS download policy.

    Returns:
        A `TextDataBundle`.

    Example:
    ```python
    bundle = kd_keras.data.text.load("tfds:glue/sst2")
    ```
    """
    if name == TEXT_DEFAULT:
        return load_text_default()
    return load_tfds_text(name[len(TFDS_PREFIX) :], data_dir, download)


def save_vocabulary(tokenizer, path):
    """Write the tokenizer's vocabulary, one token per line, in id order.

    Args:
        tokenizer: a `keras.layers.TextVectorization`.
        path: the file to write (e.g. a run's `vocabulary.txt`).

    Returns:
        The `pathlib.Path` written.

    Example:
    ```python
    kd_keras.data.text.save_vocabulary(bundle.tokenizer, "runs/x/vocabulary.txt")
    ```
    """
    return atomic.write_text(path, "\n".join(tokenizer.get_vocabulary()) + "\n")


def load_tokenizer(path, sequence_length):
    """Rebuild a tokenizer from a vocabulary file written by `save_vocabulary`.

    Args:
        path: the vocabulary file.
        sequence_length: tokens per sequence (the models' input length).

    Returns:
        A `keras.layers.TextVectorization` giving the same ids as the
        original.

    Example:
    ```python
    tokenizer = kd_keras.data.text.load_tokenizer("runs/x/vocabulary.txt", 32)
    ```
    """
    tokens = pathlib.Path(path).read_text(encoding="utf-8").split("\n")[:-1]
    # Ids 0 and 1 are the padding and OOV tokens TextVectorization adds itself.
    return make_tokenizer(sequence_length, vocabulary=tokens[2:])


def serving_model(tokenizer, model):
    """Wrap a text model so it takes raw strings: `strings -> tokenizer -> model -> logits`.

    Args:
        tokenizer: the `keras.layers.TextVectorization` of the model's data.
        model: a model reading token ids, e.g. a distilled student.

    Returns:
        A `keras.Model` mapping a batch of strings `(batch,)` to logits.

    Example:
    ```python
    serve = kd_keras.data.text.serving_model(bundle.tokenizer, student)
    logits = serve(tf.constant(["the plot was not good."]))
    ```
    """
    strings = keras.Input(shape=(), dtype="string", name="text")
    ids = tokenizer(strings)
    return keras.Model(strings, model(keras.ops.cast(ids, "int32")), name=f"{model.name}_serving")


register(TEXT_DEFAULT, load_text_default)
register_tfds_family(
    lambda name, data_dir: is_tfds_text(TFDS_PREFIX + name, data_dir),
    lambda name, data_dir, download: load_tfds_text(name, data_dir, download),
)
