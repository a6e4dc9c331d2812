"""`frontier.html` in a real browser: headless Chromium, network off, measures where plotly drew the panels and the
legend, and the test checks that they fit the window (MLflow shows the page in an iframe narrower than a screen).

The page under test is a copy of the written file with a small script appended that, once plotly has drawn, writes
the bounding boxes of every panel and of the legend as JSON into a `<pre id="layout-check">`; `chromium --dump-dom`
prints the DOM after `--virtual-time-budget` ms of (virtual) time, and the test reads that JSON back.
"""

import html
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from shrinktune.tracking.plots import frontier_html, panels, plotly_frontier

pytestmark = pytest.mark.browser

OBJ = {"rouge1": "max", "latency_ms": "min", "params_total": "min"}
TEACHER = {"rouge1": 0.40, "latency_ms": 100.0, "params_total": 1000.0}
ROWS = [
    {"trial_id": "t1", "config": {"latent_dim": 96}, "rouge1": 0.36, "latency_ms": 50.0, "params_total": 500.0},
    {"trial_id": "t2", "config": {"latent_dim": 32}, "rouge1": 0.24, "latency_ms": 20.0, "params_total": 800.0},
    {"trial_id": "t3", "config": {"latent_dim": 64}, "rouge1": 0.20, "latency_ms": 60.0, "params_total": 990.0},
    {"trial_id": "t4", "config": {"latent_dim": 48}, "rouge1": 0.30, "latency_ms": 35.0, "params_total": 700.0},
    {"trial_id": "t5", "config": {"latent_dim": 16}, "rouge1": 0.15, "latency_ms": 15.0, "params_total": 400.0},
]

# Polls every 100 ms (virtual time) and rewrites the summary each time, so the DOM that Chromium dumps holds the
# layout as it stands at the end, after any relayout of the page's own script. With @NARROW@ > 0 it keeps the
# summary at the 10th poll as `before`, then narrows the page's body to @NARROW@ px and fires a window resize, as
# when the iframe around the page shrinks.
CHECK_SCRIPT = """
<pre id="layout-check"></pre>
<script>
(function () {
  function box(el) {
    var r = el.getBoundingClientRect();
    return {left: r.left, right: r.right, top: r.top, bottom: r.bottom, width: r.width, height: r.height};
  }
  var polls = 0, narrow = @NARROW@, before = null;
  var timer = setInterval(function () {
    polls += 1;
    var gd = document.querySelector('.plotly-graph-div');
    var drawn = gd && gd.querySelector('.main-svg');
    if (drawn) {
      var subplots = Array.prototype.map.call(gd.querySelectorAll('.cartesianlayer .subplot'), function (el) {
        var id = el.getAttribute('class').split(' ')[1], axes = id.match(/^(x[0-9]*)(y[0-9]*)$/);
        var area = box(gd.querySelector('.draglayer .' + id + ' .nsewdrag'));
        var labels = Array.prototype.slice.call(el.querySelectorAll('text'));
        labels = labels.concat(Array.prototype.slice.call(
          gd.querySelectorAll('.g-' + axes[1] + 'title text, .g-' + axes[2] + 'title text')));
        var full = labels.map(box).filter(function (b) { return b.width > 0; }).reduce(function (a, b) {
          return {left: Math.min(a.left, b.left), right: Math.max(a.right, b.right),
                  top: Math.min(a.top, b.top), bottom: Math.max(a.bottom, b.bottom)};
        }, area);
        full.width = full.right - full.left; full.height = full.bottom - full.top;
        return {name: id, area: area, full: full, labels: labels.length};
      });
      var legend = gd.querySelector('.legend');
      var summary = {
        polls: polls, innerWidth: window.innerWidth, clientWidth: document.documentElement.clientWidth,
        bodyRight: box(document.body).right, columns: gd.dataset.columns || null, subplots: subplots,
        legend: legend ? box(legend) : null, legendItems: gd.querySelectorAll('.legend .traces').length,
        before: before
      };
      document.getElementById('layout-check').textContent = JSON.stringify(summary);
      if (narrow > 0 && polls === 10) {
        before = summary;
        document.body.style.width = narrow + 'px';
        window.dispatchEvent(new Event('resize'));
      }
    }
    if (polls >= 30) { clearInterval(timer); }
  }, 100);
})();
</script>
"""


@pytest.fixture(scope="module")
def chromium():
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.skip("chromium not found (Debian: apt-get install chromium; .ci/run installs it)")
    return path


