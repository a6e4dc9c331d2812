"""The memory-bandwidth bound of greedy generation: how fast a runtime could generate if moving bytes were all.

At batch 1 a decoding step does little arithmetic per byte: it must read every decoder weight once, and the
attention caches, and the device's memory bandwidth sets how fast that can happen. The bound of generating
`new_tokens` tokens is

    encoder time + Σ_{t=0}^{new_tokens-1} bytes_read(t) / bandwidth

    bytes_read(t) = decoder weights + self-attention KV per position × (prompt_tokens + t)
                    + cross-attention KV per position × source_tokens

where `prompt_tokens` counts the decoder tokens present before the first new token (the decoder start token: 1 in
plain generation). Step 0 feeds the prompt and writes its `prompt_tokens` cache positions; step t ≥ 1 feeds the
token step t-1 chose, so it reads the positions filled so far plus the one it writes, `prompt_tokens + t` in all.
The encoder is timed elsewhere and added as given. Measured latency ÷ bound (`bound_record`) says how far a
runtime is from the hardware: 1 would be perfect, and the gap is launch overhead, Python, compute-bound matrix work
at large batch, or a slow kernel.

What a step reads, as modelled here:

- Decoder weights (`decoder_weight_bytes`): every floating-point parameter and buffer of the decoder module
  (`shrinktune.models.families.decoder_module`) and of the LM head, tied tensors counted once. An embedding table
  whose rows are the decoder's width (words, learned or sinusoidal positions, BERT's token types) is only looked up:
  a step reads one row per sequence, so it counts `min(batch, rows)` rows. Other tables (T5's relative-attention
  bias, buckets × heads) are read whole. The LM head is read whole every step; when it is the word-embedding table
  (tied), it counts once, as the head. BART-family `final_logits_bias` and a bert2bert's `enc_to_dec_proj` (applied
  to the encoder states at every step when the widths differ; an identity in latent students) count as read each
  step. Integer buffers (BERT's `position_ids`) are index bookkeeping and do not count. Bytes follow each tensor's
  dtype, so a bf16 model reads half.
- Caches (`kv_bytes_per_position`): K and V of every decoder layer, batch × KV heads × head size elements per
  position, in the decoder's dtype; the cross-attention cache holds one position per source token and is read
  whole every step (its one-time write at step 0 is counted as that step's read).

Not modelled: activations (hidden states, logits: small at batch 1, but the logits are batch × vocab per step),
T5's per-step relative position bias tensor, compute limits (at large batch the matrix products become compute
bound, so the bound is then optimistic), caches that are padded or preallocated beyond the filled positions, beam
search (`num_beams` > 1 reads `num_beams` caches: pass batch × beams as `batch_size`), and weights held in packed
forms that are not parameters or buffers (some quantized kernels), which are missed.

    from shrinktune.measure.bound import bound_record, measure_bandwidth
    bandwidth = measure_bandwidth("cuda")
    bound_record(model, batch_size=1, source_tokens=512, prompt_tokens=1, new_tokens=64, measured_ms=310.0,
                 encoder_ms=9.0, bandwidth_bytes_per_s=bandwidth)  # {"bound_ms": ..., "bound_ratio": ..., ...}
"""

from __future__ import annotations

import math
import statistics
import time

import torch
from torch import nn

from shrinktune.errors import ConfigError
from shrinktune.measure.params import unique_tensors
from shrinktune.models.families import decoder_module, depth, family_of, half_configs

MB = 1024 * 1024  # as the peak-memory figures (`generate_peak_mb`)


def _decoder_width(model) -> int:
    _, decoder_config = half_configs(model)
    return int(getattr(decoder_config, family_of(decoder_config).width))


def _tensor_bytes(tensor: torch.Tensor) -> int:
    return tensor.numel() * tensor.element_size()


