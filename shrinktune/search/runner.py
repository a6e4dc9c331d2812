"""Running a search: Ray Tune drives Optuna's multi-objective samplers over a validated space.

Order of work, after `prepare_search` (shrinktune.search.plan) checked everything once: start or join Ray →
prepare and measure the teacher in a Ray task with a trial's resources → one Tune trial per configuration, each
logged to MLflow as a child of the search's run when it ends → the Pareto front of the finished trials that meet
the constraints and the quality floor → the front re-checked at high fidelity in one more Ray task (the whole
validation split, latency from the architecture's cached rounds), recomputed on those numbers, and tagged in MLflow.

Faults: a trial that raises (NaN loss, out of memory, an impossible configuration...) is retried `retries` times,
then recorded as FAILED with its reason, and the search goes on. An interrupted search (killed driver, lost head
node, Ctrl-C) continues with `prepare_search(space, RunOptions(..., resume=<name>))`: Tune restores its trials and
sampler from `<storage>/<name>`, finished trials are kept, and MLflow's run for the search is re-opened. For tests
and demos, `SHRINKTUNE_FAIL_TRIALS` makes chosen trials fail on purpose (see `parse_faults`).
"""

from __future__ import annotations

import contextlib
import importlib.metadata as md
import json
import logging
import math
import os
import platform as stdlib_platform
import re
import signal
import socket
import threading
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import ray
from ray import tune
from ray.exceptions import AuthenticationError
from ray.tune.search import ConcurrencyLimiter

import shrinktune
from shrinktune.data.tasks import get_task, task_param
from shrinktune.errors import ConfigError, UserError
from shrinktune.front import pareto_front
from shrinktune.measure.kinds import get_kind
from shrinktune.models.generation import GenerationSettings
from shrinktune.search.callbacks import MlflowTrialLogger, error_summary
from shrinktune.search.cluster import bind_local_ray, leave_uploaded_copy, submitted_working_dir
from shrinktune.search.faults import FAULTS_ENV, Fault, inject_fault
from shrinktune.search.pareto import below_floor, indistinct_members, near_front
from shrinktune.search.plan import GPU_STEPS, SearchPlan, check_gpus_per_trial, release
from shrinktune.search.prescreen import CostPreScreen, screened
from shrinktune.search.samplers import make_searcher
from shrinktune.search.space import SearchSpace, is_feasible
from shrinktune.search.trial import (
    TrialContext,
    prepare_reference,
    quiet_libraries,
    ratios,
    recheck_front,
    shrinktune_trial,
)
from shrinktune.settings import EvaluationSettings, as_params
from shrinktune.tracking.mlflow_tracking import SearchTracker
from shrinktune.tracking.schema import (
    DEGENERATE_TAG,
    FEASIBLE_TAG,
    INDISTINCT_TAG,
    NO_TRIALS_STATE,
    PARETO_TAG,
    STORAGE_PARAM,
)

logger = logging.getLogger(__name__)


@dataclass
class TrialRow:
    """One ended trial, as the Pareto table and MLflow see it."""

    trial_id: str
    config: dict
    metrics: dict
    checkpoint: str | None
    error: str | None = None

    @property
    def screened(self) -> bool:
        """Stopped by the cost pre-screen before it trained: its metrics are its costs alone."""
        return screened(self.metrics)


@dataclass
class SearchOutcome:
    name: str
    tracking_uri: str
    parent_run_id: str
    reference: dict
    rows: list[TrialRow] = field(default_factory=list)
    front: list[int] = field(default_factory=list)  # indices into the finished rows
    objectives: dict = field(default_factory=dict)
    interrupted: bool = False  # stopped (Ctrl-C) before every trial ended; continue with RunOptions(resume=name)
    degenerate: list[int] = field(default_factory=list)  # finished rows under the quality floor: kept off the front
    quality_floor: float = 0.0  # the floor, as a fraction of the teacher's `quality`
    kind: str = "summarization"  # the task's kind: its primary metric is the one the floor and re-check are about
    rechecked: int = 0  # validation pairs the front was re-checked on (0: not re-checked)
    search_reference: dict = field(default_factory=dict)  # the teacher's in-search metrics (before the re-check)
    indistinct: dict = field(default_factory=dict)  # trial id → `Indistinct`: not told apart from a cheaper member

    @property
    def quality(self) -> str:
        """The task kind's primary quality metric (rouge1, bleu, accuracy)."""
        return get_kind(self.kind).primary

    @property
    def finished(self) -> list[TrialRow]:
        """The trials that trained and were measured."""
        return [r for r in self.rows if r.error is None and not r.screened]

    @property
    def failed(self) -> list[TrialRow]:
        return [r for r in self.rows if r.error is not None]

    @property
    def screened(self) -> list[TrialRow]:
        """The draws the cost pre-screen stopped before they trained."""
        return [r for r in self.rows if r.error is None and r.screened]


