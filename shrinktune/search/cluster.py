"""Checks on a Ray cluster's job server before a search is submitted to it.

`ray job submit` talks to the head's dashboard (the job server, port 8265), which Ray 2.60 protects with a token
when the cluster runs with `RAY_AUTH_MODE=token`. These checks turn the usual failures — no cluster, a head
without the dashboard, a missing or wrong token, something else answering on the port — into one line that says
what to start or set. They also keep the token to its owner (its file owner-only, never sent in clear text across
the network unless asked), and `bind_local_ray` keeps a Ray that a search starts on this machine off the network.
"""

from __future__ import annotations

import http.client
import ipaddress
import json
import logging
import os
import socket
import stat
import sys
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlparse

from shrinktune.errors import UserError

logger = logging.getLogger(__name__)

DEFAULT_JOB_SERVER = "http://127.0.0.1:8265"
GCS_PORT = 6379
ALLOW_HTTP_TOKEN_ENV = "SHRINKTUNE_ALLOW_HTTP_TOKEN"  # "1": send the token over plain http to another machine
# Ray reads this once, when it is imported: "0" makes a new local Ray take 127.0.0.1 as its node address, as it does
# on macOS and Windows, and every Ray process then listens on loopback only (see `bind_local_ray`).
RAY_CLUSTER_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


def submitted_working_dir() -> str | None:
    """The uploaded working directory of the Ray job this process is the driver of, if any.

    Ray hands a job's driver its job config (runtime environment included) in RAY_JOB_CONFIG_JSON_ENV_VAR.
    """
    raw = os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR")
    if not raw:
        return None
    try:
        return (json.loads(raw).get("runtime_env") or {}).get("working_dir")
    except (ValueError, AttributeError):
        return None


def leave_uploaded_copy(folder: Path) -> None:
    """Moves a submitted job's driver out of Ray's unpacked copy of the working directory, into `folder`.

    Another node on the same machine may unpack that copy again, replacing the folder under the running driver.
    This changes process-wide state on purpose, once, in the driver of a submitted job only: the working directory,
    and `sys.path`'s relative entries made absolute so that imports keep resolving from the copy.
    """
    sys.path[:] = [os.path.abspath(p) if p in ("", ".") else p for p in sys.path]
    folder.mkdir(parents=True, exist_ok=True)
    os.chdir(folder)


def job_server_url(address: str | None) -> str:
    """The job server for RAY_ADDRESS-style input: an http(s) URL as is; `host:port` (GCS) → http://host:8265."""
    if not address or address == "auto":
        return DEFAULT_JOB_SERVER
    if address.startswith(("http://", "https://")):
        return address.rstrip("/")
    host = address.removeprefix("ray://").rsplit(":", 1)[0]
    return f"http://{host}:8265"


def auth_token() -> str | None:
    """The token this machine would send: RAY_AUTH_TOKEN, the file at RAY_AUTH_TOKEN_PATH, or ~/.ray/auth_token.

    Ray writes the token file readable by everyone (0644). A file of this user's that group or others can open is
    set to 0600 here, with a warning; one that belongs to another user is left as it is, with a warning.
    """
    if os.environ.get("RAY_AUTH_TOKEN"):
        return os.environ["RAY_AUTH_TOKEN"].strip()
    path = Path(os.environ.get("RAY_AUTH_TOKEN_PATH") or Path.home() / ".ray" / "auth_token")
    if not path.is_file():
        return None
    _keep_token_file_private(path)
    return path.read_text().strip()


def _keep_token_file_private(path: Path) -> None:
    """Sets the token file to owner-only when it is this user's; warns when group or others can open it."""
    info = path.stat()
    mode = stat.S_IMODE(info.st_mode)
    if not mode & 0o077:
        return
    if hasattr(os, "getuid") and info.st_uid == os.getuid():
        path.chmod(0o600)
        logger.warning("Ray's token file %s was open to group/others (mode %04o); set it to 0600 (owner only).",
                       path, mode)
    else:
        logger.warning("Ray's token file %s is open to group/others (mode %04o) and belongs to another user "
                       "(uid %d); left as it is: ask its owner to `chmod 600 %s`.", path, mode, info.st_uid, path)


def is_loopback(host: str) -> bool:
    """True for `localhost`, 127.0.0.0/8 and ::1 (also written as ::ffff:127.x.y.z): names that never leave the
    machine."""
    if host.lower() == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return (mapped or address).is_loopback


def _http_token_allowed(allow_http_token: bool) -> bool:
    return allow_http_token or os.environ.get(ALLOW_HTTP_TOKEN_ENV, "").strip().lower() in ("1", "true", "yes")


