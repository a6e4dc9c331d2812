from pathlib import Path

import pytest

from shrinktune.errors import UserError
from shrinktune.tracking.mlflow_tracking import SearchTracker, default_tracking_uri, ui_command


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
