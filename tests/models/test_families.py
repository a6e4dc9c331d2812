"""Students of every supported family: BART, Pegasus, T5 (untied head, gated FFN) and bert2bert, tiny and random."""


import pytest
import torch
import transformers as tf
from tiny_models import FAMILIES, make_tiny

from shrinktune.errors import ConfigError
from shrinktune.models.autoencoder import Autoencoder
from shrinktune.models.families import build_decoder, layer_prefixes, narrow_decoder_config
from shrinktune.models.student import LatentEncoderDecoderModel, build_student
from shrinktune.models.teacher import load_teacher


@pytest.fixture(scope="module")
def source_ids():
    return torch.randint(4, 120, (2, 10), generator=torch.Generator().manual_seed(1))


def _generate(model, ids):
    with torch.no_grad():
        return model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False)


@pytest.mark.parametrize("kind", FAMILIES)
def test_teacher_loads_from_a_local_folder_like_a_hub_id(kind, tmp_path, tokenizer, source_ids):
    teacher = make_tiny(kind, vocab=len(tokenizer))
    teacher.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    loaded, loaded_tokenizer = load_teacher(tmp_path)
    assert type(loaded) is type(teacher) and len(loaded_tokenizer) == len(tokenizer)
    assert torch.equal(_generate(loaded, source_ids), _generate(teacher, source_ids))


@pytest.mark.parametrize("kind", FAMILIES)
def test_shallow_student_copies_the_mapped_layers(kind):
    teacher = make_tiny(kind)
    student = build_student(teacher, encoder_layers=2, decoder_layers=[0, 2])
    assert type(student) is type(teacher)
    assert student.config.student["kept_encoder_layers"] == [0, 2]
    assert student.config.student["kept_decoder_layers"] == [0, 2]
    t_enc, t_dec = layer_prefixes(teacher)
    s_enc, s_dec = layer_prefixes(student)
    t_state, s_state = teacher.state_dict(), student.state_dict()
    for (t_prefix, s_prefix) in ((t_enc, s_enc), (t_dec, s_dec)):
        for s_index, t_index in enumerate([0, 2]):
            copied = [k for k in s_state if k.startswith(f"{s_prefix}{s_index}.")]
            assert copied
            for key in copied:
                teacher_key = key.replace(f"{s_prefix}{s_index}.", f"{t_prefix}{t_index}.", 1)
                if teacher_key in t_state:  # T5's position bias lives in layer 0 only
                    assert torch.equal(s_state[key], t_state[teacher_key]), key
    assert not any(k.startswith(f"{s_dec}2.") for k in s_state)


@pytest.mark.parametrize("kind", FAMILIES)
def test_full_depth_student_generates_what_the_teacher_does(kind, source_ids):
    teacher = make_tiny(kind)
    assert torch.equal(_generate(build_student(teacher), source_ids), _generate(teacher, source_ids))


@pytest.mark.parametrize("kind", ["bart", "bert2bert"])
def test_prefix_encoder_equals_the_teachers_first_layers(kind, source_ids):
    teacher = make_tiny(kind)
    student = build_student(teacher, encoder_layers=[0, 1])
    with torch.no_grad():
        deep = teacher.get_encoder()(input_ids=source_ids, output_hidden_states=True).hidden_states[2]
        shallow = student.get_encoder()(input_ids=source_ids).last_hidden_state
    assert torch.allclose(deep, shallow, atol=1e-6)


@pytest.mark.parametrize("kind", FAMILIES)
def test_latent_student_round_trips_and_generates(kind, tmp_path, source_ids):
    teacher = make_tiny(kind)
    ae = Autoencoder(32, 16).eval()
    student = build_student(teacher, latent_dim=16, decoder_layers=2, encoder_layers=2, bottleneck=ae.encoder,
                            bottleneck_spec=ae.spec, teacher_name=kind).eval()
    assert isinstance(student, LatentEncoderDecoderModel)
    info = student.config.student
    assert (info["latent_dim"], info["kept_encoder_layers"], info["bottleneck"]) == (16, [0, 2], "mlp")
    assert student.get_decoder().config.hidden_size == 16 if hasattr(student.decoder, "get_decoder") else True
    # the student's encoder is the teacher's, minus the dropped layer
    t_enc, _ = layer_prefixes(teacher)
    s_enc, _ = layer_prefixes(student)
    t_state, s_state = teacher.state_dict(), student.state_dict()
    for key in [k for k in s_state if k.startswith(f"{s_enc}1.")]:
        assert torch.equal(s_state[key], t_state[key.replace(f"{s_enc}1.", f"{t_enc}2.", 1)]), key
    out = _generate(student, source_ids)
    assert torch.equal(out, student.generate(input_ids=source_ids, do_sample=False, use_cache=False))
    student.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists() and not list(tmp_path.glob("*.bin"))
    loaded = tf.AutoModelForSeq2SeqLM.from_pretrained(tmp_path).eval()
    assert loaded.config.student == info
    assert torch.equal(_generate(loaded, source_ids), out)


def test_latent_decoder_embeddings_are_the_teachers_projected():
    teacher = make_tiny("t5")  # untied LM head: projected too
    ae = Autoencoder(32, 8)
    student = build_student(teacher, latent_dim=8, decoder_layers=1, bottleneck=ae.encoder, bottleneck_spec=ae.spec)
    words = teacher.get_decoder().embed_tokens.weight
    _, _, v = torch.linalg.svd(words - words.mean(0), full_matrices=False)
    assert torch.allclose(student.decoder.get_input_embeddings().weight, words @ v[:8].T, atol=1e-5)
    assert torch.allclose(student.decoder.lm_head.weight, teacher.lm_head.weight @ v[:8].T, atol=1e-5)


def test_bart_base_decoder_at_latent_384_has_41m_parameters():
    config = tf.BartConfig(d_model=768, encoder_layers=6, decoder_layers=6, encoder_attention_heads=12,
                           decoder_attention_heads=12, encoder_ffn_dim=3072, decoder_ffn_dim=3072, vocab_size=50265)
    with torch.device("meta"):
        teacher = sum(p.numel() for p in tf.BartForConditionalGeneration(config).get_decoder().parameters())
        student = sum(p.numel() for p in build_decoder(narrow_decoder_config(config, 384, 6)).parameters())
        shallow = sum(p.numel() for p in build_decoder(narrow_decoder_config(config, 384, 3)).parameters())
    assert round(teacher / 1e6) == 96  # REFERENCE.md: 96M
    assert round(student / 1e6) == 41 and round(shallow / 1e6, 1) == 30.3  # 41M; 30.3M (derived)


def test_impossible_students_are_refused_for_any_family():
    teacher = make_tiny("bart")
    with pytest.raises(ConfigError, match=r"between 1 and 3 layers \(the teacher's depth\), got 4"):
        build_student(teacher, decoder_layers=4)
    with pytest.raises(ConfigError,
                       match=r"kept encoder layers must be increasing, distinct indices in 0..2, got \[2, 1\]"):
        build_student(teacher, encoder_layers=[2, 1])
    with pytest.raises(ConfigError, match="layer map must be one of distilbart, asymmetric"):
        build_student(teacher, decoder_layers=2, layer_map="random")
    with pytest.raises(ConfigError, match="multiple of the teacher's attention head size"):
        t5 = make_tiny("t5")
        ae = Autoencoder(32, 12)
        build_student(t5, latent_dim=12, bottleneck=ae.encoder, bottleneck_spec=ae.spec)
