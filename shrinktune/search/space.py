"""Search-space files (`search_spaces/*.yaml`): loading and complete validation before Ray starts.

A space names the task and teacher, the objectives with their directions, the budget and sampler, the settings
every trial shares, and the dimensions the sampler chooses. Every problem in a file is collected and reported
together, each naming the file and the key; `SearchSpace.load` raises one `ConfigError` holding them all.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from shrinktune.errors import ConfigError, UserError

SAMPLERS = ("tpe", "nsga2", "random")
DIMENSION_TYPES = ("int", "float", "categorical")
# Settings the sampler may choose, or that a space may fix for all trials, with their rules.
TRIAL_KEYS = {
    "latent_dim": "decoder width after the bottleneck; ≤ the encoder width (= the width: no bottleneck)",
    "decoder_layers": "student decoder depth; 1 ≤ layers ≤ the teacher's",
    "encoder_layers": "student encoder depth (asymmetric pruning); 1 ≤ layers ≤ the teacher's",
    "layer_map": "which teacher layers a shallower student keeps: distilbart | asymmetric",
    "decoder_ffn": "a narrow decoder's feed-forward width: teacher (kept, as the paper) | scaled",
    "learning_rate": "fine-tuning learning rate; > 0",
    "epochs": "fine-tuning epochs; ≥ 1",
    "batch_size": "pairs per fine-tuning step; ≥ 1",
    "ae_kind": "bottleneck kind: mlp | linear | pca",
    "ae_mode": "bottleneck training: frozen (pre-trained) | finetune (pre-trained, then trained) | joint (from scratch)",
    "ae_epochs": "autoencoder pre-training epochs; ≥ 1",
    "method": "how the student learns: sft | kd | pseudo_labels",
    "kd_alpha_ce": "KD weight of the KL to the teacher's logits; ≥ 0",
    "kd_alpha_mlm": "KD weight of the cross-entropy on the labels; ≥ 0",
    "kd_alpha_hid": "KD weight of the decoder hidden-state MSE; ≥ 0",
    "kd_temperature": "KD softmax temperature; > 0",
    "weight_compression": "offline low-rank weights after training: none | svd | ae",
    "weight_ratio": "parameters of the compressed layers ÷ after; > 1",
}
# Rules per trial setting: a tuple of allowed values, or (type, lowest allowed, whether the lowest is excluded).
_CHOICES = {
    "layer_map": ("distilbart", "asymmetric"), "decoder_ffn": ("teacher", "scaled"), "ae_kind": ("mlp", "linear", "pca"),
    "ae_mode": ("frozen", "finetune", "joint"), "method": ("sft", "kd", "pseudo_labels"),
    "weight_compression": ("none", "svd", "ae"),
}
_NUMBERS = {
    "learning_rate": (float, 0, True), "kd_temperature": (float, 0, True), "weight_ratio": (float, 1, True),
    "kd_alpha_ce": (float, 0, False), "kd_alpha_mlm": (float, 0, False), "kd_alpha_hid": (float, 0, False),
}
METRICS = (
    "rouge1", "rouge2", "rougeL", "rougeLsum", "latency_ms", "latency_p90_ms", "latency_fixed_ms", "latency_batch_ms",
    "train_peak_mb", "generate_peak_mb",
    "params_total", "params_decoder", "speedup", "train_memory_ratio",
)
EVALUATION_KEYS = ("samples", "latency_samples", "latency_repeats", "latency_batch_size", "fixed_new_tokens")
TOP_KEYS = ("task", "teacher", "objectives", "search", "evaluation", "generation", "fixed", "dimensions")


@dataclass(frozen=True)
class Dimension:
    """One setting the sampler chooses."""

    name: str
    type: str  # int | float | categorical
    low: float | None = None
    high: float | None = None
    step: float | None = None  # int/float grid step
    log: bool = False  # sample on a log scale
    choices: tuple = ()

    def values_bound(self) -> tuple:
        """(smallest, largest) value this dimension can take (categoricals: of numeric choices)."""
        if self.type == "categorical":
            numeric = [c for c in self.choices if isinstance(c, int | float)]
            return (min(numeric), max(numeric)) if numeric else (None, None)
        return self.low, self.high

    def suggest(self, trial):
        """Asks an Optuna trial for this dimension's value."""
        if self.type == "int":
            return trial.suggest_int(self.name, int(self.low), int(self.high), step=int(self.step or 1), log=self.log)
        if self.type == "float":
            return trial.suggest_float(self.name, self.low, self.high, step=self.step, log=self.log)
        return trial.suggest_categorical(self.name, list(self.choices))


