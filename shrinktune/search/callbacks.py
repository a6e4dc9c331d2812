"""The Ray Tune callback that writes each ended trial into MLflow as a child of the search's run."""

from __future__ import annotations

import json
import logging
import os

from ray import tune

from shrinktune.tracking.mlflow_tracking import SearchTracker

logger = logging.getLogger(__name__)


def _loss_curve(checkpoint: str | None) -> list[float]:
    """The per-epoch training losses the trial saved beside its checkpoint (empty if none)."""
    if not checkpoint:
        return []
    try:
        with open(os.path.join(checkpoint, "shrinktune_trial.json")) as handle:
            return [float(x) for x in json.load(handle).get("train_loss", [])]
    except (OSError, ValueError):
        return []


class MlflowTrialLogger(tune.Callback):
    """On each trial's end — success or error — logs one child run with its config, metrics and checkpoint."""

    def __init__(self, tracker: SearchTracker):
        self.tracker = tracker
        self.logged: dict[str, str] = {}  # Tune trial id → MLflow run id

    def _log(self, trial, status: str, error: str | None = None) -> None:
        if trial.trial_id in self.logged:
            return
        result = dict(trial.last_result or {})
        metrics = {k: v for k, v in result.items() if isinstance(v, int | float) and not isinstance(v, bool)
                   and k not in ("training_iteration", "time_this_iter_s", "timestamp", "pid", "time_since_restore",
                                 "iterations_since_restore", "done")}
        checkpoint = trial.checkpoint.path if trial.checkpoint is not None else None
        run_id = self.tracker.log_trial(
            trial.trial_id, dict(trial.config), metrics, status=status, checkpoint=checkpoint, error=error,
            history=_loss_curve(checkpoint),
        )
        self.logged[trial.trial_id] = run_id
        logger.info("trial %s %s → MLflow run %s", trial.trial_id, status.lower(), run_id)

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._log(trial, "FINISHED")

    def on_trial_error(self, iteration, trials, trial, **info):
        error = None
        if trial.error_file:
            try:
                with open(trial.error_file) as handle:
                    error = handle.read()
            except OSError:
                error = None
        self._log(trial, "FAILED", error=error or "trial raised an error")

    def get_state(self):
        return {"logged": dict(self.logged)}

    def set_state(self, state):
        self.logged = dict(state.get("logged", {}))
