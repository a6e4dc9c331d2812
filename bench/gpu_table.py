"""GPU table: eager vs compiled generation, fp32 vs bf16, of random-weight BART shapes and their students, beside
the memory-bandwidth bound, plus the fine-tuning memory ratios; with the goals the GPU regime is held to.

Run from the repository root on the lent GPU machine (torch + transformers + safetensors are all it needs; no Ray,
MLflow, dataset or tokenizer). One command must end inside 10 minutes, so the work is ordered by importance and
stops starting new rows once `--time-budget-s` is spent, writing what it has (the file is rewritten after every
row, so even a killed run leaves one):

    PYTHONUNBUFFERED=1 python3 bench/gpu_table.py --device cuda --out $OUT/gpu.md --time-budget-s 420
    PYTHONUNBUFFERED=1 python3 bench/gpu_table.py --device cuda --out $OUT/gpu-b32.md --batches 32 --skip-memory
    python bench/gpu_table.py --smoke --device cpu --out /tmp/gpu-smoke.md     # tiny shapes, seconds; what CI runs

Order: BART-base batch 1 (fp32 eager, fp32 compiled, bf16 eager, bf16 compiled), the memory table, BART-large
batch 1 (the same), then the other batches (default 32) in the same order. A compiled row's first call compiles its
decoder step (torch.compile, CUDA graph) and checks its tokens against the uncompiled step: that costs tens of
seconds per (model, batch, dtype), which is why batch 32 comes last and can be run by a second command. A row is
started only if the time left holds the longest row of its kind so far (shape, batch, runtime; for a kind not yet
seen, the longest of its runtime); rows not reached are listed in the Run status section.

Rows (random weights: cost, not quality), 512 random source tokens, exactly 64 new tokens each (greedy, forced):
- BART-base (d 768, 6+6): teacher, latent 384 × 6 decoder layers, latent 384 × 2, depth-only 6 → 1;
- BART-large (d 1024, 12+12): teacher, distilbart 12-6 and 12-3 (depth-only, distilbart's layer map);
each at batch 1 and 32, fp32 and bf16 (`model.to(torch.bfloat16)`), `eager` (transformers' generate) and
`compiled` (`shrinktune.models.decoding.set_runtime`). Per row: ms per sequence (median of `--repeats` timed runs
after `--warmup`), the speed-up against the teacher of the same (batch, dtype, runtime), the encoder's ms, the
memory-bandwidth bound (`shrinktune.measure.bound.bound_record`) at the measured copy bandwidth and, where the
device reports its clocks, at the datasheet bandwidth, the ratio measured ÷ bound, and whether the compiled runtime
compiled or fell back to its uncompiled step (`compiled_decoder(model).fallback`, marked FELL BACK).

Memory (fp32): the decoder-side fine-tuning step as `bench/compression.py` measures it (cached encoder states,
decoder + LM head + bottleneck resident, one AdamW step; student ÷ teacher) and the papers' full-model measure
(`shrinktune.measure.finetune_memory.finetune_memory_record`: teacher fully trainable, student's decoder only;
batch 8, 512 source, 128 target tokens) for latent 384 × 6 and 384 × 3 (base) and 384 × 3 (large).

Goals, printed PASS/FAIL beside the measured value: the compiled teacher at batch 1 within 5× of its bound;
latent 384 × 6 at least 1.8× faster than the teacher, compiled, batch 1; distilbart 12-6 / 12-3 at least 1.24× /
1.78× faster than the teacher, batch 1. The Run status section says whether every row measured without an error
(the pipeline), separately from the goals.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import gc
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing it

import torch  # noqa: E402
import transformers  # noqa: E402

from bench.compression import (  # noqa: E402
    SHAPES,
    Settings,
    Shape,
    machine_lines,
    make_student,
    make_teacher,
    train_step_mb,
    training_batch,
)
from shrinktune.measure.bound import bound_record, measure_bandwidth, spec_bandwidth  # noqa: E402
from shrinktune.measure.finetune_memory import finetune_memory_record  # noqa: E402
from shrinktune.measure.latency import time_encoder, time_generation  # noqa: E402
from shrinktune.models.decoding import compiled_decoder, set_runtime  # noqa: E402

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
RUNTIMES = ("eager", "compiled")


@dataclass(frozen=True)
class Variant:
    """One model of a shape: the teacher (latent and decoder_layers None) or a student."""

    role: str  # what the goals look it up by: teacher, latent, latent-shallow, depth-1, distil-half, distil-quarter
    label: str  # as the tables show it
    latent: int | None = None  # decoder width; None = the teacher's
    decoder_layers: int | None = None  # decoder depth; None = the teacher's


@dataclass(frozen=True)
class Plan:
    """The shapes, their models and the memory rows of a run (full or smoke)."""

    shapes: dict[str, Shape]
    variants: dict[str, tuple[Variant, ...]]
    memory: tuple[tuple[str, Variant], ...]  # (shape key, latent student) rows of the memory table
    bandwidth_bytes: int  # bytes copied by measure_bandwidth


FULL = Plan(
    shapes={"base": SHAPES["base"], "large": SHAPES["large"]},
    variants={
        "base": (Variant("teacher", "teacher"), Variant("latent", "latent 384×6", 384, 6),
                 Variant("latent-shallow", "latent 384×2", 384, 2), Variant("depth-1", "depth-only 6→1", 768, 1)),
        "large": (Variant("teacher", "teacher"), Variant("distil-half", "distilbart 12-6", 1024, 6),
                  Variant("distil-quarter", "distilbart 12-3", 1024, 3)),
    },
    memory=(("base", Variant("latent", "latent 384×6", 384, 6)), ("base", Variant("latent-3", "latent 384×3", 384, 3)),
            ("large", Variant("latent-3", "latent 384×3", 384, 3))),
    bandwidth_bytes=256 * 2**20,
)
# The same roles at toy sizes: seconds on a CPU, every code path of the full run.
SMOKE = Plan(
    shapes={"base": Shape("tiny base (smoke)", 64, 2, 4, 128, 1000, 128, (), ()),
            "large": Shape("tiny large (smoke)", 64, 4, 4, 128, 1000, 128, (), ())},
    variants={
        "base": (Variant("teacher", "teacher"), Variant("latent", "latent 32×2", 32, 2),
                 Variant("latent-shallow", "latent 32×1", 32, 1), Variant("depth-1", "depth-only 2→1", 64, 1)),
        "large": (Variant("teacher", "teacher"), Variant("distil-half", "depth 4-2", 64, 2),
                  Variant("distil-quarter", "depth 4-1", 64, 1)),
    },
    memory=(("base", Variant("latent", "latent 32×2", 32, 2)), ("base", Variant("latent-3", "latent 32×1", 32, 1)),
            ("large", Variant("latent-3", "latent 32×1", 32, 1))),
    bandwidth_bytes=8 * 2**20,
)

# (shape, role, runtime or None for both, speed-up at least) — speed-ups at batch 1, each dtype
SPEED_GOALS = (("base", "latent", "compiled", 1.8), ("large", "distil-half", None, 1.24),
               ("large", "distil-quarter", None, 1.78))
BOUND_GOAL = 5.0  # the compiled teacher at batch 1: measured ÷ bound at most this


@dataclass
class Row:
    """One timed (shape, batch, dtype, runtime, model)."""

    shape: str
    batch: int
    dtype: str
    runtime: str
    variant: Variant
    ms: float | None = None  # median per sequence
    p90_ms: float | None = None
    encoder_ms: float | None = None  # per sequence
    bound: dict = field(default_factory=dict)  # bound_record at the measured bandwidth
    spec_bound: dict = field(default_factory=dict)  # ... at the datasheet bandwidth (CUDA only)
    compiled: str = "n/a"  # eager: n/a; compiled: "yes (k shapes)", "uncompiled (CPU)" or "FELL BACK: ..."
    fell_back: bool = False
    error: str | None = None
    seconds: float = 0.0


@dataclass
class MemoryRow:
    shape: str
    variant: Variant
    decoder_mb: float | None = None
    teacher_decoder_mb: float | None = None
    full: dict = field(default_factory=dict)  # finetune_memory_record
    error: str | None = None
    seconds: float = 0.0


@dataclass
class Run:
    """Everything measured so far, and why the run stopped early, if it did."""

    args: argparse.Namespace
    settings: Settings
    plan: Plan
    command: str
    bandwidth: float
    spec: float | None
    rows: list[Row] = field(default_factory=list)
    memory: list[MemoryRow] = field(default_factory=list)
    stopped: str | None = None  # why work stopped before the end
    not_reached: list[str] = field(default_factory=list)
    started: float = field(default_factory=time.perf_counter)
    finished: bool = False


class Budget:
    """Starts no unit of work that the time budget cannot hold, judging each by the longest of its kind so far —
    kind = (section, shape, batch, runtime) — or, for a kind not yet seen, the longest of its section and runtime
    (a first compiled row of BART-large is judged by the compiled rows of BART-base)."""

    def __init__(self, seconds: float):
        self.seconds, self.start, self.longest = seconds, time.perf_counter(), {}

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def fits(self, kind: tuple) -> bool:
        alike = [v for k, v in self.longest.items() if (k[0], k[-1]) == (kind[0], kind[-1])]
        return self.elapsed() + self.longest.get(kind, max(alike, default=0.0)) <= self.seconds

    def record(self, kind: tuple, seconds: float) -> None:
        self.longest[kind] = max(self.longest.get(kind, 0.0), seconds)


class Models:
    """Each shape's teacher and students, built once in fp32 on the device, and their bf16 copies on demand."""

    def __init__(self, plan: Plan, settings: Settings):
        self.plan, self.settings, self.built = plan, settings, {}

    def get(self, shape_key: str, variant: Variant, dtype: str):
        key = (shape_key, variant.role, variant.label, dtype)
        if key not in self.built:
            if dtype != "fp32":
                source = self.get(shape_key, variant, "fp32")
                set_runtime(source, "eager")  # copy the model, not its compiled steps (they close over the source)
                self.built[key] = copy.deepcopy(source).to(DTYPES[dtype]).eval()
            elif variant.latent is None:
                self.built[key] = make_teacher(self.plan.shapes[shape_key], self.settings)
            else:
                shape = self.plan.shapes[shape_key]
                teacher = self.get(shape_key, Variant("teacher", "teacher"), "fp32")
                self.built[key] = make_student(teacher, shape, variant.latent, variant.decoder_layers, shape.layers,
                                               self.settings.seed)
        return self.built[key]


