"""A fixed seed tries the same configurations in the same order: the searcher the runner builds (`make_searcher`
behind Ray's `ConcurrencyLimiter`) proposes exactly the configurations recorded in data/sequences.json — captured
before the settings redesign with the same fake metrics, and again when issue 21 let the samplers model results after
`search.startup_trials` (and gave the methods space learning rates by width), and once more when the start-up
default was capped at 5 and the main space enqueued 384 × 1 with the output shortlist, and when it trained its
enqueued students longer (epochs up to 5), and when it enqueued the fast corner too (192 × 1, 96 × 2), and when its
narrow students got 3–15 epochs, and when 96 × 1 took 192 × 1's place among them, and when a dimension of several
ranges came to be asked as its position in the range that holds (the methods and main spaces), and when the main
space came to drop 0–2 of the encoder's top layers (`encoder_layers` 4–6), and when the searcher came to run with
numpy's x86-64 baseline kernels (`BASELINE_SIMD`: with the AVX2 or AVX-512 ones a 2-core VM without AVX-512 proposed
other configurations from trial 7 on than the machine the file was made on) — and each trial's effective settings
are the same (settings added since then hold their defaults, which change nothing)."""

import json
import math
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from shrinktune.settings import TrialSettings, as_params

ROOT = Path(__file__).resolve().parents[2]
GOLDEN_FILE = Path(__file__).parent / "data" / "sequences.json"
GOLDEN = json.loads(GOLDEN_FILE.read_text())
SHAPES = {"summarization": (384, 6, 6), "methods": (384, 6, 6), "bart-base-cnn_dailymail": (768, 6, 6),
          "bart-large-cnn-xsum": (1024, 12, 12)}
# TPE's densities go through numpy's exp and log, whose SIMD kernels (AVX2, AVX-512) differ in the last bits, and a
# near-tie between two candidates then goes the other way: the same seed proposes other configurations on another
# CPU. The sequences are made with numpy held to the x86-64 baseline's kernels, the same on every x86-64 machine.
BASELINE_SIMD = {"NPY_DISABLE_CPU_FEATURES": "X86_V3 X86_V4 AVX512_ICL AVX512_SPR"}


def _fake(effective: dict) -> dict:
    """Deterministic metrics of a configuration (the ones the golden file was made with)."""
    width = effective.get("latent_dim", 384) or 384
    layers = effective.get("decoder_layers", 6) or 6
    lr = effective.get("learning_rate", 3e-4)
    r1 = 0.2 + 0.01 * layers + 0.0001 * width - 0.5 * abs(math.log10(lr) + 3) * 0.01
    latency = 10 + 3 * layers * width / 384
    return {"rouge1": r1, "rouge2": r1 / 2, "latency_ms": latency, "latency_fixed_ms": latency * 1.1,
            "train_peak_mb": 50 + width / 4 * layers, "params_total": 1e6 * layers * width / 384,
            "speedup": 40 / latency}


def proposals(name: str, count: int) -> list[dict]:
    """The first `count` configurations the runner's searcher proposes for space `name`, each told its fake
    metrics before the next is asked: [{"sampled": …, "effective": every trial setting}, …]."""
    from ray.tune.search import ConcurrencyLimiter  # imported here: the parent process only starts this one

    from shrinktune.search.samplers import make_searcher
    from shrinktune.search.space import SearchSpace

    width, depth, encoder_depth = SHAPES[name]
    space = SearchSpace.load(ROOT / "search_spaces" / f"{name}.yaml", encoder_width=width, teacher_depth=depth,
                             encoder_depth=encoder_depth)
    searcher = ConcurrencyLimiter(make_searcher(space, space.search.sampler),
                                  max_concurrent=space.search.max_concurrent)
    out = []
    for i in range(count):
        config = searcher.suggest(f"t{i}")
        effective = as_params(replace(space.defaults, **config))
        out.append({"sampled": config, "effective": effective})
        searcher.on_trial_complete(f"t{i}", _fake(effective))
    return out


def proposed_at_baseline_simd(name: str, count: int) -> list[dict]:
    """`proposals` in a fresh interpreter with numpy at `BASELINE_SIMD` (it reads it when it is imported)."""
    code = ("import json, sys; from numpy._core._multiarray_umath import __cpu_dispatch__, __cpu_features__; "
            "from tests.search.test_sequence import proposals; "
            "print(json.dumps({'dispatched': [f for f in __cpu_dispatch__ if __cpu_features__.get(f)], "
            "'proposals': proposals(sys.argv[1], int(sys.argv[2]))}))")
    done = subprocess.run([sys.executable, "-c", code, name, str(count)], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, **BASELINE_SIMD}, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["dispatched"] == [], f"numpy still dispatches to {out['dispatched']}: update BASELINE_SIMD's list"
    return out["proposals"]


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_a_fixed_seed_proposes_the_recorded_configurations_in_order(name):
    for i, (expected, got) in enumerate(zip(GOLDEN[name], proposed_at_baseline_simd(name, len(GOLDEN[name])),
                                            strict=True)):
        assert got["sampled"] == expected["sampled"], f"{name}: trial {i} differs"
        effective = got["effective"]
        recorded = {key: effective.get(key) for key in expected["effective"]}
        assert recorded == expected["effective"], f"{name}: trial {i}'s settings differ"
        added = {key: value for key, value in effective.items() if key not in expected["effective"]}
        assert added == {key: getattr(TrialSettings(), key) for key in added}, "settings added since keep defaults"


if __name__ == "__main__":  # re-record: python -m tests.search.test_sequence (then say why in the docstring)
    GOLDEN_FILE.write_text(json.dumps({name: proposed_at_baseline_simd(name, 12) for name in sorted(SHAPES)},
                                      indent=2) + "\n")
