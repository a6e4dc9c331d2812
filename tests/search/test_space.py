import math
import pathlib
import textwrap

import optuna
import pytest
import yaml

from shrinktune.errors import ConfigError, UserError
from shrinktune.search.samplers import make_sampler
from shrinktune.search.space import (
    Dimension,
    SearchSpace,
    constraint_names,
    constraint_violations,
    is_feasible,
    resolve_space_path,
)

ROOT = pathlib.Path(__file__).resolve().parents[2]
# (encoder width, decoder depth, encoder depth) of the shipped spaces' teachers, known here without the hub.
TEACHER_SHAPES = {"embedded": (384, 6, 6), "facebook/bart-base": (768, 6, 6), "facebook/bart-large-cnn": (1024, 12, 12),
                  "Helsinki-NLP/opus-mt-ro-en": (512, 6, 6), "google-t5/t5-small": (512, 6, 6)}
GOOD = """
task: summarization
teacher: embedded
objectives: {rouge1: max, latency_ms: min}
search: {sampler: tpe, trials: 2}
dimensions:
  latent_dim: {type: int, low: 96, high: 384, step: 96}
  decoder_layers: {type: int, low: 1, high: 6}
"""


def _write(tmp_path, text, name="space.yaml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


@pytest.mark.parametrize("path", sorted((ROOT / "search_spaces").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_space_loads_and_says_how_to_run_it(path):
    first = path.read_text().splitlines()[0]
    assert first in (f"# Run: python -m platform.search {path.stem}",
                     f"# Run: ray job submit --working-dir . -- python -m platform.search search_spaces/{path.name}")
    teacher = yaml.safe_load(path.read_text())["teacher"]
    width, depth, encoder_depth = TEACHER_SHAPES[teacher]
    space = SearchSpace.load(path, encoder_width=width, teacher_depth=depth, encoder_depth=encoder_depth)
    assert len(space.objectives) >= 2 and space.dimensions


@pytest.mark.parametrize("name,width,depth,max_tokens,beams", [
    ("bart-base-cnn_dailymail", 768, 6, 142, 4), ("bart-base-xsum", 768, 6, 62, 6),
    ("bart-large-cnn-cnn_dailymail", 1024, 12, 142, 4), ("bart-large-cnn-xsum", 1024, 12, 62, 6),
])
def test_gpu_spaces_start_from_the_teacher_shaped_student(name, width, depth, max_tokens, beams):
    space = SearchSpace.load(ROOT / "search_spaces" / f"{name}.yaml", encoder_width=width, teacher_depth=depth,
                             encoder_depth=depth)
    assert space.enqueue[0] == {"latent_dim": width, "decoder_layers": depth, "encoder_layers": depth}
    assert len(space.enqueue) >= 3 and space.constraints and space.search.time_budget_s and space.search.retries == 1
    assert (space.generation.max_new_tokens, space.generation.num_beams) == (max_tokens, beams)
    assert max(d.values_bound()[1] for d in space.dimensions if d.name == "latent_dim") == width


def test_embedded_spaces_keep_their_enqueued_points():
    for name in ("summarization", "methods"):
        path = ROOT / "search_spaces" / f"{name}.yaml"
        raw = yaml.safe_load(path.read_text())["search"]["enqueue"]
        assert SearchSpace.load(path, encoder_width=384, teacher_depth=6, encoder_depth=6).enqueue == tuple(raw)


def test_good_space(tmp_path):
    space = SearchSpace.load(_write(tmp_path, GOOD), encoder_width=384, teacher_depth=6)
    assert (space.name == "space" and space.search.trials == 2
            and [d.name for d in space.dimensions] == ["latent_dim", "decoder_layers"])


@pytest.mark.parametrize("change,message", [
    (("task: summarization", "task: nosuch"), r"task 'nosuch' is unknown; known tasks: .*summarization"),
    (("high: 384, step: 96", "high: 512, step: 96"), r"latent_dim must be ≤ the encoder width \(384\), got up to 512"),
    (("low: 96, high: 384", "low: 0, high: 384"), r"dimensions.latent_dim.low must be an integer ≥ 1, got 0"),
    (("low: 1, high: 6", "low: 0, high: 6"), r"dimensions.decoder_layers.low must be an integer ≥ 1, got 0"),
    (("low: 1, high: 6", "low: 1, high: 9"), r"decoder_layers must be ≤ the teacher's decoder depth \(6\)"),
    (("sampler: tpe", "sampler: grid"), r"search.sampler must be one of tpe, nsga2, gp, random, got 'grid'"),
    (("rouge1: max", "rouge1: up"), r"objectives.rouge1 must be max or min, got 'up'"),
])
def test_bad_values_name_file_key_and_fix(tmp_path, change, message):
    path = _write(tmp_path, GOOD.replace(*change))
    with pytest.raises(ConfigError, match=message) as info:
        SearchSpace.load(path, encoder_width=384, teacher_depth=6)
    assert str(path) in str(info.value)


def test_objectives_name_the_task_kinds_metrics(tmp_path):
    """A translation or classification metric on a summarization space is refused, naming the kind's metrics; the
    classification task takes accuracy and macro-F1 with the costs."""
    path = _write(tmp_path, GOOD.replace("rouge1: max", "bleu: max"))
    with pytest.raises(ConfigError, match=r"objectives.bleu is not a metric of task summarization \(summarization\); "
                                          r"metrics: rouge1, rouge2, rougeL, rougeLsum, latency_ms"):
        SearchSpace.load(path)
    text = GOOD.replace("task: summarization", "task: classification").replace("rouge1: max", "accuracy: max")
    space = SearchSpace.load(_write(tmp_path, text + "constraints: {macro_f1: {min: 0.3}}\n"))
    assert space.objectives["accuracy"] == "max" and space.constraints == {"macro_f1": {"min": 0.3}}
    wrong = _write(tmp_path, text.replace("accuracy: max", "rouge1: max"), "wrong.yaml")
    with pytest.raises(ConfigError, match=r"objectives.rouge1 is not a metric of task classification "
                                          r"\(classification\); metrics: accuracy, macro_f1, invalid_fraction"):
        SearchSpace.load(wrong)


def test_summarization_only_settings_are_refused_for_other_kinds(tmp_path):
    text = GOOD.replace("task: summarization", "task: classification").replace("rouge1: max", "accuracy: max")
    path = _write(tmp_path, text + "fixed: {method: pseudo_labels, pseudo_label_windows: 2}\n")
    with pytest.raises(ConfigError, match="pseudo_label_windows is for summarization .* task classification is a "
                                          "classification task: leave pseudo_label_windows out"):
        SearchSpace.load(path)


def test_all_problems_are_reported_together(tmp_path):
    path = _write(tmp_path,
                  GOOD.replace("task: summarization", "task: nosuch").replace("sampler: tpe", "sampler: x")
                  + "colour: blue\n")
    with pytest.raises(ConfigError, match="has 3 problems") as info:
        SearchSpace.load(path)
    assert "unknown key 'colour'" in str(info.value)


def test_malformed_yaml_points_at_the_line(tmp_path):
    path = _write(tmp_path, "task: summarization\nobjectives: {rouge1: max\n")
    with pytest.raises(ConfigError, match=r"not valid YAML at line \d+"):
        SearchSpace.load(path)


def test_missing_file_and_unknown_name(tmp_path):
    with pytest.raises(UserError, match="no such search-space file"):
        SearchSpace.load(tmp_path / "absent.yaml")
    with pytest.raises(UserError, match=r"unknown task or search space 'nosuch'.*known: .*summarization"):
        resolve_space_path("nosuch")
    assert resolve_space_path("summarization").name == "summarization.yaml"


def test_enqueued_configurations_must_fit_the_dimensions(tmp_path):
    ok = GOOD.replace("search: {sampler: tpe, trials: 2}",
                      "search: {sampler: tpe, trials: 2, enqueue: [{latent_dim: 192, decoder_layers: 2}]}")
    assert SearchSpace.load(_write(tmp_path, ok)).enqueue == ({"latent_dim": 192, "decoder_layers": 2},)
    bad = GOOD.replace("search: {sampler: tpe, trials: 2}",
                       "search: {sampler: tpe, trials: 2, enqueue: [{latent_dim: 999}]}")
    with pytest.raises(ConfigError, match=r"enqueue\[0\].latent_dim must lie in \[96, 384\], got 999") as info:
        SearchSpace.load(_write(tmp_path, bad))
    assert "enqueue[0] has no value for decoder_layers" in str(info.value)


def test_method_settings_are_checked_against_their_rules(tmp_path):
    text = (GOOD + "  method: {type: categorical, choices: [sft, distill]}\n"
            "  weight_ratio: {type: float, low: 0.5, high: 4.0}\n")
    with pytest.raises(ConfigError) as info:
        SearchSpace.load(_write(tmp_path, text), encoder_width=384, teacher_depth=6)
    assert "dimensions.method.choices must be one of sft, kd, pseudo_labels, got 'distill'" in str(info.value)
    assert "dimensions.weight_ratio.low must be a number > 1, got 0.5" in str(info.value)


def test_encoder_depth_is_checked_against_the_teacher(tmp_path):
    text = GOOD + "  encoder_layers: {type: int, low: 2, high: 8}\n"
    with pytest.raises(ConfigError, match=r"encoder_layers must be ≤ the teacher's encoder depth \(6\), got up to 8"):
        SearchSpace.load(_write(tmp_path, text), encoder_width=384, teacher_depth=6, encoder_depth=6)


# --- constraints ---------------------------------------------------------------------------------------------------

def test_constraints_are_stored_and_measured_in_optunas_convention(tmp_path):
    text = GOOD + "constraints: {latency_ms: {max: 250}, rouge1: {min: 0.15, max: 0.9}}\n"
    space = SearchSpace.load(_write(tmp_path, text))
    assert space.constraints == {"latency_ms": {"max": 250}, "rouge1": {"min": 0.15, "max": 0.9}}
    assert constraint_names(space.constraints) == ["latency_ms.max", "rouge1.min", "rouge1.max"]
    # 300 ms is 50 over the cap; R-1 .10 is .05 under the floor and .80 below the ceiling
    assert constraint_violations(
        space.constraints, {"latency_ms": 300.0, "rouge1": 0.10}
    ) == pytest.approx([50.0, 0.05, -0.8])
    assert not is_feasible(space.constraints, {"latency_ms": 300.0, "rouge1": 0.10})
    assert is_feasible(space.constraints, {"latency_ms": 250, "rouge1": 0.15})  # on the bound is feasible
    # a missing or NaN metric is violated by 1.0 on each of its bounds
    assert constraint_violations(space.constraints, {"rouge1": float("nan")}) == [1.0, 1.0, 1.0]
    assert is_feasible({}, {}) and SearchSpace.load(_write(tmp_path, GOOD)).constraints == {}


def test_bad_constraints_are_reported_together_naming_file_and_key(tmp_path):
    text = GOOD + ("constraints: {latency_ms: {below: 250}, rouge1: {min: 0.5, max: 0.2}, bleu: {min: 1}, "
                   "rouge2: {min: high}, speedup: 2}\n")
    path = _write(tmp_path, text, "x.yaml")
    with pytest.raises(ConfigError, match="has 5 problems") as info:
        SearchSpace.load(path)
    message = str(info.value)
    assert "constraints.latency_ms: unknown bound 'below'; use min and/or max" in message
    assert "constraints.rouge1: min (0.5) must be ≤ max (0.2); swap them" in message
    assert "constraints.bleu is not a metric of task summarization (summarization); metrics: rouge1" in message
    assert "constraints.rouge2.min must be a number, got 'high'" in message
    assert "constraints.speedup must map min and/or max to a number, e.g. {max: 250}, got 2" in message


# --- conditional dimensions ----------------------------------------------------------------------------------------

CONDITIONAL = GOOD + """\
  ae_kind: {type: categorical, choices: [mlp, pca], when: {latent_dim: {lt: 384}}}
  method: {type: categorical, choices: [sft, kd]}
  kd_alpha_hid: {type: categorical, choices: [0.0, 3.0], when: {method: kd, decoder_layers: [2, 3]}}
"""


def test_suggest_skips_a_dimension_whose_condition_fails_so_optuna_never_sees_it(tmp_path):
    space = SearchSpace.load(_write(tmp_path, CONDITIONAL), encoder_width=384, teacher_depth=6)
    # FixedTrial raises if asked for a parameter it was not given: the skipped dimensions are never asked for
    point = {"latent_dim": 384, "decoder_layers": 4, "method": "kd"}
    assert space.suggest(optuna.trial.FixedTrial(point)) == point
    point = {"latent_dim": 192, "ae_kind": "pca", "decoder_layers": 3, "method": "kd", "kd_alpha_hid": 3.0}
    assert space.suggest(optuna.trial.FixedTrial(point)) == point
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(30):
        trial = study.ask()
        chosen = space.suggest(trial)
        study.tell(trial, 0.0)
        assert ("ae_kind" in trial.params) == (chosen["latent_dim"] < 384)
        assert ("kd_alpha_hid" in trial.params) == (chosen["method"] == "kd" and chosen["decoder_layers"] in (2, 3))
    assert {"ae_kind", "kd_alpha_hid"} <= {name for t in study.trials for name in t.params}


def test_a_condition_may_read_a_fixed_setting(tmp_path, caplog):
    def load(mode):
        text = CONDITIONAL.replace("dimensions:", f"fixed: {{ae_mode: {mode}}}\ndimensions:")
        return SearchSpace.load(_write(tmp_path, text + "  kd_temperature: {type: float, low: 1.0, high: 4.0, "
                                                        "when: {ae_mode: [frozen, finetune]}}\n"))

    space = load("frozen")
    assert space.dimensions[-1].when == (("ae_mode", "in", ("frozen", "finetune")),)
    point = {"latent_dim": 384, "decoder_layers": 1, "method": "sft", "kd_temperature": 2.0}
    assert space.suggest(optuna.trial.FixedTrial(point)) == point
    with caplog.at_level("WARNING", logger="shrinktune.search.space"):
        space = load("joint")
    assert "dimensions.kd_temperature is never sampled: ae_mode in ['frozen', 'finetune'] does not hold" in caplog.text
    assert "kd_temperature" not in space.suggest(optuna.trial.FixedTrial(point))


@pytest.mark.parametrize("when,message", [
    ("{method: kd}", r"dimensions.ae_kind.when.method: a condition must name a dimension defined above or a fixed "
                     r"setting, got 'method'; it is defined below ae_kind; move ae_kind after it"),
    ("{ae_kind: mlp}", r"got 'ae_kind'; a dimension cannot depend on itself"),
    ("{epochs: 2}", r"got 'epochs'; dimensions above: latent_dim, decoder_layers; fixed: none"),
    ("{latent_dim: {below: 384}}", r"dimensions.ae_kind.when.latent_dim.below: unknown operator 'below'; "
                                   r"use lt, le, gt, ge, ne"),
    ("{latent_dim: {lt: big}}", r"dimensions.ae_kind.when.latent_dim.lt: must be a number, got 'big'"),
    ("{latent_dim: 100}", r"dimensions.ae_kind.when.latent_dim: latent_dim can never be 100 "
                          r"\(range \[96, 384\] step 96\)"),
    ("{latent_dim: []}", r"dimensions.ae_kind.when.latent_dim must be a value, a non-empty list"),
    ("[latent_dim]", r"dimensions.ae_kind.when must map an earlier dimension or a fixed setting to a condition"),
])
def test_bad_conditions_name_file_and_key(tmp_path, when, message):
    path = _write(tmp_path, CONDITIONAL.replace("when: {latent_dim: {lt: 384}}", f"when: {when}"))
    with pytest.raises(ConfigError, match=message) as info:
        SearchSpace.load(path)
    assert str(path) in str(info.value)


def test_an_order_comparison_needs_a_numeric_setting(tmp_path):
    path = _write(tmp_path,
                  CONDITIONAL.replace("when: {method: kd, decoder_layers: [2, 3]}", "when: {method: {gt: 1}}"))
    with pytest.raises(ConfigError, match=r"when.method.gt: method takes no numbers \(choices \['sft', 'kd'\]\)"):
        SearchSpace.load(path)


def test_enqueued_points_follow_the_conditions(tmp_path):
    def load(points):
        return SearchSpace.load(_write(tmp_path, CONDITIONAL.replace("trials: 2}", f"trials: 2, enqueue: {points}}}")))

    good = {"latent_dim": 192, "ae_kind": "mlp", "decoder_layers": 2, "method": "sft"}
    assert load(f"[{good}]".replace("'", "")).enqueue == (good,)
    with pytest.raises(ConfigError) as info:
        load("[{latent_dim: 384, ae_kind: mlp, decoder_layers: 2, method: kd}]")
    message = str(info.value)
    assert ("search.enqueue[0].ae_kind is not sampled for this point (latent_dim < 384 does not hold); "
            "drop it") in message
    assert "search.enqueue[0] has no value for kd_alpha_hid; give every dimension one" in message


def test_static_checks_still_see_conditional_dimensions(tmp_path):
    text = CONDITIONAL.replace("high: 384, step: 96", "high: 480, step: 96").replace("{lt: 384}", "{lt: 480}")
    with pytest.raises(ConfigError, match=r"latent_dim must be ≤ the encoder width \(384\), got up to 480"):
        SearchSpace.load(_write(tmp_path, text), encoder_width=384, teacher_depth=6)


RANGES = GOOD + """\
  learning_rate:
    - {type: float, low: 2.0e-4, high: 1.0e-3, log: true, when: {latent_dim: 384}}
    - {type: float, low: 5.0e-4, high: 3.0e-3, log: true, when: {latent_dim: {lt: 384}}}
"""


def test_a_dimension_may_take_its_range_from_an_earlier_one(tmp_path):
    space = SearchSpace.load(_write(tmp_path, RANGES), encoder_width=384, teacher_depth=6)
    point = {"latent_dim": 192, "decoder_layers": 2, "learning_rate": 2.5e-3}
    assert space.suggest(optuna.trial.FixedTrial(space.sampler_point(point))) == point
    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=0, n_startup_trials=4))
    for _ in range(16):
        trial = study.ask()
        chosen = space.suggest(trial)
        study.tell(trial, chosen["learning_rate"])
        low, high = (2.0e-4, 1.0e-3) if chosen["latent_dim"] == 384 else (5.0e-4, 3.0e-3)
        assert low <= chosen["learning_rate"] <= high
    assert {t.params["latent_dim"] for t in study.trials} >= {96, 384}


def test_a_range_maps_positions_to_its_values_and_back():
    rate = Dimension("learning_rate", "float", low=5.0e-4, high=3.0e-3, log=True)
    for value in (5.0e-4, 7.0e-4, 2.4e-3, 3.0e-3):  # values a space file writes come back exactly
        assert rate.at(rate.position(value)) == value
    assert rate.at(0.0) == 5.0e-4 and rate.at(1.0) == 3.0e-3 and rate.at(0.5) == pytest.approx((5.0e-4 * 3.0e-3) ** 0.5)
    epochs = Dimension("epochs", "int", low=3, high=15)
    assert [epochs.at(epochs.position(v)) for v in range(3, 16)] == list(range(3, 16))
    drawn = [epochs.at(i / 1300) for i in range(1300)]  # uniform positions: every value equally often
    assert {drawn.count(v) for v in range(3, 16)} == {100} and all(isinstance(v, int) for v in drawn)
    stepped = Dimension("kd_alpha", "float", low=0.0, high=1.0, step=0.25)
    assert sorted({stepped.at(i / 100) for i in range(101)}) == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert stepped.at(stepped.position(0.75)) == 0.75


def test_tpe_models_each_range_of_a_dimension_whole(tmp_path):
    """Optuna's grouped TPE keys its model on parameter names and keeps the first distribution it saw: asked
    directly, the main space's learning rate and epochs stayed modelled on the 384-wide ranges (2e-4-1e-3, 1-5), and
    TPE drew narrow students' rates at about 1e-3 however well the higher ones did (its 96 x 2 trains best at
    2.4e-3 for 15 epochs). Asked as positions, TPE follows the results to the top of the narrow ranges."""
    text = GOOD.replace("latent_dim: {type: int, low: 96, high: 384, step: 96}",
                        "latent_dim: {type: categorical, choices: [96, 192, 288, 384]}") + """\
  learning_rate:
    - {type: float, low: 2.0e-4, high: 1.0e-3, log: true, when: {latent_dim: 384}}
    - {type: float, low: 5.0e-4, high: 3.0e-3, log: true, when: {latent_dim: {lt: 384}}}
  epochs:
    - {type: int, low: 1, high: 5, when: {latent_dim: 384}}
    - {type: int, low: 3, high: 15, when: {latent_dim: {lt: 384}}}
"""
    space = SearchSpace.load(_write(tmp_path, text), encoder_width=384, teacher_depth=6)
    enqueued = [{"latent_dim": 384, "decoder_layers": 1, "learning_rate": 7.0e-4, "epochs": 5},
                {"latent_dim": 384, "decoder_layers": 3, "learning_rate": 3.0e-4, "epochs": 4},
                {"latent_dim": 96, "decoder_layers": 2, "learning_rate": 2.4e-3, "epochs": 15},
                {"latent_dim": 96, "decoder_layers": 1, "learning_rate": 2.4e-3, "epochs": 15}]
    narrow = []

    def objective(trial):
        chosen = space.suggest(trial)
        width, layers, rate, epochs = (chosen[k] for k in ("latent_dim", "decoder_layers", "learning_rate", "epochs"))
        if trial.number < len(enqueued):
            assert chosen == enqueued[trial.number]  # enqueued points come back exactly
        elif width < 384:
            narrow.append((rate, epochs))
        best, needed = (7.0e-4, 4) if width == 384 else (2.4e-3, 15)
        quality = 1 - 0.3 * abs(math.log10(rate / best)) - 0.03 * max(0, needed - epochs) - 0.01 * (6 - layers)
        return quality, 0.2 + 0.1 * layers * (width / 384) ** 0.5, 0.4 + 0.05 * layers * width / 384

    for seed in (0, 1):
        study = optuna.create_study(directions=["maximize", "minimize", "minimize"],
                                    sampler=make_sampler("tpe", seed, startup_trials=5))
        for point in enqueued:
            study.enqueue_trial(space.sampler_point(point))
        study.optimize(objective, n_trials=30)
    rates, epochs = sorted(rate for rate, _ in narrow), sorted(epochs for _, epochs in narrow)
    # asked directly: median rate 1.0e-3-1.2e-3, 2-5 of ~23 draws a seed at 12 epochs or more
    assert len(narrow) >= 30 and rates[len(rates) // 2] > 1.5e-3 and epochs[len(epochs) // 2] >= 12, narrow


def test_enqueued_points_and_mistakes_follow_the_ranges(tmp_path):
    good = {"latent_dim": 384, "decoder_layers": 2, "learning_rate": 5.0e-4}
    text = RANGES.replace("trials: 2}", f"trials: 2, enqueue: [{good}, {{latent_dim: 384, decoder_layers: 2, "
                                        "learning_rate: 2.0e-3}]}".replace("'", ""))
    with pytest.raises(ConfigError) as info:
        SearchSpace.load(_write(tmp_path, text))
    assert "search.enqueue[1].learning_rate must lie in [0.0002, 0.001], got 0.002" in str(info.value)
    assert "enqueue[0]" not in str(info.value)
    for variants, message in [
        ("[{type: float, low: 1.0e-4, high: 1.0e-3}]", "dimensions.learning_rate: a list gives two or more ranges"),
        ("[{type: float, low: 1.0e-4, high: 1.0e-3, when: {latent_dim: 384}}, {type: int, low: 1, high: 3, "
         "when: {latent_dim: 96}}]", "the ranges of one dimension must all be int or all float"),
        ("[{type: float, low: 1.0e-4, high: 1.0e-3, when: {latent_dim: 384}}, {type: float, low: 1.0e-4, high: 1.0}]",
         r"dimensions.learning_rate\[1\] needs a when: condition"),
        ("[{type: float, low: 1.0e-4, high: 1.0e-3, when: {latent_dim: 384}}, {type: float, low: 1.0e-2, "
         "high: 1.0e-3, when: {latent_dim: 96}}]", r"dimensions.learning_rate\[1\]: low \(0.01\) must be ≤ high"),
        ("[{type: int, low: 1, high: 8, log: true, when: {latent_dim: 384}}, {type: int, low: 2, high: 9, "
         "when: {latent_dim: 96}}]", r"dimensions.learning_rate\[0\]: an int or stepped range .* drop log: true"),
    ]:
        with pytest.raises(ConfigError, match=message):
            SearchSpace.load(_write(tmp_path, GOOD + f"  learning_rate: {variants}\n"))


# --- budget and retries --------------------------------------------------------------------------------------------

def test_time_budget_and_retries(tmp_path):
    space = SearchSpace.load(_write(tmp_path, GOOD))
    assert (space.search.time_budget_s, space.search.retries, space.search.enqueue_teacher) == (None, 0, True)
    space = SearchSpace.load(
        _write(tmp_path, GOOD.replace("trials: 2}", "trials: 2, time_budget_s: 3600, retries: 2}")))
    assert (space.search.time_budget_s, space.search.retries) == (3600, 2)
    bad = GOOD.replace("trials: 2}", "trials: 2, time_budget_s: 0, retries: -1, enqueue_teacher: yes please}")
    with pytest.raises(ConfigError, match="has 3 problems") as info:
        SearchSpace.load(_write(tmp_path, bad))
    message = str(info.value)
    assert "search.time_budget_s must be a number > 0, got 0" in message
    assert "search.retries must be an integer ≥ 0, got -1" in message
    assert "search.enqueue_teacher must be true or false, got 'yes please'" in message


# --- the teacher-shaped student first ------------------------------------------------------------------------------

def test_teacher_shaped_student_is_enqueued_first(tmp_path):
    text = GOOD.replace("trials: 2}", "trials: 2, enqueue: [{latent_dim: 192, decoder_layers: 2}]}")
    space = SearchSpace.load(_write(tmp_path, text), encoder_width=384, teacher_depth=6, encoder_depth=6)
    assert space.enqueue == ({"latent_dim": 384, "decoder_layers": 6}, {"latent_dim": 192, "decoder_layers": 2})
    # only the settings that are dimensions (no encoder_layers here), and only the figures load knows
    assert SearchSpace.load(_write(tmp_path, GOOD), encoder_width=384).enqueue == ({"latent_dim": 384},)
    assert SearchSpace.load(_write(tmp_path, GOOD)).enqueue == ()
    off = GOOD.replace("trials: 2}", "trials: 2, enqueue_teacher: false}")
    assert SearchSpace.load(_write(tmp_path, off), encoder_width=384, teacher_depth=6).enqueue == ()


def test_teacher_shaped_student_is_not_enqueued_twice(tmp_path, caplog):
    text = GOOD.replace("trials: 2}", "trials: 2, enqueue: [{latent_dim: 192, decoder_layers: 2}, "
                                      "{latent_dim: 384, decoder_layers: 6}, {latent_dim: 192, decoder_layers: 2}]}")
    with caplog.at_level("WARNING", logger="shrinktune.search.space"):
        space = SearchSpace.load(_write(tmp_path, text), encoder_width=384, teacher_depth=6)
    assert space.enqueue == ({"latent_dim": 192, "decoder_layers": 2}, {"latent_dim": 384, "decoder_layers": 6})
    assert "search.enqueue[2] repeats an earlier configuration; it is tried once" in caplog.text


def test_teacher_shaped_student_outside_the_space_is_skipped_and_said(tmp_path, caplog):
    text = GOOD.replace("high: 384, step: 96", "high: 288, step: 96")
    with caplog.at_level("DEBUG", logger="shrinktune.search.space"):
        assert SearchSpace.load(_write(tmp_path, text), encoder_width=384, teacher_depth=6).enqueue == ()
    assert ("the teacher-shaped student is not tried first: latent_dim cannot be 384 "
            "(range [96, 288] step 96)") in caplog.text
