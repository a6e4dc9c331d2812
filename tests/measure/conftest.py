"""Fixtures shared by the measurement tests."""

import pytest
import torch


@pytest.fixture
def spy_on_generate():
    """`spy(model)` wraps `model.generate` and returns the list it fills with (length kwargs, output) per call."""

    def spy(model) -> list[tuple[dict, torch.Tensor]]:
        calls, generate = [], model.generate

        def recording(**kwargs):
            out = generate(**kwargs)
            calls.append(({k: v for k, v in kwargs.items() if "tokens" in k}, out))
            return out

        model.generate = recording
        return calls

    return spy


@pytest.fixture
def one_thread():
    """CPU timings depend on the thread count (and two threads fight a busy 2-core machine): pin 1, then restore."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
