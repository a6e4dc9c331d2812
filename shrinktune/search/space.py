"""Search-space files (`search_spaces/*.yaml`): loading and complete validation before Ray starts.

A space names the task and teacher, the objectives with their directions, optional constraints on the metrics, the
budget and sampler, the settings every trial shares, and the dimensions the sampler chooses — a dimension may be
conditional (`when:`), sampled only when settings chosen before it allow, and a numeric one may be a list of
conditional ranges (the first whose condition holds is sampled: a learning rate by latent width, say). Every
problem in a file is collected and reported together, each naming the file and the key; `SearchSpace.load` raises
one `ConfigError` holding them all.
"""

from __future__ import annotations

import logging
import math
import numbers
import operator
import os
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeGuard

import yaml

from shrinktune.data.tasks import Task, get_task, task_name, task_problems
from shrinktune.errors import ConfigError, UserError
from shrinktune.measure.kinds import KINDS, get_kind
from shrinktune.models.generation import GenerationSettings
from shrinktune.settings import EvaluationSettings, SearchSettings, TrialSettings, names, rule_of
from shrinktune.settings import problems as _problems

logger = logging.getLogger(__name__)

# What every trial measures, whatever its task; the quality metrics are the task kind's (shrinktune.measure.kinds).
COST_METRICS = (
    "latency_ms", "latency_fixed_ms", "latency_batch_ms", "train_peak_mb", "generate_peak_mb",
    "params_total", "params_decoder", "speedup", "speedup_fixed", "train_memory_ratio",
)


def _task_or_none(spec) -> Task | None:
    return None if task_problems(spec) else get_task(spec)


def task_metrics(spec) -> tuple[str, ...]:
    """What a space on task `spec` may name in objectives and constraints: its kind's quality metrics and the costs
    (every kind's metrics when the task is not valid, so that its own problem is the one reported)."""
    task = _task_or_none(spec)
    quality = get_kind(task.kind).metrics if task else tuple(m for k in KINDS.values() for m in k.metrics)
    return (*quality, *COST_METRICS)


def _not_a_metric(where: str, metric: str, spec, allowed: tuple[str, ...]) -> str:
    task = _task_or_none(spec)
    of = f" of task {task_name(spec)} ({task.kind})" if task else ""
    return f"{where} is not a metric{of}; metrics: {', '.join(allowed)}"
DIMENSION_TYPES = ("int", "float", "categorical")
TRIAL_SETTINGS = names(TrialSettings)  # what `fixed:` and `dimensions:` may name
TOP_KEYS = ("task", "teacher", "objectives", "constraints", "search", "evaluation", "generation", "fixed", "dimensions")
# Comparisons a `when:` condition may write as {op: operand}; a plain value means equal to, a list one of.
OPERATORS = ("lt", "le", "gt", "ge", "ne")
_ORDERS = ("lt", "le", "gt", "ge")  # numbers only
_TESTS = {"eq": operator.eq, "in": lambda value, operand: value in operand, "ne": operator.ne, "lt": operator.lt,
          "le": operator.le, "gt": operator.gt, "ge": operator.ge}
