"""Compression benchmark: what a narrower (latent) or shallower decoder buys, on random-weight BART shapes.

Run from the repository root, on a quiet machine (nothing else running; CPU figures move with the load):

    python bench/compression.py --shapes base,large --out bench/compression.md
    python bench/compression.py --smoke --out /tmp/compression-smoke.md    # tiny shape, seconds; what CI runs

For each shape (BART-base: d 768, 6+6 layers; BART-large: d 1024, 12+12 layers) it builds a random teacher and the
students `build_student` makes of it — latent width 512/384/256/128 (plus the teacher's width: layer dropping alone)
× decoder depth × full or half encoder — and measures, in one run and side by side:
- decoder and total parameters;
- generation time per summary at batch 1 with a fixed output length (every summary exactly `--new-tokens` tokens,
  from a `--source-tokens` random source), so architectures compare without length effects; speed-up = teacher
  time ÷ student time. The teacher is timed again at the end, to show how much the machine drifted;
- the encoder-only time, whose ratio to the teacher's generation time is the most any decoder-side compression
  can gain;
- the peak memory of one fine-tuning step of what sits after the frozen encoder, on cached encoder states (resident
  decoder + bottleneck weights + the step's peak), as `shrinktune.measure.evaluate` measures trials; memory ratio =
  student ÷ teacher.
Weights are random: this measures cost, not quality. Imports only torch, transformers and shrinktune's models and
measure rooms, so it runs on a GPU machine without Ray or MLflow (`--device cuda`).
"""

from __future__ import annotations

import argparse
import datetime
import gc
import os
import platform
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing it

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
import transformers  # noqa: E402
from transformers import BartConfig, BartForConditionalGeneration  # noqa: E402
from transformers.modeling_outputs import BaseModelOutput  # noqa: E402

from shrinktune.measure.evaluate import MB, parameter_counts  # noqa: E402
from shrinktune.measure.latency import generation_record, time_encoder, time_generation  # noqa: E402
from shrinktune.measure.memory import peak_memory_bytes, tensor_bytes  # noqa: E402
from shrinktune.models.autoencoder import Autoencoder  # noqa: E402
from shrinktune.models.generation import GenerationSettings  # noqa: E402
from shrinktune.models.student import build_student  # noqa: E402


@dataclass(frozen=True)
class Shape:
    """A teacher shape and the student grid measured against it."""

    name: str  # label in the results file
    d_model: int  # width of encoder and decoder
    layers: int  # encoder layers = decoder layers
    heads: int  # attention heads
    ffn: int  # feed-forward width
    vocab: int  # vocabulary size
    positions: int  # max_position_embeddings
    latents: tuple[int, ...]  # student decoder widths (d_model itself = layer dropping only)
    decoder_depths: tuple[int, ...]  # student decoder depths
    # encoder depths: the full one and half of it


SHAPES = {
    "base": Shape("BART-base", 768, 6, 12, 3072, 50265, 1024, (768, 512, 384, 256, 128), (6, 3, 2, 1)),
    "large": Shape("BART-large", 1024, 12, 16, 4096, 50265, 1024, (1024, 512, 384, 256, 128), (12, 6, 3, 1)),
    "tiny": Shape("tiny (smoke)", 64, 2, 4, 128, 1000, 128, (64, 32), (2, 1)),
}

# The papers' figures, and the row of ours each compares with: (shape, latent, decoder layers, encoder layers).
# Their conditions differ (trained models, natural-length beam search, GPUs); ours are random weights at a fixed
# length. They say what to expect, not what must come out.
REFERENCES = [
    ("speed-up, latent 384 (Falaki & Gras, BART-base)", "2x", ("base", 384, 6, 6), "speedup"),
    ("fine-tuning memory ratio, latent 384 (Falaki & Gras)", "< 0.5x (ICMLA: 0.43x)", ("base", 384, 6, 6),
     "memory_ratio"),
    ("decoder parameters, latent 384 (Falaki & Gras)", "96M -> 41M", ("base", 384, 6, 6), "decoder_params"),
    ("speed-up, depth 6-1 (Campos & Zhai, FLAN-T5-base, A10)", "2.6x", ("base", 768, 1, 6), "speedup"),
    ("speed-up, depth 12-6 (distilbart, bart-large-cnn)", "1.24x (381 -> 307 ms)", ("large", 1024, 6, 12), "speedup"),
    ("speed-up, depth 12-3 (distilbart, bart-large-cnn)", "1.78x (381 -> 214 ms)", ("large", 1024, 3, 12), "speedup"),
    ("speed-up, depth 12-1 (distilbart, bart-large-xsum)", "2.54x (229 -> 90 ms)", ("large", 1024, 1, 12), "speedup"),
]


