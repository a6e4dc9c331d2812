"""Loading a folder as a summarizer: the decoding and task it was measured with, and the inputs it refuses."""

import json

import pytest

from shrinktune import load_summarizer
from shrinktune.data.aclsum import ASPECTS
from shrinktune.data.tasks import get_task
from shrinktune.errors import UserError
from shrinktune.models.generation import GenerationSettings
from shrinktune.models.summarizer import Summarizer, saved_task, task_inputs
from shrinktune.training import teacher as teachers
from shrinktune.training.teacher import search_teacher_dir

DECODING = GenerationSettings(max_new_tokens=6, source_token_bias=2.0)


def _folder(tmp_path, model, tokenizer, **record):
    """`model` saved in a folder, with a trial's json naming `record` (none when empty)."""
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    if record:
        (tmp_path / "shrinktune_trial.json").write_text(json.dumps(record))
    return tmp_path


def test_empty_documents_are_refused(tmp_path, tiny_teacher, tokenizer):
    summarize = load_summarizer(_folder(tmp_path, tiny_teacher, tokenizer, task="summarization"))
    for empty in ("", "  \n\t"):
        with pytest.raises(UserError, match="the document is empty; pass the text to summarize"):
            summarize(empty, aspect="approach")
    with pytest.raises(UserError, match="document 2 of 3 is empty"):
        summarize(["A paper.", " ", "Another paper."], aspect="approach")
    with pytest.raises(UserError, match="document 1 of 2 is a NoneType, not text"):
        summarize([None, "A paper."], aspect="approach")
    assert summarize([], aspect="approach") == []


def test_a_model_trained_on_aspects_needs_one_of_them(tmp_path, tiny_teacher, tokenizer):
    """The embedded task's checkpoint (its task recorded as older checkpoints record it: the name alone)."""
    summarize = load_summarizer(_folder(tmp_path, tiny_teacher, tokenizer, task="summarization"))
    assert summarize.aspects == ASPECTS
    with pytest.raises(UserError, match="got no aspect; pass aspect= one of challenge, approach, outcome"):
        summarize("A paper about parsing.")
    with pytest.raises(UserError, match="got unknown aspect 'method'; pass aspect= one of challenge, approach, outc"):
        summarize("A paper about parsing.", aspect="method")
    assert isinstance(summarize("A paper about parsing.", aspect="approach"), str)


def test_a_model_of_plain_summaries_takes_no_aspect(tmp_path, tiny_teacher, tokenizer):
    summarize = load_summarizer(_folder(tmp_path, tiny_teacher, tokenizer, task="xsum"))
    assert summarize.aspects == () and summarize.max_source_tokens == 128  # xsum's 1024, capped by 128 positions
    with pytest.raises(UserError, match="writes plain summaries, without aspects; got aspect='approach'"):
        summarize("A news story.", aspect="approach")
    assert isinstance(summarize("A news story."), str)


def test_a_recorded_source_prefix_leads_what_the_model_reads(tmp_path, tiny_teacher, tokenizer, monkeypatch):
    summarize = load_summarizer(_folder(tmp_path, tiny_teacher, tokenizer, task="books", aspects=[],
                                        source_prefix="translate English to French: "))
    read = []
    real = summarize.tokenizer.__class__.__call__
    monkeypatch.setattr(summarize.tokenizer.__class__, "__call__",
                        lambda self, texts, **kw: read.append(texts) or real(self, texts, **kw))
    assert isinstance(summarize("the cat"), str)
    assert read[0] == ["translate English to French: the cat"]


def test_a_folder_that_records_no_task_takes_any_aspect(tmp_path, tiny_teacher, tokenizer):
    summarize = load_summarizer(_folder(tmp_path, tiny_teacher, tokenizer))
    assert summarize.aspects is None
    assert isinstance(summarize("A paper."), str) and isinstance(summarize("A paper.", aspect="anything"), str)
    with pytest.raises(UserError, match="is empty"):
        summarize(" ")


def test_the_recorded_task_decides_source_length_and_aspects(tmp_path):
    assert task_inputs({}) == (256, None)
    assert task_inputs({"task": "summarization"}) == (256, ASPECTS)
    assert task_inputs({"task": "cnn_dailymail"}) == (1024, ())
    # what the folder records wins: a task registered only in the process that ran the search is still known
    assert task_inputs({"task": "gone", "aspects": ["pros", "cons"], "max_source_tokens": 64}) == (64, ("pros", "cons"))
    assert saved_task(tmp_path) == {} and saved_task("facebook/bart-base") == {}


def test_the_search_teacher_folder_carries_the_decoding_and_leaves_the_teacher_alone(tmp_path, tiny_teacher_dir):
    task = get_task("summarization")
    own = (tiny_teacher_dir / "generation_config.json").read_text()
    folder = search_teacher_dir(tiny_teacher_dir, DECODING, task, root=tmp_path)
    summarize = Summarizer.from_pretrained(folder)
    config = summarize.model.generation_config
    assert (config.max_new_tokens, config.source_token_bias) == (6, 2.0)
    assert summarize.max_source_tokens == 128 and summarize.aspects == ASPECTS
    info = json.loads((folder / "shrinktune_teacher.json").read_text())
    assert info["generation"] == DECODING.as_dict() and info["teacher"] == str(tiny_teacher_dir)
    assert (tiny_teacher_dir / "generation_config.json").read_text() == own  # the shared teacher is not rewritten
    assert (folder / "model.safetensors").stat().st_ino == (tiny_teacher_dir / "model.safetensors").stat().st_ino
    assert search_teacher_dir(tiny_teacher_dir, DECODING, task, root=tmp_path) == folder  # cached
    assert search_teacher_dir(folder, DECODING, task, root=tmp_path) == folder  # already the search's folder
    other = search_teacher_dir(tiny_teacher_dir, GenerationSettings(max_new_tokens=5), task, root=tmp_path)
    assert other != folder and load_summarizer(other).model.generation_config.max_new_tokens == 5


def test_a_hub_teacher_gets_a_local_folder_with_the_search_decoding(tmp_path, monkeypatch, tiny_teacher, tokenizer):
    """A hub id (here a stand-in, offline) is saved in full, with the search's decoding, keyed by its revision."""
    loaded = []

    def from_hub(name, device=None):
        loaded.append(name)
        return tiny_teacher, tokenizer

    monkeypatch.setattr(teachers, "load_teacher", from_hub)
    monkeypatch.setattr(teachers, "_hub_revision", lambda name: "abc123")
    folder = search_teacher_dir("org/tiny-teacher", DECODING, get_task("xsum"), root=tmp_path)
    assert loaded == ["org/tiny-teacher"] and (folder / "model.safetensors").is_file()
    summarize = load_summarizer(folder)
    assert summarize.model.generation_config.source_token_bias == 2.0 and summarize.aspects == ()
    assert json.loads((folder / "shrinktune_teacher.json").read_text())["teacher"] == "org/tiny-teacher"


def test_a_folder_that_holds_no_model_is_named_as_what_was_passed(tmp_path):
    (tmp_path / "config.json").write_text("{}")  # no model_type: transformers raises ValueError
    with pytest.raises(UserError, match=rf"^checkpoint '{tmp_path}' could not be loaded \(Unrecognized model.*\); "
                                        r"pass a local folder written by save_pretrained \(config.json, weights"):
        load_summarizer(tmp_path)
    with pytest.raises(UserError, match=rf"^checkpoint '{tmp_path}/gone': no such folder"):
        load_summarizer(tmp_path / "gone")
