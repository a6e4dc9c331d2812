"""Picking from a finished search: `python -m platform.pareto EXPERIMENT [flags]` (see `--help`).

    python -m platform.pareto summarization                      # the latest search's Pareto front, as a table
    python -m platform.pareto summarization --constraint "latency_ms<=300" --pick fastest-within-2pct \\
        --register shrinktune-summarizer --export ./picked       # one checkpoint: registered, aliased, copied

Reads the FINISHED trial runs of the latest search in the experiment (`--search` names another, `--all` takes
every search), keeps those meeting every `--constraint`, computes the non-dominated set over the objectives (the
search's own, from its run's `objectives` param, unless `--objectives` says otherwise) and prints it.

Tagging: the runs on the printed front get `shrinktune.pareto=true` and the other runs read lose that tag, so the
tag always means "on the front of the latest selection"; the selection itself (objectives and constraints) is
written on the search run as `shrinktune.pareto_selection`. `--no-tag` leaves MLflow untouched.

Registering: `--register NAME` logs the checkpoint folder as the trial run's `model` artifacts and registers
`runs:/<run>/model` as a version of NAME, with `--pick` only the picked trial (alias: the pick's name unless
`--alias` is given), without it every trial on the front. Load a version, with `MLFLOW_TRACKING_URI` set to the
store (MLflow 3.17 resolves `models:/` URIs through it), by `mlflow.artifacts.download_artifacts("models:/NAME@ALIAS")`
and `load_teacher` / `load_summarizer` on the folder it returns.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from shrinktune.errors import ConfigError, UserError
from shrinktune.front import pareto_front
from shrinktune.search.pareto import Constraint, Pick, parse_constraint, parse_objectives, parse_pick

logger = logging.getLogger(__name__)

PARETO_TAG = "shrinktune.pareto"
SELECTION_TAG = "shrinktune.pareto_selection"
MODEL_ARTIFACTS = "model"  # where a registered checkpoint lives among its trial run's artifacts
_ALIAS = re.compile(r"^[\w\-]+$")  # MLflow's alias rule


@dataclass(frozen=True)
class Candidate:
    """One finished trial as the picker sees it."""

    run_id: str  # the trial's MLflow run
    trial: str  # Tune's trial id
    search: str  # the parent (search) run id
    metrics: dict  # its latest metrics
    config: dict  # its params (the sampled configuration), without `checkpoint`
    checkpoint: str | None  # the checkpoint folder the trial saved
    tagged: bool = False  # carries shrinktune.pareto=true from an earlier selection
    rechecked: bool = False  # re-measured at high fidelity at the end of its search (tag shrinktune.rechecked)
    degenerate: bool = False  # below its search's quality floor (tag shrinktune.degenerate)


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


def find_searches(client, experiment, search: str | None, every: bool) -> list:
    """The parent runs to read: all (`every`), the one named or id'd by `search`, or the latest."""
    parents = _all_runs(client, experiment.experiment_id, "tags.`shrinktune.kind` = 'search'",
                        order_by=["attributes.start_time DESC"])
    if not parents:
        raise UserError(f"experiment {experiment.name!r} holds no search runs (tag shrinktune.kind=search); "
                        "run `python -m platform.search` first.")
    if every:
        return parents
    if search is None:
        return parents[:1]
    chosen = [p for p in parents if search in (p.info.run_id, p.info.run_name)]
    if not chosen:
        recent = ", ".join(p.info.run_name or p.info.run_id for p in parents[:5])
        raise UserError(f"no search {search!r} in experiment {experiment.name!r}; recent searches: {recent}. "
                        "Pass a search run's name or id to --search, or --all.")
    return chosen[:1]  # the latest of that name


