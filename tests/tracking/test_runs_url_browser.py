"""`runs_url` in a real browser: MLflow's own UI (`mlflow server`, one worker on loopback) loaded in headless
Chromium at the address the function gives shows the experiment's runs table — the search's run by name, and the
experiment's description — rather than the GenAI overview MLflow 3.17 opens an experiment with."""

import html
import re
import shutil
import subprocess

import pytest

from shrinktune.tracking.mlflow_tracking import SearchTracker, default_tracking_uri, runs_url

pytestmark = pytest.mark.browser


def _visible_text(chromium: str, url: str) -> str:
    """The page's text once its scripts have run (`--dump-dom` after 20 s of virtual time)."""
    out = subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=20000",
                          "--dump-dom", url], capture_output=True, text=True, timeout=120)
    page = re.sub(r"<script.*?</script>|<style.*?</style>", "", out.stdout, flags=re.S)
    return html.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", page)))


def test_runs_url_opens_the_runs_table(tmp_path, mlflow_server):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("chromium is not installed")
    uri = default_tracking_uri(tmp_path)
    tracker = SearchTracker(uri, "browsed")
    tracker.start_search("search-in-the-table", {"space": "x.yaml"})
    tracker.log_trial("t1", {"latent_dim": 96}, {"rouge1": 0.1}, run_name="96xall lr3e-4 sft · t1")
    tracker.end_search()

    with mlflow_server(uri) as base:
        text = _visible_text(chromium, runs_url(base, tracker.experiment_id()))
    assert "search-in-the-table" in text, text[:2000]
    assert "Searches of the space browsed" in text  # the experiment's description
