"""`python -m platform.pareto`: constraints, the front, tags, named picks, the model registry and export.

The MLflow store is built by hand with `SearchTracker` (no Ray): an older search, then the latest one, whose
trials have known metrics and tiny saved checkpoints.
"""

import json
import pathlib
import re
import subprocess
import sys
import time

import pytest
import torch

from shrinktune.errors import ConfigError, UserError
from shrinktune.pick.cli import main
from shrinktune.pick.rules import Constraint, parse_constraint, parse_objectives, parse_pick
from shrinktune.tracking.mlflow_tracking import SearchTracker, default_tracking_uri

ROOT = pathlib.Path(__file__).resolve().parents[1]
OBJ = {"rouge1": "max", "latency_ms": "min"}
TEACHER = {"rouge1": 0.30, "latency_ms": 100.0, "params_total": 1000.0}
TRIALS = {  # 2 % below the teacher's ROUGE-1 is 0.294
    "t1": {"rouge1": 0.300, "latency_ms": 80.0, "params_total": 900.0},  # best ROUGE-1
    "t2": {"rouge1": 0.296, "latency_ms": 50.0, "params_total": 700.0},  # fastest and smallest within 2 %
    "t3": {"rouge1": 0.250, "latency_ms": 20.0, "params_total": 300.0},  # fastest; its checkpoint is gone
    "t4": {"rouge1": 0.240, "latency_ms": 60.0, "params_total": 200.0},  # dominated (by t2, t3); smallest
}


# ---------------------------------------------------------------- the small language: objectives, constraints, picks

def test_objectives_and_constraints_parse_or_say_the_rule():
    assert parse_objectives("rouge1:max, latency_ms:min") == OBJ
    with pytest.raises(ConfigError, match=r"objective 'rouge1:up' must read <metric>:min or <metric>:max"):
        parse_objectives("rouge1:up")
    assert parse_constraint("latency_ms <= 300") == Constraint("latency_ms", "<=", 300.0)
    relative = parse_constraint("rouge1>=0.98*teacher")
    assert relative == Constraint("rouge1", ">=", 0.98, relative=True) and str(relative) == "rouge1>=0.98*teacher"
    assert relative.holds({"rouge1": 0.296}, TEACHER) and not relative.holds({"rouge1": 0.29}, TEACHER)
    assert not relative.holds({}, TEACHER)  # a trial without the metric does not meet the rule
    with pytest.raises(ConfigError, match=r"constraint 'rouge1=>0.2' is malformed; write <metric><op><number>"):
        parse_constraint("rouge1=>0.2")
    with pytest.raises(ConfigError, match=r"no number after >="):
        parse_constraint("rouge1>=high")
    with pytest.raises(UserError, match=r"needs the teacher's rouge2"):
        parse_constraint("rouge2>=teacher").holds({"rouge2": 0.1}, TEACHER)


def test_named_picks():
    rows = list(TRIALS.values())
    assert parse_pick("fastest-within-2pct").choose(rows, TEACHER) == 1
    assert parse_pick("smallest-within-2pct").choose(rows, TEACHER) == 1
    assert parse_pick("fastest-within-20pct").choose(rows, TEACHER) == 2
    assert parse_pick("smallest").choose(rows, TEACHER) == 3
    assert parse_pick("best-rouge").choose(rows, TEACHER) == 0
    with pytest.raises(UserError, match=r"no trial has rouge1 ≥ 0\.2940 .* --pick fastest-within-5pct"):
        parse_pick("fastest-within-2pct").choose(rows[2:], TEACHER)
    with pytest.raises(ConfigError, match=r"unknown pick 'quickest'; use best-rouge, fastest, smallest"):
        parse_pick("quickest")


# ---------------------------------------------------------------- the store and the command line

@pytest.fixture(scope="module")
def store(tmp_path_factory, tokenizer, tiny_bert2bert):
    """An MLflow store with an older search (one excellent trial) and the latest search (TRIALS, one failed)."""
    root = tmp_path_factory.mktemp("pick")
    tracker = SearchTracker(default_tracking_uri(root), "exp")
    tracker.check()
    tracker.start_search("search-old", {"objectives": json.dumps(OBJ)})
    tracker.log_reference(TEACHER)
    tracker.log_trial("t0", {"latent_dim": 8}, {"rouge1": 0.5, "latency_ms": 10.0, "params_total": 100.0})
    tracker.end_search()
    time.sleep(0.02)  # the latest search starts strictly later
    parent = tracker.start_search("search-new", {"objectives": json.dumps(OBJ)})
    tracker.log_reference(TEACHER)
    runs, checkpoints = {}, {}
    for seed, (trial, metrics) in enumerate(TRIALS.items()):
        folder = root / "checkpoints" / trial
        if trial != "t3":
            tiny_bert2bert(tokenizer, seed=seed).save_pretrained(folder)
            tokenizer.save_pretrained(folder)
        checkpoints[trial] = folder
        runs[trial] = tracker.log_trial(trial, {"latent_dim": 16 * (seed + 1)}, metrics, checkpoint=str(folder))
    tracker.log_trial("t5", {"latent_dim": 8}, {}, status="FAILED", error="boom")
    tracker.end_search()
    return {"uri": tracker.tracking_uri, "root": root, "parent": parent, "runs": runs, "checkpoints": checkpoints}


