"""asyncio streams echo server (``start_server`` with ``reader.read``/``writer.write``/
``drain``) on a chosen event loop: asyncio's, uvloop's or ``reactor.aio``.

    python benchmarks/servers/aio_streams_echo.py --port 0 --loop reactor

The code is the textbook streams server; only the loop differs. Prints
``echo server listening on HOST:PORT (NAME)``; SIGINT or SIGTERM stops it.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from typing import Any

from aio_echo import main  # this script's folder is on sys.path


async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except ConnectionError:
        pass
    finally:
        writer.close()


async def serve(host: str, port: int, name: str) -> None:
    loop = asyncio.get_running_loop()
    stopped = loop.create_future()

    def stop() -> None:
        if not stopped.done():
            stopped.set_result(None)

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop)
    server = await asyncio.start_server(handle, host, port, backlog=1024)
    address: Any = server.sockets[0].getsockname()
    print(f"echo server listening on {address[0]}:{address[1]} ({name})", flush=True)
    try:
        await stopped
    finally:
        server.close()


if __name__ == "__main__":
    sys.exit(main(serve, "streams"))
