import math
from dataclasses import replace
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from transformers import BartConfig, BartForConditionalGeneration
from transformers.modeling_outputs import BaseModelOutput

import shrinktune.training.distill as distill_module
from shrinktune.errors import ConfigError
from shrinktune.models.autoencoder import Autoencoder
from shrinktune.models.student import build_student
from shrinktune.training.distill import (
    DistillSettings,
    HiddenProjection,
    cached_pseudo_labels,
    decoder_mask,
    distillation_loss,
    forward_on_states,
    generate_pseudo_labels,
    hidden_state_loss,
    kd_logits_loss,
    pseudo_labelled_pairs,
    ship_pseudo_labels,
    supervised_layers,
)
from shrinktune.training.encode import encode_pairs, tokenize_targets
from shrinktune.training.finetune import FinetuneSettings, finetune_on_states

KD = DistillSettings(method="kd", alpha_ce=1.0, alpha_mlm=0.0)


@pytest.fixture
def pairs(tiny_teacher, tokenizer, few_examples):
    return encode_pairs(tiny_teacher.encoder, tokenizer, few_examples, max_source_tokens=48, max_target_tokens=16,
                        start_id=tokenizer.cls_token_id)


@torch.no_grad()
def sharpen(teacher, factor=10.0):
    """A random teacher predicts near-uniform tokens, leaving KD nothing to teach: scaling its LM head makes its
    predictions peaked, as a trained teacher's are, and sets it apart from a student just copied from it."""
    teacher.decoder.cls.predictions.decoder.weight.mul_(factor)
    return teacher


def narrow_student(teacher):
    torch.manual_seed(0)
    ae = Autoencoder(32, 16).eval()
    return build_student(teacher, latent_dim=16, decoder_layers=1, bottleneck=ae.encoder, bottleneck_spec=ae.spec)


@torch.no_grad()
def kd_on_all_pairs(student, teacher, pairs, temperature=2.0):
    student.eval()
    t = forward_on_states(teacher, pairs.states, pairs.attention_mask, pairs.decoder_input_ids, pairs.labels).logits
    states = getattr(student, "encode_latent", lambda x: x)(pairs.states)  # same-width students read them raw
    s = forward_on_states(student, states, pairs.attention_mask, pairs.decoder_input_ids, pairs.labels).logits
    return kd_logits_loss(s, t, pairs.labels, temperature).item()


# ---------------------------------------------------------------------------------------------------- settings


