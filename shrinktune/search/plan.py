"""The pre-flight of a search: every check, once, before Ray starts or anything is written.

`prepare_search(space, options)` reads the space file once (finding its teacher's shape from the teacher's config
alone), checks the flags, the planned faults, the folders (storage and cache: made, writable), the tracking store
and the name (a new search must not reuse one, in the storage or in MLflow; a resumed one must exist, with the same
space), claims the search's folder and returns a `SearchPlan`: everything `run_search` needs. Nothing here changes
process-wide state.

The storage holds Ray Tune's pickled state, which `--resume` unpickles: the storage folder and each search's folder
are made owner-only (0700), and a search folder another user owns is refused (see jobs/README.md, Security).
"""

from __future__ import annotations

import logging
import os
import re
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ray import tune
from transformers import AutoConfig

from shrinktune.data.tasks import get_task, load_task_splits
from shrinktune.errors import ConfigError, UserError
from shrinktune.models.families import depth, family_of
from shrinktune.models.teacher import EMBEDDED_TEACHER, minilm_path
from shrinktune.paths import check_folder
from shrinktune.search.faults import FAULTS_ENV, Fault, parse_faults
from shrinktune.search.space import SearchSpace, resolve_space_path
from shrinktune.search.trial import TrialContext
from shrinktune.settings import SAMPLERS, SearchSettings
from shrinktune.tracking.mlflow_tracking import SearchTracker
from shrinktune.tracking.schema import STORAGE_PARAM

logger = logging.getLogger(__name__)

NAME_RULE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")  # a search's name is a folder of the storage, not a path
CLAIM = ".shrinktune-search"  # made (exclusively) in a search's folder by the search that owns the name


def check_name(name: str, flag: str) -> None:
    """A search name is one folder of the storage and a value in MLflow queries: letters, digits, '.', '_', '-'."""
    if not NAME_RULE.match(name) or name in (".", ".."):
        raise ConfigError(f"{flag} must be 1-100 letters, digits, '.', '_' or '-', starting with a letter or digit "
                          f"(it names a folder of the storage), got {name!r}; e.g. {flag} bart-small-1.")


GPU_STEPS = 10_000  # Ray counts a resource in steps of 1/10000; a finer fraction is refused


def check_gpus_per_trial(gpus: float) -> None:
    """Ray's rule for a GPU request: 0, a fraction from 0.0001 to 1, or a whole number of GPUs.

    Ray 2.60 refuses any other request (1.5, 0.00001) only when it schedules it, and under Tune the search then
    fails with "Tracked actor is not managed by this event manager", not the reason; refused here in one line.
    """
    if not (gpus == 0 or 1 / GPU_STEPS <= gpus <= 1 or (gpus > 1 and float(gpus).is_integer())):
        raise ConfigError(f"--gpus-per-trial must be 0, a fraction from {1 / GPU_STEPS:g} to 1 (trials then share a "
                          f"GPU) or a whole number of GPUs, got {gpus:g}.")


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
    gpus_per_trial: float | None = None  # default: the cluster's GPUs / max_concurrent, at most 1 (0: none)
    sampler: str | None = None  # overrides search.sampler
    name: str | None = None  # Tune experiment name; default <space>-<timestamp>
    retries: int | None = None  # extra attempts for a failed trial; default the space's `retries`
    resume: str | None = None  # name of an interrupted search under storage_path to continue
    verbose: bool = False  # Ray Tune's own tables and warnings too (default: one progress line per ended trial)
    listen_all: bool = False  # a local Ray started by the search listens on the network too (default: loopback)

    def __post_init__(self):
        for flag in ("trials", "max_concurrent"):
            value = getattr(self, flag)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ConfigError(f"--{flag.replace('_', '-')} must be ≥ 1, got {value}.")
        for flag in ("cpus_per_trial", "gpus_per_trial", "retries"):
            value = getattr(self, flag)
            if value is not None and value < 0:
                raise ConfigError(f"--{flag.replace('_', '-')} must be ≥ 0, got {value}.")
        if self.gpus_per_trial is not None:
            check_gpus_per_trial(self.gpus_per_trial)
        if self.retries is not None and not isinstance(self.retries, int):
            raise ConfigError(f"--retries must be a whole number of attempts, got {self.retries!r}.")
        if self.sampler is not None and self.sampler not in SAMPLERS:
            raise ConfigError(f"--sampler must be one of {', '.join(SAMPLERS)}, got {self.sampler!r}.")
        if self.resume is not None and self.name is not None and self.name != self.resume:
            raise ConfigError(f"--resume {self.resume} continues a search under its own name; drop --name {self.name}.")
        for flag, value in (("--name", self.name), ("--resume", self.resume)):
            if value is not None:
                check_name(value, flag)


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
    restore: bool = False  # Ray Tune's state is restored (False: Tune starts afresh, under `previous` if resumed)

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
    except (OSError, ValueError) as error:  # ValueError: a config.json without a known `model_type`
        raise UserError(f"teacher {teacher!r} has no readable config ({str(error).strip().splitlines()[0][:200]}); "
                        "pass a folder written by save_pretrained (config.json, weights, tokenizer) or a reachable "
                        "hub id.") from None
    encoder, decoder = (config.encoder, config.decoder) if hasattr(config, "encoder") else (config, config)
    try:
        return getattr(encoder, family_of(encoder).width), depth(decoder, "decoder"), depth(encoder, "encoder")
    except ConfigError as error:
        raise UserError(f"teacher {teacher!r}: {error}") from None


