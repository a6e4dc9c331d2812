"""The search's final front, in-process: constraints and their `feasible` tags, the quality floor, the re-check at
high fidelity (new numbers under their names, the search's as search_*), and flags of members whose quality is not
told apart from a cheaper member's. Ray and the trial are stood in for; MLflow is real (a sqlite file)."""

from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest

from shrinktune.search import runner
from shrinktune.search.runner import _finish, _outcome, _recheck
from shrinktune.search.space import SearchSpace
from shrinktune.search.trial import Recheck, TrialContext
from shrinktune.tracking.mlflow_tracking import SearchTracker
from tests.fake_ray import FakeRay

TEACHER = {"rouge1": 0.27, "latency_ms": 600.0, "latency_fixed_ms": 500.0, "latency_encoder_ms": 40.0,
           "fixed_new_tokens": 24, "tokens_per_summary": 28.0, "train_peak_mb": 100.0, "eval_samples": 30}


def _space(tmp_path, constraints: str = "", floor: float = 0.5) -> SearchSpace:
    path = tmp_path / "front.yaml"
    path.write_text(f"""task: summarization
teacher: embedded
objectives: {{rouge1: max, latency_ms: min}}
{constraints}
search: {{trials: 5, quality_floor: {floor}}}
dimensions:
  decoder_layers: {{type: int, low: 1, high: 6}}
""")
    return SearchSpace.load(path)


def _result(trial_id: str, rouge1: float, latency_ms: float, tmp_path):
    checkpoint = tmp_path / trial_id
    checkpoint.mkdir(exist_ok=True)
    return SimpleNamespace(
        metrics={"trial_id": trial_id, "training_iteration": 1, "rouge1": rouge1, "latency_ms": latency_ms,
                 "train_peak_mb": 50.0}, config={"decoder_layers": 3}, error=None, path=str(checkpoint),
        checkpoint=SimpleNamespace(path=str(checkpoint)))


def _search(tmp_path, space, results):
    tracker = SearchTracker(f"sqlite:///{tmp_path}/mlflow.db", space.name)
    tracker.start_search("s", {"space": str(space.path)})
    tracker.log_teacher(str(tmp_path / "teacher"), TEACHER)  # on the search's run, and as a run beside the trials
    for result in results:
        tracker.log_trial(result.metrics["trial_id"], result.config, result.metrics, checkpoint=result.checkpoint.path)
    return tracker


def _stand_in_recheck(monkeypatch, checked: Recheck) -> dict:
    """Makes the runner's `recheck_front` return `checked`; returns the checkpoints it is asked about, as it is."""
    seen: dict = {}

    def fake_recheck(ctx, checkpoints):
        seen.update(checkpoints)
        return checked

    monkeypatch.setattr(runner, "recheck_front", fake_recheck)
    return seen


def _runs(tracker) -> dict:
    return {r.data.tags["shrinktune.trial"]: r for r in tracker.client.search_runs(
        [tracker.experiment_id()], filter_string="tags.`shrinktune.kind` = 'trial'")}


def test_front_under_constraints_is_tagged_feasible_and_pareto(tmp_path):
    """A trial breaking a constraint is off the front however good, and every trial gets its feasible tag."""
    space = _space(tmp_path, "constraints: {latency_ms: {max: 400}}", floor=0)
    results = [_result("fast", 0.20, 200, tmp_path), _result("slow", 0.26, 500, tmp_path),
               _result("mid", 0.24, 300, tmp_path), _result("dominated", 0.19, 350, tmp_path)]
    tracker = _search(tmp_path, space, results)
    outcome = _outcome(results, "s", 4, tracker, space, dict(TEACHER))
    assert sorted(outcome.finished[i].trial_id for i in outcome.front) == ["fast", "mid"]
    _finish(outcome, tracker, space, 4)
    runs = _runs(tracker)
    assert {t: r.data.tags.get("shrinktune.feasible") for t, r in runs.items()} == {
        "fast": "true", "slow": "false", "mid": "true", "dominated": "true"}
    assert {t for t, r in runs.items() if r.data.tags.get("shrinktune.pareto") == "true"} == {"fast", "mid"}


