"""What a model folder Shrinktune writes or reads must hold, checked before it is trusted.

Paths to folders come back from places other people can write (MLflow tags, a shared storage): a folder is only
loaded, copied or uploaded when it holds what a saved seq2seq model holds — its config, safetensors weights and
tokenizer — and, for a trial checkpoint, the trial's record.
"""

from __future__ import annotations

from pathlib import Path

TRIAL_INFO = "shrinktune_trial.json"  # beside a trial checkpoint: its settings, task and metrics
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "spiece.model", "vocab.json")


def missing_parts(folder: str | Path, record: str | None = None) -> list[str]:
    """What `folder` lacks of a saved model: "config.json", "*.safetensors weights", "a tokenizer", and `record`
    (a file name, e.g. the trial's `shrinktune_trial.json`) when given; [] when it holds them all. A folder that
    is not there lacks everything ("the folder itself")."""
    path = Path(folder)
    if not path.is_dir():
        return ["the folder itself"]
    missing = []
    if not (path / "config.json").is_file():
        missing.append("config.json")
    if not any(p.is_file() for p in path.glob("*.safetensors")):
        missing.append("*.safetensors weights")
    if not any((path / name).is_file() for name in TOKENIZER_FILES):
        missing.append("a tokenizer")
    if record and not (path / record).is_file():
        missing.append(record)
    return missing
