"""A TCP echo server: every byte received is sent back.

It is also the benchmark target, so the protocol is as lean as it can be:
``data_received`` is one ``write``. With ``--udp`` the same port number also
answers UDP: each datagram is sent back to its sender. ``--idle-timeout``
wraps each connection in :class:`protocols.IdleTimeout` (only when asked, so
the benchmarked path stays one write); ``--close-timeout`` bounds how long a
closed connection may wait for a client that does not read, and how long a
shutdown waits for the clients to take what they are owed. ``--workers N``
serves from N processes under :func:`reactor.serve_workers` (TCP only).
"""

from __future__ import annotations

import argparse
import errno
import logging
import sys
from typing import Any

from apps._common import (
    EXIT_USAGE,
    GracefulShutdown,
    add_close_timeout_option,
    add_common_options,
    add_workers_option,
    die,
    listen_or_die,
    make_reactor,
    positive_seconds,
    print_listening,
    run_workers,
    setup_logging,
)
from apps._tls import add_server_tls_options, server_tls_context
from protocols import IdleTimeout
from reactor import DatagramTransport, Listener, Reactor, WorkerContext

__all__ = ["Echo", "EchoDatagram", "main"]

PROG = "reactor-echo"
DEFAULT_PORT = 8007
#: Seconds the reactor may linger after a connection's last byte is flushed
#: (reading what the client still sends until its FIN): added to the shutdown's wait.
LINGER_ALLOWANCE = 2.0

log = logging.getLogger("apps.echo")


class Echo:
    """Echoes each chunk back to its sender; honours half-close."""

    __slots__ = ("transport",)

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)

    def eof_received(self) -> bool | None:
        # The peer finished sending: finish our side once the echo is flushed.
        if not self.transport.can_write_eof():
            return None  # TLS has no half-close: the echo is sent, then it closes
        self.transport.write_eof()
        return True

    def connection_lost(self, exc: BaseException | None) -> None:
        pass

    def pause_writing(self) -> None:
        # The peer is not reading what we echo: stop reading until it does.
        self.transport.pause_reading()

    def resume_writing(self) -> None:
        self.transport.resume_reading()


class _TrackedEcho(Echo):
    """The server's Echo: also keeps itself in a set of live transports for shutdown.

    ``data_received`` is inherited unchanged (one write).
    """

    __slots__ = ("_live",)

    def __init__(self, live: set[Any]) -> None:
        self._live = live

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self._live.add(transport)

    def connection_lost(self, exc: BaseException | None) -> None:
        self._live.discard(self.transport)


class EchoDatagram:
    """Sends each UDP datagram back to where it came from."""

    transport: Any = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.transport.sendto(data, addr)

    def error_received(self, exc: OSError) -> None:
        log.debug("UDP echo: %s", exc)

    def connection_lost(self, exc: BaseException | None) -> None:
        pass

    def pause_writing(self) -> None:
        pass

    def resume_writing(self) -> None:
        pass


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="A TCP echo server: every byte a client sends is sent back to it.",
        epilog="Stop it with Ctrl-C or SIGTERM: it stops accepting, closes every "
        "connection, waits (up to --close-timeout seconds, and a little more for the "
        "closing handshake) until each client has taken what it is owed, aborts the "
        "connections still left, and exits 0. A second signal stops at once.",
    )
    add_common_options(parser, default_port=DEFAULT_PORT)
    parser.add_argument(
        "--idle-timeout",
        type=positive_seconds,
        default=None,
        metavar="SECONDS",
        help="close a connection with no traffic either way for this long (default: never)",
    )
    add_close_timeout_option(parser)
    parser.add_argument(
        "--udp",
        action="store_true",
        help="also echo UDP datagrams on the same port number (TCP keeps running "
        "alongside; with --port 0 both get the same free port; not with --workers)",
    )
    add_workers_option(parser)
    add_server_tls_options(parser)
    return parser


def _factory(args: argparse.Namespace, live: set[Any]) -> Any:
    """What makes each connection's protocol: a tracked Echo, idle-timed if asked."""
    idle_timeout: float | None = args.idle_timeout

    def factory() -> _TrackedEcho | IdleTimeout:
        if idle_timeout is None:
            return _TrackedEcho(live)
        # The live set then holds the wrapper's transport; closing it closes the connection.
        return IdleTimeout(_TrackedEcho(live), None, idle_timeout)

    return factory


def _listen(
    reactor: Reactor, args: argparse.Namespace, live: set[Any]
) -> tuple[Listener, DatagramTransport | None]:
    """Listen on TCP (and UDP with --udp) on one port number; OSError if it is taken."""
    factory = _factory(args, live)
    # With --port 0 the TCP port is chosen first; if that number happens to be
    # taken for UDP, try another.
    attempts = 20 if args.udp and args.port == 0 else 1
    for attempt in range(attempts):
        listener = reactor.listen_tcp(args.port, factory, host=args.host, ssl=args.ssl)
        if not args.udp:
            return listener, None
        try:
            udp = reactor.listen_udp(listener.port, EchoDatagram(), host=args.host)
        except OSError as exc:
            listener.close()
            if exc.errno == errno.EADDRINUSE and attempt + 1 < attempts:
                continue
            raise
        return listener, udp
    raise AssertionError("unreachable")  # pragma: no cover


def _serve_worker(worker: WorkerContext, args: argparse.Namespace) -> None:
    """One worker of ``--workers N``: serve the worker's socket until told to drain."""
    reactor = make_reactor(PROG, args)
    with reactor:
        live: set[Any] = set()
        listener = worker.listen(reactor, _factory(args, live), ssl=args.ssl)
        GracefulShutdown(
            reactor,
            listeners=[listener],
            transports=lambda: list(live),
            deadline=args.close_timeout + LINGER_ALLOWANCE,
        )
        reactor.run()


def main(argv: list[str] | None = None) -> int:
    """Run the echo server until SIGINT/SIGTERM; returns the exit code."""
    args = build_parser().parse_args(argv)
    setup_logging(args.log_level)
    args.ssl = server_tls_context(PROG, args)
    if args.ssl is not None and args.udp:
        die(
            PROG,
            "--udp echoes in the clear (there is no DTLS): drop --udp or the TLS options",
            EXIT_USAGE,
        )
    if args.workers != 1:
        if args.udp:
            die(PROG, "--udp is served by one process: drop --workers or --udp", EXIT_USAGE)
        return run_workers(
            PROG,
            "echo server" if args.ssl is None else "echo server (TLS)",
            args,
            lambda worker: _serve_worker(worker, args),
            # The workers' own deadline, and a second for them to exit.
            drain_timeout=args.close_timeout + LINGER_ALLOWANCE + 1.0,
        )
    reactor = make_reactor(PROG, args)
    with reactor:
        live: set[Any] = set()
        listener, udp = listen_or_die(PROG, lambda: _listen(reactor, args, live))
        # A client that does not read is aborted by the reactor after
        # --close-timeout; one that does has that long, and the lingering close.
        GracefulShutdown(
            reactor,
            listeners=[listener],
            transports=lambda: [*live, udp] if udp is not None else list(live),
            deadline=args.close_timeout + LINGER_ALLOWANCE,
        )
        what = "echo server (TCP and UDP)" if udp is not None else "echo server"
        if args.ssl is not None:
            what = "echo server (TLS)"
        print_listening(what, listener.address, reactor)
        reactor.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
