"""Hub-style datasets are loaded through `datasets`; tested on a folder written by save_to_disk."""

import datasets
import pytest

from shrinktune.data.hub import load_pairs
from shrinktune.errors import UserError


@pytest.fixture
def saved_dataset(tmp_path):
    rows = {"article": [f"article number {i} is long." for i in range(5)],
            "highlights": [f"summary {i}" for i in range(5)]}
    splits = {"train": datasets.Dataset.from_dict(rows), "validation": datasets.Dataset.from_dict(rows)}
    datasets.DatasetDict(splits).save_to_disk(tmp_path / "cnn")
    return tmp_path / "cnn"


def test_loads_columns_as_examples(saved_dataset):
    pairs = load_pairs(str(saved_dataset), "validation", document_column="article", summary_column="highlights",
                       limit=3)
    assert [p.summary for p in pairs] == ["summary 0", "summary 1", "summary 2"]
    assert pairs[0].source == "article number 0 is long."


def test_missing_column_is_named_with_the_fix(saved_dataset):
    with pytest.raises(UserError,
                       match=r"no column 'document'.*columns are \['article', 'highlights'\].*document_column"):
        load_pairs(str(saved_dataset), "train")
