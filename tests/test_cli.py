"""Bad input ends with one line on stderr and exit code 2, before any work starts."""

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
    (0, 192, 1, "latent_dim must be an integer ≥ 1, got 0"),
    (96, 192, 0, "decoder_layers must be an integer ≥ 1, got 0"),
])
def test_impossible_dimensions(tmp_path, low, high, layers, needle):
    _assert_one_line_error(_search(_space(tmp_path, low, high, layers)), needle, "space.yaml")


def test_unwritable_tracking_location(tmp_path):
    out = _search(_space(tmp_path), "--tracking-uri", f"sqlite:///{tmp_path}/no/such/dir/mlflow.db")
    _assert_one_line_error(out, "not writable", "--tracking-uri")


def test_bad_flag_value(tmp_path):
    _assert_one_line_error(_search(_space(tmp_path), "--trials", "0"), "--trials must be ≥ 1, got 0")
