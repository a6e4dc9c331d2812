"""The GPU scripts (bench/gpu_table.py, bench/gpu_check.py) run end to end in their --smoke mode on the CPU and write
their results: every row measured, every pipeline stage PASS. Their latency goals are GPU goals and may FAIL here:
not checked. Both scripts run at once, each in its own process with one torch thread (about 30 s on 2 cores)."""

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from markdown_tables import markdown_tables

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # the bench scripts import as `bench.<name>`
SCRIPTS = ("gpu_table", "gpu_check")
CPU_ONLY = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}  # gpu_check refuses a CPU run where trials would pick a GPU


@pytest.fixture(autouse=True)
def transformers_verbosity_kept():
    """The scripts' main() silences transformers for the process; the tests that call it in-process restore it."""
    import transformers

    level = transformers.logging.get_verbosity()
    yield
    transformers.logging.set_verbosity(level)


@pytest.fixture(scope="module")
def smoke_runs(tmp_path_factory):
    """{script: (process result, results file)}, both scripts run side by side with --smoke --device cpu."""
    folder = tmp_path_factory.mktemp("gpu-smoke")
    started = {}
    for name in SCRIPTS:
        out = folder / f"{name}.md"
        command = [sys.executable, f"bench/{name}.py", "--smoke", "--device", "cpu", "--out", str(out)]
        if name == "gpu_check":
            command += ["--workdir", str(folder / "work")]
        logs = (folder / f"{name}.stdout", folder / f"{name}.stderr")  # files, not pipes: neither can fill and block
        with logs[0].open("w") as stdout, logs[1].open("w") as stderr:
            started[name] = (subprocess.Popen(command, cwd=ROOT, stdout=stdout, stderr=stderr, env=CPU_ONLY), out, logs)
    results = {}
    for name, (process, out, logs) in started.items():
        process.wait(timeout=600)
        results[name] = (subprocess.CompletedProcess(process.args, process.returncode, logs[0].read_text(),
                                                     logs[1].read_text()), out)
    return results


def _number(cell: str) -> float:
    return float(cell.removesuffix("x"))


def test_gpu_table_smoke_measures_every_row_and_the_memory_table(smoke_runs):
    done, out = smoke_runs["gpu_table"]
    assert done.returncode == 0, done.stderr[-3000:]
    text = out.read_text()
    assert f"Command: `python bench/gpu_table.py --smoke --device cpu --out {out}`" in text
    assert "- Machine: " in text and "- Software: " in text and "torch " in text and "transformers " in text
    assert "- Date: " in text and "- Bandwidth: measured " in text
    tables = markdown_tables(text)
    status = {row["stage"]: row["result"] for row in tables["Run status"]}
    assert status == {"timing rows": "PASS", "memory rows": "PASS", "run": "PASS"}, tables["Run status"]
    assert "Not reached" not in text and "ERROR" not in text
    expected = {
        "tiny base (smoke)": {"teacher", "latent 32×2", "latent 32×1", "depth-only 2→1"},
        "tiny large (smoke)": {"teacher", "depth 4-2", "depth 4-1"},
    }
    for shape, models in expected.items():
        for batch in (1, 2):  # batch 32's part runs at batch 2 in the smoke
            rows = tables[f"{shape}, batch {batch}"]
            assert {(r["model"], r["dtype"], r["runtime"]) for r in rows} == {
                (m, d, r) for m in models for d in ("fp32", "bf16") for r in ("eager", "compiled")}
            for row in rows:
                for column in ("ms/seq", "encoder ms", "bound ms", "measured/bound", "speed-up"):
                    assert math.isfinite(_number(row[column])) and _number(row[column]) > 0, (column, row)
                assert row["bound ms (spec)"] == "-"  # a CPU reports no memory clock
                assert row["compiled"] == ("n/a" if row["runtime"] == "eager" else "uncompiled (CPU: static caches)")
                if row["model"] == "teacher":
                    assert row["speed-up"] == "1.00x"
    memory = tables["Fine-tuning memory (fp32)"]
    assert [(r["shape"], r["model"]) for r in memory] == [
        ("tiny base (smoke)", "latent 32×2"), ("tiny base (smoke)", "latent 32×1"),
        ("tiny large (smoke)", "latent 32×1")]
    for row in memory:  # a latent student with its encoder frozen fine-tunes in less memory than its teacher
        assert 0 < _number(row["decoder-side ratio"]) < 1 and 0 < _number(row["full ratio (papers')"]) < 1, row
    goals = tables["Goals"]
    assert len(goals) == 4 + 2 + 8  # bound (2 shapes x 2 dtypes), latent (2 dtypes), distilbart (2 x 2 x 2)
    assert all(row["result"] in ("PASS", "FAIL") for row in goals)  # measured; GPU goals may fail on a CPU


