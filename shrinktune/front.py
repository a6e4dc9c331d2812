"""Pareto fronts and hypervolume: the maths of comparing trials on several objectives at once.

This room imports nothing of the project, so the search (which computes the front) and the tracking (which logs
the hypervolume and draws the frontier) both use it without importing each other.

A trial is on the Pareto front when no other trial is at least as good on every objective and strictly better on
one. The hypervolume is one number for how much of the objective space a set of trials covers, comparable across
runs.

Each objective is divided by the teacher's value, so every axis is a ratio to the teacher and the reference point
is the teacher itself on "min" axes and nothing on "max" axes:

- `min` objective (latency, parameters, memory): loss = value / teacher, reference 1.0. A trial as slow as the
  teacher or slower adds nothing on that axis; a trial at zero cost would span the full width 1.
- `max` objective (ROUGE): loss = -value / teacher, reference 0. A trial spans its quality ratio, e.g. 0.95 for
  95 % of the teacher's ROUGE-1 (more than 1 when it beats the teacher).

One trial at 95 % of the teacher's ROUGE-1 and half its latency covers 0.95 × 0.5 = 0.475. Because the axes and
the reference point depend only on the teacher, hypervolumes of one search space (same teacher and objectives)
compare across samplers, seeds and budgets; they do not compare across teachers or objective sets.
"""

from __future__ import annotations

import math

import numpy as np


class ObjectiveError(ValueError):
    """Objectives that cannot be compared: a direction other than min/max, or a teacher value that cannot scale."""


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


def normalised_losses(points: list[dict], objectives: dict[str, str], reference: dict) -> tuple[np.ndarray, np.ndarray]:
    """The points as minimisation losses relative to the teacher, and the matching reference point.

    Points missing an objective, or with a non-finite value, are left out.

    Returns:
        (losses of shape (n_points, n_objectives), reference point of shape (n_objectives,)).
    """
    scales = []
    for metric, direction in objectives.items():
        if direction not in ("min", "max"):
            raise ObjectiveError(f"objective {metric!r} must be 'min' or 'max', got {direction!r}; fix the objectives.")
        teacher = reference.get(metric)
        if not isinstance(teacher, int | float) or not math.isfinite(teacher) or teacher <= 0:
            raise ObjectiveError(
                f"hypervolume divides each objective by the teacher's value, which must be a positive number; "
                f"{metric!r} is {teacher!r} in the reference; log the teacher's metrics or drop that objective."
            )
        scales.append((1.0 if direction == "min" else -1.0) / float(teacher))
    usable = [
        [float(p[m]) for m in objectives] for p in points
        if all(isinstance(p.get(m), int | float) and math.isfinite(float(p[m])) for m in objectives)
    ]
    losses = np.array(usable, dtype=float).reshape(len(usable), len(objectives)) * np.array(scales)  # (n, k)
    ref = np.array([1.0 if d == "min" else 0.0 for d in objectives.values()])  # (k,)
    return losses, ref


def hypervolume(points: list[dict], objectives: dict[str, str], reference: dict) -> float:
    """The volume dominated by `points` and bounded by the teacher (see the module docstring).

    Args:
        points: metric dicts, one per trial (extra keys are ignored).
        objectives: metric → "min" or "max".
        reference: the teacher's metrics (unprefixed), each objective present and positive.
    """
    losses, ref = normalised_losses(points, objectives, reference)
    inside = losses[np.all(losses < ref, axis=1)]  # points no better than the teacher on some axis add nothing
    return exact_hypervolume(inside, ref)


def running_hypervolume(rows_in_order: list[dict], objectives: dict[str, str], reference: dict) -> list[float]:
    """The hypervolume after each row, in order: entry i covers rows[: i + 1] (never decreases)."""
    return [hypervolume(rows_in_order[: i + 1], objectives, reference) for i in range(len(rows_in_order))]


def exact_hypervolume(losses: np.ndarray, ref: np.ndarray) -> float:
    """Exact hypervolume by slicing along the last axis (fine for the tens to hundreds of trials of a search)."""
    losses = losses[np.all(losses < ref, axis=1)]
    if len(losses) == 0:
        return 0.0
    if losses.shape[1] == 1:
        return float(ref[0] - losses[:, 0].min())
    ordered = losses[np.argsort(losses[:, -1], kind="stable")]  # (n, k), best last coordinate first
    volume = 0.0
    for i, point in enumerate(ordered):
        upper = ordered[i + 1, -1] if i + 1 < len(ordered) else ref[-1]
        if upper > point[-1]:  # the slab between this point's and the next one's last coordinates
            volume += (upper - point[-1]) * exact_hypervolume(ordered[: i + 1, :-1], ref[:-1])
    return float(volume)
