import math

import pytest
import torch

import shrinktune.training.encode as encode
from shrinktune.data.examples import decoder_prompt
from shrinktune.errors import ConfigError
from shrinktune.models.autoencoder import Autoencoder
from shrinktune.models.student import build_student
from shrinktune.training.autoencoder import pretrain_autoencoder
from shrinktune.training.encode import cached_encoded_pairs, encode_pairs, tokenize_targets
from shrinktune.training.finetune import FinetuneSettings, batch_rows, finetune_on_states


@pytest.fixture
def pairs(tiny_teacher, tokenizer, few_examples):
    return encode_pairs(tiny_teacher.encoder, tokenizer, few_examples, max_source_tokens=48, max_target_tokens=16,
                        start_id=tokenizer.cls_token_id)


def test_targets_are_shifted_teacher_forcing_pairs(tokenizer):
    labels, decoder_inputs = tokenize_targets(tokenizer, ["a summary", "longer summary here"], 16,
                                              tokenizer.cls_token_id)
    assert decoder_inputs[:, 0].tolist() == [tokenizer.cls_token_id] * 2
    # decoder input at t+1 is the label at t (where the label is not padding)
    mask = labels[:, :-1] != -100
    assert torch.equal(decoder_inputs[:, 1:][mask], labels[:, :-1][mask])
    assert (labels == tokenizer.sep_token_id).sum() == 2  # each label row ends with the end token


def test_prompts_are_given_to_the_decoder_not_predicted(tokenizer):
    summaries, prompts = ["a summary", "longer summary here"], [decoder_prompt("challenge"), None]
    labels, decoder_inputs = tokenize_targets(tokenizer, summaries, 16, tokenizer.cls_token_id, prompts)
    plain_labels, plain_inputs = tokenize_targets(tokenizer, summaries, 16, tokenizer.cls_token_id)
    given = tokenizer("challenge:", add_special_tokens=False)["input_ids"]
    k = len(given)
    assert decoder_inputs[0, : 1 + k].tolist() == [tokenizer.cls_token_id] + given
    assert (labels[0, :k] == -100).all()  # the prompt is not a target
    summary = plain_labels[0][plain_labels[0] != -100]
    assert labels[0, k : k + len(summary)].tolist() == summary.tolist()  # the whole summary is still learnt
    assert decoder_inputs[0, k : k + len(summary)].tolist() == [given[-1]] + summary[:-1].tolist()
    # a row without a prompt is what it was without prompts at all
    n = int((plain_labels[1] != -100).sum())
    assert labels[1, :n].tolist() == plain_labels[1, :n].tolist()
    assert decoder_inputs[1, :n].tolist() == plain_inputs[1, :n].tolist()


def test_encoded_pairs_carry_the_aspect_prompt(pairs, tokenizer, few_examples):
    given = tokenizer(few_examples[0].prompt, add_special_tokens=False)["input_ids"]
    assert few_examples[0].aspect and pairs.decoder_input_ids[0, 1 : 1 + len(given)].tolist() == given


def test_encoded_states_match_the_encoder(pairs, tiny_teacher, tokenizer, few_examples):
    batch = tokenizer([few_examples[0].source], max_length=48, truncation=True, return_tensors="pt")
    with torch.no_grad():
        direct = tiny_teacher.encoder(**batch).last_hidden_state[0]
    n = direct.shape[0]
    assert torch.allclose(pairs.states[0, :n], direct, atol=1e-5)
    assert pairs.states.shape == (12, pairs.attention_mask.shape[1], 32)


def test_every_text_is_encoded_as_if_alone_and_padding_states_are_zero(pairs, tiny_teacher, tokenizer, few_examples):
    """Batches run longest first at their own width: each row's states are its text's own, padding is zero."""
    for row, example in enumerate(few_examples):
        batch = tokenizer([example.source], max_length=48, truncation=True, return_tensors="pt")
        with torch.no_grad():
            alone = tiny_teacher.encoder(**batch).last_hidden_state[0]
        n = alone.shape[0]
        assert int(pairs.attention_mask[row].sum()) == n
        assert torch.allclose(pairs.states[row, :n], alone, atol=1e-5)
        assert not pairs.states[row, n:].any()


