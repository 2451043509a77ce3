"""A bare epoll echo loop: ``recv``/``send`` on non-blocking sockets, no framework.

    python benchmarks/servers/bare_echo.py --port 0

Prints ``echo server listening on HOST:PORT (bare epoll)`` once it accepts
connections, and exits on SIGINT or SIGTERM. Linux only (``select.epoll``).

The reference for what an event loop adds: per ready connection it runs one
``recv`` and one ``send`` and nothing else (no transports, no protocol
objects, no callbacks, no timers). Whatever a framework costs per request
above this loop is the framework's own overhead. It is still correct: a
partial ``send`` keeps the rest and waits for ``EPOLLOUT`` (reading stops
meanwhile, so a client that does not read cannot grow the buffer, and a FIN
is only seen once everything before it is sent), and the peer's FIN is
answered by a ``shutdown(SHUT_WR)`` (a half-close, like the other servers).
"""

from __future__ import annotations

import argparse
import select
import signal
import socket
import sys
from types import FrameType

#: Bytes per recv(): the same ceiling as asyncio's and the reactor's reads.
READ_SIZE = 256 * 1024

_IN = select.EPOLLIN
_OUT = select.EPOLLOUT


def serve(listener: socket.socket) -> None:
    """Run the loop until a signal raises SystemExit."""
    ep = select.epoll()
    lfd = listener.fileno()
    ep.register(lfd, _IN)
    conns: dict[int, socket.socket] = {}
    pending: dict[int, bytes] = {}  # unsent output of a connection waiting for EPOLLOUT

    def drop(fd: int) -> None:
        ep.unregister(fd)
        conns.pop(fd).close()
        pending.pop(fd, None)

    try:
        while True:
            for fd, mask in ep.poll():
                if fd == lfd:
                    while True:
                        try:
                            conn, _ = listener.accept()
                        except BlockingIOError:
                            break
                        conn.setblocking(False)
                        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                        conns[conn.fileno()] = conn
                        ep.register(conn.fileno(), _IN)
                    continue
                sock = conns.get(fd)
                if sock is None:
                    continue
                try:
                    if mask & _OUT:  # flush what a partial send left
                        rest = pending[fd]
                        sent = sock.send(rest)
                        if sent < len(rest):
                            pending[fd] = rest[sent:]
                            continue
                        del pending[fd]
                        ep.modify(fd, _IN)
                        continue
                    data = sock.recv(READ_SIZE)
                    if not data:  # FIN; nothing is pending (reads stop while it is)
                        sock.shutdown(socket.SHUT_WR)  # our half-close, then both are done
                        drop(fd)
                        continue
                    sent = sock.send(data)
                    if sent < len(data):
                        pending[fd] = data[sent:]
                        ep.modify(fd, _OUT)
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError:  # reset by the peer
                    drop(fd)
    finally:
        for sock in conns.values():
            sock.close()
        ep.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8007, help="0 picks a free port")
    args = parser.parse_args(argv)

    def stop(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(0)

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, stop)
    with socket.create_server((args.host, args.port), backlog=1024) as listener:
        listener.setblocking(False)
        host, port = listener.getsockname()[:2]
        print(f"echo server listening on {host}:{port} (bare epoll)", flush=True)
        serve(listener)
    return 0


if __name__ == "__main__":
    sys.exit(main())
