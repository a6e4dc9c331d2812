"""Tests for shrinktune.measure.latency: timing a sleep, per-item division, call counts, argument checks."""

import time

import pytest
import torch

from shrinktune.measure.latency import LatencyResult, measure_latency


def _sleep_20ms() -> None:
    time.sleep(0.020)


def test_sleep_is_measured_in_a_sensible_band():
    result = measure_latency(_sleep_20ms, warmup=0, repeats=3)
    # A sleep never returns early; the upper bound leaves room for a loaded machine.
    assert 19.5 <= result.median_ms <= 200.0
    assert result.median_ms <= result.p90_ms
    assert 19.5 <= result.mean_ms
    assert (result.runs, result.items_per_run, result.device) == (3, 1, "cpu")
    assert result.threads == torch.get_num_threads()


def test_times_are_per_item():
    result = measure_latency(_sleep_20ms, items_per_run=4, warmup=0, repeats=3)
    assert 4.9 <= result.median_ms <= 50.0
    assert result.items_per_run == 4


def test_warmup_calls_are_made_but_not_timed():
    calls = []
    result = measure_latency(lambda: calls.append(1), warmup=2, repeats=3)
    assert len(calls) == 5
    assert result.runs == 3


def test_result_is_frozen():
    result = measure_latency(lambda: None, warmup=0, repeats=1)
    assert isinstance(result, LatencyResult)
    with pytest.raises(AttributeError):
        result.median_ms = 0.0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"repeats": 0}, r"repeats must be ≥ 1, got 0"),
        ({"warmup": -1}, r"warmup must be ≥ 0, got -1"),
        ({"items_per_run": 0}, r"items_per_run must be ≥ 1, got 0"),
    ],
)
def test_bad_counts_are_rejected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        measure_latency(lambda: None, **kwargs)
