"""Tests for shrinktune.measure.params: unique parameter counts and checkpoint sizes."""

import pytest
import torch

from shrinktune.measure.params import checkpoint_size_bytes, count_parameters, unique_tensors


class _TiedLM(torch.nn.Module):
    """Embedding shared with the output projection, as in most seq2seq models."""

    def __init__(self, vocab: int = 10, width: int = 4):
        super().__init__()
        self.embed = torch.nn.Embedding(vocab, width)
        self.head = torch.nn.Linear(width, vocab, bias=False)
        self.head.weight = self.embed.weight


def test_plain_module_counts_every_element():
    assert count_parameters(torch.nn.Linear(3, 5)) == 3 * 5 + 5


def test_tied_weights_count_once():
    assert count_parameters(_TiedLM()) == 10 * 4


def test_separate_parameters_viewing_the_same_memory_count_once():
    module = torch.nn.Module()
    module.a = torch.nn.Parameter(torch.zeros(6))
    module.b = torch.nn.Parameter(module.a.data)  # another Parameter object, same storage
    module.c = torch.nn.Parameter(torch.zeros(6))
    assert count_parameters(module) == 12
    assert len(unique_tensors([module.a, module.b, module.a[:3]])) == 2


def test_meta_parameters_are_counted_by_identity():
    with torch.device("meta"):
        module = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 2))
    assert count_parameters(module) == 2 * (2 * 2 + 2)


def test_checkpoint_size_sums_files_below_a_directory(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"x" * 100)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "config.json").write_bytes(b"y" * 23)
    assert checkpoint_size_bytes(tmp_path) == 123
    assert checkpoint_size_bytes(tmp_path / "model.safetensors") == 100
    assert checkpoint_size_bytes(str(tmp_path / "sub")) == 23


def test_missing_checkpoint_is_rejected(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"no file or directory at .*nope"):
        checkpoint_size_bytes(tmp_path / "nope")
