"""Science bench: the papers' claims re-tested on the embedded task (ACLSum, MiniLM bert2bert teacher).

Run from the repository root, on a quiet machine: training and timing compete with anything else running. The full
run is sized for at most 25 minutes on 2 cores with the teacher cached (estimated, not yet timed: the results
file's "Run time" table says what it took); each part prints its elapsed time.

    python bench/science.py --out bench/science.md
    python bench/science.py --teacher DIR --parts depth,weights       # a teacher folder of your own, two parts
    python bench/science.py --smoke --out /tmp/science-smoke.md       # tiny random teacher, seconds; what CI runs

The teacher comes from `prepare_embedded_teacher` (trained once, cached) or `--teacher DIR`; its encoder is frozen
and its states on the training documents are cached, as in a search. Four parts, each a table and a one-line
reading computed from the measured numbers against the paper's claim:

- ae (Falaki & Gras): reconstruction MSE and explained variance of the encoder states, on held-out validation
  documents, against the latent width, for the autoencoder kinds pca / linear / mlp.
- depth (Campos & Zhai): students with fewer encoder layers (full decoder) and fewer decoder layers (full encoder),
  trained alike (shrink and fine-tune); ROUGE on validation pairs and fixed-length generation latency, side by side
  in one run, the teacher re-timed at the end for drift.
- methods (Shleifer & Rush): SFT vs KD vs pseudo-labels at one shallow full-width student and one narrow-latent
  student, same epochs; ROUGE and training time.
- weights (Banaei et al.): offline AE vs truncated-SVD compression of the teacher's decoder feed-forward layers at
  equal parameter counts, no retraining (optionally `--repair-epochs 1`); ROUGE and the weights' reconstruction error.

Imports torch, transformers and shrinktune only; seeded; `--threads` (default 2) torch threads.
"""

from __future__ import annotations

import argparse
import copy
import math
import random
import sys
import tempfile
import time
import types
from dataclasses import dataclass, field, replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing it

import numpy as np  # noqa: E402
import torch  # noqa: E402

from bench.compression import machine_lines  # noqa: E402
from bench.parts import fail, run_parts  # noqa: E402
from shrinktune.data.tasks import Task, get_task, load_task_splits  # noqa: E402
from shrinktune.errors import ConfigError, UserError  # noqa: E402
from shrinktune.measure.evaluate import generate_summaries, parameter_counts  # noqa: E402
from shrinktune.measure.latency import generation_record, time_generation  # noqa: E402
from shrinktune.measure.rouge import distinct_fraction, rouge_scores  # noqa: E402
from shrinktune.models.autoencoder import AE_KINDS  # noqa: E402
from shrinktune.models.families import depth, encoder_module, family_of, half_configs  # noqa: E402
from shrinktune.models.generation import GenerationSettings  # noqa: E402
from shrinktune.models.student import build_student  # noqa: E402
from shrinktune.models.teacher import load_teacher, minilm_path, source_token_limit  # noqa: E402
from shrinktune.search.trial import quiet_libraries  # noqa: E402
from shrinktune.settings import TrialSettings  # noqa: E402
from shrinktune.training.weight_compression import (  # noqa: E402
    DECODER_FFN_PATTERN,
    WeightCompression,
    choose_linears,
    compress_weights,
)

DEFAULT_TRIAL = TrialSettings()  # the settings a search's trial starts from
from shrinktune.training.autoencoder import pretrain_autoencoder, token_vectors  # noqa: E402
from shrinktune.training.cache import cache_root  # noqa: E402
from shrinktune.training.distill import DistillSettings, cached_pseudo_labels, pseudo_labelled_pairs  # noqa: E402
from shrinktune.training.encode import EncodedPairs, cached_encoded_pairs  # noqa: E402
from shrinktune.training.finetune import FinetuneSettings, finetune_on_states  # noqa: E402
from shrinktune.training.teacher import prepare_embedded_teacher  # noqa: E402

PARTS = ("ae", "depth", "methods", "weights")
METHODS = ("sft", "kd", "pseudo_labels")


