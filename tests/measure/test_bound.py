"""The memory-bandwidth bound: bytes counted by hand, caches checked against the ones transformers really fills."""

import math
from types import SimpleNamespace

import pytest
import tiny_models
import torch
from tiny_models import FAMILIES

from shrinktune.errors import ConfigError
from shrinktune.measure import bound
from shrinktune.measure.bound import (
    MB,
    bound_record,
    decoder_weight_bytes,
    generation_bound_ms,
    kv_bytes_per_position,
    measure_bandwidth,
    spec_bandwidth,
)


def make_tiny(kind: str, vocab: int = 120, layers: int = 2, **overrides):
    """`tiny_models.make_tiny`, 2 layers deep."""
    return tiny_models.make_tiny(kind, vocab, layers, **overrides)


def make_latent(kind: str):
    """A latent student of `make_tiny(kind)`: its decoder 16 wide (the teacher's head size 8, so 2 heads), 2 deep."""
    return tiny_models.make_latent(make_tiny(kind))


def real_cache_bytes(model, batch: int, source: int, target: int) -> dict[str, int]:
    """Bytes of K and V in the cache one forward pass with `use_cache=True` returns."""
    ids = torch.randint(4, 100, (batch, source), generator=torch.Generator().manual_seed(0))
    start = model.config.decoder_start_token_id
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=torch.ones_like(ids),
                    decoder_input_ids=torch.full((batch, target), start), use_cache=True)
    cache = out.past_key_values
    sides = {"self_attention": cache.self_attention_cache, "cross_attention": cache.cross_attention_cache}
    result = {}
    for side, layers in sides.items():
        for layer in layers.layers:
            # (batch, heads, positions, head size) each
            assert layer.keys.shape[0] == batch and layer.keys.shape[2] == (target if side == "self_attention"
                                                                            else source)
        result[side] = sum(t.numel() * t.element_size() for layer in layers.layers for t in (layer.keys, layer.values))
    return result


# --- decoder weights ---------------------------------------------------------------------------------------------


def bart_hand_count(batch: int) -> int:
    """Elements a tiny BART (32 wide, FFN 64, 2 decoder layers, vocab 120, tied head) reads per step, by hand."""
    attention = 4 * (32 * 32 + 32)  # q, k, v, out: weight and bias
    norm = 2 * 32
    layer = 2 * attention + 3 * norm + (64 * 32 + 64) + (32 * 64 + 32)  # self, cross, 3 norms, fc1, fc2
    return (2 * layer + norm  # layers, layernorm_embedding
            + 120 * 32 + 120  # LM head (the tied word table, read whole) and final_logits_bias
            + batch * 32)  # one learned-position row per sequence


@pytest.mark.parametrize("batch", [1, 3])
def test_bart_weight_bytes_are_what_a_hand_count_gives(batch):
    model = make_tiny("bart")
    assert decoder_weight_bytes(model, batch_size=batch) == 4 * bart_hand_count(batch)
    # the same from the named tensors
    decoder = model.model.decoder
    by_name = sum(p.numel() for n, p in decoder.named_parameters() if not n.startswith(("embed_tokens", "embed_pos")))
    by_name += model.lm_head.weight.numel() + model.final_logits_bias.numel() + batch * 32
    assert by_name == bart_hand_count(batch)


def test_an_untied_head_is_read_whole_and_the_word_table_by_rows():
    tied, untied = make_tiny("bart"), make_tiny("bart", tie_word_embeddings=False)
    assert untied.lm_head.weight.data_ptr() != untied.model.decoder.embed_tokens.weight.data_ptr()
    assert decoder_weight_bytes(untied, batch_size=2) == decoder_weight_bytes(tied, batch_size=2) + 4 * 2 * 32


def test_t5_reads_its_relative_attention_bias_whole():
    model = make_tiny("t5")
    stack = model.decoder
    table = stack.block[0].layer[0].SelfAttention.relative_attention_bias.weight  # (buckets 32, heads 4)
    rest = sum(p.numel() for n, p in stack.named_parameters() if not n.startswith("embed_tokens"))
    # transformers 5 ties T5's head to the word table whatever tie_word_embeddings says: it counts once, as the head
    assert model.lm_head.weight is stack.embed_tokens.weight
    assert decoder_weight_bytes(model) == 4 * (rest + 120 * 32)
    assert table.numel() == 32 * 4 and decoder_weight_bytes(model) > 4 * (rest - table.numel() + 120 * 32)