def decoder_weight_bytes(model, *, batch_size: int = 1) -> int:
    """Bytes of weights one decoding step reads: the decoder's, the LM head's, and one looked-up row per sequence of
    each token / position embedding table.

    Args:
        model: A BART / mBART / Pegasus / T5 model, a bert2bert `EncoderDecoderModel`, or a latent student.
        batch_size: Sequences decoded together; each looks up its own embedding rows.

    Returns:
        Bytes, each tensor at its own element size; tied tensors count once (a tied word table as the LM head).

    Raises:
        ConfigError: If `batch_size` < 1.
    """
    if batch_size < 1:
        raise ConfigError(f"decoder_weight_bytes: batch_size must be ≥ 1, got {batch_size}; pass the batch size.")
    decoder = decoder_module(model)
    head = model.get_output_embeddings()
    head_tensors = list(head.parameters()) if head is not None else []
    logits_bias = getattr(model, "final_logits_bias", None)  # BART family: added to the logits at every step
    if isinstance(logits_bias, torch.Tensor):
        head_tensors.append(logits_bias)
    projection = getattr(model, "enc_to_dec_proj", None)  # bert2bert of unequal widths: runs at every step
    step_tensors = list(projection.parameters()) if isinstance(projection, nn.Module) else []
    width = _decoder_width(model)
    lookups = {id(m.weight) for m in decoder.modules() if isinstance(m, nn.Embedding) and m.weight.shape[-1] == width}
    full = {id(t) for t in head_tensors}

    total = 0
    # The head first, so that a word table tied to it is kept as the head and read in full.
    for tensor in unique_tensors([*head_tensors, *step_tensors, *decoder.parameters(), *decoder.buffers()]):
        if not tensor.is_floating_point():
            continue  # index buffers (position_ids, token_type_ids)
        if id(tensor) in lookups and id(tensor) not in full:
            rows = min(batch_size, tensor.shape[0])
            total += rows * tensor.shape[-1] * tensor.element_size()
        else:
            total += _tensor_bytes(tensor)
    return total


def _activation_element_size(model) -> int:
    """Element size of the decoder's floating-point weights, which its activations and caches share."""
    for tensor in decoder_module(model).parameters():
        if tensor.is_floating_point():
            return tensor.element_size()
    raise ValueError(f"{type(model).__name__}'s decoder has no floating-point parameters to take a dtype from.")


def kv_bytes_per_position(model, batch_size: int = 1) -> dict[str, int]:
    """Bytes of attention cache per cached position, over all decoder layers, that a step reads.

    2 (K and V) × decoder layers × batch × KV heads × head size × element size, from the decoder's half config:
    BART-like `decoder_attention_heads` and `d_model`, T5 `num_heads` and `d_kv`, BERT `num_attention_heads` and
    `hidden_size`; a latent student's narrow decoder config. The cache is in the decoder's dtype.

    Args:
        model: A model of a supported family (see `decoder_weight_bytes`).
        batch_size: Sequences decoded together (× beams for beam search).

    Returns:
        {"self_attention": bytes per position of the decoder's own tokens, "cross_attention": bytes per source
        token}.

    Raises:
        ConfigError: If `batch_size` < 1, or the model's family is not supported.
    """
    if batch_size < 1:
        raise ConfigError(f"kv_bytes_per_position: batch_size must be ≥ 1, got {batch_size}; pass the batch size.")
    _, config = half_configs(model)
    family = family_of(config)
    heads = int(getattr(config, family.decoder_heads))
    head_size = int(getattr(config, family.head_size)) if family.head_size else _decoder_width(model) // heads
    kv_heads = int(getattr(config, "num_key_value_heads", None) or heads)
    per_position = 2 * depth(config, "decoder") * batch_size * kv_heads * head_size * _activation_element_size(model)
    # The families here give cross-attention the decoder's heads and head size, over the (projected) encoder states.
    return {"self_attention": per_position, "cross_attention": per_position}


