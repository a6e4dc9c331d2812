"""Checks on a Ray cluster's job server before a search is submitted to it.

`ray job submit` talks to the head's dashboard (the job server, port 8265), which Ray 2.60 protects with a token
when the cluster runs with `RAY_AUTH_MODE=token`. These checks turn the usual failures — no cluster, a head
without the dashboard, a missing or wrong token — into one line that says what to start or set.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlparse

from shrinktune.errors import UserError

DEFAULT_JOB_SERVER = "http://127.0.0.1:8265"
GCS_PORT = 6379


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
    """The token this machine would send: RAY_AUTH_TOKEN, the file at RAY_AUTH_TOKEN_PATH, or ~/.ray/auth_token."""
    if os.environ.get("RAY_AUTH_TOKEN"):
        return os.environ["RAY_AUTH_TOKEN"].strip()
    path = Path(os.environ.get("RAY_AUTH_TOKEN_PATH") or Path.home() / ".ray" / "auth_token")
    return path.read_text().strip() if path.is_file() else None


def _port_open(host: str, port: int, timeout: float = 3.0) -> bool:
    try:
        socket.create_connection((host, port), timeout=timeout).close()
        return True
    except OSError:
        return False


def check_job_server(url: str, timeout: float = 10.0) -> str:
    """Returns the cluster's Ray version when its job server answers with this machine's credentials.

    Raises:
        UserError: no cluster, a head without the dashboard, or an authentication problem, with the fix.
    """
    parsed = urlparse(url)
    host = parsed.hostname or "127.0.0.1"
    request = urllib.request.Request(f"{url}/api/version")
    token = auth_token() if os.environ.get("RAY_AUTH_MODE", "").lower() == "token" else None
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:

            return json.loads(response.read()).get("ray_version", "?")
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
