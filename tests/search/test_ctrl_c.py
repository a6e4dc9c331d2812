"""The driver's Ctrl-C after Tune's `fit`: Tune leaves its own SIGINT handler installed when no Ctrl-C came, which
would swallow a first Ctrl-C during the front's re-check; the search puts its own handler back (`_sigint_kept`)."""

import signal

import pytest

from shrinktune.search import runner


@pytest.fixture
def default_handler():
    previous = signal.getsignal(signal.SIGINT)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def test_tunes_leftover_handler_is_replaced_so_a_ctrl_c_stops_the_recheck(default_handler):
    events = []
    with runner._sigint_kept():
        signal.signal(signal.SIGINT, lambda signum, frame: events.append(signum))  # as Tune's fit leaves it
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    with pytest.raises(KeyboardInterrupt):
        signal.raise_signal(signal.SIGINT)  # its handler runs before this returns
    assert events == []


def test_the_handler_is_put_back_when_fit_is_interrupted(default_handler):
    with pytest.raises(KeyboardInterrupt):
        with runner._sigint_kept():
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            raise KeyboardInterrupt  # a second Ctrl-C ends `fit` at once
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_handler_set_by_the_caller_is_kept():
    previous = signal.getsignal(signal.SIGINT)
    mine = lambda signum, frame: None  # noqa: E731
    signal.signal(signal.SIGINT, mine)
    try:
        with runner._sigint_kept():
            signal.signal(signal.SIGINT, signal.default_int_handler)
        assert signal.getsignal(signal.SIGINT) is mine
    finally:
        signal.signal(signal.SIGINT, previous)
