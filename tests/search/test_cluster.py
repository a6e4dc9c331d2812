import http.server
import json
import socket
import threading

import pytest

from shrinktune.errors import UserError
from shrinktune.search.cluster import auth_token, check_job_server, job_server_url


def test_job_server_url_from_ray_address_forms():
    assert job_server_url(None) == "http://127.0.0.1:8265"
    assert job_server_url("http://head:8265/") == "http://head:8265"
    assert job_server_url("10.0.0.5:6379") == "http://10.0.0.5:8265"
    assert job_server_url("ray://head:10001") == "http://head:8265"


def test_token_comes_from_env_then_file(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("RAY_AUTH_TOKEN", raising=False)
    monkeypatch.delenv("RAY_AUTH_TOKEN_PATH", raising=False)
    assert auth_token() is None
    (tmp_path / ".ray").mkdir()
    (tmp_path / ".ray" / "auth_token").write_text("from-file\n")
    assert auth_token() == "from-file"
    monkeypatch.setenv("RAY_AUTH_TOKEN", "from-env")
    assert auth_token() == "from-env"


@pytest.fixture
def job_server():
    """A stand-in job server on loopback that wants `Bearer good`."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            ok = self.headers.get("Authorization") == "Bearer good"
            self.send_response(200 if ok else 401)
            self.end_headers()
            if ok:
                self.wfile.write(json.dumps({"ray_version": "2.60.0"}).encode())

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_token_problems_are_told_apart(job_server, monkeypatch):
    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    with pytest.raises(UserError, match="requires a token: export RAY_AUTH_MODE=token"):
        check_job_server(job_server)
    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    monkeypatch.setenv("RAY_AUTH_TOKEN", "bad")
    with pytest.raises(UserError, match="refused this machine's token .*wrong token"):
        check_job_server(job_server)
    monkeypatch.setenv("RAY_AUTH_TOKEN", "good")
    assert check_job_server(job_server) == "2.60.0"


def test_nothing_listening_says_start_a_head():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(UserError, match=r"no Ray cluster at .*ray start --head"):
        check_job_server(f"http://127.0.0.1:{port}", timeout=2)


def test_job_mode_writes_results_outside_the_temporary_working_dir(monkeypatch, tmp_path):
    from shrinktune.cli import output_home

    monkeypatch.delenv("SHRINKTUNE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("RAY_JOB_CONFIG_JSON_ENV_VAR", raising=False)
    assert output_home() == tmp_path
    monkeypatch.setenv("RAY_JOB_CONFIG_JSON_ENV_VAR", json.dumps({"runtime_env": {"working_dir": "gcs://_ray_pkg_x.zip"}}))
    assert output_home() == tmp_path / "shrinktune"
    monkeypatch.setenv("SHRINKTUNE_HOME", str(tmp_path / "elsewhere"))
    assert output_home() == tmp_path / "elsewhere" and (tmp_path / "elsewhere").is_dir()


def test_trial_resources_fit_one_node():
    from shrinktune.search.runner import trial_resources

    nodes = [{"Alive": True, "Resources": {"CPU": 2.0}}, {"Alive": True, "Resources": {"CPU": 1.0}},
             {"Alive": False, "Resources": {"CPU": 64.0, "GPU": 8.0}}]
    assert trial_resources(nodes, 1, None, None) == (2, 0)  # not 3: no node has 3 CPUs
    assert trial_resources(nodes, 3, None, None) == (1, 0)
    assert trial_resources([{"Alive": True, "Resources": {"CPU": 8.0, "GPU": 2.0}}], 2, None, 0.5) == (4, 0.5)
    with pytest.raises(UserError, match="asks for 4 CPU and 0 GPU but the largest node has 2 CPU"):
        trial_resources(nodes, 1, 4, None)
    with pytest.raises(UserError, match="asks for 2 CPU and 1 GPU"):
        trial_resources(nodes, 1, None, 1)


def test_head_without_job_server_says_include_dashboard(monkeypatch):
    import shrinktune.search.cluster as cluster

    with socket.socket() as gcs, socket.socket() as closed:
        gcs.bind(("127.0.0.1", 0))
        gcs.listen()
        closed.bind(("127.0.0.1", 0))
        monkeypatch.setattr(cluster, "GCS_PORT", gcs.getsockname()[1])  # a "head" answers on its GCS port
        url = f"http://127.0.0.1:{closed.getsockname()[1]}"  # ... but nothing serves jobs
        with pytest.raises(
            UserError, match=r"a Ray head runs on 127.0.0.1 but its job server .* --include-dashboard true"
        ):
            check_job_server(url, timeout=2)
