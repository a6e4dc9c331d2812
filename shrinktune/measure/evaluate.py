"""Measuring one summarizer: the pieces every trial and the teacher are measured with, and `measure_summarizer`.

Quality (`score_summaries`): the task kind's metrics (`shrinktune.measure.kinds`: ROUGE-1/2/L/Lsum for summaries,
sacreBLEU's BLEU and chrF for translations, accuracy and macro-F1 for class names) of generated outputs against the
references, a 95 % interval of the kind's primary metric that resamples whole documents
(`shrinktune.measure.intervals`), and the tokens each output took (its natural-length cost scales with them).
Cost (`cost_metrics`): peak tensor memory of generating a batch (weights included) and, given a training step, of
one fine-tuning step; parameters of encoder, bottleneck and decoder. The search times students against the teacher
with `shrinktune.measure.speed`; `measure_summarizer` (the benchmarks' one-call measurement) times a model alone,
after a warm-up, median and 90th percentile of several timed passes, with the thread count:
- `latency_ms`: batch 1, the model's natural output length: what a user waits for, but a model that stops early
  looks fast;
- `latency_fixed_ms`: batch 1, every summary forced to exactly `fixed_new_tokens` tokens: compares architectures
  without length effects;
- `latency_batch_ms`: a batch of `latency_batch_size` summaries at natural length, divided by the batch size.
`generation_record(model)` gives the generation settings behind these figures, to log as parameters.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from shrinktune.data.examples import Example
from shrinktune.errors import ConfigError
from shrinktune.measure.intervals import document_groups
from shrinktune.measure.kinds import get_kind
from shrinktune.measure.latency import generation_record, time_generation
from shrinktune.measure.memory import peak_memory_bytes, tensor_bytes
from shrinktune.measure.params import count_parameters
from shrinktune.models.generation import decode_summaries, decoder_start_id, generate, prompt_token_ids

logger = logging.getLogger(__name__)

MB = 1024 * 1024
DEFAULT_FIXED_NEW_TOKENS = 32  # forced summary length when the model's config sets no max_new_tokens


def model_device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def _inputs(tokenizer, examples: list[Example], max_source_tokens: int, device, start_id: int | None = None) -> dict:
    """Tokenised sources; with `decoder_input_ids` (start token + prompt) when the examples have decoder prompts,
    which must then be of one length in tokens (see `prompt_groups`)."""
    batch = tokenizer([e.source for e in examples], max_length=max_source_tokens, truncation=True, padding=True,
                      return_tensors="pt")
    inputs = {k: v.to(device) for k, v in batch.items() if k in ("input_ids", "attention_mask")}
    prompts = [prompt_token_ids(tokenizer, e.prompt) for e in examples]
    if any(prompts):
        if start_id is None:
            raise ValueError("examples with decoder prompts need the model's decoder start id")
        if len({len(p) for p in prompts}) > 1:
            raise ValueError("decoder prompts of different lengths cannot share a batch; group them with prompt_groups")
        inputs["decoder_input_ids"] = torch.tensor([[start_id] + p for p in prompts], device=device)
    return inputs


def prompt_groups(tokenizer, examples: list[Example]) -> list[list[int]]:
    """Indices of the examples, grouped by the token length of their decoder prompts (in order of first use)."""
    groups: dict[int, list[int]] = {}
    for i, example in enumerate(examples):
        groups.setdefault(len(prompt_token_ids(tokenizer, example.prompt)), []).append(i)
    return list(groups.values())


def _new_text(inputs: dict, ids: torch.Tensor) -> torch.Tensor:
    """The generated part of `generate`'s output: without the start token and prompt it was given."""
    given = inputs.get("decoder_input_ids")
    return ids if given is None else ids[:, given.shape[1]:]


def new_token_counts(model, ids: torch.Tensor) -> list[int]:
    """Tokens each row of a generated part (`_new_text`) holds: up to and including its first end token, else the
    row without trailing padding."""
    config = model.generation_config
    eos = config.eos_token_id if isinstance(config.eos_token_id, list) else [config.eos_token_id]
    ends = {int(e) for e in eos if e is not None}
    pad = config.pad_token_id
    counts = []
    for row in ids.tolist():
        stop = next((i for i, token in enumerate(row) if token in ends), None)
        if stop is not None:
            counts.append(stop + 1)
        else:
            while row and pad is not None and row[-1] == pad:
                row = row[:-1]
            counts.append(len(row))
    return counts


