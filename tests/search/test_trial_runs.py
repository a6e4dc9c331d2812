"""What a search writes for each trial and for its teacher, through the runner's own pieces (Ray stood in for,
MLflow real): readable run names, the trial's real start and end, every setting it ran with, a progress line per
ended trial, one teacher run even when resumed, and Ray Tune's own output only when asked for."""

import logging
import os
import time
from types import SimpleNamespace

import pytest

from shrinktune.search import runner
from shrinktune.search.callbacks import run_name
from shrinktune.search.plan import RunOptions, SearchPlan
from shrinktune.search.space import SearchSpace
from shrinktune.tracking.mlflow_tracking import SearchTracker
from tests.fake_ray import FakeRay

TEACHER = {"rouge1": 0.27, "latency_ms": 600.0, "eval_samples": 4}
ITSELF = {"speedup": 1.0, "rouge1_change": 0.0}  # the teacher's standing against itself, as the trials' ratios


def _plan(tmp_path, *, verbose: bool = False, previous=None) -> SearchPlan:
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "named.yaml"
    path.write_text("""task: summarization
teacher: embedded
objectives: {rouge1: max, latency_ms: min}
search: {trials: 3, sampler: random}
evaluation: {samples: 7}
generation: {num_beams: 2, max_new_tokens: 20}
fixed: {batch_size: 8, decoder_ffn: scaled, method: kd}
dimensions:
  latent_dim: {type: categorical, choices: [192, 384]}
  decoder_layers: {type: int, low: 1, high: 6}
  learning_rate: {type: float, low: 1.0e-4, high: 1.0e-3, log: true}
""")
    space = SearchSpace.load(path)
    options = RunOptions(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db", storage_path=str(tmp_path / "runs"),
                         cache_root=str(tmp_path / "cache"), verbose=verbose)
    return SearchPlan(space=space, options=options, name="s", budget=space.search,
                      tracker=SearchTracker(options.tracking_uri, space.name), previous=previous)


def _trial(trial_id: str, config: dict, started: float | None):
    """The parts of a Tune `Trial` the logger reads: a trial Tune started at `started`."""
    return SimpleNamespace(trial_id=trial_id, config=config, checkpoint=None, error_file=None, pickled_error_file=None,
                           last_result={"rouge1": 0.2, "latency_ms": 300.0, "time_total_s": 90.0,
                                        "training_iteration": 1, "done": True},
                           run_metadata=SimpleNamespace(num_failures=0, start_time=started))


def test_run_names_say_the_shape_learning_rate_and_method_then_the_tune_id():
    settings = {"latent_dim": 384, "decoder_layers": 5, "learning_rate": 8.1e-4, "method": "sft", "ae_kind": "pca",
                "epochs": 2}
    assert run_name(settings, ["latent_dim", "decoder_layers", "learning_rate"], "4f2a9c1e") == \
        "384x5 lr8.1e-4 sft · 4f2a9c1e"
    assert run_name(settings, ["latent_dim", "ae_kind", "epochs"], "4f2a9c1e") == \
        "384x5 lr8.1e-4 sft ae-pca ep2 · 4f2a9c1e"  # other sampled settings follow, in the sampler's order
    teacher_shaped = {"learning_rate": 3e-4, "method": "pseudo_labels", "encoder_layers": 3, "kd_alpha_ce": 0.5}
    assert run_name(teacher_shaped, ["encoder_layers", "kd_alpha_ce"], "ab12") == \
        "fullxall enc3 lr3e-4 pseudo_labels ce0.5 · ab12"
    assert run_name({}, ["unknown_setting"], "ab12") == "fullxall · ab12"


def test_the_runner_logs_a_trial_with_its_settings_its_real_times_and_the_progress(tmp_path, caplog, monkeypatch):
    plan = _plan(tmp_path)
    plan.tracker.start_search("s", {})
    context = plan.context(threads=1)
    started = time.time()
    callback = runner._trial_logger(plan, context, started=started - 30)  # the search began 30 s ago
    callback.setup()
    caplog.set_level(logging.INFO, logger="shrinktune")
    config = {"latent_dim": 384, "decoder_layers": 5, "learning_rate": 8.1e-4}
    callback.on_trial_complete(0, [], _trial("4f2a9c1e", config, started - 100))
    ended = time.time()

    run = plan.tracker.client.get_run(plan.tracker.trial_runs()["4f2a9c1e"])
    assert run.info.run_name == "384x5 lr8.1e-4 kd · 4f2a9c1e"
    assert run.data.tags["shrinktune.trial"] == "4f2a9c1e" and run.data.tags["shrinktune.kind"] == "trial"
    assert run.info.start_time == int((started - 100) * 1000)
    assert started * 1000 <= run.info.end_time <= ended * 1000 + 1
    params = run.data.params
    assert {key: params[key] for key in ("latent_dim", "decoder_layers", "learning_rate")} == {
        "latent_dim": "384", "decoder_layers": "5", "learning_rate": "0.00081"}  # sampled
    assert {key: params[key] for key in ("method", "decoder_ffn", "batch_size", "ae_kind", "epochs")} == {
        "method": "kd", "decoder_ffn": "scaled", "batch_size": "8", "ae_kind": "mlp", "epochs": "2"}  # fixed, default
    assert params["generation.num_beams"] == "2" and params["generation.max_new_tokens"] == "20"  # decoding
    assert params["evaluation.samples"] == "7" and "evaluation.recheck_samples" in params
    line = next(r.getMessage() for r in caplog.records if "MLflow run" in r.getMessage())
    assert line.startswith(f"trial 1 of 3 finished → MLflow run {run.info.run_id} (384x5 lr8.1e-4 kd · 4f2a9c1e); "
                           "30 s elapsed, about ")
    assert line.endswith(" left")

    callback.on_trial_error(0, [], _trial("9e8d7c6b", {"latent_dim": 192}, None))  # no start time: its own clock
    failed = plan.tracker.client.get_run(plan.tracker.trial_runs()["9e8d7c6b"])
    assert failed.info.end_time - failed.info.start_time == pytest.approx(90_000, abs=1000)
    assert "trial 2 of 3 failed (trial raised an error) → MLflow run" in caplog.text


