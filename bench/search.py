"""Search bench: how fast each sampler covers the frontier, and what trials save by sharing their caches.

Run from the repository root, on a quiet machine (trials are timed, and latency is an objective):

    python bench/search.py --out bench/search.md
    python bench/search.py --parts samplers --trials 16 --seeds 0,1 --eval-samples 15 --epochs-cap 1
    python bench/search.py --smoke --out /tmp/search-smoke.md     # tiny random teacher, < 1 min; what CI runs

Two parts, on one search space (default: the embedded one, `search_spaces/summarization.yaml`):

- samplers: for each sampler × seed, an Optuna study run in this process (no Ray) with the search's own pieces:
  `make_sampler(name, seed)`, the space's define-by-run `suggest`, its enqueued configurations first, and
  `run_configuration` as the objective. The hypervolume after k trials (`running_hypervolume`, normalised by the
  teacher) is reported as mean ± std over the seeds. A configuration met before in this run — in any study — is
  not trained again: training is seeded and deterministic, so its metrics are re-used, its measured latency and
  memory included (they are the first measurement's, not a new one). The seeds are the samplers'; every trial
  trains with the space's seed.
- shared: the same three trials (one autoencoder width; the third learns from pseudo-labels) run (a) on one shared
  cache root, as a search runs them — the first trial encodes the training documents and fits the autoencoder,
  the others reuse them — and (b) each on its own empty cache root. The teacher is prepared once beforehand for
  both (it is shared by design, and shipped).

`--eval-samples` (validation pairs scored) and `--epochs-cap` (most fine-tuning epochs) make trials cheaper; the
results file says when they were used. Imports torch, transformers, optuna and shrinktune (no Ray runtime, no
MLflow); seeded; `--threads` torch threads (default 2; the smoke's toy models run faster on 1).
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import statistics
import sys
import tempfile
import time
import types
from dataclasses import dataclass, field, replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing it

import numpy as np  # noqa: E402
import optuna  # noqa: E402
import torch  # noqa: E402

from bench.compression import machine_lines  # noqa: E402
from bench.parts import fail, run_parts  # noqa: E402
from shrinktune.errors import ConfigError, UserError  # noqa: E402
from shrinktune.front import running_hypervolume  # noqa: E402
from shrinktune.search.plan import teacher_shape  # noqa: E402
from shrinktune.search.samplers import make_sampler  # noqa: E402
from shrinktune.search.space import (  # noqa: E402
    SearchSpace,
    constraint_names,
    constraint_violations,
    is_feasible,
    resolve_space_path,
)
from shrinktune.search.trial import (  # noqa: E402
    TrialContext,
    prepare_reference,
    quiet_libraries,
    run_configuration,
)
from shrinktune.settings import SAMPLERS, TrialSettings, as_params  # noqa: E402
from shrinktune.training.cache import cache_root  # noqa: E402

PARTS = ("samplers", "shared")


@dataclass(frozen=True)
class Settings:
    """One run of the bench; the defaults are the full run, `smoke_sizes()` the CI one."""

    parts: tuple[str, ...] = PARTS  # which parts run, in this order
    space: str = "summarization"  # search-space name (search_spaces/<name>.yaml) or path
    trials: int = 8  # trials per study, enqueued ones included
    seeds: tuple[int, ...] = (0, 1, 2)  # sampler seeds: one study per sampler and seed
    samplers: tuple[str, ...] = SAMPLERS  # samplers compared, in this order
    eval_samples: int | None = None  # validation pairs scored per trial (None: the space's)
    epochs_cap: int | None = None  # most fine-tuning epochs of any trial (None: as sampled)
    threads: int = 2  # torch CPU threads
    smoke: bool = False  # tiny random teacher and a tiny space, written to a temp folder

    def __post_init__(self):
        unknown = [p for p in self.parts if p not in PARTS]
        if unknown or not self.parts:
            raise ConfigError(f"--parts takes a comma-separated subset of {','.join(PARTS)}, got {self.parts}; "
                              "e.g. --parts samplers.")
        unknown = [s for s in self.samplers if s not in SAMPLERS]
        if unknown or not self.samplers or len(set(self.samplers)) != len(self.samplers):
            raise ConfigError(f"--samplers takes distinct names among {','.join(SAMPLERS)}, got {self.samplers}; "
                              "e.g. --samplers tpe,random.")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ConfigError(f"--seeds takes distinct integers, got {self.seeds}; e.g. --seeds 0,1,2.")
        for name in ("trials", "threads", "eval_samples", "epochs_cap"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be ≥ 1, got {value}; raise it.")

    @classmethod
    def smoke_sizes(cls, **overrides) -> Settings:
        """Both parts on a 2-layer, 32-wide random teacher: 3 trials per study, 2 seeds, 2 validation pairs."""
        return cls(**{**dict(smoke=True, trials=3, seeds=(0, 1), eval_samples=2, epochs_cap=1, threads=1), **overrides})


@dataclass
class Run:
    """What both parts share: the space, the trials' context (teacher prepared and measured), scratch space."""

    settings: Settings
    space: SearchSpace
    ctx: TrialContext  # teacher_dir prepared, reference measured, overrides applied
    shape: tuple[int, int, int]  # the teacher's (encoder width, decoder depth, encoder depth)
    scratch: Path  # temporary folder for checkpoints and the shared part's cache roots


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


