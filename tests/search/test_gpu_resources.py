"""What each trial asks Ray for (`trial_resources`), and that trials asking for half a GPU share one.

    python -m pytest tests/search/test_gpu_resources.py -q

The unit tests give `trial_resources` lists shaped like `ray.nodes()`. The Ray tests start a real local Ray in a
subprocess of their own, as tests/search/test_local_ray.py does: on any machine with one GPU Ray is told of
(`ray.init(num_gpus=1)`; Ray takes it on trust, no GPU needed), and where NVIDIA GPUs are, with those Ray finds
(skipped elsewhere). The trials ask for the share `trial_resources` gives them by default; two must run at once on
the same GPU (and, on the one GPU Ray was told of, a third must wait). About 30 s each.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from shrinktune.errors import ConfigError, UserError
from shrinktune.search.cluster import RAY_CLUSTER_ENV
from shrinktune.search.runner import trial_resources

ROOT = Path(__file__).resolve().parents[2]


def _nodes(*gpus: float, cpus: float = 8.0) -> list[dict]:
    """Alive nodes with `cpus` CPUs and these GPUs each (0: no "GPU" key, as Ray lists a node without GPUs)."""
    return [{"Alive": True, "Resources": {"CPU": cpus, **({"GPU": float(g)} if g else {})}} for g in gpus]


@pytest.mark.parametrize(("gpus_per_node", "concurrent", "expected"), [
    ((0,), 1, 0), ((0,), 2, 0), ((0,), 3, 0),
    ((1,), 1, 1), ((1,), 2, 0.5), ((1,), 3, 0.3333),  # Ray counts in steps of 1/10000: 3 × 0.3333 fit on one GPU
    ((4,), 1, 1), ((4,), 2, 1), ((4,), 3, 1),
    ((1, 1, 1, 1), 2, 1), ((1, 1), 4, 0.5),  # the cluster's GPUs are shared, not one node's
    ((1, 0), 2, 0.5),  # a node without GPUs adds none
    ((2,), 3, 0.6666),  # rounded down: the shares never add up to more than there is
], ids=lambda value: "+".join(map(str, value)) + "gpu" if isinstance(value, tuple) else str(value))
def test_default_shares_the_cluster_gpus_among_concurrent_trials(gpus_per_node, concurrent, expected):
    nodes = _nodes(*gpus_per_node)
    cpus, gpus = trial_resources(nodes, concurrent, None, None)
    assert gpus == expected
    assert gpus * concurrent <= sum(gpus_per_node)
    assert cpus == max(1, min(8 * len(nodes) // concurrent, 8))  # CPUs as before


def test_default_share_is_never_below_rays_step():
    assert trial_resources(_nodes(1), 20_000, None, None) == (1, 0.0001)  # 10000 of them run at once


def test_default_counts_only_alive_nodes():
    dead = {"Alive": False, "Resources": {"CPU": 64.0, "GPU": 8.0}}
    assert trial_resources([*_nodes(1), dead], 2, 1, None) == (1, 0.5)
    assert trial_resources([*_nodes(0), dead], 2, 1, None) == (1, 0)


@pytest.mark.parametrize("gpus", [0, 0.0001, 0.25, 1 / 3, 0.5, 1, 2, 4.0])
def test_explicit_gpus_are_kept(gpus):
    assert trial_resources(_nodes(4), 8, 1, gpus) == (1, gpus)


def test_no_gpu_asked_on_a_gpu_cluster():
    assert trial_resources(_nodes(2), 2, None, 0) == (4, 0)


@pytest.mark.parametrize("gpus", [1.5, 2.5, 1.0001, 0.00001, -0.5, math.nan, math.inf])
def test_gpus_breaking_rays_rule_are_refused_in_one_line(gpus):
    with pytest.raises(ConfigError) as raised:
        trial_resources(_nodes(8), 1, 1, gpus)  # even where the node has enough GPUs
    message = str(raised.value)
    assert message == (f"--gpus-per-trial must be 0, a fraction from 0.0001 to 1 (trials then share a GPU) or a whole "
                       f"number of GPUs, got {gpus:g}.")
    assert "\n" not in message


def test_more_than_the_largest_node_is_refused():
    with pytest.raises(UserError, match=r"asks for 1 CPU and 2 GPU but the largest node has 8 CPU and 1 GPU; lower "):
        trial_resources(_nodes(1, 1, 1, 1), 1, 1, 2)  # 4 GPUs in the cluster, but a trial runs on one node
    with pytest.raises(UserError, match=r"asks for 1 CPU and 0.5 GPU but the largest node has 8 CPU and 0 GPU"):
        trial_resources(_nodes(0, 0), 2, 1, 0.5)


# The driver starts a local Ray on loopback, prints its `ray.nodes()`, reads the resources a trial asks for, runs
# Tune trials with them, up to three at a time (each records when it ran and which GPU Ray gave it), and prints what
# they recorded. With one GPU Ray was told of and half a GPU each, the third must wait: that GPU is counted.
DRIVER = """
import json, os, sys, time
import ray
from ray import tune
from shrinktune.search.cluster import bind_local_ray

