"""bench/reproduce.py re-measures a finished search's Pareto front from MLflow, independently of the search."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HEADER = ("| model | config (latent × layers) | reported R-1 [low, high] | re-measured R-1 | inside interval "
          "| reported speed-up | re-measured speed-up (rounds min–max) | within 10 % | words/summary |")


def _save(model, tokenizer, folder: Path) -> str:
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


def _fake_search(tmp_path: Path, tokenizer, make_model) -> str:
    """A finished search in a fresh sqlite store: a tiny teacher, one tiny front member. Returns the store's URI."""
    from mlflow.tracking import MlflowClient

    teacher = _save(make_model(tokenizer, layers=2), tokenizer, tmp_path / "teacher")
    student = _save(make_model(tokenizer, layers=1, seed=1), tokenizer, tmp_path / "student")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    experiment = client.create_experiment("summarization", artifact_location=tmp_path.as_uri())

    search = client.create_run(experiment, run_name="search-1",
                               tags={"shrinktune.kind": "search", "shrinktune.teacher_dir": teacher})
    search_id = search.info.run_id
    generation = {"num_beams": 1, "max_new_tokens": 8, "no_repeat_ngram_size": 0}
    for key, value in {"task": "summarization", "generation": json.dumps(generation),
                       "objectives": json.dumps({"rouge1": "max", "speedup": "max"})}.items():
        client.log_param(search_id, key, value)
    for key, value in {"teacher_rouge1": 0.05, "teacher_rouge1_low": 0.0, "teacher_rouge1_high": 0.2,
                       "teacher_latency_ms": 10.0}.items():
        client.log_metric(search_id, key, value)

    trial = client.create_run(experiment, run_name="trial-a", tags={
        "mlflow.parentRunId": search_id, "shrinktune.kind": "trial", "shrinktune.pareto": "true",
        "shrinktune.checkpoint": student, "shrinktune.trial": "a"})
    for key, value in {"latent_dim": "32", "decoder_layers": "1"}.items():
        client.log_param(trial.info.run_id, key, value)
    for key, value in {"rouge1": 0.04, "rouge1_low": 0.0, "rouge1_high": 0.2, "speedup": 1.3}.items():
        client.log_metric(trial.info.run_id, key, value)
    client.set_terminated(trial.info.run_id)
    client.set_terminated(search_id)
    return uri


def _run(*args: str):
    return subprocess.run([sys.executable, "bench/reproduce.py", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)


def _cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


def test_smoke_reports_teacher_and_member_rows_with_numbers(tmp_path, tokenizer, tiny_bert2bert):
    uri = _fake_search(tmp_path, tokenizer, tiny_bert2bert)
    out = tmp_path / "reproduce.md"
    done = _run("--smoke", "--tracking-uri", uri, "--out", str(out))
    assert done.returncode == 0, done.stderr[-3000:]
    text = out.read_text()
    assert text == done.stdout
    assert "python bench/reproduce.py --smoke" in text and "- Machine: " in text and "torch threads 2" in text
    lines = text.splitlines()
    start = lines.index(HEADER)
    rows = [_cells(line) for line in lines[start + 2:start + 4]]
    assert [row[0] for row in rows] == ["teacher", "trial a"]
    teacher, member = rows
    assert teacher[1] == "32 × 2 (teacher)" and member[1] == "32 × 1"
    assert teacher[2] == "0.050 [0.000, 0.200]" and member[2] == "0.040 [0.000, 0.200]"
    assert member[5] == "1.30x" and teacher[6].startswith("1.00x")
    for row in rows:
        assert 0.0 <= float(row[3]) <= 1.0  # re-measured R-1
        assert row[4] in ("yes", "no")
        assert float(row[6].split("x")[0]) > 0  # re-measured speed-up (median over rounds)
        assert float(row[8]) >= 0  # words per summary
    assert member[7] in ("yes", "no")
    assert lines[-1].startswith("1 of 1 members: R-1 inside the reported interval") or \
        lines[-1].startswith("0 of 1 members: R-1 inside the reported interval")
    assert "of 1: speed-up within 10 %" in lines[-1]


def test_missing_store_exits_2_with_one_line(tmp_path):
    done = _run("--smoke", "--tracking-uri", f"sqlite:///{tmp_path / 'nothing.db'}")
    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "no MLflow store" in done.stderr
    assert not (tmp_path / "nothing.db").exists()
