"""int8 storage of weights: small, and close to the originals."""

import torch

from shrinktune.models.int8 import SCALE_SUFFIX, dequantize_int8, quantize_int8


def test_matrices_round_trip_within_half_a_step_and_vectors_in_fp16():
    torch.manual_seed(0)
    tensors = {"w": torch.randn(8, 5) * torch.arange(1, 9).unsqueeze(1), "b": torch.randn(5)}
    stored = quantize_int8(tensors)
    assert stored["w"].dtype == torch.int8 and stored["w" + SCALE_SUFFIX].shape == (8, 1)
    assert stored["b"].dtype == torch.float16
    assert int(stored["w"].abs().amax(dim=1).min()) == 127  # every row uses the full range
    back = dequantize_int8(stored)
    step = stored["w" + SCALE_SUFFIX].float()
    assert set(back) == {"w", "b"}
    assert bool(((back["w"] - tensors["w"]).abs() <= step / 2 + 1e-6).all())
    assert torch.allclose(back["b"], tensors["b"], atol=1e-2)


def test_a_zero_row_stays_zero():
    back = dequantize_int8(quantize_int8({"w": torch.zeros(2, 3)}))
    assert torch.equal(back["w"], torch.zeros(2, 3))
