"""Unit tests of the readiness backends, each run on every poller this machine has.

The pollers are epoll, poll and select (whichever the platform has), real
kqueue where there is one, and always the kqueue adapter over the emulation
in ``tests.kqueue_emulation``. Everything is synchronized on readiness: an
fd is made ready *before* polling, and "nothing is ready" is checked with a
timeout of 0 or 0.01 s.
"""

from __future__ import annotations

import errno
import os
import re
import resource
import select
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from types import FrameType, SimpleNamespace
from typing import Any

import pytest

from reactor.backends import (
    ERROR,
    INVALID,
    READ,
    READ_BITS,
    WRITE,
    WRITE_BITS,
    Poller,
    available_backends,
    make_poller,
)
from reactor.backends.kqueue import KqueuePoller
from reactor.backends.select import FD_SETSIZE, SelectPoller
from tests.kqueue_emulation import (
    EMULATED_SELECT,
    KQ_EV_ADD,
    KQ_EV_DELETE,
    KQ_EV_DISABLE,
    KQ_EV_ENABLE,
    KQ_EV_EOF,
    KQ_EV_ERROR,
    KQ_EV_ONESHOT,
    KQ_FILTER_READ,
    KQ_FILTER_WRITE,
    EmulatedKqueue,
    kevent,
    make_emulated_kqueue_poller,
)

pytestmark = pytest.mark.timeout(60)

PREFERENCE = ("epoll", "kqueue", "poll", "select")
BACKENDS = [*available_backends(), "kqueue-emulated"]
#: Backends whose kernel forgets an fd when it is closed (nothing is reported);
#: the others report it as INVALID (poll's POLLNVAL, select's EBADF).
FORGETS_CLOSED = {"epoll", "kqueue", "kqueue-emulated"}

Pair = tuple[socket.socket, socket.socket]


def new_poller(name: str) -> Poller:
    if name == "kqueue-emulated":
        return make_emulated_kqueue_poller()
    return make_poller(name)


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def poller(backend: str) -> Iterator[Poller]:
    p = new_poller(backend)
    try:
        yield p
    finally:
        p.close()


@pytest.fixture
def pair() -> Iterator[Pair]:
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)
    try:
        yield a, b
    finally:
        a.close()
        b.close()


def events(poller: Poller, timeout: float | None = 5.0) -> dict[int, int]:
    """One poll, as {fd: bits}; an fd must not be reported twice."""
    result = poller.poll(timeout)
    fds = [fd for fd, _ in result]
    assert len(fds) == len(set(fds)), f"an fd was reported twice: {result}"
    return dict(result)


def fill(sock: socket.socket) -> None:
    """Send until the socket's buffers are full (it is then not writable)."""
    chunk = b"x" * 65536
    while True:
        try:
            sock.send(chunk)
        except BlockingIOError:
            return


def drain(sock: socket.socket) -> bytes:
    data = []
    while True:
        try:
            chunk = sock.recv(65536)
        except BlockingIOError:
            break
        if not chunk:
            break
        data.append(chunk)
    return b"".join(data)


def test_every_backend_is_a_poller() -> None:
    # Statically (mypy) and at run time: each has the Poller interface.
    pollers: list[Poller] = [new_poller(name) for name in BACKENDS]
    try:
        for name, p in zip(BACKENDS, pollers, strict=True):
            assert p.name == name.removesuffix("-emulated")
            for method in ("register", "modify", "unregister", "poll", "close"):
                assert callable(getattr(p, method))
    finally:
        for p in pollers:
            p.close()


# --------------------------------------------------------------- readiness


def test_nothing_ready(poller: Poller, pair: Pair) -> None:
    a, _ = pair
    poller.register(a.fileno(), READ)
    assert poller.poll(0) == []
    assert poller.poll(0.01) == []


def test_read_ready(poller: Poller, pair: Pair) -> None:
    a, b = pair
    poller.register(a.fileno(), READ)
    b.send(b"ping")
    assert events(poller) == {a.fileno(): READ}
    # Level-triggered: still reported until drained.
    assert events(poller, 0) == {a.fileno(): READ}
    assert a.recv(100) == b"ping"
    assert poller.poll(0) == []


def test_write_ready(poller: Poller, pair: Pair) -> None:
    a, _ = pair
    poller.register(a.fileno(), WRITE)
    assert events(poller) == {a.fileno(): WRITE}


def test_read_and_write_ready_are_one_pair(poller: Poller, pair: Pair) -> None:
    a, b = pair
    b.send(b"ping")
    poller.register(a.fileno(), READ | WRITE)
    assert poller.poll(5.0) == [(a.fileno(), READ | WRITE)]


