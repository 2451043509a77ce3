"""Command line: ``python -m apps.files serve|get|list ...`` (or ``reactor-files``)."""

from __future__ import annotations

import argparse
import os
import re
import signal
import sys
from typing import cast

from apps._common import (
    EXIT_ERROR,
    EXIT_USAGE,
    GracefulShutdown,
    add_close_timeout_option,
    add_common_options,
    add_version_option,
    add_workers_option,
    die,
    int_at_least,
    listen_or_die,
    make_reactor,
    port_number,
    positive_seconds,
    print_listening,
    run_workers,
    setup_logging,
)
from apps._tls import (
    add_client_tls_options,
    add_server_tls_options,
    client_tls_context,
    server_tls_context,
)
from apps.files.client import GetClient, ListClient, Outcome, stderr_progress
from apps.files.server import FileServerFactory, FileService
from protocols import ConnectionLimiter
from reactor import FactoryArg, WorkerContext

PROG = "reactor-files"
DEFAULT_PORT = 8011

_RATE = re.compile(r"([0-9]+(?:\.[0-9]+)?)\s*([kKmMgG]?)(?:i?B)?(?:/s)?\Z")


def _rate(text: str) -> float:
    """``500K``, ``8M``, ``1.5G`` (binary multiples) bytes per second."""
    match = _RATE.match(text.strip())
    if match is None or float(match.group(1)) <= 0:
        raise argparse.ArgumentTypeError(
            f"not a rate: {text!r} (bytes per second, e.g. 500K, 8M or 1G)"
        )
    scale = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}[match.group(2).lower()]
    return float(match.group(1)) * scale


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Serve the files under a directory over TCP, and download them with "
        "end-to-end SHA-256 verification and resumable transfers. The protocol is in "
        "docs/apps-files.md.",
    )
    add_version_option(parser)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = sub.add_parser(
        "serve",
        help="serve the files under a directory",
        description="Serve the regular files under --root. Names with '..', absolute "
        "paths, symlinks that lead outside the root, directories and devices are refused "
        "with a message to the client. Files are streamed a chunk at a time, so memory "
        "use does not grow with file size; SHA-256s are computed in a worker thread and "
        "cached. SIGINT/SIGTERM stop accepting, tell waiting clients, and exit 0.",
    )
    serve.add_argument(
        "--root",
        default=".",
        metavar="DIR",
        help="the directory whose files are served (default: the current directory)",
    )
    add_common_options(serve, default_port=DEFAULT_PORT)
    serve.add_argument(
        "--max-connections",
        type=int_at_least(1),
        default=256,
        metavar="N",
        help="serve at most N connections at once; more are told to retry (default: 256)",
    )
    serve.add_argument(
        "--idle-timeout",
        type=positive_seconds,
        default=30.0,
        metavar="SECONDS",
        help="close a connection with no request or no progress for this long; a client "
        "that stops reading a download makes no progress (default: 30)",
    )
    serve.add_argument(
        "--request-timeout",
        type=positive_seconds,
        default=10.0,
        metavar="SECONDS",
        help="the request line must be complete within this long of its first byte, so "
        "clients that send it a byte at a time cannot hold connections (default: 10)",
    )
    add_close_timeout_option(serve)
    add_workers_option(serve)
    add_server_tls_options(serve)

    get = sub.add_parser(
        "get",
        help="download a file",
        description="Download NAME to OUT.part, verify its SHA-256, then rename it to OUT. "
        "A progress bar is shown on stderr when it is a terminal; a one-line summary is "
        "printed at the end. Exits 0 once the file is in place, 1 on any failure (an "
        "interrupted download keeps OUT.part for --resume).",
    )
    get.add_argument("host", metavar="HOST", help="the server's host name or address")
    get.add_argument("port", metavar="PORT", type=port_number, help="the server's port")
    get.add_argument("name", metavar="NAME", help="the file's name under the server's root")
    get.add_argument(
        "-o",
        "--output",
        metavar="OUT",
        help="where to save it (default: NAME's last component, in the current "
        "directory; an existing directory means 'in there')",
    )
    get.add_argument(
        "--resume",
        action="store_true",
        help="continue from OUT.part, left by an interrupted download",
    )
    get.add_argument(
        "--limit-rate",
        type=_rate,
        metavar="RATE",
        help="read at most RATE bytes per second (e.g. 500K, 8M)",
    )
    _add_client_options(get)

    list_ = sub.add_parser(
        "list",
        help="list the files a server serves",
        description="Print the size and name of each file the server serves.",
    )
    list_.add_argument("host", metavar="HOST", help="the server's host name or address")
    list_.add_argument("port", metavar="PORT", type=port_number, help="the server's port")
    _add_client_options(list_)
    return parser


def _add_client_options(parser: argparse.ArgumentParser) -> None:
    """The options ``get`` and ``list`` share: --timeout, and the common ones."""
    parser.add_argument(
        "--timeout",
        type=positive_seconds,
        default=30.0,
        metavar="SECONDS",
        help="give up after this long without data (default: 30)",
    )
    add_common_options(parser, default_port=DEFAULT_PORT, server=False)
    add_client_tls_options(parser)


