"""Core hardening (issue 11): a close that never drains, NaN timers, transports
touched from other threads, and sockets the select backend cannot watch.

Every test runs on every backend; the FD_SETSIZE tests matter for select and
check that the others serve such sockets.
"""

from __future__ import annotations

import contextlib
import math
import os
import resource
import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any, cast

import pytest

from protocols import DatagramProtocol, Protocol
from reactor import Reactor, StreamTransport
from tests.conftest import make_reactor, run_until

pytestmark = pytest.mark.timeout(60)

FD_SETSIZE = 1024


class Server(Protocol):
    """Records its connection's life; the test drives the transport."""

    instances: list[Server]

    def __init__(self) -> None:
        super().__init__()
        self.lost: list[BaseException | None] = []
        self.made = False
        self.received = b""

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        self.made = True
        Server.instances.append(self)

    def data_received(self, data: bytes) -> None:
        self.received += data

    def connection_lost(self, exc: BaseException | None) -> None:
        self.lost.append(exc)


@pytest.fixture(autouse=True)
def _fresh_instances() -> None:
    Server.instances = []


def _server_side(reactor: Reactor) -> tuple[Server, socket.socket]:
    listener = reactor.listen_tcp(0, Server)
    client = socket.create_connection(("127.0.0.1", listener.port))
    run_until(reactor, lambda: Server.instances, what="the connection")
    return Server.instances[0], client


def _fill(server: Server) -> None:
    """Write until the kernel's buffers are full and the rest is queued."""
    chunk = b"x" * 65536
    for _ in range(4096):  # bounded: 256 MiB at most
        server.transport.write(chunk)
        if server.transport.get_write_buffer_size() > 0:
            return
    pytest.fail("the kernel took 256 MiB without blocking")


# ------------------------------------------------------------- close deadline


def test_close_of_a_connection_whose_peer_never_reads_is_aborted(backend: str) -> None:
    with make_reactor(backend, close_timeout=0.2) as reactor:
        server, client = _server_side(reactor)
        _fill(server)
        server.transport.close()
        assert server.transport.is_closing()
        run_until(reactor, lambda: server.lost, what="the close deadline")
        [exc] = server.lost
        assert isinstance(exc, TimeoutError)
        assert "close timeout" in str(exc)
        run_until(reactor, lambda: reactor.stats()["connections"] == 0, what="the slot freed")
        # The client is told with a reset, and the kernel keeps nothing for it.
        client.settimeout(10)
        with pytest.raises(ConnectionResetError):
            for _ in range(100_000):  # bounded: what arrived before the reset, then the reset
                if not client.recv(1 << 20):
                    break
        client.close()


def test_a_close_that_drains_in_time_is_clean_and_leaves_no_timer(backend: str) -> None:
    with make_reactor(backend, close_timeout=30.0) as reactor:
        server, client = _server_side(reactor)
        _fill(server)
        server.transport.close()
        deadline = cast(StreamTransport, server.transport)._close_timer
        assert deadline is not None and not deadline.cancelled()
        client.setblocking(False)

        def drain() -> bool:
            with contextlib.suppress(BlockingIOError):
                while client.recv(1 << 20):
                    pass
            return bool(server.lost)

        run_until(reactor, drain, what="the flush")
        assert server.lost == [None]
        assert deadline.cancelled()  # drained in time: the deadline is gone
        client.close()


def test_set_close_timeout_overrides_the_reactors(backend: str) -> None:
    with make_reactor(backend, close_timeout=3600.0) as reactor:
        server, client = _server_side(reactor)
        _fill(server)
        server.transport.close()
        cast(StreamTransport, server.transport).set_close_timeout(
            0.1
        )  # restarts the waiting close's clock
        run_until(reactor, lambda: server.lost, what="the shorter deadline")
        assert isinstance(server.lost[0], TimeoutError)
        client.close()


@pytest.mark.parametrize("bad", [0, -1.0, math.nan, math.inf, "5", True])
def test_close_timeouts_out_of_range_are_refused(reactor: Reactor, bad: Any) -> None:
    with pytest.raises(ValueError, match="close_timeout must be"):
        Reactor(close_timeout=bad)
    server, client = _server_side(reactor)
    with pytest.raises(ValueError, match=r"set_close_timeout\(\) must be"):
        cast(StreamTransport, server.transport).set_close_timeout(bad)
    client.close()


# ------------------------------------------------------------------ NaN timers


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_timers_refuse_nan_and_infinity(reactor: Reactor, bad: float) -> None:
    fired: list[str] = []
    reactor.call_later(0, fired.append, "before")
    with pytest.raises(ValueError, match="finite"):
        reactor.call_later(bad, fired.append, "bad")
    with pytest.raises(ValueError, match="finite"):
        reactor.call_at(bad, fired.append, "bad")
    reactor.call_later(0.01, fired.append, "after")
    assert reactor.stats()["timers_pending"] == 2
    # The loop is unharmed: the good timers fire, in order.
    run_until(reactor, lambda: len(fired) == 2, what="the good timers")
    assert fired == ["before", "after"]


# ------------------------------------------------------------ wrong-thread calls


