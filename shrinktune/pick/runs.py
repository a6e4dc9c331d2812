"""A finished search as MLflow holds it, and what the picker does to it: no argparse, no printing.

`select` reads the FINISHED trial runs of one search (or all), keeps those meeting the constraints and computes
their front, the pick and the settings the searches sampled; `tag_front`, `register`, `export` and `test_pick`
write the outcome back or out. `register` logs the checkpoint as an MLflow model (`shrinktune.pick.model`) and
registers that.

A checkpoint folder is a path read from MLflow, which others can write: it is only uploaded, copied or tested when
`shrinktune.pick.trust.trusted_checkpoint` accepts it.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from shrinktune.cli import entry_command
from shrinktune.errors import UserError
from shrinktune.front import pareto_front
from shrinktune.pick.rules import Constraint, Pick
from shrinktune.pick.table import differing_settings
from shrinktune.pick.trust import HeldOutInputs, copy_regular_files, run_label
from shrinktune.tracking.schema import (
    CHECKPOINT_PARAM,
    CHECKPOINT_TAG,
    DEGENERATE_TAG,
    KIND_TAG,
    PARENT_TAG,
    PARETO_TAG,
    PICK_TAG,
    RECHECKED_TAG,
    SEARCH_KIND,
    SEARCH_TAG,
    SELECTION_TAG,
    TEACHER_PREFIX,
    TRIAL_KIND,
    TRIAL_TAG,
    filter_value,
    unprefixed,
)

if TYPE_CHECKING:  # the held-out test's module loads torch; see test_pick
    from shrinktune.measure.heldout import HeldOut

logger = logging.getLogger(__name__)

LEGACY_ARTIFACTS = "model"  # where earlier versions put a registered checkpoint among its trial run's artifacts


@dataclass(frozen=True)
class Candidate:
    """One finished trial as the picker sees it."""

    run_id: str  # the trial's MLflow run
    trial: str  # Tune's trial id
    search: str  # the parent (search) run id
    metrics: dict  # its latest metrics
    config: dict  # its params (the sampled configuration), without `checkpoint`
    checkpoint: str | None  # the checkpoint folder the trial saved
    tagged: bool = False  # carries PARETO_TAG=true from an earlier selection
    rechecked: bool = False  # re-measured at high fidelity at the end of its search (RECHECKED_TAG)
    degenerate: bool = False  # below its search's quality floor (DEGENERATE_TAG)


@dataclass
class Selection:
    """What one invocation decided: the runs read, those kept, the front and the pick."""

    searches: list  # parent runs (mlflow Run objects)
    objectives: dict[str, str]
    reference: dict  # the teacher's metrics, unprefixed
    candidates: list[Candidate]  # every finished trial read
    kept: list[Candidate]  # those meeting the constraints
    front: list[int]  # indices into `kept`
    picked: int | None = None  # index into `kept`
    settings: list[str] = field(default_factory=list)  # the settings the searches sampled: the table's columns

    @property
    def chosen(self) -> Candidate:
        """The picked trial; only for a selection made with a pick."""
        if self.picked is None:
            raise ValueError("this selection was made without a pick")
        return self.kept[self.picked]

    def targets(self) -> list[Candidate]:
        """What --register / --export act on: the pick, else the whole front."""
        if self.picked is not None:
            return [self.kept[self.picked]]
        return [self.kept[i] for i in self.front]

    def search_of(self, candidate: Candidate):
        """The search run (an mlflow Run) the candidate is a trial of."""
        return next(p for p in self.searches if p.info.run_id == candidate.search)


def _all_runs(client, experiment_id: str, filter_string: str, order_by: list[str] | None = None) -> list:
    runs, token = [], None
    while True:
        page = client.search_runs([experiment_id], filter_string=filter_string, max_results=1000,
                                  order_by=order_by, page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def find_experiment(client, name: str):
    """The experiment called `name`; a UserError naming the known ones otherwise."""
    found = client.get_experiment_by_name(name)
    if found is None or found.lifecycle_stage == "deleted":
        known = sorted(e.name for e in client.search_experiments() if e.name != "Default")
        raise UserError(f"no experiment {name!r} in this MLflow store; known: {', '.join(known) or 'none'}. "
                        "The experiment is the search space's name; check --tracking-uri.")
    return found


def find_searches(client, experiment, search: str | None, every: bool, finished: set[str]) -> list:
    """The parent runs to read: all (`every`), the one named or id'd by `search`, or the latest; only searches
    with a FINISHED trial run (their ids: `finished`) count. Newer searches passed over are logged."""
    parents = _all_runs(client, experiment.experiment_id, f"tags.`{KIND_TAG}` = {filter_value(SEARCH_KIND)}",
                        order_by=["attributes.start_time DESC"])
    if not parents:
        raise UserError(f"experiment {experiment.name!r} holds no search runs (tag {KIND_TAG}={SEARCH_KIND}); "
                        f"run `{entry_command('search')}` first.")
    usable = [p for p in parents if p.info.run_id in finished]
    if search is not None:
        named = [p for p in parents if search in (p.info.run_id, p.info.run_name)]
        if not named:
            recent = ", ".join(run_label(p) for p in parents[:5])
            raise UserError(f"no search {search!r} in experiment {experiment.name!r}; recent searches: {recent}. "
                            "Pass a search run's name or id to --search, or --all.")
        chosen = [p for p in named if p.info.run_id in finished]
        if not chosen:
            others = ", ".join(run_label(p) for p in usable[:5]) or "none"
            raise UserError(f"search {search!r} has no FINISHED trial run (its run is {named[0].info.status}); wait "
                            f"for a trial to end, or pass another to --search (searches with finished trials: "
                            f"{others}).")
        return chosen[:1]  # the latest of that name
    if not usable:
        raise UserError(f"none of the {len(parents)} search run(s) in experiment {experiment.name!r} has a FINISHED "
                        f"trial run (latest: {run_label(parents[0])}, {parents[0].info.status}); wait for a trial to "
                        f"end, or run `{entry_command('search')}` again.")
    skipped = parents[:parents.index(usable[0])] if not every else [p for p in parents if p not in usable]
    if skipped:
        logger.warning("skipped %s search(es) without a FINISHED trial run: %s; reading %s",
                       "newer" if not every else "the", ", ".join(f"{run_label(p)} ({p.info.status})" for p in skipped),
                       run_label(usable[0]) if not every else f"the other {len(usable)}")
    return usable if every else usable[:1]


def search_objectives(searches: list) -> dict[str, str]:
    """The objectives the searches optimised (their `objectives` param, JSON); all must agree."""
    found: dict[str, dict | None] = {}
    for parent in searches:
        text = parent.data.params.get("objectives")
        try:
            parsed = json.loads(text) if text else None
        except ValueError:
            parsed = None
        found[run_label(parent)] = parsed if isinstance(parsed, dict) else None
    missing = [k for k, v in found.items() if v is None]
    if missing:
        raise UserError(f"search {missing[0]} has no readable `objectives` param; "
                        "pass --objectives rouge1:max,latency_ms:min.")
    readable = [v for v in found.values() if v is not None]
    distinct = {json.dumps(v, sort_keys=True) for v in readable}
    if len(distinct) > 1:
        raise UserError(f"the searches read optimised different objectives ({'; '.join(sorted(distinct))}); "
                        "pass --objectives to compare them on one set.")
    return readable[0]


def _candidate(run) -> Candidate:
    params = dict(run.data.params)
    trial = run.data.tags.get(TRIAL_TAG, run.info.run_name or "?")
    checkpoint = params.pop(CHECKPOINT_PARAM, None)
    tagged = run.data.tags.get(CHECKPOINT_TAG)
    if tagged and tagged != checkpoint:  # a tag can be rewritten by anyone who can write the store; a param cannot
        logger.warning("trial %s: its %s tag (%s) differs from its %s param (%s); the tag is ignored",
                       trial, CHECKPOINT_TAG, tagged, CHECKPOINT_PARAM, checkpoint or "none logged")
    return Candidate(run_id=run.info.run_id, trial=trial,
                     search=run.data.tags.get(PARENT_TAG, ""), metrics=dict(run.data.metrics),
                     config=params, checkpoint=checkpoint, tagged=run.data.tags.get(PARETO_TAG) == "true",
                     rechecked=RECHECKED_TAG in run.data.tags,
                     degenerate=DEGENERATE_TAG in run.data.tags)


def select(client, experiment: str, objectives: dict[str, str] | None, constraints: list[Constraint],
           pick: Pick | None = None, search: str | None = None, every: bool = False) -> Selection:
    """Reads the trials, applies the constraints, computes the front and applies the pick; changes nothing."""
    found = find_experiment(client, experiment)
    finished = f"tags.`{KIND_TAG}` = {filter_value(TRIAL_KIND)} and attributes.status = {filter_value('FINISHED')}"
    runs = _all_runs(client, found.experiment_id, finished)
    searches = find_searches(client, found, search, every, {r.data.tags.get(PARENT_TAG) for r in runs})
    objectives = objectives or search_objectives(searches)
    latest = searches[0]  # the reference teacher; with --all, that of the latest search
    reference = unprefixed(TEACHER_PREFIX, latest.data.metrics)
    ids = {p.info.run_id for p in searches}
    candidates = [_candidate(r) for r in runs if r.data.tags.get(PARENT_TAG) in ids]  # ≥ 1: find_searches
    # A search that re-checked its front measured those trials on more pairs and rounds than the rest: mixing the
    # two fidelities would let a cheaply measured trial displace a re-checked one. Degenerate trials are no choice.
    if any(c.rechecked for c in candidates):
        candidates = [c for c in candidates if c.rechecked]
    candidates = [c for c in candidates if not c.degenerate] or candidates
    kept = [c for c in candidates if all(rule.holds(c.metrics, reference) for rule in constraints)]
    if not kept:
        rules = ", ".join(map(str, constraints))
        raise UserError(f"none of the {len(candidates)} finished trial(s) meets {rules}; relax a --constraint.")
    front = pareto_front([c.metrics for c in kept], objectives)
    if not front:
        raise UserError(f"no trial reports every objective ({', '.join(objectives)}); check --objectives "
                        f"against the trials' metrics, e.g. {', '.join(sorted(kept[0].metrics)[:8])}.")
    picked = pick.choose([c.metrics for c in kept], reference) if pick else None
    return Selection(searches, objectives, reference, candidates, kept, front, picked,
                     sampled_settings(client, searches, candidates))


def space_dimensions(client, search) -> list[str] | None:
    """The dimensions of the space file a search logged (its artifact, named as the file its `space` param
    names), in the file's order; None when it logged none or the file cannot be read."""
    import yaml
    from mlflow.exceptions import MlflowException

    path = search.data.params.get("space")
    if not path:
        return None
    try:
        with tempfile.TemporaryDirectory() as folder:
            text = Path(client.download_artifacts(search.info.run_id, Path(path).name, folder)).read_text()
        dimensions = yaml.safe_load(text).get("dimensions")
    except (MlflowException, OSError, yaml.YAMLError, AttributeError):
        return None
    return [str(name) for name in dimensions] if isinstance(dimensions, dict) else None