@pytest.fixture(scope="module")
def client(store):
    from mlflow.tracking import MlflowClient

    return MlflowClient(store["uri"])


def run_main(capsys, store, *args):
    code = main(["exp", "--tracking-uri", store["uri"], *args])
    out, err = capsys.readouterr()
    return code, out, err


def _table_trials(out: str) -> list[str]:
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.lstrip().startswith("trial") or " trial " in line)
    trials = []
    for line in lines[start + 2:]:
        if not line.strip():
            break
        cells = line.split()
        trials.append(cells[1] if cells[0].startswith("*") else cells[0])
    return trials


def test_front_of_the_latest_search_is_printed_and_tagged(capsys, store, client):
    runs = store["runs"]
    client.set_tag(runs["t4"], "shrinktune.pareto", "true")  # a stale tag from an earlier selection
    code, out, err = run_main(capsys, store)
    assert code == 0, err
    assert _table_trials(out) == ["teacher", "t1", "t2", "t3"]  # best ROUGE-1 first; t0 is the older search's
    assert "3 of 4 trial(s)" in out and "(4 finished)" in out
    for trial in ("t1", "t2", "t3"):
        assert client.get_run(runs[trial]).data.tags["shrinktune.pareto"] == "true"
    assert "shrinktune.pareto" not in client.get_run(runs["t4"]).data.tags
    selection = client.get_run(store["parent"]).data.tags["shrinktune.pareto_selection"]
    assert selection == "objectives rouge1:max,latency_ms:min"


def test_constraints_and_objectives_change_the_front(capsys, store, client):
    code, out, _ = run_main(capsys, store, "--constraint", "latency_ms<=60", "--constraint", "rouge1>=0.98*teacher")
    assert code == 0 and _table_trials(out) == ["teacher", "t2"]
    assert "meeting latency_ms<=60, rouge1>=0.98*teacher" in out
    tags = client.get_run(store["parent"]).data.tags
    assert tags["shrinktune.pareto_selection"].endswith("constraints latency_ms<=60, rouge1>=0.98*teacher")
    assert "shrinktune.pareto" not in client.get_run(store["runs"]["t1"]).data.tags

    code, out, _ = run_main(capsys, store, "--objectives", "rouge1:max,params_total:min", "--no-tag")
    assert code == 0 and _table_trials(out) == ["teacher", "t1", "t2", "t3", "t4"]
    assert "shrinktune.pareto" not in client.get_run(store["runs"]["t4"]).data.tags  # --no-tag wrote nothing


def test_older_or_all_searches(capsys, store):
    for flags in (["--search", "search-old"], ["--all"]):
        code, out, _ = run_main(capsys, store, *flags, "--no-tag")
        assert code == 0 and _table_trials(out) == ["teacher", "t0"]  # t0 dominates every later trial


def test_pick_registers_with_alias_and_exports_a_loadable_checkpoint(capsys, monkeypatch, store, client, tmp_path,
                                                                   tokenizer):
    import mlflow.artifacts
    from transformers import EncoderDecoderModel

    from shrinktune.models.teacher import load_teacher

    target = tmp_path / "picked"
    code, out, err = run_main(capsys, store, "--pick", "fastest-within-2pct", "--register", "tiny-sum",
                              "--export", str(target), "--no-tag")
    assert code == 0, err
    assert "* fastest-within-2pct: trial t2" in out and "version 1 (alias @fastest-within-2pct)" in out
    version = client.get_model_version_by_alias("tiny-sum", "fastest-within-2pct")
    assert int(version.version) == 1 and version.run_id == store["runs"]["t2"]
    assert version.source == f"runs:/{store['runs']['t2']}/model"
    assert version.tags["shrinktune.pick"] == "fastest-within-2pct"

    inputs = tokenizer(["a short document about compression"], return_tensors="pt")
    original = EncoderDecoderModel.from_pretrained(store["checkpoints"]["t2"]).eval()
    with torch.no_grad():
        expected = original.generate(**inputs)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store["uri"])  # models:/ URIs ignore registry_uri= in MLflow 3.17
    registered = mlflow.artifacts.download_artifacts("models:/tiny-sum@fastest-within-2pct",
                                                     dst_path=str(tmp_path / "from-registry"))
    for folder in (registered, target):
        model, _ = load_teacher(folder)
        with torch.no_grad():
            assert torch.equal(model.generate(**inputs), expected)
    assert isinstance(EncoderDecoderModel.from_pretrained(target), EncoderDecoderModel)

    # Registering the same trial again reuses its version; a new alias points at it.
    code, out, err = run_main(capsys, store, "--pick", "smallest-within-2pct", "--register", "tiny-sum",
                              "--alias", "production", "--no-tag")
    assert code == 0, err
    assert int(client.get_model_version_by_alias("tiny-sum", "production").version) == 1
    assert [int(v.version) for v in client.search_model_versions("name = 'tiny-sum'")] == [1]


