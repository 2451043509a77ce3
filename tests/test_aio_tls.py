"""``ssl=`` on reactor.aio.EventLoop: TLS through the reactor's own TLS layer.

Every TLS connection the loop makes (create_connection, create_server, the
Unix variants, connect_accepted_socket, start_tls, and so asyncio's streams)
is a NativeSSLTransport whose encryption is ``reactor.tls.TLSTransport``;
each test checks that the transport really is one, so the fast path is
proved taken, and that asyncio code sees asyncio's behaviour: the awaitable
ends after the handshake and raises its error, a server's failed handshake
never reaches the protocol, close() sends close_notify, flow control works.
The interop tests put asyncio's own loop on the other end, in a thread.
"""

from __future__ import annotations

import asyncio
import gc
import hashlib
import logging
import os
import socket
import ssl
import sys
import threading
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import pytest

from reactor import StreamTransport
from reactor.aio import EventLoop
from reactor.aio.tls import NativeSSLTransport
from reactor.tls import TLSTransport
from tests.conftest import make_reactor
from tests.tls_helpers import Certs, make_certs, sha256

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def certs() -> Certs:
    return make_certs()


def run(loop: asyncio.AbstractEventLoop, coro: Any) -> Any:
    return loop.run_until_complete(asyncio.wait_for(coro, 30))


def assert_reactor_tls(transport: object) -> NativeSSLTransport:
    """The fast path: the reactor's TLS over the reactor's stream transport."""
    assert isinstance(transport, NativeSSLTransport), transport
    assert isinstance(transport, asyncio.Transport)
    assert isinstance(transport.tls, TLSTransport)
    assert isinstance(transport.stream, (StreamTransport, TLSTransport))
    return transport


class Peer(asyncio.Protocol):
    """Records every hook; ``lost`` resolves with connection_lost's argument."""

    def __init__(self, echo: bool = False) -> None:
        self.echo = echo
        self.transport: Any = None
        self.data = bytearray()
        self.events: list[str] = []
        self.made = asyncio.get_running_loop().create_future()
        self.lost: asyncio.Future[BaseException | None] = asyncio.get_running_loop().create_future()
        self.paused = 0
        self.resumed = 0
        self.resumed_event = asyncio.Event()

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self.events.append("made")
        self.made.set_result(None)

    def data_received(self, data: bytes) -> None:
        self.data += data
        if self.echo:
            self.transport.write(data)

    def eof_received(self) -> bool | None:
        self.events.append("eof")
        return None

    def connection_lost(self, exc: BaseException | None) -> None:
        self.events.append("lost")
        self.lost.set_result(exc)

    def pause_writing(self) -> None:
        self.paused += 1

    def resume_writing(self) -> None:
        self.resumed += 1
        self.resumed_event.set()


