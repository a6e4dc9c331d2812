"""What Shrinktune needs to know about each seq2seq family: config keys, where the layer stacks live, which classes
make an encoder alone and a decoder alone.

One registry, keyed by `config.model_type`: BART, mBART, Pegasus, Marian, T5 / FLAN-T5 / mT5 / UMT5, and BERT (the
halves of a bert2bert `EncoderDecoderModel`). Everything else in `shrinktune.models` asks this module instead of
branching on the family.
"""

from __future__ import annotations

import copy
import importlib
from dataclasses import dataclass, replace

from torch import nn
from transformers import AutoModel, AutoModelForCausalLM, EncoderDecoderModel
from transformers.models.t5.modeling_t5 import T5Stack

from shrinktune.errors import ConfigError
from shrinktune.models.t5_decoder import T5DecoderLM


@dataclass(frozen=True)
class Family:
    """Config keys and module paths of one model family (paths are attribute chains, dot-separated)."""

    width: str  # config key of the model width
    encoder_layers: str  # config key of the encoder depth
    decoder_layers: str  # config key of the decoder depth
    decoder_heads: str  # config key of the decoder's attention heads
    decoder_ffn: str  # config key of the decoder's feed-forward width
    encoder_stack: str  # layer list inside the encoder module (`model.get_encoder()`)
    decoder_stack: str  # layer list inside the decoder module (`model.get_decoder()`, or a bert2bert's `decoder`)
    head_size: str | None = None  # config key fixing the attention head size, where the family has one (T5 d_kv)


_BART_LIKE = Family("d_model", "encoder_layers", "decoder_layers", "decoder_attention_heads", "decoder_ffn_dim",
                    "layers", "layers")
_T5_LIKE = Family("d_model", "num_layers", "num_decoder_layers", "num_heads", "d_ff", "block", "block",
                  head_size="d_kv")
_BERT = Family("hidden_size", "num_hidden_layers", "num_hidden_layers", "num_attention_heads", "intermediate_size",
               "encoder.layer", "bert.encoder.layer")

FAMILIES: dict[str, Family] = {
    "bart": _BART_LIKE, "mbart": _BART_LIKE, "pegasus": _BART_LIKE, "marian": _BART_LIKE,
    "t5": _T5_LIKE, "mt5": _T5_LIKE, "umt5": _T5_LIKE,
    "bert": _BERT, "roberta": replace(_BERT, decoder_stack="roberta.encoder.layer"),
}


def family_of(config) -> Family:
    """The family of a (sub-)config, e.g. `BartConfig` or the `BertConfig` of a bert2bert's encoder."""
    family = FAMILIES.get(config.model_type)
    if family is None:
        raise ConfigError(
            f"model type {config.model_type!r} is not supported; supported: {', '.join(sorted(FAMILIES))} "
            "(or a bert2bert EncoderDecoderModel of those)."
        )
    return family


def half_configs(model) -> tuple:
    """(encoder config, decoder config) of a seq2seq model: the two halves of an `EncoderDecoderModel`, or the one
    config of a BART / T5 / Pegasus model twice."""
    config = model.config
    # students too: their config holds both halves
    if config.model_type == "encoder-decoder" or hasattr(config, "encoder") and hasattr(config, "decoder"):
        return config.encoder, config.decoder
    return config, config


def encoder_module(model) -> nn.Module:
    """The encoder itself: an `EncoderDecoderModel`'s `encoder` (never the bottlenecked view), else `get_encoder()`."""
    return model.encoder if isinstance(model, EncoderDecoderModel) else model.get_encoder()


def decoder_module(model) -> nn.Module:
    """The module holding the decoder's layer stack: a BERT decoder's LM-head model (`BertLMHeadModel`), else the
    bare decoder (`BartDecoder`, T5's decoder `T5Stack`, also inside a latent student's `BartForCausalLM`)."""
    if not isinstance(model, EncoderDecoderModel):
        return model.get_decoder()
    if family_of(model.config.decoder) in (_BERT, FAMILIES["roberta"]):
        return model.decoder
    return model.decoder.get_decoder()


def module_name(model: nn.Module, target: nn.Module) -> str:
    """The dotted name of `target` inside `model` ("" for the model itself)."""
    for name, sub in model.named_modules():
        if sub is target:
            return name
    raise ValueError(f"{type(target).__name__} is not a submodule of {type(model).__name__}")