def check_teacher_tokenizer(teacher: str) -> None:
    """Loads the teacher's tokenizer before Ray starts, so that one needing a package this machine lacks
    (sentencepiece for Marian) is one line now, not a failed teacher preparation later."""
    if teacher == EMBEDDED_TEACHER:
        return
    from shrinktune.models.teacher import load_tokenizer  # lazy: torch, for a search that gets this far

    try:
        load_tokenizer(teacher)
    except (OSError, ValueError):
        pass  # a folder or id without a readable tokenizer: the teacher's loading says so in full, with its fix


def check_owned(folder: Path) -> None:
    """Refuses a search folder another user owns: resuming unpickles the Ray Tune state in it."""
    if folder.exists() and folder.stat().st_uid != os.getuid():
        raise UserError(f"search folder {folder} belongs to another user (uid {folder.stat().st_uid}); its Ray Tune "
                        "state would run code as you: use your own --storage.")


def searches_in(storage: Path) -> str:
    """The searches Ray Tune can continue under `storage`, listed for a message."""
    known = sorted(p.name for p in storage.iterdir() if tune.Tuner.can_restore(str(p))) if storage.is_dir() else []
    if not known:
        return "none there yet"
    return f"{len(known)} there: {', '.join(known[-5:])}{' ...' if len(known) > 5 else ''}"


def check_resumable(storage_path: str, name: str) -> Path:
    """The folder of the search `name` under `storage_path`, if Ray Tune can continue it; else one UserError line
    that says where the searches are."""
    path = Path(storage_path) / name
    if tune.Tuner.can_restore(str(path)):
        check_owned(path)
        return path
    storage = Path(storage_path)
    raise UserError(
        f"no search {name!r} to resume: {path} holds no Ray Tune state; searches are the folders of {storage} "
        f"({searches_in(storage)}): list them with `ls {storage}`, or pass the --storage the search ran with."
    )


def claim(storage_path: str, name: str) -> bool:
    """Takes the name `name` for a new search: makes its folder (owner-only) and, exclusively, the claim file in it
    (`host pid`). False when the name is taken: anything else in the folder, or the claim of a search starting now.
    The claim of a search that died on this host before its MLflow run opened is taken over."""
    folder = Path(storage_path) / name
    try:
        folder.mkdir(mode=0o700)
    except FileExistsError:
        check_owned(folder)
        if {p.name for p in folder.iterdir()} != {CLAIM}:  # a search's files, or an empty folder someone made
            return False
    marker = folder / CLAIM
    if marker.exists() and _stale(marker):
        marker.unlink(missing_ok=True)
    try:
        with open(marker, "x") as handle:
            handle.write(f"{socket.gethostname()} {os.getpid()}\n")
    except FileExistsError:
        return False
    return True


def _stale(marker: Path) -> bool:
    """Whether a claim was made on this host by a process that is gone."""
    try:
        host, pid = marker.read_text().split()
        if host != socket.gethostname():
            return False
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except (OSError, ValueError):
        return False
    return False


def release(storage_path: str, name: str) -> None:
    """Gives the name of a search that never started (no MLflow run) back: its claim and, if empty, its folder."""
    folder = Path(storage_path) / name
    (folder / CLAIM).unlink(missing_ok=True)
    try:
        folder.rmdir()
    except OSError:
        pass


def check_new_search(storage_path: str, name: str) -> None:
    """Refuses to start a search under the name of one that exists: their trials would mix in one folder."""
    path = Path(storage_path) / name
    if path.exists() and {p.name for p in path.iterdir()} != {CLAIM}:
        raise UserError(f"a search named {name!r} already exists at {path}; continue it with --resume {name}, "
                        "or pick another --name.")


