"""A thread per connection on blocking sockets: the reference with no event loop at all.

    python benchmarks/servers/threads_echo.py --port 0

Prints ``echo server listening on HOST:PORT (threads)`` once it accepts
connections, and exits on SIGINT or SIGTERM.

Each connection's thread runs ``recv`` then ``sendall`` and nothing else, the
least Python any echo server can run per byte. That makes it two references
in one. For bulk data (the ``stream`` scenario) it is the floor: an event
loop cannot beat it by much, and a loop that matches it has no overhead left
to remove. For many connections (ping-pong, idle) it is the design a reactor
replaces: every message is a GIL hand-off between threads, and every idle
connection holds a thread.
"""

from __future__ import annotations

import argparse
import signal
import socket
import sys
import threading
from types import FrameType

#: Bytes per recv(), the same ceiling as the event loops' bulk reads.
READ_SIZE = 256 * 1024
#: Per-thread stack: the echo loop needs little, and 5,000 idle connections
#: must not reserve 5,000 default (8 MiB) stacks.
STACK_SIZE = 256 * 1024


def echo(conn: socket.socket) -> None:
    """Echo until the peer's FIN, then shut our side too (a half-close, like the others)."""
    with conn:
        try:
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            while data := conn.recv(READ_SIZE):
                conn.sendall(data)
            conn.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # reset by the client at the end of a run: nothing to report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8007, help="0 picks a free port")
    args = parser.parse_args(argv)

    def stop(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(0)

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, stop)
    threading.stack_size(STACK_SIZE)
    with socket.create_server((args.host, args.port), backlog=1024) as server:
        host, port = server.getsockname()[:2]
        print(f"echo server listening on {host}:{port} (threads)", flush=True)
        while True:  # the main thread only accepts; SIGTERM interrupts accept()
            conn, _ = server.accept()
            threading.Thread(target=echo, args=(conn,), daemon=True).start()


if __name__ == "__main__":
    sys.exit(main())
