"""The command line: `shrinktune search|pareto|submit ...` (also `python -m platform.<command> ...` from the
repository root).

Parses flags, builds the search from its space file, runs it and prints what people read: progress, the Pareto
table (`shrinktune.pick.table`, at most 120 characters wide), and the commands that open the MLflow UI and pick a
checkpoint, in the form that runs where the user is (`entry_command`). `shrinktune pareto` is the picker's own
command (`shrinktune.pick.cli`). Expected problems end with one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import NoReturn

from shrinktune.errors import UserError
from shrinktune.paths import check_writable_file
from shrinktune.search.cluster import check_job_server, job_server_url, submitted_working_dir
from shrinktune.settings import SAMPLERS

logger = logging.getLogger("shrinktune")
WIDTH = 120  # what the search prints fits a terminal this wide (`shrinktune.pick.table.WIDTH`)


class ArgumentParser(argparse.ArgumentParser):
    """argparse's parser, with a bad flag said in one line (and where `--help` is) rather than the whole usage."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {message}; see `{self.prog} --help`.\n")


def _search_parser(parser: ArgumentParser) -> ArgumentParser:
    parser.add_argument("space", nargs="?", default="summarization",
                        help="task / search-space name (search_spaces/<name>.yaml) or a path to a space file")
    parser.add_argument("--tracking-uri", default=None, help="MLflow store (default: $MLFLOW_TRACKING_URI, else "
                        "sqlite:///<home>/mlflow.db; home = $SHRINKTUNE_HOME, ~/shrinktune in a Ray job, else the cwd)")
    parser.add_argument("--storage", default=None,
                        help="Ray Tune results and checkpoints (default: <home>/shrinktune_runs; shared storage on "
                        "a cluster)")
    parser.add_argument("--cache-dir", default=None, help="cache for the teacher, encoder states and autoencoders "
                        "(default: $SHRINKTUNE_CACHE or ~/.cache/shrinktune)")
    parser.add_argument("--address", default=None,
                        help="Ray cluster to join (default: RAY_ADDRESS, a running local one, or a new one)")
    parser.add_argument("--trials", type=int, default=None, help="number of trials (overrides the space file)")
    parser.add_argument("--max-concurrent", type=int, default=None, help="trials at once (overrides the space file)")
    parser.add_argument("--cpus-per-trial", type=float, default=None,
                        help="CPUs per trial (default: all / concurrency)")
    parser.add_argument("--gpus-per-trial", type=float, default=None,
                        help="GPUs per trial, a fraction ≤ 1 or a whole number (default: all / concurrency, at most 1)")
    parser.add_argument("--sampler", choices=SAMPLERS, default=None,
                        help="Optuna sampler (overrides the space file)")
    parser.add_argument("--name", default=None, help="name of this search's run (default: <space>-<timestamp>)")
    parser.add_argument("--retries", type=int, default=None,
                        help="extra attempts for a failed trial before it is recorded as failed "
                        "(default: the space's, else 0)")
    parser.add_argument("--resume", default=None, metavar="NAME",
                        help="continue the interrupted search NAME (a folder of the storage path), with the same space")
    parser.add_argument("--verbose", action="store_true",
                        help="also show Ray Tune's own progress and result boxes")
    parser.add_argument("--listen-all", action="store_true",
                        help="let a local Ray started by the search listen on the network (default: loopback only)")
    return parser


def output_home() -> Path:
    """Where a search writes `mlflow.db` and `shrinktune_runs/` by default.

    `$SHRINKTUNE_HOME` if set; `~/shrinktune` when running as a Ray job with an uploaded working directory (that
    copy is temporary, so results written there would be lost); else the working directory.
    """
    if os.environ.get("SHRINKTUNE_HOME"):
        home = Path(os.environ["SHRINKTUNE_HOME"]).expanduser().resolve()
        try:
            home.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise UserError(f"SHRINKTUNE_HOME={home} cannot be created ({error.strerror}); point it at a writable "
                            "folder.") from None
        return home
    if submitted_working_dir():
        home = Path.home() / "shrinktune"
        home.mkdir(parents=True, exist_ok=True)
        return home
    return Path.cwd()


def entry_command(name: str) -> str:
    """How to run the entry point `name` (search, pareto, submit) from here: `python -m platform.<name>` in the
    repository root — the folder holding `platform/<name>.py` beside `shrinktune/`, where `platform` is the
    project's — and elsewhere the console script, `shrinktune <name>`."""
    here = Path.cwd()
    if (here / "platform" / f"{name}.py").is_file() and (here / "shrinktune").is_dir():
        return f"python -m platform.{name}"
    return f"shrinktune {name}"


