"""Opening an MLflow store: a new sqlite file made by processes at once, and stores that cannot be opened."""

import fcntl
import multiprocessing
import threading

import pytest

from shrinktune.errors import UserError
from shrinktune.tracking.mlflow_tracking import SearchTracker, default_tracking_uri, prepare_store

_start = None  # the barrier a pool's workers wait on, so that they open the store at the same moment


def _arm(barrier) -> None:
    global _start
    _start = barrier
    import shrinktune.tracking.mlflow_tracking  # noqa: F401  # imported before the race, not during it


def _search(uri: str, index: int) -> str | None:
    """What a search does first, in a process of its own; returns the error, or None."""
    try:
        assert _start is not None
        _start.wait(timeout=120)
        tracker = SearchTracker(uri, "exp")
        tracker.check()
        tracker.start_search(f"search-{index}", {"index": index})
        tracker.log_trial("t1", {"latent_dim": 16}, {"rouge1": 0.1})
        tracker.end_search()
        return None
    except Exception as error:
        return f"{type(error).__name__}: {error}"


def test_searches_started_at_once_on_a_new_sqlite_store_all_succeed(tmp_path):
    """Without the lock, MLflow's creation of its tables fails in some of the processes (`table experiments
    already exists`, `duplicate column name: step`) in nearly every round."""
    from mlflow.tracking import MlflowClient

    processes, rounds = 4, 3
    context = multiprocessing.get_context("spawn")
    with context.Pool(processes, initializer=_arm, initargs=(context.Barrier(processes),)) as pool:
        for round_ in range(rounds):
            folder = tmp_path / f"round{round_}"
            folder.mkdir()
            uri = default_tracking_uri(folder)
            errors = [e for e in pool.starmap(_search, [(uri, i) for i in range(processes)], chunksize=1) if e]
            assert errors == [], f"round {round_}: {errors}"
            runs = MlflowClient(uri).search_runs([SearchTracker(uri, "exp").experiment_id()])
            assert len(runs) == 2 * processes  # each search's run and its trial's, in one experiment


def test_a_created_store_opens_beside_a_reader_without_waiting_for_the_lock(tmp_path):
    """Only a new store is created under the exclusive lock: opening one already made takes the shared lock for a
    moment, so it opens while another process (here: another open file) holds it shared."""
    uri = default_tracking_uri(tmp_path)
    SearchTracker(uri, "exp").check()
    opened = []
    with open(tmp_path / "mlflow.db.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_SH)
        worker = threading.Thread(target=lambda: opened.append(prepare_store(uri)), daemon=True)
        worker.start()
        worker.join(timeout=60)
        fcntl.flock(lock, fcntl.LOCK_UN)
    assert opened, "prepare_store waited for the exclusive lock on a store that exists"


def _picker(capsys, uri: str) -> tuple[int, str]:
    from shrinktune.pick.cli import main

    code = main(["summarization", "--tracking-uri", uri])
    err = capsys.readouterr().err
    return code, err


def test_a_file_that_is_not_a_database_is_one_line_for_the_picker_and_the_search(tmp_path, capsys):
    notes = tmp_path / "notes.db"
    notes.write_text("these are my notes, not an MLflow store\n" * 50)
    uri = f"sqlite:///{notes}"
    code, err = _picker(capsys, uri)
    assert code == 2 and err.count("\n") == 1 and err.startswith("error: ")
    assert (f"MLflow store {notes} cannot be opened as a database (" in err and "not an MLflow sqlite file" in err
            and "pass --tracking-uri sqlite:////another/mlflow.db" in err)
    assert "start it" not in err  # the server's advice is not for a file
    with pytest.raises(UserError, match=r"cannot be opened as a database .*file is not a database.*--tracking-uri"):
        SearchTracker(uri, "exp").check()
    assert notes.read_text().startswith("these are my notes")  # left as it was


def test_an_unknown_uri_scheme_is_one_line_for_the_picker_and_the_search(capsys):
    code, err = _picker(capsys, "foo://x")
    assert code == 2 and err.count("\n") == 1
    assert err.startswith("error: tracking URI foo://x cannot be used (") and "--tracking-uri sqlite:////" in err
    with pytest.raises(UserError, match=r"^tracking URI foo://x cannot be used \(.*unsupported URI"):
        SearchTracker("foo://x", "exp").check()


def test_a_store_of_an_older_mlflow_says_how_to_upgrade_it(tmp_path):
    import shutil
    import sqlite3

    made = tmp_path / "made"
    made.mkdir()
    SearchTracker(default_tracking_uri(made), "exp").check()
    older = tmp_path / "older.db"  # another file: MLflow keeps one store per URI and process
    shutil.copy(made / "mlflow.db", older)
    with sqlite3.connect(older) as db:
        db.execute("UPDATE alembic_version SET version_num = '451aebb31d03'")  # MLflow 1.x's first schema
    with pytest.raises(UserError, match=rf"^MLflow store {older} was written by an older MLflow .*run `mlflow db "
                                        rf"upgrade sqlite:///{older}`, or pass --tracking-uri"):
        SearchTracker(f"sqlite:///{older}", "exp").check()
