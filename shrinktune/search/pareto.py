"""What the search decides about its front beyond dominance (`shrinktune.front`): which trials are too poor to
stand on it (`below_floor`) and which members are not told apart from a cheaper one (`indistinct_members`).
"""

from __future__ import annotations

from dataclasses import dataclass

from shrinktune.front import dominates
from shrinktune.measure.intervals import Aggregate, mean_of_first, paired_statistic_difference


def below_floor(row: dict, reference: dict, floor: float, metric: str = "rouge1") -> bool:
    """Whether a trial is degenerate: its `metric` under `floor` × the teacher's (never, when `floor` is 0 or the
    teacher's is unknown). Such a trial is small because it learned nothing, not a trade-off."""
    teacher = reference.get(metric)
    if not floor or not teacher:
        return False
    value = row.get(metric)
    return value is None or value < floor * teacher


def near_front(rows: list[dict], front: list[int], eligible: list[int], objectives: dict[str, str], metric: str,
               limit: int) -> list[int]:
    """Trials off the front that their in-search interval does not rule off it, up to `limit`, highest upper bound
    first: with `metric` at the top of the trial's 95 % interval (`<metric>_high`) and every other trial at its
    estimate, no eligible trial dominates it.

    A front chosen on a few pairs misses a student whose quality was underestimated by chance; re-checking these
    beside the members lets the front chosen on the re-checked numbers include it.

    Args:
        rows: every finished trial's metrics; `front` and `eligible` index them (rows missing an objective are
            left out, as `pareto_front` leaves them out).
        metric: the quality objective (a `max` one) whose interval is used; none is used when it is not an
            objective or a row has no `<metric>_high`.
    """
    if limit < 1 or objectives.get(metric) != "max":
        return []
    eligible = [i for i in eligible if all(rows[i].get(m) is not None for m in objectives)]
    candidates = []
    for i in eligible:
        if i in front or not isinstance(rows[i].get(f"{metric}_high"), int | float):
            continue
        best = {**rows[i], metric: max(rows[i][metric], rows[i][f"{metric}_high"])}
        if not any(dominates(rows[j], best, objectives) for j in eligible if j != i):
            candidates.append(i)
    return sorted(candidates, key=lambda i: -rows[i][f"{metric}_high"])[:limit]


@dataclass(frozen=True)
class Indistinct:
    """A front member whose quality is not told apart from that of a cheaper member."""

    cheaper: str  # the cheaper member's id
    difference: float  # the primary quality metric of the member minus the cheaper one's, on the same pairs
    low: float  # 95 % paired bootstrap interval of that difference
    high: float


def indistinct_members(ids: list[str], rows: dict[str, dict], objectives: dict[str, str],
                       pair_stats: dict[str, list[list[float]]], groups: list[str],
                       aggregate: Aggregate = mean_of_first) -> dict[str, Indistinct]:
    """Members of `ids` that cost more than another member of `ids` on every `min` objective (strictly on one) but
    whose per-pair quality is not distinguishable from it: the paired bootstrap interval of the difference (pairs of
    one document resampled together) holds 0. Each is mapped to its cheapest such member."""
    costs = [m for m, direction in objectives.items() if direction == "min"]
    flagged = {}
    for member in ids:
        cheaper = [other for other in ids if other != member and costs
                   and all(rows[other][m] <= rows[member][m] for m in costs)
                   and any(rows[other][m] < rows[member][m] for m in costs)]
        for other in sorted(cheaper, key=lambda o: tuple(rows[o][m] for m in costs)):
            interval = paired_statistic_difference(pair_stats[member], pair_stats[other], groups, aggregate)
            if not interval.excludes_zero():
                flagged[member] = Indistinct(other, interval.mean, interval.low, interval.high)
                break
    return flagged
