"""Tracking room: MLflow runs for searches (parent) and trials (children)."""
