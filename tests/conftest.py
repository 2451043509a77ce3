"""Shared fixtures: every reactor test runs once per available backend.

Like Twisted's ``reactormixins``, the ``reactor`` fixture is parametrized
over every readiness backend this machine has, plus the kqueue adapter over
an emulation of ``select.kqueue`` where the platform has no real kqueue.
"""

from __future__ import annotations

import select
import signal
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import pytest

from reactor import Reactor, available_backends

# A shell that starts a job in the background without job control (`cmd &`
# in a script, nohup) hands it SIGINT ignored. Python then leaves it ignored,
# so no KeyboardInterrupt exists and the tests of SIGINT, and the programs
# the docs tests run, would see SIG_IGN instead of what a terminal gives.
# Put Python's own handler back, as an interactive start would have it.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

if TYPE_CHECKING:
    from reactor.aio import EventLoop

BACKENDS = list(available_backends())
if not hasattr(select, "kqueue"):
    # No real kqueue here: run the kqueue adapter over the emulation too.
    BACKENDS.append("kqueue-emulated")


def make_reactor(name: str, **options: Any) -> Reactor:
    """A reactor on the named backend (``options`` go to ``Reactor``)."""
    if name == "kqueue-emulated":
        from tests.kqueue_emulation import make_emulated_kqueue_poller

        return Reactor(backend=make_emulated_kqueue_poller(), **options)
    return Reactor(backend=name, **options)


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """The name of a backend (for tests that make their own reactors)."""
    return str(request.param)


@pytest.fixture
def loop(backend: str) -> Iterator[EventLoop]:
    """A ``reactor.aio.EventLoop`` on a fresh reactor of each backend; both closed afterwards."""
    from reactor.aio import EventLoop  # here: most test modules never need asyncio

    r = make_reactor(backend)
    aio_loop = EventLoop(reactor=r)
    try:
        yield aio_loop
    finally:
        aio_loop.close()
        r.close()


@pytest.fixture
def reactor(backend: str) -> Iterator[Reactor]:
    """A fresh reactor on each available backend, closed afterwards."""
    r = make_reactor(backend)
    try:
        yield r
    finally:
        if r.is_running():  # pragma: no cover - a test left it running
            r.stop()
        r.close()


def run_until(
    reactor: Reactor, predicate: Callable[[], object], timeout: float = 10.0, what: str = ""
) -> None:
    """Turn the loop until ``predicate()`` is true; fail the test after ``timeout`` s.

    This is how tests synchronize: on a condition becoming true, never on a
    sleep. The timeout only bounds a broken test.
    """
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what or predicate}")
        reactor.run_once(0.05)