@dataclass(frozen=True)
class Settings:
    """How every model of a run is measured."""

    device: torch.device  # where models run
    source_tokens: int  # encoder input length
    new_tokens: int  # generated tokens per summary (forced)
    warmup: int  # untimed runs before timing
    repeats: int  # timed runs; the median is reported
    train_batch: int  # sequences in the fine-tuning step
    target_tokens: int  # summary length in the fine-tuning step
    seed: int  # weights and inputs


@dataclass(frozen=True)
class Row:
    """One measured model."""

    config: str  # "teacher", "layer drop" (teacher width) or "latent"
    encoder_layers: int  # encoder depth
    decoder_layers: int  # decoder depth
    latent: int  # decoder width
    decoder_params: int  # parameters of the decoder with its embeddings and LM head
    total_params: int  # all parameters, shared ones once
    ms: float  # median ms per summary, batch 1, fixed length
    p90_ms: float  # 90th percentile of the same
    encoder_ms: float  # median ms of the encoder (and bottleneck) alone
    train_mb: float  # resident trainable-side weights + peak of one fine-tuning step, MiB


def make_teacher(shape: Shape, settings: Settings) -> BartForConditionalGeneration:
    torch.manual_seed(settings.seed)
    config = BartConfig(
        vocab_size=shape.vocab, d_model=shape.d_model, encoder_layers=shape.layers, decoder_layers=shape.layers,
        encoder_attention_heads=shape.heads, decoder_attention_heads=shape.heads, encoder_ffn_dim=shape.ffn,
        decoder_ffn_dim=shape.ffn, max_position_embeddings=shape.positions,
    )
    teacher = BartForConditionalGeneration(config)
    # Greedy, no repetition blocking: the generation loop costs the same per token for every model.
    GenerationSettings(num_beams=1, max_new_tokens=settings.new_tokens, no_repeat_ngram_size=0).apply(teacher)
    return teacher.to(settings.device).eval()


def make_student(teacher, shape: Shape, latent: int, decoder_layers: int, encoder_layers: int, seed: int):
    torch.manual_seed(seed)
    bottleneck = {}
    if latent < shape.d_model:
        ae = Autoencoder(shape.d_model, latent)
        bottleneck = {"bottleneck": ae.encoder, "bottleneck_spec": ae.spec}
    student = build_student(
        teacher, latent_dim=latent, decoder_layers=decoder_layers, encoder_layers=encoder_layers, **bottleneck
    )
    made = {k: student.config.student[k] for k in ("latent_dim", "decoder_layers", "encoder_layers")}
    if made != {"latent_dim": latent, "decoder_layers": decoder_layers, "encoder_layers": encoder_layers}:
        raise RuntimeError(
            f"build_student made {made}, asked for latent {latent}, {encoder_layers}+{decoder_layers} layers"
        )
    return student.to(next(teacher.parameters()).device).eval()


def source_batch(shape: Shape, settings: Settings) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(settings.seed)
    ids = torch.randint(4, shape.vocab, (1, settings.source_tokens), generator=generator)  # (1, src_len); 0-3 special
    return {"input_ids": ids.to(settings.device), "attention_mask": torch.ones_like(ids).to(settings.device)}


