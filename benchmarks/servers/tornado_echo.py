"""Tornado's TCPServer echo (on asyncio's loop underneath).

python benchmarks/servers/tornado_echo.py --port 0
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys

from tornado.iostream import IOStream, StreamClosedError
from tornado.netutil import bind_sockets
from tornado.tcpserver import TCPServer


class EchoServer(TCPServer):
    async def handle_stream(self, stream: IOStream, address: tuple[str, int]) -> None:
        try:
            while True:
                data = await stream.read_bytes(65536, partial=True)
                await stream.write(data)
        except StreamClosedError:
            pass


async def serve(host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    stopped = loop.create_future()

    def stop() -> None:
        if not stopped.done():
            stopped.set_result(None)

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop)
    sockets = bind_sockets(port, address=host, backlog=1024)
    server = EchoServer()
    server.add_sockets(sockets)
    bound = sockets[0].getsockname()
    print(f"echo server listening on {bound[0]}:{bound[1]} (tornado)", flush=True)
    try:
        await stopped
    finally:
        server.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8007, help="0 picks a free port")
    args = parser.parse_args(argv)
    asyncio.run(serve(args.host, args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
