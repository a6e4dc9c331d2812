"""Precisions: checked against the device in one line; measured on a cast copy, trained under autocast."""

import pytest
import torch

from shrinktune.errors import ConfigError
from shrinktune.models.precision import autocast, cast_for_measuring, check_dtype, torch_dtype


def test_gpu_precisions_on_a_cpu_or_an_unknown_name_are_one_line():
    check_dtype("fp32", "cpu")
    with pytest.raises(ConfigError, match=r"^dtype bf16 is for GPUs, and this trial runs on the CPU; use dtype: "
                                          r"fp32, or run the search on a machine with a GPU"):
        check_dtype("bf16", "cpu")
    with pytest.raises(ConfigError, match=r"dtype 'fp8' is unknown; use one of fp32, bf16, fp16"):
        torch_dtype("fp8")


def test_a_gpu_without_bf16_is_refused(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a, **k: "Tesla V100")
    with pytest.raises(ConfigError, match="dtype bf16 is not supported by Tesla V100; use dtype: fp16 or fp32"):
        check_dtype("bf16", torch.device("cuda"))
    check_dtype("fp16", torch.device("cuda"))


def test_measuring_casts_a_copy_and_fp32_is_the_model_itself():
    model = torch.nn.Linear(4, 4)
    assert cast_for_measuring(model, "fp32") is model
    cast = cast_for_measuring(model, "bf16")
    assert cast is not model and cast.weight.dtype == torch.bfloat16 and model.weight.dtype == torch.float32
    with autocast("bf16", "cpu"):
        assert model(torch.ones(1, 4)).dtype == torch.bfloat16
    with autocast("fp32", "cpu"):
        assert model(torch.ones(1, 4)).dtype == torch.float32
