"""Compressed students of any supported seq2seq teacher (BART, mBART, Pegasus, T5 / FLAN-T5, bert2bert).

Two kinds, both ordinary transformers models that `save_pretrained` / `from_pretrained` (safetensors) round-trip
with their recipe in `config.student` (teacher, kept encoder and decoder layers, latent width, bottleneck kind):

- Same width (shrink-and-fine-tune, asymmetric pruning): the teacher's own class with fewer encoder and/or decoder
  layers, the kept layers copied tensor for tensor by the distilbart or asymmetric-pruning maps.
- Narrower decoder (latent space compression, Falaki & Gras): `LatentEncoderDecoderModel`, a transformers
  `EncoderDecoderModel` whose `enc_to_dec_proj` slot — the Linear that transformers inserts when encoder and
  decoder widths differ — holds the encoder half of an autoencoder instead. The bottleneck runs once per input
  inside `get_encoder()`, not at every decoding step, so generation pays for it once. The decoder is new, at the
  latent width, its embeddings the teacher's projected on their top principal directions.

`generate()` works on both with the teacher's generation settings; importing this module registers the latent
students with `AutoConfig` / `AutoModelForSeq2SeqLM`.
"""

from __future__ import annotations

import contextlib
import copy
import logging
from collections.abc import Iterator

import torch
from torch import nn
from transformers import AutoConfig, AutoModelForSeq2SeqLM, EncoderDecoderConfig, EncoderDecoderModel
from transformers.modeling_outputs import BaseModelOutput

from shrinktune.errors import ConfigError
from shrinktune.models.autoencoder import build_bottleneck
from shrinktune.models.families import (
    build_decoder,
    build_encoder,
    decoder_module,
    depth,
    encoder_module,
    family_of,
    half_configs,
    layer_prefixes,
    narrow_decoder_config,
    with_depth,
)
from shrinktune.models.layers import resolve_layers

logger = logging.getLogger(__name__)


class LatentEncoderDecoderConfig(EncoderDecoderConfig):
    """`EncoderDecoderConfig` plus the bottleneck's shape and the recipe the student was built with."""

    model_type = "shrinktune-encoder-decoder"
    bottleneck: dict | None = None  # {"kind": "mlp" | "linear", "widths": [encoder width, ..., latent]}; None = none
    student: dict | None = None  # how it was made: teacher, kept layers, latent width (see `build_student`)
    output_vocab: list[int] | None = None  # the token ids the LM head scores (`shortlist_output`); None = all


# The logit of a token outside an output shortlist: no greedy step picks it, and it adds nothing to a softmax.
OUTSIDE_LOGIT = -1.0e4