def _new_name(tracker: SearchTracker, storage_path: str, wanted: str | None, space: str) -> str:
    """The name of a new search, claimed: `wanted` (refused when a search has it, in the storage or in MLflow), or
    `<space>-<timestamp>` (with `-2`, `-3`... when searches started in the same second)."""
    if wanted:
        if tracker.find_search(wanted) is not None:
            raise UserError(f"a search named {wanted!r} is already in MLflow experiment {space!r} at "
                            f"{tracker.tracking_uri}; continue it with --resume {wanted}, or pick another --name.")
        check_new_search(storage_path, wanted)
        if not claim(storage_path, wanted):
            raise UserError(f"a search named {wanted!r} is starting at {Path(storage_path) / wanted} (its "
                            f"{CLAIM}); pick another --name, or delete that folder if no search is starting.")
        return wanted
    stamp = f"{re.sub(r'[^A-Za-z0-9._-]', '-', space).lstrip('.-_') or 'search'}-{time.strftime('%Y%m%d-%H%M%S')}"
    for count in range(1, 1000):
        name = stamp if count == 1 else f"{stamp}-{count}"
        if tracker.find_search(name) is None and claim(storage_path, name):
            return name
    raise UserError(f"no free search name {stamp}-N under {storage_path}; pass --name.")


def _resumed(tracker: SearchTracker, storage_path: str, name: str, space: SearchSpace) -> tuple[Any, bool]:
    """(the MLflow run of the search `name`, whether Ray Tune restores its state) for `--resume name`.

    A search interrupted before Ray Tune saved any state (while the teacher was prepared or measured) has its MLflow
    run but no Tune state: it starts afresh under that run. A search whose Tune state is gone although trials of it
    ended is refused: they would run again.
    """
    folder = Path(storage_path) / name
    check_owned(folder)
    restore = tune.Tuner.can_restore(str(folder))
    previous = tracker.find_search(name)
    if previous is None:
        if not restore:
            check_resumable(storage_path, name)  # raises, listing the searches there
        raise UserError(
            f"search {name!r} has Ray Tune state but no run in MLflow experiment {space.name!r} at "
            f"{tracker.tracking_uri}; pass the search space and --tracking-uri it was started with."
        )
    started = previous.data.params.get("space")
    if started and started != str(space.path):
        raise UserError(f"search {name!r} was started with the space {started}, got {space.path}; "
                        f"resume it with that space.")
    if not restore:
        ended = tracker.trial_runs(previous.info.run_id)
        if ended:
            raise UserError(
                f"search {name!r} has {len(ended)} trial run(s) in MLflow but no Ray Tune state at {folder}; pass "
                f"the --storage it ran with ({previous.data.params.get(STORAGE_PARAM, 'see its MLflow run')}).")
        logger.info("search %s was interrupted before any trial ended: its trials start afresh, under its MLflow run",
                    name)
    return previous, restore


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


def check_task_data(space: SearchSpace) -> None:
    """Reads a pair of each split the search uses (train, validation), so that a dataset that does not load, a
    column it lacks or a language pair it does not hold is one line now, not a failed trial after Ray starts."""
    task = get_task(space.task)
    for split in ("train", "validation"):
        try:
            pairs = load_task_splits(task, (split,), limit=1)[split]
        except UserError as error:
            raise UserError(f"{space.path}: task {task.name}: {str(error).rstrip('.')}.") from None
        if not pairs:
            raise UserError(f"{space.path}: task {task.name}: the {split} split of {task.dataset} is empty; the search "
                            "trains on train and scores on validation.")


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
    # The storage's answers first: they need neither the space nor the store.
    if options.resume and not (Path(options.storage_path) / options.resume).is_dir():
        check_resumable(options.storage_path, options.resume)  # no folder at all
    if options.name:
        check_new_search(options.storage_path, options.name)
    check_folder(options.storage_path, "--storage", private=True)
    check_folder(options.cache_root, "--cache-dir")
    loaded = SearchSpace.load(resolve_space_path(str(space), space_dirs), shape_of=teacher_shape)
    check_teacher_tokenizer(loaded.teacher)
    check_task_data(loaded)
    tracker = SearchTracker(options.tracking_uri, experiment=loaded.name)
    tracker.check()
    previous, restore = None, False
    if options.resume:
        name = options.resume
        previous, restore = _resumed(tracker, options.storage_path, name, loaded)
    else:
        name = _new_name(tracker, options.storage_path, options.name, loaded.name)  # claimed: the last check
    budget, ignored = _budget(loaded, options, previous)
    return SearchPlan(space=loaded, options=options, name=name, budget=budget, tracker=tracker, faults=faults,
                      previous=previous, ignored_flags=tuple(ignored), restore=restore)
