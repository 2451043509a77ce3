"""Command line: ``reactor-chat server [options]`` or ``reactor-chat client HOST PORT --nick NAME``.

Exit codes: 0 after a clean stop (SIGINT/SIGTERM for the server; /quit, end
of input or the server closing for the client), 1 for a failure at run time
(port in use, cannot connect), 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import sys

from apps._common import add_common_options, add_version_option, port_number, setup_logging
from apps._tls import add_client_tls_options, add_server_tls_options
from apps.chat import wire
from apps.chat.client import run_client
from apps.chat.server import add_server_options, run_server

__all__ = ["DEFAULT_PORT", "build_parser", "main"]

PROG = "reactor-chat"
DEFAULT_PORT = 8070


def _nick(text: str) -> str:
    problem = wire.nick_problem(text)
    if problem is not None:
        raise argparse.ArgumentTypeError(f"invalid nick {text!r}: {problem}")
    return text


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="A line-based chat room over TCP (protocol: docs/chat-protocol.md).",
        epilog="Run '%(prog)s server --help' or '%(prog)s client --help' for their options.",
    )
    add_version_option(parser)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    server = commands.add_parser(
        "server",
        help="run the chat server",
        description="Run the chat server. It prints one line saying where it listens; "
        "SIGINT or SIGTERM tells the clients the server is going away and stops it.",
    )
    add_common_options(server, default_port=DEFAULT_PORT)
    add_server_options(server)
    add_server_tls_options(server)
    client = commands.add_parser(
        "client",
        help="connect to a chat server from this terminal",
        description="Connect to a chat server. Type messages and /commands (/help lists "
        "them); the client answers the server's PINGs. It leaves on /quit, end of input "
        "(Ctrl-D, or the end of piped input) or Ctrl-C. Standard input may be a pipe.",
    )
    client.add_argument("host", help="the server's host name or IP address")
    client.add_argument("port", type=port_number, help="the server's port")
    client.add_argument(
        "--nick",
        required=True,
        type=_nick,
        help=f"the nick to ask for on connecting: 1 to {wire.NICK_MAX} {wire.NICK_CHARS} "
        "(change it later with /nick)",
    )
    add_common_options(client, default_port=DEFAULT_PORT, server=False)
    add_client_tls_options(client)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.log_level)
    if args.command == "server":
        return run_server(PROG, args)
    return run_client(PROG, args)


if __name__ == "__main__":
    sys.exit(main())
