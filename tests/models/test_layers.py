import pytest

from shrinktune.errors import ConfigError
from shrinktune.models.layers import layers_to_keep


@pytest.mark.parametrize("student,kept", [(1, [0]), (2, [0, 6]), (3, [0, 6, 11]), (4, [0, 4, 8, 11]), (6, [0, 2, 4, 7, 9, 11])])
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
    from shrinktune.models.layers import resolve_layers

    assert resolve_layers(None, 4) == [0, 1, 2, 3]
    assert resolve_layers([0, 1], 6) == [0, 1]  # a prefix
    assert resolve_layers(2, 12, "asymmetric") == [0, 11]
    with pytest.raises(ConfigError, match=r"kept decoder layers must be increasing, distinct indices in 0..5, got \[0, 6\]"):
        resolve_layers([0, 6], 6)