_SYMBOLS = {"eq": "=", "in": "in", "lt": "<", "le": "≤", "gt": ">", "ge": "≥", "ne": "≠"}
# The dimensions of a teacher-shaped student: latent_dim = the encoder width, and the teacher's two depths.
TEACHER_SHAPE = ("latent_dim", "decoder_layers", "encoder_layers")


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
    when: tuple[tuple[str, str, Any], ...] = ()  # (setting, eq|in|lt|le|gt|ge|ne, operand), all must hold

    def active(self, values: dict) -> bool:
        """Whether this dimension is sampled, given the settings fixed or chosen before it.

        A condition on a setting that has no value (an earlier dimension that was itself skipped) is false.
        """
        for key, op, operand in self.when:
            value = values.get(key)
            if key not in values or (op in _ORDERS and not _number(value)) or not _TESTS[op](value, operand):
                return False
        return True

    def describe_when(self) -> str:
        """The condition as people read it, e.g. `latent_dim < 384`."""
        return " and ".join(f"{key} {_SYMBOLS[op]} {list(operand) if op == 'in' else operand}"
                            for key, op, operand in self.when)

    def contains(self, value) -> bool:
        """Whether the sampler could choose `value` for this dimension."""
        if self.type == "categorical":
            return value in self.choices
        low, high = self.low, self.high  # set for int and float dimensions
        if low is None or high is None or not _number(value) or not low <= value <= high:
            return False
        if self.type == "int":
            return float(value).is_integer() and (value - low) % int(self.step or 1) == 0
        return True

    def values_bound(self) -> tuple:
        """(smallest, largest) value this dimension can take (categoricals: of numeric choices)."""
        if self.type == "categorical":
            numeric = [c for c in self.choices if isinstance(c, int | float)]
            return (min(numeric), max(numeric)) if numeric else (None, None)
        return self.low, self.high

    def at(self, position: float):
        """The value at `position` ∈ [0, 1] of this numeric range, on its scale (log or linear): 0 is `low`, 1 is
        `high`; an int or stepped range is cut into equal bins, one per value, so a uniform position draws its
        values uniformly, as Optuna's own int and stepped distributions do (such ranges may not set `log`). Floats
        are kept to 12 significant digits, so a value written in the space file comes back exactly from its
        `position`."""
        low, high = float(self.low), float(self.high)  # type: ignore[arg-type]  # numeric dimensions only
        position = min(max(float(position), 0.0), 1.0)
        grid = self.type == "int" or self.step is not None
        if grid:
            step = float(self.step or 1)
            count = int(round((high - low) / step)) + 1
            value = low + min(int(position * count), count - 1) * step
            return int(round(value)) if self.type == "int" else float(f"{value:.12g}")
        if self.log:
            value = math.exp(math.log(low) + position * (math.log(high) - math.log(low)))
        else:
            value = low + position * (high - low)
        return float(f"{min(max(value, low), high):.12g}")

    def position(self, value) -> float:
        """Where `value` (one this range `contains`) sits in it: the inverse of `at`."""
        low, high = float(self.low), float(self.high)  # type: ignore[arg-type]
        if self.type == "int" or self.step is not None:
            count = int(round((high - low) / float(self.step or 1))) + 1
            return (round((float(value) - low) / float(self.step or 1)) + 0.5) / count  # the middle of its bin
        if high == low:
            return 0.0
        if self.log:
            return (math.log(float(value)) - math.log(low)) / (math.log(high) - math.log(low))
        return (float(value) - low) / (high - low)

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
    task: str | dict  # a registered task's name, or a mapping of a task's fields (`shrinktune.data.tasks.get_task`)
    teacher: str
    objectives: dict[str, str]  # metric → "max" | "min"
    constraints: dict[str, dict[str, float]] = field(default_factory=dict)  # metric → {"min": x, "max": y} (either)
    search: SearchSettings = field(default_factory=SearchSettings)  # sampler and budget
    enqueue: tuple[dict, ...] = ()  # tried first, in order: the teacher-shaped student, then the file's configurations
    evaluation: EvaluationSettings = field(default_factory=EvaluationSettings)
    generation: GenerationSettings = field(default_factory=GenerationSettings)
    fixed: dict = field(default_factory=dict)  # trial settings the file fixes for all trials (as written)
    defaults: TrialSettings = field(default_factory=TrialSettings)  # every trial's settings before the sampler's
    dimensions: tuple[Dimension, ...] = ()
    text: str = ""  # the file as read: logged with the search (the file itself may be gone by then)

    @property
    def quality(self) -> str:
        """The quality metric the search's floor, intervals and picks are about: the task kind's primary metric
        (rouge1, bleu, accuracy)."""
        return get_kind(get_task(self.task).kind).primary

    @classmethod
    def load(
        cls, path: str | Path, encoder_width: int | None = None, teacher_depth: int | None = None,
        encoder_depth: int | None = None, *, shape_of: Callable[[str], tuple[int, int, int]] | None = None,
    ) -> SearchSpace:
        """Reads and validates a space file.

        Args:
            path: the YAML file.
            encoder_width: the teacher's encoder width; enables the latent ≤ width rule.
            teacher_depth: the teacher's decoder depth; enables the decoder-depth rule.
            encoder_depth: the teacher's encoder depth; enables the encoder-depth rule.
            shape_of: reads (encoder width, decoder depth, encoder depth) from the file's teacher, in place of
                the three figures above (`shrinktune.search.plan.teacher_shape`).

        When `search.enqueue_teacher` is on (the default), the figures given here also make the first point to
        evaluate: the teacher-shaped student (latent_dim = width, decoder_layers and encoder_layers = the teacher's
        depths), for those of these settings that are dimensions of the space; the sampler picks the others. It
        is left out when the file's `enqueue` already holds a teacher-shaped point, and skipped with a warning when
        a dimension cannot take the teacher's value.

        Raises:
            UserError: the file does not exist.
            ConfigError: every problem in the file, together.
        """
        path = Path(path)
        try:
            text = path.read_text()
            raw = yaml.safe_load(text)
        except FileNotFoundError:
            raise UserError(f"{path}: no such search-space file.") from None
        except IsADirectoryError:
            raise UserError(f"{path} is a folder, not a search-space file; pass a .yaml file in it, or a space "
                            "name.") from None
        except UnicodeDecodeError as error:
            raise ConfigError(f"{path}: not UTF-8 text (byte {error.object[error.start]:#04x} at offset "
                              f"{error.start}); save the space file as UTF-8.") from None
        except OSError as error:
            raise UserError(f"{path} cannot be read ({error.strerror}); check the path and its permissions.") from None
        except yaml.YAMLError as error:
            where = getattr(error, "problem_mark", None)
            at = f" at line {where.line + 1}, column {where.column + 1}" if where else ""
            raise ConfigError(f"{path}: not valid YAML{at} ({getattr(error, 'problem', error)}); "
                              "fix the syntax.") from None
        problems: list[str] = []
        space = _parse(path, raw, problems)
        if space is not None and shape_of is not None:
            encoder_width, teacher_depth, encoder_depth = shape_of(space.teacher)
        if space is not None:
            _check_against_teacher(space, encoder_width, teacher_depth, encoder_depth, problems)
        if problems or space is None:
            raise ConfigError("; ".join(f"{path}: {p}" for p in problems) if len(problems) == 1 else
                              f"{path} has {len(problems)} problems:\n" + "\n".join(f"  - {p}" for p in problems))
        space = replace(space, text=text)
        if space.search.enqueue_teacher:
            teacher = _teacher_point(space, {"latent_dim": encoder_width, "decoder_layers": teacher_depth,
                                             "encoder_layers": encoder_depth})
            if teacher and not any(all(p.get(k) == v for k, v in teacher.items()) for p in space.enqueue):
                space = replace(space, enqueue=(teacher, *space.enqueue))
        return space

    @property
    def ranged(self) -> frozenset[str]:
        """The dimensions given as several conditional ranges."""
        names = [d.name for d in self.dimensions]
        return frozenset(name for name in names if names.count(name) > 1)

    def suggest(self, trial) -> dict:
        """Define-by-run space for Optuna (and Ray's `OptunaSearch`): asks `trial` for each dimension in file order,
        skipping those whose `when` condition does not hold, so the sampler never sees them.

        A dimension of several ranges is asked as its **position** in the range that holds (a float in [0, 1]
        under the dimension's name, mapped by `Dimension.at`), so that Optuna sees one distribution per name.
        Optuna's grouped multivariate TPE keys its model on parameter names and keeps the first distribution it
        saw: asked directly, the main space's learning rate stayed modelled on the 384-wide range (2e-4-1e-3)
        and every narrow student TPE drew got a rate at or under 1e-3 where the good ones train at 2.4e-3.
        Positions also let it model "near the top of whichever range applies" jointly with the width.

        Returns:
            the chosen value of each sampled dimension (the fixed settings are not repeated).
        """
        values, chosen = dict(self.fixed), {}
        ranged = self.ranged
        for dimension in self.dimensions:
            if dimension.name not in chosen and dimension.active(values):  # of several ranges, the first that holds
                value = (dimension.at(trial.suggest_float(dimension.name, 0.0, 1.0)) if dimension.name in ranged
                         else dimension.suggest(trial))
                values[dimension.name] = chosen[dimension.name] = value
        return chosen

    def sampler_point(self, point: dict) -> dict:
        """`point` (settings as the space file writes them, e.g. an enqueued configuration) as the parameters the
        sampler records for it: a dimension of several ranges as its position in the range that holds (`suggest`).
        Give this to Optuna's `enqueue_trial` or Ray's `points_to_evaluate`."""
        values, out = {**self.fixed, **point}, dict(point)
        ranged, done = self.ranged, set()
        for dimension in self.dimensions:
            if dimension.name in ranged and dimension.name not in done and dimension.active(values):
                done.add(dimension.name)
                if dimension.name in point and dimension.contains(point[dimension.name]):
                    out[dimension.name] = dimension.position(point[dimension.name])
        return out


