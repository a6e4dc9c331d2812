"""Running a search: Ray Tune drives Optuna's multi-objective samplers over a validated space.

Order of work: check the tracking store (fail before anything runs) → start or join Ray → prepare and measure the
teacher in a Ray task with a trial's resources → one Tune trial per configuration, each logged to MLflow as a
child of the search's run when it ends → the Pareto front of the finished trials, tagged in MLflow.
"""

from __future__ import annotations

import json
import logging
import os
import platform as stdlib_platform
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from shrinktune.errors import UserError
from shrinktune.search.cluster import submitted_working_dir
from shrinktune.search.pareto import pareto_front
from shrinktune.search.space import SearchSpace
from shrinktune.search.trial import TrialContext, prepare_reference, shrinktune_trial
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

    @property
    def finished(self) -> list[TrialRow]:
        return [r for r in self.rows if r.error is None]


class SpaceSampler:
    """Define-by-run search space for OptunaSearch: asks the Optuna trial for each dimension."""

    def __init__(self, space: SearchSpace):
        self.dimensions = space.dimensions

    def __call__(self, trial):
        for dimension in self.dimensions:
            dimension.suggest(trial)
        return None


def make_sampler(name: str, seed: int):
    import optuna

    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed, multivariate=True)
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=8)
    return optuna.samplers.RandomSampler(seed=seed)


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


def run_search(space: SearchSpace, options: RunOptions) -> SearchOutcome:
    """Runs the whole search; returns every ended trial and the Pareto front."""
    tracker = SearchTracker(options.tracking_uri, experiment=space.name)
    tracker.check()
    ray = start_ray(options.address)
    from ray import tune
    from ray.tune.search import ConcurrencyLimiter
    from ray.tune.search.optuna import OptunaSearch

    from shrinktune.search.callbacks import MlflowTrialLogger

    trials = options.trials or space.trials
    concurrent = options.max_concurrent or space.max_concurrent
    resources = ray.cluster_resources()
    cpus, gpus = trial_resources(ray.nodes(), concurrent, options.cpus_per_trial, options.gpus_per_trial)
    name = options.name or f"{space.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    context = TrialContext(
        task=space.task, teacher_dir=space.teacher, cache_root=options.cache_root, generation=space.generation,
        eval_samples=space.evaluation.get("samples", 45), latency_samples=space.evaluation.get("latency_samples", 5),
        latency_repeats=space.evaluation.get("latency_repeats", 3),
        latency_batch_size=space.evaluation.get("latency_batch_size", 8),
        fixed_new_tokens=space.evaluation.get("fixed_new_tokens"), threads=int(cpus) if not gpus else 0,
        seed=space.seed, fixed=space.fixed,
    )
    logger.info("Ray: %s CPUs, %s GPUs; %d trial(s), %d at a time, %s CPU + %s GPU each",
                resources.get("CPU", 0), resources.get("GPU", 0), trials, concurrent, cpus, gpus)

    parent = tracker.start_search(
        name,
        {"space": str(space.path), "task": space.task, "teacher": space.teacher, "sampler": options.sampler or space.sampler,
         "trials": trials, "max_concurrent": concurrent, "cpus_per_trial": cpus, "gpus_per_trial": gpus,
         "objectives": json.dumps(space.objectives), "machine": stdlib_platform.platform(), **_versions()},
    )
    try:
        tracker.client.log_artifact(parent, str(space.path))
        logger.info("preparing and measuring the teacher (first run: trains and caches it)")
        remote = ray.remote(prepare_reference).options(num_cpus=cpus, num_gpus=gpus)
        teacher_dir, reference = ray.get(remote.remote(context))
        tracker.log_reference(reference)
        tracker.tag(parent, "shrinktune.teacher_dir", teacher_dir)
        context = replace(context, teacher_dir=teacher_dir, reference=reference)

        searcher = OptunaSearch(
            space=SpaceSampler(space), metric=list(space.objectives), mode=list(space.objectives.values()),
            sampler=make_sampler(options.sampler or space.sampler, space.seed),
            points_to_evaluate=[dict(point) for point in space.enqueue] or None,
        )
        trainable = tune.with_resources(tune.with_parameters(shrinktune_trial, context=context), {"cpu": cpus, "gpu": gpus})
        tuner = tune.Tuner(
            trainable,
            tune_config=tune.TuneConfig(search_alg=ConcurrencyLimiter(searcher, max_concurrent=concurrent), num_samples=trials),
            run_config=tune.RunConfig(
                name=name, storage_path=options.storage_path, callbacks=[MlflowTrialLogger(tracker)],
                failure_config=tune.FailureConfig(max_failures=0), verbose=1,
            ),
        )
        grid = tuner.fit()
    except BaseException:
        tracker.end_search("FAILED")
        raise
    outcome = SearchOutcome(name=name, tracking_uri=options.tracking_uri, parent_run_id=parent, reference=reference,
                            objectives=dict(space.objectives))
    for result in grid:
        trial_id = Path(result.path).name if result.path else "?"
        outcome.rows.append(TrialRow(
            trial_id=str(result.metrics.get("trial_id", trial_id)), config=dict(result.config or {}),
            metrics=dict(result.metrics or {}), checkpoint=result.checkpoint.path if result.checkpoint else None,
            error=str(result.error).splitlines()[0] if result.error else None,
        ))
    finished = outcome.finished
    outcome.front = pareto_front([r.metrics for r in finished], space.objectives)
    run_ids = _runs_by_trial(tracker)
    for index in outcome.front:
        run_id = run_ids.get(finished[index].trial_id)
        if run_id:
            tracker.tag(run_id, "shrinktune.pareto", "true")
    tracker.end_search("FINISHED", {"trials_finished": len(finished), "trials_failed": len(outcome.rows) - len(finished),
                                    "pareto_size": len(outcome.front)})
    return outcome


def _runs_by_trial(tracker: SearchTracker) -> dict[str, str]:
    runs = tracker.client.search_runs(
        [tracker.experiment_id()], filter_string=f"tags.mlflow.parentRunId = '{tracker.parent_run_id}'", max_results=5000,
    )
    return {r.data.tags.get("shrinktune.trial"): r.info.run_id for r in runs}
