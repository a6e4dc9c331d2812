"""Pairs from the Hugging Face hub or a local dataset folder: summaries (`cnn_dailymail`, `xsum`), translations
(`wmt16` ro-en, `opus_books`) and labelled texts.

`datasets.load_dataset` takes a hub id, a local script/data folder, or a folder written by `save_to_disk`; we
accept all three and check that the columns a task names exist before anything trains on them.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from shrinktune.data.examples import Example
from shrinktune.errors import UserError

logger = logging.getLogger(__name__)


SLICE = re.compile(r"^(?P<split>\w+)\[(?P<start>-?\d*):(?P<stop>-?\d*)\]$")  # "train[2000:]", datasets' syntax


def load_table(name: str, split: str, config: str | None = None):
    """One split of a hub dataset, a local data folder or a `save_to_disk` folder, as a `datasets.Dataset`; a
    split may be a slice of one (`train[:1000]`, datasets' syntax; a `save_to_disk` folder takes row numbers).

    Raises:
        UserError: If it cannot be loaded (naming it and how to fix it).
    """
    import datasets  # lazy: `datasets` takes about 2 s to import (pyarrow, pandas) and only hub tasks need it

    path = Path(name)
    try:
        if (path / "dataset_dict.json").exists() or (
            (path / "dataset_info.json").exists() and (path / "state.json").exists()
        ):
            loaded = datasets.load_from_disk(str(path))
            if not isinstance(loaded, datasets.DatasetDict):
                return loaded
            sliced = SLICE.match(split)
            if sliced is None:
                return loaded[split]
            table = loaded[sliced["split"]]
            bounds = [int(b) if b else None for b in (sliced["start"], sliced["stop"])]
            return table.select(range(len(table))[slice(*bounds)])
        return datasets.load_dataset(name, config, split=split)  # the hub reads "train[:1000]" itself
    except (FileNotFoundError, ValueError, ConnectionError, OSError, KeyError) as error:
        raise UserError(
            f"dataset {name!r} (config {config!r}, split {split!r}) could not be loaded: {error}; "
            "check the name, or pass a local folder when offline."
        ) from error


def _require(table, name: str, split: str, columns: tuple[str, ...], fix: str) -> None:
    missing = [c for c in columns if c not in table.column_names]
    if missing:
        raise UserError(f"dataset {name!r} split {split!r} has no column {', '.join(map(repr, missing))}; its "
                        f"columns are {table.column_names}: {fix}.")


def _rows(table, limit: int | None):
    return table if limit is None else table.select(range(min(limit, len(table))))


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
    table = load_table(name, split, config)
    _require(table, name, split, (document_column, summary_column), "set document_column / summary_column to the "
             "right ones")
    return [
        Example(id=f"{split}/{i}", document=row[document_column], summary=row[summary_column])
        for i, row in enumerate(_rows(table, limit))
    ]


def load_translation_pairs(name: str, split: str, *, source_language: str | None, target_language: str | None,
                           config: str | None = None, limit: int | None = None) -> list[Example]:
    """Loads one split of a parallel corpus as `Example`s (document = source sentence, summary = its translation).

    Two layouts are read, as on the hub: a `translation` column of `{language code: text}` (`wmt16` ro-en,
    `opus_books`), or one column per language code.

    Raises:
        UserError: If the language pair is not named, or the split holds neither layout for it.
    """
    if not source_language or not target_language:
        raise UserError(f"translation dataset {name!r} needs its language pair: set source_language and "
                        f"target_language (e.g. ro and en), got {source_language!r} → {target_language!r}.")
    table = load_table(name, split, config)
    pair = (source_language, target_language)
    if "translation" in table.column_names:
        rows = _rows(table, limit)
        first = rows[0]["translation"] if len(rows) else {}
        missing = [code for code in pair if code not in first]
        if missing:
            raise UserError(f"dataset {name!r} split {split!r}: its translation column has languages "
                            f"{sorted(first)}, not {', '.join(missing)}; set source_language / target_language to "
                            f"codes it holds.")
        return [Example(id=f"{split}/{i}", document=row["translation"][source_language],
                        summary=row["translation"][target_language]) for i, row in enumerate(rows)]
    _require(table, name, split, pair, "name the languages by the columns' codes (source_language / "
             "target_language), or give a `translation` column of {code: text}")
    return [Example(id=f"{split}/{i}", document=row[source_language], summary=row[target_language])
            for i, row in enumerate(_rows(table, limit))]


def load_labelled(name: str, split: str, *, text_column: str = "text", label_column: str = "label",
                  config: str | None = None, limit: int | None = None) -> list[Example]:
    """Loads one split of a classification dataset as `Example`s whose summary is the label's name (a `ClassLabel`
    column's names, else the value as text): the student's decoder learns to write it.

    Raises:
        UserError: If the text or label column is missing.
    """
    table = load_table(name, split, config)
    _require(table, name, split, (text_column, label_column), "set text_column / label_column to the right ones")
    names = getattr(table.features[label_column], "names", None)
    return [Example(id=f"{split}/{i}", document=row[text_column],
                    summary=names[row[label_column]] if names else str(row[label_column]))
            for i, row in enumerate(_rows(table, limit))]