class ShortlistHead(nn.Module):
    """An LM head that scores only `ids`, a shortlist of the vocabulary (vocabulary selection, as in Shi & Knight's
    run-time vocabularies for translation): a (len(ids), width) matrix instead of a (vocab, width) one, which at
    batch 1 is what a narrow decoder's step mostly reads. Its logits still span the whole vocabulary, the others
    at `OUTSIDE_LOGIT`, so `generate`, the logits processors and the tokenizer work unchanged; training reads the
    shortlist's logits alone (`shortlist_logits`)."""

    def __init__(self, width: int, ids: list[int], vocab_size: int, bias: bool = True):
        super().__init__()
        if not ids or min(ids) < 0 or max(ids) >= vocab_size or len(set(ids)) != len(ids):
            raise ConfigError(f"an output shortlist needs distinct token ids in [0, {vocab_size}), got {len(ids)} "
                              "ids; build it with shrinktune.data.vocabulary.training_token_ids.")
        self.weight = nn.Parameter(torch.empty(len(ids), width))
        self.bias = nn.Parameter(torch.zeros(len(ids))) if bias else None
        self.register_buffer("ids", torch.tensor(ids, dtype=torch.long))  # saved too: loading builds on meta
        self.ids: torch.Tensor
        self.vocab_size = vocab_size
        self.expand = True  # False: logits over the shortlist only (batch, tgt_len, len(ids))
        nn.init.normal_(self.weight, std=0.02)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        small = nn.functional.linear(hidden, self.weight, self.bias)  # (..., len(ids))
        if not self.expand:
            return small
        out = small.new_full((*small.shape[:-1], self.vocab_size), OUTSIDE_LOGIT)
        return out.index_copy_(-1, self.ids, small)  # (..., vocab)

    def extra_repr(self) -> str:
        return f"width={self.weight.shape[1]}, shortlist={self.weight.shape[0]}, vocab={self.vocab_size}"


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

    The encoder is the teacher family's encoder alone (`BartEncoder`, T5's encoder stack, `BertModel`), the decoder
    that family's decoder with an LM head (`BartForCausalLM`, `T5DecoderLM`, `BertLMHeadModel`) at the latent width.
    Convention: `encoder_outputs` handed to `forward` are already in the decoder's width (what `get_encoder()`
    returns); `encode_latent` maps raw encoder states there, e.g. for training on cached states.
    """

    config_class = LatentEncoderDecoderConfig

    def __init__(self, config, encoder=None, decoder=None):
        # EncoderDecoderModel would build the encoder with AutoModel, which gives a whole BART or T5; build the
        # encoder alone, and a decoder class that exists for every family (transformers has no T5 causal LM).
        super().__init__(
            config,
            encoder=encoder if encoder is not None else build_encoder(config.encoder),
            decoder=decoder if decoder is not None else build_decoder(config.decoder),
        )

    def post_init(self):
        # EncoderDecoderModel.__init__ ends by calling post_init: add the bottleneck first so that weight
        # initialisation and the loading machinery see it as a normal submodule.
        if self.config.bottleneck:
            self.bottleneck = build_bottleneck(self.config.bottleneck)
            self.enc_to_dec_proj = nn.Identity()  # the bottleneck already produced decoder-width states
        else:
            self.bottleneck = None
        if self.config.output_vocab:
            self._install_shortlist(self.config.output_vocab)
        super().post_init()

    def _install_shortlist(self, ids: list[int]) -> ShortlistHead:
        full = self.decoder.get_output_embeddings()
        head = ShortlistHead(full.weight.shape[1], list(ids), full.weight.shape[0], bias=full.bias is not None)
        self.decoder.set_output_embeddings(head)
        predictions = getattr(getattr(self.decoder, "cls", None), "predictions", None)  # BERT's head
        if predictions is not None and predictions.bias is head.bias:
            predictions.bias = None  # an alias saving would drop and loading not restore: the head owns its bias
        return head

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


def build_student(
    teacher,
    *,
    latent_dim: int | None = None,
    decoder_layers: int | list[int] | None = None,
    encoder_layers: int | list[int] | None = None,
    bottleneck: nn.Module | None = None,
    bottleneck_spec: dict | None = None,
    layer_map: str = "distilbart",
    decoder_ffn: str = "teacher",
    teacher_name: str = "",
):
    """Builds a student of a BART / mBART / Pegasus / T5 / bert2bert teacher (the teacher is left untouched).

    Width unchanged (`latent_dim` None or the encoder width): the teacher's class with the kept encoder and decoder
    layers copied weight for weight (shrink-and-fine-tune; asymmetric pruning when encoder layers are dropped).
    Width reduced: a `LatentEncoderDecoderModel` — the teacher's encoder (its kept layers), the bottleneck, and a
    new decoder at `latent_dim` with the teacher's head size and FFN ratio.

    Args:
        teacher: the teacher model.
        latent_dim: width of the decoder and of the bottleneck's output; None keeps the teacher's width.
        decoder_layers: decoder depth (teacher layers chosen by `layer_map`) or the kept teacher layers; None = all.
        encoder_layers: the same for the encoder.
        bottleneck: encoder half of an autoencoder mapping encoder width → `latent_dim` (copied in); required
            exactly when the width is reduced.
        bottleneck_spec: its shape, as `Autoencoder.spec` (`{"kind": ..., "widths": [...]}`).
        layer_map: "distilbart" (Shleifer & Rush) or "asymmetric" (Campos & Zhai) for depths given as numbers.
        decoder_ffn: a narrow decoder's feed-forward width: "teacher" (kept, as the paper) or "scaled" (∝ width).
        teacher_name: recorded in the student's config.
    """
    enc_cfg, dec_cfg = half_configs(teacher)
    width = getattr(enc_cfg, family_of(enc_cfg).width)
    latent_dim = width if latent_dim is None else int(latent_dim)
    if not 0 < latent_dim <= width:
        raise ConfigError(f"latent_dim must be between 1 and the encoder width ({width}), got {latent_dim}; lower it.")
    if (latent_dim < width) != (bottleneck is not None):
        raise ConfigError(
            f"a bottleneck is needed exactly when latent_dim ({latent_dim}) is below the encoder width ({width})."
        )
    if bottleneck is not None and bottleneck_spec is None:
        raise TypeError("build_student: a bottleneck needs its bottleneck_spec (`Autoencoder.spec`).")
    enc_kept = resolve_layers(encoder_layers, depth(enc_cfg, "encoder"), layer_map, "encoder")
    dec_kept = resolve_layers(decoder_layers, depth(dec_cfg, "decoder"), layer_map, "decoder")
    info = {
        "teacher": teacher_name,
        "teacher_type": teacher.config.model_type,
        "latent_dim": latent_dim,
        "encoder_layers": len(enc_kept),
        "decoder_layers": len(dec_kept),
        "kept_encoder_layers": enc_kept,
        "kept_decoder_layers": dec_kept if latent_dim == width else None,
        "decoder_init": "teacher-layers" if latent_dim == width else "fresh+pca-embeddings",
        "bottleneck": bottleneck_spec["kind"] if bottleneck is not None and bottleneck_spec is not None else None,
        "layer_map": layer_map,
        "decoder_ffn": decoder_ffn if latent_dim < width else "teacher",
    }
    if latent_dim == width:
        student = _shallow_student(teacher, enc_kept, dec_kept, info)
    else:
        student = _latent_student(teacher, latent_dim, enc_kept, len(dec_kept), bottleneck, bottleneck_spec, info,
                                  decoder_ffn)
    student.generation_config = copy.deepcopy(teacher.generation_config)
    return student.train(teacher.training)


def _shallow_student(teacher, enc_kept: list[int], dec_kept: list[int], info: dict):
    """The teacher's class with fewer layers, the kept ones copied (distilbart's shrink step)."""
    config = copy.deepcopy(teacher.config)
    enc_cfg, dec_cfg = half_configs(teacher)
    if enc_cfg is dec_cfg:  # BART, T5: one config holds both depths
        config = with_depth(with_depth(config, "encoder", len(enc_kept)), "decoder", len(dec_kept))
    else:
        config.encoder = with_depth(config.encoder, "encoder", len(enc_kept))
        config.decoder = with_depth(config.decoder, "decoder", len(dec_kept))
    config.student = info
    student = type(teacher)(config)
    enc_prefix, dec_prefix = layer_prefixes(teacher)
    state = _keep_layers(_keep_layers(teacher.state_dict(), enc_prefix, enc_kept), dec_prefix, dec_kept)
    _load_filled(student, state, teacher.state_dict())
    return student


def _latent_config(source, encoder_config, decoder_config, bottleneck_spec: dict | None,
                   info: dict | None) -> LatentEncoderDecoderConfig:
    """A `LatentEncoderDecoderConfig` of these halves, with `source`'s (a teacher's or a student's) special tokens."""
    fields = dict(
        encoder=encoder_config.to_dict(),
        decoder=decoder_config.to_dict(),
        bottleneck=bottleneck_spec,
        student=info,
        decoder_start_token_id=source.config.decoder_start_token_id,
        pad_token_id=source.config.pad_token_id,
        eos_token_id=getattr(source.config, "eos_token_id", None),
        vocab_size=decoder_config.vocab_size,
    )
    return LatentEncoderDecoderConfig(**fields)