def test_write_not_ready_while_buffer_full(poller: Poller, pair: Pair) -> None:
    a, b = pair
    fill(a)
    poller.register(a.fileno(), WRITE)
    assert poller.poll(0.01) == []
    drain(b)
    assert events(poller) == {a.fileno(): WRITE}


def test_modify(poller: Poller, pair: Pair) -> None:
    a, b = pair
    fd = a.fileno()
    b.send(b"ping")
    poller.register(fd, READ)
    assert events(poller) == {fd: READ}
    poller.modify(fd, WRITE)
    assert events(poller) == {fd: WRITE}
    poller.modify(fd, READ | WRITE)
    assert events(poller) == {fd: READ | WRITE}
    poller.modify(fd, READ)
    assert events(poller) == {fd: READ}
    poller.modify(fd, 0)
    assert poller.poll(0.01) == []
    poller.modify(fd, WRITE)
    assert events(poller) == {fd: WRITE}


def test_modify_unknown_fd_raises(backend: str, poller: Poller, pair: Pair) -> None:
    if backend == "select":
        pytest.skip("select keeps only sets of fds: modify() of an unknown fd registers it")
    with pytest.raises(FileNotFoundError):
        poller.modify(pair[0].fileno(), READ)


def test_unregister(poller: Poller, pair: Pair) -> None:
    a, b = pair
    fd = a.fileno()
    poller.register(fd, READ | WRITE)
    b.send(b"ping")
    poller.unregister(fd)
    assert poller.poll(0.01) == []
    # Unknown fds are ignored: twice, never registered, no such fd.
    poller.unregister(fd)
    poller.unregister(b.fileno())
    poller.unregister(4000)
    # And it can be registered again.
    poller.register(fd, READ)
    assert events(poller) == {fd: READ}


def test_many_fds(poller: Poller) -> None:
    pairs = [socket.socketpair() for _ in range(10)]
    try:
        for a, _ in pairs:
            poller.register(a.fileno(), READ)
        for _, b in pairs[::3]:
            b.send(b"x")
        expected = {a.fileno(): READ for a, _ in pairs[::3]}
        assert events(poller) == expected
        # Writers too: every one is writable.
        for a, _ in pairs:
            poller.modify(a.fileno(), READ | WRITE)
        expected = {a.fileno(): WRITE for a, _ in pairs}
        for a, _ in pairs[::3]:
            expected[a.fileno()] = READ | WRITE
        assert events(poller) == expected
    finally:
        for a, b in pairs:
            poller.unregister(a.fileno())
            a.close()
            b.close()


# ----------------------------------------------------------------- timeouts


def test_timeout_zero_returns_at_once(poller: Poller, pair: Pair) -> None:
    poller.register(pair[0].fileno(), READ)
    start = time.monotonic()
    for _ in range(10):
        assert poller.poll(0) == []
    assert time.monotonic() - start < 2.0


def test_positive_timeout_waits(poller: Poller, pair: Pair) -> None:
    poller.register(pair[0].fileno(), READ)
    assert poller.poll(0.0005) == []  # rounded up to a millisecond, not down to 0
    start = time.monotonic()
    assert poller.poll(0.05) == []
    # Loose: the wait happened (each backend rounds up, never down).
    assert time.monotonic() - start >= 0.03


def test_positive_timeout_returns_when_ready(poller: Poller, pair: Pair) -> None:
    a, b = pair
    poller.register(a.fileno(), READ)
    b.send(b"ping")
    start = time.monotonic()
    assert events(poller, 30.0) == {a.fileno(): READ}
    assert time.monotonic() - start < 10.0


def test_none_blocks_until_ready(poller: Poller, pair: Pair) -> None:
    a, b = pair
    poller.register(a.fileno(), READ)
    # Whether the send happens before or during the wait, poll(None) returns.
    sender = threading.Thread(target=b.send, args=(b"ping",))
    sender.start()
    try:
        assert events(poller, None) == {a.fileno(): READ}
    finally:
        sender.join()


@pytest.mark.parametrize("timeout", [86400.0 * 30, 1e12, float("inf")])
def test_huge_timeout_does_not_overflow(poller: Poller, pair: Pair, timeout: float) -> None:
    # A timer a month away must not crash the loop (epoll and poll take an
    # int of milliseconds: OverflowError beyond 24.8 days).
    a, b = pair
    poller.register(a.fileno(), READ)
    b.send(b"ping")
    assert events(poller, timeout) == {a.fileno(): READ}


