"""Fault tolerance of a search: failed trials are recorded once, with their reason, and the search goes on; a
killed search continues with `--resume` without losing or repeating trials.

The first tests check the pieces in-process (fault plans, error lines, the MLflow callback); the two marked e2e
run the real entry point with Ray Tune, Optuna and MLflow on a tiny teacher (they run in CI).
"""

import os
import pathlib
import signal
import subprocess
import sys
import time
from types import SimpleNamespace

import pytest
import torch

from shrinktune.errors import ConfigError, UserError
from shrinktune.search.callbacks import MlflowTrialLogger, _error_text, error_summary
from shrinktune.search.faults import Fault, parse_faults
from shrinktune.search.plan import RunOptions, check_resumable
from shrinktune.tracking.mlflow_tracking import SearchTracker

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_fault_plans_are_read_and_checked():
    assert parse_faults("nan:2, raise:3:1,,") == (Fault("nan", 2), Fault("raise", 3, 1))
    assert parse_faults("") == ()
    with pytest.raises(ConfigError, match=r"SHRINKTUNE_FAIL_TRIALS: the fault kind must be one of raise, nan, oom, "
                                          r"memory, got 'boom'; fix it or unset"):
        parse_faults("boom:1")
    with pytest.raises(ConfigError, match=r"entries are KIND:TRIAL\[:ATTEMPTS\] \(e.g. nan:2,raise:3:1\), got 'nan'"):
        parse_faults("nan")
    with pytest.raises(ConfigError, match="count from 1, got trial 0"):
        parse_faults("nan:0")
    assert isinstance(Fault("oom", 1).error(1), torch.OutOfMemoryError)
    assert isinstance(Fault("memory", 1).error(1), MemoryError)
    nan = Fault("nan", 2).error(3)
    assert isinstance(nan, FloatingPointError) and str(nan) == (
        "training loss became nan (injected by SHRINKTUNE_FAIL_TRIALS into trial 2, attempt 3)")


def test_run_options_refuse_negative_retries_and_a_renamed_resume():
    common = dict(tracking_uri="sqlite:///x.db", storage_path="/tmp/x", cache_root="/tmp/c")
    with pytest.raises(ConfigError, match=r"--retries must be ≥ 0, got -1"):
        RunOptions(**common, retries=-1)
    with pytest.raises(ConfigError, match="--resume a continues a search under its own name; drop --name b"):
        RunOptions(**common, name="b", resume="a")
    assert RunOptions(**common, name="a", resume="a").resume == "a"


def test_check_resumable_names_the_searches_there(tmp_path):
    (tmp_path / "first").mkdir()
    (tmp_path / "first" / "tuner.pkl").write_bytes(b"")  # what Tune's can_restore looks for
    (tmp_path / "not-a-search").mkdir()
    assert check_resumable(str(tmp_path), "first") == tmp_path / "first"
    with pytest.raises(UserError, match=rf"no search 'other' to resume: {tmp_path}/other holds no Ray Tune state; "
                                        rf"searches are the folders of {tmp_path} \(1 there: first\): list them"):
        check_resumable(str(tmp_path), "other")


def test_error_summary_unwraps_what_ray_wrapped():
    from ray.exceptions import RayTaskError

    cause = FloatingPointError("training loss became nan at epoch 1\nsecond line")
    wrapped = RayTaskError("train", "Traceback ...", cause, proctitle="x", pid=1, ip="127.0.0.1").as_instanceof_cause()
    assert isinstance(wrapped, FloatingPointError)  # what a Tune result's `error` holds
    assert error_summary(wrapped) == "FloatingPointError: training loss became nan at epoch 1"
    assert error_summary(MemoryError()) == "MemoryError: (no message)"
    assert error_summary(None) is None


def _fake_trial(tmp_path, trial_id="t1", error=None, record=None, config=None):
    """The parts of a Tune `Trial` the callback reads."""
    error_file = pickled = None
    if record is not None:
        error_file = tmp_path / f"{trial_id}-error.txt"
        error_file.write_text(record)
    if error is not None:
        import ray.cloudpickle as cloudpickle

        pickled = tmp_path / f"{trial_id}-error.pkl"
        pickled.write_bytes(cloudpickle.dumps(error))
    return SimpleNamespace(trial_id=trial_id, config=config or {"latent_dim": 16}, checkpoint=None,
                           last_result={"rouge1": 0.25, "training_iteration": 1, "done": True},
                           error_file=error_file and str(error_file), pickled_error_file=pickled and str(pickled),
                           run_metadata=SimpleNamespace(num_failures=1))


def test_error_text_puts_the_original_exception_first(tmp_path):
    record = ("Failure # 1 (occurred at 2026-01-01_00-00-00)\n\x1b[36mray::ImplicitFunc.train()\x1b[39m (pid=1)\n"
              "  File \"trial.py\", line 1\nRuntimeError: boom\n")
    text = _error_text(_fake_trial(tmp_path, error=RuntimeError("boom"), record=record))
    assert text.splitlines()[0] == "RuntimeError: boom"
    assert "Failure # 1" in text and "\x1b[" not in text
    # No pickled exception (e.g. it could not be unpickled): the record's last line says it.
    assert _error_text(_fake_trial(tmp_path, "t2", record=record)).splitlines()[0] == "RuntimeError: boom"
    assert _error_text(_fake_trial(tmp_path, "t3")) == "trial raised an error"


