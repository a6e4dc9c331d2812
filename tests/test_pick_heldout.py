"""`python -m platform.pareto ... --pick NAME --test`: the pick and the teacher on the test split, logged as test_*."""

import json
import shutil
import time

import pytest

from shrinktune.errors import UserError
from shrinktune.pick.cli import main
from shrinktune.tracking.mlflow_tracking import SearchTracker, default_tracking_uri

OBJ = {"rouge1": "max", "latency_ms": "min"}


def _checkpoint(storage, search: str, trial: str, source) -> str:
    """A copy of the trial checkpoint `source` where Ray Tune puts one: <storage>/<search>/<trial folder>/..."""
    folder = storage / search / f"trainable_{trial}" / "checkpoint_000000"
    shutil.copytree(source, folder)
    return str(folder)


@pytest.fixture(scope="module")
def search(tmp_path_factory, tokenizer, tiny_bert2bert):
    """A finished search on the embedded task: a tiny teacher folder (its `teacher_dir` param; the tag points
    elsewhere and is ignored), a trial with a 1-layer checkpoint and one whose checkpoint is gone. Beside it,
    searches whose teacher is logged otherwise: only on their teacher's run, whole or not, or only as a tag."""
    from shrinktune.models.folders import TRIAL_INFO

    root = tmp_path_factory.mktemp("heldout")
    storage = root / "shrinktune_runs"
    teacher = root / "teacher"
    tiny_bert2bert(tokenizer, layers=2).save_pretrained(teacher)
    tokenizer.save_pretrained(teacher)
    hollow = root / "hollow-teacher"  # no tokenizer
    tiny_bert2bert(tokenizer, layers=2).save_pretrained(hollow)
    student = root / "student"
    tiny_bert2bert(tokenizer, layers=1, seed=1).save_pretrained(student)
    tokenizer.save_pretrained(student)
    (student / TRIAL_INFO).write_text(json.dumps({"config": {"latent_dim": 32}}))
    tracker = SearchTracker(default_tracking_uri(root), "exp")
    tracker.check()
    params = {"objectives": json.dumps(OBJ), "task": "summarization", "storage": str(storage),
              "generation": json.dumps({"max_new_tokens": 6, "no_repeat_ngram_size": 0})}
    runs, teachers = {}, {}
    for name, logged in (("search", "param"), ("child", "teacher run"), ("child-hollow", "hollow teacher run"),
                         ("tagged", "tag")):
        tracker.start_search(name, {**params, **({"teacher_dir": str(teacher)} if logged == "param" else {})})
        if logged.endswith("teacher run"):
            folder = str(hollow if "hollow" in logged else teacher)
            teachers[name] = tracker.log_teacher(folder, {"rouge1": 0.2, "latency_ms": 100.0}, {"teacher_dir": folder})
            tracker.tag(teachers[name], "shrinktune.teacher_dir", str(root / "elsewhere"))
        tracker.tag(tracker.parent_run_id, "shrinktune.teacher_dir", str(root / "elsewhere"))
        tracker.log_reference({"rouge1": 0.2, "latency_ms": 100.0})
        kept = tracker.log_trial("kept", {"latent_dim": 32}, {"rouge1": 0.19, "latency_ms": 60.0},
                                 checkpoint=_checkpoint(storage, name, "kept", student))
        if name == "search":
            runs["kept"] = kept
            runs["gone"] = tracker.log_trial("gone", {"latent_dim": 16}, {"rouge1": 0.15, "latency_ms": 30.0},
                                             checkpoint=str(storage / name / "trainable_gone" / "checkpoint_000000"))
        tracker.end_search()
        time.sleep(0.02)
    return {"uri": tracker.tracking_uri, "runs": runs, "teacher": teacher, "hollow": hollow}


def _main(capsys, search, *args):
    code = main(["exp", "--tracking-uri", search["uri"], "--no-tag", "--search", "search", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_test_scores_the_pick_and_the_teacher_and_logs_test_metrics(capsys, search):
    from mlflow.tracking import MlflowClient

    code, out, err = _main(capsys, search, "--pick", "best-rouge", "--test", "--test-samples", "6")
    assert code == 0, err
    assert "Held-out test of trial kept (6 test pairs" in out
    assert "teacher  R-1" in out and "pick     R-1" in out and "R-1 difference" in out
    metrics = MlflowClient(search["uri"]).get_run(search["runs"]["kept"]).data.metrics
    assert metrics["test_samples"] == 6
    for key in ("test_rouge1", "test_rouge1_low", "test_rouge1_high", "test_teacher_rouge1", "test_speedup",
                "test_rouge1_difference_low", "test_rouge1_difference_high"):
        assert key in metrics, key
    assert metrics["test_rouge1_low"] <= metrics["test_rouge1"] <= metrics["test_rouge1_high"]
    assert metrics["test_speedup"] > 0


@pytest.mark.parametrize("args, message", [
    (["--test"], "--test scores one checkpoint on the test split; add --pick"),
    (["--pick", "fastest", "--test"], "trial gone has no checkpoint folder here"),
])
def test_test_without_a_pick_or_a_checkpoint_is_one_line_and_exit_2(capsys, search, args, message):
    code, out, err = _main(capsys, search, *args)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err


def test_a_task_without_a_test_split_is_one_line_and_exit_2(capsys, search, monkeypatch):
    import shrinktune.measure.heldout as heldout

    def no_test(task, splits, limit=None):
        raise UserError(f"dataset {task.dataset!r} split 'test' could not be loaded: no such split")

    monkeypatch.setattr(heldout, "load_task_splits", no_test)
    code, out, err = _main(capsys, search, "--pick", "best-rouge", "--test")
    assert code == 2 and "has no usable test split" in err and "--test needs one" in err
    assert len(err.strip().splitlines()) == 1, err


@pytest.mark.parametrize("name, message", [
    ("child", "teacher TEACHER"),  # the teacher's run's param, not either tag
    ("child-hollow", "search child-hollow's teacher folder HOLLOW is missing a tokenizer; --test needs it whole"),
    ("tagged", "search tagged logged no teacher_dir param (on its run or its teacher's run); --test needs the "
               "teacher's folder"),
])
def test_the_teacher_folder_comes_from_a_param_and_must_be_whole(capsys, monkeypatch, search, name, message):
    import shrinktune.measure.heldout as heldout

    def scored(checkpoint, teacher_dir, task, **kwargs):  # the folders it would score, as one line
        raise UserError(f"teacher {teacher_dir}")

    monkeypatch.setattr(heldout, "heldout_comparison", scored)
    code = main(["exp", "--tracking-uri", search["uri"], "--no-tag", "--search", name, "--pick", "best-rouge",
                 "--test"])
    err = capsys.readouterr().err
    message = message.replace("TEACHER", str(search["teacher"])).replace("HOLLOW", str(search["hollow"]))
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