def search_objectives(searches: list) -> dict[str, str]:
    """The objectives the searches optimised (their `objectives` param, JSON); all must agree."""
    found = {}
    for parent in searches:
        text = parent.data.params.get("objectives")
        try:
            found[parent.info.run_name or parent.info.run_id] = json.loads(text) if text else None
        except ValueError:
            found[parent.info.run_name or parent.info.run_id] = None
    if any(v is None or not isinstance(v, dict) for v in found.values()):
        missing = [k for k, v in found.items() if not isinstance(v, dict)]
        raise UserError(f"search {missing[0]} has no readable `objectives` param; pass --objectives rouge1:max,latency_ms:min.")
    distinct = {json.dumps(v, sort_keys=True) for v in found.values()}
    if len(distinct) > 1:
        raise UserError(f"the searches read optimised different objectives ({'; '.join(sorted(distinct))}); "
                        "pass --objectives to compare them on one set.")
    return next(iter(found.values()))


def _candidate(run) -> Candidate:
    params = dict(run.data.params)
    checkpoint = run.data.tags.get("shrinktune.checkpoint") or params.pop("checkpoint", None)
    params.pop("checkpoint", None)
    return Candidate(run_id=run.info.run_id, trial=run.data.tags.get("shrinktune.trial", run.info.run_name or "?"),
                     search=run.data.tags.get("mlflow.parentRunId", ""), metrics=dict(run.data.metrics),
                     config=params, checkpoint=checkpoint, tagged=run.data.tags.get(PARETO_TAG) == "true",
                     rechecked="shrinktune.rechecked" in run.data.tags,
                     degenerate="shrinktune.degenerate" in run.data.tags)


def select(client, experiment: str, objectives: dict[str, str] | None, constraints: list[Constraint],
           pick: Pick | None = None, search: str | None = None, every: bool = False) -> Selection:
    """Reads the trials, applies the constraints, computes the front and applies the pick; changes nothing."""
    found = find_experiment(client, experiment)
    searches = find_searches(client, found, search, every)
    objectives = objectives or search_objectives(searches)
    latest = searches[0]  # the reference teacher; with --all, that of the latest search
    reference = {k[len("teacher_"):]: v for k, v in latest.data.metrics.items() if k.startswith("teacher_")}
    ids = {p.info.run_id for p in searches}
    runs = _all_runs(client, found.experiment_id,
                     "tags.`shrinktune.kind` = 'trial' and attributes.status = 'FINISHED'")
    candidates = [_candidate(r) for r in runs if r.data.tags.get("mlflow.parentRunId") in ids]
    if not candidates:
        raise UserError(f"search {latest.info.run_name or latest.info.run_id} has no FINISHED trial runs; "
                        "wait for trials to end, or pick another with --search / --all.")
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
    return Selection(searches, objectives, reference, candidates, kept, front, picked)


def tag_front(client, selection: Selection, constraints: list[Constraint]) -> None:
    """`shrinktune.pareto=true` on the front, removed from the other runs read; the selection on the searches."""
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


def _has_model_artifacts(client, run_id: str) -> bool:
    return bool(client.list_artifacts(run_id, MODEL_ARTIFACTS))


def register(client, name: str, candidate: Candidate, aliases: list[str], tags: dict) -> int:
    """Registers a trial's checkpoint as a version of `name` (reusing the version of the same run if there is
    one) and points `aliases` at it; returns the version number."""
    from mlflow.exceptions import MlflowException

    try:
        if not _has_model_artifacts(client, candidate.run_id):
            logger.info("uploading %s to run %s as its %r artifacts", candidate.checkpoint, candidate.run_id, MODEL_ARTIFACTS)
            client.log_artifacts(candidate.run_id, candidate.checkpoint, artifact_path=MODEL_ARTIFACTS)
        try:
            client.get_registered_model(name)
        except MlflowException:
            client.create_registered_model(name, description="Compressed summarizers picked by Shrinktune.")
        source = f"runs:/{candidate.run_id}/{MODEL_ARTIFACTS}"
        existing = [v for v in client.search_model_versions(f"name = '{name}' and run_id = '{candidate.run_id}'")
                    if v.source == source]
        version = existing[0] if existing else client.create_model_version(
            name, source=source, run_id=candidate.run_id, tags=tags)
        for alias in aliases:
            client.set_registered_model_alias(name, alias, version.version)
    except MlflowException as error:
        raise UserError(f"registering trial {candidate.trial} as {name!r} failed: "
                        f"{str(error).strip().splitlines()[0][:200]}; check the model name and the store.") from None
    return int(version.version)


