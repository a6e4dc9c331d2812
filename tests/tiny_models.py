"""Tiny random models of every supported family, for tests (import as `tiny_models`: pytest puts tests/ on the path).

`make_tiny(kind)`: a 32-wide BART, Pegasus, Marian, T5 (gated FFN) or bert2bert with special tokens wired for
generation;
`make_latent(teacher)`: its latent student, the decoder 16 wide and 2 deep behind a random MLP bottleneck.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
import transformers as tf

from shrinktune.models.autoencoder import Autoencoder
from shrinktune.models.student import build_student

FAMILIES = ["bart", "pegasus", "marian", "t5", "bert2bert"]


def make_tiny(kind: str, vocab: int = 120, layers: int = 3, **overrides):
    """A random model of `kind` (`overrides` go into a BART / Pegasus config), in eval mode, 6 new tokens."""
    torch.manual_seed(0)
    model: Any
    bart_like: dict[str, Any] = dict(
        vocab_size=vocab, d_model=32, encoder_layers=layers, decoder_layers=layers, encoder_attention_heads=4,
        decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=64, **overrides)
    if kind == "bart":
        model = tf.BartForConditionalGeneration(tf.BartConfig(**bart_like))
    elif kind == "pegasus":
        model = tf.PegasusForConditionalGeneration(
            tf.PegasusConfig(**bart_like, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0))
    elif kind == "marian":  # translation teachers (Helsinki-NLP/opus-mt-*): BART-like, sinusoidal positions
        model = tf.MarianMTModel(
            tf.MarianConfig(**bart_like, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0))
    elif kind == "t5":
        model = tf.T5ForConditionalGeneration(tf.T5Config(  # type: ignore[call-arg]
            vocab_size=vocab, d_model=32, d_kv=8, d_ff=64, num_layers=layers, num_decoder_layers=layers, num_heads=4,
            feed_forward_proj="gated-gelu", tie_word_embeddings=False, decoder_start_token_id=0, pad_token_id=0,
            eos_token_id=1))
    else:
        half = tf.BertConfig(vocab_size=vocab, hidden_size=32, num_hidden_layers=layers, num_attention_heads=4,
                             intermediate_size=64, max_position_embeddings=64)
        config = tf.EncoderDecoderConfig.from_encoder_decoder_configs(half, copy.deepcopy(half))
        model = tf.EncoderDecoderModel(config=config)
        model.config.decoder_start_token_id, model.config.pad_token_id = 2, 0
        model.generation_config.decoder_start_token_id, model.generation_config.pad_token_id = 2, 0
        model.generation_config.eos_token_id = 3
    model.generation_config.max_new_tokens = 6
    return model.eval()


def make_latent(teacher, latent: int = 16, decoder_layers: int = 2):
    """A latent student of `teacher` (32 wide): its decoder `latent` wide behind a random MLP bottleneck."""
    ae = Autoencoder(32, latent).eval()
    return build_student(teacher, latent_dim=latent, decoder_layers=decoder_layers, bottleneck=ae.encoder,
                         bottleneck_spec=ae.spec).eval()
