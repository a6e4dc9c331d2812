"""Offline weight compression: the shared compression contract for "svd" and "ae", then what each method adds."""

from __future__ import annotations

import copy
import json
import re

import pytest
import safetensors.torch
import torch
from torch import nn
from transformers import (
    BartConfig,
    BartForConditionalGeneration,
    GenerationConfig,
    T5Config,
    T5ForConditionalGeneration,
)

from shrinktune.errors import ConfigError
from shrinktune.measure.params import count_parameters
from shrinktune.models.weight_compression import (
    AECompressedLinear,
    LowRankLinear,
    apply_compression_structure,
    compression_structure,
)
from shrinktune.training.weight_compression import (
    DECODER_FFN_PATTERN,
    WeightCompression,
    compress_weights,
    train_row_autoencoder,
)

BERT_FFN = [f"decoder.bert.encoder.layer.{i}.{part}.dense" for i in (0, 1) for part in ("intermediate", "output")]
BART_FFN = [f"model.decoder.layers.{i}.fc{j}" for i in (0, 1) for j in (1, 2)]
FAST = dict(ae_epochs=60)  # enough for the contract; the AE-specific tests train longer


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny matrices: thread hand-offs cost more than the maths (25× slower AE training on a busy 2-core box)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def make_tiny_bart(seed: int = 0) -> BartForConditionalGeneration:
    torch.manual_seed(seed)
    config = BartConfig(vocab_size=100, d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
                        decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=128)
    model = BartForConditionalGeneration(config)
    model.generation_config.max_new_tokens = 8
    model.generation_config.no_repeat_ngram_size = 0
    return model.eval()


@pytest.fixture(params=["bert2bert", "bart"])
def tiny_model(request, tiny_teacher):
    """(model, names of its decoder feed-forward Linears)."""
    if request.param == "bert2bert":
        return tiny_teacher, BERT_FFN
    return make_tiny_bart(), BART_FFN


def inputs(model) -> dict:
    torch.manual_seed(1)
    ids = torch.randint(5, 100, (2, 7))  # (batch, src_len); ids < 100 are valid in both vocabularies
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "decoder_input_ids": ids[:, :5]}


def logits(model) -> torch.Tensor:
    with torch.no_grad():
        return model(**inputs(model)).logits


def generated(model) -> torch.Tensor:
    batch = inputs(model)
    with torch.no_grad():
        return model.generate(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])


# --- the default module choice ------------------------------------------------------------------------------


def test_default_pattern_picks_decoder_feed_forward_layers_only(tiny_model):
    model, expected = tiny_model
    linears = [name for name, module in model.named_modules() if isinstance(module, nn.Linear)]
    assert [name for name in linears if re.search(DECODER_FFN_PATTERN, name)] == expected


@pytest.mark.parametrize("name,chosen", [
    ("decoder.block.0.layer.2.DenseReluDense.wi", True),  # T5
    ("decoder.block.3.layer.2.DenseReluDense.wi_1", True),  # T5 v1.1 (gated)
    ("decoder.block.0.layer.2.DenseReluDense.wo", True),
    ("model.decoder.layers.5.fc2", True),  # Pegasus / Marian
    ("decoder.block.0.layer.0.SelfAttention.o", False),
    ("decoder.block.0.layer.1.EncDecAttention.o", False),
    ("encoder.block.0.layer.1.DenseReluDense.wo", False),
    ("model.encoder.layers.0.fc1", False),
    ("decoder.bert.encoder.layer.0.attention.output.dense", False),
    ("decoder.bert.encoder.layer.0.crossattention.output.dense", False),
    ("encoder.encoder.layer.0.output.dense", False),
    ("decoder.cls.predictions.transform.dense", False),
])
def test_default_pattern_on_other_families(name, chosen):
    assert bool(re.search(DECODER_FFN_PATTERN, name)) is chosen


@pytest.mark.parametrize("method", ["svd", "ae"])
@pytest.mark.parametrize("feed_forward", ["relu", "gated-gelu"])
def test_t5_decoder_feed_forward_is_compressed_and_still_generates(feed_forward, method):
    torch.manual_seed(0)
    config = T5Config(vocab_size=100, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
                      feed_forward_proj=feed_forward, decoder_start_token_id=0)
    model = T5ForConditionalGeneration(config).eval()
    report = compress_weights(model, WeightCompression(method=method, **FAST))
    parts = ["wi", "wo"] if feed_forward == "relu" else ["wi_0", "wi_1", "wo"]
    assert list(report["modules"]) == [f"decoder.block.{i}.layer.2.DenseReluDense.{part}" for i in (0, 1)
                                       for part in parts]
    ids = torch.randint(2, 100, (2, 6))  # (batch, src_len)
    with torch.no_grad():  # T5 reads `.wo.weight.dtype`, which the compressed layers provide
        assert model.generate(input_ids=ids, max_new_tokens=4).shape == (2, 5)


