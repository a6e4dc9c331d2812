import email.message
import http.server
import io
import json
import logging
import os
import socket
import socketserver
import threading
import urllib.request

import pytest

from shrinktune.errors import UserError
from shrinktune.search.cluster import (
    RAY_CLUSTER_ENV,
    auth_token,
    bind_local_ray,
    check_job_server,
    is_loopback,
    job_server_url,
)


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
def token_file(monkeypatch, tmp_path):
    """A token file as Ray writes it (0644), named by RAY_AUTH_TOKEN_PATH."""
    path = tmp_path / "auth_token"
    path.write_text("secret\n")
    path.chmod(0o644)
    monkeypatch.delenv("RAY_AUTH_TOKEN", raising=False)
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(path))
    return path


def test_own_token_file_open_to_others_is_set_to_owner_only(token_file, caplog):
    with caplog.at_level(logging.WARNING, logger="shrinktune.search.cluster"):
        assert auth_token() == "secret"
    assert token_file.stat().st_mode & 0o777 == 0o600
    assert caplog.messages == [f"Ray's token file {token_file} was open to group/others (mode 0644); "
                               "set it to 0600 (owner only)."]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="shrinktune.search.cluster"):
        assert auth_token() == "secret"
    assert caplog.messages == []  # once private, nothing more to say


@pytest.mark.skipif(not hasattr(os, "getuid"), reason="file owners are POSIX")
def test_token_file_of_another_user_is_only_warned_about(token_file, caplog, monkeypatch):
    monkeypatch.setattr(os, "getuid", lambda: token_file.stat().st_uid + 1)
    with caplog.at_level(logging.WARNING, logger="shrinktune.search.cluster"):
        assert auth_token() == "secret"
    assert token_file.stat().st_mode & 0o777 == 0o644
    assert "belongs to another user" in caplog.text and f"chmod 600 {token_file}" in caplog.text


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


@pytest.fixture
def answering():
    """Starts a server on loopback that answers every GET with HTTP 200, `body` and `content_type`."""
    servers = []

    def start(body: bytes, content_type: str) -> str:
        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                self.send_response(200)
                self.send_header("Content-Type", content_type)
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}"

    yield start
    for server in servers:
        server.shutdown()


@pytest.mark.parametrize("body, content_type, problem", [
    (b"<!doctype html><html><body>Grafana</body></html>", "text/html", r"text/html that is not JSON: '<!doctype html>"),
    (b"[1, 2]", "application/json", "a JSON array, not an object"),
    (b"\xff\xfe\x00\x81garbage", "application/octet-stream", "11 bytes that are not UTF-8 text"),
    (b'{"status": "ok"}', "application/json", "JSON without ray_version"),
    (b'"2.60.0"', "application/json", "a JSON string, not an object"),
])
def test_something_else_answering_is_not_a_job_server(answering, monkeypatch, body, content_type, problem):
    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    url = answering(body, content_type)
    with pytest.raises(UserError, match=rf"the server at {url} answered something that is not a Ray job server "
                                        rf"\({problem}.*\); check the address and the port: .* port 8265"):
        check_job_server(url, timeout=5)


def test_a_server_that_does_not_speak_http_is_not_a_job_server(monkeypatch):
    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)

    class Garbage(socketserver.BaseRequestHandler):
        def handle(self):
            self.request.recv(1024)
            self.request.sendall(b"\x00\x00\x12\x04 not http\r\n\r\n")  # what a gRPC port might say

    with socketserver.TCPServer(("127.0.0.1", 0), Garbage) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        url = f"http://127.0.0.1:{server.server_address[1]}"
        with pytest.raises(UserError, match=r"answered something that is not a Ray job server \(no HTTP answer"):
            check_job_server(url, timeout=5)
        server.shutdown()


@pytest.mark.parametrize("host", ["localhost", "LOCALHOST", "127.0.0.1", "127.1.2.3", "::1", "::ffff:127.0.0.1"])
def test_loopback_names(host):
    assert is_loopback(host)


@pytest.mark.parametrize("host", ["10.0.0.5", "192.0.2.1", "head", "::", "0.0.0.0", "localhost.example.com", "::2"])
def test_names_that_leave_the_machine(host):
    assert not is_loopback(host)


@pytest.fixture
def fake_job_server(monkeypatch):
    """Replaces the network: records each request check_job_server sends and answers as Ray 2.60 would."""
    sent = []

    class Answer(io.BytesIO):
        headers = email.message.Message()

    def urlopen(request, timeout):
        sent.append(request)
        return Answer(json.dumps({"ray_version": "2.60.0"}).encode())

    monkeypatch.setattr(urllib.request, "urlopen", urlopen)
    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    monkeypatch.setenv("RAY_AUTH_TOKEN", "good")
    monkeypatch.delenv("SHRINKTUNE_ALLOW_HTTP_TOKEN", raising=False)
    return sent


def test_token_is_not_sent_in_clear_text_to_another_machine(fake_job_server):
    with pytest.raises(UserError, match=r"refusing to send the Ray token to http://192\.0\.2\.1:8265 over plain http: "
                                        r"it would cross the network in clear text; open an SSH tunnel "
                                        r"\(`ssh -N -L 8265:127\.0\.0\.1:8265 192\.0\.2\.1`\) and set "
                                        r"RAY_ADDRESS=http://127\.0\.0\.1:8265, use https, or pass --allow-http-token"):
        check_job_server("http://192.0.2.1:8265")
    assert fake_job_server == []  # refused before any connection


def test_token_goes_over_loopback_https_or_when_allowed(fake_job_server, monkeypatch):
    assert check_job_server("http://127.0.0.1:8265") == "2.60.0"
    assert check_job_server("http://localhost:8265") == "2.60.0"
    assert check_job_server("https://head.example.com:8265") == "2.60.0"
    assert check_job_server("http://192.0.2.1:8265", allow_http_token=True) == "2.60.0"
    monkeypatch.setenv("SHRINKTUNE_ALLOW_HTTP_TOKEN", "1")
    assert check_job_server("http://192.0.2.1:8265") == "2.60.0"
    assert [request.get_header("Authorization") for request in fake_job_server] == ["Bearer good"] * 5


def test_without_a_token_there_is_nothing_to_refuse(fake_job_server, monkeypatch):
    monkeypatch.delenv("RAY_AUTH_MODE")
    assert check_job_server("http://192.0.2.1:8265") == "2.60.0"
    assert fake_job_server[0].get_header("Authorization") is None


def test_bind_local_ray_sets_rays_node_address_switch(monkeypatch):
    """Cheap half of tests/search/test_local_ray.py: the private switch still exists and still decides the address."""
    import ray
    from ray._private import ray_constants

    monkeypatch.setattr(ray_constants, "ENABLE_RAY_CLUSTER", ray_constants.ENABLE_RAY_CLUSTER)  # restored after
    monkeypatch.setenv(RAY_CLUSTER_ENV, "unset by the test")
    bind_local_ray()
    assert os.environ[RAY_CLUSTER_ENV] == "0" and ray_constants.ENABLE_RAY_CLUSTER is False
    assert not ray.is_initialized() and ray.util.get_node_ip_address() == "127.0.0.1"
    bind_local_ray(listen_all=True)
    assert os.environ[RAY_CLUSTER_ENV] == "1" and ray_constants.ENABLE_RAY_CLUSTER is True
    monkeypatch.delattr(ray_constants, "ENABLE_RAY_CLUSTER")
    with pytest.raises(RuntimeError, match="ENABLE_RAY_CLUSTER is gone"):
        bind_local_ray()


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
