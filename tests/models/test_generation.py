import pytest
import torch

from shrinktune.errors import ConfigError
from shrinktune.models.generation import GenerationSettings, SourceCopyBias, decode_summaries, generate
from shrinktune.models.summarizer import Summarizer


def test_settings_land_in_generation_config(tiny_teacher):
    GenerationSettings(num_beams=2, max_new_tokens=5, no_repeat_ngram_size=2, length_penalty=2.0).apply(tiny_teacher)
    config = tiny_teacher.generation_config
    settings = (config.num_beams, config.max_new_tokens, config.no_repeat_ngram_size, config.length_penalty)
    assert settings == (2, 5, 2, 2.0)


def test_impossible_lengths_are_refused():
    with pytest.raises(ConfigError, match=r"min_new_tokens \(10\) must be ≤ max_new_tokens \(5\)"):
        GenerationSettings(min_new_tokens=10, max_new_tokens=5)


def test_negative_source_biases_are_refused():
    with pytest.raises(ConfigError, match="source_continuation_bias must be a number ≥ 0, got -1.0"):
        GenerationSettings(source_continuation_bias=-1.0)


def test_source_copy_bias_favours_the_sources_tokens_and_what_follows_the_last_one():
    source = torch.tensor([[5, 7, 9, 7, 11, 0], [3, 4, 0, 0, 0, 0]])  # 0 = padding
    bias = SourceCopyBias(source, token_bias=1.0, continuation_bias=10.0, ignore_ids=[0, None])
    # 2 beams per source: rows 0-1 read source 0, rows 2-3 source 1
    last = torch.tensor([[1, 7], [1, 7], [1, 3], [1, 3]])
    gain = bias(last, torch.zeros(4, 13)) - torch.log_softmax(torch.zeros(4, 13), -1)
    gain = gain - gain[:, 1:2]  # relative to token 1, in no source: what the bias added
    assert gain[0].nonzero().flatten().tolist() == [5, 7, 9, 11]
    assert torch.allclose(gain[0, [9, 11, 5]], torch.tensor([11.0, 11.0, 1.0]))  # 9 and 11 follow a 7 in the source
    assert torch.equal(gain[1], gain[0])
    assert gain[2].nonzero().flatten().tolist() == [3, 4] and gain[2, 4] == 11.0  # padding never biased


def test_source_copy_bias_keeps_the_models_chance_of_stopping():
    torch.manual_seed(0)
    scores = torch.randn(3, 13)
    scores[2, 4] = float("-inf")  # a token another processor banned stays banned
    source = torch.tensor([[5, 6, 2], [7, 8, 2], [4, 5, 2]])  # 2 = the end token, as a source ends with it
    out = SourceCopyBias(source, 3.0, 2.0, ignore_ids=[0], stop_ids=[2])(torch.tensor([[5], [7], [4]]), scores)
    before, after = scores.softmax(-1), out.exp()
    assert torch.allclose(after.sum(-1), torch.ones(3))
    assert torch.allclose(after[:, 2], before[:, 2])  # stopping as likely as the model made it
    assert after[2, 4] == 0 and torch.isfinite(out[:, [0, 1, 2, 3]]).all()
    assert after[0, 6] / after[0, 1] > before[0, 6] / before[0, 1] * 100  # source word (+3), after a 5 (+2): e^5


def test_generation_under_a_strong_source_bias_writes_only_source_tokens(tiny_teacher, tokenizer, tmp_path):
    batch = tokenizer(["graph parsing with neural networks", "a corpus of dialogue"], padding=True, return_tensors="pt")
    special = set(tokenizer.all_special_ids)
    GenerationSettings(max_new_tokens=6, no_repeat_ngram_size=0).apply(tiny_teacher)
    free = generate(tiny_teacher, **batch)
    GenerationSettings(max_new_tokens=6, no_repeat_ngram_size=0, source_token_bias=1e4).apply(tiny_teacher)
    biased = generate(tiny_teacher, **batch)

    def outside_source(ids):
        return [set(row[1:].tolist()) - special - set(src.tolist()) for row, src in zip(ids, batch["input_ids"])]

    assert any(outside_source(free)), "the random model should write tokens the source lacks"
    assert outside_source(biased) == [set(), set()]
    tiny_teacher.save_pretrained(tmp_path)  # the setting travels with the checkpoint, and the Summarizer uses it
    tokenizer.save_pretrained(tmp_path)
    summarizer = Summarizer.from_pretrained(tmp_path)
    assert summarizer.model.generation_config.source_token_bias == 1e4
    summary = summarizer("graph parsing with neural networks")
    assert summary and all(word in "graph parsing with neural networks" for word in summary.split())  # or word pieces


def test_decoding_rejoins_hyphenated_words(tokenizer):
    ids = tokenizer(["state-of-the-art models and a two-stage method."], return_tensors="pt")["input_ids"]
    assert decode_summaries(tokenizer, ids) == ["state-of-the-art models and a two-stage method."]
