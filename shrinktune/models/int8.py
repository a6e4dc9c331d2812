"""Storing weights small: int8 with one scale per output row, for checkpoints shipped inside the package.

A 2-D weight `W` (out, in) is stored as `round(W / s)` in int8 with `s = max|W_row| / 127` per row (fp16); 1-D
tensors (biases, LayerNorm) stay as fp16. Dequantized weights differ from the originals by at most half a step
per entry (`s / 2`), which leaves a summarizer's outputs almost unchanged at a quarter of the fp32 size.
"""

from __future__ import annotations

import torch

SCALE_SUFFIX = ".int8_scale"


def quantize_int8(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """fp32 tensors → a flat dict: int8 rows + `<name>.int8_scale` for matrices, fp16 for the rest."""
    out = {}
    for name, tensor in tensors.items():
        tensor = tensor.detach().float().cpu()
        if tensor.dim() == 2:
            scale = tensor.abs().amax(dim=1, keepdim=True).clamp_min(1e-12) / 127  # (out, 1)
            scale = scale.half().float()  # the scale is stored in fp16: quantize against the stored value
            out[name] = torch.round(tensor / scale).clamp(-127, 127).to(torch.int8).contiguous()  # (out, in)
            out[name + SCALE_SUFFIX] = scale.half().contiguous()
        else:
            out[name] = tensor.half().contiguous()
    return out


def dequantize_int8(stored: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The inverse of `quantize_int8`: fp32 tensors under their original names."""
    out = {}
    for name, tensor in stored.items():
        if name.endswith(SCALE_SUFFIX):
            continue
        if tensor.dtype == torch.int8:
            out[name] = tensor.float() * stored[name + SCALE_SUFFIX].float()  # (out, in) * (out, 1)
        else:
            out[name] = tensor.float()
    return out
