"""The reactor itself: construction, running and stopping, closing, the
exception sink, fd watching and stats, on every backend."""

from __future__ import annotations

import logging
import os
import resource
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from protocols import Protocol
from reactor import Reactor, ReactorStats, available_backends
from reactor.backends import READ, WRITE, Poller, make_poller
from reactor.backends.select import FD_SETSIZE
from tests.conftest import make_reactor, run_until

pytestmark = pytest.mark.timeout(60)

ROOT = Path(__file__).resolve().parent.parent


def fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


def real_backend_name(backend: str) -> str:
    return "kqueue" if backend == "kqueue-emulated" else backend


@pytest.fixture
def pipe() -> Iterator[tuple[int, int]]:
    """A pipe whose ends are closed afterwards unless the test closed them."""
    rfd, wfd = os.pipe()
    os.set_blocking(rfd, False)
    os.set_blocking(wfd, False)
    yield rfd, wfd
    for fd in (rfd, wfd):
        try:
            os.close(fd)
        except OSError:
            pass


@pytest.fixture
def sockpair() -> Iterator[tuple[socket.socket, socket.socket]]:
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)
    yield a, b
    a.close()
    b.close()


class ProxyPoller:
    """Wraps a real backend's poller; can make register/modify fail on demand."""

    def __init__(self, inner: Poller) -> None:
        self.inner = inner
        self.name = inner.name
        self.fail_register: BaseException | None = None
        self.fail_modify: BaseException | None = None
        self.polls = 0

    def register(self, fd: int, events: int) -> None:
        if self.fail_register is not None:
            raise self.fail_register
        self.inner.register(fd, events)

    def modify(self, fd: int, events: int) -> None:
        if self.fail_modify is not None:
            raise self.fail_modify
        self.inner.modify(fd, events)

    def unregister(self, fd: int) -> None:
        self.inner.unregister(fd)

    def poll(self, timeout: float | None) -> list[tuple[int, int]]:
        self.polls += 1
        return self.inner.poll(timeout)

    def close(self) -> None:
        self.inner.close()


def proxied(reactor: Reactor) -> ProxyPoller:
    proxy = ProxyPoller(reactor._fds.poller)
    reactor._fds.poller = proxy
    return proxy


# ------------------------------------------------------------------ construction


def test_backend_name(reactor: Reactor, backend: str) -> None:
    assert reactor.backend == real_backend_name(backend)
    assert reactor.backend in repr(reactor)
    assert "idle" in repr(reactor)
    assert not reactor.is_running()
    assert not reactor.is_closed()


def test_unknown_backend_names_the_available_ones(backend: str) -> None:
    with pytest.raises(ValueError) as info:
        Reactor(backend="nonsense")
    message = str(info.value)
    assert "nonsense" in message
    for name in available_backends():
        assert name in message