SMOKE_TASK = "smoke-summarization"


def smoke_task(folder: Path) -> str:
    """Registers, for this process, a task of the first 32 ACLSum training and 4 validation pairs (64 source and
    32 target tokens), saved as a local dataset: the smoke's trials then train in seconds."""
    import datasets

    from shrinktune.data.aclsum import load_aclsum
    from shrinktune.data.tasks import TASKS, Task

    datasets.disable_progress_bars()
    splits = {"train": load_aclsum("train")[:32], "validation": load_aclsum("validation")[:4]}
    datasets.DatasetDict({
        split: datasets.Dataset.from_dict({"document": [e.source for e in rows], "summary": [e.summary for e in rows]})
        for split, rows in splits.items()
    }).save_to_disk(str(folder / "smoke-data"))
    TASKS[SMOKE_TASK] = Task(name=SMOKE_TASK, description="32 ACLSum pairs (bench smoke)",
                             dataset=str(folder / "smoke-data"), max_source_tokens=64, max_target_tokens=32)
    return SMOKE_TASK


def smoke_space(folder: Path) -> Path:
    """A tiny random bert2bert and a tiny task saved in `folder`, and a space file over them. Its objectives are
    costs only: a random teacher scores ROUGE 0, and the hypervolume divides each objective by the teacher's."""
    from transformers import AutoTokenizer

    from shrinktune.models.teacher import minilm_path
    from tests.conftest import make_tiny_bert2bert

    tokenizer = AutoTokenizer.from_pretrained(minilm_path())
    teacher_dir = folder / "tiny-teacher"
    make_tiny_bert2bert(tokenizer, width=32, layers=2, seed=0).save_pretrained(teacher_dir)
    tokenizer.save_pretrained(teacher_dir)
    path = folder / "smoke.yaml"
    path.write_text(f"""# Run: python bench/search.py --smoke (written by it, in a temp folder)
task: {smoke_task(folder)}
teacher: {teacher_dir}
objectives: {{latency_ms: min, params_decoder: min, train_peak_mb: min}}
search: {{sampler: tpe, trials: 3, seed: 0, enqueue_teacher: false,
         enqueue: [{{latent_dim: 16, decoder_layers: 1, learning_rate: 1.0e-3, epochs: 1}}]}}
evaluation: {{samples: 2, latency_samples: 1, latency_repeats: 1, latency_batch_size: 1, fixed_new_tokens: 4}}
generation: {{num_beams: 1, max_new_tokens: 8, no_repeat_ngram_size: 0}}
fixed: {{batch_size: 16, ae_epochs: 1, decoder_ffn: scaled}}
dimensions:
  latent_dim: {{type: categorical, choices: [8, 16, 32]}}
  decoder_layers: {{type: int, low: 1, high: 2}}
  learning_rate: {{type: float, low: 2.0e-4, high: 3.0e-3, log: true}}
  epochs: {{type: int, low: 1, high: 2}}
""")
    return path


def load_run(settings: Settings, cache: Path, scratch: Path) -> Run:
    """Loads the space against its teacher's shape, builds the trials' context as the runner does, and prepares and
    measures the teacher (`prepare_reference`)."""
    path = smoke_space(scratch) if settings.smoke else resolve_space_path(settings.space)
    space = SearchSpace.load(path, shape_of=teacher_shape)
    shape = teacher_shape(space.teacher)
    ctx = TrialContext(  # as shrinktune.search.plan.SearchPlan.context builds it
        task=space.task, teacher_dir=space.teacher, cache_root=str(cache), generation=space.generation,
        evaluation=replace(space.evaluation, samples=settings.eval_samples or space.evaluation.samples),
        defaults=space.defaults, threads=settings.threads, seed=space.search.seed,
    )
    teacher_dir, reference = prepare_reference(ctx)
    return Run(settings, space, replace(ctx, teacher_dir=teacher_dir, reference=reference), shape, scratch)


