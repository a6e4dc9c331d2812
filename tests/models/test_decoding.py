"""The compiled runtime (static caches, a compiled decoder step) decodes token for token as `generate` does."""

import copy

import pytest
import torch
from tiny_models import FAMILIES, make_latent, make_tiny

from shrinktune.errors import ConfigError
from shrinktune.models.decoding import (
    StaticGreedy,
    check_runtime,
    compiled_decoder,
    eager_generation,
    runtime_of,
    set_runtime,
)
from shrinktune.models.generation import GenerationSettings, generate

SOURCE = torch.randint(4, 120, (2, 10), generator=torch.Generator().manual_seed(1))
MASK = torch.ones_like(SOURCE)
MASK[1, 7:] = 0  # a padded row
SETTINGS = [  # every logits processor the compiled step rewrites, alone and together
    dict(no_repeat_ngram_size=0),
    dict(no_repeat_ngram_size=2, min_new_tokens=3),
    dict(no_repeat_ngram_size=3, source_token_bias=2.0, source_continuation_bias=1.0),
]
CALLS = [{}, dict(min_new_tokens=12, max_new_tokens=12), dict(min_new_tokens=4, max_new_tokens=4)]


def _inputs(model):
    start = model.generation_config.decoder_start_token_id or 0
    return [dict(input_ids=SOURCE, attention_mask=MASK), dict(input_ids=SOURCE[:1], attention_mask=MASK[:1]),
            dict(input_ids=SOURCE[:, :5], attention_mask=MASK[:, :5],
                 decoder_input_ids=torch.tensor([[start, 7, 9]] * 2))]  # a decoder prompt


@pytest.mark.parametrize("kind", FAMILIES)
@pytest.mark.parametrize("student", [False, True], ids=["teacher", "latent"])
def test_compiled_runtime_decodes_token_for_token_as_generate(kind, student):
    model = make_tiny(kind)
    model = make_latent(model) if student else model
    for settings in SETTINGS:
        GenerationSettings(max_new_tokens=12, **settings).apply(model)
        if kind == "bart":  # BART's hub configs force the first and the last token
            model.generation_config.forced_bos_token_id = 5
            model.generation_config.forced_eos_token_id = model.generation_config.eos_token_id
        for call in CALLS:
            for inputs in _inputs(model):
                set_runtime(model, "eager")
                with torch.no_grad():
                    expected = generate(model, **inputs, **call)
                set_runtime(model, "compiled")
                with torch.no_grad():
                    got = generate(model, **inputs, **call)
                assert torch.equal(got, expected), (settings, call, list(inputs))
    assert runtime_of(model) == "compiled"


def test_rows_that_end_early_are_padded_and_the_loop_stops_when_all_have_ended():
    model = make_tiny("bart")
    GenerationSettings(max_new_tokens=40, no_repeat_ngram_size=0).apply(model)
    with torch.no_grad():  # make the end token likely after a few steps
        model.final_logits_bias[0, model.generation_config.eos_token_id] = 3.0
        expected = model.generate(input_ids=SOURCE, attention_mask=MASK, min_new_tokens=2)
        got = StaticGreedy(model).generate(input_ids=SOURCE, attention_mask=MASK, min_new_tokens=2)
    assert expected.shape[1] < 40 + 1  # generate stopped early ...
    assert torch.equal(got, expected)  # ... and so did the compiled loop, at the same step, padded alike


