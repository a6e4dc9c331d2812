"""Tests for shrinktune.measure.memory: the CPU peak is the allocator's peak of additional memory."""

import os

import pytest
import torch
from torch.profiler import ProfilerActivity, profile

from shrinktune.measure.memory import peak_memory_bytes, tensor_bytes

MB = 1_000_000
SLACK = 64 * 1024  # room for small bookkeeping tensors an op might allocate


def _alloc_free_alloc() -> torch.Tensor:
    big = torch.empty(10 * MB, dtype=torch.uint8)
    del big
    return torch.empty(4 * MB, dtype=torch.uint8)


def test_peak_is_the_high_point_not_the_sum_or_the_end():
    peak = peak_memory_bytes(_alloc_free_alloc)
    assert 10 * MB <= peak <= 10 * MB + SLACK  # not 14 MB (sum), not 4 MB (what is left at the end)


def test_simultaneous_tensors_add_up():
    def both_alive():
        a = torch.empty(3 * MB, dtype=torch.uint8)
        b = torch.empty(5 * MB, dtype=torch.uint8)
        return a, b

    assert 8 * MB <= peak_memory_bytes(both_alive) <= 8 * MB + SLACK


def test_a_step_that_allocates_nothing_needs_nothing():
    existing = torch.ones(MB)  # allocated before: not part of the step
    assert peak_memory_bytes(lambda: existing.mul_(2)) <= SLACK


def test_forward_backward_peak_grows_with_batch():
    torch.manual_seed(0)
    mlp = torch.nn.Sequential(torch.nn.Linear(32, 256), torch.nn.ReLU(), torch.nn.Linear(256, 4))

    def step(batch: int):
        x = torch.randn(batch, 32)  # (batch, 32)
        return lambda: mlp(x).sum().backward()

    step(8)()  # gradients now exist, so later steps accumulate into them
    small, large = peak_memory_bytes(step(64)), peak_memory_bytes(step(128))
    hidden_bytes = 64 * 256 * 4  # the (64, 256) float32 activation kept for backward
    assert small >= hidden_bytes
    assert large > 1.5 * small


def test_repeated_calls_agree_and_print_nothing_from_the_profiler(capfd):
    def step():
        _alloc_free_alloc()
        os.write(2, b"step output\n")

    peaks = [peak_memory_bytes(step) for _ in range(3)]
    err = capfd.readouterr().err
    assert len(set(peaks)) == 1
    assert err.count("step output") == 3  # the step's own stderr survives the filter
    assert "USDT" not in err and "STAGE" not in err and "profiling" not in err


def test_an_exception_in_the_step_propagates_and_leaves_no_profiler_running():
    def broken():
        raise KeyError("boom")

    with pytest.raises(KeyError, match="boom"):
        peak_memory_bytes(broken)
    assert not torch.autograd._profiler_enabled()
    assert 10 * MB <= peak_memory_bytes(_alloc_free_alloc) <= 10 * MB + SLACK


def test_inside_another_profiler_is_rejected():
    with profile(activities=[ProfilerActivity.CPU]):
        with pytest.raises(RuntimeError, match=r"cannot start inside another profiling session"):
            peak_memory_bytes(lambda: None)


def test_unsupported_device_is_rejected():
    with pytest.raises(ValueError, match=r"'cpu' or 'cuda' devices, got 'meta'"):
        peak_memory_bytes(lambda: None, device="meta")


def test_tensor_bytes_counts_parameters_and_buffers_once():
    module = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.BatchNorm1d(8))
    params = (4 * 8 + 8) + (8 + 8)
    buffers = 8 + 8  # running mean and var, float32
    assert tensor_bytes(module) == 4 * (params + buffers) + 8  # + num_batches_tracked (int64)
    module.extra = torch.nn.Linear(4, 8)
    module.extra.weight = module[0].weight  # tied: only the new bias adds bytes
    assert tensor_bytes(module) == 4 * (params + buffers) + 8 + 4 * 8
