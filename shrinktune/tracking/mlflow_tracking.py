"""MLflow bookkeeping of a search: one parent run per search, one child run per trial and one for its teacher.

Everything goes through `MlflowClient` with explicit run ids, so the Ray Tune driver can log trials as they end
without juggling MLflow's "active run". The default store is a sqlite file in the working directory (MLflow 3
deprecates the file store); artifacts go to `./mlartifacts` beside it unless the URI says otherwise. A new sqlite
store is created by `prepare_store`, once, under a lock beside the file: MLflow's own creation of its tables fails
when two processes open the same new file at once.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import sqlite3
import tempfile
import time
from pathlib import Path

from mlflow.entities import Metric, Param
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from shrinktune.errors import UserError
from shrinktune.front import ObjectiveError, hypervolume, pareto_front
from shrinktune.models.folders import missing_parts
from shrinktune.paths import file_lock
from shrinktune.tracking.plots import frontier_html, frontier_png
from shrinktune.tracking.schema import (
    CHECKPOINT_TAG,
    ERROR_TAG,
    EXPERIMENT_KIND_TAG,
    INFEASIBLE_TAG,
    KIND_TAG,
    ML_EXPERIMENT_KIND,
    NOTE_TAG,
    PARENT_TAG,
    PARETO_TAG,
    RECHECKED_TAG,
    RUNS_VIEW_QUERY,
    SCREENED_TAG,
    SEARCH_KIND,
    SEARCH_NAME_TAG,
    SEARCH_TEACHER_PREFIX,
    STATE_TAG,
    TEACHER_DIR_PARAM,
    TEACHER_DIR_TAG,
    TEACHER_KIND,
    TEACHER_PREFIX,
    TEACHER_RUN_NAME,
    TRIAL_KIND,
    TRIAL_TAG,
    filter_value,
    prefixed,
    unprefixed,
)

logger = logging.getLogger(__name__)

DEFAULT_DB = "mlflow.db"
UI_HOST, UI_PORT = "127.0.0.1", 5000  # where `ui_command`'s local UI listens


def default_tracking_uri(folder: str | Path | None = None) -> str:
    """`$MLFLOW_TRACKING_URI` when set (MLflow's own convention), else `sqlite:///<folder>/mlflow.db`, folder
    defaulting to the working directory."""
    if folder is None and os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    return f"sqlite:///{(Path(folder or Path.cwd()) / DEFAULT_DB).resolve()}"


def _is_server(tracking_uri: str) -> bool:
    return tracking_uri.startswith(("http://", "https://"))


def ui_command(tracking_uri: str) -> str:
    """How to open the MLflow UI on this store: a server's own address, or a one-worker loopback UI on a file."""
    if _is_server(tracking_uri):
        return f"open {tracking_uri} in a browser (the tracking server serves the UI)"
    return f"mlflow ui --backend-store-uri {tracking_uri} --host {UI_HOST} --port {UI_PORT} --workers 1"


def runs_url(tracking_uri: str, experiment_id: str) -> str:
    """The address that opens the experiment's runs table in MLflow's classic view: on the tracking server for an
    http(s) store, else on the local UI that `ui_command` starts. MLflow 3.17's UI opens GenAI views (traces) by
    default and hides the runs table behind a switch; the URL's `workflowType` sets that switch."""
    base = tracking_uri.rstrip("/") if _is_server(tracking_uri) else f"http://{UI_HOST}:{UI_PORT}"
    return f"{base}/#/experiments/{experiment_id}/runs?{RUNS_VIEW_QUERY}"


def experiment_tags(experiment: str) -> dict[str, str]:
    """The tags a search's experiment carries: its description (shown above its runs in the UI) and MLflow's
    experiment type "machine learning", the UI's own value for an experiment of runs rather than traces."""
    note = (
        f"Searches of the space `{experiment}` for compressed summarization students (shrinktune).\n\n"
        f"- one run per search (`{KIND_TAG} = {SEARCH_KIND}`): the space, budget and decoding as params, the "
        f"teacher's figures as `{TEACHER_PREFIX}*`, the hypervolume so far and the frontier plots;\n"
        f"- nested under it, one run per trial (`{KIND_TAG} = {TRIAL_KIND}`), named after its settings — latent "
        "width x decoder layers, learning rate, method, then its Ray Tune id — with every setting it ran with as "
        f"params, and one run for the teacher (`{KIND_TAG} = {TEACHER_KIND}`) under the students' metric names, to "
        "compare and chart beside them;\n"
        f"- the final Pareto front is tagged `{PARETO_TAG} = true`; its re-checked figures carry the plain "
        "names, the in-search ones `search_*`.\n\n"
        f"Pick, register and export a student: `python -m platform.pareto {experiment} --pick fastest-within-2pct`."
    )
    return {NOTE_TAG: note, EXPERIMENT_KIND_TAG: ML_EXPERIMENT_KIND}


def _fail_fast_over_http(uri: str) -> None:
    """A tracking server that does not answer should fail in seconds, not after MLflow's minutes of retries."""
    if uri.startswith(("http://", "https://")):
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")


def _sqlite_path(tracking_uri: str) -> Path | None:
    """The file of a `sqlite:///` store (relative after three slashes, absolute after four), else None."""
    return Path(tracking_uri[len("sqlite:///"):]) if tracking_uri.startswith("sqlite:///") else None


def _unusable(uri: str, error: Exception) -> str:
    first = str(error).strip().splitlines()[0][:200] if str(error).strip() else type(error).__name__
    path = _sqlite_path(uri)
    if path is not None and "out-of-date database schema" in str(error):
        return (f"MLflow store {path} was written by an older MLflow (its schema is out of date); back it up and "
                f"run `mlflow db upgrade {uri}`, or pass --tracking-uri sqlite:////another/mlflow.db.")
    if path is not None:
        return (f"MLflow store {path} cannot be opened as a database ({first}): it is not an MLflow sqlite file or "
                "is damaged; pass --tracking-uri sqlite:////another/mlflow.db.")
    if _is_server(uri):
        return f"tracking server {uri} cannot be used ({first}); start it or pass --tracking-uri."
    return (f"tracking URI {uri} cannot be used ({first}); pass --tracking-uri sqlite:////abs/path/mlflow.db or "
            "http://host:5000.")


def _created(path: Path) -> bool:
    """Whether the sqlite file holds a store whose creation ended: MLflow records its schema's version (in
    `alembic_version`) as it creates the tables, and no creator runs while the caller holds the shared lock."""
    if not path.is_file() or path.stat().st_size == 0:
        return False
    try:
        with contextlib.closing(sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)) as db:
            return db.execute("SELECT version_num FROM alembic_version").fetchone() is not None
    except sqlite3.Error:  # not a database, or no such table: MLflow's own opening says which
        return False


