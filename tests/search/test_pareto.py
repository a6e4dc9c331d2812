from shrinktune.front import dominates, pareto_front

OBJ = {"rouge1": "max", "latency_ms": "min"}


def test_dominance_needs_one_strict_win():
    assert dominates({"rouge1": 0.3, "latency_ms": 10}, {"rouge1": 0.2, "latency_ms": 10}, OBJ)
    assert not dominates({"rouge1": 0.3, "latency_ms": 10}, {"rouge1": 0.3, "latency_ms": 10}, OBJ)
    assert not dominates({"rouge1": 0.3, "latency_ms": 20}, {"rouge1": 0.2, "latency_ms": 10}, OBJ)


def test_front_keeps_trade_offs_and_drops_dominated():
    rows = [
        {"rouge1": 0.30, "latency_ms": 100},  # best quality
        {"rouge1": 0.20, "latency_ms": 40},  # fastest
        {"rouge1": 0.19, "latency_ms": 90},  # dominated by row 1
        {"rouge1": 0.25, "latency_ms": 60},  # trade-off
        {"rouge1": None, "latency_ms": 1},  # failed measurement: skipped
    ]
    assert pareto_front(rows, OBJ) == [0, 1, 3]


# --- degenerate trials and members not told apart ------------------------------------------------------------------

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from shrinktune.search.pareto import below_floor, indistinct_members, near_front  # noqa: E402


def test_below_floor_compares_with_a_fraction_of_the_teacher():
    """Catches a floor read as an absolute R-1, or compared the wrong way round."""
    teacher = {"rouge1": 0.27}  # floor 0.5 → 0.135
    assert below_floor({"rouge1": 0.10}, teacher, 0.5)
    assert not below_floor({"rouge1": 0.20}, teacher, 0.5)


def test_below_floor_is_off_at_zero_or_without_a_teacher_figure():
    """Catches a floor applied when switched off or when the teacher's R-1 is unknown."""
    assert not below_floor({"rouge1": 0.0}, {"rouge1": 0.27}, 0.0)
    assert not below_floor({"rouge1": 0.01}, {}, 0.5)
    assert not below_floor({"rouge1": 0.01}, {"rouge1": None}, 0.5)
    assert isinstance(below_floor({"rouge1": 0.10}, {"rouge1": 0.27}, 0.5), bool)


DOCS, PER_DOC = 10, 3
PAIR_GROUPS = [f"P{d}" for d in range(DOCS) for _ in range(PER_DOC)]  # 30 pairs, 10 documents