def test_the_teacher_run_is_logged_once_and_not_again_when_resumed(tmp_path, monkeypatch):
    plan = _plan(tmp_path)
    tracker = plan.tracker
    tracker.start_search("s", {})
    measured = []
    folder = tmp_path / "teacher"  # what a prepared teacher's folder holds: read back only when it does
    folder.mkdir()
    for name in ("config.json", "model.safetensors", "tokenizer.json"):
        (folder / name).write_text("{}")

    def prepare(context):
        measured.append(context.teacher_dir)
        return str(tmp_path / "teacher"), dict(TEACHER)

    monkeypatch.setattr(runner, "prepare_reference", prepare)
    context = runner._reference(FakeRay(), tracker, None, plan.context(threads=1), 1, 0)
    assert measured == ["embedded"] and context.reference == TEACHER
    teacher = tracker.client.get_run(tracker.teacher_run_id())
    assert teacher.info.run_name == "teacher" and teacher.data.metrics == {**TEACHER, **ITSELF}
    assert teacher.data.params["teacher"] == "embedded" and teacher.data.params["generation.num_beams"] == "2"
    assert teacher.info.end_time >= teacher.info.start_time

    resumed = runner._reference(FakeRay(), tracker, tracker.find_search("s"), plan.context(threads=1), 1, 0)
    assert measured == ["embedded"] and resumed.reference == TEACHER  # read back, not measured
    runs = tracker.client.search_runs([tracker.experiment_id()], "tags.`shrinktune.kind` = 'teacher'")
    assert [r.info.run_id for r in runs] == [teacher.info.run_id]
    assert tracker.trial_runs() == {}


def test_ray_tunes_own_output_only_when_verbose(tmp_path, monkeypatch):
    """Default: Tune at verbosity 0 on its legacy output engine (which then prints nothing: the new one still boxes
    failed trials) and its warnings hidden, all restored afterwards; `verbose`: as Tune prints by default."""
    monkeypatch.delenv("RAY_AIR_NEW_OUTPUT", raising=False)
    monkeypatch.setenv("TUNE_PRINT_ALL_TRIAL_ERRORS", "1")
    tune_logger = logging.getLogger("ray.tune")
    level = tune_logger.level
    with runner._ray_output(False):
        assert os.environ["RAY_AIR_NEW_OUTPUT"] == "0" and os.environ["TUNE_PRINT_ALL_TRIAL_ERRORS"] == "0"
        assert tune_logger.level == logging.ERROR
    assert "RAY_AIR_NEW_OUTPUT" not in os.environ and os.environ["TUNE_PRINT_ALL_TRIAL_ERRORS"] == "1"
    assert tune_logger.level == level
    with runner._ray_output(True):
        assert "RAY_AIR_NEW_OUTPUT" not in os.environ and tune_logger.level == level

    quiet, loud = _plan(tmp_path / "quiet"), _plan(tmp_path / "loud", verbose=True)
    for plan, verbosity in ((quiet, 0), (loud, 1)):
        tuner = runner._tuner(plan, lambda config: None, [])
        assert tuner._local_tuner.get_run_config().verbose == verbosity


def test_a_resumed_search_runs_with_this_runs_callbacks_and_verbosity(tmp_path):
    """Tune restores a tuner with the callbacks and verbosity it was pickled with; the runner gives it this run's
    (through Ray's private `_local_tuner`: this test says so if Ray moves it)."""

    def trainable(config):
        return None

    first = _plan(tmp_path)
    runner._tuner(first, trainable, ["the first run's logger"])
    assert (first.folder / "tuner.pkl").is_file()
    resumed = _plan(tmp_path, verbose=True, previous=SimpleNamespace())
    tuner = runner._tuner(resumed, trainable, ["this run's logger"])
    run_config = tuner._local_tuner.get_run_config()
    assert run_config.callbacks == ["this run's logger"] and run_config.verbose == 1
