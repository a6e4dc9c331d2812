"""Hypervolume normalised by the teacher: hand-computed 2-D and 3-D values, and the exact slicing algorithm agrees with
inclusion-exclusion on random fronts."""

from itertools import combinations

import numpy as np
import pytest

from shrinktune.front import ObjectiveError, exact_hypervolume, hypervolume, normalised_losses, running_hypervolume

TEACHER = {"rouge1": 0.40, "latency_ms": 100.0, "params_total": 1000.0}
TWO = {"rouge1": "max", "latency_ms": "min"}
THREE = {"rouge1": "max", "latency_ms": "min", "params_total": "min"}

# Quality ratio q and cost ratios: a point covers q × (1 - latency ratio) [× (1 - params ratio)].
A = {"rouge1": 0.36, "latency_ms": 50.0, "params_total": 500.0}  # q 0.9, lat 0.5, params 0.5
B = {"rouge1": 0.24, "latency_ms": 20.0, "params_total": 800.0}  # q 0.6, lat 0.2, params 0.8
C = {"rouge1": 0.40, "latency_ms": 90.0, "params_total": 900.0}  # q 1.0, lat 0.9, params 0.9


def test_two_objectives_hand_computed():
    # A: 0.9 × 0.5 = 0.45; B: 0.6 × 0.8 = 0.48; overlap 0.6 × 0.5 = 0.30 → 0.63.
    assert hypervolume([A, B], TWO, TEACHER) == pytest.approx(0.63)
    slower = {"rouge1": 0.44, "latency_ms": 120.0}  # better ROUGE but slower than the teacher: adds nothing
    dominated = {"rouge1": 0.20, "latency_ms": 60.0}
    broken = {"rouge1": 0.39, "latency_ms": float("nan")}
    missing = {"rouge1": 0.39}
    assert hypervolume([A, B, slower, dominated, broken, missing], TWO, TEACHER) == pytest.approx(0.63)
    assert hypervolume([slower], TWO, TEACHER) == 0.0 and hypervolume([], TWO, TEACHER) == 0.0


def test_three_objectives_hand_computed():
    # Boxes 0.9·0.5·0.5 = 0.225, 0.6·0.8·0.2 = 0.096, 1.0·0.1·0.1 = 0.01; pairwise overlaps 0.06, 0.009, 0.006;
    # triple overlap 0.006 → inclusion-exclusion 0.262.
    assert hypervolume([A, B], THREE, TEACHER) == pytest.approx(0.261)
    assert hypervolume([A, B, C], THREE, TEACHER) == pytest.approx(0.262)


def test_running_hypervolume_follows_the_order_and_never_drops():
    dominated = {"rouge1": 0.20, "latency_ms": 60.0, "params_total": 990.0}
    assert running_hypervolume([A, dominated, B, C], THREE, TEACHER) == pytest.approx([0.225, 0.225, 0.261, 0.262])


def test_single_objective_is_the_best_saving():
    assert hypervolume([A, B], {"latency_ms": "min"}, TEACHER) == pytest.approx(0.8)
    assert hypervolume([A, B], {"rouge1": "max"}, TEACHER) == pytest.approx(0.9)


def test_scale_free_comparable_across_teachers_of_the_same_ratio():
    scaled = {k: 10 * v for k, v in TEACHER.items()}
    points = [{k: 10 * v for k, v in p.items()} for p in (A, B, C)]
    assert hypervolume(points, THREE, scaled) == pytest.approx(hypervolume([A, B, C], THREE, TEACHER))


def test_normalisation_and_reference_point():
    losses, ref = normalised_losses([A], THREE, TEACHER)
    np.testing.assert_allclose(losses, [[-0.9, 0.5, 0.5]])
    np.testing.assert_allclose(ref, [0.0, 1.0, 1.0])


def _inclusion_exclusion(losses: np.ndarray, ref: np.ndarray) -> float:
    """The union of the boxes [point, ref] by inclusion-exclusion over every subset (small fronts only)."""
    total = 0.0
    for size in range(1, len(losses) + 1):
        for subset in combinations(range(len(losses)), size):
            corner = losses[list(subset)].max(axis=0)
            total += (-1) ** (size + 1) * float(np.prod(np.clip(ref - corner, 0, None)))
    return total


def test_exact_hypervolume_matches_inclusion_exclusion_on_random_fronts():
    rng = np.random.default_rng(0)
    for k in (2, 3, 4):
        losses = rng.uniform(0, 1, size=(9, k))
        ref = np.ones(k)
        assert exact_hypervolume(losses, ref) == pytest.approx(_inclusion_exclusion(losses, ref))


def test_teacher_value_missing_or_zero_is_one_clear_line():
    with pytest.raises(ObjectiveError,
                       match=r"positive number; 'params_total' is None in the reference; log the teacher"):
        hypervolume([A], THREE, {"rouge1": 0.4, "latency_ms": 100.0})
    with pytest.raises(ObjectiveError, match=r"'latency_ms' is 0"):
        hypervolume([A], TWO, {"rouge1": 0.4, "latency_ms": 0})
    with pytest.raises(ObjectiveError, match=r"objective 'rouge1' must be 'min' or 'max', got 'up'"):
        hypervolume([A], {"rouge1": "up"}, TEACHER)
