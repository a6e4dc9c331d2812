"""Preparing teachers: the embedded one (the MiniLM bert2bert fine-tuned on the task's training pairs), and the
search's own folder of any teacher, which carries the search's decoding (`search_teacher_dir`).

The encoder stays frozen: only the decoder (warm-started from MiniLM) learns, on cached encoder states, in two
stages — copy pre-training (target = a sentence the encoder just read), then the summaries. Training takes long on a
laptop's CPU, so the package ships the result: `assets/embedded_teacher.safetensors` holds what training changed
(the decoder without its word embeddings, which stay MiniLM's) in int8, about 15 MB, stamped with the fingerprint
of (MiniLM weights, training data, recipe). `prepare_embedded_teacher` unpacks it when the fingerprint matches and
trains from scratch otherwise; either way the result is cached, so later searches and every trial load it from
disk in a second. `python -m platform.prepare_teacher` retrains it and rewrites the shipped file.

A prepared teacher is shared by every search of its recipe and data, whatever they decode with; each search measures
it — and records in MLflow — through `search_teacher_dir`, a folder of its own for this teacher and this decoding.
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import transformers
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from shrinktune.data.examples import Example
from shrinktune.data.tasks import Task
from shrinktune.errors import ConfigError, UserError
from shrinktune.models.folders import TRIAL_INFO
from shrinktune.models.generation import GenerationSettings
from shrinktune.models.int8 import dequantize_int8, quantize_int8
from shrinktune.models.summarizer import TEACHER_INFO, task_record
from shrinktune.models.teacher import build_bert2bert, load_teacher, minilm_path
from shrinktune.training.cache import cached_dir, file_fingerprint, fingerprint
from shrinktune.training.encode import (
    TARGETS_FORMAT,
    EncodedPairs,
    cached_encoded_pairs,
    examples_fingerprint,
    tokenize_targets,
)
from shrinktune.training.finetune import FinetuneSettings, finetune_on_states

logger = logging.getLogger(__name__)

RECIPE_VERSION = 5  # bump when the preparation code changes what it produces (4: the aspect as decoder prompt; 5: the
# prompt visible to the decoder in training)
SHIPPED_TEACHER = Path(__file__).resolve().parents[1] / "assets" / "embedded_teacher.safetensors"
CROSS_ATTENTION_INITS = ("self", "random")


@dataclass(frozen=True)
class TeacherRecipe:
    """How the embedded teacher is fine-tuned."""

    epochs: int = 5  # passes over the training pairs
    learning_rate: float = 5e-4  # AdamW, linear decay
    batch_size: int = 16  # pairs per step
    label_smoothing: float = 0.1  # softens targets; helps a decoder trained on few pairs
    copy_epochs: int = 1  # first, passes of copy pre-training: target = a sentence inside the encoded window
    copies_per_document: int = 6  # copy targets drawn per training document
    copy_learning_rate: float = 5e-4  # copy pre-training's peak (1e-3 for 5 epochs stalled: R-1 .14)
    cross_attention_init: str = "self"  # "self": each layer's new cross-attention starts as its self-attention
    freeze_word_embeddings: bool = True  # decoder input embeddings = tied output layer = MiniLM's, kept as trained
    seed: int = 0  # shuffling and initialisation
    batching: str = "random"  # "by_length": batches of similar-length inputs (FinetuneSettings.batching)

    def __post_init__(self):
        if self.cross_attention_init not in CROSS_ATTENTION_INITS:
            raise ConfigError(f"cross_attention_init must be one of {CROSS_ATTENTION_INITS}, got "
                              f"{self.cross_attention_init!r}.")
        if self.epochs < 1 or self.copy_epochs < 0 or self.copies_per_document < 1:
            raise ConfigError(f"a teacher recipe needs epochs ≥ 1, copy_epochs ≥ 0 and copies_per_document ≥ 1, got "
                              f"{self.epochs}, {self.copy_epochs} and {self.copies_per_document}.")


def recipe_for(task: Task) -> TeacherRecipe:
    """The embedded teacher's recipe for a task: `TeacherRecipe()` (the shipped summarization teacher's), except
    that a classification task's decoder writes one or two words — no copy pre-training, which teaches a decoder
    to read its input back in sentences, and no label smoothing, which would blur a one-token answer — and reads
    sentences of 8 to 96 tokens, batched by length (half the work of random batches padded to their longest)."""
    if task.kind == "classification":
        return TeacherRecipe(epochs=3, copy_epochs=0, label_smoothing=0.0, batching="by_length")
    return TeacherRecipe()


def init_cross_attention_from_self(decoder) -> None:
    """Starts each BERT decoder layer's cross-attention as a copy of its pre-trained self-attention.

    A random cross-attention makes the decoder's first hundred steps blind to the input; a copy of self-attention
    already matches a query to keys of similar content, which is what copying from the encoder needs.
    """
    with torch.no_grad():
        for layer in decoder.bert.encoder.layer:
            for part in ("query", "key", "value"):
                source = getattr(layer.attention.self, part)
                getattr(layer.crossattention.self, part).load_state_dict(source.state_dict())
            layer.crossattention.output.load_state_dict(layer.attention.output.state_dict())


def copy_targets(pairs: EncodedPairs, examples: list[Example], tokenizer, task: Task,
                 recipe: TeacherRecipe) -> EncodedPairs:
    """Copy pre-training pairs: each document's encoder states, with one of its encoded sentences as the target."""
    # Lazy: measure.rouge loads rouge_score and nltk (about 2 s), needed only when the teacher is trained here.
    from shrinktune.measure.rouge import split_sentences

    rng = random.Random(recipe.seed)
    rows, targets = [], []
    for row, example in enumerate(examples):
        prefix = example.source[: len(example.source) - len(example.document)]
        budget = int(pairs.attention_mask[row].sum()) - len(tokenizer.tokenize(prefix)) - 2
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
    labels, decoder_input_ids = tokenize_targets(tokenizer, targets, task.max_target_tokens,
                                                 int(pairs.decoder_input_ids[0, 0]))
    return EncodedPairs(pairs.states[index], pairs.attention_mask[index], labels, decoder_input_ids)


