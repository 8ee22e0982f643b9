"""The offline text task: synthetic reviews of films and restaurants.

`"text-default"` (`kd_keras.data.text`) needs no download: it is
**synthetic**. Reviews of films and restaurants are generated from a small
grammar with a fixed seed (`synthetic_reviews`); they are not real language and no result on them
says anything about real text. We found no small PyPI package that ships
a real labelled text set loading offline (scikit-learn's 20 newsgroups,
NLTK's corpora and Keras' IMDB all download at run time), so the task
exists to run the text path (tokenizer, text models, distillation on token
distributions, export) offline end to end. It asks for something a bag of
words cannot do: a review's sentiment is the majority of its clauses'
sentiments, and a clause's is set by its adjective and flipped by
negation ("the soup was not very good"), with filler words between the
words that decide it. Four classes: topic (film, restaurant) x sentiment
(negative, positive). The shipped transformer teacher reaches 99.5% on its
test split; a text CNN trained on 2,000 reviews alone reaches about 65%.
"""

import numpy as np

CLASS_NAMES = ("film negative", "film positive", "restaurant negative", "restaurant positive")

_TOPIC_NOUNS = (
    (
        "plot",
        "acting",
        "soundtrack",
        "ending",
        "cast",
        "dialogue",
        "pacing",
        "script",
        "villain",
        "director",
        "cinematography",
        "story",
        "sequel",
        "hero",
        "screenplay",
        "score",
        "editing",
        "premise",
    ),
    (
        "pasta",
        "service",
        "dessert",
        "soup",
        "waiter",
        "menu",
        "steak",
        "coffee",
        "salad",
        "chef",
        "pizza",
        "curry",
        "bread",
        "wine",
        "kitchen",
        "seafood",
        "noodles",
        "burger",
    ),
)
_POSITIVE = (
    "good",
    "great",
    "excellent",
    "wonderful",
    "superb",
    "delightful",
    "brilliant",
    "lovely",
    "fantastic",
    "solid",
    "charming",
    "impressive",
    "memorable",
    "perfect",
    "enjoyable",
    "outstanding",
)
_NEGATIVE = (
    "bad",
    "awful",
    "terrible",
    "boring",
    "dull",
    "bland",
    "poor",
    "mediocre",
    "disappointing",
    "horrible",
    "weak",
    "forgettable",
    "sloppy",
    "tedious",
    "annoying",
    "dreadful",
)
_VERBS = ("was", "is", "felt", "seemed", "looked", "proved")
_INTENSIFIERS = ("very", "really", "quite", "so", "extremely", "rather", "truly", "pretty")
_NEGATIONS = ("not", "never", "hardly")
_FILLERS = (
    "honestly",
    "frankly",
    "basically",
    "actually",
    "overall",
    "again",
    "yesterday",
    "tonight",
    "sunday",
    "weekend",
    "friday",
    "afternoon",
    "evening",
    "morning",
    "friends",
    "family",
    "cousin",
    "neighbour",
    "colleague",
    "sister",
    "brother",
    "parents",
    "city",
    "downtown",
    "town",
    "ticket",
    "table",
    "seat",
    "queue",
    "parking",
    "price",
    "booking",
    "trip",
    "holiday",
    "birthday",
    "anniversary",
    "date",
    "group",
    "crowd",
    "people",
    "we",
    "i",
    "they",
    "my",
    "our",
    "their",
    "went",
    "came",
    "saw",
    "visited",
    "tried",
    "watched",
    "ordered",
    "arrived",
    "left",
    "waited",
    "paid",
    "there",
    "here",
    "later",
    "early",
    "late",
    "first",
    "last",
    "time",
    "night",
    "day",
    "week",
    "year",
    "place",
    "thing",
    "way",
    "lot",
    "bit",
    "some",
    "any",
    "every",
    "whole",
    "same",
    "other",
    "another",
    "with",
    "for",
    "on",
    "at",
    "in",
    "of",
    "to",
    "from",
    "after",
    "before",
    "during",
    "about",
    "around",
    "near",
    "by",
    "it",
    "this",
    "that",
    "what",
    "which",
    "who",
    "as",
    "if",
    "when",
    "because",
    "since",
    "just",
    "still",
    "even",
    "only",
    "maybe",
    "perhaps",
    "probably",
    "usually",
    "sometimes",
    "anyway",
    "well",
    "okay",
    "yes",
    "rain",
    "weather",
    "phone",
    "car",
    "bus",
    "train",
    "street",
    "corner",
    "review",
    "opinion",
    "guess",
    "memory",
    "mood",
    "plan",
    "idea",
    "reason",
)
_CONNECTORS = ("and", "also", "plus", "then")
_STRUCTURE_WORDS = ("the", *_CONNECTORS)


