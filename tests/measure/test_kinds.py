"""Tests for shrinktune.measure.kinds: each task kind's metrics, their intervals, and the per-pair statistics that
give the primary metric back."""

import numpy as np
import pytest
from sacrebleu.metrics import BLEU, CHRF

from shrinktune.errors import UserError
from shrinktune.measure.intervals import statistic_interval
from shrinktune.measure.kinds import KINDS, get_kind, normalize_label
from shrinktune.measure.rouge import rouge_pair_scores

HYPOTHESES = ["the cat sat on the mat", "a dog barked at the postman today", "rain is expected tomorrow",
              "he bought two apples and a pear", "the meeting was moved to friday", "nothing happened"]
REFERENCES = ["the cat sat on a mat", "the dog barked at the postman", "rain is forecast for tomorrow",
              "he bought three apples and one pear", "the meeting moved to friday", "something happened"]
GROUPS = ["d0", "d0", "d1", "d1", "d2", "d3"]


def test_every_kind_names_its_primary_metric_first():
    assert {name: kind.primary for name, kind in KINDS.items()} == {
        "summarization": "rouge1", "translation": "bleu", "classification": "accuracy"}


def test_summaries_score_as_rouge_with_a_document_interval():
    scored = get_kind("summarization").score(HYPOTHESES, REFERENCES, GROUPS)
    pairs = rouge_pair_scores(HYPOTHESES, REFERENCES)
    assert scored.metrics["rouge1"] == pytest.approx(np.mean(pairs["rouge1"]))
    assert scored.metrics["rougeLsum"] == pytest.approx(np.mean(pairs["rougeLsum"]))
    assert scored.metrics["rouge1_low"] <= scored.metrics["rouge1"] <= scored.metrics["rouge1_high"]
    assert scored.metrics["rouge2_low"] <= scored.metrics["rouge2"] <= scored.metrics["rouge2_high"]
    assert scored.pair_stats[:, 0].tolist() == pytest.approx(pairs["rouge1"])


def test_translations_score_as_sacrebleu_corpus_bleu_and_chrf_with_signatures():
    scored = get_kind("translation").score(HYPOTHESES, REFERENCES, GROUPS)
    assert scored.metrics["bleu"] == pytest.approx(BLEU().corpus_score(HYPOTHESES, [REFERENCES]).score)
    assert scored.metrics["chrf"] == pytest.approx(CHRF().corpus_score(HYPOTHESES, [REFERENCES]).score)
    assert scored.notes["bleu_signature"].startswith("nrefs:1|") and "tok:13a" in scored.notes["bleu_signature"]
    assert "chrF2" in scored.notes["chrf_signature"] or "nc:6" in scored.notes["chrf_signature"]
    assert scored.metrics["bleu_low"] <= scored.metrics["bleu"] <= scored.metrics["bleu_high"]
    assert scored.metrics["bleu_low"] < scored.metrics["bleu_high"]


def test_translation_pair_statistics_sum_to_the_corpus_bleu_not_a_mean_of_sentence_scores():
    kind = get_kind("translation")
    scored = kind.score(HYPOTHESES, REFERENCES, GROUPS)
    whole = kind.aggregate(scored.pair_stats.sum(axis=0, keepdims=True), np.array([len(HYPOTHESES)]))
    assert whole[0] == pytest.approx(scored.metrics["bleu"])
    sentence_mean = np.mean([BLEU(effective_order=True).sentence_score(h, [r]).score
                             for h, r in zip(HYPOTHESES, REFERENCES)])
    assert abs(sentence_mean - scored.metrics["bleu"]) > 1  # why the statistics, and not per-pair scores, resample
    interval = statistic_interval(scored.pair_stats, GROUPS, kind.aggregate)
    assert interval.mean == pytest.approx(scored.metrics["bleu"])


def test_identical_translations_score_100():
    scored = get_kind("translation").score(REFERENCES, REFERENCES)
    assert scored.metrics["bleu"] == pytest.approx(100) and scored.metrics["chrf"] == pytest.approx(100)


def test_labels_score_as_accuracy_and_macro_f1_counting_unknown_names_wrong():
    gold = ["challenge", "none", "none", "approach", "outcome", "none"]
    written = ["Challenge.", "none", "approach", "approach", "the outcome", "none"]
    scored = get_kind("classification").score(written, gold, GROUPS)
    assert scored.metrics["accuracy"] == pytest.approx(4 / 6)
    # F1 by class: challenge 1, none 2*2/(2+3)=.8, approach 2*1/(2+1)=.667, outcome 0 ("the outcome" is no label)
    assert scored.metrics["macro_f1"] == pytest.approx((1 + 0.8 + 2 / 3 + 0) / 4)
    assert scored.metrics["invalid_fraction"] == pytest.approx(1 / 6)
    assert scored.pair_stats[:, 0].tolist() == [1, 1, 0, 1, 0, 1]
    assert scored.metrics["accuracy_low"] <= scored.metrics["accuracy"] <= scored.metrics["accuracy_high"]


def test_label_names_compare_without_case_accents_or_punctuation():
    assert normalize_label("  Négatif! ") == "negatif"
    assert normalize_label("out-come") == "out come"


def test_scoring_refuses_mismatched_or_empty_lists():
    with pytest.raises(ValueError, match="one reference per prediction, got 2 predictions and 1 references"):
        get_kind("classification").score(["a", "b"], ["a"])
    with pytest.raises(ValueError, match="at least one"):
        get_kind("translation").score([], [])


def test_an_unknown_kind_is_one_line_naming_the_known_ones():
    with pytest.raises(UserError, match="unknown task kind 'regression'; known kinds: summarization, translation, "
                                        "classification"):
        get_kind("regression")


def test_signatures_say_how_the_metrics_were_computed_before_any_scoring():
    assert get_kind("translation").signatures() == get_kind("translation").score(HYPOTHESES, REFERENCES).notes
    assert get_kind("summarization").signatures() == {} == get_kind("classification").signatures()