async def echo_handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Streams echo: what arrives goes back, until EOF (the client's close_notify)."""
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()
    writer.close()
    await writer.wait_closed()


# ------------------------------------------------------------------ streams


def test_streams_echo_over_tls_is_the_reactors_tls(loop: EventLoop, certs: Certs) -> None:
    async def main() -> None:
        server = await asyncio.start_server(
            echo_handler, "127.0.0.1", 0, ssl=certs.server_context()
        )
        host, port = server.sockets[0].getsockname()
        client_context = certs.client_context()
        reader, writer = await asyncio.open_connection(
            host, port, ssl=client_context, server_hostname="localhost"
        )
        transport = assert_reactor_tls(writer.transport)
        # asyncio's names, available once the awaitable has returned.
        assert transport.get_extra_info("sslcontext") is client_context
        sslobj = transport.get_extra_info("ssl_object")
        assert isinstance(sslobj, ssl.SSLObject) and sslobj is transport.tls.get_extra_info(
            "ssl_object"
        )
        assert transport.get_extra_info("peercert")["subject"]
        _name, version, bits = transport.get_extra_info("cipher")
        assert version.startswith("TLS") and bits >= 128
        assert transport.get_extra_info("peername") == (host, port)
        assert transport.get_extra_info("socket").fileno() >= 0
        assert transport.get_extra_info("nonesuch", 7) == 7
        assert not transport.can_write_eof()
        for line in (b"one\n", b"two\n"):
            writer.write(line)
            assert await reader.readline() == line
        writer.close()  # close_notify; the server's echo loop sees EOF and closes
        await writer.wait_closed()
        assert transport.is_closing()
        server.close()
        await server.wait_closed()

    run(loop, main())


@pytest.mark.parametrize("size", [1, 1000, 65536, 65537, 1024 * 1024 + 7, 4 * 1024 * 1024])
def test_sha256_round_trips(loop: EventLoop, certs: Certs, size: int) -> None:
    payload = os.urandom(size)

    async def main() -> str:
        server = await asyncio.start_server(
            echo_handler, "127.0.0.1", 0, ssl=certs.server_context()
        )
        reader, writer = await asyncio.open_connection(
            *server.sockets[0].getsockname(),
            ssl=certs.client_context(),
            server_hostname="localhost",
        )
        assert_reactor_tls(writer.transport)
        digest = hashlib.sha256()

        async def receive() -> None:
            left = size
            while left:
                chunk = await reader.read(min(left, 1 << 20))
                assert chunk, "the echo ended early"
                digest.update(chunk)
                left -= len(chunk)

        receiving = asyncio.ensure_future(receive())
        view = memoryview(payload)
        for start in range(0, size, 300_000):  # several writes, some bigger than a record
            writer.write(view[start : start + 300_000])
            await writer.drain()
        await receiving
        writer.close()
        await writer.wait_closed()
        server.close()
        await server.wait_closed()
        return digest.hexdigest()

    assert run(loop, main()) == sha256(payload)


def test_unix_server_and_connection(loop: EventLoop, certs: Certs, tmp_path: Path) -> None:
    path = str(tmp_path / "tls.sock")

    async def main() -> bytes:
        server = await asyncio.start_unix_server(echo_handler, path, ssl=certs.server_context())
        reader, writer = await asyncio.open_unix_connection(
            path, ssl=certs.client_context(), server_hostname="localhost"
        )
        assert_reactor_tls(writer.transport)
        writer.write(b"over a unix socket\n")
        line = await reader.readline()
        writer.close()
        await writer.wait_closed()
        server.close()
        await server.wait_closed()
        return line

    assert run(loop, main()) == b"over a unix socket\n"


def test_connect_accepted_socket_on_both_ends(loop: EventLoop, certs: Certs) -> None:
    async def main() -> bytes:
        left, right = socket.socketpair()
        server_side = loop.connect_accepted_socket(
            lambda: Peer(echo=True), left, ssl=certs.server_context()
        )
        client_side = loop.create_connection(
            Peer, sock=right, ssl=certs.client_context(), server_hostname="localhost"
        )
        (server_transport, _), (transport, client) = await asyncio.gather(server_side, client_side)
        assert_reactor_tls(server_transport)
        assert_reactor_tls(transport)
        transport.write(b"accepted")
        while len(client.data) < 8:
            await asyncio.sleep(0.001)
        transport.close()
        assert await client.lost is None
        return bytes(client.data)

    assert run(loop, main()) == b"accepted"


# ------------------------------------------------------------- handshakes


def test_verification_failure_is_raised_by_create_connection(loop: EventLoop, certs: Certs) -> None:
    """An untrusted server: ssl.SSLCertVerificationError, as on asyncio's loop."""

    async def main() -> list[str]:
        made: list[Peer] = []

        def factory() -> Peer:
            made.append(Peer())
            return made[-1]

        server = await loop.create_server(factory, "127.0.0.1", 0, ssl=certs.server_context())
        host, port = server.sockets[0].getsockname()
        untrusting = ssl.create_default_context()
        certs.other_ca.configure_trust(untrusting)
        with pytest.raises(ssl.SSLCertVerificationError):
            await loop.create_connection(
                Peer, host, port, ssl=untrusting, server_hostname="localhost"
            )
        # ssl=True: the system's CA store, which does not know the test CA either.
        with pytest.raises(ssl.SSLCertVerificationError):
            await loop.create_connection(Peer, host, port, ssl=True, server_hostname="localhost")
        # A trusted certificate for another name.
        with pytest.raises(ssl.SSLCertVerificationError, match=r"match|mismatch"):
            await loop.create_connection(
                Peer, host, port, ssl=certs.client_context(), server_hostname="example.org"
            )
        server.close()
        await server.wait_closed()
        return [event for peer in made for event in peer.events]

    # The server side never told its protocols about the failed connections.
    assert run(loop, main()) == []


def test_client_handshake_timeout(loop: EventLoop, certs: Certs) -> None:
    """A peer that accepts and sends nothing: ConnectionAbortedError, asyncio's error."""
    listener = socket.create_server(("127.0.0.1", 0))

    async def main() -> None:
        peer_fin = loop.create_future()

        def accepted() -> None:
            conn, _ = listener.accept()
            loop.remove_reader(listener.fileno())

            def readable() -> None:
                # The client's hello, then its FIN once the timeout aborts it.
                if not conn.recv(65536):
                    loop.remove_reader(conn.fileno())
                    conn.close()
                    peer_fin.set_result(None)

            loop.add_reader(conn.fileno(), readable)

        loop.add_reader(listener.fileno(), accepted)
        with pytest.raises(ConnectionAbortedError, match="SSL handshake is taking longer than"):
            await loop.create_connection(
                Peer,
                *listener.getsockname(),
                ssl=certs.client_context(),
                server_hostname="localhost",
                ssl_handshake_timeout=0.2,
            )
        await peer_fin  # the connection was really closed

    try:
        run(loop, main())
    finally:
        listener.close()


def test_server_handshake_timeout_and_bad_arguments(loop: EventLoop, certs: Certs) -> None:
    """A client that connects and never says hello is dropped; nothing reaches the protocol."""

    async def main() -> list[Peer]:
        made: list[Peer] = []

        def factory() -> Peer:
            made.append(Peer())
            return made[-1]

        with pytest.raises(ValueError, match="ssl_handshake_timeout should be a positive"):
            loop._make_ssl_transport(  # asyncio's own check, at the same point
                socket.socket(), Peer(), certs.server_context(), ssl_handshake_timeout=0
            )
        server = await loop.create_server(
            factory, "127.0.0.1", 0, ssl=certs.server_context(), ssl_handshake_timeout=0.2
        )
        reader, writer = await asyncio.open_connection(*server.sockets[0].getsockname())
        assert await reader.read() == b""  # closed by the server after 0.2 s
        writer.close()
        server.close()
        await server.wait_closed()
        return made

    made = run(loop, main())
    assert len(made) == 1 and made[0].events == []


def test_server_reports_a_failed_handshake_and_serves_the_next(
    loop: EventLoop, certs: Certs, caplog: pytest.LogCaptureFixture
) -> None:
    contexts: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, context: contexts.append(context))
    loop.set_debug(True)  # asyncio reports failed incoming connections in debug mode

    async def main() -> bytes:
        server = await asyncio.start_server(
            echo_handler, "127.0.0.1", 0, ssl=certs.mutual_server_context()
        )
        address = server.sockets[0].getsockname()
        # No client certificate: the server refuses the handshake. (In TLS
        # 1.3 the client hears of it at its first read.)
        reader, writer = await asyncio.open_connection(
            *address, ssl=certs.client_context(), server_hostname="localhost"
        )
        with pytest.raises((ssl.SSLError, ConnectionError)):
            writer.write(b"x")
            await reader.read()
        writer.close()
        while not contexts:
            await asyncio.sleep(0.001)
        # The next client, with a certificate, is served.
        reader, writer = await asyncio.open_connection(
            *address, ssl=certs.client_with_cert(), server_hostname="localhost"
        )
        writer.write(b"still serving\n")
        line = await reader.readline()
        writer.close()
        await writer.wait_closed()
        server.close()
        await server.wait_closed()
        return line

    with caplog.at_level(logging.WARNING, logger="reactor"):
        assert run(loop, main()) == b"still serving\n"
    assert len(contexts) == 1, contexts
    assert contexts[0]["message"] == "Error on transport creation for incoming connection"
    assert isinstance(contexts[0]["exception"], ssl.SSLError)
    assert_reactor_tls(contexts[0]["transport"])
    assert any("TLS handshake with" in record.getMessage() for record in caplog.records)


