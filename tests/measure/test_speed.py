"""Tests for shrinktune.measure.speed: a model timed against itself, the round loop under a fake clock (order,
stopping, caps, figures), speed-ups at natural length, the record's JSON, architecture keys, and `time_alone`."""

import gc
import itertools
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from transformers import BertConfig, EncoderDecoderConfig, EncoderDecoderModel

from shrinktune.errors import ConfigError
from shrinktune.measure import speed
from shrinktune.measure.latency import time_generation
from shrinktune.measure.speed import SpeedRounds, Spread, architecture_key, at_length, compare_speed, time_alone

TEXTS = ["We propose a compressed encoder-decoder that summarizes scientific papers at a fraction of the cost.",
         "Our experiments on ACLSum show the student keeps most of the teacher's quality."]


@pytest.fixture
def cheap_gc():
    """`cheap_gc()` freezes every object alive (call it once the model is built and has generated: both import
    much of transformers). Every timed pass starts with `gc.collect()`, ~0.1 s over those objects; frozen, it is
    nearly free, so a few seconds hold many rounds. Unfrozen afterwards."""
    frozen = []

    def freeze() -> None:
        gc.collect()
        gc.freeze()
        frozen.append(True)

    yield freeze
    if frozen:
        gc.unfreeze()


def _batches(tokenizer, count: int):
    return [dict(tokenizer([text], return_tensors="pt")) for text in TEXTS[:count]]  # single-row batches


@pytest.fixture(scope="module")
def timed_model(tokenizer, tiny_bert2bert):
    """A 64-wide bert2bert that has generated once: the first one built in a process imports much of transformers
    (~3 s), which is setup, not the timing under test."""
    model = tiny_bert2bert(tokenizer, width=64, layers=2)
    time_generation(model, _batches(tokenizer, 1), new_tokens=8, warmup=0, repeats=1)
    return model


# --- real timing --------------------------------------------------------------------------------------------------


def test_a_model_timed_against_itself_is_as_fast_as_itself(tokenizer, timed_model, one_thread, cheap_gc):
    """Catches a bias between the slots: one timed differently (length, warm-up inside a round), a wrong ratio."""
    model, batches = timed_model, _batches(tokenizer, 1)
    cheap_gc()
    # Passes of ~30-60 ms (and a short one each), so that 4 s hold 20+ rounds on a busy machine; a quiet one converges
    # in ~7 (the tight target keeps a few lucky rounds from stopping it at 7). Another process taking a core now and
    # then still moves the median of ~25 rounds by a few %, so a miss is retried: noise misses at random, a bias
    # every time.
    tries = []
    for _ in range(5):
        rounds = compare_speed(model, model, batches, new_tokens=8, min_rounds=7, target=0.02, time_cap_s=4.0)
        assert rounds.rounds >= 7 and rounds.new_tokens == 8 and rounds.threads == 1 and rounds.device == "cpu"
        assert rounds.reference_short_ms > 0 and rounds.candidate_short_ms > 0
        fixed = rounds.speedup()
        tries.append((round(fixed.median, 3), rounds.rounds, rounds.converged))
        if 0.95 <= fixed.median <= 1.05:
            return
    pytest.fail(f"self speed-up outside 0.95-1.05 on every try (median, rounds, converged): {tries}")


# --- the round loop, with scripted passes and a fake clock ----------------------------------------------------------


class _Named(torch.nn.Module):
    """A stand-in model: a name to record, and one parameter (for the device)."""

    def __init__(self, name: str):
        super().__init__()
        self.name = name
        self.weight = torch.nn.Parameter(torch.zeros(1))