def test_bert2bert_counts_its_head_once_and_skips_index_buffers():
    model = make_tiny("bert2bert")
    lm = model.decoder  # BertLMHeadModel: the head is inside the decoder module
    head = lm.cls.predictions.decoder
    assert head.weight is lm.bert.embeddings.word_embeddings.weight and head.bias is lm.cls.predictions.bias
    tables = ("bert.embeddings.word_embeddings", "bert.embeddings.position_embeddings",
              "bert.embeddings.token_type_embeddings")
    # named_parameters lists a tied tensor once, under its first name (the word table, the prediction bias)
    rest = sum(p.numel() for n, p in lm.named_parameters() if not n.startswith(tables))
    batch = 2
    expected = rest + 120 * 32 + batch * 32 + batch * 32  # + the head (the word table), position and token-type rows
    assert decoder_weight_bytes(model, batch_size=batch) == 4 * expected
    assert all(b.dtype == torch.int64 for b in lm.buffers())  # position_ids, token_type_ids: not counted


@pytest.mark.parametrize("kind", FAMILIES)
def test_bf16_halves_weights_and_caches(kind):
    model = make_tiny(kind)
    weights, kv = decoder_weight_bytes(model, batch_size=2), kv_bytes_per_position(model, 2)
    model.to(torch.bfloat16)
    assert decoder_weight_bytes(model, batch_size=2) * 2 == weights
    assert {k: v * 2 for k, v in kv_bytes_per_position(model, 2).items()} == kv