def test_negative_timeout_does_not_wait(poller: Poller, pair: Pair) -> None:
    # For epoll and poll a negative timeout would otherwise mean "forever".
    a, b = pair
    poller.register(a.fileno(), READ)
    assert poller.poll(-0.5) == []
    b.send(b"ping")
    assert events(poller, -1.0) == {a.fileno(): READ}


# -------------------------------------------------------- end of connection


def test_peer_close_reader_drains_data_then_sees_eof(
    backend: str, poller: Poller, pair: Pair
) -> None:
    a, b = pair
    fd = a.fileno()
    poller.register(fd, READ)
    b.send(b"last words")
    b.close()
    bits = events(poller)[fd]
    assert bits & READ_BITS
    assert not bits & INVALID
    if backend.startswith("kqueue"):
        # EV_EOF (with data still unread) is READ, not an error or the end.
        assert bits == READ
    assert a.recv(100) == b"last words"
    bits = events(poller)[fd]
    assert bits & READ_BITS
    assert a.recv(100) == b""


def test_peer_close_over_tcp(backend: str, poller: Poller) -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        client = socket.create_connection(server.getsockname())
        peer, _ = server.accept()
    with client, peer:
        client.setblocking(False)
        fd = client.fileno()
        poller.register(fd, READ)
        peer.sendall(b"hello, world")
        peer.close()
        received = b""
        for _ in range(100):  # the FIN may arrive after the data
            bits = events(poller).get(fd, 0)
            assert bits & READ_BITS, "a peer's close must be reported to the reader"
            if backend.startswith("kqueue"):
                assert bits == READ
            chunk = client.recv(4)
            if not chunk:
                break
            received += chunk
        else:
            pytest.fail("never saw the end of the stream")
        assert received == b"hello, world"
        poller.unregister(fd)


def test_peer_reset_reader_gets_data_then_error(poller: Poller, pair: Pair) -> None:
    a, b = pair
    fd = a.fileno()
    poller.register(fd, READ)
    a.send(b"never read")  # closing b with this unread resets the connection
    b.send(b"data")
    b.close()
    assert events(poller)[fd] & READ_BITS
    assert a.recv(100) == b"data"
    assert events(poller)[fd] & READ_BITS
    with pytest.raises(ConnectionResetError):
        a.recv(100)


def test_peer_close_reported_to_writer(poller: Poller, pair: Pair) -> None:
    a, b = pair
    fd = a.fileno()
    poller.register(fd, WRITE)
    b.close()
    assert events(poller)[fd] & WRITE_BITS
    with pytest.raises(BrokenPipeError):
        a.send(b"anyone?")


# --------------------------------------------------------------- closed fds


def test_fd_closed_while_registered(backend: str, poller: Poller) -> None:
    a, b = socket.socketpair()
    fd = a.fileno()
    poller.register(fd, READ | WRITE)
    b.send(b"ping")
    a.close()  # without unregistering: poll() must not raise
    try:
        result = poller.poll(0.01)
        if backend in FORGETS_CLOSED:
            assert result == []  # the kernel dropped it
        else:
            assert result == [(fd, INVALID)]
        poller.unregister(fd)
        assert poller.poll(0) == []
    finally:
        b.close()


def test_select_reports_closed_fd_as_invalid(pair: Pair) -> None:
    a, b = pair
    poller = SelectPoller()
    c, d = socket.socketpair()
    poller.register(a.fileno(), READ)
    poller.register(c.fileno(), WRITE)
    fd = c.fileno()
    c.close()
    d.close()
    b.send(b"ping")
    assert poller.poll(0) == [(fd, INVALID)]
    poller.unregister(fd)
    assert poller.poll(0) == [(a.fileno(), READ)]
    poller.close()


def test_register_closed_fd(poller: Poller) -> None:
    a, b = socket.socketpair()
    fd = a.fileno()
    a.close()
    b.close()
    # Nothing was opened since, so the number is still free.
    try:
        poller.register(fd, READ)
    except (OSError, ValueError):
        return  # refused at once (epoll, kqueue)
    try:
        assert poller.poll(0) == [(fd, INVALID)]  # or reported (poll, select)
    finally:
        poller.unregister(fd)


def test_register_negative_fd(poller: Poller) -> None:
    with pytest.raises((OSError, ValueError)):
        poller.register(-1, READ)


def test_close_twice(backend: str) -> None:
    p = new_poller(backend)
    p.close()
    p.close()


# ------------------------------------------------------------------ kqueue


def emulated_kq(p: Poller) -> EmulatedKqueue:
    assert isinstance(p, KqueuePoller)
    kq = p._kq
    assert isinstance(kq, EmulatedKqueue)
    return kq