def _latent_student(teacher, latent_dim, enc_kept, dec_depth, bottleneck, bottleneck_spec, info, decoder_ffn):
    enc_cfg, dec_cfg = half_configs(teacher)
    student_enc = with_depth(enc_cfg, "encoder", len(enc_kept))
    student_enc.is_decoder, student_enc.add_cross_attention = False, False
    if student_enc.model_type in ("t5", "mt5", "umt5"):
        student_enc.use_cache, student_enc.is_encoder_decoder = False, False
    student_dec = narrow_decoder_config(dec_cfg, latent_dim, dec_depth, decoder_ffn)
    student = LatentEncoderDecoderModel(_latent_config(teacher, student_enc, student_dec, bottleneck_spec, info))
    enc_prefix = family_of(enc_cfg).encoder_stack + "."  # the layer stack, relative to the encoder module
    encoder_state = encoder_module(teacher).state_dict()
    _load_filled(student.encoder, _keep_layers(encoder_state, enc_prefix, enc_kept), encoder_state)
    student.bottleneck.load_state_dict(bottleneck.state_dict())
    _init_decoder_embeddings(teacher, student.decoder, latent_dim)
    return student


def shortlist_output(student: EncoderDecoderModel, ids: list[int]) -> LatentEncoderDecoderModel:
    """Gives a student an LM head over `ids` alone (`ShortlistHead`), its rows those of the current head (the
    teacher's word vectors projected to the latent width, for a narrow student `build_student` just made; the
    teacher's own rows for a same-width one). The head is no longer tied to the word embeddings; the shortlist is
    saved in the config, so the checkpoint loads with `from_pretrained` as it is. `LatentEncoderDecoderModel`s
    (narrow decoders) take a shortlist, and same-width bert2bert students (`EncoderDecoderModel`), returned
    re-housed in one without a bottleneck; BART, T5 and Pegasus same-width students keep their class and head.
    Use the returned model."""
    if not takes_shortlist(student):
        raise ConfigError(f"an output shortlist needs a narrow decoder (latent_dim below the encoder width) or a "
                          f"bert2bert student; this {type(student).__name__} student has neither: set output_vocab: "
                          "full for it.")
    if not isinstance(student, LatentEncoderDecoderModel):  # a same-width bert2bert student: its modules re-housed
        student = _rehoused(student)
    ids = sorted(set(int(i) for i in ids))
    full = student.decoder.get_output_embeddings()
    with torch.no_grad():
        weight = full.weight.detach().clone()
        bias = full.bias.detach().clone() if full.bias is not None else None
    student.decoder.config.tie_word_embeddings = False  # the config's decoder half: saved with it
    student.config.tie_word_embeddings = False
    head = student._install_shortlist(ids).to(weight.device)
    with torch.no_grad():
        index = torch.tensor(ids, device=weight.device)
        head.weight.copy_(weight[index])
        if bias is not None and head.bias is not None:
            head.bias.copy_(bias[index])
    student.config.output_vocab = ids
    student.config.student = {**(student.config.student or {}), "output_vocab": len(ids)}
    return student


