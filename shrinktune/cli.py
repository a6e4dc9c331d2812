"""The command line: `shrinktune search ...` (also `python -m platform.search ...` from the repository root).

Parses flags, builds the search from its space file, runs it and prints what people read: progress, the Pareto
table and the command that opens the MLflow UI. Expected problems end with one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
from pathlib import Path

from shrinktune.errors import UserError
from shrinktune.search.cluster import check_job_server, job_server_url, submitted_working_dir

logger = logging.getLogger("shrinktune")


def _search_parser(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
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
                        help="GPUs per trial, fractions allowed (default: 1 if the cluster has GPUs)")
    parser.add_argument("--sampler", choices=("tpe", "nsga2", "random"), default=None,
                        help="Optuna sampler (overrides the space file)")
    parser.add_argument("--name", default=None, help="name of this search's run (default: <space>-<timestamp>)")
    parser.add_argument("--retries", type=int, default=None,
                        help="extra attempts for a failed trial before it is recorded as failed "
                        "(default: the space's, else 0)")
    parser.add_argument("--resume", default=None, metavar="NAME",
                        help="continue the interrupted search NAME (a folder of the storage path), with the same space")
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


def _fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _interval(m: dict, key: str = "rouge1") -> str:
    """`.257 [.241, .272]`: a mean and its 95 % interval, when the trial has one."""
    if m.get(key) is None:
        return "-"
    if m.get(f"{key}_low") is None:
        return f"{m[key]:.3f}"
    return f"{m[key]:.3f} [{m[f'{key}_low']:.3f}, {m[f'{key}_high']:.3f}]"


def _speedup(m: dict) -> str:
    """`1.62x (1.58-1.66)`: the median speed-up and its interquartile range over the timed rounds."""
    if m.get("speedup") is None:
        return "-"
    if m.get("speedup_q25") is None:
        return f"{m['speedup']:.2f}x"
    return f"{m['speedup']:.2f}x ({m['speedup_q25']:.2f}-{m['speedup_q75']:.2f})"


def format_front(outcome) -> str:
    """The Pareto table: one line per non-dominated trial, the teacher first for reference; then the trials kept
    off the front as degenerate, and the members whose quality is not told apart from a cheaper member's."""
    ref = outcome.reference
    header = ["trial", "latent", "layers", "lr", "epochs", "R-1 [95 % interval]", "R-2", "speed-up (IQR)",
              "ms/summary", "train MB", "mem ratio", "ΔR-1", "note", "checkpoint"]
    rows = [["teacher", "-", "-", "-", "-", _interval(ref), _fmt(ref.get("rouge2"), ".3f"), "1.00x",
             _fmt(ref.get("latency_ms"), ".1f"), _fmt(ref.get("train_peak_mb"), ".0f"), "1.00", "-", "-",
             "(reference)"]]
    finished = outcome.finished
    for index in sorted(outcome.front, key=lambda i: -finished[i].metrics.get("rouge1", 0)):
        row = finished[index]
        m, c = row.metrics, row.config
        flag = outcome.indistinct.get(row.trial_id)
        note = f"≈ {flag.cheaper}" if flag else ""
        if m.get("latency_converged") == 0:
            note = (note + " " if note else "") + f"±{m.get('latency_precision_pct', 0):.0f} % time"
        rows.append([
            row.trial_id, str(c.get("latent_dim", "-")), str(c.get("decoder_layers", "-")),
            _fmt(c.get("learning_rate"), ".1e"), str(c.get("epochs", "-")), _interval(m), _fmt(m.get("rouge2"), ".3f"),
            _speedup(m), _fmt(m.get("latency_ms"), ".1f"), _fmt(m.get("train_peak_mb"), ".0f"),
            _fmt(m.get("train_memory_ratio"), ".2f"),
            _fmt(100 * m["rouge1_change"], "+.1f") + "%" if "rouge1_change" in m else "-", note or "-",
            row.checkpoint or "-",
        ])
    widths = [max(len(r[i]) for r in [header] + rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip() for r in [header] + rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines.append("")
    if outcome.rechecked:
        lines.append(f"Re-checked on {outcome.rechecked} validation pairs: R-1 with its 95 % interval (papers "
                     "resampled); speed-up at each model's summary length, median and IQR of rounds interleaved "
                     "with the teacher. In-search figures are in MLflow as search_*.")
    for trial_id, flag in outcome.indistinct.items():
        lines.append(f"≈ {trial_id}: R-1 not told apart from the cheaper {flag.cheaper} (difference "
                     f"{flag.difference:+.3f}, 95 % interval {flag.low:+.3f} to {flag.high:+.3f}): no real trade-off.")
    if outcome.degenerate:
        listed = ", ".join(f"{finished[i].trial_id} (R-1 {finished[i].metrics.get('rouge1', 0):.3f})"
                           for i in outcome.degenerate)
        lines.append(f"Kept off the front as degenerate (R-1 below {outcome.quality_floor:g} x the teacher's; "
                     f"search.quality_floor: 0 keeps them): {listed}.")
    return "\n".join(lines).rstrip()


def run_search_command(args) -> int:
    # Lazy: `--help` and `submit` should not wait for Ray, torch, transformers and MLflow to import.
    from shrinktune.search.plan import RunOptions, prepare_search
    from shrinktune.search.runner import run_search
    from shrinktune.tracking.mlflow_tracking import default_tracking_uri, ui_command
    from shrinktune.training.cache import cache_root

    home = output_home()
    options = RunOptions(
        tracking_uri=args.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri(home),
        storage_path=str(Path(args.storage or home / "shrinktune_runs").expanduser().resolve()),
        cache_root=str(Path(args.cache_dir).expanduser().resolve() if args.cache_dir else cache_root()),
        address=args.address, trials=args.trials, max_concurrent=args.max_concurrent,
        cpus_per_trial=args.cpus_per_trial, gpus_per_trial=args.gpus_per_trial, sampler=args.sampler, name=args.name,
        retries=args.retries, resume=args.resume,
    )
    plan = prepare_search(args.space, options)  # every check, before anything runs or is printed
    space = plan.space
    logger.info("search space %s: task %s, teacher %s, %d dimension(s); MLflow %s",
                space.path, space.task, space.teacher, len(space.dimensions), options.tracking_uri)
    outcome = run_search(plan)
    if outcome.interrupted:
        print(f"\nsearch {outcome.name} interrupted: {len(outcome.rows)} trial(s) ended, in MLflow and under "
              f"{options.storage_path}. Continue it (with the same --storage and --tracking-uri, if given) with:\n"
              f"  python -m platform.search {args.space} --resume {outcome.name}", file=sys.stderr)
        return 130
    failed = len(outcome.rows) - len(outcome.finished)
    print(f"\nPareto front of {outcome.name}: {len(outcome.front)} of {len(outcome.finished)} finished trial(s)"
          f"{f', {failed} failed' if failed else ''}; objectives "
          + ", ".join(f"{k} ({'higher' if v == 'max' else 'lower'} is better)" for k, v in outcome.objectives.items()))
    print(format_front(outcome))
    if failed:
        print("\nFailed trials (reasons also in MLflow, tag shrinktune.error):")
        for row in outcome.rows:
            if row.error:
                print(f"  {row.trial_id}: {row.error}")
    print(f"\nMLflow: experiment {space.name!r}, search run {outcome.parent_run_id}. Open the UI with:\n  "
          f"{ui_command(outcome.tracking_uri)}")
    print(f"Pick, register and export a checkpoint:\n  python -m platform.pareto {space.name} --tracking-uri "
          f"{outcome.tracking_uri} --pick fastest-within-2pct --register NAME --export DIR")
    print("Load a checkpoint: python -c \"from shrinktune import load_summarizer; "
          "print(load_summarizer('CHECKPOINT')('some document', aspect='approach'))\"")
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
    version = check_job_server(url)
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
    parser = argparse.ArgumentParser(
        prog="python -m platform.submit", description="Submit a search to a Ray cluster as a Ray job "
        "(checks the job server and the token first). Other arguments go to `python -m platform.search`.")
    parser.add_argument("--address", default=None,
                        help="job server, http://<head>:8265 (default: RAY_ADDRESS, else local)")
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

    task = get_task("summarization")
    train = load_task_splits(task, ("train",))["train"]
    path = export_embedded_teacher(task, train, path=Path(args.out or SHIPPED_TEACHER))
    print(f"wrote {path} ({path.stat().st_size / 2**20:.1f} MB)")
    return 0


def prepare_teacher_main(argv: list[str] | None = None) -> int:
    """`python -m platform.prepare_teacher [--out PATH]`."""
    parser = argparse.ArgumentParser(
        prog="python -m platform.prepare_teacher", description="Retrain the embedded teacher (about 7 minutes on 2 CPU "
        "cores) and write the int8 file the package ships.")
    parser.add_argument("--out", default=None, help="where to write it (default: the package's assets folder)")
    return _run(prepare_teacher_command, parser.parse_args(argv))


def search_main(argv: list[str] | None = None) -> int:
    """`python -m platform.search [SPACE] [flags]`."""
    parser = _search_parser(argparse.ArgumentParser(prog="python -m platform.search",
                                                    description="Search for compressed summarizers."))
    return _run(run_search_command, parser.parse_args(argv))


def main(argv: list[str] | None = None) -> int:
    """`shrinktune <command> ...` — the same commands as `python -m platform.<command>`, from anywhere."""
    parser = argparse.ArgumentParser(prog="shrinktune", description="Search for compressed summarizers.")
    commands = parser.add_subparsers(dest="command", required=True)
    _search_parser(commands.add_parser("search", help="run a search (python -m platform.search)"))
    commands.add_parser("submit", help="submit a search to a Ray cluster (python -m platform.submit)", add_help=False)
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["submit"]:
        return submit_main(argv[1:])
    args = parser.parse_args(argv)
    return _run({"search": run_search_command}[args.command], args)