def test_kqueue_eof_with_unread_data_is_read(pair: Pair) -> None:
    a, b = pair
    p = make_emulated_kqueue_poller()
    fd = a.fileno()
    p.register(fd, READ)
    b.send(b"data")
    b.close()
    # Underneath: EV_EOF *and* the 4 bytes still to read, in one kevent.
    (kev,) = emulated_kq(p).control(None, 4, 0)
    assert (kev.ident, kev.filter) == (fd, KQ_FILTER_READ)
    assert kev.flags & KQ_EV_EOF
    assert kev.data == 4
    # The adapter reports it as READ, so the reader drains first...
    assert p.poll(0) == [(fd, READ)]
    assert a.recv(100) == b"data"
    # ...and then sees the end.
    assert p.poll(0) == [(fd, READ)]
    assert a.recv(100) == b""
    p.unregister(fd)
    p.close()


def test_kqueue_write_eof_is_write(pair: Pair) -> None:
    a, b = pair
    p = make_emulated_kqueue_poller()
    p.register(a.fileno(), WRITE)
    b.close()
    (kev,) = emulated_kq(p).control(None, 4, 0)
    assert kev.filter == KQ_FILTER_WRITE
    assert kev.flags & KQ_EV_EOF
    assert p.poll(0) == [(a.fileno(), WRITE)]
    p.close()


def test_kqueue_error_event_is_error() -> None:
    # EV_ERROR in a returned kevent becomes ERROR, with the filter's bit.
    class FakeKqueue:
        def control(self, changes: Any, max_events: int, timeout: Any = None) -> list[kevent]:
            if changes is not None:
                return []
            return [kevent(7, KQ_FILTER_READ, KQ_EV_ERROR, 0, errno.EBADF)]

        def close(self) -> None:
            pass

    constants = {name: getattr(EMULATED_SELECT, name) for name in dir(EMULATED_SELECT)}
    module = SimpleNamespace(
        **{name: value for name, value in constants.items() if name.startswith("KQ_")},
        kevent=kevent,
        kqueue=FakeKqueue,
    )

    p = KqueuePoller(module)
    p.register(7, READ)
    assert p.poll(0) == [(7, READ | ERROR)]
    p.close()


def test_kqueue_recovers_fd_number_reused_without_unregister() -> None:
    # An fd closed while registered: the kernel forgot its filters, the adapter
    # did not. When the number comes back, register() raises FileExistsError
    # and the reactor calls modify(), which must watch the new file.
    p = make_emulated_kqueue_poller()
    a, b = socket.socketpair()
    c, d = socket.socketpair()
    fd = a.fileno()
    try:
        p.register(fd, READ | WRITE)
        a.close()
        os.dup2(c.fileno(), fd)  # the number now names another socket
        with pytest.raises(FileExistsError):
            p.register(fd, READ)
        p.modify(fd, READ)
        d.send(b"ping")
        assert p.poll(5.0) == [(fd, READ)]
        # The reactor's other path: it still thinks the fd is watched.
        p.modify(fd, READ | WRITE)
        assert p.poll(5.0) == [(fd, READ | WRITE)]
        p.modify(fd, WRITE)
        assert p.poll(5.0) == [(fd, WRITE)]
        p.unregister(fd)
        assert p.poll(0.01) == []
        assert emulated_kq(p).watched() == {}
    finally:
        os.close(fd)
        for s in (b, c, d):
            s.close()
        p.close()


def test_kqueue_unregister_deletes_every_filter_even_if_one_is_gone(pair: Pair) -> None:
    a, _ = pair
    p = make_emulated_kqueue_poller()
    fd = a.fileno()
    p.register(fd, READ | WRITE)
    kq = emulated_kq(p)
    kq.control([kevent(fd, KQ_FILTER_READ, KQ_EV_DELETE)], 0)
    p.unregister(fd)  # the read filter's ENOENT must not keep the write filter
    assert kq.watched() == {}
    p.close()


def test_kqueue_modify_of_closed_fd_raises() -> None:
    p = make_emulated_kqueue_poller()
    a, b = socket.socketpair()
    fd = a.fileno()
    p.register(fd, READ | WRITE)
    a.close()
    b.close()
    with pytest.raises(OSError) as info:
        p.modify(fd, READ)  # one add, one delete: both fail with EBADF
    assert info.value.errno == errno.EBADF
    p.unregister(fd)
    p.close()


