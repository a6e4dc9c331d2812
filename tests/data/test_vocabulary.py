"""The output shortlist of a task: the training text's tokens, never the held-out splits'."""

import json

from shrinktune.data import vocabulary
from shrinktune.data.aclsum import aclsum_dir, load_aclsum
from shrinktune.data.pseudo_sources import paper_of
from shrinktune.data.tasks import get_task, load_task_splits
from shrinktune.data.vocabulary import training_texts, training_token_ids

SUMMARIZATION = get_task("summarization")


def test_the_shortlist_holds_every_token_of_the_training_text_and_the_special_ones(tokenizer):
    train = load_aclsum("train")[:9]
    ids = training_token_ids(SUMMARIZATION, tokenizer, train)
    assert ids == sorted(set(ids)) and set(tokenizer.all_special_ids) <= set(ids)
    for example in train:  # documents in full, beyond the input's truncation, and the summaries
        for text in (example.document, example.summary):
            assert set(tokenizer(text, add_special_tokens=False)["input_ids"]) <= set(ids)
    paper = json.loads((aclsum_dir() / "paper_jsons" / f"{paper_of(train[0].id)}.json").read_text())
    body = " ".join(p["text"] for p in paper["pdf_parse"]["body_text"])
    assert set(tokenizer(body, add_special_tokens=False)["input_ids"]) <= set(ids)
    assert len(ids) < len(tokenizer) // 2


def test_the_shortlist_reads_no_validation_or_test_paper(monkeypatch):
    train = load_aclsum("train")
    read = []
    monkeypatch.setattr(vocabulary, "paper_text", lambda paper: read.append(paper) or [])
    texts = set(training_texts(SUMMARIZATION, train))
    assert set(read) == {paper_of(e.id) for e in train}
    for example in (e for split in ("validation", "test") for e in load_aclsum(split)):
        assert paper_of(example.id) not in read
        assert example.document not in texts and example.summary not in texts


def test_a_classifiers_shortlist_is_its_class_names(tokenizer):
    """A classifier writes class names only: its head needs their tokens and the special ones, nothing else."""
    task = get_task("classification")
    train = load_task_splits(task, ("train",))["train"]
    ids = training_token_ids(task, tokenizer, train)
    names = {i for label in ("challenge", "approach", "outcome", "none")
             for i in tokenizer(label, add_special_tokens=False)["input_ids"]}
    assert set(ids) == names | set(tokenizer.all_special_ids)
