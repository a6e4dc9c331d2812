"""Tests for shrinktune.measure.latency: timing a sleep, per-item division, call counts, argument checks; timing
generation at a forced length, the encoder alone, repeatability, and the generation settings record."""

import gc
import time
import types

import pytest
import torch
from transformers import BartConfig, BartForConditionalGeneration

import shrinktune.measure.latency as latency
from shrinktune.errors import ConfigError
from shrinktune.measure.latency import (
    LatencyResult,
    generation_record,
    measure_latency,
    time_encoder,
    time_generation,
)
from shrinktune.models.generation import GenerationSettings


def _sleep_20ms() -> None:
    time.sleep(0.020)


def test_sleep_is_measured_in_a_sensible_band():
    result = measure_latency(_sleep_20ms, warmup=0, repeats=3)
    # A sleep never returns early; the upper bound leaves room for a loaded machine.
    assert 19.5 <= result.median_ms <= 200.0
    assert result.median_ms <= result.p90_ms
    assert 19.5 <= result.mean_ms
    assert (result.runs, result.items_per_run, result.device) == (3, 1, "cpu")
    assert result.threads == torch.get_num_threads()


def test_times_are_per_item():
    result = measure_latency(_sleep_20ms, items_per_run=4, warmup=0, repeats=3)
    assert 4.9 <= result.median_ms <= 50.0
    assert result.items_per_run == 4


def test_warmup_calls_are_made_but_not_timed():
    calls = []
    result = measure_latency(lambda: calls.append(1), warmup=2, repeats=3)
    assert len(calls) == 5
    assert result.runs == 3


def test_result_is_frozen():
    result = measure_latency(lambda: None, warmup=0, repeats=1)
    assert isinstance(result, LatencyResult)
    with pytest.raises(AttributeError):
        result.median_ms = 0.0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"repeats": 0}, r"repeats must be ≥ 1, got 0"),
        ({"warmup": -1}, r"warmup must be ≥ 0, got -1"),
        ({"items_per_run": 0}, r"items_per_run must be ≥ 1, got 0"),
    ],
)
def test_bad_counts_are_rejected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        measure_latency(lambda: None, **kwargs)


def test_garbage_collector_is_paused_while_timing_and_restored():
    seen = []
    measure_latency(lambda: seen.append(gc.isenabled()), warmup=1, repeats=2)
    assert seen == [True, False, False]  # warm-up runs with the collector, timed runs without
    assert gc.isenabled()
    gc.disable()
    try:
        measure_latency(lambda: None, warmup=0, repeats=1)
        assert not gc.isenabled()  # a caller's choice is kept
    finally:
        gc.enable()


# --- timing generation -------------------------------------------------------------------------------------------


def _tiny_bart(seed: int = 0):
    torch.manual_seed(seed)
    config = BartConfig(vocab_size=100, d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
                        decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=128)
    model = BartForConditionalGeneration(config).eval()
    model.generation_config.max_new_tokens = 4
    return model


def _source(rows: int = 1, length: int = 12, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(4, 100, (rows, length), generator=generator)  # (rows, src_len), no special tokens


def test_fixed_length_forces_exactly_n_tokens_on_a_model_that_stops_early(spy_on_generate):
    model = _tiny_bart()
    source = _source()
    with torch.no_grad():
        natural = model.generate(input_ids=source, max_new_tokens=10)  # (1, out_len)
    # The random model emits its end token right away: natural generation stops well short of 10 tokens.
    assert natural.shape[-1] - 1 < 10
    calls = spy_on_generate(model)
    result = time_generation(model, [{"input_ids": source, "attention_mask": torch.ones_like(source)}],
                             new_tokens=10, warmup=1, repeats=2)
    assert len(calls) == 3 and result.runs == 2
    for lengths, out in calls:
        assert lengths == {"min_new_tokens": 10, "max_new_tokens": 10}
        assert out.shape == (1, 1 + 10)  # decoder start token + exactly 10 new tokens


def test_natural_length_passes_no_lengths_and_counts_rows_of_every_batch(spy_on_generate):
    model = _tiny_bart()
    calls = spy_on_generate(model)
    result = time_generation(model, [_source(rows=2), _source(rows=3, seed=1)], warmup=0, repeats=1)
    assert [lengths for lengths, _ in calls] == [{}, {}]  # bare input_ids tensors are accepted, config lengths used
    assert result.items_per_run == 5


def test_a_forced_length_that_was_not_produced_is_an_error():
    class StopsAtTwo(torch.nn.Module):
        config = type("Config", (), {"is_encoder_decoder": True})()

        def __init__(self):
            super().__init__()
            self.weight = torch.nn.Parameter(torch.zeros(1))

        def generate(self, input_ids, **lengths):
            return torch.zeros(input_ids.shape[0], 3, dtype=torch.long)  # start token + 2 new tokens, always

    with pytest.raises(RuntimeError, match=r"exactly 5 new tokens but generate produced \[2\]"):
        time_generation(StopsAtTwo(), _source(), new_tokens=5, warmup=0, repeats=1)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"inputs": [], "new_tokens": 4}, r"time_generation: inputs must hold at least one batch, got an empty list"),
        ({"inputs": "source", "new_tokens": 0}, r"new_tokens must be ≥ 1 or None, got 0"),
        ({"inputs": "source", "new_tokens": 4, "repeats": 0}, r"repeats must be ≥ 1, got 0"),
    ],
)
def test_bad_generation_timing_arguments_are_rejected(kwargs, message):
    kwargs = {**kwargs, "inputs": _source() if kwargs["inputs"] == "source" else kwargs["inputs"]}
    with pytest.raises(ConfigError, match=message):
        time_generation(_tiny_bart(), **kwargs)