def _number(value) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _section(raw: dict, key: str, what: str, problems: list[str]) -> dict:
    """A mapping section of the file ({} when left out)."""
    section = raw.get(key) or {}
    if not isinstance(section, dict):
        problems.append(f"{key} must be a mapping of {what}, got {section!r}")
        return {}
    return section


def _parse(path: Path, raw, problems: list[str]) -> SearchSpace | None:
    if not isinstance(raw, dict):
        problems.append(f"the file must be a mapping of keys ({', '.join(TOP_KEYS)}), got {type(raw).__name__}")
        return None
    for key in raw:
        if key not in TOP_KEYS:
            problems.append(f"unknown key {key!r}; allowed keys: {', '.join(TOP_KEYS)}")
    task = raw.get("task")
    problems.extend(task_problems(task))
    teacher = raw.get("teacher", "embedded")
    if not isinstance(teacher, str) or not teacher:
        problems.append(f"teacher must be 'embedded', a hub id or a local folder, got {teacher!r}")

    objectives = raw.get("objectives")
    if not isinstance(objectives, dict) or len(objectives) < 2:
        problems.append("objectives must map at least two metrics to max or min (e.g. rouge1: max, latency_ms: min), "
                        f"got {objectives!r}")
        objectives = {}
    allowed = task_metrics(task)
    for metric, direction in objectives.items():
        if metric not in allowed:
            problems.append(_not_a_metric(f"objectives.{metric}", metric, task, allowed))
        if direction not in ("max", "min"):
            problems.append(f"objectives.{metric} must be max or min, got {direction!r}")

    constraints = _parse_constraints(raw.get("constraints") or {}, problems, task, allowed)

    search = _section(raw, "search", "the sampler and budget", problems)
    problems.extend(_problems(SearchSettings, search, "search", extra=("enqueue",)))
    evaluation = _section(raw, "evaluation", "measurement settings", problems)
    problems.extend(_problems(EvaluationSettings, evaluation, "evaluation"))
    generation = _section(raw, "generation", "decoding settings", problems)
    found = _problems(GenerationSettings, generation, "generation")
    problems.extend(found)
    decoding = None
    if not found:
        try:
            decoding = GenerationSettings(**generation)
        except ConfigError as error:  # a rule between settings (min ≤ max length)
            problems.append(str(error).rstrip("."))

    fixed = _section(raw, "fixed", "trial settings", problems)
    for key, value in fixed.items():
        if key not in TRIAL_SETTINGS:
            problems.append(f"fixed.{key} is not a trial setting; settings: {', '.join(TRIAL_SETTINGS)}")
        else:
            _check_value(f"fixed.{key}", key, value, problems)

    dims_raw = raw.get("dimensions")
    dimensions: list[Dimension] = []
    if not isinstance(dims_raw, dict) or not dims_raw:
        problems.append("dimensions must map at least one trial setting to a range, e.g. latent_dim: {type: int, "
                        "low: 96, high: 384, step: 96}")
        dims_raw = {}
    for name, spec in dims_raw.items():
        variants = _range_variants(name, spec, problems) if isinstance(spec, list) else [(f"dimensions.{name}", spec)]
        for where, item in variants:
            dimension = _parse_dimension(name, item, problems, where)
            if dimension is not None and isinstance(item, dict) and "when" in item:
                earlier = _by_name(dimensions)
                later = list(dims_raw)[list(dims_raw).index(name):]
                when = _parse_when(f"{where}.when", item["when"], earlier, later, fixed, problems)
                dimension = replace(dimension, when=when)
                if when and all(key in fixed for key, _, _ in when) and not dimension.active(fixed):
                    logger.warning("%s: %s is never sampled: %s does not hold for the fixed settings",
                                   path, where, dimension.describe_when())
            if dimension is not None:
                dimensions.append(dimension)
        if name in fixed:
            problems.append(f"{name} is both fixed and a dimension; keep one")
    kind_of_task = _task_or_none(task)
    if kind_of_task is not None and isinstance(task, str | dict) and kind_of_task.kind != "summarization":
        windows = "pseudo_label_windows"
        if fixed.get(windows) or windows in dims_raw:
            problems.append(f"{windows} is for summarization (the teacher's summaries of windows of long documents); "
                            f"task {task_name(task)} is a {kind_of_task.kind} task: leave {windows} out")
    enqueue = search.get("enqueue") or []
    if not isinstance(enqueue, list):
        problems.append(f"search.enqueue must be a list of configurations, got {enqueue!r}")
        enqueue = []
    for i, point in enumerate(enqueue):
        _check_point(f"search.enqueue[{i}]", point, dimensions, fixed, problems)
    if (decoding is not None and evaluation.get("runtime") == "compiled" and decoding.num_beams > 1):
        problems.append(f"evaluation.runtime compiled decodes greedily, but generation.num_beams is "
                        f"{decoding.num_beams}; set num_beams: 1 or runtime: eager")
    if problems or decoding is None or not isinstance(task, str | dict) or not isinstance(teacher, str):
        return None
    unique: list[dict] = []
    for i, point in enumerate(enqueue):
        if point in unique:
            logger.warning("%s: search.enqueue[%d] repeats an earlier configuration; it is tried once", path, i)
        else:
            unique.append(dict(point))
    return SearchSpace(
        path=path, name=path.stem, task=task, teacher=teacher, objectives=dict(objectives), constraints=constraints,
        search=SearchSettings(**{k: v for k, v in search.items() if k != "enqueue"}), enqueue=tuple(unique),
        evaluation=EvaluationSettings(**evaluation), generation=decoding, fixed=dict(fixed),
        defaults=TrialSettings(**fixed), dimensions=tuple(dimensions),
    )