@pytest.mark.parametrize("kwargs, match", [
    (dict(method="bogus"), r"one of \['kd', 'pseudo_labels', 'sft'\], got 'bogus'"),
    (dict(alpha_hid=-1.0), "alpha_hid must be ≥ 0, got -1.0"),
    (dict(temperature=0.0), "temperature must be > 0, got 0.0"),
    (dict(method="kd", alpha_ce=0, alpha_mlm=0, alpha_hid=0), "kd needs at least one of alpha_ce"),
])
def test_settings_reject_broken_values(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        DistillSettings(**kwargs)


# ---------------------------------------------------------------------------------------------------- losses


def test_kd_loss_equals_hand_computation():
    student = torch.tensor([[[1.0, 0.0, -1.0], [0.5, 0.5, 0.0], [9.0, -9.0, 3.0]]])  # (1, 3 positions, vocab 3)
    teacher = torch.tensor([[[0.0, 2.0, 0.0], [1.0, -1.0, 0.5], [0.0, 0.0, 0.0]]])
    labels = torch.tensor([[4, 7, -100]])  # the last position is padding and must not count
    T = 2.0

    def softmax(row):
        exps = [math.exp(v / T) for v in row]
        return [e / sum(exps) for e in exps]

    kls = []
    for pos in range(2):
        p_t, p_s = softmax(teacher[0, pos].tolist()), softmax(student[0, pos].tolist())
        kls.append(sum(pt * (math.log(pt) - math.log(ps)) for pt, ps in zip(p_t, p_s)))
    expected = sum(kls) / 2 * T**2
    assert kd_logits_loss(student, teacher, labels, T).item() == pytest.approx(expected, rel=1e-6)


def test_kd_loss_carries_the_temperature_squared():
    torch.manual_seed(0)
    student, teacher = torch.randn(2, 4, 10), torch.randn(2, 4, 10)
    labels = torch.tensor([[1, 2, 3, -100], [1, -100, -100, -100]])
    # softening logits scaled by T leaves the distributions of T = 1, so only the T² factor remains
    at_one = kd_logits_loss(student, teacher, labels, 1.0)
    assert torch.allclose(kd_logits_loss(3 * student, 3 * teacher, labels, 3.0), 9 * at_one, rtol=1e-5)
    assert kd_logits_loss(teacher, teacher, labels, 2.0).abs().item() < 1e-6


def test_supervised_layers_follow_the_paper_and_space_the_rest():
    assert supervised_layers(3, 12) == [3, 7, 11]
    assert supervised_layers(6, 12) == [1, 3, 5, 8, 10, 11]
    assert supervised_layers(1, 12) == [11]
    assert supervised_layers(4, 4) == [0, 1, 2, 3]
    assert supervised_layers(2, 3) == [1, 2]
    assert supervised_layers(5, 12) == [1, 4, 6, 9, 11]  # evenly spaced, ending at the last layer
    with pytest.raises(ConfigError, match="1..2 layers .* got 3"):
        supervised_layers(3, 2)


def _hidden(batch=2, length=5, width=8, layers=2, seed=0):
    torch.manual_seed(seed)
    return tuple(torch.randn(batch, length, width) for _ in range(layers + 1))  # embeddings + one per layer


def test_hidden_loss_is_zero_for_equal_states_and_ignores_padding():
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    teacher = _hidden(layers=3)
    student = tuple(h.clone() for h in teacher[:3])  # 2 student layers
    assert hidden_state_loss(student, teacher, mask, [0, 1]).item() == 0.0
    # every valid position off by exactly 1 in every feature → MSE 1 per supervised layer
    shifted = (student[0],) + tuple(h + mask.unsqueeze(-1) for h in student[1:])
    assert hidden_state_loss(shifted, teacher, mask, [0, 1]).item() == pytest.approx(2.0)
    # garbage on padded positions changes nothing, even layer-normed; a real position does
    padded = tuple(h.clone() for h in shifted)
    padded[1][0, 3:] = 1e3
    for normalize in (False, True):
        base = hidden_state_loss(shifted, teacher, mask, [0, 1], normalize=normalize)
        loss = hidden_state_loss(padded, teacher, mask, [0, 1], normalize=normalize)
        assert loss.item() == pytest.approx(base.item())
    padded[1][0, 2] += 1.0
    assert hidden_state_loss(padded, teacher, mask, [0, 1]).item() > 2.0
    # student layer i is compared with teacher layer layers[i]: pairing 0 → 2 differs from 0 → 0
    assert hidden_state_loss(student, teacher, mask, [2, 1]).item() > 0


def test_projection_maps_narrow_students_and_learns():
    mask = torch.ones(2, 5, dtype=torch.long)
    student, teacher = _hidden(width=4, layers=2, seed=1), _hidden(width=8, layers=2, seed=2)
    student = tuple(h.requires_grad_() for h in student)
    projection = HiddenProjection(4, 8, layers=2)
    loss = hidden_state_loss(student, teacher, mask, [0, 1], projection=projection)
    loss.backward()
    assert all(m.weight.grad is not None and m.weight.grad.abs().sum() > 0 for m in projection.maps)
    assert student[1].grad is not None and student[1].grad.abs().sum() > 0
    with pytest.raises(ValueError, match="width 4 ≠ teacher width 8"):
        hidden_state_loss(student, teacher, mask, [0, 1])
    assert list(HiddenProjection(8, 8, layers=2).parameters()) == []  # equal widths: compared directly


def test_distillation_loss_weighs_its_parts():
    torch.manual_seed(0)
    labels = torch.tensor([[3, 1, -100], [2, 0, 4]])
    student = SimpleNamespace(logits=torch.randn(2, 3, 6), decoder_hidden_states=_hidden(2, 3, 8, layers=1, seed=3))
    teacher = SimpleNamespace(logits=torch.randn(2, 3, 6), decoder_hidden_states=_hidden(2, 3, 8, layers=2, seed=4))
    settings = DistillSettings(method="kd", alpha_ce=0.8, alpha_mlm=0.2, alpha_hid=3.0, temperature=2.0)
    loss, parts = distillation_loss(student, teacher, labels, settings, label_smoothing=0.1)
    kd = kd_logits_loss(student.logits, teacher.logits, labels, 2.0)
    ce = F.cross_entropy(student.logits.flatten(0, 1), labels.flatten(), ignore_index=-100, label_smoothing=0.1)
    hidden = hidden_state_loss(student.decoder_hidden_states, teacher.decoder_hidden_states, labels != -100, [1])
    assert torch.allclose(loss, 0.8 * kd + 0.2 * ce + 3.0 * hidden)
    assert set(parts) == {"kd", "ce", "hidden"} and torch.allclose(parts["ce"], ce)


# ---------------------------------------------------------------------------------------------------- training


def test_kd_training_lowers_kd_loss_and_leaves_the_teacher_alone(pairs, tiny_teacher):
    student = build_student(tiny_teacher, latent_dim=32, decoder_layers=1)
    teacher = sharpen(tiny_teacher)
    teacher_before = {k: v.clone() for k, v in teacher.state_dict().items()}
    before = kd_on_all_pairs(student, teacher, pairs)
    history = finetune_on_states(student, pairs, FinetuneSettings(epochs=4, learning_rate=3e-3, batch_size=6),
                                 teacher=teacher, distill=KD)
    assert history[-1] < history[0]
    assert kd_on_all_pairs(student, teacher, pairs) < before
    assert all(torch.equal(v, teacher.state_dict()[k]) for k, v in teacher_before.items())
    assert all(p.grad is None for p in teacher.parameters())
    assert not teacher.training


def test_narrow_student_learns_from_logits_and_projected_hidden_states(pairs, tiny_teacher, monkeypatch):
    made = []

    class SpiedProjection(HiddenProjection):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            made.append((self, [m.weight.detach().clone() for m in self.maps]))

    monkeypatch.setattr(distill_module, "HiddenProjection", SpiedProjection)
    student = narrow_student(tiny_teacher)
    teacher = sharpen(tiny_teacher)
    keys = set(student.state_dict())
    before = kd_on_all_pairs(student, teacher, pairs)
    distill = DistillSettings(method="kd", alpha_hid=1.0, normalize_hidden=True)
    history = finetune_on_states(student, pairs, FinetuneSettings(epochs=4, learning_rate=3e-3, batch_size=6),
                                 teacher=teacher, distill=distill)
    assert history[-1] < history[0]
    assert kd_on_all_pairs(student, teacher, pairs) < before
    assert set(student.state_dict()) == keys  # the hidden-state projection is not part of the student
    (projection, initial), = made
    assert [(m.in_features, m.out_features) for m in projection.maps] == [(16, 32)]  # 1 student layer → teacher's
    assert not torch.equal(projection.maps[0].weight, initial[0])  # trained alongside the student


def test_kd_from_a_bart_teacher_with_the_same_vocabulary(pairs, tiny_teacher, tokenizer):
    torch.manual_seed(0)
    bart = BartForConditionalGeneration(BartConfig(
        vocab_size=len(tokenizer), d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
        decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=128,
    ))
    student = narrow_student(tiny_teacher)  # reads the same cached states; BART reads them raw
    history = finetune_on_states(student, pairs, FinetuneSettings(epochs=1, batch_size=6), teacher=bart,
                                 distill=DistillSettings(method="kd", alpha_hid=1.0))
    assert len(history) == 1 and math.isfinite(history[0])


def test_kd_needs_a_teacher_with_the_students_vocabulary(pairs, tiny_teacher):
    student = build_student(tiny_teacher, latent_dim=32, decoder_layers=1)
    bart = BartForConditionalGeneration(BartConfig(
        vocab_size=100, d_model=32, encoder_layers=1, decoder_layers=1, encoder_attention_heads=4,
        decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=128,
    ))
    vocab = tiny_teacher.config.decoder.vocab_size
    with pytest.raises(ConfigError,
                       match=rf"KD needs a teacher with the student's vocabulary \(student {vocab}, teacher 100\)"):
        finetune_on_states(student, pairs, FinetuneSettings(epochs=1), teacher=bart, distill=KD)
    with pytest.raises(ConfigError, match="method 'kd' needs a teacher, got none"):
        finetune_on_states(student, pairs, FinetuneSettings(epochs=1), distill=KD)
    pruned = build_student(tiny_teacher, latent_dim=32, decoder_layers=1, encoder_layers=1)
    with pytest.raises(ConfigError, match=r"must keep the teacher's encoder \(student 1 encoder layers, teacher 2\)"):
        finetune_on_states(pruned, pairs, FinetuneSettings(epochs=1), teacher=tiny_teacher, distill=KD)


def test_sft_and_pseudo_label_methods_train_with_plain_cross_entropy(pairs, tiny_teacher):
    settings = FinetuneSettings(epochs=2, learning_rate=3e-3, batch_size=6)
    runs = [
        finetune_on_states(build_student(tiny_teacher, latent_dim=32, decoder_layers=1), pairs, settings, **kwargs)
        for kwargs in ({}, {"distill": DistillSettings("sft"), "teacher": tiny_teacher},
                       {"distill": DistillSettings("pseudo_labels")})
    ]
    assert runs[0] == runs[1] == runs[2]


# ---------------------------------------------------------------------------------------------------- pseudo-labels


def test_pseudo_labels_are_generated_once_and_relabel_cached_pairs(tmp_path, tiny_teacher, tokenizer, few_examples,
                                                                   pairs, monkeypatch):
    direct = generate_pseudo_labels(tiny_teacher, tokenizer, few_examples, max_source_tokens=48)
    calls = []
    real = tiny_teacher.generate
    monkeypatch.setattr(tiny_teacher, "generate", lambda *a, **k: calls.append(1) or real(*a, **k))
    first = cached_pseudo_labels(tiny_teacher, tokenizer, few_examples, max_source_tokens=48, root=tmp_path)
    second = cached_pseudo_labels(tiny_teacher, tokenizer, few_examples, max_source_tokens=48, root=tmp_path)
    assert len(calls) == 1  # 12 examples, one batch, one generation
    assert [e.summary for e in first] == [e.summary for e in second] == [e.summary for e in direct]
    assert [e.id for e in first] == [e.id for e in few_examples]
    assert [e.document for e in first] == [e.document for e in few_examples]
    tiny_teacher.generation_config.max_new_tokens = 4  # another generation config is another cache entry
    cached_pseudo_labels(tiny_teacher, tokenizer, few_examples, max_source_tokens=48, root=tmp_path)
    assert len(calls) == 2

    pairs.key = "encoded-key"
    relabelled = pseudo_labelled_pairs(pairs, tokenizer, first, max_target_tokens=16, start_id=tokenizer.cls_token_id)
    labels, decoder_input_ids = tokenize_targets(tokenizer, [e.summary for e in first], 16, tokenizer.cls_token_id,
                                                 [e.prompt for e in first])
    assert relabelled.states is pairs.states and relabelled.attention_mask is pairs.attention_mask
    assert torch.equal(relabelled.labels, labels) and torch.equal(relabelled.decoder_input_ids, decoder_input_ids)
    assert relabelled.key not in ("", pairs.key)


def test_training_reads_the_decoder_prompt_as_generation_does(tiny_teacher, tokenizer, few_examples):
    """The prompt (`[start] challenge:`) is unlabelled but must stay visible to the decoder's self-attention in
    training, as it is in generation: the summary's logits equal those of an unmasked forward."""
    prompted = [replace(e, aspect="challenge") for e in few_examples]
    pairs = encode_pairs(tiny_teacher.encoder, tokenizer, prompted, max_source_tokens=48, max_target_tokens=16,
                         start_id=tokenizer.cls_token_id)
    assert (pairs.labels[:, 0] == -100).all()  # the prompt is given, not scored
    tiny_teacher.eval()
    with torch.no_grad():
        trained = forward_on_states(tiny_teacher, pairs.states, pairs.attention_mask, pairs.decoder_input_ids,
                                    pairs.labels).logits
        free = tiny_teacher(encoder_outputs=BaseModelOutput(last_hidden_state=pairs.states),
                            attention_mask=pairs.attention_mask, decoder_input_ids=pairs.decoder_input_ids).logits
    scored = pairs.labels != -100
    assert torch.allclose(trained[scored], free[scored], atol=1e-5)
    assert decoder_mask(torch.tensor([[-100, -100, 5, 6, -100]])).tolist() == [[1, 1, 1, 1, 0]]


def test_shipped_pseudo_labels_are_unpacked_instead_of_generated(tmp_path, tiny_teacher, tokenizer, few_examples,
                                                                 monkeypatch):
    """A first run finds its pseudo-labels in the shipped file (keyed as the cache keys them) and never generates;
    a set for other documents, or another decoding, is generated as before."""
    made = cached_pseudo_labels(tiny_teacher, tokenizer, few_examples, max_source_tokens=48, root=tmp_path / "a")
    shipped = tmp_path / "labels.json.gz"
    assert list(ship_pseudo_labels(tmp_path / "a", shipped).values()) == [len(few_examples)]
    monkeypatch.setattr(distill_module, "SHIPPED_LABELS", shipped)
    calls = []
    real = tiny_teacher.generate
    monkeypatch.setattr(tiny_teacher, "generate", lambda *a, **k: calls.append(1) or real(*a, **k))
    unpacked = cached_pseudo_labels(tiny_teacher, tokenizer, few_examples, max_source_tokens=48, root=tmp_path / "b")
    assert not calls and [e.summary for e in unpacked] == [e.summary for e in made]
    cached_pseudo_labels(tiny_teacher, tokenizer, few_examples[:5], max_source_tokens=48, root=tmp_path / "b")
    assert len(calls) == 1  # other documents: not shipped
    with pytest.raises(ConfigError, match="no pseudo-labels cached under"):
        ship_pseudo_labels(tmp_path / "empty", shipped)
