"""Extra inputs for sequence-level distillation: windows of the training documents that the truncated input never
reached, for the teacher to summarise (`pseudo_label_windows`).

A training input is the document truncated to the task's `max_source_tokens` (T); a window is another input made
from the same *training* document, so the student sees several (input, teacher summary) pairs per document:

- where the text comes from: ACLSum papers — the full text in the package's `paper_jsons/<paper_id>.json`
  (S2ORC `pdf_parse.body_text`), leaving out related-work sections (they describe other papers); hub tasks — the
  training document itself.
- what is skipped: the first T words of that text. Every word is at least one token, so an input of T tokens
  reaches at most T words of it: no window repeats what the normal input saw.
- its length: about the input's, `round(WORDS_PER_TOKEN · T)` words (179 for T = 256; the teacher's WordPiece
  tokenizer makes about 0.74 words a token on ACLSum); an ACLSum window is the paper's title, then as many body words
  as fit.
- which: the rest is cut into successive windows (a last one under half a window is dropped); of those, `windows`
  are kept, evenly spaced from the first to the last (1: the first), so that they span the paper from the end of
  its introduction to its conclusion.

An ACLSum window is asked for each aspect its document's pairs have: id `"{paper_id}/w{k}/{aspect}"` (k counts the
paper's windows from 1); a hub window's id is `"{example_id}/w{k}"`. `paper_of` recovers the document's id.

`check_no_overlap` is the guard the training pipeline runs every time it builds windows: no validation or test
paper may feed them (see its rule).
"""

from __future__ import annotations

import json
import logging
import re
from collections import Counter

import numpy as np

from shrinktune.data.aclsum import ASPECTS, aclsum_dir, detokenize
from shrinktune.data.examples import Example
from shrinktune.data.tasks import Task
from shrinktune.errors import ConfigError

logger = logging.getLogger(__name__)

WORDS_PER_TOKEN = 0.7  # a window's words per source token: ACLSum windows are a median 245 tokens of 256
SKIPPED_SECTIONS = re.compile(r"related work|previous work|prior work|existing work|previous approaches|"
                              r"literature review", re.IGNORECASE)
OVERLAP_WORDS = 13  # a shared run of this many words is a shared passage (the n of GPT-3's contamination check)
LEAD_WORDS = 4  # a shared lead (an ACLSum title) counts from this many words on
_WINDOW_ID = re.compile(r"^(?P<paper>.+?)/w\d+(?:/[^/]+)?$")


def window_examples(task: Task, train: list[Example], windows: int) -> list[Example]:
    """Up to `windows` extra inputs per training pair, without summaries (the teacher writes them).

    Args:
        task: the task whose `max_source_tokens` sets how much is skipped and how long a window is.
        train: the training pairs; only their documents (or papers) are read.
        windows: the most windows per pair (0: none).
    """
    if windows <= 0:
        return []
    tokens = task.max_source_tokens
    window_words = max(1, round(WORDS_PER_TOKEN * tokens))
    texts: dict[str, list[tuple[int, str]]] = {}  # document id → its windows, made once for all its aspects
    extra = []
    for example in train:
        paper = paper_of(example.id)
        if paper not in texts:
            if task.dataset == "aclsum":
                texts[paper] = paper_windows(paper, windows, skip_words=tokens, window_words=window_words)
            else:
                texts[paper] = document_windows(example.document, windows, skip_words=tokens,
                                                window_words=window_words)
        for k, text in texts[paper]:
            suffix = f"/{example.aspect}" if example.aspect else ""
            extra.append(Example(id=f"{paper}/w{k}{suffix}", document=text, summary="", aspect=example.aspect,
                                 prefix=example.prefix))
    logger.info("%d extra inputs (≤ %d windows of %d words) from %d training documents", len(extra), windows,
                window_words, len(texts))
    return extra


