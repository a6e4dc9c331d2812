import pytest
import torch
from transformers import AutoModelForSeq2SeqLM
from transformers.modeling_outputs import BaseModelOutput

from shrinktune import load_summarizer
from shrinktune.errors import ConfigError
from shrinktune.measure.evaluate import generate_summaries
from shrinktune.models.autoencoder import Autoencoder
from shrinktune.models.student import LatentEncoderDecoderModel, build_student
from shrinktune.models.teacher import load_teacher


def _inputs(tokenizer):
    return tokenizer(["challenge: compressing decoders of summarizers", "approach: a latent bottleneck"],
                     return_tensors="pt", padding=True)


def test_same_width_student_copies_the_mapped_teacher_layers(tiny_teacher):
    student = build_student(tiny_teacher, latent_dim=32, decoder_layers=1)
    assert type(student) is type(tiny_teacher)  # same width: the teacher's own class, shallower
    assert student.config.student["kept_decoder_layers"] == [0]
    t_layer, s_layer = tiny_teacher.decoder.bert.encoder.layer[0], student.decoder.bert.encoder.layer[0]
    for (name, a), (_, b) in zip(t_layer.state_dict().items(), s_layer.state_dict().items()):
        assert torch.equal(a, b), name
    assert torch.equal(student.encoder.embeddings.word_embeddings.weight,
                       tiny_teacher.encoder.embeddings.word_embeddings.weight)
    assert len(student.decoder.bert.encoder.layer) == 1


def test_narrow_student_runs_the_bottleneck_once_per_generation(tiny_teacher, tokenizer):
    ae = Autoencoder(32, 16).eval()
    student = build_student(tiny_teacher, latent_dim=16, decoder_layers=2, bottleneck=ae.encoder,
                            bottleneck_spec=ae.spec).eval()
    assert student.config.decoder.hidden_size == 16
    calls = []
    student.bottleneck.register_forward_hook(lambda *args: calls.append(1))
    out = student.generate(**_inputs(tokenizer), max_new_tokens=6, min_new_tokens=6)
    assert out.shape[1] == 7 and len(calls) == 1
    # the bottleneck holds the autoencoder's trained encoder half
    assert torch.equal(student.bottleneck[0].weight, ae.encoder[0].weight)


def test_forward_from_ids_equals_forward_from_latent_states(tiny_teacher, tokenizer):
    ae = Autoencoder(32, 16).eval()
    student = build_student(tiny_teacher, latent_dim=16, decoder_layers=1, bottleneck=ae.encoder,
                            bottleneck_spec=ae.spec).eval()
    batch = _inputs(tokenizer)
    decoder_input_ids = torch.full((2, 3), tokenizer.cls_token_id)
    with torch.no_grad():
        direct = student(**batch, decoder_input_ids=decoder_input_ids).logits
        states = student.encoder(**batch).last_hidden_state
        cached = student(encoder_outputs=BaseModelOutput(student.encode_latent(states)),
                         attention_mask=batch["attention_mask"], decoder_input_ids=decoder_input_ids).logits
    assert torch.allclose(direct, cached, atol=1e-6)


def test_save_load_generate_identical(tmp_path, tiny_teacher, tokenizer):
    ae = Autoencoder(32, 16).eval()
    student = build_student(tiny_teacher, latent_dim=16, decoder_layers=2, bottleneck=ae.encoder,
                            bottleneck_spec=ae.spec, teacher_name="tiny").eval()
    student.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists() and not list(tmp_path.glob("*.bin"))
    loaded = AutoModelForSeq2SeqLM.from_pretrained(tmp_path).eval()
    assert isinstance(loaded, LatentEncoderDecoderModel)
    assert loaded.config.student["latent_dim"] == 16 and loaded.config.bottleneck == ae.spec
    batch = _inputs(tokenizer)
    assert torch.equal(student.generate(**batch), loaded.generate(**batch))


def test_impossible_students_are_refused(tiny_teacher):
    with pytest.raises(ConfigError, match=r"latent_dim must be between 1 and the encoder width \(32\), got 64"):
        build_student(tiny_teacher, latent_dim=64, decoder_layers=1)
    with pytest.raises(ConfigError, match="between 1 and 2 layers"):
        build_student(tiny_teacher, latent_dim=32, decoder_layers=0)
    with pytest.raises(ConfigError, match="bottleneck is needed exactly when"):
        build_student(tiny_teacher, latent_dim=16, decoder_layers=1)


def test_summarizer_loads_a_checkpoint_in_one_call(tmp_path, tiny_teacher, tokenizer):
    student = build_student(tiny_teacher, latent_dim=32, decoder_layers=1)
    student.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    summarize = load_summarizer(tmp_path)
    assert isinstance(summarize("A document about models.", aspect="approach"), str)
    assert len(summarize(["one document.", "another one."])) == 2


def test_summarizer_writes_what_was_measured(tmp_path, tiny_teacher, tokenizer, few_examples):
    """The user's call with an aspect gives the decoder the same prompt as the search's measurement did."""
    student = build_student(tiny_teacher, latent_dim=32, decoder_layers=1)
    student.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    summarize = load_summarizer(tmp_path)
    example = few_examples[1]
    measured = generate_summaries(summarize.model, tokenizer, [example], max_source_tokens=summarize.max_source_tokens)
    assert summarize(example.document, aspect=example.aspect) == measured[0]


def _randomize(module: torch.nn.Module, seed: int = 7) -> None:
    """Every parameter and buffer of `module` set to seeded random values (BatchNorm running statistics too)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in list(module.named_parameters()) + list(module.named_buffers()):
            if "running_var" in name:
                tensor.copy_(torch.rand(tensor.shape, generator=generator) + 0.5)  # positive
            elif tensor.dtype.is_floating_point:
                tensor.copy_(0.3 * torch.randn(tensor.shape, generator=generator))  # Tanh stays unsaturated
            else:  # num_batches_tracked
                tensor.fill_(int(torch.randint(3, 100, (1,), generator=generator)))


def test_saved_student_reloads_its_bottleneck_and_every_tensor_exactly(tmp_path, tiny_teacher, tokenizer):
    """Catches a save or load path that drops or re-initialises `bottleneck.*` (random models' text can't show it)."""
    ae = Autoencoder(32, 16, kind="mlp")
    _randomize(ae.encoder)
    student = build_student(tiny_teacher, latent_dim=16, decoder_layers=2, bottleneck=ae.encoder,
                            bottleneck_spec=ae.spec, teacher_name="tiny").eval()
    assert torch.equal(student.bottleneck[1].running_var, ae.encoder[1].running_var)  # the random weights went in
    student.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    loaded, _ = load_teacher(tmp_path)
    assert isinstance(loaded, LatentEncoderDecoderModel) and not loaded.training

    saved, reloaded = student.state_dict(), loaded.state_dict()
    assert any(name.startswith("bottleneck.") for name in saved)
    assert sorted(reloaded) == sorted(saved)
    for name, tensor in saved.items():
        assert torch.equal(reloaded[name], tensor), name

    batch = _inputs(tokenizer)
    decoder_input_ids = torch.full((2, 3), tokenizer.cls_token_id)
    with torch.no_grad():
        before = student(**batch, decoder_input_ids=decoder_input_ids).logits  # (2, 3, vocab)
        after = loaded(**batch, decoder_input_ids=decoder_input_ids).logits
    assert torch.allclose(before, after, atol=1e-6)