def test_callback_logs_each_trial_once_and_only_its_last_failure(tmp_path):
    tracker = SearchTracker(f"sqlite:///{tmp_path}/mlflow.db", experiment="resume-unit")
    tracker.start_search("s", {"trials": 3})
    earlier = tracker.log_trial("t1", {"latent_dim": 16}, {"rouge1": 0.2})  # logged before an interruption

    callback = MlflowTrialLogger(tracker)
    callback.set_state({"logged": {}})  # Tune's last saved state had not caught up with MLflow
    callback.setup()
    assert callback.logged == {"t1": earlier}
    callback.on_trial_complete(0, [], _fake_trial(tmp_path, "t1"))  # restored and reported again
    callback.on_trial_recover(0, [], _fake_trial(tmp_path, "t2", error=RuntimeError("first attempt")))
    assert set(tracker.trial_runs()) == {"t1"}  # a failure Tune retries is not logged

    callback.on_trial_error(0, [], _fake_trial(tmp_path, "t2", error=FloatingPointError("loss became nan")))
    callback.on_trial_complete(0, [], _fake_trial(tmp_path, "t3"))
    runs = tracker.trial_runs()
    assert set(runs) == {"t1", "t2", "t3"} and runs["t1"] == earlier
    failed = tracker.client.get_run(runs["t2"])
    assert failed.info.status == "FAILED"
    assert failed.data.tags["shrinktune.error"] == "FloatingPointError: loss became nan"
    assert tracker.client.get_run(runs["t3"]).data.metrics == {"rouge1": 0.25}
    assert callback.get_state() == {"logged": runs, "finished": []}  # no objectives given: no hypervolume kept


def test_callback_logs_the_running_hypervolume_of_finished_trials(tmp_path):
    tracker = SearchTracker(f"sqlite:///{tmp_path}/mlflow.db", experiment="hypervolume-unit")
    tracker.start_search("s", {"trials": 2})
    callback = MlflowTrialLogger(tracker, objectives={"rouge1": "max"}, reference={"rouge1": 0.5})
    callback.setup()
    callback.on_trial_complete(0, [], _fake_trial(tmp_path, "t1"))  # rouge1 0.25: half the teacher's
    callback.on_trial_error(0, [], _fake_trial(tmp_path, "t2", error=RuntimeError("boom")))  # not on any front
    history = tracker.client.get_metric_history(tracker.parent_run_id, "hypervolume")
    assert [(m.step, round(m.value, 6)) for m in history] == [(1, 0.5)]
    assert [row["trial_id"] for row in callback.get_state()["finished"]] == ["t1"]


# End to end: the real entry point on a tiny teacher, one trial at a time.

SPACE = """# Run: python -m platform.search {path}
task: summarization
teacher: {teacher}
objectives: {{rouge1: max, latency_ms: min}}
search: {{sampler: random, trials: {trials}, max_concurrent: 1, seed: 1, quality_floor: 0}}
evaluation: {{samples: 4, latency_samples: 2, latency_repeats: 1, latency_batch_size: 1, latency_cap_s: 3,
             recheck_samples: 6}}
generation: {{max_new_tokens: 8}}
fixed: {{batch_size: 16, ae_epochs: 1, epochs: 1}}
dimensions:
  latent_dim: {{type: categorical, choices: [16, 32]}}
  decoder_layers: {{type: int, low: 1, high: 2}}
"""


@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory):
    """Encoder states and autoencoders of the tiny teacher, made once for this file's searches."""
    return tmp_path_factory.mktemp("resume-cache")


def _command(tmp_path, teacher, cache, trials, *flags):
    space = tmp_path / "tiny.yaml"
    space.write_text(SPACE.format(path=space, teacher=teacher, trials=trials))
    return [sys.executable, "-m", "platform.search", str(space), "--tracking-uri", f"sqlite:///{tmp_path}/mlflow.db",
            "--storage", str(tmp_path / "runs"), "--cache-dir", str(cache),
            "--address", "local", *flags]  # a Ray of its own, even if a developer's cluster runs on this machine


def _runs(tmp_path, kind):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    experiment = client.get_experiment_by_name("tiny")
    return client, [r for r in client.search_runs([experiment.experiment_id], max_results=100)
                    if r.data.tags.get("shrinktune.kind") == kind]


def _processes_of_session(session: int) -> list[str]:
    """Processes still alive in the session (or process group) `session` leads, with their command lines."""
    alive = []
    for entry in pathlib.Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if fields[0] != "Z" and session in (int(fields[2]), int(fields[3])):
                alive.append((entry / "cmdline").read_text().replace("\0", " ")[:120])
        except OSError:
            continue  # ended while we looked
    return alive