def sampled_settings(client, searches: list, candidates: list[Candidate]) -> list[str]:
    """The settings the searches sampled — their space files' dimensions — else, for a search that logged no
    space file, the settings whose values differ between the candidates (trials log all their settings)."""
    names: list[str] = []
    for search in searches:
        dimensions = space_dimensions(client, search)
        if dimensions is None:
            return differing_settings([c.config for c in candidates])
        names += dimensions
    return list(dict.fromkeys(names))


def tag_front(client, selection: Selection, constraints: list[Constraint]) -> None:
    """PARETO_TAG=true on the front, removed from the other runs read; the selection (SELECTION_TAG) on the
    searches."""
    on_front = {selection.kept[i].run_id for i in selection.front}
    for candidate in selection.candidates:
        if candidate.run_id in on_front and not candidate.tagged:
            client.set_tag(candidate.run_id, PARETO_TAG, "true")
        elif candidate.run_id not in on_front and candidate.tagged:
            client.delete_tag(candidate.run_id, PARETO_TAG)
    described = "objectives " + ",".join(f"{k}:{v}" for k, v in selection.objectives.items())
    if constraints:
        described += "; constraints " + ", ".join(map(str, constraints))
    for parent in selection.searches:
        client.set_tag(parent.info.run_id, SELECTION_TAG, described)


