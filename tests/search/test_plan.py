"""The search's pre-flight (`shrinktune.search.plan`): names that are safe folder names and taken once, in the
storage and in MLflow, even by searches started at the same moment; folders checked and made owner-only before any
work; a search folder of another user refused; a search interrupted before Ray Tune saved anything resumed."""

import importlib.util
import json
import os
import socket
import stat
import threading

import pytest

from shrinktune.errors import ConfigError, UserError
from shrinktune.search import plan as plan_module
from shrinktune.search.plan import CLAIM, RunOptions, check_name, claim, prepare_search, release
from shrinktune.tracking.mlflow_tracking import SearchTracker

SPACE = """# Run: python -m platform.search {path}
task: summarization
teacher: embedded
objectives: {{rouge1: max, latency_ms: min}}
dimensions:
  latent_dim: {{type: int, low: 96, high: 192}}
"""


@pytest.fixture
def space(tmp_path):
    path = tmp_path / "plan.yaml"
    path.write_text(SPACE.format(path=path))
    return path


def _options(tmp_path, **flags):
    paths = {"tracking_uri": f"sqlite:///{tmp_path}/mlflow.db", "storage_path": str(tmp_path / "runs"),
             "cache_root": str(tmp_path / "cache")}
    return RunOptions(**{**paths, **flags})


@pytest.mark.parametrize("name", ["a", "bart-small_1.2", "X" * 100])
def test_safe_names_pass(name):
    check_name(name, "--name")


@pytest.mark.parametrize("name", ["../../x", "a/b", "it's", "", ".", "..", "-x", "a b", "x" * 101, "ä"])
def test_names_that_are_paths_or_need_quoting_are_refused(name):
    with pytest.raises(ConfigError, match=r"--name must be 1-100 letters, digits, '\.', '_' or '-'.*e\.g\. --name"):
        check_name(name, "--name")
    with pytest.raises(ConfigError, match="--resume must be"):
        RunOptions(tracking_uri="sqlite:///x.db", storage_path="/tmp/x", cache_root="/tmp/c", resume=name or "?/")


