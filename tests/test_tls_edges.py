"""TLS edge cases: user code that raises, calls in odd states, the less common methods."""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

import pytest

from reactor import Reactor
from tests.conftest import run_until
from tests.test_tls import connect, quiet, serve
from tests.tls_helpers import Certs, Recorder, make_certs

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def certs() -> Certs:
    return make_certs()


def pair(reactor: Reactor, certs: Certs, server: Any = Recorder, **kwargs: Any) -> Any:
    """A connected TLS client and server; returns (client, server protocol, listener)."""
    listener = serve(reactor, certs, factory=server, **kwargs)
    client = Recorder()
    connect(reactor, listener.port, certs, client)
    run_until(reactor, lambda: client.made and listener.servers and listener.servers[0].made)
    return client, listener.servers[0], listener


@pytest.mark.parametrize("hook", ["connection_made", "eof_received", "pause_writing"])
def test_an_exception_in_a_hook_closes_that_connection(
    reactor: Reactor, certs: Certs, caplog: pytest.LogCaptureFixture, hook: str
) -> None:
    class Faulty(Recorder):
        pass

    def boom(self: Any, *args: Any) -> None:
        raise RuntimeError(f"a bug in {hook}")

    setattr(Faulty, hook, boom)
    listener = serve(reactor, certs, factory=Faulty)
    client = Recorder()
    connect(reactor, listener.port, certs, client)
    run_until(reactor, lambda: listener.servers and client.made)
    if hook == "eof_received":
        client.transport.close()
    elif hook == "pause_writing":
        client.transport.pause_reading()
        server = listener.servers[0]
        run_until(reactor, lambda: server.transport is not None)
        while not server.lost:
            server.transport.write(b"z" * 65536)
            reactor.run_once(0)
    run_until(reactor, lambda: listener.servers[0].lost or hook == "connection_made")
    run_until(reactor, lambda: f"a bug in {hook}" in caplog.text)
    client.transport.abort()
    run_until(reactor, lambda: client.lost)


def test_buffered_protocol_errors(
    reactor: Reactor, certs: Certs, caplog: pytest.LogCaptureFixture
) -> None:
    class Empty:
        lost: list[Any]

        def __init__(self) -> None:
            self.lost = []

        def connection_made(self, transport: Any) -> None:
            self.transport = transport

        def get_buffer(self, sizehint: int) -> bytearray:
            return bytearray()

        def buffer_updated(self, n: int) -> None:
            raise AssertionError("never called")

        def eof_received(self) -> None:
            return None

        def connection_lost(self, exc: BaseException | None) -> None:
            self.lost.append(exc)

    class Raising(Empty):
        def get_buffer(self, sizehint: int) -> bytearray:
            return bytearray(10)

        def buffer_updated(self, n: int) -> None:
            raise ValueError("a bug in buffer_updated")

    def check(server: Any, message: str) -> None:
        listener = reactor.listen_tcp(0, lambda: server, ssl=certs.server_context())
        client = Recorder()
        connect(reactor, listener.port, certs, client)
        run_until(reactor, lambda: client.made)
        client.transport.write(b"data")
        run_until(reactor, lambda: server.lost)
        assert message in caplog.text
        assert isinstance(server.lost[0], Exception)
        listener.close()

    check(Empty(), "empty buffer")
    check(Raising(), "a bug in buffer_updated")


def test_a_raising_handshake_callback_is_logged(
    reactor: Reactor, certs: Certs, caplog: pytest.LogCaptureFixture
) -> None:
    listener = serve(reactor, certs)
    client = Recorder()

    def on_connect(protocol: Any) -> None:
        raise RuntimeError("a bug in on_connect")

    reactor.connect_tcp(
        "127.0.0.1",
        listener.port,
        lambda: client,
        ssl=certs.client_context(),
        server_hostname="localhost",
        on_connect=on_connect,
    )
    run_until(reactor, lambda: "a bug in on_connect" in caplog.text)
    client.transport.write(b"the connection itself is fine")
    run_until(reactor, lambda: client.data == b"the connection itself is fine")
    client.transport.close()
    run_until(reactor, lambda: client.lost == [None])