def measure(chromium: str, page: Path, width: int, tmp_path: Path, narrow: int = 0) -> dict:
    """Loads a copy of `page`, with `CHECK_SCRIPT` appended, in headless Chromium with no network; returns the
    summary the script wrote."""
    checked = tmp_path / f"checked-{page.stem}-{width}.html"
    text = page.read_text()
    assert text.count("</body>") == 1
    checked.write_text(text.replace("</body>", CHECK_SCRIPT.replace("@NARROW@", str(narrow)) + "</body>"))
    command = [
        chromium, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
        f"--window-size={width},900", "--virtual-time-budget=10000",
        "--proxy-server=127.0.0.1:9", "--proxy-bypass-list=<-loopback>",  # no network, loopback included
        f"--user-data-dir={tmp_path / f'profile-{width}'}", "--no-first-run", "--no-default-browser-check",
        "--disable-extensions", "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--dump-dom", checked.as_uri(),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    found = re.search(r'<pre id="layout-check">(.*?)</pre>', done.stdout, re.DOTALL)
    assert done.returncode == 0 and found and found.group(1).strip(), (
        f"chromium exited {done.returncode} without a layout summary; stderr:\n{done.stderr[-3000:]}")
    return json.loads(html.unescape(found.group(1)))


def overlap(a: dict, b: dict) -> bool:
    return a["left"] < b["right"] and b["left"] < a["right"] and a["top"] < b["bottom"] and b["top"] < a["bottom"]


def assert_fits(summary: dict, width: int, count: int, edge: float | None = None) -> None:
    """Every panel (its plot area, tick labels and axis titles) and the legend drawn, inside the window's `width`
    px (or left of `edge`), no two panels on top of each other."""
    assert summary["innerWidth"] == width
    if edge is None:
        edge = min(width, summary["clientWidth"])  # less a vertical scrollbar, if the page has one
    assert len(summary["subplots"]) == count
    assert summary["legend"] is not None and summary["legendItems"] == 3  # dominated, front, teacher
    boxes = [(f"{p['name']} plot area", p["area"]) for p in summary["subplots"]]
    boxes += [(f"{p['name']} with its labels", p["full"]) for p in summary["subplots"]]
    for name, box in boxes + [("legend", summary["legend"])]:
        assert box["width"] > 0 and box["height"] > 0, (name, box)
        assert 0 <= box["left"] and box["right"] <= edge, (name, box, edge)
    assert all(p["labels"] >= 4 for p in summary["subplots"])  # tick labels and both axis titles drawn
    full = [p["full"] for p in summary["subplots"]]
    assert not any(overlap(a, b) for i, a in enumerate(full) for b in full[i + 1:]), full


def test_frontier_fits_a_1280px_window(chromium, tmp_path):
    page = frontier_html(tmp_path / "frontier.html", ROWS, OBJ, TEACHER)
    summary = measure(chromium, page, 1280, tmp_path)
    assert_fits(summary, 1280, len(panels(OBJ)))
    assert summary["columns"] == "3"  # the three panels side by side
    assert all(p["area"]["width"] >= 250 for p in summary["subplots"])


def test_frontier_stacks_its_panels_in_a_narrow_window(chromium, tmp_path):
    page = frontier_html(tmp_path / "frontier.html", ROWS, OBJ, TEACHER)
    summary = measure(chromium, page, 600, tmp_path)
    assert_fits(summary, 600, len(panels(OBJ)))
    assert summary["columns"] == "1"  # one panel a row, each as wide as the page allows
    assert all(p["area"]["width"] >= 400 for p in summary["subplots"])


def test_frontier_reflows_when_its_container_narrows(chromium, tmp_path):
    page = frontier_html(tmp_path / "frontier.html", ROWS, OBJ, TEACHER)
    summary = measure(chromium, page, 1280, tmp_path, narrow=560)
    assert summary["before"]["columns"] == "3"
    assert_fits(summary["before"], 1280, len(panels(OBJ)))
    assert summary["bodyRight"] == 8 + 560  # the body's default 8 px margin, then 560 px of page
    assert summary["columns"] == "1"
    assert_fits(summary, 1280, len(panels(OBJ)), edge=summary["bodyRight"])
    assert all(p["area"]["width"] >= 400 for p in summary["subplots"])


def test_a_fixed_width_figure_fails_the_check(chromium, tmp_path):
    """The check itself: a page of the size `frontier_html` used to write (520 px a panel, 1560 px in all) does not
    fit 1280 px."""
    figure = plotly_frontier(ROWS, OBJ, TEACHER)
    figure.update_layout(width=520 * len(panels(OBJ)), height=480, autosize=False)
    page = tmp_path / "fixed.html"
    figure.write_html(page, include_plotlyjs=True, full_html=True)
    summary = measure(chromium, page, 1280, tmp_path)
    assert len(summary["subplots"]) == 3
    with pytest.raises(AssertionError):
        assert_fits(summary, 1280, 3)
    assert max(p["area"]["right"] for p in summary["subplots"]) > 1280
