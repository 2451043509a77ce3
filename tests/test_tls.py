"""TLS on every backend: round trips, the API, closing, flow control, STARTTLS."""

from __future__ import annotations

import os
import socket
import ssl
from typing import Any, ClassVar

import pytest

from protocols import LineReceiver
from reactor import Listener, Reactor, TLSTransport
from tests.conftest import make_reactor, run_until
from tests.tls_helpers import Certs, Recorder, Sink, make_certs, sha256

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def certs() -> Certs:
    return make_certs()


class Served:
    """A listener and the server protocols it built, in order.

    A wrapper, not a new attribute on the Listener: a compiled one has no
    ``__dict__``. Everything else is the listener's.
    """

    def __init__(self, listener: Listener, servers: list[Recorder]) -> None:
        self.listener = listener
        self.servers = servers

    def __getattr__(self, name: str) -> Any:
        return getattr(self.listener, name)


def serve(reactor: Reactor, certs: Certs, factory: Any = None, **kwargs: Any) -> Any:
    servers: list[Recorder] = []

    def build() -> Recorder:
        protocol = Recorder(echo=True) if factory is None else factory()
        servers.append(protocol)
        return protocol

    context = kwargs.pop("ssl_context", None) or certs.server_context()
    return Served(reactor.listen_tcp(0, build, ssl=context, **kwargs), servers)


def connect(reactor: Reactor, port: int, certs: Certs, protocol: Any, **kwargs: Any) -> list[Any]:
    """Connect with TLS; returns a list that gets ("ok", protocol) or ("failed", exc)."""
    outcome: list[Any] = []
    kwargs.setdefault("ssl", certs.client_context())
    kwargs.setdefault("server_hostname", "localhost")
    reactor.connect_tcp(
        "127.0.0.1",
        port,
        lambda: protocol,
        on_connect=lambda p: outcome.append(("ok", p)),
        on_failure=lambda exc: outcome.append(("failed", exc)),
        **kwargs,
    )
    return outcome


def quiet(reactor: Reactor) -> bool:
    """No connection, lingering socket or timer left: nothing leaked."""
    stats = reactor.stats()
    return stats["connections"] == 0 and stats["lingering"] == 0 and stats["timers_pending"] == 0


# ------------------------------------------------------------------ round trips


class Sender(Sink):
    """Sends a payload in chunks, respecting pause_writing; hashes the echo."""

    def __init__(self, payload: bytes, step: int = 100_003) -> None:
        super().__init__()
        self.payload = payload
        self.offset = 0
        self.step = step
        self.writing = True

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        self.send_more()

    def send_more(self) -> None:
        while self.writing and self.offset < len(self.payload):
            self.transport.write(self.payload[self.offset : self.offset + self.step])
            self.offset += self.step

    def pause_writing(self) -> None:
        super().pause_writing()
        self.writing = False

    def resume_writing(self) -> None:
        super().resume_writing()
        self.writing = True
        self.send_more()


@pytest.mark.parametrize("size", [1, 1000, 65_537, 1 << 20, 16 << 20])
def test_round_trip_by_sha256(reactor: Reactor, certs: Certs, size: int) -> None:
    payload = os.urandom(size)
    listener = serve(reactor, certs)
    clients = [Sender(payload) for _ in range(8 if size <= 1 << 20 else 1)]
    outcomes = [connect(reactor, listener.port, certs, client) for client in clients]
    run_until(reactor, lambda: all(c.count == size for c in clients), 50, "every echo")
    assert all(c.hash.hexdigest() == sha256(payload) for c in clients)
    assert all(o[0][0] == "ok" for o in outcomes)
    for client in clients:
        client.transport.close()
    run_until(reactor, lambda: all(c.lost for c in clients), what="every close")
    run_until(
        reactor,
        lambda: len(listener.servers) == len(clients) and all(s.lost for s in listener.servers),
        what="the servers' connection_lost",
    )
    assert [c.lost for c in clients] == [[None]] * len(clients)
    assert all(s.lost == [None] and s.eof == 1 for s in listener.servers)
    listener.close()
    run_until(reactor, lambda: quiet(reactor), what="no leaked timer or socket")