def test_close_during_the_handshake_aborts(loop: EventLoop, certs: Certs) -> None:
    """Cancelling create_connection mid-handshake closes the socket at once, quietly."""
    contexts: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, context: contexts.append(context))
    listener = socket.create_server(("127.0.0.1", 0))

    async def main() -> None:
        accepted: asyncio.Future[socket.socket] = loop.create_future()
        loop.add_reader(listener.fileno(), lambda: accepted.set_result(listener.accept()[0]))
        attempt = asyncio.ensure_future(
            loop.create_connection(
                Peer, *listener.getsockname(), ssl=certs.client_context(), server_hostname="x"
            )
        )
        conn = await accepted
        loop.remove_reader(listener.fileno())
        conn.setblocking(False)
        hello = await loop.sock_recv(conn, 65536)
        assert hello[:1] == b"\x16"  # a TLS handshake record: the ClientHello
        attempt.cancel()
        with pytest.raises(asyncio.CancelledError):
            await attempt
        assert await loop.sock_recv(conn, 65536) == b""  # the FIN, at once
        conn.close()

    try:
        run(loop, main())
    finally:
        listener.close()
    assert contexts == []


# --------------------------------------------------------------- start_tls


def test_start_tls_with_data_in_flight(loop: EventLoop, certs: Certs) -> None:
    """The client's hello is already in the server's socket when the server upgrades,
    and the client writes application data before its handshake has finished."""

    async def main() -> tuple[bytes, bytes]:
        hello_sent = asyncio.Event()
        server_done: asyncio.Future[bytes] = loop.create_future()

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            assert await reader.readline() == b"STARTTLS\n"
            cast(asyncio.Transport, writer.transport).pause_reading()  # hello stays in the socket
            writer.write(b"GO\n")
            await hello_sent.wait()
            plain = writer.transport
            protocol = plain.get_protocol()
            tls = assert_reactor_tls(
                await loop.start_tls(plain, protocol, certs.server_context(), server_side=True)
            )
            assert tls.get_protocol() is protocol
            # The streams protocol now reads through the TLS transport.
            cast(Any, writer)._transport = tls
            line = await reader.readline()
            tls.write(line.upper())
            server_done.set_result(line)

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        transport, client = await loop.create_connection(Peer, *server.sockets[0].getsockname())
        transport.write(b"STARTTLS\n")
        while bytes(client.data) != b"GO\n":
            await asyncio.sleep(0.001)
        upgrading = asyncio.ensure_future(
            loop.start_tls(transport, client, certs.client_context(), server_hostname="localhost")
        )
        await asyncio.sleep(0)  # start_tls has sent the hello
        hello_sent.set()
        tls = assert_reactor_tls(await upgrading)
        assert tls.get_extra_info("peername") == transport.get_extra_info("peername")
        client.data.clear()
        tls.write(b"secret\n")
        got = await server_done
        while bytes(client.data) != b"SECRET\n":
            await asyncio.sleep(0.001)
        tls.close()
        server.close()
        await server.wait_closed()
        return got, bytes(client.data)

    assert run(loop, main()) == (b"secret\n", b"SECRET\n")


