"""Pareto fronts: the trials no other trial beats on every objective at once."""

from __future__ import annotations


def dominates(a: dict, b: dict, objectives: dict[str, str]) -> bool:
    """True if `a` is at least as good as `b` on every objective and strictly better on one."""
    better = False
    for metric, direction in objectives.items():
        x, y = a[metric], b[metric]
        if direction == "min":
            x, y = -x, -y
        if x < y:
            return False
        better = better or x > y
    return better


def pareto_front(rows: list[dict], objectives: dict[str, str]) -> list[int]:
    """Indices of the non-dominated rows, in input order; rows missing an objective are skipped."""
    usable = [i for i, row in enumerate(rows) if all(row.get(m) is not None for m in objectives)]
    return [i for i in usable if not any(dominates(rows[j], rows[i], objectives) for j in usable if j != i)]