@dataclass(frozen=True)
class SearchSpace:
    """A validated search-space file."""

    path: Path
    name: str
    task: str
    teacher: str
    objectives: dict[str, str]  # metric → "max" | "min"
    sampler: str = "tpe"
    trials: int = 6
    max_concurrent: int = 1
    seed: int = 0
    enqueue: tuple[dict, ...] = ()  # known-good configurations tried first
    evaluation: dict = field(default_factory=dict)  # EVALUATION_KEYS
    generation: dict = field(default_factory=dict)  # GenerationSettings fields
    fixed: dict = field(default_factory=dict)  # trial settings shared by all trials
    dimensions: tuple[Dimension, ...] = ()

    @classmethod
    def load(
        cls, path: str | Path, encoder_width: int | None = None, teacher_depth: int | None = None,
        encoder_depth: int | None = None,
    ) -> "SearchSpace":
        """Reads and validates a space file; `encoder_width`, `teacher_depth` (decoder) and `encoder_depth` enable
        the teacher-dependent rules."""
        path = Path(path)
        try:
            raw = yaml.safe_load(path.read_text())
        except FileNotFoundError:
            raise UserError(f"{path}: no such search-space file.") from None
        except yaml.YAMLError as error:
            where = getattr(error, "problem_mark", None)
            at = f" at line {where.line + 1}, column {where.column + 1}" if where else ""
            raise ConfigError(f"{path}: not valid YAML{at} ({getattr(error, 'problem', error)}); fix the syntax.") from None
        problems: list[str] = []
        space = _parse(path, raw, problems)
        if space is not None:
            _check_against_teacher(space, encoder_width, teacher_depth, encoder_depth, problems)
        if problems:
            raise ConfigError("; ".join(f"{path}: {p}" for p in problems) if len(problems) == 1 else
                              f"{path} has {len(problems)} problems:\n" + "\n".join(f"  - {p}" for p in problems))
        return space

    def trial_defaults(self) -> dict:
        return dict(self.fixed)