def main(argv: list[str] | None = None) -> int:
    """Run the file server, or one download or listing; returns the exit code."""
    args = build_parser().parse_args(argv)
    setup_logging(args.log_level)
    try:
        if args.command == "serve":
            return serve(args)
        return run_client(args)
    except BrokenPipeError:
        return 0


#: How long a worker of ``--workers N`` may take to stop: GracefulShutdown's
#: deadline (2 s) and a second to exit.
WORKER_DRAIN_TIMEOUT = 3.0


def serve(args: argparse.Namespace) -> int:
    if not os.path.isdir(args.root):
        die(PROG, f"--root {args.root!r} is not a directory", EXIT_USAGE)
    args.ssl = server_tls_context(PROG, args)
    if args.workers != 1:
        return run_workers(
            PROG,
            f"{'TLS ' if args.ssl else ''}file server for {os.path.realpath(args.root)}",
            args,
            lambda worker: _serve(args, worker),
            drain_timeout=WORKER_DRAIN_TIMEOUT,
        )
    return _serve(args, None)


def _serve(args: argparse.Namespace, worker: WorkerContext | None) -> int:
    """Serve until SIGINT/SIGTERM: on ``--port``, or on ``worker``'s socket (``--workers``)."""
    reactor = make_reactor(PROG, args)
    with reactor:
        service = FileService(
            reactor,
            args.root,
            idle_timeout=args.idle_timeout,
            request_timeout=args.request_timeout,
        )
        factory = ConnectionLimiter(
            FileServerFactory(service),
            max_total=args.max_connections,
            message=b"ERR too many connections; try again later\n",
        )
        # cast: ConnectionLimiter.build_protocol may return None (a refusal, which
        # the listener supports), but ProtocolFactoryInterface does not say so.
        tcp_factory = cast(FactoryArg, factory)
        if worker is not None:
            listener = worker.listen(reactor, tcp_factory, ssl=args.ssl)
        else:
            listener = listen_or_die(
                PROG,
                lambda: reactor.listen_tcp(args.port, tcp_factory, host=args.host, ssl=args.ssl),
            )
        GracefulShutdown(
            reactor,
            listeners=[listener],
            transports=service.transports,
            goodbye=service.goodbye,
        )
        if worker is None:
            tls = "TLS " if args.ssl is not None else ""
            print_listening(f"{tls}file server for {service.root}", listener.address, reactor)
        try:
            reactor.run()
        finally:
            service.close()
    return 0


def _output_path(name: str, output: str | None) -> str:
    base = name.rstrip("/").rsplit("/", 1)[-1]
    if output is None or os.path.isdir(output):
        if base in ("", ".", ".."):
            die(PROG, f"cannot make a file name out of {name!r}: give one with -o", EXIT_USAGE)
        return os.path.join(output or ".", base)
    return output


def run_client(args: argparse.Namespace) -> int:
    outcome: list[Outcome] = []
    context = client_tls_context(PROG, args)
    reactor = make_reactor(PROG, args)
    with reactor:

        def done(result: Outcome) -> None:
            if not outcome:
                outcome.append(result)
            reactor.stop()

        client: GetClient | ListClient
        if args.command == "get":
            out = _output_path(args.name, args.output)
            try:
                client = GetClient(
                    reactor,
                    args.name,
                    out,
                    resume=args.resume,
                    on_done=done,
                    progress=stderr_progress(reactor),
                    limit_rate=args.limit_rate,
                    timeout=args.timeout,
                )
            except ValueError as exc:
                die(PROG, str(exc), EXIT_USAGE)
            except OSError as exc:
                die(PROG, f"cannot read {out}.part: {exc.strerror}", EXIT_ERROR)
            for sig in (signal.SIGINT, signal.SIGTERM):
                reactor.add_signal_handler(sig, client.interrupt)
        else:
            client = ListClient(reactor, on_done=done, output=_print, timeout=args.timeout)
            for sig in (signal.SIGINT, signal.SIGTERM):
                reactor.add_signal_handler(sig, reactor.stop)

        def failed(reason: BaseException) -> None:
            done(Outcome(1, f"cannot connect to {args.host}:{args.port}: {reason}"))

        reactor.connect_tcp(
            args.host,
            args.port,
            lambda: client,
            timeout=args.timeout,
            on_failure=failed,
            ssl=context,
            server_hostname=args.server_name if context is not None else None,
        )
        reactor.run()
    if not outcome:
        return 1  # stopped by a signal before the end
    result = outcome[0]
    if result.code:
        print(f"{PROG}: {result.message}", file=sys.stderr, flush=True)
    else:
        print(result.message, flush=True)
    return result.code


def _print(text: str) -> None:
    print(text, flush=True)


if __name__ == "__main__":
    sys.exit(main())
