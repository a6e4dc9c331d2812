"""Preparing the embedded teacher: the MiniLM bert2bert fine-tuned on the task's training pairs, once.

The result is cached by (MiniLM weights, training data, recipe), so every later search on the same machine — and
every trial of a search — loads it from disk in a second. The encoder stays frozen: only the decoder (warm-started
from MiniLM, cross-attention new) learns, on cached encoder states.
"""

from __future__ import annotations

import json
import logging
import random
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from shrinktune.data.examples import Example
from shrinktune.data.tasks import Task
from shrinktune.training.cache import cached_dir, file_fingerprint, fingerprint
from shrinktune.training.encode import EncodedPairs, cached_encoded_pairs, examples_fingerprint, tokenize_targets
from shrinktune.training.finetune import FinetuneSettings, finetune_on_states

logger = logging.getLogger(__name__)

RECIPE_VERSION = 2  # bump when the preparation code changes what it produces


@dataclass(frozen=True)
class TeacherRecipe:
    """How the embedded teacher is fine-tuned."""

    epochs: int = 4  # passes over the training pairs
    learning_rate: float = 2e-4  # AdamW, linear decay
    batch_size: int = 16  # pairs per step
    label_smoothing: float = 0.1  # softens targets; helps a decoder trained on few pairs
    copy_epochs: int = 1  # first, passes of copy pre-training: target = a sentence inside the encoded window
    copies_per_document: int = 2  # copy targets drawn per training document
    seed: int = 0  # shuffling and initialisation


def copy_targets(pairs: EncodedPairs, examples: list[Example], tokenizer, task: Task, recipe: TeacherRecipe) -> EncodedPairs:
    """Copy pre-training pairs: each document's encoder states, with one of its encoded sentences as the target."""
    from shrinktune.measure.rouge import split_sentences

    rng = random.Random(recipe.seed)
    rows, targets = [], []
    for row, example in enumerate(examples):
        budget = int(pairs.attention_mask[row].sum()) - len(tokenizer.tokenize(example.source[: len(example.source) - len(example.document)])) - 2
        inside, used = [], 0
        for sentence in split_sentences(example.document):
            used += len(tokenizer.tokenize(sentence))
            if used > budget:
                break
            if len(sentence.split()) >= 5:
                inside.append(sentence)
        for sentence in rng.sample(inside, min(recipe.copies_per_document, len(inside))):
            rows.append(row)
            targets.append(sentence)
    index = torch.tensor(rows)
    labels, decoder_input_ids = tokenize_targets(tokenizer, targets, task.max_target_tokens, int(pairs.decoder_input_ids[0, 0]))
    return EncodedPairs(pairs.states[index], pairs.attention_mask[index], labels, decoder_input_ids)


def prepare_embedded_teacher(task: Task, train: list[Example], recipe: TeacherRecipe = TeacherRecipe(), root: Path | None = None) -> Path:
    """Returns the folder of the fine-tuned embedded teacher, training it the first time (minutes on 2 cores)."""
    from shrinktune.models.teacher import build_bert2bert, minilm_path

    key = fingerprint(
        "embedded-teacher", RECIPE_VERSION, file_fingerprint(minilm_path()), examples_fingerprint(train),
        task.max_source_tokens, task.max_target_tokens, asdict(recipe),
    )

    def produce(folder: Path) -> None:
        logger.info("preparing the embedded teacher: fine-tuning the MiniLM bert2bert on %d pairs (once; cached)", len(train))
        torch.manual_seed(recipe.seed)  # the new cross-attention and LM-head weights are drawn here
        model, tokenizer = build_bert2bert()
        model.to("cuda" if torch.cuda.is_available() else "cpu")
        pairs = cached_encoded_pairs(
            model.encoder, tokenizer, train, max_source_tokens=task.max_source_tokens,
            max_target_tokens=task.max_target_tokens, start_id=model.config.decoder_start_token_id, root=root,
        )
        settings = FinetuneSettings(
            epochs=recipe.epochs, learning_rate=recipe.learning_rate, batch_size=recipe.batch_size,
            label_smoothing=recipe.label_smoothing, seed=recipe.seed,
        )
        history = []
        if recipe.copy_epochs:
            # Copying a sentence the encoder just read teaches the new cross-attention to look at the input;
            # without it, a decoder trained on 300 pairs learns a few stock sentences and ignores its input.
            copy_pairs = copy_targets(pairs, train, tokenizer, task, recipe)
            copy_settings = FinetuneSettings(
                epochs=recipe.copy_epochs, learning_rate=recipe.learning_rate, batch_size=recipe.batch_size, seed=recipe.seed
            )
            history += finetune_on_states(model, copy_pairs, copy_settings)
        history += finetune_on_states(model, pairs, settings)
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        (folder / "shrinktune_teacher.json").write_text(
            json.dumps({"recipe": asdict(recipe), "task": task.name, "train_loss": history}, indent=2)
        )

    return cached_dir("teachers", key, produce, root)