def test_the_compiled_step_is_checked_against_the_uncompiled_one_and_given_up_if_it_differs(monkeypatch):
    model = make_tiny("bart")
    GenerationSettings(max_new_tokens=8, no_repeat_ngram_size=3, source_token_bias=2.0,
                       source_continuation_bias=1.0).apply(model)  # what inductor on a CPU got wrong
    with torch.no_grad():
        expected = generate(model, input_ids=SOURCE, attention_mask=MASK)
    runner = StaticGreedy(model, compile=True, backend="aot_eager")  # dynamo traces the step, as on a GPU
    model._shrinktune_decoder = runner
    with torch.no_grad():
        assert torch.equal(generate(model, input_ids=SOURCE, attention_mask=MASK), expected)
    assert runner.compiled_shapes == 1 and runner.fallback is None
    del model._shrinktune_decoder
    GenerationSettings(max_new_tokens=8, no_repeat_ngram_size=3).apply(model)
    with torch.no_grad():
        expected = generate(model, input_ids=SOURCE, attention_mask=MASK)

    # a compiler that changes the tokens (as inductor did on a CPU) is caught on the shape's first call
    broken = StaticGreedy(model, compile=True, backend="aot_eager")
    real_make = broken._make_step

    def miscompiled(buffers, plan, bias, compiled=True):
        step = real_make(buffers, plan, bias, compiled)
        if not compiled:
            return step

        def wrong():
            step()
            buffers.tokens[:, 1] = 17  # a token the uncompiled step did not choose
        return wrong

    monkeypatch.setattr(broken, "_make_step", miscompiled)
    with torch.no_grad():
        assert torch.equal(broken.generate(input_ids=SOURCE, attention_mask=MASK), expected)
        assert torch.equal(broken.generate(input_ids=SOURCE, attention_mask=MASK), expected)
    assert broken.fallback == "the compiled step's tokens differed from the uncompiled step's"


def test_what_the_compiled_runtime_cannot_do_is_one_line():
    model = make_tiny("bart")
    GenerationSettings(num_beams=4).apply(model)
    with pytest.raises(ConfigError, match=r"ask for num_beams=4; use runtime: eager, or set num_beams off"):
        set_runtime(model, "compiled")
    model.generation_config.num_beams, model.generation_config.repetition_penalty = 1, 1.3
    with pytest.raises(ConfigError, match="repetition_penalty=1.3"):
        check_runtime("compiled", model.generation_config)
    with pytest.raises(ConfigError, match="runtime 'jit' is unknown; use one of eager, compiled"):
        check_runtime("jit")
    model.generation_config.repetition_penalty = 1.0
    set_runtime(model, "compiled")
    with pytest.raises(ConfigError, match="use runtime: eager"):  # settings passed to one call are checked too
        generate(model, input_ids=SOURCE, do_sample=True)
    set_runtime(model, "eager")
    assert compiled_decoder(model) is None


def test_a_compiled_search_with_beam_search_is_refused_with_the_space(tmp_path):
    from shrinktune.search.space import SearchSpace

    path = tmp_path / "space.yaml"
    path.write_text("task: summarization\nteacher: embedded\nobjectives: {rouge1: max, latency_ms: min}\n"
                    "evaluation: {runtime: compiled}\ngeneration: {num_beams: 4}\n"
                    "dimensions: {latent_dim: {type: int, low: 96, high: 384}}\n")
    with pytest.raises(ConfigError, match="evaluation.runtime compiled decodes greedily, but generation.num_beams "
                                          "is 4; set num_beams: 1 or runtime: eager"):
        SearchSpace.load(path)


def test_a_copy_of_a_model_gets_a_runtime_of_its_own():
    model = make_tiny("bart")
    GenerationSettings(max_new_tokens=4).apply(model)
    set_runtime(model, "compiled")
    with torch.no_grad():
        generate(model, input_ids=SOURCE)
    clone = copy.deepcopy(model)  # as a memory measurement or a fine-tuning step copies it
    runtime = compiled_decoder(clone)
    assert runtime is not None and runtime is not compiled_decoder(model)
    assert runtime.model is clone and not runtime._steps  # no buffers of the original's shapes
    with torch.no_grad():
        assert torch.equal(generate(clone, input_ids=SOURCE), generate(model, input_ids=SOURCE))


def test_eager_generation_sets_the_compiled_runtime_aside_while_it_lasts(monkeypatch):

    model = make_tiny("bart")
    set_runtime(model, "compiled")
    with eager_generation():
        assert compiled_decoder(model) is None and runtime_of(model) == "eager"
        monkeypatch.setattr(StaticGreedy, "generate", lambda *a, **k: pytest.fail("the compiled loop ran"))
        generate(model, input_ids=SOURCE)
    assert runtime_of(model) == "compiled"
