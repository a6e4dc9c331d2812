import textwrap

import optuna
import pytest

from shrinktune.errors import ConfigError
from shrinktune.search.samplers import ConstrainedOptunaSearch, make_sampler, make_searcher, open_optuna_trial
from shrinktune.search.space import SearchSpace
from shrinktune.settings import SearchSettings

SPACE = """
task: summarization
teacher: embedded
objectives: {rouge1: max, latency_ms: min}
constraints: {rouge1: {min: 0.2}, latency_ms: {max: 100}}
search: {sampler: tpe, trials: 8, enqueue: [{latent_dim: 192, ae_kind: pca, decoder_layers: 2}]}
dimensions:
  latent_dim: {type: categorical, choices: [96, 192, 384]}
  ae_kind: {type: categorical, choices: [mlp, pca], when: {latent_dim: {lt: 384}}}
  decoder_layers: {type: int, low: 1, high: 6}
"""


@pytest.fixture
def space(tmp_path):
    path = tmp_path / "space.yaml"
    path.write_text(textwrap.dedent(SPACE))
    return SearchSpace.load(path, encoder_width=384, teacher_depth=6)


def _searcher(space, sampler="tpe", constraints=None):
    return ConstrainedOptunaSearch(
        space=space.suggest, metric=list(space.objectives), mode=list(space.objectives.values()),
        sampler=make_sampler(sampler, space.search.seed), points_to_evaluate=[dict(p) for p in space.enqueue],
        constraints=space.constraints if constraints is None else constraints,
    )


def test_make_sampler_by_name():
    assert isinstance(make_sampler("tpe", 0), optuna.samplers.TPESampler)
    assert isinstance(make_sampler("nsga2", 0, startup_trials=4), optuna.samplers.NSGAIISampler)
    assert isinstance(make_sampler("gp", 0), optuna.samplers.GPSampler)
    assert isinstance(make_sampler("random", 0), optuna.samplers.RandomSampler)
    with pytest.raises(ConfigError, match="sampler must be one of tpe, nsga2, gp, random, got 'grid'"):
        make_sampler("grid", 0)
    with pytest.raises(ConfigError, match="NSGA-II needs a population of at least 2 trials, got 1"):
        make_sampler("nsga2", 0, startup_trials=1)


@pytest.mark.parametrize("trials, startup", [(1, 2), (4, 2), (12, 3), (20, 5), (30, 5), (100, 5)])
def test_samplers_model_results_after_a_quarter_of_a_short_search(trials, startup):
    assert SearchSettings(trials=trials).random_trials == startup
    assert SearchSettings(trials=trials, startup_trials=5).random_trials == 5


@pytest.mark.parametrize("sampler", ["tpe", "nsga2", "gp"])
def test_after_the_start_up_trials_the_sampler_leaves_random_search(sampler):
    """With Optuna's defaults a 6-trial search was random search plus its enqueued points: now the sampler's own
    proposals start after `startup_trials`, and differ from random search's at the same seed."""
    def study(name):
        made = optuna.create_study(directions=["maximize", "minimize"],
                                   sampler=make_sampler(name, 0, startup_trials=3))
        made.optimize(lambda t: (-(t.suggest_float("x", 0, 1) - 0.3) ** 2, t.suggest_int("n", 1, 6)), n_trials=8)
        return [t.params for t in made.trials]

    ours, random = study(sampler), study("random")
    if sampler != "nsga2":  # NSGA-II's first generation draws from its own generator
        assert ours[:3] == random[:3]
    assert ours[3:] != random[3:]


def test_partial_teacher_point_then_the_files_point_then_the_sampler(space):
    assert space.enqueue[0] == {"latent_dim": 384, "decoder_layers": 6}
    searcher = _searcher(space)
    first = searcher.suggest("t0")
    assert first == {"latent_dim": 384, "decoder_layers": 6}  # no bottleneck: ae_kind is not asked for
    assert searcher.suggest("t1") == {"latent_dim": 192, "ae_kind": "pca", "decoder_layers": 2}
    third = searcher.suggest("t2")
    assert set(third) == ({"latent_dim", "ae_kind", "decoder_layers"} if third["latent_dim"] < 384
                          else {"latent_dim", "decoder_layers"})


