"""The driver's Ctrl-C outside Tune's `fit` (the teacher's preparation, the re-check): one that a library swallows
still stops the search at the next wait step, and Tune's leftover handler does not eat one during the re-check."""

import signal

import pytest

from shrinktune.search import runner


class _SwallowingRay:
    """A Ray whose `wait` receives a Ctrl-C and swallows the KeyboardInterrupt it raises, then reports nothing
    ready; `ready_after` calls later, the result is there."""

    def __init__(self, ready_after: int | None = None):
        self.calls, self.ready_after = 0, ready_after

    def wait(self, refs, timeout):
        self.calls += 1
        if self.calls == 1:
            try:
                signal.raise_signal(signal.SIGINT)  # its handler runs before this returns
            except KeyboardInterrupt:
                pass  # what a library that catches everything does
        ready = self.ready_after is not None and self.calls >= self.ready_after
        return (refs if ready else []), []

    def get(self, ref):
        return "result"


@pytest.fixture
def default_handler():
    previous = signal.getsignal(signal.SIGINT)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def test_a_swallowed_ctrl_c_still_stops_the_wait(default_handler):
    ray = _SwallowingRay(ready_after=3)  # a driver that forgot the Ctrl-C would get the result at the third step
    with runner._ctrl_c_remembered():
        with pytest.raises(KeyboardInterrupt):
            runner._awaited(ray, "ref", step_s=0.01)
    assert ray.calls == 1  # stopped at the next step
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the previous handler is back


def test_a_ctrl_c_as_the_result_arrives_is_not_lost(default_handler):
    with runner._ctrl_c_remembered():
        with pytest.raises(KeyboardInterrupt):
            runner._awaited(_SwallowingRay(ready_after=1), "ref", step_s=0.01)


def test_without_a_ctrl_c_the_result_comes_back(default_handler):
    class Ready:
        def wait(self, refs, timeout):
            return refs, []

        def get(self, ref):
            return 42

    with runner._ctrl_c_remembered():
        assert runner._awaited(Ready(), "ref") == 42


def test_tunes_leftover_handler_is_replaced_for_the_recheck(default_handler):
    events = []
    with runner._ctrl_c_remembered():
        signal.signal(signal.SIGINT, lambda signum, frame: events.append(signum))  # as Tune's fit leaves it
        runner._reinstall_ctrl_c()
        with pytest.raises(KeyboardInterrupt):
            signal.raise_signal(signal.SIGINT)
    assert events == []


def test_a_handler_set_by_the_caller_is_left_alone():
    previous = signal.getsignal(signal.SIGINT)
    mine = lambda signum, frame: None  # noqa: E731
    signal.signal(signal.SIGINT, mine)
    try:
        with runner._ctrl_c_remembered():
            assert signal.getsignal(signal.SIGINT) is mine
        assert signal.getsignal(signal.SIGINT) is mine
    finally:
        signal.signal(signal.SIGINT, previous)


def test_a_ctrl_c_seen_by_one_search_does_not_stop_the_next(default_handler):
    with runner._ctrl_c_remembered():
        with pytest.raises(KeyboardInterrupt):
            runner._awaited(_SwallowingRay(ready_after=3), "ref", step_s=0.01)
    runner._awaited(_SwallowingRay(ready_after=1), "ref", step_s=0.01)  # outside a search: its caller's handler
    with runner._ctrl_c_remembered():
        class Ready:
            def wait(self, refs, timeout):
                return refs, []

            def get(self, ref):
                return 42

        assert runner._awaited(Ready(), "ref") == 42