def test_many_concurrent_connections(reactor: Reactor, certs: Certs) -> None:
    listener = serve(reactor, certs)
    payloads = [os.urandom(1 + 997 * i) for i in range(40)]
    clients = [Sender(p) for p in payloads]
    for client in clients:
        connect(reactor, listener.port, certs, client)
    run_until(reactor, lambda: all(c.count == len(c.payload) for c in clients), 30)
    assert all(c.hash.hexdigest() == sha256(c.payload) for c in clients)
    for client in clients:
        client.transport.abort()
    run_until(reactor, lambda: all(s.lost for s in listener.servers) and quiet(reactor))


def test_unix_socket_tls(reactor: Reactor, certs: Certs, tmp_path: Any) -> None:
    path = str(tmp_path / "tls.sock")
    server = Recorder(echo=True)
    listener = reactor.listen_unix(path, lambda: server, ssl=certs.server_context())
    client = Recorder()
    done: list[Any] = []
    reactor.connect_unix(
        path,
        lambda: client,
        ssl=certs.client_context(),
        server_hostname="localhost",
        on_connect=done.append,
    )
    run_until(reactor, lambda: done)
    assert done == [client]
    client.transport.write(b"over a Unix socket")
    run_until(reactor, lambda: client.data == b"over a Unix socket")
    assert isinstance(client.transport, TLSTransport)
    client.transport.close()
    run_until(reactor, lambda: client.lost and server.lost)
    listener.close()


def test_buffered_protocol_over_tls(reactor: Reactor, certs: Certs) -> None:
    class Buffered:
        def __init__(self) -> None:
            self.buf = bytearray(100)
            self.got = bytearray()
            self.lost: list[Any] = []

        def connection_made(self, transport: Any) -> None:
            self.transport = transport

        def get_buffer(self, sizehint: int) -> memoryview:
            return memoryview(self.buf)

        def buffer_updated(self, n: int) -> None:
            self.got += self.buf[:n]

        def eof_received(self) -> None:
            return None

        def connection_lost(self, exc: BaseException | None) -> None:
            self.lost.append(exc)

    listener = serve(reactor, certs)
    client = Buffered()
    connect(reactor, listener.port, certs, client)
    run_until(reactor, lambda: hasattr(client, "transport"))
    payload = os.urandom(5000)
    client.transport.write(payload)
    run_until(reactor, lambda: len(client.got) == len(payload))
    assert bytes(client.got) == payload
    client.transport.close()
    run_until(reactor, lambda: client.lost == [None])


# ------------------------------------------------------------------ the API


def test_extra_info_sni_and_alpn(reactor: Reactor, certs: Certs) -> None:
    sctx = certs.server_context()
    sctx.set_alpn_protocols(["http/1.1"])
    names: list[str | None] = []
    sctx.sni_callback = lambda sslobj, name, ctx: names.append(name)
    server = Recorder()
    listener = reactor.listen_tcp(0, lambda: server, ssl=sctx)
    cctx = certs.client_context()
    cctx.set_alpn_protocols(["h2", "http/1.1"])
    client = Recorder()
    connect(reactor, listener.port, certs, client, ssl=cctx)
    run_until(reactor, lambda: client.made and server.made)
    transport = client.transport
    assert names == ["localhost"]
    assert transport.get_extra_info("ssl_object").selected_alpn_protocol() == "http/1.1"
    assert server.transport.get_extra_info("ssl_object").selected_alpn_protocol() == "http/1.1"
    assert dict(x[0] for x in transport.get_extra_info("peercert")["subject"])[
        "organizationName"
    ].startswith("trustme")
    assert transport.get_extra_info("peercert")["subjectAltName"][0] == ("DNS", "localhost")
    assert transport.get_extra_info("cipher")[1] in ("TLSv1.2", "TLSv1.3")
    assert transport.get_extra_info("compression", "none") == "none"
    assert transport.get_extra_info("sslcontext") is cctx
    assert transport.get_extra_info("peername") == ("127.0.0.1", listener.port)
    assert transport.get_extra_info("sockname")[0] == "127.0.0.1"
    assert isinstance(transport.get_extra_info("socket"), socket.socket)
    assert transport.get_extra_info("reactor") is reactor
    assert transport.get_extra_info("nonsense", 42) == 42
    assert transport.get_protocol() is client
    assert not transport.can_write_eof()
    with pytest.raises(NotImplementedError, match="no half-close"):
        transport.write_eof()
    transport.close()
    run_until(reactor, lambda: client.lost and server.lost)