class _Script:
    """Replaces `_pass_ms` (each pass returns the model's next scripted time and advances the clock by 1 s) and
    `time_encoder` (20 ms for the reference, 10 ms for the candidate); records every pass as (name, ms)."""

    def __init__(self, monkeypatch, reference_times, candidate_times):
        self.now = 0.0
        self.calls: list[tuple[str, float]] = []
        self.times = {"ref": iter(reference_times), "cand": iter(candidate_times)}
        monkeypatch.setattr(speed, "_pass_ms", self.pass_ms)
        monkeypatch.setattr(speed, "time_encoder", self.encoder)

    def pass_ms(self, model, batches, new_tokens):
        if new_tokens < 4:  # the short pass of a round (the scripted runs time 4 tokens): fixed, no clock
            return {"ref": 20.0, "cand": 10.0}[model.name]
        value = float(next(self.times[model.name]))
        self.calls.append((model.name, value))
        self.now += 1.0
        return value

    def encoder(self, model, batches, **kwargs):
        return SimpleNamespace(median_ms={"ref": 20.0, "cand": 10.0}[model.name])

    def clock(self) -> float:
        return self.now

    def round_calls(self, rounds: int) -> list[tuple[str, float]]:
        """The passes of the rounds (whatever warm-up came before them)."""
        return self.calls[len(self.calls) - 2 * rounds:]


def _noisy(seed: int):
    """Endless pass times whose ratios never settle within ±5 %."""
    rng = np.random.default_rng(seed)
    return (float(x) for x in itertools.cycle(rng.uniform(30.0, 90.0, size=97)))


def _run(script, **kwargs):
    kwargs = {"new_tokens": 4, "min_rounds": 3, "max_rounds": 40, "target": 0.05, "time_cap_s": 1e9, **kwargs}
    return compare_speed(_Named("ref"), _Named("cand"), torch.zeros(1, 3, dtype=torch.long), clock=script.clock,
                         **kwargs)


def test_rounds_alternate_which_model_goes_first(monkeypatch):
    """Catches a fixed order (the second pass of a round always on a warmer machine) or a missing flip."""
    script = _Script(monkeypatch, _noisy(0), _noisy(1))
    rounds = _run(script, min_rounds=6, max_rounds=6)
    order = [name for name, _ in script.round_calls(rounds.rounds)]
    assert order == ["ref", "cand", "cand", "ref", "ref", "cand", "cand", "ref", "ref", "cand", "cand", "ref"]


def test_each_round_pairs_the_two_passes_it_timed(monkeypatch):
    """Catches slots swapped in the rounds where the candidate goes first (its time booked as the reference's)."""
    script = _Script(monkeypatch, (100.0 + i for i in itertools.count()), (50.0 + i for i in itertools.count()))
    rounds = _run(script, min_rounds=5, max_rounds=5)
    timed = script.round_calls(rounds.rounds)
    assert rounds.reference_ms == tuple(ms for name, ms in timed if name == "ref")
    assert rounds.candidate_ms == tuple(ms for name, ms in timed if name == "cand")
    assert (rounds.reference_short_ms, rounds.candidate_short_ms, rounds.new_tokens) == (20.0, 10.0, 4)


def test_constant_times_stop_at_min_rounds_converged(monkeypatch):
    """Catches a loop that ignores convergence (or checks it before min_rounds)."""
    script = _Script(monkeypatch, itertools.repeat(100.0), itertools.repeat(50.0))
    rounds = _run(script, min_rounds=4)
    assert (rounds.rounds, rounds.converged) == (4, True)
    assert rounds.speedup() == Spread(2.0, 2.0, 2.0)


def test_stops_at_the_first_round_whose_ratio_is_within_target(monkeypatch):
    """Catches stopping late, stopping early, or testing the spread of something other than the per-round ratio."""
    # The candidate is noisy for its first 12 passes, then steady: the ratio's IQR narrows after a few more rounds.
    candidate = itertools.chain([30.0, 80.0, 45.0, 90.0, 35.0, 70.0, 40.0, 85.0, 55.0, 30.0, 75.0, 60.0],
                                itertools.repeat(50.0))
    script = _Script(monkeypatch, itertools.repeat(100.0), candidate)
    rounds = _run(script, min_rounds=3, target=0.05)
    ratios = np.asarray(rounds.reference_ms) / np.asarray(rounds.candidate_ms)
    assert rounds.converged and rounds.rounds > 3 + 5  # the scripted noise held it past min_rounds
    assert Spread.of(ratios).relative_half_iqr <= 0.05
    for k in range(3, rounds.rounds):  # every earlier chance to stop was rightly passed over
        assert Spread.of(ratios[:k]).relative_half_iqr > 0.05, k


