"""The Ray Tune callback that writes each ended trial into MLflow as a child of the search's run.

A trial is written once, when it has ended for good: finished, or failed on its last attempt (a failure that Tune
will retry goes through `on_trial_recover` and is only logged as a line here). A resumed search starts by reading
the children already in MLflow, so trials logged before an interruption are not logged again.

Each trial's run is named from its settings so people can tell runs apart in MLflow's table (`run_name`), lasts as
long as the trial did, and holds every setting the trial ran with; each ended trial also prints one progress line:
"trial k of N ...", the time so far and an estimate of what is left.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from collections.abc import Iterable
from dataclasses import replace

import ray.cloudpickle as cloudpickle
from ray import tune

from shrinktune.search.prescreen import screened
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


def _number(value) -> str:
    """A setting's number, short: `8.1e-4`, `3e-4`, `0.1`, `16`."""
    if isinstance(value, float) and value and abs(value) < 1e-2:
        mantissa, exponent = f"{value:.1e}".split("e")
        return f"{mantissa.removesuffix('.0')}e{int(exponent)}"
    return f"{value:g}" if isinstance(value, float) else str(value)


# How a sampled setting shows in a run's name, after the shape, learning rate and method (others: `name=value`).
_NAME_PARTS = {
    "epochs": lambda v: f"ep{v}", "batch_size": lambda v: f"bs{v}", "label_smoothing": lambda v: f"ls{_number(v)}",
    "ae_kind": lambda v: f"ae-{v}", "ae_mode": lambda v: f"ae-{v}", "ae_epochs": lambda v: f"aeep{v}",
    "decoder_ffn": lambda v: f"ffn-{v}", "layer_map": lambda v: f"map-{v}", "weight_compression": lambda v: f"wc-{v}",
    "weight_ratio": lambda v: f"wc/{_number(v)}", "kd_temperature": lambda v: f"T{_number(v)}",
    "kd_alpha_ce": lambda v: f"ce{_number(v)}", "kd_alpha_mlm": lambda v: f"mlm{_number(v)}",
    "kd_alpha_hid": lambda v: f"hid{_number(v)}",
}
_NAME_HEAD = ("latent_dim", "decoder_layers", "encoder_layers", "learning_rate", "method")


def run_name(settings: dict, sampled: Iterable[str], trial_id: str) -> str:
    """A trial's run name as people read it in MLflow's runs table: its shape (latent width x decoder layers, `full`
    / `all` when left at the teacher's; `enc3` when the encoder is pruned), learning rate and method, then the other
    settings the sampler chose, then its Tune id (unique): `384x5 lr8.1e-4 sft · 4f2a9c1e`.

    Args:
        settings: the trial's effective settings (the sampler's choices over the search's defaults).
        sampled: the names of the settings the sampler chose.
    """
    parts = [f"{settings.get('latent_dim') or 'full'}x{settings.get('decoder_layers') or 'all'}"]
    if settings.get("encoder_layers"):
        parts.append(f"enc{settings['encoder_layers']}")
    if settings.get("learning_rate") is not None:
        parts.append(f"lr{_number(settings['learning_rate'])}")
    if settings.get("method"):
        parts.append(str(settings["method"]))
    for key in sampled:
        if key not in _NAME_HEAD and key in settings:
            parts.append(_NAME_PARTS.get(key, lambda v, k=key: f"{k}={_number(v)}")(settings[key]))
    return f"{' '.join(parts)} · {trial_id}"


def _times_ms(trial, now: float) -> tuple[int | None, int]:
    """(start, end) of a trial in ms since the epoch: when Tune first ran it (its first attempt, when retried) and
    now, as it ends. A trial without Tune's start time starts `time_total_s` (its own clock) before now; with
    neither, None (MLflow's now)."""
    start = getattr(getattr(trial, "run_metadata", None), "start_time", None)
    if start is None:
        total = (trial.last_result or {}).get("time_total_s")
        start = now - total if isinstance(total, int | float) else None
    return (int(start * 1000) if start is not None else None), int(now * 1000)


