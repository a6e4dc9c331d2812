"""The Docker files agree with the project and with each other. The checks read the files and need no Docker engine.

    python -m pytest -q tests/test_docker.py
"""

from __future__ import annotations

import re
import shlex
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCKER = ROOT / "docker"
DOCKERFILES = {"cpu": DOCKER / "Dockerfile.cpu", "gpu": DOCKER / "Dockerfile.gpu"}
COMPOSE = DOCKER / "compose.yaml"
PROJECT_FILES = {"pyproject.toml", "constraints.txt", "README.md", "platform", "shrinktune", "search_spaces"}
HEADERS = {
    DOCKERFILES["cpu"]: "# docker build -f docker/Dockerfile.cpu -t shrinktune:cpu .",
    DOCKERFILES["gpu"]: "# docker build -f docker/Dockerfile.gpu -t shrinktune:gpu .",
    COMPOSE: "# docker compose -f docker/compose.yaml up -d --build",
}
SEARCH_COMMAND = ("# docker compose -f docker/compose.yaml exec ray-head python -m platform.search summarization "
                  "--storage /shared/runs --tracking-uri http://mlflow:5000")


def parse_dockerfile(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs: comments and blank lines dropped, `\\` continuations joined."""
    instructions, pending = [], ""
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):  # Docker drops these inside a continuation too
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1].strip() + " "
            continue
        keyword, _, arguments = (pending + stripped).partition(" ")
        instructions.append((keyword.upper(), arguments.strip()))
        pending = ""
    if pending:
        raise ValueError(f"the last instruction ends with a continuation: {pending!r}")
    return instructions


def pins() -> dict[str, str]:
    """constraints.txt as {name: version}."""
    found = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if "==" in line and not line.lstrip().startswith("#"):
            name, version = line.split("==", 1)
            found[name.strip().lower()] = version.strip()
    return found


def runs(path: Path) -> list[str]:
    return [arguments for keyword, arguments in parse_dockerfile(path.read_text()) if keyword == "RUN"]


def pip_installs(path: Path) -> list[list[str]]:
    """The words of every `pip install` command in the file's RUN lines."""
    commands = []
    for run in runs(path):
        for command in re.split(r"&&|;", run):
            words = shlex.split(command)
            if words[:2] == ["pip", "install"]:
                commands.append(words)
    return commands


def constraint_files(install: list[str]) -> list[str]:
    return [install[i + 1] for i, word in enumerate(install) if word == "-c"]


def load_compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def environment(service: dict) -> dict[str, str | None]:
    """A service's environment, list or mapping form, as {name: value}; None for a name passed through."""
    env = service.get("environment") or {}
    if isinstance(env, dict):
        return {name: None if value is None else str(value) for name, value in env.items()}
    return {entry.partition("=")[0]: entry.partition("=")[2] if "=" in entry else None for entry in env}


def named_mounts(service: dict) -> dict[str, str]:
    """{container path: volume name} for the service's named volumes (not bind mounts)."""
    mounts = {}
    for volume in service.get("volumes", []):
        if isinstance(volume, dict):
            if volume.get("type", "volume") == "volume" and volume.get("source"):
                mounts[volume["target"]] = volume["source"]
            continue
        source, _, rest = volume.partition(":")
        if rest and not source.startswith(("/", ".", "~", "$")):
            mounts[rest.split(":")[0]] = source
    return mounts


def flag(command: str, name: str) -> str:
    """The value of `--name value` or `--name=value` in a command line."""
    words = shlex.split(command)
    for i, word in enumerate(words):
        if word == name:
            return words[i + 1]
        if word.startswith(name + "="):
            return word.split("=", 1)[1]
    raise AssertionError(f"{name} missing from: {command}")


# ---- Dockerfiles ----

def test_parser_joins_continuations_and_drops_comments():
    text = "# header\nFROM a:1\n\nRUN one \\\n    # a comment inside\n    two \\\n    three\nENV A=1\n"
    assert parse_dockerfile(text) == [("FROM", "a:1"), ("RUN", "one two three"), ("ENV", "A=1")]
    with pytest.raises(ValueError, match="continuation"):
        parse_dockerfile("FROM a:1\nRUN one \\\n")


@pytest.mark.parametrize("kind", DOCKERFILES)
def test_base_image_is_the_pinned_ray_for_the_project_python(kind):
    instructions = parse_dockerfile(DOCKERFILES[kind].read_text())
    assert instructions[0][0] == "FROM"
    image = instructions[0][1]
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    major, minor = re.search(r">=\s*(\d+)\.(\d+)", requires).groups()
    assert image == f"rayproject/ray:{pins()['ray']}-py{major}{minor}-{kind}"


@pytest.mark.parametrize("kind", DOCKERFILES)
def test_every_copy_source_exists_and_the_project_is_copied(kind):
    copied = set()
    for keyword, arguments in parse_dockerfile(DOCKERFILES[kind].read_text()):
        if keyword != "COPY":
            continue
        words = [word for word in shlex.split(arguments) if not word.startswith("--")]
        assert len(words) >= 2, f"COPY needs a source and a destination: {arguments}"
        for source in words[:-1]:
            assert (ROOT / source).exists(), f"{DOCKERFILES[kind].name}: COPY source {source} is not in the repository"
            copied.add(source.rstrip("/"))
    assert copied == PROJECT_FILES


@pytest.mark.parametrize("kind", DOCKERFILES)
def test_workdir_cache_and_editable_install(kind):
    instructions = parse_dockerfile(DOCKERFILES[kind].read_text())
    assert ("WORKDIR", "/app") in instructions
    assert ("ENV", "SHRINKTUNE_CACHE=/cache") in instructions
    assert ("VOLUME", "/cache") in instructions
    assert any(install[-2:] == ["-e", "."] for install in pip_installs(DOCKERFILES[kind]))


def test_cpu_image_installs_the_pinned_cpu_torch_with_the_constraints():
    torch_pin = pins()["torch"]
    assert torch_pin.endswith("+cpu")
    version = torch_pin.removesuffix("+cpu")
    assert f"torch=={version}" in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    installs = pip_installs(DOCKERFILES["cpu"])
    torch_install = next(install for install in installs if any(w.startswith("torch==") for w in install))
    assert f"torch=={version}" in torch_install
    assert "https://download.pytorch.org/whl/cpu" in torch_install  # the only index with the +cpu wheel
    assert torch_install[torch_install.index("https://download.pytorch.org/whl/cpu") - 1] == "--extra-index-url"
    for install in installs:
        assert constraint_files(install) == ["constraints.txt"], install


def test_gpu_image_installs_cuda_torch_without_the_cpu_pin():
    version = pins()["torch"].removesuffix("+cpu")
    filters = [re.search(r"grep -v '([^']+)' constraints\.txt > (\S+)", run) for run in runs(DOCKERFILES["gpu"])]
    pattern, filtered = next(match.groups() for match in filters if match)
    kept = [line for line in (ROOT / "constraints.txt").read_text().splitlines() if not re.search(pattern, line)]
    assert not any(line.startswith("torch==") for line in kept)
    assert len(kept) == len((ROOT / "constraints.txt").read_text().splitlines()) - 1  # only the torch line goes
    installs = pip_installs(DOCKERFILES["gpu"])
    assert any(f"torch=={version}" in install for install in installs)
    for install in installs:
        assert constraint_files(install) == [filtered], install
        assert not any("download.pytorch.org/whl/cpu" in word for word in install)


def test_image_owns_every_folder_compose_mounts_a_volume_on():
    made, owned = set(), set()
    for run in runs(DOCKERFILES["cpu"]):
        for command in re.split(r"&&|;", run):
            words = shlex.split(command)
            if words and words[0] == "mkdir":
                made |= {word for word in words[1:] if not word.startswith("-")}
            if words and words[0] == "chown" and words[1] == "1000:100":  # the Ray image's user ray
                owned |= set(words[2:])
    for name, service in load_compose()["services"].items():
        for target in named_mounts(service):
            assert target in made & owned, (
                f"compose.yaml: {name} mounts a volume on {target}; create it and chown it to ray in Dockerfile.cpu")


# ---- compose.yaml ----

def test_compose_has_the_services():
    assert {"ray-head", "ray-worker", "mlflow"} <= set(load_compose()["services"])


def test_every_published_port_is_loopback_only():
    for name, service in load_compose()["services"].items():
        for port in service.get("ports", []):
            parts = str(port).split(":")  # HOST_IP:HOST_PORT:CONTAINER_PORT; fewer parts means every address
            host_ip = port.get("host_ip") if isinstance(port, dict) else parts[0] if len(parts) == 3 else None
            assert host_ip == "127.0.0.1", f"compose.yaml: {name} publishes {port}; bind it to 127.0.0.1"


def test_every_build_dockerfile_exists_and_every_image_is_built_here():
    services = load_compose()["services"]
    built = {}
    for name, service in services.items():
        if "build" in service:
            context = DOCKER / service["build"]["context"]
            dockerfile = context / service["build"]["dockerfile"]
            assert dockerfile.is_file(), f"compose.yaml: {name} builds from {dockerfile}, which does not exist"
            built[service["image"]] = dockerfile.resolve()
    assert built == {"shrinktune:cpu": DOCKERFILES["cpu"]}
    tag = HEADERS[DOCKERFILES["cpu"]].split("-t ")[1].split()[0]
    assert tag == "shrinktune:cpu"
    for name in ("ray-head", "ray-worker", "mlflow"):
        assert services[name]["image"] == "shrinktune:cpu"


def test_every_named_volume_is_declared():
    compose = load_compose()
    declared = set(compose.get("volumes") or {})
    for name, service in compose["services"].items():
        for target, volume in named_mounts(service).items():
            assert volume in declared, \
                f"compose.yaml: {name} mounts volume {volume} at {target}; declare it under volumes"


def test_ray_nodes_share_storage_cache_and_tracking():
    services = load_compose()["services"]
    head, worker = services["ray-head"], services["ray-worker"]
    for path in ("/shared/runs", "/cache"):
        assert path in named_mounts(head) and named_mounts(head)[path] == named_mounts(worker).get(path)
    for service in (head, worker):
        env = environment(service)
        assert env["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
        assert env["SHRINKTUNE_CACHE"] == "/cache"


def test_ray_token_auth_is_on_with_one_required_token():
    services = load_compose()["services"]
    tokens = set()
    for name in ("ray-head", "ray-worker"):
        env = environment(services[name])
        assert env.get("RAY_AUTH_MODE") == "token", f"compose.yaml: {name} must run with RAY_AUTH_MODE=token"
        token = env.get("RAY_AUTH_TOKEN") or ""
        # ${VAR:?message}: compose refuses to start without a non-empty token rather than run a cluster without one
        assert re.fullmatch(r"\$\{RAY_AUTH_TOKEN:\?[^}]+\}", token), f"compose.yaml: {name} RAY_AUTH_TOKEN={token}"
        tokens.add(token)
    assert len(tokens) == 1  # every node of a cluster needs the same token
    assert "RAY_AUTH_TOKEN" not in environment(services["mlflow"])


def test_ray_worker_joins_the_head():
    services = load_compose()["services"]
    head, worker = services["ray-head"]["command"], services["ray-worker"]["command"]
    assert head.startswith("ray start --head") and "--block" in head.split()
    assert flag(head, "--dashboard-host") == "0.0.0.0"
    assert flag(worker, "--address") == f"ray-head:{flag(head, '--port')}"
    assert worker.startswith("ray start") and "--block" in worker.split()
    assert "ray-head" in services["ray-worker"]["depends_on"]


def test_mlflow_server_keeps_its_store_on_its_volume_and_answers_the_ray_nodes():
    services = load_compose()["services"]
    command = services["mlflow"]["command"]
    assert command.startswith("mlflow server")
    assert flag(command, "--workers") == "1"
    assert "--serve-artifacts" in command.split()
    mounts = named_mounts(services["mlflow"])
    store = flag(command, "--backend-store-uri").removeprefix("sqlite:///")
    for path in (store, flag(command, "--artifacts-destination")):
        assert any(path.startswith(target.rstrip("/") + "/") for target in mounts), f"{path} is not on a volume"
    tracking = environment(services["ray-head"])["MLFLOW_TRACKING_URI"].removeprefix("http://")
    assert tracking in flag(command, "--allowed-hosts").split(",")  # else MLflow answers the nodes with 403


# ---- run commands ----

@pytest.mark.parametrize("path", HEADERS, ids=lambda path: path.name)
def test_file_starts_with_its_exact_command(path):
    assert path.read_text().splitlines()[0] == HEADERS[path]


def test_compose_shows_the_search_command_against_its_storage_and_server():
    lines = COMPOSE.read_text().splitlines()
    assert lines[1] == SEARCH_COMMAND
    services = load_compose()["services"]
    assert flag(SEARCH_COMMAND, "--storage") in named_mounts(services["ray-head"])
    assert flag(SEARCH_COMMAND, "--tracking-uri") == environment(services["ray-head"])["MLFLOW_TRACKING_URI"]