def teacher_key(task: Task, train: list[Example], recipe: TeacherRecipe) -> str:
    """The fingerprint of what decides the embedded teacher: MiniLM's weights, the training pairs, the recipe."""
    return fingerprint(
        "embedded-teacher", RECIPE_VERSION, TARGETS_FORMAT, file_fingerprint(minilm_path()),
        examples_fingerprint(train), task.max_source_tokens, task.max_target_tokens, _recipe_fields(recipe),
    )


LATER_FIELDS = {"batching": "random"}  # recipe fields added after the shipped teacher, with the value it had


def _recipe_fields(recipe: TeacherRecipe) -> dict:
    """The recipe as its key reads it: a field added later counts only when it differs from what earlier
    teachers were trained with, so their keys (the shipped teacher's among them) still hold."""
    return {k: v for k, v in asdict(recipe).items() if LATER_FIELDS.get(k, object()) != v}


def train_embedded_teacher(task: Task, train: list[Example], recipe: TeacherRecipe = TeacherRecipe(),
                           root: Path | None = None):
    """Fine-tunes the MiniLM bert2bert from scratch (about 7 minutes on 2 CPU cores).

    Returns:
        (model, tokenizer, per-epoch training losses), the model in eval mode.
    """
    logger.info("training the embedded teacher: the MiniLM bert2bert on %d pairs (once; cached)", len(train))
    torch.manual_seed(recipe.seed)  # the new cross-attention and LM-head weights are drawn here
    model, tokenizer = build_bert2bert()
    model.to("cuda" if torch.cuda.is_available() else "cpu")
    if recipe.cross_attention_init == "self":
        init_cross_attention_from_self(model.decoder)
    if recipe.freeze_word_embeddings:
        model.decoder.get_input_embeddings().weight.requires_grad_(False)  # the output layer is tied to it
    pairs = cached_encoded_pairs(
        model.encoder, tokenizer, train, max_source_tokens=task.max_source_tokens,
        max_target_tokens=task.max_target_tokens, start_id=model.config.decoder_start_token_id, root=root,
    )
    history = []
    if recipe.copy_epochs:
        # Copying a sentence the encoder just read teaches the new cross-attention to look at the input;
        # without it, a decoder trained on 300 pairs learns a few stock sentences and ignores its input.
        copy_settings = FinetuneSettings(
            epochs=recipe.copy_epochs, learning_rate=recipe.copy_learning_rate, batch_size=recipe.batch_size,
            seed=recipe.seed,
        )
        history += finetune_on_states(model, copy_targets(pairs, train, tokenizer, task, recipe), copy_settings)
    settings = FinetuneSettings(
        epochs=recipe.epochs, learning_rate=recipe.learning_rate, batch_size=recipe.batch_size,
        label_smoothing=recipe.label_smoothing, seed=recipe.seed, batching=recipe.batching,
    )
    history += finetune_on_states(model, pairs, settings)
    return model.eval(), tokenizer, history


