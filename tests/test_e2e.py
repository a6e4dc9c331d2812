"""End to end through the real entry point, Ray Tune, Optuna and MLflow (marked e2e; they run in CI)."""

import os
import pathlib
import re
import subprocess
import sys

import pytest

from shrinktune.measure.evaluate import parameter_counts
from shrinktune.models.teacher import load_teacher

ROOT = pathlib.Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.e2e


def _run(args, tmp_path, timeout, cache=None, full=False, env=None):
    """Runs a search; its stdout (`full`: the whole CompletedProcess)."""
    cmd = [sys.executable, "-m", "platform.search", *map(str, args), "--tracking-uri", f"sqlite:///{tmp_path}/mlflow.db",
           "--storage", tmp_path / "runs", "--cache-dir", cache or tmp_path / "cache",
           "--address", "local"]  # a Ray of its own, even if a developer's cluster runs on this machine
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                         env={**os.environ, **(env or {})})
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-4000:]
    return out if full else out.stdout


def _table(stdout):
    """Rows of the printed Pareto table, as dicts keyed by its header."""
    lines = stdout[stdout.index("Pareto front of"):].splitlines()
    header = re.split(r"\s{2,}", lines[1].strip())
    rows = []
    for line in lines[3:]:
        if not line.strip():
            break
        rows.append(dict(zip(header, re.split(r"\s{2,}", line.strip()))))
    return rows


def _checkpoints(stdout) -> dict[str, pathlib.Path]:
    """Trial (as the table shortens it) → checkpoint folder, from the list printed under the table."""
    lines = stdout[stdout.index("Checkpoints ("):].splitlines()[1:]
    found = {}
    for line in lines:
        if not line.startswith("  "):
            break
        trial, path = line.split(None, 1)
        found[trial] = (ROOT / path.strip()).resolve()  # relative paths are relative to where the search ran
    return found


def _by_short_id(runs: dict, short: str):
    """The run whose full Tune trial id the table's short id starts."""
    return next(run for trial, run in runs.items() if trial.startswith(short))


def _mlflow_runs(tmp_path, experiment):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    exp = client.get_experiment_by_name(experiment)
    return client.search_runs([exp.experiment_id], max_results=100)


