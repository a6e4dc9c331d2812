"""Search strategies at equal wall-clock time: the search's default strategy against random search (issue 21, goal 2).

Run from the repository root, on an otherwise idle 2-core machine:

    python bench/strategies.py --seeds 0,1,2 --minutes 30 --out bench/strategies.md
    python bench/strategies.py --smoke --out /tmp/strategies-smoke.md    # tiny random teacher, < 1 min; what CI runs

For each seed the two strategies run **side by side, one core each** (each a process pinned to its own core, one
torch thread): both see the same machine at the same time, so neither gains from a quieter stretch of it, and three
seeds take three budgets of wall-clock instead of six. Each strategy is an Optuna study in its own process (no Ray,
no MLflow) with the search's own pieces, on its own empty cache (it pays for its encodings, autoencoders and
latency measurements as a first search does); its clock starts once its teacher is prepared and measured:

- **default**: what `python -m platform.search <space>` does with `search.trials: --trials` and
  `search.time_budget_s: --minutes` (a study ends at whichever comes first): the space's sampler (`make_sampler`)
  with the search's start-up rule (`search.random_trials`), the space's enqueued configurations first, and the cost
  pre-screen (`search.prescreen`: a draw whose untrained costs a trained student dominates at `prescreen_ceiling` ×
  the teacher's quality is told to Optuna as pruned before it trains, as `CostPreScreen` does).
- **random**: Optuna's `RandomSampler` with the same seed over the same space; no enqueued configurations, no
  pre-screen.

No trial starts after the budget; one still training at the budget is stopped at its next epoch. The hypervolume at
time t (`shrinktune.front.hypervolume`, each objective divided by the run's own teacher, measured at its one thread)
covers the trials that *finished* by t, leaving out, as the search's front does, students under the space's quality
floor (`search.quality_floor` × the teacher's ROUGE-1). Each run's trials are written to a JSON file as they finish
(`--keep DIR` keeps them); `--report FILE ...` re-writes the table from such files.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import types
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing it

import optuna  # noqa: E402
import torch  # noqa: E402

from bench.compression import machine_lines  # noqa: E402
from bench.parts import fail  # noqa: E402
from bench.search import FailedTrial, _list, load_run, mean_std, seed_everything, trial_config  # noqa: E402
from bench.search import Settings as SearchBenchSettings  # noqa: E402
from shrinktune.errors import ConfigError, UserError  # noqa: E402
from shrinktune.front import hypervolume, pareto_front  # noqa: E402
from shrinktune.search.pareto import below_floor  # noqa: E402
from shrinktune.search.prescreen import screen  # noqa: E402
from shrinktune.search.samplers import make_sampler  # noqa: E402
from shrinktune.search.space import constraint_names, constraint_violations, is_feasible  # noqa: E402
from shrinktune.search.trial import quiet_libraries, run_configuration  # noqa: E402

STRATEGIES = ("default", "random")
KEPT = ("rouge1", "rouge2", "latency_ms", "train_peak_mb", "speedup", "speedup_fixed", "params_decoder",
        "tokens_per_summary")  # what each trial's record keeps of its metrics (the objectives are added)


class Screened(Exception):
    """The cost pre-screen stopped the draw before it trained."""


class OutOfTime(Exception):
    """The budget ran out while the trial trained."""


def run_strategy(strategy: str, seed: int, budget_s: float, trials: int, space_name: str | None, threads: int,
                 smoke: bool, out: Path) -> None:
    """One strategy × seed: an Optuna study under a wall-clock budget, its trials written to `out` as they end."""
    torch.set_num_threads(threads)
    quiet_libraries()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    seed_everything(0)
    with tempfile.TemporaryDirectory(prefix=f"strategies-{strategy}-{seed}-") as scratch:
        settings = SearchBenchSettings(parts=("samplers",), space=space_name or "summarization", threads=threads,
                                       smoke=smoke)
        started = time.perf_counter()
        run = load_run(settings, Path(scratch) / "cache", Path(scratch))
        setup_s = time.perf_counter() - started
        space, ctx = run.space, run.ctx
        search = replace(space.search, trials=trials, time_budget_s=budget_s)
        default = strategy == "default"
        sampler = (make_sampler(space.search.sampler, seed, startup_trials=search.random_trials) if default
                   else optuna.samplers.RandomSampler(seed=seed))
        directions = ["maximize" if d == "max" else "minimize" for d in space.objectives.values()]
        study = optuna.create_study(directions=directions, sampler=sampler)
        if default:
            for point in space.enqueue:
                study.enqueue_trial(space.sampler_point(point))
        record = {
            "strategy": strategy, "seed": seed, "budget_s": budget_s, "threads": threads, "setup_s": setup_s,
            "space": str(space.path), "sampler": space.search.sampler if default else "random",
            "startup_trials": search.random_trials if default else None,
            "enqueued": len(space.enqueue) if default else 0,
            "prescreen_ceiling": space.search.prescreen_ceiling if default and space.search.prescreen else None,
            "quality_floor": space.search.quality_floor, "objectives": dict(space.objectives),
            "constraints": dict(space.constraints),
            "reference": {k: v for k, v in ctx.reference.items() if isinstance(v, int | float)},
            "machine": machine_lines(types.SimpleNamespace(device=torch.device("cpu"))), "trials": [],
        }
        trained: dict[str, dict] = {}  # trial number → metrics of the students trained so far (the pre-screen's)
        clock = time.perf_counter()

        def elapsed() -> float:
            return time.perf_counter() - clock

        def on_costs(costs: dict) -> None:
            if not record["prescreen_ceiling"]:
                return
            verdict = screen(costs, trained, space.objectives, space.constraints, ctx.reference,
                             record["prescreen_ceiling"])
            if verdict is not None:
                raise Screened(verdict.reason)

        def on_epoch(epoch: int, loss: float) -> None:
            if elapsed() > budget_s:
                raise OutOfTime(f"stopped after epoch {epoch + 1}")

        def objective(trial: optuna.Trial) -> tuple[float, ...]:
            config = trial_config(space.suggest(trial), space.defaults, None)
            entry = {"number": trial.number, "config": config, "start_s": elapsed()}
            try:
                with tempfile.TemporaryDirectory(dir=scratch) as checkpoint:
                    metrics = run_configuration(config, ctx, Path(checkpoint), on_epoch=on_epoch, on_costs=on_costs)
                entry["status"] = "complete"
            except Screened as why:
                entry.update(status="screened", why=str(why))
            except OutOfTime as why:
                entry.update(status="cut", why=str(why))
            except (ConfigError, FloatingPointError) as error:
                entry.update(status="failed", why=f"{type(error).__name__}: {error}")
            entry["end_s"] = elapsed()
            if entry["status"] == "complete":
                entry["metrics"] = {k: float(metrics[k]) for k in (*KEPT, *space.objectives) if k in metrics}
                trained[str(trial.number)] = metrics
            record["trials"].append(entry)
            out.write_text(json.dumps(record, indent=1))
            print(f"{strategy} seed {seed} trial {trial.number}: {entry['status']} at {entry['end_s']:.0f} s "
                  f"({entry['end_s'] - entry['start_s']:.0f} s)", flush=True)
            if entry["status"] == "screened" or entry["status"] == "cut":
                raise optuna.TrialPruned(entry["why"])  # as the search tells Optuna a draw stopped before training
            if entry["status"] == "failed":
                raise FailedTrial(entry["why"])
            for name, value in zip(constraint_names(space.constraints),
                                   constraint_violations(space.constraints, metrics)):
                trial.set_constraint(name, value)
            return tuple(float(metrics[m]) for m in space.objectives)

        study.optimize(objective, n_trials=trials, timeout=budget_s, catch=(FailedTrial,))
        record["wall_s"] = elapsed()
        out.write_text(json.dumps(record, indent=1))


# --- the report -----------------------------------------------------------------------------------------------------


def points_by(record: dict, t: float) -> list[dict]:
    """The metrics of the trials that finished by time `t`, feasible and above the quality floor."""
    return [entry["metrics"] for entry in record["trials"]
            if entry["status"] == "complete" and entry["end_s"] <= t
            and is_feasible(record.get("constraints", {}), entry["metrics"])
            and not below_floor(entry["metrics"], record["reference"], record["quality_floor"])]


def hypervolume_at(record: dict, t: float) -> float:
    return hypervolume(points_by(record, t), record["objectives"], record["reference"])


def together_at(records: list[dict], t: float) -> float:
    """The hypervolume of several runs' trials together (each scaled by its own run's teacher first): what the best
    of these students cover, a ceiling no strategy choosing among them could pass."""
    objectives = records[0]["objectives"]
    scaled = [{m: point[m] / record["reference"][m] for m in objectives}
              for record in records for point in points_by(record, t)]
    return hypervolume(scaled, objectives, dict.fromkeys(objectives, 1.0))


def describe(config: dict) -> str:
    keys = ("latent_dim", "decoder_layers", "encoder_layers", "learning_rate", "epochs")
    parts = [f"{k} {config[k]:.2g}" if isinstance(config.get(k), float) else f"{k} {config.get(k)}"
             for k in keys if config.get(k) is not None]
    return ", ".join(parts)


def report(records: list[dict], command: str) -> list[str]:
    by = {(r["strategy"], r["seed"]): r for r in records}
    seeds = sorted({r["seed"] for r in records})
    strategies = [s for s in STRATEGIES if any(r["strategy"] == s for r in records)]
    missing = [f"{s} seed {seed}" for s in strategies for seed in seeds if (s, seed) not in by]
    if missing:
        raise ConfigError(f"the report needs every strategy at every seed; missing: {', '.join(missing)}")
    budget = min(r["budget_s"] for r in records)
    first = records[0]
    times = [budget * k / 6 for k in range(1, 7)]
    lines = [
        "# Search strategies at equal wall-clock time: the default strategy against random search", "",
        f"Command: `{command}`", "",
        *first["machine"],
        f"- Space: {first['space']}; objectives "
        + ", ".join(f"{m} ({d})" for m, d in first["objectives"].items())
        + f"; {first['threads']} torch thread(s) per strategy, the two strategies of a seed side by side on one core "
        "each; each on its own empty cache, its clock started once its teacher was prepared and measured",
    ]
    default = by.get(("default", seeds[0]))
    if default:
        lines.append(f"- default: sampler {default['sampler']}, {default['startup_trials']} start-up trials "
                     f"({default['enqueued']} enqueued among them), cost pre-screen at "
                     f"{default['prescreen_ceiling']} × the teacher's quality; random: Optuna's RandomSampler, "
                     "nothing enqueued, no pre-screen")
    lines += [
        f"- Hypervolume: `shrinktune.front.hypervolume` of the trials finished by t, each objective divided by its "
        f"run's teacher; students under {first['quality_floor']:g} × the teacher's ROUGE-1 left out (the search's "
        "quality floor)", "",
        f"## Hypervolume after t minutes (mean ± std over seeds {', '.join(map(str, seeds))})", "",
        "| strategy | " + " | ".join(f"t={t / 60:.3g}" for t in times) + " |",
        "| --- " * (len(times) + 1) + "|",
    ]
    for strategy in strategies:
        cells = [mean_std([hypervolume_at(by[(strategy, seed)], t) for seed in seeds]) for t in times]
        lines.append(f"| {strategy} | " + " | ".join(cells) + " |")
    lines += ["", f"## Per seed, at {budget / 60:.3g} minutes", "",
              "| seed | strategy | hypervolume | trials finished | trained | screened | failed | cut at the budget "
              "| teacher latency ms | teacher R-1 |",
              "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for seed in seeds:
        for strategy in strategies:
            r = by[(strategy, seed)]
            counts = {s: sum(e["status"] == s for e in r["trials"]) for s in ("complete", "screened", "failed", "cut")}
            finished = sum(e["end_s"] <= budget for e in r["trials"])
            lines.append(f"| {seed} | {strategy} | {hypervolume_at(r, budget):.4f} | {finished} | {counts['complete']} "
                         f"| {counts['screened']} | {counts['failed']} | {counts['cut']} "
                         f"| {r['reference'].get('latency_ms', float('nan')):.0f} "
                         f"| {r['reference'].get('rouge1', float('nan')):.4f} |")
    if set(strategies) == set(STRATEGIES):
        ratios = [hypervolume_at(by[("default", s)], budget) / max(hypervolume_at(by[("random", s)], budget), 1e-12)
                  for s in seeds]
        means = {st: statistics.mean(hypervolume_at(by[(st, s)], budget) for s in seeds) for st in STRATEGIES}
        lines += ["", f"**Reading:** at {budget / 60:.3g} minutes the default strategy's mean hypervolume is "
                  f"{means['default'] / max(means['random'], 1e-12):.2f}x random search's "
                  f"({means['default']:.4f} vs {means['random']:.4f}); per seed "
                  + ", ".join(f"{r:.2f}x" for r in ratios) + "."]
        both = [together_at([by[(st, s)] for st in STRATEGIES], budget) for s in seeds]
        shares = {st: [hypervolume_at(by[(st, s)], budget) / max(b, 1e-12) for s, b in zip(seeds, both)]
                  for st in STRATEGIES}
        lines.append(f"Both strategies' students of a seed together cover {mean_std(both)} (per seed "
                     + ", ".join(f"{b:.4f}" for b in both) + "): the default reaches "
                     + ", ".join(f"{x:.0%}" for x in shares["default"]) + " of it, random "
                     + ", ".join(f"{x:.0%}" for x in shares["random"]) + " (a strategy that trained no better "
                     "student than these could not pass it).")
        enq = []
        for seed in seeds:
            r = by[("default", seed)]
            done = [e for e in r["trials"] if e["number"] < r["enqueued"]]
            if done and all(e["status"] == "complete" for e in done) and len(done) == r["enqueued"]:
                enq.append(hypervolume_at({**r, "trials": done}, budget))
        if enq:
            lines.append(f"The default strategy's enqueued configurations alone cover {mean_std(enq)} (so the rest "
                         "of its trials added the difference).")
    lines += ["", "## The fronts at the budget", "",
              "| seed | strategy | trial | configuration | R-1 / teacher | speed-up | train memory / teacher |",
              "| --- | --- | --- | --- | --- | --- | --- |"]
    for seed in seeds:
        for strategy in strategies:
            r = by[(strategy, seed)]
            done = [e for e in r["trials"] if e["status"] == "complete" and e["end_s"] <= budget
                    and not below_floor(e["metrics"], r["reference"], r["quality_floor"])]
            ref = r["reference"]
            for i in pareto_front([e["metrics"] for e in done], r["objectives"]):
                e, m = done[i], done[i]["metrics"]
                lines.append(f"| {seed} | {strategy} | {e['number']} | {describe(e['config'])} "
                             f"| {m['rouge1'] / ref['rouge1']:.3f} | {ref['latency_ms'] / m['latency_ms']:.2f}x "
                             f"| {m['train_peak_mb'] / ref['train_peak_mb']:.2f} |"
                             if {"rouge1", "latency_ms", "train_peak_mb"} <= set(m) and ref.get("rouge1") else
                             f"| {seed} | {strategy} | {e['number']} | {describe(e['config'])} | | | |")
    return lines


# --- driving the runs -----------------------------------------------------------------------------------------------


def pin(core: int) -> None:
    """Pins this process to one core (where the system allows it)."""
    if hasattr(os, "sched_setaffinity") and core < (os.cpu_count() or 1):
        os.sched_setaffinity(0, {core})


def run_pairs(args: argparse.Namespace, keep: Path) -> list[Path]:
    """Each seed's two strategies side by side, one process (and core) each; returns their record files."""
    files = []
    for seed in args.seeds:
        procs = []
        for core, strategy in enumerate(STRATEGIES):
            out = keep / f"{strategy}-{seed}.json"
            cmd = [sys.executable, __file__, "--one", strategy, "--seeds", str(seed), "--minutes", str(args.minutes),
                   "--trials", str(args.trials), "--threads", "1", "--record", str(out), "--core", str(core)]
            cmd += ["--smoke"] if args.smoke else ["--space", args.space or "summarization"]
            procs.append(subprocess.Popen(cmd, env={**os.environ, "OMP_NUM_THREADS": "1",
                                                    "TOKENIZERS_PARALLELISM": "false"}))
            files.append(out)
        codes = [p.wait() for p in procs]
        if any(codes):
            raise UserError(f"a strategy's run for seed {seed} failed (exit codes {codes}); its output says why")
    return files


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--space", default=None, help="search-space name or path (default summarization)")
    parser.add_argument("--seeds", type=_list(int), default=(0, 1, 2), help="sampler seeds (default 0,1,2)")
    parser.add_argument("--minutes", type=float, default=None, help="wall-clock budget per run (default 30)")
    parser.add_argument("--trials", type=int, default=None,
                        help="both studies' `search.trials`: each ends at this many trials (or at the budget), and "
                        "the default strategy's start-up trials follow from it by the search's rule (default 30)")
    parser.add_argument("--out", type=Path, default=None, help="results file (default bench/strategies.md)")
    parser.add_argument("--keep", type=Path, default=None, help="folder for the runs' JSON records (default: temp)")
    parser.add_argument("--report", type=Path, nargs="+", default=None, help="write the table from these records")
    parser.add_argument("--smoke", action="store_true", help="a tiny random teacher and a 20-second budget, for CI")
    parser.add_argument("--one", choices=STRATEGIES, default=None, help=argparse.SUPPRESS)  # one run (a child)
    parser.add_argument("--record", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--core", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.minutes = args.minutes or (1 / 3 if args.smoke else 30.0)
    args.trials = args.trials or (4 if args.smoke else 30)
    if args.minutes <= 0 or args.trials < 1 or not args.seeds or len(set(args.seeds)) != len(args.seeds):
        parser.error("--minutes must be > 0, --trials ≥ 1, --seeds distinct integers")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.one:
        if args.core is not None:
            pin(args.core)
        try:
            run_strategy(args.one, args.seeds[0], args.minutes * 60, args.trials, args.space, args.threads,
                         args.smoke, args.record)
        except UserError as error:
            fail(error)
        return
    command = ("python bench/strategies.py " + " ".join(sys.argv[1:] if argv is None else argv)).strip()
    out = args.out or (Path(tempfile.gettempdir()) / "strategies-smoke.md" if args.smoke
                       else Path("bench/strategies.md"))
    try:
        if args.report:
            files = args.report
        else:
            with tempfile.TemporaryDirectory(prefix="strategies-") as scratch:
                keep = args.keep or Path(scratch)
                keep.mkdir(parents=True, exist_ok=True)
                started = datetime.datetime.now(datetime.UTC)
                files = run_pairs(args, keep)
                records = [json.loads(f.read_text()) for f in files]
                lines = report(records, command)
                lines += ["", f"Started {started:%Y-%m-%d %H:%M} UTC, ended "
                          f"{datetime.datetime.now(datetime.UTC):%H:%M} UTC."]
                out.parent.mkdir(parents=True, exist_ok=True)
                out.write_text("\n".join(lines) + "\n")
                print(f"wrote {out}")
                return
        records = [json.loads(Path(f).read_text()) for f in files]
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text("\n".join(report(records, command)) + "\n")
    except UserError as error:
        fail(error)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