def trial_config(chosen: dict, defaults: TrialSettings, epochs_cap: int | None) -> dict:
    """The whole configuration a trial trains (`run_configuration` merges the same way), epochs capped."""
    config = as_params(replace(defaults, **chosen))
    if epochs_cap is not None:
        config["epochs"] = min(config["epochs"], epochs_cap)
    return config


# --- samplers: hypervolume after k trials -------------------------------------------------------------------------


class FailedTrial(Exception):
    """A trial that `run_configuration` could not finish (impossible configuration, non-finite metrics)."""


@dataclass
class Study:
    """One sampler × seed: its trials in order."""

    sampler: str
    seed: int
    keys: list[str] = field(default_factory=list)  # each trial's configuration, as its memo key
    metrics: list[dict] = field(default_factory=list)  # each trial's metrics ({} when it failed)
    seconds: list[float] = field(default_factory=list)  # each trial's wall time (≈ 0 when served from the memo)
    from_memo: list[bool] = field(default_factory=list)  # whether each trial's result was re-used
    failed: int = 0  # trials that raised (recorded as failed, as the search does)
    hypervolume: list[float] = field(default_factory=list)  # after each trial


def run_study(run: Run, sampler: str, seed: int, memo: dict) -> Study:
    """One Optuna study, as the search drives it: enqueued configurations first, then the sampler's."""
    space, study = run.space, Study(sampler, seed)
    directions = ["maximize" if d == "max" else "minimize" for d in space.objectives.values()]
    startup = replace(space.search, trials=run.settings.trials).random_trials  # the search's own start-up rule
    optuna_study = optuna.create_study(directions=directions,
                                       sampler=make_sampler(sampler, seed, startup_trials=startup))
    for point in space.enqueue:
        optuna_study.enqueue_trial(space.sampler_point(point))

    def objective(trial: optuna.Trial) -> tuple[float, ...]:
        config = trial_config(space.suggest(trial), space.defaults, run.settings.epochs_cap)
        key = json.dumps(config, sort_keys=True, default=str)
        started = time.perf_counter()
        hit = key in memo
        if not hit:
            try:
                with tempfile.TemporaryDirectory(dir=run.scratch) as checkpoint:
                    memo[key] = run_configuration(config, run.ctx, Path(checkpoint))
            except (ConfigError, FloatingPointError) as error:
                memo[key] = f"{type(error).__name__}: {error}"
        outcome = memo[key]
        missing = [m for m in space.objectives if not isinstance(outcome, dict) or outcome.get(m) is None]
        study.keys.append(key)
        study.seconds.append(time.perf_counter() - started)
        study.from_memo.append(hit)
        study.metrics.append(outcome if not missing else {})
        seconds = "from the memo" if hit else f"{study.seconds[-1]:.0f} s"
        print(f"  {sampler} seed {seed} trial {len(study.keys)}: {seconds}", flush=True)
        if missing:
            study.failed += 1
            raise FailedTrial(outcome if isinstance(outcome, str) else f"no {', '.join(missing)} reported")
        for name, value in zip(constraint_names(space.constraints), constraint_violations(space.constraints, outcome)):
            trial.set_constraint(name, value)  # as ConstrainedOptunaSearch tells the sampler
        return tuple(float(outcome[m]) for m in space.objectives)

    optuna_study.optimize(objective, n_trials=run.settings.trials, catch=(FailedTrial,))
    feasible = [m if m and is_feasible(space.constraints, m) else {} for m in study.metrics]
    study.hypervolume = running_hypervolume(feasible, dict(space.objectives), run.ctx.reference)
    return study


def run_samplers(run: Run) -> dict:
    memo: dict[str, dict | str] = {}  # configuration (json) → metrics, or why it failed
    studies = []
    for sampler in run.settings.samplers:
        for seed in run.settings.seeds:
            studies.append(run_study(run, sampler, seed, memo))
            print(f"{sampler} seed {seed}: hypervolume {studies[-1].hypervolume[-1]:.4f}", flush=True)
    return {"studies": studies, "trained": len(memo)}


