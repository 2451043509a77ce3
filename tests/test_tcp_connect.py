"""Outgoing TCP connections (``connect_tcp``), on every backend.

Name resolution is faked through ``reactor._getaddrinfo`` (no real DNS): a
resolver that fails, one that blocks on an Event (for timeouts and
cancellation), one that records its thread.
"""

from __future__ import annotations

import errno
import logging
import socket
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import pytest

from protocols.base import ClientFactory
from reactor import Reactor
from reactor.tcp import Connector
from tests.conftest import run_until
from tests.test_tcp import ALL_RECORDERS, Recorder, serve

pytestmark = pytest.mark.timeout(60)

AddrInfo = list[tuple[int, int, int, str, Any]]


@pytest.fixture(autouse=True)
def no_calls_after_connection_lost() -> Iterator[None]:
    """As in test_tcp: fail if any Recorder was called after its connection_lost."""
    ALL_RECORDERS.clear()
    yield
    problems = [f"{r.name}: {v}" for r in ALL_RECORDERS for v in r.violations]
    ALL_RECORDERS.clear()
    assert not problems, problems


class Outcome:
    """Collects on_connect / on_failure calls."""

    def __init__(self) -> None:
        self.connected: list[Any] = []
        self.failures: list[BaseException] = []

    def on_connect(self, protocol: Any) -> None:
        self.connected.append(protocol)

    def on_failure(self, reason: BaseException) -> None:
        self.failures.append(reason)

    @property
    def done(self) -> bool:
        return bool(self.connected or self.failures)


class RecordingClientFactory(ClientFactory[Any]):
    """A ClientFactory that records its hooks and failures."""

    def __init__(self, protocol: Callable[[], Any] | None = None) -> None:
        super().__init__(protocol or (lambda: Recorder("client")))
        self.events: list[str] = []
        self.failed: list[tuple[Any, BaseException]] = []

    def start_factory(self) -> None:
        self.events.append("start")

    def stop_factory(self) -> None:
        self.events.append("stop")

    def client_connection_failed(self, connector: Any, reason: BaseException) -> None:
        self.events.append("failed")
        self.failed.append((connector, reason))


