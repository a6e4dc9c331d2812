"""Picking from a finished search: `python -m platform.pareto EXPERIMENT [flags]` (the `shrinktune-pareto` command).

- `rules`: the small language it speaks: objectives, constraints, named picks (no MLflow);
- `runs`: the search as MLflow holds it: candidates, `select`, `tag_front`, `register`, `export`, `test_pick`;
- `cli`: the flags, the output and `main`.
"""

from shrinktune.pick.cli import main

__all__ = ["main"]
