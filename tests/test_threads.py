"""call_from_thread, stop() from other threads, and the waker."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator

import pytest

from reactor import Reactor
from reactor.waker import Waker
from tests.conftest import make_reactor, run_until

pytestmark = pytest.mark.timeout(60)

THREADS = 8
CALLS = 10_000


class PollSpy:
    """Wraps a reactor's poller to tell when the loop is about to block."""

    def __init__(self, reactor: Reactor) -> None:
        self.inner = reactor._fds.poller
        self.name = self.inner.name
        self.blocking = threading.Event()
        reactor._fds.poller = self  # type: ignore[assignment]

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)

    def poll(self, timeout: float | None) -> list[tuple[int, int]]:
        if timeout is None:
            self.blocking.set()
        return self.inner.poll(timeout)


@pytest.fixture
def waker() -> Iterator[Waker]:
    w = Waker()
    yield w
    w.close()


def start_thread(target: Callable[[], object]) -> threading.Thread:
    t = threading.Thread(target=target, daemon=True)
    t.start()
    return t


def test_many_threads_call_from_thread(reactor: Reactor, monkeypatch: pytest.MonkeyPatch) -> None:
    waker_fd = reactor._waker._wfd
    writes = [0]
    real_write = os.write

    def counting_write(fd: int, data: bytes) -> int:
        if fd == waker_fd:
            writes[0] += 1
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", counting_write)

    received: list[list[int]] = [[] for _ in range(THREADS)]
    total = [0]
    loop_thread = threading.get_ident()
    wrong_thread: list[int] = []

    def record(tid: int, i: int) -> None:
        if threading.get_ident() != loop_thread:
            wrong_thread.append(tid)
        received[tid].append(i)
        total[0] += 1
        if total[0] == THREADS * CALLS:
            reactor.stop()

    barrier = threading.Barrier(THREADS)

    def worker(tid: int) -> None:
        barrier.wait()
        call = reactor.call_from_thread
        for i in range(CALLS):
            call(record, tid, i)

    threads: list[threading.Thread] = []

    def start_all() -> None:
        for tid in range(THREADS):
            threads.append(start_thread(lambda tid=tid: worker(tid)))  # type: ignore[misc]

    reactor.call_soon(start_all)  # the threads race with a running loop
    reactor.run()
    for t in threads:
        t.join(10)
    assert total[0] == THREADS * CALLS
    for tid in range(THREADS):
        assert received[tid] == list(range(CALLS)), f"thread {tid} out of order"
    assert wrong_thread == []
    # Wake-ups are coalesced: far fewer writes than calls.
    assert writes[0] < THREADS * CALLS // 10, writes[0]
    assert writes[0] <= THREADS * (reactor.stats()["iterations"] + 1)


def test_call_soon_threadsafe_alias(reactor: Reactor) -> None:
    done: list[int] = []
    reactor.call_soon_threadsafe(done.append, 1)
    run_until(reactor, lambda: done)
    out: list[int] = []
    t = start_thread(lambda: reactor.call_soon_threadsafe(out.append, 1))
    t.join()
    run_until(reactor, lambda: out)


def test_call_from_thread_wakes_a_blocked_loop(reactor: Reactor) -> None:
    spy = PollSpy(reactor)
    out: list[str] = []

    def worker() -> None:
        spy.blocking.wait(10)
        reactor.call_from_thread(out.append, "woken")
        reactor.call_from_thread(reactor.stop)

    t = start_thread(worker)
    reactor.run()  # no timers, no fds: only the waker can end the wait
    t.join()
    assert out == ["woken"]


def test_stop_from_another_thread_wakes_a_blocked_loop(reactor: Reactor) -> None:
    spy = PollSpy(reactor)

    def worker() -> None:
        spy.blocking.wait(10)
        reactor.stop()

    for _ in range(3):
        spy.blocking.clear()
        t = start_thread(worker)
        reactor.run()
        t.join()
        assert not reactor.is_running()


def test_stop_from_another_thread_before_run(reactor: Reactor) -> None:
    t = start_thread(reactor.stop)
    t.join()
    reactor.run()  # one turn, no blocking


def test_ping_pong_never_loses_a_wakeup(reactor: Reactor) -> None:
    # One call at a time, each waiting for the loop to run it: a lost wake-up
    # leaves the loop asleep (it has nothing else to wake it) and the thread
    # waiting. The long timer only bounds a failing test.
    rounds = 3000
    done = threading.Event()
    failed: list[int] = []
    count = [0]

    def pong() -> None:
        count[0] += 1
        done.set()

    def worker() -> None:
        for i in range(rounds):
            done.clear()
            reactor.call_from_thread(pong)
            if not done.wait(10):
                failed.append(i)
                return
        reactor.call_from_thread(reactor.stop)

    guard = reactor.call_later(50, reactor.stop)
    t = start_thread(worker)
    reactor.run()
    t.join()
    guard.cancel()
    assert failed == []
    assert count[0] == rounds


def test_call_from_thread_after_close_raises(backend: str) -> None:
    r = make_reactor(backend)
    r.close()
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            r.call_from_thread(print)
        except RuntimeError as exc:
            errors.append(exc)

    t = start_thread(worker)
    t.join()
    assert len(errors) == 1
    assert "closed" in str(errors[0])
    with pytest.raises(RuntimeError, match="closed"):
        r.call_from_thread(print)


def test_reactors_in_their_own_threads(backend: str) -> None:
    reactors = [make_reactor(backend) for _ in range(4)]
    results: list[int] = []
    lock = threading.Lock()

    def run(i: int) -> None:
        r = reactors[i]

        def finish() -> None:
            with lock:
                results.append(i)
            r.stop()

        r.call_later(0.01 * i, finish)
        r.run()

    threads = [start_thread(lambda i=i: run(i)) for i in range(4)]  # type: ignore[misc]
    for t in threads:
        t.join(20)
    assert sorted(results) == [0, 1, 2, 3]
    # Each can be stopped from the main thread while blocked, too.
    spies = [PollSpy(r) for r in reactors]
    threads = [start_thread(r.run) for r in reactors]
    for spy, r in zip(spies, reactors, strict=True):
        spy.blocking.wait(10)
        r.stop()
    for t in threads:
        t.join(20)
        assert not t.is_alive()
    for r in reactors:
        r.close()


# --------------------------------------------------------------------- the waker


def test_waker_coalesces(waker: Waker, monkeypatch: pytest.MonkeyPatch) -> None:
    writes = [0]
    real_write = os.write

    def counting_write(fd: int, data: bytes) -> int:
        writes[0] += 1
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", counting_write)
    for _ in range(1000):
        waker.wake()
    assert writes[0] == 1
    waker.consume()
    waker.wake()
    assert writes[0] == 2
    waker.consume()
    waker.consume()  # nothing to read: harmless
    assert waker.fileno() >= 0


def test_waker_makes_its_fd_readable(waker: Waker) -> None:
    import select

    assert select.select([waker.fileno()], [], [], 0)[0] == []
    waker.wake()
    assert select.select([waker.fileno()], [], [], 0)[0] == [waker.fileno()]
    waker.consume()
    assert select.select([waker.fileno()], [], [], 0)[0] == []


def test_waker_after_close(waker: Waker) -> None:
    waker.close()
    assert waker.fileno() == -1
    waker.wake()  # a thread may still wake it: ignored
    waker.consume()
    waker.close()  # idempotent
