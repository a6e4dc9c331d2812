"""The small language the picker speaks: objectives, constraints and named picks.

- objectives: `rouge1:max,latency_ms:min`;
- constraints: `rouge1>=0.2`, `latency_ms<=300`, `rouge1>=0.98*teacher` (relative to the teacher's value);
- named picks: `best` (the task's quality metric), `best-rouge`, `fastest`, `smallest`, `fastest-within-2pct`,
  `smallest-within-2pct` (quality at most 2 % below the teacher's); and the
  tolerance that makes a `-within-Npct` pick exist on given trials (`smallest_tolerance`, `suggest_pick`).

Pure functions and frozen values over metric dicts: nothing here reads MLflow.
"""

from __future__ import annotations

import math
import operator
import re
from dataclasses import dataclass

from shrinktune.errors import ConfigError, UserError
from shrinktune.tracking.schema import TEACHER_PREFIX


def parse_objectives(text: str) -> dict[str, str]:
    """`"rouge1:max,latency_ms:min"` → `{"rouge1": "max", "latency_ms": "min"}`."""
    objectives = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        metric, _, direction = item.partition(":")
        if not metric.strip() or direction.strip() not in ("min", "max"):
            raise ConfigError(f"objective {item!r} must read <metric>:min or <metric>:max; "
                              f"write e.g. --objectives rouge1:max,latency_ms:min.")
        objectives[metric.strip()] = direction.strip()
    if not objectives:
        raise ConfigError(f"--objectives needs at least one <metric>:min|max, got {text!r}; "
                          "e.g. rouge1:max,latency_ms:min.")
    return objectives


OPERATORS = {">=": operator.ge, "<=": operator.le, "==": operator.eq, ">": operator.gt, "<": operator.lt}
_CONSTRAINT = re.compile(r"^\s*([A-Za-z_][\w.\-]*)\s*(>=|<=|==|>|<)\s*(.+?)\s*$")
_RELATIVE = re.compile(r"^(?:([0-9.eE+\-]+)\s*[*×]\s*)?teacher$")


@dataclass(frozen=True)
class Constraint:
    """One rule a trial must meet, such as `rouge1>=0.2` or `rouge1>=0.98*teacher`."""

    metric: str  # the metric compared
    op: str  # one of OPERATORS
    value: float  # the bound; with `relative`, the multiplier of the teacher's value
    relative: bool = False  # the bound is `value` × the teacher's metric

    def __post_init__(self):
        if self.op not in OPERATORS:
            raise ConfigError(f"constraint operator must be one of {' '.join(OPERATORS)}, got {self.op!r}.")
        if not math.isfinite(self.value):
            raise ConfigError(f"constraint bound on {self.metric} must be a finite number, got {self.value}.")

    def bound(self, reference: dict) -> float:
        """The number a trial's metric is compared with (the teacher's value × `value` when relative)."""
        if not self.relative:
            return self.value
        teacher = reference.get(self.metric)
        if teacher is None:
            raise UserError(f"constraint {self} needs the teacher's {self.metric}, which the search did not log "
                            f"(no {TEACHER_PREFIX}{self.metric} on its run); give an absolute bound instead.")
        return self.value * teacher

    def holds(self, row: dict, reference: dict) -> bool:
        """Whether `row` meets the rule; a row without the metric does not."""
        value = row.get(self.metric)
        return value is not None and OPERATORS[self.op](value, self.bound(reference))

    def __str__(self) -> str:
        bound = (f"{self.value:g}*teacher" if self.value != 1 else "teacher") if self.relative else f"{self.value:g}"
        return f"{self.metric}{self.op}{bound}"


def parse_constraint(text: str) -> Constraint:
    """`"latency_ms<=300"` or `"rouge1>=0.98*teacher"` → a `Constraint`."""
    fix = 'write <metric><op><number>, op one of >= <= == > <, e.g. "rouge1>=0.2" or "rouge1>=0.98*teacher"'
    match = _CONSTRAINT.match(text)
    if not match:
        raise ConfigError(f"constraint {text!r} is malformed; {fix}.")
    metric, op, bound = match.groups()
    relative = _RELATIVE.match(bound)
    try:
        value = float(relative.group(1) or 1.0) if relative else float(bound)
    except ValueError:
        raise ConfigError(f"constraint {text!r} has no number after {op}; {fix}.") from None
    return Constraint(metric, op, value, relative=bool(relative))


# The metric each named pick optimises: `<name>` alone, or `<name>-within-<N>pct` (the task's quality metric at most
# N % below the teacher's). `best` is the highest quality (ROUGE-1, BLEU, accuracy: the task kind's first metric),
# `best-rouge` the highest ROUGE-1.
QUALITY = "quality"  # stands for the search's quality metric (`quality_of`) in a pick's metric
PICK_METRICS = {"fastest": ("latency_ms", "min"), "smallest": ("params_total", "min"), "best-rouge": ("rouge1", "max"),
                "best": (QUALITY, "max")}
_PICK = re.compile(r"^(fastest|smallest)(?:-within-(\d+(?:\.\d+)?)pct)?$|^(best-rouge|best)$")


def quality_of(reference: dict) -> str:
    """The quality metric a search is about, read from its teacher's metrics: the first task kind's primary metric
    the teacher has (rouge1, bleu, accuracy); rouge1 when none."""
    from shrinktune.measure.kinds import KINDS  # lazy: the pick's parsing stays light

    return next((kind.primary for kind in KINDS.values() if reference.get(kind.primary) is not None), "rouge1")