def test_a_name_is_claimed_once_even_by_searches_starting_together(tmp_path):
    wins = []
    start = threading.Barrier(8)

    def contender():
        start.wait()
        wins.append(claim(str(tmp_path), "same"))

    threads = [threading.Thread(target=contender) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(wins) == [False] * 7 + [True]
    folder = tmp_path / "same"
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700  # its Tune state will be unpickled: owner-only
    assert (folder / CLAIM).read_text().split() == [socket.gethostname(), str(os.getpid())]


def test_a_claim_left_by_a_dead_process_on_this_host_is_taken_over(tmp_path):
    folder = tmp_path / "left"
    folder.mkdir()
    (folder / CLAIM).write_text(f"{socket.gethostname()} 999999999\n")  # no such process
    assert claim(str(tmp_path), "left")
    (folder / CLAIM).write_text("another-host 1\n")  # may be alive there: not ours to judge
    assert not claim(str(tmp_path), "left")
    release(str(tmp_path), "left")
    assert not folder.exists()
    (tmp_path / "empty").mkdir()  # a folder someone made is not free to take
    assert not claim(str(tmp_path), "empty")


def test_storage_and_cache_are_checked_and_made_before_any_work(tmp_path, space):
    (tmp_path / "a-file").write_text("")
    with pytest.raises(UserError, match=r"--storage .*a-file/runs cannot be made a folder \(Not a directory\); "
                                        "pass a writable folder"):
        prepare_search(space, _options(tmp_path, storage_path=str(tmp_path / "a-file" / "runs")))
    with pytest.raises(UserError, match=r"--cache-dir /proc/shrinktune-cache cannot be made a folder"):
        prepare_search(space, _options(tmp_path, cache_root="/proc/shrinktune-cache"))
    assert not (tmp_path / "mlflow.db").exists()  # refused before the store was opened

    plan = prepare_search(space, _options(tmp_path))
    storage = tmp_path / "runs"
    assert stat.S_IMODE(storage.stat().st_mode) == 0o700 and plan.folder.parent == storage
    assert (plan.folder / CLAIM).is_file() and (tmp_path / "cache").is_dir()


def test_a_name_in_mlflow_is_refused_though_its_folder_is_gone(tmp_path, space):
    tracker = SearchTracker(f"sqlite:///{tmp_path}/mlflow.db", experiment="plan")
    tracker.start_search("taken", {"trials": 1})
    with pytest.raises(UserError, match=r"a search named 'taken' is already in MLflow experiment 'plan' at .*; "
                                        "continue it with --resume taken, or pick another --name"):
        prepare_search(space, _options(tmp_path, name="taken"))


def test_default_names_of_searches_started_in_the_same_second_differ(tmp_path, space, monkeypatch):
    monkeypatch.setattr(plan_module.time, "strftime", lambda _: "20260101-000000")
    names = [prepare_search(space, _options(tmp_path)).name for _ in range(3)]
    assert names == ["plan-20260101-000000", "plan-20260101-000000-2", "plan-20260101-000000-3"]


def test_a_search_folder_of_another_user_is_refused(tmp_path, space, monkeypatch):
    (tmp_path / "runs" / "theirs").mkdir(parents=True)
    (tmp_path / "runs" / "theirs" / "tuner.pkl").write_bytes(b"")
    me = os.getuid()
    monkeypatch.setattr(plan_module.os, "getuid", lambda: me + 1)
    with pytest.raises(UserError, match=r"search folder .*/runs/theirs belongs to another user \(uid \d+\); its Ray "
                                        "Tune state would run code as you: use your own --storage"):
        prepare_search(space, _options(tmp_path, resume="theirs"))


def test_a_search_stopped_before_tune_saved_anything_resumes_afresh_under_its_run(tmp_path, space):
    first = prepare_search(space, _options(tmp_path, name="early"))
    first.tracker.start_search("early", {"space": str(space), "trials": 3, "max_concurrent": 1, "retries": 0,
                                         "sampler": "tpe"})
    first.tracker.end_search("KILLED")  # interrupted while the teacher was prepared: no Tune state

    resumed = prepare_search(space, _options(tmp_path, resume="early"))
    assert resumed.previous.info.run_id == first.tracker.parent_run_id
    assert not resumed.restore and resumed.budget.trials == 3  # Tune starts afresh, under the search's own run

    first.tracker.log_trial("t1", {"latent_dim": 96}, {"rouge1": 0.2})  # a trial ended, yet Tune's state is gone
    with pytest.raises(UserError, match=r"search 'early' has 1 trial run\(s\) in MLflow but no Ray Tune state at "
                                        r".*/runs/early; pass the --storage it ran with"):
        prepare_search(space, _options(tmp_path, resume="early"))


@pytest.mark.skipif(importlib.util.find_spec("sentencepiece") is not None, reason="sentencepiece is installed here")
def test_a_teacher_whose_tokenizer_needs_a_missing_package_is_one_line_before_ray(tmp_path):
    teacher = tmp_path / "marian"
    teacher.mkdir()
    (teacher / "config.json").write_text(json.dumps({
        "model_type": "marian", "vocab_size": 10, "d_model": 8, "encoder_layers": 1, "decoder_layers": 1,
        "encoder_attention_heads": 2, "decoder_attention_heads": 2, "encoder_ffn_dim": 8, "decoder_ffn_dim": 8,
        "pad_token_id": 0, "decoder_start_token_id": 0}))
    (teacher / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "MarianTokenizer"}))
    for name in ("source.spm", "target.spm"):
        (teacher / name).write_bytes(b"")
    (teacher / "vocab.json").write_text('{"<pad>": 0}')
    space = tmp_path / "mt.yaml"
    space.write_text(f"task: summarization\nteacher: {teacher}\nobjectives: {{rouge1: max, latency_ms: min}}\n"
                     "dimensions:\n  latent_dim: {type: int, low: 2, high: 4}\n")
    with pytest.raises(UserError, match=r"MarianTokenizer requires the SentencePiece library, which is not installed; "
                                        r"pip install sentencepiece") as error:
        prepare_search(space, _options(tmp_path))
    assert "\n" not in str(error.value) and not (tmp_path / "mlflow.db").exists()


def test_a_classification_dataset_without_its_label_column_is_one_line_before_ray(tmp_path):
    import datasets

    table = datasets.Dataset.from_dict({"text": ["bad", "good"], "label": [0, 1]})
    datasets.DatasetDict({"train": table, "validation": table}).save_to_disk(tmp_path / "reviews")
    space = tmp_path / "reviews.yaml"
    space.write_text(f"task: {{kind: classification, dataset: {tmp_path / 'reviews'}, label_column: sentiment}}\n"
                     "teacher: embedded\nobjectives: {accuracy: max, latency_ms: min}\n"
                     "dimensions:\n  latent_dim: {type: int, low: 96, high: 192}\n")
    with pytest.raises(UserError, match=r"no column 'sentiment'.*label_column") as error:
        prepare_search(space, _options(tmp_path))
    assert "\n" not in str(error.value) and not (tmp_path / "mlflow.db").exists()
