"""Shrinktune: search for compressed summarization models.

The library behind `python -m platform.search` and the `shrinktune` command. Rooms, one concern each:
`data` (tasks and datasets), `models` (teachers, bottlenecks, students), `training` (fine-tuning, caches),
`measure` (ROUGE, latency, memory, size), `search` (spaces, trials, Ray Tune + Optuna, Pareto) and `tracking`
(MLflow). Only `search` and `tracking` import ray, optuna or mlflow.

Load a checkpoint the search produced and summarize with it::

    from shrinktune import load_summarizer
    summarize = load_summarizer("path/to/checkpoint")
    print(summarize("A long document ...", aspect="approach"))
"""

__version__ = "0.1.0"


def load_summarizer(path, device=None):
    """Loads a teacher or student checkpoint as a callable summarizer (see `shrinktune.models.summarizer`)."""
    # Lazy: every `import shrinktune.<room>` runs this file, which must not pull in torch and transformers.
    from shrinktune.models.summarizer import Summarizer

    return Summarizer.from_pretrained(path, device=device)
