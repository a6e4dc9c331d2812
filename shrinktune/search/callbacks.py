"""The Ray Tune callback that writes each ended trial into MLflow as a child of the search's run.

A trial is written once, when it has ended for good: finished, or failed on its last attempt (a failure that Tune
will retry goes through `on_trial_recover` and is only logged as a line here). A resumed search starts by reading
the children already in MLflow, so trials logged before an interruption are not logged again.
"""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import replace

import ray.cloudpickle as cloudpickle
from ray import tune

from shrinktune.settings import TrialSettings, as_params
from shrinktune.tracking.mlflow_tracking import SearchTracker

logger = logging.getLogger(__name__)


def error_summary(error: BaseException | None) -> str | None:
    """One readable line for an exception that Ray may have wrapped: the original type and first message line.

    A `RayTaskError` holds the trial's own exception as `cause`; a `RayActorError` (the worker died, e.g. killed
    for memory) has no cause and is summarised as itself.
    """
    if error is None:
        return None
    cause = getattr(error, "cause", None)
    cause = cause if isinstance(cause, BaseException) else error
    lines = [line for line in str(cause).strip().splitlines() if line.strip()]
    return f"{type(cause).__name__}: {lines[0].strip() if lines else '(no message)'}"


def _loss_curve(checkpoint: str | None) -> list[float]:
    """The per-epoch training losses the trial saved beside its checkpoint (empty if none)."""
    if not checkpoint:
        return []
    try:
        with open(os.path.join(checkpoint, "shrinktune_trial.json")) as handle:
            return [float(x) for x in json.load(handle).get("train_loss", [])]
    except (OSError, ValueError):
        return []


def _error_text(trial) -> str:
    """What a failed trial's `shrinktune.error` tag holds: the original exception on the first line, then Ray's
    record of every attempt (tracebacks included)."""
    record = ""
    if trial.error_file:
        try:
            with open(trial.error_file) as handle:
                record = re.sub(r"\x1b\[[0-9;]*m", "", handle.read()).strip()  # without Ray's terminal colours
        except OSError:
            pass
    summary = None
    if trial.pickled_error_file:
        try:
            with open(trial.pickled_error_file, "rb") as handle:
                summary = error_summary(cloudpickle.load(handle))
        except Exception:  # an exception that cannot be unpickled here: the text record still says it
            summary = None
    if summary is None:
        # Ray's record: "Failure # n (occurred at ...)" lines, then the exception's text; its last line is usually
        # "Type: message".
        lines = [line for line in record.splitlines() if line.strip() and not line.startswith("Failure # ")]
        summary = lines[-1].strip() if lines else "trial raised an error"
    return f"{summary}\n\n{record}" if record else summary


class MlflowTrialLogger(tune.Callback):
    """On each trial's end — success or final error — logs one child run with its config, metrics and checkpoint,
    and, given the objectives and the teacher's metrics, the search's hypervolume so far on the search's run."""

    def __init__(self, tracker: SearchTracker, objectives: dict[str, str] | None = None, reference: dict | None = None,
                 defaults: TrialSettings | None = None):
        self.tracker = tracker
        self.defaults = defaults  # the settings a trial starts from: its params are these with its own choices
        self.objectives = dict(objectives or {})
        self.reference = reference
        self.logged: dict[str, str] = {}  # Tune trial id → MLflow run id
        self.finished: list[dict] = []  # metrics of the finished trials, in the order they ended

    def setup(self, **info):
        # Called at the start of every run, a resumed one included (after Tune restored this callback's state):
        # MLflow is the record of what was logged, even in the seconds before an interruption that Tune's last
        # saved state does not cover.
        self.logged.update(self.tracker.trial_runs())
        if self.logged:
            logger.info("%d trial(s) already in MLflow: not logged again", len(self.logged))

    def _log(self, trial, status: str, error: str | None = None) -> None:
        if trial.trial_id in self.logged:
            logger.info("trial %s %s; already in MLflow as run %s", trial.trial_id, status.lower(),
                        self.logged[trial.trial_id])
            return
        result = dict(trial.last_result or {})
        metrics = {k: v for k, v in result.items() if isinstance(v, int | float) and not isinstance(v, bool)
                   and k not in ("training_iteration", "time_this_iter_s", "timestamp", "pid", "time_since_restore",
                                 "iterations_since_restore", "done")}
        checkpoint = trial.checkpoint.path if trial.checkpoint is not None else None
        run_id = self.tracker.log_trial(
            trial.trial_id, self._params(dict(trial.config)), metrics, status=status, checkpoint=checkpoint,
            error=error,
            history=_loss_curve(checkpoint),
        )
        self.logged[trial.trial_id] = run_id
        reason = f" ({error.splitlines()[0]})" if error else ""
        logger.info("trial %s %s%s → MLflow run %s", trial.trial_id, status.lower(), reason, run_id)

    def _params(self, config: dict) -> dict:
        """The trial's effective settings: the search's defaults and fixed settings with the sampler's choices."""
        if self.defaults is None:
            return config
        try:
            return as_params(replace(self.defaults, **config))
        except (TypeError, ValueError):  # a configuration the settings refuse (the trial failed on it): as sampled
            return {**as_params(self.defaults), **config}

    def on_trial_complete(self, iteration, trials, trial, **info):
        if trial.trial_id in self.logged:
            return self._log(trial, "FINISHED")
        self._log(trial, "FINISHED")
        if self.objectives and self.reference is not None:
            self.finished.append({**(trial.last_result or {}), "trial_id": trial.trial_id})
            self.tracker.log_frontier(self.finished, self.objectives, self.reference, step=len(self.finished))

    def on_trial_recover(self, iteration, trials, trial, **info):
        # Tune will run the trial again: nothing goes to MLflow until its last attempt ends.
        logger.warning("trial %s failed (attempt %d; %s); retrying", trial.trial_id, trial.run_metadata.num_failures,
                       _error_text(trial).splitlines()[0])

    def on_trial_error(self, iteration, trials, trial, **info):
        self._log(trial, "FAILED", error=_error_text(trial))

    def get_state(self):
        return {"logged": dict(self.logged), "finished": list(self.finished)}

    def set_state(self, state):
        self.logged = dict(state.get("logged", {}))
        self.finished = list(state.get("finished", []))