@dataclass(frozen=True)
class Settings:
    """Sizes of one run: the defaults are the full run (≤ 25 minutes on 2 cores); `smoke_sizes()` takes seconds."""

    parts: tuple[str, ...] = PARTS  # which parts run, in this order
    smoke: bool = False  # tiny random teacher and a handful of examples
    train_examples: int = 0  # training pairs used (0 = the whole split)
    eval_samples: int = 60  # validation pairs scored with ROUGE (the first ones: whole papers, 3 aspects each)
    max_source_tokens: int = 0  # encoder input length (0 = the task's, capped by the teacher's positions)
    max_new_tokens: int = 48  # longest generated summary (greedy, no repeated 3-grams, as a search's default)
    new_tokens: int = 32  # forced summary length of the latency figure
    latency_samples: int = 5  # documents per timed pass, batch 1
    latency_repeats: int = 3  # timed passes; the median is reported
    epochs: int = DEFAULT_TRIAL.epochs  # training epochs of every student (depth and methods)
    learning_rate: float = DEFAULT_TRIAL.learning_rate  # AdamW peak
    batch_size: int = DEFAULT_TRIAL.batch_size  # pairs per step
    ae_widths: tuple[int, ...] = (32, 64, 96, 192, 288)  # latent widths of the ae part
    ae_kinds: tuple[str, ...] = AE_KINDS  # autoencoder kinds of the ae part
    ae_epochs: int = DEFAULT_TRIAL.ae_epochs  # training epochs of the linear and mlp autoencoders
    encoder_depths: tuple[int, ...] = (6, 4, 2)  # depth part: encoder depths, decoder kept whole
    decoder_depths: tuple[int, ...] = (6, 3, 1)  # depth part: decoder depths, encoder kept whole
    methods_decoder_layers: int = 2  # methods part: decoder depth of both students
    methods_latent: int = 192  # methods part: width of the narrow student (mlp bottleneck)
    narrow_epochs: int = 3  # methods part: epochs of the narrow student, whose decoder starts from scratch
    narrow_learning_rate: float = 2e-3  # its AdamW peak (the search's enqueued latent-192 configuration; at 3e-4
    # and 2 epochs such a decoder still predicts unigram frequencies: empty summaries)
    weight_ratios: tuple[float, ...] = (2.0, 4.0, 8.0)  # weights part: FFN parameters before ÷ after
    weight_ae_epochs: int = 40  # weights part: row-autoencoder epochs (the library default is 300)
    repair_epochs: int = 0  # weights part: epochs of fine-tuning after compression (0 = none)
    threads: int = 2  # torch CPU threads (smoke: 1, which is faster for toy models on a busy machine)
    seed: int = 0  # every initialisation, shuffle and sample

    def __post_init__(self):
        unknown = [p for p in self.parts if p not in PARTS]
        if unknown or not self.parts:
            raise ConfigError(f"--parts takes a comma-separated subset of {','.join(PARTS)}, got {self.parts}; "
                              f"e.g. --parts ae,weights.")
        for name in ("eval_samples", "max_new_tokens", "new_tokens", "latency_samples", "latency_repeats", "epochs",
                     "batch_size", "ae_epochs", "methods_decoder_layers", "methods_latent", "narrow_epochs",
                     "weight_ae_epochs", "threads"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be ≥ 1, got {getattr(self, name)}; raise it.")
        for name in ("train_examples", "max_source_tokens", "repair_epochs"):
            if getattr(self, name) < 0:
                raise ConfigError(f"--{name.replace('_', '-')} must be ≥ 0, got {getattr(self, name)}.")
        for name in ("ae_widths", "encoder_depths", "decoder_depths"):
            values = getattr(self, name)
            if not values or min(values) < 1:
                raise ConfigError(f"--{name.replace('_', '-')} needs positive integers, got {values}; e.g. 6,4,2.")
        if [k for k in self.ae_kinds if k not in AE_KINDS] or not self.ae_kinds:
            raise ConfigError(f"--ae-kinds takes a subset of {','.join(AE_KINDS)}, got {self.ae_kinds}.")
        if not self.weight_ratios or min(self.weight_ratios) <= 1:
            raise ConfigError(f"--weight-ratios must all be > 1 (parameters before ÷ after), got "
                              f"{self.weight_ratios}; e.g. 2,4,8.")
        for name in ("learning_rate", "narrow_learning_rate"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"--{name.replace('_', '-')} must be > 0, got {getattr(self, name)}.")

    @classmethod
    def smoke_sizes(cls, **overrides) -> Settings:
        """Every part at toy size, for a 2-layer, 32-wide random teacher."""
        return cls(**{**dict(
            smoke=True, train_examples=12, eval_samples=6, max_source_tokens=64, max_new_tokens=8, new_tokens=4,
            latency_samples=2, latency_repeats=1, epochs=1, batch_size=4, ae_widths=(8, 16, 24), ae_epochs=2,
            encoder_depths=(2, 1), decoder_depths=(2, 1), methods_decoder_layers=1, methods_latent=16, narrow_epochs=1,
            weight_ratios=(2.0, 4.0), weight_ae_epochs=3, threads=1), **overrides})


@dataclass
class Setup:
    """What every part of a run shares: teacher, data, cached states, and results computed once."""

    settings: Settings
    teacher: torch.nn.Module  # frozen, in eval mode, with the run's generation settings
    tokenizer: object
    teacher_name: str  # folder, or "tiny random" in smoke mode
    task: Task  # with the run's source length
    train: list  # training pairs
    validation: list  # validation pairs
    pairs: EncodedPairs  # teacher encoder states of `train`
    cache: Path  # cache root for encoder states, pseudo-labels
    memo: dict = field(default_factory=dict)  # results shared between parts (teacher quality, autoencoders)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def first_of_each_document(examples: list) -> list[int]:
    """Row of each document's first pair: ACLSum gives a paper three pairs whose sources differ in one word."""
    seen, rows = set(), []
    for row, example in enumerate(examples):
        if example.document not in seen:
            seen.add(example.document)
            rows.append(row)
    return rows


def load_setup(settings: Settings, teacher_dir: str | None, cache: Path) -> Setup:
    task = get_task("summarization")
    splits = load_task_splits(task, ("train", "validation"))
    train = splits["train"][: settings.train_examples or None]
    if settings.smoke:
        from transformers import AutoTokenizer

        from tests.conftest import make_tiny_bert2bert

        tokenizer = AutoTokenizer.from_pretrained(minilm_path())
        teacher, name = make_tiny_bert2bert(tokenizer, width=32, layers=2, seed=settings.seed), "tiny random bert2bert"
    else:
        # the search's teacher: prepared on the whole training split, whatever --train-examples says
        name = teacher_dir or str(prepare_embedded_teacher(task, splits["train"], root=cache))
        teacher, tokenizer = load_teacher(name)
    teacher.eval()
    source_tokens = source_token_limit(teacher, settings.max_source_tokens or task.max_source_tokens)
    task = replace(task, max_source_tokens=source_tokens)
    GenerationSettings(max_new_tokens=settings.max_new_tokens).apply(teacher)
    pairs = encoded(teacher, tokenizer, task, train, cache)
    return Setup(settings, teacher, tokenizer, name, task, train, splits["validation"], pairs, cache)


def encoded(model, tokenizer, task: Task, examples: list, cache: Path) -> EncodedPairs:
    """States of `model`'s (frozen) encoder on the examples, cached like a search's."""
    return cached_encoded_pairs(
        encoder_module(model), tokenizer, examples, max_source_tokens=task.max_source_tokens,
        max_target_tokens=task.max_target_tokens, start_id=model.config.decoder_start_token_id, root=cache,
    )


def quality(model, setup: Setup) -> dict[str, float]:
    """ROUGE F1 (and the share of distinct summaries) on the first `eval_samples` validation pairs."""
    examples = setup.validation[: setup.settings.eval_samples]
    predictions = generate_summaries(model, setup.tokenizer, examples, max_source_tokens=setup.task.max_source_tokens)
    return {**rouge_scores(predictions, [e.summary for e in examples]), "distinct": distinct_fraction(predictions)}


def fixed_latency_ms(model, setup: Setup) -> float:
    """Median ms per summary at batch 1, every summary exactly `new_tokens` long."""
    s = setup.settings
    inputs = [setup.tokenizer(e.source, max_length=setup.task.max_source_tokens, truncation=True, return_tensors="pt")
              for e in setup.validation[: s.latency_samples]]
    inputs = [{k: v for k, v in batch.items() if k in ("input_ids", "attention_mask")} for batch in inputs]
    return time_generation(model, inputs, new_tokens=s.new_tokens, warmup=1, repeats=s.latency_repeats).median_ms


def teacher_quality(setup: Setup) -> dict[str, float]:
    if "teacher_quality" not in setup.memo:
        setup.memo["teacher_quality"] = quality(setup.teacher, setup)
    return setup.memo["teacher_quality"]


def train_student(student, pairs: EncodedPairs, setup: Setup, distill: DistillSettings | None = None,
                  epochs: int | None = None, learning_rate: float | None = None) -> float:
    """Fine-tunes what sits after the frozen encoder; returns the seconds it took."""
    s = setup.settings
    finetune = FinetuneSettings(epochs=epochs or s.epochs, learning_rate=learning_rate or s.learning_rate,
                                batch_size=s.batch_size, seed=s.seed)
    start = time.perf_counter()
    finetune_on_states(student, pairs, finetune, teacher=setup.teacher if distill and distill.method == "kd" else None,
                       distill=distill)
    return time.perf_counter() - start


def teacher_width(setup: Setup) -> int:
    config = half_configs(setup.teacher)[0]
    return getattr(config, family_of(config).width)


def fitted_autoencoder(setup: Setup, kind: str, latent: int):
    """(autoencoder, fit seconds), trained once per run on the training states as a search trains it; shared by
    the parts."""
    key = ("autoencoder", kind, latent)
    if key not in setup.memo:
        start = time.perf_counter()
        result = pretrain_autoencoder(setup.pairs.states, setup.pairs.attention_mask, latent, kind=kind,
                                      epochs=setup.settings.ae_epochs, seed=setup.settings.seed)
        setup.memo[key] = (result.autoencoder.eval(), time.perf_counter() - start)
    return setup.memo[key]


def verdict(holds: list[bool]) -> str:
    if all(holds):
        return "agrees"
    return "disagrees" if not any(holds) else "partly agrees"


def fmt(value: float, digits: int = 3) -> str:
    return f"{value:.{digits}f}"


# --- ae: reconstruction error against the latent width ------------------------------------------------------------


def run_ae(setup: Setup) -> dict:
    s, width = setup.settings, teacher_width(setup)
    too_wide = [latent for latent in s.ae_widths if latent >= width]
    if too_wide:
        raise ConfigError(f"--ae-widths must stay below the encoder width ({width}), got {too_wide}; drop them.")
    held_out = [setup.validation[i] for i in first_of_each_document(setup.validation)]
    states = encoded(setup.teacher, setup.tokenizer, setup.task, held_out, setup.cache)
    vectors = token_vectors(states.states, states.attention_mask).float()  # (tokens, d)
    total = (vectors - vectors.mean(0)).pow(2).sum()  # spread of the held-out vectors around their own mean
    rows = []
    for latent in sorted(s.ae_widths):
        row = {"latent": latent}
        for kind in s.ae_kinds:
            ae, seconds = fitted_autoencoder(setup, kind, latent)
            with torch.no_grad():
                error = (ae(vectors) - vectors).pow(2)  # (tokens, d)
            row[kind] = {"mse": error.mean().item(), "explained": 1 - (error.sum() / total).item(), "fit_s": seconds}
            print(f"  ae {kind:6s} latent {latent:4d}: held-out mse {row[kind]['mse']:.5f}, "
                  f"explained variance {row[kind]['explained']:.3f} ({seconds:.1f} s)", flush=True)
        rows.append(row)
    return {"rows": rows, "documents": len(held_out), "vectors": vectors.shape[0], "width": width}


def ae_section(result: dict, setup: Setup) -> list[str]:
    s, rows = setup.settings, result["rows"]
    kinds = s.ae_kinds
    lines = [
        "## ae: autoencoder reconstruction vs latent width (Falaki & Gras)", "",
        f"Autoencoders of the teacher's encoder states (width {result['width']}), trained as a search trains them "
        f"(`pretrain_autoencoder` on the states of the {len(setup.train)} training pairs; mlp and linear "
        f"{s.ae_epochs} epochs, pca fitted), scored on the {result['vectors']} token vectors of {result['documents']} "
        "held-out validation papers (one pair each). MSE per element; explained variance = 1 − squared error ÷ "
        "squared spread around the held-out mean.", "",
        "| latent | " + " | ".join(f"{k} MSE" for k in kinds) + " | " + " | ".join(f"{k} explained var." for k in kinds)
        + " |",
        "| --- " * (1 + 2 * len(kinds)) + "|",
    ]
    for row in rows:
        lines.append(f"| {row['latent']} | " + " | ".join(f"{row[k]['mse']:.5f}" for k in kinds) + " | "
                     + " | ".join(fmt(row[k]["explained"]) for k in kinds) + " |")
    falling = {k: all(b[k]["mse"] <= a[k]["mse"] for a, b in zip(rows, rows[1:])) for k in kinds}
    spans = ", ".join(f"{k} {rows[0][k]['mse']:.4g} → {rows[-1][k]['mse']:.4g} "
                      f"({rows[0][k]['mse'] / max(rows[-1][k]['mse'], 1e-12):.1f}×)" for k in kinds)
    best = [min(kinds, key=lambda k: row[k]["mse"]) for row in rows]
    best_text = ", ".join(f"{k} at {best.count(k)}" for k in kinds if best.count(k))
    lines += ["", f"**Reading:** Falaki & Gras: reconstruction MSE falls as the latent widens (linear AE on "
              f"BART-base states .0930 at 32 → .0278 at 384 of 768, 3.3×). Here it falls at every step for "
              f"{sum(falling.values())} of {len(kinds)} kinds ({spans}, latent {rows[0]['latent']} → "
              f"{rows[-1]['latent']} of {result['width']}) → **{verdict(list(falling.values()))}**. Lowest held-out "
              f"MSE: {best_text} of {len(rows)} widths.", ""]
    return lines


# --- depth: quality follows the encoder, latency the decoder ------------------------------------------------------


def run_depth(setup: Setup) -> dict:
    s, teacher = setup.settings, setup.teacher
    enc_cfg, dec_cfg = half_configs(teacher)
    full_enc, full_dec = depth(enc_cfg, "encoder"), depth(dec_cfg, "decoder")
    counts = parameter_counts(teacher)
    rows = [{"name": "teacher", "encoder": full_enc, "decoder": full_dec, "kept_encoder": "all", "kept_decoder": "all",
             "params": counts["params_total"], "decoder_params": counts["params_decoder"],
             **teacher_quality(setup), "ms": fixed_latency_ms(teacher, setup), "train_s": float("nan")}]
    print(f"  teacher {full_enc}-{full_dec}: R-2 {rows[0]['rouge2']:.3f}, {rows[0]['ms']:.1f} ms", flush=True)
    shapes = [(e, full_dec) for e in s.encoder_depths] + [(full_enc, d) for d in s.decoder_depths if d != full_dec]
    if (full_enc, full_dec) not in shapes:
        shapes.insert(0, (full_enc, full_dec))  # the fair reference: the teacher's shape, trained the same
    for enc, dec in dict.fromkeys(shapes):
        seed_everything(s.seed)
        student = build_student(teacher, encoder_layers=enc, decoder_layers=dec, layer_map=DEFAULT_TRIAL.layer_map)
        # a shallower encoder gives other states: the decoder learns on those (cached per encoder, like a search)
        pairs = setup.pairs
        if enc != full_enc:
            pairs = encoded(student, setup.tokenizer, setup.task, setup.train, setup.cache)
        seconds = train_student(student, pairs, setup)
        counts, info = parameter_counts(student), student.config.student
        rows.append({"name": "student", "encoder": enc, "decoder": dec,
                     "kept_encoder": ",".join(map(str, info["kept_encoder_layers"])),
                     "kept_decoder": ",".join(map(str, info["kept_decoder_layers"])),
                     "params": counts["params_total"], "decoder_params": counts["params_decoder"],
                     **quality(student, setup), "ms": fixed_latency_ms(student, setup), "train_s": seconds})
        print(f"  student {enc}-{dec}: R-2 {rows[-1]['rouge2']:.3f}, {rows[-1]['ms']:.1f} ms, "
              f"trained {seconds:.0f} s", flush=True)
        del student
    again = fixed_latency_ms(teacher, setup)
    return {"rows": rows, "teacher_again_ms": again, "full": (full_enc, full_dec)}


def _per_layer(rows: list[dict], side: str, key: str, reference: dict) -> float:
    """Least-squares slope of `key` against layers removed on one side (the reference = none removed)."""
    layers = [reference[side] - r[side] for r in rows]
    values = [r[key] for r in rows]
    mean_x, mean_y = sum(layers) / len(layers), sum(values) / len(values)
    spread = sum((x - mean_x) ** 2 for x in layers)
    return sum((x - mean_x) * (y - mean_y) for x, y in zip(layers, values)) / spread if spread else float("nan")


def depth_section(result: dict, setup: Setup) -> list[str]:
    s, rows = setup.settings, result["rows"]
    teacher, (full_enc, full_dec) = rows[0], result["full"]
    drift = (result["teacher_again_ms"] - teacher["ms"]) / teacher["ms"]
    lines = [
        "## depth: quality follows the encoder, latency the decoder (Campos & Zhai)", "",
        f"Students at the teacher's width, kept layers copied ({DEFAULT_TRIAL.layer_map} map), frozen encoder, "
        f"each trained for {s.epochs} epoch(s) (lr {s.learning_rate:g}, batch {s.batch_size}) with cross-entropy on "
        f"{len(setup.train)} training pairs; a shallower encoder's states re-encoded for its decoder (the encoder "
        "stays frozen, as in a search: unlike the paper's, its remaining layers do not adapt). ROUGE F1 on "
        f"{min(s.eval_samples, len(setup.validation))} validation pairs, settings {generation_record(setup.teacher)}. "
        f"Latency: batch 1, {s.latency_samples} documents, exactly {s.new_tokens} new tokens, median of "
        f"{s.latency_repeats} passes; teacher re-timed at the end: {result['teacher_again_ms']:.1f} ms "
        f"({drift:+.1%} drift).", "",
        "| model | encoder layers | decoder layers | kept encoder | kept decoder | params (M) | decoder params (M) "
        "| R-1 | R-2 | R-L | distinct | ms/summary | speed-up | train s |",
        "| --- " * 14 + "|",
    ]
    for r in rows:
        train = "-" if math.isnan(r["train_s"]) else f"{r['train_s']:.1f}"
        lines.append(
            f"| {r['name']} | {r['encoder']} | {r['decoder']} | {r['kept_encoder']} | {r['kept_decoder']} "
            f"| {r['params'] / 1e6:.2f} | {r['decoder_params'] / 1e6:.2f} | {fmt(r['rouge1'])} | {fmt(r['rouge2'])} "
            f"| {fmt(r['rougeL'])} | {fmt(r['distinct'], 2)} | {r['ms']:.1f} | {teacher['ms'] / r['ms']:.2f}x "
            f"| {train} |")
    students = rows[1:]
    reference = next(r for r in students if (r["encoder"], r["decoder"]) == (full_enc, full_dec))
    enc_side = [r for r in students if r["decoder"] == full_dec]
    dec_side = [r for r in students if r["encoder"] == full_enc]
    # change per removed layer (least-squares slope): ROUGE in points of F1, time as a share of the reference's
    slope = {(side, key): _per_layer(group, side, key, reference) / (reference["ms"] if key == "ms" else 1)
             for side, group in (("encoder", enc_side), ("decoder", dec_side)) for key in ("rouge1", "rouge2", "ms")}
    holds = [slope[("encoder", k)] < slope[("decoder", k)] for k in ("rouge1", "rouge2")]  # encoder cuts lose more
    holds.append(slope[("decoder", "ms")] < slope[("encoder", "ms")])  # decoder cuts save more time
    per_layer = "; ".join(f"{side} layers R-1 {slope[(side, 'rouge1')]:+.4f}, R-2 {slope[(side, 'rouge2')]:+.4f}, "
                          f"time {slope[(side, 'ms')]:+.1%}" for side in ("encoder", "decoder"))
    speedups = ", ".join(f"{r['encoder']}-{r['decoder']} {teacher['ms'] / r['ms']:.2f}x" for r in students
                         if r is not reference)
    yes = lambda held: "yes" if held else "no"  # noqa: E731
    lines += ["", f"**Reading:** Campos & Zhai (FLAN-T5-base, A10): quality follows the encoder, latency the decoder "
              f"(6-3 1.58x, 6-1 2.65x, 5-6 1.01x faster than 6-6). Change per removed layer here: {per_layer} "
              f"(speed-ups {speedups}) → **{verdict(holds)}** (encoder cuts cost more R-1: {yes(holds[0])}, more "
              f"R-2: {yes(holds[1])}; decoder cuts save more time: {yes(holds[2])}).", ""]
    return lines


# --- methods: SFT vs KD vs pseudo-labels ----------------------------------------------------------------------------


def run_methods(setup: Setup) -> dict:
    s, teacher = setup.settings, setup.teacher
    width = teacher_width(setup)
    if s.methods_latent >= width:
        raise ConfigError(f"--methods-latent must be below the encoder width ({width}), got {s.methods_latent}.")
    start = time.perf_counter()
    labelled = cached_pseudo_labels(teacher, setup.tokenizer, setup.train,
                                    max_source_tokens=setup.task.max_source_tokens, root=setup.cache)
    labelling_s = time.perf_counter() - start
    pseudo = pseudo_labelled_pairs(setup.pairs, setup.tokenizer, labelled,
                                   max_target_tokens=setup.task.max_target_tokens,
                                   start_id=teacher.config.decoder_start_token_id)
    teacher_quality(setup)  # the reference line of the table
    rows = []
    for latent in (width, s.methods_latent):
        bottleneck, schedule = {}, {}
        if latent < width:
            ae, _ = fitted_autoencoder(setup, "mlp", latent)
            bottleneck = {"bottleneck": ae.encoder, "bottleneck_spec": ae.spec}
            schedule = {"epochs": s.narrow_epochs, "learning_rate": s.narrow_learning_rate}
        for method in METHODS:
            seed_everything(s.seed)
            student = build_student(teacher, latent_dim=latent, decoder_layers=s.methods_decoder_layers,
                                    layer_map=DEFAULT_TRIAL.layer_map, **bottleneck)
            pairs = pseudo if method == "pseudo_labels" else setup.pairs
            seconds = train_student(student, pairs, setup, DistillSettings(method=method), **schedule)
            counts = parameter_counts(student)
            rows.append({"latent": latent, "method": method, "decoder_params": counts["params_decoder"],
                         **quality(student, setup), "train_s": seconds})
            print(f"  {method:13s} latent {latent:4d}: R-2 {rows[-1]['rouge2']:.3f}, trained {seconds:.0f} s",
                  flush=True)
            del student
    return {"rows": rows, "labelling_s": labelling_s, "width": width}


def methods_section(result: dict, setup: Setup) -> list[str]:
    s, rows, width = setup.settings, result["rows"], result["width"]
    teacher = teacher_quality(setup)
    kd = DistillSettings(method="kd")
    lines = [
        "## methods: SFT vs KD vs pseudo-labels (Shleifer & Rush)", "",
        f"Students with {s.methods_decoder_layers} decoder layers at the teacher's width {width} (kept layers copied) "
        f"and at latent {s.methods_latent} (pre-trained mlp bottleneck, frozen; fresh decoder, the teacher's FFN "
        f"width), trained for {s.epochs} epoch(s) at lr {s.learning_rate:g} (width {width}) and {s.narrow_epochs} "
        f"epoch(s) at lr {s.narrow_learning_rate:g} (latent {s.methods_latent}, whose decoder starts from scratch), "
        f"batch {s.batch_size}, on {len(setup.train)} pairs. sft: "
        f"cross-entropy on the references; kd: {kd.alpha_ce} · KL at T = {kd.temperature:g} + {kd.alpha_mlm} · "
        f"cross-entropy, the teacher run on every batch; pseudo_labels: cross-entropy on the teacher's own summaries "
        f"(generated once, {result['labelling_s']:.1f} s here — near 0 when read from the cache). Teacher: R-1 "
        f"{fmt(teacher['rouge1'])}, R-2 {fmt(teacher['rouge2'])}, R-L {fmt(teacher['rougeL'])}, on "
        f"{min(s.eval_samples, len(setup.validation))} validation pairs.", "",
        "| latent | method | decoder params (M) | R-1 | R-2 | R-L | distinct | train s |",
        "| --- " * 8 + "|",
    ]
    for r in rows:
        lines.append(f"| {r['latent']} | {r['method']} | {r['decoder_params'] / 1e6:.2f} | {fmt(r['rouge1'])} "
                     f"| {fmt(r['rouge2'])} | {fmt(r['rougeL'])} | {fmt(r['distinct'], 2)} | {r['train_s']:.1f} |")
    by_shape = {}
    for r in rows:
        by_shape.setdefault(r["latent"], {})[r["method"]] = r
    best = {latent: max(group.values(), key=lambda r: (r["rouge2"], r["rouge1"]))["method"]
            for latent, group in by_shape.items()}
    slower = {latent: group["kd"]["train_s"] / group["sft"]["train_s"] for latent, group in by_shape.items()}
    holds = [method == "kd" for method in best.values()] + [ratio > 1 for ratio in slower.values()]
    best_text = ", ".join(f"latent {latent}: {method}" for latent, method in best.items())
    slower_text = ", ".join(f"{ratio:.2f}x" for ratio in slower.values())
    lines += ["", f"**Reading:** Shleifer & Rush: the winner depends on the data (SFT on CNN/DM, KD on XSum for "
              f"BART, PL for Pegasus), and KD pays a teacher forward pass per step. ACLSum's short abstractive "
              f"summaries are closest to XSum, where KD won; best here by R-2 — {best_text}; KD trained "
              f"{slower_text} as long as SFT → **{verdict(holds)}** (KD best at "
              f"{sum(m == 'kd' for m in best.values())} of {len(best)} shapes; KD slower at "
              f"{sum(r > 1 for r in slower.values())} of {len(slower)}).", ""]
    return lines


# --- weights: AE vs SVD compression of the decoder's feed-forward weights -------------------------------------------


def run_weights(setup: Setup) -> dict:
    s = setup.settings
    teacher_quality(setup)  # the reference line of the table
    rows = []
    for ratio in s.weight_ratios:
        for method in ("svd", "ae"):
            model = copy.deepcopy(setup.teacher)
            chosen = choose_linears(model, (DECODER_FFN_PATTERN,))  # what compress_weights replaces by default
            originals = {name: linear.weight.detach().clone() for name, linear in chosen.items()}
            start = time.perf_counter()
            report = compress_weights(model, WeightCompression(method=method, ratio=ratio, ae_epochs=s.weight_ae_epochs,
                                                               seed=s.seed))
            seconds = time.perf_counter() - start
            model.eval()
            with torch.no_grad():
                squared = sum((model.get_submodule(name).weight.float() - weight.float()).pow(2).sum()
                              for name, weight in originals.items())
                norm = sum(w.float().pow(2).sum() for w in originals.values())
            row = {"ratio": ratio, "method": method, "before": report["params_before"], "after": report["params_after"],
                   "achieved": report["achieved_ratio"], "error": math.sqrt(float(squared / norm)),
                   "modules": len(originals), "compress_s": seconds, **quality(model, setup)}
            if method == "ae":
                row["loss"] = {g: (v["losses"][0], v["losses"][-1]) for g, v in report["groups"].items()}
            if s.repair_epochs:
                seed_everything(s.seed)
                train_student(model, setup.pairs, setup, epochs=s.repair_epochs)
                row["repaired"] = quality(model, setup)
            rows.append(row)
            print(f"  {method:3s} ratio {ratio:g}: weight error {row['error']:.3f}, R-2 {row['rouge2']:.3f} "
                  f"({seconds:.0f} s)", flush=True)
            del model
    return {"rows": rows}


def weights_section(result: dict, setup: Setup) -> list[str]:
    s, rows = setup.settings, result["rows"]
    teacher = teacher_quality(setup)
    repair = bool(s.repair_epochs)
    losses = "; ".join(f"ratio {r['ratio']:g}: " + ", ".join(f"{group} {first:.3f} → {last:.3f}"
                                                             for group, (first, last) in r["loss"].items())
                       for r in rows if r["method"] == "ae")
    lines = [
        "## weights: AE vs SVD offline compression of the decoder FFN (Banaei et al.)", "",
        f"The teacher's {rows[0]['modules']} decoder feed-forward Linear layers replaced at each ratio (parameters "
        f"before ÷ after, biases kept) by truncated SVD or by row codes + one shared decoder per input width (AE: "
        f"mlp encoder, cosine + 0.1 · relative MSE, {s.weight_ae_epochs} epochs — the library default is 300; loss "
        f"first → last epoch: {losses}). "
        + (f"Then {s.repair_epochs} epoch(s) of repair, cross-entropy, encoder frozen. " if repair else
           "No retraining. ")
        + f"Weight error = ‖W − Ŵ‖ ÷ ‖W‖ over all replaced matrices. Teacher: R-1 {fmt(teacher['rouge1'])}, R-2 "
        f"{fmt(teacher['rouge2'])}, R-L {fmt(teacher['rougeL'])}, on {min(s.eval_samples, len(setup.validation))} "
        "validation pairs.", "",
        "| ratio | method | FFN params before (M) | after (M) | achieved ratio | weight error | R-1 | R-2 | R-L "
        "| distinct | compress s |" + (" R-1 repaired | R-2 repaired |" if repair else ""),
        "| --- " * (11 + 2 * repair) + "|",
    ]
    for r in rows:
        line = (f"| {r['ratio']:g} | {r['method']} | {r['before'] / 1e6:.3f} | {r['after'] / 1e6:.3f} "
                f"| {r['achieved']:.2f} | {r['error']:.3f} | {fmt(r['rouge1'])} | {fmt(r['rouge2'])} "
                f"| {fmt(r['rougeL'])} | {fmt(r['distinct'], 2)} | {r['compress_s']:.1f} |")
        if repair:
            line += f" {fmt(r['repaired']['rouge1'])} | {fmt(r['repaired']['rouge2'])} |"
        lines.append(line)
    pairs = {}
    for r in rows:
        pairs.setdefault(r["ratio"], {})[r["method"]] = r
    score = lambda r: (r["rougeL"], r["rouge1"], r["rouge2"])  # noqa: E731  a tie on one metric goes to the next
    ahead = [score(p["ae"]) > score(p["svd"]) for p in pairs.values()]
    tied = sum(score(p["ae"]) == score(p["svd"]) for p in pairs.values())
    lower_error = [p["ae"]["error"] < p["svd"]["error"] for p in pairs.values()]
    lines += ["", f"**Reading:** Banaei et al.: at equal parameter counts, with no fine-tuning, the row autoencoder "
              f"beats truncated SVD. Here AE is ahead on ROUGE-L (then R-1, R-2) at {sum(ahead)} of {len(pairs)} "
              f"ratios ({tied} tied) and has the lower weight error at {sum(lower_error)} of {len(pairs)} → "
              f"**{verdict(ahead)}** on quality ({verdict(lower_error)} on weight error).", ""]
    return lines


RUNNERS = {"ae": (run_ae, ae_section), "depth": (run_depth, depth_section),
           "methods": (run_methods, methods_section), "weights": (run_weights, weights_section)}


# --- the results file ----------------------------------------------------------------------------------------------


def write_results(path: Path, setup: Setup, results: dict, elapsed: dict, command: str) -> None:
    s = setup.settings
    lines = [
        "# Science bench: the papers' claims re-tested on the embedded task", "",
        f"Command: `{command}`", "",
        *machine_lines(types.SimpleNamespace(device=torch.device("cpu"))),
        f"- Teacher: {setup.teacher_name} ({parameter_counts(setup.teacher)['params_total'] / 1e6:.1f}M parameters); "
        f"task {setup.task.name}, {len(setup.train)} training pairs, source {setup.task.max_source_tokens} tokens, "
        f"target {setup.task.max_target_tokens}; seed {s.seed}",
        "",
        "Each reading is computed from the numbers in its table. The papers used other models, data and GPUs: their "
        "figures say what to expect, not what must come out.", "",
    ]
    for part in s.parts:
        lines += RUNNERS[part][1](results[part], setup)
    lines += ["## Run time", "", "| part | seconds |", "| --- | --- |"]
    lines += [f"| {part} | {seconds:.0f} |" for part, seconds in elapsed.items()]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


def _numbers(kind):
    def parse(text: str) -> tuple:
        try:
            return tuple(kind(x) for x in text.split(",") if x.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None
    return parse


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Every field of `Settings` (bench/science.py, one comment each) is a flag: --eval-samples 30, "
               "--weight-ratios 2,4, ... With --smoke they override the toy sizes.")
    parser.add_argument("--teacher", default=None, help="teacher folder (default: the embedded teacher, prepared once)")
    parser.add_argument("--out", type=Path, default=None,
                        help="results file (default bench/science.md; with --smoke a file in the temp folder)")
    parser.add_argument("--smoke", action="store_true", help="every part on a tiny random teacher (seconds), for CI")
    parser.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated subset of {','.join(PARTS)}")
    parser.add_argument("--cache", type=Path, default=None,
                        help="cache root (default: $SHRINKTUNE_CACHE, else ~/.cache/shrinktune; --smoke: a temp "
                        "folder)")
    defaults = Settings()
    numbers = {"ae_widths": int, "ae_kinds": str, "encoder_depths": int, "decoder_depths": int, "weight_ratios": float}
    for name, value in vars(defaults).items():
        if name in ("parts", "smoke"):
            continue
        flag = "--" + name.replace("_", "-")
        if name in numbers:
            parse = _numbers(numbers[name]) if numbers[name] is not str else (lambda t: tuple(t.split(",")))
            parser.add_argument(flag, type=parse, default=None, help=f"default {','.join(map(str, value))}")
        else:
            parser.add_argument(flag, type=type(value), default=None, help=f"default {value}")
    return parser.parse_args(argv)


def settings_from(args: argparse.Namespace) -> Settings:
    given = {name: getattr(args, name) for name in vars(Settings()) if getattr(args, name, None) is not None}
    given["parts"] = tuple(p.strip() for p in args.parts.split(",") if p.strip())
    return Settings.smoke_sizes(**given) if args.smoke else Settings(**given)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.smoke and args.teacher:
        print(f"warning: --smoke uses a tiny random teacher; ignoring --teacher {args.teacher}", file=sys.stderr)
    try:
        settings = settings_from(args)
    except UserError as error:
        fail(error)
    torch.set_num_threads(settings.threads)
    quiet_libraries()
    out = args.out or (Path(tempfile.gettempdir()) / "science-smoke.md" if settings.smoke else Path("bench/science.md"))
    command = ("python bench/science.py " + " ".join(sys.argv[1:] if argv is None else argv)).strip()
    with tempfile.TemporaryDirectory(prefix="science-smoke-") as scratch:
        cache = args.cache or (Path(scratch) if settings.smoke else cache_root())
        try:
            seed_everything(settings.seed)
            start = time.perf_counter()
            setup = load_setup(settings, args.teacher, cache)
            elapsed = {"setup (teacher, data, encoder states)": time.perf_counter() - start}
            print(f"setup: {next(iter(elapsed.values())):.0f} s", flush=True)
            results = run_parts(settings.parts, RUNNERS, setup, elapsed)
        except UserError as error:
            fail(error)
    elapsed["total"] = sum(elapsed.values())
    write_results(out, setup, results, elapsed, command)
    print(f"total {elapsed['total']:.0f} s; wrote {out}")


if __name__ == "__main__":
    main()
