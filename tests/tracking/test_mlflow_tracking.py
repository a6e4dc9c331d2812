from pathlib import Path

import pytest

from shrinktune.errors import UserError
from shrinktune.tracking.mlflow_tracking import SearchTracker, default_tracking_uri, runs_url, ui_command


def test_parent_and_children_in_sqlite(tmp_path):
    from mlflow.tracking import MlflowClient

    uri = default_tracking_uri(tmp_path)
    assert uri == f"sqlite:///{tmp_path}/mlflow.db"
    tracker = SearchTracker(uri, "exp")
    tracker.check()
    parent = tracker.start_search("search-1", {"space": "x.yaml"})
    tracker.log_reference({"rouge1": 0.2})
    child = tracker.log_trial("t1", {"latent_dim": 96}, {"rouge1": 0.1, "bad": float("nan")}, checkpoint="/ck",
                              history=[3.0, 2.0])
    failed = tracker.log_trial("t2", {"latent_dim": 192}, {}, status="FAILED", error="Traceback: boom")
    infeasible = tracker.log_trial("t3", {"ae_kind": "pca", "ae_mode": "joint"}, {}, status="FAILED",
                                   error="shrinktune.errors.ConfigError: "
                                         "ae_mode joint trains the bottleneck from scratch")
    tracker.end_search()
    client = MlflowClient(uri)
    assert client.get_run(parent).data.metrics["teacher_rouge1"] == 0.2
    run = client.get_run(child)
    assert run.data.tags["mlflow.parentRunId"] == parent and run.data.params["latent_dim"] == "96"
    assert run.data.metrics == {"rouge1": 0.1, "train_loss_epoch": 2.0} and run.info.status == "FINISHED"
    assert [m.value for m in client.get_metric_history(child, "train_loss_epoch")] == [3.0, 2.0]
    assert (client.get_run(failed).info.status == "FAILED"
            and "boom" in client.get_run(failed).data.tags["shrinktune.error"])
    assert "shrinktune.infeasible" not in client.get_run(failed).data.tags
    assert client.get_run(infeasible).data.tags["shrinktune.infeasible"] == "true"
    assert client.get_run(parent).info.status == "FINISHED"
    assert "--workers 1" in ui_command(uri) and "127.0.0.1" in ui_command(uri)


def test_unwritable_location_is_one_clear_line(tmp_path):
    tracker = SearchTracker(f"sqlite:///{tmp_path}/missing/dir/mlflow.db", "exp")
    with pytest.raises(UserError, match="not writable .*--tracking-uri"):
        tracker.check()


def test_tracker_pickles_without_its_client(tmp_path):
    import pickle

    tracker = SearchTracker(default_tracking_uri(tmp_path), "exp")
    tracker.check()
    clone = pickle.loads(pickle.dumps(tracker))
    assert clone._client is None and clone.experiment_id() == tracker.experiment_id()


def test_default_uri_follows_mlflow_convention(monkeypatch, tmp_path):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5999")
    assert default_tracking_uri() == "http://127.0.0.1:5999"
    assert "open http://127.0.0.1:5999" in ui_command(default_tracking_uri())
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    monkeypatch.chdir(tmp_path)
    assert default_tracking_uri() == f"sqlite:///{tmp_path}/mlflow.db"


def test_unreachable_server_is_one_clear_line(monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "3")
    tracker = SearchTracker("http://127.0.0.1:9", "exp")  # nothing listens on the discard port
    with pytest.raises(UserError,
                       match=r"tracking server http://127.0.0.1:9 cannot be used .*start it or pass --tracking-uri"):
        tracker.check()


def test_the_space_is_logged_as_read_even_when_its_file_is_gone(tmp_path):
    """A submitted job's copy of the working directory can be replaced under the driver: the search logs the text it
    read, not the file."""
    space = tmp_path / "space.yaml"
    space.write_text("task: summarization\n")
    tracker = SearchTracker(f"sqlite:///{tmp_path}/mlflow.db", experiment="space-text")
    tracker.start_search("s", {})
    text = space.read_text()
    space.unlink()
    tracker.log_space(space, text)
    folder = tracker.client.download_artifacts(tracker.search_run_id, "space.yaml", str(tmp_path / "out"))
    assert Path(folder).read_text() == "task: summarization\n"


def test_experiment_has_a_description_and_opens_as_a_classic_ml_experiment(tmp_path):
    """MLflow 3.17's UI opens an experiment in its GenAI views; the search's experiment says what it holds and carries
    the UI's own "Machine learning" type. An experiment made without them gets them; a description someone wrote is
    kept."""
    from mlflow.tracking import MlflowClient

    uri = default_tracking_uri(tmp_path)
    tracker = SearchTracker(uri, "described")
    tracker.check()
    tags = MlflowClient(uri).get_experiment(tracker.experiment_id()).tags
    assert tags["mlflow.experimentKind"] == "custom_model_development"
    assert "`shrinktune.kind = trial`" in tags["mlflow.note.content"]
    assert "`shrinktune.kind = teacher`" in tags["mlflow.note.content"]

    client = MlflowClient(uri)
    older = client.create_experiment("older")  # as a search of an earlier version left it
    client.set_experiment_tag(client.create_experiment("edited"), "mlflow.note.content", "my notes")
    SearchTracker(uri, "older").experiment_id()
    SearchTracker(uri, "edited").experiment_id()
    assert client.get_experiment(older).tags["mlflow.experimentKind"] == "custom_model_development"
    edited = client.get_experiment_by_name("edited").tags
    assert edited["mlflow.note.content"] == "my notes" and edited["mlflow.experimentKind"] == "custom_model_development"