def test_time_cap_stops_unconverged_rounds(monkeypatch):
    """Catches a cap that is ignored, counts warm-up, or reports the result as converged."""
    script = _Script(monkeypatch, _noisy(2), _noisy(3))
    rounds = _run(script, min_rounds=3, time_cap_s=10.0)  # a round is 2 fake seconds: the cap ends round 5
    assert (rounds.rounds, rounds.converged, rounds.seconds) == (5, False, 10.0)


def test_time_cap_does_not_cut_min_rounds(monkeypatch):
    """Catches the cap ending the rounds before the promised minimum."""
    script = _Script(monkeypatch, _noisy(4), _noisy(5))
    rounds = _run(script, min_rounds=4, time_cap_s=0.5)
    assert (rounds.rounds, rounds.converged) == (4, False)


def test_never_more_than_max_rounds(monkeypatch):
    """Catches an off-by-one or a loop that only the time cap ends."""
    script = _Script(monkeypatch, _noisy(6), _noisy(7))
    rounds = _run(script, min_rounds=3, max_rounds=9)
    assert (rounds.rounds, rounds.converged) == (9, False)
    assert len(rounds.candidate_ms) == 9


def test_speedup_is_numpy_percentiles_of_per_round_ratios(monkeypatch):
    """Catches a ratio of medians, an inverted ratio, or other percentiles than numpy's linear 25/50/75."""
    script = _Script(monkeypatch, _noisy(8), _noisy(9))
    rounds = _run(script, min_rounds=11, max_rounds=11)
    ratios = np.asarray(rounds.reference_ms) / np.asarray(rounds.candidate_ms)
    q25, median, q75 = np.percentile(ratios, [25, 50, 75])
    fixed = rounds.speedup()
    assert (fixed.median, fixed.q25, fixed.q75) == pytest.approx((median, q25, q75), rel=1e-12)
    assert fixed.relative_half_iqr == pytest.approx((q75 - q25) / (2 * median))
    assert rounds.latency("reference").median == pytest.approx(np.median(rounds.reference_ms))


@pytest.mark.parametrize("kwargs", [{"new_tokens": 0}, {"min_rounds": 0}, {"min_rounds": 5, "max_rounds": 4},
                                    {"target": 0.0}, {"time_cap_s": 0.0}])
def test_bad_settings_are_rejected_before_timing(monkeypatch, kwargs):
    """Catches a bad count or bound accepted (and a pass timed before it is checked)."""
    script = _Script(monkeypatch, itertools.repeat(1.0), itertools.repeat(1.0))
    with pytest.raises(ConfigError):
        _run(script, **kwargs)
    assert script.calls == []


# --- figures at a summary length -------------------------------------------------------------------------------------


def _record(reference_ms=(100.0,), candidate_ms=(50.0,)) -> SpeedRounds:
    return SpeedRounds(reference_ms=tuple(reference_ms), candidate_ms=tuple(candidate_ms), reference_short_ms=20.0,
                       candidate_short_ms=10.0, new_tokens=20, converged=True, seconds=1.5, threads=1, device="cpu",
                       short_tokens=0)


def test_at_length_scales_only_the_decoder_part():
    """Catches scaling the encoder's time with the summary length, or the wrong ratio of lengths."""
    assert at_length(np.array([100.0]), 20.0, 20, 0, 10) == pytest.approx([60.0])
    assert at_length(np.array([50.0]), 10.0, 20, 0, 10) == pytest.approx([30.0])
    assert at_length(np.array([100.0]), 20.0, 20, 0, 40) == pytest.approx([180.0])
    assert at_length(np.array([100.0, 80.0]), 20.0, 20, 0, None) == pytest.approx([100.0, 80.0])


