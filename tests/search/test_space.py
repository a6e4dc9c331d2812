import pathlib
import textwrap

import pytest

from shrinktune.errors import ConfigError, UserError
from shrinktune.search.space import SearchSpace, resolve_space_path

ROOT = pathlib.Path(__file__).resolve().parents[2]
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
    assert first.startswith("# Run: python -m platform.search")
    space = SearchSpace.load(path, encoder_width=384, teacher_depth=6)
    assert len(space.objectives) >= 2 and space.dimensions


def test_good_space(tmp_path):
    space = SearchSpace.load(_write(tmp_path, GOOD), encoder_width=384, teacher_depth=6)
    assert space.name == "space" and space.trials == 2 and [d.name for d in space.dimensions] == ["latent_dim", "decoder_layers"]


@pytest.mark.parametrize("change,message", [
    (("task: summarization", "task: nosuch"), r"task 'nosuch' is unknown; known tasks: .*summarization"),
    (("high: 384, step: 96", "high: 512, step: 96"), r"latent_dim must be ≤ the encoder width \(384\), got up to 512"),
    (("low: 96, high: 384", "low: 0, high: 384"), r"latent_dim must be an integer ≥ 1, got 0"),
    (("low: 1, high: 6", "low: 0, high: 6"), r"decoder_layers must be an integer ≥ 1, got 0"),
    (("low: 1, high: 6", "low: 1, high: 9"), r"decoder_layers must be ≤ the teacher's decoder depth \(6\)"),
    (("sampler: tpe", "sampler: grid"), r"search.sampler must be one of tpe, nsga2, random, got 'grid'"),
    (("rouge1: max", "rouge1: up"), r"objectives.rouge1 must be max or min, got 'up'"),
])
def test_bad_values_name_file_key_and_fix(tmp_path, change, message):
    path = _write(tmp_path, GOOD.replace(*change))
    with pytest.raises(ConfigError, match=message) as info:
        SearchSpace.load(path, encoder_width=384, teacher_depth=6)
    assert str(path) in str(info.value)


def test_all_problems_are_reported_together(tmp_path):
    path = _write(tmp_path, GOOD.replace("task: summarization", "task: nosuch").replace("sampler: tpe", "sampler: x") + "colour: blue\n")
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
    ok = GOOD.replace("search: {sampler: tpe, trials: 2}", "search: {sampler: tpe, trials: 2, enqueue: [{latent_dim: 192, decoder_layers: 2}]}")
    assert SearchSpace.load(_write(tmp_path, ok)).enqueue == ({"latent_dim": 192, "decoder_layers": 2},)
    bad = GOOD.replace("search: {sampler: tpe, trials: 2}", "search: {sampler: tpe, trials: 2, enqueue: [{latent_dim: 999}]}")
    with pytest.raises(ConfigError, match=r"enqueue\[0\].latent_dim must lie in \[96, 384\], got 999") as info:
        SearchSpace.load(_write(tmp_path, bad))
    assert "enqueue[0] has no value for decoder_layers" in str(info.value)


def test_method_settings_are_checked_against_their_rules(tmp_path):
    text = GOOD + "  method: {type: categorical, choices: [sft, distill]}\n  weight_ratio: {type: float, low: 0.5, high: 4.0}\n"
    with pytest.raises(ConfigError) as info:
        SearchSpace.load(_write(tmp_path, text), encoder_width=384, teacher_depth=6)
    assert "dimensions.method.choices must be one of sft, kd, pseudo_labels, got 'distill'" in str(info.value)
    assert "dimensions.weight_ratio.low must be a number > 1, got 0.5" in str(info.value)


def test_encoder_depth_is_checked_against_the_teacher(tmp_path):
    text = GOOD + "  encoder_layers: {type: int, low: 2, high: 8}\n"
    with pytest.raises(ConfigError, match=r"encoder_layers must be ≤ the teacher's encoder depth \(6\), got up to 8"):
        SearchSpace.load(_write(tmp_path, text), encoder_width=384, teacher_depth=6, encoder_depth=6)