def test_kqueue_asks_for_enough_events() -> None:
    # Each fd ready both ways is two kevents; none may be left for next time.
    p = make_emulated_kqueue_poller()
    pairs = [socket.socketpair() for _ in range(5)]
    try:
        for a, b in pairs:
            b.send(b"x")
            p.register(a.fileno(), READ | WRITE)
        assert events(p, 0) == {a.fileno(): READ | WRITE for a, _ in pairs}
    finally:
        for a, b in pairs:
            a.close()
            b.close()
        p.close()


# ------------------------------------------------------------------- EINTR


class InterruptOnce:
    """Stands in for ``wrapped``: its ``method`` raises InterruptedError once."""

    def __init__(self, wrapped: Any, method: str) -> None:
        self._wrapped = wrapped
        self._method = method
        self.interrupted = 0

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._wrapped, name)
        if name != self._method or self.interrupted:
            return attr

        def interrupted(*args: Any, **kwargs: Any) -> Any:
            self.interrupted += 1
            raise InterruptedError(errno.EINTR, os.strerror(errno.EINTR))

        return interrupted


#: Where each backend's wait happens: (attribute of the poller, its method).
WAIT_CALL = {
    "epoll": ("_epoll", "poll"),
    "poll": ("_poll", "poll"),
    "kqueue": ("_kq", "control"),
    "kqueue-emulated": ("_kq", "control"),
}


def test_eintr_does_not_escape(
    backend: str, poller: Poller, pair: Pair, monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b = pair
    poller.register(a.fileno(), READ)
    b.send(b"ping")
    stand_in: InterruptOnce
    if backend == "select":
        # select.select is a module function: patch it in the select module,
        # where the backend looks it up at each call in both builds (the
        # compiled one keeps its own reference to the module, so replacing
        # the backend's module global would not reach it).
        stand_in = InterruptOnce(SimpleNamespace(select=select.select), "select")

        def select_once(*args: Any) -> Any:
            return stand_in.select(*args)  # looked up per call: it raises only once

        monkeypatch.setattr(select, "select", select_once)
    else:
        attr, method = WAIT_CALL[backend]
        stand_in = InterruptOnce(getattr(poller, attr), method)
        monkeypatch.setattr(poller, attr, stand_in)
    assert poller.poll(5.0) == []
    assert stand_in.interrupted == 1
    assert events(poller) == {a.fileno(): READ}


def test_eintr_from_emulated_kqueue_does_not_escape(pair: Pair) -> None:
    a, b = pair
    p = make_emulated_kqueue_poller()
    p.register(a.fileno(), READ)
    b.send(b"ping")
    emulated_kq(p).inject_eintr(2)
    assert p.poll(5.0) == []
    assert p.poll(None) == []
    assert p.poll(5.0) == [(a.fileno(), READ)]
    p.close()


@pytest.mark.skipif(not hasattr(signal, "setitimer"), reason="needs signal.setitimer")
def test_real_signals_do_not_break_poll(poller: Poller, pair: Pair) -> None:
    # SIGALRM every 5 ms during a 0.2 s wait, with a handler that does nothing:
    # the wait is interrupted many times and must neither raise nor report.
    a, b = pair
    poller.register(a.fileno(), READ)
    caught: list[int] = []

    def handler(signum: int, frame: FrameType | None) -> None:
        caught.append(signum)

    old_handler = signal.signal(signal.SIGALRM, handler)
    # pytest-timeout may be using SIGALRM and the real timer: put them back after.
    old_timer = signal.setitimer(signal.ITIMER_REAL, 0.005, 0.005)
    try:
        assert poller.poll(0.2) == []
        interrupted = len(caught)
        b.send(b"ping")
        assert events(poller) == {a.fileno(): READ}
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old_handler)
        if old_timer[0] > 0:
            signal.setitimer(signal.ITIMER_REAL, *old_timer)
    assert interrupted > 0


# ----------------------------------------------------------- select's limit


@pytest.fixture
def high_fd(pair: Pair) -> Iterator[int]:
    """An fd numbered above FD_SETSIZE, a duplicate of ``pair[0]``."""
    target = FD_SETSIZE + 476  # 1500
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft <= target + 10:
        pytest.skip(f"RLIMIT_NOFILE is {soft}: cannot open an fd numbered {target}")
    fd = target
    while True:  # dup2 would silently close an fd in use
        try:
            os.fstat(fd)
        except OSError:
            break
        fd += 1
    os.dup2(pair[0].fileno(), fd)
    try:
        yield fd
    finally:
        os.close(fd)


def test_select_refuses_fd_above_fd_setsize(high_fd: int) -> None:
    poller = SelectPoller()
    with pytest.raises(ValueError, match="FD_SETSIZE") as info:
        poller.register(high_fd, READ)
    message = str(info.value)
    assert str(high_fd) in message
    others = [name for name in PREFERENCE if name != "select"]
    assert all(re.search(rf"\b{name}\b", message) for name in others), message
    # Nothing was half-registered.
    assert poller.poll(0) == []
    poller.close()


