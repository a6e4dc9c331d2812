"""Ray jobs on a real (local) cluster: a head and a second node, token authentication on, the README's command.

Marked e2e. The test starts the cluster, submits `ray job submit --working-dir . -- python -m platform.search
summarization --trials 2`, waits for the job to succeed, finds its runs in MLflow, then stops the cluster and
checks that no Ray process is left. The head's environment carries SHRINKTUNE_HOME and SHRINKTUNE_CACHE, as an
operator would set them on a real cluster, so the job's default MLflow store and cache land in the test's folder.
"""

import os
import pathlib
import socket
import subprocess
import sys
import time

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.e2e
RAY_DAEMONS = ("raylet", "gcs_server", "dashboard.py", "ray::")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ray_processes() -> list[str]:
    """Command lines of Ray daemons and workers running on this machine (read from /proc)."""
    found = []
    for cmdline_file in pathlib.Path("/proc").glob("[0-9]*/cmdline"):
        try:
            cmdline = cmdline_file.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if any(daemon in cmdline for daemon in RAY_DAEMONS) and "pytest" not in cmdline:
            found.append(cmdline[:120])
    return found


def _ray(*args, env, timeout=180, check=True):
    out = subprocess.run(["ray", *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    if check:
        assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return out


@pytest.fixture
def cluster(tmp_path, embedded_cache):
    deadline = time.time() + 60  # a local Ray that an earlier test's search started may take a moment to exit
    while _ray_processes() and time.time() < deadline:
        time.sleep(2)
    if _ray_processes():
        pytest.skip("another Ray cluster runs on this machine; this test starts and stops its own")
    env = {**os.environ, "RAY_AUTH_MODE": "token", "SHRINKTUNE_HOME": str(tmp_path / "home"),
           "SHRINKTUNE_CACHE": str(embedded_cache), "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("RAY_ADDRESS", None)
    gcs, dashboard = _free_port(), _free_port()
    try:
        # The head gets 1 CPU and the second node 2: a trial takes 2 CPUs by default (the largest node's), so every
        # trial must run on the second node, whose workers import the project shipped with the job.
        _ray("start", "--head", "--port", str(gcs), "--dashboard-port", str(dashboard), "--include-dashboard", "true",
             "--num-cpus", "1", env=env)
        _ray("start", "--address", f"127.0.0.1:{gcs}", "--num-cpus", "2", env=env)
        yield env, f"http://127.0.0.1:{dashboard}", gcs
    finally:
        _ray("stop", "--force", env=env, check=False)
        deadline = time.time() + 30
        while _ray_processes() and time.time() < deadline:
            time.sleep(1)
        assert _ray_processes() == [], "Ray processes left behind"


def test_readme_job_command_on_two_nodes(cluster, tmp_path):
    env, server, gcs = cluster
    env = {**env, "RAY_ADDRESS": server}
    nodes = subprocess.run([sys.executable, "-c", f"import ray; ray.init(address='127.0.0.1:{gcs}'); "
                            "print(sum(n['Alive'] for n in ray.nodes()))"],
                           env=env, capture_output=True, text=True, timeout=120)
    assert nodes.stdout.strip().splitlines()[-1] == "2", nodes.stderr[-2000:]

    out = _ray("job", "submit", "--working-dir", ".", "--", "python", "-m", "platform.search", "summarization",
               "--trials", "2", env=env, timeout=1500)
    assert "succeeded" in out.stdout and "Pareto front of summarization" in out.stdout

    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path}/home/mlflow.db")
    experiment = client.get_experiment_by_name("summarization")
    runs = client.search_runs([experiment.experiment_id])
    assert sum(r.data.tags.get("shrinktune.kind") == "search" for r in runs) == 1
    assert sum(r.data.tags.get("shrinktune.kind") == "trial" for r in runs) == 2
    assert (tmp_path / "home" / "shrinktune_runs").is_dir()


def test_submit_checks_name_the_fix(tmp_path):
    env = {**os.environ, "RAY_AUTH_MODE": "token"}
    port = _free_port()
    out = subprocess.run([sys.executable, "-m", "platform.submit", "--address", f"http://127.0.0.1:{port}",
                          "summarization"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines()[-1].startswith("error: no Ray cluster at") or "job server" in out.stderr
