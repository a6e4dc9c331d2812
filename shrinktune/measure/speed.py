"""Speed-up against a reference, measured so that it holds up: interleaved, at fixed length, to a stated precision.

A student's cost depends on its architecture (widths, depths, FFN, bottleneck) and the runtime, not on its trained
weights; what differs between two trained students of one architecture is only how long their summaries are. So
`compare_speed` times the reference (the teacher) and the candidate in alternating rounds in one process — the
order flips every round, so drift of the machine falls on both — each round one pass over the same inputs with
every summary forced to `new_tokens` tokens. It repeats rounds until the interquartile range of the per-round
ratio is within ±`target` of its median, or a time cap is hit (`converged` says which). Every round also times
each model at a short length (`short_tokens`, a quarter of `new_tokens`; the median over rounds is used), so that a
figure at any summary length follows from the same rounds by the line through the two lengths:

    time(n tokens) = short + (fixed-length time - short) × (n - short_tokens) / (new_tokens - short_tokens)

Its intercept holds what a summary costs whatever its length — the encoder, and `generate`'s own set-up (the
source-copy bias's tables, the prompt) — which a model of "encoder + per-token cost" scaled with the length and so
credited to students that write short summaries (up to 17 % too fast, bench/RESULTS.md).

`SpeedRounds.speedup()` is the architecture's speed-up at fixed length; `speedup(ref_tokens, cand_tokens)` the
natural-length one, given each model's mean tokens per summary (measured on the evaluation pairs). Rounds are a
plain record, so a search caches them per architecture (`architecture_key`) and re-uses them for every trial of the
same shape.

    rounds = compare_speed(teacher, student, inputs, new_tokens=24)
    rounds.speedup().median, rounds.speedup(27.0, 31.5).median
"""

from __future__ import annotations

import gc
import hashlib
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch

from shrinktune.errors import ConfigError
from shrinktune.measure.latency import Batch, generation_record, time_encoder, time_generation

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Spread:
    """The median of per-round values and their interquartile range."""

    median: float
    q25: float
    q75: float

    @property
    def relative_half_iqr(self) -> float:
        """Half the interquartile range as a fraction of the median: 0.05 reads "±5 %"."""
        return (self.q75 - self.q25) / (2 * self.median) if self.median else float("inf")

    @classmethod
    def of(cls, values) -> Spread:
        values = np.asarray(values, dtype=float)
        q25, median, q75 = np.percentile(values, [25, 50, 75])
        return cls(float(median), float(q25), float(q75))


def at_length(fixed_ms: np.ndarray, short_ms: float, new_tokens: int, short_tokens: int,
              tokens: float | None) -> np.ndarray:
    """Per-summary time at `tokens` new tokens, on the line through (`short_tokens`, `short_ms`) and (`new_tokens`,
    `fixed_ms`) (None: the fixed-length times unchanged). Never below the short time's intercept share."""
    if tokens is None:
        return fixed_ms
    per_token = np.maximum(fixed_ms - short_ms, 0.0) / (new_tokens - short_tokens)
    return np.maximum(short_ms + per_token * (tokens - short_tokens), short_ms - per_token * short_tokens)