def prepare_store(tracking_uri: str) -> MlflowClient:
    """An `MlflowClient` on `tracking_uri`. A sqlite store that is new (or not a store yet) is created by whoever
    comes first, under an exclusive lock on `<db>.lock` beside the file, and the others wait for it; a created store
    only takes a shared lock for a moment, to read that it was created.

    Raises:
        UserError: the store cannot be opened (not a database, an unknown URI scheme, a server that does not
            answer when the client is made).
    """
    _fail_fast_over_http(tracking_uri)
    path = _sqlite_path(tracking_uri)
    try:
        if path is not None:
            lock = path.with_name(path.name + ".lock")
            with file_lock(lock, shared=True, required=False):  # a folder nobody can write: no store to make
                created = _created(path)
            if not created:
                with file_lock(lock, required=False):
                    if not _created(path):  # still new: nobody created it while this process waited
                        return MlflowClient(tracking_uri=tracking_uri)  # creates the tables
        return MlflowClient(tracking_uri=tracking_uri)
    except Exception as error:  # MLflow raises many kinds for an unknown, unreachable or broken store
        raise UserError(_unusable(tracking_uri, error)) from error


def open_store(tracking_uri: str) -> MlflowClient:
    """An `MlflowClient` on a store that already exists and answers; for readers, who must create nothing.

    Raises:
        UserError: the sqlite file is missing or not a store, the URI's scheme is unknown, or the server does not
            answer.
    """
    path = _sqlite_path(tracking_uri)
    if path is not None and not path.is_file():
        raise UserError(f"no MLflow store at {path} (from {tracking_uri}); pass --tracking-uri with the store "
                        "the search wrote, e.g. sqlite:////abs/path/mlflow.db or http://host:5000.")
    client = prepare_store(tracking_uri)
    try:
        client.search_experiments(max_results=1)
    except Exception as error:  # MLflow raises many kinds for an unreachable or broken store
        raise UserError(_unusable(tracking_uri, error)) from error
    return client


