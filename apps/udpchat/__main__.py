"""Command line: ``python -m apps.udpchat server|client ...`` (or ``reactor-udpchat``)."""

from __future__ import annotations

import argparse
import ipaddress
import os
import socket
import sys
from collections.abc import Callable
from typing import Any

from apps._common import (
    EXIT_ERROR,
    EXIT_USAGE,
    GracefulShutdown,
    add_common_options,
    add_version_option,
    die,
    int_at_least,
    listen_or_die,
    make_reactor,
    port_number,
    positive_seconds,
    print_listening,
    setup_logging,
)
from apps.udpchat.client import KEEPALIVE_MAX, KEEPALIVE_MIN, ChatClient, LanPeer, LineInput
from apps.udpchat.server import DEFAULT_RECV_BUFFER, RelayServer, size_receive_buffer
from apps.udpchat.wire import valid_nick

PROG = "reactor-udpchat"
DEFAULT_PORT = 8009


def _nick(text: str) -> str:
    if not valid_nick(text):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a valid nick: 1 to 32 of the letters A-Z a-z, digits and _ . -"
        )
    return text


def _seconds_between(low: float, high: float) -> Callable[[str], float]:
    """An argparse type: a number of seconds from ``low`` to ``high``."""

    def parse(text: str) -> float:
        value = positive_seconds(text)
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(
                f"must be from {low:g} to {high:g} seconds, got {text}"
            )
        return value

    return parse


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Chat over UDP: a relay server, and clients that talk through it "
        "(or, with --broadcast, to each other over the LAN with no server). "
        "The datagram format is in docs/apps-udpchat.md.",
    )
    add_version_option(parser)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    server = sub.add_parser(
        "server",
        help="run the relay server",
        description="Relay each message to every other peer. A peer joins by echoing "
        "a cookie the server sends to its address (so forged source addresses get "
        "nowhere); peers silent longer than --peer-timeout are forgotten; malformed, "
        "oversized, non-UTF-8 and unverified datagrams are counted and dropped. "
        "SIGINT/SIGTERM tell the peers the server is closing, then exit 0.",
    )
    add_common_options(server, default_port=DEFAULT_PORT)
    server.add_argument(
        "--peer-timeout",
        type=_seconds_between(3 * KEEPALIVE_MIN, 1e8),
        default=30.0,
        metavar="SECONDS",
        help="forget a peer silent for longer than this; clients are told it and keep "
        f"alive within it, at most once a second, so at least {3 * KEEPALIVE_MIN:g} "
        "(default: 30)",
    )
    server.add_argument(
        "--max-peers",
        type=int_at_least(1),
        default=1000,
        metavar="N",
        help="admit at most this many peers at a time (default: 1000)",
    )
    server.add_argument(
        "--max-peers-per-host",
        type=int_at_least(1),
        default=16,
        metavar="N",
        help="admit at most this many peers from one host (an IPv4 address or an IPv6 "
        "/64), so one host cannot fill the table (default: 16)",
    )
    server.add_argument(
        "--recv-buffer",
        type=int_at_least(4096),
        default=DEFAULT_RECV_BUFFER,
        metavar="BYTES",
        help="ask the kernel for this big a receive buffer, to ride out bursts; the "
        "size granted is printed (Linux caps it at net.core.rmem_max) "
        f"(default: {DEFAULT_RECV_BUFFER})",
    )

    client = sub.add_parser(
        "client",
        help="chat: send the lines read from stdin, print what arrives",
        description="Send each line read from stdin as a message and print the messages "
        "that arrive. Exits at the end of the input, when the server closes, or on "
        "SIGINT/SIGTERM (saying goodbye first). Lost datagrams are reported when the "
        "numbering shows a gap.",
    )
    client.add_argument(
        "host",
        metavar="HOST",
        help="the server's host name or address; with --broadcast, the broadcast "
        "address to send to (e.g. 192.168.1.255, 255.255.255.255 or, on one machine, "
        "127.255.255.255)",
    )
    client.add_argument(
        "port",
        metavar="PORT",
        type=port_number,
        help="the server's port; with --broadcast, the port every peer shares",
    )
    client.add_argument("--nick", required=True, type=_nick, help="the name to chat under")
    client.add_argument(
        "--keepalive",
        type=_seconds_between(KEEPALIVE_MIN, KEEPALIVE_MAX),
        default=10.0,
        metavar="SECONDS",
        help=f"send a keepalive this often when idle, {KEEPALIVE_MIN:g} to "
        f"{KEEPALIVE_MAX:g} (default: 10; shortened to a third of the server's peer "
        f"timeout if that is shorter, but never below {KEEPALIVE_MIN:g})",
    )
    client.add_argument(
        "--broadcast",
        action="store_true",
        help="serverless mode: broadcast to HOST:PORT and listen on PORT, so peers on "
        "one LAN find each other with no server",
    )
    client.add_argument(
        "--peer-timeout",
        type=positive_seconds,
        default=30.0,
        metavar="SECONDS",
        help="with --broadcast: forget a peer silent for longer than this (default: 30)",
    )
    add_common_options(client, default_port=DEFAULT_PORT, server=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the udpchat server or a client; returns the exit code."""
    args = build_parser().parse_args(argv)
    setup_logging(args.log_level)
    try:
        if args.command == "server":
            return run_server(args)
        return run_client(args)
    except BrokenPipeError:
        # stdout went away (e.g. piped into `head`): nothing more to say.
        _silence_stdout()
        return 0


def run_server(args: argparse.Namespace) -> int:
    reactor = make_reactor(PROG, args)
    with reactor:
        server = RelayServer(
            reactor,
            peer_timeout=args.peer_timeout,
            max_peers=args.max_peers,
            max_peers_per_host=args.max_peers_per_host,
        )
        transport = listen_or_die(
            PROG, lambda: reactor.listen_udp(args.port, server, host=args.host)
        )
        GracefulShutdown(reactor, transports=lambda: [transport], goodbye=server.say_goodbye)
        print_listening("udpchat server", transport.get_extra_info("sockname"), reactor)
        granted = size_receive_buffer(transport.get_extra_info("socket"), args.recv_buffer)
        server.recv_buffer = granted
        print(_recv_buffer_line(args.recv_buffer, granted), flush=True)
        reactor.run()
        print(server.summary(), flush=True)
    return 0


def run_client(args: argparse.Namespace) -> int:
    if args.broadcast:
        try:
            address = ipaddress.ip_address(args.host)
        except ValueError:
            address = None
        if address is None or address.version != 4:
            die(PROG, f"--broadcast needs an IPv4 broadcast address, not {args.host!r}", EXIT_USAGE)
        target = (args.host, args.port)
    else:
        try:
            infos = socket.getaddrinfo(args.host, args.port, type=socket.SOCK_DGRAM)
        except socket.gaierror as exc:
            die(PROG, f"cannot resolve {args.host!r}: {exc.strerror}", EXIT_ERROR)
        # Servers listen on 127.0.0.1 unless told otherwise: prefer IPv4 for a
        # name that has both (localhost), as UDP cannot fall back on failure.
        infos.sort(key=lambda info: info[0] != socket.AF_INET)
        target = (str(infos[0][4][0]), args.port)
    reactor = make_reactor(PROG, args)
    with reactor:

        def _say(text: str) -> None:
            try:
                print(text, flush=True)
            except (BrokenPipeError, ValueError):  # stdout went away: nobody is reading
                _silence_stdout()
                reactor.stop()

        client: ChatClient | LanPeer
        transport: Any
        if args.broadcast:
            client = LanPeer(
                reactor,
                args.nick,
                target,
                keepalive=args.keepalive,
                peer_timeout=args.peer_timeout,
                output=_say,
                on_closed=reactor.stop,
            )
            transport = listen_or_die(
                PROG,
                lambda: reactor.listen_udp(
                    args.port, client, host="0.0.0.0", broadcast=True, reuse_port=True
                ),
            )
            _say(
                f"* {args.nick} chatting by broadcast to {target[0]}:{target[1]} "
                f"(backend {reactor.backend}); end with Ctrl-D"
            )
        else:
            client = ChatClient(
                reactor, args.nick, keepalive=args.keepalive, output=_say, on_closed=reactor.stop
            )
            try:
                transport = reactor.connect_udp(target[0], target[1], client)
            except OSError as exc:
                die(PROG, f"cannot reach {args.host}:{args.port}: {exc.strerror}", EXIT_ERROR)
            _say(
                f"* {args.nick} chatting via {target[0]}:{target[1]} "
                f"(backend {reactor.backend}); end with Ctrl-D"
            )
        GracefulShutdown(reactor, transports=lambda: [transport], goodbye=client.leave)
        stdin = sys.stdin.fileno() if sys.stdin is not None else -1
        lines = LineInput(reactor, stdin, client.say, client.leave)
        # The transport starts on the next turn (call_soon, FIFO): read input after it.
        reactor.call_soon(lines.start)
        reactor.run()
        lines.stop()
    if isinstance(client, ChatClient) and client.refused is not None:
        return EXIT_ERROR
    return 0


def _recv_buffer_line(asked: int, granted: int) -> str:
    line = f"udpchat server receive buffer: {granted} bytes as the kernel counts it"
    # Linux reports twice what it grants (half is its bookkeeping), so a full
    # grant reads as 2 * asked; less than asked means a cap.
    if granted < asked:
        line += (
            f", less than the {asked} asked for: the kernel caps it (on Linux, raise "
            f"net.core.rmem_max to allow more)"
        )
    else:
        line += f" (asked for {asked})"
    return line


def _silence_stdout() -> None:
    """Point stdout at /dev/null, so the exit's flush does not fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass


if __name__ == "__main__":
    sys.exit(main())