@pytest.mark.parametrize("method", ["write", "close", "abort"])
def test_transport_calls_from_another_thread_raise(backend: str, method: str) -> None:
    with make_reactor(backend) as reactor:
        server, client = _server_side(reactor)
        outcome: list[BaseException | None] = []

        def from_thread() -> None:
            args = (b"data",) if method == "write" else ()
            try:
                getattr(server.transport, method)(*args)
            except BaseException as exc:
                outcome.append(exc)
            else:
                outcome.append(None)
            reactor.call_from_thread(reactor.stop)

        reactor.call_soon(threading.Thread(target=from_thread).start)
        reactor.run()
        [exc] = outcome
        assert isinstance(exc, RuntimeError)
        assert "call_from_thread" in str(exc)
        assert not server.transport.is_closing()  # nothing happened
        # The documented way works.
        server.transport.write(b"from the loop")
        client.settimeout(10)
        assert client.recv(100) == b"from the loop"
        client.close()


def test_datagram_calls_from_another_thread_raise(reactor: Reactor) -> None:
    class Sink(DatagramProtocol):
        pass

    endpoint = reactor.listen_udp(0, Sink())
    outcome: list[BaseException] = []

    def from_thread() -> None:
        calls: list[Callable[[], object]] = [
            lambda: endpoint.sendto(b"x", ("127.0.0.1", 9)),
            endpoint.close,
        ]
        for call in calls:
            try:
                call()
            except RuntimeError as exc:
                outcome.append(exc)
        reactor.call_from_thread(reactor.stop)

    reactor.call_soon(threading.Thread(target=from_thread).start)
    reactor.run()
    assert len(outcome) == 2
    assert not endpoint.is_closing()


def test_calls_from_another_thread_are_fine_while_the_loop_is_not_running(
    reactor: Reactor,
) -> None:
    server, client = _server_side(reactor)
    done: list[bool] = []

    def from_thread() -> None:
        server.transport.write(b"set-up")
        done.append(True)

    thread = threading.Thread(target=from_thread)
    thread.start()
    thread.join(10)
    assert done == [True]
    client.settimeout(10)
    assert client.recv(100) == b"set-up"
    client.close()


# ------------------------------------------------------------ FD_SETSIZE


@contextlib.contextmanager
def descriptors_taken_up_to(target: int) -> Iterator[None]:
    """Hold /dev/null open on every free fd below ``target``, so the next
    socket gets a number at or above it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = target + 64
    if soft < needed:
        if hard != resource.RLIM_INFINITY and hard < needed:
            pytest.fail(f"RLIMIT_NOFILE hard limit {hard} is below {needed}: raise it to run this")
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))
    held: list[int] = []
    try:
        while True:
            fd = os.open(os.devnull, os.O_RDONLY)
            if fd >= target:
                os.close(fd)
                break
            held.append(fd)
        yield
    finally:
        for fd in held:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_an_accepted_socket_the_backend_cannot_watch_is_refused_cleanly(
    backend: str, caplog: pytest.LogCaptureFixture
) -> None:
    with make_reactor(backend) as reactor:
        listener = reactor.listen_tcp(0, Server)
        before = reactor.stats()
        clients = []
        with descriptors_taken_up_to(FD_SETSIZE):
            for _ in range(2):
                clients.append(socket.create_connection(("127.0.0.1", listener.port)))
                run_until(
                    reactor,
                    lambda: listener.accepted == len(clients),
                    what="the accept",
                )
        if backend == "select":
            assert listener.refused == 2
            assert Server.instances == []  # no connection_made for what cannot be served
            logged = [r for r in caplog.records if "cannot serve a connection" in r.getMessage()]
            assert len(logged) == 1  # once, not per connection
            assert "poll" in logged[0].getMessage()  # the hint
            for client in clients:  # the client sees the close at once
                client.settimeout(10)
                assert client.recv(10) == b""
            after = reactor.stats()
            assert after["resources"] == before["resources"]
            assert after["registered_fds"] == before["registered_fds"]
        else:
            assert listener.refused == 0
            run_until(reactor, lambda: len(Server.instances) == 2, what="served")
        # A connection on a low fd is served as usual.
        served = len(Server.instances)
        fresh = socket.create_connection(("127.0.0.1", listener.port))
        run_until(reactor, lambda: len(Server.instances) > served, what="a served connection")
        Server.instances[-1].transport.write(b"ok")
        fresh.settimeout(10)
        assert fresh.recv(10) == b"ok"
        for client in [*clients, fresh]:
            client.close()


def test_a_connect_the_backend_cannot_watch_fails_cleanly(backend: str) -> None:
    with make_reactor(backend) as reactor:
        listener = reactor.listen_tcp(0, Server)
        failures: list[BaseException] = []
        connected: list[object] = []
        with descriptors_taken_up_to(FD_SETSIZE):
            reactor.connect_tcp(
                "127.0.0.1",
                listener.port,
                Server,
                on_connect=connected.append,
                on_failure=failures.append,
            )
        run_until(reactor, lambda: failures or connected, what="the outcome")
        if backend == "select":
            [exc] = failures
            assert "FD_SETSIZE" in str(exc)
            # No connector is left behind (the listener may have accepted the
            # half-made connection: the kernel finished it before we gave up).
            assert not [r for r in reactor.resources if r.kind == "connector"]
        else:
            assert connected and not failures
