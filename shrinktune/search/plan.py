"""The pre-flight of a search: every check, once, before Ray starts or anything is written.

`prepare_search(space, options)` reads the space file once (finding its teacher's shape from the teacher's config
alone), checks the flags, the planned faults, the name (a new search must not reuse one; a resumed one must exist,
in Ray Tune's storage and in MLflow, with the same space) and the tracking store, and returns a `SearchPlan`:
everything `run_search` needs. Nothing here changes process-wide state.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ray import tune
from transformers import AutoConfig

from shrinktune.errors import ConfigError, UserError
from shrinktune.models.families import depth, family_of
from shrinktune.models.teacher import EMBEDDED_TEACHER, minilm_path
from shrinktune.search.faults import FAULTS_ENV, Fault, parse_faults
from shrinktune.search.space import SearchSpace, resolve_space_path
from shrinktune.search.trial import TrialContext
from shrinktune.settings import SAMPLERS, SearchSettings
from shrinktune.tracking.mlflow_tracking import SearchTracker


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
    retries: int | None = None  # extra attempts for a failed trial; default the space's `retries`
    resume: str | None = None  # name of an interrupted search under storage_path to continue
    verbose: bool = False  # Ray Tune's own tables and warnings too (default: one progress line per ended trial)

    def __post_init__(self):
        for flag in ("trials", "max_concurrent"):
            value = getattr(self, flag)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ConfigError(f"--{flag.replace('_', '-')} must be ≥ 1, got {value}.")
        for flag in ("cpus_per_trial", "gpus_per_trial", "retries"):
            value = getattr(self, flag)
            if value is not None and value < 0:
                raise ConfigError(f"--{flag.replace('_', '-')} must be ≥ 0, got {value}.")
        if self.retries is not None and not isinstance(self.retries, int):
            raise ConfigError(f"--retries must be a whole number of attempts, got {self.retries!r}.")
        if self.sampler is not None and self.sampler not in SAMPLERS:
            raise ConfigError(f"--sampler must be one of {', '.join(SAMPLERS)}, got {self.sampler!r}.")
        if self.resume is not None and self.name is not None and self.name != self.resume:
            raise ConfigError(f"--resume {self.resume} continues a search under its own name; drop --name {self.name}.")


@dataclass(frozen=True)
class SearchPlan:
    """A checked search, ready to run: `run_search(plan)`."""

    space: SearchSpace
    options: RunOptions
    name: str  # the Tune experiment and the search's MLflow run
    budget: SearchSettings  # the space's sampler and budget with the flags applied (a resumed search's own)
    tracker: SearchTracker
    faults: tuple[Fault, ...] = ()  # trials that fail on purpose (SHRINKTUNE_FAIL_TRIALS)
    previous: Any = None  # the MLflow run of the search being resumed (None: a new search)
    ignored_flags: tuple[str, ...] = ()  # budget flags a resumed search cannot honour (it keeps its own)

    @property
    def folder(self) -> Path:
        """Where Ray Tune keeps this search's state and checkpoints."""
        return Path(self.options.storage_path) / self.name

    def context(self, threads: int) -> TrialContext:
        """What every trial of this search shares (the teacher is prepared and measured later)."""
        space = self.space
        return TrialContext(task=space.task, teacher_dir=space.teacher, cache_root=self.options.cache_root,
                            generation=space.generation, evaluation=space.evaluation, defaults=space.defaults,
                            threads=threads, seed=space.search.seed)


def teacher_shape(teacher: str) -> tuple[int, int, int]:
    """(encoder width, decoder depth, encoder depth) of a teacher, read from its config only."""
    if teacher == EMBEDDED_TEACHER:
        config = AutoConfig.from_pretrained(minilm_path())
        return config.hidden_size, config.num_hidden_layers, config.num_hidden_layers
    try:
        config = AutoConfig.from_pretrained(teacher)
    except OSError as error:
        raise UserError(f"teacher {teacher!r} has no readable config ({str(error).splitlines()[0]}); "
                        "pass a local folder or a reachable hub id.") from None
    encoder, decoder = (config.encoder, config.decoder) if hasattr(config, "encoder") else (config, config)
    try:
        return getattr(encoder, family_of(encoder).width), depth(decoder, "decoder"), depth(encoder, "encoder")
    except ConfigError as error:
        raise UserError(f"teacher {teacher!r}: {error}") from None


def check_resumable(storage_path: str, name: str) -> Path:
    """The folder of the search `name` under `storage_path`, if Ray Tune can continue it; else one UserError line
    that says where the searches are."""
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


def _budget(space: SearchSpace, options: RunOptions, previous) -> tuple[SearchSettings, list[str]]:
    """The space's sampler and budget with the flags applied; a resumed search's own, saved in its MLflow run
    (Tune restores its sampler, budget and failure settings, which cannot change). Also the flags so ignored."""
    flags = {"trials": options.trials, "max_concurrent": options.max_concurrent, "sampler": options.sampler,
             "retries": options.retries}
    given = {key: value for key, value in flags.items() if value is not None}
    if previous is None:
        return SearchSettings(**{**space.search.__dict__, **given}), []
    saved = previous.data.params
    kept = {"trials": int(saved["trials"]), "max_concurrent": int(saved["max_concurrent"]),
            "retries": int(saved.get("retries", 0)), "sampler": saved.get("sampler", space.search.sampler)}
    return SearchSettings(**{**space.search.__dict__, **kept}), list(given)


def prepare_search(space: str | Path, options: RunOptions, *, space_dirs: list[Path] | None = None) -> SearchPlan:
    """Checks everything a search needs, once, and returns its plan.

    Args:
        space: a space name (`search_spaces/<name>.yaml`) or file.
        options: the flags, paths resolved.
        space_dirs: where a space name is looked up (default: ./search_spaces, then the project's).

    Raises:
        UserError: one line for the first problem found: a flag, the fault plan, the space file (every problem in
            it together), the teacher's config, the name, or the tracking store.
    """
    faults = parse_faults(os.environ.get(FAULTS_ENV, ""))
    if options.resume:
        check_resumable(options.storage_path, options.resume)
    elif options.name:
        check_new_search(options.storage_path, options.name)
    loaded = SearchSpace.load(resolve_space_path(str(space), space_dirs), shape_of=teacher_shape)
    tracker = SearchTracker(options.tracking_uri, experiment=loaded.name)
    tracker.check()
    name = options.resume or options.name or f"{loaded.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    previous = None
    if options.resume:
        previous = tracker.find_search(name)
        if previous is None:
            raise UserError(
                f"search {name!r} has Ray Tune state but no run in MLflow experiment {loaded.name!r} at "
                f"{tracker.tracking_uri}; pass the search space and --tracking-uri it was started with."
            )
        started = previous.data.params.get("space")
        if started and started != str(loaded.path):
            raise UserError(f"search {name!r} was started with the space {started}, got {loaded.path}; "
                            f"resume it with that space.")
    else:
        check_new_search(options.storage_path, name)
    budget, ignored = _budget(loaded, options, previous)
    return SearchPlan(space=loaded, options=options, name=name, budget=budget, tracker=tracker, faults=faults,
                      previous=previous, ignored_flags=tuple(ignored))