def test_other_backends_watch_fd_above_fd_setsize(
    backend: str, poller: Poller, pair: Pair, high_fd: int
) -> None:
    if backend == "select":
        pytest.skip("select cannot, see test_select_refuses_fd_above_fd_setsize")
    poller.register(high_fd, READ | WRITE)
    pair[1].send(b"ping")
    assert events(poller) == {high_fd: READ | WRITE}
    poller.unregister(high_fd)


# --------------------------------------------------------------- make_poller


@pytest.fixture
def no_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    monkeypatch.delenv("REACTOR_BACKEND", raising=False)
    return monkeypatch


def made(name: str | None = None) -> str:
    p = make_poller(name)
    try:
        return p.name
    finally:
        p.close()


def test_available_backends_order() -> None:
    names = available_backends()
    assert names == [name for name in PREFERENCE if name in names]  # best first
    assert names == [name for name in PREFERENCE if hasattr(select, name)]
    assert names[-1] == "select"
    if hasattr(select, "epoll"):  # Linux
        assert names == ["epoll", "poll", "select"]


def test_make_poller_default_is_best(no_env: pytest.MonkeyPatch) -> None:
    assert made() == available_backends()[0]
    no_env.setenv("REACTOR_BACKEND", "")
    assert made() == available_backends()[0]


@pytest.mark.parametrize("name", available_backends())
def test_make_poller_by_name(no_env: pytest.MonkeyPatch, name: str) -> None:
    assert made(name) == name
    assert made(f" {name.upper()} ") == name


@pytest.mark.parametrize("name", available_backends())
def test_make_poller_from_environment(no_env: pytest.MonkeyPatch, name: str) -> None:
    no_env.setenv("REACTOR_BACKEND", name)
    assert made() == name
    # An explicit name wins over the environment.
    for other in available_backends():
        assert made(other) == other


def check_lists_available(message: str) -> None:
    assert "available backends" in message
    for name in available_backends():
        assert re.search(rf"\b{name}\b", message), message


def test_make_poller_unknown_name(no_env: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="unknown") as info:
        make_poller("bogus")
    check_lists_available(str(info.value))
    no_env.setenv("REACTOR_BACKEND", "bogus")
    with pytest.raises(ValueError, match="'bogus' is unknown") as info:
        make_poller()
    check_lists_available(str(info.value))


def test_make_poller_unavailable_name(no_env: pytest.MonkeyPatch) -> None:
    missing = [name for name in PREFERENCE if name not in available_backends()]
    if not missing:
        pytest.skip("every backend is available here")
    name = "kqueue" if "kqueue" in missing else missing[0]  # kqueue on Linux
    with pytest.raises(ValueError, match="not available") as info:
        make_poller(name)
    check_lists_available(str(info.value))
    no_env.setenv("REACTOR_BACKEND", name)
    with pytest.raises(ValueError, match="not available"):
        make_poller()


# ------------------------------------------------------ the emulation itself


@pytest.fixture
def kq() -> Iterator[EmulatedKqueue]:
    q = EMULATED_SELECT.kqueue()
    try:
        yield q
    finally:
        q.close()


def add(fd: int, filt: int, flags: int = KQ_EV_ADD) -> kevent:
    return kevent(fd, filt, flags)


def test_emulation_constants_are_bsds() -> None:
    m = EMULATED_SELECT
    assert (m.KQ_FILTER_READ, m.KQ_FILTER_WRITE) == (-1, -2)
    assert (m.KQ_EV_ADD, m.KQ_EV_DELETE, m.KQ_EV_ENABLE, m.KQ_EV_DISABLE) == (1, 2, 4, 8)
    assert (m.KQ_EV_ONESHOT, m.KQ_EV_CLEAR) == (0x10, 0x20)
    assert (m.KQ_EV_EOF, m.KQ_EV_ERROR) == (0x8000, 0x4000)
    if hasattr(select, "kqueue"):  # pragma: no cover - BSD/macOS
        for name in dir(m):
            if name.startswith("KQ_"):
                assert getattr(m, name) == getattr(select, name), name


def test_emulation_kevent() -> None:
    with socket.socket() as s:
        kev = kevent(s)  # anything with fileno()
        assert (kev.ident, kev.filter, kev.flags) == (s.fileno(), KQ_FILTER_READ, KQ_EV_ADD)
        assert (kev.fflags, kev.data, kev.udata) == (0, 0, 0)
        assert kev == kevent(s.fileno())
        assert kev != kevent(s.fileno(), KQ_FILTER_WRITE)
        assert f"ident={s.fileno()}" in repr(kev)


