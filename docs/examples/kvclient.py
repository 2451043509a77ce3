"""A client for the key-value store: the client half of the tutorial (docs/tutorial.md).

:class:`KVClient` sends commands and calls back with each :class:`Reply`, in
order (the server answers one line per command, in the order it got them).
It keeps the connection alive with a heartbeat: a ``PING`` every
``heartbeat_interval`` seconds; if the server answers nothing for
``heartbeat_misses`` intervals in a row, the client gives it up for dead.

From the command line, it runs the commands given and prints the replies::

    python docs/examples/kvclient.py 127.0.0.1 7070 "SET name alice" "GET name" KEYS
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from protocols import HeartbeatMixin, LineReceiver
from reactor import Clock, Reactor

log = logging.getLogger("kvclient")


# --8<-- [start:reply]
@dataclass(frozen=True)
class Reply:
    """One reply line, split into its status word and the rest."""

    status: str  # OK, VALUE, NOT_FOUND, DELETED, KEYS, PONG, BYE or ERROR
    data: bytes = b""

    @classmethod
    def parse(cls, line: bytes) -> Reply:
        status, _, data = line.strip().partition(b" ")
        return cls(status.decode("ascii", "replace"), data)

    def __str__(self) -> str:
        text = self.data.decode("utf-8", "replace")
        return f"{self.status} {text}" if text else self.status
        # --8<-- [end:reply]


ReplyCallback = Callable[[Reply], object]


# --8<-- [start:client]
class KVClient(HeartbeatMixin, LineReceiver):
    """The client protocol: requests go out, replies come back to their callbacks."""

    delimiter = b"\n"
    heartbeat_interval = 10.0
    heartbeat_misses = 3

    def __init__(
        self,
        clock: Clock,
        *,
        on_lost: Callable[[BaseException | None], object] | None = None,
    ) -> None:
        super().__init__()
        self.clock = clock  # HeartbeatMixin's PINGs are timers on this clock
        self.on_lost = on_lost
        # One entry per request in flight, oldest first; None marks a PING.
        self._waiting: deque[ReplyCallback | None] = deque()
        self.connected = False

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)  # sets self.transport, starts the heartbeat
        self.connected = True
        # --8<-- [end:client]

    # -- requests --------------------------------------------------------------

    # --8<-- [start:requests]
    def request(self, command: bytes, callback: ReplyCallback) -> None:
        """Send one command line; ``callback(reply)`` runs when its reply arrives."""
        if not self.connected:
            raise RuntimeError("not connected")
        self._waiting.append(callback)
        self.send_line(command)

    def set(self, key: bytes, value: bytes, callback: ReplyCallback) -> None:
        self.request(b"SET " + key + b" " + value, callback)

    def get(self, key: bytes, callback: ReplyCallback) -> None:
        self.request(b"GET " + key, callback)

    def delete(self, key: bytes, callback: ReplyCallback) -> None:
        self.request(b"DEL " + key, callback)

    def keys(self, callback: ReplyCallback) -> None:
        self.request(b"KEYS", callback)
        # --8<-- [end:requests]

    # -- replies ---------------------------------------------------------------

    # --8<-- [start:replies]
    def line_received(self, line: bytes) -> None:
        self.pong_received()  # any line from the server proves it is alive
        if not self._waiting:
            log.warning("unexpected line from the server: %r", line)
            return
        callback = self._waiting.popleft()
        if callback is not None:  # None: the answer to a heartbeat PING
            callback(Reply.parse(line))
            # --8<-- [end:replies]

    # -- heartbeat -------------------------------------------------------------

    # --8<-- [start:heartbeat]
    def send_ping(self) -> None:
        # Called by HeartbeatMixin every heartbeat_interval seconds.
        self._waiting.append(None)
        self.send_line(b"PING")
        # --8<-- [end:heartbeat]

    # -- the end ---------------------------------------------------------------

    # --8<-- [start:lost]
    def connection_lost(self, exc: BaseException | None) -> None:
        # exc is None after a clean close, HeartbeatTimeoutError if the server
        # stopped answering, ConnectionResetError if it reset the connection.
        super().connection_lost(exc)  # stops the heartbeat
        self.connected = False
        waiting, self._waiting = self._waiting, deque()
        for callback in waiting:
            if callback is not None:  # every request gets exactly one reply
                callback(Reply("ERROR", b"connection lost"))
        if self.on_lost is not None:
            self.on_lost(exc)
            # --8<-- [end:lost]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run key-value store commands, print replies.")
    parser.add_argument("host")
    parser.add_argument("port", type=int)
    parser.add_argument("commands", nargs="+", help='e.g. "SET name alice" "GET name" KEYS')
    parser.add_argument("--timeout", type=float, default=10.0, help="give up after this long")
    args = parser.parse_args(argv)
    commands: list[str] = args.commands
    status = 0
    replies = 0

    # --8<-- [start:main]
    with Reactor() as reactor:

        def lost(exc: BaseException | None) -> None:
            nonlocal status
            if replies < len(commands):
                print(
                    f"kvclient: connection lost: {exc or 'closed by the server'}", file=sys.stderr
                )
                status = 1
            reactor.stop()

        client = KVClient(reactor, on_lost=lost)

        def show(reply: Reply) -> None:
            nonlocal replies, status
            print(reply, flush=True)
            if reply.status == "ERROR":
                status = 1
            replies += 1
            if replies == len(commands):
                client.transport.close()  # a short connection: done, hang up

        def connected(protocol: object) -> None:
            for command in commands:
                client.request(command.encode(), show)

        def failed(reason: BaseException) -> None:
            nonlocal status
            print(f"kvclient: {reason}", file=sys.stderr)
            status = 1
            reactor.stop()

        def too_slow() -> None:
            nonlocal status
            print(f"kvclient: no answer after {args.timeout} s", file=sys.stderr)
            status = 1
            reactor.stop()

        reactor.connect_tcp(
            args.host,
            args.port,
            lambda: client,
            timeout=args.timeout,
            on_connect=connected,
            on_failure=failed,
        )
        reactor.call_later(args.timeout, too_slow)
        reactor.run()
        # --8<-- [end:main]
    return status


if __name__ == "__main__":
    sys.exit(main())
