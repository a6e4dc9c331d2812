"""Running a search: Ray Tune drives Optuna's multi-objective samplers over a validated space.

Order of work: check the tracking store (fail before anything runs) → start or join Ray → prepare and measure the
teacher in a Ray task with a trial's resources → one Tune trial per configuration, each logged to MLflow as a
child of the search's run when it ends → the Pareto front of the finished trials that meet the constraints and the
quality floor → the front re-checked at high fidelity in one more Ray task (the whole validation split, latency
from the architecture's cached rounds), recomputed on those numbers, and tagged in MLflow.

Faults: a trial that raises (NaN loss, out of memory, an impossible configuration...) is retried `retries` times,
then recorded as FAILED with its reason, and the search goes on. An interrupted search (killed driver, lost head
node, Ctrl-C) continues with `RunOptions(resume=<name>)`: Tune restores its trials and sampler from
`<storage>/<name>`, finished trials are kept, and MLflow's run for the search is re-opened. For tests and demos,
`SHRINKTUNE_FAIL_TRIALS` makes chosen trials fail on purpose (see `parse_faults`).
"""

from __future__ import annotations

import json
import logging
import os
import platform as stdlib_platform
import re
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from shrinktune.errors import ConfigError, UserError
from shrinktune.search.cluster import submitted_working_dir
from shrinktune.search.faults import FAULTS_ENV, Fault, inject_fault, parse_faults
from shrinktune.front import pareto_front
from shrinktune.search.pareto import below_floor, indistinct_members
from shrinktune.search.space import SearchSpace, is_feasible
from shrinktune.search.trial import (
    TrialContext,
    prepare_reference,
    quiet_libraries,
    ratios,
    recheck_front,
    shrinktune_trial,
)
from shrinktune.tracking.mlflow_tracking import SearchTracker

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunOptions:
    """How and where a search runs (command-line flags override the space file's budget)."""

    tracking_uri: str  # MLflow store
    storage_path: str  # Ray Tune results and checkpoints; shared storage on a multi-node cluster
    cache_root: str  # teacher, encoder states and autoencoders cached here
    address: str | None = None  # Ray cluster to join; None = RAY_ADDRESS, a running local cluster, or start one
    trials: int | None = None  # overrides search.trials
    max_concurrent: int | None = None  # overrides search.max_concurrent
    cpus_per_trial: float | None = None  # default: the cluster's CPUs / max_concurrent
    gpus_per_trial: float | None = None  # default: 1 when the cluster has GPUs, else 0
    sampler: str | None = None  # overrides search.sampler
    name: str | None = None  # Tune experiment name; default <space>-<timestamp>
    retries: int | None = None  # extra attempts for a failed trial; default the space's `retries` (0 if none)
    resume: str | None = None  # name of an interrupted search under storage_path to continue

    def __post_init__(self):
        if self.retries is not None and (not isinstance(self.retries, int) or self.retries < 0):
            raise ConfigError(f"retries must be an integer ≥ 0, got {self.retries!r}; pass 0 for no retries.")
        if self.resume is not None and self.name is not None and self.name != self.resume:
            raise ConfigError(f"a resumed search keeps its name: got name {self.name!r} and resume {self.resume!r}; "
                              "drop the name.")


@dataclass
class TrialRow:
    """One ended trial, as the Pareto table and MLflow see it."""

    trial_id: str
    config: dict
    metrics: dict
    checkpoint: str | None
    error: str | None = None


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
    quality_floor: float = 0.0  # the floor, as a fraction of the teacher's R-1
    rechecked: int = 0  # validation pairs the front was re-checked on (0: not re-checked)
    search_reference: dict = field(default_factory=dict)  # the teacher's in-search metrics (before the re-check)
    indistinct: dict = field(default_factory=dict)  # trial id → `Indistinct`: not told apart from a cheaper member

    @property
    def finished(self) -> list[TrialRow]:
        return [r for r in self.rows if r.error is None]


def _versions() -> dict:
    import importlib.metadata as md

    out = {}
    for package in ("shrinktune", "torch", "transformers", "ray", "optuna", "mlflow"):
        try:
            out[f"version_{package}"] = md.version(package)
        except md.PackageNotFoundError:
            out[f"version_{package}"] = "not installed"
    return out


