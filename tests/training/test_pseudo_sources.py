"""Extra pseudo-label inputs: windows of the training papers, the guard against held-out papers, and the pairs the
student trains on (`pseudo_label_windows`)."""

import json
import math
import re
from dataclasses import replace

import pytest
import torch

import shrinktune.training.distill as distill
from shrinktune.data.aclsum import aclsum_dir, load_aclsum
from shrinktune.data.examples import Example
from shrinktune.data.pseudo_sources import (
    OVERLAP_WORDS,
    check_no_overlap,
    document_windows,
    paper_of,
    window_examples,
)
from shrinktune.data.tasks import Task, get_task
from shrinktune.errors import ConfigError
from shrinktune.models.families import encoder_module
from shrinktune.models.student import build_student
from shrinktune.search.trial import TrialContext, _training_pairs
from shrinktune.settings import TrialSettings
from shrinktune.training.distill import cached_pseudo_labels, concat_pairs
from shrinktune.training.encode import encode_pairs
from shrinktune.training.finetune import FinetuneSettings, finetune_on_states

SUMMARIZATION = get_task("summarization")  # the real task: 256 source tokens, windows of 179 words
TINY = replace(SUMMARIZATION, max_source_tokens=48, max_target_tokens=16)  # what the tiny teacher reads


@pytest.fixture(scope="module")
def aclsum():
    return {split: load_aclsum(split) for split in ("train", "validation", "test")}


def paper_json(paper: str) -> dict:
    return json.loads((aclsum_dir() / "paper_jsons" / f"{paper}.json").read_text())


def title_of(paper: str) -> str:
    return paper_json(paper)["title"].rstrip(".")


def words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.lower())


def position(text: list[str], run: list[str]) -> int:
    """Where the words `run` first occur in `text`; fails the test when they do not."""
    starts = [i for i in range(len(text)) if text[i:i + len(run)] == run]
    assert starts, f"{' '.join(run)!r} not found"
    return starts[0]


# ---------------------------------------------------------------------------------------------------- the data


def test_a_pseudo_label_set_of_the_real_training_papers_holds_no_held_out_paper(aclsum, tiny_teacher, tokenizer,
                                                                               tmp_path, monkeypatch):
    """The issue's requirement: the teacher's extra summaries come from training papers only, by id and by title."""
    # What the teacher writes does not matter here, only which inputs the set holds: a fast stand-in generates.
    monkeypatch.setattr(distill, "generate_summaries", lambda teacher, tokenizer, examples, **_: [
        e.document[:40] for e in examples])
    extra = window_examples(SUMMARIZATION, aclsum["train"], 4)
    labelled = cached_pseudo_labels(tiny_teacher, tokenizer, extra, max_source_tokens=256, root=tmp_path)
    [cached] = (tmp_path / "pseudo-labels").glob("*/pseudo_labels.json")
    papers = {paper_of(row["id"]) for row in json.loads(cached.read_text())}
    train = {paper_of(e.id) for e in aclsum["train"]}
    held_out = {paper_of(e.id) for split in ("validation", "test") for e in aclsum[split]}
    assert len(labelled) == 1200 and len(train) == 100 and len(held_out) == 150
    assert papers == train and not papers & held_out  # every training paper has windows; no held-out one does
    held_out_titles = {" ".join(words(title_of(p))) for p in held_out}
    window_titles = {" ".join(words(e.document.split(". ", 1)[0])) for e in extra}
    assert window_titles == {" ".join(words(title_of(p))) for p in train}
    assert not window_titles & held_out_titles
    check_no_overlap(extra, {"validation": aclsum["validation"], "test": aclsum["test"]})  # no shared passage either