def _check_bound_args(batch_size: int, source_tokens: int, prompt_tokens: int, new_tokens: int,
                      bandwidth_bytes_per_s: float) -> None:
    if batch_size < 1:
        raise ConfigError(f"generation_bound_ms: batch_size must be ≥ 1, got {batch_size}; pass the batch size.")
    if source_tokens < 0:
        raise ConfigError(f"generation_bound_ms: source_tokens must be ≥ 0, got {source_tokens}.")
    if prompt_tokens < 1:
        raise ConfigError(
            f"generation_bound_ms: prompt_tokens must be ≥ 1 (the decoder start token counts), got {prompt_tokens}."
        )
    if new_tokens < 0:
        raise ConfigError(f"generation_bound_ms: new_tokens must be ≥ 0, got {new_tokens}.")
    if not (bandwidth_bytes_per_s > 0 and math.isfinite(bandwidth_bytes_per_s)):
        raise ConfigError(
            f"generation_bound_ms: bandwidth_bytes_per_s must be a positive number, got {bandwidth_bytes_per_s}; "
            "use measure_bandwidth or spec_bandwidth."
        )


def generation_bound_ms(
    model,
    *,
    batch_size: int,
    source_tokens: int,
    prompt_tokens: int = 1,
    new_tokens: int,
    bandwidth_bytes_per_s: float,
    encoder_ms: float = 0.0,
    per_sequence: bool = False,
) -> float:
    """The least time greedy generation of `new_tokens` tokens can take at a given memory bandwidth.

    encoder_ms + Σ_{t=0}^{new_tokens-1} [weights + self KV × (prompt_tokens + t) + cross KV × source_tokens]
    ÷ bandwidth, in milliseconds (see the module docstring for what each term holds).

    Args:
        model: A model of a supported family (see `decoder_weight_bytes`), in the dtype it generates in.
        batch_size: Sequences generated together (× beams for beam search).
        source_tokens: Source length (the encoder's positions, padding included, that cross-attention reads).
        prompt_tokens: Decoder tokens present before the first new one, the decoder start token included (1 for
            plain generation; 1 + forced prefix length otherwise).
        new_tokens: Tokens each sequence generates (decoding steps).
        bandwidth_bytes_per_s: Memory bandwidth, e.g. from `measure_bandwidth` or `spec_bandwidth`.
        encoder_ms: The encoder's measured time, added as given: in the unit of the result (per run, or per
            sequence with `per_sequence`, as `time_encoder` reports it).
        per_sequence: False (default): the bound of one run generating the whole batch. True: that decoding time
            divided by `batch_size`, comparable with `time_generation`'s per-sequence figures. Equal at batch 1.

    Returns:
        Milliseconds: per run of the whole batch, or per sequence with `per_sequence`.

    Raises:
        ConfigError: If a count is out of range (batch < 1, source < 0, prompt < 1, new < 0) or the bandwidth is
            not a positive finite number.
    """
    _check_bound_args(batch_size, source_tokens, prompt_tokens, new_tokens, bandwidth_bytes_per_s)
    weights = decoder_weight_bytes(model, batch_size=batch_size)
    kv = kv_bytes_per_position(model, batch_size)
    n = new_tokens
    # Σ_{t<n} (prompt + t) = n·prompt + n(n-1)/2: integer bytes, summed exactly before the one division.
    self_positions = n * prompt_tokens + n * (n - 1) // 2
    total_bytes = n * weights + kv["self_attention"] * self_positions + n * kv["cross_attention"] * source_tokens
    decode_ms = total_bytes / bandwidth_bytes_per_s * 1000.0
    if per_sequence:
        decode_ms /= batch_size
    return encoder_ms + decode_ms


def _synchronizer(device: torch.device):
    if device.type == "cuda":
        return lambda: torch.cuda.synchronize(device)
    return lambda: None