def _parse_constraints(raw, problems: list[str], task, allowed: tuple[str, ...]) -> dict[str, dict[str, float]]:
    """`constraints: {metric: {min: x, max: y}}`: the bounds a trial's metrics must keep to be feasible."""
    if not isinstance(raw, dict):
        problems.append(f"constraints must map metrics to bounds, e.g. {{latency_ms: {{max: 250}}}}, got {raw!r}")
        return {}
    constraints = {}
    for metric, bounds in raw.items():
        where = f"constraints.{metric}"
        if metric not in allowed:
            problems.append(_not_a_metric(where, metric, task, allowed))
            continue
        if not isinstance(bounds, dict) or not bounds:
            problems.append(f"{where} must map min and/or max to a number, e.g. {{max: 250}}, got {bounds!r}")
            continue
        kept = {}
        for bound, limit in bounds.items():
            if bound not in ("min", "max"):
                problems.append(f"{where}: unknown bound {bound!r}; use min and/or max")
            elif not _number(limit):
                problems.append(f"{where}.{bound} must be a number, got {limit!r}")
            else:
                kept[bound] = limit
        if "min" in kept and "max" in kept and kept["min"] > kept["max"]:
            problems.append(f"{where}: min ({kept['min']}) must be ≤ max ({kept['max']}); swap them")
        if kept:
            constraints[metric] = {b: kept[b] for b in ("min", "max") if b in kept}
    return constraints