def _note(outcome, row) -> str:
    """The table's note on a front member: `≈ T` (not told apart from the cheaper T), `±N % time`."""
    from shrinktune.pick.table import time_note

    flag = outcome.indistinct.get(row.trial_id)
    return " ".join(part for part in (f"≈ {flag.cheaper}" if flag else "", time_note(row.metrics)) if part)


def _wrapped(text: str) -> list[str]:
    return textwrap.wrap(text, WIDTH, break_long_words=False, break_on_hyphens=False)


def format_front(outcome, settings: list[str] | None = None) -> str:
    """The Pareto table (`shrinktune.pick.table`: the teacher first, then the front, best R-1 first), the members'
    checkpoints, and what the table leaves to words: the re-check, members not told apart from a cheaper one,
    timings that hit their cap, and the trials kept off the front as degenerate.

    `settings` are the columns of configuration: the space's dimensions (default: every setting the trials'
    configurations name, which are exactly those the sampler chose)."""
    from shrinktune.pick.table import METRIC_LABELS, Row, checkpoint_lines, pareto_table, setting_names, time_note

    finished = outcome.finished
    quality, kind = outcome.quality, outcome.kind
    label = METRIC_LABELS.get(quality, quality)
    members = [finished[i] for i in sorted(outcome.front, key=lambda i: -finished[i].metrics.get(quality, 0))]
    rows = [Row(r.trial_id, r.config, r.metrics, note=_note(outcome, r), checkpoint=r.checkpoint) for r in members]
    settings = setting_names([r.config for r in finished]) if settings is None else settings
    lines = [pareto_table(rows, outcome.reference, outcome.objectives, settings, kind=kind), "",
             *checkpoint_lines(rows)]
    if outcome.rechecked:
        lines += _wrapped(f"Re-checked on {outcome.rechecked} validation pairs: {label} (its 95 % interval resamples "
                          "documents) and speed-up (at each model's output length: median and IQR of rounds "
                          "interleaved with the teacher). In-search figures are in MLflow as search_*.")
    for trial_id, flag in outcome.indistinct.items():
        lines += _wrapped(f"≈ {trial_id}: {label} not told apart from the cheaper {flag.cheaper} (difference "
                          f"{flag.difference:+.3f}, 95 % interval {flag.low:+.3f} to {flag.high:+.3f}): no real "
                          "trade-off.")
    capped = [f"{r.trial_id} ({time_note(r.metrics)})" for r in members if time_note(r.metrics)]
    if capped:
        lines += _wrapped("Timing hit its cap before the speed-up was within its target (evaluation.latency_cap_s): "
                          + ", ".join(capped) + ".")
    if outcome.degenerate:
        listed = ", ".join(f"{finished[i].trial_id} ({label} {finished[i].metrics.get(quality, 0):.3f})"
                           for i in outcome.degenerate)
        lines += _wrapped(f"Kept off the front as degenerate ({label} below {outcome.quality_floor:g} x the "
                          f"teacher's; search.quality_floor: 0 keeps them): {listed}.")
    return "\n".join(lines).rstrip()


def suggested_pick(outcome) -> str:
    """A `--pick` that exists on this search's front: `fastest-within-2pct`, or the smallest whole-percent
    tolerance above 2 that admits a front member, else `best-rouge`."""
    from shrinktune.pick.rules import suggest_pick

    return suggest_pick([outcome.finished[i].metrics for i in outcome.front], outcome.reference)


def next_steps(outcome, experiment: str, runs_url: str | None = None, aspects: tuple[str, ...] = ("approach",)) -> str:
    """What the search prints after its table: the MLflow UI command and the address of this search's runs table
    (MLflow 3 otherwise opens its GenAI views), a pick command that works on this front, in the form that runs from
    the working directory (`entry_command`), and how to load a checkpoint."""
    from shrinktune.tracking.mlflow_tracking import ui_command

    return "\n".join([
        f"MLflow: experiment {experiment!r}, search run {outcome.parent_run_id}. Open the UI with:",
        f"  {ui_command(outcome.tracking_uri)}",
        *([f"then the runs table of this search: {runs_url}"] if runs_url else []),
        "Pick, register and export a checkpoint:",
        f"  {entry_command('pareto')} {experiment} --tracking-uri {outcome.tracking_uri} --pick "
        f"{suggested_pick(outcome)} --register NAME --export DIR",
        "Load a checkpoint: python -c \"from shrinktune import load_summarizer; "
        f"print(load_summarizer('CHECKPOINT')('some document'{f', aspect={aspects[-1]!r}' if aspects else ''}))\"",
    ])


