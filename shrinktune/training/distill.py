"""Distilling a teacher into a student on cached encoder states (Shleifer & Rush 2020, "distilbart").

Three methods, chosen by name in `DistillSettings.method` and dispatched once through `METHODS`:

- "sft" (shrink and fine-tune): the student starts from copied teacher layers and trains with cross-entropy on
  the reference summaries.
- "kd" (knowledge distillation): α_ce · KL(teacher ‖ student) at temperature T, times T², + α_mlm · cross-entropy
  on the labels + α_hid · masked MSE between student and teacher decoder hidden states.
- "pseudo_labels": cross-entropy on summaries the teacher generated; `cached_pseudo_labels` makes them once and
  `pseudo_labelled_pairs` swaps them into cached `EncodedPairs` (the encoder states do not change). With extra
  inputs (`shrinktune.data.pseudo_sources`), `extra_pseudo_labelled_pairs` labels and encodes them and
  `concat_pairs` appends them to the relabelled training pairs.

The student reads the cached states through its bottleneck (`encode_latent`); the teacher reads them raw.
"""

from __future__ import annotations

import gzip
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from transformers.modeling_outputs import BaseModelOutput

from shrinktune.data.examples import Example
from shrinktune.errors import ConfigError
from shrinktune.measure.evaluate import generate_summaries  # the one way summaries are generated and decoded
from shrinktune.models.families import depth, family_of, half_configs
from shrinktune.models.student import output_vocab_size, shortlist_logits, to_shortlist
from shrinktune.training.cache import cached_dir, fingerprint
from shrinktune.training.encode import (
    TARGETS_FORMAT,
    EncodedPairs,
    cached_encoded_pairs,
    examples_fingerprint,
    module_fingerprint,
    tokenize_targets,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistillSettings:
    """Which distillation method trains the student, and how KD weighs its terms."""

    method: str = "sft"  # "sft", "kd" or "pseudo_labels" (see METHODS)
    alpha_ce: float = 0.8  # weight of the soft-target KL term (kd)
    alpha_mlm: float = 0.2  # weight of the cross-entropy on the labels (kd)
    alpha_hid: float = 0.0  # weight of the decoder hidden-state MSE (kd); distilbart used 3 on XSum
    temperature: float = 2.0  # softening of both distributions in the KL term (kd)
    normalize_hidden: bool = False  # layer-norm hidden states before the MSE (kd)

    def __post_init__(self):
        if self.method not in METHODS:
            raise ConfigError(f"distillation method must be one of {sorted(METHODS)}, got {self.method!r}.")
        for name in ("alpha_ce", "alpha_mlm", "alpha_hid"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be ≥ 0, got {getattr(self, name)}.")
        if not self.temperature > 0:
            raise ConfigError(f"temperature must be > 0, got {self.temperature}.")
        if self.method == "kd" and self.alpha_ce == self.alpha_mlm == self.alpha_hid == 0:
            raise ConfigError("kd needs at least one of alpha_ce, alpha_mlm, alpha_hid above 0, got all 0; "
                              "raise alpha_ce.")


# ---------------------------------------------------------------------------------------------------- losses


def forward_on_states(model, states, attention_mask, decoder_input_ids, labels, *, hidden_states: bool = False):
    """Runs `model`'s decoder on encoder states already in its cross-attention width (batch, src_len, d)."""
    return model(
        encoder_outputs=BaseModelOutput(last_hidden_state=states),
        attention_mask=attention_mask,
        decoder_input_ids=decoder_input_ids,
        decoder_attention_mask=decoder_mask(labels),
        output_hidden_states=hidden_states,
        use_cache=False,
    )


def decoder_mask(labels: torch.Tensor) -> torch.Tensor:
    """The decoder inputs to attend to: every position up to the last labelled one (batch, tgt_len) of 0/1.

    Not `labels != -100`: a decoder prompt (`[start] challenge:`) is unlabelled yet read, as it is in generation.
    """
    labelled = (labels != -100).long()
    return labelled.flip(-1).cummax(-1).values.flip(-1)


def cross_entropy(logits: torch.Tensor, labels: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    """Mean token cross-entropy of logits (batch, tgt_len, vocab) against labels (batch, tgt_len), -100 ignored."""
    return F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=-100, label_smoothing=label_smoothing)


def kd_logits_loss(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor, temperature: float
) -> torch.Tensor:
    """KL(teacher ‖ student) of the softened distributions, averaged over non-padding positions, times T².

    As distilbart: `KLDivLoss(reduction="batchmean")` over the positions where `labels != -100`; the T² factor
    keeps the gradient's scale independent of the temperature (Hinton et al.).
    """
    keep = labels != -100  # (batch, tgt_len)
    student = student_logits[keep] / temperature  # (positions, vocab)
    teacher = teacher_logits[keep].to(student.dtype) / temperature  # (positions, vocab)
    log_student, log_teacher = F.log_softmax(student, dim=-1), F.log_softmax(teacher, dim=-1)
    kl = F.kl_div(log_student, log_teacher, reduction="batchmean", log_target=True)  # Σ p_t (log p_t − log p_s) / rows
    return kl * temperature**2


# Teacher depth → student depth → teacher layers whose outputs supervise student layers 0, 1, … (distilbart's
# LAYERS_TO_SUPERVISE; the 12 → 4 row is ours, evenly spaced). Index j means "the output of teacher layer j"
# (0-based) — distilbart compared the student's embeddings output with a teacher layer output, an off-by-one we
# do not copy: student layer i's output is matched with teacher layer j's output.
SUPERVISED_LAYERS: dict[int, dict[int, list[int]]] = {
    6: {1: [5], 2: [3, 5], 3: [1, 4, 5], 4: [1, 2, 4, 5]},
    12: {1: [11], 2: [5, 11], 3: [3, 7, 11], 4: [2, 5, 8, 11], 6: [1, 3, 5, 8, 10, 11]},
    16: {1: [15], 4: [4, 9, 12, 15], 8: [1, 3, 5, 7, 9, 11, 13, 15]},
}


def supervised_layers(student_layers: int, teacher_layers: int) -> list[int]:
    """Teacher decoder layers whose outputs supervise the student's decoder layers, one per student layer.

    Published maps where they exist; otherwise evenly spaced, ending at the teacher's last layer.
    """
    if not 1 <= student_layers <= teacher_layers:
        raise ConfigError(
            f"hidden-state supervision needs a student decoder of 1..{teacher_layers} layers (the teacher's depth), "
            f"got {student_layers}; set alpha_hid to 0 or use a shallower student."
        )
    known = SUPERVISED_LAYERS.get(teacher_layers, {}).get(student_layers)
    if known is not None:
        return list(known)
    return [round((i + 1) * teacher_layers / student_layers) - 1 for i in range(student_layers)]


class HiddenProjection(nn.Module):
    """One learned Linear(d_student → d_teacher) per supervised layer; no weights when the widths match.

    It trains alongside the student but belongs to the training run, not to the saved student.
    """

    def __init__(self, student_width: int, teacher_width: int, layers: int):
        super().__init__()
        self.student_width, self.teacher_width = student_width, teacher_width
        same = student_width == teacher_width
        self.maps = nn.ModuleList([] if same else [nn.Linear(student_width, teacher_width) for _ in range(layers)])

    def forward(self, layer: int, states: torch.Tensor) -> torch.Tensor:
        # (batch, tgt_len, d_student) → (batch, tgt_len, d_teacher)
        return states if len(self.maps) == 0 else self.maps[layer](states)


def hidden_state_loss(
    student_hidden: tuple[torch.Tensor, ...],
    teacher_hidden: tuple[torch.Tensor, ...],
    decoder_mask: torch.Tensor,
    layers: list[int],
    *,
    projection: HiddenProjection | None = None,
    normalize: bool = False,
) -> torch.Tensor:
    """Sum over student decoder layers of the masked MSE to their supervising teacher layer.

    Args:
        student_hidden: the student's `decoder_hidden_states`: embeddings output, then one (batch, tgt_len,
            d_student) per layer.
        teacher_hidden: the teacher's, likewise with d_teacher.
        decoder_mask: (batch, tgt_len), 1 = target token, 0 = padding (which adds nothing).
        layers: `supervised_layers(...)`: teacher layer for student layer 0, 1, ….
        projection: maps student width to teacher width; required when they differ.
        normalize: layer-norm both sides over features before comparing.
    """
    mask = decoder_mask.to(student_hidden[-1].dtype).unsqueeze(-1)  # (batch, tgt_len, 1)
    total = student_hidden[-1].new_zeros(())
    for i, j in enumerate(layers):
        student = student_hidden[i + 1]  # (batch, tgt_len, d_student); index 0 is the embeddings output
        teacher = teacher_hidden[j + 1].to(student.dtype)  # (batch, tgt_len, d_teacher)
        if projection is not None:
            student = projection(i, student)  # (batch, tgt_len, d_teacher)
        if student.shape[-1] != teacher.shape[-1]:
            raise ValueError(
                f"student width {student.shape[-1]} ≠ teacher width {teacher.shape[-1]}: pass a HiddenProjection"
            )
        if normalize:
            student, teacher = F.layer_norm(student, student.shape[-1:]), F.layer_norm(teacher, teacher.shape[-1:])
        squared = (student - teacher).pow(2) * mask  # (batch, tgt_len, d_teacher), zero on padding
        total = total + squared.sum() / (mask.sum() * teacher.shape[-1]).clamp_min(1)
    return total


def distillation_loss(
    student_out,
    teacher_out,
    labels: torch.Tensor,
    settings: DistillSettings,
    projection: HiddenProjection | None = None,
    *,
    label_smoothing: float = 0.0,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """α_ce · KD + α_mlm · CE(labels) + α_hid · hidden-state MSE; terms with weight 0 are not computed.

    Only decoder hidden states are compared: the encoder is frozen and shared by teacher and student, so an
    encoder hidden-state loss (which distilbart also had) would be a constant with no gradient.

    Returns:
        The loss, and its unweighted parts (detached) by name: "kd", "ce", "hidden".
    """
    parts: dict[str, torch.Tensor] = {}
    loss = student_out.logits.new_zeros(())
    if settings.alpha_ce > 0:
        kd = kd_logits_loss(student_out.logits, teacher_out.logits, labels, settings.temperature)
        loss, parts["kd"] = loss + settings.alpha_ce * kd, kd.detach()
    if settings.alpha_mlm > 0:
        ce = cross_entropy(student_out.logits, labels, label_smoothing)
        loss, parts["ce"] = loss + settings.alpha_mlm * ce, ce.detach()
    if settings.alpha_hid > 0:
        student_layers = len(student_out.decoder_hidden_states) - 1
        layers = supervised_layers(student_layers, len(teacher_out.decoder_hidden_states) - 1)
        hidden = hidden_state_loss(
            student_out.decoder_hidden_states, teacher_out.decoder_hidden_states, labels != -100, layers,
            projection=projection, normalize=settings.normalize_hidden,
        )
        loss, parts["hidden"] = loss + settings.alpha_hid * hidden, hidden.detach()
    return loss, parts


# ---------------------------------------------------------------------------------------------------- methods


@dataclass
class Batch:
    """One training batch: raw states for the teacher, decoder-width states for the student."""

    raw_states: torch.Tensor  # (batch, src_len, d_encoder), on the CPU; the teacher moves it to its device
    states: torch.Tensor  # (batch, src_len, d_student_decoder), on the student's device
    attention_mask: torch.Tensor  # (batch, src_len)
    decoder_input_ids: torch.Tensor  # (batch, tgt_len)
    labels: torch.Tensor  # (batch, tgt_len), -100 = padding


def seq2seq_loss(model, states, attention_mask, decoder_input_ids, labels,
                 label_smoothing: float = 0.0) -> torch.Tensor:
    """Mean token cross-entropy of `model` reading decoder-width `states` (batch, src_len, d_decoder). A shortlisted
    head (`ShortlistHead`) trains on its shortlist's logits alone: the same loss as over the whole vocabulary (the
    other tokens' logits are `OUTSIDE_LOGIT`, nothing in the softmax), without the (batch, tgt_len, vocab) tensors;
    a label outside the shortlist is not trained on (`to_shortlist`)."""
    with shortlist_logits(model) as ids:
        logits = forward_on_states(model, states, attention_mask, decoder_input_ids, labels).logits
    return cross_entropy(logits, to_shortlist(labels, ids, output_vocab_size(model)), label_smoothing)


def _ce_batch_loss(student, teacher, batch: Batch, settings: DistillSettings, projection, label_smoothing: float):
    ce = seq2seq_loss(student, batch.states, batch.attention_mask, batch.decoder_input_ids, batch.labels,
                      label_smoothing)
    return ce, {"ce": ce.detach()}


def _kd_batch_loss(student, teacher, batch: Batch, settings: DistillSettings, projection, label_smoothing: float):
    hidden = settings.alpha_hid > 0
    device, teacher_device = batch.states.device, next(teacher.parameters()).device
    with torch.no_grad():
        teacher_out = forward_on_states(
            teacher, batch.raw_states.to(teacher_device), batch.attention_mask.to(teacher_device),
            batch.decoder_input_ids.to(teacher_device), batch.labels.to(teacher_device), hidden_states=hidden,
        )
        if teacher_device != device:
            teacher_out.logits = teacher_out.logits.to(device)
            if hidden:
                teacher_out.decoder_hidden_states = tuple(h.to(device) for h in teacher_out.decoder_hidden_states)
    with shortlist_logits(student) as ids:
        student_out = forward_on_states(
            student, batch.states, batch.attention_mask, batch.decoder_input_ids, batch.labels, hidden_states=hidden
        )
    labels = batch.labels
    if ids is not None:  # both distributions over the student's shortlist, renormalised there
        teacher_out.logits = teacher_out.logits[..., ids.to(teacher_out.logits.device)]
        labels = to_shortlist(labels, ids, output_vocab_size(student))
    return distillation_loss(student_out, teacher_out, labels, settings, projection,
                             label_smoothing=label_smoothing)


@dataclass(frozen=True)
class Method:
    """What a distillation method needs and how it scores a batch."""

    # (student, teacher, batch, settings, projection, label_smoothing) → (loss, detached parts by name)
    batch_loss: Callable[..., tuple[torch.Tensor, dict[str, torch.Tensor]]]
    needs_teacher: bool  # runs the teacher during training
    about: str  # one line for people


METHODS: dict[str, Method] = {
    "sft": Method(_ce_batch_loss, False, "cross-entropy on the reference summaries"),
    "kd": Method(_kd_batch_loss, True, "soft-target KL + cross-entropy + hidden-state MSE against a frozen teacher"),
    "pseudo_labels": Method(_ce_batch_loss, False, "cross-entropy on teacher-generated summaries (relabelled pairs)"),
}


def _vocab_size(model) -> int:
    head = model.get_output_embeddings()  # (vocab, d) LM head; its rows are what the logits range over
    return output_vocab_size(model) if head is not None else half_configs(model)[1].vocab_size


def _decoder_shape(model) -> tuple[int, int]:
    """(decoder depth, decoder width) of any family `shrinktune.models.families` knows."""
    _, config = half_configs(model)
    return depth(config, "decoder"), getattr(config, family_of(config).width)


def prepare_distillation(
    student, teacher, settings: DistillSettings, own_teacher_states: bool = False
) -> HiddenProjection | None:
    """Checks that `teacher` suits the method; returns the hidden-state projection to train, if the loss has one.

    `own_teacher_states`: the teacher gets its own encoder states, so the student's encoder may differ."""
    method = METHODS[settings.method]
    if not method.needs_teacher:
        if teacher is not None:
            logger.info("method %r does not run the teacher during training; ignoring it", settings.method)
        return None
    if teacher is None:
        raise ConfigError(f"method {settings.method!r} needs a teacher, got none; pass teacher= to finetune_on_states.")
    student_vocab, teacher_vocab = _vocab_size(student), _vocab_size(teacher)
    if student_vocab != teacher_vocab:
        raise ConfigError(
            f"KD needs a teacher with the student's vocabulary (student {student_vocab}, teacher {teacher_vocab}); "
            "use the teacher the student was built from, or method 'pseudo_labels'."
        )
    (student_encoder, _), (teacher_encoder, _) = half_configs(student), half_configs(teacher)
    if not own_teacher_states and depth(student_encoder, "encoder") != depth(teacher_encoder, "encoder"):
        # One set of cached states feeds both; states of a pruned student encoder would mislead the teacher.
        raise ConfigError(
            f"KD reads the teacher's cached encoder states, so the student must keep the teacher's encoder "
            f"(student {depth(student_encoder, 'encoder')} encoder layers, "
            f"teacher {depth(teacher_encoder, 'encoder')}); "
            "keep all encoder layers, pass the teacher's states as teacher_pairs, or use method 'sft'."
        )
    teacher.eval()
    if settings.alpha_hid == 0:
        return None
    (student_depth, student_width), (teacher_depth, teacher_width) = _decoder_shape(student), _decoder_shape(teacher)
    layers = supervised_layers(student_depth, teacher_depth)
    logger.info("hidden-state supervision: student decoder layers → teacher layers %s", layers)
    return HiddenProjection(student_width, teacher_width, len(layers))


# ---------------------------------------------------------------------------------------------------- pseudo-labels


def generate_pseudo_labels(
    teacher, tokenizer, examples: list[Example], *, max_source_tokens: int, batch_size: int = 16
) -> list[Example]:
    """The examples with their `summary` replaced by the teacher's generation (under its own `generation_config`)."""
    summaries = generate_summaries(teacher, tokenizer, examples, max_source_tokens=max_source_tokens,
                                   batch_size=batch_size)
    return [replace(e, summary=s) for e, s in zip(examples, summaries)]


# The embedded teacher's pseudo-labels of the embedded task's training papers and windows, under the shipped spaces'
# decoding, keyed as `cached_pseudo_labels` keys them: a first run unpacks them instead of generating (minutes on a
# laptop). Written by `python -m platform.ship_labels CACHE` from a search's cache.
SHIPPED_LABELS = Path(__file__).resolve().parents[1] / "assets" / "pseudo_labels.json.gz"


def shipped_pseudo_labels(key: str, ids: list[str], path: Path | None = None) -> list[dict] | None:
    """The shipped rows ({id, summary}) of the pseudo-labels keyed `key`, if shipped and for exactly `ids`."""
    path = SHIPPED_LABELS if path is None else path
    if not path.exists():
        return None
    with gzip.open(path, "rt", encoding="utf-8") as file:
        rows = json.load(file).get(key)
    return rows if rows is not None and [row["id"] for row in rows] == ids else None


def ship_pseudo_labels(cache_root: Path, path: Path | None = None) -> dict[str, int]:
    """Writes every pseudo-label set cached under `cache_root` (a search of the embedded teacher) to the shipped
    file, keyed as cached; returns key → rows."""
    path = SHIPPED_LABELS if path is None else path
    table = {folder.name: json.loads((folder / "pseudo_labels.json").read_text())
             for folder in sorted((Path(cache_root) / "pseudo-labels").glob("*"))
             if (folder / "pseudo_labels.json").is_file()}
    if not table:
        raise ConfigError(f"no pseudo-labels cached under {cache_root}; run a search with method: pseudo_labels "
                          "using that cache first (--cache-dir).")
    with gzip.open(path, "wt", encoding="utf-8") as file:
        json.dump(table, file, ensure_ascii=False)
    return {key: len(rows) for key, rows in table.items()}


def cached_pseudo_labels(
    teacher, tokenizer, examples: list[Example], *, max_source_tokens: int, batch_size: int = 16,
    root: Path | None = None,
) -> list[Example]:
    """`generate_pseudo_labels`, computed once per (teacher weights, examples, generation config, source length)."""
    generation = teacher.generation_config.to_dict()
    generation.pop("transformers_version", None)  # a library upgrade alone does not change the generations
    key = fingerprint(
        "pseudo-labels", module_fingerprint(teacher), examples_fingerprint(examples), generation, max_source_tokens,
        tokenizer.name_or_path and len(tokenizer),
    )

    def produce(folder: Path) -> None:
        rows = shipped_pseudo_labels(key, [e.id for e in examples])
        if rows is not None:
            logger.info("unpacking the shipped pseudo-labels of %d documents (%s)", len(rows), SHIPPED_LABELS.name)
        else:
            logger.info("generating pseudo-labels for %d documents with the teacher (once; cached)", len(examples))
            labelled = generate_pseudo_labels(
                teacher, tokenizer, examples, max_source_tokens=max_source_tokens, batch_size=batch_size
            )
            rows = [{"id": e.id, "summary": e.summary} for e in labelled]
        (folder / "pseudo_labels.json").write_text(json.dumps(rows, ensure_ascii=False, indent=1))

    rows = json.loads((cached_dir("pseudo-labels", key, produce, root) / "pseudo_labels.json").read_text())
    return [replace(e, summary=row["summary"]) for e, row in zip(examples, rows)]


def pseudo_labelled_pairs(
    pairs: EncodedPairs, tokenizer, pseudo_examples: list[Example], *, max_target_tokens: int, start_id: int
) -> EncodedPairs:
    """The same cached encoder states, with targets re-tokenised from `pseudo_examples` (row-aligned with `pairs`)."""
    if len(pseudo_examples) != len(pairs):
        raise ValueError(f"{len(pseudo_examples)} pseudo-labelled examples for {len(pairs)} pairs; "
                         "they must be row-aligned")
    summaries = [e.summary for e in pseudo_examples]
    prompts = [e.prompt for e in pseudo_examples]
    labels, decoder_input_ids = tokenize_targets(tokenizer, summaries, max_target_tokens, start_id, prompts)
    key = ""
    if pairs.key:
        key = fingerprint(pairs.key, "pseudo-labels", TARGETS_FORMAT, examples_fingerprint(pseudo_examples),
                          max_target_tokens, start_id)
    return EncodedPairs(pairs.states, pairs.attention_mask, labels, decoder_input_ids, key=key)


def extra_pseudo_labelled_pairs(
    teacher, encoder, tokenizer, extra: list[Example], *, max_source_tokens: int, max_target_tokens: int,
    start_id: int, root: Path | None = None,
) -> EncodedPairs:
    """Extra inputs with the teacher's summaries as targets, read by `encoder` (the student's), both cached.

    The summaries are always the teacher's generations; the states are the student's encoder's, which is the
    teacher's unless the student drops encoder layers.
    """
    labelled = cached_pseudo_labels(teacher, tokenizer, extra, max_source_tokens=max_source_tokens, root=root)
    return cached_encoded_pairs(encoder, tokenizer, labelled, max_source_tokens=max_source_tokens,
                                max_target_tokens=max_target_tokens, start_id=start_id, root=root)


def concat_pairs(first: EncodedPairs, second: EncodedPairs, *, pad_id: int) -> EncodedPairs:
    """The rows of `first`, then those of `second`, padded to the longer source and target.

    `pad_id` pads decoder inputs (as `tokenize_targets` does); states pad with zeros under a 0 attention mask, labels
    with -100.
    """
    if first.states.shape[-1] != second.states.shape[-1]:
        raise ValueError(f"encoder widths differ ({first.states.shape[-1]} vs {second.states.shape[-1]}); "
                         "concatenate pairs encoded by the same encoder")
    src_len = max(first.states.shape[1], second.states.shape[1])
    tgt_len = max(first.labels.shape[1], second.labels.shape[1])

    def widen(tensor: torch.Tensor, length: int, value: float) -> torch.Tensor:
        # (n, len, ...) → (n, length, ...), padding at the end of dimension 1
        pad = [0, 0] * (tensor.dim() - 2) + [0, length - tensor.shape[1]]
        return F.pad(tensor, pad, value=value)

    key = fingerprint(first.key, second.key, "concat") if first.key and second.key else ""
    return EncodedPairs(
        torch.cat([widen(first.states, src_len, 0.0), widen(second.states, src_len, 0.0)]),  # (n1+n2, src_len, d)
        torch.cat([widen(first.attention_mask, src_len, 0), widen(second.attention_mask, src_len, 0)]),
        torch.cat([widen(first.labels, tgt_len, -100), widen(second.labels, tgt_len, -100)]),
        torch.cat([widen(first.decoder_input_ids, tgt_len, pad_id), widen(second.decoder_input_ids, tgt_len, pad_id)]),
        key=key,
    )