def constraint_names(constraints: dict[str, dict[str, float]]) -> list[str]:
    """One name per bound, `metric.min` / `metric.max`, in the order of `constraint_violations`."""
    return [f"{metric}.{bound}" for metric, bounds in constraints.items() for bound in ("min", "max")
            if bound in bounds]


def constraint_violations(constraints: dict[str, dict[str, float]], metrics: dict) -> list[float]:
    """How far `metrics` break each bound, in Optuna's convention: ≤ 0 is feasible, > 0 the amount violated.

    Args:
        constraints: metric → {"min": x, "max": y} (either or both), as in `SearchSpace.constraints`.
        metrics: a trial's reported metrics.

    Returns:
        one value per bound, in the order of `constraint_names`; a missing or NaN metric counts as violated by 1.0.
    """
    out = []
    for metric, bounds in constraints.items():
        value = metrics.get(metric)
        value = float(value) if isinstance(value, numbers.Real) and not isinstance(value, bool) else math.nan
        for bound in ("min", "max"):
            if bound in bounds:
                if math.isnan(value):
                    out.append(1.0)
                else:
                    out.append(bounds["min"] - value if bound == "min" else value - bounds["max"])
    return out


def is_feasible(constraints: dict[str, dict[str, float]], metrics: dict) -> bool:
    """Whether `metrics` keep every bound of `constraints` (no constraints: always)."""
    return all(v <= 0 for v in constraint_violations(constraints, metrics))