@dataclass(frozen=True)
class SpeedRounds:
    """Interleaved fixed-length timings of a reference and a candidate model, per summary, one value per round."""

    reference_ms: tuple[float, ...]  # the reference's ms per summary in each round
    candidate_ms: tuple[float, ...]  # the candidate's, same rounds
    reference_short_ms: float  # ms per summary at `short_tokens`, median over the rounds
    candidate_short_ms: float
    new_tokens: int  # every timed summary had exactly this many new tokens
    converged: bool  # the fixed-length ratio's half-IQR reached the target (else the time or round cap ended it)
    seconds: float  # wall time the rounds took
    threads: int  # torch CPU threads while timing
    device: str
    short_tokens: int = 0  # the short length (0: `*_short_ms` is the encoder alone)

    @property
    def rounds(self) -> int:
        return len(self.reference_ms)

    def _times(self, reference_tokens: float | None, candidate_tokens: float | None) -> tuple[np.ndarray, np.ndarray]:
        ref = at_length(np.asarray(self.reference_ms), self.reference_short_ms, self.new_tokens, self.short_tokens,
                        reference_tokens)
        cand = at_length(np.asarray(self.candidate_ms), self.candidate_short_ms, self.new_tokens, self.short_tokens,
                         candidate_tokens)
        return ref, cand

    def speedup(self, reference_tokens: float | None = None, candidate_tokens: float | None = None) -> Spread:
        """Reference time ÷ candidate time over the rounds: at fixed length, or at the given mean summary lengths
        (tokens per summary; both or neither)."""
        if (reference_tokens is None) != (candidate_tokens is None):
            raise ConfigError("speedup: give both models' tokens per summary, or neither (fixed length).")
        ref, cand = self._times(reference_tokens, candidate_tokens)
        return Spread.of(ref / cand)

    def latency(self, which: str, tokens: float | None = None) -> Spread:
        """One model's ms per summary over the rounds ("reference" or "candidate"), at fixed length or `tokens`."""
        ref, cand = self._times(tokens, tokens)
        return Spread.of({"reference": ref, "candidate": cand}[which])

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> SpeedRounds:
        data = json.loads(text)
        return cls(**{**data, "reference_ms": tuple(data["reference_ms"]), "candidate_ms": tuple(data["candidate_ms"])})


def _pass_ms(model, batches, new_tokens: int) -> float:
    """One timed pass over the batches at fixed length, ms per summary."""
    return time_generation(model, batches, new_tokens=new_tokens, warmup=0, repeats=1).median_ms


