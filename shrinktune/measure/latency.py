"""Wall-clock latency of a step, reported per item (per summary), and the one way generation is timed.

`measure_latency` runs a zero-argument callable a few times untimed (caches, lazy init, CUDA kernels), then times
`repeats` runs with `time.perf_counter`, with Python's garbage collector paused as `timeit` does. On CUDA it
synchronizes before and after each timed run, so the figure covers the kernels the run launched and not just their
queuing. Each run time is divided by `items_per_run`: generating a batch of 8 summaries is one run of 8 items.

`time_generation` times generation (`shrinktune.models.generation.generate`, the model's `generate` with its
settings' source-copy bias) over tokenized batches, either at the model's natural output length or with every
output forced to exactly `new_tokens` tokens (`min_new_tokens = max_new_tokens = new_tokens`), so that
architectures compare without one of them winning by stopping early; it checks the forced length was produced.
`time_encoder` times the encoder alone on the same input: a decoder-side compression cannot beat
(full generation time ÷ encoder time). `generation_record` lists the generation settings that shaped a figure.

    from shrinktune.measure import measure_latency, time_generation
    from shrinktune.models.generation import generate
    result = measure_latency(lambda: generate(model, **batch), items_per_run=len(batch["input_ids"]))
    result.median_ms  # milliseconds per summary
    time_generation(model, [{"input_ids": ids}], new_tokens=64).median_ms  # batch 1, 64 new tokens each
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from shrinktune.errors import ConfigError
from shrinktune.models.generation import generate

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LatencyResult:
    """Per-item latency over the timed runs of one measurement."""

    median_ms: float  # median run time / items_per_run, in milliseconds
    p90_ms: float  # 90th percentile (numpy's linear interpolation) of the per-item times
    mean_ms: float  # mean of the per-item times
    runs: int  # number of timed runs (warm-up runs excluded)
    items_per_run: int  # items (summaries) each run produced
    threads: int  # torch.get_num_threads() while measuring; CPU figures depend on it
    device: str  # device the step ran on, e.g. "cpu" or "cuda:0"


def _check_counts(items_per_run: int, warmup: int, repeats: int) -> None:
    if items_per_run < 1:
        raise ConfigError(f"measure_latency: items_per_run must be ≥ 1, got {items_per_run}; pass the batch size.")
    if warmup < 0:
        raise ConfigError(f"measure_latency: warmup must be ≥ 0, got {warmup}; pass 0 to skip warm-up runs.")
    if repeats < 1:
        raise ConfigError(f"measure_latency: repeats must be ≥ 1, got {repeats}; time at least one run.")


def measure_latency(
    fn: Callable[[], object],
    *,
    items_per_run: int = 1,
    warmup: int = 1,
    repeats: int = 5,
    device: torch.device | str = "cpu",
) -> LatencyResult:
    """Times `fn` and reports milliseconds per item.

    Args:
        fn: The step to time, e.g. one batched `generate` call; its return value is ignored.
        items_per_run: Items one call of `fn` produces; run times are divided by it.
        warmup: Untimed calls made first.
        repeats: Timed calls.
        device: Where `fn` runs; on a CUDA device each timed call is bracketed by `torch.cuda.synchronize`.

    Returns:
        Median, 90th percentile and mean per-item time over the timed calls, with the settings that shaped them.

    Raises:
        ConfigError: If `items_per_run` < 1, `warmup` < 0 or `repeats` < 1 (a `ValueError`).
    """
    _check_counts(items_per_run, warmup, repeats)
    device = torch.device(device)
    synchronize = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)

    for _ in range(warmup):
        fn()
    per_item_ms = np.empty(repeats)  # (repeats,)
    # A collection landing in one timed run would make it an outlier; pause the collector as timeit does.
    gc.collect()
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        for i in range(repeats):
            synchronize()
            start = time.perf_counter()
            fn()
            synchronize()
            per_item_ms[i] = (time.perf_counter() - start) * 1000.0 / items_per_run
    finally:
        if was_enabled:
            gc.enable()

    result = LatencyResult(
        median_ms=float(np.median(per_item_ms)),
        p90_ms=float(np.percentile(per_item_ms, 90)),
        mean_ms=float(per_item_ms.mean()),
        runs=repeats,
        items_per_run=items_per_run,
        threads=torch.get_num_threads(),
        device=str(device),
    )
    logger.debug("latency: %s", result)
    return result


# The generation settings that change how long `generate` runs; logged next to latency figures.
GENERATION_KEYS = ("num_beams", "max_new_tokens", "min_new_tokens", "no_repeat_ngram_size", "length_penalty",
                   "source_token_bias", "source_continuation_bias")
# What transformers 5 uses at generate time where `generation_config` leaves these unset (None).
_GENERATE_DEFAULTS = {"num_beams": 1, "no_repeat_ngram_size": 0, "length_penalty": 1.0, "source_token_bias": 0.0,
                      "source_continuation_bias": 0.0}

Batch = Mapping[str, torch.Tensor] | torch.Tensor  # tokenizer output ({"input_ids", "attention_mask"}) or input_ids


def generation_record(model) -> dict:
    """The settings in `model.generation_config` that shaped its latency figures, to log as parameters.

    Args:
        model: Any model with a transformers `generation_config`.

    Returns:
        {"num_beams", "max_new_tokens", "min_new_tokens", "no_repeat_ngram_size", "length_penalty",
        "source_token_bias", "source_continuation_bias"} → the value `generate` uses: where the config leaves beams,
        n-gram blocking, length penalty or the source biases unset, the default (1, 0, 1.0, 0.0, 0.0); unset
        lengths stay `None` (the config's `max_length` / `min_length` then apply).
    """
    config = model.generation_config
    record = {key: getattr(config, key, None) for key in GENERATION_KEYS}
    return {key: _GENERATE_DEFAULTS.get(key) if value is None else value for key, value in record.items()}


def _as_batches(inputs: Batch | Sequence[Batch], caller: str) -> list[Mapping[str, torch.Tensor]]:
    batches = list(inputs) if isinstance(inputs, Sequence) else [inputs]
    if not batches:
        raise ConfigError(f"{caller}: inputs must hold at least one batch, got an empty list; pass tokenized inputs.")
    return [batch if isinstance(batch, Mapping) else {"input_ids": batch} for batch in batches]


def _rows(batches: list[Mapping[str, torch.Tensor]]) -> int:
    return sum(int(batch["input_ids"].shape[0]) for batch in batches)


def _device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def _new_token_count(model, batch: Mapping[str, torch.Tensor], output: torch.Tensor) -> int:
    """Tokens `generate` added: an encoder-decoder's output starts with its decoder inputs (the start token, and a
    prompt if one was given), a decoder-only model's with the prompt."""
    if getattr(model.config, "is_encoder_decoder", False):
        prompt = batch["decoder_input_ids"].shape[-1] if "decoder_input_ids" in batch else 1
    else:
        prompt = batch["input_ids"].shape[-1]
    return int(output.shape[-1]) - prompt


