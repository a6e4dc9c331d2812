"""Does the latest search's Pareto front hold up? Its reported ROUGE-1 and speed-up, re-measured independently.

    python bench/reproduce.py --tracking-uri sqlite:///$PWD/mlflow.db            # the latest search, 150 test pairs
    python bench/reproduce.py --tracking-uri sqlite:///$PWD/mlflow.db --search my-search --out bench/reproduce.md
    python bench/reproduce.py --smoke                                          # tiny sizes: 6 pairs, 2 timed, 2 rounds

What it checks, for the teacher and every front member (trial runs tagged `shrinktune.pareto=true`) of one search
run read from MLflow:

- Quality: ROUGE-1/2 (mean F1, `rouge_score` with stemming) on the first `--samples` pairs of `--split`, and
  whether the re-measured R-1 lies inside the trial's reported 95 % interval (`rouge1_low`, `rouge1_high`). A
  paper-level bootstrap interval of the re-measured R-1 (1000 resamples of papers, seed 0) is printed for
  information.
- Speed: natural-length, batch-1 generation over the first `--timed` pairs. One pass summarizes each pair on its
  own; every model gets one untimed warm-up pass, then `--rounds` rounds each time one pass of the teacher and one
  of every member, the order reversed every other round so drift does not favour anyone. Per round, speed-up =
  teacher pass time / member pass time; the median across rounds is compared with the reported `speedup`
  (within 10 %?), and the rounds' min–max are shown.

It is independent of the search: it does not use `shrinktune.measure` or `shrinktune.search.trial`, only the
names the search writes into MLflow (`shrinktune.tracking.schema`). It loads each
checkpoint with `shrinktune.load_summarizer`, scores with `rouge_score` directly and times with
`time.perf_counter`. The teacher folder does not carry the search's decoding, so the search's `generation` param is
applied to it; students carry it in their own `generation_config`.

Bad input (no store file, no experiment, no search, no front member, a missing checkpoint folder) prints one line
on stderr and exits with status 2.
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import os
import platform
import shlex
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing it

from shrinktune.tracking.schema import (  # noqa: E402
    CHECKPOINT_TAG,
    KIND_TAG,
    PARENT_TAG,
    PARETO_TAG,
    SEARCH_KIND,
    TEACHER_DIR_TAG,
    TEACHER_PREFIX,
    TRIAL_KIND,
    TRIAL_TAG,
    unprefixed,
)

SPLITS = ("train", "validation", "test")
SMOKE = {"samples": 6, "timed": 2, "rounds": 2}
BATCH = 16  # summaries generated per call when scoring
RESAMPLES = 1000
TOLERANCE = 0.10  # "within 10 %" of the reported speed-up


class BadInput(Exception):
    """Input this script cannot work from; reported as one line on stderr, exit status 2."""


@dataclass
class Model:
    """The teacher or one front member: what the search reported, and what this script measures."""

    name: str
    config: str  # "latent × layers"
    path: str
    reported_rouge1: float | None = None
    reported_low: float | None = None
    reported_high: float | None = None
    reported_speedup: float | None = None
    reported_speedup_iqr: tuple[float, float] | None = None
    summarizer: object = None
    rouge1: float | None = None
    rouge2: float | None = None
    rouge1_interval: tuple[float, float] | None = None
    words: float | None = None
    pass_seconds: list[float] = field(default_factory=list)
    speedups: list[float] = field(default_factory=list)  # per round, vs the teacher

    @property
    def inside(self) -> bool | None:
        if self.reported_low is None or self.reported_high is None or self.rouge1 is None:
            return None
        return self.reported_low <= self.rouge1 <= self.reported_high

    @property
    def speedup(self) -> float | None:
        return statistics.median(self.speedups) if self.speedups else None

    @property
    def speedup_within(self) -> bool | None:
        if not self.reported_speedup or self.speedup is None:
            return None
        return abs(self.speedup - self.reported_speedup) / self.reported_speedup <= TOLERANCE


# ---------------------------------------------------------------------------------------------------- arguments


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tracking-uri", default=f"sqlite:///{Path.cwd() / 'mlflow.db'}",
                        help="MLflow store (default sqlite:///<cwd>/mlflow.db)")
    parser.add_argument("--experiment", default="summarization", help="MLflow experiment (default summarization)")
    parser.add_argument("--search", help="search run name or id (default: the latest search)")
    parser.add_argument("--split", default="test", choices=SPLITS, help="pairs to re-measure on (default test)")
    parser.add_argument("--samples", type=int, default=150, help="first N pairs scored (default 150)")
    parser.add_argument("--timed", type=int, default=12, help="first M pairs timed (default 12)")
    parser.add_argument("--rounds", type=int, default=5, help="timing rounds (default 5)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("--out", type=Path, help="also write the markdown to this file")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: samples 6, timed 2, rounds 2")
    args = parser.parse_args(argv)
    if args.smoke:
        for key, value in SMOKE.items():
            setattr(args, key, value)
    for key in ("samples", "timed", "rounds", "threads"):
        if getattr(args, key) < 1:
            parser.error(f"--{key} must be at least 1")
    return args


# ---------------------------------------------------------------------------------------------------- MLflow


def open_store(uri: str):
    """An MlflowClient on `uri`; a sqlite or local-path store must already exist (this script never creates one)."""
    local = uri[len("sqlite:///"):] if uri.startswith("sqlite:///") else None
    if local is None and "://" not in uri:
        local = uri
    if local is not None and not Path(local).exists():
        raise BadInput(f"no MLflow store at {local} (pass --tracking-uri sqlite:////path/to/mlflow.db)")
    if local is not None and Path(local).is_file() and Path(local).stat().st_size == 0:
        raise BadInput(f"the MLflow store {local} is empty")
    for name in ("mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.ERROR)
    from mlflow.tracking import MlflowClient

    try:
        client = MlflowClient(tracking_uri=uri)
        client.search_experiments(max_results=1)  # a broken or foreign store fails here, not halfway through
    except Exception as error:  # MLflow raises many kinds for an unreadable store
        raise BadInput(f"cannot read the MLflow store {uri}: {str(error).splitlines()[0]}") from error
    return client


def all_runs(client, experiment_id: str, filter_string: str) -> list:
    runs, token = [], None
    while True:
        page = client.search_runs([experiment_id], filter_string=filter_string, max_results=1000,
                                  order_by=["attributes.start_time DESC"], page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def find_search(client, experiment: str, search: str | None):
    """The search run called (or with id) `search`, else the latest one by start time."""
    try:
        found = client.get_experiment_by_name(experiment)
    except Exception as error:  # MLflow raises many kinds for a broken or foreign store
        raise BadInput(f"cannot read the MLflow store: {str(error).splitlines()[0]}") from error
    if found is None:
        raise BadInput(f"no experiment {experiment!r} in the store (pass --experiment)")
    searches = all_runs(client, found.experiment_id, f"tags.`{KIND_TAG}` = '{SEARCH_KIND}'")
    if search:
        searches = [r for r in searches if search in (r.info.run_name, r.info.run_id)]
    if not searches:
        raise BadInput(f"no search run {search!r} in experiment {experiment!r}" if search
                       else f"no search run in experiment {experiment!r}")
    return searches[0]


def search_generation(search_run) -> dict | None:
    """The search's decoding settings (param `generation`, JSON), or None on old searches that did not log it."""
    text = search_run.data.params.get("generation")
    if text is None:
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise BadInput(f"search {search_run.info.run_name!r}: generation param is not JSON ({error})") from error