def budgets(trials: int) -> list[int]:
    """k = 2, 4, ..., and the last trial."""
    ks = list(range(2, trials + 1, 2))
    return ks if ks and ks[-1] == trials else [*ks, trials]


def mean_std(values: list[float]) -> str:
    """`mean ± sample std`; the mean alone for one value."""
    if len(values) == 1:
        return f"{values[0]:.4f}"
    return f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f}"


def leading_same(a: list[str], b: list[str]) -> int:
    """How many first trials of two studies chose the same configurations."""
    count = 0
    for x, y in zip(a, b):
        if x != y:
            break
        count += 1
    return count


def samplers_section(result: dict, run: Run) -> list[str]:
    s, studies = run.settings, result["studies"]
    by = {(st.sampler, st.seed): st for st in studies}
    ks = budgets(s.trials)
    seeds = ", ".join(map(str, s.seeds))
    lines = [
        f"## samplers: hypervolume after k trials (mean ± std over seeds {seeds})", "",
        f"One Optuna study per sampler and seed, {s.trials} trials each, the space's {len(run.space.enqueue)} "
        "enqueued configuration(s) first. Hypervolume of the trials so far, each objective divided by the "
        "teacher's (see `shrinktune.front`); std is the sample standard deviation over seeds.", "",
        "| sampler | " + " | ".join(f"k={k}" for k in ks) + " |",
        "| --- " * (len(ks) + 1) + "|",
    ]
    for sampler in s.samplers:
        cells = [mean_std([by[(sampler, seed)].hypervolume[k - 1] for seed in s.seeds]) for k in ks]
        lines.append(f"| {sampler} | " + " | ".join(cells) + " |")
    total_trials = sum(len(st.keys) for st in studies)
    hits = sum(sum(st.from_memo) for st in studies)
    lines += [
        "", "## samplers: final hypervolume per seed", "",
        "| sampler | " + " | ".join(f"seed {seed}" for seed in s.seeds) + " | trials | trained | memo hits | failed "
        "| wall s |",
        "| --- " * (len(s.seeds) + 6) + "|",
    ]
    for sampler in s.samplers:
        mine = [by[(sampler, seed)] for seed in s.seeds]
        n = sum(len(st.keys) for st in mine)
        memo = sum(sum(st.from_memo) for st in mine)
        lines.append(f"| {sampler} | " + " | ".join(f"{st.hypervolume[-1]:.4f}" for st in mine)
                     + f" | {n} | {n - memo} | {memo} | {sum(st.failed for st in mine)} "
                     f"| {sum(sum(st.seconds) for st in mine):.0f} |")
    lines += [
        "", f"{total_trials} trials in all, {result['trained']} distinct configurations trained, {hits} served from "
        "the memo: a configuration met before in this run, in any study, is not trained again (training is seeded "
        "and deterministic), so its metrics — measured latency and memory included — are the first measurement's. "
        "Samplers run in the order of the table, so the first pays for the configurations the others share; "
        "compare wall times with that in mind.",
    ]
    if "random" in s.samplers:
        for sampler in (x for x in s.samplers if x != "random"):
            same = min(leading_same(by[(sampler, seed)].keys, by[("random", seed)].keys) for seed in s.seeds)
            lines += ["", f"**Reading:** {sampler} chose the same configurations as random search, at the same seed, "
                      f"for its first {same} of {s.trials} trials at every seed."]
    startup = replace(run.space.search, trials=s.trials).random_trials
    lines += [
        "", f"Every sampler draws its first {startup} trials (enqueued ones included) at random — TPE's and the GP's "
        "`n_startup_trials`, NSGA-II's first generation — from the same seeded generator as random search "
        "(`search.startup_trials`; by default a quarter of the trials, 2 to 10): samplers can only differ beyond "
        "that.", "",
    ]
    return lines


# --- shared: one cache root for all trials vs one per trial --------------------------------------------------------


def shared_configs(width: int, depth: int, epochs: int) -> list[dict]:
    """Three trials with one bottleneck width (so one autoencoder) and different students; the third learns from
    the teacher's pseudo-labels."""
    latent, layers = width // 2, max(1, depth // 2)
    return [
        {"latent_dim": latent, "decoder_layers": layers, "learning_rate": 2e-3, "epochs": epochs, "method": "sft"},
        {"latent_dim": latent, "decoder_layers": 1, "learning_rate": 1e-3, "epochs": epochs, "method": "sft"},
        {"latent_dim": latent, "decoder_layers": layers, "learning_rate": 2e-3, "epochs": epochs,
         "method": "pseudo_labels"},
    ]


