"""Tests for shrinktune.data.tasks: task kinds, and a space file's `task:` as a mapping of a task's fields."""

import pytest

from shrinktune.data.tasks import TASKS, Task, get_task, task_name, task_param, task_problems, task_spec
from shrinktune.errors import UserError


def test_registered_tasks_have_known_kinds():
    assert {name: task.kind for name, task in TASKS.items() if task.kind != "summarization"} == {
        "classification": "classification", "wmt16-ro-en": "translation", "opus_books-en-fr": "translation"}
    assert get_task("wmt16-ro-en").source_language == "ro" and get_task("wmt16-ro-en").target_language == "en"


def test_a_mapping_on_a_base_task_overrides_its_fields():
    task = get_task({"base": "wmt16-ro-en", "dataset": "/data/wmt16-copy", "max_source_tokens": 64})
    assert (task.kind, task.source_language, task.dataset, task.max_source_tokens) == (
        "translation", "ro", "/data/wmt16-copy", 64)
    assert task.name == "wmt16-ro-en"


def test_a_classification_mapping_names_its_text_and_label_columns():
    task = get_task({"kind": "classification", "dataset": "./sst", "label_column": "sentiment", "name": "sst"})
    assert (task.name, task.document_column, task.summary_column) == ("sst", "text", "sentiment")
    assert task_name({"kind": "classification", "dataset": "./sst"}) == "./sst"


def test_a_spec_survives_mlflow_as_a_parameter():
    spec = {"kind": "translation", "dataset": "./para", "source_language": "de", "target_language": "en"}
    assert task_spec(task_param(spec)) == spec and task_spec(task_param("summarization")) == "summarization"


@pytest.mark.parametrize("spec,message", [
    ({"kind": "translation", "dataset": "./para"},
     "task.source_language must name the source language of a translation dataset"),
    ({"kind": "translation", "dataset": "./para", "source_language": "de"},
     "task.target_language must name the target language"),
    ({"kind": "regression", "dataset": "./x"}, "task.kind must be one of summarization, translation, classification"),
    ({"kind": "classification"}, "task needs a dataset"),
    ({"base": "nope"}, "task.base 'nope' is unknown"),
    ({"dataset": "./x", "colour": 1}, "task.colour is not a task field"),
    ({"dataset": "./x", "max_source_tokens": 0}, "task.max_source_tokens must be an integer ≥ 1, got 0"),
    ({"dataset": "./x", "label_column": "y"}, "task.text_column / task.label_column are a classification dataset's"),
    (["summarization"], "task must name a task"),
    ({"dataset": "./x", "source_prefix": 3}, "task.source_prefix must be text"),
    ({"dataset": "./x", "splits": {"dev": "train[:10]"}}, "task.splits must map train / validation / test"),
])
def test_bad_task_specs_are_named_with_the_fix(spec, message):
    assert any(message in problem for problem in task_problems(spec)), task_problems(spec)
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")):
        get_task(spec)


def test_a_task_of_unknown_kind_is_refused():
    with pytest.raises(UserError, match="unknown kind 'poetry'"):
        Task(name="x", description="", dataset="x", kind="poetry")


def test_a_source_prefix_leads_every_encoder_input_and_is_recorded(tmp_path):
    import datasets

    from shrinktune.data.tasks import load_task_splits

    rows = {"translation": [{"en": "the cat", "fr": "le chat"}, {"en": "a dog", "fr": "un chien"}]}
    datasets.DatasetDict({"train": datasets.Dataset.from_dict(rows)}).save_to_disk(tmp_path / "books")
    task = get_task({"kind": "translation", "dataset": str(tmp_path / "books"), "source_language": "en",
                     "target_language": "fr", "source_prefix": "translate English to French: "})
    pairs = load_task_splits(task, ("train",))["train"]
    assert [(p.document, p.source, p.summary) for p in pairs] == [
        ("the cat", "translate English to French: the cat", "le chat"),
        ("a dog", "translate English to French: a dog", "un chien")]


def test_a_dataset_of_one_split_is_sliced_into_three(tmp_path):
    """opus_books ships a train split only: the task reads validation and test from its first rows."""
    import datasets

    from shrinktune.data.tasks import load_task_splits

    rows = {"translation": [{"en": f"line {i}", "fr": f"ligne {i}"} for i in range(10)]}
    datasets.DatasetDict({"train": datasets.Dataset.from_dict(rows)}).save_to_disk(tmp_path / "books")
    task = get_task({"base": "opus_books-en-fr", "dataset": str(tmp_path / "books"),
                     "splits": {"validation": "train[:2]", "test": "train[2:4]", "train": "train[4:]"}})
    loaded = load_task_splits(task)
    assert {split: [p.document for p in pairs] for split, pairs in loaded.items()} == {
        "validation": ["line 0", "line 1"], "test": ["line 2", "line 3"],
        "train": [f"line {i}" for i in range(4, 10)]}
    assert dict(get_task("opus_books-en-fr").splits) == {
        "validation": "train[:1000]", "test": "train[1000:2000]", "train": "train[2000:]"}
    # A mapping on the base changes the splits it names and keeps the others (train never swallows validation).
    assert dict(get_task({"base": "opus_books-en-fr", "splits": {"validation": "train[:500]"}}).splits) == {
        "validation": "train[:500]", "test": "train[1000:2000]", "train": "train[2000:]"}
