"""Compressed students: the teacher's encoder, an optional latent bottleneck, and a narrower or shallower decoder.

`LatentEncoderDecoderModel` is a transformers `EncoderDecoderModel` whose `enc_to_dec_proj` slot — the Linear that
transformers inserts when encoder and decoder widths differ — holds the encoder half of a pre-trained autoencoder
instead (Falaki & Gras). The bottleneck runs once per input inside `get_encoder()`, not at every decoding step, so
generation pays for it once. Students are ordinary transformers models: `save_pretrained` / `from_pretrained`
(safetensors) round-trip them with their recipe in `config.student`, `generate()` works, and importing this module
registers them with `AutoConfig` / `AutoModelForSeq2SeqLM`.
"""

from __future__ import annotations

import copy
import logging

import torch
from torch import nn
from transformers import AutoConfig, AutoModelForSeq2SeqLM, EncoderDecoderConfig, EncoderDecoderModel
from transformers.modeling_outputs import BaseModelOutput

from shrinktune.errors import ConfigError
from shrinktune.models.autoencoder import build_bottleneck
from shrinktune.models.layers import layers_to_keep

logger = logging.getLogger(__name__)


class LatentEncoderDecoderConfig(EncoderDecoderConfig):
    """`EncoderDecoderConfig` plus the bottleneck's shape and the recipe the student was built with."""

    model_type = "shrinktune-encoder-decoder"
    bottleneck: dict | None = None  # {"kind": "mlp" | "linear", "widths": [encoder width, ..., latent]}; None = none
    student: dict | None = None  # how it was made: teacher, kept layers, latent width (for people and trackers)


