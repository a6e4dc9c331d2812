"""ACLSum, the embedded dataset: 250 ACL papers, each with three aspect summaries (challenge, approach, outcome).

The `aclsum` package ships the data as JSON lines; we read them directly, because importing the package pulls in
libraries we do not need. Splits are the package's own: 100 train / 50 validation / 100 test papers, so 300 / 150
/ 300 (document, aspect) pairs.
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


def load_aclsum(split: str) -> list[Example]:
    """All (paper, aspect) pairs of one split, in file order, aspects in `ASPECTS` order."""
    if split not in SPLIT_FILES:
        raise UserError(f"ACLSum has splits {sorted(SPLIT_FILES)}, got {split!r}.")
    path = aclsum_dir() / SPLIT_FILES[split]
    examples = []
    with open(path, encoding="utf-8") as lines:
        for line in lines:
            if not line.strip():
                continue
            record = json.loads(line)
            document = paper_document(record)
            for aspect in ASPECTS:
                examples.append(
                    Example(id=f"{record['id']}/{aspect}", document=document, summary=record["summary"][aspect],
                            aspect=aspect)
                )
    return examples