def source_batch(shape: Shape, batch: int, settings: Settings) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(settings.seed)
    ids = torch.randint(4, shape.vocab, (batch, settings.source_tokens), generator=generator)  # (batch, src_len)
    return {"input_ids": ids.to(settings.device), "attention_mask": torch.ones_like(ids).to(settings.device)}


def one_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0][:200] if text else ''}".replace("|", "/")


def compiled_state(model, device: torch.device) -> tuple[str, bool]:
    decoder = compiled_decoder(model)
    if decoder is None:
        return "n/a", False
    if decoder.fallback:
        return f"FELL BACK: {decoder.fallback}".replace("|", "/"), True
    if device.type != "cuda":
        return "uncompiled (CPU: static caches)", False
    return f"yes ({decoder.compiled_shapes} step shape(s))", False


def measure_row(run: Run, models: Models, row: Row, encoder_cache: dict) -> None:
    settings = run.settings
    model = models.get(row.shape, row.variant, row.dtype)
    set_runtime(model, "eager")  # a compiled row starts afresh: a fallback at another batch is not carried over
    set_runtime(model, row.runtime)
    inputs = source_batch(run.plan.shapes[row.shape], row.batch, settings)
    timing = time_generation(model, inputs, new_tokens=settings.new_tokens, warmup=settings.warmup,
                             repeats=settings.repeats)
    row.ms, row.p90_ms = timing.median_ms, timing.p90_ms
    encoder_key = (row.shape, row.batch, row.dtype, row.variant.label)  # the encoder runs alike in both runtimes
    if encoder_key not in encoder_cache:
        encoder_cache[encoder_key] = time_encoder(model, inputs, warmup=settings.warmup,
                                                  repeats=settings.repeats).median_ms
    row.encoder_ms = encoder_cache[encoder_key]
    common = dict(batch_size=row.batch, source_tokens=settings.source_tokens, prompt_tokens=1,
                  new_tokens=settings.new_tokens, measured_ms=row.ms, encoder_ms=row.encoder_ms)
    row.bound = bound_record(model, bandwidth_bytes_per_s=run.bandwidth, **common)
    if run.spec:
        row.spec_bound = bound_record(model, bandwidth_bytes_per_s=run.spec, **common)
    row.compiled, row.fell_back = compiled_state(model, settings.device)


