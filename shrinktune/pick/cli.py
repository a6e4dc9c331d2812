"""Picking from a finished search: `shrinktune pareto EXPERIMENT [flags]` from anywhere, or `python -m
platform.pareto EXPERIMENT [flags]` from the repository root (see `--help`).

    shrinktune pareto summarization                              # the latest search's Pareto front, as a table
    shrinktune pareto summarization --constraint "latency_ms<=300" --pick fastest-within-6pct \\
        --register shrinktune-summarizer --export ./picked       # one checkpoint: registered, aliased, copied

Reads the FINISHED trial runs of the latest search in the experiment that has one (newer searches without one,
interrupted early, are skipped and named; `--search` names another, `--all` takes every search), keeps those
meeting every `--constraint`, computes the non-dominated set over the objectives (the search's own, from its run's
`objectives` param, unless `--objectives` says otherwise) and prints it: the table of `shrinktune.pick.table` (the
search's own columns, with the settings its space sampled), within 120 characters.

Tagging: the runs on the printed front get `shrinktune.pareto=true` and the other runs read lose that tag, so the
tag always means "on the front of the latest selection"; the selection itself (objectives and constraints) is
written on the search run as `shrinktune.pareto_selection`. `--no-tag` leaves MLflow untouched.

Registering: `--register NAME` logs the checkpoint as an MLflow model of the trial's run (`shrinktune.pick.model`:
a pyfunc model wrapping `load_summarizer`, the checkpoint folder its artifact) and registers it as a version of
NAME, with `--pick` only the picked trial (alias: the pick's name unless `--alias` is given), without it every
trial on the front. With `MLFLOW_TRACKING_URI` set to the store (MLflow 3.17 resolves `models:/` URIs through
it), `mlflow.pyfunc.load_model("models:/NAME@ALIAS").predict(["document ..."], params={"aspect": "approach"})`
summarizes.

Trust: --register, --export and --test read only a trial's checkpoint folder that is its run's `checkpoint` param
(not the tag, which anyone who can write the store can change), lies inside its search's folder (`<storage>/<name>`)
and holds a whole trial checkpoint (`shrinktune.pick.trust.trusted_checkpoint`); anything else is refused in one line
before anything is written. A folder that is gone is taken from the copy MLflow holds, if any.

This module holds the flags, the checks made before anything is written, and the output; what is read from and
written to MLflow is in `shrinktune.pick.runs`, the objectives, constraints and picks in `shrinktune.pick.rules`.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from shrinktune.errors import ConfigError, UserError
from shrinktune.paths import can_write_in
from shrinktune.pick.rules import QUALITY, kind_of, parse_constraint, parse_objectives, parse_pick, quality_of
from shrinktune.pick.runs import (
    Candidate,
    Selection,
    export,
    has_logged_checkpoint,
    register,
    select,
    tag_front,
    test_pick,
    version_tags,
)
from shrinktune.pick.table import Row, checkpoint_lines, pareto_table, time_note
from shrinktune.pick.trust import HeldOutInputs, heldout_inputs, trusted_checkpoint
from shrinktune.tracking.schema import PARETO_TAG

if TYPE_CHECKING:  # the held-out test's module loads torch; only --test imports it (in runs.test_pick)
    from shrinktune.measure.heldout import HeldOut

_ALIAS = re.compile(r"^[\w\-]+$")  # MLflow's alias rule
# What a registered model's name may not hold: '/' and ':' (every MLflow registry), '%' and '\' (its file registry;
# '\' on Windows), '?' (a `models:/NAME@ALIAS` URI ends there); a URI drops control characters too.
_NAME_FORBIDDEN = "/:\\%?"
_NAME_LENGTH = 256  # the registry's column (MySQL and PostgreSQL enforce it)


def format_selection(selection: Selection) -> str:
    """The table people read (`shrinktune.pick.table`, as the search prints it): the teacher, then the front (best
    on the first objective first), then the pick (`*`) if it is off the front; the checkpoints under it."""
    first, direction = next(iter(selection.objectives.items()))
    order = sorted(selection.front,
                   key=lambda i: selection.kept[i].metrics[first] * (-1 if direction == "max" else 1))
    if selection.picked is not None and selection.picked not in order:
        order.append(selection.picked)
    rows = [_row(selection, i) for i in order]
    table = pareto_table(rows, selection.reference, selection.objectives, selection.settings,
                         kind=kind_of(selection.reference))
    return "\n".join([table, "", *checkpoint_lines(rows)]).rstrip()


def _row(selection: Selection, index: int) -> Row:
    c = selection.kept[index]
    note = " ".join(part for part in ("off front" if index not in selection.front else "", time_note(c.metrics))
                    if part)
    return Row(c.trial, c.config, c.metrics, note=note, mark="*" if index == selection.picked else "",
               search=c.search, checkpoint=c.checkpoint)


def format_heldout(chosen: Candidate, held: HeldOut) -> str:
    """The lines `--test` prints: the teacher and the pick on the test split, and their R-1 difference."""
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


def _fmt(value) -> str:
    if value is None:
        return "-"
    return f"{value:.4g}" if isinstance(value, float) and not float(value).is_integer() else f"{value:.0f}"


def check_model_name(name: str) -> None:
    """Refuses a `--register` name that MLflow's registries, a `models:/NAME@ALIAS` URI or a registry search cannot
    take, before anything is uploaded.

    Raises:
        ConfigError: naming the rule broken.
    """
    bad = sorted({c for c in name if c in _NAME_FORBIDDEN or not c.isprintable()})
    problem = ("it is blank" if not name.strip() else
               f"it holds {' '.join(map(repr, bad))}" if bad else
               "'.' and '..' are folder names" if name in (".", "..") else
               f"it is {len(name)} characters long, over {_NAME_LENGTH}" if len(name) > _NAME_LENGTH else
               "it holds both ' and \", which no registry search can match" if "'" in name and '"' in name else None)
    if problem:
        raise ConfigError(f"--register needs a model name MLflow's registry accepts: not blank, '.' or '..', none of "
                          f"/ : \\ % ? or control characters, at most {_NAME_LENGTH} characters; got {name!r} "
                          f"({problem}); e.g. --register shrinktune-summarizer.")


def check_export(destination: Path) -> None:
    """Refuses an `--export` folder that exists and is not empty, or that cannot be written or created.

    Raises:
        ConfigError: saying which folder is in the way and what to pass instead.
    """
    if destination.exists() or destination.is_symlink():
        if not destination.is_dir() or any(destination.iterdir()):
            raise ConfigError(f"--export {destination} exists and is not an empty folder; pass a new folder.")
        if not can_write_in(destination):
            raise ConfigError(f"--export {destination} is not writable; pass a folder you can write.")
        return
    parent = next(p for p in destination.absolute().parents if p.exists())  # the folder it would be made in
    if not parent.is_dir():
        raise ConfigError(f"--export {destination} cannot be made: {parent} is a file, not a folder; pass a folder "
                          "path.")
    if not can_write_in(parent):
        raise ConfigError(f"--export {destination} cannot be made: {parent} is not writable; pass a folder you can "
                          "write.")


def _check_outputs(args, selection: Selection,
                   client) -> tuple[dict[str, Path | None], HeldOutInputs | None]:
    """Everything --register / --export / --test need, checked before anything is written: returns the trusted
    checkpoint folder of each target (`trusted_checkpoint`; None: gone, MLflow holds it) and what --test scores."""
    targets = selection.targets()
    if args.alias and len(targets) > 1:
        raise UserError(f"--alias names one version, but {len(targets)} trials are on the front; add --pick "
                        "(e.g. --pick fastest-within-2pct) or a --constraint that leaves one.")
    if args.export and len(targets) > 1:
        raise UserError(f"--export copies one checkpoint, but {len(targets)} trials are on the front; add --pick.")
    folders: dict[str, Path | None] = {}
    if args.register or args.export or args.test:
        for target in targets:
            folders[target.run_id] = folder = trusted_checkpoint(selection, target)
            if folder is None and (args.register or args.export) and not has_logged_checkpoint(client, target.run_id):
                raise UserError(f"trial {target.trial}'s checkpoint {target.checkpoint or '(none logged)'} is missing "
                                "and its run holds no model artifacts; rerun the search, or pick another trial.")
    held_out = heldout_inputs(client, selection, folders[selection.chosen.run_id]) if args.test else None
    return folders, held_out


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
        raise ConfigError("--test scores one checkpoint on the test split; add --pick "
                          "(e.g. --pick fastest-within-5pct).")
    if args.register:
        check_model_name(args.register)
    if args.export:
        check_export(Path(args.export))
    # Imported here: it loads mlflow (seconds); `--help` and bad flags answer without it.
    from shrinktune.tracking.mlflow_tracking import default_tracking_uri, open_store

    uri = args.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri(
        os.environ.get("SHRINKTUNE_HOME") or Path.cwd())
    client = open_store(uri)
    selection = select(client, args.experiment, objectives, constraints, pick, args.search, args.all)
    folders, held_out = _check_outputs(args, selection, client)

    names = ", ".join(p.info.run_name or p.info.run_id for p in selection.searches)
    print(f"Pareto front of {args.experiment!r} ({names}): {len(selection.front)} of {len(selection.kept)} trial(s)"
          + (f" meeting {', '.join(map(str, constraints))}" if constraints else "")
          + f" ({len(selection.candidates)} finished); objectives "
          + ", ".join(f"{k} ({'higher' if v == 'max' else 'lower'} is better)"
                      for k, v in selection.objectives.items()))
    print(format_selection(selection))
    if pick:
        chosen = selection.chosen
        off = "" if selection.picked in selection.front else "; off the front: a trial there beats it everywhere"
        quality = quality_of(selection.reference)
        metric = quality if pick.metric == QUALITY else pick.metric
        figures = ", ".join(f"{m} {_fmt(chosen.metrics.get(m))}" for m in dict.fromkeys([metric, quality]))
        print(f"\n* {pick.name}: trial {chosen.trial} ({figures}), run {chosen.run_id}{off}")
    if not args.no_tag:
        tag_front(client, selection, constraints)
    if args.register:
        _register(args, client, selection, folders, pick, uri)
    if args.export:
        target = selection.targets()[0]
        destination = export(client, target, folders[target.run_id], Path(args.export), uri)
        print(f"exported trial {target.trial} to {destination}; "
              f"load it with shrinktune.load_summarizer('{destination}')")
    if held_out is not None:
        print(format_heldout(selection.chosen, test_pick(client, selection.chosen, held_out, args.test_samples)))
    return 0


def _register(args, client, selection: Selection, folders: dict[str, Path | None], pick, uri: str) -> None:
    """Registers the pick (or the front) as versions of `--register`, aliased, and says how to load one."""
    aliases = list(args.alias) or ([pick.name.replace(".", "_")] if pick else [])
    version = 0
    for target in selection.targets():
        version = register(client, args.register, target, folders[target.run_id], aliases,
                           version_tags(target, selection.objectives, pick), uri)
        print(f"registered trial {target.trial} as {args.register} version {version}"
              + (f" (alias {', '.join('@' + a for a in aliases)})" if aliases else ""))
    print(load_hint(uri, f"models:/{args.register}@{aliases[0]}" if aliases else f"models:/{args.register}/{version}"))


def load_hint(uri: str, model_uri: str) -> str:
    """How to summarize with a registered version: MLflow alone loads it (`shrinktune.pick.model`)."""
    return (f"  load it: MLFLOW_TRACKING_URI={uri} python -c \"import mlflow; print(mlflow.pyfunc.load_model("
            f"'{model_uri}').predict(['some document'], params={{'aspect': 'approach'}}))\"")


def build_parser(prog: str = "python -m platform.pareto") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Show, tag, register and export the Pareto-optimal trials of a finished search.")
    parser.add_argument("experiment", help="MLflow experiment: the search space's name (e.g. summarization)")
    parser.add_argument("--objectives", default=None,
                        help="metric:min|max list, e.g. rouge1:max,latency_ms:min (default: the search's own)")
    parser.add_argument("--constraint", action="append", default=[],
                        help='a rule each trial must meet, e.g. "rouge1>=0.2", "latency_ms<=300", '
                        '"rouge1>=0.98*teacher"; repeatable')
    parser.add_argument("--tracking-uri", default=None, help="MLflow store (default: $MLFLOW_TRACKING_URI, else "
                        "sqlite:///<$SHRINKTUNE_HOME or the cwd>/mlflow.db)")
    parser.add_argument("--search", default=None, help="a search run's name or id (default: the latest search with a "
                        "finished trial)")
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
    parser.add_argument("--no-tag", action="store_true", help=f"leave the runs' {PARETO_TAG} tags as they are")
    return parser


def main(argv: list[str] | None = None, prog: str = "python -m platform.pareto") -> int:
    """`python -m platform.pareto EXPERIMENT [flags]` (`shrinktune pareto ...` passes its own `prog`); expected
    problems: one line on stderr, exit code 2."""
    args = build_parser(prog).parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    logging.getLogger("shrinktune").setLevel(logging.INFO)
    try:
        return pick_command(args)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