@pytest.mark.parametrize("kind", FAMILIES)
def test_a_latent_student_reads_fewer_bytes_than_its_teacher(kind):
    teacher, student = make_tiny(kind), make_latent(kind)
    assert decoder_weight_bytes(student) < decoder_weight_bytes(teacher)
    teacher_kv, student_kv = kv_bytes_per_position(teacher), kv_bytes_per_position(student)
    # 2 decoder layers each; 16 wide (2 heads of 8) against 32 (4 heads of 8): half the cache per position
    assert student_kv == {k: v // 2 for k, v in teacher_kv.items()}


# --- caches ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", [*FAMILIES, "latent-bart", "latent-t5", "latent-bert2bert"])
def test_kv_bytes_match_a_real_cache(kind):
    model = make_latent(kind.removeprefix("latent-")) if kind.startswith("latent") else make_tiny(kind)
    batch, source, target = 3, 7, 5
    per_position = kv_bytes_per_position(model, batch)
    real = real_cache_bytes(model, batch, source, target)
    assert real == {"self_attention": per_position["self_attention"] * target,
                    "cross_attention": per_position["cross_attention"] * source}


def test_kv_bytes_match_a_real_bf16_cache():
    model = make_tiny("bart").to(torch.bfloat16)
    per_position = kv_bytes_per_position(model, 2)
    assert per_position["self_attention"] == 2 * 2 * 2 * 4 * 8 * 2  # K and V × layers × batch × heads × size × bf16
    assert real_cache_bytes(model, 2, 6, 4) == {"self_attention": per_position["self_attention"] * 4,
                                                "cross_attention": per_position["cross_attention"] * 6}


@pytest.mark.parametrize("kind", ["bart", "t5"])
def test_the_last_step_reads_as_many_positions_as_generate_leaves_cached(kind):
    model = make_tiny(kind)
    batch, source, new = 2, 9, 6
    ids = torch.randint(4, 100, (batch, source), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False, use_cache=True,
                             min_new_tokens=new, max_new_tokens=new, return_dict_in_generate=True)
    cached = out.past_key_values.self_attention_cache.get_seq_length()
    assert out.sequences.shape[-1] == 1 + new and cached == 1 + new - 1  # the last token chosen is never fed back

    # at 1000 bytes/s the bound is the byte count in ms; its increase from n-1 to n tokens is the last step
    def bound_bytes(n: int) -> float:
        return generation_bound_ms(model, batch_size=batch, source_tokens=source, prompt_tokens=1, new_tokens=n,
                                   bandwidth_bytes_per_s=1000.0)

    kv = kv_bytes_per_position(model, batch)
    last_step = bound_bytes(new) - bound_bytes(new - 1)
    expected = decoder_weight_bytes(model, batch_size=batch) + kv["self_attention"] * cached \
        + kv["cross_attention"] * source
    assert last_step == pytest.approx(expected, rel=1e-12)


# --- the bound ---------------------------------------------------------------------------------------------------


def test_the_bound_is_the_sum_over_steps():
    model = make_tiny("bart")
    batch, source, prompt, new, bandwidth = 2, 11, 3, 7, 5e9
    weights, kv = decoder_weight_bytes(model, batch_size=batch), kv_bytes_per_position(model, batch)
    steps = sum(weights + kv["self_attention"] * (prompt + t) + kv["cross_attention"] * source for t in range(new))
    got = generation_bound_ms(model, batch_size=batch, source_tokens=source, prompt_tokens=prompt, new_tokens=new,
                              bandwidth_bytes_per_s=bandwidth, encoder_ms=1.5)
    assert got == pytest.approx(1.5 + steps / bandwidth * 1000)
    per_sequence = generation_bound_ms(model, batch_size=batch, source_tokens=source, prompt_tokens=prompt,
                                       new_tokens=new, bandwidth_bytes_per_s=bandwidth, encoder_ms=1.5,
                                       per_sequence=True)
    assert per_sequence == pytest.approx(1.5 + steps / bandwidth * 1000 / batch)
    assert generation_bound_ms(model, batch_size=batch, source_tokens=source, new_tokens=0,
                               bandwidth_bytes_per_s=bandwidth, encoder_ms=1.5) == 1.5


def test_without_caches_the_bound_grows_linearly_in_new_tokens(monkeypatch):
    model = make_tiny("bart")
    monkeypatch.setattr(bound, "kv_bytes_per_position", lambda m, b=1: {"self_attention": 0, "cross_attention": 0})

    def at(n: int) -> float:
        return generation_bound_ms(model, batch_size=1, source_tokens=50, prompt_tokens=1, new_tokens=n,
                                   bandwidth_bytes_per_s=1e9, encoder_ms=2.0)

    per_token = decoder_weight_bytes(model) / 1e9 * 1000
    for n in (1, 4, 16):
        assert at(n) == pytest.approx(2.0 + n * per_token)
    assert at(16) - at(8) == pytest.approx(at(8) - at(0))


def test_caches_make_the_bound_grow_faster_than_linearly():
    model = make_tiny("bart")

    def at(n: int) -> float:
        return generation_bound_ms(model, batch_size=1, source_tokens=50, new_tokens=n, bandwidth_bytes_per_s=1e9)

    assert at(16) - at(8) > at(8) - at(0)


@pytest.mark.parametrize("bad", [
    dict(batch_size=0), dict(source_tokens=-1), dict(prompt_tokens=0), dict(new_tokens=-1),
    dict(bandwidth_bytes_per_s=0.0), dict(bandwidth_bytes_per_s=float("nan")), dict(bandwidth_bytes_per_s=math.inf),
])
def test_bad_bound_arguments_are_refused(bad):
    args = dict(batch_size=1, source_tokens=10, prompt_tokens=1, new_tokens=4, bandwidth_bytes_per_s=1e9) | bad
    with pytest.raises(ConfigError, match=next(iter(bad))):
        generation_bound_ms(make_tiny("bart"), **args)


def test_bound_record_sits_beside_a_latency_row():
    model = make_tiny("bart")
    args = dict(batch_size=4, source_tokens=20, prompt_tokens=1, new_tokens=8, bandwidth_bytes_per_s=2e9)
    record = bound_record(model, **args, measured_ms=3.0, encoder_ms=0.5)
    assert set(record) == {"bound_ms", "bound_ratio", "bandwidth_gbs", "decoder_weight_mb"}
    assert record["bound_ms"] == pytest.approx(generation_bound_ms(model, **args, encoder_ms=0.5, per_sequence=True))
    assert record["bound_ratio"] == pytest.approx(3.0 / record["bound_ms"])
    assert record["bandwidth_gbs"] == 2.0
    assert record["decoder_weight_mb"] == decoder_weight_bytes(model, batch_size=4) / MB
    per_run = bound_record(model, **args, measured_ms=12.0, encoder_ms=2.0, per_sequence=False)
    assert per_run["bound_ms"] == pytest.approx(generation_bound_ms(model, **args, encoder_ms=2.0))


# --- bandwidth ---------------------------------------------------------------------------------------------------


def test_cpu_bandwidth_is_a_positive_finite_number():
    bandwidth = measure_bandwidth("cpu", nbytes=4 * 2**20, repeats=3)
    assert bandwidth > 0 and math.isfinite(bandwidth)


@pytest.mark.parametrize("bad", [dict(nbytes=0), dict(repeats=0)])
def test_bad_bandwidth_arguments_are_refused(bad):
    with pytest.raises(ConfigError, match=next(iter(bad))):
        measure_bandwidth("cpu", **bad)


def test_spec_bandwidth_is_none_on_cpu():
    assert spec_bandwidth("cpu") is None
    assert spec_bandwidth(torch.device("cpu")) is None


def test_spec_bandwidth_of_an_h100_is_its_datasheet_figure(monkeypatch):
    h100 = SimpleNamespace(name="NVIDIA H100 80GB HBM3", memory_clock_rate=2_619_000, memory_bus_width=5120)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device=None: h100)
    assert spec_bandwidth("cuda:0") == 2 * 2_619_000 * 1000 * 5120 / 8
    assert spec_bandwidth("cuda") == pytest.approx(3.35e12, rel=1e-3)


def test_spec_bandwidth_is_none_without_memory_properties(monkeypatch):
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device=None: SimpleNamespace(name="old"))
    assert spec_bandwidth("cuda:0") is None
