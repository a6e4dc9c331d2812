"""Frontier plots and `SearchTracker.log_frontier`: hypervolume per finished trial, plots as parent artifacts."""

import json
import logging
import re

import pytest

from shrinktune.front import running_hypervolume
from shrinktune.tracking.mlflow_tracking import SearchTracker, default_tracking_uri
from shrinktune.tracking.plots import (
    MAX_COLUMNS,
    frontier_html,
    frontier_png,
    matplotlib_frontier,
    panels,
    plotly_frontier,
)

TEACHER = {"rouge1": 0.40, "latency_ms": 100.0, "params_total": 1000.0}
OBJ = {"rouge1": "max", "latency_ms": "min", "params_total": "min"}
ROWS = [  # Ray Tune result dicts: metrics, trial_id, config
    {"trial_id": "t1", "config": {"latent_dim": 96, "decoder_layers": 2},
     "rouge1": 0.36, "latency_ms": 50.0, "params_total": 500.0},
    {"trial_id": "t2", "config": {"latent_dim": 32, "decoder_layers": 1},
     "rouge1": 0.24, "latency_ms": 20.0, "params_total": 800.0},
    {"trial_id": "t3", "config": {"latent_dim": 64, "decoder_layers": 3},
     "rouge1": 0.20, "latency_ms": 60.0, "params_total": 990.0},
    {"trial_id": "t4", "config": {"latent_dim": 16, "decoder_layers": 1}, "rouge1": None, "latency_ms": 10.0},
]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """One sqlite store for this file's tracker tests (creating its tables takes seconds)."""
    return default_tracking_uri(tmp_path_factory.mktemp("mlflow"))


def test_one_panel_per_pair_of_objectives():
    assert panels(OBJ) == [("rouge1", "latency_ms"), ("rouge1", "params_total"), ("latency_ms", "params_total")]
    assert panels({"rouge1": "max"}) == [(None, "rouge1")]
    figure = matplotlib_frontier(ROWS, OBJ, TEACHER)
    assert len(figure.axes) == 3
    assert figure.axes[0].get_xlabel() == "rouge1 (higher is better)"
    assert figure.axes[0].get_ylabel() == "latency_ms (lower is better)"


def test_matplotlib_highlights_the_front_and_marks_the_teacher():
    figure = matplotlib_frontier(ROWS, OBJ, TEACHER)
    dominated, front, teacher = figure.axes[0].collections  # scatter order: dominated, front, teacher
    assert front.get_offsets().tolist() == [[0.36, 50.0], [0.24, 20.0]]  # t1, t2; t4 lacks rouge1
    assert dominated.get_offsets().tolist() == [[0.20, 60.0]]
    assert teacher.get_offsets().tolist() == [[0.40, 100.0]]
    assert sorted(t.get_text() for t in figure.axes[0].texts) == ["t1", "t2"]


def test_plotly_hover_shows_trial_and_config():
    figure = plotly_frontier(ROWS, OBJ, TEACHER)
    first = [trace for trace in figure.data if trace.xaxis == "x"]
    by_name = {trace.name: trace for trace in first}
    front = by_name["Pareto front (all objectives)"]
    assert list(front.x) == [0.36, 0.24] and list(front.y) == [50.0, 20.0]
    assert "<b>trial t1</b>" in front.hovertext[0] and "latent_dim = 96" in front.hovertext[0]
    assert "decoder_layers = 1" in front.hovertext[1]
    assert list(by_name["teacher"].x) == [0.40] and list(by_name["teacher"].y) == [100.0]
    assert len({trace.xaxis for trace in figure.data}) == 3  # one subplot per pair


def test_files_are_a_png_and_an_offline_html(tmp_path):
    png = frontier_png(tmp_path / "frontier.png", ROWS, OBJ, TEACHER)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = frontier_html(tmp_path / "frontier.html", ROWS, OBJ, TEACHER).read_text()
    assert not re.search(r"<script[^>]*\bsrc=", page)  # plotly.js is inlined, not fetched: opens offline
    assert len(page) > 1_000_000 and "latent_dim = 96" in page