def vocabulary():
    """Return the fixed, ordered word list of the synthetic task (no pad or OOV token).

    Returns:
        A list of unique lowercase words; with the padding and OOV tokens
        that `keras.layers.TextVectorization` adds, the task's vocabulary
        has `len(vocabulary()) + 2` entries.

    Example:
    ```python
    words = kd_keras.data.reviews.vocabulary()
    ```
    """
    words = []
    for group in (
        _STRUCTURE_WORDS,
        *_TOPIC_NOUNS,
        _POSITIVE,
        _NEGATIVE,
        _VERBS,
        _INTENSIFIERS,
        _NEGATIONS,
        _FILLERS,
    ):
        words.extend(word for word in group if word not in words)
    return words


def synthetic_reviews(count, seed=0, filler_rate=0.2):
    """Generate `count` synthetic reviews and their labels (see the module docstring).

    A review is about one topic and has one clause (30% of reviews) or
    three (70%); its sentiment is the majority of its clauses' sentiments.
    Three-clause reviews agree in a third of the cases and split two to one
    otherwise, in a random order. A clause is "the NOUN VERB [INTENSIFIER]
    ADJECTIVE" about the topic; half the clauses are negated ("not",
    "never", "hardly" before the adjective) and take an adjective of the
    opposite polarity, so every adjective appears in reviews of both
    sentiments. Clauses are joined by "and", "also", "plus" or "then";
    filler words are sprinkled between words with probability
    `filler_rate` each, and half the reviews start with two of them.

    Args:
        count: number of reviews.
        seed: seed of the generator.
        filler_rate: probability of a filler word after each word.

    Returns:
        `(texts, labels)`: a list of strings and an int32 array with
        `label = 2 * topic + sentiment` (see `CLASS_NAMES`).

    Example:
    ```python
    texts, labels = kd_keras.data.reviews.synthetic_reviews(10, seed=1)
    ```
    """
    rng = np.random.default_rng(seed)

    def pick(options):
        return options[rng.integers(len(options))]

    def clause(topic, positive):
        words = ["the", pick(_TOPIC_NOUNS[topic]), pick(_VERBS)]
        if rng.random() < 0.5:
            words.append(pick(_INTENSIFIERS))
        negated = rng.random() < 0.5
        if negated:
            words.insert(3, pick(_NEGATIONS))
        words.append(pick(_POSITIVE if positive != negated else _NEGATIVE))
        return words

    texts, labels = [], np.zeros(count, dtype="int32")
    for index in range(count):
        topic, positive = int(rng.integers(2)), bool(rng.integers(2))
        draw = rng.random()
        if draw < 0.3:
            polarities = [positive]
        elif draw < 0.3 + 0.7 / 3:
            polarities = [positive] * 3
        else:
            polarities = list(rng.permutation([positive, positive, not positive]))
        words = [] if rng.random() < 0.5 else [pick(_FILLERS), pick(_FILLERS)]
        for number, polarity in enumerate(polarities):
            if number:
                words.append(pick(_CONNECTORS))
            words += clause(topic, bool(polarity))
        text = []
        for word in words:
            text.append(word)
            if rng.random() < filler_rate:
                text.append(pick(_FILLERS))
        texts.append(" ".join(text) + ".")
        labels[index] = 2 * topic + int(positive)
    return texts, labels
