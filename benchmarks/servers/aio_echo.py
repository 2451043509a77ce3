"""asyncio's Protocol echo server (``asyncio_echo.py``'s) on a chosen event loop.

    python benchmarks/servers/aio_echo.py --port 0 --loop reactor

``--loop asyncio`` is asyncio's own loop, ``uvloop`` uvloop's and ``reactor``
``reactor.aio`` (``--backend`` picks its readiness backend). The protocol and
server code are the same on all three, so a difference is the loop's.
Prints ``echo server listening on HOST:PORT (NAME)``; SIGINT or SIGTERM stops it.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable, Coroutine
from typing import Any

from asyncio_echo import serve  # this script's folder is on sys.path

LOOPS = ("asyncio", "uvloop", "reactor")


def run_on(loop: str, main: Coroutine[Any, Any, None], backend: str | None = None) -> None:
    """Run ``main`` on the named loop, as ``asyncio.run`` would."""
    if loop == "uvloop":
        import uvloop

        uvloop.run(main)
    elif loop == "reactor":
        import reactor.aio

        reactor.aio.run(main, backend=backend)
    else:
        asyncio.run(main)


def main(
    serve_fn: Callable[[str, int, str], Coroutine[Any, Any, None]] = serve,
    kind: str = "protocol",
    argv: list[str] | None = None,
) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8007, help="0 picks a free port")
    parser.add_argument("--loop", choices=LOOPS, default="reactor")
    parser.add_argument("--backend", help="reactor.aio's backend (epoll, poll, ...)")
    args = parser.parse_args(argv)
    run_on(args.loop, serve_fn(args.host, args.port, f"{kind} on {args.loop}"), args.backend)
    return 0


if __name__ == "__main__":
    sys.exit(main())