def has_legacy_artifacts(client, run_id: str) -> bool:
    """Whether the run holds a checkpoint as plain `model` artifacts (a version registered by an earlier picker)."""
    return bool(client.list_artifacts(run_id, LEGACY_ARTIFACTS))


def has_logged_checkpoint(client, run_id: str) -> bool:
    """Whether MLflow holds the trial's checkpoint: a summarizer model of its run, or its run's `model` artifacts
    (what register and export fall back on when the folder is gone)."""
    from shrinktune.pick.model import find_summarizer_model

    return find_summarizer_model(client, run_id) is not None or has_legacy_artifacts(client, run_id)


def version_tags(candidate: Candidate, objectives: dict[str, str], pick: Pick | None) -> dict[str, str]:
    """The tags of a registered version: its trial, its search, the pick that chose it and its objectives."""
    return {TRIAL_TAG: candidate.trial, SEARCH_TAG: candidate.search, **({PICK_TAG: pick.name} if pick else {}),
            **{m: str(candidate.metrics.get(m)) for m in objectives}}


def summarizer_model(client, candidate: Candidate, folder: Path | None, tracking_uri: str):
    """The trial's summarizer model (a `LoggedModel`, see `shrinktune.pick.model`): the one its run holds, or one
    logged now from its checkpoint `folder` (`trusted_checkpoint`; None when it is gone: from its run's older
    `model` artifacts)."""
    from shrinktune.pick.model import find_summarizer_model, log_summarizer_model

    found = find_summarizer_model(client, candidate.run_id)
    if found is not None:
        return found
    logger.info("logging trial %s's checkpoint as an MLflow model of run %s", candidate.trial, candidate.run_id)
    with tempfile.TemporaryDirectory() as staging:
        if folder is not None:  # its regular files only: MLflow's copy would follow a link planted since the check
            checkpoint = copy_regular_files(folder, Path(staging) / folder.name)
        else:
            checkpoint = Path(_download(f"runs:/{candidate.run_id}/{LEGACY_ARTIFACTS}", Path(staging), tracking_uri))
        return client.get_logged_model(log_summarizer_model(client, candidate.run_id, checkpoint))