@torch.no_grad()
def generate_with_lengths(model, tokenizer, examples: list[Example], *, max_source_tokens: int,
                          batch_size: int = 16) -> tuple[list[str], list[int]]:
    """Summaries of the examples' sources, with the model's own `generation_config`, and the new tokens each took
    (end token included): what its natural-length latency scales with. Each example's decoder prompt (its aspect, if
    any) is given to the decoder and left out of the summary and the count."""
    model.eval()
    device = model_device(model)
    start_id = decoder_start_id(model)
    texts = [""] * len(examples)  # every example is in exactly one prompt group, so each is filled
    lengths = [0] * len(examples)
    for group in prompt_groups(tokenizer, examples):
        for start in range(0, len(group), batch_size):
            rows = group[start : start + batch_size]
            inputs = _inputs(tokenizer, [examples[i] for i in rows], max_source_tokens, device, start_id)
            new = _new_text(inputs, generate(model, **inputs))  # (batch, new_len)
            for i, text, count in zip(rows, decode_summaries(tokenizer, new), new_token_counts(model, new)):
                texts[i], lengths[i] = text, count
    return texts, lengths


def generate_summaries(model, tokenizer, examples: list[Example], *, max_source_tokens: int,
                       batch_size: int = 16) -> list[str]:
    """Summaries of the examples' sources (see `generate_with_lengths`)."""
    return generate_with_lengths(model, tokenizer, examples, max_source_tokens=max_source_tokens,
                                 batch_size=batch_size)[0]


@dataclass(frozen=True)
class Quality:
    """A model's outputs for some pairs, scored: the task kind's metrics with document-level intervals, and what is
    per pair."""

    metrics: dict[str, float]  # the kind's metrics (rouge1/2/L/Lsum; bleu, chrf; accuracy, macro_f1), the primary's
    # <primary>_low/high, distinct_fraction, summary_words, tokens_per_summary, eval_samples
    predictions: list[str]
    pair_stats: list[list[float]]  # each pair's statistics of the kind's primary metric, for paired comparisons
    groups: list[str]  # each pair's document, for the bootstrap
    kind: str = "summarization"
    notes: dict[str, str] = field(default_factory=dict)  # how the metrics were computed (sacreBLEU's signatures)


def score_summaries(model, tokenizer, examples: list[Example], *, max_source_tokens: int,
                    batch_size: int = 16, kind: str = "summarization") -> Quality:
    """Generates outputs for `examples` (`batch_size` at a time) and scores them against the references as the task
    `kind` says, with a 95 % interval of its primary metric that resamples whole documents."""
    predictions, lengths = generate_with_lengths(model, tokenizer, examples, max_source_tokens=max_source_tokens,
                                                 batch_size=batch_size)
    return score_predictions(predictions, lengths, examples, kind=kind)


def score_predictions(predictions: list[str], lengths: list[int], examples: list[Example], *,
                      kind: str = "summarization") -> Quality:
    """`Quality` of given predictions (and their token counts) of `examples`, scored as the task `kind` says."""
    # the kind's metric library (rouge_score, sacrebleu) loads only when quality is scored: timing runs without it
    from shrinktune.measure.rouge import distinct_fraction

    groups = document_groups(examples)
    scored = get_kind(kind).score(predictions, [e.summary for e in examples], groups)
    metrics = dict(scored.metrics)
    metrics["distinct_fraction"] = distinct_fraction(predictions)
    metrics["summary_words"] = sum(len(p.split()) for p in predictions) / max(1, len(predictions))
    metrics["tokens_per_summary"] = float(np.mean(lengths))
    metrics["eval_samples"] = len(examples)
    return Quality(metrics, predictions, scored.pair_stats.tolist(), groups, kind, dict(scored.notes))


def timing_inputs(model, tokenizer, examples: list[Example], *, max_source_tokens: int) -> list[dict]:
    """Batch-1 tokenized inputs of `examples` (decoder prompt included), for latency."""
    device, start_id = model_device(model), decoder_start_id(model)
    return [_inputs(tokenizer, [e], max_source_tokens, device, start_id) for e in examples]


def cost_metrics(model, tokenizer, examples: list[Example], *, max_source_tokens: int,
                 training_step: Callable[[], None] | None = None,
                 training_weights: torch.nn.Module | list[torch.nn.Module] | None = None) -> dict[str, float]:
    """Peak memory of generating a batch (up to 16 of `examples`, one prompt length) and, given a training step,
    of one fine-tuning step, in MiB; parameters by part."""
    device, start_id = model_device(model), decoder_start_id(model)
    batchable = [examples[i] for i in max(prompt_groups(tokenizer, examples), key=len)]  # one prompt length
    batch = _inputs(tokenizer, batchable[:16], max_source_tokens, device, start_id)
    extra = peak_memory_bytes(lambda: generate_summaries_batch(model, batch), device)
    metrics = {"generate_peak_mb": (tensor_bytes(model) + extra) / MB}
    if training_step is not None:
        weights = training_weights if isinstance(training_weights, list) else [training_weights or model]
        resident = sum(tensor_bytes(m) for m in weights if m is not None)
        metrics["train_peak_mb"] = (resident + peak_memory_bytes(training_step, device)) / MB
    metrics.update(parameter_counts(model))
    return metrics


