"""Measuring one summarizer the way every trial and the teacher are measured.

Quality: ROUGE-1/2/L/Lsum (mean F1, stemming) of generated summaries against the references. Speed: generation
time per summary at batch 1, after a warm-up, median of several timed passes. Memory: peak tensor memory of
generating a batch (weights included) and, when a training step is given, of one fine-tuning step. Size:
parameters of encoder, bottleneck and decoder.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch

from shrinktune.data.examples import Example
from shrinktune.measure.latency import measure_latency
from shrinktune.measure.memory import peak_memory_bytes, tensor_bytes
from shrinktune.measure.params import count_parameters
from shrinktune.measure.rouge import distinct_fraction, rouge_scores
from shrinktune.models.generation import decode_summaries

logger = logging.getLogger(__name__)

MB = 1024 * 1024


def model_device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def _inputs(tokenizer, examples: list[Example], max_source_tokens: int, device) -> dict:
    batch = tokenizer([e.source for e in examples], max_length=max_source_tokens, truncation=True, padding=True, return_tensors="pt")
    return {k: v.to(device) for k, v in batch.items() if k in ("input_ids", "attention_mask")}


@torch.no_grad()
def generate_summaries(model, tokenizer, examples: list[Example], *, max_source_tokens: int, batch_size: int = 16) -> list[str]:
    """Summaries of the examples' sources, with the model's own `generation_config`."""
    model.eval()
    device = model_device(model)
    out = []
    for start in range(0, len(examples), batch_size):
        inputs = _inputs(tokenizer, examples[start : start + batch_size], max_source_tokens, device)
        ids = model.generate(**inputs)  # (batch, out_len)
        out += decode_summaries(tokenizer, ids)
    return out


def parameter_counts(model) -> dict[str, int]:
    """Parameters by part: encoder, bottleneck (0 if none), decoder, total."""
    bottleneck = getattr(model, "bottleneck", None)
    return {
        "params_encoder": count_parameters(model.get_encoder() if bottleneck is None else model.encoder),
        "params_bottleneck": count_parameters(bottleneck) if bottleneck is not None else 0,
        "params_decoder": count_parameters(model.get_decoder() if hasattr(model, "get_decoder") else model.decoder),
        "params_total": count_parameters(model),
    }


def measure_summarizer(
    model,
    tokenizer,
    examples: list[Example],
    *,
    max_source_tokens: int,
    latency_examples: int = 8,
    latency_repeats: int = 3,
    training_step: Callable[[], None] | None = None,
    training_weights: torch.nn.Module | list[torch.nn.Module] | None = None,
) -> tuple[dict[str, float], list[str]]:
    """Quality, latency, memory and size of `model` on `examples`.

    Args:
        model: a seq2seq model with its generation settings in `generation_config`.
        tokenizer: its tokenizer.
        examples: evaluation pairs (ROUGE uses all; latency the first `latency_examples`).
        max_source_tokens: encoder input length.
        latency_examples: summaries per timed pass, generated one at a time (batch 1).
        latency_repeats: timed passes; the median per summary is reported.
        training_step: one fine-tuning step, if fine-tuning memory should be measured.
        training_weights: the modules that step needs in memory (e.g. decoder and bottleneck; the encoder is not
            needed when training on cached states).

    Returns:
        (metrics, predictions). Memory in MiB, latency in ms per summary.
    """
    device = model_device(model)
    predictions = generate_summaries(model, tokenizer, examples, max_source_tokens=max_source_tokens)
    metrics: dict[str, float] = dict(rouge_scores(predictions, [e.summary for e in examples]))
    metrics["distinct_fraction"] = distinct_fraction(predictions)
    metrics["summary_words"] = sum(len(p.split()) for p in predictions) / max(1, len(predictions))

    timed = [_inputs(tokenizer, [e], max_source_tokens, device) for e in examples[:latency_examples]]

    def generate_each():
        with torch.no_grad():
            for inputs in timed:
                model.generate(**inputs)

    latency = measure_latency(generate_each, items_per_run=len(timed), warmup=1, repeats=latency_repeats, device=device)
    metrics.update(latency_ms=latency.median_ms, latency_p90_ms=latency.p90_ms, threads=latency.threads)

    batch = _inputs(tokenizer, examples[:16], max_source_tokens, device)
    extra = peak_memory_bytes(lambda: generate_summaries_batch(model, batch), device)
    metrics["generate_peak_mb"] = (tensor_bytes(model) + extra) / MB
    if training_step is not None:
        weights = training_weights if isinstance(training_weights, list) else [training_weights or model]
        resident = sum(tensor_bytes(m) for m in weights if m is not None)
        metrics["train_peak_mb"] = (resident + peak_memory_bytes(training_step, device)) / MB
    metrics.update(parameter_counts(model))
    return metrics, predictions


@torch.no_grad()
def generate_summaries_batch(model, inputs: dict) -> torch.Tensor:
    return model.generate(**inputs)