def _number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _parse(path: Path, raw, problems: list[str]) -> SearchSpace | None:
    if not isinstance(raw, dict):
        problems.append(f"the file must be a mapping of keys ({', '.join(TOP_KEYS)}), got {type(raw).__name__}")
        return None
    for key in raw:
        if key not in TOP_KEYS:
            problems.append(f"unknown key {key!r}; allowed keys: {', '.join(TOP_KEYS)}")
    task = raw.get("task")
    if not isinstance(task, str):
        problems.append(f"task must name a task (e.g. summarization), got {task!r}")
    else:
        from shrinktune.data.tasks import TASKS

        if task not in TASKS:
            problems.append(f"task {task!r} is unknown; known tasks: {', '.join(sorted(TASKS))}")
    teacher = raw.get("teacher", "embedded")
    if not isinstance(teacher, str) or not teacher:
        problems.append(f"teacher must be 'embedded', a hub id or a local folder, got {teacher!r}")

    objectives = raw.get("objectives")
    if not isinstance(objectives, dict) or len(objectives) < 2:
        problems.append(f"objectives must map at least two metrics to max or min (e.g. rouge1: max, latency_ms: min), got {objectives!r}")
        objectives = {}
    for metric, direction in objectives.items():
        if metric not in METRICS:
            problems.append(f"objectives.{metric} is not a metric; metrics: {', '.join(METRICS)}")
        if direction not in ("max", "min"):
            problems.append(f"objectives.{metric} must be max or min, got {direction!r}")

    search = raw.get("search") or {}
    if not isinstance(search, dict):
        problems.append(f"search must be a mapping (sampler, trials, max_concurrent, seed), got {search!r}")
        search = {}
    for key in search:
        if key not in ("sampler", "trials", "max_concurrent", "seed", "enqueue"):
            problems.append(f"search.{key} is unknown; allowed: sampler, trials, max_concurrent, seed, enqueue")
    sampler = search.get("sampler", "tpe")
    if sampler not in SAMPLERS:
        problems.append(f"search.sampler must be one of {', '.join(SAMPLERS)}, got {sampler!r}")
    for key, default in (("trials", 6), ("max_concurrent", 1)):
        value = search.get(key, default)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            problems.append(f"search.{key} must be an integer ≥ 1, got {value!r}")
    seed = search.get("seed", 0)
    if not isinstance(seed, int) or isinstance(seed, bool):
        problems.append(f"search.seed must be an integer, got {seed!r}")

    evaluation = raw.get("evaluation") or {}
    for key, value in (evaluation.items() if isinstance(evaluation, dict) else [("", evaluation)]):
        if key not in EVALUATION_KEYS:
            problems.append(f"evaluation.{key} is unknown; allowed: {', '.join(EVALUATION_KEYS)}")
        elif not isinstance(value, int) or value < 1:
            problems.append(f"evaluation.{key} must be an integer ≥ 1, got {value!r}")
    generation = raw.get("generation") or {}
    if not isinstance(generation, dict):
        problems.append(f"generation must be a mapping of decoding settings, got {generation!r}")
        generation = {}
    else:
        from shrinktune.models.generation import GenerationSettings

        try:
            GenerationSettings(**generation)
        except TypeError as error:
            problems.append(f"generation: {error}; allowed: {', '.join(GenerationSettings.__dataclass_fields__)}")
        except ConfigError as error:
            problems.append(f"generation: {error}")

    fixed = raw.get("fixed") or {}
    if not isinstance(fixed, dict):
        problems.append(f"fixed must be a mapping of trial settings, got {fixed!r}")
        fixed = {}
    for key, value in fixed.items():
        if key not in TRIAL_KEYS:
            problems.append(f"fixed.{key} is not a trial setting; settings: {', '.join(TRIAL_KEYS)}")
        else:
            _check_value(f"fixed.{key}", key, value, problems)

    dims_raw = raw.get("dimensions")
    dimensions = []
    if not isinstance(dims_raw, dict) or not dims_raw:
        problems.append("dimensions must map at least one trial setting to a range, e.g. latent_dim: {type: int, low: 96, high: 384, step: 96}")
        dims_raw = {}
    for name, spec in dims_raw.items():
        dimension = _parse_dimension(name, spec, problems)
        if dimension is not None:
            dimensions.append(dimension)
            if name in fixed:
                problems.append(f"{name} is both fixed and a dimension; keep one")
    enqueue = search.get("enqueue") or []
    if not isinstance(enqueue, list):
        problems.append(f"search.enqueue must be a list of configurations, got {enqueue!r}")
        enqueue = []
    for i, point in enumerate(enqueue):
        _check_point(f"search.enqueue[{i}]", point, dimensions, problems)
    if problems:
        return None
    return SearchSpace(
        path=path, name=path.stem, task=task, teacher=teacher, objectives=dict(objectives), sampler=sampler,
        trials=search.get("trials", 6), max_concurrent=search.get("max_concurrent", 1), seed=seed,
        enqueue=tuple(dict(p) for p in enqueue),
        evaluation=dict(evaluation), generation=dict(generation), fixed=dict(fixed), dimensions=tuple(dimensions),
    )


def _check_value(where: str, key: str, value, problems: list[str]) -> None:
    if key in _CHOICES:
        if value not in _CHOICES[key]:
            problems.append(f"{where} must be one of {', '.join(_CHOICES[key])}, got {value!r}")
    elif key in _NUMBERS:
        _, low, exclusive = _NUMBERS[key]
        if not _number(value) or value < low or (exclusive and value == low):
            problems.append(f"{where} must be a number {'>' if exclusive else '≥'} {low}, got {value!r}")
    elif not isinstance(value, int) or isinstance(value, bool) or value < 1:
        problems.append(f"{where}: {key} must be an integer ≥ 1, got {value!r}")