mode, temp_dir, storage = sys.argv[1:]
bind_local_ray(listen_all=False)
ray.init(address="local", include_dashboard=False, num_cpus=3, _temp_dir=temp_dir, logging_level="ERROR",
         log_to_driver=False, **({"num_gpus": 1} if mode == "fake" else {}))
print("NODES " + json.dumps(ray.nodes()), flush=True)
cpus, gpus = json.loads(sys.stdin.readline())


def trial(config):
    start = time.time()
    seen = {"gpu_ids": [str(i) for i in ray.get_gpu_ids()], "visible": os.environ.get("CUDA_VISIBLE_DEVICES")}
    if mode == "real":
        import torch
        if torch.cuda.is_available():  # the GPUs this trial's torch sees, and a sum computed on one
            seen["torch"] = [torch.cuda.device_count(), float(torch.ones(2, device="cuda").sum())]
    time.sleep(2)
    tune.report({"start": start, "end": time.time(), "seen": json.dumps(seen)})


trials = 3 if mode == "fake" else 2
grid = tune.Tuner(tune.with_resources(trial, {"cpu": cpus, "gpu": gpus}),
                  tune_config=tune.TuneConfig(num_samples=trials, max_concurrent_trials=trials),
                  run_config=tune.RunConfig(name="shared", storage_path=storage, verbose=0)).fit()
print("RESULT " + json.dumps([{"error": repr(r.error) if r.error else None,
                               **{k: r.metrics.get(k) for k in ("start", "end", "seen")}} for r in grid]), flush=True)