# --- the contract every method passes -----------------------------------------------------------------------


@pytest.mark.parametrize("method", ["svd", "ae"])
def test_chosen_modules_are_replaced_and_the_rest_untouched(method, tiny_model):
    model, chosen = tiny_model
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    types = {name: type(module) for name, module in model.named_modules()}
    report = compress_weights(model, WeightCompression(method=method, **FAST))
    expected_type = LowRankLinear if method == "svd" else AECompressedLinear
    assert sorted(report["modules"]) == sorted(chosen)
    for name, module in model.named_modules():
        if name in chosen:
            assert isinstance(module, expected_type)
        elif name in types:
            assert type(module) is types[name], name
    after = model.state_dict()
    untouched = [key for key in before if not any(key.startswith(name + ".") for name in chosen)]
    assert len(untouched) > 0
    for key in untouched:
        assert torch.equal(after[key], before[key]), key
    for name in chosen:  # the original biases are kept as they are
        assert torch.equal(after[name + ".bias"], before[name + ".bias"])


@pytest.mark.parametrize("ratio", [2.0, 3.0])
@pytest.mark.parametrize("method", ["svd", "ae"])
def test_chosen_parameters_shrink_to_at_most_original_over_ratio(method, ratio, tiny_model):
    model, chosen = tiny_model
    original = sum(p.numel() for name in chosen for p in model.get_submodule(name).parameters())
    total_before = count_parameters(model)
    report = compress_weights(model, WeightCompression(method=method, ratio=ratio, **FAST))
    chosen_after = original - (total_before - count_parameters(model))  # shared decoders counted once
    assert report["params_before"] == original
    assert report["params_after"] == chosen_after
    assert chosen_after <= original / ratio
    assert chosen_after > original / ratio * 0.8  # the budget is used, not wasted
    assert report["achieved_ratio"] == pytest.approx(original / chosen_after)
    for entry in report["modules"].values():
        assert 0 < entry["relative_error"] < 1.5


@pytest.mark.parametrize("method", ["svd", "ae"])
def test_deterministic_under_a_seed(method):
    models = [make_tiny_bart(), make_tiny_bart()]
    reports = [compress_weights(model, WeightCompression(method=method, seed=7, **FAST)) for model in models]
    first, second = (model.state_dict() for model in models)
    assert first.keys() == second.keys()
    for key in first:
        assert torch.equal(first[key], second[key]), key
    assert reports[0] == reports[1]


def test_another_seed_gives_another_autoencoder():
    models = [make_tiny_bart(), make_tiny_bart()]
    for model, seed in zip(models, (0, 1)):
        compress_weights(model, WeightCompression(method="ae", seed=seed, **FAST))
    assert not torch.equal(models[0].model.decoder.layers[0].fc1.codes, models[1].model.decoder.layers[0].fc1.codes)


@pytest.mark.parametrize("method", ["svd", "ae"])
def test_save_load_gives_the_same_outputs_and_generations(method, tiny_model, tmp_path):
    model, _ = tiny_model
    compress_weights(model, WeightCompression(method=method, **FAST))
    model.save_pretrained(tmp_path)
    (tmp_path / "compression.json").write_text(json.dumps(compression_structure(model)))

    fresh = type(model)(config=model.config.__class__.from_pretrained(tmp_path))
    fresh.generation_config = GenerationConfig.from_pretrained(tmp_path)
    apply_compression_structure(fresh, json.loads((tmp_path / "compression.json").read_text()))
    saved = safetensors.torch.load_file(tmp_path / "model.safetensors")
    result = fresh.load_state_dict(saved, strict=False)
    # save_pretrained leaves out tied copies (embeddings ↔ LM head); strict=False only for those.
    assert result.unexpected_keys == []
    kept = {tensor.data_ptr() for key, tensor in fresh.state_dict().items() if key in saved}
    assert all(fresh.state_dict()[key].data_ptr() in kept for key in result.missing_keys), result.missing_keys
    assert not any("codes" in key or key.endswith((".up", ".down")) for key in result.missing_keys)
    fresh.eval()

    assert torch.equal(logits(fresh), logits(model))
    tokens = generated(model)
    assert tokens.shape[1] > 1
    assert torch.equal(generated(fresh), tokens)