def test_arguments_are_checked_at_the_call(reactor: Reactor, certs: Certs) -> None:
    with pytest.raises(TypeError, match="holding the server's certificate"):
        reactor.listen_tcp(0, Recorder, ssl=True)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="must be True"):
        reactor.connect_tcp("127.0.0.1", 1, Recorder, ssl="yes")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="only meaningful with ssl"):
        reactor.connect_tcp("127.0.0.1", 1, Recorder, server_hostname="x")
    with pytest.raises(ValueError, match="ssl_handshake_timeout"):
        reactor.listen_tcp(0, Recorder, ssl=certs.server_context(), ssl_handshake_timeout=0)
    with pytest.raises(ValueError, match="ssl_shutdown_timeout"):
        reactor.connect_tcp("127.0.0.1", 1, Recorder, ssl=True, ssl_shutdown_timeout=-1)
    with pytest.raises(ValueError, match="needs server_hostname"):
        reactor.connect_unix("/nonexistent", Recorder, ssl=True)
    with pytest.raises(ValueError, match="only meaningful"):
        reactor.connect_unix("/nonexistent", Recorder, server_hostname="x")
    with pytest.raises(TypeError, match="pass the class"):
        reactor.listen_tcp(0, Recorder(), ssl=certs.server_context())  # type: ignore[arg-type]
    assert reactor.stats()["resources"] == 0


def test_ssl_true_verifies_against_the_system_store(reactor: Reactor, certs: Certs) -> None:
    listener = serve(reactor, certs)
    client = Recorder()
    outcome = connect(reactor, listener.port, certs, client, ssl=True)
    run_until(reactor, lambda: outcome)
    assert outcome[0][0] == "failed"
    assert isinstance(outcome[0][1], ssl.SSLCertVerificationError)
    assert client.made == 0 and client.lost == []
    run_until(reactor, lambda: quiet(reactor))


def test_verification_off_is_the_callers_choice(reactor: Reactor, certs: Certs) -> None:
    listener = serve(reactor, certs)
    insecure = ssl.create_default_context()
    insecure.check_hostname = False
    insecure.verify_mode = ssl.CERT_NONE
    client = Recorder()
    outcome = connect(reactor, listener.port, certs, client, ssl=insecure)
    run_until(reactor, lambda: outcome)
    assert outcome == [("ok", client)]
    client.transport.close()
    run_until(reactor, lambda: client.lost == [None])


def test_a_failed_tcp_connect_is_reported_once(reactor: Reactor, certs: Certs) -> None:
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()  # nothing listens there now

    class Factory:
        def __init__(self) -> None:
            self.failures: list[BaseException] = []

        def build_protocol(self, addr: Any) -> Recorder:
            return Recorder()

        def client_connection_failed(self, connector: Any, reason: BaseException) -> None:
            self.failures.append(reason)

    factory = Factory()
    failed: list[BaseException] = []
    reactor.connect_tcp(
        "127.0.0.1", port, factory, ssl=certs.client_context(), on_failure=failed.append
    )
    run_until(reactor, lambda: failed)
    assert isinstance(failed[0], ConnectionRefusedError)
    assert factory.failures == failed


# ------------------------------------------------------------------ closing