def bind_local_ray(listen_all: bool = False) -> None:
    """Chooses where a Ray that this process starts (`ray.init()` without a cluster) listens: loopback only, or,
    with `listen_all`, the network too. Call it before `ray.init()`; joining a running cluster is not affected.

    Ray 2.60 derives every listening address of a node from its node IP. On Linux that is the machine's routable
    address, and a local Ray then listens on the network: the GCS, the raylet (node manager and object manager),
    every worker's and the dashboard agent's gRPC servers on all interfaces (::), the three Prometheus metrics
    endpoints (dashboard agent, minimal dashboard head on 44227, autoscaler monitor on 44217) on 0.0.0.0 without
    authentication, and the dashboard agent's and runtime-env agent's HTTP servers on the routable address. With a
    node IP of 127.0.0.1, each of them listens on loopback only (IPv4, or ::ffff:127.0.0.1 on an IPv6 socket).

    `ray.init(_node_ip_address="127.0.0.1")` cannot say that: Ray rewrites a loopback address to the routable one,
    unless its cluster switch (RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER, read once when Ray is imported) is off, as on
    macOS and Windows. This sets that switch in the environment, for the processes the new Ray starts, and in the
    already imported Ray (a private constant; `tests/search/test_local_ray.py` fails if Ray drops it).
    """
    from ray._private import ray_constants

    if not hasattr(ray_constants, "ENABLE_RAY_CLUSTER"):
        raise RuntimeError("ray._private.ray_constants.ENABLE_RAY_CLUSTER is gone: this Ray cannot be kept on "
                           "loopback by shrinktune.search.cluster.bind_local_ray; update it for this Ray version.")
    os.environ[RAY_CLUSTER_ENV] = "1" if listen_all else "0"
    ray_constants.ENABLE_RAY_CLUSTER = listen_all


def _port_open(host: str, port: int, timeout: float = 3.0) -> bool:
    try:
        socket.create_connection((host, port), timeout=timeout).close()
        return True
    except OSError:
        return False


def _not_a_job_server(body: bytes, content_type: str) -> str | None:
    """What is wrong with an answer to /api/version, or None when it is a Ray job server's."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return f"{len(body)} bytes that are not UTF-8 text"
    try:
        answer = json.loads(text)
    except ValueError:
        start = " ".join(text.split())[:60]
        return f"{content_type} that is not JSON: {start!r}"
    if not isinstance(answer, dict):
        kinds = {list: "a JSON array", str: "a JSON string", bool: "a JSON boolean", type(None): "JSON null"}
        return f"{kinds.get(type(answer), 'a JSON number')}, not an object"
    if not isinstance(answer.get("ray_version"), str):
        return "JSON without ray_version"
    return None


def check_job_server(url: str, timeout: float = 10.0, *, allow_http_token: bool = False) -> str:
    """Returns the cluster's Ray version when its job server answers with this machine's credentials.

    Args:
        url: the job server, http(s)://host:port.
        timeout: seconds to wait for the connection and the answer.
        allow_http_token: send the token over plain http to a host that is not this machine (also set by
            SHRINKTUNE_ALLOW_HTTP_TOKEN=1); without it, that is refused before anything is sent.

    Raises:
        UserError: no cluster, a head without the dashboard, an authentication problem, a token that would cross
            the network in clear text, or something else than a job server answering, with the fix.
    """
    parsed = urlparse(url)
    host = parsed.hostname or "127.0.0.1"
    request = urllib.request.Request(f"{url}/api/version")
    token = auth_token() if os.environ.get("RAY_AUTH_MODE", "").lower() == "token" else None
    if token and parsed.scheme == "http" and not is_loopback(host) and not _http_token_allowed(allow_http_token):
        raise UserError(
            f"refusing to send the Ray token to {url} over plain http: it would cross the network in clear text; "
            f"open an SSH tunnel (`ssh -N -L 8265:127.0.0.1:8265 {host}`) and set RAY_ADDRESS=http://127.0.0.1:8265, "
            f"use https, or pass --allow-http-token ({ALLOW_HTTP_TOKEN_ENV}=1) on a network you trust."
        )
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            body, content_type = response.read(), response.headers.get_content_type()
    except urllib.error.HTTPError as error:
        if error.code in (401, 403):
            if os.environ.get("RAY_AUTH_MODE", "").lower() != "token":
                raise UserError(
                    f"the Ray cluster at {url} requires a token: export RAY_AUTH_MODE=token (the token is read from "
                    "RAY_AUTH_TOKEN or ~/.ray/auth_token; copy the head's ~/.ray/auth_token when not on the head)."
                ) from None
            raise UserError(
                f"the Ray cluster at {url} refused this machine's token "
                f"({'none found' if not token else 'wrong token'}); "
                "set RAY_AUTH_TOKEN to the content of the head's ~/.ray/auth_token."
            ) from None
        raise UserError(f"the Ray job server at {url} answered HTTP {error.code}; check the address.") from None
    except (urllib.error.URLError, OSError):
        if _port_open(host, GCS_PORT):
            raise UserError(
                f"a Ray head runs on {host} but its job server ({url}) does not answer: restart it with "
                "`ray start --head --include-dashboard true` (needs ray[default], which the project installs)."
            ) from None
        raise UserError(
            f"no Ray cluster at {url}: start one with `RAY_AUTH_MODE=token ray start --head` on the head node, "
            "or set RAY_ADDRESS to the head's job server (http://<head>:8265)."
        ) from None
    except http.client.HTTPException as error:  # no HTTP/1 status line, e.g. Ray's GCS (gRPC) port
        raise _not_a_job_server_error(url, f"no HTTP answer: {type(error).__name__}") from None
    problem = _not_a_job_server(body, content_type)
    if problem:
        raise _not_a_job_server_error(url, problem)
    return json.loads(body)["ray_version"]


def _not_a_job_server_error(url: str, problem: str) -> UserError:
    return UserError(f"the server at {url} answered something that is not a Ray job server ({problem}); check the "
                     "address and the port: the job server is the head's dashboard, on port 8265 unless "
                     "`ray start --dashboard-port` chose another.")