def timing_group(run: Run, models: Models, budget: Budget, shape: str, batch: int, dtype: str, runtime: str,
                 encoder_cache: dict) -> bool:
    """Times every model of (shape, batch, dtype, runtime), the teacher first; False once the budget is spent."""
    for variant in run.plan.variants[shape]:
        kind = ("timing", shape, batch, runtime)
        name = f"{run.plan.shapes[shape].name} batch {batch} {dtype} {runtime} {variant.label}"
        if run.stopped or not budget.fits(kind):
            run.stopped = run.stopped or f"time budget of {budget.seconds:.0f} s reached after {budget.elapsed():.0f} s"
            run.not_reached.append(name)
            continue
        row = Row(shape, batch, dtype, runtime, variant)
        start = time.perf_counter()
        try:
            measure_row(run, models, row, encoder_cache)
        except Exception as error:  # noqa: BLE001 — one row's failure is recorded; the others still run
            row.error = one_line(error)
            traceback.print_exc()
        row.seconds = time.perf_counter() - start
        budget.record(kind, row.seconds)
        run.rows.append(row)
        state = (f"ERROR {row.error}" if row.error else
                 f"{row.ms:9.2f} ms/seq, bound ratio {row.bound['bound_ratio']:.1f}")
        print(f"  {name}: {state} ({row.seconds:.0f} s) {'' if row.compiled == 'n/a' else row.compiled}", flush=True)
        write_results(run)
    return not run.stopped