def short_length(new_tokens: int) -> int:
    """The second timed length: a quarter of `new_tokens` (at least 1, below `new_tokens`)."""
    return max(1, min(new_tokens - 1, new_tokens // 4)) if new_tokens > 1 else 0


def _short_ms(model, batches, short_tokens: int) -> float:
    """One pass at the short length (the encoder alone when it is 0)."""
    if short_tokens == 0:
        return time_encoder(model, batches, warmup=0, repeats=1).median_ms
    return _pass_ms(model, batches, short_tokens)


def _rounds(reference, candidate, batches, new_tokens, times: dict[str, list[float]], min_rounds, max_rounds, target,
            time_cap_s, clock, start) -> bool:
    """Appends alternating rounds to `times` (at both lengths, per model) until converged (True) or a cap (False)."""
    short = short_length(new_tokens)
    while len(times["reference"]) < max_rounds:
        order = ("reference", "candidate") if len(times["reference"]) % 2 == 0 else ("candidate", "reference")
        for name in order:
            model = reference if name == "reference" else candidate
            times[name].append(_pass_ms(model, batches, new_tokens))
            times[f"{name}_short"].append(_short_ms(model, batches, short))
        if len(times["reference"]) >= min_rounds:
            spread = Spread.of(np.asarray(times["reference"]) / np.asarray(times["candidate"]))
            if spread.relative_half_iqr <= target:
                return True
            if clock() - start >= time_cap_s:
                return False
    return False


def compare_speed(
    reference,
    candidate,
    inputs: Batch | Sequence[Batch],
    *,
    new_tokens: int,
    min_rounds: int = 5,
    max_rounds: int = 40,
    target: float = 0.05,
    time_cap_s: float = 60.0,
    clock: Callable[[], float] = time.monotonic,
) -> SpeedRounds:
    """Times `reference` and `candidate` in alternating rounds at fixed length until the speed-up is precise.

    Args:
        reference, candidate: models with `generate` (and `get_encoder`), in eval mode, on the same device. The
            same object twice measures the method's own noise (the ratio should be 1).
        inputs: tokenized batches, as for `time_generation`; one pass generates all of them.
        new_tokens: tokens every summary is forced to.
        min_rounds: rounds always timed.
        max_rounds: rounds at most.
        target: stop when the fixed-length ratio's half-IQR ÷ median ≤ this (0.05 = ±5 %).
        time_cap_s: stop after this many seconds of rounds even if not converged.
        clock: seconds, for the time cap (tests pass a fake one).

    Returns:
        The per-round timings and whether they converged.

    Raises:
        ConfigError: If a count or bound is out of range.
    """
    if new_tokens < 1 or min_rounds < 1 or max_rounds < min_rounds or target <= 0 or time_cap_s <= 0:
        raise ConfigError(
            f"compare_speed: need new_tokens ≥ 1, 1 ≤ min_rounds ≤ max_rounds, target > 0 and time_cap_s > 0; got "
            f"{new_tokens}, {min_rounds}, {max_rounds}, {target}, {time_cap_s}."
        )
    batches = list(inputs) if isinstance(inputs, Sequence) else [inputs]
    for model in (reference, candidate):  # caches, lazy init, kernels
        _pass_ms(model, batches, new_tokens)
    times: dict[str, list[float]] = {"reference": [], "candidate": [], "reference_short": [], "candidate_short": []}
    # Each timed pass starts with a full collection (`measure_latency`); with transformers loaded that takes 0.1-0.2 s
    # of the time cap. Frozen objects are left out of collections: the rounds then spend their time timing.
    gc.collect()
    gc.freeze()
    start = clock()
    try:
        converged = _rounds(reference, candidate, batches, new_tokens, times, min_rounds, max_rounds, target,
                            time_cap_s, clock, start)
    finally:
        gc.unfreeze()
    rounds = SpeedRounds(
        reference_ms=tuple(times["reference"]), candidate_ms=tuple(times["candidate"]),
        reference_short_ms=float(np.median(times["reference_short"])),
        candidate_short_ms=float(np.median(times["candidate_short"])), new_tokens=new_tokens,
        converged=converged, seconds=clock() - start, threads=torch.get_num_threads(),
        device=str(next(reference.parameters()).device), short_tokens=short_length(new_tokens),
    )
    fixed = rounds.speedup()
    logger.info("speed-up at %d tokens: %.2fx (IQR %.2f-%.2f, %d rounds, %s)", new_tokens, fixed.median, fixed.q25,
                fixed.q75, rounds.rounds,
                "converged" if converged else f"±{100 * fixed.relative_half_iqr:.0f} % at cap")
    return rounds


def time_alone(model, inputs: Batch | Sequence[Batch], *, new_tokens: int, rounds: int = 5) -> SpeedRounds:
    """One model's fixed-length timing in the same record (it is both reference and candidate, timed once per
    round): the teacher's own latency, without spending time on comparing it with itself."""
    batches = list(inputs) if isinstance(inputs, Sequence) else [inputs]
    _pass_ms(model, batches, new_tokens)
    short_tokens = short_length(new_tokens)
    start = time.monotonic()
    times = tuple(_pass_ms(model, batches, new_tokens) for _ in range(rounds))
    short = float(np.median([_short_ms(model, batches, short_tokens) for _ in range(rounds)]))
    return SpeedRounds(times, times, short, short, new_tokens, True, time.monotonic() - start,
                       torch.get_num_threads(), str(next(model.parameters()).device), short_tokens)


def architecture_key(model) -> str:
    """A hash of what decides a model's generation cost: its class, every tensor's name, shape and dtype, its
    attention heads, and the generation settings that change the work per step (beams, n-gram blocking, source
    bias). Two trained students of one shape share it; any change of width, depth, FFN or bottleneck changes it."""
    shapes = [(name, tuple(t.shape), str(t.dtype)) for name, t in model.state_dict().items()]
    heads = {}
    for name, config in (("config", model.config), ("encoder", getattr(model.config, "encoder", None)),
                         ("decoder", getattr(model.config, "decoder", None))):
        if config is not None:
            heads[name] = [getattr(config, key, None) for key in
                           ("num_attention_heads", "encoder_attention_heads", "decoder_attention_heads", "num_heads")]
    record = {k: v for k, v in generation_record(model).items() if k not in ("max_new_tokens", "min_new_tokens")}
    blob = json.dumps([type(model).__name__, shapes, heads, record], sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]
