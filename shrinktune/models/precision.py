"""The precisions a search trains and measures in (`evaluation.dtype`): fp32, bf16, fp16.

Fine-tuning keeps fp32 weights and runs its forward passes under `torch.autocast` (fp16 with a gradient scaler);
measuring runs a copy of the model cast to the precision, so quality, latency and memory are those of the model a
user would deploy in it. bf16 and fp16 are GPU precisions here: a CPU, or a GPU without bf16, is refused in one line.

    check_dtype("bf16", torch.device("cuda"))
    with autocast("bf16", device):
        loss = model(**batch).loss
"""

from __future__ import annotations

import contextlib
import copy

import torch

from shrinktune.errors import ConfigError

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def torch_dtype(name: str) -> torch.dtype:
    if name not in DTYPES:
        raise ConfigError(f"dtype {name!r} is unknown; use one of {', '.join(DTYPES)}.")
    return DTYPES[name]


def check_dtype(name: str, device: torch.device | str) -> None:
    """Raises `ConfigError` (one line) when `device` cannot train and measure in `name`."""
    torch_dtype(name)
    device = torch.device(device)
    if name == "fp32":
        return
    if device.type != "cuda":
        raise ConfigError(f"dtype {name} is for GPUs, and this trial runs on the {device.type.upper()}; use dtype: "
                          "fp32, or run the search on a machine with a GPU (--gpus-per-trial).")
    if name == "bf16" and not torch.cuda.is_bf16_supported():
        raise ConfigError(f"dtype bf16 is not supported by {torch.cuda.get_device_name(device)}; use dtype: fp16 "
                          "or fp32.")


def autocast(name: str, device: torch.device | str):
    """`torch.autocast` in `name` on `device`'s type, or nothing for fp32."""
    if name == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=torch_dtype(name))


def grad_scaler(name: str, device: torch.device | str) -> torch.amp.GradScaler:
    """A gradient scaler, enabled for fp16 only (bf16 has fp32's range)."""
    return torch.amp.GradScaler(torch.device(device).type, enabled=name == "fp16")


def cast_for_measuring(model, name: str):
    """`model` itself in fp32, else a copy cast to the precision (the trained fp32 weights stay as they are)."""
    if name == "fp32":
        return model
    return copy.deepcopy(model).to(torch_dtype(name))
