"""Tests for shrinktune.measure.intervals: document ids, bootstrap intervals resampled by document, and paired
differences of two systems."""

import numpy as np
import pytest

from shrinktune.measure.intervals import (
    Interval,
    bootstrap_interval,
    document_groups,
    document_id,
    mean_of_first,
    paired_difference,
    paired_statistic_difference,
    statistic_interval,
)

DOCS, PER_DOC = 10, 3
GROUPS = [f"P19-{1000 + d}" for d in range(DOCS) for _ in range(PER_DOC)]  # 30 pairs, 3 per document


def _scores(seed: int, doc_sd: float = 0.05, pair_sd: float = 0.02, mean: float = 0.3) -> np.ndarray:
    """Per-pair scores (30,): a level per document plus noise per pair."""
    rng = np.random.default_rng(seed)
    return mean + np.repeat(rng.normal(0, doc_sd, DOCS), PER_DOC) + rng.normal(0, pair_sd, DOCS * PER_DOC)


def test_document_id_strips_the_aspect_but_keeps_hub_rows():
    """Catches every `<split>/<row>` pair of a hub set lumped into one document (or aspects kept apart)."""
    assert document_id("P19-1001/approach") == "P19-1001"
    assert document_id("P19-1001/outcome") == "P19-1001"
    assert document_id("test/17") == "test/17"
    assert document_id("test/18") != document_id("test/17")
    assert document_id("lonely") == "lonely"


def test_document_groups_label_the_examples_by_paper(few_examples):
    """Catches groups that are not one per example in order, or not the paper of each ACLSum id."""
    groups = document_groups(few_examples)
    assert groups == [e.id.rsplit("/", 1)[0] for e in few_examples]
    assert len(set(groups)) < len(groups)  # the aspects of a paper share a group


def test_interval_brackets_the_mean():
    """Catches a swapped or off-centre interval, or a mean that is not the plain mean of the scores."""
    scores = _scores(0)
    interval = bootstrap_interval(scores, GROUPS)
    assert interval.mean == pytest.approx(scores.mean())
    assert interval.low < interval.mean < interval.high
    assert interval.contains(interval.mean) and not interval.contains(interval.high + 1e-9)


def test_interval_is_deterministic_for_a_seed():
    """Catches resampling from the global RNG (or ignoring the seed)."""
    scores = _scores(1)
    np.random.seed(123)
    first = bootstrap_interval(scores, GROUPS, seed=7)
    np.random.seed(456)
    assert bootstrap_interval(scores, GROUPS, seed=7) == first
    assert bootstrap_interval(scores, GROUPS, seed=8) != first


def test_equal_scores_give_a_zero_width_interval():
    """Catches noise added to the resampled means, or sums not divided by the pairs drawn."""
    interval = bootstrap_interval([0.3] * 6, ["a", "a", "a", "b", "c", "c"])
    assert interval.mean == pytest.approx(0.3)
    assert interval.low == pytest.approx(0.3, abs=1e-12) and interval.high == pytest.approx(0.3, abs=1e-12)


def test_pairs_are_resampled_by_document_not_one_by_one():
    """Catches a pair-level bootstrap: 3 copies of a document are 1 observation, so the interval must be wider."""
    per_document = np.random.default_rng(2).normal(0.3, 0.05, DOCS)
    scores = np.repeat(per_document, PER_DOC)  # the 3 pairs of a document score the same
    by_document = bootstrap_interval(scores, GROUPS)
    by_pair = bootstrap_interval(scores, [f"pair{i}" for i in range(len(scores))])
    width_document, width_pair = by_document.high - by_document.low, by_pair.high - by_pair.low
    # The spread of a mean of 10 documents against one of 30 "independent" pairs: about √3 wider.
    assert width_document > 1.4 * width_pair


def test_unequal_documents_weigh_by_pairs():
    """Catches a mean of document means (a 1-pair document would weigh as much as a 5-pair one)."""
    scores, groups = [1.0, 0.0, 0.0, 0.0, 0.0, 0.0], ["a", "b", "b", "b", "b", "b"]
    # Two documents drawn with replacement: (a, a) → 1, (b, b) → 0, and half the time one of each → 1/6 of the
    # pairs score 1 (a mean of document means would say 1/2). The middle 40 % of resamples is all "one of each".
    interval = bootstrap_interval(scores, groups, level=0.4, resamples=4000)
    assert interval.mean == pytest.approx(1 / 6)
    assert interval.low == pytest.approx(1 / 6) and interval.high == pytest.approx(1 / 6)


def test_bad_inputs_raise_value_error():
    """Catches empty scores or a group count that does not match, silently accepted."""
    with pytest.raises(ValueError):
        bootstrap_interval([], [])
    with pytest.raises(ValueError, match="group"):
        bootstrap_interval([0.1, 0.2], ["a"])
    with pytest.raises(ValueError, match="group"):
        bootstrap_interval([0.1, 0.2], ["a", "b", "c"])


