"""Full fine-tuning memory (the papers' comparison): tiny random models of every family, on the CPU."""

import gc
import weakref

import pytest
import tiny_models
import torch
from tiny_models import FAMILIES, make_tiny

from shrinktune.errors import ConfigError
from shrinktune.measure import finetune_memory
from shrinktune.measure.finetune_memory import MB, finetune_memory_record, full_finetune_peak_bytes
from shrinktune.measure.memory import tensor_bytes
from shrinktune.measure.params import unique_tensors
from shrinktune.models.student import LatentEncoderDecoderModel

SMALL = dict(batch_size=2, source_tokens=16, target_tokens=8)


def make_latent(kind: str):
    teacher = make_tiny(kind)
    student = tiny_models.make_latent(teacher)
    assert isinstance(student, LatentEncoderDecoderModel)
    return teacher, student


def _decoder_trainable_bytes(model) -> int:
    """Bytes of the parameters left trainable with the encoder and the bottleneck frozen (shared ones counted once)."""
    frozen = {id(p) for p in finetune_memory.encoder_module(model).parameters()}
    if getattr(model, "bottleneck", None) is not None:
        frozen |= {id(p) for p in model.bottleneck.parameters()}
    return sum(p.numel() * p.element_size() for p in unique_tensors(model.parameters()) if id(p) not in frozen)


@pytest.mark.parametrize("kind", FAMILIES)
def test_every_family_runs_both_ways_and_the_latent_student_too(kind):
    teacher, student = make_latent(kind)
    teacher_full = full_finetune_peak_bytes(teacher, trainable="all", **SMALL)
    student_full = full_finetune_peak_bytes(student, trainable="all", **SMALL)
    student_decoder = full_finetune_peak_bytes(student, trainable="decoder", **SMALL)
    assert 0 < student_decoder < student_full < teacher_full
    # at least the weights, plus gradients and AdamW's two moments of what trains
    for model, peak in ((teacher, teacher_full), (student, student_full)):  # everything trains
        assert peak >= tensor_bytes(model) + 3 * sum(p.numel() * p.element_size()
                                                     for p in unique_tensors(model.parameters()))
    trainable = _decoder_trainable_bytes(student)
    assert 0 < trainable < tensor_bytes(student)
    assert student_decoder >= tensor_bytes(student) + 3 * trainable


def test_the_model_is_left_untouched_and_the_copy_freed(monkeypatch):
    _, student = make_latent("bart")
    student.encoder.embed_tokens.weight.requires_grad_(False)  # a flag the measurement must not reset
    before = {name: p.detach().clone() for name, p in student.named_parameters()}
    flags = {name: p.requires_grad for name, p in student.named_parameters()}
    training, rng = student.training, torch.random.get_rng_state()
    copies = []
    make_copy = finetune_memory._training_copy

    def recording(model, device):
        clone = make_copy(model, device)
        copies.append(weakref.ref(clone))
        return clone

    monkeypatch.setattr(finetune_memory, "_training_copy", recording)
    full_finetune_peak_bytes(student, trainable="decoder", **SMALL)
    full_finetune_peak_bytes(student, trainable="all", **SMALL)
    assert all(torch.equal(p, before[name]) for name, p in student.named_parameters())
    assert {name: p.requires_grad for name, p in student.named_parameters()} == flags
    assert all(p.grad is None for p in student.parameters())
    assert student.training == training and torch.equal(torch.random.get_rng_state(), rng)
    gc.collect()
    assert len(copies) == 2 and all(ref() is None for ref in copies)


def test_record_compares_the_frozen_student_with_the_trainable_teacher():
    teacher, student = make_latent("bart")
    record = finetune_memory_record(teacher, student, **SMALL)
    assert set(record) == {"train_full_peak_mb", "teacher_train_full_peak_mb", "train_full_ratio"}
    assert record["train_full_peak_mb"] * MB == int(record["train_full_peak_mb"] * MB)  # whole bytes, in MiB
    assert record["train_full_ratio"] == pytest.approx(
        record["train_full_peak_mb"] / record["teacher_train_full_peak_mb"])
    assert 0 < record["train_full_ratio"] < 1
    with pytest.raises(TypeError, match="fixes trainable"):
        finetune_memory_record(teacher, student, trainable="all")


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_autocast_runs_on_the_cpu(dtype):
    _, student = make_latent("t5")
    assert full_finetune_peak_bytes(student, trainable="decoder", dtype=dtype, **SMALL) > tensor_bytes(student)


def test_bad_arguments_are_refused_in_one_line():
    bart, t5 = make_tiny("bart"), make_tiny("t5")
    with pytest.raises(ConfigError, match=r"trainable must be one of all, decoder, got 'encoder'"):
        full_finetune_peak_bytes(bart, trainable="encoder")
    with pytest.raises(ConfigError, match=r"source_tokens \(65\) is above the encoder's max_position_embeddings "
                                          r"\(64\)"):
        full_finetune_peak_bytes(bart, batch_size=1, source_tokens=65, target_tokens=4)
    with pytest.raises(ConfigError) as refused:
        full_finetune_peak_bytes(bart, batch_size=1, source_tokens=65, target_tokens=4)
    assert "\n" not in str(refused.value)
    with pytest.raises(ConfigError, match=r"target_tokens \(100\) is above the decoder's .*\(64\)"):
        full_finetune_peak_bytes(bart, batch_size=1, source_tokens=8, target_tokens=100)
    _, student = make_latent("bert2bert")
    with pytest.raises(ConfigError, match=r"source_tokens \(512\) is above the encoder's .*\(64\)"):
        full_finetune_peak_bytes(student)  # the default 512 is too long for these tiny BERTs
    for name in ("batch_size", "source_tokens", "target_tokens"):
        with pytest.raises(ConfigError, match=rf"{name} must be an integer ≥ 1, got 0"):
            full_finetune_peak_bytes(bart, **{**SMALL, name: 0})
    with pytest.raises(ConfigError, match="dtype must be None, torch.bfloat16 or torch.float16"):
        full_finetune_peak_bytes(bart, dtype=torch.float64, **SMALL)
    assert full_finetune_peak_bytes(t5, batch_size=1, source_tokens=80, target_tokens=4) > 0  # T5: no limit


def test_encoder_decoder_without_special_tokens_is_refused():
    model = make_tiny("bert2bert")
    model.config.decoder_start_token_id = None
    with pytest.raises(ConfigError, match="lacks decoder_start_token_id"):
        full_finetune_peak_bytes(model, **SMALL)


def test_random_ids_skip_the_pad_ids():
    ids = finetune_memory._random_ids(torch.Generator().manual_seed(0), (64, 64), 6, {0, 3})
    assert set(ids.unique().tolist()) == {1, 2, 4, 5}
