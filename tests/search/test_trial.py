"""A whole trial without Ray, on a tiny local teacher."""

import json
from dataclasses import replace
from pathlib import Path

import pytest
import transformers as tf

from shrinktune import load_summarizer
from shrinktune.data.aclsum import ASPECTS, load_aclsum
from shrinktune.errors import ConfigError
from shrinktune.models.generation import GenerationSettings
from shrinktune.models.teacher import wire_special_tokens
from shrinktune.search.trial import TrialContext, prepare_reference, ratios, run_configuration
from shrinktune.settings import EvaluationSettings, TrialSettings


def test_reference_then_trial(tmp_path, tiny_teacher_dir):
    ctx = TrialContext(task="summarization", teacher_dir=str(tiny_teacher_dir), cache_root=str(tmp_path / "cache"),
                       generation=GenerationSettings(max_new_tokens=6), threads=1,
                       evaluation=EvaluationSettings(samples=4, latency_samples=2, latency_repeats=2, latency_cap_s=1),
                       defaults=TrialSettings(batch_size=8, ae_epochs=1))
    teacher_dir, reference = prepare_reference(ctx)
    assert Path(teacher_dir).parent == tmp_path / "cache" / "search-teachers"  # the teacher with the search's decoding
    assert {"rouge1", "latency_ms", "train_peak_mb", "generate_peak_mb", "params_decoder"} <= set(reference)
    ctx = replace(ctx, reference=reference)
    metrics = run_configuration({"latent_dim": 16, "decoder_layers": 1, "learning_rate": 1e-3, "epochs": 1}, ctx,
                                tmp_path / "ck")
    assert metrics["params_decoder"] < reference["params_decoder"]
    assert metrics["params_bottleneck"] > 0 and metrics["ae_mse"] > 0
    assert metrics["speedup"] == pytest.approx(reference["latency_ms"] / metrics["latency_ms"])
    assert metrics["speedup_q25"] <= metrics["speedup"] <= metrics["speedup_q75"]
    assert metrics["rouge1_low"] <= metrics["rouge1"] <= metrics["rouge1_high"]
    assert metrics["latency_cached"] == 0 and metrics["latency_rounds"] >= 5
    saved = json.loads((tmp_path / "ck" / "shrinktune_trial.json").read_text())
    assert saved["config"]["latent_dim"] == 16 and saved["task"] == "summarization"
    assert isinstance(load_summarizer(tmp_path / "ck")("A new document.", aspect="outcome"), str)
    # a second trial at the same width reuses the cached autoencoder
    autoencoders = list((tmp_path / "cache" / "autoencoders").glob("*/autoencoder.pt"))
    second = run_configuration({"latent_dim": 16, "decoder_layers": 2, "learning_rate": 1e-3, "epochs": 1}, ctx,
                               tmp_path / "ck2")
    assert list((tmp_path / "cache" / "autoencoders").glob("*/autoencoder.pt")) == autoencoders
    assert second["latency_cached"] == 0  # another architecture (2 decoder layers): timed
    # a third trial of the first trial's architecture, trained differently, is not timed again: its rounds are
    # the cached ones, and only its summary length changes its natural-length figure
    # ... and with the cost pre-screen's hook, its costs are reported before it trains: exact sizes, memory and
    # fixed-length speed, a natural-length latency no higher than the trained student's (its shortest summary)
    events = []
    third = run_configuration({"latent_dim": 16, "decoder_layers": 1, "learning_rate": 3e-3, "epochs": 1}, ctx,
                              tmp_path / "ck3", on_epoch=lambda epoch, loss: events.append(("epoch", epoch)),
                              on_costs=lambda costs: events.append(("costs", costs)))
    assert third["latency_cached"] == 1
    assert third["speedup_fixed"] == metrics["speedup_fixed"] and third["latency_rounds"] == metrics["latency_rounds"]
    assert [kind for kind, _ in events] == ["costs", "epoch"]
    costs = events[0][1]
    assert costs["params_decoder"] == third["params_decoder"] and costs["params_total"] == third["params_total"]
    assert costs["speedup_fixed"] == third["speedup_fixed"]
    assert costs["latency_ms"] <= third["latency_ms"] and costs["speedup"] >= third["speedup"]
    assert costs["train_peak_mb"] == pytest.approx(third["train_peak_mb"], rel=0.05)
    assert "rouge1" not in costs


def _summaries_by_aspect(summarize, examples) -> list[str]:
    """`summarize` on each example, one call per aspect (as a user summarizes several documents)."""
    out = {}
    for aspect in ASPECTS:
        rows = [e for e in examples if e.aspect == aspect]
        out.update(zip([e.id for e in rows], summarize([e.document for e in rows], aspect=aspect)))
    return [out[e.id] for e in examples]