def test_constant_improvement_excludes_zero():
    """Catches a difference taken the wrong way round, or systems resampled apart (noise would swamp +0.1)."""
    b = _scores(3, doc_sd=0.1)  # documents differ much more than the systems do
    interval = paired_difference(b + 0.1, b, GROUPS)
    assert interval.mean == pytest.approx(0.1)
    assert interval.excludes_zero() and interval.low > 0
    assert interval.low == pytest.approx(0.1) and interval.high == pytest.approx(0.1)
    assert paired_difference(b, b + 0.1, GROUPS).high < 0


def test_same_quality_with_pair_noise_includes_zero():
    """Catches an interval that ignores the pair-level noise (too narrow), so equal systems would look different."""
    rng = np.random.default_rng(4)
    a = _scores(5) + rng.normal(0, 0.02, DOCS * PER_DOC)
    b = _scores(5) + rng.normal(0, 0.02, DOCS * PER_DOC)
    b += (a - b).mean()  # the same mean exactly; only per-pair noise apart
    interval = paired_difference(a, b, GROUPS)
    assert interval.mean == pytest.approx(0.0, abs=1e-12)
    assert interval.contains(0.0) and not interval.excludes_zero()
    assert interval.high - interval.low > 0.005


def test_paired_difference_rejects_mismatched_inputs():
    """Catches scores of different pairs (or a wrong group count) compared anyway."""
    for short in ([0.1, 0.2], [0.1]):  # one score would broadcast against three
        with pytest.raises(ValueError):
            paired_difference([0.1, 0.2, 0.3], short, ["a", "b", "c"])
        with pytest.raises(ValueError):
            paired_difference(short, [0.1, 0.2, 0.3], ["a", "b", "c"])
    with pytest.raises(ValueError, match="group"):
        paired_difference([0.1, 0.2, 0.3], [0.1, 0.2, 0.3], ["a", "b"])


def test_interval_helpers():
    """Catches an inclusive/exclusive mix-up at the interval's ends."""
    assert Interval(0.0, 0.0, 0.2).contains(0.0) and not Interval(0.0, 0.0, 0.2).excludes_zero()
    assert Interval(0.1, 0.01, 0.2).excludes_zero() and Interval(-0.1, -0.2, -0.01).excludes_zero()


def _old_bootstrap(values, groups, resamples=1000, seed=0):
    """The mean-only bootstrap as it was before statistic_interval generalised it (the reference figures)."""
    labels = {g: i for i, g in enumerate(dict.fromkeys(groups))}
    index = np.array([labels[g] for g in groups])
    sums = np.bincount(index, weights=values, minlength=len(labels))
    sizes = np.bincount(index, minlength=len(labels)).astype(float)
    drawn = np.random.default_rng(seed).integers(0, len(labels), size=(resamples, len(labels)))
    means = sums[drawn].sum(axis=1) / sizes[drawn].sum(axis=1)
    return np.percentile(means, 2.5), np.percentile(means, 97.5)


def test_the_mean_interval_is_unchanged_by_the_statistics_generalisation():
    """Catches R-1 intervals that moved when the bootstrap learned corpus metrics (every earlier figure would)."""
    scores = _scores(3)
    interval = bootstrap_interval(scores, GROUPS)
    assert (interval.low, interval.high) == pytest.approx(_old_bootstrap(scores, GROUPS), abs=1e-12)


def test_statistic_interval_resamples_summed_statistics_for_a_ratio_metric():
    """A corpus ratio (sum of hits / sum of totals) is not a mean of per-pair ratios: its interval centres on the
    corpus ratio and the paired difference of a system with itself is exactly 0."""
    rng = np.random.default_rng(1)
    totals = rng.integers(1, 20, size=len(GROUPS)).astype(float)
    hits = np.floor(totals * rng.uniform(0.2, 0.8, size=len(GROUPS)))
    stats = np.stack([hits, totals], axis=1)

    def ratio(sums, sizes):
        return sums[:, 0] / sums[:, 1]

    interval = statistic_interval(stats, GROUPS, ratio)
    assert interval.mean == pytest.approx(hits.sum() / totals.sum())
    assert interval.low < interval.mean < interval.high
    same = paired_statistic_difference(stats, stats, GROUPS, ratio)
    assert same.mean == same.low == same.high == 0


def test_paired_statistic_difference_of_means_is_the_paired_difference():
    a, b = _scores(4), _scores(5)
    old = paired_difference(a, b, GROUPS)
    new = paired_statistic_difference(a[:, None], b[:, None], GROUPS, mean_of_first)
    assert (new.mean, new.low, new.high) == pytest.approx((old.mean, old.low, old.high), abs=1e-12)
