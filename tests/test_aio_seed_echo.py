"""The seeds' asyncio echo server, unchanged, on reactor.aio.run (and on every backend).

``handle_client`` and ``start_server`` below are the example the project's
seed notes give for asyncio (``asyncio.start_server(handle_client)``,
``await reader.read()``, ``writer.write()``, ``await writer.drain()``),
copied as they are; only the way the program is started differs:
``reactor.aio.run(...)`` instead of ``asyncio.run(...)``. docs/aio.md shows
the same code.
"""

from __future__ import annotations

import asyncio
import builtins
import socket
from typing import Any

import pytest

import reactor.aio
from reactor.aio import EventLoop
from tests.conftest import make_reactor

pytestmark = pytest.mark.timeout(60)


# ---- the seeds' example, unchanged (type hints aside) ----------------------
async def handle_client(reader: Any, writer: Any) -> None:
    addr = writer.get_extra_info("peername")
    print(f"New connection from {addr}")
    while True:
        data = await reader.read(1024)
        if not data:
            break
        print(f"Received from {addr}: {data.decode()}")
        writer.write(data)
        await writer.drain()
    print(f"Closing connection from {addr}")
    writer.close()


async def start_server(host: str = "127.0.0.1", port: int = 65432) -> None:
    server = await asyncio.start_server(handle_client, host, port)
    print(f"Server started on {host}:{port}")
    async with server:
        await server.serve_forever()


# ---- the test around it ------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def _clients_against_the_example(port: int, clients: int, messages: int) -> list[bytes]:
    # The example says when it listens by printing; its module's print is
    # watched (the example itself is untouched) so the clients start then.
    listening = asyncio.Event()

    def watching_print(*args: Any, **kwargs: Any) -> None:
        builtins.print(*args, **kwargs)
        if args and str(args[0]).startswith("Server started"):
            listening.set()

    globals()["print"] = watching_print
    server = asyncio.ensure_future(start_server("127.0.0.1", port))

    async def client(n: int) -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        got = b""
        for i in range(messages):
            message = f"client {n} message {i};".encode()
            writer.write(message)
            await writer.drain()
            got += await reader.readexactly(len(message))
        writer.close()
        await writer.wait_closed()
        return got

    try:
        started = asyncio.ensure_future(listening.wait())
        await asyncio.wait([server, started], return_when=asyncio.FIRST_COMPLETED)
        started.cancel()
        if server.done():
            server.result()  # it failed to start: raise its error
        return await asyncio.gather(*(client(n) for n in range(clients)))
    finally:
        del globals()["print"]
        server.cancel()
        with pytest.raises(asyncio.CancelledError):
            await server


def _expected(clients: int, messages: int) -> list[bytes]:
    return [
        b"".join(f"client {n} message {i};".encode() for i in range(messages))
        for n in range(clients)
    ]


def test_seed_echo_server_on_reactor_aio_run(capsys: pytest.CaptureFixture[str]) -> None:
    port = _free_port()
    got = reactor.aio.run(_clients_against_the_example(port, clients=20, messages=10))
    assert got == _expected(20, 10)
    out = capsys.readouterr().out
    assert f"Server started on 127.0.0.1:{port}" in out
    assert out.count("New connection from") == 20


def test_seed_echo_server_on_every_backend(backend: str) -> None:
    r = make_reactor(backend)
    loop = EventLoop(reactor=r)
    try:
        got = loop.run_until_complete(
            asyncio.wait_for(_clients_against_the_example(_free_port(), 5, 5), 30)
        )
        assert got == _expected(5, 5)
    finally:
        loop.close()
        r.close()