def front_members(client, search_run) -> list:
    query = (f"tags.`{PARENT_TAG}` = '{search_run.info.run_id}' and tags.`{KIND_TAG}` = '{TRIAL_KIND}' "
             f"and tags.`{PARETO_TAG}` = 'true' and attributes.status = 'FINISHED'")
    runs = all_runs(client, search_run.info.experiment_id, query)
    if not runs:
        raise BadInput(f"search {search_run.info.run_name!r} has no finished Pareto-front trial "
                       f"(tag {PARETO_TAG}=true)")
    return runs


def teacher_model(search_run) -> Model:
    tags, teacher = search_run.data.tags, unprefixed(TEACHER_PREFIX, search_run.data.metrics)
    path = tags.get(TEACHER_DIR_TAG)
    if not path:
        raise BadInput(f"search {search_run.info.run_name!r} has no {TEACHER_DIR_TAG} tag")
    looks_local = Path(path).is_absolute() or path.startswith(".") or Path(path).exists()
    if looks_local and not Path(path).is_dir():
        raise BadInput(f"teacher checkpoint folder {path} is missing")
    return Model("teacher", "", path, teacher.get("rouge1"), teacher.get("rouge1_low"), teacher.get("rouge1_high"),
                 1.0)


def member_model(run) -> Model:
    tags, params, metrics = run.data.tags, run.data.params, run.data.metrics
    path = tags.get(CHECKPOINT_TAG)
    name = f"trial {tags.get(TRIAL_TAG) or run.info.run_name}"
    if not path or not Path(path).is_dir():
        raise BadInput(f"{name}: checkpoint folder {path or f'(no {CHECKPOINT_TAG} tag)'} is missing")
    iqr = None
    if "speedup_q25" in metrics and "speedup_q75" in metrics:
        iqr = (metrics["speedup_q25"], metrics["speedup_q75"])
    return Model(name, f"{params.get('latent_dim', '?')} × {params.get('decoder_layers', '?')}", path,
                 metrics.get("rouge1"), metrics.get("rouge1_low"), metrics.get("rouge1_high"),
                 metrics.get("speedup"), iqr)


