"""The output shortlist: a narrow student's LM head over the training text's tokens alone."""

import contextlib

import pytest
import torch
from transformers import AutoModelForSeq2SeqLM
from transformers.modeling_outputs import BaseModelOutput

from shrinktune.errors import ConfigError
from shrinktune.measure.memory import peak_memory_bytes
from shrinktune.models.decoding import set_runtime
from shrinktune.models.generation import generate
from shrinktune.models.student import (
    OUTSIDE_LOGIT,
    ShortlistHead,
    build_student,
    output_vocab_size,
    shortlist_logits,
    shortlist_output,
    to_shortlist,
)
from shrinktune.training import distill
from shrinktune.training.distill import seq2seq_loss
from shrinktune.training.encode import EncodedPairs
from shrinktune.training.finetune import FinetuneSettings, training_step_fn
from tests.tiny_models import FAMILIES, make_latent, make_tiny

KEPT = [0, 1, 2, 3] + list(range(10, 120, 3))  # the tiny models' special ids, and a third of the rest


def _batch(vocab: int = 120):
    torch.manual_seed(1)
    ids = torch.randint(4, vocab, (2, 9))
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


@pytest.mark.parametrize("kind", FAMILIES)
def test_shortlisted_logits_are_the_full_heads_on_the_shortlist_and_outside_elsewhere(kind):
    student = make_latent(make_tiny(kind))
    batch, start = _batch(), torch.full((2, 3), 2)
    with torch.no_grad():
        full = student(**batch, decoder_input_ids=start).logits
        shortlist_output(student, KEPT)
        short = student(**batch, decoder_input_ids=start).logits
    assert short.shape == full.shape and output_vocab_size(student) == 120
    assert torch.allclose(short[..., KEPT], full[..., KEPT], atol=1e-6)
    outside = [i for i in range(120) if i not in KEPT]
    assert torch.all(short[..., outside] == OUTSIDE_LOGIT)


@pytest.mark.parametrize("kind", FAMILIES)
def test_a_shortlisted_student_saves_loads_and_generates_inside_its_shortlist(tmp_path, kind):
    student = shortlist_output(make_latent(make_tiny(kind)), KEPT)
    student.generation_config.min_new_tokens = 6  # every step is a real choice, none an early end
    student.save_pretrained(tmp_path)
    loaded = AutoModelForSeq2SeqLM.from_pretrained(tmp_path).eval()
    assert isinstance(loaded.decoder.get_output_embeddings(), ShortlistHead)
    assert loaded.config.output_vocab == KEPT and loaded.config.student["output_vocab"] == len(KEPT)
    for name, tensor in student.state_dict().items():
        assert torch.equal(tensor, loaded.state_dict()[name]), name
    batch = _batch()
    out = generate(student, **batch)
    assert torch.equal(out, generate(loaded, **batch))
    assert set(out[:, 1:].flatten().tolist()) <= set(KEPT)
    set_runtime(loaded, "compiled")  # the static-cache loop sizes its buffers by the whole vocabulary
    assert torch.equal(out, generate(loaded, **batch))


def test_training_reads_the_shortlists_logits_and_labels_as_positions_in_it():
    student = shortlist_output(make_latent(make_tiny("bart")), KEPT)
    states = student.encode_latent(torch.randn(2, 9, 32))
    with shortlist_logits(student) as ids:
        small = student(encoder_outputs=BaseModelOutput(states), decoder_input_ids=torch.full((2, 3), 2)).logits
    assert small.shape[-1] == len(KEPT) and torch.equal(ids, torch.tensor(KEPT))
    assert student.decoder.get_output_embeddings().expand  # restored on leaving
    labels = torch.tensor([[13, 2, -100], [11, 0, 1]])  # 11 is outside the shortlist
    assert to_shortlist(labels, ids, 120).tolist() == [[KEPT.index(13), 2, -100], [-100, 0, 1]]
    assert torch.equal(to_shortlist(labels, None, 120), labels)


