"""Students bench: how much each training recipe gets out of a student, on validation and test pairs.

    python bench/students.py bench/students/kd_collapse.jsonl --out bench/students_kd.md
    python bench/students.py bench/students/windows.jsonl --out bench/students_windows.md
    python bench/students.py CONFIGS --teacher PATH --val-samples 6 --test-samples 6   # any local teacher

Each line of CONFIGS is a JSON object: a `name`, trial settings (`shrinktune.settings.TrialSettings`, over the
space's `fixed:` settings) and optionally a training `seed` (default: the space's). Every configuration is built,
trained and scored exactly as a search trial does it (`shrinktune.search.trial.train_student`: the same encoder
states, bottleneck, student, method, pseudo-labels and windows), but only its quality is measured: ROUGE on the
first `--val-samples` validation pairs and the first `--test-samples` test pairs (no choice of the search saw them),
tokens per summary and the share of distinct summaries (a collapsed decoder repeats one). The teacher is scored on
the same test pairs. Speed is left to the search, which times each architecture in rounds interleaved with the
teacher: quality figures do not suffer from a busy machine, speed-ups do. Caches (teacher, states, autoencoders,
pseudo-labels) are shared with searches under `--cache`."""

from __future__ import annotations

import argparse
import json
import os
import platform as host
import sys
import time
from collections import Counter
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import torch
import yaml

from shrinktune.data.tasks import load_task_splits
from shrinktune.measure.kinds import get_kind
from shrinktune.models.generation import GenerationSettings
from shrinktune.search import trial as T
from shrinktune.search.space import resolve_space_path
from shrinktune.settings import TrialSettings