class _BottleneckedEncoder(nn.Module):
    """Encoder followed by the bottleneck, shaped like an encoder for `generate()`; owns no weights of its own."""

    main_input_name = "input_ids"

    def __init__(self, encoder: nn.Module, bottleneck: nn.Module):
        super().__init__()
        self.inner, self.bottleneck = encoder, bottleneck
        self.config = encoder.config

    def forward(self, input_ids=None, attention_mask=None, **kwargs) -> BaseModelOutput:
        out = self.inner(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
        latent = self.bottleneck(out.last_hidden_state)  # (batch, src_len, d_latent)
        return BaseModelOutput(last_hidden_state=latent, hidden_states=out.hidden_states, attentions=out.attentions)


class LatentEncoderDecoderModel(EncoderDecoderModel):
    """An encoder-decoder whose encoder output passes through a latent bottleneck before cross-attention.

    Convention: `encoder_outputs` handed to `forward` are already in the decoder's width (what `get_encoder()`
    returns); `encode_latent` maps raw encoder states there, e.g. for training on cached states.
    """

    config_class = LatentEncoderDecoderConfig

    def post_init(self):
        # EncoderDecoderModel.__init__ ends by calling post_init: add the bottleneck first so that weight
        # initialisation and the loading machinery see it as a normal submodule.
        if self.config.bottleneck:
            self.bottleneck = build_bottleneck(self.config.bottleneck)
            self.enc_to_dec_proj = nn.Identity()  # the bottleneck already produced decoder-width states
        else:
            self.bottleneck = None
        super().post_init()

    def get_encoder(self, modality=None):
        if self.bottleneck is None:
            return self.encoder
        return _BottleneckedEncoder(self.encoder, self.bottleneck)

    def encode_latent(self, states: torch.Tensor) -> torch.Tensor:
        """Raw encoder states (batch, src_len, d_encoder) → what cross-attention reads (batch, src_len, d_decoder)."""
        return states if self.bottleneck is None else self.bottleneck(states)

    def forward(self, input_ids=None, attention_mask=None, encoder_outputs=None, inputs_embeds=None, **kwargs):
        if encoder_outputs is None and self.bottleneck is not None:
            encoder_outputs = self.get_encoder()(
                input_ids=input_ids, attention_mask=attention_mask, inputs_embeds=inputs_embeds, return_dict=True
            )
        return super().forward(
            input_ids=input_ids,
            attention_mask=attention_mask,
            encoder_outputs=encoder_outputs,
            inputs_embeds=inputs_embeds,
            **kwargs,
        )


AutoConfig.register(LatentEncoderDecoderConfig.model_type, LatentEncoderDecoderConfig, exist_ok=True)
AutoModelForSeq2SeqLM.register(LatentEncoderDecoderConfig, LatentEncoderDecoderModel, exist_ok=True)


def attention_heads(width: int, teacher_heads: int, teacher_width: int) -> int:
    """Heads for a decoder of `width`: keep the teacher's head size where it divides the width."""
    head_size = teacher_width // teacher_heads
    if width % head_size == 0:
        return width // head_size
    return max(h for h in range(1, teacher_heads + 1) if width % h == 0)


def _project_embeddings(weight: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
    return weight @ basis  # (rows, d_teacher) @ (d_teacher, d_latent) → (rows, d_latent)


def build_student(
    teacher: EncoderDecoderModel,
    *,
    latent_dim: int,
    decoder_layers: int,
    bottleneck: nn.Module | None = None,
    bottleneck_spec: dict | None = None,
    teacher_name: str = "",
) -> LatentEncoderDecoderModel:
    """Builds a student from a bert2bert-style teacher.

    Width unchanged (`latent_dim` = encoder width): the decoder keeps `decoder_layers` teacher layers chosen by
    the distilbart maps, copied weight for weight (shrink-and-fine-tune). Width reduced: the decoder is new, at
    `latent_dim` with the teacher's head size and FFN ratio; its embeddings start as the teacher's projected on
    their top principal directions, everything else at random. The encoder is the teacher's, copied.

    Args:
        teacher: the teacher model (left untouched).
        latent_dim: width of the decoder and of the bottleneck's output.
        decoder_layers: depth of the student's decoder.
        bottleneck: trained encoder half of an autoencoder mapping encoder width → `latent_dim` (copied in).
        bottleneck_spec: its shape, as `Autoencoder.spec`; required with `bottleneck`.
        teacher_name: recorded in the student's config.
    """
    enc_cfg, dec_cfg = teacher.config.encoder, teacher.config.decoder
    width, depth = enc_cfg.hidden_size, dec_cfg.num_hidden_layers
    if not 0 < latent_dim <= width:
        raise ConfigError(f"latent_dim must be between 1 and the encoder width ({width}), got {latent_dim}.")
    kept = layers_to_keep(decoder_layers, depth)
    if (latent_dim < width) != (bottleneck is not None):
        raise ConfigError(
            f"a bottleneck is needed exactly when latent_dim ({latent_dim}) is below the encoder width ({width})."
        )

    student_dec = copy.deepcopy(dec_cfg)
    student_dec.num_hidden_layers = decoder_layers
    if latent_dim < width:
        student_dec.hidden_size = latent_dim
        student_dec.num_attention_heads = attention_heads(latent_dim, dec_cfg.num_attention_heads, dec_cfg.hidden_size)
        student_dec.intermediate_size = round(dec_cfg.intermediate_size * latent_dim / dec_cfg.hidden_size)
    config = LatentEncoderDecoderConfig(
        encoder=enc_cfg.to_dict(),
        decoder=student_dec.to_dict(),
        bottleneck=bottleneck_spec if bottleneck is not None else None,
        student={
            "teacher": teacher_name,
            "latent_dim": latent_dim,
            "decoder_layers": decoder_layers,
            "kept_decoder_layers": kept if latent_dim == width else None,
            "decoder_init": "teacher-layers" if latent_dim == width else "fresh+pca-embeddings",
            "bottleneck": bottleneck_spec["kind"] if bottleneck is not None else None,
        },
        decoder_start_token_id=teacher.config.decoder_start_token_id,
        pad_token_id=teacher.config.pad_token_id,
    )
    student = LatentEncoderDecoderModel(config)
    student.encoder.load_state_dict(teacher.encoder.state_dict())
    if bottleneck is not None:
        student.bottleneck.load_state_dict(bottleneck.state_dict())
    if latent_dim == width:
        _copy_decoder_layers(teacher.decoder, student.decoder, kept)
    else:
        _init_decoder_embeddings(teacher.decoder, student.decoder, latent_dim)
    student.generation_config = copy.deepcopy(teacher.generation_config)
    return student


def _copy_decoder_layers(source: nn.Module, target: nn.Module, kept: list[int]) -> None:
    """Copies everything but the layer stack, then teacher layer kept[i] into student layer i."""
    state = source.state_dict()
    layer_key = ".encoder.layer."  # BERT decoders keep their blocks at bert.encoder.layer.<i>
    out = {}
    for name, tensor in state.items():
        if layer_key not in name:
            out[name] = tensor
            continue
        prefix, rest = name.split(layer_key, 1)
        index, suffix = rest.split(".", 1)
        if int(index) in kept:
            out[f"{prefix}{layer_key}{kept.index(int(index))}.{suffix}"] = tensor
    missing, unexpected = target.load_state_dict(out, strict=False)
    if missing or unexpected:
        raise RuntimeError(f"decoder layer copy left missing={missing} unexpected={unexpected}")


@torch.no_grad()
def _init_decoder_embeddings(source: nn.Module, target: nn.Module, latent_dim: int) -> None:
    """Projects the teacher decoder's embeddings on the top `latent_dim` principal directions of its word vectors."""
    src, dst = source.get_input_embeddings(), target.get_input_embeddings()
    words = src.weight.float()  # (vocab, d_teacher)
    _, _, v = torch.linalg.svd(words - words.mean(0), full_matrices=False)
    basis = v[:latent_dim].T  # (d_teacher, d_latent)
    dst.weight.copy_(_project_embeddings(words, basis))
    src_emb, dst_emb = source.base_model.embeddings, target.base_model.embeddings
    for name in ("position_embeddings", "token_type_embeddings"):
        if hasattr(src_emb, name) and hasattr(dst_emb, name):
            getattr(dst_emb, name).weight.copy_(_project_embeddings(getattr(src_emb, name).weight.float(), basis))