def resume_hint(outcome, space: str, storage: str) -> str:
    """What an interrupted search prints: where its trials are and the command that continues it."""
    return (f"search {outcome.name} interrupted: {len(outcome.rows)} trial(s) ended, in MLflow and under {storage}. "
            "Continue it (with the same --storage and --tracking-uri, if given) with:\n"
            f"  {entry_command('search')} {space} --resume {outcome.name}")


def _run_options(args):
    """The search's `RunOptions` from its flags, with the defaults that depend on where it runs."""
    from shrinktune.search.plan import RunOptions
    from shrinktune.tracking.mlflow_tracking import default_tracking_uri
    from shrinktune.training.cache import cache_root

    home = output_home()
    return RunOptions(
        tracking_uri=args.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri(home),
        storage_path=str(Path(args.storage or home / "shrinktune_runs").expanduser().resolve()),
        cache_root=str(Path(args.cache_dir).expanduser().resolve() if args.cache_dir else cache_root()),
        address=args.address, trials=args.trials, max_concurrent=args.max_concurrent,
        cpus_per_trial=args.cpus_per_trial, gpus_per_trial=args.gpus_per_trial, sampler=args.sampler, name=args.name,
        retries=args.retries, resume=args.resume, verbose=args.verbose, listen_all=args.listen_all,
    )


def run_search_command(args) -> int:
    # Lazy: `--help` and `submit` should not wait for Ray, torch, transformers and MLflow to import.
    from shrinktune.data.tasks import get_task, task_name
    from shrinktune.search.plan import prepare_search
    from shrinktune.search.runner import run_search

    options = _run_options(args)
    plan = prepare_search(args.space, options)  # every check, before anything runs or is printed
    space = plan.space
    logger.info("search space %s: task %s, teacher %s, %d dimension(s); MLflow %s",
                space.path, task_name(space.task), space.teacher, len(space.dimensions), options.tracking_uri)
    try:
        outcome = run_search(plan)
    except KeyboardInterrupt:  # before Tune ran (teacher preparation, measurement): Tune's own stops return
        print(f"\nsearch {plan.name} interrupted before its trials ended. Continue it (with the same --storage and "
              f"--tracking-uri, if given) with:\n  {entry_command('search')} {args.space} --resume {plan.name}",
              file=sys.stderr)
        return 130
    if outcome.interrupted:
        print("\n" + resume_hint(outcome, args.space, options.storage_path), file=sys.stderr)
        return 130
    failed, screened = len(outcome.failed), len(outcome.screened)
    print(f"\nPareto front of {outcome.name}: {len(outcome.front)} of {len(outcome.finished)} finished trial(s)"
          f"{f', {failed} failed' if failed else ''}"
          f"{f', {screened} stopped before training (cost pre-screen)' if screened else ''}; objectives "
          + ", ".join(f"{k} ({'higher' if v == 'max' else 'lower'} is better)" for k, v in outcome.objectives.items()))
    print(format_front(outcome, list(dict.fromkeys(d.name for d in space.dimensions))))
    if failed:
        print("\nFailed trials (reasons also in MLflow, tag shrinktune.error):")
        for row in outcome.rows:
            if row.error:
                print(f"  {row.trial_id}: {row.error}")
    print("\n" + next_steps(outcome, space.name, plan.tracker.runs_url(), get_task(space.task).aspects[1:2]))
    return 0


def _setup_logging() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    logging.getLogger("shrinktune").setLevel(logging.INFO)
    for noisy in ("absl",):
        logging.getLogger(noisy).setLevel(logging.ERROR)


def _run(handler, args) -> int:
    _setup_logging()
    try:
        return handler(args)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: finished trials are in MLflow and under the storage path.", file=sys.stderr)
        return 130


def submit_command(args, search_args: list[str]) -> int:
    """Checks the cluster, then hands the search to `ray job submit` with the project as the working directory."""
    url = job_server_url(args.address or os.environ.get("RAY_ADDRESS"))
    version = check_job_server(url, allow_http_token=args.allow_http_token)
    logger.info("Ray %s job server at %s: submitting the search", version, url)
    root = Path(__file__).resolve().parents[1]
    command = ["ray", "job", "submit", "--address", url, "--working-dir", str(root)]
    runtime_env = root / "jobs" / "runtime_env.yaml"
    if runtime_env.exists():
        command += ["--runtime-env", str(runtime_env)]
    command += ["--", "python", "-m", "platform.search", *search_args]
    return subprocess.call(command, cwd=root)


