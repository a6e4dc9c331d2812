"""The documented light way to browse a search's store: `mlflow server` with one worker on loopback.

Starts the server on a store the tracker wrote, and lists the search's runs through the REST API.
"""

import json
import urllib.request

from shrinktune.tracking.mlflow_tracking import SearchTracker, default_tracking_uri


def _post(url: str, body: dict) -> dict:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def test_server_lists_the_search_runs(tmp_path, mlflow_server):
    uri = default_tracking_uri(tmp_path)
    tracker = SearchTracker(uri, "served")
    tracker.check()
    parent = tracker.start_search("search-1", {"space": "x.yaml"})
    tracker.log_trial("t1", {"latent_dim": 96}, {"rouge1": 0.1})
    tracker.log_trial("t2", {"latent_dim": 192}, {"rouge1": 0.2})
    tracker.end_search()

    with mlflow_server(uri) as base:
        with urllib.request.urlopen(f"{base}/api/2.0/mlflow/experiments/get-by-name?experiment_name=served",
                                    timeout=10) as r:
            experiment = json.loads(r.read())["experiment"]
        runs = _post(f"{base}/api/2.0/mlflow/runs/search", {"experiment_ids": [experiment["experiment_id"]]})["runs"]
        children = [r for r in runs
                    if any(t["key"] == "mlflow.parentRunId" and t["value"] == parent
                           for t in r["data"].get("tags", []))]
        assert len(runs) == 3 and len(children) == 2