def test_training_on_a_batchs_own_width_is_training_on_the_padded_one(pairs, tiny_teacher):
    """Extra padding columns (source and target) change no loss: each batch is trimmed to what its rows use."""
    extra = 7
    padded = encode.EncodedPairs(
        torch.nn.functional.pad(pairs.states, (0, 0, 0, extra)),
        torch.nn.functional.pad(pairs.attention_mask, (0, extra)),
        torch.nn.functional.pad(pairs.labels, (0, extra), value=-100),
        torch.nn.functional.pad(pairs.decoder_input_ids, (0, extra)),
    )
    histories, ae = [], Autoencoder(32, 16).eval()
    for data in (pairs, padded):
        torch.manual_seed(0)
        student = build_student(tiny_teacher, latent_dim=16, decoder_layers=1, bottleneck=ae.encoder,
                                bottleneck_spec=ae.spec)
        widths = []
        student.decoder.register_forward_pre_hook(
            lambda _, args, kwargs: widths.append((kwargs["encoder_hidden_states"].shape[1],
                                                   kwargs["input_ids"].shape[1])), with_kwargs=True)
        histories.append(finetune_on_states(student, data, FinetuneSettings(epochs=2, learning_rate=3e-3,
                                                                            batch_size=4)))
        source, target = pairs.attention_mask.shape[1], pairs.labels.shape[1]
        assert all(s <= source and t <= target for s, t in widths)  # never the extra columns
    assert histories[0] == pytest.approx(histories[1], rel=1e-6)
    assert encode.used_width(padded.attention_mask) == pairs.attention_mask.shape[1]


def test_length_batches_cover_every_row_once_and_pad_far_less_than_random_ones():
    lengths = torch.randint(8, 97, (1000,), generator=torch.Generator().manual_seed(1))
    padded = {}
    for batching in ("random", "by_length"):
        batches = batch_rows(lengths, 16, batching, torch.Generator().manual_seed(0))
        assert len(batches) == 63 and sorted(torch.cat(batches).tolist()) == list(range(1000))
        padded[batching] = sum(len(rows) * int(lengths[rows].max()) for rows in batches)
    assert padded["by_length"] < 0.65 * padded["random"]  # uniform 8-96 tokens: random batches pad to ~91
    again = batch_rows(lengths, 16, "by_length", torch.Generator().manual_seed(0))
    assert all(torch.equal(a, b) for a, b in zip(again, batch_rows(lengths, 16, "by_length",
                                                                  torch.Generator().manual_seed(0))))
    first = batch_rows(lengths, 16, "random", torch.Generator().manual_seed(0))[0]
    assert torch.equal(first, torch.randperm(1000, generator=torch.Generator().manual_seed(0))[:16])  # as before


def test_cached_pairs_are_computed_once(tmp_path, tiny_teacher, tokenizer, few_examples, monkeypatch):
    calls = []
    real = encode.encode_pairs
    monkeypatch.setattr(encode, "encode_pairs", lambda *a, **k: calls.append(1) or real(*a, **k))
    kwargs = dict(max_source_tokens=32, max_target_tokens=8, start_id=tokenizer.cls_token_id, root=tmp_path)
    first = cached_encoded_pairs(tiny_teacher.encoder, tokenizer, few_examples, **kwargs)
    second = cached_encoded_pairs(tiny_teacher.encoder, tokenizer, few_examples, **kwargs)
    assert len(calls) == 1 and torch.equal(first.states, second.states) and first.key == second.key