@pytest.mark.parametrize("flags, message", [
    (["--objectives", "rouge1:up"], r"objective 'rouge1:up' must read <metric>:min or <metric>:max"),
    (["--constraint", "rouge1=>0.2"], r"constraint 'rouge1=>0.2' is malformed"),
    (["--constraint", "rouge1>=0.9"], r"none of the 4 finished trial\(s\) meets rouge1>=0.9; relax a --constraint"),
    (["--pick", "quickest"], r"unknown pick 'quickest'"),
    (["--search", "nope"], r"no search 'nope' in experiment 'exp'; recent searches: search-new, search-old"),
    (["--register", "all-front"], r"trial t3's checkpoint .*/t3 is missing and its run holds no model artifacts"),
    (["--export", "/tmp"], r"--export copies one checkpoint, but 3 trials are on the front; add --pick"),
    (["--alias", "prod"], r"--alias prod names a registered version; add --register NAME"),
    (["--pick", "best-rouge", "--register", "m", "--alias", "latest"], r"--alias must be .* got 'latest'"),
])
def test_bad_input_is_one_line_and_exit_2(capsys, store, flags, message):
    code, out, err = run_main(capsys, store, *flags, "--no-tag")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert err.startswith("error: ") and re.search(message, err), err


def test_unknown_experiment_names_the_known_ones(capsys, store):
    code = main(["nope", "--tracking-uri", store["uri"]])
    err = capsys.readouterr().err
    assert code == 2 and "no experiment 'nope' in this MLflow store; known: exp." in err


def test_missing_store_and_unreachable_server(capsys, monkeypatch, tmp_path):
    assert main(["exp", "--tracking-uri", f"sqlite:///{tmp_path}/none.db"]) == 2
    assert f"no MLflow store at {tmp_path}/none.db" in capsys.readouterr().err
    assert not (tmp_path / "none.db").exists()  # a reader creates nothing
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "3")
    assert main(["exp", "--tracking-uri", "http://127.0.0.1:9"]) == 2  # nothing listens on the discard port
    err = capsys.readouterr().err
    assert "tracking server http://127.0.0.1:9 cannot be used" in err and err.count("\n") == 1


def test_entry_point_runs_as_a_module(store):
    out = subprocess.run(
        [sys.executable, "-m", "platform.pareto", "exp", "--tracking-uri", store["uri"], "--pick", "best-rouge",
         "--no-tag"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "* best-rouge: trial t1" in out.stdout and _table_trials(out.stdout)[:2] == ["teacher", "t1"]


def test_whole_front_registers_one_version_per_trial(capsys, store, client):
    code, out, err = run_main(capsys, store, "--constraint", "latency_ms>=40", "--register", "front", "--no-tag")
    assert code == 0, err
    versions = client.search_model_versions("name = 'front'")
    assert sorted(int(v.version) for v in versions) == [1, 2]  # t1 and t2; t4 is dominated, t3 too fast for the rule
    assert {v.run_id for v in versions} == {store["runs"]["t1"], store["runs"]["t2"]}
    assert client.get_registered_model("front").aliases == {}


def test_export_falls_back_to_the_runs_model_artifacts(capsys, store, client, tmp_path):
    from shrinktune.models.teacher import load_teacher

    tracker = SearchTracker(store["uri"], "exp-moved")  # a search whose checkpoint folder has since been deleted
    tracker.start_search("moved", {"objectives": json.dumps(OBJ)})
    run = tracker.log_trial("gone", {}, TRIALS["t1"], checkpoint=str(tmp_path / "deleted"))
    client.log_artifacts(run, str(store["checkpoints"]["t1"]), artifact_path="model")
    code = main(["exp-moved", "--tracking-uri", store["uri"], "--pick", "best-rouge",
                 "--export", str(tmp_path / "out")])
    assert code == 0, capsys.readouterr().err
    model, _ = load_teacher(tmp_path / "out")
    assert model.config.model_type == "encoder-decoder"