def test_stream_writer_start_tls_and_tls_inside_tls(loop: EventLoop, certs: Certs) -> None:
    """StreamWriter.start_tls (3.11+; loop.start_tls before), then TLS inside that TLS."""

    async def upgrade(writer: asyncio.StreamWriter, context: ssl.SSLContext, **kw: Any) -> None:
        if sys.version_info >= (3, 11):  # it knows the server side by the protocol
            await cast(Any, writer).start_tls(context, **kw)
        else:  # what StreamWriter.start_tls does
            protocol = cast(Any, writer)._protocol
            server_side = protocol._client_connected_cb is not None
            tls = await loop.start_tls(
                writer.transport, protocol, context, server_side=server_side, **kw
            )
            cast(Any, writer)._transport = tls
            protocol._transport = tls

    async def main() -> bytes:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            assert await reader.readline() == b"STARTTLS\n"
            writer.write(b"GO\n")
            await upgrade(writer, certs.server_context())
            assert_reactor_tls(writer.transport)
            await echo_handler(reader, writer)

        server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=certs.server_context())
        reader, writer = await asyncio.open_connection(
            *server.sockets[0].getsockname(),
            ssl=certs.client_context(),
            server_hostname="localhost",
        )
        outer = writer.transport
        writer.write(b"STARTTLS\n")
        assert await reader.readline() == b"GO\n"
        await upgrade(writer, certs.client_context(), server_hostname="localhost")
        inner = assert_reactor_tls(writer.transport)
        assert (
            inner is not outer and inner.stream is assert_reactor_tls(outer).tls
        )  # TLS inside TLS
        writer.write(b"doubly secret\n")
        line = await reader.readline()
        writer.close()
        await writer.wait_closed()
        server.close()
        await server.wait_closed()
        return line

    assert run(loop, main()) == b"doubly secret\n"