ray.shutdown()
"""


def _kill_session(driver: subprocess.Popen, wait: float = 0) -> None:
    """Kills the process group `driver` leads (it started in a session of its own, with the Ray it started), and
    waits up to `wait` seconds for that group to be gone."""
    deadline = time.monotonic() + wait
    try:
        os.killpg(driver.pid, signal.SIGKILL)
        while time.monotonic() < deadline:
            time.sleep(0.1)
            driver.poll()  # reaped: a zombie would still count
            os.killpg(driver.pid, 0)  # ProcessLookupError once none is left
    except ProcessLookupError:
        pass


def _talk(driver: subprocess.Popen, resources) -> tuple[list[dict], list[dict]]:
    """Reads the driver's `ray.nodes()`, sends the resources a trial asks for, and returns the nodes and what each
    trial recorded."""
    assert driver.stdout
    line = driver.stdout.readline()
    if not line.startswith("NODES "):
        _kill_session(driver)
        pytest.fail(f"the local Ray did not start: {line!r} {driver.communicate(timeout=30)[1][-3000:]}")
    nodes = json.loads(line[len("NODES "):])
    out, err = driver.communicate(json.dumps(resources(nodes)) + "\n", timeout=180)
    results = [json.loads(x[len("RESULT "):]) for x in out.splitlines() if x.startswith("RESULT ")]
    assert driver.returncode == 0 and results, f"{out[-2000:]}\n{err[-3000:]}"
    return nodes, results[0]


@pytest.fixture
def ray_driver(tmp_path):
    """Runs DRIVER in a session of its own; returns `ray.nodes()` of its Ray and what the trials recorded. The
    finaliser kills the session (the driver and the Ray it started), if anything is left of it, and removes Ray's
    folder."""
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}  # no token file written
    for name in ("RAY_ADDRESS", RAY_CLUSTER_ENV):
        env.pop(name, None)
    temp_dir = tempfile.mkdtemp(prefix="st-ray-")  # short: Ray's socket paths must fit in 107 characters
    drivers: list[subprocess.Popen] = []

    def run(mode: str, resources) -> tuple[list[dict], list[dict]]:
        own_env = {k: v for k, v in env.items() if mode == "real" or k != "CUDA_VISIBLE_DEVICES"}  # fake: GPU 0
        driver = subprocess.Popen([sys.executable, "-c", DRIVER, mode, temp_dir, str(tmp_path / "tune")], cwd=ROOT,
                                  env=own_env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True, start_new_session=True)
        drivers.append(driver)
        watchdog = threading.Timer(240, _kill_session, (driver,))  # a Ray that hangs, killed
        watchdog.start()
        try:
            return _talk(driver, resources)
        finally:
            watchdog.cancel()

    yield run
    for driver in drivers:
        _kill_session(driver, wait=10)  # whatever ray.shutdown() left, gone before its folder is removed
        driver.wait()
    shutil.rmtree(temp_dir, ignore_errors=True)


def _check_shared(trials: list[dict]) -> list[dict]:
    """The first two trials to start ran at once, on the same GPU; returns what every trial saw, in order of start."""
    assert all(t["error"] is None for t in trials), trials
    trials = sorted(trials, key=lambda t: t["start"])
    assert trials[1]["start"] < trials[0]["end"], f"the first two trials took turns: {trials}"
    seen = [json.loads(t["seen"]) for t in trials]
    assert len(seen[0]["gpu_ids"]) == 1 and seen[0]["gpu_ids"] == seen[1]["gpu_ids"], seen
    assert seen[0]["visible"] == seen[1]["visible"] == seen[0]["gpu_ids"][0], seen  # CUDA_VISIBLE_DEVICES too
    return seen


def test_two_trials_share_one_gpu_ray_was_told_of(ray_driver):
    """One GPU Ray was told of, two trials at a time by default: half a GPU each, so two trials run at once, both on
    GPU 0, and a third (CPUs to spare) waits for one of them to end."""
    nodes, trials = ray_driver("fake", lambda nodes: trial_resources(nodes, 2, 1, None))
    assert [n["Resources"]["GPU"] for n in nodes] == [1.0]
    assert trial_resources(nodes, 2, 1, None) == (1, 0.5)
    seen = _check_shared(trials)
    assert [s["gpu_ids"] for s in seen] == [["0"]] * 3 and [s["visible"] for s in seen] == ["0"] * 3, seen
    first, second, third = sorted(trials, key=lambda t: t["start"])
    assert third["start"] >= min(first["end"], second["end"]), f"three half GPUs given out of one: {trials}"


def _nvidia_gpus() -> int:
    if not shutil.which("nvidia-smi"):
        return 0
    listed = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=60)
    return sum(line.startswith("GPU ") for line in listed.stdout.splitlines()) if listed.returncode == 0 else 0


@pytest.mark.skipif(not _nvidia_gpus(), reason="needs an NVIDIA GPU")
def test_two_trials_share_a_real_gpu(ray_driver):
    """The GPUs Ray finds, shared by twice as many trials at a time: two trials, half a GPU each, run at once on
    one GPU, and each one's torch sees that GPU only and computes on it."""
    found = _nvidia_gpus()
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        found = len([d for d in visible.split(",") if d.strip()])
    if not found:
        pytest.skip(f"CUDA_VISIBLE_DEVICES={visible!r} hides every GPU")
    nodes, trials = ray_driver("real", lambda nodes: trial_resources(nodes, 2 * found, 1, None))
    assert sum(n["Resources"].get("GPU", 0) for n in nodes) == found
    seen = _check_shared(trials)
    import torch

    if torch.cuda.is_available():  # a CUDA build of torch: the trials' torch computes on the one GPU each sees
        assert [s.get("torch") for s in seen] == [[1, 2.0], [1, 2.0]], seen