def test_server_close_reaches_the_client_as_eof(reactor: Reactor, certs: Certs) -> None:
    listener = serve(reactor, certs, factory=Recorder)
    client = Recorder()
    connect(reactor, listener.port, certs, client)
    run_until(reactor, lambda: client.made and listener.servers and listener.servers[0].made)
    server = listener.servers[0]
    server.transport.write(b"last words")
    server.transport.close()
    assert server.transport.is_closing()
    server.transport.write(b"dropped")  # after close(): dropped, not sent
    run_until(reactor, lambda: client.lost and server.lost)
    assert client.data == b"last words"
    assert client.eof == 1 and client.lost == [None] and server.lost == [None]
    run_until(reactor, lambda: quiet(reactor))


def test_abort_is_immediate_and_the_peer_sees_a_truncation(reactor: Reactor, certs: Certs) -> None:
    listener = serve(reactor, certs, factory=Recorder)
    client = Recorder()
    connect(reactor, listener.port, certs, client)
    run_until(reactor, lambda: client.made and listener.servers and listener.servers[0].made)
    client.transport.write(b"x" * 1000)
    client.transport.abort()
    assert client.transport.is_closing()
    run_until(reactor, lambda: client.lost)
    assert client.lost == [None]
    server = listener.servers[0]
    run_until(reactor, lambda: server.lost)
    assert isinstance(server.lost[0], (ssl.SSLEOFError, ConnectionResetError))
    if isinstance(server.lost[0], ssl.SSLEOFError):
        assert "truncated" in str(server.lost[0])
    assert server.eof == 0  # a truncation is not a clean end


def test_no_wait_shutdown_against_a_peer_that_never_answers(reactor: Reactor, certs: Certs) -> None:
    # The client never reads again, so it never answers close_notify. With
    # ssl_shutdown_timeout=0 the server's close ends at once all the same.
    listener = serve(reactor, certs, factory=Recorder, ssl_shutdown_timeout=0)
    client = Recorder()
    connect(reactor, listener.port, certs, client)
    run_until(reactor, lambda: client.made and listener.servers and listener.servers[0].made)
    client.transport.pause_reading()
    server = listener.servers[0]
    server.transport.close()
    run_until(reactor, lambda: server.lost)
    assert server.lost == [None] and client.lost == []
    client.transport.resume_reading()
    run_until(reactor, lambda: client.lost)
    assert client.eof == 1 and client.lost == [None]


def test_shutdown_timeout_against_a_peer_that_never_answers(reactor: Reactor, certs: Certs) -> None:
    listener = serve(reactor, certs, factory=Recorder, ssl_shutdown_timeout=0.2)
    client = Recorder()
    connect(reactor, listener.port, certs, client)
    run_until(reactor, lambda: client.made and listener.servers and listener.servers[0].made)
    client.transport.pause_reading()
    server = listener.servers[0]
    server.transport.close()
    run_until(reactor, lambda: server.lost, what="the shutdown timeout")
    assert server.lost == [None]
    client.transport.abort()
    run_until(reactor, lambda: quiet(reactor))


def test_abort_during_the_shutdown_wait_is_immediate(reactor: Reactor, certs: Certs) -> None:
    listener = serve(reactor, certs, factory=Recorder, ssl_shutdown_timeout=30)
    client = Recorder()
    connect(reactor, listener.port, certs, client)
    run_until(reactor, lambda: client.made and listener.servers and listener.servers[0].made)
    client.transport.pause_reading()
    server = listener.servers[0]
    server.transport.close()
    reactor.run_once(0)
    assert server.lost == []  # waiting for the client's close_notify
    server.transport.abort()
    run_until(reactor, lambda: server.lost)
    assert server.lost == [None]
    client.transport.abort()
    run_until(reactor, lambda: quiet(reactor))


def test_a_paused_reader_still_hears_that_the_connection_died(
    reactor: Reactor, certs: Certs
) -> None:
    listener = serve(reactor, certs, factory=Recorder)
    client = Recorder()
    connect(reactor, listener.port, certs, client)
    run_until(reactor, lambda: client.made and listener.servers and listener.servers[0].made)
    client.transport.pause_reading()
    assert not client.transport.is_reading()
    server_socket = listener.servers[0].transport.get_extra_info("socket")
    # A reset from the server: SO_LINGER 0, then close.
    server_socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")
    listener.servers[0].transport.abort()
    run_until(reactor, lambda: listener.servers[0].lost)
    # The paused client learns of it on its next write, never later.
    while not client.lost:
        client.transport.write(b"are you there?")
        reactor.run_once(0.05)
    assert isinstance(client.lost[0], OSError)
    assert client.transport.is_closing()


