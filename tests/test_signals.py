"""Signal handlers: delivered as ordinary callbacks through the wake-up fd."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType
from typing import Any

import pytest

from reactor import Reactor
from tests.conftest import make_reactor, run_until
from tests.stand_ins import OverridingPoller

pytestmark = pytest.mark.timeout(60)

ROOT = Path(__file__).resolve().parent.parent

SIGUSR1 = signal.SIGUSR1
SIGUSR2 = signal.SIGUSR2


def current_wakeup_fd() -> int:
    fd = signal.set_wakeup_fd(-1)
    signal.set_wakeup_fd(fd)
    return fd


@pytest.fixture(autouse=True)
def restore_signal_state() -> Iterator[None]:
    """Each test leaves the process's handlers and wake-up fd as it found them."""
    handlers = {sig: signal.getsignal(sig) for sig in (SIGUSR1, SIGUSR2, signal.SIGINT)}
    wakeup = current_wakeup_fd()
    yield
    for sig, handler in handlers.items():
        signal.signal(sig, handler)
    signal.set_wakeup_fd(wakeup)


def test_signal_runs_the_callback_in_the_loop(reactor: Reactor) -> None:
    calls: list[tuple[Any, ...]] = []

    def on_signal(*args: Any) -> None:
        calls.append((args, reactor.is_running(), threading.get_ident()))

    reactor.add_signal_handler(SIGUSR1, on_signal, "a", 1)
    os.kill(os.getpid(), SIGUSR1)
    # Not run inside the signal handler: only when the loop turns.
    assert calls == []
    run_until(reactor, lambda: calls)
    assert calls == [(("a", 1), True, threading.get_ident())]
    # Again, and with two signals arriving before the loop turns.
    os.kill(os.getpid(), SIGUSR1)
    os.kill(os.getpid(), SIGUSR1)
    run_until(reactor, lambda: len(calls) >= 2)
    assert reactor.remove_signal_handler(SIGUSR1) is True


def test_two_signals(reactor: Reactor) -> None:
    got: list[str] = []
    reactor.add_signal_handler(SIGUSR1, got.append, "usr1")
    reactor.add_signal_handler(SIGUSR2, got.append, "usr2")
    os.kill(os.getpid(), SIGUSR2)
    os.kill(os.getpid(), SIGUSR1)
    run_until(reactor, lambda: len(got) == 2)
    assert sorted(got) == ["usr1", "usr2"]


def test_signal_wakes_a_blocked_loop(reactor: Reactor) -> None:
    reactor.add_signal_handler(SIGUSR1, reactor.stop)
    main = threading.get_ident()
    started = threading.Event()

    def worker() -> None:
        started.wait(10)
        signal.pthread_kill(main, SIGUSR1)

    t = threading.Thread(target=worker, daemon=True)
    t.start()
    reactor.call_soon(started.set)
    reactor.run()  # nothing else to wake it
    t.join()


def test_stop_from_a_plain_signal_handler_wakes_the_loop(reactor: Reactor) -> None:
    # A handler installed with signal.signal (not add_signal_handler) runs in
    # the loop's thread while poll() is interrupted; poll is then retried, so
    # stop() must wake it.
    inner_poll = reactor._fds.poller.poll
    blocking = threading.Event()

    def spy_poll(timeout: float | None) -> list[tuple[int, int]]:
        if timeout is None:
            blocking.set()
        return inner_poll(timeout)

    reactor._fds.poller = OverridingPoller(reactor._fds.poller, poll=spy_poll)

    def handler(signum: int, frame: FrameType | None) -> None:
        reactor.stop()

    signal.signal(SIGUSR1, handler)
    main = threading.get_ident()
    finished = threading.Event()

    def worker() -> None:
        blocking.wait(10)
        # A signal landing between the last bytecode and the system call is
        # only handled when the wait ends (add_signal_handler's wake-up fd has
        # no such gap), so signal again until the loop is out. Without the
        # wake-up in stop(), each one would interrupt the wait, run the
        # handler, and the wait would resume: the loop would never stop.
        while not finished.is_set():
            signal.pthread_kill(main, SIGUSR1)
            finished.wait(0.05)

    t = threading.Thread(target=worker, daemon=True)
    t.start()
    try:
        reactor.run()
    finally:
        finished.set()
        t.join()


def test_remove_restores_the_previous_handler(reactor: Reactor) -> None:
    def previous(signum: int, frame: FrameType | None) -> None:
        pass

    signal.signal(SIGUSR1, previous)
    reactor.add_signal_handler(SIGUSR1, print)
    assert signal.getsignal(SIGUSR1) is not previous
    # Replacing our handler keeps the original to restore.
    got: list[str] = []
    reactor.add_signal_handler(SIGUSR1, got.append, "second")
    os.kill(os.getpid(), SIGUSR1)
    run_until(reactor, lambda: got)
    assert got == ["second"]
    assert reactor.remove_signal_handler(SIGUSR1) is True
    assert signal.getsignal(SIGUSR1) is previous
    assert reactor.remove_signal_handler(SIGUSR1) is False
    # The default handler is restored as the default.
    signal.signal(SIGUSR2, signal.SIG_DFL)
    reactor.add_signal_handler(SIGUSR2, print)
    reactor.remove_signal_handler(SIGUSR2)
    assert signal.getsignal(SIGUSR2) is signal.SIG_DFL