def _duration(seconds: float) -> str:
    """`45 s`, `4 min 10 s`, `2 h 05 min`."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


class MlflowTrialLogger(tune.Callback):
    """On each trial's end — success or final error — logs one child run with its config, metrics and checkpoint,
    and, given the objectives and the teacher's metrics, the search's hypervolume so far on the search's run; then
    says "trial k of N" with the time so far and an estimate of what is left.

    Args:
        defaults: the settings a trial starts from: its params are these with its own choices.
        shared: the search-wide settings every trial ran with (decoding, evaluation), as params of each trial.
        total: the trials the search runs (N), for the progress line.
        started: when the search started (`time.time()`), for the progress line; default: when Tune starts.
    """

    # Class-level defaults: an instance Tune pickled before these existed still reads them.
    shared: dict | None = None
    total: int | None = None
    started: float | None = None
    _clock: float | None = None
    _ended_here = 0

    def __init__(self, tracker: SearchTracker, objectives: dict[str, str] | None = None, reference: dict | None = None,
                 defaults: TrialSettings | None = None, *, shared: dict | None = None, total: int | None = None,
                 started: float | None = None):
        self.tracker = tracker
        self.defaults = defaults
        self.shared = dict(shared or {})
        self.total = total
        self.started = started
        self.objectives = dict(objectives or {})
        self.reference = reference
        self.logged: dict[str, str] = {}  # Tune trial id → MLflow run id
        self.finished: list[dict] = []  # metrics of the finished trials, in the order they ended
        self._clock = time.time()  # when this run of Tune started (reset by `setup`), for the estimate
        self._ended_here = 0  # trials logged since then

    def setup(self, **info):
        # Called at the start of every run, a resumed one included (after Tune restored this callback's state):
        # MLflow is the record of what was logged, even in the seconds before an interruption that Tune's last
        # saved state does not cover.
        self.logged.update(self.tracker.trial_runs())
        if self.logged:
            logger.info("%d trial(s) already in MLflow: not logged again", len(self.logged))
        self._clock, self._ended_here = time.time(), 0

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
        config = dict(trial.config)
        params = self._params(config)
        name = run_name(params, config, trial.trial_id)
        now = time.time()
        start_ms, end_ms = _times_ms(trial, now)
        stopped = screened(result)
        run_id = self.tracker.log_trial(
            trial.trial_id, {**params, **(self.shared or {})}, metrics, status=status, checkpoint=checkpoint,
            error=error, history=_loss_curve(checkpoint), run_name=name, start_ms=start_ms, end_ms=end_ms,
            screened=stopped,
        )
        self.logged[trial.trial_id] = run_id
        self._ended_here += 1
        reason = f" ({error.splitlines()[0]})" if error else ""
        if stopped:
            status = "stopped before training (cost pre-screen)"
        logger.info("%s %s%s → MLflow run %s (%s)%s", self._count(), status.lower(), reason, run_id, name,
                    self._timing(now))

    def _count(self) -> str:
        """`trial k of N`: k counts every trial logged, before an interruption included."""
        return f"trial {len(self.logged)}" + (f" of {self.total}" if self.total else "")

    def _timing(self, now: float) -> str:
        """`; 4 min 10 s elapsed, about 8 min 20 s left`: the time since the search started, and the trials left
        at the rate trials have ended since Tune started (concurrent trials included)."""
        clock = self._clock or now
        text = f"; {_duration(now - (self.started or clock))} elapsed"
        left = (self.total or 0) - len(self.logged)
        if left > 0 and self._ended_here:
            text += f", about {_duration((now - clock) / self._ended_here * left)} left"
        return text

    def _params(self, config: dict) -> dict:
        """The trial's effective settings: the search's defaults and fixed settings with the sampler's choices
        (without defaults: the choices alone)."""
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
        if self.objectives and self.reference is not None and not screened(trial.last_result):
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