def training_batch(shape: Shape, settings: Settings, start_id: int) -> tuple[torch.Tensor, ...]:
    """Cached encoder states and a teacher-forced summary: what fine-tuning on cached states reads."""
    generator = torch.Generator().manual_seed(settings.seed + 1)
    batch, src, tgt = settings.train_batch, settings.source_tokens, settings.target_tokens
    states = torch.randn(batch, src, shape.d_model, generator=generator)  # (batch, src_len, d_model)
    attention_mask = torch.ones(batch, src, dtype=torch.long)  # (batch, src_len)
    labels = torch.randint(4, shape.vocab, (batch, tgt), generator=generator)  # (batch, tgt_len)
    decoder_input_ids = torch.cat([torch.full((batch, 1), start_id), labels[:, :-1]], dim=1)  # shifted right
    return tuple(t.to(settings.device) for t in (states, attention_mask, decoder_input_ids, labels))


def decoder_side(model) -> tuple[torch.nn.Module, list[torch.nn.Parameter]]:
    """What fine-tuning on cached states keeps in memory (decoder, LM head, bottleneck), and what it trains: every
    parameter outside the frozen encoder and bottleneck. BART shares its token embeddings with the encoder, so the
    teacher and same-width students keep them frozen; a latent student trains its own narrower ones."""
    bottleneck = getattr(model, "bottleneck", None)
    parts = (model.get_decoder(), model.get_output_embeddings(), bottleneck)
    resident = torch.nn.ModuleList([m for m in parts if m is not None])
    frozen = {id(p) for p in model.get_encoder().parameters()}  # a latent student's encoder includes its bottleneck
    return resident, [p for p in model.parameters() if id(p) not in frozen]


def train_step_mb(model, batch: tuple[torch.Tensor, ...], device: torch.device) -> float:
    """Resident decoder-side weights + the peak of one step (forward, backward, AdamW), in MiB."""
    resident, trainable = decoder_side(model)
    flags = {p: p.requires_grad for p in model.parameters()}
    trained = {id(p) for p in trainable}
    for p in model.parameters():
        p.requires_grad_(id(p) in trained)
    states, attention_mask, decoder_input_ids, labels = batch

    def step() -> None:
        optimizer = torch.optim.AdamW(trainable, lr=0.0)  # lr 0: the step's memory is measured, the weights kept
        with torch.no_grad():
            latent = getattr(model, "encode_latent", lambda s: s)(states)  # (batch, src_len, d_decoder)
        out = model(encoder_outputs=BaseModelOutput(last_hidden_state=latent), attention_mask=attention_mask,
                    decoder_input_ids=decoder_input_ids, use_cache=False)
        logits = out.logits  # (batch, tgt_len, vocab)
        F.cross_entropy(logits.flatten(0, 1), labels.flatten()).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    model.train()
    try:
        if device.type == "cuda":
            step()  # the first step allocates cuBLAS workspaces once; they are not the step's memory
        peak = peak_memory_bytes(step, device)
    finally:
        model.eval()
        for p, flag in flags.items():
            p.requires_grad_(flag)
    return (tensor_bytes(resident) + peak) / MB


def measure(
    model, config: str, depths: tuple[int, int, int], settings: Settings, source, batch, memory_cache: dict
) -> Row:
    """Times, sizes and weighs one model; `depths` = (encoder layers, decoder layers, decoder width)."""
    encoder_layers, decoder_layers, latent = depths
    counts = parameter_counts(model)
    timing = time_generation(
        model, source, new_tokens=settings.new_tokens, warmup=settings.warmup, repeats=settings.repeats
    )
    encoder = time_encoder(model, source, warmup=settings.warmup, repeats=settings.repeats)
    key = (latent, decoder_layers)  # the fine-tuning step never runs the encoder: its depth does not enter
    if key not in memory_cache:
        memory_cache[key] = train_step_mb(model, batch, settings.device)
    row = Row(config, encoder_layers, decoder_layers, latent, counts["params_decoder"], counts["params_total"],
              timing.median_ms, timing.p90_ms, encoder.median_ms, memory_cache[key])
    print(f"  {config:10s} enc {encoder_layers:2d} dec {decoder_layers:2d} latent {latent:4d}: "
          f"{row.ms:8.1f} ms/summary (p90 {row.p90_ms:.1f}), encoder {row.encoder_ms:6.1f} ms, "
          f"train {row.train_mb:8.1f} MiB", flush=True)
    return row