def test_handler_not_installed_from_python_is_restored_as_default(reactor: Reactor) -> None:
    # signal.signal() returns None for a handler installed outside Python.
    reactor.add_signal_handler(SIGUSR2, print)
    callback, args, _ = reactor._signals.handlers[SIGUSR2]
    reactor._signals.handlers[SIGUSR2] = (callback, args, None)
    reactor.remove_signal_handler(SIGUSR2)
    assert signal.getsignal(SIGUSR2) is signal.SIG_DFL


def test_remove_restores_the_wakeup_fd(reactor: Reactor) -> None:
    original = current_wakeup_fd()
    reactor.add_signal_handler(SIGUSR1, print)
    assert reactor._signals.wsock is not None
    assert current_wakeup_fd() == reactor._signals.wsock.fileno()
    reactor.add_signal_handler(SIGUSR2, print)
    reactor.remove_signal_handler(SIGUSR1)
    assert current_wakeup_fd() == reactor._signals.wsock.fileno()  # one handler left
    reactor.remove_signal_handler(SIGUSR2)
    assert current_wakeup_fd() == original
    assert reactor._signals.rsock is None


def test_remove_restores_a_custom_wakeup_fd(reactor: Reactor) -> None:
    a, b = socket.socketpair()
    try:
        b.setblocking(False)
        signal.set_wakeup_fd(b.fileno())
        reactor.add_signal_handler(SIGUSR1, print)
        reactor.remove_signal_handler(SIGUSR1)
        assert current_wakeup_fd() == b.fileno()
    finally:
        signal.set_wakeup_fd(-1)
        a.close()
        b.close()


def test_a_previous_wakeup_fd_closed_meanwhile_is_not_restored(reactor: Reactor) -> None:
    a, b = socket.socketpair()
    b.setblocking(False)
    stale = b.fileno()
    signal.set_wakeup_fd(stale)
    reactor.add_signal_handler(SIGUSR1, print)
    a.close()
    b.close()
    # The number now names another file: it must not become the wake-up fd.
    c, d = socket.socketpair()
    try:
        reactor.remove_signal_handler(SIGUSR1)
        assert current_wakeup_fd() == -1
    finally:
        c.close()
        d.close()


def test_two_reactors_removing_out_of_order(backend: str) -> None:
    original = current_wakeup_fd()
    a = make_reactor(backend)
    b = make_reactor(backend)
    try:
        a.add_signal_handler(SIGUSR1, print)
        b.add_signal_handler(SIGUSR2, print)
        assert b._signals.wsock is not None
        b_fd = b._signals.wsock.fileno()
        # a goes first: b's wake-up fd stays in place.
        a.remove_signal_handler(SIGUSR1)
        assert current_wakeup_fd() == b_fd
        got: list[str] = []
        b.add_signal_handler(SIGUSR2, got.append, "b")
        os.kill(os.getpid(), SIGUSR2)
        run_until(b, lambda: got)
        # b must not restore a's closed socket.
        b.remove_signal_handler(SIGUSR2)
        assert current_wakeup_fd() == original
    finally:
        a.close()
        b.close()


def test_unhandled_signal_numbers_are_ignored(reactor: Reactor) -> None:
    other: list[int] = []

    def python_handler(signum: int, frame: FrameType | None) -> None:
        other.append(signum)

    signal.signal(SIGUSR2, python_handler)
    got: list[str] = []
    reactor.add_signal_handler(SIGUSR1, got.append, "usr1")
    # SIGUSR2 has a Python handler of its own; its number also reaches the
    # wake-up fd, and the reactor ignores it.
    os.kill(os.getpid(), SIGUSR2)
    os.kill(os.getpid(), SIGUSR1)
    run_until(reactor, lambda: got)
    assert got == ["usr1"]
    assert other == [SIGUSR2]
    # Spurious readiness is harmless.
    reactor._signals._read()


def test_add_signal_handler_from_another_thread_raises(reactor: Reactor) -> None:
    errors: list[BaseException] = []

    def call(fn: Callable[[], object]) -> None:
        def worker() -> None:
            try:
                fn()
            except RuntimeError as exc:
                errors.append(exc)

        t = threading.Thread(target=worker)
        t.start()
        t.join()

    call(lambda: reactor.add_signal_handler(SIGUSR1, print))
    assert len(errors) == 1
    assert "add_signal_handler() must be called from the main thread" in str(errors[0])
    assert reactor._signals.rsock is None
    reactor.add_signal_handler(SIGUSR1, print)
    call(lambda: reactor.remove_signal_handler(SIGUSR1))
    assert "remove_signal_handler() must be called from the main thread" in str(errors[1])
    # close() too, while handlers are installed; nothing is released then.
    call(reactor.close)
    assert "close() must be called from the main thread" in str(errors[2])
    assert not reactor.is_closed()
    assert SIGUSR1 in reactor._signals.handlers
    # Removing what is not there is fine from anywhere.
    errors.clear()
    call(lambda: reactor.remove_signal_handler(SIGUSR2))
    assert errors == []
    reactor.close()
    assert signal.getsignal(SIGUSR1) is not None


