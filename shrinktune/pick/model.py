"""A picked checkpoint as an MLflow model, so that a registered version loads and summarizes with MLflow alone:

    model = mlflow.pyfunc.load_model("models:/NAME@ALIAS")
    model.predict(["Full text of a paper ..."], params={"aspect": "approach"})        # → ["summary ..."]
    model.predict(pandas.DataFrame({"document": [...], "aspect": ["challenge", "outcome"]}))

`SummarizerModel` wraps `shrinktune.load_summarizer`; the checkpoint folder is its artifact `checkpoint`. The model
is an MLflow 3 logged model of the trial's run (named `summarizer`), and carries a copy of the `shrinktune` package's
code (not the shipped teacher's weights, which loading a checkpoint never needs): it loads wherever MLflow, torch
and transformers are installed, with or without shrinktune.

This module imports mlflow; the picker imports it only to register or export.
"""

from __future__ import annotations

import importlib.metadata as md
import shutil
import tempfile
import warnings
from pathlib import Path

import mlflow.pyfunc
import pandas as pd
from mlflow.pyfunc.model import PythonModel

from shrinktune.tracking.schema import filter_value

MODEL_NAME = "summarizer"  # the logged model's name on the trial's run (also `runs:/<run>/summarizer`)
MODEL_TYPE = "shrinktune-summarizer"  # how the picker recognises its own logged models
CHECKPOINT = "checkpoint"  # the checkpoint folder's key among the MLflow model's artifacts
DOCUMENT, ASPECT = "document", "aspect"  # the input columns (and ASPECT the param)
REQUIREMENTS = ("torch", "transformers", "pyyaml")  # what the copied shrinktune code imports to summarize
ENTRY = Path(__file__).with_name("model_entry.py")  # MLflow's "model from code": builds a SummarizerModel


class SummarizerModel(PythonModel):
    """`predict(documents)` → one summary per document, from the checkpoint artifact via `load_summarizer`."""

    def load_context(self, context) -> None:
        """Loads the checkpoint once, when MLflow loads the model."""
        from shrinktune import load_summarizer

        self.summarizer = load_summarizer(context.artifacts[CHECKPOINT])

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> list[str]:
        """Summaries of the documents, in input order. Rows with the same aspect are generated as one batch; a
        row's `aspect` column wins over the `aspect` param, which applies to rows without one. (A DataFrame hint
        keeps MLflow from converting the input; lists and single texts pass as they are.)"""
        documents, aspects = documents_and_aspects(model_input, (params or {}).get(ASPECT))
        summaries: list[str] = [""] * len(documents)
        for aspect in dict.fromkeys(aspects):
            rows = [i for i, a in enumerate(aspects) if a == aspect]
            for i, summary in zip(rows, self.summarizer([documents[i] for i in rows], aspect=aspect)):
                summaries[i] = summary
        return summaries


def documents_and_aspects(model_input, aspect: str | None = None) -> tuple[list[str], list[str | None]]:
    """The documents and each one's aspect, from a DataFrame (a `document` column, or its only other column, and
    an optional `aspect` column), a dict of such columns, a list or Series of texts, or one text."""
    if isinstance(model_input, str):
        model_input = [model_input]
    if isinstance(model_input, dict):
        model_input = pd.DataFrame({k: v if isinstance(v, list | tuple) else [v] for k, v in model_input.items()})
    if not isinstance(model_input, pd.DataFrame):  # a list, tuple, array or Series of documents
        documents = [str(d) for d in model_input]
        return documents, [aspect or None] * len(documents)
    texts = [c for c in model_input.columns if c != ASPECT]
    column = DOCUMENT if DOCUMENT in model_input.columns else texts[0] if len(texts) == 1 else None
    if column is None:
        raise ValueError(f"the input needs a {DOCUMENT!r} column (and optionally {ASPECT!r}); got columns "
                         f"{list(model_input.columns)}.")
    documents = [str(d) for d in model_input[column]]
    given = model_input[ASPECT].tolist() if ASPECT in model_input.columns else [None] * len(documents)
    return documents, [a if isinstance(a, str) and a else aspect or None for a in given]


