"""The tokens a task's training text uses: the output shortlist of a narrow student (`output_vocab: training`).

A narrow decoder's LM head at batch 1 reads a (vocabulary, width) matrix at every step — for the embedded default
30 522 × 192 floats, more than the rest of a one-layer decoder's step. Most of those rows are tokens the task never
writes (other scripts, `[unused]` slots, words of other fields). The shortlist is every token of the training
text — documents in full (not truncated to the input), their summaries, and for ACLSum the full text of each
training paper (`paper_jsons`); for translation and classification the training targets alone (a classifier's
head shrinks to its class names' tokens) — plus the tokenizer's special tokens. Validation and test text is never
read: a token only they use is a token the student cannot write, which their R-1 then shows.
"""

from __future__ import annotations

import logging

from shrinktune.data.examples import Example
from shrinktune.data.pseudo_sources import paper_of, paper_record
from shrinktune.data.tasks import Task

logger = logging.getLogger(__name__)


def training_texts(task: Task, train: list[Example]) -> list[str]:
    """Every text of the training split a student may write: documents, summaries and (ACLSum) each training
    paper's full text — a summary copies from its source. A translation writes the target language alone, a
    classifier the class names alone: their shortlists are the targets' tokens."""
    if task.kind != "summarization":
        return [example.summary for example in train if example.summary]
    texts = [t for example in train for t in (example.document, example.summary) if t]
    if task.dataset == "aclsum":
        for paper in sorted({paper_of(example.id) for example in train}):
            texts.extend(paper_text(paper))
    return texts


def paper_text(paper_id: str) -> list[str]:
    """An ACLSum paper's title and body paragraphs (none when the package has no full text for it)."""
    record = paper_record(paper_id)
    if record is None:
        return []
    return [record.get("title") or "", *(p["text"] for p in record["pdf_parse"]["body_text"])]


def training_token_ids(task: Task, tokenizer, train: list[Example]) -> list[int]:
    """The sorted token ids of `training_texts` and the tokenizer's special tokens: an output shortlist."""
    ids = set(tokenizer.all_special_ids)
    for start in range(0, len(texts := training_texts(task, train)), 256):
        for row in tokenizer(texts[start:start + 256], add_special_tokens=False, verbose=False)["input_ids"]:
            ids.update(row)
    logger.info("output shortlist: %d of %d tokens (the training text's)", len(ids), len(tokenizer))
    return sorted(ids)
