"""The picker's trust boundary: `--register`, `--export` and `--test` act only on a trial's checkpoint folder that is
its run's immutable `checkpoint` param, lies inside its search's folder and holds a whole trial checkpoint.

Paths come back from MLflow, which anyone who can write the store can edit: each search here is one way a path can
point somewhere else (a rewritten tag, a forged run, a symbolic link out of the storage, a folder with a planted
link or without the trial's record), beside a key file that must never be uploaded or copied.
"""

import json
import os
import pathlib
import re
import time

import pytest

from shrinktune.pick.cli import main
from shrinktune.tracking.mlflow_tracking import SearchTracker, default_tracking_uri
from shrinktune.tracking.schema import CHECKPOINT_TAG, filter_value

OBJ = {"rouge1": "max", "latency_ms": "min"}
TEACHER = {"rouge1": 0.30, "latency_ms": 100.0}
METRICS = {"rouge1": 0.29, "latency_ms": 50.0}
KEY = "id_rsa"  # the file an attacker wants: must never reach the artifact store or an export
KEY_TEXT = "-----BEGIN OPENSSH PRIVATE KEY----- (fake) -----END OPENSSH PRIVATE KEY-----\n"


def save_checkpoint(folder, model, tokenizer, record: bool = True) -> pathlib.Path:
    """A trial checkpoint as a search saves it: the model, its tokenizer and (with `record`) the trial's record."""
    from shrinktune.models.folders import TRIAL_INFO

    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    if record:
        (pathlib.Path(folder) / TRIAL_INFO).write_text(json.dumps({"config": {}}))
    return pathlib.Path(folder)


def in_storage(storage: pathlib.Path, search: str) -> pathlib.Path:
    return storage / search / f"trainable_{search}_00000" / "checkpoint_000000"


@pytest.fixture(scope="module")
def store(tmp_path_factory, tokenizer, tiny_bert2bert):
    """One experiment, one search per case, each with one finished trial (named as its search)."""
    root = tmp_path_factory.mktemp("trust")
    storage = root / "shrinktune_runs"
    stolen = save_checkpoint(root / "elsewhere" / "stolen", tiny_bert2bert(tokenizer, seed=9), tokenizer)
    (stolen / KEY).write_text(KEY_TEXT)  # a whole checkpoint, so that only the location gives it away
    legacy = root / "legacy_runs"

    def whole(folder):
        return save_checkpoint(folder, tiny_bert2bert(tokenizer, seed=1), tokenizer)

    def linked(folder):
        folder.parent.mkdir(parents=True)
        folder.symlink_to(stolen, target_is_directory=True)
        return folder

    def hollow(folder):
        return save_checkpoint(folder, tiny_bert2bert(tokenizer, seed=2), tokenizer, record=False)

    def planted(folder):
        whole(folder)
        (folder / "notes.txt").symlink_to(stolen / KEY)
        return folder

    cases = {  # search (= trial) name: (logs its storage, checkpoint param, checkpoint tag)
        "forged": (True, stolen, stolen),  # a run written by hand: param and tag outside the storage
        "retagged": (True, whole(in_storage(storage, "retagged")), stolen),  # only the tag rewritten
        "linked": (True, linked(in_storage(storage, "linked")), None),
        "hollow": (True, hollow(in_storage(storage, "hollow")), None),
        "planted": (True, planted(in_storage(storage, "planted")), None),
        "gone-retagged": (True, in_storage(storage, "gone-retagged"), stolen),  # the folder is gone; tag rewritten
        "it's": (True, whole(in_storage(storage, "it's")), None),  # a quote in the search's name
        "legacy": (False, whole(in_storage(legacy, "legacy")), None),  # an older search: no storage param
        "legacy-forged": (False, stolen, None),
        "legacy-linked": (False, linked(in_storage(legacy, "legacy-linked")), None),
    }
    tracker = SearchTracker(default_tracking_uri(root), "trust")
    tracker.check()
    runs = {}
    for name, (logs_storage, param, tag) in cases.items():
        tracker.start_search(name, {"objectives": json.dumps(OBJ), **({"storage": str(storage)} if logs_storage
                                                                       else {})})
        tracker.log_reference(TEACHER)
        runs[name] = tracker.log_trial(name, {"latent_dim": 8}, METRICS, checkpoint=str(param))
        if tag is not None:
            tracker.tag(runs[name], CHECKPOINT_TAG, str(tag))
        tracker.end_search()
        time.sleep(0.02)
    return {"uri": tracker.tracking_uri, "root": root, "storage": storage, "runs": runs, "stolen": stolen,
            "checkpoints": {name: param for name, (_, param, _) in cases.items()}}


@pytest.fixture(scope="module")
def client(store):
    from mlflow.tracking import MlflowClient

    return MlflowClient(store["uri"])


def run_main(capsys, store, search, *args):
    code = main(["trust", "--tracking-uri", store["uri"], "--search", search, "--pick", "best-rouge", "--no-tag",
                 *args])
    out, err = capsys.readouterr()
    return code, out, err


def _keys_uploaded(store) -> list[pathlib.Path]:
    return [p for p in (store["root"] / "mlartifacts").rglob("*") if p.name == KEY or p.name == "notes.txt"]


def _nothing_written(store, client, search, name, destination):
    """No registered model, no logged model of the trial's run, no export folder and no key in the artifacts."""
    assert client.search_registered_models(f"name = {filter_value(name)}") == []
    experiment = client.get_experiment_by_name("trust").experiment_id
    assert [m for m in client.search_logged_models([experiment]) if m.source_run_id == store["runs"][search]] == []
    assert not destination.exists()
    assert _keys_uploaded(store) == []