def test_tiny_teacher_search_logs_parent_and_children(tmp_path, tiny_teacher_dir):
    """A search of 6 trials on a tiny teacher: trial 1 (the enqueued teacher shape) breaks a cost constraint and is
    stopped by the cost pre-screen before it trains, trial 2 hits a NaN loss and trial 4 raises on both attempts,
    trial 3 runs out of memory once and then succeeds; each is recorded once and the search goes on."""
    space = tmp_path / "tiny.yaml"
    teacher_decoder = parameter_counts(load_teacher(str(tiny_teacher_dir))[0])["params_decoder"]
    space.write_text(f"""# Run: python -m platform.search {space}
task: summarization
teacher: {tiny_teacher_dir}
objectives: {{rouge1: max, latency_ms: min, train_peak_mb: min}}
search: {{sampler: random, trials: 6, seed: 1, quality_floor: 0}}  # random tiny models: no floor
constraints: {{params_decoder: {{max: {teacher_decoder - 1}}}}}  # the teacher-shaped trial breaks it: stopped untrained
evaluation: {{samples: 6, latency_samples: 2, latency_repeats: 2, latency_cap_s: 5, recheck_samples: 12}}
generation: {{max_new_tokens: 8}}
fixed: {{batch_size: 16, ae_epochs: 1, epochs: 1}}
dimensions:
  latent_dim: {{type: categorical, choices: [8, 16, 32]}}
  decoder_layers: {{type: int, low: 1, high: 3}}
  learning_rate: {{type: float, low: 1.0e-4, high: 1.0e-3, log: true}}
""")
    out = _run([space, "--retries", "1"], tmp_path, timeout=900, full=True,
               env={"SHRINKTUNE_FAIL_TRIALS": "raise:4,nan:2,oom:3:1"})
    stdout = out.stdout
    rows = _table(stdout)
    assert rows[0]["trial"] == "teacher" and len(rows) >= 2
    assert "mlflow ui --backend-store-uri" in stdout
    assert re.search(r"\d of 3 finished trial\(s\), 2 failed, 1 stopped before training \(cost pre-screen\)",
                     stdout), stdout[:2000]
    assert "stopped before training: its costs break params_decoder.max by 1" in out.stderr, out.stderr[-3000:]
    # The out-of-memory attempt is retried, and only reported as a line:
    assert "OutOfMemoryError: out of memory (injected by SHRINKTUNE_FAIL_TRIALS into trial 3, attempt 1)); retrying" \
        in out.stderr
    # Ray Tune's own tables (configurations, statuses, a result box per trial) stay out of the default output:
    for table in ("Configuration for experiment", "Trial status:", "errored after", "started with configuration"):
        assert table not in stdout, stdout[-3000:]
    assert "trial 1 of 6 stopped before training (cost pre-screen) → MLflow run" in out.stderr, out.stderr[-3000:]
    assert "trial 6 of 6 finished → MLflow run" in out.stderr, out.stderr[-3000:]

    runs = _mlflow_runs(tmp_path, "tiny")
    parents = [r for r in runs if r.data.tags.get("shrinktune.kind") == "search"]
    everyone = [r for r in runs if r.data.tags.get("shrinktune.kind") == "trial"]
    trials = [c.data.tags["shrinktune.trial"] for c in everyone]
    assert len(parents) == 1 and len(trials) == len(set(trials)) == 6, trials  # every trial exactly once
    assert all(c.data.tags["mlflow.parentRunId"] == parents[0].info.run_id for c in everyone)
    for child in everyone:  # named from its settings, ending with its Tune id
        assert child.info.run_name.endswith(f" · {child.data.tags['shrinktune.trial']}"), child.info.run_name
        assert child.data.params["batch_size"] == "16" and child.data.params["generation.max_new_tokens"] == "8"
    assert sorted(c.info.status for c in everyone) == ["FAILED", "FAILED", "FINISHED", "FINISHED", "FINISHED",
                                                       "KILLED"]
    stopped = [c for c in everyone if c.info.status == "KILLED"]
    assert stopped[0].data.tags["shrinktune.screened"] == "true" and "rouge1" not in stopped[0].data.metrics
    assert stopped[0].data.metrics["params_decoder"] == teacher_decoder
    assert stopped[0].data.params["decoder_layers"] == "3"
    failed = [c for c in everyone if c.info.status == "FAILED"]
    errors = sorted(c.data.tags["shrinktune.error"].splitlines()[0] for c in failed)
    assert errors == [
        "FloatingPointError: training loss became nan (injected by SHRINKTUNE_FAIL_TRIALS into trial 2, attempt 2)",
        "RuntimeError: trial failed (injected by SHRINKTUNE_FAIL_TRIALS into trial 4, attempt 2)",
    ]  # attempt 2: logged after the last attempt, not the first
    for child in failed:  # then Ray's record of both attempts
        assert "\n\nFailure # 1 " in child.data.tags["shrinktune.error"]
        assert "Failure # 2 " in child.data.tags["shrinktune.error"]
    for line in errors:
        assert line in stdout  # the failed trials' reasons, listed after the Pareto table
    children = [c for c in everyone if c.info.status == "FINISHED"]
    assert all("shrinktune.error" not in c.data.tags for c in children)
    assert "teacher_rouge1" in parents[0].data.metrics and "search_teacher_rouge1" in parents[0].data.metrics
    assert parents[0].data.metrics["teacher_eval_samples"] == 12 and "Re-checked on 12 validation pairs" in stdout
    by_trial = {c.data.tags["shrinktune.trial"]: c for c in children}
    front = [r for r in rows if r["trial"] != "teacher"]
    checkpoints = _checkpoints(stdout)
    for row in front:
        child = _by_short_id(by_trial, row["trial"])
        assert row["R-1 [95 % interval]"] == (f"{child.data.metrics['rouge1']:.3f} "
                                              f"[{child.data.metrics['rouge1_low']:.3f}, "
                                              f"{child.data.metrics['rouge1_high']:.3f}]")
        # re-checked on 12 pairs at the end; what the search measured stays as search_*
        assert child.data.tags["shrinktune.rechecked"] == "12" and "search_rouge1" in child.data.metrics
        assert f"{child.data.metrics['latency_ms']:.1f}" == row["ms/summary"]
        assert pathlib.Path(child.data.params["checkpoint"]).resolve() == checkpoints[row["trial"]]
        assert child.data.tags.get("shrinktune.pareto") == "true"
        assert child.data.metrics["train_loss_epoch"] == child.data.metrics["train_loss"]  # last point of the curve
        assert (checkpoints[row["trial"]] / "model.safetensors").exists()