@pytest.mark.parametrize("sig", [0, -1, 100_000, signal.NSIG, "SIGUSR1", 1.5, None])
def test_invalid_signals(reactor: Reactor, sig: Any) -> None:
    with pytest.raises(ValueError, match="not a valid signal"):
        reactor.add_signal_handler(sig, print)
    assert reactor._signals.rsock is None


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGSTOP])
def test_uncatchable_signals(reactor: Reactor, sig: int) -> None:
    with pytest.raises(ValueError, match="cannot be caught"):
        reactor.add_signal_handler(sig, print)
    assert reactor._signals.rsock is None


def test_signals_enum_is_accepted(reactor: Reactor) -> None:
    reactor.add_signal_handler(signal.Signals.SIGUSR1, print)
    assert reactor.remove_signal_handler(signal.Signals.SIGUSR1)


def test_failure_to_install_rolls_back(reactor: Reactor, monkeypatch: pytest.MonkeyPatch) -> None:
    original = current_wakeup_fd()

    def refuse(sig: int, handler: Any) -> Any:
        raise OSError(22, "refused")

    with monkeypatch.context() as m:
        m.setattr(signal, "signal", refuse)
        with pytest.raises(OSError, match="refused"):
            reactor.add_signal_handler(SIGUSR1, print)
    assert reactor._signals.rsock is None
    assert reactor._signals.handlers == {}
    assert current_wakeup_fd() == original
    assert reactor.stats()["registered_fds"] == 1
    # With a handler already installed, a failure leaves that one alone.
    reactor.add_signal_handler(SIGUSR1, print)
    with monkeypatch.context() as m:
        m.setattr(signal, "signal", refuse)
        with pytest.raises(OSError, match="refused"):
            reactor.add_signal_handler(SIGUSR2, print)
    assert list(reactor._signals.handlers) == [SIGUSR1]
    assert reactor._signals.rsock is not None


def test_failure_to_watch_the_signal_socket_rolls_back(reactor: Reactor) -> None:
    original = current_wakeup_fd()
    inner = reactor._fds.poller

    def refuse(fd: int, events: int) -> None:
        raise OSError(22, "cannot watch")

    reactor._fds.poller = OverridingPoller(inner, register=refuse)
    try:
        with pytest.raises(OSError, match="cannot watch"):
            reactor.add_signal_handler(SIGUSR1, print)
    finally:
        reactor._fds.poller = inner
    assert reactor._signals.rsock is None
    assert current_wakeup_fd() == original
    assert signal.getsignal(SIGUSR1) is signal.SIG_DFL


def test_close_removes_handlers(backend: str) -> None:
    original = current_wakeup_fd()

    def previous(signum: int, frame: FrameType | None) -> None:
        pass

    signal.signal(SIGUSR2, previous)
    r = make_reactor(backend)
    r.add_signal_handler(SIGUSR1, print)
    r.add_signal_handler(SIGUSR2, print)
    r.close()
    assert signal.getsignal(SIGUSR1) is signal.SIG_DFL
    assert signal.getsignal(SIGUSR2) is previous
    assert current_wakeup_fd() == original


def test_sigint_handler_replaces_keyboard_interrupt(reactor: Reactor) -> None:
    got: list[str] = []
    reactor.add_signal_handler(signal.SIGINT, got.append, "int")
    os.kill(os.getpid(), signal.SIGINT)  # no KeyboardInterrupt
    run_until(reactor, lambda: got)
    reactor.remove_signal_handler(signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


# ------------------------------------------------------------- in a real process

SCRIPT = """
import signal
import sys

from reactor import Reactor

name = sys.argv[1]
if name == "kqueue-emulated":
    from tests.kqueue_emulation import make_emulated_kqueue_poller

    reactor = Reactor(backend=make_emulated_kqueue_poller())
else:
    reactor = Reactor(backend=name)
got = []

def on_signal(signame):
    got.append(signame)
    reactor.stop()

reactor.add_signal_handler(signal.SIGINT, on_signal, "SIGINT")
reactor.add_signal_handler(signal.SIGTERM, on_signal, "SIGTERM")
print("ready", flush=True)
reactor.run()
reactor.close()
print("stopped by", *got, flush=True)
"""


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_process_stops_cleanly_on_signal(backend: str, tmp_path: Path, sig: int) -> None:
    script = tmp_path / "serve.py"
    script.write_text(textwrap.dedent(SCRIPT))
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(
        [sys.executable, str(script), backend],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line == "ready\n", proc.stderr.read() if proc.stderr else ""
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:  # pragma: no cover - only if the test failed
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert err == ""
    assert out == f"stopped by {signal.Signals(sig).name}\n"
