"""The small language the picker speaks: objectives, constraints and named picks.

- objectives: `rouge1:max,latency_ms:min`;
- constraints: `rouge1>=0.2`, `latency_ms<=300`, `rouge1>=0.98*teacher` (relative to the teacher's value);
- named picks: `best-rouge`, `fastest`, `smallest`, `fastest-within-2pct`, `smallest-within-2pct`; and the
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


# The metric each named pick optimises: `<name>` alone, or `<name>-within-<N>pct` (ROUGE-1 at most N % below the
# teacher's). `best-rouge` is the highest ROUGE-1.
PICK_METRICS = {"fastest": ("latency_ms", "min"), "smallest": ("params_total", "min"), "best-rouge": ("rouge1", "max")}
_PICK = re.compile(r"^(fastest|smallest)(?:-within-(\d+(?:\.\d+)?)pct)?$|^(best-rouge)$")
QUALITY = "rouge1"  # the metric a pick's "within N pct" is measured on


@dataclass(frozen=True)
class Pick:
    """A named rule that picks one trial, such as `fastest-within-2pct`."""

    name: str  # as written on the command line
    metric: str  # what it optimises
    direction: str  # "min" or "max"
    within_pct: float | None = None  # keep only trials whose ROUGE-1 ≥ (1 - pct/100) × the teacher's

    def __post_init__(self):
        if self.direction not in ("min", "max"):
            raise ConfigError(f"pick {self.name}: direction must be 'min' or 'max', got {self.direction!r}.")
        if self.within_pct is not None and not 0 <= self.within_pct < 100:
            raise ConfigError(f"pick {self.name}: the tolerance must be in [0, 100) pct, got {self.within_pct}.")

    def choose(self, rows: list[dict], reference: dict) -> int:
        """Index of the chosen row: best on `metric` among those within tolerance; ties go to higher ROUGE-1."""
        usable = [i for i, row in enumerate(rows) if row.get(self.metric) is not None]
        if self.within_pct is not None:
            if not reference.get(QUALITY):
                raise UserError(f"pick {self.name} compares ROUGE-1 with the teacher's, but the search logged no "
                                f"{TEACHER_PREFIX}{QUALITY}; use --pick best-rouge or a --constraint instead.")
            floor = (1 - self.within_pct / 100) * reference[QUALITY]
            near = [i for i in usable if rows[i].get(QUALITY) is not None and rows[i][QUALITY] >= floor]
            if not near:
                raise UserError(self._none_within(floor, [rows[i] for i in usable], reference))
            usable = near
        if not usable:
            raise UserError(f"pick {self.name}: no trial reports {self.metric}; choose another pick.")
        sign = 1 if self.direction == "min" else -1
        return min(usable, key=lambda i: (sign * rows[i][self.metric], -(rows[i].get(QUALITY) or 0), i))

    def _none_within(self, floor: float, rows: list[dict], reference: dict) -> str:
        """The error when no row is within the tolerance: the best row's shortfall and a tolerance that admits it."""
        best = max((row[QUALITY] for row in rows if row.get(QUALITY) is not None), default=None)
        teacher = reference[QUALITY]
        shortfall = f"; the best has {best:.4f}, {100 * (1 - best / teacher):.1f} % below" if best is not None else ""
        tolerance = smallest_tolerance(rows, reference)
        fix = (f"allow more: --pick {self.name.split('-')[0]}-within-{tolerance}pct" if tolerance is not None
               else "choose --pick best-rouge")
        return (f"pick {self.name}: no trial has {QUALITY} ≥ {floor:.4f} ({100 - (self.within_pct or 0):g} % of the "
                f"teacher's {teacher:.4f}){shortfall}; {fix}.")


def smallest_tolerance(rows: list[dict], reference: dict, at_least: int = 0) -> int | None:
    """The smallest whole N ≥ `at_least` for which a `-within-Npct` pick admits one of `rows` (its ROUGE-1 at most
    N % below the teacher's, tested as `Pick.choose` tests it); None when no N below 100 does."""
    teacher = reference.get(QUALITY)
    best = max((row[QUALITY] for row in rows if row.get(QUALITY) is not None), default=None)
    if not teacher or best is None:
        return None
    tolerance = max(at_least, math.ceil(100 * (1 - best / teacher) - 1e-9))
    while tolerance < 100 and best < (1 - tolerance / 100) * teacher:  # the float at the edge: one more
        tolerance += 1
    return tolerance if tolerance < 100 else None


def suggest_pick(rows: list[dict], reference: dict, preferred: int = 2) -> str:
    """A pick that exists among `rows` (e.g. a search's front): `fastest-within-<N>pct` with the smallest whole N
    ≥ `preferred` that admits a timed row, else `best-rouge`."""
    metric = PICK_METRICS["fastest"][0]
    tolerance = smallest_tolerance([row for row in rows if row.get(metric) is not None], reference, preferred)
    return f"fastest-within-{tolerance}pct" if tolerance is not None else "best-rouge"


def parse_pick(name: str) -> Pick:
    """`"fastest-within-2pct"` → `Pick("fastest-within-2pct", "latency_ms", "min", 2.0)`."""
    match = _PICK.match(name.strip())
    if not match:
        raise ConfigError(f"unknown pick {name!r}; use best-rouge, fastest, smallest, or fastest-within-<N>pct / "
                          "smallest-within-<N>pct (e.g. fastest-within-2pct).")
    kind, pct, best = match.groups()
    metric, direction = PICK_METRICS[kind or best]
    return Pick(name.strip(), metric, direction, float(pct) if pct is not None else None)