def parameter_counts(model) -> dict[str, int]:
    """Parameters by part: encoder, bottleneck (0 if none), decoder, total."""
    bottleneck = getattr(model, "bottleneck", None)
    return {
        "params_encoder": count_parameters(model.get_encoder() if bottleneck is None else model.encoder),
        "params_bottleneck": count_parameters(bottleneck) if bottleneck is not None else 0,
        "params_decoder": count_parameters(model.get_decoder() if hasattr(model, "get_decoder") else model.decoder),
        "params_total": count_parameters(model),
    }


def fixed_length_default(model) -> int:
    """Forced length for `latency_fixed_ms` when none is given: the config's `max_new_tokens`, else 32."""
    return int(getattr(model.generation_config, "max_new_tokens", None) or DEFAULT_FIXED_NEW_TOKENS)


def batched_latency(model, tokenizer, examples: list[Example], *, max_source_tokens: int, batch_size: int,
                    repeats: int) -> dict:
    """ms per batch of `batch_size` summaries at natural length, the model alone (not interleaved): the first
    examples that share one decoder prompt. {} when `batch_size` is 1 or there are fewer such examples."""
    batchable = [examples[i] for i in max(prompt_groups(tokenizer, examples), key=len)]  # one prompt length
    if not 1 < batch_size <= len(batchable):
        return {}
    batch = _inputs(tokenizer, batchable[:batch_size], max_source_tokens, model_device(model), decoder_start_id(model))
    result = time_generation(model, batch, warmup=1, repeats=repeats)
    return {"latency_batch_ms": result.median_ms, "latency_batch_size": batch_size}


def measure_summarizer(
    model,
    tokenizer,
    examples: list[Example],
    *,
    max_source_tokens: int,
    latency_examples: int = 8,
    latency_repeats: int = 3,
    fixed_new_tokens: int | None = None,
    latency_batch_size: int = 8,
    training_step: Callable[[], None] | None = None,
    training_weights: torch.nn.Module | list[torch.nn.Module] | None = None,
) -> tuple[dict[str, float], list[str]]:
    """Quality, latency, memory and size of `model` on `examples`.

    Args:
        model: a seq2seq model with its generation settings in `generation_config`.
        tokenizer: its tokenizer.
        examples: evaluation pairs (ROUGE uses all; batch-1 latency the first `latency_examples`).
        max_source_tokens: encoder input length.
        latency_examples: summaries per timed pass, generated one at a time (batch 1).
        latency_repeats: timed passes of each latency mode; the median and 90th percentile per summary are reported.
        fixed_new_tokens: length every summary is forced to for `latency_fixed_ms`; None = the config's
            `max_new_tokens`, else 32.
        latency_batch_size: batch for `latency_batch_ms` (the first examples); skipped when 1 or when there are fewer
            examples.
        training_step: one fine-tuning step, if fine-tuning memory should be measured.
        training_weights: the modules that step needs in memory (e.g. decoder and bottleneck; the encoder is not
            needed when training on cached states).

    Returns:
        (metrics, predictions). Memory in MiB, latency in ms per summary; `threads` is torch's CPU thread count,
        `fixed_new_tokens` and `latency_batch_size` the lengths and batch the latencies used.

    Raises:
        ConfigError: If `latency_examples`, `latency_repeats`, `fixed_new_tokens` or `latency_batch_size` is below 1.
    """
    fixed = fixed_length_default(model) if fixed_new_tokens is None else fixed_new_tokens
    for name, value in (("latency_examples", latency_examples), ("latency_repeats", latency_repeats),
                        ("fixed_new_tokens", fixed), ("latency_batch_size", latency_batch_size)):
        if value < 1:
            raise ConfigError(f"measure_summarizer: {name} must be ≥ 1, got {value}; pass a positive count.")
    quality = score_summaries(model, tokenizer, examples, max_source_tokens=max_source_tokens)
    metrics = dict(quality.metrics)
    timed = timing_inputs(model, tokenizer, examples[:latency_examples], max_source_tokens=max_source_tokens)
    natural = time_generation(model, timed, warmup=1, repeats=latency_repeats)
    # the natural pass above has just warmed the same model on the same inputs: no second warm-up needed
    forced = time_generation(model, timed, new_tokens=fixed, warmup=0, repeats=latency_repeats)
    metrics.update(
        latency_ms=natural.median_ms, latency_p90_ms=natural.p90_ms, threads=natural.threads,
        latency_fixed_ms=forced.median_ms, latency_fixed_p90_ms=forced.p90_ms, fixed_new_tokens=fixed,
    )
    metrics.update(batched_latency(model, tokenizer, examples, max_source_tokens=max_source_tokens,
                                   batch_size=latency_batch_size, repeats=latency_repeats))
    logger.info("latency per summary: natural %.1f ms, %d tokens %.1f ms, settings %s",
                natural.median_ms, fixed, forced.median_ms, generation_record(model))
    metrics.update(cost_metrics(model, tokenizer, examples, max_source_tokens=max_source_tokens,
                                training_step=training_step, training_weights=training_weights))
    return metrics, quality.predictions


@torch.no_grad()
def generate_summaries_batch(model, inputs: dict) -> torch.Tensor:
    return generate(model, **inputs)
