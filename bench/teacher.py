"""Is the embedded teacher worth compressing? Its quality beside simple baselines, and the frontier it makes.

    python bench/teacher.py --out bench/teacher.md            # ~20 min on 2 CPU cores, teacher cached or shipped
    python bench/teacher.py --smoke                           # minutes: a tiny grid, few pairs

On ACLSum validation, in one run: the teacher's ROUGE-1/2/L/Lsum and share of distinct summaries (greedy without
the source-copy bias, the model alone; the search's decoding from search_spaces/summarization.yaml, greedy with the
bias; 4 beams with it) beside the lead-25-words baseline and the best single
constant summary (the training summary with the highest mean ROUGE-1 on the training pairs, then scored on
validation); the same on the test split, which no recipe choice has seen. Then students of latent width × decoder
depth, each trained and measured as a search trial is (`run_configuration`), to show that narrower and shallower
students lose ROUGE while getting faster. Also: how long the teacher takes to prepare (unpacking the shipped file
into an empty cache) and the shipped file's size.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import asdict, replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from compression import machine_lines  # noqa: E402

from shrinktune.data.tasks import get_task, load_task_splits  # noqa: E402
from shrinktune.measure.evaluate import generate_summaries  # noqa: E402
from shrinktune.measure.rouge import distinct_fraction, rouge_scores  # noqa: E402
from shrinktune.models.generation import GenerationSettings  # noqa: E402
from shrinktune.models.teacher import load_teacher  # noqa: E402
from shrinktune.search.space import SearchSpace  # noqa: E402
from shrinktune.search.trial import TrialContext, prepare_reference, quiet_libraries, run_configuration  # noqa: E402
from shrinktune.settings import EvaluationSettings, TrialSettings  # noqa: E402
from shrinktune.training.teacher import SHIPPED_TEACHER, TeacherRecipe, prepare_embedded_teacher  # noqa: E402

LEAD_WORDS = 25
SPACE = Path(__file__).resolve().parents[1] / "search_spaces" / "summarization.yaml"
SEARCH_DECODING = "teacher, the search's decoding"


def search_generation() -> GenerationSettings:
    """The decoding every trial of the embedded default uses (the `generation` block of its search space)."""
    return SearchSpace.load(SPACE).generation


def lead(document: str, words: int = LEAD_WORDS) -> str:
    return " ".join(document.split()[:words])


def best_constant(train) -> str:
    """The training summary whose mean ROUGE-1 against all training references is highest."""
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rouge1"], use_stemmer=True)
    references = [e.summary for e in train]
    candidates = list(dict.fromkeys(references))
    best, best_score = candidates[0], -1.0
    for candidate in candidates:
        score = sum(scorer.score(ref, candidate)["rouge1"].fmeasure for ref in references) / len(references)
        if score > best_score:
            best, best_score = candidate, score
    return best


def quality_rows(teacher_dir: str, task, splits, samples: int, beams: int, split: str = "validation") -> list[dict]:
    examples = splits[split][:samples]
    references = [e.summary for e in examples]
    rows = []
    for name, predictions in (
        (f"lead-{LEAD_WORDS} words", [lead(e.document) for e in examples]),
        ("best constant summary", [best_constant(splits["train"])] * len(examples)),
    ):
        rows.append({"system": name, **rouge_scores(predictions, references),
                     "distinct": distinct_fraction(predictions)})
    model, tokenizer = load_teacher(teacher_dir)
    search = search_generation()
    bias = f"source bias {search.source_token_bias:g} / continuation {search.source_continuation_bias:g}"
    decodings = [("teacher, greedy, no source bias (the model alone)",
                  replace(search, source_token_bias=0.0, source_continuation_bias=0.0)),
                 (f"{SEARCH_DECODING} (greedy, {bias})", search),
                 (f"teacher, {beams} beams, {bias}", replace(search, num_beams=beams))]
    for label, settings in decodings:
        settings.apply(model)
        started = time.perf_counter()
        predictions = generate_summaries(model, tokenizer, examples, max_source_tokens=task.max_source_tokens)
        rows.append({"system": label, **rouge_scores(predictions, references),
                     "distinct": distinct_fraction(predictions),
                     "seconds": time.perf_counter() - started, "example": predictions[0]})
    return rows


def grid_rows(ctx: TrialContext, latents: list[int], layers: list[int], epochs: int, work: Path) -> list[dict]:
    rows = []
    for latent in latents:
        for depth in layers:
            config = {"latent_dim": latent, "decoder_layers": depth, "epochs": epochs,
                      "learning_rate": 5e-4 if latent == 384 else 2e-3}
            started = time.perf_counter()
            metrics = run_configuration(config, ctx, work / f"l{latent}-d{depth}")
            rows.append({**config, **metrics, "seconds": time.perf_counter() - started})
            print(f"latent {latent} depth {depth}: R-1 {metrics['rouge1']:.3f} "
                  f"fixed {metrics['latency_fixed_ms']:.1f} ms", flush=True)
    return rows


@torch.no_grad()
def input_reliance(teacher_dir: str, task, examples) -> dict:
    """How much the teacher's summaries depend on its input: validation cross-entropy of the reference summaries
    given their own paper's encoder states, another paper's (same aspect), and all-zero states."""
    from shrinktune.training.distill import cross_entropy, forward_on_states
    from shrinktune.training.encode import encode_pairs

    model, tokenizer = load_teacher(teacher_dir)
    pairs = encode_pairs(model.encoder, tokenizer, examples, max_source_tokens=task.max_source_tokens,
                         max_target_tokens=task.max_target_tokens, start_id=model.config.decoder_start_token_id)
    aspects = len({e.aspect for e in examples}) or 1
    other = torch.roll(torch.arange(len(pairs)), aspects)  # the next paper, same aspect

    def loss(states, mask):
        total = 0.0
        for start in range(0, len(pairs), 30):
            rows = slice(start, start + 30)
            logits = forward_on_states(model, states[rows], mask[rows], pairs.decoder_input_ids[rows],
                                       pairs.labels[rows]).logits
            total += cross_entropy(logits, pairs.labels[rows]).item() * (pairs.labels[rows] != -100).sum().item()
        return total / (pairs.labels != -100).sum().item()

    return {"own": loss(pairs.states, pairs.attention_mask),
            "other": loss(pairs.states[other], pairs.attention_mask[other]),
            "zero": loss(torch.zeros_like(pairs.states), pairs.attention_mask)}


def quality_table(rows: list[dict]) -> list[str]:
    lines = ["| system | R-1 | R-2 | R-L | R-Lsum | distinct | time (s) |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for row in rows:
        seconds = f"{row['seconds']:.0f}" if "seconds" in row else "-"
        lines.append(f"| {row['system']} | {row['rouge1']:.3f} | {row['rouge2']:.3f} | {row['rougeL']:.3f} | "
                     f"{row['rougeLsum']:.3f} | {row['distinct']:.0%} | {seconds} |")
    return lines


def report(args, quality, held_out, reliance, grid, reference, prep, command) -> str:
    lines = ["# The embedded teacher: quality, baselines and the frontier it makes", "", f"Command: `{command}`", ""]
    lines += machine_lines(argparse.Namespace(device=torch.device("cpu")))
    lines += ["", f"## Quality on ACLSum validation ({args.samples} pairs)", ""] + quality_table(quality)
    lead_row = quality[0]
    search = next(row for row in quality if row["system"].startswith(SEARCH_DECODING))
    above = search["rouge1"] > lead_row["rouge1"] and search["rouge2"] > lead_row["rouge2"]
    verdict = "above" if above else "NOT above"
    lines += ["", f"Reading: the teacher, decoded as the search decodes, is {verdict} the lead baseline on both "
              f"ROUGE-1 and ROUGE-2, with {search['distinct']:.0%} distinct summaries. First validation summary: "
              f"\"{search['example']}\"", ""]
    lines += [f"Input reliance (cross-entropy per reference token, nats): {reliance['own']:.3f} given the paper's own "
              f"encoder states, {reliance['other']:.3f} given another paper's (same aspect), "
              f"{reliance['zero']:.3f} given all-zero states. The gap between the first two is what the teacher "
              "takes from reading its input.", ""]
    if held_out:
        lines += [f"## Quality on ACLSum test ({args.samples_test} pairs; the recipe was chosen on "
                  "validation, so this split is the unbiased reading)", ""] + quality_table(held_out) + [""]
    lines += ["## Preparation", "", f"- Recipe: `{json.dumps(asdict(TeacherRecipe()))}`",
              f"- Shipped file: `{SHIPPED_TEACHER.relative_to(SHIPPED_TEACHER.parents[2])}`, "
              f"{prep['shipped_mb']:.1f} MB; training it from scratch took {prep['train_minutes']} "
              "(`python -m platform.prepare_teacher`, recorded in the file's metadata)",
              f"- Preparing the teacher into an empty cache (unpack the shipped file, save): "
              f"{prep['unpack_s']:.1f} s", ""]
    if grid:
        lines += [f"## Frontier: latent width × decoder depth ({args.samples_grid} validation pairs, "
                  f"{args.epochs} epochs each, trained and measured as search trials)", "",
                  f"Teacher: R-1 {reference['rouge1']:.3f}, R-2 {reference['rouge2']:.3f}, "
                  f"{reference['latency_fixed_ms']:.1f} ms per fixed-length summary, decoder "
                  f"{reference['params_decoder'] / 1e6:.1f}M parameters.", "",
                  "| latent | decoder layers | R-1 | R-2 | R-L | ms (fixed length) | speed-up (fixed) "
                  "| decoder params | ΔR-1 |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        for row in grid:
            speedup = reference["latency_fixed_ms"] / row["latency_fixed_ms"]
            delta = (row["rouge1"] - reference["rouge1"]) / reference["rouge1"]
            lines.append(f"| {row['latent_dim']} | {row['decoder_layers']} | {row['rouge1']:.3f} "
                         f"| {row['rouge2']:.3f} | "
                         f"{row['rougeL']:.3f} | {row['latency_fixed_ms']:.1f} | {speedup:.2f}x | "
                         f"{row['params_decoder'] / 1e6:.1f}M | {delta:+.1%} |")
        lines += ["", _monotone_reading(grid), ""]
    return "\n".join(lines) + "\n"


def _monotone_reading(grid: list[dict]) -> str:
    """How often a narrower (same depth) or shallower (same width) student scores lower ROUGE-1 and runs faster."""
    by = {(r["latent_dim"], r["decoder_layers"]): r for r in grid}
    pairs = [(by[a], by[b]) for a in by for b in by
             if (a[1] == b[1] and a[0] > b[0]) or (a[0] == b[0] and a[1] > b[1])]
    lower = sum(small["rouge1"] <= big["rouge1"] for big, small in pairs)
    faster = sum(small["latency_fixed_ms"] < big["latency_fixed_ms"] for big, small in pairs)
    return (f"Reading: of {len(pairs)} pairs that differ in width or depth only, the smaller student scores lower or "
            f"equal ROUGE-1 in {lower} and is faster in {faster}.")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=None, help="markdown report (default: print only)")
    parser.add_argument("--samples", type=int, default=150, help="validation pairs for the quality table")
    parser.add_argument("--samples-test", type=int, default=300, help="test pairs for the held-out table (0: skip)")
    parser.add_argument("--samples-grid", type=int, default=60, help="validation pairs per grid student")
    parser.add_argument("--latents", default="384,288,192,96")
    parser.add_argument("--layers", default="6,3,1")
    parser.add_argument("--epochs", type=int, default=3, help="fine-tuning epochs per grid student")
    parser.add_argument("--beams", type=int, default=4)
    parser.add_argument("--cache", default=None, help="cache root (default: the usual one)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-grid", action="store_true")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, for tests")
    args = parser.parse_args(argv)
    if args.smoke:
        args.samples, args.samples_grid, args.latents, args.layers, args.epochs, args.beams = 6, 6, "96", "1", 1, 2
        args.samples_test = 3
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    quiet_libraries()
    command = "python bench/teacher.py " + " ".join(argv if argv is not None else sys.argv[1:])
    task = get_task("summarization")
    splits = load_task_splits(task, ("train", "validation", "test"))
    cache = Path(args.cache) if args.cache else None

    with tempfile.TemporaryDirectory() as empty:
        started = time.perf_counter()
        prepare_embedded_teacher(task, splits["train"], root=Path(empty))
        unpack_s = time.perf_counter() - started
    teacher_dir = str(prepare_embedded_teacher(task, splits["train"], root=cache))
    from safetensors import safe_open

    with safe_open(str(SHIPPED_TEACHER), framework="pt") as handle:
        seconds = float((handle.metadata() or {}).get("train_seconds", "nan"))
    prep = {"unpack_s": unpack_s, "shipped_mb": SHIPPED_TEACHER.stat().st_size / 2**20,
            "train_minutes": f"{seconds / 60:.0f} min" if seconds == seconds else "(not recorded)"}

    quality = quality_rows(teacher_dir, task, splits, args.samples, args.beams)
    for row in quality:
        print(f"{row['system']}: R-1 {row['rouge1']:.3f} R-2 {row['rouge2']:.3f} distinct {row['distinct']:.0%}",
              flush=True)
    reliance = input_reliance(teacher_dir, task, splits["validation"][: args.samples])
    print("input reliance:", {k: round(v, 3) for k, v in reliance.items()}, flush=True)
    held_out = []
    if args.samples_test:
        held_out = quality_rows(teacher_dir, task, splits, args.samples_test, args.beams, split="test")
        for row in held_out:
            print(f"test: {row['system']}: R-1 {row['rouge1']:.3f} R-2 {row['rouge2']:.3f} "
                  f"distinct {row['distinct']:.0%}", flush=True)
    grid, reference = [], {}
    if not args.no_grid:
        ctx = TrialContext(task="summarization", teacher_dir=teacher_dir,
                           cache_root=str(cache or Path(tempfile.gettempdir()) / "shrinktune-bench-cache"),
                           generation=search_generation(), threads=args.threads,
                           evaluation=EvaluationSettings(samples=args.samples_grid, latency_samples=4,
                                                         latency_repeats=2, latency_batch_size=1, fixed_new_tokens=24),
                           defaults=TrialSettings(decoder_ffn="scaled", ae_epochs=4, batch_size=16))
        _, reference = prepare_reference(ctx)
        ctx = replace(ctx, reference=reference)
        with tempfile.TemporaryDirectory() as work:
            grid = grid_rows(ctx, [int(x) for x in args.latents.split(",")], [int(x) for x in args.layers.split(",")],
                             args.epochs, Path(work))
    text = report(args, quality, held_out, reliance, grid, reference, prep, command)
    if args.out:
        Path(args.out).write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