def run_shape(key: str, settings: Settings) -> dict:
    shape = SHAPES[key]
    print(f"{shape.name}: d {shape.d_model}, {shape.layers}+{shape.layers} layers", flush=True)
    teacher = make_teacher(shape, settings)
    source = source_batch(shape, settings)
    batch = training_batch(shape, settings, teacher.config.decoder_start_token_id)
    memory_cache: dict = {}
    full = (shape.layers, shape.layers, shape.d_model)
    rows = [measure(teacher, "teacher", full, settings, source, batch, memory_cache)]
    half = shape.layers // 2
    for encoder_layers in (shape.layers, half):
        for latent in shape.latents:
            for decoder_layers in shape.decoder_depths:
                depths = (encoder_layers, decoder_layers, latent)
                if depths == full:
                    continue  # that is the teacher
                student = make_student(teacher, shape, latent, decoder_layers, encoder_layers, settings.seed)
                config = "latent" if latent < shape.d_model else "layer drop"
                rows.append(measure(student, config, depths, settings, source, batch, memory_cache))
                del student
                gc.collect()
                if settings.device.type == "cuda":
                    torch.cuda.empty_cache()
    again = time_generation(
        teacher, source, new_tokens=settings.new_tokens, warmup=settings.warmup, repeats=settings.repeats
    )
    return {"key": key, "shape": shape, "rows": rows, "teacher_again_ms": again.median_ms,
            "generation": generation_record(teacher)}


# --- the results file ----------------------------------------------------------------------------------------------


def machine_lines(settings: Settings) -> list[str]:
    cpu = "unknown CPU"
    if Path("/proc/cpuinfo").exists():
        names = [line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                 if line.startswith("model name")]
        cpu = names[0] if names else cpu
    gpu = torch.cuda.get_device_name(settings.device) if settings.device.type == "cuda" else "none used"
    return [
        f"- Machine: {cpu}, {os.cpu_count()} cores, torch threads {torch.get_num_threads()}; GPU: {gpu}",
        f"- Software: Python {platform.python_version()}, torch {torch.__version__}, "
        f"transformers {transformers.__version__}",
        f"- Date: {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC",
    ]


def shape_section(result: dict, settings: Settings) -> list[str]:
    shape, rows = result["shape"], result["rows"]
    teacher = rows[0]
    drift = (result["teacher_again_ms"] - teacher.ms) / teacher.ms
    lines = [
        f"## {shape.name}: d {shape.d_model}, {shape.layers}+{shape.layers} layers, {shape.heads} heads, "
        f"FFN {shape.ffn}, vocabulary {shape.vocab}",
        "",
        f"Generation: batch 1, {settings.source_tokens} source tokens, exactly {settings.new_tokens} new tokens, "
        f"settings {result['generation']}; median of {settings.repeats} timed runs after {settings.warmup} warm-up. "
        f"Fine-tuning step: batch {settings.train_batch}, {settings.target_tokens} target tokens, AdamW. "
        f"Teacher re-timed at the end: {result['teacher_again_ms']:.1f} ms ({drift:+.1%} drift).",
        "",
        "| config | encoder layers | decoder layers | latent | decoder params (M) | total params (M) | ms/summary "
        "| speed-up | train-step peak MB | memory ratio |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        lines.append(
            f"| {row.config} | {row.encoder_layers} | {row.decoder_layers} | {row.latent} "
            f"| {row.decoder_params / 1e6:.1f} "
            f"| {row.total_params / 1e6:.1f} | {row.ms:.1f} | {teacher.ms / row.ms:.2f}x | {row.train_mb:.1f} "
            f"| {row.train_mb / teacher.train_mb:.2f} |"
        )
    lines += ["", "Encoder alone (the limit of decoder-side compression: teacher time ÷ encoder time):", "",
              "| encoder layers | encoder ms | best possible speed-up |", "| --- | --- | --- |"]
    for depth in sorted({row.encoder_layers for row in rows}, reverse=True):
        row = next(r for r in rows if r.encoder_layers == depth and r.config != "latent")
        lines.append(f"| {depth} | {row.encoder_ms:.1f} | {teacher.ms / row.encoder_ms:.2f}x |")
    return lines + [""]


