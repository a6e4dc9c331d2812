"""The settings schema: one declaration per setting gives its check, its default, its MLflow param
and its README row."""

import re
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest

from shrinktune.errors import ConfigError
from shrinktune.models.generation import GenerationSettings
from shrinktune.search.space import TRIAL_SETTINGS
from shrinktune.settings import (
    EvaluationSettings,
    SearchSettings,
    TrialSettings,
    as_params,
    names,
    problems,
    rule_of,
    settings_table,
)

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("cls,key,value,message", [
    (TrialSettings, "epochs", 0, "must be an integer ≥ 1, got 0"),
    (TrialSettings, "epochs", 1.5, "must be an integer ≥ 1, got 1.5"),
    (TrialSettings, "epochs", True, "must be an integer ≥ 1, got True"),
    (TrialSettings, "learning_rate", 0, "must be a number > 0, got 0"),
    (TrialSettings, "learning_rate", "1e-3", "must be a number > 0, got '1e-3'"),  # YAML 1.1 reads 1e-3 as text
    (TrialSettings, "weight_ratio", 1.0, "must be a number > 1, got 1.0"),
    (TrialSettings, "method", "distill", "must be one of sft, kd, pseudo_labels, got 'distill'"),
    (SearchSettings, "quality_floor", 1, "must be a number in [0, 1), got 1"),
    (SearchSettings, "enqueue_teacher", "yes", "must be true or false, got 'yes'"),
    (EvaluationSettings, "recheck_samples", -1, "must be an integer ≥ 0, got -1"),
    (GenerationSettings, "num_beams", 0, "must be an integer ≥ 1, got 0"),
])
def test_each_rule_names_what_is_allowed_and_what_came(cls, key, value, message):
    assert rule_of(cls, key).problem(value) == message
    assert problems(cls, {key: value}, "section") == [f"section.{key} {message}"]
    with pytest.raises(ConfigError, match=re.escape(f"{key} {message}")):
        cls(**{key: value})


def test_allowed_values_pass_and_ints_for_floats_become_floats():
    settings = TrialSettings(learning_rate=1, kd_temperature=3, latent_dim=96)
    assert settings.learning_rate == 1.0 and isinstance(settings.learning_rate, float)
    assert isinstance(settings.kd_temperature, float) and settings.latent_dim == 96
    assert SearchSettings(time_budget_s=None).time_budget_s is None  # optional: None is the documented default
    assert problems(EvaluationSettings, {"samples": 3, "recheck_samples": 0}, "evaluation") == []


def test_unknown_keys_are_named_with_the_allowed_ones():
    found = problems(SearchSettings, {"trails": 3, "enqueue": []}, "search", extra=("enqueue",))
    assert found == ["search.trails is unknown; allowed: " + ", ".join((*names(SearchSettings), "enqueue"))]


def test_every_setting_has_a_doc_and_a_default_that_keeps_its_own_rule():
    for cls in (TrialSettings, EvaluationSettings, SearchSettings, GenerationSettings):
        cls()  # the defaults pass the checks
        for declared in fields(cls):
            assert declared.metadata["doc"].strip(), f"{cls.__name__}.{declared.name} has no doc"


def test_the_space_accepts_exactly_the_declared_trial_settings():
    assert TRIAL_SETTINGS == tuple(f.name for f in fields(TrialSettings))


def test_params_leave_out_unset_optional_settings():
    params = as_params(TrialSettings(decoder_layers=2))
    assert params["decoder_layers"] == 2 and "latent_dim" not in params and params["method"] == "sft"
    assert as_params(EvaluationSettings(), "evaluation.")["evaluation.samples"] == 45


def test_the_readme_tables_are_the_generated_ones():
    readme = (ROOT / "README.md").read_text()
    printed = subprocess.run([sys.executable, "-m", "shrinktune.settings"], capture_output=True, text=True,
                             check=True, cwd=ROOT).stdout
    for cls in (SearchSettings, EvaluationSettings, GenerationSettings, TrialSettings):
        assert settings_table(cls) in printed
        assert settings_table(cls) in readme, (
            f"README's table of {cls.__name__} is stale: python -m shrinktune.settings")


def test_a_setting_declared_once_is_accepted_by_a_space_and_checked(tmp_path):
    """label_smoothing was added as one declaration: a space may fix it or sample it, and its rule applies there."""
    from shrinktune.search.space import SearchSpace

    base = (ROOT / "search_spaces" / "summarization.yaml").read_text()
    path = tmp_path / "space.yaml"
    path.write_text(base.replace("fixed:\n", "fixed:\n  label_smoothing: 0.1\n"))
    assert SearchSpace.load(path).defaults.label_smoothing == 0.1
    path.write_text(base.replace("fixed:\n", "fixed:\n  label_smoothing: 1.5\n"))
    with pytest.raises(ConfigError, match=r"fixed.label_smoothing must be a number in \[0, 1\), got 1.5"):
        SearchSpace.load(path)
