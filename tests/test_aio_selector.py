"""ReactorSelector: asyncio's selector interface over a reactor's fd tables, on every backend.

asyncio's selector loop drives it through register/modify/unregister/get_map;
these tests drive it directly, as asyncio would, and check that the reactor
watches exactly what is registered and queues asyncio's handles.
"""

from __future__ import annotations

import asyncio
import selectors
import socket
from collections import deque
from collections.abc import Iterator

import pytest

from reactor import Reactor
from reactor.aio import EventLoop
from reactor.aio.selector import ReactorSelector
from tests.conftest import make_reactor

pytestmark = pytest.mark.timeout(30)

R, W = selectors.EVENT_READ, selectors.EVENT_WRITE


@pytest.fixture
def reactor_(backend: str) -> Iterator[Reactor]:
    r = make_reactor(backend)
    try:
        yield r
    finally:
        r.close()


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)
    try:
        yield a, b
    finally:
        a.close()
        b.close()


def watched(r: Reactor, fd: int) -> tuple[bool, bool]:
    return fd in r._fds.readers, fd in r._fds.writers


def test_register_modify_unregister_follow_the_reactor(
    reactor_: Reactor, pair: tuple[socket.socket, socket.socket]
) -> None:
    sel = ReactorSelector(reactor_)
    a, _ = pair
    fd = a.fileno()
    key = sel.register(a, R, "data")
    assert (key.fileobj, key.fd, key.events, key.data) == (a, fd, R, "data")
    assert watched(reactor_, fd) == (True, False)
    assert sel.get_key(a) is key and sel.get_map()[fd] is key and len(sel.get_map()) == 1
    assert list(sel.get_map()) == [fd]
    sel.modify(fd, R | W, "both")
    assert watched(reactor_, fd) == (True, True)
    sel.modify(a, W, "write")
    assert watched(reactor_, fd) == (False, True)
    assert sel.modify(a, W, "same events, new data").data == "same events, new data"
    assert sel.unregister(a).events == W
    assert watched(reactor_, fd) == (False, False)
    sel.register(fd, W)  # a writer first
    assert watched(reactor_, fd) == (False, True)
    sel.unregister(fd)
    sel.register(fd, R | W)
    assert watched(reactor_, fd) == (True, True)
    sel.close()
    assert watched(reactor_, fd) == (False, False)
    assert len(sel.get_map()) == 0


def test_errors_are_selectors_own(
    reactor_: Reactor, pair: tuple[socket.socket, socket.socket]
) -> None:
    sel = ReactorSelector(reactor_)
    a, _ = pair
    for bad in (0, 8, R | 16):
        with pytest.raises(ValueError, match="Invalid events"):
            sel.register(a, bad)
    with pytest.raises(ValueError, match="Invalid file object"):
        sel.register("not a file", R)
    with pytest.raises(ValueError, match="Invalid file descriptor"):
        sel.register(-1, R)
    with pytest.raises(KeyError):
        sel.unregister(a)
    with pytest.raises(KeyError):
        sel.modify(a, R)
    with pytest.raises(KeyError):
        sel.get_map()["not a file"]
    sel.register(a, R)
    with pytest.raises(KeyError, match="already registered"):
        sel.register(a, W)
    with pytest.raises(ValueError, match="Invalid events"):
        sel.modify(a, 0)
    with pytest.raises(RuntimeError, match="reactor polls"):
        sel.select(0)
    sel.close()


def test_a_failed_registration_leaves_nothing_watched(
    reactor_: Reactor, pair: tuple[socket.socket, socket.socket]
) -> None:
    sel = ReactorSelector(reactor_)
    a, _ = pair
    reactor_.close()  # a closed reactor refuses to watch
    with pytest.raises(RuntimeError, match="closed"):
        sel.register(a, R | W)
    assert a.fileno() not in sel.get_map()
    sel.close()


def test_ready_fds_queue_their_handles(
    reactor_: Reactor, pair: tuple[socket.socket, socket.socket]
) -> None:
    sel = ReactorSelector(reactor_)
    a, b = pair
    ready: deque[asyncio.Handle] = deque()
    removed: list[tuple[str, int]] = []

    class FakeLoop:
        def _remove_reader(self, fd: int) -> None:
            removed.append(("reader", fd))
            sel.modify(fd, W, (None, writer))

        def _remove_writer(self, fd: int) -> None:
            removed.append(("writer", fd))
            sel.unregister(fd)

    loop = asyncio.new_event_loop()
    try:
        reader = asyncio.Handle(lambda: None, (), loop)
        writer = asyncio.Handle(lambda: None, (), loop)
        sel._read_ready(a.fileno())  # not attached yet: ignored
        sel.attach(FakeLoop(), ready)
        sel.register(a, R | W, (reader, writer))
        b.send(b"x")
        reactor_.run_once(1.0)
        assert list(ready) == [reader, writer]
        ready.clear()
        # Cancelled handles are removed when found ready, as asyncio does.
        reader.cancel()
        writer.cancel()
        reactor_.run_once(1.0)
        assert removed == [("reader", a.fileno()), ("writer", a.fileno())]
        assert not ready
        # Unknown fds and empty slots are ignored.
        sel._read_ready(999)
        sel._write_ready(999)
        sel.register(a, R, (None, None))
        sel._read_ready(a.fileno())
        sel.modify(a, W, (None, None))
        sel._write_ready(a.fileno())
        assert not ready
    finally:
        loop.close()
        sel.close()


def test_closing_the_loop_unregisters_from_a_shared_reactor(reactor_: Reactor) -> None:
    aio_loop = EventLoop(reactor=reactor_)
    a, b = socket.socketpair()
    try:
        aio_loop.add_reader(a, lambda: None)
        assert watched(reactor_, a.fileno())[0]
        aio_loop.close()
        assert not watched(reactor_, a.fileno())[0]
    finally:
        a.close()
        b.close()