def _signature():
    """Params only (the `aspect`), so that MLflow passes it through; the input stays free-form (see
    `documents_and_aspects`) and the output is a list of strings."""
    from mlflow.models import ModelSignature
    from mlflow.types import ParamSchema, ParamSpec

    return ModelSignature(params=ParamSchema([ParamSpec(ASPECT, "string", "")]))


def _requirements() -> list[str]:
    """Pins of the installed packages the model needs to summarize (mlflow adds its own); without local version
    labels such as torch's `+cpu`, which only the build's own index serves."""
    pins = []
    for package in REQUIREMENTS:
        try:
            pins.append(f"{package}=={md.version(package).split('+')[0]}")
        except md.PackageNotFoundError:
            pins.append(package)
    return pins


def _package_code(folder: Path) -> Path:
    """A copy of the `shrinktune` package's code under `folder` (no shipped weights, no caches)."""
    import shrinktune

    source = Path(shrinktune.__file__).resolve().parent
    target = folder / "shrinktune"
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "assets"))
    return target


def save_summarizer_model(checkpoint: str | Path, path: str | Path, mlflow_model=None) -> None:
    """Writes the MLflow model (MLmodel, `SummarizerModel` as code, the checkpoint, the package code) to `path`."""
    with tempfile.TemporaryDirectory() as folder, warnings.catch_warnings():
        # No input example: MLflow would load the checkpoint and summarize it to check the example.
        warnings.filterwarnings("ignore", message=".*input example was not provided")
        mlflow.pyfunc.save_model(
            str(path), python_model=str(ENTRY), artifacts={CHECKPOINT: str(checkpoint)},
            code_paths=[str(_package_code(Path(folder)))], pip_requirements=_requirements(),
            signature=_signature(), mlflow_model=mlflow_model,
        )


def log_summarizer_model(client, run_id: str, checkpoint: str | Path) -> str:
    """Logs `checkpoint` as the MLflow model `summarizer` of the trial's run (an MLflow 3 logged model with the run's
    params, listed among the run's outputs); returns its model id."""
    from mlflow.entities import LoggedModelOutput, LoggedModelStatus
    from mlflow.models import Model

    run = client.get_run(run_id)
    logged = client.create_logged_model(run.info.experiment_id, name=MODEL_NAME, source_run_id=run_id,
                                        params=dict(run.data.params), model_type=MODEL_TYPE)
    try:
        with tempfile.TemporaryDirectory() as folder:
            local = Path(folder) / MODEL_NAME
            save_summarizer_model(checkpoint, local, Model(artifact_path=logged.artifact_location, run_id=run_id,
                                                           model_uuid=logged.model_id, model_id=logged.model_id))
            client.log_model_artifacts(logged.model_id, str(local))
    except BaseException:
        client.finalize_logged_model(logged.model_id, LoggedModelStatus.FAILED)
        raise
    client.finalize_logged_model(logged.model_id, LoggedModelStatus.READY)
    client.log_outputs(run_id, [LoggedModelOutput(logged.model_id, step=0)])
    return logged.model_id


def find_summarizer_model(client, run_id: str):
    """The run's latest READY summarizer model (a `LoggedModel`), or None."""
    from mlflow.entities import LoggedModelStatus

    run = client.get_run(run_id)
    found = client.search_logged_models([run.info.experiment_id],
                                        filter_string=f"source_run_id = {filter_value(run_id)}")
    ours = [m for m in found if m.model_type == MODEL_TYPE and m.status == LoggedModelStatus.READY]
    return max(ours, key=lambda m: m.creation_timestamp, default=None)


def checkpoint_uri(logged, tracking_uri: str) -> str:
    """Where the checkpoint folder lies among a summarizer model's artifacts, as its MLmodel file records it
    (MLflow keeps an artifact folder under its own name)."""
    import mlflow.artifacts
    from mlflow.models import Model

    root = logged.artifact_location.rstrip("/")
    with tempfile.TemporaryDirectory() as folder:
        mlmodel = mlflow.artifacts.download_artifacts(artifact_uri=f"{root}/MLmodel", dst_path=folder,
                                                      tracking_uri=tracking_uri)
        path = Model.load(mlmodel).flavors["python_function"]["artifacts"][CHECKPOINT]["path"]
    return f"{root}/{path}"