def test_the_saved_file_holds_each_shared_decoder_once(tmp_path):
    model = make_tiny_bart()
    report = compress_weights(model, WeightCompression(method="ae", **FAST))
    model.save_pretrained(tmp_path)
    saved = safetensors.torch.load_file(tmp_path / "model.safetensors")
    decoder_keys = sorted(key for key in saved if "net." in key or key.endswith(".scale"))
    # two groups (fc1 rows are 32 wide, fc2 rows 64), each: two Linear layers (weight, bias) and a scale
    assert decoder_keys == sorted(f"weight_decoders.{group}.{part}" for group in ("in32", "in64")
                                  for part in ("net.0.weight", "net.0.bias", "net.2.weight", "net.2.bias", "scale"))
    assert sum(saved[key].numel() for key in decoder_keys if "net." in key) == sum(
        group["decoder_params"] for group in report["groups"].values())


# --- SVD ----------------------------------------------------------------------------------------------------


def test_svd_at_full_rank_is_exact():
    torch.manual_seed(0)
    linear = nn.Linear(12, 7)
    low_rank = LowRankLinear.from_linear(linear, rank=7)
    x = torch.randn(3, 5, 12)  # (batch, seq, in)
    assert low_rank.up.shape == (7, 7) and low_rank.down.shape == (7, 12)
    torch.testing.assert_close(low_rank(x), linear(x), atol=1e-5, rtol=1e-5)


def test_svd_rank_is_the_largest_within_budget():
    model = make_tiny_bart()
    report = compress_weights(model, WeightCompression(method="svd", ratio=2.0))
    # fc1 is 64×32 with bias: (2048 + 64) / 2 = 1056 ≥ r·96 + 64 → r = 10 (11 would need 1120)
    assert report["modules"]["model.decoder.layers.0.fc1"]["rank"] == 10
    assert report["modules"]["model.decoder.layers.0.fc1"]["params_after"] == 10 * 96 + 64


def test_svd_error_grows_with_the_ratio():
    errors = []
    for ratio in (1.5, 3.0, 6.0):
        report = compress_weights(make_tiny_bart(), WeightCompression(method="svd", ratio=ratio))
        errors.append(sum(entry["relative_error"] for entry in report["modules"].values()))
    assert errors[0] < errors[1] < errors[2]


# --- row autoencoder ----------------------------------------------------------------------------------------


def test_ae_groups_rows_by_input_width_across_layers():
    model = make_tiny_bart()
    report = compress_weights(model, WeightCompression(method="ae", **FAST))
    groups = report["groups"]
    assert groups["in32"]["modules"] == ["model.decoder.layers.0.fc1", "model.decoder.layers.1.fc1"]
    assert groups["in64"]["modules"] == ["model.decoder.layers.0.fc2", "model.decoder.layers.1.fc2"]
    assert groups["in32"]["rows"] == 128 and groups["in64"]["rows"] == 64
    layers = model.model.decoder.layers
    assert layers[0].fc1.row_decoder is layers[1].fc1.row_decoder is model.weight_decoders["in32"]
    assert layers[0].fc1.codes.shape == (64, groups["in32"]["code_size"])


def test_ae_codes_and_decoder_fit_each_groups_budget():
    model = make_tiny_bart()
    linears = {name: copy.deepcopy(model.get_submodule(name)) for name in BART_FFN}
    ratio = 2.5
    report = compress_weights(model, WeightCompression(method="ae", ratio=ratio, **FAST))
    for group, spec in report["groups"].items():
        decoder = model.weight_decoders[group]
        original = sum(count_parameters(linears[name]) for name in spec["modules"])
        codes = sum(model.get_submodule(name).codes.numel() for name in spec["modules"])
        biases = sum(linears[name].bias.numel() for name in spec["modules"])
        k, h, d = spec["code_size"], spec["hidden"], spec["in_features"]
        assert count_parameters(decoder) == spec["decoder_params"] == k * h + h + h * d + d
        assert codes == spec["rows"] * k
        assert codes + count_parameters(decoder) + biases <= original / ratio


@pytest.mark.parametrize("context", [torch.no_grad, torch.inference_mode])
def test_ae_training_loss_falls(context):
    with context():  # training switches gradients back on for itself
        report = compress_weights(make_tiny_bart(), WeightCompression(method="ae", ae_epochs=200))
    for group in report["groups"].values():
        losses = group["losses"]
        assert len(losses) == 200
        assert losses[-1] < 0.5 * losses[0]