def submit_main(argv: list[str] | None = None) -> int:
    """`python -m platform.submit [--address URL] [SPACE] [search flags]`."""
    parser = ArgumentParser(
        prog="python -m platform.submit", description="Submit a search to a Ray cluster as a Ray job "
        "(checks the job server and the token first). Other arguments go to `python -m platform.search`.")
    parser.add_argument("--address", default=None,
                        help="job server, http://<head>:8265 (default: RAY_ADDRESS, else local)")
    parser.add_argument("--allow-http-token", action="store_true",
                        help="send the Ray token over plain http to a non-loopback job server (default: refused; "
                        "use an SSH tunnel to the head's 8265, or https)")
    args, rest = parser.parse_known_args(argv)
    _setup_logging()
    try:
        return submit_command(args, rest)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


def prepare_teacher_command(args) -> int:
    """Retrains the embedded teacher with the default recipe and rewrites the file the package ships."""
    # Lazy, as in run_search_command.
    from shrinktune.data.tasks import get_task, load_task_splits
    from shrinktune.training.teacher import SHIPPED_TEACHER, export_embedded_teacher

    path = Path(args.out or SHIPPED_TEACHER).expanduser().resolve()
    check_writable_file(path, "--out")  # before minutes of training
    task = get_task("summarization")
    train = load_task_splits(task, ("train",))["train"]
    path = export_embedded_teacher(task, train, path=path)
    print(f"wrote {path} ({path.stat().st_size / 2**20:.1f} MB)")
    return 0


def prepare_teacher_main(argv: list[str] | None = None) -> int:
    """`python -m platform.prepare_teacher [--out PATH]`."""
    parser = ArgumentParser(
        prog="python -m platform.prepare_teacher", description="Retrain the embedded teacher (about 7 minutes on 2 CPU "
        "cores) and write the int8 file the package ships.")
    parser.add_argument("--out", default=None, help="where to write it (default: the package's assets folder)")
    return _run(prepare_teacher_command, parser.parse_args(argv))


def ship_labels_command(args) -> int:
    from shrinktune.training.distill import SHIPPED_LABELS, ship_pseudo_labels  # lazy, as the commands' imports are

    written = ship_pseudo_labels(Path(args.cache_dir), Path(args.out) if args.out else None)
    for key, rows in written.items():
        print(f"{key}: {rows} pseudo-labels")
    print(f"wrote {args.out or SHIPPED_LABELS}")
    return 0


def ship_labels_main(argv: list[str] | None = None) -> int:
    """`python -m platform.ship_labels CACHE_DIR [--out PATH]`."""
    parser = ArgumentParser(
        prog="python -m platform.ship_labels", description="Write the embedded teacher's pseudo-labels cached by a "
        "search (its --cache-dir) to the file the package ships, so that first runs unpack them.")
    parser.add_argument("cache_dir", help="the search's cache folder (holds pseudo-labels/)")
    parser.add_argument("--out", default=None, help="where to write it (default: the package's assets folder)")
    return _run(ship_labels_command, parser.parse_args(argv))


def search_main(argv: list[str] | None = None) -> int:
    """`python -m platform.search [SPACE] [flags]`."""
    parser = _search_parser(ArgumentParser(prog="python -m platform.search",
                                                    description="Search for compressed summarizers."))
    return _run(run_search_command, parser.parse_args(argv))


def main(argv: list[str] | None = None) -> int:
    """`shrinktune <command> ...` — the same commands as `python -m platform.<command>`, from anywhere."""
    parser = ArgumentParser(prog="shrinktune", description="Search for compressed summarizers.")
    commands = parser.add_subparsers(dest="command", required=True)
    _search_parser(commands.add_parser("search", help="run a search (python -m platform.search)"))
    commands.add_parser("pareto", help="show, pick, register and export from a finished search "
                        "(python -m platform.pareto)", add_help=False)
    commands.add_parser("submit", help="submit a search to a Ray cluster (python -m platform.submit)", add_help=False)
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["submit"]:
        return submit_main(argv[1:])
    if argv[:1] == ["pareto"]:
        from shrinktune.pick.cli import main as pareto_main  # lazy, as the commands' own imports are

        return pareto_main(argv[1:], prog="shrinktune pareto")
    args = parser.parse_args(argv)
    return _run({"search": run_search_command}[args.command], args)