def takes_shortlist(student) -> bool:
    """Whether `shortlist_output` can give `student` a shortlisted head: a narrow student, or a same-width
    bert2bert one."""
    return isinstance(student, LatentEncoderDecoderModel) or type(student) is EncoderDecoderModel


def _rehoused(student: EncoderDecoderModel) -> LatentEncoderDecoderModel:
    """A same-width `EncoderDecoderModel` student as a `LatentEncoderDecoderModel` without a bottleneck: the same
    encoder and decoder modules (weights shared, not copied), so that it can take an output shortlist and still load
    with `from_pretrained`."""
    enc_cfg, dec_cfg = half_configs(student)
    config = _latent_config(student, enc_cfg, dec_cfg, None, getattr(student.config, "student", None))
    rehoused = LatentEncoderDecoderModel(config, encoder=student.encoder, decoder=student.decoder)
    rehoused.generation_config = copy.deepcopy(student.generation_config)
    return rehoused.train(student.training)


def output_vocab_size(model) -> int:
    """How many token ids a model's logits span (the whole vocabulary, also for a shortlisted head)."""
    head = model.get_output_embeddings()
    return head.vocab_size if isinstance(head, ShortlistHead) else head.weight.shape[0]


@contextlib.contextmanager
def shortlist_logits(model) -> Iterator[torch.Tensor | None]:
    """Inside, a shortlisted model's logits span its shortlist alone (training needs no others); yields the
    shortlist's token ids (position i scores token ids[i]), or None for a model that scores every token."""
    head = model.get_output_embeddings()
    if not isinstance(head, ShortlistHead):
        yield None
        return
    head.expand = False
    try:
        yield head.ids
    finally:
        head.expand = True