def test_natural_length_speedup_follows_each_models_summary_length():
    """Catches natural-length figures that ignore the lengths or give one model the other's length."""
    rounds = _record()
    assert rounds.speedup().median == pytest.approx(2.0)
    assert rounds.speedup(10.0, 10.0).median == pytest.approx(60.0 / 30.0)
    wordy = rounds.speedup(10.0, 20.0)  # the candidate writes twice as much: 60 ms against 50 ms
    assert wordy.median == pytest.approx(1.2)
    assert wordy.median < rounds.speedup(10.0, 10.0).median
    assert rounds.latency("candidate", 10.0).median == pytest.approx(30.0)
    assert rounds.latency("reference").median == pytest.approx(100.0)


@pytest.mark.parametrize("tokens", [(10.0, None), (None, 10.0)])
def test_one_token_count_alone_is_an_error(tokens):
    """Catches a half-given length silently treated as fixed length for one model."""
    with pytest.raises(ConfigError):
        _record().speedup(*tokens)


def test_json_round_trip_is_equal():
    """Catches a field lost or a tuple left a list (the cache would then not compare equal)."""
    rounds = _record(reference_ms=(100.25, 98.5, 101.0 / 3), candidate_ms=(50.0, 49.75, 51.0 / 7))
    again = SpeedRounds.from_json(rounds.to_json())
    assert again == rounds
    assert isinstance(again.reference_ms, tuple) and isinstance(again.candidate_ms, tuple)


# --- architecture keys and time_alone ---------------------------------------------------------------------------


def test_architecture_key_ignores_weights_and_follows_shape(tokenizer, tiny_bert2bert):
    """Catches a key that hashes weights (no caching across trials) or misses a change of depth or width."""
    base = architecture_key(tiny_bert2bert(tokenizer, seed=0))
    assert architecture_key(tiny_bert2bert(tokenizer, seed=1)) == base
    assert architecture_key(tiny_bert2bert(tokenizer, layers=3)) != base
    assert architecture_key(tiny_bert2bert(tokenizer, width=48)) != base


def test_architecture_key_follows_costly_generation_settings_only(tokenizer, tiny_bert2bert):
    """Catches n-gram blocking left out of the key, or the summary length (timed at a fixed one) left in."""
    model = tiny_bert2bert(tokenizer)
    base = architecture_key(model)
    model.generation_config.max_new_tokens = 64
    assert architecture_key(model) == base
    model.generation_config.no_repeat_ngram_size = 3
    assert architecture_key(model) != base


def test_architecture_key_follows_attention_heads(tokenizer):
    """Catches a key of tensor shapes alone (a head count changes the work, not any shape)."""
    def model(heads: int):
        torch.manual_seed(0)
        common = dict(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=heads,
                      intermediate_size=128, max_position_embeddings=128)
        config = EncoderDecoderConfig.from_encoder_decoder_configs(BertConfig(**common), BertConfig(**common))
        return EncoderDecoderModel(config=config).eval()

    assert architecture_key(model(4)) != architecture_key(model(2))


def test_time_alone_books_one_timing_in_both_slots(tokenizer, timed_model, one_thread, cheap_gc):
    """Catches a teacher timing that is not one set of passes shared by both slots, or is empty/zero."""
    cheap_gc()
    rounds = time_alone(timed_model, _batches(tokenizer, 2), new_tokens=4, rounds=3)
    assert rounds.reference_ms == rounds.candidate_ms and len(rounds.reference_ms) == 3
    assert rounds.reference_short_ms == rounds.candidate_short_ms > 0
    assert rounds.latency("reference").median > 0
    assert rounds.speedup() == Spread(1.0, 1.0, 1.0)