def _trained_tensors(model) -> dict[str, torch.Tensor]:
    """The decoder tensors training changed: all but the frozen word embeddings and what is tied to them."""
    frozen = model.decoder.get_input_embeddings().weight.data_ptr()
    return {name: t for name, t in model.decoder.state_dict().items() if t.data_ptr() != frozen}


def export_embedded_teacher(task: Task, train: list[Example], recipe: TeacherRecipe = TeacherRecipe(),
                            path: Path = SHIPPED_TEACHER, root: Path | None = None) -> Path:
    """Trains the embedded teacher and writes what the package ships: its trained decoder tensors in int8.

    Raises:
        ConfigError: a recipe that trains the word embeddings (they would not fit in a small file).
    """
    if not recipe.freeze_word_embeddings:
        raise ConfigError("only a recipe with freeze_word_embeddings=True can be shipped (the embeddings are 47 MB).")
    started = time.perf_counter()
    model, _, history = train_embedded_teacher(task, train, recipe, root)
    metadata = {"key": teacher_key(task, train, recipe), "recipe": json.dumps(asdict(recipe)),
                "recipe_version": str(RECIPE_VERSION), "train_loss": json.dumps(history),
                "train_seconds": f"{time.perf_counter() - started:.0f}", "torch_threads": str(torch.get_num_threads())}
    return save_shipped_teacher(model, path, metadata)


def save_shipped_teacher(model, path: Path, metadata: dict[str, str]) -> Path:
    """Writes a MiniLM bert2bert's trained decoder tensors (all but the word embeddings) in int8 to `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(quantize_int8(_trained_tensors(model.cpu())), str(path), metadata=metadata)
    logger.info("wrote %s (%.1f MB)", path, path.stat().st_size / 2**20)
    return path


def load_shipped_teacher(path: Path = SHIPPED_TEACHER):
    """The shipped teacher: MiniLM's bert2bert with the shipped decoder tensors (dequantized) put in place.

    Returns:
        (model, tokenizer, metadata) — metadata as written by `export_embedded_teacher`.
    """
    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata() or {}
    model, tokenizer = build_bert2bert()
    tensors = dequantize_int8(load_file(str(path)))
    missing, unexpected = model.decoder.load_state_dict(tensors, strict=False)
    untouched = set(model.decoder.state_dict()) - set(_trained_tensors(model))
    if unexpected or set(missing) - untouched:
        raise UserError(f"{path} does not match the MiniLM decoder (missing {sorted(set(missing) - untouched)[:3]}, "
                        f"unexpected {unexpected[:3]}); reinstall shrinktune or run "
                        f"python -m platform.prepare_teacher.")
    return model.eval(), tokenizer, metadata


def shipped_matches(key: str, path: Path = SHIPPED_TEACHER) -> bool:
    """Whether the package ships the teacher that `key` describes."""
    if not path.is_file():
        return False
    with safe_open(str(path), framework="pt") as handle:
        return (handle.metadata() or {}).get("key") == key


def prepare_embedded_teacher(task: Task, train: list[Example], recipe: TeacherRecipe | None = None,
                             root: Path | None = None) -> Path:
    """Returns the folder of the embedded teacher: the shipped one unpacked when it matches (seconds), else trained
    (minutes on 2 cores); cached either way. `recipe` defaults to the task's (`recipe_for`)."""
    recipe = recipe_for(task) if recipe is None else recipe
    key = teacher_key(task, train, recipe)

    def produce(folder: Path) -> None:
        if shipped_matches(key):
            logger.info("unpacking the shipped embedded teacher (%s)", SHIPPED_TEACHER.name)
            model, tokenizer, metadata = load_shipped_teacher()
            history = json.loads(metadata.get("train_loss", "[]"))
        else:
            logger.info("no shipped teacher for this recipe and data: training it")
            model, tokenizer, history = train_embedded_teacher(task, train, recipe, root)
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        (folder / TEACHER_INFO).write_text(
            json.dumps({"recipe": asdict(recipe), "task": task.name, "train_loss": history}, indent=2)
        )

    return cached_dir("teachers", key, produce, root)