def cache_entries(root: Path) -> set[str]:
    """`kind/fingerprint` of every complete entry under a cache root."""
    if not root.is_dir():
        return set()
    return {f"{kind.name}/{entry.name}" for kind in root.iterdir() if kind.is_dir()
            for entry in kind.iterdir() if (entry / ".complete").exists()}


def run_shared(run: Run) -> dict:
    epochs = min(TrialSettings().epochs, run.settings.epochs_cap or TrialSettings().epochs)
    configs = shared_configs(run.shape[0], run.shape[1], epochs)
    rows = [{"config": config} for config in configs]
    shared_root = run.scratch / "shared-cache"
    for mode in ("shared", "separate"):
        for index, (row, config) in enumerate(zip(rows, configs)):
            root = shared_root if mode == "shared" else run.scratch / f"own-cache-{index}"
            before = cache_entries(root)
            started = time.perf_counter()
            with tempfile.TemporaryDirectory(dir=run.scratch) as checkpoint:
                metrics = run_configuration(config, replace(run.ctx, cache_root=str(root)), Path(checkpoint))
            seconds = time.perf_counter() - started
            made = sorted({entry.split("/")[0] for entry in cache_entries(root) - before})
            row[mode] = {"seconds": seconds, "made": made, "rouge": [metrics.get(k) for k in ("rouge1", "rouge2")]}
            print(f"  shared part, {mode} cache, trial {index + 1}: {seconds:.0f} s, computed {made or 'nothing'}",
                  flush=True)
            if mode == "separate":
                shutil.rmtree(root, ignore_errors=True)
    shutil.rmtree(shared_root, ignore_errors=True)
    return {"rows": rows}