def test_encoder_alone_is_faster_than_generating_from_it(one_thread):
    model = _tiny_bart()
    source = _source(rows=2, length=24)
    encoder = time_encoder(model, source, warmup=1, repeats=5)
    generation = time_generation(model, source, new_tokens=16, warmup=1, repeats=5)
    assert (encoder.items_per_run, encoder.threads) == (2, 1)
    # Generation runs the same encoder pass plus 16 decoder steps; a wide margin absorbs a busy machine.
    assert encoder.median_ms < generation.median_ms / 2


def test_same_model_measured_twice_agrees_within_ten_percent(one_thread):
    # Fixed length, one thread, a warm-up and 21 timed runs per measurement; medians compared. On a shared 2-core
    # machine another process can take a core between two measurements, so a pair is retried a few times: noise
    # makes pairs disagree at random, while a bias in the method (one-time costs inside the timed runs, state that
    # grows from call to call) would make every pair disagree.
    model = _tiny_bart()
    source = [_source(seed=0), _source(seed=1)]
    pairs = []
    for _ in range(8):
        first, second = (time_generation(model, source, new_tokens=16, warmup=2, repeats=21).median_ms for _ in "ab")
        pairs.append((round(first, 2), round(second, 2)))
        if abs(first - second) <= 0.10 * min(first, second):
            return
    pytest.fail(f"no pair of medians (ms) agreed within 10 %: {pairs}")


def test_generation_record_lists_the_settings_that_shape_latency():
    model = _tiny_bart()
    GenerationSettings(num_beams=4, max_new_tokens=144, min_new_tokens=55, no_repeat_ngram_size=3,
                       length_penalty=2.0).apply(model)
    assert generation_record(model) == {"num_beams": 4, "max_new_tokens": 144, "min_new_tokens": 55,
                                        "no_repeat_ngram_size": 3, "length_penalty": 2.0, "source_token_bias": 0.0,
                                        "source_continuation_bias": 0.0}
    model.generation_config.max_new_tokens = None
    model.generation_config.num_beams = None
    model.generation_config.length_penalty = None
    record = generation_record(model)
    assert record["max_new_tokens"] is None  # unset length: max_length governs, nothing is invented
    assert (record["num_beams"], record["length_penalty"]) == (1, 1.0)  # what generate falls back to


# --- exact figures from a fake clock ------------------------------------------------------------------------------


def _fake_clock(monkeypatch, run_seconds):
    """Replaces the clock `latency` reads with one whose timed runs last exactly `run_seconds`, one after another.

    Each timed run reads the clock twice (start, end); runs start on whole seconds so no run overlaps another.
    """
    stamps = []
    for i, seconds in enumerate(run_seconds):
        stamps += [float(i), float(i) + seconds]
    ticks = iter(stamps)
    reads = []

    def perf_counter():
        reads.append(1)
        return next(ticks)

    monkeypatch.setattr(latency, "time", types.SimpleNamespace(perf_counter=perf_counter))
    return reads


def test_figures_are_exact_per_item_median_p90_and_mean(monkeypatch):
    """Catches run times not divided by items_per_run, the median computed as the mean, and a wrong p90."""
    reads = _fake_clock(monkeypatch, [0.010, 0.020, 0.060])  # runs of 10, 20, 60 ms
    result = measure_latency(lambda: None, items_per_run=2, warmup=1, repeats=3)
    assert len(reads) == 6  # two reads per timed run, none for the warm-up
    # per item: 5, 10, 30 ms
    assert result.median_ms == pytest.approx(10.0)
    assert result.mean_ms == pytest.approx(15.0)
    assert result.p90_ms == pytest.approx(10.0 + 0.8 * (30.0 - 10.0))  # numpy linear: position 0.9 * 2 = 1.8
    assert (result.runs, result.items_per_run) == (3, 2)


def test_median_of_an_even_number_of_runs_averages_the_middle_two(monkeypatch):
    """Catches a median taken as one middle value, or as the mean, when outliers pull the mean away."""
    _fake_clock(monkeypatch, [0.004, 0.001, 0.100, 0.002])  # unsorted on purpose: 4, 1, 100, 2 ms
    result = measure_latency(lambda: None, warmup=0, repeats=4)
    assert result.median_ms == pytest.approx(3.0)
    assert result.mean_ms == pytest.approx(26.75)
    assert result.p90_ms == pytest.approx(4.0 + 0.7 * (100.0 - 4.0))  # position 0.9 * 3 = 2.7 in 1, 2, 4, 100


def test_generation_over_single_row_batches_is_timed_per_sequence(monkeypatch, tiny_teacher, tokenizer):
    """Catches time_generation not dividing a run (all batches) by the number of rows it generated."""
    documents = ["challenge: compressing decoders", "approach: a latent bottleneck", "outcome: faster summaries"]
    batches = [dict(tokenizer([text], return_tensors="pt")) for text in documents]  # three batches of one row
    tiny_teacher.generation_config.max_new_tokens = 2  # the clock is fake: short generations keep the test fast
    reads = _fake_clock(monkeypatch, [0.030, 0.090])  # one run generates all three documents
    result = time_generation(tiny_teacher, batches, warmup=0, repeats=2)
    assert len(reads) == 4
    assert result.items_per_run == 3
    assert result.median_ms == pytest.approx(20.0)  # 10 and 30 ms per sequence
    assert result.mean_ms == pytest.approx(20.0)
    assert result.p90_ms == pytest.approx(28.0)  # 10 + 0.9 * (30 - 10)