def export(candidate: Candidate, destination: Path, tracking_uri: str) -> Path:
    """Copies the trial's checkpoint folder to `destination` (from its run's artifacts if the folder is gone)."""
    if candidate.checkpoint and Path(candidate.checkpoint).is_dir():
        shutil.copytree(candidate.checkpoint, destination, dirs_exist_ok=True)
    else:
        import mlflow.artifacts

        fetched = mlflow.artifacts.download_artifacts(run_id=candidate.run_id, artifact_path=MODEL_ARTIFACTS,
                                                      tracking_uri=tracking_uri)
        shutil.copytree(fetched, destination, dirs_exist_ok=True)
    return destination


def format_selection(selection: Selection) -> str:
    """The table people read: the teacher, then the front (best on the first objective first), then the pick."""
    metrics = list(selection.objectives)
    header = ["", "trial", *metrics, "search", "checkpoint"]
    ref = selection.reference
    rows = [["", "teacher", *(_fmt(ref.get(m)) for m in metrics), "-", "(reference)"]]
    first, direction = next(iter(selection.objectives.items()))
    order = sorted(selection.front, key=lambda i: selection.kept[i].metrics[first] * (-1 if direction == "max" else 1))
    if selection.picked is not None and selection.picked not in order:
        order.append(selection.picked)
    for i in order:
        c = selection.kept[i]
        mark = ("*" if i == selection.picked else "") + ("" if i in selection.front else "(off-front)")
        rows.append([mark, c.trial, *(_fmt(c.metrics.get(m)) for m in metrics), c.search[:8], c.checkpoint or "-"])
    widths = [max(len(r[i]) for r in [header] + rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip() for r in [header] + rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _fmt(value) -> str:
    if value is None:
        return "-"
    return f"{value:.4g}" if isinstance(value, float) and not float(value).is_integer() else f"{value:.0f}"


def _targets(selection: Selection) -> list[Candidate]:
    if selection.picked is not None:
        return [selection.kept[selection.picked]]
    return [selection.kept[i] for i in selection.front]


def _check_outputs(args, selection: Selection, client) -> None:
    """Everything --register / --export need, checked before anything is written."""
    targets = _targets(selection)
    if args.alias and len(targets) > 1:
        raise UserError(f"--alias names one version, but {len(targets)} trials are on the front; add --pick "
                        "(e.g. --pick fastest-within-2pct) or a --constraint that leaves one.")
    if args.export and len(targets) > 1:
        raise UserError(f"--export copies one checkpoint, but {len(targets)} trials are on the front; add --pick.")
    if args.export:
        destination = Path(args.export)
        if destination.exists() and (not destination.is_dir() or any(destination.iterdir())):
            raise UserError(f"--export {destination} exists and is not an empty folder; pass a new folder.")
    if args.register or args.export:
        for target in targets:
            present = target.checkpoint and Path(target.checkpoint).is_dir()
            if not present and not _has_model_artifacts(client, target.run_id):
                raise UserError(f"trial {target.trial}'s checkpoint {target.checkpoint or '(none logged)'} is missing "
                                "and its run holds no model artifacts; rerun the search, or pick another trial.")


def pick_command(args) -> int:
    objectives = parse_objectives(args.objectives) if args.objectives else None
    constraints = [parse_constraint(text) for text in args.constraint]
    pick = parse_pick(args.pick) if args.pick else None
    for alias in args.alias:
        if not _ALIAS.match(alias) or alias.lower() == "latest" or re.match(r"^[vV]\d+$", alias):
            raise ConfigError(f"--alias must be letters, digits, '_' or '-' and not 'latest' or v<N> (MLflow's "
                              f"rule), got {alias!r}; e.g. --alias production.")
    if args.alias and not args.register:
        raise ConfigError(f"--alias {args.alias[0]} names a registered version; add --register NAME.")
    if args.search and args.all:
        raise ConfigError("--search and --all exclude each other; pass one.")
    if args.test and not pick:
        raise ConfigError("--test scores one checkpoint on the test split; add --pick (e.g. --pick fastest-within-5pct).")
    from shrinktune.tracking.mlflow_tracking import default_tracking_uri, open_store

    uri = args.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri(
        os.environ.get("SHRINKTUNE_HOME") or Path.cwd())
    client = open_store(uri)
    selection = select(client, args.experiment, objectives, constraints, pick, args.search, args.all)
    _check_outputs(args, selection, client)

    names = ", ".join(p.info.run_name or p.info.run_id for p in selection.searches)
    print(f"Pareto front of {args.experiment!r} ({names}): {len(selection.front)} of {len(selection.kept)} trial(s)"
          + (f" meeting {', '.join(map(str, constraints))}" if constraints else "")
          + f" ({len(selection.candidates)} finished); objectives "
          + ", ".join(f"{k} ({'higher' if v == 'max' else 'lower'} is better)" for k, v in selection.objectives.items()))
    print(format_selection(selection))
    if pick:
        chosen = selection.kept[selection.picked]
        print(f"\n* {pick.name}: trial {chosen.trial} ({pick.metric} {_fmt(chosen.metrics.get(pick.metric))}, "
              f"rouge1 {_fmt(chosen.metrics.get('rouge1'))}), run {chosen.run_id}")
    if not args.no_tag:
        tag_front(client, selection, constraints)
    if args.register:
        aliases = list(args.alias) or ([pick.name.replace(".", "_")] if pick else [])
        for target in _targets(selection):
            tags = {"shrinktune.trial": target.trial, "shrinktune.search": target.search,
                    **({"shrinktune.pick": pick.name} if pick else {}),
                    **{m: str(target.metrics.get(m)) for m in selection.objectives}}
            version = register(client, args.register, target, aliases, tags)
            print(f"registered trial {target.trial} as {args.register} version {version}"
                  + (f" (alias {', '.join('@' + a for a in aliases)})" if aliases else ""))
        if aliases:
            print(f"  load it: with MLFLOW_TRACKING_URI={uri}, folder = mlflow.artifacts.download_artifacts("
                  f"'models:/{args.register}@{aliases[0]}'), then shrinktune.load_summarizer(folder)")
    if args.export:
        target = _targets(selection)[0]
        destination = export(target, Path(args.export), uri)
        print(f"exported trial {target.trial} to {destination}; load it with shrinktune.load_summarizer('{destination}')")
    if args.test:
        print(test_pick(client, selection, args.test_samples))
    return 0


def test_pick(client, selection: Selection, samples: int) -> str:
    """Scores the pick and the teacher on the task's test split (`heldout_comparison`), logs `test_*` metrics to
    the pick's run and returns the lines to print."""
    from shrinktune.measure.heldout import heldout_comparison

    chosen, search = selection.kept[selection.picked], selection.searches[0]
    if not chosen.checkpoint or not Path(chosen.checkpoint).is_dir():
        raise UserError(f"trial {chosen.trial} has no checkpoint folder here ({chosen.checkpoint or 'none logged'}); "
                        "--test needs it: run it where the search's storage is, or pick another trial.")
    teacher_dir = search.data.tags.get("shrinktune.teacher_dir")
    task = search.data.params.get("task")
    if not teacher_dir or not task:
        raise UserError(f"search {search.info.run_name} logged no teacher folder or task; --test needs both: "
                        "rerun the search with this version.")
    generation = json.loads(search.data.params["generation"]) if search.data.params.get("generation") else None
    held = heldout_comparison(chosen.checkpoint, teacher_dir, task, generation=generation, samples=samples)
    metrics = held.metrics()
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    client.log_batch(chosen.run_id, metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()])
    s, t = held.student, held.teacher
    low, high = held.difference[1], held.difference[2]
    verdict = ("not told apart from the teacher's" if low <= 0 <= high
               else "above the teacher's" if low > 0 else "below the teacher's")
    return "\n".join([
        f"\nHeld-out test of trial {chosen.trial} ({held.samples} test pairs, never seen by the search; logged to run "
        f"{chosen.run_id} as test_*):",
        f"  teacher  R-1 {t['rouge1']:.3f} [{t['rouge1_low']:.3f}, {t['rouge1_high']:.3f}]  R-2 {t['rouge2']:.3f}",
        f"  pick     R-1 {s['rouge1']:.3f} [{s['rouge1_low']:.3f}, {s['rouge1_high']:.3f}]  R-2 {s['rouge2']:.3f}  "
        f"speed-up {held.speedup[0]:.2f}x (IQR {held.speedup[1]:.2f}-{held.speedup[2]:.2f}"
        f"{'' if held.converged else ', not within ±5 % at the time cap'})",
        f"  R-1 difference {held.difference[0]:+.3f}, 95 % interval {low:+.3f} to {high:+.3f}: {verdict}; in the "
        f"search: R-1 {chosen.metrics.get('rouge1', float('nan')):.3f}, speed-up "
        f"{chosen.metrics.get('speedup', float('nan')):.2f}x.",
    ])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m platform.pareto",
        description="Show, tag, register and export the Pareto-optimal trials of a finished search.")
    parser.add_argument("experiment", help="MLflow experiment: the search space's name (e.g. summarization)")
    parser.add_argument("--objectives", default=None,
                        help="metric:min|max list, e.g. rouge1:max,latency_ms:min (default: the search's own)")
    parser.add_argument("--constraint", action="append", default=[],
                        help='a rule each trial must meet, e.g. "rouge1>=0.2", "latency_ms<=300", '
                        '"rouge1>=0.98*teacher"; repeatable')
    parser.add_argument("--tracking-uri", default=None, help="MLflow store (default: $MLFLOW_TRACKING_URI, else "
                        "sqlite:///<$SHRINKTUNE_HOME or the cwd>/mlflow.db)")
    parser.add_argument("--search", default=None, help="a search run's name or id (default: the latest search)")
    parser.add_argument("--all", action="store_true", help="read the trials of every search in the experiment")
    parser.add_argument("--pick", default=None, help="pick one trial by a named rule: best-rouge, fastest, smallest, "
                        "fastest-within-<N>pct, smallest-within-<N>pct (ROUGE-1 at most N %% below the teacher's)")
    parser.add_argument("--register", default=None, metavar="NAME",
                        help="register the picked trial (or the whole front) in the MLflow model registry as NAME")
    parser.add_argument("--alias", action="append", default=[],
                        help="alias for the registered version (default: the pick's name); repeatable")
    parser.add_argument("--export", default=None, metavar="DIR", help="copy the picked checkpoint to DIR")
    parser.add_argument("--test", action="store_true", help="score the pick and the teacher on the task's test split "
                        "(never seen by the search), with intervals and an interleaved speed-up; logged as test_*")
    parser.add_argument("--test-samples", type=int, default=500, metavar="N",
                        help="test pairs scored by --test (default 500; the whole split when smaller)")
    parser.add_argument("--no-tag", action="store_true", help="leave the runs' shrinktune.pareto tags as they are")
    return parser


def main(argv: list[str] | None = None) -> int:
    """`python -m platform.pareto EXPERIMENT [flags]`; expected problems: one line on stderr, exit code 2."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    logging.getLogger("shrinktune").setLevel(logging.INFO)
    try:
        return pick_command(args)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