def trial_resources(nodes: list[dict], concurrent: int, cpus: float | None, gpus: float | None) -> tuple[float, float]:
    """CPUs and GPUs per trial: the flags, or what one node can give each of `concurrent` trials.

    A trial runs on one node, so a request larger than the largest node would wait forever; it is refused.
    """
    alive = [n.get("Resources", {}) for n in nodes if n.get("Alive")]
    node_cpus = max((r.get("CPU", 0) for r in alive), default=0)
    node_gpus = max((r.get("GPU", 0) for r in alive), default=0)
    total_cpus = sum(r.get("CPU", 0) for r in alive)
    if cpus is None:
        cpus = max(1, min(int(total_cpus // concurrent), int(node_cpus)))
    if gpus is None:
        gpus = 1 if node_gpus >= 1 else 0
    if cpus > node_cpus or gpus > node_gpus:
        raise UserError(
            f"a trial asks for {cpus:g} CPU and {gpus:g} GPU but the largest node has {node_cpus:g} CPU and "
            f"{node_gpus:g} GPU; lower --cpus-per-trial / --gpus-per-trial or add a larger node."
        )
    return cpus, gpus


def start_ray(address: str | None):
    """Joins the cluster at `address` (or RAY_ADDRESS, or a running local one) or starts a local Ray.

    The `shrinktune` package travels with the job (`py_modules`), so trial workers on every node import the same
    code as this driver, whether or not the project is installed there; its dependencies must be. A job submitted
    with `--working-dir` already ships the project, and its runtime environment is left untouched: changing it
    would let Ray discard the uploaded folder the driver runs in.
    """
    import ray
    from ray.exceptions import AuthenticationError

    import shrinktune

    if ray.is_initialized():
        return ray
    kwargs = {"address": address} if address else {}
    where = address or os.environ.get("RAY_ADDRESS") or "a new local Ray"
    _check_reachable(address or os.environ.get("RAY_ADDRESS"))
    if not submitted_working_dir():
        kwargs["runtime_env"] = {"py_modules": [str(Path(shrinktune.__file__).parent)]}
    try:
        ray.init(include_dashboard=False, logging_level=logging.WARNING, log_to_driver=True, **kwargs)
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
    import socket

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


SEARCH_NAME_TAG = "shrinktune.search_name"  # on the search's MLflow run: how a resumed search finds it again


def search_trial(config: dict, context: TrialContext, faults: tuple[Fault, ...] = ()) -> None:
    """The Tune trainable of a search: one trial (`shrinktune_trial`), after any fault planned for it.

    A trial that Tune restores with a checkpoint has already trained and reported it (the search was interrupted
    before Tune recorded its end): it reports the metrics saved with that checkpoint again instead of training.
    """
    from ray import tune

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
    shrinktune_trial(config, context)


def check_resumable(storage_path: str, name: str) -> Path:
    """The folder of the search `name` under `storage_path`, if Ray Tune can continue it; else one UserError line
    that says where the searches are."""
    from ray import tune

    path = Path(storage_path) / name
    if tune.Tuner.can_restore(str(path)):
        return path
    storage = Path(storage_path)
    known = sorted(p.name for p in storage.iterdir() if tune.Tuner.can_restore(str(p))) if storage.is_dir() else []
    listed = "none there yet"
    if known:
        listed = f"{len(known)} there: {', '.join(known[-5:])}{' ...' if len(known) > 5 else ''}"
    raise UserError(
        f"no search {name!r} to resume: {path} holds no Ray Tune state; searches are the folders of {storage} "
        f"({listed}): list them with `ls {storage}`, or pass the --storage the search ran with."
    )


def check_new_search(storage_path: str, name: str) -> None:
    """Refuses to start a search under the name of one that exists: their trials would mix in one folder."""
    path = Path(storage_path) / name
    if path.exists():
        raise UserError(f"a search named {name!r} already exists at {path}; continue it with --resume {name}, "
                        "or pick another --name.")


def _search_run(tracker: SearchTracker, name: str, space: SearchSpace):
    """The MLflow run of the search `name`, found by its tag (or, for a search started before the tag existed, its
    run name); refuses a different space or tracking store."""
    runs = []
    for key in (f"tags.`{SEARCH_NAME_TAG}`", "attributes.run_name"):
        runs = runs or tracker.client.search_runs(
            [tracker.experiment_id()], max_results=1, order_by=["attributes.start_time DESC"],
            filter_string=f"{key} = '{name}' and tags.`shrinktune.kind` = 'search'",
        )
    if not runs:
        raise UserError(
            f"search {name!r} has Ray Tune state but no run in MLflow experiment {space.name!r} at "
            f"{tracker.tracking_uri}; pass the search space and --tracking-uri it was started with."
        )
    started = runs[0].data.params.get("space")
    if started and started != str(space.path):
        raise UserError(f"search {name!r} was started with the space {started}, got {space.path}; "
                        f"resume it with that space.")
    return runs[0]


def _trial_id(result) -> str:
    """A result's Tune trial id: in its metrics, or — a trial that failed before reporting — in its folder name."""
    if result.metrics.get("trial_id"):
        return str(result.metrics["trial_id"])
    folder = Path(result.path).name if result.path else "?"
    found = re.match(rf"{search_trial.__name__}_([^_]+)_", folder)
    return found.group(1) if found else folder


def _budget(space: SearchSpace, options: RunOptions, previous) -> tuple[int, int, int]:
    """(trials, trials at a time, retries): the flags over the space file's; a resumed search's own, saved in its
    MLflow run (Tune restores its sampler, budget and failure settings, which cannot change)."""
    if previous is None:
        retries = options.retries if options.retries is not None else (getattr(space, "retries", 0) or 0)
        return options.trials or space.trials, options.max_concurrent or space.max_concurrent, retries
    flags = {"trials": options.trials, "max_concurrent": options.max_concurrent, "sampler": options.sampler,
             "retries": options.retries}
    ignored = [flag for flag, value in flags.items() if value is not None]
    if ignored:
        logger.warning("resuming %s: %s ignored; a search keeps the budget, sampler and retries it started with",
                       options.resume, ", ".join(ignored))
    saved = previous.data.params
    return int(saved["trials"]), int(saved["max_concurrent"]), int(saved.get("retries", 0))


def _reference(ray, tracker: SearchTracker, previous, context: TrialContext, cpus: float, gpus: float) -> TrialContext:
    """The context with the prepared teacher and its metrics: measured in a Ray task with a trial's resources and
    logged, or — resuming — read back from the search's MLflow run."""
    saved = previous.data.metrics if previous else {}
    # a search interrupted after its re-check began keeps the teacher's in-search figures as search_teacher_*
    prefix = "search_teacher_" if any(k.startswith("search_teacher_") for k in saved) else "teacher_"
    reference = {k[len(prefix):]: v for k, v in saved.items() if k.startswith(prefix)}
    teacher_dir = previous.data.tags.get("shrinktune.teacher_dir") if previous else None
    if reference and teacher_dir:
        logger.info("the teacher was measured when the search started: not measured again")
    else:
        logger.info("preparing and measuring the teacher (first run: trains and caches it)")
        remote = ray.remote(prepare_reference).options(num_cpus=cpus, num_gpus=gpus)
        teacher_dir, reference = ray.get(remote.remote(context))
        tracker.log_reference(reference)
        tracker.tag(tracker.parent_run_id, "shrinktune.teacher_dir", teacher_dir)
    return replace(context, teacher_dir=teacher_dir, reference=reference)


def _outcome(grid, name: str, trials: int, tracker: SearchTracker, space: SearchSpace, options: RunOptions,
             reference: dict, out_of_time: bool = False) -> SearchOutcome:
    """Every ended trial (old and new, when resumed), and the Pareto front, on the search's own numbers, of those
    that meet the space's constraints and its quality floor."""
    from shrinktune.search.callbacks import error_summary

    outcome = SearchOutcome(name=name, tracking_uri=options.tracking_uri, parent_run_id=tracker.parent_run_id,
                            reference=reference, objectives=dict(space.objectives), quality_floor=space.quality_floor,
                            search_reference=dict(reference))
    for result in grid:
        if result.error is None and "training_iteration" not in (result.metrics or {}):
            continue  # never reported: the search was interrupted while it ran or waited
        outcome.rows.append(TrialRow(
            trial_id=_trial_id(result), config=dict(result.config or {}), metrics=dict(result.metrics or {}),
            checkpoint=result.checkpoint.path if result.checkpoint else None, error=error_summary(result.error),
        ))
    # Tune marks the trials it stops on Ctrl-C as terminated; only a report or an error shows that one ended.
    outcome.interrupted = len(outcome.rows) < trials and not out_of_time
    if out_of_time and len(outcome.rows) < trials:
        logger.warning("search %s used its time budget (%g s) after %d of %d trial(s)", name, space.time_budget_s,
                       len(outcome.rows), trials)
    outcome.front = _front(outcome, space, range(len(outcome.finished)))
    return outcome


def _eligible(outcome: SearchOutcome, space: SearchSpace, indices) -> list[int]:
    """Indices of finished rows that meet the constraints and are not degenerate (updates `outcome.degenerate`)."""
    finished = outcome.finished
    degenerate = [i for i in indices if below_floor(finished[i].metrics, outcome.reference, space.quality_floor)]
    outcome.degenerate = sorted(set(outcome.degenerate) | set(degenerate))
    return [i for i in indices if i not in degenerate and is_feasible(space.constraints, finished[i].metrics)]


def _front(outcome: SearchOutcome, space: SearchSpace, indices) -> list[int]:
    eligible = _eligible(outcome, space, list(indices))
    return [eligible[i] for i in pareto_front([outcome.finished[i].metrics for i in eligible], space.objectives)]


def _recheck(ray, outcome: SearchOutcome, space: SearchSpace, context: TrialContext, tracker: SearchTracker,
             cpus: float, gpus: float) -> None:
    """Re-measures the teacher and the front at high fidelity (`recheck_front`, in a Ray task with a trial's
    resources), recomputes the front on those numbers among the re-checked members, and flags members whose
    quality is not told apart from a cheaper member's. The in-search numbers stay in MLflow as `search_*`."""
    finished = outcome.finished
    members = [i for i in outcome.front if finished[i].checkpoint]
    if not members or context.recheck_samples < 1:
        return
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
                                            checked.pair_rouge1, checked.groups)


def _finish(outcome: SearchOutcome, tracker: SearchTracker, space: SearchSpace, trials: int) -> SearchOutcome:
    """Tags the front, the degenerate and (with constraints) the infeasible trials in MLflow, draws the frontier
    plots and ends the search's run."""
    finished = outcome.finished
    counts = {"trials_finished": len(finished), "trials_failed": len(outcome.rows) - len(finished)}
    if outcome.interrupted:
        logger.warning("search %s interrupted with %d of %d trial(s) ended; continue it with --resume %s",
                       outcome.name, len(outcome.rows), trials, outcome.name)
        tracker.end_search("KILLED", counts)
        return outcome
    run_ids = tracker.trial_runs()
    for index in outcome.front:
        run_id = run_ids.get(finished[index].trial_id)
        if run_id:
            tracker.tag(run_id, "shrinktune.pareto", "true")
            flag = outcome.indistinct.get(finished[index].trial_id)
            if flag:
                tracker.tag(run_id, "shrinktune.indistinct", f"R-1 not told apart from cheaper trial {flag.cheaper}: "
                            f"difference {flag.difference:+.4f}, 95 % interval [{flag.low:+.4f}, {flag.high:+.4f}]")
    for index in outcome.degenerate:
        run_id = run_ids.get(finished[index].trial_id)
        if run_id:
            tracker.tag(run_id, "shrinktune.degenerate", f"rouge1 below {space.quality_floor:g} x the teacher's")
    if space.constraints:
        for index, row in enumerate(finished):
            if run_ids.get(row.trial_id):
                feasible = is_feasible(space.constraints, row.metrics)
                tracker.tag(run_ids[row.trial_id], "shrinktune.feasible", str(feasible).lower())
    tracker.log_frontier_plots([{**r.metrics, "trial_id": r.trial_id, "config": r.config} for r in finished],
                               space.objectives, outcome.reference, title=outcome.name)
    tracker.end_search("FINISHED", {**counts, "pareto_size": len(outcome.front), "degenerate": len(outcome.degenerate)})
    return outcome


def run_search(space: SearchSpace, options: RunOptions) -> SearchOutcome:
    """Runs the whole search — or continues an interrupted one — and returns every ended trial and the Pareto front.

    Raises:
        UserError: the tracking store or Ray cannot be used, the search to resume does not exist (or was started
            with another space or store), or a new search would reuse the name of an existing one.
    """
    tracker = SearchTracker(options.tracking_uri, experiment=space.name)
    tracker.check()
    faults = parse_faults(os.environ.get(FAULTS_ENV, ""))
    name = options.resume or options.name or f"{space.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    previous = None
    if options.resume:
        check_resumable(options.storage_path, name)
        previous = _search_run(tracker, name, space)
    else:
        check_new_search(options.storage_path, name)
    ray = start_ray(options.address)
    from ray import tune
    from ray.tune.search import ConcurrencyLimiter

    from shrinktune.search.callbacks import MlflowTrialLogger
    from shrinktune.search.samplers import ConstrainedOptunaSearch, make_sampler

    trials, concurrent, retries = _budget(space, options, previous)
    resources = ray.cluster_resources()
    cpus, gpus = trial_resources(ray.nodes(), concurrent, options.cpus_per_trial, options.gpus_per_trial)
    context = TrialContext(
        task=space.task, teacher_dir=space.teacher, cache_root=options.cache_root, generation=space.generation,
        eval_samples=space.evaluation.get("samples", 45), latency_samples=space.evaluation.get("latency_samples", 5),
        latency_repeats=space.evaluation.get("latency_repeats", 3),
        latency_batch_size=space.evaluation.get("latency_batch_size", 8),
        fixed_new_tokens=space.evaluation.get("fixed_new_tokens"), threads=int(cpus) if not gpus else 0,
        latency_target=space.evaluation.get("latency_target_pct", 5) / 100,
        latency_cap_s=float(space.evaluation.get("latency_cap_s", 60)),
        recheck_samples=space.evaluation.get("recheck_samples", 500), seed=space.seed, fixed=space.fixed,
    )
    logger.info("Ray: %s CPUs, %s GPUs; %d trial(s), %d at a time, %s CPU + %s GPU each, %d retr%s per trial",
                resources.get("CPU", 0), resources.get("GPU", 0), trials, concurrent, cpus, gpus, retries,
                "y" if retries == 1 else "ies")
    if faults:
        logger.warning("%s=%s: trial(s) %s will fail on purpose", FAULTS_ENV, os.environ[FAULTS_ENV],
                       ", ".join(str(f.trial) for f in faults))

    if previous:
        tracker.parent_run_id = previous.info.run_id
        tracker.client.update_run(tracker.parent_run_id, status="RUNNING")
        logger.info("resuming search %s from %s (MLflow run %s)", name, Path(options.storage_path) / name,
                    tracker.parent_run_id)
    else:
        tracker.start_search(
            name,
            {"space": str(space.path), "task": space.task, "teacher": space.teacher,
             "sampler": options.sampler or space.sampler, "trials": trials, "max_concurrent": concurrent,
             "retries": retries, "cpus_per_trial": cpus, "gpus_per_trial": gpus,
             "objectives": json.dumps(space.objectives), "generation": json.dumps(space.generation),
             "quality_floor": space.quality_floor, "machine": stdlib_platform.platform(), **_versions()},
            tags={SEARCH_NAME_TAG: name},
        )
        logger.info("search %s: if it is interrupted, continue it with --resume %s", name, name)
    try:
        if not previous:
            tracker.client.log_artifact(tracker.parent_run_id, str(space.path))
        context = _reference(ray, tracker, previous, context, cpus, gpus)
        trainable = tune.with_resources(tune.with_parameters(search_trial, context=context, faults=faults),
                                        {"cpu": cpus, "gpu": gpus})
        # Tune warns when it saves its state often; it does by design here, at each trial's checkpoint (below).
        os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
        logger_callback = MlflowTrialLogger(tracker, objectives=dict(space.objectives), reference=context.reference)
        started = time.monotonic()
        if previous:
            tuner = tune.Tuner.restore(str(Path(options.storage_path) / name), trainable=trainable,
                                       resume_unfinished=True, resume_errored=False)
        else:
            searcher = ConstrainedOptunaSearch(
                space=space.suggest, metric=list(space.objectives), mode=list(space.objectives.values()),
                sampler=make_sampler(options.sampler or space.sampler, space.seed),
                points_to_evaluate=[dict(point) for point in space.enqueue] or None, constraints=space.constraints,
            )
            tuner = tune.Tuner(
                trainable,
                tune_config=tune.TuneConfig(search_alg=ConcurrencyLimiter(searcher, max_concurrent=concurrent),
                                            num_samples=trials, time_budget_s=space.time_budget_s),
                run_config=tune.RunConfig(
                    name=name, storage_path=options.storage_path, callbacks=[logger_callback],
                    failure_config=tune.FailureConfig(max_failures=retries), verbose=1,
                    # One checkpoint per trial, and Tune saves its state as each arrives: a trial that reported
                    # before an interruption is restored with it rather than trained again.
                    checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
                ),
            )
        grid = tuner.fit()
        out_of_time = space.time_budget_s is not None and time.monotonic() - started >= space.time_budget_s
        outcome = _outcome(grid, name, trials, tracker, space, options, context.reference, out_of_time)
        if not outcome.interrupted:
            try:
                _recheck(ray, outcome, space, context, tracker, cpus, gpus)
            except Exception as error:  # the trials are in MLflow already: show their front rather than nothing
                logger.warning("the front could not be re-checked (%s); it is shown on the search's own numbers",
                               str(error).strip().splitlines()[0][:300] if str(error).strip() else type(error).__name__)
    except KeyboardInterrupt:
        tracker.end_search("KILLED")
        raise
    except BaseException:
        tracker.end_search("FAILED")
        raise
    return _finish(outcome, tracker, space, trials)