def kind_of(reference: dict) -> str:
    """The task kind a search's teacher metrics belong to (`quality_of`'s kind)."""
    from shrinktune.measure.kinds import KINDS

    quality = quality_of(reference)
    return next(kind.name for kind in KINDS.values() if kind.primary == quality)


@dataclass(frozen=True)
class Pick:
    """A named rule that picks one trial, such as `fastest-within-2pct`."""

    name: str  # as written on the command line
    metric: str  # what it optimises
    direction: str  # "min" or "max"
    within_pct: float | None = None  # keep only trials whose quality ≥ (1 - pct/100) × the teacher's

    def __post_init__(self):
        if self.direction not in ("min", "max"):
            raise ConfigError(f"pick {self.name}: direction must be 'min' or 'max', got {self.direction!r}.")
        if self.within_pct is not None and not 0 <= self.within_pct < 100:
            raise ConfigError(f"pick {self.name}: the tolerance must be in [0, 100) pct, got {self.within_pct}.")

    def choose(self, rows: list[dict], reference: dict) -> int:
        """Index of the chosen row: best on `metric` among those within tolerance; ties go to higher quality (the
        search's quality metric, `quality_of(reference)`)."""
        quality = quality_of(reference)
        metric = quality if self.metric == QUALITY else self.metric
        usable = [i for i, row in enumerate(rows) if row.get(metric) is not None]
        if self.within_pct is not None:
            if not reference.get(quality):
                raise UserError(f"pick {self.name} compares {quality} with the teacher's, but the search logged no "
                                f"{TEACHER_PREFIX}{quality}; use --pick best or a --constraint instead.")
            floor = (1 - self.within_pct / 100) * reference[quality]
            near = [i for i in usable if rows[i].get(quality) is not None and rows[i][quality] >= floor]
            if not near:
                raise UserError(self._none_within(floor, [rows[i] for i in usable], reference, quality))
            usable = near
        if not usable:
            raise UserError(f"pick {self.name}: no trial reports {metric}; choose another pick.")
        sign = 1 if self.direction == "min" else -1
        return min(usable, key=lambda i: (sign * rows[i][metric], -(rows[i].get(quality) or 0), i))

    def _none_within(self, floor: float, rows: list[dict], reference: dict, quality: str) -> str:
        """The error when no row is within the tolerance: the best row's shortfall and a tolerance that admits it."""
        best = max((row[quality] for row in rows if row.get(quality) is not None), default=None)
        teacher = reference[quality]
        shortfall = f"; the best has {best:.4f}, {100 * (1 - best / teacher):.1f} % below" if best is not None else ""
        tolerance = smallest_tolerance(rows, reference)
        fix = (f"allow more: --pick {self.name.split('-')[0]}-within-{tolerance}pct" if tolerance is not None
               else f"choose --pick {best_pick(quality)}")
        return (f"pick {self.name}: no trial has {quality} ≥ {floor:.4f} ({100 - (self.within_pct or 0):g} % of the "
                f"teacher's {teacher:.4f}){shortfall}; {fix}.")


def best_pick(quality: str) -> str:
    """The pick of the highest quality, as the command line writes it for this metric."""
    return "best-rouge" if quality == "rouge1" else "best"


def smallest_tolerance(rows: list[dict], reference: dict, at_least: int = 0) -> int | None:
    """The smallest whole N ≥ `at_least` for which a `-within-Npct` pick admits one of `rows` (its quality at most
    N % below the teacher's, tested as `Pick.choose` tests it); None when no N below 100 does."""
    quality = quality_of(reference)
    teacher = reference.get(quality)
    best = max((row[quality] for row in rows if row.get(quality) is not None), default=None)
    if not teacher or best is None:
        return None
    tolerance = max(at_least, math.ceil(100 * (1 - best / teacher) - 1e-9))
    while tolerance < 100 and best < (1 - tolerance / 100) * teacher:  # the float at the edge: one more
        tolerance += 1
    return tolerance if tolerance < 100 else None


def suggest_pick(rows: list[dict], reference: dict, preferred: int = 2) -> str:
    """A pick that exists among `rows` (e.g. a search's front): `fastest-within-<N>pct` with the smallest whole N
    ≥ `preferred` that admits a timed row, else `best-rouge` (`best` for a task scored otherwise)."""
    metric = PICK_METRICS["fastest"][0]
    tolerance = smallest_tolerance([row for row in rows if row.get(metric) is not None], reference, preferred)
    return f"fastest-within-{tolerance}pct" if tolerance is not None else best_pick(quality_of(reference))


def parse_pick(name: str) -> Pick:
    """`"fastest-within-2pct"` → `Pick("fastest-within-2pct", "latency_ms", "min", 2.0)`."""
    match = _PICK.match(name.strip())
    if not match:
        raise ConfigError(f"unknown pick {name!r}; use best, best-rouge, fastest, smallest, or fastest-within-<N>pct / "
                          "smallest-within-<N>pct (e.g. fastest-within-2pct).")
    kind, pct, best = match.groups()
    metric, direction = PICK_METRICS[kind or best]
    return Pick(name.strip(), metric, direction, float(pct) if pct is not None else None)