# ----------------------------------------------------- flow control, closing


def test_flow_control_with_a_slow_reader(loop: EventLoop, certs: Certs) -> None:
    """A reader that pauses: the writer is paused, then resumed, and nothing is lost."""
    block = os.urandom(64 * 1024)
    blocks = 64

    async def main() -> tuple[int, int, str]:
        server_peers: list[Peer] = []

        def factory() -> Peer:
            server_peers.append(Peer())
            return server_peers[-1]

        server = await loop.create_server(factory, "127.0.0.1", 0, ssl=certs.server_context())
        transport, client = await loop.create_connection(
            Peer,
            *server.sockets[0].getsockname(),
            ssl=certs.client_context(),
            server_hostname="localhost",
        )
        assert_reactor_tls(transport)
        while not server_peers or not server_peers[0].made.done():
            await asyncio.sleep(0.001)
        reader_side = server_peers[0].transport
        reader_side.pause_reading()
        assert not reader_side.is_reading()
        transport.set_write_buffer_limits(high=128 * 1024, low=32 * 1024)
        assert transport.get_write_buffer_limits() == (32 * 1024, 128 * 1024)
        sent = 0
        while not client.paused:
            transport.write(block)
            sent += 1
            await asyncio.sleep(0)
        assert transport.get_write_buffer_size() > 128 * 1024
        while sent < blocks:
            transport.write(block)
            sent += 1
        reader_side.resume_reading()
        assert reader_side.is_reading()
        await client.resumed_event.wait()
        while len(server_peers[0].data) < sent * len(block):
            await asyncio.sleep(0.001)
        assert transport.get_write_buffer_size() <= 32 * 1024
        transport.abort()
        assert await client.lost is None
        server.close()
        await server.wait_closed()
        return client.paused, sent, hashlib.sha256(server_peers[0].data).hexdigest()

    paused, sent, digest = run(loop, main())
    assert paused >= 1
    assert digest == sha256(block * sent)


def _blocking_peer(
    sock: socket.socket, context: ssl.SSLContext, act: Callable[[ssl.SSLSocket], bytes]
) -> bytes:
    """A thread's TLS peer on a blocking socket; ragged EOFs raise (no suppression)."""
    sock.setblocking(True)
    sock.settimeout(20)
    with context.wrap_socket(
        sock, server_side=True, suppress_ragged_eofs=False, do_handshake_on_connect=True
    ) as tls:
        return act(tls)


