"""Optuna samplers for a search, and the Ray Tune searcher that tells them which trials broke the constraints.

Optuna 5 reads constraints from the trials themselves (`Trial.set_constraint`; the samplers' `constraints_func`
argument is deprecated there): TPE and NSGA-II rank an infeasible trial below every feasible one, and infeasible
trials by how far they missed, and `study.best_trials` keeps only feasible ones. `ConstrainedOptunaSearch` records
the space's constraints on each Optuna trial when Ray reports it complete, before Optuna is told its values.
"""

from __future__ import annotations

import logging
import warnings

import optuna
from ray.tune.search.optuna import OptunaSearch

from shrinktune.errors import ConfigError
from shrinktune.search.prescreen import screened
from shrinktune.search.space import SearchSpace, constraint_names, constraint_violations
from shrinktune.settings import SAMPLERS

logger = logging.getLogger(__name__)


def make_sampler(name: str, seed: int, *, startup_trials: int = 10) -> optuna.samplers.BaseSampler:
    """The Optuna sampler a space names.

    Args:
        name: "tpe" (multivariate, grouped so conditional dimensions are modelled together with the rest), "nsga2"
            (a genetic search over the Pareto front), "gp" (a Gaussian process with log expected hypervolume
            improvement) or "random".
        seed: the sampler's seed.
        startup_trials: trials (enqueued ones included) drawn at random before the sampler models the results:
            TPE's and the GP's `n_startup_trials`, NSGA-II's population size (its first generation is random).
            Optuna's defaults (10; NSGA-II 50) suit searches of hundreds of trials; a search of a dozen would stay
            random to its end (`SearchSettings.random_trials`).

    All four honour constraints recorded with `Trial.set_constraint` (random by ignoring them), so no argument
    turns them on.
    """
    if startup_trials < 1:
        raise ConfigError(f"startup_trials must be at least 1, got {startup_trials}; raise it.")
    if name == "tpe":
        # `group` models each set of dimensions that occur together (conditional ones) jointly; on a space without
        # conditions it proposes exactly what plain multivariate TPE does. Optuna flags it experimental; that
        # warning would reach every search's output and tells its reader nothing they can act on. Concurrent
        # trials: Optuna 5's `constant_liar` is on by default.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True,
                                              n_startup_trials=startup_trials)
    if name == "nsga2":
        if startup_trials < 2:
            raise ConfigError(f"NSGA-II needs a population of at least 2 trials, got {startup_trials}; raise "
                              "search.startup_trials.")
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=startup_trials)
    if name == "gp":
        # Dimensions absent from some trials (conditional ones) are drawn by its independent sampler, at random.
        return optuna.samplers.GPSampler(seed=seed, n_startup_trials=startup_trials, warn_independent_sampling=False)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    raise ConfigError(f"sampler must be one of {', '.join(SAMPLERS)}, got {name!r}; pick one of them.")


class ConstrainedOptunaSearch(OptunaSearch):
    """Ray's `OptunaSearch` that records how far each completed trial broke the space's constraints.

    Args:
        *args, **kwargs: as for `OptunaSearch` (space, metric, mode, points_to_evaluate, sampler, ...).
        constraints: metric → {"min": x, "max": y}, as `SearchSpace.constraints`; {} records nothing.

    The values, one per bound, named `metric.min` / `metric.max` (≤ 0 feasible, > 0 the amount violated, a missing
    or NaN metric 1.0), are set on the Optuna trial before `study.tell`, so the sampler sees them when it next
    proposes a trial.
    """

    def __init__(self, *args, constraints: dict[str, dict[str, float]] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.constraints = dict(constraints or {})

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        """Records the trial's constraint values on its Optuna trial, then lets `OptunaSearch` tell Optuna."""
        if screened(result):
            # Stopped by the cost pre-screen before it trained: told as pruned (`OptunaSearch` tells a trial that
            # ended without its objectives so), which TPE and the GP rank below every completed trial.
            super().on_trial_complete(trial_id, result=None, error=False)
            return
        missing: list[str] = []
        if result and isinstance(self.metric, list):
            missing = [m for m in self.metric if result.get(m) is None]
        if missing:
            # OptunaSearch would tell Optuna a None objective, which it refuses, leaving the trial RUNNING for good
            # (and counted as running by TPE's constant liar): tell it as failed instead.
            logger.warning("trial %s reported no %s; it is recorded as failed", trial_id, ", ".join(missing))
            result, error = None, True
        ot_trial = open_optuna_trial(self, trial_id)
        if self.constraints and result and ot_trial is not None:
            names = constraint_names(self.constraints)
            violations = constraint_violations(self.constraints, result)
            for name, value in zip(names, violations):
                ot_trial.set_constraint(name, value)
            broken = [f"{name} by {value:g}" for name, value in zip(names, violations) if value > 0]
            if broken:
                logger.info("trial %s is infeasible: %s", trial_id, ", ".join(broken))
        super().on_trial_complete(trial_id, result=result, error=error)

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        """A trial's costs, reported before it trains, are not an intermediate value of its objectives (with one
        objective, `OptunaSearch` would read it from them)."""
        if not screened(result):
            super().on_trial_result(trial_id, result)


def open_optuna_trial(searcher: OptunaSearch, trial_id: str) -> optuna.Trial | None:
    """The Optuna trial behind Ray's trial `trial_id`, while Optuna has not been told its result; else None.

    Ray's `OptunaSearch` has no public way to reach it, so this is the one place that reads its private state
    (`_ot_trials`, `_completed_trials`); tests/search/test_samplers.py fails loudly if Ray renames them.
    """
    if trial_id in searcher._completed_trials:
        return None
    return searcher._ot_trials.get(trial_id)


def make_searcher(space: SearchSpace, sampler: str, startup_trials: int | None = None) -> ConstrainedOptunaSearch:
    """The searcher of a new search over `space`: Optuna's `sampler` (seeded by the space; random for its first
    `startup_trials`, default the space's `search.random_trials`), the space's configurations tried first in order,
    its constraints recorded on every trial."""
    return ConstrainedOptunaSearch(
        space=space.suggest, metric=list(space.objectives), mode=list(space.objectives.values()),
        sampler=make_sampler(sampler, space.search.seed, startup_trials=startup_trials or space.search.random_trials),
        points_to_evaluate=[space.sampler_point(point) for point in space.enqueue] or None,
        constraints=space.constraints,
    )
