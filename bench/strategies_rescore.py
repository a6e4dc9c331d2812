"""Recorded strategy runs re-scored with fine-tuning memory as the search measures it now.

    python bench/strategies_rescore.py --records bench/strategies_encoder bench/strategies_96x1 --out F [--keep DIR]
    python bench/strategies_rescore.py --smoke --records DIR     # DIR: `bench/strategies.py --smoke --keep DIR`

Fine-tuning memory (`train_peak_mb`) is a property of a student's shape — its latent width and decoder depth; its
encoder runs on cached states and is not in the step — not of its training, so recorded runs
(`bench/strategies.py --keep`) can be re-scored when its measurement changes: the students and their times stay
as they were, each trial's memory is measured again as `draw_costs` measures it (`_trained_modules` + one
`training_step_fn` step, on the space's teacher, fixed settings and encoded pairs), and the hypervolume at the
budget is recomputed (`bench.strategies.hypervolume_at`). The teachers' reference memory is measured again too.
What a re-run would change besides — the sampler's draws, which see the new memory figures, and the pre-screen's
verdicts — is not in it: this is an estimate of a re-run, not one.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import types
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing it

import torch  # noqa: E402

from bench.compression import machine_lines  # noqa: E402
from bench.search import Settings as SearchBenchSettings  # noqa: E402
from bench.search import load_run  # noqa: E402
from bench.strategies import STRATEGIES, hypervolume_at  # noqa: E402
from shrinktune.search import trial as T  # noqa: E402


def shape_memory(ctx, shared, latent: int | None, decoder_layers: int | None) -> float:
    """`train_peak_mb` of a student of this shape, as `draw_costs` measures it (one epoch trained first: the
    bottleneck and the shortlist are built as a trial builds them; the step's memory does not depend on weights)."""
    trial = replace(ctx.defaults, latent_dim=latent, decoder_layers=decoder_layers, epochs=1)
    trained = T.train_student(trial, ctx, shared, {})
    return T.train_step_mb(trained.student, trained.student_pairs, trained.settings)


def teacher_memory(ctx, shared) -> float:
    """The teacher's `train_peak_mb`, with the settings `prepare_reference` measures it with."""
    _, _, teacher, _, pairs = shared
    return T.train_step_mb(teacher, pairs, T.FinetuneSettings(batch_size=ctx.defaults.batch_size,
                                                              dtype=ctx.evaluation.dtype))


def rescore(records: list[dict], memory: dict[str, float], teacher_mb: float) -> list[dict]:
    """Copies of `records` with each complete trial's memory, and the teacher's, as measured now."""
    out = []
    for record in records:
        record = json.loads(json.dumps(record))
        record["reference"]["train_peak_mb"] = teacher_mb
        for entry in record["trials"]:
            if entry.get("metrics"):
                entry["metrics"]["train_peak_mb"] = memory[shape_key(entry["config"])]
        out.append(record)
    return out


def shape_key(config: dict) -> str:
    return f"{config.get('latent_dim')}x{config.get('decoder_layers')}"


def table(folder: str, before: list[dict], after: list[dict]) -> list[str]:
    lines = [f"### {folder}", "", "| memory as measured | " + " | ".join(f"{s} (per seed)" for s in STRATEGIES)
             + " | ratio of the means (per seed) |", "| --- | --- | --- | --- |"]
    for label, records in (("when recorded", before), ("now", after)):
        by = {s: [hypervolume_at(r, r["budget_s"]) for r in sorted(records, key=lambda r: r["seed"])
                  if r["strategy"] == s] for s in STRATEGIES}
        ratio = statistics.mean(by["default"]) / statistics.mean(by["random"])
        per_seed = ", ".join(f"{d / r:.2f}x" for d, r in zip(by["default"], by["random"], strict=True))
        lines.append(f"| {label} | " + " | ".join(", ".join(f"{v:.3f}" for v in by[s]) for s in STRATEGIES)
                     + f" | {ratio:.2f}x ({per_seed}) |")
    return lines + [""]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", nargs="+", required=True, help="folders of bench/strategies.py --keep records")
    parser.add_argument("--space", default="summarization")
    parser.add_argument("--cache", default="/tmp/strategies-rescore-cache")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=None)
    parser.add_argument("--smoke", action="store_true", help="the records of `bench/strategies.py --smoke`")
    parser.add_argument("--keep", default=None, help="write the re-scored records to KEEP/<records folder name>/ "
                        "(with the folder's space file, if any), e.g. for bench/strategies_surrogate.py")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    T.quiet_libraries()
    folders = {folder: [json.loads(p.read_text()) for p in sorted(Path(folder).glob("*.json"))]
               for folder in args.records}
    scratch = Path(args.cache) / "scratch"
    scratch.mkdir(parents=True, exist_ok=True)
    run = load_run(SearchBenchSettings(parts=("samplers",), space=args.space, threads=args.threads,
                                       smoke=args.smoke), Path(args.cache), scratch)
    shared = T._load_shared(run.ctx)
    shapes = sorted({(e["config"].get("latent_dim"), e["config"].get("decoder_layers"))
                     for records in folders.values() for r in records for e in r["trials"] if e.get("metrics")})
    memory = {f"{latent}x{layers}": shape_memory(run.ctx, shared, latent, layers) for latent, layers in shapes}
    teacher_mb = teacher_memory(run.ctx, shared)
    recorded_teacher = statistics.mean(r["reference"]["train_peak_mb"] for rs in folders.values() for r in rs)
    command = "python bench/strategies_rescore.py " + " ".join(sys.argv[1:] if argv is None else argv)
    lines = ["# Recorded strategy runs re-scored with fine-tuning memory as the search measures it now", "",
             f"Command: `{command}`", "", *machine_lines(types.SimpleNamespace(device=torch.device("cpu"))), "",
             "An estimate of a re-run, not one (see the script's docstring): the same students and times, each "
             "student's `train_peak_mb` measured again for its shape.", "",
             f"Teacher: {recorded_teacher:.0f} MB when recorded, {teacher_mb:.0f} MB now.", "",
             "| shape (latent × decoder layers) | train MB now | / teacher |", "| --- | --- | --- |"]
    lines += [f"| {key} | {mb:.0f} | {mb / teacher_mb:.2f} |" for key, mb in memory.items()]
    lines += ["", "## Hypervolume at the budget, per seed", ""]
    for folder, records in folders.items():
        rescored = rescore(records, memory, teacher_mb)
        lines += table(folder, records, rescored)
        if args.keep:
            kept = Path(args.keep) / Path(folder).name
            kept.mkdir(parents=True, exist_ok=True)
            for path, record in zip(sorted(Path(folder).glob("*.json")), rescored, strict=True):
                (kept / path.name).write_text(json.dumps(record, indent=1))
            for space in Path(folder).glob("*.yaml"):
                (kept / space.name).write_text(space.read_text())
    text = "\n".join(lines)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