def test_degenerate_trials_are_kept_off_the_front_and_listed_apart(tmp_path):
    """A tiny student that learned nothing (R-1 .007) is not a trade-off, however cheap; floor 0 lets it in."""
    results = [_result("good", 0.25, 400, tmp_path), _result("empty", 0.007, 50, tmp_path)]
    space = _space(tmp_path)
    tracker = _search(tmp_path, space, results)
    outcome = _outcome(results, "s", 2, tracker, space, dict(TEACHER))
    assert [outcome.finished[i].trial_id for i in outcome.front] == ["good"]
    assert [outcome.finished[i].trial_id for i in outcome.degenerate] == ["empty"]
    _finish(outcome, tracker, space, 2)
    assert "shrinktune.degenerate" in _runs(tracker)["empty"].data.tags
    off = _outcome(results, "s", 2, tracker, _space(tmp_path, floor=0), dict(TEACHER))
    assert len(off.front) == 2 and not off.degenerate


def test_recheck_replaces_the_numbers_keeps_the_search_ones_and_flags_indistinct_members(tmp_path, monkeypatch):
    """The final front is computed on the re-checked numbers; a member whose R-1 is not told apart from a cheaper
    member's, pair by pair, is flagged; MLflow keeps the in-search figures as search_*."""
    results = [_result("a", 0.26, 500, tmp_path), _result("b", 0.25, 300, tmp_path), _result("c", 0.20, 150, tmp_path)]
    space = _space(tmp_path)
    tracker = _search(tmp_path, space, results)
    outcome = _outcome(results, "s", 3, tracker, space, dict(TEACHER))
    assert len(outcome.front) == 3
    groups = [f"paper{i // 3}" for i in range(30)]
    base = [0.2 + 0.01 * (i % 7) for i in range(30)]
    checked = Recheck(
        teacher={**TEACHER, "rouge1": 0.265, "eval_samples": 30, "latency_ms": 610.0},
        members={"a": {"rouge1": 0.251, "latency_ms": 480.0, "eval_samples": 30},
                 "b": {"rouge1": 0.250, "latency_ms": 310.0, "eval_samples": 30},
                 "c": {"rouge1": 0.150, "latency_ms": 140.0, "eval_samples": 30}},
        pair_stats={"teacher": [[x] for x in base],
                    "a": [[x + noise] for x, noise in zip(base, np.random.default_rng(0).normal(0, .02, 30))],
                    "b": [[x] for x in base], "c": [[x - 0.1] for x in base]},
        groups=groups)
    seen = _stand_in_recheck(monkeypatch, checked)
    context = TrialContext(task="summarization", teacher_dir="t", cache_root=str(tmp_path), reference=dict(TEACHER))
    _recheck(FakeRay(), outcome, space, context, tracker, 1, 0)
    assert set(seen) == {"a", "b", "c"}
    assert outcome.rechecked == 30 and outcome.reference["rouge1"] == 0.265
    assert sorted(outcome.finished[i].trial_id for i in outcome.front) == ["a", "b", "c"]
    assert set(outcome.indistinct) == {"a"} and outcome.indistinct["a"].cheaper == "b"
    assert outcome.finished[1].metrics["rouge1_change"] == pytest.approx((0.250 - 0.265) / 0.265)
    _finish(outcome, tracker, space, 3)
    runs = _runs(tracker)
    assert runs["b"].data.metrics["rouge1"] == 0.250 and runs["b"].data.metrics["search_rouge1"] == 0.25
    assert runs["b"].data.metrics["latency_ms"] == 310.0 and runs["b"].data.metrics["search_latency_ms"] == 300.0
    assert runs["b"].data.tags["shrinktune.rechecked"] == "30"
    assert "cheaper trial b" in runs["a"].data.tags["shrinktune.indistinct"]
    assert "shrinktune.indistinct" not in runs["b"].data.tags  # c is cheaper but clearly worse
    parent = tracker.client.get_run(tracker.parent_run_id).data.metrics
    assert parent["teacher_rouge1"] == 0.265 and parent["search_teacher_rouge1"] == 0.27
    teacher = tracker.client.get_run(tracker.teacher_run_id())  # the teacher's own run, re-checked as a trial is
    assert teacher.data.metrics["rouge1"] == 0.265 and teacher.data.metrics["search_rouge1"] == 0.27
    assert teacher.data.metrics["latency_ms"] == 610.0 and teacher.data.tags["shrinktune.rechecked"] == "30"
    assert set(_runs(tracker)) == {"a", "b", "c"}  # the front's tags went to the trials only