def measure_bandwidth(device: torch.device | str, *, nbytes: int = 256 * 2**20, repeats: int = 5) -> float:
    """Achievable memory bandwidth on `device`: one tensor copied into another, read and write both counted.

    One untimed copy first (allocation, page faults, kernel load), then `repeats` timed `dst.copy_(src)` of
    `nbytes` bytes, each bracketed by `torch.cuda.synchronize` on CUDA. The source is filled, not left empty, so
    that no page of it is the operating system's shared zero page. Copies should far exceed the last-level cache
    (the default 256 MiB does on current GPUs and CPUs); keep CPU runs short, e.g. a few MiB in tests.

    Args:
        device: Where to measure, e.g. "cuda:0" or "cpu".
        nbytes: Bytes copied per run; 2 × nbytes move (read + write).
        repeats: Timed copies; the median is taken.

    Returns:
        Bytes per second: 2 × nbytes ÷ median copy time.

    Raises:
        ConfigError: If `nbytes` < 1 or `repeats` < 1.
    """
    if nbytes < 1:
        raise ConfigError(f"measure_bandwidth: nbytes must be ≥ 1, got {nbytes}.")
    if repeats < 1:
        raise ConfigError(f"measure_bandwidth: repeats must be ≥ 1, got {repeats}.")
    device = torch.device(device)
    synchronize = _synchronizer(device)
    src = torch.ones(nbytes, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    dst.copy_(src)  # warm-up
    seconds = []
    for _ in range(repeats):
        synchronize()
        start = time.perf_counter()
        dst.copy_(src)
        synchronize()
        seconds.append(time.perf_counter() - start)
    median = max(statistics.median(seconds), 1e-9)  # a clock too coarse for a tiny copy must not divide by 0
    return 2 * nbytes / median


def spec_bandwidth(device: torch.device | str) -> float | None:
    """The datasheet peak memory bandwidth of a CUDA device, from its reported memory clock and bus width.

    2 (double data rate) × memory clock (kHz) × 1000 × bus width (bits) ÷ 8. Check: an H100 SXM reports
    2 619 000 kHz and 5120 bits → 2 × 2.619e9 × 640 = 3.35e12 bytes/s, its datasheet's 3.35 TB/s.

    Args:
        device: A device, e.g. "cuda:0".

    Returns:
        Bytes per second, or None on a non-CUDA device or where the device properties lack `memory_clock_rate` /
        `memory_bus_width` (older PyTorch).
    """
    device = torch.device(device)
    if device.type != "cuda":
        return None
    props = torch.cuda.get_device_properties(device)
    clock_khz = getattr(props, "memory_clock_rate", None)
    bus_bits = getattr(props, "memory_bus_width", None)
    if not clock_khz or not bus_bits:
        return None
    return 2.0 * clock_khz * 1000 * bus_bits / 8


def bound_record(
    model,
    *,
    batch_size: int,
    source_tokens: int,
    prompt_tokens: int = 1,
    new_tokens: int,
    measured_ms: float,
    encoder_ms: float,
    bandwidth_bytes_per_s: float,
    per_sequence: bool = True,
) -> dict:
    """The bound beside a measured generation latency, ready to log next to its row.

    Args:
        model: As for `generation_bound_ms`.
        batch_size: As for `generation_bound_ms`.
        source_tokens: As for `generation_bound_ms`.
        prompt_tokens: As for `generation_bound_ms`.
        new_tokens: As for `generation_bound_ms`.
        measured_ms: The measured generation time, the encoder included, in the unit `per_sequence` says.
        encoder_ms: The measured encoder time, in the same unit.
        bandwidth_bytes_per_s: As for `generation_bound_ms`.
        per_sequence: True (default): `measured_ms` and `encoder_ms` are per sequence, as `time_generation` and
            `time_encoder` report them (`LatencyResult.median_ms`), and so is `bound_ms`. False: per run of the
            whole batch.

    Returns:
        {"bound_ms": the bound in the unit of `measured_ms`, "bound_ratio": measured_ms / bound_ms (≥ 1 unless the
        bandwidth is understated), "bandwidth_gbs": the bandwidth in GB/s (10⁹ bytes), "decoder_weight_mb": the
        weights one step reads, in MiB}.

    Raises:
        ConfigError: As `generation_bound_ms`.
    """
    bound_ms = generation_bound_ms(
        model, batch_size=batch_size, source_tokens=source_tokens, prompt_tokens=prompt_tokens, new_tokens=new_tokens,
        bandwidth_bytes_per_s=bandwidth_bytes_per_s, encoder_ms=encoder_ms, per_sequence=per_sequence,
    )
    return {
        "bound_ms": bound_ms,
        "bound_ratio": measured_ms / bound_ms if bound_ms > 0 else float("inf"),
        "bandwidth_gbs": bandwidth_bytes_per_s / 1e9,
        "decoder_weight_mb": decoder_weight_bytes(model, batch_size=batch_size) / MB,
    }
