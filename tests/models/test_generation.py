import pytest

from shrinktune.errors import ConfigError
from shrinktune.models.generation import GenerationSettings, decode_summaries


def test_settings_land_in_generation_config(tiny_teacher):
    GenerationSettings(num_beams=2, max_new_tokens=5, no_repeat_ngram_size=2, length_penalty=2.0).apply(tiny_teacher)
    config = tiny_teacher.generation_config
    assert (config.num_beams, config.max_new_tokens, config.no_repeat_ngram_size, config.length_penalty) == (2, 5, 2, 2.0)


def test_impossible_lengths_are_refused():
    with pytest.raises(ConfigError, match="min_new_tokens ≤ max_new_tokens"):
        GenerationSettings(min_new_tokens=10, max_new_tokens=5)


def test_decoding_rejoins_hyphenated_words(tokenizer):
    ids = tokenizer(["state-of-the-art models and a two-stage method."], return_tensors="pt")["input_ids"]
    assert decode_summaries(tokenizer, ids) == ["state-of-the-art models and a two-stage method."]