def test_a_screened_draw_is_counted_apart_and_one_stopped_by_the_budget_after_its_costs_is_not(tmp_path):
    """Two draws ended with their costs alone: one stopped by the pre-screen (logged to MLflow, KILLED and tagged
    screened), one stopped by the time budget while it trained (never logged): only the first is a screened row."""
    space = _space(tmp_path, floor=0)
    results = [_result("trained", 0.25, 300, tmp_path)]
    tracker = _search(tmp_path, space, results)
    for trial_id in ("screened", "cut"):
        costs = {"trial_id": trial_id, "training_iteration": 1, "latency_ms": 200.0, "costs_only": 1.0}
        results.append(SimpleNamespace(metrics=costs, config={"decoder_layers": 1}, error=None, checkpoint=None,
                                       path=str(tmp_path / trial_id)))
    tracker.log_trial("screened", {"decoder_layers": 1}, results[1].metrics, screened=True)
    outcome = _outcome(results, "s", 2, tracker, space, dict(TEACHER))
    assert [r.trial_id for r in outcome.rows] == ["trained", "screened"]
    assert [r.trial_id for r in outcome.finished] == ["trained"] and [r.trial_id for r in outcome.screened] == [
        "screened"]
    assert [outcome.finished[i].trial_id for i in outcome.front] == ["trained"]
    run = _runs(tracker)["screened"]
    assert run.info.status == "KILLED" and run.data.tags["shrinktune.screened"] == "true"


def test_recheck_takes_a_trial_beside_the_front_whose_interval_reaches_it_and_it_can_join(tmp_path, monkeypatch):
    """'near' was dominated in-search by 'b' (60 pairs' luck), but its R-1 interval reaches the front: it is
    re-checked beside the members and, better on the re-check, it is on the final front; 'far' is not re-checked."""
    results = [_result("a", 0.26, 500, tmp_path), _result("b", 0.25, 300, tmp_path),
               _result("near", 0.245, 320, tmp_path), _result("far", 0.20, 600, tmp_path)]
    for result, high in zip(results, (0.28, 0.27, 0.27, 0.22)):
        result.metrics["rouge1_high"] = high
    space = _space(tmp_path)
    tracker = _search(tmp_path, space, results)
    outcome = _outcome(results, "s", 4, tracker, space, dict(TEACHER))
    assert sorted(outcome.finished[i].trial_id for i in outcome.front) == ["a", "b"]
    stats = {name: [[0.25]] * 30 for name in ("teacher", "a", "b", "near")}
    checked = Recheck(teacher={**TEACHER, "eval_samples": 30},
                      members={name: {"rouge1": r1, "latency_ms": ms, "eval_samples": 30} for name, r1, ms in (
                          ("a", 0.255, 500.0), ("b", 0.240, 300.0), ("near", 0.258, 320.0))},
                      pair_stats=stats, groups=[f"p{i}" for i in range(30)])
    seen = _stand_in_recheck(monkeypatch, checked)
    context = TrialContext(task="summarization", teacher_dir="t", cache_root=str(tmp_path), reference=dict(TEACHER))
    _recheck(FakeRay(), outcome, space, context, tracker, 1, 0)
    assert set(seen) == {"a", "b", "near"}
    assert sorted(outcome.finished[i].trial_id for i in outcome.front) == ["b", "near"]  # near dominates a now
    assert _runs(tracker)["near"].data.tags["shrinktune.rechecked"] == "30"
    off = _outcome(results, "s", 4, tracker, space, dict(TEACHER))
    seen.clear()
    no_near = replace(context, evaluation=replace(context.evaluation, recheck_near=0))
    _recheck(FakeRay(), off, space, no_near, tracker, 1, 0)
    assert set(seen) == {"a", "b"}
