"""Frontier plots of a search: every finished trial, the Pareto front highlighted, the teacher marked.

One panel per pair of objectives (one panel against trial order when there is a single objective). The front is
computed over all objectives at once, so a highlighted point can look beaten in a two-objective projection.

- `frontier_png`: matplotlib, drawn on an Agg canvas without pyplot (no global backend, no display needed).
- `frontier_html`: plotly, with plotly.js inlined so the file opens offline; hovering a point shows its trial id,
  objectives and configuration. The page fits its container (MLflow's artifact viewer is an iframe narrower than a
  screen): no fixed width, the legend in one line above the panels, and a small script that lays the panels out in
  as many columns as the width allows (at most `MAX_COLUMNS`), again whenever the page is resized.

A row is one trial's result dict: its metrics, plus the optional keys `trial_id` and `config` (Ray Tune's result
dicts carry both) that label the points.
"""

from __future__ import annotations

import html
import json
import logging
import math
from itertools import combinations
from pathlib import Path

from shrinktune.front import pareto_front

logger = logging.getLogger(__name__)

FRONT_COLOUR = "#d62728"
OTHER_COLOUR = "#9e9e9e"
TEACHER_COLOUR = "#000000"

# The HTML page's grid: a column per `PANEL_MIN_WIDTH` px of page, at most `MAX_COLUMNS`, rows of `ROW_HEIGHT` px.
MAX_COLUMNS = 3
PANEL_MIN_WIDTH = 400
ROW_HEIGHT = 380
MARGIN = {"l": 70, "r": 20, "t": 90, "b": 60}
H_GAP = 100  # px between columns: the y tick labels and title of the panel on the right
V_GAP = 110  # px between rows: the x tick labels and title of the panel above


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


def _grid(count: int, columns: int) -> tuple[int, int]:
    """(rows, columns) of a grid of `count` panels with at most `columns` columns."""
    columns = max(1, min(columns, count))
    return math.ceil(count / columns), columns


def _height(rows: int) -> int:
    return rows * ROW_HEIGHT + MARGIN["t"] + MARGIN["b"]


def plotly_frontier(rows: list[dict], objectives: dict[str, str], reference: dict, title: str = ""):
    """The interactive version of `matplotlib_frontier`, a plotly `Figure` whose points show their trial and
    configuration on hover. Its width follows its container (autosize); its panels sit in a grid of at most
    `MAX_COLUMNS` columns, which `frontier_html`'s page narrows to the width it gets."""
    import plotly.graph_objects as go  # lazy, as matplotlib above
    from plotly.subplots import make_subplots

    usable, front = _usable(rows, objectives)
    layout = panels(objectives)
    grid_rows, grid_cols = _grid(len(layout), MAX_COLUMNS)
    specs: list[list[dict | None]] = [  # no axes in the empty cells of the last row
        [{} if r * grid_cols + c < len(layout) else None for c in range(grid_cols)] for r in range(grid_rows)]
    figure = make_subplots(rows=grid_rows, cols=grid_cols, specs=specs, horizontal_spacing=0.08,
                           vertical_spacing=min(0.3, V_GAP / (grid_rows * ROW_HEIGHT)))
    for index, (x, y) in enumerate(layout):
        row, col = divmod(index, grid_cols)
        row, col = row + 1, col + 1
        first = index == 0  # one legend entry per kind of point
        for name, members, colour, size in (
            ("dominated", [i for i in usable if i not in front], OTHER_COLOUR, 8),
            ("Pareto front (all objectives)", sorted(front), FRONT_COLOUR, 11),
        ):
            figure.add_trace(go.Scatter(
                x=[_value(rows, i, x) for i in members], y=[_value(rows, i, y) for i in members], mode="markers",
                name=name, legendgroup=name, showlegend=first, marker={"color": colour, "size": size},
                hovertext=[_hover(rows[i], i, objectives) for i in members], hoverinfo="text",
            ), row=row, col=col)
        if x is not None and x in reference and y in reference:
            figure.add_trace(go.Scatter(
                x=[float(reference[x])], y=[float(reference[y])], mode="markers", name="teacher",
                legendgroup="teacher", showlegend=first, marker={"color": TEACHER_COLOUR, "size": 16, "symbol": "star"},
                hovertext=["<b>teacher</b><br>" + "<br>".join(f"{m} = {reference[m]:.4g}" for m in objectives
                                                              if m in reference)], hoverinfo="text",
            ), row=row, col=col)
        elif x is None and y in reference:
            figure.add_hline(y=float(reference[y]), line_dash="dash", line_color=TEACHER_COLOUR, row=row, col=col)
        figure.update_xaxes(title_text=_label(x, objectives), automargin=True, row=row, col=col)
        figure.update_yaxes(title_text=_label(y, objectives), automargin=True, row=row, col=col)
    figure.update_layout(
        title={"text": title or f"{len(front)} of {len(usable)} trial(s) on the Pareto front", "x": 0.01,
               "xanchor": "left", "y": 0.99, "yanchor": "top", "yref": "container"},
        autosize=True, height=_height(grid_rows), margin=MARGIN, template="plotly_white",
        legend={"orientation": "h", "x": 0, "xanchor": "left", "y": 1, "yanchor": "bottom", "yref": "paper"},
    )
    return figure