def test_emulation_two_events_when_ready_both_ways(kq: EmulatedKqueue, pair: Pair) -> None:
    a, b = pair
    fd = a.fileno()
    assert kq.control([add(fd, KQ_FILTER_READ), add(fd, KQ_FILTER_WRITE)], 0) == []
    assert [kev.filter for kev in kq.control(None, 4, 0)] == [KQ_FILTER_WRITE]
    b.send(b"12345")
    result = kq.control(None, 4, 0)
    assert sorted(kev.filter for kev in result) == [KQ_FILTER_WRITE, KQ_FILTER_READ]
    assert all(kev.ident == fd for kev in result)
    (read,) = (kev for kev in result if kev.filter == KQ_FILTER_READ)
    assert read.data == 5
    assert not read.flags & (KQ_EV_EOF | KQ_EV_ERROR)


def test_emulation_enoent_on_deleting_unknown_filter(kq: EmulatedKqueue, pair: Pair) -> None:
    fd = pair[0].fileno()
    with pytest.raises(FileNotFoundError):
        kq.control([kevent(fd, KQ_FILTER_WRITE, KQ_EV_DELETE)], 0)
    kq.control([add(fd, KQ_FILTER_READ)], 0)
    with pytest.raises(FileNotFoundError):  # the read filter is not the write one
        kq.control([kevent(fd, KQ_FILTER_WRITE, KQ_EV_DELETE)], 0)
    with pytest.raises(FileNotFoundError):
        kq.control([kevent(fd, KQ_FILTER_WRITE, KQ_EV_ENABLE)], 0)
    kq.control([kevent(fd, KQ_FILTER_READ, KQ_EV_DELETE)], 0)
    with pytest.raises(FileNotFoundError):  # and it is gone
        kq.control([kevent(fd, KQ_FILTER_READ, KQ_EV_DELETE)], 0)
    # With room in the event list, the error comes back as an EV_ERROR kevent.
    (err,) = kq.control([kevent(fd, KQ_FILTER_WRITE, KQ_EV_DELETE)], 4, None)
    assert (err.ident, err.filter, err.flags, err.data) == (
        fd,
        KQ_FILTER_WRITE,
        KQ_EV_ERROR,
        errno.ENOENT,
    )


def test_emulation_ebadf_on_closed_fd(kq: EmulatedKqueue) -> None:
    a, b = socket.socketpair()
    fd = a.fileno()
    a.close()
    b.close()
    with pytest.raises(OSError) as info:
        kq.control([add(fd, KQ_FILTER_READ)], 0)
    assert info.value.errno == errno.EBADF
    with pytest.raises(OSError) as info:
        kq.control([add(-1, KQ_FILTER_READ)], 0)
    assert info.value.errno == errno.EBADF
    with pytest.raises(OSError) as info:
        kq.control([kevent(0, -10)], 0)  # not an emulated filter
    assert info.value.errno == errno.EINVAL


def test_emulation_forgets_closed_fd(kq: EmulatedKqueue) -> None:
    a, b = socket.socketpair()
    fd = a.fileno()
    kq.control([add(fd, KQ_FILTER_READ), add(fd, KQ_FILTER_WRITE)], 0)
    a.close()
    assert kq.control(None, 4, 0.01) == []  # POLLNVAL: dropped, not reported
    assert kq.watched() == {}
    with pytest.raises(OSError) as info:  # a change names a bad fd
        kq.control([kevent(fd, KQ_FILTER_READ, KQ_EV_DELETE)], 0)
    assert info.value.errno == errno.EBADF
    b.close()


def test_emulation_eof_with_data(kq: EmulatedKqueue, pair: Pair) -> None:
    a, b = pair
    fd = a.fileno()
    kq.control([add(fd, KQ_FILTER_READ), add(fd, KQ_FILTER_WRITE)], 0)
    b.send(b"abc")
    b.close()
    result = {kev.filter: kev for kev in kq.control(None, 4, 0)}
    assert result[KQ_FILTER_READ].flags & KQ_EV_EOF
    assert result[KQ_FILTER_READ].data == 3
    assert result[KQ_FILTER_WRITE].flags & KQ_EV_EOF
    assert a.recv(10) == b"abc"
    result = {kev.filter: kev for kev in kq.control(None, 4, 0)}
    assert result[KQ_FILTER_READ].flags & KQ_EV_EOF
    assert result[KQ_FILTER_READ].data == 0