# ---------------------------------------------------------------------------------------------------- models, data


def load_pairs(task_name: str, split: str, samples: int) -> list:
    from shrinktune.data.tasks import get_task, load_task_splits

    try:
        task = get_task(task_name)
    except Exception as error:
        raise BadInput(str(error)) from error
    pairs = load_task_splits(task, (split,))[split][:samples]
    if not pairs:
        raise BadInput(f"task {task_name!r} has no {split} pairs")
    return pairs


def load_model(model: Model, generation: dict | None) -> None:
    """Loads the checkpoint; `generation` (the search's decoding) is applied to the teacher only."""
    from shrinktune import load_summarizer

    try:
        model.summarizer = load_summarizer(model.path)
    except Exception as error:
        raise BadInput(f"{model.name}: cannot load {model.path}: {str(error).splitlines()[0]}") from error
    if generation is not None:
        from shrinktune.models.generation import GenerationSettings

        GenerationSettings(**generation).apply(model.summarizer.model)
    if not model.config:  # the teacher: its own width × decoder depth
        config = model.summarizer.model.config
        decoder = getattr(config, "decoder", config)
        width = getattr(decoder, "hidden_size", getattr(decoder, "d_model", "?"))
        layers = getattr(decoder, "num_hidden_layers", getattr(decoder, "decoder_layers", "?"))
        model.config = f"{width} × {layers} (teacher)"


def summarize_all(summarizer, pairs) -> list[str]:
    """One summary per pair, in order, generated in batches of ≤ BATCH pairs that share an aspect."""
    by_aspect: dict = {}
    for index, pair in enumerate(pairs):
        by_aspect.setdefault(pair.aspect, []).append(index)
    out = [""] * len(pairs)
    for aspect, indices in by_aspect.items():
        for start in range(0, len(indices), BATCH):
            chunk = indices[start:start + BATCH]
            for index, text in zip(chunk, summarizer([pairs[i].document for i in chunk], aspect=aspect)):
                out[index] = text
    return out


# ---------------------------------------------------------------------------------------------------- quality


def paper(pair_id: str) -> str:
    """The paper a pair belongs to: the id before the last "/" (a hub row `<split>/<number>` is its own paper)."""
    head, _, tail = pair_id.rpartition("/")
    return head if head and not tail.isdigit() else pair_id