def test_a_raising_connection_lost_is_logged(
    reactor: Reactor, certs: Certs, caplog: pytest.LogCaptureFixture
) -> None:
    class Faulty(Recorder):
        def connection_lost(self, exc: BaseException | None) -> None:
            super().connection_lost(exc)
            raise RuntimeError("a bug in connection_lost")

    client, server, _ = pair(reactor, certs, Faulty)
    client.transport.close()
    run_until(reactor, lambda: server.lost and "a bug in connection_lost" in caplog.text)


def test_a_failure_with_no_one_to_tell_is_logged(
    reactor: Reactor, certs: Certs, caplog: pytest.LogCaptureFixture
) -> None:
    import socket

    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    reactor.connect_tcp(
        "127.0.0.1", port, Recorder, ssl=certs.client_context(), server_hostname="localhost"
    )
    run_until(reactor, lambda: "TLS connection to localhost failed" in caplog.text)


def test_writes_of_every_kind_and_in_every_state(reactor: Reactor, certs: Certs) -> None:
    client, _server, _ = pair(reactor, certs, lambda: Recorder(echo=True))
    tls = client.transport
    tls.write(bytearray(b"a"))
    tls.write(memoryview(b"b"))
    tls.writelines([b"c", bytearray(b"d")])
    tls.write(b"")
    with pytest.raises(TypeError):
        tls.write("text")
    big = os.urandom(200_000)  # more than one encryption step: goes through the queue
    tls.write(big)
    run_until(reactor, lambda: len(client.data) == 4 + len(big))
    assert bytes(client.data) == b"abcd" + big
    assert tls.is_reading()
    tls.set_close_timeout(5)
    tls.close()
    tls.close()  # a second close is a no-op
    tls.write(b"dropped")
    run_until(reactor, lambda: client.lost == [None])
    assert not tls.is_reading()
    tls.abort()  # after the end: harmless
    tls.pause_reading()
    tls.resume_reading()


def test_resume_reading_delivers_what_waited(reactor: Reactor, certs: Certs) -> None:
    client, server, _ = pair(reactor, certs)
    server.transport.pause_reading()
    server.transport.pause_reading()  # idempotent
    client.transport.write(b"first")
    reactor.run_once(0.05)
    assert server.data == b""
    server.transport.resume_reading()
    server.transport.resume_reading()  # idempotent
    run_until(reactor, lambda: server.data == b"first")


def test_set_protocol_switches_where_data_goes(reactor: Reactor, certs: Certs) -> None:
    client, server, _ = pair(reactor, certs)
    other = Recorder()
    server.transport.set_protocol(other)
    assert server.transport.get_protocol() is other
    client.transport.write(b"to the other one")
    run_until(reactor, lambda: other.data == b"to the other one")
    assert server.data == b""


def test_eof_received_returning_true_is_ignored(reactor: Reactor, certs: Certs) -> None:
    class KeepOpen(Recorder):
        def eof_received(self) -> bool:
            super().eof_received()
            return True

    client, server, _ = pair(reactor, certs, KeepOpen)
    client.transport.close()
    run_until(reactor, lambda: server.lost == [None] and client.lost == [None])
    assert server.eof == 1


def test_close_during_the_handshake_waits_for_it(reactor: Reactor, certs: Certs) -> None:
    server = Recorder(echo=True)
    listener = reactor.listen_tcp(0, lambda: server)
    client = Recorder()
    reactor.connect_tcp("127.0.0.1", listener.port, lambda: client)
    run_until(reactor, lambda: client.made and server.made)
    server.transport = server.transport.start_tls(certs.server_context(), server_side=True)
    tls = client.transport.start_tls(certs.client_context(), server_hostname="localhost")
    tls.write(b"written before the handshake")
    tls.close()
    assert tls.is_closing()
    run_until(reactor, lambda: client.lost)
    assert client.lost == [None]
    assert server.data == b"written before the handshake"
    run_until(reactor, lambda: server.lost == [None])


