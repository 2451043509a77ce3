"""run_in_thread and run_from_thread: concurrent.futures between the loop and threads.

``reactor.run_in_thread(fn, *args)`` runs blocking ``fn`` in a worker thread
and returns a ``concurrent.futures.Future``; a result goes back to the loop
with ``future.add_done_callback(lambda f: reactor.call_from_thread(...))``.

``reactor.run_from_thread(fn, *args)`` goes the other way: another thread
has ``fn`` run on the loop and gets a Future of its result, on which it may
block while the loop runs (Twisted's ``blockingCallFromThread``).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import CancelledError, Future
from typing import Any

import pytest

from reactor import Reactor
from tests.conftest import make_reactor, run_until

pytestmark = pytest.mark.timeout(60)

#: How long a thread waits on a future before the test counts it as hung.
WAIT = 10.0


def start_thread(target: Callable[[], object]) -> threading.Thread:
    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread


class BoomError(Exception):
    pass


def add(a: int, b: int) -> int:
    return a + b


def fail(message: str) -> None:
    raise BoomError(message)


# ------------------------------------------------------------ run_in_thread


def test_run_in_thread_returns_a_future_of_the_result(reactor: Reactor) -> None:
    ran_in: list[int] = []

    def work(a: int, b: int) -> int:
        ran_in.append(threading.get_ident())
        return a * b

    future = reactor.run_in_thread(work, 6, 7)
    assert isinstance(future, Future)
    # The loop is not running: the worker does not need it.
    assert future.result(timeout=WAIT) == 42
    assert ran_in and ran_in[0] != threading.get_ident()


def test_run_in_thread_passes_the_exception_on(reactor: Reactor) -> None:
    future = reactor.run_in_thread(fail, "in a worker")
    error = future.exception(timeout=WAIT)
    assert isinstance(error, BoomError)
    assert str(error) == "in a worker"
    with pytest.raises(BoomError, match="in a worker"):
        future.result(timeout=0)


def test_run_in_thread_result_comes_back_on_the_loop(reactor: Reactor) -> None:
    """The documented pattern: add_done_callback + call_from_thread."""
    loop_thread = threading.get_ident()
    got: list[tuple[int, int]] = []

    def deliver(f: Future[int]) -> None:
        got.append((threading.get_ident(), f.result()))

    future = reactor.run_in_thread(add, 2, 3)
    future.add_done_callback(lambda f: reactor.call_from_thread(deliver, f))
    run_until(reactor, lambda: got, what="the result on the loop")
    assert got == [(loop_thread, 5)]


def test_run_in_thread_while_the_loop_runs(reactor: Reactor) -> None:
    """Started from a callback; the loop goes on serving while the job runs."""
    release = threading.Event()
    results: list[str] = []
    ticks: list[int] = []

    def slow() -> str:
        # Blocks until the loop has shown it keeps running meanwhile.
        if not release.wait(WAIT):
            return "not released"
        return "done"

    def finished(f: Future[str]) -> None:
        results.append(f.result())
        reactor.stop()

    def tick() -> None:
        ticks.append(1)
        if len(ticks) == 3:
            release.set()
        else:
            reactor.call_soon(tick)

    def start() -> None:
        future = reactor.run_in_thread(slow)
        future.add_done_callback(lambda f: reactor.call_from_thread(finished, f))
        reactor.call_soon(tick)

    reactor.call_soon(start)
    guard = reactor.call_later(WAIT * 2, reactor.stop)
    reactor.run()
    guard.cancel()
    assert results == ["done"]
    assert len(ticks) == 3


def test_run_in_thread_many_jobs(reactor: Reactor) -> None:
    futures = [reactor.run_in_thread(add, i, i) for i in range(50)]
    assert [f.result(timeout=WAIT) for f in futures] == [2 * i for i in range(50)]


def test_an_exception_delivered_through_call_from_thread_reaches_the_loop(
    reactor: Reactor,
) -> None:
    errors: list[BaseException | None] = []
    future = reactor.run_in_thread(fail, "reported")
    future.add_done_callback(lambda f: reactor.call_from_thread(errors.append, f.exception()))
    run_until(reactor, lambda: errors, what="the exception on the loop")
    assert isinstance(errors[0], BoomError)


# ---------------------------------------------------------- run_from_thread


def test_run_from_thread_runs_on_the_loop_and_returns_a_future(reactor: Reactor) -> None:
    loop_thread = threading.get_ident()
    ran_in: list[int] = []
    outcome: list[object] = []

    def on_loop(a: int, b: int) -> int:
        ran_in.append(threading.get_ident())
        return a + b

    def other_thread() -> None:
        future = reactor.run_from_thread(on_loop, 20, 22)
        outcome.append(isinstance(future, Future))
        outcome.append(future.result(timeout=WAIT))  # blocks while the loop runs

    thread = start_thread(other_thread)
    run_until(reactor, lambda: not thread.is_alive(), what="the other thread to finish")
    assert outcome == [True, 42]
    assert ran_in == [loop_thread]


def test_run_from_thread_exception_goes_to_the_future_and_is_not_logged(
    reactor: Reactor, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    outcome: list[BaseException] = []

    def other_thread() -> None:
        future = reactor.run_from_thread(fail, "for the caller")
        try:
            future.result(timeout=WAIT)
        except BoomError as exc:
            outcome.append(exc)

    thread = start_thread(other_thread)
    run_until(reactor, lambda: not thread.is_alive(), what="the other thread to finish")
    assert len(outcome) == 1
    assert str(outcome[0]) == "for the caller"
    reactor.run_once(0)  # nothing left over to report
    logged = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert logged == [], [r.getMessage() for r in logged]


def test_blocking_calls_from_a_thread_while_run_is_running(reactor: Reactor) -> None:
    """Twisted's blockingCallFromThread: a thread drives the loop's state step by step."""
    state: list[int] = []
    seen: list[list[int]] = []
    problems: list[BaseException] = []

    def append_and_copy(n: int) -> list[int]:
        state.append(n)
        return list(state)

    def other_thread() -> None:
        try:
            for n in range(100):
                seen.append(reactor.run_from_thread(append_and_copy, n).result(timeout=WAIT))
        except BaseException as exc:  # reported by the test, not lost in the thread
            problems.append(exc)
        finally:
            reactor.call_from_thread(reactor.stop)

    guard = reactor.call_later(WAIT * 3, reactor.stop)
    reactor.call_soon(start_thread, other_thread)
    reactor.run()
    guard.cancel()
    assert problems == []
    assert state == list(range(100))
    assert seen[-1] == list(range(100))
    assert all(len(snapshot) == i + 1 for i, snapshot in enumerate(seen))


def test_run_from_thread_does_not_hang_when_the_reactor_closes_first(backend: str) -> None:
    """A call queued but not yet run when the reactor closes must not leave its
    waiter hanging: the future is cancelled or fails with RuntimeError.

    (If close() runs the callbacks already queued, the call may instead run
    during close() and the future get its result; either way it is done.)
    """
    reactor = make_reactor(backend)
    ran: list[int] = []
    queued = threading.Event()
    futures: list[Future[int]] = []

    def on_loop() -> int:
        ran.append(1)
        return 1

    def other_thread() -> None:
        futures.append(reactor.run_from_thread(on_loop))
        queued.set()

    start_thread(other_thread).join(WAIT)
    assert queued.is_set()
    reactor.close()  # the loop never ran
    future = futures[0]
    if ran:
        assert future.result(timeout=5) == 1  # it ran, inside close()
    else:
        with pytest.raises((CancelledError, RuntimeError)):
            future.result(timeout=5)  # not TimeoutError: the waiter is released


def test_a_waiting_thread_is_released_when_the_reactor_closes(backend: str) -> None:
    """The other thread is already blocked in future.result() when close() happens."""
    reactor = make_reactor(backend)
    blocked = threading.Event()
    outcome: list[str] = []

    def never_runs_before_close() -> int:
        return 1

    def other_thread() -> None:
        future = reactor.run_from_thread(never_runs_before_close)
        blocked.set()
        try:
            future.result(timeout=WAIT)
            outcome.append("result")
        except (CancelledError, RuntimeError):
            outcome.append("released")
        except Exception as exc:  # a TimeoutError: it hung
            outcome.append(type(exc).__name__)

    thread = start_thread(other_thread)
    assert blocked.wait(WAIT)
    reactor.close()
    thread.join(WAIT)
    assert not thread.is_alive()
    assert outcome in (["released"], ["result"])


def test_run_from_thread_on_a_closed_reactor_raises(backend: str) -> None:
    reactor = make_reactor(backend)
    reactor.close()
    errors: list[BaseException] = []

    def other_thread() -> None:
        try:
            reactor.run_from_thread(add, 1, 2)
        except RuntimeError as exc:
            errors.append(exc)

    start_thread(other_thread).join(WAIT)
    assert len(errors) == 1
    with pytest.raises(RuntimeError):
        reactor.run_from_thread(add, 1, 2)


def test_run_from_thread_calls_run_in_the_order_one_thread_made_them(reactor: Reactor) -> None:
    order: list[int] = []
    futures: list[Future[Any]] = []

    def other_thread() -> None:
        futures.extend(reactor.run_from_thread(order.append, i) for i in range(200))

    start_thread(other_thread).join(WAIT)
    run_until(reactor, lambda: len(order) == 200, what="200 calls")
    assert order == list(range(200))
    assert all(f.done() and f.result() is None for f in futures)