@pytest.mark.parametrize("disguise, reason", [
    ("none", "it is that paper"),
    ("renamed", "same title/lead as validation paper {paper}"),
    ("untitled", f"a {OVERLAP_WORDS}-word passage shared with validation paper {{paper}}"),
])
def test_check_no_overlap_refuses_a_validation_paper_in_one_line(aclsum, disguise, reason):
    val = aclsum["validation"][:3]  # one paper, three aspects
    paper = paper_of(val[0].id)
    leaked = window_examples(SUMMARIZATION, val, 1)  # the window right after its input: its introduction goes on
    if disguise != "none":
        leaked = [replace(e, id=e.id.replace(paper, "P99-0001")) for e in leaked]
        first = "P99-0001"
    else:
        first = paper
    if disguise == "untitled":
        leaked = [replace(e, document="Another title. " + e.document.split(". ", 1)[1]) for e in leaked]
    extra = window_examples(SUMMARIZATION, aclsum["train"][:6], 2) + leaked
    with pytest.raises(ConfigError) as info:
        check_no_overlap(extra, {"validation": aclsum["validation"], "test": aclsum["test"]})
    message = str(info.value)
    assert "\n" not in message
    assert f"the validation split (3 extra inputs, first: {first} ({reason.format(paper=paper)}))" in message
    assert "test split" not in message and "set pseudo_label_windows: 0" in message


def test_windows_lead_with_the_title_reach_beyond_the_input_and_are_at_most_n(aclsum, tokenizer):
    train = aclsum["train"][:9]  # three papers
    extra = window_examples(SUMMARIZATION, train, 3)
    assert len(extra) == 27  # long papers: 3 windows for each (paper, aspect) pair
    for example in train:
        paper, title = paper_of(example.id), title_of(paper_of(example.id))
        windows = [e for e in extra if paper_of(e.id) == paper and e.aspect == example.aspect]
        assert len(windows) == 3 and len({e.id for e in windows}) == 3
        assert all(re.fullmatch(rf"{paper}/w\d+/{example.aspect}", e.id) for e in windows)
        full_text = words(" ".join(p["text"] for p in paper_json(paper)["pdf_parse"]["body_text"]))
        seen = tokenizer.decode(tokenizer(example.source, max_length=256, truncation=True)["input_ids"],
                                skip_special_tokens=True)
        reached = position(full_text, words(seen)[-9:-1])  # where the input stops (its last word may be cut)
        for window in windows:
            body = window.document.removeprefix(title + ".")
            assert window.document.startswith(title) and len(body.split()) > 100
            assert position(full_text, words(body)[:8]) > reached + 8  # it starts after the text the input read
    assert window_examples(SUMMARIZATION, train, 0) == []


def test_plain_documents_give_evenly_spaced_slices_beyond_the_input():
    text = " ".join(f"w{i}" for i in range(1000))
    windows = document_windows(text, 3, skip_words=100, window_words=50)  # 18 slices after word 100
    assert [k for k, _ in windows] == [1, 9, 18]  # first, middle (round(8.5) = 8), last
    assert windows[0][1].split()[0] == "w100" and len(windows[0][1].split()) == 50
    assert windows[-1][1].split()[-1] == "w999"
    assert document_windows(" ".join(text.split()[:120]), 3, skip_words=100, window_words=50) == []  # 20 < 25 left
    hub = Task(name="news", description="", dataset="local/news", max_source_tokens=100)
    train = [Example(id="train/0", document=text, summary="s"), Example(id="train/1", document="too short", summary="")]
    extra = window_examples(hub, train, 2)
    assert [e.id for e in extra] == ["train/0/w1", "train/0/w13"] and {paper_of(e.id) for e in extra} == {"train/0"}
    assert extra[0].document.split()[0] == "w100" and extra[0].aspect is None


@pytest.mark.parametrize("example_id, paper", [
    ("P06-1112/w3/outcome", "P06-1112"), ("P06-1112/outcome", "P06-1112"), ("2020.acl-main.5/w12/challenge",
                                                                            "2020.acl-main.5"),
    ("train/17/w2", "train/17"), ("train/17", "train/17"),
])
def test_paper_of_recovers_the_document(example_id, paper):
    assert paper_of(example_id) == paper


# ---------------------------------------------------------------------------------------------------- training


def encoded(teacher, tokenizer, examples, max_source_tokens=48):
    return encode_pairs(teacher.encoder, tokenizer, examples, max_source_tokens=max_source_tokens,
                        max_target_tokens=16, start_id=tokenizer.cls_token_id)


