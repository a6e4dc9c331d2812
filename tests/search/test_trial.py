"""A whole trial without Ray, on a tiny local teacher."""

import json

from shrinktune.search.trial import TrialContext, prepare_reference, ratios, run_configuration


def test_reference_then_trial(tmp_path, tiny_teacher_dir):
    ctx = TrialContext(task="summarization", teacher_dir=str(tiny_teacher_dir), cache_root=str(tmp_path / "cache"),
                       generation={"max_new_tokens": 6}, eval_samples=4, latency_samples=2, latency_repeats=2, threads=1,
                       fixed={"batch_size": 8, "ae_epochs": 1})
    teacher_dir, reference = prepare_reference(ctx)
    assert teacher_dir == str(tiny_teacher_dir)
    assert {"rouge1", "latency_ms", "train_peak_mb", "generate_peak_mb", "params_decoder"} <= set(reference)
    ctx = TrialContext(**{**ctx.__dict__, "reference": reference})
    metrics = run_configuration({"latent_dim": 16, "decoder_layers": 1, "learning_rate": 1e-3, "epochs": 1}, ctx, tmp_path / "ck")
    assert metrics["params_decoder"] < reference["params_decoder"]
    assert metrics["params_bottleneck"] > 0 and metrics["ae_mse"] > 0
    assert metrics["speedup"] == reference["latency_ms"] / metrics["latency_ms"]
    saved = json.loads((tmp_path / "ck" / "shrinktune_trial.json").read_text())
    assert saved["config"]["latent_dim"] == 16 and saved["task"] == "summarization"
    from shrinktune import load_summarizer

    assert isinstance(load_summarizer(tmp_path / "ck")("A new document.", aspect="outcome"), str)
    # a second trial at the same width reuses the cached autoencoder
    autoencoders = list((tmp_path / "cache" / "autoencoders").glob("*/autoencoder.pt"))
    run_configuration({"latent_dim": 16, "decoder_layers": 2, "learning_rate": 1e-3, "epochs": 1}, ctx, tmp_path / "ck2")
    assert list((tmp_path / "cache" / "autoencoders").glob("*/autoencoder.pt")) == autoencoders


def test_ratios_against_the_teacher():
    out = ratios({"latency_ms": 50, "train_peak_mb": 30, "rouge1": 0.18, "rouge2": 0.05, "rougeL": 0.1, "params_decoder": 5},
                 {"latency_ms": 100, "train_peak_mb": 60, "rouge1": 0.2, "rouge2": 0.05, "rougeL": 0.1, "params_decoder": 10})
    assert out["speedup"] == 2 and out["train_memory_ratio"] == 0.5 and out["decoder_params_ratio"] == 0.5
    assert abs(out["rouge1_change"] + 0.1) < 1e-12 and out["rouge2_change"] == 0