def test_close_flushes_a_large_buffer_before_close_notify(reactor: Reactor, certs: Certs) -> None:
    listener = serve(reactor, certs, factory=Sink)
    client = Recorder()
    connect(reactor, listener.port, certs, client)
    run_until(reactor, lambda: client.made)
    payload = os.urandom(3 << 20)
    client.transport.write(payload)
    client.transport.close()
    run_until(reactor, lambda: listener.servers and listener.servers[0].lost)
    server = listener.servers[0]
    assert server.count == len(payload) and server.hash.hexdigest() == sha256(payload)
    assert server.lost == [None] and server.eof == 1


def test_user_exception_closes_only_that_connection(
    reactor: Reactor, certs: Certs, caplog: pytest.LogCaptureFixture
) -> None:
    class Faulty(Recorder):
        def data_received(self, data: bytes) -> None:
            raise ValueError("a bug in data_received")

    listener = serve(reactor, certs, factory=Faulty)
    good_listener = serve(reactor, certs)
    bad, good = Recorder(), Recorder()
    connect(reactor, listener.port, certs, bad)
    connect(reactor, good_listener.port, certs, good)
    run_until(reactor, lambda: bad.made and good.made)
    bad.transport.write(b"boom")
    run_until(reactor, lambda: bad.lost)
    assert "a bug in data_received" in caplog.text
    good.transport.write(b"still here")
    run_until(reactor, lambda: good.data == b"still here")


# ------------------------------------------------------------------ flow control


class SlowReader(Sink):
    """Reads one chunk per loop turn: pauses after each, resumes on the next turn."""

    def __init__(self, reactor: Reactor) -> None:
        super().__init__()
        self.reactor = reactor

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self.transport.pause_reading()
        self.reactor.call_soon(self.transport.resume_reading)


def test_64_mib_write_to_a_slow_reader_stays_bounded(reactor: Reactor, certs: Certs) -> None:
    payload = os.urandom(1 << 20) * 64
    listener = serve(reactor, certs, factory=Recorder)
    reader = SlowReader(reactor)
    connect(reactor, listener.port, certs, reader)
    run_until(reactor, lambda: reader.made and listener.servers and listener.servers[0].made)
    server = listener.servers[0]
    tls = server.transport
    plain = tls._plain
    high = tls.get_write_buffer_limits()[1]
    tls.write(payload)  # one write: the plaintext waits, unencrypted, in the app's bytes
    assert server.paused == 1
    worst_ciphertext = 0
    while reader.count < len(payload):
        reactor.run_once(0.05)
        worst_ciphertext = max(worst_ciphertext, plain.get_write_buffer_size())
    assert reader.hash.hexdigest() == sha256(payload)
    # Ciphertext waiting in memory never passed the water mark by more than
    # one encryption step (64 KiB of plaintext and its record overhead).
    assert worst_ciphertext <= high + 70_000
    run_until(reactor, lambda: server.resumed == 1)
    assert tls.get_write_buffer_size() == 0


def test_water_marks_on_the_tls_transport(reactor: Reactor, certs: Certs) -> None:
    listener = serve(reactor, certs, factory=Recorder)
    client = Recorder()
    connect(reactor, listener.port, certs, client)
    run_until(reactor, lambda: client.made and listener.servers and listener.servers[0].made)
    listener.servers[0].transport.pause_reading()
    tls = client.transport
    tls.set_write_buffer_limits(high=1000)
    assert tls.get_write_buffer_limits() == (250, 1000)
    assert tls._plain.get_write_buffer_limits() == (250, 1000)
    while not client.paused:
        tls.write(b"y" * 50_000)
        reactor.run_once(0)
    assert tls.get_write_buffer_size() > 1000
    listener.servers[0].transport.resume_reading()
    run_until(reactor, lambda: client.resumed == 1)
    assert tls._pending_size == 0  # resumed once every byte written is encrypted
    with pytest.raises(ValueError):
        tls.set_write_buffer_limits(high=1, low=2)


