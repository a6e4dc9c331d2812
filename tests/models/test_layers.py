import pytest

from shrinktune.errors import ConfigError
from shrinktune.models.layers import layers_to_keep, resolve_layers


@pytest.mark.parametrize("student,kept", [(1, [0]), (2, [0, 6]), (3, [0, 6, 11]), (4, [0, 4, 8, 11]),
                                          (6, [0, 2, 4, 7, 9, 11])])
def test_distilbart_maps_for_a_12_layer_teacher(student, kept):
    assert layers_to_keep(student, 12) == kept


def test_other_depths_keep_first_and_last():
    assert layers_to_keep(3, 6) == [0, 2, 5]
    assert layers_to_keep(6, 6) == [0, 1, 2, 3, 4, 5]


@pytest.mark.parametrize("student", [0, 7])
def test_impossible_depths_are_refused(student):
    with pytest.raises(ConfigError, match="between 1 and 6 layers"):
        layers_to_keep(student, 6)


@pytest.mark.parametrize("student,kept", [(2, [0, 11]), (4, [0, 3, 8, 11]), (6, [0, 2, 4, 6, 8, 10])])
def test_asymmetric_pruning_maps_for_a_12_layer_teacher(student, kept):
    assert layers_to_keep(student, 12, "asymmetric") == kept


def test_explicit_kept_layers_and_defaults():
    assert resolve_layers(None, 4) == [0, 1, 2, 3]
    assert resolve_layers([0, 1], 6) == [0, 1]  # a prefix
    assert resolve_layers(2, 12, "asymmetric") == [0, 11]
    with pytest.raises(ConfigError,
                       match=r"kept decoder layers must be increasing, distinct indices in 0..5, got \[0, 6\]"):
        resolve_layers([0, 6], 6)


# Every kept-layer map the reference lists (Shleifer & Rush 2020 for distilbart; Campos & Zhai 2023 for asymmetric).
REFERENCE_MAPS = [
    ("distilbart", 12, 1, [0]),
    ("distilbart", 12, 2, [0, 6]),
    ("distilbart", 12, 3, [0, 6, 11]),
    ("distilbart", 12, 4, [0, 4, 8, 11]),
    ("distilbart", 12, 6, [0, 2, 4, 7, 9, 11]),
    ("distilbart", 12, 9, [0, 1, 2, 4, 5, 7, 9, 10, 11]),
    ("distilbart", 16, 4, [0, 5, 10, 15]),
    ("distilbart", 16, 8, [0, 2, 4, 6, 8, 10, 12, 15]),
    ("asymmetric", 12, 2, [0, 11]),
    ("asymmetric", 12, 4, [0, 3, 8, 11]),
    ("asymmetric", 12, 6, [0, 2, 4, 6, 8, 10]),
]


@pytest.mark.parametrize("scheme,teacher,student,kept", REFERENCE_MAPS)
def test_every_published_map_is_kept_exactly(scheme, teacher, student, kept):
    """Catches a typo in any published map, e.g. 16→4 as [0, 5, 10, 14] or 12→9 with a layer swapped."""
    assert layers_to_keep(student, teacher, scheme) == kept


@pytest.mark.parametrize("scheme,teacher,student,kept", REFERENCE_MAPS)
def test_published_maps_are_increasing_distinct_teacher_layers(scheme, teacher, student, kept):
    """Catches a map entry of the wrong length, out of range, or unsorted (also checked via resolve_layers)."""
    result = resolve_layers(student, teacher, scheme)
    assert len(result) == student
    assert result == sorted(set(result)) and 0 <= result[0] and result[-1] < teacher


def test_returned_map_is_a_copy():
    """Catches returning the module's own list: a caller's edit must not change the published map."""
    kept = layers_to_keep(4, 16)
    kept.append(99)
    assert layers_to_keep(4, 16) == [0, 5, 10, 15]