def register(client, name: str, candidate: Candidate, folder: Path | None, aliases: list[str], tags: dict,
             tracking_uri: str) -> int:
    """Registers a trial's summarizer model (`summarizer_model`, from `folder`) as a version of `name` — reusing the
    version of the same model if there is one — and points `aliases` at it; returns the version number.

    The version loads with `mlflow.pyfunc.load_model("models:/<name>@<alias>")` and summarizes with `predict`."""
    # Imported here: mlflow takes seconds to import, and only writing to the registry needs this name.
    from mlflow.exceptions import MlflowException

    try:
        model = summarizer_model(client, candidate, folder, tracking_uri)
        try:
            client.get_registered_model(name)
        except MlflowException:
            client.create_registered_model(name, description="Compressed summarizers picked by Shrinktune.")
        # The model's storage as the source: MLflow's sqlite registry would resolve a `models:/<id>` source
        # through the process-wide tracking URI, not this client's.
        source = model.artifact_location
        versions = client.search_model_versions(
            f"name = {filter_value(name)} and run_id = {filter_value(candidate.run_id)}")
        existing = [v for v in versions if v.source == source]
        version = existing[0] if existing else client.create_model_version(
            name, source=source, run_id=candidate.run_id, tags=tags, model_id=model.model_id)
        for alias in aliases:
            client.set_registered_model_alias(name, alias, version.version)
    except MlflowException as error:
        raise UserError(f"registering trial {candidate.trial} as {name!r} failed: "
                        f"{str(error).strip().splitlines()[0][:200]}; check the model name and the store.") from None
    return int(version.version)


def export(client, candidate: Candidate, folder: Path | None, destination: Path, tracking_uri: str) -> Path:
    """Copies the trial's checkpoint `folder` (`trusted_checkpoint`) to `destination` — its regular files only — or,
    when it is gone (None), the checkpoint of its summarizer model, or of its run's older `model` artifacts."""
    from shrinktune.pick.model import checkpoint_uri, find_summarizer_model

    if folder is not None:
        return copy_regular_files(folder, destination)
    model = find_summarizer_model(client, candidate.run_id)
    uri = (checkpoint_uri(model, tracking_uri) if model is not None
           else f"runs:/{candidate.run_id}/{LEGACY_ARTIFACTS}")
    with tempfile.TemporaryDirectory() as staging:
        return copy_regular_files(Path(_download(uri, Path(staging), tracking_uri)), destination)


def _download(uri: str, folder: Path, tracking_uri: str) -> str:
    """Downloads the artifacts at `uri` into `folder`; returns the local path."""
    # Imported here: mlflow takes seconds to import, and only a checkpoint moved away needs it.
    import mlflow.artifacts

    return mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(folder), tracking_uri=tracking_uri)


def test_pick(client, chosen: Candidate, inputs: HeldOutInputs, samples: int) -> HeldOut:
    """Scores the pick and the teacher (`heldout_inputs`) on the task's test split (`heldout_comparison`), logs its
    `test_*` metrics to the pick's run and returns the `HeldOut` result."""
    # Imported here: the held-out test loads torch, transformers and the data; the rest of the picker needs none.
    from mlflow.entities import Metric

    from shrinktune.measure.heldout import heldout_comparison

    held = heldout_comparison(str(inputs.checkpoint), str(inputs.teacher_dir), inputs.task,
                              generation=inputs.generation, samples=samples)
    now = int(time.time() * 1000)
    client.log_batch(chosen.run_id, metrics=[Metric(k, float(v), now, 0) for k, v in held.metrics().items()])
    return held