def test_the_searchs_folders_decode_as_the_search_did(tmp_path, tiny_teacher_dir):
    """The teacher folder the search records and a trial's checkpoint, loaded, write the summaries the search scored
    — with its decoding (here not the teacher's own), not transformers' defaults — and the teacher's own folder, a
    shared cache entry for a prepared teacher, keeps its own decoding."""
    decoding = GenerationSettings(max_new_tokens=6, source_token_bias=2.0)
    ctx = replace(_context(tmp_path, tiny_teacher_dir, latent_dim=32, decoder_layers=1), generation=decoding,
                  evaluation=EvaluationSettings(samples=6, latency_samples=1, latency_repeats=1, latency_cap_s=1,
                                                recheck_samples=0))
    own = (tiny_teacher_dir / "generation_config.json").read_text()
    teacher_dir, reference = prepare_reference(ctx)
    validation = load_aclsum("validation")[:6]
    [scored] = (tmp_path / "cache" / "teacher-eval").glob("*/predictions.json")  # the teacher's summaries it scored
    teacher = load_summarizer(teacher_dir)
    assert _summaries_by_aspect(teacher, validation) == json.loads(scored.read_text())["predictions"]
    assert teacher.max_source_tokens == 128 and teacher.aspects == ASPECTS  # the encoder's 128 positions cap 256
    assert (tiny_teacher_dir / "generation_config.json").read_text() == own
    weights = (Path(teacher_dir) / "model.safetensors", tiny_teacher_dir / "model.safetensors")
    assert weights[0].stat().st_ino == weights[1].stat().st_ino  # linked, not copied
    run_configuration({}, replace(ctx, teacher_dir=teacher_dir, reference=reference), tmp_path / "ck")
    saved = json.loads((tmp_path / "ck" / "shrinktune_trial.json").read_text())
    assert _summaries_by_aspect(load_summarizer(tmp_path / "ck"), validation) == saved["sample_predictions"]


def test_ratios_against_the_teacher():
    out = ratios({"latency_ms": 50, "train_peak_mb": 30, "rouge1": 0.18, "rouge2": 0.05, "rougeL": 0.1,
                  "params_decoder": 5},
                 {"latency_ms": 100, "train_peak_mb": 60, "rouge1": 0.2, "rouge2": 0.05, "rougeL": 0.1,
                  "params_decoder": 10})
    assert out["speedup"] == 2 and out["train_memory_ratio"] == 0.5 and out["decoder_params_ratio"] == 0.5
    assert abs(out["rouge1_change"] + 0.1) < 1e-12 and out["rouge2_change"] == 0


def _context(tmp_path, teacher_dir, **fixed):
    return TrialContext(task="summarization", teacher_dir=str(teacher_dir), cache_root=str(tmp_path / "cache"),
                        generation=GenerationSettings(max_new_tokens=6), threads=1,
                        evaluation=EvaluationSettings(samples=3, latency_samples=1, latency_repeats=1, latency_cap_s=1),
                        defaults=TrialSettings(batch_size=8, ae_epochs=1, epochs=1, learning_rate=1e-3, **fixed))


def test_every_method_is_a_trial_setting(tmp_path, tiny_teacher_dir):
    """KD with a dropped encoder layer, pseudo-labels with a PCA bottleneck, a jointly trained AE, and SVD weights."""
    ctx = _context(tmp_path, tiny_teacher_dir)
    kd = run_configuration({"latent_dim": 32, "decoder_layers": 1, "encoder_layers": 2, "method": "kd",
                            "kd_alpha_hid": 1.0}, ctx, tmp_path / "kd")
    saved = json.loads((tmp_path / "kd" / "config.json").read_text())
    assert saved["student"]["kept_encoder_layers"] == [0, 2] and kd["train_loss"] > 0
    pca = run_configuration({"latent_dim": 16, "decoder_layers": 1, "ae_kind": "pca", "method": "pseudo_labels"}, ctx,
                            tmp_path / "pl")
    assert 0 < pca["ae_explained_variance"] <= 1
    assert len(list((tmp_path / "cache" / "pseudo-labels").glob("*/pseudo_labels.json"))) == 1
    joint = run_configuration({"latent_dim": 16, "decoder_layers": 1, "ae_mode": "joint"}, ctx, tmp_path / "joint")
    assert "ae_mse" not in joint and joint["params_bottleneck"] > 0
    svd = run_configuration({"latent_dim": 32, "decoder_layers": 2, "weight_compression": "svd", "weight_ratio": 2.0},
                            ctx, tmp_path / "svd")
    assert svd["weight_params_after"] * 2 <= svd["weight_params_before"]
    assert isinstance(load_summarizer(tmp_path / "svd")("A new document.", aspect="outcome"), str)


