"""The fast path: asyncio connections on the reactor's StreamTransport (NativeTransport).

asyncio's create_server/create_connection hand each connected socket to a
NativeTransport on EventLoop. These tests check what asyncio code relies on:
it is an asyncio.Transport, answers get_extra_info as asyncio does, is
counted by asyncio.Server, supports start_tls and loop.sendfile (with write
refused meanwhile), runs data_received in asyncio's callback order, and
``native_transports=False`` gives asyncio's own transports back.
"""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
import sys
from pathlib import Path
from typing import Any, cast

import pytest

from reactor import StreamTransport
from reactor.aio import EventLoop
from reactor.aio.transport import NativeTransport
from tests.conftest import make_reactor
from tests.tls_helpers import make_certs

pytestmark = pytest.mark.timeout(60)


def run(loop: asyncio.AbstractEventLoop, coro: Any) -> Any:
    return loop.run_until_complete(asyncio.wait_for(coro, 20))


class Collect(asyncio.Protocol):
    """Records what arrives; ``done`` resolves on connection_lost."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.done: asyncio.Future[BaseException | None] = asyncio.get_running_loop().create_future()
        self.events: list[str] = []

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self.events.append("made")

    def data_received(self, data: bytes) -> None:
        self.data += data

    def eof_received(self) -> bool | None:
        self.events.append("eof")
        return None

    def connection_lost(self, exc: BaseException | None) -> None:
        self.events.append("lost")
        if not self.done.done():
            self.done.set_result(exc)


def test_connections_are_native_asyncio_transports(loop: EventLoop) -> None:
    async def main() -> None:
        server_side: list[Collect] = []

        def factory() -> Collect:
            server_side.append(Collect())
            return server_side[-1]

        server = await loop.create_server(factory, "127.0.0.1", 0)
        address = server.sockets[0].getsockname()
        transport, client = await loop.create_connection(Collect, *address)
        assert isinstance(transport, NativeTransport)
        assert isinstance(transport, asyncio.Transport)
        assert isinstance(transport.stream, StreamTransport)
        assert client.transport is transport and client.events == ["made"]
        assert transport.get_extra_info("peername") == address
        assert transport.get_extra_info("sockname")[0] == "127.0.0.1"
        assert transport.get_extra_info("socket").fileno() >= 0
        assert transport.get_extra_info("nonesuch", 5) == 5
        assert transport.get_protocol() is client
        assert "NativeTransport" in repr(transport)
        transport.set_write_buffer_limits(high=1000)
        assert transport.get_write_buffer_limits()[1] == 1000
        transport.write(b"hello")
        transport.writelines([b" ", b"world"])
        assert transport.can_write_eof()
        transport.write_eof()
        while len(server_side) < 1 or "eof" not in server_side[0].events:
            await asyncio.sleep(0.001)
        assert bytes(server_side[0].data) == b"hello world"
        server_side[0].transport.close()
        assert await client.done is None
        assert transport.is_closing()
        server.close()
        await server.wait_closed()

    run(loop, main())


@pytest.mark.skipif(sys.version_info < (3, 13), reason="Server.close_clients is 3.13+")
def test_server_counts_and_closes_its_clients(loop: EventLoop) -> None:
    async def main() -> None:
        server = await loop.create_server(Collect, "127.0.0.1", 0)
        address = server.sockets[0].getsockname()
        clients = [await loop.create_connection(Collect, *address) for _ in range(3)]
        while len(server._clients) < 3:  # type: ignore[attr-defined]
            await asyncio.sleep(0.001)
        server.close()
        server.close_clients()  # type: ignore[attr-defined]
        for _, proto in clients:
            await proto.done
        await server.wait_closed()

    run(loop, main())


def test_pause_and_resume_reading(loop: EventLoop) -> None:
    async def main() -> bytes:
        server = await loop.create_server(Collect, "127.0.0.1", 0)
        address = server.sockets[0].getsockname()
        _reader, writer = await asyncio.open_connection(*address)
        transport: Any = writer.transport
        transport.pause_reading()
        assert not transport.is_reading()
        transport.resume_reading()
        assert transport.is_reading()
        writer.close()
        await writer.wait_closed()
        server.close()
        await server.wait_closed()
        return b"ok"

    assert run(loop, main()) == b"ok"


def test_sendfile_native_after_a_buffered_write(loop: EventLoop, tmp_path: Path) -> None:
    payload = os.urandom(2 * 1024 * 1024)
    path = tmp_path / "file"
    path.write_bytes(payload)
    first = os.urandom(4 * 1024 * 1024)  # more than the kernel takes at once

    async def main() -> None:
        server_side: list[Collect] = []

        def factory() -> Collect:
            server_side.append(Collect())
            return server_side[-1]

        server = await loop.create_server(factory, "127.0.0.1", 0)
        transport, _ = await loop.create_connection(Collect, *server.sockets[0].getsockname())
        transport.write(first)
        assert transport.get_write_buffer_size() > 0
        with open(path, "rb") as file:
            sending = asyncio.ensure_future(loop.sendfile(transport, file))
            await asyncio.sleep(0)
            with pytest.raises(RuntimeError, match="sendfile is in progress"):
                transport.write(b"not now")
            assert await sending == len(payload)
        transport.write(b"after")
        transport.write_eof()
        while not server_side or "eof" not in server_side[0].events:
            await asyncio.sleep(0.001)
        assert bytes(server_side[0].data) == first + payload + b"after"
        transport.close()
        server.close()
        await server.wait_closed()

    run(loop, main())


def test_sendfile_of_a_non_file_falls_back(loop: EventLoop) -> None:
    import io

    async def main() -> None:
        server_side: list[Collect] = []

        def factory() -> Collect:
            server_side.append(Collect())
            return server_side[-1]

        server = await loop.create_server(factory, "127.0.0.1", 0)
        transport, _ = await loop.create_connection(Collect, *server.sockets[0].getsockname())
        assert await loop.sendfile(transport, io.BytesIO(b"in memory")) == 9
        transport.write_eof()
        while not server_side or "eof" not in server_side[0].events:
            await asyncio.sleep(0.001)
        assert bytes(server_side[0].data) == b"in memory"
        transport.close()
        server.close()
        await server.wait_closed()

    run(loop, main())


@pytest.mark.skipif(sys.version_info < (3, 11), reason="StreamWriter.start_tls is 3.11+")
def test_start_tls_upgrades_a_native_connection(loop: EventLoop) -> None:
    certs = make_certs()

    async def main() -> bytes:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            assert await reader.readline() == b"STARTTLS\n"
            # Reading pauses as start_tls begins, so the client's hello (sent
            # only after "GO") is left for TLS, not read as plain data.
            writer.write(b"GO\n")
            await cast(Any, writer).start_tls(certs.server_context())
            writer.write((await reader.readline()).upper())
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        reader, writer = await asyncio.open_connection(*server.sockets[0].getsockname())
        assert isinstance(writer.transport, NativeTransport)
        writer.write(b"STARTTLS\n")
        assert await reader.readline() == b"GO\n"
        await cast(Any, writer).start_tls(certs.client_context(), server_hostname="localhost")
        assert isinstance(writer.get_extra_info("ssl_object"), ssl.SSLObject)
        writer.write(b"secret\n")
        line = await reader.readline()
        writer.close()
        server.close()
        await server.wait_closed()
        return line

    assert run(loop, main()) == b"SECRET\n"


def test_ssl_server_and_client(loop: EventLoop) -> None:
    certs = make_certs()

    async def main() -> bytes:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.write((await reader.readline()).upper())
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=certs.server_context())
        host, port = server.sockets[0].getsockname()
        reader, writer = await asyncio.open_connection(
            host, port, ssl=certs.client_context(), server_hostname="localhost"
        )
        writer.write(b"over tls\n")
        line = await reader.readline()
        writer.close()
        server.close()
        await server.wait_closed()
        return line

    assert run(loop, main()) == b"OVER TLS\n"


def test_connect_accepted_socket_and_unix_pairs(loop: EventLoop) -> None:
    async def main() -> bytes:
        left, right = socket.socketpair()
        transport, proto = await loop.connect_accepted_socket(Collect, left)
        assert isinstance(transport, NativeTransport)
        right.sendall(b"via socketpair")
        right.shutdown(socket.SHUT_WR)
        await proto.done
        right.close()
        return bytes(proto.data)

    assert run(loop, main()) == b"via socketpair"


def test_asyncio_transports_when_native_ones_are_off(backend: str) -> None:
    r = make_reactor(backend)
    loop = EventLoop(reactor=r, native_transports=False)
    try:

        async def main() -> str:
            server = await loop.create_server(Collect, "127.0.0.1", 0)
            transport, _ = await loop.create_connection(Collect, *server.sockets[0].getsockname())
            name = type(transport).__name__
            transport.close()
            server.close()
            await server.wait_closed()
            return name

        assert run(loop, main()) == "_SelectorSocketTransport"
    finally:
        loop.close()
        r.close()


def test_protocol_errors_close_only_that_connection(loop: EventLoop) -> None:
    contexts: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, context: contexts.append(context))

    class Broken(Collect):
        def data_received(self, data: bytes) -> None:
            raise ValueError("bad data")

    async def main() -> BaseException | None:
        server = await loop.create_server(Broken, "127.0.0.1", 0)
        transport, proto = await loop.create_connection(Collect, *server.sockets[0].getsockname())
        transport.write(b"x")
        await proto.done
        server.close()
        await server.wait_closed()
        return None

    run(loop, main())
    assert any(isinstance(c.get("exception"), ValueError) for c in contexts)


def test_an_error_in_connection_made_is_reported_and_the_connection_stays(
    loop: EventLoop,
) -> None:
    contexts: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, context: contexts.append(context))

    class Raises(Collect):
        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            raise ZeroDivisionError("in connection_made")

    async def main() -> BaseException | None:
        server = await loop.create_server(Collect, "127.0.0.1", 0)
        transport, proto = await loop.create_connection(Raises, *server.sockets[0].getsockname())
        assert not transport.is_closing()  # as on asyncio's loop
        transport.close()
        result = await proto.done
        server.close()
        await server.wait_closed()
        return result

    assert run(loop, main()) is None
    assert [type(c["exception"]) for c in contexts] == [ZeroDivisionError]


@pytest.mark.parametrize("debug", [False, True])
def test_an_error_escaping_a_transport_callback_is_reported(loop: EventLoop, debug: bool) -> None:
    """A bug below the protocol (here a socket whose recv raises) reaches the
    exception handler; the loop goes on."""
    loop.set_debug(debug)
    contexts: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, context: contexts.append(context))

    class BrokenSocket:
        def __init__(self, sock: socket.socket) -> None:
            self._sock = sock

        def recv(self, size: int) -> bytes:
            raise LookupError("broken recv")

        def __getattr__(self, name: str) -> Any:
            return getattr(self._sock, name)

    async def main() -> None:
        left, right = socket.socketpair()
        transport, proto = await loop.connect_accepted_socket(Collect, left)
        assert isinstance(transport, NativeTransport)
        real = transport.stream._sock
        transport.stream._sock = cast(socket.socket, BrokenSocket(real))
        right.send(b"x")
        while not contexts:
            await asyncio.sleep(0.001)
        transport.stream._sock = real
        transport.close()
        await proto.done
        right.close()

    run(loop, main())
    assert isinstance(contexts[0]["exception"], LookupError)
    assert "handle" in contexts[0]
