"""Picking from a finished search: `shrinktune pareto EXPERIMENT [flags]` (also `python -m platform.pareto` from
the repository root, and the `shrinktune-pareto` command).

- `rules`: the small language it speaks: objectives, constraints, named picks (no MLflow);
- `runs`: the search as MLflow holds it: candidates, `select`, `tag_front`, `register`, `export`, `test_pick`;
- `table`: the Pareto table the search and the picker both print, within 120 columns (no MLflow);
- `model`: a checkpoint as an MLflow pyfunc model that summarizes (`model_entry` is its code; imports mlflow);
- `cli`: the flags, the output and `main`.
"""

from shrinktune.pick.cli import main

__all__ = ["main"]
