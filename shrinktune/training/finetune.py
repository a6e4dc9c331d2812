"""Fine-tuning what sits after a frozen encoder, on its cached states.

The teacher's encoder is frozen for the teacher and every student alike, so training reads `EncodedPairs` and
never runs the encoder: the decoder (and, if asked, the bottleneck) learns from teacher forcing, with token-level
cross-entropy or, given `DistillSettings(method="kd")` and a teacher, the distillation loss of
`shrinktune.training.distill`. A NaN loss stops training with `FloatingPointError`, which a search records as a
failed trial.
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from shrinktune.errors import ConfigError
from shrinktune.models.families import encoder_module
from shrinktune.models.precision import autocast, grad_scaler
from shrinktune.training.distill import (
    METHODS,
    Batch,
    DistillSettings,
    prepare_distillation,
    seq2seq_loss,
)
from shrinktune.training.encode import EncodedPairs, used_width

logger = logging.getLogger(__name__)


BATCHINGS = ("random", "by_length")
GROUP_BATCHES = 16  # "by_length": batches per group sorted by length (transformers' group_by_length uses 50)


def batch_rows(lengths: torch.Tensor, batch_size: int, batching: str, generator: torch.Generator) -> list:
    """One epoch's batches (row indices). "random": consecutive slices of a random permutation. "by_length": the
    permutation cut into groups of `GROUP_BATCHES` batches, each group sorted by input length and sliced, then the
    batches shuffled — every batch holds inputs of similar length, so it pads (and computes) little beyond them."""
    order = torch.randperm(len(lengths), generator=generator)
    if batching == "random":
        return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    batches = []
    group = batch_size * GROUP_BATCHES
    for start in range(0, len(order), group):
        rows = order[start : start + group]
        rows = rows[torch.argsort(lengths[rows], descending=True, stable=True)]
        batches += [rows[i : i + batch_size] for i in range(0, len(rows), batch_size)]
    return [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]


@dataclass(frozen=True)
class FinetuneSettings:
    """How a decoder is fine-tuned on cached encoder states."""

    epochs: int = 3  # passes over the training pairs
    learning_rate: float = 1e-4  # AdamW peak learning rate (linear decay to 0)
    batch_size: int = 16  # pairs per step
    weight_decay: float = 0.01  # AdamW weight decay
    label_smoothing: float = 0.0  # cross-entropy label smoothing
    max_grad_norm: float = 1.0  # gradient clipping
    seed: int = 0  # shuffling and dropout
    dtype: str = "fp32"  # forward passes under autocast in this precision ("bf16", "fp16": GPUs only)
    batching: str = "random"  # "random" | "by_length": batches of inputs of similar length (`batch_rows`)

    def __post_init__(self):
        if self.epochs < 1:
            raise ConfigError(f"epochs must be ≥ 1, got {self.epochs}.")
        if not self.learning_rate > 0:
            raise ConfigError(f"learning_rate must be > 0, got {self.learning_rate}.")
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be ≥ 1, got {self.batch_size}.")
        if self.batching not in BATCHINGS:
            raise ConfigError(f"batching must be one of {', '.join(BATCHINGS)}, got {self.batching!r}.")


def trainable_parameters(model: torch.nn.Module, train_bottleneck: bool) -> list[torch.nn.Parameter]:
    """Freezes the encoder (and the bottleneck unless `train_bottleneck`); returns what remains trainable."""
    for p in encoder_module(model).parameters():
        p.requires_grad_(False)  # BART and T5 share these word embeddings with the decoder: frozen too (as distilbart)
    bottleneck = getattr(model, "bottleneck", None)
    if bottleneck is not None:
        for p in bottleneck.parameters():
            p.requires_grad_(train_bottleneck)
    return [p for p in model.parameters() if p.requires_grad]


def make_optimizer(params, settings: FinetuneSettings, total_steps: int):
    optimizer = torch.optim.AdamW(params, lr=settings.learning_rate, weight_decay=settings.weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: max(0.0, 1 - step / max(1, total_steps)))
    return optimizer, schedule


def finetune_on_states(
    model: torch.nn.Module,
    pairs: EncodedPairs,
    settings: FinetuneSettings,
    *,
    train_bottleneck: bool = False,
    on_epoch: Callable[[int, float], None] | None = None,
    teacher: torch.nn.Module | None = None,
    distill: DistillSettings | None = None,
    teacher_pairs: EncodedPairs | None = None,
) -> list[float]:
    """Trains `model`'s decoder on cached encoder states.

    Args:
        model: an encoder-decoder; `model.encode_latent` (students) maps raw states to the decoder's width.
        pairs: cached encoder states and tokenised summaries (for "pseudo_labels", already relabelled with
            `distill.pseudo_labelled_pairs`).
        settings: optimisation settings.
        train_bottleneck: also train the bottleneck (otherwise it stays frozen, in eval mode).
        on_epoch: called with (epoch, mean loss) after each epoch, e.g. to report progress.
        teacher: the frozen teacher that "kd" runs on the raw states (never trained; left in eval mode).
        distill: the distillation method and its loss weights; `None` means plain cross-entropy ("sft").
        teacher_pairs: the teacher's own encoder states of the same documents, row-aligned with `pairs`, when the
            student's encoder differs from the teacher's (dropped layers); `None` = the teacher reads `pairs`.

    Returns:
        The mean training loss of each epoch (for "kd", the weighted distillation loss).

    Raises:
        ConfigError: "kd" without a teacher, or with a teacher of another vocabulary.
    """
    distill = distill or DistillSettings()
    method = METHODS[distill.method]
    torch.manual_seed(settings.seed)
    projection = prepare_distillation(model, teacher, distill, own_teacher_states=teacher_pairs is not None)
    raw_states = (teacher_pairs or pairs).states  # what the teacher reads
    params = trainable_parameters(model, train_bottleneck)
    device = next(model.parameters()).device
    if projection is not None:
        projection.to(device).train()
        params += list(projection.parameters())
    encode_latent = getattr(model, "encode_latent", lambda s: s)
    states = pairs.states  # stays on the CPU; batches move to the model's device
    if not train_bottleneck:
        model.eval()
        states = latent_states(model, pairs.states, settings.batch_size)  # (n, src_len, d_decoder), computed once
        encode_latent = lambda s: s  # noqa: E731
    steps_per_epoch = math.ceil(len(pairs) / settings.batch_size)
    optimizer, schedule = make_optimizer(params, settings, steps_per_epoch * settings.epochs)
    scaler = grad_scaler(settings.dtype, device)
    generator = torch.Generator().manual_seed(settings.seed)
    lengths = pairs.attention_mask.sum(1)
    history = []
    for epoch in range(1, settings.epochs + 1):
        model.train()
        encoder_module(model).eval()
        bottleneck = getattr(model, "bottleneck", None)
        if bottleneck is not None and not train_bottleneck:
            bottleneck.eval()
        total, count = 0.0, 0
        part_sums: dict[str, torch.Tensor] = {}
        for step, rows in enumerate(batch_rows(lengths, settings.batch_size, settings.batching, generator)):
            source, target = used_width(pairs.attention_mask[rows]), used_width(pairs.labels[rows] != -100)
            batch = Batch(
                raw_states=raw_states[rows, :source],
                states=encode_latent(states[rows, :source].to(device)),
                attention_mask=pairs.attention_mask[rows, :source].to(device),
                decoder_input_ids=pairs.decoder_input_ids[rows, :target].to(device),
                labels=pairs.labels[rows, :target].to(device),
            )
            with autocast(settings.dtype, device):
                loss, parts = method.batch_loss(model, teacher, batch, distill, projection, settings.label_smoothing)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"training loss became {loss.item()} at epoch {epoch}, step {step}")
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(params, settings.max_grad_norm)
            scaler.step(optimizer)
            scaler.update()
            schedule.step()
            total, count = total + loss.item() * len(rows), count + len(rows)
            for name, value in parts.items():
                part_sums[name] = part_sums.get(name, 0.0) + value * len(rows)
        history.append(total / count)
        parts_text = " ".join(f"{name} {float(value) / count:.4f}" for name, value in part_sums.items())
        logger.info("epoch %d/%d (%s): loss %.4f (%s)", epoch, settings.epochs, distill.method, history[-1], parts_text)
        if on_epoch is not None:
            on_epoch(epoch, history[-1])
    model.eval()
    return history


@torch.no_grad()
def latent_states(model, states: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Raw cached states → the decoder's width through the (frozen) bottleneck, batch by batch, kept on the CPU."""
    if getattr(model, "bottleneck", None) is None:
        return states
    device = next(model.parameters()).device
    return torch.cat([model.encode_latent(states[i : i + batch_size].to(device)).cpu()
                      for i in range(0, len(states), batch_size)])


def training_step_fn(model: torch.nn.Module, pairs: EncodedPairs, settings: FinetuneSettings,
                     batch_size: int | None = None):
    """A closure running one full fine-tuning step (forward, backward, optimiser) on the first batch at the pairs'
    full padded widths: what a memory measurement wraps. Its loss is the one `finetune_on_states` trains on with
    cross-entropy (`seq2seq_loss`: a shortlisted head's logits over its shortlist alone). Trains a deep copy, so
    `model` is left as it was."""
    clone = copy.deepcopy(model)
    params = trainable_parameters(clone, train_bottleneck=False)
    rows = slice(0, batch_size or settings.batch_size)
    device = next(clone.parameters()).device
    batch = [t[rows].to(device) for t in (pairs.states, pairs.attention_mask, pairs.decoder_input_ids, pairs.labels)]

    def step():
        optimizer = torch.optim.AdamW(params, lr=settings.learning_rate)
        clone.train()
        states, attention_mask, decoder_input_ids, labels = batch
        with torch.no_grad():
            states = getattr(clone, "encode_latent", lambda s: s)(states)
        with autocast(settings.dtype, device):
            loss = seq2seq_loss(clone, states, attention_mask, decoder_input_ids, labels)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step
