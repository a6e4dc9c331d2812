"""The cost pre-screen: draws stopped before training only when they could not be on the front."""

import random

import optuna
import pytest
from ray.tune.schedulers import TrialScheduler

from shrinktune.front import pareto_front
from shrinktune.search.prescreen import CostPreScreen, screen, screened
from shrinktune.search.samplers import ConstrainedOptunaSearch, make_sampler
from shrinktune.search.trial import COSTS_ONLY

OBJECTIVES = {"rouge1": "max", "latency_ms": "min", "train_peak_mb": "min"}
TEACHER = {"rouge1": 0.25, "latency_ms": 100.0, "train_peak_mb": 400.0}
CEILING = 1.1


class Trial:
    def __init__(self, trial_id):
        self.trial_id = trial_id


def _trained(rng, n):
    # coarse values so that ties on single objectives happen, as they do for students of one architecture
    return {f"t{i}": {"rouge1": rng.choice([0.1, 0.2, 0.25, 0.27, 0.275, 0.3]),
                      "latency_ms": rng.choice([20.0, 40.0, 60.0, 100.0]),
                      "train_peak_mb": rng.choice([100.0, 200.0, 300.0])} for i in range(n)}


def test_the_prescreen_never_drops_a_draw_that_could_be_on_the_front():
    """For random sets of trained students and random draws: a draw is stopped if and only if, whatever quality it
    reaches up to the ceiling, it is not on the front of the trained students and itself (dominance is checked
    against trained students only)."""
    rng, stopped, kept = random.Random(0), 0, 0
    for _ in range(400):
        trained = _trained(rng, rng.randint(0, 6))
        costs = {"latency_ms": rng.choice([20.0, 40.0, 60.0, 100.0]),
                 "train_peak_mb": rng.choice([100.0, 200.0, 300.0])}
        verdict = screen(costs, trained, OBJECTIVES, {}, TEACHER, CEILING)
        best = CEILING * TEACHER["rouge1"]
        for quality in (0.0, 0.1, best / 2, best):
            rows = [*trained.values(), {**costs, "rouge1": quality}]
            on_front = len(rows) - 1 in pareto_front(rows, OBJECTIVES)
            if verdict is not None:
                assert not on_front, (verdict, trained, costs, quality)
        if verdict is None:  # kept: at its best it would be on the front
            rows = [*trained.values(), {**costs, "rouge1": best}]
            assert len(rows) - 1 in pareto_front(rows, OBJECTIVES), (trained, costs)
            kept += 1
        else:
            assert verdict.dominated_by in trained
            stopped += 1
    assert stopped > 20 and kept > 20  # both cases were exercised


def test_a_draw_that_could_tie_a_trained_student_trains():
    """A draw with the same costs as a trained student could at its best equal it, and a tie is on the front; one
    that costs more and could at best match its quality could not."""
    trained = {"a": {"rouge1": CEILING * TEACHER["rouge1"], "latency_ms": 40.0, "train_peak_mb": 200.0}}
    assert screen({"latency_ms": 40.0, "train_peak_mb": 200.0}, trained, OBJECTIVES, {}, TEACHER, CEILING) is None
    assert screen({"latency_ms": 41.0, "train_peak_mb": 200.0}, trained, OBJECTIVES, {}, TEACHER, CEILING)
    trained["a"]["rouge1"] -= 0.001  # now the draw could beat it on quality
    assert screen({"latency_ms": 41.0, "train_peak_mb": 200.0}, trained, OBJECTIVES, {}, TEACHER, CEILING) is None


def test_costs_that_break_a_constraint_stop_the_draw_whatever_the_ceiling():
    constraints = {"latency_ms": {"max": 50.0}, "speedup": {"min": 1.5}, "rouge1": {"min": 0.2}}
    verdict = screen({"latency_ms": 60.0, "train_peak_mb": 100.0, "speedup": 1.6}, {}, OBJECTIVES, constraints,
                     TEACHER, 0)
    assert verdict is not None and "latency_ms.max by 10" in verdict.reason and verdict.dominated_by is None
    assert screen({"latency_ms": 40.0, "train_peak_mb": 100.0, "speedup": 1.4}, {}, OBJECTIVES, constraints,
                  TEACHER, 0).reason.startswith("its costs break speedup.min")
    # quality constraints wait for the trained student; ceiling 0 turns dominance off
    trained = {"a": {"rouge1": 0.3, "latency_ms": 10.0, "train_peak_mb": 10.0}}
    assert screen({"latency_ms": 40.0, "train_peak_mb": 100.0, "speedup": 2.0}, trained, OBJECTIVES, constraints,
                  TEACHER, 0) is None