@pytest.mark.parametrize("method", ["sft", "kd"])
def test_a_shortlisted_student_trains_on_its_shortlist_and_loads(tmp_path, tiny_teacher_dir, method):
    ctx = _context(tmp_path, tiny_teacher_dir)
    metrics = run_configuration({"latent_dim": 16, "decoder_layers": 1, "method": method, "output_vocab": "training"},
                                ctx, tmp_path / "ck")
    assert 100 < metrics["output_vocab"] < 30522 and metrics["train_loss"] > 0
    assert metrics["labels_outside_vocab"] == 0  # the references are training text
    saved = json.loads((tmp_path / "ck" / "config.json").read_text())
    assert len(saved["output_vocab"]) == metrics["output_vocab"]
    assert isinstance(load_summarizer(tmp_path / "ck")("A new document.", aspect="outcome"), str)
    same_width = run_configuration({"latent_dim": 32, "decoder_layers": 1, "output_vocab": "training"}, ctx,
                                   tmp_path / "wide")  # the teacher's first decoder layer, re-housed, shortlisted
    assert same_width["output_vocab"] == metrics["output_vocab"] and same_width["train_loss"] > 0
    saved = json.loads((tmp_path / "wide" / "config.json").read_text())
    assert saved["bottleneck"] is None and saved["student"]["decoder_init"] == "teacher-layers"
    assert isinstance(load_summarizer(tmp_path / "wide")("A new document.", aspect="outcome"), str)


def test_impossible_configuration_fails_with_one_line(tmp_path, tiny_teacher_dir):
    ctx = _context(tmp_path, tiny_teacher_dir)
    with pytest.raises(ConfigError, match="ae_mode joint trains the bottleneck from scratch"):
        run_configuration({"latent_dim": 16, "ae_kind": "pca", "ae_mode": "joint"}, ctx, tmp_path / "x")
    with pytest.raises(ConfigError, match=r"between 1 and 3 layers"):
        run_configuration({"encoder_layers": 4}, ctx, tmp_path / "y")


def test_a_bart_teacher_runs_a_whole_trial(tmp_path, tokenizer):
    """Any seq2seq family goes through the same trial: a tiny random BART, saved as a local folder."""
    teacher = tf.BartForConditionalGeneration(tf.BartConfig(
        vocab_size=len(tokenizer), d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
        decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=300))
    wire_special_tokens(teacher, tokenizer)
    teacher.save_pretrained(tmp_path / "bart")
    tokenizer.save_pretrained(tmp_path / "bart")
    ctx = _context(tmp_path, tmp_path / "bart")
    _, reference = prepare_reference(ctx)
    ctx = replace(ctx, reference=reference)
    metrics = run_configuration({"latent_dim": 16, "decoder_layers": 1, "encoder_layers": 1}, ctx, tmp_path / "ck")
    assert metrics["params_decoder"] < reference["params_decoder"] and metrics["ae_mse"] > 0


def test_the_compiled_runtime_measures_the_same_summaries_and_shows_the_bound(tmp_path, tiny_teacher_dir):
    def reference(runtime: str) -> dict:
        ctx = TrialContext(task="summarization", teacher_dir=str(tiny_teacher_dir), cache_root=str(tmp_path / runtime),
                           generation=GenerationSettings(max_new_tokens=6), threads=1,
                           evaluation=EvaluationSettings(samples=4, latency_samples=2, latency_repeats=2,
                                                         latency_cap_s=1, recheck_samples=0, runtime=runtime),
                           defaults=TrialSettings(batch_size=8, ae_epochs=1))
        return prepare_reference(ctx)[1]

    eager, compiled = reference("eager"), reference("compiled")
    for key in ("rouge1", "rouge2", "tokens_per_summary"):  # token-identical summaries
        assert compiled[key] == eager[key]
    for metrics in (eager, compiled):
        # the bound: weights and caches read once per token at the device's bandwidth, plus the encoder
        assert 0 < metrics["encoder_ms"] < metrics["bound_ms"] < metrics["latency_fixed_ms"]
        assert metrics["bound_ratio"] == pytest.approx(metrics["latency_fixed_ms"] / metrics["bound_ms"])
        assert metrics["bandwidth_gbs"] > 0
    assert compiled["compiled_step"] == 0  # on a CPU the step runs uncompiled (static caches); on CUDA it compiles
    assert "compiled_step" not in eager and "train_full_peak_mb" not in eager  # the papers' memory: CUDA only


def test_a_gpu_precision_on_a_cpu_is_one_line_before_any_work(tmp_path, tiny_teacher_dir):
    from shrinktune.search.runner import check_trial_device

    ctx = TrialContext(task="summarization", teacher_dir=str(tiny_teacher_dir), cache_root=str(tmp_path / "c"),
                       evaluation=EvaluationSettings(dtype="bf16"))
    with pytest.raises(ConfigError, match=r"^dtype bf16 is for GPUs, and this trial runs on the CPU; use dtype: fp32"):
        prepare_reference(ctx)
    with pytest.raises(ConfigError, match=r"evaluation.dtype fp16 needs GPUs, and the trials get none"):
        check_trial_device("fp16", 0)
    check_trial_device("bf16", 0.5)
    check_trial_device("fp32", 0)
