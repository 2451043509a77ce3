"""A small key-value store over TCP: the server half of the tutorial (docs/tutorial.md).

One command per line, one reply line per command::

    SET name alice   ->  OK
    GET name         ->  VALUE alice          (or NOT_FOUND)
    DEL name         ->  DELETED              (or NOT_FOUND)
    KEYS             ->  KEYS name other      (sorted; just KEYS when empty)
    PING             ->  PONG                 (the client's heartbeat)
    QUIT             ->  BYE, then the server closes the connection

Anything else gets ``ERROR <reason>`` and the connection stays open. Keys are
one word; a value is the rest of the line and may contain spaces. Lines end
with ``\\n`` (a ``\\r\\n`` from telnet is accepted too).

Run it with ``python docs/examples/kvstore.py --port 7070`` and talk to it
with ``nc 127.0.0.1 7070`` or ``python docs/examples/kvclient.py``.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from collections.abc import Callable
from typing import Any, ClassVar

from protocols import Factory, IdleTimeoutMixin, LineReceiver
from reactor import Address, Clock, Reactor

log = logging.getLogger("kvstore")

#: How long a client may stay silent before the server hangs up, in seconds.
DEFAULT_IDLE_TIMEOUT = 300.0


# --8<-- [start:protocol]
class KVProtocol(IdleTimeoutMixin, LineReceiver):
    """One client connection; the factory holds what all connections share."""

    delimiter = b"\n"
    max_line_length = 4096

    def __init__(self, factory: KVStoreFactory) -> None:
        super().__init__()  # LineReceiver needs its buffers set up
        self.factory = factory
        self.store = factory.store  # the data, shared by every connection
        self.clients = factory.clients  # who is connected
        self.clock = factory.clock  # IdleTimeoutMixin schedules its timer on this clock
        self.idle_timeout = factory.idle_timeout
        self.peer: Address = None
        self.timed_out = False
        # --8<-- [end:protocol]

    # -- connection events -----------------------------------------------------

    # --8<-- [start:events]
    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)  # sets self.transport, arms the idle timer
        self.peer = self.transport.get_extra_info("peername")
        self.clients.add(self)
        log.info("client %s connected", self.peer)

    def connection_lost(self, exc: BaseException | None) -> None:
        super().connection_lost(exc)  # cancels the idle timer
        self.clients.discard(self)
        why = exc or ("idle timeout" if self.timed_out else "clean close")
        log.info("client %s gone: %s", self.peer, why)
        # --8<-- [end:events]

    # -- requests --------------------------------------------------------------

    # --8<-- [start:requests]
    def line_received(self, line: bytes) -> None:
        line = line.strip()  # also drops the \r of a \r\n line end
        if not line:
            return
        command, _, rest = line.partition(b" ")
        handler = self.COMMANDS.get(command.upper())
        if handler is None:
            self.send_line(b"ERROR unknown command " + command[:32])
            return
        handler(self, rest.strip())

    def do_set(self, args: bytes) -> None:
        key, _, value = args.partition(b" ")
        if not key:
            self.send_line(b"ERROR usage: SET key value")
            return
        self.store[key] = value
        self.send_line(b"OK")

    def do_get(self, args: bytes) -> None:
        if not args or b" " in args:
            self.send_line(b"ERROR usage: GET key")
        elif args in self.store:
            self.send_line(b"VALUE " + self.store[args])
        else:
            self.send_line(b"NOT_FOUND")

    def do_del(self, args: bytes) -> None:
        if not args or b" " in args:
            self.send_line(b"ERROR usage: DEL key")
        elif self.store.pop(args, None) is not None:
            self.send_line(b"DELETED")
        else:
            self.send_line(b"NOT_FOUND")

    def do_keys(self, args: bytes) -> None:
        self.send_line(b" ".join([b"KEYS", *sorted(self.store)]))

    def do_ping(self, args: bytes) -> None:
        self.send_line(b"PONG")

    def do_quit(self, args: bytes) -> None:
        self.send_line(b"BYE")
        self.transport.close()  # flushes BYE first, then closes

    COMMANDS: ClassVar[dict[bytes, Callable[[KVProtocol, bytes], None]]] = {
        b"SET": do_set,
        b"GET": do_get,
        b"DEL": do_del,
        b"KEYS": do_keys,
        b"PING": do_ping,
        b"QUIT": do_quit,
    }
    # --8<-- [end:requests]

    # -- policies --------------------------------------------------------------

    # --8<-- [start:policies]
    def line_length_exceeded(self, line: bytes) -> None:
        # The default closes the connection; we answer and skip the long line.
        self.send_line(b"ERROR line too long")

    # --8<-- [start:idle]
    def timeout_connection(self) -> None:
        # Called by IdleTimeoutMixin after idle_timeout seconds of silence.
        self.timed_out = True
        self.send_line(b"ERROR idle timeout")
        super().timeout_connection()  # closes the connection (after flushing the line)
        # --8<-- [end:idle]
        # --8<-- [end:policies]


# --8<-- [start:factory]
class KVStoreFactory(Factory[KVProtocol]):
    """Makes one :class:`KVProtocol` per connection, all sharing one dictionary."""

    def __init__(self, clock: Clock, *, idle_timeout: float | None = DEFAULT_IDLE_TIMEOUT) -> None:
        super().__init__()
        self.clock = clock
        self.idle_timeout = idle_timeout
        self.store: dict[bytes, bytes] = {}
        self.clients: set[KVProtocol] = set()

    def build_protocol(self, addr: Address) -> KVProtocol:
        return KVProtocol(self)
        # --8<-- [end:factory]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="A line-based key-value store over TCP.")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=7070, help="port (0 picks a free one)")
    parser.add_argument(
        "--idle-timeout",
        type=float,
        default=DEFAULT_IDLE_TIMEOUT,
        help="close a connection silent for this many seconds (default: %(default)s)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    logging.getLogger("reactor.trace").setLevel(logging.DEBUG)  # shown with REACTOR_TRACE=1

    # --8<-- [start:main]
    with Reactor() as reactor:
        factory = KVStoreFactory(reactor, idle_timeout=args.idle_timeout)
        try:
            listener = reactor.listen_tcp(args.port, factory, host=args.host)
        except OSError as exc:
            print(f"kvstore: {exc.strerror or exc}", file=sys.stderr)
            return 1
        host, port = listener.address[:2]
        print(f"kvstore listening on {host}:{port} (backend {reactor.backend})", flush=True)
        reactor.add_signal_handler(signal.SIGINT, reactor.stop)
        reactor.add_signal_handler(signal.SIGTERM, reactor.stop)
        reactor.run()
        # --8<-- [end:main]
    return 0


if __name__ == "__main__":
    sys.exit(main())