def test_runs_url_opens_the_runs_table_of_the_ui_that_serves_the_store(tmp_path):
    uri = default_tracking_uri(tmp_path)
    assert runs_url(uri, "7") == "http://127.0.0.1:5000/#/experiments/7/runs?workflowType=machine_learning"
    assert "--host 127.0.0.1 --port 5000" in ui_command(uri)  # the UI that address reaches
    assert (runs_url("https://mlflow.example.org:8443/", "12")
            == "https://mlflow.example.org:8443/#/experiments/12/runs?workflowType=machine_learning")
    tracker = SearchTracker(uri, "linked")
    assert tracker.runs_url() == runs_url(uri, tracker.experiment_id())


def test_a_trial_run_has_a_readable_name_and_lasts_as_long_as_its_trial(tmp_path):
    tracker = SearchTracker(default_tracking_uri(tmp_path), "timed")
    tracker.start_search("s", {})
    run_id = tracker.log_trial("4f2a9c1e", {"latent_dim": 384}, {"rouge1": 0.2},
                               run_name="384x5 lr8.1e-4 sft · 4f2a9c1e", start_ms=1_700_000_000_000,
                               end_ms=1_700_000_125_000)
    run = tracker.client.get_run(run_id)
    assert run.info.run_name == "384x5 lr8.1e-4 sft · 4f2a9c1e" and run.data.tags["shrinktune.trial"] == "4f2a9c1e"
    assert (run.info.start_time, run.info.end_time) == (1_700_000_000_000, 1_700_000_125_000)
    assert tracker.trial_runs() == {"4f2a9c1e": run_id}
    found = SearchTracker(default_tracking_uri(tmp_path), "timed").find_search("s")  # found, not opened
    assert SearchTracker(default_tracking_uri(tmp_path), "timed").trial_runs(found.info.run_id) == {"4f2a9c1e": run_id}


def _saved_model(folder: Path) -> str:
    """A folder holding what `models.folders.missing_parts` asks of a saved model (the files' content is not read)."""
    folder.mkdir(parents=True)
    for name in ("config.json", "model.safetensors", "tokenizer.json"):
        (folder / name).write_text("{}")
    return str(folder)


def test_the_teacher_is_a_run_beside_the_trials(tmp_path):
    """The teacher as a child run of kind `teacher` under the students' metric names (and its `teacher_*` on the
    search's run as before); readers of trials do not see it; logging it again does not make a second one; the
    re-check writes its figures as a trial's."""
    tracker = SearchTracker(default_tracking_uri(tmp_path), "with-teacher")
    parent = tracker.start_search("s", {})
    folder = _saved_model(tmp_path / "cache" / "teacher")
    teacher = tracker.log_teacher(folder, {"rouge1": 0.3, "latency_ms": 100.0, "eval_samples": 4},
                                  {"teacher": "embedded", "generation.num_beams": 1},
                                  start_ms=1_700_000_000_000, end_ms=1_700_000_060_000)
    trial = tracker.log_trial("t1", {"latent_dim": 16}, {"rouge1": 0.2, "latency_ms": 50.0})
    run = tracker.client.get_run(teacher)
    assert run.info.run_name == "teacher" and run.info.status == "FINISHED"
    assert run.data.tags["shrinktune.kind"] == "teacher" and run.data.tags["mlflow.parentRunId"] == parent
    assert run.data.metrics == {"rouge1": 0.3, "latency_ms": 100.0, "eval_samples": 4}
    assert run.data.params == {"teacher": "embedded", "generation.num_beams": "1"}
    assert (run.info.start_time, run.info.end_time) == (1_700_000_000_000, 1_700_000_060_000)
    search = tracker.client.get_run(parent)
    assert search.data.metrics["teacher_rouge1"] == 0.3
    assert tracker.saved_teacher(search) == ({"rouge1": 0.3, "latency_ms": 100.0, "eval_samples": 4}, folder)
    assert tracker.trial_runs() == {"t1": trial}
    picked = tracker.client.search_runs([tracker.experiment_id()], "tags.`shrinktune.kind` = 'trial'")  # the picker's
    assert [r.info.run_id for r in picked] == [trial]

    assert tracker.log_teacher(folder, {"rouge1": 0.31}) == teacher  # measured again: the same run
    assert tracker.client.get_run(teacher).data.metrics["rouge1"] == 0.31
    tracker.log_recheck_reference({"rouge1": 0.31, "latency_ms": 100.0}, {"rouge1": 0.29, "eval_samples": 30})
    run = tracker.client.get_run(teacher)
    assert run.data.metrics["rouge1"] == 0.29 and run.data.metrics["search_rouge1"] == 0.31
    assert "search_latency_ms" not in run.data.metrics and run.data.tags["shrinktune.rechecked"] == "30"
    kinds = sorted(r.data.tags["shrinktune.kind"] for r in tracker.client.search_runs([tracker.experiment_id()]))
    assert kinds == ["search", "teacher", "trial"]