SEARCH_TEACHER_VERSION = 1  # bump when `search_teacher_dir` changes what it writes
REWRITTEN = ("generation_config.json", TEACHER_INFO, TRIAL_INFO)  # a teacher's files the search's folder rewrites


def search_teacher_dir(teacher: str | Path, generation: GenerationSettings, task: Task,
                       root: Path | None = None) -> Path:
    """The search's folder of `teacher` (a local folder or a hub id): the same model and tokenizer, with the
    search's decoding in `generation_config.json` and its task beside it (`shrinktune_teacher.json`, see
    `shrinktune.models.summarizer.task_record`), so that `load_teacher` / `load_summarizer` on it decode as the
    search measured it.

    A cache entry keyed by the teacher (a folder's files; a hub id's name and revision), the decoding and the task:
    the teacher's own folder — a prepared teacher is shared by searches that decode differently — is never written.
    A local teacher's files are hard-linked (copied across file systems); a hub teacher is saved in full. A folder
    that already carries this decoding and task is returned as it is.
    """
    source = Path(teacher)
    local = source.is_dir()
    if local and _carries(source, generation, task):
        return source
    origin = file_fingerprint(source) if local else ["hub", str(teacher), _hub_revision(str(teacher))]
    key = fingerprint("search-teacher", SEARCH_TEACHER_VERSION, origin, generation.as_dict(), task.name,
                      task.max_source_tokens, list(task.aspects))

    def produce(folder: Path) -> None:
        model, tokenizer = load_teacher(teacher)
        generation.apply(model)
        if local:
            for file in sorted(source.iterdir()):
                if file.is_file() and file.name not in REWRITTEN and not file.name.startswith("."):
                    _link_or_copy(file, folder / file.name)
        else:
            model.save_pretrained(folder)
            tokenizer.save_pretrained(folder)
        model.generation_config.save_pretrained(folder)
        recipe = json.loads((source / TEACHER_INFO).read_text()) if (source / TEACHER_INFO).is_file() else {}
        info = {**recipe, **task_record(task, model), "teacher": str(teacher), "generation": generation.as_dict()}
        (folder / TEACHER_INFO).write_text(json.dumps(info, indent=2))

    return cached_dir("search-teachers", key, produce, root)


def _carries(folder: Path, generation: GenerationSettings, task: Task) -> bool:
    """Whether `folder` is a search's teacher folder for this decoding and task already."""
    info = folder / TEACHER_INFO
    if not info.is_file():
        return False
    saved = json.loads(info.read_text())
    return saved.get("generation") == generation.as_dict() and saved.get("task") == task.name


def _hub_revision(name: str) -> str | None:
    """The commit a hub id resolves to now (None when it cannot be told: `load_teacher` then says why)."""
    try:
        return getattr(transformers.AutoConfig.from_pretrained(name), "_commit_hash", None)
    except (OSError, ValueError):
        return None


def _link_or_copy(source: Path, target: Path) -> None:
    """`target` as a hard link to `source` (no second copy of the weights), or a copy where links cannot be made."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)