def test_completed_trials_carry_their_violations_before_optuna_is_told(space):
    searcher = _searcher(space)
    for trial_id in ("feasible", "slow", "no_rouge", "crashed"):
        searcher.suggest(trial_id)
    # "slow" dominates "feasible" on both objectives, but breaks the latency cap
    searcher.on_trial_complete("feasible", {"rouge1": 0.30, "latency_ms": 80.0})
    searcher.on_trial_complete("slow", {"rouge1": 0.35, "latency_ms": 60.0 + 70.0})
    searcher.on_trial_complete("no_rouge", {"latency_ms": 50.0})
    searcher.on_trial_complete("crashed", None, error=True)
    feasible, slow, no_rouge, crashed = searcher._ot_study.trials
    assert feasible.constraints == pytest.approx({"rouge1.min": -0.10, "latency_ms.max": -20.0})
    assert slow.constraints == pytest.approx({"rouge1.min": -0.15, "latency_ms.max": 30.0})
    # without every objective the trial cannot be ranked: failed (plain OptunaSearch would leave it RUNNING)
    assert no_rouge.state == crashed.state == optuna.trial.TrialState.FAIL
    assert no_rouge.constraints == crashed.constraints == {}
    # Optuna's own view of the front: feasible trials only, so the dominating but slow trial is not on it
    assert [t.number for t in searcher._ot_study.best_trials] == [feasible.number]


def test_a_missing_constraint_metric_is_violated_by_one(space):
    searcher = _searcher(space, constraints={**space.constraints, "speedup": {"min": 1.5}})
    searcher.suggest("a")
    searcher.on_trial_complete("a", {"rouge1": 0.3, "latency_ms": 80.0})
    trial = searcher._ot_study.trials[0]
    assert trial.state == optuna.trial.TrialState.COMPLETE
    assert trial.constraints == pytest.approx({"rouge1.min": -0.1, "latency_ms.max": -20.0, "speedup.min": 1.0})


def test_no_constraints_leave_trials_as_plain_optuna_search_does(space):
    searcher = _searcher(space, constraints={})
    searcher.suggest("a")
    searcher.on_trial_complete("a", {"rouge1": 0.0, "latency_ms": 1e6})
    assert searcher._ot_study.trials[0].constraints == {}


@pytest.mark.parametrize("sampler", ["tpe", "nsga2"])
def test_the_sampler_steers_towards_feasible_trials(tmp_path, sampler):
    """x + y scores well, but a constraint caps it: the sampler must learn to keep x small."""
    path = tmp_path / "steer.yaml"
    path.write_text(textwrap.dedent("""
        task: summarization
        objectives: {rouge1: max, latency_ms: min}
        dimensions:
          decoder_layers: {type: int, low: 1, high: 20}
          encoder_layers: {type: int, low: 1, high: 20}
    """))
    space = SearchSpace.load(path)

    def feasible_proposals(constraints):
        searcher = _searcher(space, sampler, constraints)
        proposals = []
        for i in range(40):
            config = searcher.suggest(str(i))
            proposals.append(config["decoder_layers"] <= 5)
            searcher.on_trial_complete(str(i), {"rouge1": config["decoder_layers"] + config["encoder_layers"],
                                                "latency_ms": config["encoder_layers"]})
        return sum(proposals[20:])

    free, capped = feasible_proposals({}), feasible_proposals({"rouge1": {"max": 6}})
    assert capped >= free + 5, (free, capped)


def test_searcher_state_survives_a_tune_checkpoint(space, tmp_path):
    searcher = _searcher(space)
    searcher.suggest("a")
    searcher.save(str(tmp_path / "searcher.pkl"))
    restored = ConstrainedOptunaSearch()
    restored.restore(str(tmp_path / "searcher.pkl"))
    assert restored.constraints == space.constraints
    restored.on_trial_complete("a", {"rouge1": 0.1, "latency_ms": 10.0})
    assert restored._ot_study.trials[0].constraints == pytest.approx({"rouge1.min": 0.1, "latency_ms.max": -90.0})


def test_the_one_reach_into_ray_s_optuna_search_still_finds_its_trials(space):
    """`open_optuna_trial` reads `OptunaSearch._ot_trials` / `_completed_trials` (Ray has no public way): if Ray
    renames them, this fails here rather than silently dropping every constraint."""
    searcher = make_searcher(space, "random")
    searcher.suggest("t0")
    trial = open_optuna_trial(searcher, "t0")
    assert isinstance(trial, optuna.Trial) and open_optuna_trial(searcher, "other") is None
    searcher.on_trial_complete("t0", {m: 1.0 for m in space.objectives})
    assert open_optuna_trial(searcher, "t0") is None  # told: no longer open