@pytest.mark.parametrize("search, reason", [
    ("forged", r"is outside the search's storage .*/shrinktune_runs/forged \(it resolves to .*/elsewhere/stolen\)"),
    ("linked", r"is outside the search's storage .*/shrinktune_runs/linked \(it resolves to .*/elsewhere/stolen\)"),
    ("hollow", r"is missing shrinktune_trial\.json"),
    ("planted", r"is holding symbolic link\(s\) notes\.txt"),
    ("legacy-forged", r"is not an absolute path through a folder named after its search 'legacy-forged' \(the search "
                      r"logged no storage param\)"),
    ("legacy-linked", r"is resolving outside its search's folder .*/legacy_runs/legacy-linked \(it resolves to "
                      r".*/elsewhere/stolen\)"),
])
@pytest.mark.parametrize("flags", [["--register", "taken"], ["--export", "OUT"], ["--test"]])
def test_an_untrusted_checkpoint_is_refused_in_one_line_and_nothing_is_written(capsys, store, client, tmp_path,
                                                                               search, reason, flags):
    destination = tmp_path / "out"
    code, out, err = run_main(capsys, store, search, *[str(destination) if f == "OUT" else f for f in flags])
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    folder = re.escape(str(store["checkpoints"][search]))
    assert re.search(rf"^error: trial {search}'s checkpoint {folder} \(run {store['runs'][search]}\) {reason}: not "
                     r"uploaded, copied or tested; .*, or pick another trial\.$", err.strip()), err
    _nothing_written(store, client, search, "taken", destination)


def test_a_rewritten_tag_is_ignored_for_the_param(capsys, caplog, store, client, tmp_path):
    """The tag points at the stolen folder, the param at the trial's own: the trial's own is exported and
    registered, with a warning; the key is neither copied nor uploaded."""
    from shrinktune import load_summarizer

    destination = tmp_path / "out"
    code, out, err = run_main(capsys, store, "retagged", "--export", str(destination), "--register", "retagged")
    assert code == 0, err
    warned = [r.getMessage() for r in caplog.records if "the tag is ignored" in r.getMessage()]
    assert warned == [f"trial retagged: its {CHECKPOINT_TAG} tag ({store['stolen']}) differs from its checkpoint "
                      f"param ({store['checkpoints']['retagged']}); the tag is ignored"]
    own = store["checkpoints"]["retagged"]
    assert sorted(p.name for p in destination.iterdir()) == sorted(p.name for p in own.iterdir())
    assert load_summarizer(destination)(["a document"]) == load_summarizer(own)(["a document"])
    assert int(client.get_model_version_by_alias("retagged", "best-rouge").version) == 1
    assert _keys_uploaded(store) == []


def test_a_rewritten_tag_on_a_gone_folder_uploads_nothing(capsys, store, client, tmp_path):
    """The param's folder is gone and MLflow holds no copy: the tag's folder is not taken instead."""
    destination = tmp_path / "out"
    code, out, err = run_main(capsys, store, "gone-retagged", "--register", "taken", "--export", str(destination))
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    folder = store["checkpoints"]["gone-retagged"]
    assert err.strip() == (f"error: trial gone-retagged's checkpoint {folder} is missing and its run holds no model "
                           "artifacts; rerun the search, or pick another trial.")
    _nothing_written(store, client, "gone-retagged", "taken", destination)


def test_an_older_search_without_storage_exports_from_its_own_folder(capsys, store, tmp_path):
    from shrinktune import load_summarizer

    destination = tmp_path / "out"
    code, out, err = run_main(capsys, store, "legacy", "--export", str(destination))
    assert code == 0, err
    assert load_summarizer(destination)(["a document"]) == load_summarizer(store["checkpoints"]["legacy"])(
        ["a document"])


@pytest.mark.parametrize("name", ["o'brien", 'say "hi"'])
def test_quotes_in_a_search_or_model_name_reach_mlflow_quoted(capsys, store, client, name):
    """The search `it's` and a model name with a quote: registering twice finds the first version again (a
    registry search on the name) instead of failing on the filter string."""
    for alias in ("first", "second"):
        code, out, err = run_main(capsys, store, "it's", "--register", name, "--alias", alias)
        assert code == 0, err
    assert [int(v.version) for v in client.search_model_versions(f"name = {filter_value(name)}")] == [1]
    assert client.get_model_version_by_alias(name, "second").run_id == store["runs"]["it's"]


def test_export_copies_regular_files_only(tmp_path):
    from shrinktune.pick.trust import copy_regular_files

    outside = tmp_path / "outside"
    (outside / "inner").mkdir(parents=True)
    (outside / KEY).write_text(KEY_TEXT)
    (outside / "inner" / "more").write_text("x")
    source = tmp_path / "checkpoint"
    (source / "sub").mkdir(parents=True)
    (source / "config.json").write_text("{}")
    (source / "sub" / "weights").write_text("w")
    (source / "link").symlink_to(outside / KEY)
    (source / "sub" / "folder-link").symlink_to(outside / "inner", target_is_directory=True)
    copied = copy_regular_files(source, tmp_path / "out")
    files = sorted(str(p.relative_to(copied)) for p in copied.rglob("*"))
    assert files == ["config.json", "sub", os.path.join("sub", "weights")]
    assert not any(p.is_symlink() for p in copied.rglob("*"))
