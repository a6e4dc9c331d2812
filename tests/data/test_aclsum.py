import pytest

from shrinktune.data.aclsum import ASPECTS, detokenize, load_aclsum
from shrinktune.data.tasks import get_task, load_task_splits
from shrinktune.errors import UserError


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
