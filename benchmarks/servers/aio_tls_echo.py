"""asyncio's Protocol echo over TLS (``asyncio_echo.py``'s), on a chosen event loop.

    python benchmarks/servers/aio_tls_echo.py --port 0 --tls-cert server.pem --tls-key server.key

``loop.create_server(ssl=...)`` with the same protocol as ``asyncio_echo.py``:
on ``reactor.aio`` (the default, ``--loop reactor``) the TLS is the reactor's
own (``reactor/tls.py``, through ``reactor/aio/tls.py``); ``--loop asyncio``
and ``--loop uvloop`` run the same code on those loops' own TLS. It is
``tls_bench.py``'s ``aio_tls`` server. Prints ``echo server listening on
HOST:PORT (NAME, TLS)``; SIGINT or SIGTERM stops it.
"""

from __future__ import annotations

import argparse
import sys

from aio_echo import LOOPS, run_on  # this script's folder is on sys.path
from asyncio_echo import serve, tls_context


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8007, help="0 picks a free port")
    parser.add_argument("--loop", choices=LOOPS, default="reactor")
    parser.add_argument("--backend", help="reactor.aio's backend (epoll, poll, ...)")
    parser.add_argument("--tls-cert", metavar="FILE", required=True, help="certificate (PEM)")
    parser.add_argument("--tls-key", metavar="FILE", required=True, help="its private key (PEM)")
    args = parser.parse_args(argv)
    context = tls_context(args.tls_cert, args.tls_key)
    name = f"protocol on {args.loop}"
    run_on(args.loop, serve(args.host, args.port, name, context), args.backend)
    return 0


if __name__ == "__main__":
    sys.exit(main())
