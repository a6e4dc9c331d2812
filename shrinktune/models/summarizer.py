"""A checkpoint as a callable: `load_summarizer(path)("document ...", aspect="approach")` → summary text.

Every folder Shrinktune writes — a trial checkpoint (and its export), the search's teacher folder — carries what the
search measured it with: its decoding in `generation_config.json`, and its task beside it (`shrinktune_trial.json`
or `shrinktune_teacher.json`, `task_record`): the task's name, its aspects and the source tokens the encoder read.
`Summarizer.from_pretrained` reads them back, so a loaded model writes the summaries the search scored, and refuses
what it was never measured on (an empty document; a missing or unknown aspect).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from shrinktune.data.examples import decoder_prompt, format_source
from shrinktune.data.tasks import TASKS, Task
from shrinktune.errors import UserError
from shrinktune.models.folders import TRIAL_INFO
from shrinktune.models.generation import decode_summaries, decoder_start_id, generate, prompt_token_ids
from shrinktune.models.teacher import load_teacher, source_token_limit

TEACHER_INFO = "shrinktune_teacher.json"  # beside a teacher folder Shrinktune wrote: its task (and recipe)
DEFAULT_SOURCE_TOKENS = 256  # a folder that records no task: the encoder reads this many tokens


def task_record(task: Task, model) -> dict:
    """What a folder's json records about the task its model was measured on: the task's name and kind, its aspects
    and the source tokens the encoder read (the task's, capped at the encoder's position table, as the search reads
    them)."""
    record = {"task": task.name, "kind": task.kind, "aspects": list(task.aspects),
              "max_source_tokens": source_token_limit(model, task.max_source_tokens)}
    if task.source_prefix:
        record["source_prefix"] = task.source_prefix  # what every input was led by (T5's task prefix)
    return record


def saved_task(path: str | Path) -> dict:
    """The task record beside a folder (`task_record`, or the bare `{"task": name}` of older folders); {} for a
    folder that records none, or a hub id."""
    for name in (TRIAL_INFO, TEACHER_INFO):
        info = Path(path) / name
        if info.is_file():
            return json.loads(info.read_text())
    return {}


def task_inputs(record: dict) -> tuple[int, tuple[str, ...] | None]:
    """(source tokens, aspects) a model was measured with, from its task record: the recorded values, else those of
    the registered task it names; (DEFAULT_SOURCE_TOKENS, None) — aspects unknown — when it names no known task."""
    task = TASKS.get(record.get("task") or "")
    tokens = record.get("max_source_tokens") or (task.max_source_tokens if task else DEFAULT_SOURCE_TOKENS)
    aspects = record.get("aspects")
    if aspects is None and task is not None:
        aspects = task.aspects
    return int(tokens), None if aspects is None else tuple(aspects)


class Summarizer:
    """A seq2seq model and its tokenizer, generating with the settings saved in the checkpoint.

    `aspects`: those the model was trained on — then every call names one of them — or () for a model of plain
    summaries, which takes none; None when unknown (a folder Shrinktune did not write): any aspect, or none, is
    passed on.
    """

    def __init__(self, model, tokenizer, max_source_tokens: int = DEFAULT_SOURCE_TOKENS,
                 aspects: tuple[str, ...] | None = None, source_prefix: str = ""):
        self.model, self.tokenizer, self.max_source_tokens = model.eval(), tokenizer, max_source_tokens
        self.aspects = None if aspects is None else tuple(aspects)
        self.source_prefix = source_prefix  # the task's, put before every document as in training

    @classmethod
    def from_pretrained(cls, path: str | Path, device: str | torch.device | None = None) -> Summarizer:
        """Loads a teacher or student folder (or hub id) written by `save_pretrained`, with the decoding in its
        `generation_config.json` and the source length and aspects of the task recorded beside it."""
        model, tokenizer = load_teacher(path, device=device, role="checkpoint")
        record = saved_task(path)
        max_source_tokens, aspects = task_inputs(record)
        return cls(model, tokenizer, source_token_limit(model, max_source_tokens), aspects,
                   record.get("source_prefix", ""))

    def check_aspect(self, aspect: str | None) -> None:
        """Refuses an aspect the model was not trained for: a missing or unknown one, or any for a model of plain
        summaries (each would get a summary of a kind the search never measured).

        Raises:
            UserError: one line naming the aspects the model takes.
        """
        if self.aspects is None:
            return
        if not self.aspects:
            if aspect is not None:
                raise UserError(f"this model writes plain summaries, without aspects; got aspect={aspect!r}: call it "
                                "without aspect.")
            return
        if aspect not in self.aspects:
            given = "no aspect" if aspect is None else f"unknown aspect {aspect!r}"
            raise UserError(f"this model summarizes one aspect at a time and got {given}; pass aspect= one of "
                            f"{', '.join(self.aspects)}.")

    @staticmethod
    def check_documents(documents: list) -> None:
        """Refuses documents with no text (a model would still write a confident summary of nothing).

        Raises:
            UserError: one line naming the first document that is not text or is empty.
        """
        for number, document in enumerate(documents, 1):
            where = "the document" if len(documents) == 1 else f"document {number} of {len(documents)}"
            if not isinstance(document, str):
                raise UserError(f"{where} is a {type(document).__name__}, not text; pass a str (or a list of str).")
            if not document.strip():
                raise UserError(f"{where} is empty; pass the text to summarize.")

    @torch.no_grad()
    def __call__(self, document: str | list[str], aspect: str | None = None) -> str | list[str]:
        """Summarizes one document (→ str) or several (→ list); `aspect` for aspect-conditioned models.

        Raises:
            UserError: an empty document, or an aspect the model does not take (`check_aspect`).
        """
        documents = [document] if isinstance(document, str) else list(document)
        self.check_documents(documents)
        self.check_aspect(aspect)
        if not documents:
            return []
        batch = self.tokenizer(
            [format_source(self.source_prefix + d, aspect) for d in documents], max_length=self.max_source_tokens,
            truncation=True, padding=True, return_tensors="pt",
        ).to(next(self.model.parameters()).device)
        inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
        prompt = prompt_token_ids(self.tokenizer, decoder_prompt(aspect))
        if prompt:  # the decoder is given the aspect after its start token, as in training
            start = [decoder_start_id(self.model)] + prompt
            inputs["decoder_input_ids"] = torch.tensor([start] * len(documents), device=batch["input_ids"].device)
        ids = generate(self.model, **inputs)
        texts = decode_summaries(self.tokenizer, ids[:, len(prompt) + 1:] if prompt else ids)
        return texts[0] if isinstance(document, str) else texts
