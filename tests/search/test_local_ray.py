"""A local Ray that a search starts listens on loopback only, unless asked to listen on the network.

    python -m pytest tests/search/test_local_ray.py -q

Starts a real local Ray twice in one subprocess (`bind_local_ray(listen_all=False)`, then `True`), and while each
runs lists the TCP sockets that the subprocess and its descendants listen on, from /proc (Linux only). About 20 s.
"""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from shrinktune.search.cluster import RAY_CLUSTER_ENV

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="reads sockets from Linux's /proc")

# The driver starts a local Ray with each setting in turn, says "up", and waits for a line before shutting it down.
DRIVER = """
import json, sys
import ray
from shrinktune.search.cluster import bind_local_ray

for listen_all in json.loads(sys.argv[1]):
    bind_local_ray(listen_all=listen_all)
    ray.init(address="local", include_dashboard=False, num_cpus=1, _temp_dir=sys.argv[2],
             logging_level="ERROR", log_to_driver=False)
    print("up", ray.util.get_node_ip_address(), flush=True)
    sys.stdin.readline()
    ray.shutdown()
"""


def _descendants(root: int) -> set[int]:
    """`root` and every process below it."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()  # the name, in parentheses, may hold spaces
        except (OSError, IndexError):
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = set(), [root]
    while todo:
        pid = todo.pop()
        found.add(pid)
        todo += children.get(pid, [])
    return found


def _address(hex_address: str) -> str:
    """/proc/net/tcp{,6}'s local address (32-bit words in host order, little-endian here) as text."""
    raw = bytes.fromhex(hex_address)
    return str(ipaddress.ip_address(b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))))


def listening(pids: set[int]) -> set[tuple[str, int]]:
    """(address, port) of every TCP socket in LISTEN state that one of `pids` holds."""
    inodes = set()
    for pid in pids:
        try:
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
        except OSError:  # gone, or not ours to read
            continue
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                address, port = fields[1].split(":")
                found.add((_address(address), int(port, 16)))
    return found


def is_loopback(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    return (getattr(ip, "ipv4_mapped", None) or ip).is_loopback


def test_local_ray_listens_on_loopback_unless_listen_all():
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}  # no token file written
    for name in ("RAY_ADDRESS", RAY_CLUSTER_ENV):
        env.pop(name, None)
    temp_dir = tempfile.mkdtemp(prefix="st-ray-")  # short: Ray's socket paths must fit in 107 characters
    driver = subprocess.Popen([sys.executable, "-c", DRIVER, json.dumps([False, True]), temp_dir], cwd=ROOT, env=env,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert driver.stdin and driver.stdout and driver.stderr
    seen: dict[bool, tuple[str, set[tuple[str, int]]]] = {}
    started: set[int] = set()
    try:
        for listen_all in (False, True):
            line = driver.stdout.readline()
            assert line.startswith("up "), f"the local Ray did not start: {line!r} {driver.stderr.read()[-3000:]}"
            pids = _descendants(driver.pid)
            started |= pids
            seen[listen_all] = (line.split()[1], listening(pids))
            driver.stdin.write("\n")
            driver.stdin.flush()
        assert driver.wait(timeout=60) == 0, driver.stderr.read()[-3000:]
    finally:
        if driver.poll() is None:
            driver.kill()
        for pid in started - {driver.pid}:  # whatever ray.shutdown() left of the processes this test started
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        shutil.rmtree(temp_dir, ignore_errors=True)

    node_ip, sockets = seen[False]
    assert {address for address, _ in sockets if not is_loopback(address)} == set(), sorted(sockets)
    assert len(sockets) >= 8, sockets  # GCS, raylet, workers, agents, metrics: all of them, not none
    assert node_ip == "127.0.0.1"

    node_ip, sockets = seen[True]
    assert node_ip != "127.0.0.1"
    assert {"0.0.0.0", "::"} & {address for address, _ in sockets}, sorted(sockets)  # Ray's default on Linux
