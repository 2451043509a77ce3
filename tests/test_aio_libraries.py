"""Real asyncio libraries on reactor.aio.EventLoop: aiohttp and websockets, on every backend.

Code this project did not write, run unchanged: an aiohttp server and client
(many concurrent requests, a streamed response, a websocket), and the
``websockets`` package's server and client.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection, serve

from reactor.aio import EventLoop

pytestmark = pytest.mark.timeout(90)


def run(loop: asyncio.AbstractEventLoop, coro: Any) -> Any:
    return loop.run_until_complete(asyncio.wait_for(coro, 60))


async def _hello(request: web.Request) -> web.Response:
    return web.Response(text=f"hello {request.match_info['name']}")


async def _stream(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse()
    response.enable_chunked_encoding()
    await response.prepare(request)
    for i in range(100):
        await response.write(b"chunk %03d\n" % i)
    await response.write_eof()
    return response


async def _websocket(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse()
    await ws.prepare(request)
    async for message in ws:
        if message.type == aiohttp.WSMsgType.TEXT:
            await ws.send_str(message.data.upper())
    return ws


async def _start_app() -> tuple[web.AppRunner, str]:
    app = web.Application()
    app.router.add_get("/hello/{name}", _hello)
    app.router.add_get("/stream", _stream)
    app.router.add_get("/ws", _websocket)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    server: Any = site._server  # aiohttp keeps the asyncio.Server here
    port = server.sockets[0].getsockname()[1]
    return runner, f"http://127.0.0.1:{port}"


def test_aiohttp_concurrent_requests(loop: EventLoop) -> None:
    async def main() -> list[str]:
        runner, base = await _start_app()
        try:
            connector = aiohttp.TCPConnector(limit=50)
            async with aiohttp.ClientSession(connector=connector) as session:

                async def get(i: int) -> str:
                    async with session.get(f"{base}/hello/{i}") as response:
                        assert response.status == 200
                        return await response.text()

                return await asyncio.gather(*(get(i) for i in range(300)))
        finally:
            await runner.cleanup()

    assert run(loop, main()) == [f"hello {i}" for i in range(300)]


def test_aiohttp_streamed_response_and_websocket(loop: EventLoop) -> None:
    async def main() -> tuple[bytes, list[str]]:
        runner, base = await _start_app()
        try:
            async with aiohttp.ClientSession() as session:
                async with session.get(f"{base}/stream") as response:
                    chunks = [chunk async for chunk in response.content.iter_any()]
                    body = b"".join(chunks)
                replies = []
                async with session.ws_connect(f"{base}/ws") as ws:
                    for word in ("alpha", "beta", "gamma"):
                        await ws.send_str(word)
                        replies.append((await ws.receive()).data)
                    await ws.close()
                return body, replies
        finally:
            await runner.cleanup()

    body, replies = run(loop, main())
    assert body == b"".join(b"chunk %03d\n" % i for i in range(100))
    assert replies == ["ALPHA", "BETA", "GAMMA"]


def test_websockets_server_and_client(loop: EventLoop) -> None:
    async def echo(connection: ServerConnection) -> None:
        async for message in connection:
            assert isinstance(message, str)
            await connection.send(f"echo {message}")

    async def main() -> list[str]:
        async with serve(echo, "127.0.0.1", 0) as server:
            port = next(iter(server.sockets)).getsockname()[1]

            async def client(n: int) -> list[str]:
                async with connect(f"ws://127.0.0.1:{port}") as websocket:
                    got = []
                    for i in range(5):
                        await websocket.send(f"{n}.{i}")
                        got.append(str(await websocket.recv()))
                    return got

            results = await asyncio.gather(*(client(n) for n in range(20)))
        return [message for result in results for message in result]

    expected = [f"echo {n}.{i}" for n in range(20) for i in range(5)]
    assert run(loop, main()) == expected