def _parse(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("configs", help="JSON lines: {name, trial settings}")
    parser.add_argument("--space", default="summarization", help="space whose task, teacher, decoding and fixed "
                        "settings apply (default summarization)")
    parser.add_argument("--teacher", default=None, help="teacher folder (default: the space's)")
    parser.add_argument("--val-samples", type=int, default=60)
    parser.add_argument("--test-samples", type=int, default=150)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--cache", default=os.environ.get("SHRINKTUNE_CACHE", str(Path.home() / ".cache/shrinktune")))
    parser.add_argument("--out", default=None, help="Markdown results file (default: stdout only)")
    return parser.parse_args(argv)


def _rows(configs: list[dict], ctx, space: dict, val_n: int, test_n: int):
    """The teacher's row, then each configuration's. `q1` / `q2` are the task kind's first two metrics (R-1 and R-2
    for summaries, BLEU and chrF, accuracy and macro-F1)."""
    shared = T._load_shared(ctx)
    task, splits, teacher, tokenizer, _ = shared
    first, second = get_kind(task.kind).metrics[:2]
    validation = splits["validation"][:val_n]
    test = load_task_splits(task, ("test",))["test"][:test_n]
    scored = T._quality(teacher, tokenizer, task, test)
    yield {"name": "teacher", "test_q1": scored.metrics[first], "test_q2": scored.metrics[second],
           "test_tokens": scored.metrics["tokens_per_summary"], "kind": task.kind}
    if task.kind == "classification":  # what a model that learned nothing but the label counts scores
        majority = Counter(e.summary for e in splits["train"]).most_common(1)[0][0]
        base = get_kind(task.kind).score([majority] * len(test), [e.summary for e in test])
        yield {"name": f"majority class ({majority}, of the training labels)", "baseline": True,
               "test_q1": base.metrics[first], "test_q2": base.metrics[second]}
    for raw in configs:
        config = dict(raw)
        name = config.pop("name", json.dumps(config))
        seeded = replace(ctx, seed=int(config.pop("seed", ctx.seed)))  # the space's seed unless the line sets one
        trial = replace(ctx.defaults, **config)
        start = time.time()
        trained = T.train_student(trial, seeded, shared, {})
        student, history = trained.student, trained.history
        val, tst = T._quality(student, tokenizer, task, validation), T._quality(student, tokenizer, task, test)
        yield {"name": name, "val_q1": val.metrics[first], "val_q2": val.metrics[second],
               "val_tokens": val.metrics["tokens_per_summary"],
               "distinct": len(set(val.predictions)) / len(val.predictions),
               "test_q1": tst.metrics[first], "test_q2": tst.metrics[second],
               "test_tokens": tst.metrics["tokens_per_summary"], "pairs": len(trained.train_pairs.states),
               "loss": [round(h, 3) for h in history], "seconds": time.time() - start, "sample": val.predictions[0]}


# The table's names of each kind's first two metrics.
NAMES = {"summarization": ("R-1", "R-2"), "translation": ("BLEU", "chrF"), "classification": ("accuracy", "macro-F1")}


def _table(rows: list[dict]) -> list[str]:
    teacher = rows[0]["test_q1"]
    q1, q2 = NAMES[rows[0]["kind"]]
    lines = [f"| student | training pairs | val {q1} / {q2} | distinct | test {q1} / {q2} | vs teacher (test {q1}) | "
             "tokens (test) | train loss by epoch | s |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
             f"| teacher | — | — | — | {rows[0]['test_q1']:.4f} / {rows[0]['test_q2']:.4f} | — | "
             f"{rows[0]['test_tokens']:.1f} | — | — |"]
    for row in rows[1:]:
        if row.get("baseline"):
            lines.append(f"| {row['name']} | — | — | — | {row['test_q1']:.4f} / {row['test_q2']:.4f} | "
                         f"{(row['test_q1'] - teacher) / teacher:+.1%} | — | — | — |")
            continue
        lines.append(
            f"| {row['name']} | {row['pairs']} | {row['val_q1']:.4f} / {row['val_q2']:.4f} | {row['distinct']:.0%} | "
            f"{row['test_q1']:.4f} / {row['test_q2']:.4f} | {(row['test_q1'] - teacher) / teacher:+.1%} | "
            f"{row['test_tokens']:.1f} | {', '.join(f'{h:g}' for h in row['loss'])} | {row['seconds']:.0f} |")
    return lines


def main(argv: list[str] | None = None) -> None:
    args = _parse(argv)
    torch.set_num_threads(args.threads)
    path = resolve_space_path(args.space)
    space = yaml.safe_load(path.read_text())
    fixed = {k: v for k, v in (space.get("fixed") or {}).items() if k in TrialSettings.__dataclass_fields__}
    configs = [json.loads(line) for line in Path(args.configs).read_text().splitlines()
               if line.strip() and not line.lstrip().startswith("#")]
    ctx = T.TrialContext(task=space["task"], teacher_dir=args.teacher or space["teacher"], cache_root=args.cache,
                         generation=GenerationSettings(**(space.get("generation") or {})),
                         defaults=TrialSettings(**fixed), seed=int((space.get("search") or {}).get("seed", 0)))
    T.quiet_libraries()
    ctx = T._prepared(ctx)
    started, rows = time.time(), []
    for row in _rows(configs, ctx, space, args.val_samples, args.test_samples):
        print(json.dumps(row), flush=True)
        rows.append(row)
    if args.out:
        command = "python bench/students.py " + " ".join(sys.argv[1:] if argv is None else argv)
        head = [f"# Students: {Path(args.configs).name}", "", f"- Command: `{command}`",
                f"- Machine: {host.machine()}, {os.cpu_count()} CPUs, torch threads {args.threads}, torch "
                f"{torch.__version__}", f"- Date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, "
                f"{time.time() - started:.0f} s", f"- Space: {path.name} (task, teacher, decoding, fixed settings); "
                f"{args.val_samples} validation and {args.test_samples} test pairs", ""]
        Path(args.out).write_text("\n".join(head + ["## Quality by training recipe", ""] + _table(rows)) + "\n")


if __name__ == "__main__":
    main()