def memory_rows(run: Run, models: Models, budget: Budget, shapes: list[str]) -> None:
    settings = run.settings
    teacher_mb: dict[str, float] = {}
    for shape_key, variant in [m for m in run.plan.memory if m[0] in shapes]:
        name = f"memory {run.plan.shapes[shape_key].name} {variant.label}"
        kind = ("memory", shape_key, 0, "fp32")
        if run.stopped or not budget.fits(kind):
            run.stopped = run.stopped or f"time budget of {budget.seconds:.0f} s reached after {budget.elapsed():.0f} s"
            run.not_reached.append(name)
            continue
        row = MemoryRow(shape_key, variant)
        start = time.perf_counter()
        try:
            shape = run.plan.shapes[shape_key]
            teacher = models.get(shape_key, Variant("teacher", "teacher"), "fp32")
            student = models.get(shape_key, variant, "fp32")
            for model in (teacher, student):
                set_runtime(model, "eager")  # finetune_memory_record deep-copies: not the compiled steps' buffers
            batch = training_batch(shape, settings, teacher.config.decoder_start_token_id)
            if shape_key not in teacher_mb:
                teacher_mb[shape_key] = train_step_mb(teacher, batch, settings.device)
            row.teacher_decoder_mb = teacher_mb[shape_key]
            row.decoder_mb = train_step_mb(student, batch, settings.device)
            row.full = finetune_memory_record(teacher, student, batch_size=settings.train_batch,
                                              source_tokens=settings.source_tokens,
                                              target_tokens=settings.target_tokens)
        except Exception as error:  # noqa: BLE001
            row.error = one_line(error)
            traceback.print_exc()
        row.seconds = time.perf_counter() - start
        budget.record(kind, row.seconds)
        run.memory.append(row)
        state = (f"ERROR {row.error}" if row.error else
                 f"decoder-side {row.decoder_mb / row.teacher_decoder_mb:.2f}, full {row.full['train_full_ratio']:.2f}")
        print(f"  {name}: {state} ({row.seconds:.0f} s)", flush=True)
        write_results(run)


# --- the results file ----------------------------------------------------------------------------------------------


def _f(value: float | None, digits: int = 2, suffix: str = "") -> str:
    return "-" if value is None else f"{value:.{digits}f}{suffix}"


def teacher_row(run: Run, row: Row) -> Row | None:
    return next((r for r in run.rows if (r.shape, r.batch, r.dtype, r.runtime) == (row.shape, row.batch, row.dtype,
                                                                                    row.runtime)
                 and r.variant.role == "teacher" and r.ms), None)


def speedup(run: Run, row: Row) -> float | None:
    teacher = teacher_row(run, row)
    return teacher.ms / row.ms if teacher and row.ms else None