def to_shortlist(labels: torch.Tensor, ids: torch.Tensor | None, vocab_size: int) -> torch.Tensor:
    """Labels (token ids, -100 = none) as positions in the shortlist `ids`; a token outside it becomes -100 (not
    trained on: `shortlist_output`'s shortlist holds every token of the training text, so only a pseudo-label's
    rare new token can be). None: the labels as they are."""
    if ids is None:
        return labels
    lookup = torch.full((vocab_size,), -100, dtype=torch.long, device=labels.device)
    lookup[ids.to(labels.device)] = torch.arange(len(ids), device=labels.device)
    return torch.where(labels >= 0, lookup[labels.clamp(min=0)], labels)


def _keep_layers(state: dict, prefix: str, kept: list[int]) -> dict:
    """State dict with the layers under `prefix` reduced to `kept`, renumbered 0..len(kept)-1."""
    out = {}
    for name, tensor in state.items():
        if not name.startswith(prefix):
            out[name] = tensor
            continue
        index, suffix = name[len(prefix):].split(".", 1)
        if int(index) in kept:
            out[f"{prefix}{kept.index(int(index))}.{suffix}"] = tensor
    return out


def _load_filled(target: nn.Module, state: dict, fallback: dict) -> None:
    """Loads `state`; a key the target needs that the kept layers lack (T5's relative position bias lives in
    layer 0 only) is taken from the teacher's tensor of the same name."""
    needed = target.state_dict().keys()
    state = {**{k: fallback[k] for k in needed if k not in state and k in fallback}, **state}
    missing, unexpected = target.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise RuntimeError(f"layer copy left missing={missing} unexpected={unexpected}")


@torch.no_grad()
def _init_decoder_embeddings(teacher, decoder: nn.Module, latent_dim: int) -> None:
    """Projects the teacher decoder's embedding tables (words, positions, and an untied LM head) on the top
    `latent_dim` principal directions of its word vectors."""
    source = decoder_module(teacher)
    words = source.get_input_embeddings().weight.float()  # type: ignore[operator]  # (vocab, d_teacher)
    _, _, v = torch.linalg.svd(words - words.mean(0), full_matrices=False)
    basis = v[:latent_dim].T  # (d_teacher, d_latent)
    targets = {name: m for name, m in decoder.named_modules() if isinstance(m, nn.Embedding)}
    for name, module in source.named_modules():
        if not isinstance(module, nn.Embedding) or module.weight.shape[-1] != words.shape[-1]:
            continue  # e.g. T5's relative position buckets, one number per head
        match = next((m for n, m in targets.items() if n == name or n.endswith("." + name)), None)
        if match is not None and match.weight.shape == (module.weight.shape[0], latent_dim):
            match.weight.copy_(module.weight.float() @ basis)  # (rows, d_teacher) @ (d_teacher, d_latent)
    # get_*_embeddings are transformers methods that mypy, seeing an nn.Module, takes for attribute lookups
    head, student_head = teacher.get_output_embeddings(), decoder.get_output_embeddings()  # type: ignore[operator]
    source_words = source.get_input_embeddings().weight  # type: ignore[operator]
    tied = head is not None and head.weight.data_ptr() == source_words.data_ptr()
    if (head is not None and not tied and student_head is not None
            and student_head.weight.shape == (head.weight.shape[0], latent_dim)):
        student_head.weight.copy_(head.weight.float() @ basis)
