"""Cost before training: a draw that cannot reach the front is stopped before it trains.

Latency, memory and size are properties of the architecture, measured in seconds on the student's untrained weights
(`trial.draw_costs`); quality is not known until the student has trained. Each trial therefore reports its costs
first (a result marked `COSTS_ONLY`), and the `CostPreScreen` scheduler — a Ray Tune `FIFOScheduler` — stops it
there when

- its costs break one of the space's constraints (the costs reported are the draw's best case: latency at the
  shortest summary it could make, the speed-up at that length; sizes and training memory are exact), or
- a student already *trained* in this search dominates the draw at its best — its best-case costs, and on every
  quality objective `ceiling` × the teacher's value: whatever the draw learns (up to that ceiling), it would not
  be on the front.

Draws that are not stopped train as before; their speed measurement is cached per architecture, so measuring it
first costs nothing. Optuna is told a stopped draw as pruned, which TPE and the GP rank below every completed
trial: the sampler learns to avoid that corner, and the training budget goes where the front can move.
Dominance is only ever checked against trained students — never against other stopped draws, whose quality is
unknown.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

from ray.tune.schedulers import FIFOScheduler, TrialScheduler

from shrinktune.front import dominates
from shrinktune.search.space import constraint_names, constraint_violations
from shrinktune.search.trial import COSTS_ONLY

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Verdict:
    """Why a draw is stopped before training."""

    reason: str  # one line for the search's log and the run's tag
    dominated_by: str | None = None  # the trained trial that dominates it


def best_case(costs: dict, objectives: dict[str, str], reference: dict, ceiling: float) -> dict | None:
    """The draw at its best: its measured (best-case) costs, and on each quality (`max`) objective `ceiling` × the
    teacher's value. None when that best case is unknown: a quality objective the teacher has no value of, or a
    cost objective the draw did not report (it is then never dominated)."""
    point = {}
    for metric, direction in objectives.items():
        if direction == "max":
            teacher = reference.get(metric)
            if not isinstance(teacher, int | float) or not math.isfinite(teacher) or teacher <= 0:
                return None
            point[metric] = ceiling * teacher
        elif costs.get(metric) is None:
            return None
        else:
            point[metric] = costs[metric]
    return point


def screen(costs: dict, trained: dict[str, dict], objectives: dict[str, str], constraints: dict,
           reference: dict, ceiling: float) -> Verdict | None:
    """Whether a draw with these costs is stopped before training (a `Verdict`), or trains (None).

    Args:
        costs: the draw's best-case costs (`trial.draw_costs`).
        trained: trial id → the metrics of each student trained so far in this search.
        objectives, constraints: the space's.
        reference: the teacher's metrics (quality ceilings are relative to them).
        ceiling: the best quality a draw is assumed able to reach, × the teacher's (0: no dominance check).
    """
    measured = {m: b for m, b in constraints.items() if costs.get(m) is not None}
    broken = [f"{name} by {value:g}" for name, value in zip(constraint_names(measured),
                                                            constraint_violations(measured, costs)) if value > 0]
    if broken:
        return Verdict(f"its costs break {', '.join(broken)} whatever it learns")
    if not ceiling:
        return None
    point = best_case(costs, objectives, reference, ceiling)
    if point is None:
        return None
    for trial_id, metrics in trained.items():
        if any(metrics.get(m) is None for m in objectives):
            continue
        if dominates(metrics, point, objectives):  # strictly: a draw that could tie a member could be one
            return Verdict(f"trained trial {trial_id} dominates it even at {ceiling:g} × the teacher's quality",
                           dominated_by=trial_id)
    return None


class CostPreScreen(FIFOScheduler):
    """Runs trials first-in first-out, and stops each one whose first report (its costs) `screen`s it out.

    Args:
        objectives, constraints: the space's.
        reference: the teacher's metrics.
        ceiling: the best quality a draw is assumed able to reach, × the teacher's (0: constraints only).
    """

    def __init__(self, objectives: dict[str, str], constraints: dict, reference: dict, ceiling: float):
        super().__init__()
        self.objectives = dict(objectives)
        self.constraints = dict(constraints)
        self.reference = dict(reference)
        self.ceiling = ceiling
        self.trained: dict[str, dict] = {}  # trial id → metrics of the students trained so far
        self.stopped: dict[str, Verdict] = {}  # trial id → why it was stopped before training

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        if not result.get(COSTS_ONLY):
            return TrialScheduler.CONTINUE
        verdict = screen(result, self.trained, self.objectives, self.constraints, self.reference, self.ceiling)
        if verdict is None:
            return TrialScheduler.CONTINUE
        self.stopped[trial.trial_id] = verdict
        logger.info("trial %s stopped before training: %s", trial.trial_id, verdict.reason)
        return TrialScheduler.STOP

    def on_trial_complete(self, tune_controller, trial, result: dict) -> None:
        if result and not result.get(COSTS_ONLY) and all(result.get(m) is not None for m in self.objectives):
            self.trained[trial.trial_id] = dict(result)
        super().on_trial_complete(tune_controller, trial, result)

    def debug_string(self) -> str:
        return f"CostPreScreen: {len(self.trained)} trained, {len(self.stopped)} stopped before training"


def screened(result: dict | None) -> bool:
    """Whether a trial's last result is its costs alone: it was stopped before training."""
    return bool(result and result.get(COSTS_ONLY))