def _axis_names(figure) -> list[list[str]]:
    """The layout keys ("xaxis2", "yaxis2") of each panel's axes, in panel order."""
    names: dict[str, str] = {}
    for trace in figure.data:  # every panel has a trace (its dominated points, maybe none of them)
        names.setdefault(trace.xaxis, trace.yaxis)
    return [[f"xaxis{x[1:]}", f"yaxis{y[1:]}"] for x, y in names.items()]


# Lays the panels out in as many columns as the page's width allows, on load and whenever the page is resized
# (plotly's `responsive` config only stretches the existing grid). Plotly.py fills in {plot_id}; the Python side
# fills in @SETTINGS@.
_REFLOW_JS = """
var gd = document.getElementById('{plot_id}');
var s = @SETTINGS@;
var current = null;
function reflow() {
  var width = gd.clientWidth || window.innerWidth;
  var cols = Math.max(1, Math.min(s.maxColumns, s.axes.length, Math.floor(width / s.panelMinWidth)));
  if (cols === current) { return; }
  current = cols;
  var rows = Math.ceil(s.axes.length / cols);
  var plotWidth = Math.max(1, width - s.margin.l - s.margin.r);
  var hgap = cols > 1 ? Math.min(0.2, s.hGap / plotWidth) : 0;
  var vgap = rows > 1 ? Math.min(0.3, s.vGap / (rows * s.rowHeight)) : 0;
  var w = (1 - hgap * (cols - 1)) / cols, h = (1 - vgap * (rows - 1)) / rows;
  var height = rows * s.rowHeight + s.margin.t + s.margin.b;
  // A relayout of the height alone would pin the width at its current value (and autosize off): keep it auto.
  var update = {height: height, width: null, autosize: true};
  s.axes.forEach(function (pair, i) {
    var r = Math.floor(i / cols), c = i % cols, left = c * (w + hgap), top = 1 - r * (h + vgap);
    update[pair[0] + '.domain'] = [left, Math.min(1, left + w)];
    update[pair[1] + '.domain'] = [Math.max(0, top - h), top];
  });
  gd.parentElement.style.height = height + 'px';
  gd.dataset.columns = cols;
  return Plotly.relayout(gd, update);
}
window.addEventListener('resize', reflow);
return reflow();
"""


def frontier_html(path: str | Path, rows: list[dict], objectives: dict[str, str], reference: dict,
                  title: str = "") -> Path:
    """Writes `plotly_frontier` as one self-contained HTML page that fits its container; returns its path."""
    path = Path(path)
    figure = plotly_frontier(rows, objectives, reference, title)
    settings = {"axes": _axis_names(figure), "maxColumns": MAX_COLUMNS, "panelMinWidth": PANEL_MIN_WIDTH,
                "rowHeight": ROW_HEIGHT, "margin": MARGIN, "hGap": H_GAP, "vGap": V_GAP}
    figure.write_html(path, include_plotlyjs=True, full_html=True,  # plotly.js inlined: opens without a network
                      config={"responsive": True}, default_width="100%",
                      post_script=_REFLOW_JS.replace("@SETTINGS@", json.dumps(settings)))
    return path
