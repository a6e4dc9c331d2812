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
