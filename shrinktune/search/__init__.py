"""Search room: search-space files, the trial, the Ray Tune + Optuna runner and Pareto fronts.

This room and `tracking` are the only ones that import ray, optuna or mlflow.
"""
