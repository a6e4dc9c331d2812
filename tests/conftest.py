"""Shared fixtures: tiny seq2seq models (2 layers, 32 wide) with the real MiniLM tokenizer, and tiny data."""

from __future__ import annotations

import logging

import pytest
import torch


@pytest.fixture(autouse=True)
def shrinktune_logs_reach_caplog(monkeypatch):
    """A trial run in this process (`quiet_libraries`) gives the "shrinktune" logger a handler of its own and stops
    it propagating; every test starts with it propagating again, so that caplog sees its records."""
    monkeypatch.setattr(logging.getLogger("shrinktune"), "propagate", True)


@pytest.fixture(scope="session")
def tokenizer():
    from transformers import AutoTokenizer

    from shrinktune.models.teacher import minilm_path

    return AutoTokenizer.from_pretrained(minilm_path())


def make_tiny_bert2bert(tokenizer, width: int = 32, layers: int = 2, seed: int = 0):
    """A random bert2bert (encoder and decoder `layers` deep, `width` wide) wired for generation."""
    from transformers import BertConfig, EncoderDecoderConfig, EncoderDecoderModel

    from shrinktune.models.teacher import wire_special_tokens

    torch.manual_seed(seed)
    common = dict(vocab_size=len(tokenizer), hidden_size=width, num_hidden_layers=layers, num_attention_heads=4,
                  intermediate_size=4 * width, max_position_embeddings=128)
    config = EncoderDecoderConfig.from_encoder_decoder_configs(BertConfig(**common), BertConfig(**common))
    model = EncoderDecoderModel(config=config)
    wire_special_tokens(model, tokenizer)
    model.generation_config.max_new_tokens = 8
    model.generation_config.no_repeat_ngram_size = 0
    return model.eval()


@pytest.fixture(scope="session")
def tiny_bert2bert():
    """`make_tiny_bert2bert` itself, for tests that build several (a module cannot import it: `conftest` names
    several files)."""
    return make_tiny_bert2bert


@pytest.fixture
def tiny_teacher(tokenizer):
    return make_tiny_bert2bert(tokenizer)


@pytest.fixture(scope="session")
def tiny_teacher_dir(tmp_path_factory, tokenizer):
    """A tiny teacher saved as a local folder, loaded the way a hub id would be."""
    folder = tmp_path_factory.mktemp("tiny-teacher")
    model = make_tiny_bert2bert(tokenizer, layers=3)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def few_examples():
    from shrinktune.data.aclsum import load_aclsum

    return load_aclsum("train")[:12]


@pytest.fixture(scope="session")
def embedded_cache(tmp_path_factory):
    """One cache for the end-to-end tests of a session, so the embedded teacher is prepared once."""
    return tmp_path_factory.mktemp("embedded-cache")