def test_the_teachers_folder_is_read_back_from_its_param_and_only_when_it_holds_a_model(tmp_path, caplog):
    """The folder a resumed search reuses is the run's param `teacher_dir` (a tag can be changed by anyone; a param
    cannot): a tag pointed elsewhere is not followed, a folder that lost its weights is prepared again, and a search
    logged before the param existed prepares its teacher again (from its cache)."""
    import logging

    tracker = SearchTracker(default_tracking_uri(tmp_path), "teacher-folder")
    parent = tracker.start_search("s", {})
    first = _saved_model(tmp_path / "teachers" / "first")
    tracker.log_teacher(first, {"rouge1": 0.3})
    tracker.log_teacher(first, {"rouge1": 0.3})  # the same folder again: nothing to change, nothing said
    run = tracker.client.get_run(parent)
    assert run.data.params["teacher_dir"] == first and run.data.tags["shrinktune.teacher_dir"] == first

    second = _saved_model(tmp_path / "teachers" / "second")
    with caplog.at_level(logging.WARNING, logger="shrinktune.tracking"):
        tracker.log_teacher(second, {"rouge1": 0.32})  # measured anew in another folder: no error
    assert f"keeps {first} as its param teacher_dir" in caplog.text
    run = tracker.client.get_run(parent)
    assert run.data.params["teacher_dir"] == first and run.data.tags["shrinktune.teacher_dir"] == second
    assert tracker.saved_teacher(run) == ({"rouge1": 0.32}, first)

    tracker.tag(parent, "shrinktune.teacher_dir", str(tmp_path / "elsewhere"))  # a tag edited by hand
    assert tracker.saved_teacher(tracker.client.get_run(parent))[1] == first

    (Path(first) / "model.safetensors").unlink()
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="shrinktune.tracking"):
        assert tracker.saved_teacher(tracker.client.get_run(parent)) == ({"rouge1": 0.32}, None)
    assert f"teacher folder {first}" in caplog.text and "lacks *.safetensors weights" in caplog.text

    older = tracker.start_search("older", {})  # as an earlier version logged it: the tag only
    tracker.log_reference({"rouge1": 0.3})
    tracker.tag(older, "shrinktune.teacher_dir", second)
    assert tracker.saved_teacher(tracker.client.get_run(older)) == ({"rouge1": 0.3}, None)


def test_a_search_whose_name_has_a_quote_is_found_again(tmp_path):
    from mlflow.tracking import MlflowClient

    uri = default_tracking_uri(tmp_path)
    tracker = SearchTracker(uri, "quoted")
    run_id = tracker.start_search("it's", {})
    tracker.log_trial("t1", {}, {"rouge1": 0.1})
    assert tracker.find_search("it's").info.run_id == run_id
    assert tracker.find_search('say "hi"') is None
    assert list(tracker.trial_runs()) == ["t1"]

    client = MlflowClient(uri)  # a search started before the name tag existed: found by its run name
    older = client.create_run(tracker.experiment_id(), run_name="bob's", tags={"shrinktune.kind": "search"})
    assert tracker.find_search("bob's").info.run_id == older.info.run_id

    with pytest.raises(UserError, match="holds both ' and \": MLflow cannot search for it; use a name without"):
        tracker.find_search('it\'s "x"')


def test_a_search_that_ended_before_any_trial_says_so_on_its_run(tmp_path):
    from shrinktune.tracking.schema import NO_TRIALS_STATE, NOTE_TAG, STATE_TAG

    tracker = SearchTracker(default_tracking_uri(tmp_path), "empty")
    tracker.end_search("FAILED", state=NO_TRIALS_STATE, note="nothing to do")  # no run yet: nothing to end
    parent = tracker.start_search("s", {})
    tracker.end_search("FAILED", {"trials": 0}, state=NO_TRIALS_STATE,
                       note="The search ended before any trial: the teacher could not be prepared.")
    run = tracker.client.get_run(parent)
    assert run.info.status == "FAILED" and run.data.metrics == {"trials": 0}
    assert run.data.tags[STATE_TAG] == "no-trials"
    assert run.data.tags[NOTE_TAG].startswith("The search ended before any trial")

    other = tracker.start_search("t", {})
    tracker.end_search()
    assert STATE_TAG not in tracker.client.get_run(other).data.tags
    assert NOTE_TAG not in tracker.client.get_run(other).data.tags