def test_emulation_half_close_is_eof_for_reading_only(kq: EmulatedKqueue, pair: Pair) -> None:
    a, b = pair
    fd = a.fileno()
    kq.control([add(fd, KQ_FILTER_READ), add(fd, KQ_FILTER_WRITE)], 0)
    b.shutdown(socket.SHUT_WR)
    result = {kev.filter: kev for kev in kq.control(None, 4, 0)}
    assert result[KQ_FILTER_READ].flags & KQ_EV_EOF
    assert not result[KQ_FILTER_WRITE].flags & KQ_EV_EOF


def test_emulation_max_events_and_fairness(kq: EmulatedKqueue) -> None:
    pairs = [socket.socketpair() for _ in range(3)]
    try:
        fds = {a.fileno() for a, _ in pairs}
        kq.control([add(fd, KQ_FILTER_READ) for fd in fds], 0)
        for _, b in pairs:
            b.send(b"x")
        seen: list[int] = []
        for _ in range(3):
            result = kq.control(None, 1, 0)
            assert len(result) == 1
            seen.append(result[0].ident)
        assert set(seen) == fds  # level-triggered, yet none starved
        assert len(kq.control(None, 10, 0)) == 3
        assert kq.control(None, 0, None) == []  # no room: returns at once
    finally:
        for a, b in pairs:
            a.close()
            b.close()


def test_emulation_timeouts(kq: EmulatedKqueue, pair: Pair) -> None:
    kq.control([add(pair[0].fileno(), KQ_FILTER_READ)], 0)
    assert kq.control(None, 1, 0) == []
    start = time.monotonic()
    assert kq.control(None, 1, 0.02) == []
    assert time.monotonic() - start >= 0.015
    with pytest.raises(ValueError, match="timeout must be positive"):
        kq.control(None, 1, -1)
    with pytest.raises(ValueError):
        kq.control(None, -1, 0)


def test_emulation_oneshot_disable_enable(kq: EmulatedKqueue, pair: Pair) -> None:
    a, _ = pair
    fd = a.fileno()
    kq.control([add(fd, KQ_FILTER_WRITE, KQ_EV_ADD | KQ_EV_ONESHOT)], 0)
    (kev,) = kq.control(None, 4, 0)
    assert kev.flags & KQ_EV_ONESHOT
    assert kq.control(None, 4, 0) == []  # delivered once, then deleted
    assert kq.watched() == {}
    kq.control([add(fd, KQ_FILTER_WRITE, KQ_EV_ADD | KQ_EV_DISABLE)], 0)
    assert kq.control(None, 4, 0) == []
    kq.control([kevent(fd, KQ_FILTER_WRITE, KQ_EV_ENABLE)], 0)
    assert len(kq.control(None, 4, 0)) == 1
    kq.control([kevent(fd, KQ_FILTER_WRITE, KQ_EV_DISABLE)], 0)
    assert kq.control(None, 4, 0) == []
    assert kq.watched() == {fd: {KQ_FILTER_WRITE}}
    with pytest.raises(NotImplementedError):
        kq.control([add(fd, KQ_FILTER_READ, KQ_EV_ADD | 0x20)], 0)  # EV_CLEAR


def test_emulation_close(pair: Pair) -> None:
    q = EmulatedKqueue()
    fd = q.fileno()
    os.fstat(fd)  # a real descriptor
    q.control([add(pair[0].fileno(), KQ_FILTER_READ)], 0)
    with q:
        assert not q.closed
    assert q.closed
    q.close()
    with pytest.raises(OSError):
        os.fstat(fd)
    with pytest.raises(ValueError, match="closed"):
        q.control(None, 1, 0)
    with pytest.raises(ValueError, match="closed"):
        q.fileno()


def test_emulation_injected_eintr(kq: EmulatedKqueue, pair: Pair) -> None:
    a, b = pair
    b.send(b"x")
    kq.inject_eintr()
    # The change is applied before the wait is interrupted.
    with pytest.raises(InterruptedError):
        kq.control([add(a.fileno(), KQ_FILTER_READ)], 1, None)
    assert len(kq.control(None, 1, None)) == 1


def run_in_thread(func: Callable[[], object]) -> threading.Thread:
    thread = threading.Thread(target=func)
    thread.start()
    return thread


def test_emulation_blocks_until_ready(kq: EmulatedKqueue, pair: Pair) -> None:
    a, b = pair
    kq.control([add(a.fileno(), KQ_FILTER_READ)], 0)
    thread = run_in_thread(lambda: b.send(b"ping"))
    try:
        (kev,) = kq.control(None, 1, None)
    finally:
        thread.join()
    assert kev.ident == a.fileno()