# ------------------------------------------------------------------ STARTTLS


class StartTLSServer(Recorder):
    """A line protocol that answers "STARTTLS" by upgrading, then echoes."""

    def __init__(self, certs: Certs, reply: bool) -> None:
        super().__init__(echo=False)
        self.certs = certs
        self.reply = reply
        self.upgraded: list[BaseException | None] = []
        self.plain_lines: list[bytes] = []

    def data_received(self, data: bytes) -> None:
        if self.upgraded or isinstance(self.transport, TLSTransport):
            self.data += data
            self.transport.write(data.upper())
            return
        line, sep, rest = data.partition(b"\n")
        assert sep, "the tests send whole lines"
        self.plain_lines.append(line)
        if line == b"STARTTLS":
            if self.reply:
                self.transport.write(b"OK\n")  # in the clear, before the handshake
            self.transport = self.transport.start_tls(
                self.certs.server_context(),
                server_side=True,
                on_handshake=self.upgraded.append,
                already_received=rest,
            )
            self.transport.write(b"hello over tls")  # queued until the handshake ends


def test_start_tls_after_a_plain_reply(reactor: Reactor, certs: Certs) -> None:
    server = StartTLSServer(certs, reply=True)
    listener = reactor.listen_tcp(0, lambda: server)

    class Client(Recorder):
        handshake: ClassVar[list[BaseException | None]] = []

        def data_received(self, data: bytes) -> None:
            if data == b"OK\n":
                self.transport = self.transport.start_tls(
                    certs.client_context(),
                    server_hostname="localhost",
                    on_handshake=self.handshake.append,
                )
                self.transport.write(b"encrypted")
                return
            self.data += data

    client = Client()
    reactor.connect_tcp("127.0.0.1", listener.port, lambda: client)
    run_until(reactor, lambda: client.made)
    client.transport.write(b"STARTTLS\n")
    run_until(reactor, lambda: client.data == b"hello over tlsENCRYPTED")
    assert client.handshake == [None] and server.upgraded == [None]
    assert server.plain_lines == [b"STARTTLS"]
    assert client.transport.get_extra_info("peercert") is not None
    client.transport.close()
    run_until(reactor, lambda: client.lost and server.lost)
    assert client.lost == [None] and server.lost == [None]
    assert client.made == 1 and server.made == 1  # connection_made is not repeated


def test_start_tls_with_the_client_hello_already_in_flight(reactor: Reactor, certs: Certs) -> None:
    # The client does not wait for a reply: its ClientHello follows the
    # STARTTLS line at once, often in the same segment, so the server's
    # first read holds both. Nothing of it may be lost.
    server = StartTLSServer(certs, reply=False)
    listener = reactor.listen_tcp(0, lambda: server)
    client = Recorder()
    reactor.connect_tcp("127.0.0.1", listener.port, lambda: client)
    run_until(reactor, lambda: client.made)
    plain = client.transport
    plain.write(b"STARTTLS\n")
    handshake: list[Any] = []
    client.transport = plain.start_tls(
        certs.client_context(), server_hostname="localhost", on_handshake=handshake.append
    )
    client.transport.write(b"pipelined")
    run_until(reactor, lambda: client.data == b"hello over tlsPIPELINED")
    assert handshake == [None]
    client.transport.close()
    run_until(reactor, lambda: server.lost == [None])