def test_close_notify_both_ways(loop: EventLoop, certs: Certs) -> None:
    """Our close() sends close_notify (the peer reads a clean end and answers, and
    our protocol sees connection_lost(None)); the peer's close_notify reaches our
    protocol as eof_received, and ours answers it."""

    def we_close(tls: ssl.SSLSocket) -> bytes:
        data = tls.recv(100)
        assert tls.recv(100) == b""  # close_notify, not a ragged EOF (that would raise)
        tls.unwrap()  # answer with ours
        return data

    def peer_closes(tls: ssl.SSLSocket) -> bytes:
        tls.sendall(b"bye")
        tls.unwrap()  # sends close_notify and waits for ours: it raises if none comes
        return b"answered"

    async def one(act: Callable[[ssl.SSLSocket], bytes], close: bool) -> tuple[bytes, Peer]:
        left, right = socket.socketpair()
        peer = loop.run_in_executor(None, _blocking_peer, left, certs.server_context(), act)
        transport, client = await loop.create_connection(
            Peer, sock=right, ssl=certs.client_context(), server_hostname="localhost"
        )
        assert_reactor_tls(transport)
        if close:
            transport.write(b"hello")
            transport.close()
        assert await client.lost is None
        return await peer, client

    async def main() -> None:
        said, client = await one(we_close, close=True)
        assert said == b"hello" and client.events == ["made", "lost"]
        said, client = await one(peer_closes, close=False)
        assert said == b"answered" and bytes(client.data) == b"bye"
        assert client.events == ["made", "eof", "lost"]

    run(loop, main())


def test_a_finished_connection_is_freed_without_the_cycle_collector(
    loop: EventLoop, certs: Certs
) -> None:
    """After connection_lost nothing keeps the TLS connection (its SSLObject,
    the context) alive but the program: a protocol that stores its transport
    is no cycle with it, as on asyncio's loop (CPython's
    test_create_connection_memory_leak and test_handshake_timeout_handler_leak
    check the same, with the collector left on)."""

    def we_close(tls: ssl.SSLSocket) -> bytes:
        data = tls.recv(100)
        assert tls.recv(100) == b""
        tls.unwrap()
        return data

    async def finished() -> weakref.ref[ssl.SSLContext]:
        context = certs.client_context()
        left, right = socket.socketpair()
        peer = loop.run_in_executor(None, _blocking_peer, left, certs.server_context(), we_close)
        transport, client = await loop.create_connection(
            Peer, sock=right, ssl=context, server_hostname="localhost"
        )
        face = assert_reactor_tls(transport)
        side = face.tls.cipher_side
        transport.write(b"hello")
        transport.close()
        assert await client.lost is None and await peer == b"hello"
        assert side.tls is None  # the cipher side let go of the TLS transport
        assert transport.get_protocol() is None  # as asyncio's transports answer
        return weakref.ref(context)

    async def given_up() -> weakref.ref[ssl.SSLContext]:
        # The peer never answers the hello; the caller gives up waiting.
        context = certs.client_context()
        listener = socket.create_server(("127.0.0.1", 0))
        try:
            await asyncio.wait_for(
                loop.create_connection(Peer, *listener.getsockname(), ssl=context), 0.1
            )
        except asyncio.TimeoutError:
            pass
        finally:
            listener.close()
        return weakref.ref(context)

    gc.collect()
    gc.disable()
    try:
        assert run(loop, finished())() is None
        assert run(loop, given_up())() is None
    finally:
        gc.enable()