def test_reactor_backend_environment_variable(
    backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REACTOR_BACKEND", real_backend_name(backend))
    if backend == "kqueue-emulated":
        # No real kqueue here: the variable names a backend this platform lacks.
        with pytest.raises(ValueError, match="not available"):
            Reactor()
        return
    with Reactor() as r:
        assert r.backend == backend
    # An explicit argument wins over the variable.
    with Reactor(backend="select") as r:
        assert r.backend == "select"


def test_reactor_backend_environment_variable_unknown(
    backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REACTOR_BACKEND", "nonsense")
    with pytest.raises(ValueError, match="available backends"):
        Reactor()
    monkeypatch.setenv("REACTOR_BACKEND", "")
    with Reactor() as r:  # empty means "the best one"
        assert r.backend == available_backends()[0]


def test_several_reactors_at_once(backend: str) -> None:
    reactors = [make_reactor(backend) for _ in range(3)]
    try:
        fired: list[int] = []
        for i, r in enumerate(reactors):
            r.call_later(0.01 * (3 - i), fired.append, i)
        # Turn them in an interleaved way; each sees only its own timers.
        deadline = time.monotonic() + 10
        while len(fired) < 3 and time.monotonic() < deadline:
            for r in reactors:
                r.run_once(0.005)
        assert sorted(fired) == [0, 1, 2]
        for r in reactors:
            assert r.stats()["timers_pending"] == 0
    finally:
        for r in reactors:
            r.close()


def test_waker_creation_failure_releases_the_poller(
    backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_more_fds(*args: object) -> None:
        raise OSError(24, "Too many open files")

    before = fd_count()
    # The waker's own system call fails (the os module's, which the compiled
    # build looks up at each call too, unlike the loop module's names).
    monkeypatch.setattr(os, "eventfd" if hasattr(os, "eventfd") else "pipe", no_more_fds)
    for _ in range(5):
        with pytest.raises(OSError, match="Too many"):
            make_reactor(backend)
    assert fd_count() == before


def make_poller_for(backend: str) -> Poller:
    if backend == "kqueue-emulated":
        from tests.kqueue_emulation import make_emulated_kqueue_poller

        return make_emulated_kqueue_poller()
    return make_poller(backend)


def test_waker_registration_failure_releases_everything(backend: str) -> None:
    make_reactor(backend).close()
    before = fd_count()
    for _ in range(5):
        proxy = ProxyPoller(make_poller_for(backend))
        proxy.fail_register = ValueError("fd 1030 is at or above FD_SETSIZE")
        with pytest.raises(ValueError, match="FD_SETSIZE"):
            Reactor(backend=proxy)
    assert fd_count() == before


def test_a_ready_made_poller(backend: str) -> None:
    poller = make_poller_for(backend)
    with Reactor(backend=poller) as r:
        assert r._fds.poller is poller
        assert r.backend == poller.name
        r.call_soon(r.stop)
        r.run()


def test_no_import_time_side_effects() -> None:
    script = textwrap.dedent(
        """
        import logging, os, signal, sys, threading
        def fds():
            return sorted(os.listdir("/proc/self/fd"))
        sigs = [s for s in signal.valid_signals() if s not in (signal.SIGKILL, signal.SIGSTOP)]
        before = (fds(), threading.active_count(), {s: signal.getsignal(s) for s in sigs})
        root_handlers = list(logging.getLogger().handlers)
        import reactor, reactor.loop, reactor.timers, reactor.waker, reactor.backends
        after = (fds(), threading.active_count(), {s: signal.getsignal(s) for s in sigs})
        assert before == after, (before, after)
        assert signal.set_wakeup_fd(-1) == -1
        assert logging.getLogger().handlers == root_handlers
        assert logging.getLogger("reactor").handlers == []
        assert not any(name.startswith("tests") for name in sys.modules)
        print("clean")
        """
    )
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("REACTOR_BACKEND", None)
    out = subprocess.run(
        [sys.executable, "-c", script],
        check=False,
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "clean"


# ------------------------------------------------------------------ run and stop


def test_run_stop_run_again(reactor: Reactor) -> None:
    ran: list[int] = []
    for round_ in range(3):
        reactor.call_soon(ran.append, round_)
        reactor.call_soon(reactor.stop)
        reactor.run()
        assert not reactor.is_running()
    assert ran == [0, 1, 2]


def test_is_running_inside_callbacks(reactor: Reactor) -> None:
    seen: list[object] = []

    def probe() -> None:
        seen.append(reactor.is_running())
        seen.append(repr(reactor))
        reactor.stop()

    reactor.call_soon(probe)
    reactor.run()
    assert seen[0] is True
    assert "running" in str(seen[1])


def test_stop_from_a_timer(reactor: Reactor) -> None:
    start = reactor.time()
    reactor.call_later(0.05, reactor.stop)
    reactor.run()
    assert reactor.time() - start >= 0.049


def test_stop_before_run_does_exactly_one_turn(reactor: Reactor) -> None:
    ran: list[str] = []
    reactor.call_soon(ran.append, "queued")
    reactor.call_later(3600, ran.append, "far future")
    reactor.stop()
    before = reactor.stats()["iterations"]
    reactor.run()
    assert reactor.stats()["iterations"] == before + 1
    assert ran == ["queued"]
    # The stop was used up: the next run() needs its own stop.
    reactor.call_soon(reactor.stop)
    reactor.run()
    assert reactor.stats()["iterations"] == before + 2


def test_stop_before_run_with_nothing_to_do_does_not_block(reactor: Reactor) -> None:
    reactor.stop()
    reactor.run()  # would block forever if the turn waited


def test_stop_when_not_running_is_harmless(reactor: Reactor) -> None:
    reactor.stop()
    reactor.stop()
    reactor.run_once(0)  # run_once uses the stop up
    reactor.call_soon(reactor.stop)
    reactor.run()


def test_callbacks_queued_by_callbacks_wait_for_the_next_turn(reactor: Reactor) -> None:
    order: list[str] = []

    def first() -> None:
        order.append("first")
        reactor.call_soon(order.append, "queued by first")

    reactor.call_soon(first)
    reactor.call_soon(order.append, "second")
    reactor.run_once(0)
    assert order == ["first", "second"]
    reactor.run_once(0)
    assert order == ["first", "second", "queued by first"]


def test_run_while_running_raises(reactor: Reactor) -> None:
    errors: list[BaseException] = []

    def nested() -> None:
        for method in (reactor.run, lambda: reactor.run_once(0)):
            try:
                method()
            except RuntimeError as exc:
                errors.append(exc)
        reactor.stop()

    reactor.call_soon(nested)
    reactor.run()
    assert len(errors) == 2
    assert "already running" in str(errors[0])
    assert "running" in str(errors[1])


def test_run_once_for_embedding(reactor: Reactor, pipe: tuple[int, int]) -> None:
    rfd, wfd = pipe
    got: list[bytes] = []
    reactor.add_reader(rfd, lambda: got.append(os.read(rfd, 100)))
    # Nothing to do: run_once(0) returns at once.
    t0 = time.monotonic()
    for _ in range(100):
        reactor.run_once(0)
    assert time.monotonic() - t0 < 5
    assert got == []
    # A short timeout is waited out...
    t0 = time.monotonic()
    reactor.run_once(0.05)
    assert time.monotonic() - t0 >= 0.04
    # ...a long one is cut short by I/O,
    os.write(wfd, b"ping")
    t0 = time.monotonic()
    reactor.run_once(30)
    assert got == [b"ping"]
    # by a timer,
    fired: list[bool] = []
    reactor.call_later(0.02, fired.append, True)
    t0 = time.monotonic()
    run_until(reactor, lambda: fired)
    reactor.call_later(0.02, fired.append, True)
    reactor.run_once(30)
    assert time.monotonic() - t0 < 10
    # and by a queued callback (no wait at all).
    reactor.call_soon(fired.append, True)
    t0 = time.monotonic()
    reactor.run_once(None)
    assert time.monotonic() - t0 < 5
    assert not reactor.is_running()


def test_run_once_negative_timeout_does_not_block(reactor: Reactor) -> None:
    t0 = time.monotonic()
    reactor.run_once(-1)
    reactor.run_once(-0.5)
    assert time.monotonic() - t0 < 5


def test_far_future_timer_does_not_overflow_the_wait(
    reactor: Reactor, pipe: tuple[int, int]
) -> None:
    # epoll and poll take a C int of milliseconds: 40 days does not fit.
    rfd, wfd = pipe
    got: list[bytes] = []
    reactor.add_reader(rfd, lambda: got.append(os.read(rfd, 100)))
    reactor.call_later(40 * 86400, got.append, b"never")
    os.write(wfd, b"x")
    reactor.run_once(None)
    assert got == [b"x"]
    os.write(wfd, b"y")
    reactor.run_once(1e12)
    assert got == [b"x", b"y"]


# ------------------------------------------------------------------------- close


def test_close_releases_fds(backend: str) -> None:
    for r in [make_reactor(backend) for _ in range(3)]:  # warm up lazy imports
        r.close()
    before = fd_count()
    for _ in range(50):
        r = make_reactor(backend)
        r.listen_tcp(0, Protocol)  # holds a spare descriptor, released at close
        r.call_later(1, lambda: None)
        r.call_every(1, lambda: None)
        r.call_soon(lambda: None)
        r.run_once(0)
        r.close()
    assert fd_count() == before


def test_close_releases_fds_with_signal_handlers(backend: str) -> None:
    import signal

    make_reactor(backend).close()
    before = fd_count()
    for _ in range(10):
        r = make_reactor(backend)
        r.add_signal_handler(signal.SIGUSR1, lambda: None)
        r.close()
    assert fd_count() == before
    assert signal.getsignal(signal.SIGUSR1) is signal.SIG_DFL


def test_close_is_idempotent(reactor: Reactor) -> None:
    reactor.close()
    reactor.close()
    assert reactor.is_closed()
    assert "closed" in repr(reactor)


def test_close_while_running_raises(reactor: Reactor) -> None:
    errors: list[BaseException] = []

    def try_close() -> None:
        try:
            reactor.close()
        except RuntimeError as exc:
            errors.append(exc)
        reactor.stop()

    reactor.call_soon(try_close)
    reactor.run()
    assert len(errors) == 1
    assert "stop() it first" in str(errors[0])
    assert not reactor.is_closed()
    reactor.close()


def test_methods_after_close_raise(reactor: Reactor, pipe: tuple[int, int]) -> None:
    rfd, _ = pipe
    any_factory: Any = object
    reactor.close()
    calls: list[Callable[[], object]] = [
        reactor.run,
        lambda: reactor.run_once(0),
        lambda: reactor.call_soon(print),
        lambda: reactor.call_later(1, print),
        lambda: reactor.call_at(1, print),
        lambda: reactor.call_every(1, print),
        lambda: reactor.call_from_thread(print),
        lambda: reactor.call_soon_threadsafe(print),
        lambda: reactor.add_reader(rfd, print),
        lambda: reactor.add_writer(rfd, print),
        lambda: reactor.add_signal_handler(10, print),
        lambda: reactor.listen_tcp(0, any_factory),
    ]
    for call in calls:
        with pytest.raises(RuntimeError, match="reactor is closed"):
            call()
    # Undoing things is harmless.
    assert reactor.remove_reader(rfd) is False
    assert reactor.remove_writer(rfd) is False
    assert reactor.remove_signal_handler(10) is False
    reactor.stop()
    assert reactor.stats()["registered_fds"] == 0


def test_context_manager(backend: str) -> None:
    with make_reactor(backend) as r:
        r.call_soon(r.stop)
        r.run()
        assert not r.is_closed()
    assert r.is_closed()
    with pytest.raises(ZeroDivisionError), make_reactor(backend) as r2:
        1 / 0  # noqa: B018
    assert r2.is_closed()


def test_close_delivers_queued_callbacks_and_closes_resources(
    reactor: Reactor, caplog: pytest.LogCaptureFixture
) -> None:
    log: list[str] = []

    class Resource:
        kind = "listener"

        def __init__(self, name: str, fail: bool = False) -> None:
            self.name = name
            self.fail = fail
            reactor.resources.add(self)

        def force_close(self) -> None:
            reactor.resources.discard(self)
            if self.fail:
                raise ValueError(f"{self.name} failed to close")
            reactor.call_soon(log.append, f"{self.name} lost")

    Resource("a")
    Resource("b", fail=True)
    cancelled = reactor.call_soon(log.append, "cancelled")
    cancelled.cancel()
    reactor.call_soon(log.append, "queued")

    def boom() -> None:
        raise KeyError("in a closing callback")

    reactor.call_soon(boom)
    timer = reactor.call_later(1, log.append, "timer")
    assert reactor.stats()["resources"] == 2
    with caplog.at_level(logging.ERROR, logger="reactor"):
        reactor.close()
    assert sorted(log) == ["a lost", "queued"]
    assert "b failed to close" in caplog.text
    assert "in a closing callback" in caplog.text
    assert timer.cancelled()
    assert reactor.stats()["resources"] == 0


def test_close_shuts_down_the_worker_threads(reactor: Reactor) -> None:
    first = reactor.run_in_thread(lambda: 42)
    assert first.result(timeout=10) == 42
    second = reactor.run_in_thread(lambda: 1 / 0)
    assert isinstance(second.exception(timeout=10), ZeroDivisionError)
    assert reactor._executor is not None
    reactor.close()
    assert reactor._executor is None


# ----------------------------------------------------------------- exception sink


def test_exception_in_call_soon_is_logged_and_loop_goes_on(
    reactor: Reactor, caplog: pytest.LogCaptureFixture
) -> None:
    def bad() -> None:
        raise ValueError("boom in call_soon")

    ran: list[str] = []
    reactor.call_soon(bad)
    reactor.call_soon(ran.append, "after")
    reactor.call_soon(reactor.stop)
    with caplog.at_level(logging.ERROR, logger="reactor"):
        reactor.run()
    assert ran == ["after"]
    records = [r for r in caplog.records if r.name == "reactor"]
    assert len(records) == 1
    assert records[0].levelno == logging.ERROR
    assert records[0].exc_info is not None
    assert records[0].exc_info[0] is ValueError
    assert "exception in callback" in records[0].getMessage()
    assert "bad" in records[0].getMessage()  # the callback is named
    assert "Traceback" in caplog.text
    assert "boom in call_soon" in caplog.text


def test_exception_in_timer_is_logged(reactor: Reactor, caplog: pytest.LogCaptureFixture) -> None:
    def bad() -> None:
        raise RuntimeError("boom in timer")

    reactor.call_later(0.001, bad)
    reactor.call_later(0.01, reactor.stop)
    with caplog.at_level(logging.ERROR, logger="reactor"):
        reactor.run()
    assert "boom in timer" in caplog.text
    assert "Traceback" in caplog.text


def test_exception_in_reader_is_logged(
    reactor: Reactor, pipe: tuple[int, int], caplog: pytest.LogCaptureFixture
) -> None:
    rfd, wfd = pipe
    reads: list[bytes] = []

    def bad_reader() -> None:
        reads.append(os.read(rfd, 100))
        raise OSError("boom in reader")

    reactor.add_reader(rfd, bad_reader)
    os.write(wfd, b"x")
    with caplog.at_level(logging.ERROR, logger="reactor"):
        run_until(reactor, lambda: reads)
        os.write(wfd, b"y")
        run_until(reactor, lambda: len(reads) == 2)  # still watched, loop alive
    records = [r for r in caplog.records if r.name == "reactor"]
    assert len(records) == 2
    assert all(r.exc_info and str(r.exc_info[1]) == "boom in reader" for r in records)


def test_custom_exception_handler(
    reactor: Reactor, pipe: tuple[int, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    contexts: list[dict[str, Any]] = []
    monkeypatch.setattr(reactor, "call_exception_handler", contexts.append)

    def bad(kind: type[Exception]) -> None:
        raise kind("custom")

    rfd, wfd = pipe
    reactor.call_soon(bad, ValueError)
    reactor.call_later(0, bad, KeyError)

    def reader() -> None:
        os.read(rfd, 10)
        bad(TypeError)

    reactor.add_reader(rfd, reader)
    os.write(wfd, b"x")
    run_until(reactor, lambda: len(contexts) == 3)
    kinds = sorted(type(c["exception"]).__name__ for c in contexts)
    assert kinds == ["KeyError", "TypeError", "ValueError"]
    for context in contexts:
        assert context["message"] == "exception in callback"
        assert "callback" in context


def test_exception_handler_that_raises_does_not_kill_the_loop(
    reactor: Reactor, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken_handler(context: dict[str, Any]) -> None:
        raise RuntimeError("the handler broke")

    monkeypatch.setattr(reactor, "call_exception_handler", broken_handler)
    ran: list[str] = []
    reactor.call_soon(lambda: 1 / 0)
    reactor.call_soon(ran.append, "after")
    reactor.call_soon(reactor.stop)
    with caplog.at_level(logging.ERROR, logger="reactor"):
        reactor.run()
    assert ran == ["after"]
    assert "exception in the exception handler" in caplog.text
    assert "the handler broke" in caplog.text
    # The error it was handling is not lost.
    assert "exception in callback: ZeroDivisionError" in caplog.text


def test_default_handler_without_exception(
    reactor: Reactor, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="reactor"):
        reactor.call_exception_handler({"message": "just a message", "where": "here"})
        reactor.call_exception_handler({})

        # An exception that is false (it has __len__) still gets its traceback.
        class FalseError(Exception):
            def __len__(self) -> int:
                return 0

        try:
            raise FalseError("falsy")
        except FalseError as exc:
            assert not exc
            reactor.call_exception_handler({"message": "false", "exception": exc})
    records = [r for r in caplog.records if r.name == "reactor"]
    assert records[0].exc_info is None
    assert records[0].getMessage() == "just a message\n  where: 'here'"
    assert records[1].getMessage() == "unhandled exception in a callback"
    assert records[2].exc_info is not None
    assert records[2].exc_info[0] is FalseError


@pytest.mark.parametrize("kind", [KeyboardInterrupt, SystemExit])
def test_base_exceptions_propagate_out_of_run(reactor: Reactor, kind: type[BaseException]) -> None:
    ran: list[str] = []

    def interrupt() -> None:
        raise kind()

    reactor.call_soon(ran.append, "before")
    reactor.call_soon(interrupt)
    reactor.call_soon(ran.append, "after")
    with pytest.raises(kind):
        reactor.run()
    assert ran == ["before"]
    assert not reactor.is_running()
    # The reactor can run again; what was queued after the interrupt still runs.
    reactor.call_soon(reactor.stop)
    reactor.run()
    assert ran == ["before", "after"]


def test_keyboard_interrupt_from_a_reader(reactor: Reactor, pipe: tuple[int, int]) -> None:
    rfd, wfd = pipe

    def reader() -> None:
        os.read(rfd, 10)
        raise KeyboardInterrupt

    reactor.add_reader(rfd, reader)
    os.write(wfd, b"x")
    with pytest.raises(KeyboardInterrupt):
        reactor.run()
    assert not reactor.is_running()
    reactor.remove_reader(rfd)
    # From a timer, through run_once().
    os.write(wfd, b"x")
    reactor.call_later(0, reader)
    with pytest.raises(KeyboardInterrupt):
        run_until(reactor, lambda: False)
    assert not reactor.is_running()
    reactor.call_soon(reactor.stop)
    reactor.run()


# ------------------------------------------------------------------- fd watching


def test_reader_on_a_pipe(reactor: Reactor, pipe: tuple[int, int]) -> None:
    rfd, wfd = pipe
    got: list[tuple[str, bytes]] = []
    reactor.add_reader(rfd, lambda tag: got.append((tag, os.read(rfd, 100))), "r")
    assert reactor.stats()["registered_fds"] == 2  # the waker and the pipe
    reactor.run_once(0)
    assert got == []
    os.write(wfd, b"hello")
    run_until(reactor, lambda: got)
    assert got == [("r", b"hello")]
    assert reactor.remove_reader(rfd) is True
    assert reactor.remove_reader(rfd) is False
    assert reactor.stats()["registered_fds"] == 1
    os.write(wfd, b"unheard")
    for _ in range(3):
        reactor.run_once(0)
    assert got == [("r", b"hello")]


def test_writer_on_a_socketpair(
    reactor: Reactor, sockpair: tuple[socket.socket, socket.socket]
) -> None:
    a, _ = sockpair
    writable: list[int] = []

    def on_writable(n: int) -> None:
        writable.append(n)
        if len(writable) == 3:
            reactor.remove_writer(a)

    reactor.add_writer(a, on_writable, 7)
    run_until(reactor, lambda: len(writable) == 3)
    assert writable == [7, 7, 7]  # level-triggered: called each turn
    assert reactor.remove_writer(a) is False
    assert reactor.remove_writer(a.fileno()) is False


def test_objects_with_fileno(reactor: Reactor, pipe: tuple[int, int]) -> None:
    rfd, wfd = pipe

    class Source:
        def fileno(self) -> int:
            return rfd

    got: list[bytes] = []
    src = Source()
    reactor.add_reader(src, lambda: got.append(os.read(rfd, 10)))
    os.write(wfd, b"a")
    run_until(reactor, lambda: got)
    assert reactor.remove_reader(src) is True
    assert reactor.remove_reader(rfd) is False


def test_bad_fd_arguments(reactor: Reactor) -> None:
    class NoFileno:
        pass

    class BadFileno:
        def fileno(self) -> str:
            return "three"

    closed = socket.socket()
    closed.close()
    for bad in (NoFileno(), BadFileno(), "3", None):
        with pytest.raises(ValueError, match="not a file descriptor"):
            reactor.add_reader(bad, print)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="invalid file descriptor -1"):
        reactor.add_reader(-1, print)
    with pytest.raises(ValueError, match="is the file closed"):
        reactor.add_writer(closed, print)
    with pytest.raises(ValueError, match="is the file closed"):
        reactor.remove_reader(closed)
    assert reactor.stats()["registered_fds"] == 1


def test_replacing_a_reader(reactor: Reactor, pipe: tuple[int, int]) -> None:
    rfd, wfd = pipe
    got: list[str] = []

    def make(tag: str) -> Callable[[], None]:
        def read() -> None:
            os.read(rfd, 100)
            got.append(tag)

        return read

    reactor.add_reader(rfd, make("first"))
    reactor.add_reader(rfd, make("second"))
    os.write(wfd, b"x")
    run_until(reactor, lambda: got)
    assert got == ["second"]
    assert reactor.stats()["registered_fds"] == 2


def test_reader_and_writer_on_one_fd(
    reactor: Reactor, sockpair: tuple[socket.socket, socket.socket]
) -> None:
    a, b = sockpair
    events: list[str] = []

    def on_read() -> None:
        events.append("read:" + a.recv(100).decode())

    def on_write() -> None:
        events.append("write")
        reactor.remove_writer(a)

    reactor.add_reader(a, on_read)
    reactor.add_writer(a, on_write)
    assert reactor.stats()["registered_fds"] == 2
    b.send(b"data")
    run_until(reactor, lambda: len(events) == 2)
    assert sorted(events) == ["read:data", "write"]
    # Removing the writer kept the reader.
    b.send(b"more")
    run_until(reactor, lambda: len(events) == 3)
    assert events[2] == "read:more"
    # And a writer can come back while the reader stays.
    reactor.add_writer(a, on_write)
    run_until(reactor, lambda: len(events) == 4)
    assert events[3] == "write"
    assert reactor.remove_reader(a) is True
    assert reactor.stats()["registered_fds"] == 1


def test_writer_sees_errors(reactor: Reactor, pipe: tuple[int, int]) -> None:
    # A pipe whose read end is gone reports an error to its writer alone.
    rfd, wfd = pipe
    os.close(rfd)
    errors: list[BaseException] = []

    def on_write() -> None:
        try:
            os.write(wfd, b"x")
        except OSError as exc:
            errors.append(exc)
            reactor.remove_writer(wfd)

    reactor.add_writer(wfd, on_write)
    run_until(reactor, lambda: errors)
    assert isinstance(errors[0], BrokenPipeError)


def test_reader_sees_hangup(
    reactor: Reactor, sockpair: tuple[socket.socket, socket.socket]
) -> None:
    a, b = sockpair
    got: list[bytes] = []

    def on_read() -> None:
        data = a.recv(100)
        got.append(data)
        if not data:
            reactor.remove_reader(a)

    reactor.add_reader(a, on_read)
    b.send(b"last words")
    b.close()
    run_until(reactor, lambda: got and got[-1] == b"")
    assert b"".join(got) == b"last words"


def test_fd_closed_while_watched(
    reactor: Reactor, backend: str, pipe: tuple[int, int], caplog: pytest.LogCaptureFixture
) -> None:
    rfd, wfd = pipe
    called: list[str] = []
    reactor.add_reader(rfd, lambda: called.append("stale reader"))
    reactor.add_writer(rfd, lambda: called.append("stale writer"))
    os.write(wfd, b"unread data")
    os.close(rfd)
    before = reactor.stats()["iterations"]
    done: list[bool] = []
    reactor.call_later(0.2, done.append, True)
    with caplog.at_level(logging.ERROR, logger="reactor"):
        run_until(reactor, lambda: done)
    # The loop did not spin on the dead fd (a spinning loop turns thousands of times).
    assert reactor.stats()["iterations"] - before < 50
    assert called == []
    message = f"fd {rfd} was closed while still watched; its callbacks were removed"
    if backend in ("poll", "select"):
        # These report the closed fd (POLLNVAL, EBADF): it is dropped with an error.
        assert message in caplog.text
        assert rfd not in reactor._readers
        assert rfd not in reactor._writers
        assert reactor.stats()["registered_fds"] == 1
        assert reactor.remove_reader(rfd) is False
    else:
        # epoll and kqueue forget a closed fd silently; nothing is reported
        # until the reactor next touches it. Removing one callback must not
        # fail: the fd is dropped then, with the error.
        assert message not in caplog.text
        with caplog.at_level(logging.ERROR, logger="reactor"):
            assert reactor.remove_reader(rfd) is True
        assert message in caplog.text
    assert reactor.remove_writer(rfd) is False
    assert reactor.stats()["registered_fds"] == 1


@pytest.mark.parametrize("turn_between", [False, True])
def test_closed_fd_number_can_be_reused(
    reactor: Reactor, pipe: tuple[int, int], turn_between: bool
) -> None:
    rfd, wfd = pipe
    reactor.add_reader(rfd, lambda: pytest.fail("the old reader must not be called"))
    os.close(rfd)
    os.close(wfd)
    if turn_between:
        for _ in range(3):
            reactor.run_once(0)
    new_r, new_w = os.pipe()
    try:
        if new_r != rfd:  # pragma: no cover - the lowest free number is reused on Linux
            pytest.skip("the kernel did not reuse the fd number")
        got: list[bytes] = []
        reactor.add_reader(new_r, lambda: got.append(os.read(new_r, 10)))
        os.write(new_w, b"new")
        run_until(reactor, lambda: got)
        assert got == [b"new"]
        assert reactor.remove_reader(new_r) is True
    finally:
        os.close(new_r)
        os.close(new_w)


def test_modify_of_a_silently_dropped_fd(reactor: Reactor) -> None:
    # epoll: the old fd was closed (dropped by the kernel) and its number
    # reused; modify() fails with ENOENT and the reactor registers instead.
    a, b = socket.socketpair()
    fd = a.fileno()
    reactor.watch_read(fd, lambda: None)
    a.close()
    c, d = socket.socketpair()
    try:
        if c.fileno() != fd:  # pragma: no cover
            pytest.skip("the kernel did not reuse the fd number")
        wrote: list[bool] = []

        def on_write() -> None:
            wrote.append(True)
            reactor.unwatch_write(fd)

        reactor.watch_write(fd, on_write)
        run_until(reactor, lambda: wrote)
        reactor.unwatch_read(fd)
        assert reactor.stats()["registered_fds"] == 1
    finally:
        for s in (b, c, d):
            s.close()


def test_fd_already_known_to_the_kernel(reactor: Reactor, pipe: tuple[int, int]) -> None:
    # The poller watches the fd but the reactor has no record of it (a
    # registration left over): add_reader must still work.
    rfd, wfd = pipe
    reactor._fds.poller.register(rfd, READ)
    got: list[bytes] = []
    reactor.add_reader(rfd, lambda: got.append(os.read(rfd, 10)))
    os.write(wfd, b"z")
    run_until(reactor, lambda: got)
    assert reactor.remove_reader(rfd) is True


def test_stale_registration_without_callback_is_dropped(
    reactor: Reactor, pipe: tuple[int, int]
) -> None:
    # The poller reports an fd the reactor has no callback for: it is
    # unregistered at once, so it cannot make the loop spin.
    rfd, wfd = pipe
    os.write(wfd, b"unread")
    reactor._fds.poller.register(rfd, READ | WRITE)
    before = reactor.stats()["events"]
    for _ in range(5):
        reactor.run_once(0)
    assert reactor.stats()["events"] - before == 1


def test_failed_registration_leaves_no_trace(reactor: Reactor, pipe: tuple[int, int]) -> None:
    rfd, wfd = pipe
    proxy = proxied(reactor)
    proxy.fail_register = PermissionError(1, "not pollable")
    with pytest.raises(PermissionError):
        reactor.add_reader(rfd, print)
    assert rfd not in reactor._readers
    assert reactor.stats()["registered_fds"] == 1
    proxy.fail_register = None
    got: list[bytes] = []
    reactor.add_reader(rfd, lambda: got.append(os.read(rfd, 10)))
    # A failed modify drops the fd entirely, keeping tables and kernel in step.
    proxy.fail_modify = OSError(22, "modify failed")
    with pytest.raises(OSError, match="modify failed"):
        reactor.watch_write(rfd, print)
    assert rfd not in reactor._readers
    assert rfd not in reactor._writers
    proxy.fail_modify = None
    # The kernel may still report it: the reactor drops it without spinning.
    os.write(wfd, b"x")
    for _ in range(3):
        reactor.run_once(0)
    assert got == []
    reactor.add_reader(rfd, lambda: got.append(os.read(rfd, 10)))
    run_until(reactor, lambda: got)


def test_regular_file(reactor: Reactor, tmp_path: Path) -> None:
    # epoll refuses regular files (EPERM); the others call them always ready.
    path = tmp_path / "f"
    path.write_bytes(b"content")
    with open(path, "rb") as f:
        got: list[bytes] = []

        def on_read() -> None:
            got.append(f.read())
            reactor.remove_reader(f)

        try:
            reactor.add_reader(f, on_read)
        except OSError:
            assert reactor.backend == "epoll"
            assert f.fileno() not in reactor._readers
            assert reactor.stats()["registered_fds"] == 1
            return
        run_until(reactor, lambda: got)
        assert got == [b"content"]


def test_select_refuses_fds_above_fd_setsize(reactor: Reactor, pipe: tuple[int, int]) -> None:
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    high = FD_SETSIZE + 10
    if soft <= high:  # pragma: no cover - depends on the environment
        pytest.skip(f"RLIMIT_NOFILE {soft} too low")
    rfd, wfd = pipe
    os.dup2(rfd, high)
    try:
        got: list[bytes] = []

        def on_read() -> None:
            got.append(os.read(high, 10))

        if reactor.backend == "select":
            with pytest.raises(ValueError, match="FD_SETSIZE"):
                reactor.add_reader(high, on_read)
            assert high not in reactor._readers
            assert reactor.stats()["registered_fds"] == 1
        else:
            reactor.add_reader(high, on_read)
            os.write(wfd, b"hi")
            run_until(reactor, lambda: got)
            assert reactor.remove_reader(high)
    finally:
        os.close(high)


def test_callback_closing_another_fd_in_the_same_turn(
    reactor: Reactor, pipe: tuple[int, int], caplog: pytest.LogCaptureFixture
) -> None:
    rfd, wfd = pipe
    r2, w2 = os.pipe()
    try:
        called: list[str] = []

        def first() -> None:
            called.append("first")
            os.read(rfd, 10)
            reactor.remove_reader(r2)
            os.close(r2)  # properly: unregistered before closing

        def second() -> None:
            called.append("second")
            os.read(r2, 10)
            reactor.remove_reader(rfd)
            os.close(rfd)

        reactor.add_reader(rfd, first)
        reactor.add_reader(r2, second)
        os.write(wfd, b"x")
        os.write(w2, b"x")
        poller = reactor._fds.poller
        with caplog.at_level(logging.WARNING, logger="reactor"):
            reactor.run_once(1)
            # Whichever ran first removed the other before it could run.
            assert len(called) == 1
            for _ in range(3):
                reactor.run_once(0)
        assert reactor._fds.poller is poller  # nothing drastic was needed
        assert caplog.text == ""
        assert reactor.stats()["registered_fds"] == 2  # the waker and the survivor
    finally:
        for fd in (rfd, r2, w2):
            try:
                os.close(fd)
            except OSError:
                pass


# ------------------------------------------------------------------------- stats


def test_stats(reactor: Reactor, pipe: tuple[int, int]) -> None:
    stats = reactor.stats()
    assert set(stats) == set(ReactorStats.__annotations__)
    assert stats["iterations"] == 0
    assert stats["events"] == 0
    assert stats["registered_fds"] == 1  # the waker
    assert stats["timers_pending"] == 0
    assert stats["resources"] == 0
    rfd, wfd = pipe
    reactor.add_reader(rfd, lambda: os.read(rfd, 10))
    handles = [reactor.call_later(10, print) for _ in range(5)]
    handles[0].cancel()
    os.write(wfd, b"x")
    for _ in range(3):
        reactor.run_once(0)
    stats = reactor.stats()
    assert stats["iterations"] == 3
    assert stats["events"] == 1
    assert stats["registered_fds"] == 2
    assert stats["timers_pending"] == 4
    reactor.remove_reader(rfd)
    for handle in handles:
        handle.cancel()
    assert reactor.stats()["registered_fds"] == 1
    assert reactor.stats()["timers_pending"] == 0


def test_removing_half_of_a_closed_and_reused_fd(
    reactor: Reactor, sockpair: tuple[socket.socket, socket.socket]
) -> None:
    # Reader and writer on an fd that is closed and whose number is taken by a
    # new file before the reactor notices: removing one of them must not fail.
    a, _ = sockpair
    fd = a.fileno()
    reactor.add_reader(fd, lambda: None)
    reactor.add_writer(fd, lambda: None)
    a.close()
    c, d = socket.socketpair()
    try:
        if c.fileno() != fd:  # pragma: no cover
            pytest.skip("the kernel did not reuse the fd number")
        assert reactor.remove_reader(fd) is True
        reactor.remove_writer(fd)
        assert fd not in reactor._readers
        assert fd not in reactor._writers
        got: list[bytes] = []
        reactor.add_reader(c, lambda: got.append(c.recv(10)))
        d.send(b"fresh")
        run_until(reactor, lambda: got)
        assert got == [b"fresh"]
        assert reactor.remove_reader(c) is True
        assert reactor.stats()["registered_fds"] == 1
    finally:
        c.close()
        d.close()


def test_exception_in_writer_is_logged(
    reactor: Reactor,
    sockpair: tuple[socket.socket, socket.socket],
    caplog: pytest.LogCaptureFixture,
) -> None:
    a, _ = sockpair
    calls: list[int] = []

    def bad_writer() -> None:
        calls.append(1)
        if len(calls) == 2:
            reactor.remove_writer(a)
        raise ValueError("boom in writer")

    reactor.add_writer(a, bad_writer)
    with caplog.at_level(logging.ERROR, logger="reactor"):
        run_until(reactor, lambda: len(calls) == 2)
    records = [r for r in caplog.records if r.name == "reactor"]
    assert len(records) == 2
    assert all(r.exc_info and r.exc_info[0] is ValueError for r in records)


def test_internal_add_with_unchanged_events(reactor: Reactor, pipe: tuple[int, int]) -> None:
    # The transports' path: replacing a callback with the same events is a
    # table update, not a system call.
    rfd, wfd = pipe
    got: list[str] = []
    reactor.watch_read(rfd, lambda: got.append("old"))
    proxy = proxied(reactor)
    proxy.fail_register = proxy.fail_modify = AssertionError("no poller call expected")

    def new() -> None:
        os.read(rfd, 10)
        got.append("new")

    reactor.watch_read(rfd, new)
    proxy.fail_register = proxy.fail_modify = None
    os.write(wfd, b"x")
    run_until(reactor, lambda: got)
    assert got == ["new"]
    assert reactor.unwatch_read(rfd) is True


def spin_check(reactor: Reactor, seconds: float = 0.2) -> int:
    """Turn the loop for ``seconds`` (until a timer); return how many turns it took."""
    before = reactor.stats()["iterations"]
    done: list[bool] = []
    reactor.call_later(seconds, done.append, True)
    run_until(reactor, lambda: done)
    return reactor.stats()["iterations"] - before


def test_fd_closed_while_its_file_lives_on(
    reactor: Reactor, backend: str, pipe: tuple[int, int], caplog: pytest.LogCaptureFixture
) -> None:
    # The fd is closed but a duplicate keeps the file open (as a child process
    # would): epoll keeps reporting the closed number, and the reader fails
    # with EBADF every turn.
    rfd, wfd = pipe
    errors: list[OSError] = []

    def reader() -> None:
        try:
            os.read(rfd, 100)
        except OSError as exc:
            errors.append(exc)
            raise

    reactor.add_reader(rfd, reader)
    keep = os.dup(rfd)
    try:
        os.write(wfd, b"pending")
        os.close(rfd)
        with caplog.at_level(logging.ERROR, logger="reactor"):
            turns = spin_check(reactor)
        assert turns < 50
        assert len(errors) <= 1
        if backend != "kqueue-emulated":  # kqueue forgets a closed fd silently
            assert f"fd {rfd} was closed while still watched" in caplog.text
            assert rfd not in reactor._readers
        # Everything else still works: the waker and new fds.
        r2, w2 = os.pipe()
        try:
            got: list[bytes] = []
            reactor.add_reader(r2, lambda: got.append(os.read(r2, 10)))
            os.write(w2, b"ok")
            run_until(reactor, lambda: got)
            reactor.remove_reader(r2)
        finally:
            os.close(r2)
            os.close(w2)
        reactor._waker.wake()
        t0 = time.monotonic()
        reactor.run_once(10)
        assert time.monotonic() - t0 < 5
    finally:
        os.close(keep)


def test_removed_after_close_while_its_file_lives_on(
    reactor: Reactor, pipe: tuple[int, int], caplog: pytest.LogCaptureFixture
) -> None:
    # Closed first, removed second, while a duplicate keeps the file open:
    # epoll can no longer remove the registration through the closed number.
    rfd, wfd = pipe
    reactor.add_reader(rfd, lambda: None)
    keep = os.dup(rfd)
    try:
        os.write(wfd, b"pending")
        os.close(rfd)
        assert reactor.remove_reader(rfd) is True
        with caplog.at_level(logging.WARNING, logger="reactor"):
            assert spin_check(reactor) < 50
        if reactor.backend == "epoll":
            assert "rebuilt the epoll poller" in caplog.text
        assert reactor.stats()["registered_fds"] == 1
    finally:
        os.close(keep)


def test_poller_rebuild_drops_other_closed_fds(
    reactor: Reactor, pipe: tuple[int, int], caplog: pytest.LogCaptureFixture
) -> None:
    rfd, wfd = pipe
    keep = os.dup(rfd)
    a, b = os.pipe()
    reactor.add_reader(a, lambda: None)
    os.close(a)  # closed while watched, without a trace (epoll, kqueue)
    os.close(b)
    reactor.add_reader(rfd, lambda: None)
    try:
        os.write(wfd, b"x")
        os.close(rfd)
        reactor.remove_reader(rfd)
        with caplog.at_level(logging.WARNING, logger="reactor"):
            assert spin_check(reactor) < 50
        if reactor.backend == "epoll":
            # The rebuild found the other closed fd too.
            assert f"fd {a} was closed while still watched" in caplog.text
        if reactor.backend != "kqueue":
            assert a not in reactor._readers
    finally:
        os.close(keep)


def test_poller_that_cannot_be_rebuilt(
    reactor: Reactor, pipe: tuple[int, int], caplog: pytest.LogCaptureFixture
) -> None:
    rfd, wfd = pipe
    proxy = proxied(reactor)  # ProxyPoller() needs an argument
    reactor.add_reader(rfd, lambda: None)
    keep = os.dup(rfd)
    try:
        os.write(wfd, b"x")
        os.close(rfd)
        reactor.remove_reader(rfd)
        with caplog.at_level(logging.ERROR, logger="reactor"):
            reactor.run_once(0)
        assert reactor._fds.poller is proxy
        if reactor.backend == "epoll":
            assert "could not make a new epoll poller" in caplog.text
    finally:
        os.close(keep)
        reactor.run_once(0)


def test_callback_errors_that_are_not_about_its_fd(
    reactor: Reactor, pipe: tuple[int, int], caplog: pytest.LogCaptureFixture
) -> None:
    rfd, wfd = pipe
    closed_r, closed_w = os.pipe()
    os.close(closed_r)
    os.close(closed_w)
    kinds: list[str] = []

    def reader() -> None:
        os.read(rfd, 1)
        kind = ["ebadf-other", "oserror", "remove-then-ebadf"][len(kinds)]
        kinds.append(kind)
        if kind == "ebadf-other":
            os.read(closed_r, 1)  # EBADF, but not this fd: it stays watched
        if kind == "oserror":
            raise OSError(5, "I/O error")
        reactor.remove_reader(rfd)
        os.read(closed_r, 1)

    reactor.add_reader(rfd, reader)
    os.write(wfd, b"abc")
    with caplog.at_level(logging.ERROR, logger="reactor"):
        run_until(reactor, lambda: len(kinds) == 3)
    assert "was closed while still watched" not in caplog.text
    assert len([r for r in caplog.records if r.name == "reactor"]) == 3


def test_close_does_not_run_self_rescheduling_callbacks_forever(reactor: Reactor) -> None:
    runs: list[int] = []

    def again() -> None:
        runs.append(1)
        reactor.call_soon(again)

    reactor.call_soon(again)
    reactor.close()
    assert 1 <= len(runs) <= 8