def _parse_dimension(name: str, spec, problems: list[str]) -> Dimension | None:
    where = f"dimensions.{name}"
    if name not in TRIAL_KEYS:
        problems.append(f"{where} is not a trial setting; settings: {', '.join(TRIAL_KEYS)}")
        return None
    if not isinstance(spec, dict):
        problems.append(f"{where} must be a mapping with type and range, got {spec!r}")
        return None
    kind = spec.get("type")
    allowed = {"int": {"type", "low", "high", "step", "log"}, "float": {"type", "low", "high", "step", "log"},
               "categorical": {"type", "choices"}}.get(kind)
    if allowed is None:
        problems.append(f"{where}.type must be one of {', '.join(DIMENSION_TYPES)}, got {kind!r}")
        return None
    for key in spec:
        if key not in allowed:
            problems.append(f"{where}.{key} is not allowed for type {kind}; allowed: {', '.join(sorted(allowed))}")
    if kind == "categorical":
        choices = spec.get("choices")
        if not isinstance(choices, list) or not choices:
            problems.append(f"{where}.choices must be a non-empty list, got {choices!r}")
            return None
        for choice in choices:
            _check_value(f"{where}.choices", name, choice, problems)
        return Dimension(name, kind, choices=tuple(choices))
    low, high, step, log = spec.get("low"), spec.get("high"), spec.get("step"), bool(spec.get("log", False))
    if not _number(low) or not _number(high):
        problems.append(f"{where} needs numeric low and high, got low={low!r} high={high!r}")
        return None
    if kind == "int" and not (isinstance(low, int) and isinstance(high, int)):
        problems.append(f"{where}: an int dimension needs integer low and high, got {low!r} and {high!r}")
        return None
    if low > high:
        problems.append(f"{where}: low ({low}) must be ≤ high ({high})")
        return None
    if log and low <= 0:
        problems.append(f"{where}: a log-scale range needs low > 0, got {low}")
    if step is not None and (not _number(step) or step <= 0):
        problems.append(f"{where}.step must be a number > 0, got {step!r}")
    if log and step not in (None, 1):
        problems.append(f"{where}: log scale and step cannot be combined; drop one")
    _check_value(f"{where}.low", name, low, problems)
    _check_value(f"{where}.high", name, high, problems)
    return Dimension(name, kind, low=low, high=high, step=step, log=log)


def _check_point(where: str, point, dimensions: list[Dimension], problems: list[str]) -> None:
    """An enqueued configuration must give every dimension a value it can take, and nothing else."""
    if not isinstance(point, dict):
        problems.append(f"{where} must map dimensions to values, got {point!r}")
        return
    names = {d.name for d in dimensions}
    for key in point:
        if key not in names:
            problems.append(f"{where}.{key} is not a dimension; dimensions: {', '.join(sorted(names))}")
    for d in dimensions:
        if d.name not in point:
            problems.append(f"{where} has no value for {d.name}; give every dimension one")
            continue
        value = point[d.name]
        if d.type == "categorical":
            if value not in d.choices:
                problems.append(f"{where}.{d.name} must be one of {list(d.choices)}, got {value!r}")
        elif not _number(value) or not d.low <= value <= d.high:
            problems.append(f"{where}.{d.name} must lie in [{d.low}, {d.high}], got {value!r}")


def _check_against_teacher(space: SearchSpace, width: int | None, depth: int | None, encoder_depth: int | None,
                           problems: list[str]) -> None:
    bounds = {d.name: d.values_bound() for d in space.dimensions}
    for key, value in space.fixed.items():
        bounds[key] = (value, value)
    if width is not None and "latent_dim" in bounds:
        low, high = bounds["latent_dim"]
        if high is not None and high > width:
            problems.append(f"latent_dim must be ≤ the encoder width ({width}), got up to {high}; lower it or pick a wider teacher")
    if depth is not None and "decoder_layers" in bounds:
        low, high = bounds["decoder_layers"]
        if high is not None and high > depth:
            problems.append(f"decoder_layers must be ≤ the teacher's decoder depth ({depth}), got up to {high}")
    if encoder_depth is not None and "encoder_layers" in bounds:
        low, high = bounds["encoder_layers"]
        if high is not None and high > encoder_depth:
            problems.append(f"encoder_layers must be ≤ the teacher's encoder depth ({encoder_depth}), got up to {high}")


def resolve_space_path(name_or_path: str, search_dirs: list[Path] | None = None) -> Path:
    """A space given by path, or by name: `<name>.yaml` in ./search_spaces, then in the project's search_spaces/."""
    candidate = Path(name_or_path)
    if candidate.suffix in (".yaml", ".yml") or os.sep in name_or_path:
        if not candidate.exists():
            raise UserError(f"{candidate}: no such search-space file.")
        return candidate
    dirs = search_dirs or [Path.cwd() / "search_spaces", Path(__file__).resolve().parents[2] / "search_spaces"]
    for folder in dirs:
        path = folder / f"{name_or_path}.yaml"
        if path.exists():
            return path
    known = sorted({p.stem for folder in dirs if folder.is_dir() for p in folder.glob("*.yaml")})
    raise UserError(
        f"unknown task or search space {name_or_path!r}: no {name_or_path}.yaml in {', '.join(str(d) for d in dirs)}; "
        f"known: {', '.join(known) or 'none'}."
    )