def time_generation(
    model,
    inputs: Batch | Sequence[Batch],
    *,
    new_tokens: int | None = None,
    warmup: int = 1,
    repeats: int = 5,
) -> LatencyResult:
    """Times `model.generate` over `inputs` and reports milliseconds per generated sequence.

    One run generates every batch in `inputs`, one after another; a list of single-row batches therefore measures
    batch-1 latency over several documents. Generation uses the model's own `generation_config`; put the model in
    eval mode first.

    Args:
        model: A transformers model with `generate`.
        inputs: One batch or a list of batches: dicts of tensors as a tokenizer returns them (`input_ids`, optionally
            `attention_mask`), or bare `input_ids` tensors (random-weight models without a tokenizer).
        new_tokens: If given, every sequence gets exactly this many new tokens (`min_new_tokens = max_new_tokens`),
            whatever the end token or the config's lengths say. `None` = the model's natural length.
        warmup: Untimed runs first.
        repeats: Timed runs.

    Returns:
        Latency per sequence over the timed runs.

    Raises:
        ConfigError: If `inputs` is empty, `new_tokens` < 1, or `warmup` / `repeats` are out of range.
        RuntimeError: If a forced length was not produced (e.g. stopping criteria the length settings cannot override).
    """
    batches = _as_batches(inputs, "time_generation")
    if new_tokens is not None and new_tokens < 1:
        raise ConfigError(
            f"time_generation: new_tokens must be ≥ 1 or None, got {new_tokens}; pass None for natural length."
        )
    _check_counts(1, warmup, repeats)
    lengths = {} if new_tokens is None else {"min_new_tokens": new_tokens, "max_new_tokens": new_tokens}
    outputs: list[torch.Tensor | None] = [None] * len(batches)

    def generate_all() -> None:
        with torch.no_grad():
            for i, batch in enumerate(batches):
                outputs[i] = generate(model, **batch, **lengths)  # (rows, out_len)

    result = measure_latency(
        generate_all, items_per_run=_rows(batches), warmup=warmup, repeats=repeats, device=_device(model)
    )
    if new_tokens is not None:
        produced = sorted({_new_token_count(model, batch, out) for batch, out in zip(batches, outputs)
                           if out is not None})  # all set: generate_all ran at least once
        if produced != [new_tokens]:
            raise RuntimeError(
                f"time_generation asked for exactly {new_tokens} new tokens but generate produced {produced}; "
                "remove stopping criteria (stop_strings, max_time) from the generation config."
            )
    return result


def time_encoder(model, inputs: Batch | Sequence[Batch], *, warmup: int = 1, repeats: int = 5) -> LatencyResult:
    """Times the encoder alone (`model.get_encoder()`, a student's bottleneck included) on `inputs`, per sequence.

    Generation time ÷ this time is the most a decoder-side compression can speed the model up: with a free decoder,
    generation would still pay for the encoder.

    Args:
        model: An encoder-decoder with `get_encoder`.
        inputs: As for `time_generation`.
        warmup: Untimed runs first.
        repeats: Timed runs.

    Returns:
        Latency per sequence of the encoder forward pass.

    Raises:
        ConfigError: If `inputs` is empty or `warmup` / `repeats` are out of range.
    """
    batches = _as_batches(inputs, "time_encoder")
    encoder = model.get_encoder()

    def encode_all() -> None:
        with torch.no_grad():
            for batch in batches:
                encoder(**batch)  # last_hidden_state: (rows, src_len, d_model)

    return measure_latency(
        encode_all, items_per_run=_rows(batches), warmup=warmup, repeats=repeats, device=_device(model)
    )