def closed_port() -> int:
    """A loopback port nobody listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def addrinfo(port: int, host: str = "127.0.0.1") -> AddrInfo:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return [(family, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (host, port))]


def fake_resolver(
    monkeypatch: pytest.MonkeyPatch, reactor: Reactor, fn: Callable[..., AddrInfo]
) -> None:
    monkeypatch.setattr(reactor, "getaddrinfo", fn)


# ---------------------------------------------------------------- success


def test_connect_calls_connection_made_then_on_connect(reactor: Reactor) -> None:
    listener, servers = serve(reactor)
    client = Recorder("client")
    order: list[str] = []
    client.on_made = lambda p: order.append("connection_made")
    outcome = Outcome()

    def on_connect(protocol: Any) -> None:
        order.append("on_connect")
        outcome.on_connect(protocol)

    connector = reactor.connect_tcp(
        "127.0.0.1", listener.port, lambda: client, on_connect=on_connect
    )
    assert isinstance(connector, Connector)
    assert connector.state == "connecting"
    assert repr(connector) == f"<Connector 127.0.0.1:{listener.port} connecting>"
    assert connector.address == ("127.0.0.1", listener.port)
    run_until(reactor, lambda: outcome.done, what="connected")
    assert order == ["connection_made", "on_connect"]
    assert outcome.connected == [client]
    assert connector.state == "connected"
    assert connector.protocol is client
    transport = connector.transport
    assert transport is not None
    assert transport is client.transport
    assert connector not in reactor.resources
    sock = transport.get_extra_info("socket")
    assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
    assert transport.get_extra_info("peername") == ("127.0.0.1", listener.port)
    # Cancelling, or a late timer, after success changes nothing.
    connector.cancel()
    connector._timed_out(1.0)
    assert connector.state == "connected"
    transport.write(b"hi")
    run_until(reactor, lambda: servers and servers[0].data == b"hi", what="data")
    transport.close()
    run_until(reactor, lambda: client.lost, what="closed")
    assert outcome.failures == []


def test_client_factory_hooks_span_the_connection(reactor: Reactor) -> None:
    listener, _ = serve(reactor)
    factory = RecordingClientFactory()
    outcome = Outcome()
    reactor.connect_tcp("127.0.0.1", listener.port, factory, on_connect=outcome.on_connect)
    assert factory.events == ["start"]
    run_until(reactor, lambda: outcome.done, what="connected")
    client = outcome.connected[0]
    assert client.factory is factory
    assert factory.events == ["start"]  # still in use while connected
    client.transport.close()
    run_until(reactor, lambda: client.lost, what="closed")
    # The connection ended: the connector is done with the factory.
    assert factory.events == ["start", "stop"]


def test_on_connect_that_raises_is_logged(
    reactor: Reactor, caplog: pytest.LogCaptureFixture
) -> None:
    listener, servers = serve(reactor)
    client = Recorder("client")

    def bad(protocol: Any) -> None:
        raise RuntimeError("on_connect failed")

    reactor.connect_tcp("127.0.0.1", listener.port, lambda: client, on_connect=bad)
    run_until(reactor, lambda: client.transport is not None, what="connected")
    assert any("on_connect" in r.getMessage() for r in caplog.records)
    client.transport.write(b"works")
    run_until(reactor, lambda: servers and servers[0].data == b"works", what="data")


def test_connect_with_a_factory_object(reactor: Reactor) -> None:
    listener, _ = serve(reactor)
    factory = RecordingClientFactory()
    outcome = Outcome()
    reactor.connect_tcp("127.0.0.1", listener.port, factory, on_connect=outcome.on_connect)
    run_until(reactor, lambda: outcome.done, what="connected")
    assert isinstance(outcome.connected[0], Recorder)
    assert factory.failed == []


# ---------------------------------------------------------------- failures


def test_refused_is_reported_from_the_loop(
    reactor: Reactor, caplog: pytest.LogCaptureFixture
) -> None:
    factory = RecordingClientFactory()
    outcome = Outcome()
    port = closed_port()
    connector = reactor.connect_tcp(
        "127.0.0.1", port, factory, on_connect=outcome.on_connect, on_failure=outcome.on_failure
    )
    # Never synchronously from inside connect_tcp().
    assert outcome.failures == [] and factory.failed == []
    run_until(reactor, lambda: outcome.done, what="failure reported")
    assert outcome.connected == []
    assert len(outcome.failures) == 1
    reason = outcome.failures[0]
    assert isinstance(reason, ConnectionRefusedError)
    assert f"127.0.0.1:{port}" in str(reason)
    assert factory.failed == [(connector, reason)]
    assert factory.events == ["start", "failed", "stop"]
    assert connector.state == "failed"
    assert connector.reason is reason
    assert connector not in reactor.resources
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    # Cancelling a failed attempt reports nothing more.
    connector.cancel()
    for _ in range(3):
        reactor.run_once(0)
    assert len(outcome.failures) == 1


def test_failure_without_callbacks_is_logged(
    reactor: Reactor, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="reactor")
    port = closed_port()
    connector = reactor.connect_tcp("127.0.0.1", port, lambda: Recorder("client"))
    run_until(reactor, lambda: connector.state == "failed", what="failed")
    run_until(
        reactor,
        lambda: any("failed" in r.getMessage() for r in caplog.records),
        what="the failure logged",
    )
    messages = [r.getMessage() for r in caplog.records if r.name == "reactor"]
    assert messages == [f"connection to 127.0.0.1:{port} failed: {connector.reason}"]


def test_failure_callbacks_that_raise_are_logged(
    reactor: Reactor, caplog: pytest.LogCaptureFixture
) -> None:
    class BadFactory(RecordingClientFactory):
        def client_connection_failed(self, connector: Any, reason: BaseException) -> None:
            raise RuntimeError("factory failed too")

    outcome = Outcome()
    reactor.connect_tcp("127.0.0.1", closed_port(), BadFactory(), on_failure=outcome.on_failure)
    run_until(reactor, lambda: outcome.failures, what="on_failure still called")
    assert any("connection-failure callback" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("host", ["no-such-host.invalid", "localhost"])
def test_unresolvable_name_fails_with_gaierror(
    reactor: Reactor, monkeypatch: pytest.MonkeyPatch, host: str
) -> None:
    def no_such_host(*args: Any, **kwargs: Any) -> AddrInfo:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    fake_resolver(monkeypatch, reactor, no_such_host)
    factory = RecordingClientFactory()
    outcome = Outcome()
    connector = reactor.connect_tcp(host, 80, factory, on_failure=outcome.on_failure)
    assert connector.state == "resolving"
    run_until(reactor, lambda: outcome.done, what="failure reported")
    reason = outcome.failures[0]
    assert isinstance(reason, socket.gaierror)
    assert reason.errno == socket.EAI_NONAME
    assert f"cannot resolve {host!r}" in str(reason)
    assert factory.failed == [(connector, reason)]


def test_resolver_error_other_than_gaierror_is_passed_on(
    reactor: Reactor, monkeypatch: pytest.MonkeyPatch
) -> None:
    error = UnicodeError("label too long")

    def broken(*args: Any, **kwargs: Any) -> AddrInfo:
        raise error

    fake_resolver(monkeypatch, reactor, broken)
    outcome = Outcome()
    reactor.connect_tcp("x" * 300, 80, Recorder, on_failure=outcome.on_failure)
    run_until(reactor, lambda: outcome.done, what="failure reported")
    assert outcome.failures == [error]


def test_name_is_resolved_in_a_worker_thread(
    reactor: Reactor, monkeypatch: pytest.MonkeyPatch
) -> None:
    listener, servers = serve(reactor)
    calls: list[tuple[str, int, threading.Thread]] = []
    loop_turned = threading.Event()

    def resolver(host: str, port: int, *args: Any, **kwargs: Any) -> AddrInfo:
        calls.append((host, port, threading.current_thread()))
        # Answer only once the loop has run a callback meanwhile: a loop
        # blocked in the resolver would never set this.
        if not loop_turned.wait(10):
            raise AssertionError("the loop was blocked while resolving")
        return addrinfo(port)

    fake_resolver(monkeypatch, reactor, resolver)
    outcome = Outcome()
    connector = reactor.connect_tcp(
        "localhost",
        listener.port,
        lambda: Recorder("client"),
        on_connect=outcome.on_connect,
        on_failure=outcome.on_failure,
    )
    assert connector.state == "resolving"
    reactor.call_later(0.01, loop_turned.set)
    run_until(reactor, lambda: outcome.done, what="connected")
    assert outcome.failures == []
    assert connector.state == "connected"
    assert len(calls) == 1
    host, port, thread = calls[0]
    assert (host, port) == ("localhost", listener.port)
    assert thread is not threading.main_thread()
    assert thread is not threading.current_thread()
    run_until(reactor, lambda: servers, what="accepted")


def test_every_resolved_address_is_tried_in_order(
    reactor: Reactor, monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    listener, _ = serve(reactor)
    tried: list[Any] = []
    answers: AddrInfo = [
        # Fails synchronously in connect(): no such Unix socket path.
        (socket.AF_UNIX, socket.SOCK_STREAM, 0, "", str(tmp_path / "missing.sock")),
        # Refused asynchronously.
        *addrinfo(closed_port()),
        # Works.
        *addrinfo(listener.port),
    ]

    def resolver(host: str, port: int, *args: Any, **kwargs: Any) -> AddrInfo:
        tried.append(host)
        return answers

    fake_resolver(monkeypatch, reactor, resolver)
    outcome = Outcome()
    connector = reactor.connect_tcp(
        "multi.example", 1, Recorder, on_connect=outcome.on_connect, on_failure=outcome.on_failure
    )
    run_until(reactor, lambda: outcome.done, what="connected")
    assert outcome.failures == []
    assert connector.state == "connected"
    assert connector.transport is not None
    assert connector.transport.get_extra_info("peername") == ("127.0.0.1", listener.port)
    assert tried == ["multi.example"]


def test_when_every_address_fails_the_last_error_is_reported(
    reactor: Reactor, monkeypatch: pytest.MonkeyPatch
) -> None:
    answers = addrinfo(closed_port()) + addrinfo(closed_port())
    fake_resolver(monkeypatch, reactor, lambda *a, **k: answers)
    outcome = Outcome()
    reactor.connect_tcp("two.example", 1, Recorder, on_failure=outcome.on_failure)
    run_until(reactor, lambda: outcome.done, what="failure")
    assert isinstance(outcome.failures[0], ConnectionRefusedError)
    assert "two.example" in str(outcome.failures[0])


def test_no_address_at_all(reactor: Reactor, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_resolver(monkeypatch, reactor, lambda *a, **k: [])
    outcome = Outcome()
    reactor.connect_tcp("empty.example", 1, Recorder, on_failure=outcome.on_failure)
    run_until(reactor, lambda: outcome.done, what="failure")
    assert type(outcome.failures[0]) is OSError
    assert "no address to connect to for 'empty.example'" in str(outcome.failures[0])


def test_a_socket_that_cannot_be_made_is_a_failure_not_a_hang(
    reactor: Reactor, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # An address family the kernel does not support: socket() itself fails
    # (as it would with EMFILE). That is this attempt's failure, reported.
    bogus: AddrInfo = [(9999, socket.SOCK_STREAM, 0, "", ("127.0.0.1", 1))]
    fake_resolver(monkeypatch, reactor, lambda *a, **k: bogus)
    outcome = Outcome()
    connector = reactor.connect_tcp(
        "weird.example", 1, Recorder, on_failure=outcome.on_failure, timeout=None
    )
    run_until(reactor, lambda: outcome.done, what="failure reported", timeout=5)
    assert isinstance(outcome.failures[0], OSError)
    assert connector.state == "failed"
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_factory_returning_none_fails_the_connection(reactor: Reactor) -> None:
    listener, servers = serve(reactor)
    outcome = Outcome()
    reactor.connect_tcp(
        "127.0.0.1",
        listener.port,
        lambda: None,  # type: ignore[arg-type,return-value]
        on_connect=outcome.on_connect,
        on_failure=outcome.on_failure,
    )
    run_until(reactor, lambda: outcome.done, what="failure")
    assert isinstance(outcome.failures[0], ConnectionRefusedError)
    assert "built no protocol" in str(outcome.failures[0])
    run_until(reactor, lambda: servers and servers[0].lost, what="server sees the close")


def test_factory_that_raises_fails_the_connection(reactor: Reactor) -> None:
    listener, servers = serve(reactor)
    error = ValueError("no client protocol")

    def bad() -> Recorder:
        raise error

    outcome = Outcome()
    reactor.connect_tcp(
        "127.0.0.1",
        listener.port,
        bad,
        on_connect=outcome.on_connect,
        on_failure=outcome.on_failure,
    )
    run_until(reactor, lambda: outcome.done, what="failure")
    assert outcome.failures == [error]
    run_until(reactor, lambda: servers and servers[0].lost, what="server sees the close")


# ---------------------------------------------------------------- timeout and cancel


class BlockingResolver:
    """A resolver that blocks until released; records when it has returned."""

    def __init__(self, answer: AddrInfo) -> None:
        self.answer = answer
        self.release = threading.Event()
        self.started = threading.Event()

    def __call__(self, *args: Any, **kwargs: Any) -> AddrInfo:
        self.started.set()
        self.release.wait(20)
        return self.answer


def spy_on_thread_results(
    monkeypatch: pytest.MonkeyPatch, reactor: Reactor
) -> list[tuple[Any, BaseException | None]]:
    """Record each worker-thread result as it completes.

    The reactor's executor is replaced (not its run_in_thread method: a
    compiled reactor takes no per-instance method); close() shuts it down.
    """
    delivered: list[tuple[Any, BaseException | None]] = []

    def recorded(done: Future[Any]) -> None:
        exc = done.exception()
        delivered.append((None if exc else done.result(), exc))

    class RecordingExecutor(ThreadPoolExecutor):
        def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
            future = super().submit(fn, *args, **kwargs)
            future.add_done_callback(recorded)
            return future

    assert reactor._executor is None, "spy before the first run_in_thread()"
    reactor._executor = RecordingExecutor(max_workers=4, thread_name_prefix="reactor-worker")
    return delivered


def test_timeout_while_resolving(reactor: Reactor, monkeypatch: pytest.MonkeyPatch) -> None:
    listener, servers = serve(reactor)
    resolver = BlockingResolver(addrinfo(listener.port))
    fake_resolver(monkeypatch, reactor, resolver)
    delivered = spy_on_thread_results(monkeypatch, reactor)
    factory = RecordingClientFactory()
    outcome = Outcome()
    connector = reactor.connect_tcp(
        "slow.example",
        listener.port,
        factory,
        timeout=0.2,
        on_connect=outcome.on_connect,
        on_failure=outcome.on_failure,
    )
    try:
        run_until(reactor, lambda: outcome.done, what="timeout reported")
        reason = outcome.failures[0]
        assert isinstance(reason, TimeoutError)
        assert "timed out after 0.2 s" in str(reason)
        assert connector.state == "failed"
        assert factory.events == ["start", "failed", "stop"]
    finally:
        resolver.release.set()
    # The late answer reaches the loop and is ignored: no connection is made.
    run_until(reactor, lambda: delivered, what="the late resolver result delivered")
    for _ in range(3):
        reactor.run_once(0)
    assert connector.state == "failed"
    assert outcome.connected == []
    assert len(outcome.failures) == 1
    assert servers == []


def test_cancel_while_resolving(reactor: Reactor, monkeypatch: pytest.MonkeyPatch) -> None:
    resolver = BlockingResolver(addrinfo(closed_port()))
    fake_resolver(monkeypatch, reactor, resolver)
    delivered = spy_on_thread_results(monkeypatch, reactor)
    outcome = Outcome()
    connector = reactor.connect_tcp("slow.example", 1, Recorder, on_failure=outcome.on_failure)
    try:
        connector.cancel()
        connector.cancel()  # once is enough
        assert outcome.failures == []  # reported from the loop
        run_until(reactor, lambda: outcome.done, what="cancel reported")
        assert len(outcome.failures) == 1
        assert isinstance(outcome.failures[0], ConnectionAbortedError)
        assert "cancelled" in str(outcome.failures[0])
    finally:
        resolver.release.set()
    run_until(reactor, lambda: delivered, what="the late resolver result delivered")
    assert len(outcome.failures) == 1


def test_cancel_while_connecting(reactor: Reactor) -> None:
    listener, servers = serve(reactor)
    outcome = Outcome()
    connector = reactor.connect_tcp(
        "127.0.0.1",
        listener.port,
        Recorder,
        on_connect=outcome.on_connect,
        on_failure=outcome.on_failure,
    )
    assert connector.state == "connecting"
    connector.cancel()
    run_until(reactor, lambda: outcome.done, what="cancel reported")
    assert outcome.connected == []
    assert isinstance(outcome.failures[0], ConnectionAbortedError)
    # The half-made connection was closed: the server (if it saw it) sees the end.
    for _ in range(5):
        reactor.run_once(0.01)
    assert all(s.lost == [None] or not s.transport for s in servers)


def test_reactor_close_cancels_pending_attempts(
    reactor: Reactor, monkeypatch: pytest.MonkeyPatch
) -> None:
    resolver = BlockingResolver(addrinfo(1))
    fake_resolver(monkeypatch, reactor, resolver)
    outcome = Outcome()
    connector = reactor.connect_tcp("slow.example", 1, Recorder, on_failure=outcome.on_failure)
    try:
        reactor.close()
    finally:
        resolver.release.set()
    assert connector.state == "failed"
    assert len(outcome.failures) == 1
    assert isinstance(outcome.failures[0], ConnectionAbortedError)


@pytest.mark.parametrize("code", [errno.ETIMEDOUT, errno.EHOSTUNREACH])
def test_connect_error_types(reactor: Reactor, code: int) -> None:
    from reactor.sockets import connect_error as _connect_error

    error = _connect_error(code, "example", 7)
    assert error.errno == code
    assert str(error).endswith(f"connect to example:7 failed: {errno.errorcode[code]}")
    assert isinstance(error, TimeoutError) == (code == errno.ETIMEDOUT)


@pytest.mark.skipif(not socket.has_ipv6, reason="no IPv6 support in this Python")
def test_connect_to_ipv6_literal(reactor: Reactor) -> None:
    try:
        listener, servers = serve(reactor, host="::1")
    except OSError as exc:  # pragma: no cover - depends on the machine
        pytest.skip(f"IPv6 is not available on the loopback interface (::1): {exc}")
    outcome = Outcome()
    reactor.connect_tcp("::1", listener.port, Recorder, on_connect=outcome.on_connect)
    run_until(reactor, lambda: outcome.done, what="connected")
    assert outcome.connected[0].transport.get_extra_info("peername")[:2] == (
        "::1",
        listener.port,
    )
    run_until(reactor, lambda: servers, what="accepted")


def test_connect_without_a_timeout(reactor: Reactor) -> None:
    listener, servers = serve(reactor)
    outcome = Outcome()
    connector = reactor.connect_tcp(
        "127.0.0.1", listener.port, Recorder, timeout=None, on_connect=outcome.on_connect
    )
    run_until(reactor, lambda: outcome.done, what="connected")
    assert connector.state == "connected"
    run_until(reactor, lambda: servers, what="accepted")


def test_resolved_unix_address_connects_without_nodelay(
    reactor: Reactor, monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    # The connector takes any family getaddrinfo gives; TCP_NODELAY is for TCP only.
    path = str(tmp_path / "server.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
        server.bind(path)
        server.listen()
        answer: AddrInfo = [(socket.AF_UNIX, socket.SOCK_STREAM, 0, "", path)]
        fake_resolver(monkeypatch, reactor, lambda *a, **k: answer)
        outcome = Outcome()
        reactor.connect_tcp(
            "unix.example",
            0,
            Recorder,
            on_connect=outcome.on_connect,
            on_failure=outcome.on_failure,
        )
        run_until(reactor, lambda: outcome.done, what="connected")
        assert outcome.failures == []
        client = outcome.connected[0]
        assert client.transport.get_extra_info("socket").family == socket.AF_UNIX
        client.transport.close()
        run_until(reactor, lambda: client.lost, what="closed")


@pytest.mark.parametrize("code", [errno.EAGAIN, errno.EADDRNOTAVAIL])
def test_no_local_port_is_a_failure_not_in_progress(
    reactor: Reactor, monkeypatch: pytest.MonkeyPatch, code: int
) -> None:
    """A TCP connect() answering EAGAIN or EADDRNOTAVAIL (no free local port)
    never started: it fails with a hint, instead of waiting for a writability
    that would report a connection that does not exist."""

    def no_port(self: socket.socket, address: Any) -> int:
        return code

    monkeypatch.setattr(socket.socket, "connect_ex", no_port)
    outcome = Outcome()
    connector = reactor.connect_tcp(
        "127.0.0.1", 9, lambda: Recorder("client"), on_failure=outcome.on_failure
    )
    run_until(reactor, lambda: outcome.done, what="failure reported")
    assert connector.state == "failed"
    [reason] = outcome.failures
    assert isinstance(reason, OSError) and reason.errno == code
    assert "no free local port" in str(reason)
    assert connector not in reactor.resources