def test_a_same_width_bert2bert_student_is_rehoused_with_its_weights_and_takes_a_shortlist(tmp_path):
    """A 384 × 1 student of the embedded teacher keeps the teacher's first decoder layer and gains the narrow
    students' shortlist: same logits on the shortlist before and after, and it loads as it was saved."""
    student = build_student(make_tiny("bert2bert"), decoder_layers=1).eval()
    batch, start = _batch(), torch.full((2, 3), 2)
    with torch.no_grad():
        full = student(**batch, decoder_input_ids=start).logits
        short = shortlist_output(student, KEPT).eval()
        out = short(**batch, decoder_input_ids=start).logits
    assert isinstance(short.decoder.get_output_embeddings(), ShortlistHead) and short.bottleneck is None
    assert short.config.student["decoder_layers"] == 1 and short.config.student["output_vocab"] == len(KEPT)
    assert torch.allclose(out[..., KEPT], full[..., KEPT], atol=1e-5)
    short.save_pretrained(tmp_path)
    loaded = AutoModelForSeq2SeqLM.from_pretrained(tmp_path).eval()
    assert torch.equal(generate(short, **batch), generate(loaded, **batch))


def test_a_shortlist_is_refused_for_a_same_width_bart_student_or_out_of_range_ids():
    with pytest.raises(ConfigError, match="BartForConditionalGeneration student has neither"):
        shortlist_output(build_student(make_tiny("bart"), decoder_layers=1), KEPT)
    with pytest.raises(ConfigError, match="distinct token ids"):
        shortlist_output(make_latent(make_tiny("bert2bert")), [0, 500])


def _pairs(vocab: int, n: int = 4, src: int = 9, tgt: int = 12) -> EncodedPairs:
    torch.manual_seed(2)
    labels = torch.tensor(KEPT[4:])[torch.randint(0, len(KEPT) - 4, (n, tgt))]  # summaries of shortlisted tokens
    labels[:, -3:] = -100  # padding
    decoder_inputs = torch.cat([torch.full((n, 1), 2), labels[:, :-1].clamp(min=0)], 1)
    return EncodedPairs(torch.randn(n, src, 32), torch.ones(n, src, dtype=torch.long), labels, decoder_inputs)


def test_the_loss_over_the_shortlist_is_the_loss_over_the_whole_vocabulary():
    student = shortlist_output(make_latent(make_tiny("bart", vocab=600)), KEPT)
    pairs = _pairs(600)
    states = student.encode_latent(pairs.states)
    short = seq2seq_loss(student, states, pairs.attention_mask, pairs.decoder_input_ids, pairs.labels)
    full = student(encoder_outputs=BaseModelOutput(states), decoder_input_ids=pairs.decoder_input_ids).logits
    assert full.shape[-1] == 600
    expected = torch.nn.functional.cross_entropy(full.flatten(0, 1), pairs.labels.flatten(), ignore_index=-100)
    assert torch.allclose(short, expected, atol=1e-5)


def test_the_memory_of_a_training_step_is_that_of_the_step_training_runs(monkeypatch):
    """`train_peak_mb` wraps `training_step_fn`: for a shortlisted head, the logits over its shortlist — as
    `finetune_on_states` trains — not the (batch, tgt_len, vocab) ones generation expands them to."""
    student = shortlist_output(make_latent(make_tiny("bart", vocab=4000)), KEPT)
    pairs, settings = _pairs(4000), FinetuneSettings(epochs=1, learning_rate=1e-3, batch_size=4)
    measured = peak_memory_bytes(training_step_fn(student, pairs, settings))

    @contextlib.contextmanager
    def expanded(model):  # what the measurement did before: the whole vocabulary's logits
        yield None

    monkeypatch.setattr(distill, "shortlist_logits", expanded)
    whole = peak_memory_bytes(training_step_fn(student, pairs, settings))
    logits = 4 * 12 * 4000 * 4  # one (batch, tgt_len, vocab) float32 tensor
    assert whole - measured > logits  # at least one tensor of the whole vocabulary's logits less