def paper_windows(paper_id: str, windows: int, *, skip_words: int, window_words: int) -> list[tuple[int, str]]:
    """(k, title + a slice of the body) for up to `windows` windows of one ACLSum paper's full text."""
    paper = paper_record(paper_id)
    if paper is None:
        logger.warning("ACLSum paper %s has no full text in paper_jsons/; no windows for it", paper_id)
        return []
    title = detokenize(paper["title"].rstrip(".") + ".")  # as `paper_document` writes it
    body = " ".join(p["text"] for p in paper["pdf_parse"]["body_text"]
                    if not SKIPPED_SECTIONS.search(p.get("section") or ""))
    body_words = max(window_words // 2, window_words - len(title.split()))
    return [(k, f"{title} {text}") for k, text in
            document_windows(body, windows, skip_words=skip_words, window_words=body_words)]


def paper_record(paper_id: str) -> dict | None:
    """An ACLSum paper's full-text record (S2ORC: `title`, `pdf_parse.body_text`), None when the package has none."""
    path = aclsum_dir() / "paper_jsons" / f"{paper_id}.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None


def document_windows(text: str, windows: int, *, skip_words: int, window_words: int) -> list[tuple[int, str]]:
    """(k, slice) for up to `windows` evenly spaced slices of `window_words` words after the first `skip_words`.

    k numbers all the slices from 1, so a window keeps its id whatever `windows` is.
    """
    words = text.split()[skip_words:]
    slices = [words[i:i + window_words] for i in range(0, len(words), window_words)]
    if slices and len(slices[-1]) < window_words / 2:
        slices.pop()
    if len(slices) <= windows:
        kept = list(range(len(slices)))
    else:
        kept = [round(i * (len(slices) - 1) / (windows - 1)) for i in range(windows)] if windows > 1 else [0]
    return [(k + 1, " ".join(slices[k])) for k in kept]


def paper_of(example_id: str) -> str:
    """The document an example comes from: `P06-1112` for `P06-1112/w3/outcome` and `P06-1112/outcome`;
    `train/17` for `train/17/w2` and `train/17`."""
    match = _WINDOW_ID.match(example_id)
    if match:
        return match["paper"]
    head, _, tail = example_id.rpartition("/")
    return head if head and tail in ASPECTS else example_id


def check_no_overlap(extra: list[Example], held_out: dict[str, list[Example]]) -> None:
    """Refuses extra inputs that come from, or share text with, a held-out document.

    An extra input overlaps a held-out split when its document id (`paper_of`) is one of the split's, when it has
    the same lead as one of its documents (the text before the first ". ", of at least `LEAD_WORDS` words: an
    ACLSum document's title), or when it shares a run of `OVERLAP_WORDS` words with one (lowercased, punctuation
    dropped).

    Args:
        extra: the extra inputs.
        held_out: split name → its pairs (validation and test).

    Raises:
        ConfigError: one line naming each overlapping split, how many extra inputs overlap it, and the first.
    """
    documents = _distinct(extra)
    inputs = Counter(paper_of(e.id) for e in extra)  # extra inputs per document
    found = []
    for split, examples in held_out.items():
        papers = {paper_of(e.id) for e in examples}
        held = _distinct(examples)
        leads = {lead: paper for paper, text in held.items() if len(lead := _lead(text)) >= LEAD_WORDS}
        index = _ngram_index(list(held.values()))
        owners = list(held)
        first, count = "", 0
        for paper, text in documents.items():
            reason = ""
            if paper in papers:
                reason = "it is that paper"
            elif _lead(text) in leads:
                reason = f"same title/lead as {split} paper {leads[_lead(text)]}"
            else:
                hit = _shared_run(text, index)
                if hit is not None:
                    reason = f"a {OVERLAP_WORDS}-word passage shared with {split} paper {owners[hit]}"
            if reason:
                count += inputs[paper]
                first = first or f"{paper} ({reason})"
        if count:
            found.append(f"the {split} split ({count} extra inputs, first: {first})")
    if found:
        raise ConfigError(
            f"extra pseudo-label inputs must come from training papers only, but some overlap {' and '.join(found)}; "
            "build the windows from the train split alone, or set pseudo_label_windows: 0."
        )


def _distinct(examples: list[Example]) -> dict[str, str]:
    """Document id → the text of its first example's document (the aspects of a paper share one)."""
    out: dict[str, str] = {}
    for e in examples:
        out.setdefault(paper_of(e.id), e.document)
    return out


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.lower())


def _lead(text: str) -> tuple[str, ...]:
    return tuple(_words(text.split(". ", 1)[0]))


def _ngram_hashes(text: str) -> np.ndarray:
    words = _words(text)
    count = max(0, len(words) - OVERLAP_WORDS + 1)
    return np.fromiter((hash(tuple(words[i:i + OVERLAP_WORDS])) for i in range(count)), dtype=np.int64, count=count)


def _ngram_index(texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(sorted n-gram hashes, the index of the text each comes from): 16 bytes a held-out word, searched in log
    time, so that a hub split of millions of words stays cheap."""
    hashes = [_ngram_hashes(text) for text in texts]
    owners = np.concatenate([np.full(len(h), i, dtype=np.int64) for i, h in enumerate(hashes)] or [np.zeros(0, int)])
    flat = np.concatenate(hashes or [np.zeros(0, np.int64)])
    order = np.argsort(flat, kind="stable")
    return flat[order], owners[order]


def _shared_run(text: str, index: tuple[np.ndarray, np.ndarray]) -> int | None:
    """The index of a held-out text sharing an n-gram with `text`; None when none does."""
    hashes, owners = index
    query = _ngram_hashes(text)
    if not len(hashes) or not len(query):
        return None
    at = np.minimum(np.searchsorted(hashes, query), len(hashes) - 1)
    hits = np.flatnonzero(hashes[at] == query)
    return int(owners[at[hits[0]]]) if len(hits) else None
