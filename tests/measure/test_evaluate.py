"""Tests for shrinktune.measure.evaluate: the latency modes of measure_summarizer, their defaults and checks."""

from dataclasses import replace

import pytest
import torch

from shrinktune.errors import ConfigError
from shrinktune.measure.evaluate import (
    _inputs,
    fixed_length_default,
    generate_summaries,
    generation_record,
    measure_summarizer,
)
from shrinktune.measure.latency import time_generation
from shrinktune.models.generation import decode_summaries

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
    inputs = _inputs(tokenizer, [example], 32, "cpu", model.config.decoder_start_token_id)  # with its aspect prompt
    with torch.no_grad():
        first = model.generate(**inputs)[0, inputs["decoder_input_ids"].shape[1]]
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
    given = 1 + len(tokenizer(few_examples[0].prompt, add_special_tokens=False)["input_ids"])  # start + aspect prompt
    assert all(out.shape == (1, given + 6) for out in forced)  # exactly 6 new tokens
    assert all(out.shape[-1] == given + 1 for out in natural)  # the end token: the model stops at once
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
                                               "no_repeat_ngram_size": 0, "length_penalty": 1.0,
                                               "source_token_bias": 0.0, "source_continuation_bias": 0.0}


def test_the_aspect_prompt_reaches_the_decoder_and_leaves_the_summary(tiny_teacher, tokenizer, few_examples):
    calls, generate = [], tiny_teacher.generate
    tiny_teacher.generate = lambda **kwargs: calls.append(kwargs) or generate(**kwargs)
    mixed = few_examples[:3] + [replace(few_examples[3], aspect=None)]
    summaries = generate_summaries(tiny_teacher, tokenizer, mixed, max_source_tokens=48)
    prompted = [c for c in calls if "decoder_input_ids" in c]
    assert sum(len(c["decoder_input_ids"]) for c in prompted) == 3 and len(calls) == 2  # grouped by prompt length
    start = tiny_teacher.config.decoder_start_token_id
    firsts = {tuple(row.tolist()) for c in prompted for row in c["decoder_input_ids"]}
    assert firsts == {(start, *tokenizer(f"{e.aspect}:", add_special_tokens=False)["input_ids"]) for e in mixed[:3]}
    # what comes back is the generated text alone, in the examples' order
    direct = generate(**{k: v[:1] for k, v in prompted[0].items()})
    assert summaries[0] == decode_summaries(tokenizer, direct[:, prompted[0]["decoder_input_ids"].shape[1]:])[0]


def test_fixed_length_counts_tokens_after_the_prompt(tiny_teacher, tokenizer, few_examples):
    batch = _inputs(tokenizer, few_examples[:2], 48, "cpu", tiny_teacher.config.decoder_start_token_id)
    assert batch["decoder_input_ids"].shape[1] > 1
    time_generation(tiny_teacher, batch, new_tokens=5, warmup=0, repeats=1)  # raises if the count were off