def test_plotly_figure_follows_its_container():
    """No fixed width (MLflow's artifact iframe clipped the 1560 px page): autosize, the legend in a line above the
    panels; `test_frontier_browser` checks the drawn page in Chromium."""
    layout = plotly_frontier(ROWS, OBJ, TEACHER).layout
    assert layout.width is None and layout.autosize is True
    assert 400 <= layout.height <= 700  # one row of panels
    assert layout.legend.orientation == "h" and layout.legend.y >= 1 and layout.legend.yanchor == "bottom"


def test_many_objectives_stack_their_panels_in_rows():
    objectives = {"rouge1": "max", "latency_ms": "min", "params_total": "min", "rouge2": "max", "memory_mb": "min"}
    rows = [dict(row, rouge2=0.1 * i, memory_mb=10.0 * i) for i, row in enumerate(ROWS[:3])]
    figure = plotly_frontier(rows, objectives, {})
    count = len(panels(objectives))  # 10 pairs: 4 rows of 3, the last with one panel and no empty axes
    assert count == 10 and MAX_COLUMNS == 3
    assert len({trace.xaxis for trace in figure.data}) == count
    assert sum(key.startswith("xaxis") for key in figure.layout.to_plotly_json()) == count
    tops = sorted({round(figure.layout[f"yaxis{i if i > 1 else ''}"].domain[1], 3) for i in range(1, count + 1)})
    assert len(tops) == 4
    assert figure.layout.height > plotly_frontier(ROWS, OBJ, TEACHER).layout.height


def test_html_page_is_responsive(tmp_path):
    page = frontier_html(tmp_path / "frontier.html", ROWS, OBJ, TEACHER).read_text()
    assert '"responsive": true' in page
    assert re.search(r'<div style="height:\d+px; width:100%;">', page)  # the plot's box: the page's width
    assert '"axes": [["xaxis", "yaxis"], ["xaxis2", "yaxis2"], ["xaxis3", "yaxis3"]]' in page  # the reflow script
    assert "window.addEventListener('resize', reflow)" in page


def test_single_objective_plots_against_trial_order(tmp_path):
    figure = matplotlib_frontier(ROWS, {"latency_ms": "min"}, TEACHER)
    assert figure.axes[0].get_xlabel() == "trial (in order)"
    assert figure.axes[0].collections[1].get_offsets().tolist() == [[3.0, 10.0]]  # t4, the fastest
    assert frontier_html(tmp_path / "one.html", ROWS, {"latency_ms": "min"}, TEACHER).exists()


def test_log_frontier_logs_hypervolume_per_trial_and_plots_at_the_end(store):
    from mlflow.tracking import MlflowClient

    tracker = SearchTracker(store, "exp")
    tracker.check()
    parent = tracker.start_search("search-1", {"objectives": json.dumps(OBJ)})
    tracker.log_reference(TEACHER)
    for step in range(1, len(ROWS) + 1):
        tracker.log_frontier(ROWS[:step], OBJ, TEACHER, step=step, plots=step == len(ROWS))
    client = MlflowClient(tracker.tracking_uri)
    history = sorted(client.get_metric_history(parent, "hypervolume"), key=lambda m: m.step)
    assert [m.step for m in history] == [1, 2, 3, 4]
    assert [m.value for m in history] == pytest.approx(running_hypervolume(ROWS, OBJ, TEACHER))
    assert [m.value for m in history] == pytest.approx([0.225, 0.261, 0.261, 0.261])
    assert sorted(a.path for a in client.list_artifacts(parent)) == ["frontier.html", "frontier.png"]


def test_log_frontier_without_teacher_values_warns_and_goes_on(store, caplog, monkeypatch):
    from mlflow.tracking import MlflowClient

    tracker = SearchTracker(store, "exp-no-teacher")
    parent = tracker.start_search("search-1", {})
    with caplog.at_level(logging.WARNING, logger="shrinktune"):
        assert tracker.log_frontier(ROWS, OBJ, {"rouge1": 0.4}, step=4) is None
    assert "hypervolume not logged" in caplog.text and "'latency_ms' is None" in caplog.text
    assert "hypervolume" not in MlflowClient(tracker.tracking_uri).get_run(parent).data.metrics