@pytest.mark.parametrize("encoder", ["linear", "mlp"])
def test_ae_recovers_rows_that_have_few_directions(encoder):
    torch.manual_seed(0)
    rows = torch.randn(96, 2) @ torch.randn(2, 24) * 0.05  # (rows, in) of rank 2
    settings = WeightCompression(method="ae", ae_epochs=400, ae_encoder=encoder)
    decoder, codes, losses = train_row_autoencoder(rows, code_size=4, hidden=16, settings=settings)
    with torch.no_grad():
        rebuilt = decoder(codes)  # (rows, in), scaled back
    assert codes.shape == (96, 4)
    assert losses[-1] < 0.1 * losses[0]
    assert torch.linalg.norm(rebuilt - rows) / torch.linalg.norm(rows) < 0.15  # row lengths too, not only angles


def test_ae_layer_is_codes_times_decoder_plus_bias_and_follows_changes():
    model = make_tiny_bart()
    compress_weights(model, WeightCompression(method="ae", **FAST))
    layer = model.model.decoder.layers[0].fc1
    x = torch.randn(3, 32)  # (tokens, in)
    with torch.no_grad():
        expected = x @ layer.row_decoder(layer.codes).T + layer.bias
        torch.testing.assert_close(layer(x), expected)
        model.load_state_dict({**model.state_dict(), "model.decoder.layers.0.fc1.codes": layer.codes * 2})
        changed = x @ layer.row_decoder(layer.codes).T + layer.bias
        assert not torch.allclose(changed, expected)
        torch.testing.assert_close(layer(x), changed)  # the cached weight was refreshed
        layer.row_decoder.scale.data.mul_(3)  # .data bypasses version counting: eval() forgets the cache
        model.eval()
        torch.testing.assert_close(layer(x) - layer.bias, 3 * (changed - layer.bias))
    layer.codes.requires_grad_(True)
    layer(x).sum().backward()  # gradients still reach the codes when a graph is needed
    assert layer.codes.grad is not None and layer.codes.grad.abs().sum() > 0


# --- bad input ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("settings,message", [
    (dict(method="pca"), r"method must be one of \('svd', 'ae'\), got 'pca'"),
    (dict(ratio=1.0), r"ratio must be a number > 1 .*got 1\.0"),
    (dict(ratio=0.5), r"ratio must be a number > 1 .*got 0\.5"),
    (dict(modules=("fc[",)), r"module pattern 'fc\[' is not a valid regular expression"),
    (dict(modules=()), r"at least one module pattern"),
    (dict(ae_epochs=0), r"ae_epochs must be an integer ≥ 1, got 0"),
    (dict(ae_learning_rate=0.0), r"ae_learning_rate must be > 0"),
    (dict(ae_encoder="conv"), r"ae_encoder must be one of \('linear', 'mlp'\), got 'conv'"),
])
def test_bad_settings_are_refused(settings, message):
    with pytest.raises(ConfigError, match=message):
        WeightCompression(**settings)


def test_a_pattern_matching_no_linear_is_named():
    with pytest.raises(ConfigError, match=r"pattern 'mlp\\\.dense' matches no nn.Linear in BartForConditional"):
        compress_weights(make_tiny_bart(), WeightCompression(modules=(r"fc1$", r"mlp\.dense")))


def test_a_tied_weight_is_refused():
    with pytest.raises(ConfigError, match=r"lm_head.weight is tied to .*leave 'lm_head' out"):
        compress_weights(make_tiny_bart(), WeightCompression(method="svd", modules=(r"^lm_head$",)))


@pytest.mark.parametrize("method", ["svd", "ae"])
def test_a_ratio_leaving_no_room_is_refused(method):
    with pytest.raises(ConfigError, match=r"ratio 40.0 leaves .*lower the ratio"):
        compress_weights(make_tiny_bart(), WeightCompression(method=method, ratio=40.0, **FAST))


def test_a_structure_for_another_model_is_refused(tiny_teacher):
    model = make_tiny_bart()
    compress_weights(model, WeightCompression(method="svd"))
    with pytest.raises(ConfigError, match=r"replaces a 64×32 nn.Linear at 'model.decoder.layers.0.fc1', but "
                                          r"EncoderDecoderModel has NoneType there"):
        apply_compression_structure(tiny_teacher, compression_structure(model))
