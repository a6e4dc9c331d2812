"""Hub-style datasets are loaded through `datasets`; tested on a folder written by save_to_disk."""

import datasets
import pytest

from shrinktune.data.hub import load_labelled, load_pairs, load_translation_pairs
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


@pytest.fixture
def parallel(tmp_path):
    """A tiny wmt16-style corpus (a `translation` column of {code: text}) and a flat one (a column per code)."""
    nested = {"translation": [{"ro": f"propozitia {i}", "en": f"sentence {i}"} for i in range(4)]}
    datasets.DatasetDict({"train": datasets.Dataset.from_dict(nested)}).save_to_disk(tmp_path / "wmt")
    flat = {"de": [f"Satz {i}" for i in range(4)], "en": [f"sentence {i}" for i in range(4)]}
    datasets.DatasetDict({"train": datasets.Dataset.from_dict(flat)}).save_to_disk(tmp_path / "flat")
    return tmp_path


def test_translation_pairs_read_either_layout_by_language_code(parallel):
    nested = load_translation_pairs(str(parallel / "wmt"), "train", source_language="ro", target_language="en",
                                    limit=2)
    assert [(p.document, p.summary) for p in nested] == [("propozitia 0", "sentence 0"), ("propozitia 1", "sentence 1")]
    flat = load_translation_pairs(str(parallel / "flat"), "train", source_language="en", target_language="de")
    assert (flat[3].document, flat[3].summary) == ("sentence 3", "Satz 3")


def test_translation_without_its_language_pair_is_one_line(parallel):
    with pytest.raises(UserError, match=r"needs its language pair: set source_language and target_language"):
        load_translation_pairs(str(parallel / "wmt"), "train", source_language="ro", target_language=None)
    with pytest.raises(UserError, match=r"translation column has languages \['en', 'ro'\], not fr"):
        load_translation_pairs(str(parallel / "wmt"), "train", source_language="ro", target_language="fr")
    with pytest.raises(UserError, match=r"no column 'fr'.*source_language / target_language"):
        load_translation_pairs(str(parallel / "flat"), "train", source_language="fr", target_language="en")


def test_labelled_texts_become_label_names(tmp_path):
    features = datasets.Features({"text": datasets.Value("string"),
                                  "label": datasets.ClassLabel(names=["negative", "positive"])})
    table = datasets.Dataset.from_dict({"text": ["bad", "good", "fine"], "label": [0, 1, 1]}, features=features)
    datasets.DatasetDict({"test": table}).save_to_disk(tmp_path / "sst")
    pairs = load_labelled(str(tmp_path / "sst"), "test")
    assert [(p.document, p.summary) for p in pairs] == [("bad", "negative"), ("good", "positive"), ("fine", "positive")]
    with pytest.raises(UserError, match=r"no column 'sentiment'.*text_column / label_column"):
        load_labelled(str(tmp_path / "sst"), "test", label_column="sentiment")