def test_peer_fin_without_close_notify_is_a_clean_end(loop: EventLoop, certs: Certs) -> None:
    """asyncio's SSLProtocol treats a bare FIN as the end (eof_received, then
    connection_lost(None)); so does the loop, also when reading was paused then."""

    def fin_only(tls: ssl.SSLSocket) -> bytes:
        tls.sendall(b"last words")
        tls.recv(1)  # our "go" (reading is paused on our side by now)
        tls.shutdown(socket.SHUT_WR)  # a FIN, no close_notify
        return b""

    async def main() -> Peer:
        left, right = socket.socketpair()
        peer = loop.run_in_executor(None, _blocking_peer, left, certs.server_context(), fin_only)
        transport, client = await loop.create_connection(
            Peer, sock=right, ssl=certs.client_context(), server_hostname="localhost"
        )
        while bytes(client.data) != b"last words":
            await asyncio.sleep(0.001)
        transport.pause_reading()
        transport.write(b"g")
        await peer  # the FIN was sent while we were paused
        transport.resume_reading()
        assert await client.lost is None
        return client

    assert run(loop, main()).events == ["made", "eof", "lost"]


def test_a_bare_fin_still_gets_everything_written(loop: EventLoop, certs: Certs) -> None:
    """A FIN (no close_notify) that arrives while flow control holds back what
    we wrote: the end waits until all of it is sent, as on asyncio's loop
    (CPython's test_remote_shutdown_receives_trailing_data). Before, the plain
    transport closed at once and the plaintext held back was lost."""
    half = 4 * 1024 * 1024
    written = threading.Event()

    def fin_then_read(tls: ssl.SSLSocket) -> bytes:
        assert written.wait(20)
        # A FIN, no close_notify. (SSLSocket.shutdown would also drop the TLS
        # layer from this socket: what follows must still be decrypted.)
        socket.socket.shutdown(tls, socket.SHUT_WR)
        got = bytearray()
        while len(got) < 2 * half:
            chunk = tls.recv(65536)
            assert chunk, f"the connection ended after {len(got)} of {2 * half} bytes"
            got += chunk
        return bytes(got)

    async def main() -> None:
        left, right = socket.socketpair()
        peer = loop.run_in_executor(
            None, _blocking_peer, left, certs.server_context(), fin_then_read
        )
        transport, client = await loop.create_connection(
            Peer, sock=right, ssl=certs.client_context(), server_hostname="localhost"
        )
        transport.write(b"x" * half)  # encrypted at once: the plain transport is full
        transport.write(b"y" * half)  # waits as plaintext behind it
        assert client.paused == 1 and transport.get_write_buffer_size() > half
        written.set()
        got = await peer
        assert got == b"x" * half + b"y" * half
        assert await client.lost is None
        assert client.events == ["made", "eof", "lost"]

    run(loop, main())


# ---------------------------------------------------------------- interop


def _stock_asyncio(coro_factory: Callable[[], Any]) -> Any:
    """Run a coroutine on asyncio's own loop, in this (another) thread."""
    stock = asyncio.SelectorEventLoop()
    assert not isinstance(stock, EventLoop)
    try:
        return stock.run_until_complete(asyncio.wait_for(coro_factory(), 20))
    finally:
        stock.close()


def test_interop_our_server_asyncios_client(loop: EventLoop, certs: Certs) -> None:
    payload = os.urandom(300_000)

    async def asyncio_client(port: int) -> str:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=certs.client_context(), server_hostname="localhost"
        )
        assert type(writer.transport).__name__ == "_SSLProtocolTransport"
        writer.write(payload)
        data = await reader.readexactly(len(payload))
        writer.close()
        await writer.wait_closed()
        return sha256(data)

    async def main() -> str:
        server = await asyncio.start_server(
            echo_handler, "127.0.0.1", 0, ssl=certs.server_context()
        )
        port = server.sockets[0].getsockname()[1]
        digest = await loop.run_in_executor(None, _stock_asyncio, lambda: asyncio_client(port))
        server.close()
        await server.wait_closed()
        return cast(str, digest)

    assert run(loop, main()) == sha256(payload)