def paper_bootstrap(scores: list[float], papers: list[str], resamples: int = RESAMPLES,
                    seed: int = 0) -> tuple[float, float]:
    """95 % percentile interval of the mean score, resampling whole papers with replacement."""
    import numpy as np

    labels = {p: i for i, p in enumerate(dict.fromkeys(papers))}
    index = np.array([labels[p] for p in papers])
    sums = np.bincount(index, weights=np.asarray(scores, dtype=float), minlength=len(labels))
    sizes = np.bincount(index, minlength=len(labels)).astype(float)
    drawn = np.random.default_rng(seed).integers(0, len(labels), size=(resamples, len(labels)))
    means = sums[drawn].sum(axis=1) / sizes[drawn].sum(axis=1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def score(model: Model, pairs, scorer) -> None:
    summaries = summarize_all(model.summarizer, pairs)
    results = [scorer.score(pair.summary, summary) for pair, summary in zip(pairs, summaries)]
    rouge1 = [r["rouge1"].fmeasure for r in results]
    model.rouge1 = statistics.fmean(rouge1)
    model.rouge2 = statistics.fmean(r["rouge2"].fmeasure for r in results)
    model.rouge1_interval = paper_bootstrap(rouge1, [paper(p.id) for p in pairs])
    model.words = statistics.fmean(len(s.split()) for s in summaries)


# ---------------------------------------------------------------------------------------------------- speed


def timed_pass(summarizer, pairs) -> float:
    """Seconds to summarize each pair on its own (batch 1, natural length)."""
    start = time.perf_counter()
    for pair in pairs:
        summarizer(pair.document, aspect=pair.aspect)
    return time.perf_counter() - start


def time_rounds(models: list[Model], pairs, rounds: int) -> None:
    """One warm-up pass each, then `rounds` interleaved rounds (teacher first, then reversed, alternating)."""
    for model in models:
        timed_pass(model.summarizer, pairs)
    for round_ in range(rounds):
        for model in models if round_ % 2 == 0 else models[::-1]:
            model.pass_seconds.append(timed_pass(model.summarizer, pairs))
    teacher = models[0]
    for model in models:
        model.speedups = [t / m for t, m in zip(teacher.pass_seconds, model.pass_seconds)]


# ---------------------------------------------------------------------------------------------------- report


def fmt(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def yes_no(value: bool | None) -> str:
    return "n/a" if value is None else ("yes" if value else "no")


def machine_lines(args) -> list[str]:
    import torch

    return [
        f"- Command: `{shlex.join(['python', *sys.argv])}`",
        f"- Machine: {platform.platform()}, {os.cpu_count()} cores, torch threads {torch.get_num_threads()}",
        f"- Date: {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC",
    ]


def report(args, search_run, task: str, generation: dict | None, models: list[Model]) -> str:
    teacher, members = models[0], models[1:]
    lines = [
        "# Reproduction of the Pareto front: reported vs re-measured", "",
        *machine_lines(args),
        f"- Search: {search_run.info.run_name} ({search_run.info.run_id}), task {task}, "
        f"objectives {search_run.data.params.get('objectives', 'n/a')}",
        f"- Decoding applied to the teacher: {json.dumps(generation) if generation else 'none logged (its own)'}",
        f"- Quality: first {args.samples} {args.split} pairs; speed: batch 1, natural length, first {args.timed} "
        f"pairs, 1 warm-up pass + {args.rounds} interleaved rounds, speed-up = median over rounds", "",
        "| model | config (latent × layers) | reported R-1 [low, high] | re-measured R-1 | inside interval "
        "| reported speed-up | re-measured speed-up (rounds min–max) | within 10 % | words/summary |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for model in models:
        interval = (f" [{fmt(model.reported_low)}, {fmt(model.reported_high)}]"
                    if model.reported_low is not None and model.reported_high is not None else "")
        reported_speed = "n/a" if model.reported_speedup is None else f"{model.reported_speedup:.2f}x"
        if model.reported_speedup_iqr:
            reported_speed += f" (IQR {model.reported_speedup_iqr[0]:.2f}–{model.reported_speedup_iqr[1]:.2f})"
        measured_speed = (f"{model.speedup:.2f}x ({min(model.speedups):.2f}–{max(model.speedups):.2f})"
                          if model.speedups else "n/a")
        lines.append(
            f"| {model.name} | {model.config} | {fmt(model.reported_rouge1)}{interval} | {fmt(model.rouge1)} "
            f"| {yes_no(model.inside)} | {reported_speed} | {measured_speed} "
            f"| {'—' if model is teacher else yes_no(model.speedup_within)} | {fmt(model.words, 1)} |")
    lines += ["", "| model | re-measured R-1 [paper bootstrap 95 %] | re-measured R-2 | ms/summary (median pass) |",
              "|---|---|---|---|"]
    for model in models:
        low, high = model.rouge1_interval
        ms = 1000 * statistics.median(model.pass_seconds) / args.timed
        lines.append(f"| {model.name} | {fmt(model.rouge1)} [{fmt(low)}, {fmt(high)}] | {fmt(model.rouge2)} "
                     f"| {ms:.1f} |")
    reported_ms = unprefixed(TEACHER_PREFIX, search_run.data.metrics).get("latency_ms")
    if reported_ms is not None:
        lines += ["", f"Teacher latency reported by the search: {reported_ms:.1f} ms/summary."]
    inside = sum(bool(m.inside) for m in members)
    within = sum(bool(m.speedup_within) for m in members)
    lines += ["", f"{inside} of {len(members)} members: R-1 inside the reported interval; "
                  f"{within} of {len(members)}: speed-up within 10 %"]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------------- main


def progress(message: str) -> None:
    print(f"[reproduce] {message}", file=sys.stderr, flush=True)


def run(args) -> str:
    client = open_store(args.tracking_uri)
    search_run = find_search(client, args.experiment, args.search)
    task = search_run.data.params.get("task")
    if not task:
        raise BadInput(f"search {search_run.info.run_name!r} has no task param")
    generation = search_generation(search_run)
    members = sorted((member_model(r) for r in front_members(client, search_run)),
                     key=lambda m: -(m.reported_rouge1 or 0.0))  # best reported quality first
    models = [teacher_model(search_run), *members]
    pairs = load_pairs(task, args.split, args.samples)
    args.samples, args.timed = len(pairs), min(args.timed, len(pairs))  # what the report says is what was run

    import torch
    import transformers
    from rouge_score import rouge_scorer

    torch.set_num_threads(args.threads)
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    for model in models:
        load_model(model, generation if model is models[0] else None)
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    for model in models:
        progress(f"scoring {model.name} on {len(pairs)} {args.split} pairs")
        score(model, pairs, scorer)
    progress(f"timing {len(models)} models: {args.rounds} rounds of {args.timed} pairs")
    time_rounds(models, pairs[:args.timed], args.rounds)
    return report(args, search_run, task, generation, models)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        text = run(args)
    except BadInput as error:
        print(f"reproduce: {error}", file=sys.stderr)
        return 2
    print(text, end="")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