def test_gpu_table_stops_at_its_time_budget_and_says_what_it_did_not_reach(tmp_path):
    from bench import gpu_table

    out = tmp_path / "gpu.md"
    argv = ["--smoke", "--device", "cpu", "--out", str(out), "--time-budget-s", "0", "--shapes", "base",
            "--batches", "1", "--dtypes", "fp32", "--threads", str(torch.get_num_threads())]
    assert gpu_table.main(argv) == 0
    text = out.read_text()
    tables = markdown_tables(text)
    assert tables["Run status"][-1]["result"] == "PASS"
    assert "time budget of 0 s reached after " in tables["Run status"][-1]["detail"]
    # 4 models x 2 runtimes, then the 2 memory rows of the base shape: listed, not measured
    assert "Not reached (10): tiny base (smoke) batch 1 fp32 eager teacher; " in text
    assert "memory tiny base (smoke) latent 32×1." in text
    assert all(row["result"] == "not measured" for row in tables["Goals"])


def test_gpu_check_smoke_runs_every_stage_of_three_trials(smoke_runs):
    done, out = smoke_runs["gpu_check"]
    assert done.returncode == 0, done.stderr[-3000:]
    text = out.read_text()
    assert f"Command: `python bench/gpu_check.py --smoke --device cpu --out {out}" in text
    tables = markdown_tables(text)
    stages = {row["stage"]: row for row in tables["Stages"]}
    configs = ("(a) latent 32×2, AE frozen, sft", "(b) latent 16×1, kd", "(c) depth-only 1 layer, pseudo_labels")
    assert list(stages) == ["teacher: build, train, save", "reference: the teacher measured as trials are",
                            *[name for config in configs for name in (config, f"{config}: reload + generate")]]
    assert all(row["result"] == "PASS" for row in stages.values()), tables["Stages"]
    assert all(float(row["wall s"]) > 0 for row in stages.values())
    metrics = {row["stage"]: row for row in tables["Metrics"]}
    for config in configs:
        for key in ("rouge1", "speedup", "latency_ms", "train_peak_mb", "bound_ratio", "train_memory_ratio"):
            assert math.isfinite(float(metrics[config][key])), (config, key)
        assert "summaries" in stages[f"{config}: reload + generate"]["detail"]
    # each trial's steps are timed: the narrow ones pre-train an autoencoder, (c) makes pseudo-labels
    assert text.count("Wall time by step: ") == 4 and text.count("AE pre-training") >= 2
    assert "pseudo-labels" in text.split("### (c)")[1]
    goals = tables["Goals"]
    assert [row["result"] for row in goals] == ["not applicable (CPU: static caches, uncompiled)"]


def test_gpu_check_refuses_a_missing_tokenizer_in_one_line(tmp_path, capsys):
    from bench import gpu_check

    with pytest.raises(SystemExit) as stopped:
        gpu_check.main(["--smoke", "--device", "cpu", "--out", str(tmp_path / "x.md"), "--tokenizer",
                        str(tmp_path / "none"), "--threads", str(torch.get_num_threads())])
    assert stopped.value.code == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"error: no tokenizer in {tmp_path / 'none'}: pass --tokenizer DIR, or run --pack here and carry "
        "bench/.gpu_assets"]
    assert not (tmp_path / "x.md").exists()
