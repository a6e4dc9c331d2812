"""Wall-clock latency of a step, reported per item (per summary).

`measure_latency` runs a zero-argument callable a few times untimed (caches, lazy init, CUDA kernels), then times
`repeats` runs with `time.perf_counter`. On CUDA it synchronizes before and after each timed run, so the figure
covers the kernels the run launched and not just their queuing. Each run time is divided by `items_per_run`:
generating a batch of 8 summaries is one run of 8 items.

    from shrinktune.measure import measure_latency
    result = measure_latency(lambda: model.generate(**batch), items_per_run=len(batch["input_ids"]))
    result.median_ms  # milliseconds per summary
"""

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

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
        raise ValueError(f"measure_latency: items_per_run must be ≥ 1, got {items_per_run}; pass the batch size.")
    if warmup < 0:
        raise ValueError(f"measure_latency: warmup must be ≥ 0, got {warmup}; pass 0 to skip warm-up runs.")
    if repeats < 1:
        raise ValueError(f"measure_latency: repeats must be ≥ 1, got {repeats}; time at least one run.")


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
        ValueError: If `items_per_run` < 1, `warmup` < 0 or `repeats` < 1.
    """
    _check_counts(items_per_run, warmup, repeats)
    device = torch.device(device)
    synchronize = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)

    for _ in range(warmup):
        fn()
    per_item_ms = np.empty(repeats)  # (repeats,)
    for i in range(repeats):
        synchronize()
        start = time.perf_counter()
        fn()
        synchronize()
        per_item_ms[i] = (time.perf_counter() - start) * 1000.0 / items_per_run

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
