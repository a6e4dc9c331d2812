"""Summarization pairs from the Hugging Face hub or a local dataset folder (`cnn_dailymail`, `xsum`, ...).

`datasets.load_dataset` takes a hub id, a local script/data folder, or a folder written by `save_to_disk`; we
accept all three and check that the document and summary columns exist before anything trains on them.
"""

from __future__ import annotations

import logging
from pathlib import Path

from shrinktune.data.examples import Example
from shrinktune.errors import UserError

logger = logging.getLogger(__name__)


def load_pairs(
    name: str,
    split: str,
    *,
    config: str | None = None,
    document_column: str = "document",
    summary_column: str = "summary",
    limit: int | None = None,
) -> list[Example]:
    """Loads one split as `Example`s.

    Args:
        name: hub id (`cnn_dailymail`), a local data folder, or a folder written by `Dataset.save_to_disk`.
        split: split name (`train`, `validation`, `test`).
        config: dataset configuration (`3.0.0` for CNN/DailyMail).
        document_column: column holding the source text (`article` for CNN/DailyMail).
        summary_column: column holding the reference (`highlights` for CNN/DailyMail).
        limit: keep only the first `limit` rows.
    """
    import datasets  # lazy: `datasets` takes about 2 s to import (pyarrow, pandas) and only hub tasks need it

    path = Path(name)
    try:
        if (path / "dataset_dict.json").exists() or (
            (path / "dataset_info.json").exists() and (path / "state.json").exists()
        ):
            loaded = datasets.load_from_disk(str(path))
            table = loaded[split] if isinstance(loaded, datasets.DatasetDict) else loaded
        else:
            table = datasets.load_dataset(name, config, split=split)
    except (FileNotFoundError, ValueError, ConnectionError, OSError) as error:
        raise UserError(
            f"dataset {name!r} (config {config!r}, split {split!r}) could not be loaded: {error}; "
            "check the name, or pass a local folder when offline."
        ) from error
    missing = [c for c in (document_column, summary_column) if c not in table.column_names]
    if missing:
        raise UserError(
            f"dataset {name!r} split {split!r} has no column {', '.join(map(repr, missing))}; its columns are "
            f"{table.column_names}: set document_column / summary_column to the right ones."
        )
    rows = table if limit is None else table.select(range(min(limit, len(table))))
    return [
        Example(id=f"{split}/{i}", document=row[document_column], summary=row[summary_column])
        for i, row in enumerate(rows)
    ]