def reference_lines(results: list[dict]) -> list[str]:
    by_key = {(r["key"], row.latent, row.decoder_layers, row.encoder_layers): (row, r["rows"][0])
              for r in results for row in r["rows"]}
    lines = ["## Against the papers", "",
             "Their figures are for trained models, natural-length beam search and GPUs; ours for random weights at a "
             "fixed length on this machine.", "",
             "| figure | paper | ours |", "| --- | --- | --- |"]
    for label, paper, key, what in REFERENCES:
        if key not in by_key:
            lines.append(f"| {label} | {paper} | not measured ({key[0]} shape not run) |")
            continue
        row, teacher = by_key[key]
        ours = {
            "speedup": f"{teacher.ms / row.ms:.2f}x",
            "memory_ratio": f"{row.train_mb / teacher.train_mb:.2f}x",
            "decoder_params": f"{teacher.decoder_params / 1e6:.0f}M -> {row.decoder_params / 1e6:.0f}M",
        }[what]
        lines.append(f"| {label} | {paper} | {ours} |")
    return lines + [""]


def write_results(path: Path, results: list[dict], settings: Settings, command: str) -> None:
    lines = [
        "# Compression benchmark: random-weight BART shapes, teacher vs students", "",
        f"Command: `{command}`", "",
        *machine_lines(settings), f"- Device: {settings.device}", "",
        "Speed-up = teacher ms ÷ model ms; memory ratio = model train-step peak ÷ teacher's. Train-step peak = "
        "resident decoder, LM head and bottleneck weights + the peak of one step on cached encoder states (encoder "
        "and bottleneck frozen), in MiB; on CPU the step's peak is the torch profiler's allocator trace, on CUDA "
        "the allocator's peak. The step does not run the encoder, so its memory is measured once per decoder.", "",
    ]
    for result in results:
        lines += shape_section(result, settings)
    lines += reference_lines(results)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--smoke", action="store_true", help="tiny shape and short inputs (seconds), for CI")
    parser.add_argument("--shapes", default="base,large", help="comma-separated: base, large (ignored with --smoke)")
    parser.add_argument("--out", type=Path, default=None,
                        help="results file (default bench/compression.md; with --smoke a file in the temp folder)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="cpu or cuda[:n]")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: torch's choice; 1 with --smoke, fast on a busy machine)")
    parser.add_argument("--source-tokens", type=int, default=512, help="encoder input length")
    parser.add_argument("--new-tokens", type=int, default=64, help="tokens generated per summary (forced)")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per model")
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs before timing")
    parser.add_argument("--train-batch", type=int, default=8, help="sequences in the fine-tuning step")
    parser.add_argument("--target-tokens", type=int, default=128, help="summary length in the fine-tuning step")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    shapes = ["tiny"] if args.smoke else [s.strip() for s in args.shapes.split(",") if s.strip()]
    unknown = [s for s in shapes if s not in ("base", "large", "tiny")]
    if unknown or not shapes:
        parser.error(f"--shapes takes base and/or large, got {args.shapes!r}; e.g. --shapes base,large")
    args.shape_keys = shapes
    if args.smoke:
        args.source_tokens, args.new_tokens, args.repeats, args.warmup = 32, 8, 2, 1
        args.train_batch, args.target_tokens = 2, 8
        args.threads = args.threads or 1
    if args.out is None:
        args.out = Path(tempfile.gettempdir()) / "compression-smoke.md" if args.smoke else Path("bench/compression.md")
    for name in ("source_tokens", "new_tokens", "repeats", "train_batch", "target_tokens"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be ≥ 1, got {getattr(args, name)}")
    if args.source_tokens + 2 > max(SHAPES[s].positions for s in shapes):
        parser.error(f"--source-tokens must leave room in {max(SHAPES[s].positions for s in shapes)} positions, "
                     f"got {args.source_tokens}")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    transformers.logging.set_verbosity_error()
    settings = Settings(torch.device(args.device), args.source_tokens, args.new_tokens, args.warmup, args.repeats,
                        args.train_batch, args.target_tokens, args.seed)
    command = "python bench/compression.py " + " ".join(sys.argv[1:] if argv is None else argv)
    results = [run_shape(key, settings) for key in args.shape_keys]
    write_results(args.out, results, settings, command.strip())
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
