"""asyncio's Protocol echo server: the baseline every other server is compared with.

    python benchmarks/servers/asyncio_echo.py --port 0

Prints ``echo server listening on HOST:PORT (asyncio)`` once it accepts
connections, and exits cleanly on SIGINT or SIGTERM. ``--uvloop`` runs the
same protocol on uvloop's loop (``uvloop_echo.py`` does just that).
``--tls-cert FILE --tls-key FILE`` serves TLS with that certificate
(``loop.create_server(ssl=...)``: asyncio's, or uvloop's, own TLS layer).
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import ssl
import sys
from typing import Any, cast


class Echo(asyncio.Protocol):
    """The textbook echo: ``data_received`` is one ``write``."""

    transport: asyncio.Transport

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses: no isinstance.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)

    def eof_received(self) -> bool:
        # Half-close like the reactor's echo: finish our side once flushed.
        if self.transport.can_write_eof():
            self.transport.write_eof()
            return True
        return False  # TLS has no half-close: the transport closes

    def pause_writing(self) -> None:
        self.transport.pause_reading()

    def resume_writing(self) -> None:
        self.transport.resume_reading()


def tls_context(cert: str | None, key: str | None) -> ssl.SSLContext | None:
    """The server's TLS context from ``--tls-cert``/``--tls-key``, or None for plain TCP."""
    if cert is None and key is None:
        return None
    if cert is None or key is None:
        raise SystemExit("--tls-cert and --tls-key go together: pass both, or neither")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context


async def serve(host: str, port: int, name: str, context: ssl.SSLContext | None = None) -> None:
    loop = asyncio.get_running_loop()
    stopped = loop.create_future()

    def stop() -> None:
        if not stopped.done():
            stopped.set_result(None)

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop)
    server = await loop.create_server(Echo, host, port, backlog=1024, ssl=context)
    address: Any = server.sockets[0].getsockname()
    tls = ", TLS" if context is not None else ""
    print(f"echo server listening on {address[0]}:{address[1]} ({name}{tls})", flush=True)
    try:
        await stopped
    finally:
        server.close()
        # Connections still open are dropped with the loop (wait_closed()
        # would wait for them on 3.12+).


def main(argv: list[str] | None = None, *, use_uvloop: bool = False) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8007, help="0 picks a free port")
    parser.add_argument("--uvloop", action="store_true", help="run on uvloop's event loop")
    parser.add_argument("--tls-cert", metavar="FILE", help="serve TLS with this certificate (PEM)")
    parser.add_argument("--tls-key", metavar="FILE", help="the certificate's private key (PEM)")
    args = parser.parse_args(argv)
    context = tls_context(args.tls_cert, args.tls_key)
    if use_uvloop or args.uvloop:
        import uvloop

        uvloop.run(serve(args.host, args.port, "uvloop", context))
    else:
        asyncio.run(serve(args.host, args.port, "asyncio", context))
    return 0


if __name__ == "__main__":
    sys.exit(main())
