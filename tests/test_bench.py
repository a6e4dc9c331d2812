"""The benchmark scripts under bench/ run end to end in their --smoke mode and write their results file."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_compression_smoke_writes_the_side_by_side_table(tmp_path):
    out = tmp_path / "compression.md"
    done = subprocess.run([sys.executable, "bench/compression.py", "--smoke", "--out", str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    text = out.read_text()
    assert f"Command: `python bench/compression.py --smoke --out {out}`" in text
    assert "- Machine: " in text and "torch threads" in text and "- Date: " in text
    header = ("| config | encoder layers | decoder layers | latent | decoder params (M) | total params (M) "
              "| ms/summary | speed-up | train-step peak MB | memory ratio |")
    lines = text.splitlines()
    start = lines.index(header)
    rows = [line.split(" | ") for line in lines[start + 2 :] if line.startswith("| ")]
    rows = rows[: next((i for i, r in enumerate(rows) if len(r) != 10), len(rows))]
    # (2 widths: the teacher's and 32) x (2 decoder depths) x (full, half encoder), the teacher's own shape once
    assert len(rows) == 8
    teacher = rows[0]
    assert teacher[0] == "| teacher" and teacher[7] == "1.00x" and teacher[9] == "1.00 |"
    assert {(r[1], r[2], r[3]) for r in rows} == {
        (enc, dec, latent) for enc in ("2", "1") for dec in ("2", "1") for latent in ("64", "32")}
    assert all(float(r[6]) > 0 and float(r[8]) > 0 for r in rows)
    # a narrower, shallower decoder has fewer decoder parameters and needs less memory to fine-tune
    smallest = next(r for r in rows if (r[1], r[2], r[3]) == ("2", "1", "32"))
    assert float(smallest[4]) < float(teacher[4]) and float(smallest[9].rstrip(" |")) < 1.0
    assert "exactly 8 new tokens" in text and "best possible speed-up" in text
    assert "| speed-up, latent 384 (Falaki & Gras, BART-base) | 2x | not measured (base shape not run) |" in text
