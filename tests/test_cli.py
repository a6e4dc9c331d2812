"""Bad input ends with one line on stderr and exit code 2, before any work starts."""

import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
SPACE = """# Run: python -m platform.search {path}
task: summarization
teacher: embedded
objectives: {{rouge1: max, latency_ms: min}}
dimensions:
  latent_dim: {{type: int, low: {low}, high: {high}}}
  decoder_layers: {{type: int, low: {layers}, high: 2}}
"""


def _search(*args, cwd=ROOT):
    return subprocess.run([sys.executable, "-m", "platform.search", *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, timeout=300)


def _space(tmp_path, low=96, high=192, layers=1):
    path = tmp_path / "space.yaml"
    path.write_text(SPACE.format(path=path, low=low, high=high, layers=layers))
    return path


def _assert_one_line_error(out, *needles):
    assert out.returncode == 2, out.stdout + out.stderr
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), out.stderr
    assert "Traceback" not in out.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_unknown_task(tmp_path):
    _assert_one_line_error(_search("nosuchtask", "--tracking-uri", f"sqlite:///{tmp_path}/m.db"),
                           "unknown task or search space 'nosuchtask'", "known: ", "summarization")


def test_missing_space_file(tmp_path):
    _assert_one_line_error(_search(tmp_path / "absent.yaml"), "no such search-space file")


def test_malformed_yaml(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("task: summarization\nobjectives: [rouge1: max\n")
    _assert_one_line_error(_search(path), str(path), "not valid YAML at line")


@pytest.mark.parametrize("low,high,layers,needle", [
    (96, 512, 1, "latent_dim must be ≤ the encoder width (384), got up to 512"),
    (0, 192, 1, "latent_dim.low must be an integer ≥ 1, got 0"),
    (96, 192, 0, "decoder_layers.low must be an integer ≥ 1, got 0"),
])
def test_impossible_dimensions(tmp_path, low, high, layers, needle):
    _assert_one_line_error(_search(_space(tmp_path, low, high, layers)), needle, "space.yaml")


def test_unwritable_tracking_location(tmp_path):
    out = _search(_space(tmp_path), "--tracking-uri", f"sqlite:///{tmp_path}/no/such/dir/mlflow.db")
    _assert_one_line_error(out, "not writable", "--tracking-uri")


def test_bad_flag_value(tmp_path):
    _assert_one_line_error(_search(_space(tmp_path), "--trials", "0"), "--trials must be ≥ 1, got 0")


def test_resume_of_an_unknown_search(tmp_path):
    (tmp_path / "runs").mkdir()
    out = _search(_space(tmp_path), "--storage", tmp_path / "runs", "--tracking-uri", f"sqlite:///{tmp_path}/m.db",
                  "--resume", "nosuch")
    _assert_one_line_error(out, f"no search 'nosuch' to resume: {tmp_path}/runs/nosuch holds no Ray Tune state",
                           f"ls {tmp_path}/runs", "--storage")
    assert not (tmp_path / "m.db").exists()  # refused before anything else


def test_new_search_under_a_taken_name(tmp_path):
    (tmp_path / "runs" / "taken").mkdir(parents=True)
    out = _search(_space(tmp_path), "--storage", tmp_path / "runs", "--name", "taken")
    _assert_one_line_error(out, f"a search named 'taken' already exists at {tmp_path}/runs/taken",
                           "continue it with --resume taken, or pick another --name")


@pytest.mark.parametrize("flags,needle", [
    (["--retries", "-1"], "--retries must be ≥ 0, got -1"),
    (["--resume", "a", "--name", "b"], "--resume a continues a search under its own name; drop --name b"),
])
def test_bad_fault_tolerance_flags(tmp_path, flags, needle):
    _assert_one_line_error(_search(_space(tmp_path), *flags), needle)


def test_a_bad_fault_plan(tmp_path):
    out = subprocess.run([sys.executable, "-m", "platform.search", str(_space(tmp_path))], cwd=ROOT,
                         capture_output=True, text=True, timeout=300,
                         env={**os.environ, "SHRINKTUNE_FAIL_TRIALS": "nan"})
    _assert_one_line_error(out, "SHRINKTUNE_FAIL_TRIALS: entries are KIND:TRIAL[:ATTEMPTS] (e.g. nan:2,raise:3:1), "
                           "got 'nan'; fix it or unset SHRINKTUNE_FAIL_TRIALS.")
