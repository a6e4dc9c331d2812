"""Tests for shrinktune.measure.evaluate: the latency modes of measure_summarizer, their defaults and checks."""

import pytest
import torch

from shrinktune.errors import ConfigError
from shrinktune.measure.evaluate import fixed_length_default, generation_record, measure_summarizer

QUICK = {"max_source_tokens": 32, "latency_examples": 2, "latency_repeats": 2}


@pytest.fixture(autouse=True)
def one_thread():
    """Two threads on a busy 2-core machine mostly wait for each other: pin one for speed, then put it back."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _stop_after_one_token(model, tokenizer, example) -> None:
    """Makes the first token the model generates its end token, so natural generation stops at once."""
    inputs = tokenizer([example.source], return_tensors="pt", max_length=32, truncation=True)
    with torch.no_grad():
        first = model.generate(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"])[0, 1]
    model.generation_config.eos_token_id = int(first)


def test_every_latency_mode_is_reported(tiny_teacher, tokenizer, few_examples):
    metrics, predictions = measure_summarizer(tiny_teacher, tokenizer, few_examples[:4], latency_batch_size=4, **QUICK)
    assert len(predictions) == 4
    for mode in ("latency", "latency_fixed"):
        assert 0 < metrics[f"{mode}_ms"] <= metrics[f"{mode}_p90_ms"]
    assert metrics["latency_batch_ms"] > 0 and metrics["latency_batch_size"] == 4
    assert metrics["fixed_new_tokens"] == 8  # the fixture's max_new_tokens
    assert metrics["threads"] == 1  # the thread count the figures were taken with
    assert {"rouge1", "distinct_fraction", "summary_words", "generate_peak_mb", "params_decoder"} <= set(metrics)
    assert "train_peak_mb" not in metrics  # no training step given


def test_fixed_mode_forces_the_length_natural_mode_does_not(tiny_teacher, tokenizer, few_examples, spy_on_generate):
    _stop_after_one_token(tiny_teacher, tokenizer, few_examples[0])
    calls = spy_on_generate(tiny_teacher)
    metrics, _ = measure_summarizer(tiny_teacher, tokenizer, few_examples[:1], fixed_new_tokens=6, **QUICK)
    forced = [out for lengths, out in calls if lengths]
    natural = [out for lengths, out in calls if not lengths]
    assert all(lengths == {"min_new_tokens": 6, "max_new_tokens": 6} for lengths, _ in calls if lengths)
    assert len(forced) == 1 * 2  # one example, two timed runs (the natural pass before it warmed the model up)
    assert all(out.shape == (1, 1 + 6) for out in forced)  # start token + exactly 6 new tokens
    assert all(out.shape[-1] == 2 for out in natural)  # start token + the end token: the model stops at once
    assert metrics["fixed_new_tokens"] == 6
    assert "latency_batch_ms" not in metrics  # 1 example < the default batch of 8


def test_batch_latency_is_skipped_at_batch_one(tiny_teacher, tokenizer, few_examples):
    metrics, _ = measure_summarizer(tiny_teacher, tokenizer, few_examples[:2], latency_batch_size=1, **QUICK)
    assert "latency_batch_ms" not in metrics and "latency_batch_size" not in metrics


def test_fixed_length_defaults_to_the_config_then_32(tiny_teacher):
    assert fixed_length_default(tiny_teacher) == 8
    tiny_teacher.generation_config.max_new_tokens = None
    assert fixed_length_default(tiny_teacher) == 32


@pytest.mark.parametrize("name", ["latency_examples", "latency_repeats", "fixed_new_tokens", "latency_batch_size"])
def test_counts_below_one_are_rejected(tiny_teacher, tokenizer, few_examples, name):
    kwargs = {**QUICK, name: 0}
    with pytest.raises(ConfigError, match=rf"measure_summarizer: {name} must be ≥ 1, got 0"):
        measure_summarizer(tiny_teacher, tokenizer, few_examples[:2], **kwargs)


def test_generation_record_is_what_the_teacher_generates_with(tiny_teacher):
    # The fixture sets max_new_tokens and no_repeat_ngram_size; the rest are transformers' defaults or unset.
    assert generation_record(tiny_teacher) == {"num_beams": 1, "max_new_tokens": 8, "min_new_tokens": None,
                                               "no_repeat_ngram_size": 0, "length_penalty": 1.0}