def _members():
    """a: expensive, b's R-1 per pair plus tiny noise; b: cheaper; c: cheapest and clearly worse."""
    rng = np.random.default_rng(0)
    b = 0.3 + np.repeat(rng.normal(0, 0.05, DOCS), PER_DOC) + rng.normal(0, 0.02, DOCS * PER_DOC)
    signs = np.repeat(np.tile([1.0, -1.0], DOCS // 2), PER_DOC)  # half the documents up, half down: mean 0
    a = b + 0.002 * signs + rng.normal(0, 0.001, DOCS * PER_DOC)
    c = b - 0.1 + rng.normal(0, 0.01, DOCS * PER_DOC)
    rows = {"a": {"rouge1": a.mean(), "latency_ms": 100.0, "params_total": 30.0},
            "b": {"rouge1": b.mean(), "latency_ms": 60.0, "params_total": 20.0},
            "c": {"rouge1": c.mean(), "latency_ms": 30.0, "params_total": 10.0}}
    return rows, {"a": list(a), "b": list(b), "c": list(c)}


def test_a_dearer_member_no_better_than_a_cheaper_one_is_flagged():
    """Catches the wrong member flagged, a clearly better cheap member read as indistinct, or the cheapest member
    taken even though it is told apart (c) instead of the cheapest one that is not (b)."""
    rows, scores = _members()
    flagged = indistinct_members(["a", "b", "c"], rows, OBJ, scores, PAIR_GROUPS)
    assert set(flagged) == {"a"}
    assert flagged["a"].cheaper == "b"
    assert flagged["a"].low <= 0 <= flagged["a"].high
    assert flagged["a"].difference == pytest.approx(np.mean(np.subtract(scores["a"], scores["b"])), abs=1e-12)


def test_a_member_is_mapped_to_its_cheapest_indistinct_member():
    """Catches the nearest (dearest) cheaper member reported when a cheaper one is equally good."""
    rows, scores = _members()
    same = {name: scores["b"] for name in rows}  # all three alike: a and b both match c, the cheapest
    flagged = indistinct_members(["a", "b", "c"], rows, OBJ, same, PAIR_GROUPS)
    assert {name: entry.cheaper for name, entry in flagged.items()} == {"a": "c", "b": "c"}


def test_pairs_of_a_document_are_resampled_together():
    """Catches the comparison made pair by pair: a gap that 10 documents cannot settle looks settled over 30 pairs."""
    rows, scores = _members()
    # a beats b by 0.0048 on average, but document by document by +0.0148 or -0.0052 (the same for its 3 pairs).
    gap = np.repeat(0.0048 + 0.01 * np.tile([1.0, -1.0], DOCS // 2), PER_DOC)
    pair = {"a": list(np.asarray(scores["b"]) + gap), "b": scores["b"]}
    assert set(indistinct_members(["a", "b"], rows, OBJ, pair, PAIR_GROUPS)) == {"a"}
    one_by_one = [f"pair{i}" for i in range(DOCS * PER_DOC)]  # what a pair-level bootstrap would see
    assert indistinct_members(["a", "b"], rows, OBJ, pair, one_by_one) == {}


def test_only_members_of_the_list_are_compared():
    """Catches comparisons with rows outside `ids` (b left out: nothing cheaper matches a)."""
    rows, scores = _members()
    assert indistinct_members(["a", "c"], rows, OBJ, scores, PAIR_GROUPS) == {}


def test_a_member_cheaper_on_one_cost_but_dearer_on_another_is_not_compared():
    """Catches "cheaper" read on one cost only when the objectives minimise two."""
    rows, scores = _members()
    objectives = {"rouge1": "max", "latency_ms": "min", "params_total": "min"}
    rows["b"]["params_total"] = 40.0  # faster than a, but bigger
    same = {"a": scores["b"], "b": scores["b"]}  # identical quality: flagged if ever compared
    assert indistinct_members(["a", "b"], rows, objectives, same, PAIR_GROUPS) == {}
    rows["b"]["params_total"] = 20.0  # cheaper on both: now compared, and flagged
    assert set(indistinct_members(["a", "b"], rows, objectives, same, PAIR_GROUPS)) == {"a"}


def test_without_a_cost_objective_nothing_is_cheaper():
    """Catches members compared (and flagged) when no objective is a cost."""
    rows, scores = _members()
    same = {"a": scores["b"], "b": scores["b"]}
    assert indistinct_members(["a", "b"], rows, {"rouge1": "max"}, same, PAIR_GROUPS) == {}


OBJ = {"rouge1": "max", "latency_ms": "min"}


def _row(r1, high, ms):
    return {"rouge1": r1, "rouge1_high": high, "latency_ms": ms}


def test_near_front_takes_a_trial_its_interval_puts_on_the_front_and_leaves_one_it_does_not():
    rows = [_row(0.26, 0.28, 500), _row(0.25, 0.27, 300),  # the front
            _row(0.245, 0.265, 320),  # dominated by 1 at its estimate, not at the top of its interval
            _row(0.20, 0.22, 600),  # dominated by 0 even at its best
            _row(0.24, 0.275, 310)]  # like 2, with a higher upper bound: first
    front = pareto_front(rows, OBJ)
    assert front == [0, 1]
    assert near_front(rows, front, list(range(5)), OBJ, "rouge1", limit=5) == [4, 2]
    assert near_front(rows, front, list(range(5)), OBJ, "rouge1", limit=1) == [4]
    assert near_front(rows, front, list(range(5)), OBJ, "rouge1", limit=0) == []
    missing = [*rows, {"rouge1": 0.3, "rouge1_high": 0.4}]  # no latency: neither a candidate nor a dominator
    assert near_front(missing, front, list(range(6)), OBJ, "rouge1", limit=5) == [4, 2]
    assert near_front(rows, front, [0, 1, 3, 4], OBJ, "rouge1", limit=5) == [4]  # only eligible trials count


def test_near_front_needs_the_quality_interval_and_a_max_quality_objective():
    rows = [_row(0.26, 0.28, 500), {"rouge1": 0.245, "latency_ms": 520}]  # the second has no interval
    assert near_front(rows, [0], [0, 1], OBJ, "rouge1", limit=2) == []
    assert near_front([_row(0.26, 0.28, 500), _row(0.245, 0.3, 520)], [0], [0, 1], {"latency_ms": "min"},
                      "rouge1", limit=2) == []
