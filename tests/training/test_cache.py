import pytest

from shrinktune.training.cache import cached_dir, fingerprint


def test_produces_once_then_reuses(tmp_path):
    calls = []

    def produce(folder):
        calls.append(folder)
        (folder / "value.txt").write_text("42")

    first = cached_dir("things", "k1", produce, root=tmp_path)
    second = cached_dir("things", "k1", produce, root=tmp_path)
    assert first == second and len(calls) == 1 and (first / "value.txt").read_text() == "42"


def test_failed_producer_leaves_nothing(tmp_path):
    def produce(folder):
        (folder / "half.txt").write_text("x")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        cached_dir("things", "k2", produce, root=tmp_path)
    assert not (tmp_path / "things" / "k2").exists()
    assert [p.name for p in (tmp_path / "things").iterdir() if not p.name.endswith(".lock")] == []


def test_fingerprint_is_stable_and_order_free():
    assert fingerprint({"a": 1, "b": 2}) == fingerprint({"b": 2, "a": 1})
    assert fingerprint({"a": 1}) != fingerprint({"a": 2})
