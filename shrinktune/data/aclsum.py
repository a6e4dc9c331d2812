"""ACLSum, the embedded dataset: 250 ACL papers, each with three aspect summaries (challenge, approach, outcome).

The `aclsum` package ships the data as JSON lines; we read them directly, because importing the package pulls in
libraries we do not need. Splits are the package's own: 100 train / 50 validation / 100 test papers, so 300 / 150
/ 300 (document, aspect) pairs.

The papers also mark, sentence by sentence, which sentences support each aspect's summary (`highlights`):
`load_aclsum_sentences` turns that into a 4-way classification task (sentence → challenge / approach / outcome /
none), split by paper as the summaries are: 3 844 / 1 969 / 3 740 sentences (the 0.6 % marked for two aspects at
once are left out), 59–64 % `none`.
"""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

from shrinktune.data.examples import Example
from shrinktune.errors import UserError

ASPECTS = ("challenge", "approach", "outcome")
SPLIT_FILES = {"train": "train.jsonl", "validation": "val.jsonl", "test": "test.jsonl"}
SECTIONS = ("abstract", "introduction", "conclusion")
SENTENCE_LABELS = (*ASPECTS, "none")  # the classes of `load_aclsum_sentences`


def aclsum_dir() -> Path:
    """The installed package's dataset folder, found without importing the package."""
    spec = importlib.util.find_spec("aclsum")
    if spec is None or not spec.submodule_search_locations:
        raise UserError("the embedded dataset is missing: `pip install aclsum` (it ships ACLSum's JSON lines).")
    return Path(next(iter(spec.submodule_search_locations))) / "dataset"


def detokenize(text: str) -> str:
    """Undoes the corpus' pre-tokenized spacing (`word , word ( x )` → `word, word (x)`)."""
    text = re.sub(r" ([.,;:!?)\]%])", r"\1", text)
    return re.sub(r"([(\[]) ", r"\1", text)


def paper_document(record: dict) -> str:
    """Title, then abstract, introduction and conclusion: what an aspect summary is written from."""
    sentences = [s for section in SECTIONS for s in record["sentences"].get(section, [])]
    return detokenize(" ".join([record["title"].rstrip(".") + "."] + sentences))


def _records(split: str):
    """The split's paper records, in file order."""
    if split not in SPLIT_FILES:
        raise UserError(f"ACLSum has splits {sorted(SPLIT_FILES)}, got {split!r}.")
    with open(aclsum_dir() / SPLIT_FILES[split], encoding="utf-8") as lines:
        for line in lines:
            if line.strip():
                yield json.loads(line)


def load_aclsum_sentences(split: str) -> list[Example]:
    """Every sentence of the split's papers (abstract, introduction, conclusion) → the aspect its highlights mark it
    for, or `none`. Ids read `<paper>/<section>-<index>`, so the bootstrap resamples papers. The source leads with
    the section's name (where a sentence stands says much of what it does); sentences marked for two aspects are
    left out (ambiguous references)."""
    examples = []
    for record in _records(split):
        for section in SECTIONS:
            sentences = record["sentences"].get(section, [])
            flags = {a: record["highlights"][a].get(section, []) for a in ASPECTS}
            for i, sentence in enumerate(sentences):
                marked = [a for a in ASPECTS if i < len(flags[a]) and flags[a][i]]
                if len(marked) > 1:
                    continue
                examples.append(Example(id=f"{record['id']}/{section}-{i}",
                                        document=f"{section}: {detokenize(sentence)}",
                                        summary=marked[0] if marked else "none"))
    return examples


def load_aclsum(split: str) -> list[Example]:
    """All (paper, aspect) pairs of one split, in file order, aspects in `ASPECTS` order."""
    examples = []
    for record in _records(split):
        document = paper_document(record)
        for aspect in ASPECTS:
            examples.append(Example(id=f"{record['id']}/{aspect}", document=document,
                                    summary=record["summary"][aspect], aspect=aspect))
    return examples