def _versions() -> dict:
    out = {}
    for package in ("shrinktune", "torch", "transformers", "ray", "optuna", "mlflow"):
        try:
            out[f"version_{package}"] = md.version(package)
        except md.PackageNotFoundError:
            out[f"version_{package}"] = "not installed"
    return out


def trial_resources(nodes: list[dict], concurrent: int, cpus: float | None, gpus: float | None) -> tuple[float, float]:
    """CPUs and GPUs per trial: the flags, or what the cluster can give each of `concurrent` trials.

    By default the cluster's GPUs are shared among the concurrent trials, at most one GPU each: one GPU and two
    trials at a time give 0.5 each (both run at once, on the same GPU), four GPUs and two trials give 1 each; a
    share is rounded down to Ray's step of 0.0001 (one GPU, three trials: 0.3333 each).
    A trial runs on one node, so a request larger than the largest node would wait forever; it is refused.

    Raises:
        ConfigError: `gpus` breaks Ray's rule for GPU requests (`check_gpus_per_trial`).
        UserError: a trial asks for more than the largest node has.
    """
    alive = [n.get("Resources", {}) for n in nodes if n.get("Alive")]
    node_cpus = max((r.get("CPU", 0) for r in alive), default=0)
    node_gpus = max((r.get("GPU", 0) for r in alive), default=0)
    total_cpus = sum(r.get("CPU", 0) for r in alive)
    total_gpus = sum(r.get("GPU", 0) for r in alive)
    if cpus is None:
        cpus = max(1, min(int(total_cpus // concurrent), int(node_cpus)))
    if gpus is None:
        share = math.floor(min(1.0, total_gpus / concurrent) * GPU_STEPS + 1e-6)  # in Ray's steps, rounded down
        gpus = 0 if total_gpus <= 0 else 1 if share >= GPU_STEPS else max(1, share) / GPU_STEPS
    check_gpus_per_trial(gpus)
    if cpus > node_cpus or gpus > node_gpus:
        raise UserError(
            f"a trial asks for {cpus:g} CPU and {gpus:g} GPU but the largest node has {node_cpus:g} CPU and "
            f"{node_gpus:g} GPU; lower --cpus-per-trial / --gpus-per-trial or add a larger node."
        )
    return cpus, gpus


def check_trial_device(dtype: str, gpus: float) -> None:
    """bf16 and fp16 train and measure on GPUs: trials that get none are refused before they start."""
    if dtype != "fp32" and not gpus:
        raise ConfigError(f"evaluation.dtype {dtype} needs GPUs, and the trials get none (the cluster has no GPU, or "
                          "--gpus-per-trial 0); use dtype: fp32, or run the search where GPUs are.")


def start_ray(address: str | None, verbose: bool = False, listen_all: bool = False):
    """Joins the cluster at `address` (or RAY_ADDRESS, or a running local one) or starts a local Ray; its driver
    logs errors only, and with `verbose` its warnings too (advice for Ray users, e.g. on the size of uploads).

    A local Ray started here listens on loopback only, unless `listen_all` (`bind_local_ray`): nothing else needs to
    reach it, and its metrics endpoints answer without authentication.

    The `shrinktune` package travels with the job (`py_modules`), so trial workers on every node import the same
    code as this driver, whether or not the project is installed there; its dependencies must be. A job submitted
    with `--working-dir` already ships the project, and its runtime environment is left untouched: changing it
    would let Ray discard the uploaded folder the driver runs in.
    """
    if ray.is_initialized():
        return ray
    kwargs: dict[str, Any] = {"address": address} if address else {}
    where = address or os.environ.get("RAY_ADDRESS") or "a new local Ray"
    _check_reachable(address or os.environ.get("RAY_ADDRESS"))
    if address == "local" or (address is None and not os.environ.get("RAY_ADDRESS")):
        bind_local_ray(listen_all)  # a Ray this process may start; joining a running one is not affected
    if not submitted_working_dir():
        kwargs["runtime_env"] = {"py_modules": [str(Path(shrinktune.__file__).parent)]}
    try:
        ray.init(include_dashboard=False, logging_level=logging.WARNING if verbose else logging.ERROR,
                 log_to_driver=True, **kwargs)
    except AuthenticationError as error:
        raise UserError(
            f"the Ray cluster at {where} requires its authentication token ({str(error).splitlines()[0][:120]}); "
            "export RAY_AUTH_MODE=token, and RAY_AUTH_TOKEN=<the head's ~/.ray/auth_token> when not on the head."
        ) from None
    except ConnectionError as error:
        if "InvalidAuthToken" in str(error.__cause__) or "Authentication" in str(error.__cause__):
            raise UserError(
                f"the Ray cluster at {where} requires its authentication token, and none was found; export "
                "RAY_AUTH_MODE=token, and RAY_AUTH_TOKEN=<the head's ~/.ray/auth_token> when not on the head."
            ) from None
        raise UserError(
            f"no Ray cluster at {where} ({str(error).splitlines()[0][:160]}); start one with `ray start --head`, "
            "or drop --address / unset RAY_ADDRESS to run on a new local Ray."
        ) from None
    return ray


def _check_reachable(address: str | None, timeout: float = 5.0) -> None:
    """Fails in seconds, not minutes, when nothing listens at a plain host:port cluster address."""
    if not address or "://" in address or address in ("auto", "local") or ":" not in address:
        return
    host, _, port = address.rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except (OSError, ValueError):
        raise UserError(
            f"no Ray cluster at {address}: nothing answers there; start one with `ray start --head`, "
            "or drop --address / unset RAY_ADDRESS to run on a new local Ray."
        ) from None


def search_trial(config: dict, context: TrialContext, faults: tuple[Fault, ...] = (), verbose: bool = False,
                 prescreen: bool = False) -> None:
    """The Tune trainable of a search: one trial (`shrinktune_trial`), after any fault planned for it.

    A trial that Tune restores with a checkpoint has already trained and reported it (the search was interrupted
    before Tune recorded its end): it reports the metrics saved with that checkpoint again instead of training.
    Unless `verbose`, Ray Train's line on each saved checkpoint is left out (the search lists the checkpoints).
    """
    if not verbose:
        logging.getLogger("ray.train").setLevel(logging.WARNING)
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            saved = json.loads((Path(folder) / "shrinktune_trial.json").read_text())
        quiet_libraries()  # this worker's progress lines, as a training trial shows them
        logger.info("trial trained before the search was interrupted: its saved metrics are reported again")
        tune.report(saved["metrics"])
        return
    if faults:
        inject_fault(faults)
    shrinktune_trial(config, context, prescreen=prescreen)


def _trial_id(result) -> str:
    """A result's Tune trial id: in its metrics, or — a trial that failed before reporting — in its folder name."""
    if result.metrics.get("trial_id"):
        return str(result.metrics["trial_id"])
    folder = Path(result.path).name if result.path else "?"
    found = re.match(rf"{search_trial.__name__}_([^_]+)_", folder)
    return found.group(1) if found else folder


def shared_params(generation: GenerationSettings, evaluation: EvaluationSettings) -> dict:
    """The settings every run of a search was measured with — decoding (`generation.*`) and evaluation
    (`evaluation.*`) — as MLflow params of each trial's and the teacher's run, so that runs compared in the UI
    (across searches too) show how their figures were made."""
    return {**as_params(generation, "generation."), **as_params(evaluation, "evaluation.")}


def _reference(ray, tracker: SearchTracker, previous, context: TrialContext, cpus: float, gpus: float) -> TrialContext:
    """The context with the prepared teacher and its metrics: measured in a Ray task with a trial's resources and
    logged (on the search's run and as the teacher's own run), or — resuming — read back from the search's MLflow
    run."""
    reference, teacher_dir = tracker.saved_teacher(previous) if previous else ({}, None)
    if reference and teacher_dir:
        logger.info("the teacher was measured when the search started: not measured again")
    else:
        logger.info("preparing and measuring the teacher (first run: trains and caches it)")
        remote = ray.remote(prepare_reference).options(num_cpus=cpus, num_gpus=gpus)
        start_ms = int(time.time() * 1000)
        teacher_dir, reference = ray.get(remote.remote(context))
        params = {"teacher": context.teacher_dir, "teacher_dir": teacher_dir,
                  **shared_params(context.generation, context.evaluation)}
        tracker.log_teacher(teacher_dir, reference, params, standing=ratios(reference, reference), start_ms=start_ms,
                            end_ms=int(time.time() * 1000))
    return replace(context, teacher_dir=teacher_dir, reference=reference)


@contextlib.contextmanager
def _sigint_kept() -> Iterator[None]:
    """Puts back the SIGINT handler the search had before Tune's `fit`: `fit` leaves its own installed when no Ctrl-C
    came (it only sets an event that nothing reads after the run), and a first Ctrl-C during the front's re-check
    then did nothing."""
    before = signal.getsignal(signal.SIGINT) if threading.current_thread() is threading.main_thread() else None
    try:
        yield
    finally:
        if before is not None:
            signal.signal(signal.SIGINT, before)


def _outcome(grid, name: str, trials: int, tracker: SearchTracker, space: SearchSpace, reference: dict,
             out_of_time: bool = False) -> SearchOutcome:
    """Every ended trial (old and new, when resumed), and the Pareto front, on the search's own numbers, of those
    that meet the space's constraints and its quality floor."""
    outcome = SearchOutcome(name=name, tracking_uri=tracker.tracking_uri, parent_run_id=tracker.parent_run_id or "",
                            reference=reference, objectives=dict(space.objectives),
                            quality_floor=space.search.quality_floor, kind=get_task(space.task).kind,
                            search_reference=dict(reference))
    logged: set[str] | None = None
    for result in grid:
        if result.error is None and "training_iteration" not in (result.metrics or {}):
            continue  # never reported: the search was interrupted while it ran or waited
        if result.error is None and screened(result.metrics):
            # Only its costs: stopped by the pre-screen (then logged to MLflow as screened), or by the time budget
            # or an interruption while it trained (never logged: it did not end).
            logged = set(tracker.trial_runs()) if logged is None else logged
            if _trial_id(result) not in logged:
                continue
        outcome.rows.append(TrialRow(
            trial_id=_trial_id(result), config=dict(result.config or {}), metrics=dict(result.metrics or {}),
            checkpoint=result.checkpoint.path if result.checkpoint else None, error=error_summary(result.error),
        ))
    # Tune marks the trials it stops on Ctrl-C as terminated; only a report or an error shows that one ended.
    outcome.interrupted = len(outcome.rows) < trials and not out_of_time
    if out_of_time and len(outcome.rows) < trials:
        logger.warning("search %s used its time budget (%g s) after %d of %d trial(s)", name,
                       space.search.time_budget_s, len(outcome.rows), trials)
    outcome.front = _front(outcome, space, range(len(outcome.finished)))
    return outcome


def _eligible(outcome: SearchOutcome, space: SearchSpace, indices) -> list[int]:
    """Indices of finished rows that meet the constraints and are not degenerate (updates `outcome.degenerate`)."""
    finished = outcome.finished
    degenerate = [i for i in indices
                  if below_floor(finished[i].metrics, outcome.reference, space.search.quality_floor, outcome.quality)]
    outcome.degenerate = sorted(set(outcome.degenerate) | set(degenerate))
    return [i for i in indices if i not in degenerate and is_feasible(space.constraints, finished[i].metrics)]


def _front(outcome: SearchOutcome, space: SearchSpace, indices) -> list[int]:
    eligible = _eligible(outcome, space, list(indices))
    return [eligible[i] for i in pareto_front([outcome.finished[i].metrics for i in eligible], space.objectives)]


def _recheck(ray, outcome: SearchOutcome, space: SearchSpace, context: TrialContext, tracker: SearchTracker,
             cpus: float, gpus: float) -> None:
    """Re-measures the teacher and the front at high fidelity (`recheck_front`, in a Ray task with a trial's
    resources) — with up to `evaluation.recheck_near` trials beside it whose in-search quality interval reaches it
    (`near_front`) —, recomputes the front on those numbers among the re-checked trials, and flags members whose
    quality is not told apart from a cheaper member's. The in-search numbers stay in MLflow as `search_*`."""
    finished = outcome.finished
    members = [i for i in outcome.front if finished[i].checkpoint]
    if not members or context.evaluation.recheck_samples < 1:
        return
    near = [i for i in near_front([r.metrics for r in finished], outcome.front,
                                  _eligible(outcome, space, range(len(finished))), space.objectives, outcome.quality,
                                  context.evaluation.recheck_near) if finished[i].checkpoint]
    if near:
        logger.info("re-checking beside the front %d trial(s) whose in-search %s interval reaches it: %s", len(near),
                    outcome.quality, ", ".join(finished[i].trial_id for i in near))
        members += near
    remote = ray.remote(recheck_front).options(num_cpus=cpus, num_gpus=gpus)
    checked = ray.get(remote.remote(context, {finished[i].trial_id: finished[i].checkpoint for i in members}))
    tracker.log_recheck_reference(outcome.reference, checked.teacher)
    outcome.reference = checked.teacher
    outcome.rechecked = int(checked.teacher["eval_samples"])
    run_ids = tracker.trial_runs()
    for i in members:
        row = finished[i]
        new = {**checked.members[row.trial_id]}
        new.update(ratios({**row.metrics, **new}, checked.teacher))
        if run_ids.get(row.trial_id):
            tracker.log_recheck(run_ids[row.trial_id], row.metrics, new)
        row.metrics = {**row.metrics, **new}
    outcome.front = _front(outcome, space, members)
    ids = [finished[i].trial_id for i in outcome.front]
    outcome.indistinct = indistinct_members(ids, {r.trial_id: r.metrics for r in finished}, space.objectives,
                                            checked.pair_stats, checked.groups, get_kind(checked.kind).aggregate)


def _finish(outcome: SearchOutcome, tracker: SearchTracker, space: SearchSpace, trials: int) -> SearchOutcome:
    """Tags the front, the degenerate and (with constraints) the infeasible trials in MLflow, draws the frontier
    plots and ends the search's run."""
    finished = outcome.finished
    counts = {"trials_finished": len(finished), "trials_failed": len(outcome.failed),
              "trials_screened": len(outcome.screened)}
    if outcome.interrupted:
        logger.warning("search %s interrupted with %d of %d trial(s) ended; continue it with --resume %s",
                       outcome.name, len(outcome.rows), trials, outcome.name)
        _end_early(tracker, outcome.name, "KILLED", len(outcome.rows), counts)
        return outcome
    tags: dict[str, dict[str, str]] = {}
    for index in outcome.front:
        row = finished[index]
        tags.setdefault(row.trial_id, {})[PARETO_TAG] = "true"
        flag = outcome.indistinct.get(row.trial_id)
        if flag:
            tags[row.trial_id][INDISTINCT_TAG] = (
                f"R-1 not told apart from cheaper trial {flag.cheaper}: difference {flag.difference:+.4f}, "
                f"95 % interval [{flag.low:+.4f}, {flag.high:+.4f}]")
    for index in outcome.degenerate:
        tags.setdefault(finished[index].trial_id, {})[DEGENERATE_TAG] = (
            f"{outcome.quality} below {space.search.quality_floor:g} x the teacher's")
    if space.constraints:
        for row in finished:
            tags.setdefault(row.trial_id, {})[FEASIBLE_TAG] = str(is_feasible(space.constraints, row.metrics)).lower()
    tracker.tag_trials(tags)
    tracker.log_frontier_plots([{**r.metrics, "trial_id": r.trial_id, "config": r.config} for r in finished],
                               space.objectives, outcome.reference, title=outcome.name)
    tracker.end_search("FINISHED", {**counts, "pareto_size": len(outcome.front), "degenerate": len(outcome.degenerate)})
    return outcome


def _open_tracking(plan: SearchPlan, cpus: float, gpus: float) -> None:
    """Opens the search's MLflow run — a new one with the space, budget and versions as params and the space file
    as an artifact, or, resuming, the search's own run again."""
    tracker, space, budget = plan.tracker, plan.space, plan.budget
    if plan.previous is not None:
        tracker.resume_search(plan.previous)
        logger.info("resuming search %s from %s (MLflow run %s)", plan.name, plan.folder, tracker.parent_run_id)
        return
    tracker.start_search(plan.name, {
        "space": str(space.path), "task": task_param(space.task), "teacher": space.teacher,
        STORAGE_PARAM: plan.options.storage_path, **as_params(budget),
        **as_params(space.evaluation, "evaluation."), "cpus_per_trial": cpus, "gpus_per_trial": gpus,
        "objectives": json.dumps(space.objectives), "constraints": json.dumps(space.constraints),
        "generation": json.dumps(space.generation.as_dict()), **as_params(space.generation, "generation."),
        "fixed": json.dumps(space.fixed),
        "machine": stdlib_platform.platform(),  # type: ignore[attr-defined]  # mypy reads the repo's platform/
        **_versions(), **get_kind(get_task(space.task).kind).signatures(),
    })
    tracker.log_space(space.path, space.text)
    logger.info("search %s: if it is interrupted, continue it with --resume %s", plan.name, plan.name)


def _trial_logger(plan: SearchPlan, context: TrialContext, started: float) -> MlflowTrialLogger:
    """The callback that logs each ended trial: its effective settings (the space's defaults and fixed settings with
    the sampler's choices) and the search's decoding and evaluation settings as params, and a progress line."""
    return MlflowTrialLogger(plan.tracker, objectives=dict(plan.space.objectives), reference=context.reference,
                             defaults=context.defaults, shared=shared_params(context.generation, context.evaluation),
                             total=plan.budget.trials, started=started)


def _verbosity(verbose: bool) -> int:
    """Ray Tune's `verbose`: its own tables (each trial's configuration and result, status every 30 s) only when
    asked for; the trial logger's one line per ended trial says the progress otherwise."""
    return 1 if verbose else 0


# Ray Tune's switches for a quiet run: its legacy output engine, which at verbosity 0 prints nothing (the new one
# still prints the experiment's table and a result box for each failed trial), and no traceback of each failed trial
# attempt (the trial logger says each failure in one line; MLflow keeps Ray's whole record in `shrinktune.error`).
QUIET_TUNE_ENV = {"RAY_AIR_NEW_OUTPUT": "0", "TUNE_PRINT_ALL_TRIAL_ERRORS": "0"}


@contextlib.contextmanager
def _ray_output(verbose: bool) -> Iterator[None]:
    """While Tune runs, and unless `verbose`: Ray Tune's own output (`QUIET_TUNE_ENV`) and warnings kept out of the
    terminal (its other errors stay). Everything is as it was afterwards."""
    if verbose:
        yield
        return
    loggers = [logging.getLogger(name) for name in ("ray.tune", "ray.train")]
    levels = [each.level for each in loggers]
    before = {key: os.environ.get(key) for key in QUIET_TUNE_ENV}
    os.environ.update(QUIET_TUNE_ENV)
    for each in loggers:
        each.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", module=r"ray(\.|$)")
            yield
    finally:
        for each, level in zip(loggers, levels, strict=True):
            each.setLevel(level)
        for key, value in before.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _refresh_restored(tuner, callbacks: list, verbose: bool) -> None:
    """A restored tuner runs with the callbacks and verbosity it was pickled with; gives it this run's (the trial
    logger knows this run's start, and the search's total; `--verbose` applies to a resumed search). Ray has no
    public way to do this: the run configuration is reached through the tuner's private `_local_tuner` (absent
    under Ray Client, where the pickled ones stay)."""
    local = getattr(tuner, "_local_tuner", None)
    if local is None:
        logger.debug("restored tuner without a local run configuration: its pickled callbacks and verbosity stay")
        return
    run_config = local.get_run_config()
    run_config.callbacks = callbacks
    run_config.verbose = _verbosity(verbose)


def _tuner(plan: SearchPlan, trainable, callbacks: list, reference: dict | None = None):
    """Ray Tune's tuner: a new one driving Optuna over the space (with `search.prescreen`, the `CostPreScreen`
    scheduler stops draws that cannot reach the front before they train), or, resuming, the search's own restored
    (its sampler, scheduler, budget and trials as they were; this run's callbacks and verbosity)."""
    space, budget, verbose = plan.space, plan.budget, plan.options.verbose
    if plan.restore:
        tuner = tune.Tuner.restore(str(plan.folder), trainable=trainable, resume_unfinished=True, resume_errored=False)
        _refresh_restored(tuner, callbacks, verbose)
        return tuner
    searcher = ConcurrencyLimiter(make_searcher(space, budget.sampler, budget.random_trials),
                                  max_concurrent=budget.max_concurrent)
    scheduler = (CostPreScreen(space.objectives, space.constraints, reference or {}, space.search.prescreen_ceiling)
                 if space.search.prescreen else None)
    return tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(search_alg=searcher, scheduler=scheduler, num_samples=budget.trials,
                                    time_budget_s=budget.time_budget_s),
        run_config=tune.RunConfig(
            name=plan.name, storage_path=plan.options.storage_path, callbacks=callbacks,
            failure_config=tune.FailureConfig(max_failures=budget.retries), verbose=_verbosity(verbose),
            # One checkpoint per trial, and Tune saves its state as each arrives: a trial that reported before an
            # interruption is restored with it rather than trained again.
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
        ),
    )


def run_search(plan: SearchPlan) -> SearchOutcome:
    """Runs the whole search — or continues an interrupted one — and returns every ended trial and the Pareto front.

    Raises:
        UserError: Ray cannot be started or joined, or a trial cannot get the resources it asks for.
    """
    space, options, budget, tracker = plan.space, plan.options, plan.budget, plan.tracker
    started = time.time()
    if plan.ignored_flags:
        logger.warning("resuming %s: %s ignored; a search keeps the budget, sampler and retries it started with",
                       plan.name, ", ".join(plan.ignored_flags))
    try:
        if submitted_working_dir():
            leave_uploaded_copy(Path(options.storage_path).parent)
        ray = start_ray(options.address, options.verbose, options.listen_all)
        resources = ray.cluster_resources()
        cpus, gpus = trial_resources(ray.nodes(), budget.max_concurrent, options.cpus_per_trial,
                                     options.gpus_per_trial)
        check_trial_device(plan.space.evaluation.dtype, gpus)
        context = plan.context(threads=int(cpus) if not gpus else 0)
        logger.info("Ray: %s CPUs, %s GPUs; %d trial(s), %d at a time, %s CPU + %s GPU each, %d retr%s per trial",
                    resources.get("CPU", 0), resources.get("GPU", 0), budget.trials, budget.max_concurrent, cpus,
                    gpus, budget.retries, "y" if budget.retries == 1 else "ies")
        if plan.faults:
            logger.warning("%s: trial(s) %s will fail on purpose", FAULTS_ENV,
                           ", ".join(str(f.trial) for f in plan.faults))
        _open_tracking(plan, cpus, gpus)
    except BaseException:
        if tracker.parent_run_id is None and plan.previous is None:
            release(options.storage_path, plan.name)  # it never started: its name is free again
        raise
    try:
        context = _reference(ray, tracker, plan.previous, context, cpus, gpus)
        trainable = tune.with_resources(tune.with_parameters(search_trial, context=context, faults=plan.faults,
                                                             verbose=options.verbose, prescreen=space.search.prescreen),
                                        {"cpu": cpus, "gpu": gpus})
        # Tune warns when it saves its state often; it does by design here, at each trial's checkpoint (`_tuner`).
        os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
        # A trial's first report, its costs before training (`search.prescreen`), has no objectives yet; Tune would
        # refuse it. The searcher tells Optuna of a trial that ends without them (`ConstrainedOptunaSearch`).
        os.environ.setdefault("TUNE_DISABLE_STRICT_METRIC_CHECKING", "1")
        tuning = time.monotonic()
        with _ray_output(options.verbose), _sigint_kept():
            grid = _tuner(plan, trainable, [_trial_logger(plan, context, started)], context.reference).fit()
        out_of_time = budget.time_budget_s is not None and time.monotonic() - tuning >= budget.time_budget_s
        outcome = _outcome(grid, plan.name, budget.trials, tracker, space, context.reference, out_of_time)
        if not outcome.interrupted:
            try:
                _recheck(ray, outcome, space, context, tracker, cpus, gpus)
            except Exception as error:  # the trials are in MLflow already: show their front rather than nothing
                logger.warning("the front could not be re-checked (%s); it is shown on the search's own numbers",
                               str(error).strip().splitlines()[0][:300] if str(error).strip() else type(error).__name__)
    except BaseException as error:
        ended = len(tracker.trial_runs()) if tracker.parent_run_id else 0
        _end_early(tracker, plan.name, "KILLED" if isinstance(error, KeyboardInterrupt) else "FAILED", ended)
        raise
    return _finish(outcome, tracker, space, budget.trials)


def _end_early(tracker: SearchTracker, name: str, status: str, ended: int, metrics: dict | None = None) -> None:
    """Ends the search's run as `status` before its trials all ended (`ended` of them did); a search in which no
    trial ended says so on its run (state and description), so that nobody takes it for a finished search."""
    if ended:
        tracker.end_search(status, metrics)
        return
    tracker.end_search(status, metrics, state=NO_TRIALS_STATE, note=(
        f"Stopped ({status}) before any trial ended: no results yet. Continue it with --resume {name} (the same "
        "space, --storage and --tracking-uri)."))