def test_readme_command_on_the_embedded_default(tmp_path, embedded_cache):
    """The README's main command (2 trials to keep CI short: the space's two enqueued configurations) on the real
    teacher and data, offline; the best Pareto checkpoint then summarizes an unseen paper."""
    stdout = _run(["summarization", "--trials", "2"], tmp_path, timeout=1500, cache=embedded_cache)
    rows = [r for r in _table(stdout) if r["trial"] != "teacher"]
    assert rows, stdout[-3000:]
    runs = _mlflow_runs(tmp_path, "summarization")
    children = [r for r in runs if r.data.tags.get("shrinktune.kind") == "trial"]
    assert len(children) == 2
    parent = next(r for r in runs if r.data.tags.get("shrinktune.kind") == "search")
    assert parent.data.metrics["hypervolume"] >= 0  # the running hypervolume, relative to the teacher
    from mlflow.tracking import MlflowClient

    artifacts = {a.path for a in MlflowClient(f"sqlite:///{tmp_path}/mlflow.db").list_artifacts(parent.info.run_id)}
    assert {"frontier.png", "frontier.html", "summarization.yaml"} <= artifacts

    from shrinktune import load_summarizer
    from shrinktune.data.aclsum import load_aclsum

    unseen = load_aclsum("test")[0]
    summary = load_summarizer(_checkpoints(stdout)[rows[0]["trial"]])(unseen.document, aspect=unseen.aspect)
    words = summary.split()
    assert len(words) >= 3, summary
    assert sum(w.strip(".,;:-()").isalpha() for w in words) >= 0.7 * len(words), summary


def test_translation_search_on_a_local_parallel_corpus_logs_bleu(tmp_path, tiny_teacher_dir):
    """A translation task named in the space file (a local wmt16-style corpus, its language pair) searched on a tiny
    teacher: the table's quality column is BLEU with its interval, and MLflow holds BLEU, chrF and sacreBLEU's
    signature."""
    import datasets

    words = ["haus", "katze", "hund", "baum", "auto", "buch", "tisch", "stuhl"]
    english = ["house", "cat", "dog", "tree", "car", "book", "table", "chair"]

    def split(n, offset):
        rows = [{"de": f"das {words[(i + offset) % 8]} und der {words[(3 * i + offset) % 8]}",
                 "en": f"the {english[(i + offset) % 8]} and the {english[(3 * i + offset) % 8]}"} for i in range(n)]
        return datasets.Dataset.from_dict({"translation": rows})

    datasets.DatasetDict({"train": split(48, 0), "validation": split(8, 1), "test": split(8, 2)}).save_to_disk(
        tmp_path / "de-en")
    space = tmp_path / "tiny-mt.yaml"
    corpus = tmp_path / "de-en"
    space.write_text(f"""task: {{name: tiny-de-en, kind: translation, dataset: {corpus}, source_language: de,
       target_language: en, max_source_tokens: 32, max_target_tokens: 16}}
teacher: {tiny_teacher_dir}
objectives: {{bleu: max, latency_ms: min}}
search: {{sampler: random, trials: 2, seed: 0, quality_floor: 0, enqueue_teacher: false}}
evaluation: {{samples: 8, latency_samples: 2, latency_repeats: 2, latency_cap_s: 5, recheck_samples: 8}}
generation: {{max_new_tokens: 8, no_repeat_ngram_size: 0}}
fixed: {{batch_size: 8, ae_epochs: 1, epochs: 1}}
dimensions:
  latent_dim: {{type: categorical, choices: [16, 32]}}
  decoder_layers: {{type: int, low: 1, high: 2}}
""")
    stdout = _run([space], tmp_path, timeout=600)
    rows = _table(stdout)
    assert rows[0]["trial"] == "teacher" and "BLEU [95 % interval]" in rows[0], rows[0]
    runs = _mlflow_runs(tmp_path, "tiny-mt")
    parent = next(r for r in runs if r.data.tags.get("shrinktune.kind") == "search")
    assert parent.data.params["bleu_signature"].startswith("nrefs:1|") and "chrf_signature" in parent.data.params
    assert "teacher_bleu" in parent.data.metrics and "teacher_chrf" in parent.data.metrics
    assert '"kind": "translation"' in parent.data.params["task"]
    trials = [r for r in runs if r.data.tags.get("shrinktune.kind") == "trial" and r.info.status == "FINISHED"]
    assert len(trials) == 2
    for trial in trials:
        metrics = trial.data.metrics
        assert 0 <= metrics["bleu_low"] <= metrics["bleu"] <= metrics["bleu_high"] <= 100 and "chrf" in metrics
        assert "rouge1" not in metrics