def test_finetuning_lowers_loss_and_leaves_encoder_and_bottleneck_frozen(pairs, tiny_teacher):
    ae = Autoencoder(32, 16).eval()
    student = build_student(tiny_teacher, latent_dim=16, decoder_layers=1, bottleneck=ae.encoder,
                            bottleneck_spec=ae.spec)
    encoder_before = {k: v.clone() for k, v in student.encoder.state_dict().items()}
    bottleneck_before = {k: v.clone() for k, v in student.bottleneck.state_dict().items()}
    history = finetune_on_states(student, pairs, FinetuneSettings(epochs=6, learning_rate=3e-3, batch_size=4))
    assert history[-1] < history[0]
    assert all(torch.equal(v, student.encoder.state_dict()[k]) for k, v in encoder_before.items())
    assert all(torch.equal(v, student.bottleneck.state_dict()[k]) for k, v in bottleneck_before.items())  # BN stats too
    assert all(not p.requires_grad for p in student.encoder.parameters())
    assert all(p.grad is None for p in student.encoder.parameters())


@pytest.mark.parametrize("dtype", ["bf16", "fp16"])
def test_mixed_precision_trains_under_autocast_and_keeps_fp32_weights(pairs, tiny_teacher, dtype, monkeypatch):
    """Autocast runs on a CPU too (the search refuses these precisions there; `check_dtype`): the forward passes run
    in the precision, the weights and the optimiser stay in fp32, and fp16's gradient scaler steps the optimiser."""
    import shrinktune.training.finetune as finetune

    seen = []
    real = finetune.autocast
    monkeypatch.setattr(finetune, "autocast", lambda name, device: seen.append(name) or real(name, device))
    student = build_student(tiny_teacher, latent_dim=32, decoder_layers=1)
    before = [p.clone() for p in student.decoder.parameters()]
    history = finetune_on_states(student, pairs, FinetuneSettings(epochs=2, learning_rate=3e-3, batch_size=4,
                                                                  dtype=dtype))
    assert seen and set(seen) == {dtype} and all(map(math.isfinite, history))
    assert all(p.dtype == torch.float32 for p in student.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(before, student.decoder.parameters()))  # it trained


def test_nan_loss_stops_training(pairs, tiny_teacher):
    student = build_student(tiny_teacher, latent_dim=32, decoder_layers=1)
    with torch.no_grad():
        student.decoder.cls.predictions.transform.dense.weight.fill_(float("nan"))
    with pytest.raises(FloatingPointError, match="training loss became nan"):
        finetune_on_states(student, pairs, FinetuneSettings(epochs=1, batch_size=4))


def test_autoencoder_mse_falls_with_training_and_with_width():
    torch.manual_seed(0)
    basis = torch.randn(12, 64)
    states = torch.tanh(torch.randn(20, 30, 12) @ basis) + 0.05 * torch.randn(20, 30, 64)  # low-rank-ish states
    mask = torch.ones(20, 30, dtype=torch.long)
    mask[:, 25:] = 0
    narrow = pretrain_autoencoder(states, mask, 4, epochs=15, batch_size=128, learning_rate=3e-3)
    wide = pretrain_autoencoder(states, mask, 24, epochs=15, batch_size=128, learning_rate=3e-3)
    assert narrow.train_mse[-1] < narrow.train_mse[0]
    assert wide.heldout_mse < narrow.heldout_mse


def test_pca_is_the_best_linear_autoencoder_and_refuses_too_few_vectors():
    torch.manual_seed(0)
    states = torch.randn(10, 20, 6) @ torch.randn(6, 32) + 0.1 * torch.randn(10, 20, 32)  # (n, src_len, d), rank ≈ 6
    mask = torch.ones(10, 20, dtype=torch.long)
    pca = pretrain_autoencoder(states, mask, 6, kind="pca")
    linear = pretrain_autoencoder(states, mask, 6, kind="linear", epochs=10, batch_size=64, learning_rate=3e-3)
    assert pca.autoencoder.spec == {"kind": "pca", "widths": [32, 6]}
    assert pca.train_mse[0] <= linear.train_mse[-1] + 1e-6  # the closed form beats gradient descent on its own ground
    assert pca.explained_variance > 0.95
    assert pretrain_autoencoder(states, mask, 2, kind="pca").heldout_mse > pca.heldout_mse
    with pytest.raises(ConfigError, match="PCA cannot find 20 directions in 2 token vectors"):
        pretrain_autoencoder(states[:1, :3], mask[:1, :3], 20, kind="pca")