def _literal(value: str) -> str:
    """`value` as a literal of an MLflow filter string (`filter_value`).

    Raises:
        UserError: the value holds both kinds of quote.
    """
    try:
        return filter_value(value)
    except ValueError as error:
        raise UserError(f"{error}; use a name without one of the two kinds of quote.") from None


class SearchTracker:
    """Logs one search to MLflow: a parent run, and a child run for each trial that ends."""

    def __init__(self, tracking_uri: str, experiment: str):
        self.tracking_uri = tracking_uri
        self.experiment = experiment
        self.parent_run_id: str | None = None
        self._client: MlflowClient | None = None

    def __getstate__(self):
        return {**self.__dict__, "_client": None}  # the client holds connections; rebuilt on demand

    @property
    def client(self) -> MlflowClient:
        """The MLflow client, made on first use (in each process the tracker is unpickled in) by `prepare_store`."""
        if self._client is None:
            self._client = prepare_store(self.tracking_uri)
        return self._client

    @property
    def search_run_id(self) -> str:
        """The search's run; only after `start_search` or `resume_search`."""
        if self.parent_run_id is None:
            raise RuntimeError("the search has no MLflow run yet: call start_search or resume_search first")
        return self.parent_run_id

    def check(self) -> None:
        """Creates the store if new (`prepare_store`) and the search's experiment if missing; fails fast, with one
        line, when the store cannot be opened or written."""
        uri = self.tracking_uri
        path = _sqlite_path(uri)
        if path is not None:
            folder = path.parent
            if not folder.is_dir() or not os.access(folder, os.W_OK):
                raise UserError(
                    f"tracking location {uri} is not writable ({folder} is missing or read-only); "
                    "pass --tracking-uri sqlite:////a/writable/folder/mlflow.db."
                )
        try:
            self.experiment_id()
        except UserError:
            raise
        except Exception as error:  # MLflow raises many kinds for an unreachable or broken store
            raise UserError(_unusable(uri, error)) from error

    def experiment_id(self) -> str:
        """The search's experiment, made (with its description and type) or restored when needed."""
        found = self.client.get_experiment_by_name(self.experiment)
        if found is not None:
            if found.lifecycle_stage == "deleted":
                self.client.restore_experiment(found.experiment_id)
            self._describe(found)
            return found.experiment_id
        path = _sqlite_path(self.tracking_uri)
        artifacts = (path.parent / "mlartifacts").resolve().as_uri() if path is not None else None
        try:
            return self.client.create_experiment(self.experiment, artifact_location=artifacts,
                                                 tags=experiment_tags(self.experiment))
        except MlflowException as error:
            made = (self.client.get_experiment_by_name(self.experiment)
                    if error.error_code == "RESOURCE_ALREADY_EXISTS" else None)
            if made is None:
                raise
            return made.experiment_id  # a search started at the same time made it: use theirs

    def _describe(self, experiment) -> None:
        """Adds the description and type to an experiment made without them (by an older version, or by hand);
        a description or type someone set is left as it is."""
        for key, value in experiment_tags(self.experiment).items():
            if key not in experiment.tags:
                self.client.set_experiment_tag(experiment.experiment_id, key, value)

    def runs_url(self) -> str:
        """The address of this search's runs table in the MLflow UI (see `runs_url`)."""
        return runs_url(self.tracking_uri, self.experiment_id())

    def start_search(self, run_name: str, params: dict, tags: dict | None = None) -> str:
        """Opens the search's run (named `run_name`, found again by that name when resumed)."""
        run = self.client.create_run(self.experiment_id(), run_name=run_name,
                                     tags={KIND_TAG: SEARCH_KIND, SEARCH_NAME_TAG: run_name, **(tags or {})})
        self.parent_run_id = run_id = run.info.run_id
        self._log_params(run_id, params)
        return run_id

    def find_search(self, name: str):
        """The MLflow run of the search `name` in this experiment (the newest, if several), or None. Found by its
        tag, or — a search started before the tag existed — by its run name."""
        for key in (f"tags.`{SEARCH_NAME_TAG}`", "attributes.run_name"):
            runs = self.client.search_runs(
                [self.experiment_id()], max_results=1, order_by=["attributes.start_time DESC"],
                filter_string=f"{key} = {_literal(name)} and tags.`{KIND_TAG}` = {_literal(SEARCH_KIND)}",
            )
            if runs:
                return runs[0]
        return None

    def resume_search(self, run) -> None:
        """Re-opens a search's run (from `find_search`) to log into it again."""
        self.parent_run_id = run.info.run_id
        self.client.update_run(self.search_run_id, status="RUNNING")

    def log_space(self, path: str | Path, text: str) -> None:
        """The search-space file, as read when the search started, as an artifact of the search's run (named as the
        file; a submitted job's copy of the file may be gone by the time the run exists)."""
        self.client.log_text(self.search_run_id, text, Path(path).name)

    def log_teacher(self, teacher_dir: str, metrics: dict, params: dict | None = None, *, standing: dict | None = None,
                    start_ms: int | None = None, end_ms: int | None = None) -> str:
        """The prepared teacher's folder (param `teacher_dir`, which cannot change once logged, and tag) and its
        metrics (`teacher_*`) on the search's run, and the teacher as a run of its own beside the trials (kind
        `teacher`, the students' metric names, `params`, the real start and end of its preparation) so that MLflow's
        compare and chart views can show it with them. Returns that run's id. A search has one teacher run: logging
        again (a teacher measured anew) logs into it; a new folder then updates the tag, and the param keeps the
        first (a warning says so).

        Args:
            standing: metrics of the teacher's run only: its standing against itself under the names the trials'
                ratios have (speed-up 1, ...), so that charts of those place it too.
        """
        self.log_reference(metrics)
        self._log_teacher_dir(teacher_dir)
        run_id = self.teacher_run_id()
        if run_id is not None:
            self._log_metrics(run_id, metrics)
            return run_id
        tags = {PARENT_TAG: self.search_run_id, KIND_TAG: TEACHER_KIND, TEACHER_DIR_TAG: teacher_dir}
        run_id = self.client.create_run(self.experiment_id(), run_name=TEACHER_RUN_NAME, start_time=start_ms,
                                        tags=tags).info.run_id
        self._log_params(run_id, params or {})
        self._log_metrics(run_id, {**metrics, **(standing or {})})
        self.client.set_terminated(run_id, status="FINISHED", end_time=end_ms)
        return run_id

    def teacher_run_id(self) -> str | None:
        """The search's teacher run (`log_teacher`), or None: a search logged before teacher runs existed."""
        runs = self.client.search_runs(
            [self.experiment_id()], max_results=1, order_by=["attributes.start_time ASC"],
            filter_string=(f"tags.`{PARENT_TAG}` = {_literal(self.search_run_id)} "
                           f"and tags.`{KIND_TAG}` = {_literal(TEACHER_KIND)}"),
        )
        return runs[0].info.run_id if runs else None

    def _log_teacher_dir(self, teacher_dir: str) -> None:
        """The teacher's folder as the search run's param `teacher_dir` (once: params cannot change) and tag."""
        self.client.set_tag(self.search_run_id, TEACHER_DIR_TAG, teacher_dir)
        logged = self.client.get_run(self.search_run_id).data.params.get(TEACHER_DIR_PARAM)
        if logged is None:
            self.client.log_param(self.search_run_id, TEACHER_DIR_PARAM, teacher_dir)
        elif logged != teacher_dir:
            logger.warning("the teacher was prepared again in %s; the search's run keeps %s as its param %s (MLflow "
                           "params cannot change) and has the new folder in its tag %s", teacher_dir, logged,
                           TEACHER_DIR_PARAM, TEACHER_DIR_TAG)

    @staticmethod
    def saved_teacher(run) -> tuple[dict, str | None]:
        """(the teacher's in-search metrics, its folder) as a search's run holds them. A search interrupted after
        its re-check began keeps the in-search figures as `search_teacher_*`.

        The folder is the run's param `teacher_dir` (params cannot be changed after the fact; tags can), and only
        when it still holds a saved model; else None, and the caller prepares the teacher again (from its cache).
        A search logged before the param existed also gives None.
        """
        saved = run.data.metrics
        prefix = SEARCH_TEACHER_PREFIX if any(k.startswith(SEARCH_TEACHER_PREFIX) for k in saved) else TEACHER_PREFIX
        metrics = unprefixed(prefix, saved)
        folder = run.data.params.get(TEACHER_DIR_PARAM)
        if folder is None:
            return metrics, None
        missing = missing_parts(folder)
        if missing:
            logger.warning("the search's teacher folder %s (param %s of run %s) lacks %s: preparing the teacher again",
                           folder, TEACHER_DIR_PARAM, run.info.run_id, ", ".join(missing))
            return metrics, None
        return metrics, folder

    def log_reference(self, metrics: dict) -> None:
        """The teacher's metrics on the parent run, prefixed `teacher_`."""
        self._log_metrics(self.search_run_id, prefixed(TEACHER_PREFIX, metrics))

    def log_recheck_reference(self, before: dict, after: dict) -> None:
        """The teacher's re-checked metrics as `teacher_*`, its in-search ones kept as `search_teacher_*`; and on
        the teacher's own run (if any) as a trial's (`log_recheck`)."""
        self._log_metrics(self.search_run_id, prefixed(SEARCH_TEACHER_PREFIX, {k: v for k, v in before.items()
                                                                               if k in after}))
        self._log_metrics(self.search_run_id, prefixed(TEACHER_PREFIX, after), step=1)
        run_id = self.teacher_run_id()
        if run_id is not None:
            self.log_recheck(run_id, before, after)

    def log_recheck(self, run_id: str, before: dict, after: dict) -> None:
        """A trial's re-checked metrics under their own names (a later step, so MLflow shows them), its in-search
        values of the same metrics as `search_*`, and the tag `shrinktune.rechecked`."""
        self._log_metrics(run_id, {f"search_{k}": v for k, v in before.items() if k in after})
        self._log_metrics(run_id, after, step=1)
        self.client.set_tag(run_id, RECHECKED_TAG, str(int(after.get("eval_samples", 0))))

    def trial_runs(self, run_id: str | None = None) -> dict[str, str]:
        """The trials' runs already in MLflow under the search's run (or under `run_id`, a search's run found but
        not opened): Tune trial id → MLflow run id."""
        parent = run_id if run_id is not None else self.search_run_id
        runs = self.client.search_runs(
            [self.experiment_id()], filter_string=f"tags.`{PARENT_TAG}` = {_literal(parent)}", max_results=5000,
        )
        return {r.data.tags[TRIAL_TAG]: r.info.run_id for r in runs if TRIAL_TAG in r.data.tags}

    def tag_trials(self, tags: dict[str, dict[str, str]]) -> None:
        """Sets tags on trials' runs: Tune trial id → {tag: value}; trials not in MLflow are skipped."""
        runs = self.trial_runs()
        for trial_id, pairs in tags.items():
            for key, value in pairs.items():
                if runs.get(trial_id):
                    self.client.set_tag(runs[trial_id], key, value)

    def log_trial(self, name: str, params: dict, metrics: dict, *, status: str = "FINISHED",
                  checkpoint: str | None = None, error: str | None = None, history: list[float] | None = None,
                  run_name: str | None = None, start_ms: int | None = None, end_ms: int | None = None,
                  screened: bool = False) -> str:
        """A child run for one finished or failed trial; returns its run id.

        Args:
            name: the trial's Ray Tune id (tag `shrinktune.trial`; the run's name too, unless `run_name`).
            run_name: the name people read in the runs table.
            start_ms, end_ms: when the trial started and ended (ms since the epoch), so that the run's duration is
                the trial's; default: now (the run then lasts the milliseconds it takes to log it).
            screened: the cost pre-screen stopped it before it trained (its metrics are its costs; status KILLED,
                so the picker, which reads FINISHED trials, passes it over).
        """
        tags = {PARENT_TAG: self.search_run_id, KIND_TAG: TRIAL_KIND, TRIAL_TAG: name}
        if screened:
            tags[SCREENED_TAG], status = "true", "KILLED"
        if checkpoint:
            tags[CHECKPOINT_TAG] = checkpoint
        if error:
            tags[ERROR_TAG] = error[:4000]
            if "ConfigError" in error:  # an impossible configuration, not a crash: say so where people filter
                tags[INFEASIBLE_TAG] = "true"
        run = self.client.create_run(self.experiment_id(), run_name=run_name or name, start_time=start_ms, tags=tags)
        run_id = run.info.run_id
        self._log_params(run_id, {**params, **({"checkpoint": checkpoint} if checkpoint else {})})
        self._log_metrics(run_id, metrics)
        for step, loss in enumerate(history or [], start=1):
            self.client.log_metric(run_id, "train_loss_epoch", loss, step=step)
        self.client.set_terminated(run_id, status=status, end_time=end_ms)
        return run_id

    def log_frontier(self, rows: list[dict], objectives: dict[str, str], reference: dict, step: int, *,
                     plots: bool = False) -> float | None:
        """The search's hypervolume so far as metric `hypervolume` on the parent run at `step`, and with `plots`
        the frontier plots `frontier.png` and `frontier.html` as parent artifacts.

        Args:
            rows: the finished trials' result dicts, in the order they ended: metrics plus, for the plots'
                labels, optional `trial_id` and `config`.
            objectives: metric → "min" or "max".
            reference: the teacher's metrics, unprefixed (as given to `log_reference`).
            step: the number of finished trials.

        Returns:
            The hypervolume (see `shrinktune.front`), or None when the teacher's metrics cannot
            normalise the objectives (logged as a warning; the search goes on).
        """
        volume: float | None = None
        try:
            volume = hypervolume(rows, objectives, reference)
        except ObjectiveError as error:
            logger.warning("hypervolume not logged: %s", error)
        else:
            self.client.log_metric(self.search_run_id, "hypervolume", volume, step=step)
        if plots:
            usable = sum(all(row.get(m) is not None for m in objectives) for row in rows)
            title = f"{len(pareto_front(rows, objectives))} of {usable} trial(s) on the Pareto front"
            self.log_frontier_plots(rows, objectives, reference,
                                    title=title + (f"; hypervolume {volume:.4f}" if volume is not None else ""))
        return volume

    def log_frontier_plots(self, rows: list[dict], objectives: dict[str, str], reference: dict,
                           title: str = "") -> None:
        """`frontier.png` and `frontier.html` as artifacts of the parent run. A plotting failure is logged, not
        raised: the search's results are already in MLflow and should not be lost to a figure."""
        try:
            with tempfile.TemporaryDirectory() as folder:
                for draw, name in ((frontier_png, "frontier.png"), (frontier_html, "frontier.html")):
                    drawn = draw(Path(folder) / name, rows, objectives, reference, title)
                    self.client.log_artifact(self.search_run_id, str(drawn))
        except Exception:
            logger.warning("frontier plots not written to run %s", self.parent_run_id, exc_info=True)

    def end_search(self, status: str = "FINISHED", metrics: dict | None = None, *, state: str | None = None,
                   note: str | None = None) -> None:
        """Ends the search's run (if it has one) with `status` ("FINISHED", "FAILED", "KILLED") and final `metrics`.

        Args:
            state: the tag `shrinktune.state`, how the search ended in words readers filter on, e.g.
                `schema.NO_TRIALS_STATE` for a search that ended before any trial.
            note: the run's description in the MLflow UI (tag `mlflow.note.content`), e.g. why it ended so.
        """
        if self.parent_run_id is not None:
            if metrics:
                self._log_metrics(self.search_run_id, metrics)
            if state is not None:
                self.client.set_tag(self.parent_run_id, STATE_TAG, state)
            if note is not None:
                self.client.set_tag(self.parent_run_id, NOTE_TAG, note[:4000])
            self.client.set_terminated(self.parent_run_id, status=status)

    def tag(self, run_id: str, key: str, value: str) -> None:
        self.client.set_tag(run_id, key, value)

    def _log_params(self, run_id: str, params: dict) -> None:
        items = [Param(str(k), str(v)[:6000]) for k, v in params.items()]
        for start in range(0, len(items), 100):
            self.client.log_batch(run_id, params=items[start : start + 100])

    def _log_metrics(self, run_id: str, metrics: dict, step: int = 0) -> None:
        now = int(time.time() * 1000)
        items = [Metric(str(k), float(v), now, step) for k, v in metrics.items()
                 if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(float(v))]
        for start in range(0, len(items), 500):
            self.client.log_batch(run_id, metrics=items[start : start + 500])