def test_unknown_costs_or_teacher_quality_never_stop_a_draw():
    trained = {"a": {"rouge1": 0.9, "latency_ms": 1.0, "train_peak_mb": 1.0}}
    assert screen({"latency_ms": 40.0}, trained, OBJECTIVES, {}, TEACHER, CEILING) is None  # no memory measured
    assert screen({"latency_ms": 40.0, "train_peak_mb": 100.0}, trained, OBJECTIVES, {}, {}, CEILING) is None


def test_the_scheduler_stops_on_costs_and_learns_only_from_trained_students():
    scheduler = CostPreScreen(OBJECTIVES, {}, TEACHER, CEILING)
    cheap = {"rouge1": 0.3, "latency_ms": 20.0, "train_peak_mb": 100.0}
    # nothing trained yet: every draw trains
    assert scheduler.on_trial_result(None, Trial("a"), {**cheap, "rouge1": None, COSTS_ONLY: 1.0}) == \
        TrialScheduler.CONTINUE
    scheduler.on_trial_complete(None, Trial("a"), cheap)
    assert set(scheduler.trained) == {"a"}
    # a dearer draw is dominated by the trained one even at the ceiling (0.275 < 0.3): stopped
    assert scheduler.on_trial_result(None, Trial("b"), {"latency_ms": 30.0, "train_peak_mb": 150.0, COSTS_ONLY: 1.0}) \
        == TrialScheduler.STOP
    assert scheduler.stopped["b"].dominated_by == "a"
    scheduler.on_trial_complete(None, Trial("b"), {"latency_ms": 30.0, "train_peak_mb": 150.0, COSTS_ONLY: 1.0})
    assert set(scheduler.trained) == {"a"}  # a stopped draw is never a dominator: its quality is unknown
    # cheaper on one cost than the trained one: trains; its final (trained) result is not a costs-only one
    assert scheduler.on_trial_result(None, Trial("c"), {"latency_ms": 10.0, "train_peak_mb": 150.0, COSTS_ONLY: 1.0}) \
        == TrialScheduler.CONTINUE
    assert scheduler.on_trial_result(None, Trial("c"), {"rouge1": 0.1, "latency_ms": 10.0, "train_peak_mb": 150.0}) \
        == TrialScheduler.CONTINUE
    assert screened({COSTS_ONLY: 1.0}) and not screened({"rouge1": 0.1}) and not screened(None)


def test_a_stopped_draw_is_told_to_optuna_as_pruned():
    space = optuna.distributions.IntDistribution(1, 6)
    searcher = ConstrainedOptunaSearch(space={"layers": space}, metric=list(OBJECTIVES), mode=list(OBJECTIVES.values()),
                                       sampler=make_sampler("tpe", 0, startup_trials=2))
    searcher.suggest("x")
    searcher.on_trial_complete("x", {"latency_ms": 30.0, "train_peak_mb": 150.0, COSTS_ONLY: 1.0})
    searcher.suggest("y")
    searcher.on_trial_complete("y", {"rouge1": 0.2, "latency_ms": 30.0, "train_peak_mb": 150.0})
    states = [t.state for t in searcher._ot_study.trials]
    assert states == [optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.COMPLETE]


@pytest.mark.parametrize("ceiling", [0.0, 1.1])
def test_the_prescreen_setting_is_validated_with_the_rest(ceiling):
    from shrinktune.settings import SearchSettings

    assert SearchSettings(prescreen_ceiling=ceiling).prescreen
    with pytest.raises(ValueError, match="prescreen_ceiling"):
        SearchSettings(prescreen_ceiling=-1)


def test_a_single_objective_searcher_skips_the_costs_report():
    searcher = ConstrainedOptunaSearch(space={"layers": optuna.distributions.IntDistribution(1, 6)}, metric="rouge1",
                                       mode="max", sampler=make_sampler("tpe", 0, startup_trials=2))
    searcher.suggest("x")
    searcher.on_trial_result("x", {"latency_ms": 30.0, COSTS_ONLY: 1.0, "training_iteration": 1})
    searcher.on_trial_result("x", {"rouge1": 0.2, "training_iteration": 2})
    searcher.on_trial_complete("x", {"rouge1": 0.2, "training_iteration": 2})
    assert searcher._ot_study.trials[0].intermediate_values == {2: 0.2}