def test_concatenated_pairs_pad_to_the_longer_source_and_train(tiny_teacher, tokenizer, few_examples):
    first, second = encoded(tiny_teacher, tokenizer, few_examples[:6]), encoded(tiny_teacher, tokenizer,
                                                                               few_examples[6:], 20)
    first.key, second.key = "a", "b"
    both = concat_pairs(first, second, pad_id=tokenizer.pad_token_id)
    assert len(both) == 12 and both.states.shape[1] == first.states.shape[1] > second.states.shape[1]
    assert torch.equal(both.states[:6], first.states) and torch.equal(both.labels[:6], first.labels)
    assert torch.equal(both.states[6:, :20], second.states) and not both.states[6:, 20:].any()
    assert not both.attention_mask[6:, 20:].any() and torch.equal(both.attention_mask[6:, :20], second.attention_mask)
    assert both.key not in ("", "a", "b") and concat_pairs(first, second, pad_id=0).key == both.key
    student = build_student(tiny_teacher, latent_dim=32, decoder_layers=1)
    [loss] = finetune_on_states(student, both, FinetuneSettings(epochs=1, batch_size=4))
    assert math.isfinite(loss)


@pytest.fixture
def trial_inputs(aclsum, tiny_teacher, tokenizer, tmp_path):
    train = aclsum["train"][:6]  # two papers
    splits = {"train": train, "validation": aclsum["validation"]}
    ctx = TrialContext(task="summarization", teacher_dir="tiny", cache_root=str(tmp_path))
    return splits, encoded(tiny_teacher, tokenizer, train), ctx


def test_training_pairs_add_the_teachers_summaries_of_windows(trial_inputs, tiny_teacher, tokenizer, tmp_path):
    splits, pairs, ctx = trial_inputs
    plain = TrialSettings(method="pseudo_labels")
    without = _training_pairs(tiny_teacher, tokenizer, TINY, splits, pairs, plain, ctx)
    with_windows = _training_pairs(tiny_teacher, tokenizer, TINY, splits, pairs,
                                   replace(plain, pseudo_label_windows=2), ctx)
    assert len(without) == 6 and len(with_windows) == 6 + 6 * 2
    assert torch.equal(with_windows.labels[:6, :without.labels.shape[1]], without.labels)
    # a student with fewer encoder layers reads the windows through its own encoder; the labels stay the teacher's
    shallow = _training_pairs(tiny_teacher, tokenizer, TINY, splits, pairs,
                              replace(plain, pseudo_label_windows=2, encoder_layers=1), ctx)
    extra = cached_pseudo_labels(tiny_teacher, tokenizer, window_examples(TINY, splits["train"], 2),
                                 max_source_tokens=48, root=tmp_path)
    student_encoder = encoder_module(build_student(tiny_teacher, encoder_layers=1))
    expected = encode_pairs(student_encoder, tokenizer, extra, max_source_tokens=48, max_target_tokens=16,
                            start_id=tiny_teacher.config.decoder_start_token_id)
    assert torch.allclose(shallow.states[6:], expected.states, atol=1e-6)
    assert torch.equal(shallow.labels[6:, :expected.labels.shape[1]], expected.labels)
    assert not torch.allclose(with_windows.states[6:], shallow.states[6:])


def test_training_pairs_check_every_window_set_and_ignore_windows_without_pseudo_labels(
        trial_inputs, aclsum, tiny_teacher, tokenizer, caplog):
    splits, pairs, ctx = trial_inputs
    windows = TrialSettings(method="pseudo_labels", pseudo_label_windows=1)
    leaked = {**splits, "train": aclsum["test"][:6]}
    with pytest.raises(ConfigError, match=r"overlap the test split \(6 extra inputs, first: "):
        _training_pairs(tiny_teacher, tokenizer, TINY, leaked, pairs, windows, ctx)
    sft = replace(windows, method="sft")
    assert _training_pairs(tiny_teacher, tokenizer, TINY, splits, pairs, sft, ctx) is pairs
    assert "pseudo_label_windows is 1 but method is 'sft'" in caplog.text
