"""The Python-level cost of one echo round trip, without the kernel: reactor vs asyncio.

    python benchmarks/dispatch_bench.py --conns 100 --repeats 7

Both event loops run their real dispatch path (wait for readiness, call the
transport's read handler, ``recv``, ``data_received``, ``write``, ``send``)
over fake sockets and a fake readiness backend that reports every connection
readable on every turn. ``recv`` and ``send`` are C builtins that return at
once, so what is timed is the loops' own Python code per request, with no
system calls and no network. It is single-process and CPU-bound, so it is far
steadier than the echo benchmark on a busy machine, and it isolates what the
reactor's hot path (``Reactor._run_once``, ``StreamTransport._read_ready``,
``StreamTransport.write``) costs.

What it cannot see: anything the kernel or the C library does (system calls,
memory mapping for large ``recv`` buffers): echo_bench.py measures those.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import selectors
import socket
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

FIRST_FD = 10_000  # fake descriptor numbers, far from real ones


class FakeSocket:
    """Enough of a socket for both transports; recv/send are C callables."""

    family = socket.AF_INET
    type = socket.SOCK_STREAM
    proto = socket.IPPROTO_TCP

    def __init__(self, fd: int, payload: bytes) -> None:
        self._fd = fd
        # Any size asked returns the payload: a C-level dict lookup.
        table: defaultdict[int, bytes] = defaultdict(lambda: payload)
        self.recv: Callable[[int], bytes] = table.__getitem__
        self.send: Callable[[Any], int] = len  # "the kernel took it all"

    def fileno(self) -> int:
        return self._fd

    def setblocking(self, flag: bool) -> None:
        pass

    def setsockopt(self, *args: Any) -> None:
        pass

    def getsockname(self) -> tuple[str, int]:
        return ("127.0.0.1", 1)

    def getpeername(self) -> tuple[str, int]:
        return ("127.0.0.1", 2)

    def close(self) -> None:
        pass


class ReactorEcho:
    """apps.echo.Echo's data path, without depending on the app module."""

    __slots__ = ("transport",)

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: BaseException | None) -> None:
        pass

    def pause_writing(self) -> None:
        pass

    def resume_writing(self) -> None:
        pass


class AsyncioEcho(asyncio.Protocol):
    transport: Any

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)


# --------------------------------------------------------------------------- reactor


class AllReadablePoller:
    """A reactor backend that reports every fake connection readable, every turn."""

    name = "fake"

    def __init__(self) -> None:
        self.ready: list[tuple[int, int]] = []

    def register(self, fd: int, events: int) -> None:
        pass

    def modify(self, fd: int, events: int) -> None:
        pass

    def unregister(self, fd: int) -> None:
        pass

    def poll(self, timeout: float | None) -> list[tuple[int, int]]:
        return self.ready

    def close(self) -> None:
        pass


def reactor_turns(conns: int, payload: bytes) -> Callable[[int], None]:
    from reactor import Reactor
    from reactor.backends import READ
    from reactor.stream import StreamTransport

    poller = AllReadablePoller()
    loop = Reactor(backend=poller)
    for i in range(conns):
        sock: Any = FakeSocket(FIRST_FD + i, payload)
        StreamTransport(loop, sock, ReactorEcho())._start()
    poller.ready = [(FIRST_FD + i, READ) for i in range(conns)]
    run_once = loop._run_once

    def turns(n: int) -> None:
        for _ in range(n):
            run_once(0.0)

    return turns


# --------------------------------------------------------------------------- asyncio


class AllReadableSelector(selectors._BaseSelectorImpl):
    """An asyncio selector that reports every fake connection readable, every turn."""

    def __init__(self) -> None:
        super().__init__()
        self.ready: list[tuple[selectors.SelectorKey, int]] = []

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        return self.ready


def asyncio_turns(conns: int, payload: bytes) -> Callable[[int], None]:
    selector = AllReadableSelector()
    loop: Any = asyncio.SelectorEventLoop(selector)
    for i in range(conns):
        loop._make_socket_transport(FakeSocket(FIRST_FD + i, payload), AsyncioEcho())
    loop._run_once()  # connection_made and add_reader run now
    selector.ready = [
        (key, selectors.EVENT_READ) for key in selector.get_map().values() if key.fd >= FIRST_FD
    ]
    assert len(selector.ready) == conns
    run_once = loop._run_once

    def turns(n: int) -> None:
        for _ in range(n):
            run_once()

    return turns


# --------------------------------------------------------------------------- main


def measure(turns: Callable[[int], None], n: int) -> float:
    """Seconds of CPU for ``n`` turns (garbage collection off while timing)."""
    turns(max(1, n // 10))  # warm up
    gc.collect()
    gc.disable()
    try:
        t0 = time.process_time()
        turns(n)
        return time.process_time() - t0
    finally:
        gc.enable()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conns", type=int, default=100, help="connections ready per turn")
    parser.add_argument("--size", type=int, default=1024, help="bytes per message")
    parser.add_argument("--requests", type=int, default=300_000, help="per measurement")
    parser.add_argument("--repeats", type=int, default=7, help="measurements, interleaved")
    parser.add_argument(
        "--reactor-path",
        metavar="DIR",
        help="import the reactor package from DIR (a patched copy) instead of this checkout",
    )
    args = parser.parse_args(argv)
    if args.reactor_path:
        sys.path.insert(0, args.reactor_path)
    payload = b"x" * args.size
    makers = {"reactor": reactor_turns, "asyncio": asyncio_turns}
    loops = {name: make(args.conns, payload) for name, make in makers.items()}
    n = max(1, args.requests // args.conns)
    results: dict[str, list[float]] = {name: [] for name in loops}
    for _ in range(args.repeats):
        for name, turns in loops.items():
            results[name].append(measure(turns, n) / (n * args.conns) * 1e9)
    base = statistics.median(results["asyncio"])
    print(f"{args.conns} connections ready per turn, {args.size} B messages, {n:,} turns")
    print(f"{'loop':<8}  {'ns/request median (min-max)':>28}  {'vs asyncio':>10}")
    for name, values in results.items():
        med = statistics.median(values)
        spread = f"{med:,.0f} ({min(values):,.0f}-{max(values):,.0f})"
        print(f"{name:<8}  {spread:>28}  {med / base:>9.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