def timing_sections(run: Run) -> list[str]:
    lines = []
    sections = []
    for row in run.rows:
        if (row.shape, row.batch) not in sections:
            sections.append((row.shape, row.batch))
    for shape_key, batch in sections:
        shape = run.plan.shapes[shape_key]
        lines += [
            f"## {shape.name}, batch {batch}", "",
            f"d {shape.d_model}, {shape.layers}+{shape.layers} layers, {shape.heads} heads, FFN {shape.ffn}, "
            f"vocabulary {shape.vocab}; {run.settings.source_tokens} source tokens, exactly "
            f"{run.settings.new_tokens} new tokens per sequence.", "",
            "| model | dtype | runtime | ms/seq | p90 ms | speed-up | encoder ms | bound ms | measured/bound "
            "| bound ms (spec) | measured/spec bound | compiled |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for row in run.rows:
            if (row.shape, row.batch) != (shape_key, batch):
                continue
            if row.error:
                lines.append(f"| {row.variant.label} | {row.dtype} | {row.runtime} | ERROR: {row.error} "
                             "| - | - | - | - | - | - | - | - |")
                continue
            lines.append(
                f"| {row.variant.label} | {row.dtype} | {row.runtime} | {_f(row.ms)} | {_f(row.p90_ms)} "
                f"| {_f(speedup(run, row), 2, 'x')} | {_f(row.encoder_ms)} | {_f(row.bound.get('bound_ms'))} "
                f"| {_f(row.bound.get('bound_ratio'), 1, 'x')} | {_f(row.spec_bound.get('bound_ms'))} "
                f"| {_f(row.spec_bound.get('bound_ratio'), 1, 'x')} | {row.compiled} |")
        lines.append("")
    return lines


def memory_section(run: Run) -> list[str]:
    if not run.memory:
        return []
    s = run.settings
    lines = [
        "## Fine-tuning memory (fp32)", "",
        f"Decoder-side: one AdamW step on cached encoder states (batch {s.train_batch}, {s.source_tokens} source, "
        f"{s.target_tokens} target tokens), decoder + LM head + bottleneck resident, as bench/compression.py measures "
        "it. Full model (the papers' way, `finetune_memory_record`): the teacher fully trainable vs the student with "
        "its encoder and bottleneck frozen, two AdamW steps, same sizes. Papers (Falaki & Gras): latent 384 "
        "fine-tunes in < 0.5x the teacher's memory (ICMLA: 0.43x).", "",
        "| shape | model | decoder-side MiB | teacher decoder-side MiB | decoder-side ratio | full MiB (decoder "
        "trainable) | teacher full MiB (all trainable) | full ratio (papers') |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in run.memory:
        name = run.plan.shapes[row.shape].name
        if row.error:
            lines.append(f"| {name} | {row.variant.label} | ERROR: {row.error} | - | - | - | - | - |")
            continue
        lines.append(
            f"| {name} | {row.variant.label} | {_f(row.decoder_mb, 1)} | {_f(row.teacher_decoder_mb, 1)} "
            f"| {_f(row.decoder_mb / row.teacher_decoder_mb, 2, 'x')} | {_f(row.full['train_full_peak_mb'], 1)} "
            f"| {_f(row.full['teacher_train_full_peak_mb'], 1)} | {_f(row.full['train_full_ratio'], 2, 'x')} |")
    return lines + [""]


def _find(run: Run, shape: str, role: str, batch: int, dtype: str, runtime: str) -> Row | None:
    return next((r for r in run.rows if (r.shape, r.variant.role, r.batch, r.dtype, r.runtime) ==
                 (shape, role, batch, dtype, runtime) and not r.error), None)


def goal_lines(run: Run) -> list[str]:
    """One line per goal and (dtype, runtime): target, measured, PASS / FAIL / not measured."""
    out = []
    dtypes = run.args.dtype_list
    for shape in run.plan.variants:
        name = run.plan.shapes[shape].name
        for dtype in dtypes:
            row = _find(run, shape, "teacher", 1, dtype, "compiled")
            ratio = row.bound.get("bound_ratio") if row else None
            verdict = "not measured" if ratio is None else ("PASS" if ratio <= BOUND_GOAL else "FAIL")
            note = " (compiled step FELL BACK)" if row and row.fell_back else ""
            out.append((f"{name} teacher, compiled, batch 1, {dtype}: within {BOUND_GOAL:g}x of its bound",
                        f"≤ {BOUND_GOAL:.2f}x", _f(ratio, 2, "x") + note, verdict))
    for shape, role, runtime, target in SPEED_GOALS:
        label = next(v.label for v in run.plan.variants[shape] if v.role == role)
        for dtype in dtypes:
            for rt in (runtime,) if runtime else RUNTIMES:
                if rt not in run.args.runtime_list:
                    continue
                row = _find(run, shape, role, 1, dtype, rt)
                value = speedup(run, row) if row else None
                verdict = "not measured" if value is None else ("PASS" if value >= target else "FAIL")
                note = " (compiled step FELL BACK)" if row and row.fell_back else ""
                out.append((f"{run.plan.shapes[shape].name} {label} vs teacher, {rt}, batch 1, {dtype}",
                            f"≥ {target:.2f}x", _f(value, 2, "x") + note, verdict))
    return out


def status_lines(run: Run) -> list[str]:
    errors = [r for r in run.rows if r.error] + [m for m in run.memory if m.error]
    measured = len(run.rows) - sum(1 for r in run.rows if r.error)
    fell_back = [r for r in run.rows if r.fell_back]
    lines = ["## Run status", "",
             "| stage | result | detail |", "| --- | --- | --- |",
             f"| timing rows | {'FAIL' if any(r.error for r in run.rows) else 'PASS'} | {measured} measured, "
             f"{len(run.rows) - measured} errors |",
             f"| memory rows | {'FAIL' if any(m.error for m in run.memory) else 'PASS'} | {len(run.memory)} run, "
             f"{sum(1 for m in run.memory if m.error)} errors |",
             f"| run | {'FAIL' if errors else 'PASS'} | "
             f"{'finished' if run.finished and not run.stopped else (run.stopped or 'in progress')}; "
             f"{time.perf_counter() - run.started:.0f} s |", ""]
    if fell_back:
        lines += [f"Compiled runtime fell back to its uncompiled step in {len(fell_back)} row(s): "
                  + "; ".join(f"{r.variant.label} {r.dtype} batch {r.batch}" for r in fell_back) + ".", ""]
    if run.not_reached:
        lines += [f"Not reached ({len(run.not_reached)}): " + "; ".join(run.not_reached) + ".", ""]
    return lines


def write_results(run: Run) -> None:
    s = run.settings
    spec = f"{run.spec / 1e9:.0f} GB/s (datasheet: memory clock × bus width)" if run.spec else "not reported"
    lines = [
        "# GPU table: eager vs compiled generation, fp32 vs bf16, against the memory-bandwidth bound", "",
        f"Command: `{run.command}`", "",
        *machine_lines(s), f"- Device: {s.device}",
        f"- Bandwidth: measured {run.bandwidth / 1e9:.0f} GB/s (a device copy, read + write); spec {spec}",
        f"- Timing: median of {s.repeats} timed runs after {s.warmup} warm-up, ms per sequence; time budget "
        f"{run.args.time_budget_s:.0f} s", "",
        "Random weights: cost, not quality. Speed-up = the teacher's ms ÷ the model's, same batch, dtype and runtime. "
        "Bound = encoder ms + the bytes each decoding step must read (decoder weights, KV caches) ÷ bandwidth "
        "(`shrinktune.measure.bound`); measured/bound 1 would be perfect.", "",
        "## Goals", "",
        "| goal | target | measured | result |", "| --- | --- | --- | --- |",
        *[f"| {goal} | {target} | {value} | {verdict} |" for goal, target, value, verdict in goal_lines(run)], "",
        *status_lines(run),
        *timing_sections(run),
        *memory_section(run),
    ]
    run.args.out.parent.mkdir(parents=True, exist_ok=True)
    run.args.out.write_text("\n".join(lines))


# --- the run -------------------------------------------------------------------------------------------------------


def _list(text: str, allowed, name: str, parser, cast=str) -> list:
    values = [cast(v.strip()) for v in text.split(",") if v.strip()]
    bad = [v for v in values if allowed is not None and v not in allowed]
    if bad or not values:
        parser.error(f"--{name} takes a comma-separated list of {', '.join(map(str, allowed))}; got {text!r}")
    return values


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="cuda[:n] or cpu")
    parser.add_argument("--out", type=Path, default=Path("bench/gpu.md"), help="results file (Markdown)")
    parser.add_argument("--smoke", action="store_true", help="toy shapes and lengths, seconds on a CPU (CI)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per row (median reported)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs first (compiles a compiled row)")
    parser.add_argument("--time-budget-s", type=float, default=480.0,
                        help="start no row after this many seconds that the longest row of its kind would overrun")
    parser.add_argument("--shapes", default="base,large", help="comma-separated: base, large")
    parser.add_argument("--batches", default="1,32", help="comma-separated batch sizes; the first runs first")
    parser.add_argument("--dtypes", default="fp32,bf16", help="comma-separated: fp32, bf16")
    parser.add_argument("--runtimes", default="eager,compiled", help="comma-separated: eager, compiled")
    parser.add_argument("--skip-memory", action="store_true", help="leave out the memory table")
    parser.add_argument("--source-tokens", type=int, default=512)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: torch's choice; 1 with --smoke)")
    args = parser.parse_args(argv)
    if args.smoke and args.threads is None:
        args.threads = 1
    args.shape_list = _list(args.shapes, ("base", "large"), "shapes", parser)
    args.batch_list = _list(args.batches, None, "batches", parser, int)
    args.dtype_list = _list(args.dtypes, tuple(DTYPES), "dtypes", parser)
    args.runtime_list = _list(args.runtimes, RUNTIMES, "runtimes", parser)
    if args.smoke:
        args.batch_list = [1 if b == 1 else 2 for b in args.batch_list]  # batch 32's part, at batch 2
        args.source_tokens, args.new_tokens, args.repeats, args.warmup = 64, 8, 1, 1
    if min(args.batch_list) < 1 or args.repeats < 1 or args.warmup < 0 or args.new_tokens < 1:
        parser.error("batches, --repeats and --new-tokens must be ≥ 1 and --warmup ≥ 0")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error(f"--device {args.device}: this torch sees no CUDA device; use --device cpu (with --smoke)")
    return args


def work_order(args) -> list[tuple]:
    """Most important first: the first batch of the first shape (each dtype, each runtime), the memory table, the
    first batch of the other shape, then the other batches likewise."""
    shapes = [s for s in ("base", "large") if s in args.shape_list]
    order: list[tuple] = []
    for index, batch in enumerate(args.batch_list):
        for shape in shapes:
            order += [("timing", batch, shape, dtype, runtime) for dtype in args.dtype_list
                      for runtime in args.runtime_list]
            if index == 0 and shape == shapes[0] and not args.skip_memory:
                order.append(("memory", shapes))
    return order


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    transformers.logging.set_verbosity_error()
    plan = SMOKE if args.smoke else FULL
    device = torch.device(args.device)
    train_batch, target_tokens = (2, 8) if args.smoke else (8, 128)
    settings = Settings(device, args.source_tokens, args.new_tokens, args.warmup, args.repeats, train_batch,
                        target_tokens, args.seed)
    command = "python bench/gpu_table.py " + " ".join(sys.argv[1:] if argv is None else argv)
    print(f"measuring bandwidth on {device}", flush=True)
    run = Run(args, settings, plan, command.strip(), measure_bandwidth(device, nbytes=plan.bandwidth_bytes),
              spec_bandwidth(device))
    budget = Budget(args.time_budget_s)
    models = Models(plan, settings)
    encoder_cache: dict = {}
    for step in work_order(args):
        if step[0] == "memory":
            print("fine-tuning memory:", flush=True)
            memory_rows(run, models, budget, step[1])
            continue
        _, batch, shape, dtype, runtime = step
        print(f"{plan.shapes[shape].name}, batch {batch}, {dtype}, {runtime}:", flush=True)
        timing_group(run, models, budget, shape, batch, dtype, runtime, encoder_cache)
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
    run.finished = True
    write_results(run)
    print("\n".join(f"{verdict:12s} {goal}: {value} (target {target})" for goal, target, value, verdict
                    in goal_lines(run)))
    print(f"wrote {args.out} at {datetime.datetime.now(datetime.UTC):%H:%M:%S} UTC "
          f"({time.perf_counter() - run.started:.0f} s)")
    failed = any(r.error for r in run.rows) or any(m.error for m in run.memory)
    return 1 if failed else 0


if __name__ == "__main__":
    # The libraries' objects, made once, out of every collection: each timed run starts with one (measure_latency),
    # which otherwise walks them all (a fifth of a second per run with transformers loaded)
    gc.freeze()
    sys.exit(main())