def layer_prefixes(model) -> tuple[str, str]:
    """State-dict prefixes of the encoder's and the decoder's layer stacks, e.g. ("model.encoder.layers.",
    "model.decoder.layers.") for BART."""
    enc_cfg, dec_cfg = half_configs(model)
    encoder, decoder = encoder_module(model), decoder_module(model)
    enc = ".".join(p for p in (module_name(model, encoder), family_of(enc_cfg).encoder_stack) if p)
    dec = ".".join(p for p in (module_name(model, decoder), family_of(dec_cfg).decoder_stack) if p)
    return enc + ".", dec + "."


def depth(config, side: str) -> int:
    """Layers of the encoder (`side="encoder"`) or decoder described by a half config."""
    family = family_of(config)
    layers = getattr(config, family.encoder_layers if side == "encoder" else family.decoder_layers)
    return config.num_layers if layers is None else layers  # T5: num_decoder_layers None means as deep as the encoder


def with_depth(config, side: str, layers: int):
    """A copy of a half config with the encoder or decoder depth set to `layers`."""
    family = family_of(config)
    out = copy.deepcopy(config)
    setattr(out, family.encoder_layers if side == "encoder" else family.decoder_layers, layers)
    if family is _T5_LIKE and side == "encoder" and out.num_decoder_layers is None:
        out.num_decoder_layers = config.num_layers  # T5 defaults the decoder depth to num_layers
    return out


def attention_heads(width: int, teacher_heads: int, teacher_width: int) -> int:
    """Heads for a decoder of `width`: keep the teacher's head size where it divides the width."""
    head_size = teacher_width // teacher_heads
    if width % head_size == 0:
        return width // head_size
    return max(h for h in range(1, teacher_heads + 1) if width % h == 0)


FFN_RULES = ("teacher", "scaled")


def narrow_decoder_config(config, width: int, layers: int, ffn: str = "teacher"):
    """A stand-alone decoder config at `width` with `layers` layers, causal, with cross-attention, for the family's
    decoder-only class. Heads keep the teacher's head size. The feed-forward width stays the teacher's (`ffn=
    "teacher"`, as Falaki & Gras, who change only d_model: BART-base at 384 → 41M decoder parameters) or shrinks
    with the width (`"scaled"`)."""
    if ffn not in FFN_RULES:
        raise ConfigError(f"decoder_ffn must be one of {', '.join(FFN_RULES)}, got {ffn!r}.")
    family = family_of(config)
    out = copy.deepcopy(config)
    teacher_width, teacher_heads = getattr(config, family.width), getattr(config, family.decoder_heads)
    if family.head_size:
        head = getattr(config, family.head_size)
        if width % head:
            raise ConfigError(f"latent_dim must be a multiple of the teacher's attention head size ({head}), "
                              f"got {width}.")
        heads = width // head
    else:
        heads = attention_heads(width, teacher_heads, teacher_width)
    setattr(out, family.width, width)
    setattr(out, family.decoder_heads, heads)
    if ffn == "scaled":
        setattr(out, family.decoder_ffn, round(getattr(config, family.decoder_ffn) * width / teacher_width))
    setattr(out, family.decoder_layers, layers)
    out.is_decoder, out.add_cross_attention = True, True
    out.is_encoder_decoder = family is _T5_LIKE  # T5's stack then caches cross-attention; causal LMs want False
    if family is _T5_LIKE:
        out.num_layers = layers  # T5's decoder-only stack reads num_layers
    return out


def build_encoder(config) -> nn.Module:
    """An encoder alone, from a half config: BART's `BartEncoder`, T5's encoder `T5Stack`, BERT's `BertModel`."""
    model_type = config.model_type
    if model_type in ("bart", "mbart", "pegasus", "marian"):
        module = importlib.import_module(f"transformers.models.{model_type}.modeling_{model_type}")
        return getattr(module, f"{type(config).__name__.removesuffix('Config')}Encoder")(config)
    if family_of(config) is _T5_LIKE:
        encoder_config = copy.deepcopy(config)
        encoder_config.is_decoder, encoder_config.use_cache = False, False
        return T5Stack(encoder_config)
    return AutoModel.from_config(config)


def build_decoder(config) -> nn.Module:
    """A decoder alone with its LM head, reading encoder states through cross-attention: `BartForCausalLM`,
    `PegasusForCausalLM`, `BertLMHeadModel`, or Shrinktune's `T5DecoderLM` (transformers has no T5 causal LM)."""
    if family_of(config) is _T5_LIKE:
        return T5DecoderLM(config)
    return AutoModelForCausalLM.from_config(config)
