"""Tokenising pairs and caching a frozen encoder's hidden states.

Every trial of a search shares the teacher's encoder, frozen, so its outputs on the training documents are
computed once and reused: students then train only what sits after the encoder.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from shrinktune.data.examples import Example
from shrinktune.models.generation import prompt_token_ids
from shrinktune.training.cache import cached_dir, fingerprint

logger = logging.getLogger(__name__)

TARGETS_FORMAT = 2  # bump when tokenize_targets changes what it produces (2: decoder prompts)


@dataclass
class EncodedPairs:
    """Encoder states of the documents and token ids of the summaries, row-aligned."""

    states: torch.Tensor  # (n, src_len, d_encoder) float32
    attention_mask: torch.Tensor  # (n, src_len) 1 = token, 0 = padding
    labels: torch.Tensor  # (n, tgt_len) summary ids ending in the end token, -100 = padding
    decoder_input_ids: torch.Tensor  # (n, tgt_len) start token + summary ids, pad id = padding
    key: str = ""  # cache fingerprint of what produced these tensors ("" when not cached)

    TENSORS = ("states", "attention_mask", "labels", "decoder_input_ids")

    def __len__(self) -> int:
        return self.states.shape[0]

    def save(self, path: Path) -> None:
        save_file({k: getattr(self, k).contiguous() for k in self.TENSORS}, str(path))

    @classmethod
    def load(cls, path: Path, key: str = "") -> EncodedPairs:
        return cls(**load_file(str(path)), key=key)


def tokenize_targets(tokenizer, summaries: list[str], max_tokens: int, start_id: int,
                     prompts: list[str | None] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Teacher-forcing pairs: decoder inputs `[start] p1 … pk y1 … yn` and labels `-100 … -100 y1 … yn [end]`.

    `prompts` (one per summary, or None) are words the decoder is given, not asked to predict; the summary keeps
    its `max_tokens`. Padding is the tokenizer's pad id in the inputs, -100 in the labels.
    """
    batch = tokenizer(summaries, max_length=max_tokens, truncation=True, padding=True, return_tensors="pt")
    ids, mask = batch["input_ids"], batch["attention_mask"]  # (n, tgt_len) with [CLS] … [SEP] for BERT
    if tokenizer.cls_token_id is not None and bool((ids[:, 0] == tokenizer.cls_token_id).all()):
        ids, mask = ids[:, 1:], mask[:, 1:]  # BERT adds its own start token; the decoder start is prepended below
    labels = ids.masked_fill(mask == 0, -100)
    start = torch.full((ids.shape[0], 1), start_id, dtype=ids.dtype)
    decoder_input_ids = torch.cat([start, ids[:, :-1]], dim=1)
    if prompts is None or not any(prompts):
        return labels, decoder_input_ids
    if len(prompts) != len(summaries):
        raise ValueError(f"{len(prompts)} prompts for {len(summaries)} summaries; give one per summary (or None)")
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    rows = []
    for prompt, inputs, targets in zip(prompts, decoder_input_ids, labels):
        given = torch.tensor(prompt_token_ids(tokenizer, prompt), dtype=ids.dtype)
        rows.append((torch.cat([inputs[:1], given, inputs[1:]]), torch.cat([torch.full_like(given, -100), targets])))
    width = max(len(inputs) for inputs, _ in rows)
    decoder_input_ids = torch.stack([torch.nn.functional.pad(i, (0, width - len(i)), value=pad) for i, _ in rows])
    labels = torch.stack([torch.nn.functional.pad(t, (0, width - len(t)), value=-100) for _, t in rows])
    return labels, decoder_input_ids


@torch.no_grad()
def encode_pairs(
    encoder: torch.nn.Module,
    tokenizer,
    examples: list[Example],
    *,
    max_source_tokens: int,
    max_target_tokens: int,
    start_id: int,
    batch_size: int = 16,
) -> EncodedPairs:
    """Runs the (frozen) encoder over the examples' sources and tokenises their summaries."""
    encoder.eval()
    device = next(encoder.parameters()).device
    sources = [e.source for e in examples]
    enc = tokenizer(sources, max_length=max_source_tokens, truncation=True, padding=True, return_tensors="pt")
    mask = enc["attention_mask"]
    # Longest first, each batch at its own width: short texts are not run at the longest one's length. Padding
    # positions stay zero (every reader of the states masks them).
    order = torch.argsort(mask.sum(1), descending=True, stable=True)
    states = None
    for start in range(0, len(sources), batch_size):
        rows = order[start : start + batch_size]
        width = used_width(mask[rows])
        out = encoder(input_ids=enc["input_ids"][rows, :width].to(device),
                      attention_mask=mask[rows, :width].to(device)).last_hidden_state.float().cpu()
        if states is None:
            states = out.new_zeros(len(sources), mask.shape[1], out.shape[-1])
        states[rows, :width] = out  # (batch, width, d_encoder)
        logger.debug("encoded %d/%d documents", min(start + batch_size, len(sources)), len(sources))
    labels, decoder_input_ids = tokenize_targets(
        tokenizer, [e.summary for e in examples], max_target_tokens, start_id, [e.prompt for e in examples]
    )
    if states is None:
        raise ValueError("no examples to encode")
    return EncodedPairs(states, mask, labels, decoder_input_ids)


def used_width(mask: torch.Tensor) -> int:
    """Columns of a batch up to the last one any row uses: the set is padded to its longest text (right padding),
    a batch of shorter ones trains on its own width — masked positions change no loss and no gradient, so this
    is the same step, minus the work on padding (a batch of short sentences among long ones: most of it)."""
    used = mask.bool().any(0).nonzero()
    return int(used[-1]) + 1 if len(used) else mask.shape[1]


def module_fingerprint(module: torch.nn.Module) -> str:
    """Hash of a module's weights: two encoders with the same tensors share cached states."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


def examples_fingerprint(examples: list[Example]) -> str:
    digest = hashlib.sha256()
    for e in examples:
        digest.update(f"{e.id}\x00{e.source}\x00{e.summary}\x01".encode())
    return digest.hexdigest()[:16]


def cached_encoded_pairs(
    encoder: torch.nn.Module,
    tokenizer,
    examples: list[Example],
    *,
    max_source_tokens: int,
    max_target_tokens: int,
    start_id: int,
    root: Path | None = None,
) -> EncodedPairs:
    """`encode_pairs`, computed once per (encoder weights, examples, lengths) and then read from the cache."""
    key = fingerprint(
        "encoded-pairs", TARGETS_FORMAT, module_fingerprint(encoder), examples_fingerprint(examples), max_source_tokens,
        max_target_tokens, start_id, tokenizer.name_or_path and len(tokenizer),
    )

    def produce(folder: Path) -> None:
        logger.info("encoding %d documents with the frozen encoder (once; cached)", len(examples))
        encode_pairs(
            encoder, tokenizer, examples, max_source_tokens=max_source_tokens,
            max_target_tokens=max_target_tokens, start_id=start_id,
        ).save(folder / "pairs.safetensors")

    return EncodedPairs.load(cached_dir("encoded", key, produce, root) / "pairs.safetensors", key=key)