def test_interop_asyncios_server_our_client(loop: EventLoop, certs: Certs) -> None:
    payload = os.urandom(300_000)
    port: asyncio.Future[int] = loop.create_future()
    stop = threading.Event()

    async def asyncio_server() -> None:
        server = await asyncio.start_server(
            echo_handler, "127.0.0.1", 0, ssl=certs.server_context()
        )
        loop.call_soon_threadsafe(port.set_result, server.sockets[0].getsockname()[1])
        while not stop.is_set():
            await asyncio.sleep(0.01)
        server.close()
        await server.wait_closed()

    async def main() -> str:
        serving = loop.run_in_executor(None, _stock_asyncio, asyncio_server)
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", await port, ssl=certs.client_context(), server_hostname="localhost"
        )
        assert_reactor_tls(writer.transport)
        writer.write(payload)
        data = await reader.readexactly(len(payload))
        writer.close()
        await writer.wait_closed()
        stop.set()
        await serving
        return sha256(data)

    assert run(loop, main()) == sha256(payload)


def test_native_transports_off_keeps_asyncios_tls(backend: str, certs: Certs) -> None:
    r = make_reactor(backend)
    aio_loop = EventLoop(reactor=r, native_transports=False)
    try:

        async def main() -> str:
            server = await asyncio.start_server(
                echo_handler, "127.0.0.1", 0, ssl=certs.server_context()
            )
            reader, writer = await asyncio.open_connection(
                *server.sockets[0].getsockname(),
                ssl=certs.client_context(),
                server_hostname="localhost",
            )
            name = type(writer.transport).__name__
            writer.write(b"x\n")
            assert await reader.readline() == b"x\n"
            writer.close()
            await writer.wait_closed()
            server.close()
            await server.wait_closed()
            return name

        assert run(aio_loop, main()) == "_SSLProtocolTransport"
    finally:
        aio_loop.close()
        r.close()


def test_an_error_in_connection_made_fails_the_connection(loop: EventLoop, certs: Certs) -> None:
    """As with asyncio's SSLProtocol: reported, the connection aborted, and
    create_connection raises it; the protocol then hears connection_lost."""
    contexts: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, context: contexts.append(context))

    class Broken(Peer):
        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            raise RuntimeError("broken connection_made")

    async def main() -> Peer:
        server = await asyncio.start_server(
            echo_handler, "127.0.0.1", 0, ssl=certs.server_context()
        )
        protocols: list[Broken] = []

        def factory() -> Broken:
            protocols.append(Broken())
            return protocols[-1]

        with pytest.raises(RuntimeError, match="broken connection_made"):
            await loop.create_connection(
                factory,
                *server.sockets[0].getsockname(),
                ssl=certs.client_context(),
                server_hostname="localhost",
            )
        assert isinstance(await protocols[0].lost, RuntimeError)
        server.close()
        await server.wait_closed()
        return protocols[0]

    assert run(loop, main()).events == ["made", "lost"]
    assert len(contexts) == 1  # reported once
    assert str(contexts[0]["exception"]) == "broken connection_made"
    assert "Broken.connection_made" in contexts[0]["message"]


def test_sendfile_over_tls(loop: EventLoop, certs: Certs, tmp_path: Path) -> None:
    """loop.sendfile on a TLS transport: asyncio's fallback, through the TLS transport."""
    content = os.urandom(300_000)
    path = tmp_path / "payload"
    path.write_bytes(content)

    async def main() -> str:
        received: asyncio.Future[bytes] = loop.create_future()

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            received.set_result(await reader.readexactly(len(content)))
            writer.close()

        server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=certs.server_context())
        transport, client = await loop.create_connection(
            Peer,
            *server.sockets[0].getsockname(),
            ssl=certs.client_context(),
            server_hostname="localhost",
        )
        assert_reactor_tls(transport)
        with path.open("rb") as file:
            assert await loop.sendfile(transport, file) == len(content)
        assert transport.get_protocol() is client  # the fallback's protocol is gone again
        data = await received
        transport.close()
        await client.lost
        server.close()
        await server.wait_closed()
        return sha256(data)

    assert run(loop, main()) == sha256(content)