def test_start_tls_failure_reaches_connection_lost(reactor: Reactor, certs: Certs) -> None:
    server = StartTLSServer(certs, reply=True)
    listener = reactor.listen_tcp(0, lambda: server)

    class Client(Recorder):
        handshake: ClassVar[list[BaseException | None]] = []

        def data_received(self, data: bytes) -> None:
            self.transport = self.transport.start_tls(
                certs.client_context(),
                server_hostname="wrong.example",
                on_handshake=self.handshake.append,
            )

    client = Client()
    reactor.connect_tcp("127.0.0.1", listener.port, lambda: client)
    run_until(reactor, lambda: client.made)
    client.transport.write(b"STARTTLS\n")
    run_until(reactor, lambda: client.lost)
    assert isinstance(client.handshake[0], ssl.SSLCertVerificationError)
    assert client.lost == client.handshake  # it had connection_made, so it hears why
    run_until(reactor, lambda: server.lost)


def test_start_tls_refused_on_a_closing_transport(reactor: Reactor, certs: Certs) -> None:
    server = Recorder()
    listener = reactor.listen_tcp(0, lambda: server)
    client = Recorder()
    reactor.connect_tcp("127.0.0.1", listener.port, lambda: client)
    run_until(reactor, lambda: client.made)
    with pytest.raises(TypeError, match="SSLContext"):
        client.transport.start_tls("context")
    client.transport.close()
    with pytest.raises(RuntimeError, match="closing transport"):
        client.transport.start_tls(certs.client_context())
    run_until(reactor, lambda: client.lost)


# ------------------------------------------------------------------ modes


@pytest.mark.parametrize("mode", ["trace", "debug"])
def test_tls_in_trace_and_debug_mode(backend: str, certs: Certs, mode: str) -> None:
    reactor = make_reactor(backend, **{mode: True})
    try:
        listener = serve(reactor, certs)
        client = Sender(os.urandom(200_000))
        connect(reactor, listener.port, certs, client)
        run_until(reactor, lambda: client.count == 200_000)
        client.transport.close()
        run_until(reactor, lambda: client.lost == [None])
    finally:
        reactor.close()


class StartTLSLines(LineReceiver):
    """A LineReceiver whose STARTTLS command upgrades; later lines come over TLS."""

    def __init__(self, certs: Certs) -> None:
        super().__init__()
        self.certs = certs
        self.lines: list[bytes] = []
        self.lost: list[BaseException | None] = []

    def line_received(self, line: bytes) -> None:
        self.lines.append(line)
        if line == b"STARTTLS":
            plain: Any = self.transport
            self.transport = plain.start_tls(
                self.certs.server_context(),
                server_side=True,
                already_received=self.clear_line_buffer(),
            )
        elif isinstance(self.transport, TLSTransport):  # the client upgraded at once
            self.send_line(line.upper())

    def connection_lost(self, exc: BaseException | None) -> None:
        super().connection_lost(exc)
        self.lost.append(exc)


def test_start_tls_from_a_line_receiver_loses_nothing(reactor: Reactor, certs: Certs) -> None:
    server = StartTLSLines(certs)
    listener = reactor.listen_tcp(0, lambda: server)
    client = Recorder()
    reactor.connect_tcp("127.0.0.1", listener.port, lambda: client)
    run_until(reactor, lambda: client.made and server.transport is not None)
    server.transport.pause_reading()  # so that one read takes all that follows
    plain = client.transport
    # The command, then the ClientHello right behind it: one read.
    plain.write(b"before\nSTARTTLS\n")
    client.transport = plain.start_tls(certs.client_context(), server_hostname="localhost")
    client.transport.write(b"after\nand more\n")
    reactor.run_once(0)
    server.transport.resume_reading()
    run_until(reactor, lambda: client.data.endswith(b"AND MORE\r\n"))
    assert server.lines == [b"before", b"STARTTLS", b"after", b"and more"]
    assert client.data == b"AFTER\r\nAND MORE\r\n"
    client.transport.close()
    run_until(reactor, lambda: server.lost == [None])


def test_clear_line_buffer_outside_a_handler() -> None:
    receiver = LineReceiver()
    receiver.data_received(b"a partial line")
    assert receiver.buffer_size == len(b"a partial line")
    assert receiver.clear_line_buffer() == b"a partial line"
    assert receiver.buffer_size == 0