def _check_value(where: str, key: str, value, problems: list[str]) -> None:
    problem = rule_of(TrialSettings, key).problem(value)
    if problem:
        problems.append(f"{where} {problem}")


def _range_variants(name: str, spec: list, problems: list[str]) -> list[tuple[str, object]]:
    """A dimension given as a list: numeric ranges of one type, each with its own `when`; the first whose condition
    holds is sampled, asked of Optuna as a position in that range (`SearchSpace.suggest`)."""
    where = f"dimensions.{name}"
    if len(spec) < 2 or not all(isinstance(item, dict) for item in spec):
        problems.append(f"{where}: a list gives two or more ranges, each a mapping with type, low, high and when; got "
                        f"{spec!r}")
        return []
    kinds = {item.get("type") for item in spec}
    if len(kinds) > 1 or kinds & {"categorical"}:
        problems.append(f"{where}: the ranges of one dimension must all be int or all float (no categorical), got "
                        f"{', '.join(sorted(map(str, kinds)))}")
        return []
    for i, item in enumerate(spec):
        if "when" not in item:
            problems.append(f"{where}[{i}] needs a when: condition (which of the ranges applies)")
        if item.get("log") and (item.get("type") == "int" or item.get("step") is not None):
            problems.append(f"{where}[{i}]: an int or stepped range of a dimension of several ranges draws its values "
                            "evenly (`Dimension.at`); drop log: true")
    return [(f"{where}[{i}]", item) for i, item in enumerate(spec)]


def _by_name(dimensions) -> dict[str, Dimension]:
    """Each dimension by name; a dimension of several ranges as one spanning them all (for bounds and checks)."""
    named: dict[str, Dimension] = {}
    for d in dimensions:
        seen = named.get(d.name)
        named[d.name] = d if seen is None else replace(
            seen, low=min(seen.low, d.low), high=max(seen.high, d.high), step=None if seen.step != d.step else d.step,
            when=())
    return named


def _parse_dimension(name: str, spec, problems: list[str], where: str | None = None) -> Dimension | None:
    where = where or f"dimensions.{name}"
    if name not in TRIAL_SETTINGS:
        problems.append(f"{where} is not a trial setting; settings: {', '.join(TRIAL_SETTINGS)}")
        return None
    if not isinstance(spec, dict):
        problems.append(f"{where} must be a mapping with type and range, got {spec!r}")
        return None
    kind = spec.get("type")
    ranged = {"type", "low", "high", "step", "log", "when"}
    allowed = {"int": ranged, "float": ranged, "categorical": {"type", "choices", "when"}}.get(str(kind))
    if allowed is None or not isinstance(kind, str):
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


def _parse_when(where: str, spec, earlier: dict[str, Dimension], later: list[str], fixed: dict,
                problems: list[str]) -> tuple:
    """`when: {setting: condition}`; the setting is a dimension defined above, or a fixed setting. A condition is a
    value (equal to), a list (one of) or `{lt|le|gt|ge|ne: operand}`; all of them must hold."""
    if not isinstance(spec, dict) or not spec:
        problems.append(f"{where} must map an earlier dimension or a fixed setting to a condition, e.g. "
                        f"{{latent_dim: {{lt: 384}}}}, got {spec!r}")
        return ()
    when = []
    for key, condition in spec.items():
        at = f"{where}.{key}"
        if key not in earlier and key not in fixed:
            hint = (f"it is defined below {later[0]}; move {later[0]} after it" if key in later[1:] else
                    "a dimension cannot depend on itself" if key == later[0] else
                    f"dimensions above: {', '.join(earlier) or 'none'}; fixed: {', '.join(fixed) or 'none'}")
            problems.append(f"{at}: a condition must name a dimension defined above or a fixed setting, "
                            f"got {key!r}; {hint}")
            continue
        if isinstance(condition, dict):
            terms = list(condition.items())
        elif isinstance(condition, list):
            terms = [("in", tuple(condition))]
        else:
            terms = [("eq", condition)]
        if not terms or terms == [("in", ())]:
            problems.append(f"{at} must be a value, a non-empty list or {{lt|le|gt|ge|ne: number}}, got {condition!r}")
        for op, operand in terms:
            problem: str | None
            if isinstance(condition, dict) and op not in OPERATORS:
                problem = f"unknown operator {op!r}; use {', '.join(OPERATORS)} (or a value: equal to, a list: one of)"
            else:
                problem = _check_term(key, op, operand, earlier.get(key))
            if problem:
                problems.append(f"{at}{'.' + op if isinstance(condition, dict) else ''}: {problem}")
            else:
                when.append((key, op, operand))
    return tuple(when)


