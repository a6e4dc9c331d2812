import json

import pytest

from shrinktune.data.aclsum import (
    ASPECTS,
    SECTIONS,
    SENTENCE_LABELS,
    aclsum_dir,
    detokenize,
    load_aclsum,
    load_aclsum_sentences,
)
from shrinktune.data.tasks import get_task, load_task_splits
from shrinktune.errors import UserError
from shrinktune.measure.intervals import document_groups


def test_splits_have_three_aspects_per_paper():
    sizes = {split: len(load_aclsum(split)) for split in ("train", "validation", "test")}
    assert sizes == {"train": 300, "validation": 150, "test": 300}


def test_aspect_leads_the_source_and_summary_is_that_aspect():
    examples = load_aclsum("validation")[:3]
    assert [e.aspect for e in examples] == list(ASPECTS)
    assert len({e.document for e in examples}) == 1
    for e in examples:
        assert e.source.startswith(f"{e.aspect}: ")
        assert e.summary and e.summary != examples[0].document


def test_detokenize_undoes_corpus_spacing():
    assert detokenize("answer extraction ( QA ) , we show 20 % .") == "answer extraction (QA), we show 20%."


def test_unknown_task_names_the_known_ones():
    with pytest.raises(UserError, match="unknown task 'nope'; known tasks: .*summarization"):
        get_task("nope")


def test_task_splits_limit():
    splits = load_task_splits(get_task("summarization"), ("validation",), limit=5)
    assert list(splits) == ["validation"] and len(splits["validation"]) == 5


def test_tasks_declare_the_aspects_their_pairs_ask_for():
    """The embedded task asks for ACLSum's three aspects (what a loaded model then requires); hub tasks for none."""
    assert get_task("summarization").aspects == ASPECTS
    validation = load_task_splits(get_task("summarization"), ("validation",))["validation"]
    assert {e.aspect for e in validation} == set(ASPECTS)
    assert get_task("cnn_dailymail").aspects == get_task("xsum").aspects == ()


def test_sentence_classification_splits_by_paper_with_four_labels():
    """Catches a sentence task that leaks papers across splits, invents labels, or mislabels highlights."""
    splits = load_task_splits(get_task("classification"))
    papers = {split: {e.id.split("/")[0] for e in examples} for split, examples in splits.items()}
    assert not papers["train"] & papers["validation"] and not papers["train"] & papers["test"]
    assert not papers["validation"] & papers["test"]
    assert {split: len(examples) for split, examples in splits.items()} == {
        "train": 3844, "validation": 1969, "test": 3740}
    for examples in splits.values():
        assert {e.summary for e in examples} == set(SENTENCE_LABELS)
        assert 0.55 < sum(e.summary == "none" for e in examples) / len(examples) < 0.66  # majority baseline
        assert all(e.aspect is None and e.document.split(": ", 1)[0] in SECTIONS for e in examples)
    groups = document_groups(splits["validation"])
    assert len(set(groups)) == 50  # the bootstrap resamples papers, not sentences


def test_a_highlighted_sentence_carries_its_aspect():
    record = json.loads((aclsum_dir() / "train.jsonl").read_text(encoding="utf-8").splitlines()[0])
    flags = record["highlights"]["challenge"]["introduction"]
    i = flags.index(1)
    example = next(e for e in load_aclsum_sentences("train") if e.id == f"{record['id']}/introduction-{i}")
    assert example.summary == "challenge"
    assert example.document == "introduction: " + detokenize(record["sentences"]["introduction"][i])