def shared_section(result: dict, run: Run) -> list[str]:
    rows = result["rows"]
    lines = [
        f"## shared: {len(rows)} trials, one shared cache vs one cache per trial", "",
        "(a) every trial on one cache root, empty before the first, as a search runs them; (b) every trial on its "
        "own empty cache root. Teacher prepared once beforehand, for both. \"computed\" = what the trial added to "
        "its cache root (encoded: the training documents' encoder states; autoencoders: the bottleneck fitted on "
        "them; pseudo-labels: the teacher's summaries of them).", "",
        "| trial | latent | decoder layers | method | (a) shared s | (a) computed | (b) own cache s | (b) computed |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for index, row in enumerate(rows, 1):
        c, a, b = row["config"], row["shared"], row["separate"]
        lines.append(f"| {index} | {c['latent_dim']} | {c['decoder_layers']} | {c['method']} | {a['seconds']:.1f} "
                     f"| {', '.join(a['made']) or '-'} | {b['seconds']:.1f} | {', '.join(b['made']) or '-'} |")
    shared = sum(row["shared"]["seconds"] for row in rows)
    separate = sum(row["separate"]["seconds"] for row in rows)
    lines.append(f"| total | | | | {shared:.1f} | | {separate:.1f} | |")
    same = sum(row["shared"]["rouge"] == row["separate"]["rouge"] for row in rows)
    lines += ["", f"**Reading:** sharing the cache saves {separate - shared:.1f} s of {separate:.1f} s "
              f"({(separate - shared) / separate:.0%}) over {len(rows)} trials. ROUGE-1 and ROUGE-2 are identical in "
              f"(a) and (b) for {same} of {len(rows)} trials (what is cached does not change what is learnt).", ""]
    return lines


RUNNERS = {"samplers": (run_samplers, samplers_section), "shared": (run_shared, shared_section)}


# --- the results file ----------------------------------------------------------------------------------------------


def write_results(path: Path, run: Run, results: dict, elapsed: dict, command: str) -> None:
    s, space, ctx = run.settings, run.space, run.ctx
    ref = ctx.reference
    objectives = ", ".join(f"{metric} ({direction})" for metric, direction in space.objectives.items())
    overrides = []
    if s.eval_samples is not None:
        overrides.append(f"--eval-samples {s.eval_samples} (the space scores {space.evaluation.samples})")
    if s.epochs_cap is not None:
        overrides.append(f"--epochs-cap {s.epochs_cap} (no trial trains more epochs, whatever the sampler chose)")
    where = space.path
    if s.smoke:
        where = "a tiny temporary one, 32 training pairs (costs only: a random teacher scores ROUGE 0)"
    teacher = "tiny random bert2bert" if s.smoke else ctx.teacher_dir
    lines = [
        "# Search bench: samplers' hypervolume and shared-work savings", "",
        f"Command: `{command}`", "",
        *machine_lines(types.SimpleNamespace(device=torch.device("cpu"))),
        f"- Space: {where}; teacher {teacher} (encoder width {run.shape[0]}, {run.shape[2]}+{run.shape[1]} layers); "
        f"objectives {objectives}; training seed {ctx.seed}",
        f"- Trials: {ctx.evaluation.samples} validation pairs scored; latency timed on "
        f"{ctx.evaluation.latency_samples} summaries, {ctx.evaluation.latency_repeats} pass(es); "
        f"overrides: {'; '.join(overrides) or 'none'}",
        "- Teacher: " + ", ".join(f"{metric} {ref[metric]:.4g}" for metric in space.objectives if metric in ref), "",
    ]
    for part in s.parts:
        lines += RUNNERS[part][1](results[part], run)
    lines += ["## Run time", "", "| part | seconds |", "| --- | --- |"]
    lines += [f"| {part} | {seconds:.0f} |" for part, seconds in elapsed.items()]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


def _list(kind):
    def parse(text: str) -> tuple:
        try:
            return tuple(kind(x.strip()) for x in text.split(",") if x.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected comma-separated values, got {text!r}") from None
    return parse


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", type=_list(str), default=None, help=f"comma-separated subset of {','.join(PARTS)}")
    parser.add_argument("--space", default=None, help="search-space name or path (default summarization)")
    parser.add_argument("--trials", type=int, default=None, help="trials per study (default 8)")
    parser.add_argument("--seeds", type=_list(int), default=None, help="sampler seeds (default 0,1,2)")
    parser.add_argument("--samplers", type=_list(str), default=None, help=f"default {','.join(SAMPLERS)}")
    parser.add_argument("--eval-samples", type=int, default=None,
                        help="validation pairs per trial (default: the space's)")
    parser.add_argument("--epochs-cap", type=int, default=None, help="most fine-tuning epochs of a trial")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default 2)")
    parser.add_argument("--out", type=Path, default=None,
                        help="results file (default bench/search.md; with --smoke a file in the temp folder)")
    parser.add_argument("--cache", type=Path, default=None,
                        help="cache root of the samplers part and the teacher (default: $SHRINKTUNE_CACHE, else "
                        "~/.cache/shrinktune; --smoke: a temp folder)")
    parser.add_argument("--smoke", action="store_true", help="both parts on a tiny random teacher, for CI")
    return parser.parse_args(argv)


def settings_from(args: argparse.Namespace) -> Settings:
    given = {name: getattr(args, name) for name in vars(Settings()) if getattr(args, name, None) is not None}
    return Settings.smoke_sizes(**given) if args.smoke else Settings(**given)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.smoke and args.space:
        print(f"warning: --smoke uses a tiny temporary space; ignoring --space {args.space}", file=sys.stderr)
        args.space = None
    try:
        settings = settings_from(args)
    except UserError as error:
        fail(error)
    torch.set_num_threads(settings.threads)
    quiet_libraries()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    out = args.out or (Path(tempfile.gettempdir()) / "search-smoke.md" if settings.smoke else Path("bench/search.md"))
    command = ("python bench/search.py " + " ".join(sys.argv[1:] if argv is None else argv)).strip()
    with tempfile.TemporaryDirectory(prefix="search-bench-") as scratch:
        cache = args.cache or (Path(scratch) / "cache" if settings.smoke else cache_root())
        try:
            seed_everything(0)
            start = time.perf_counter()
            run = load_run(settings, cache, Path(scratch))
            elapsed = {"setup (teacher prepared and measured)": time.perf_counter() - start}
            print(f"setup: {next(iter(elapsed.values())):.0f} s", flush=True)
            results = run_parts(settings.parts, RUNNERS, run, elapsed)
        except UserError as error:
            fail(error)
        elapsed["total"] = sum(elapsed.values())
        write_results(out, run, results, elapsed, command)
    print(f"total {elapsed['total']:.0f} s; wrote {out}")


if __name__ == "__main__":
    main()