def test_writes_during_a_long_handshake_pause_the_writer(reactor: Reactor, certs: Certs) -> None:
    silent = Recorder()  # never answers the ClientHello
    listener = reactor.listen_tcp(0, lambda: silent)
    client = Recorder()
    reactor.connect_tcp("127.0.0.1", listener.port, lambda: client)
    run_until(reactor, lambda: client.made)
    tls = client.transport.start_tls(certs.client_context(), server_hostname="localhost")
    tls.set_write_buffer_limits(high=100)
    tls.write(b"x" * 150)
    assert client.paused == 1
    assert tls.get_write_buffer_size() >= 150
    tls.abort()
    run_until(reactor, lambda: client.lost == [None])
    run_until(reactor, lambda: silent.lost)


def test_calls_from_another_thread_are_refused(reactor: Reactor, certs: Certs) -> None:
    client, _server, _ = pair(reactor, certs)
    errors: list[BaseException] = []

    def from_thread() -> None:
        for call in (lambda: client.transport.write(b"x"), client.transport.close):
            try:
                call()
            except RuntimeError as exc:
                errors.append(exc)
        reactor.call_from_thread(reactor.stop)

    # Started from inside the loop: the calls must come while it runs.
    reactor.call_soon(threading.Thread(target=from_thread).start)
    reactor.run()
    assert len(errors) == 2 and "another thread" in str(errors[0])


def test_peer_closes_while_we_are_closing(reactor: Reactor, certs: Certs) -> None:
    client, server, _ = pair(reactor, certs, ssl_shutdown_timeout=5)

    class Closer(Recorder):
        """Answers our close_notify with a bare FIN, as some peers do."""

        def data_received(self, data: bytes) -> None:
            self.transport.close()

    plain = server.transport._plain
    closer = Closer()
    closer.transport = plain
    plain.set_protocol(closer)
    client.transport.close()
    run_until(reactor, lambda: client.lost)
    assert client.lost == [None]
    run_until(reactor, lambda: quiet(reactor))


def test_handshake_timeout_logs_once(
    reactor: Reactor, certs: Certs, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="reactor")
    silent = Recorder()
    listener = reactor.listen_tcp(0, lambda: silent)
    client = Recorder()
    reactor.connect_tcp("127.0.0.1", listener.port, lambda: client)
    run_until(reactor, lambda: client.made)
    done: list[Any] = []
    client.transport = client.transport.start_tls(
        certs.client_context(),
        server_hostname="localhost",
        ssl_handshake_timeout=0.1,
        on_handshake=done.append,
    )
    run_until(reactor, lambda: client.lost)
    assert isinstance(done[0], TimeoutError)
    assert client.lost == done  # start_tls: the protocol hears why
    assert caplog.text.count("did not finish within") == 1


def test_the_observer_surface_follows_the_session(reactor: Reactor, certs: Certs) -> None:
    """TLSObservable, what trace mode reads: the state, each side, close_notify each way."""
    client, server, _ = pair(reactor, certs, ssl_shutdown_timeout=5)
    mine, theirs = client.transport, server.transport
    assert (mine.tls_state, theirs.tls_state) == ("open", "open")
    assert (mine.server_side, theirs.server_side) == (False, True)
    assert not mine.peer_closed and not theirs.peer_closed
    assert mine.handshake_error is None and theirs.handshake_error is None
    mine.write(b"x" * 100)
    mine.close()
    assert mine.tls_state == "shutdown"  # close_notify sent, waiting for the answer
    run_until(reactor, lambda: client.lost and server.lost)
    # The server read our close_notify; its answer ended our shutdown instead.
    assert theirs.peer_closed and not mine.peer_closed
    assert (mine.tls_state, theirs.tls_state) == ("done", "done")
    assert server.data == b"x" * 100


def test_the_observer_surface_says_why_a_handshake_failed(reactor: Reactor, certs: Certs) -> None:
    silent = Recorder()  # a plain server that never answers the ClientHello
    listener = reactor.listen_tcp(0, lambda: silent)
    client = Recorder()
    reactor.connect_tcp("127.0.0.1", listener.port, lambda: client)
    run_until(reactor, lambda: client.made)
    done: list[Any] = []
    tls = client.transport.start_tls(
        certs.client_context(),
        server_hostname="localhost",
        ssl_handshake_timeout=0.1,
        on_handshake=done.append,
    )
    assert tls.tls_state == "handshake" and tls.handshake_error is None
    run_until(reactor, lambda: client.lost)
    assert tls.tls_state == "done"
    assert tls.handshake_error is done[0] and isinstance(done[0], TimeoutError)