def _check_term(key: str, op: str, operand, dimension: Dimension | None) -> str | None:
    """What is wrong with one comparison of a `when` condition, or None."""
    if op in _ORDERS:
        if not _number(operand):
            return f"must be a number, got {operand!r}"
        if dimension is not None and dimension.values_bound() == (None, None):
            return f"{key} takes no numbers ({_describe_range(dimension)}); compare it with a value or a list"
        return None
    values = operand if op == "in" else (operand,)
    for value in values:
        if isinstance(value, dict | list):
            return f"must be a single value, got {value!r}"
        if dimension is not None and not dimension.contains(value):
            return f"{key} can never be {value!r} ({_describe_range(dimension)}); fix the condition"
    return None


def _in_range(value, dimension: Dimension) -> bool:
    low, high = dimension.low, dimension.high
    return low is not None and high is not None and _number(value) and low <= value <= high


def _describe_range(dimension: Dimension) -> str:
    if dimension.type == "categorical":
        return f"choices {list(dimension.choices)}"
    return f"range [{dimension.low}, {dimension.high}]" + (f" step {dimension.step}" if dimension.step else "")


def _check_point(where: str, point, dimensions: list[Dimension], fixed: dict, problems: list[str]) -> None:
    """An enqueued configuration must give every dimension sampled for it a value it can take, and nothing else;
    a conditional dimension whose condition does not hold for the point must be left out."""
    if not isinstance(point, dict):
        problems.append(f"{where} must map dimensions to values, got {point!r}")
        return
    names = {d.name for d in dimensions}
    for key in point:
        if key not in names:
            problems.append(f"{where}.{key} is not a dimension; dimensions: {', '.join(sorted(names))}")
    values = dict(fixed)
    for name in dict.fromkeys(d.name for d in dimensions):
        variants = [d for d in dimensions if d.name == name]
        d = next((v for v in variants if v.active(values)), None)
        if d is None:
            if name in point:
                conditions = " or ".join(v.describe_when() for v in variants)
                problems.append(f"{where}.{name} is not sampled for this point ({conditions} does not hold); drop it")
            continue
        if d.name not in point:
            problems.append(f"{where} has no value for {d.name}; give every dimension one")
            continue
        value = values[d.name] = point[d.name]
        if d.type == "categorical":
            if value not in d.choices:
                problems.append(f"{where}.{d.name} must be one of {list(d.choices)}, got {value!r}")
        elif not _in_range(value, d):
            problems.append(f"{where}.{d.name} must lie in [{d.low}, {d.high}], got {value!r}")


def _teacher_point(space: SearchSpace, shape: dict) -> dict:
    """The teacher-shaped student, for the settings of `TEACHER_SHAPE` that are dimensions and whose teacher figure
    is known; {} when there is none, or when a dimension cannot take the teacher's value."""
    dimensions = _by_name(space.dimensions)
    point = {key: shape[key] for key in TEACHER_SHAPE if key in dimensions and shape.get(key) is not None}
    for key, value in point.items():
        if not dimensions[key].contains(value):
            logger.debug("%s: the teacher-shaped student is not tried first: %s cannot be %s (%s); add it, or set "
                           "search.enqueue_teacher: false", space.path, key, value, _describe_range(dimensions[key]))
            return {}
    return point


def _check_against_teacher(space: SearchSpace, width: int | None, depth: int | None, encoder_depth: int | None,
                           problems: list[str]) -> None:
    bounds = {name: d.values_bound() for name, d in _by_name(space.dimensions).items()}
    for key, value in space.fixed.items():
        bounds[key] = (value, value)
    if width is not None and "latent_dim" in bounds:
        low, high = bounds["latent_dim"]
        if high is not None and high > width:
            problems.append(f"latent_dim must be ≤ the encoder width ({width}), got up to {high}; lower it or pick "
                            "a wider teacher")
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
