"""Frontier plots of a search: every finished trial, the Pareto front highlighted, the teacher marked.

One panel per pair of objectives (one panel against trial order when there is a single objective). The front is
computed over all objectives at once, so a highlighted point can look beaten in a two-objective projection.

- `frontier_png`: matplotlib, drawn on an Agg canvas without pyplot (no global backend, no display needed).
- `frontier_html`: plotly, with plotly.js inlined so the file opens offline; hovering a point shows its trial id,
  objectives and configuration.

A row is one trial's result dict: its metrics, plus the optional keys `trial_id` and `config` (Ray Tune's result
dicts carry both) that label the points.
"""

from __future__ import annotations

import html
import logging
from itertools import combinations
from pathlib import Path

from shrinktune.front import pareto_front

logger = logging.getLogger(__name__)

FRONT_COLOUR = "#d62728"
OTHER_COLOUR = "#9e9e9e"
TEACHER_COLOUR = "#000000"


def panels(objectives: dict[str, str]) -> list[tuple[str | None, str]]:
    """The (x, y) metric of each panel; x is None for the trial-order axis of a single objective."""
    names = list(objectives)
    return list(combinations(names, 2)) if len(names) > 1 else [(None, names[0])]


def _label(metric: str | None, objectives: dict[str, str]) -> str:
    if metric is None:
        return "trial (in order)"
    return f"{metric} ({'higher' if objectives[metric] == 'max' else 'lower'} is better)"


def _trial_id(row: dict, index: int) -> str:
    return str(row.get("trial_id") or row.get("trial") or f"#{index}")


def _usable(rows: list[dict], objectives: dict[str, str]) -> tuple[list[int], set[int]]:
    """Indices of the rows that report every objective, and those of them on the front."""
    usable = [i for i, row in enumerate(rows) if all(row.get(m) is not None for m in objectives)]
    return usable, set(pareto_front(rows, objectives))


def _value(rows: list[dict], index: int, metric: str | None) -> float:
    return float(index) if metric is None else float(rows[index][metric])


def matplotlib_frontier(rows: list[dict], objectives: dict[str, str], reference: dict, title: str = ""):
    """The pairwise scatter of the objectives as a matplotlib `Figure` on an Agg canvas."""
    # Lazy: matplotlib and plotly take seconds to import, and only the final plots need them.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    usable, front = _usable(rows, objectives)
    layout = panels(objectives)
    figure = Figure(figsize=(5 * len(layout), 4.5), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, len(layout), squeeze=False)[0]
    for ax, (x, y) in zip(axes, layout):
        others = [i for i in usable if i not in front]
        ax.scatter([_value(rows, i, x) for i in others], [_value(rows, i, y) for i in others], s=22,
                   color=OTHER_COLOUR, alpha=0.7, label="dominated")
        chosen = sorted(front)
        ax.scatter([_value(rows, i, x) for i in chosen], [_value(rows, i, y) for i in chosen], s=40,
                   color=FRONT_COLOUR, edgecolor="black", linewidth=0.5, label="Pareto front (all objectives)")
        for i in chosen:
            ax.annotate(_trial_id(rows[i], i), (_value(rows, i, x), _value(rows, i, y)), fontsize=7,
                        xytext=(3, 3), textcoords="offset points")
        if y in reference and (x is None or x in reference):
            if x is None:
                ax.axhline(float(reference[y]), color=TEACHER_COLOUR, linestyle="--", linewidth=1, label="teacher")
            else:
                ax.scatter([float(reference[x])], [float(reference[y])], marker="*", s=160, color=TEACHER_COLOUR,
                           label="teacher")
        ax.set_xlabel(_label(x, objectives))
        ax.set_ylabel(_label(y, objectives))
        ax.grid(True, alpha=0.3)
    axes[0].legend(fontsize=8, loc="best")
    figure.suptitle(title or f"{len(front)} of {len(usable)} trial(s) on the Pareto front")
    return figure


def frontier_png(path: str | Path, rows: list[dict], objectives: dict[str, str], reference: dict,
                 title: str = "") -> Path:
    """Writes `matplotlib_frontier` as a PNG; returns its path."""
    path = Path(path)
    matplotlib_frontier(rows, objectives, reference, title).savefig(path, dpi=110)
    return path


def _hover(row: dict, index: int, objectives: dict[str, str]) -> str:
    lines = [f"<b>trial {html.escape(_trial_id(row, index))}</b>"]
    lines += [f"{m} = {row[m]:.4g}" for m in objectives]
    config = row.get("config") or {}
    if config:
        lines.append("<i>config</i>")
        lines += [f"{html.escape(str(k))} = {html.escape(str(v))}" for k, v in sorted(config.items())]
    return "<br>".join(lines)


def plotly_frontier(rows: list[dict], objectives: dict[str, str], reference: dict, title: str = ""):
    """The interactive version of `matplotlib_frontier`, a plotly `Figure` whose points show their trial and
    configuration on hover."""
    import plotly.graph_objects as go  # lazy, as matplotlib above
    from plotly.subplots import make_subplots

    usable, front = _usable(rows, objectives)
    layout = panels(objectives)
    figure = make_subplots(rows=1, cols=len(layout), horizontal_spacing=0.08)
    for col, (x, y) in enumerate(layout, start=1):
        first = col == 1  # one legend entry per kind of point
        for name, members, colour, size in (
            ("dominated", [i for i in usable if i not in front], OTHER_COLOUR, 8),
            ("Pareto front (all objectives)", sorted(front), FRONT_COLOUR, 11),
        ):
            figure.add_trace(go.Scatter(
                x=[_value(rows, i, x) for i in members], y=[_value(rows, i, y) for i in members], mode="markers",
                name=name, legendgroup=name, showlegend=first, marker={"color": colour, "size": size},
                hovertext=[_hover(rows[i], i, objectives) for i in members], hoverinfo="text",
            ), row=1, col=col)
        if x is not None and x in reference and y in reference:
            figure.add_trace(go.Scatter(
                x=[float(reference[x])], y=[float(reference[y])], mode="markers", name="teacher",
                legendgroup="teacher", showlegend=first, marker={"color": TEACHER_COLOUR, "size": 16, "symbol": "star"},
                hovertext=["<b>teacher</b><br>" + "<br>".join(f"{m} = {reference[m]:.4g}" for m in objectives
                                                              if m in reference)], hoverinfo="text",
            ), row=1, col=col)
        elif x is None and y in reference:
            figure.add_hline(y=float(reference[y]), line_dash="dash", line_color=TEACHER_COLOUR, row=1, col=col)
        figure.update_xaxes(title_text=_label(x, objectives), row=1, col=col)
        figure.update_yaxes(title_text=_label(y, objectives), row=1, col=col)
    figure.update_layout(title=title or f"{len(front)} of {len(usable)} trial(s) on the Pareto front",
                         width=520 * len(layout), height=480, template="plotly_white")
    return figure


def frontier_html(path: str | Path, rows: list[dict], objectives: dict[str, str], reference: dict,
                  title: str = "") -> Path:
    """Writes `plotly_frontier` as one self-contained HTML file; returns its path."""
    path = Path(path)
    figure = plotly_frontier(rows, objectives, reference, title)
    figure.write_html(path, include_plotlyjs=True, full_html=True)  # plotly.js inlined: opens without a network
    return path
