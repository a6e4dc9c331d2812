"""A real `mlflow server` (one worker on loopback) on a store the tests wrote, for the server and browser tests."""

import contextlib
import socket
import subprocess
import sys
import time
import urllib.request

import pytest


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def _serving(uri: str, folder):
    """Starts `mlflow server` on `uri`, waits for its /health (90 s at most), yields its base URL, stops it."""
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", uri, "--host", "127.0.0.1",
         "--port", str(port), "--workers", "1"], cwd=folder, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 90
        while True:
            try:
                with urllib.request.urlopen(f"{base}/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                if time.time() > deadline or server.poll() is not None:
                    raise AssertionError("mlflow server did not come up") from None
                time.sleep(1)
        yield base
    finally:
        server.terminate()
        server.wait(timeout=30)


@pytest.fixture
def mlflow_server(tmp_path):
    """`mlflow_server(uri)`: a context manager serving that store; yields the server's base URL."""
    return lambda uri: _serving(uri, tmp_path)
