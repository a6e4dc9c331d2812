"""Tests for shrinktune.measure.rouge: hand-known ROUGE values, sentence splitting, argument checks."""

import pytest

from shrinktune.measure.rouge import ROUGE_KEYS, distinct_fraction, rouge_scores, split_sentences


def test_identical_strings_score_one_on_every_key():
    scores = rouge_scores(["The cat sat on the mat."], ["The cat sat on the mat."])
    assert set(scores) == set(ROUGE_KEYS)
    assert all(value == pytest.approx(1.0) for value in scores.values())


def test_disjoint_strings_score_zero():
    scores = rouge_scores(["alpha beta gamma"], ["delta epsilon zeta"])
    assert all(value == 0.0 for value in scores.values())


def test_stemming_matches_inflected_words():
    assert rouge_scores(["running dogs"], ["run dog"])["rouge1"] == pytest.approx(1.0)


def test_scores_are_means_over_pairs():
    scores = rouge_scores(["a b c d", "x y"], ["a b c d", "p q"])
    assert scores["rouge1"] == pytest.approx(0.5)


def test_precision_and_recall_enter_through_f1():
    # prediction "a b" vs reference "a b c d": P = 1, R = 0.5, F1 = 2/3.
    assert rouge_scores(["a b"], ["a b c d"])["rouge1"] == pytest.approx(2 / 3)


def test_rouge_lsum_matches_sentences_where_rouge_l_cannot():
    # Swapped sentences: one LCS over the whole text covers only half; per-sentence LCS covers all.
    scores = rouge_scores(["The dog ran. The cat sat."], ["The cat sat. The dog ran."])
    assert scores["rougeL"] == pytest.approx(0.5)
    assert scores["rougeLsum"] == pytest.approx(1.0)


def test_split_sentences_keeps_abbreviations_and_initials():
    text = 'Dr. Smith met J. Doe, e.g. at noon. He said "yes!" Was it late?\nA new line'
    assert split_sentences(text) == [
        "Dr. Smith met J. Doe, e.g. at noon.",
        'He said "yes!"',
        "Was it late?",
        "A new line",
    ]
    assert split_sentences("") == []


def test_mismatched_lengths_are_rejected():
    with pytest.raises(ValueError, match=r"got 2 predictions and 1 references"):
        rouge_scores(["a", "b"], ["a"])


def test_empty_lists_are_rejected():
    with pytest.raises(ValueError, match=r"at least one prediction/reference pair"):
        rouge_scores([], [])


def test_distinct_fraction_counts_unique_predictions():
    assert distinct_fraction(["a", "a", "b", "c"]) == pytest.approx(0.75)
    with pytest.raises(ValueError, match=r"at least one prediction"):
        distinct_fraction([])