def _started_until(command, log, text: str, timeout: float) -> subprocess.Popen:
    """Starts the search `command` in a session of its own (the driver and the local Ray it starts form one process
    group, killed together), its output in `log`, and returns once `text` is there; it must still run then."""
    with open(log, "w") as handle:
        # Ctrl-C as a terminal gives it: a suite started in the background (`pytest &`, `nohup`) has SIGINT ignored,
        # and an ignored signal stays ignored across exec (the driver then never sees the test's Ctrl-C).
        driver = subprocess.Popen(command, cwd=ROOT, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True,
                                  preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + timeout
    while text not in log.read_text():
        if driver.poll() is not None or time.monotonic() > deadline:
            if driver.poll() is None:
                os.killpg(driver.pid, signal.SIGKILL)
            pytest.fail(f"the search ended or ran {timeout:g} s before {text!r}:\n{log.read_text()[-3000:]}")
        time.sleep(0.2)
    return driver


def _stop_early(command, log) -> int:
    """Runs the search `command` and interrupts it (Ctrl-C) while its teacher is prepared; returns its exit code."""
    driver = _started_until(command, log, "preparing and measuring the teacher", 300)
    try:
        driver.send_signal(signal.SIGINT)  # the driver only, as a terminal's Ctrl-C reaches it
        return driver.wait(timeout=120)
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)


@pytest.mark.e2e
def test_killed_search_resumes_without_losing_or_repeating_trials(tmp_path, tiny_teacher_dir, shared_cache):
    """Stopped while its teacher is prepared, then killed after its first trial, the search resumes each time and
    ends with every trial exactly once."""
    early = tmp_path / "early.log"
    # A cache of its own, empty: the teacher's preparation then lasts seconds and the Ctrl-C lands while the driver
    # waits on it. On the warm shared cache it can end within the 0.2 s the test takes to send it.
    code = _stop_early(_command(tmp_path, tiny_teacher_dir, tmp_path / "early-cache", 2, "--name", "killed"), early)
    assert code == 130, early.read_text()[-3000:]
    assert "search killed interrupted before its trials ended" in early.read_text()
    assert "--resume killed" in early.read_text()
    _, [parent] = _runs(tmp_path, "search")
    assert parent.info.status == "KILLED" and _runs(tmp_path, "trial")[1] == []
    assert "Stopped (KILLED) before any trial ended: no results yet" in parent.data.tags["mlflow.note.content"]

    log = tmp_path / "killed.log"
    command = _command(tmp_path, tiny_teacher_dir, shared_cache, 2, "--resume", "killed")
    driver = _started_until(command, log, "finished → MLflow run", 600)
    try:
        os.killpg(driver.pid, signal.SIGKILL)
        driver.wait()
        deadline = time.monotonic() + 30
        while _processes_of_session(driver.pid) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not _processes_of_session(driver.pid), _processes_of_session(driver.pid)
    finally:
        if driver.poll() is None or _processes_of_session(driver.pid):
            try:
                os.killpg(driver.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    assert "search killed was interrupted before any trial ended: its trials start afresh" in log.read_text()

    client, [before] = _runs(tmp_path, "trial")
    checkpoint = pathlib.Path(before.data.params["checkpoint"])
    saved = (checkpoint / "shrinktune_trial.json").stat().st_mtime_ns
    _, [parent] = _runs(tmp_path, "search")
    assert parent.info.status == "RUNNING"  # killed: nobody ended it

    out = subprocess.run(_command(tmp_path, tiny_teacher_dir, shared_cache, 2, "--resume", "killed"), cwd=ROOT,
                         capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "of 2 finished trial(s)" in out.stdout
    assert "the teacher was measured when the search started: not measured again" in out.stderr

    _, children = _runs(tmp_path, "trial")
    trials = [c.data.tags["shrinktune.trial"] for c in children]
    assert len(trials) == 2 and len(set(trials)) == 2, trials  # every trial exactly once
    assert all(c.info.status == "FINISHED" for c in children)
    # A run lasts as long as its trial trained and was measured (seconds), not the milliseconds of logging it.
    assert all(c.info.end_time - c.info.start_time > 1000 for c in children), [
        (c.info.start_time, c.info.end_time) for c in children]
    _, [teacher] = _runs(tmp_path, "teacher")  # one teacher run: not logged again on resume
    assert teacher.info.run_name == "teacher" and "rouge1" in teacher.data.metrics
    assert "search_rouge1" in teacher.data.metrics  # re-checked at the end, as the front's trials
    assert before.info.run_id in {c.info.run_id for c in children}
    # The trial that ended before the kill was not trained again: its checkpoint is the only one, untouched.
    assert (checkpoint / "shrinktune_trial.json").stat().st_mtime_ns == saved
    assert sorted(p.name for p in checkpoint.parent.glob("checkpoint_*")) == [checkpoint.name]
    _, parents = _runs(tmp_path, "search")
    assert [p.info.run_id for p in parents] == [parent.info.run_id]
    assert parents[0].info.status == "FINISHED"
    # measured once when the search started (step 0), and once more by the final re-check (step 1), not on resume
    history = client.get_metric_history(parent.info.run_id, "teacher_rouge1")
    assert sorted(m.step for m in history) == [0, 1], history
    assert len(client.get_metric_history(parent.info.run_id, "search_teacher_rouge1")) == 1
