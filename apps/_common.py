"""What every app shares: the common options, logging, start-up and shutdown.

Every server app takes ``--host`` (127.0.0.1 unless asked), ``--port`` (0 picks
a free one), ``--backend`` and ``--log-level``; prints one line saying where it
listens and with which backend; and stops gracefully on SIGINT and SIGTERM:
stop accepting, let the app say goodbye, flush pending writes up to a short
deadline, exit 0. Every app also takes ``--version``, which says which build
of the reactor runs (compiled by mypyc or pure Python).
"""

from __future__ import annotations

import argparse
import logging
import platform
import signal
import sys
from collections.abc import Callable, Iterable
from typing import Any, NoReturn, TypeVar

from reactor import (
    COMPILED,
    Reactor,
    Supervisor,
    WorkerContext,
    WorkerEvent,
    __version__,
    available_backends,
)

__all__ = [
    "EXIT_ERROR",
    "EXIT_USAGE",
    "GracefulShutdown",
    "add_close_timeout_option",
    "add_common_options",
    "add_version_option",
    "add_workers_option",
    "die",
    "int_at_least",
    "listen_or_die",
    "make_reactor",
    "port_number",
    "positive_seconds",
    "print_listening",
    "run_workers",
    "setup_logging",
    "version_text",
]

_T = TypeVar("_T")

#: Exit codes: 1 for a failure at run time (port in use), 2 for bad arguments.
EXIT_ERROR = 1
EXIT_USAGE = 2


def version_text(prog: str, backend: str | None = None) -> str:
    """One line: the version, which build runs (compiled or pure), the Python, the backend.

    ``backend`` is the one asked for (None: ``$REACTOR_BACKEND`` or the best
    available, as the apps choose); the name shown is the one a reactor made
    now gets, so it says what the app would run on.
    """
    build = "compiled (mypyc)" if COMPILED else "pure-Python"
    try:
        with Reactor(backend=backend) as probe:
            chosen = probe.backend
    except ValueError as exc:  # a bad $REACTOR_BACKEND: say so instead of failing
        chosen = f"none ({exc})"
    python = f"{platform.python_implementation()} {platform.python_version()}"
    return f"{prog} {__version__}: {build} build, {python}, backend {chosen}"


class _VersionAction(argparse.Action):
    """``--version``: print :func:`version_text` and exit 0, as argparse's own does.

    Unlike argparse's ``version`` action the text is made when asked for, so
    building a parser opens no poller, and a ``--backend`` given before
    ``--version`` is the backend shown.
    """

    def __init__(self, option_strings: list[str], dest: str, **kwargs: Any) -> None:
        kwargs.setdefault(
            "help",
            "print the version, the build (compiled or pure Python), "
            "the Python and the backend, then exit",
        )
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: object,
        option_string: str | None = None,
    ) -> None:
        backend = getattr(namespace, "backend", None)
        print(version_text(parser.prog, backend if isinstance(backend, str) else None))
        parser.exit()


def add_version_option(parser: argparse.ArgumentParser) -> None:
    """Add ``--version`` (:func:`version_text`) to ``parser``.

    :func:`add_common_options` adds it too; apps with subcommands also call
    this on their top-level parser, so ``PROG --version`` works without one.
    """
    parser.add_argument("--version", action=_VersionAction)


def add_common_options(
    parser: argparse.ArgumentParser, *, default_port: int, server: bool = True
) -> None:
    """Add --host, --port, --backend, --trace, --log-level and --version to ``parser``."""
    if server:
        parser.add_argument(
            "--host",
            default="127.0.0.1",
            help="address to listen on (default: 127.0.0.1, loopback only; 0.0.0.0 or :: for all)",
        )
        parser.add_argument(
            "--port",
            type=_listen_port,
            default=default_port,
            help=f"port to listen on; 0 picks a free one and prints it (default: {default_port})",
        )
    parser.add_argument(
        "--backend",
        choices=available_backends(),
        default=None,
        help="readiness backend (default: $REACTOR_BACKEND or the best available)",
    )
    parser.add_argument(
        "--trace",
        action="store_true",
        help="print one line per state change of the loop and of each connection, to watch "
        "the loop turn (same as REACTOR_TRACE=1)",
    )
    parser.add_argument(
        "--log-level",
        default="WARNING",
        type=str.upper,
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="how much to log to stderr (default: WARNING)",
    )
    add_version_option(parser)


def add_close_timeout_option(parser: argparse.ArgumentParser, *, default: float = 10.0) -> None:
    """Add ``--close-timeout SECONDS``, which :func:`make_reactor` passes to the Reactor."""
    parser.add_argument(
        "--close-timeout",
        type=positive_seconds,
        default=default,
        metavar="SECONDS",
        help="once a connection is closed, give a client that does not read this long to "
        "take what it is owed, then abort the connection; also how long a shutdown waits "
        f"for clients (default: {default:g})",
    )


def _port_at_least(text: str, lowest: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not lowest <= value <= 65535:
        raise argparse.ArgumentTypeError(f"port must be {lowest} to 65535, got {value}")
    return value


def _listen_port(text: str) -> int:
    """``--port``: 0 to 65535, 0 picking a free one."""
    return _port_at_least(text, 0)


def port_number(text: str) -> int:
    """An argparse type: a port to connect or send to, 1 to 65535."""
    return _port_at_least(text, 1)


def positive_seconds(text: str) -> float:
    """An argparse type: a duration in seconds, more than 0 (and less than 1e9)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0 < value < 1e9:
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text}")
    return value


def int_at_least(minimum: int) -> Callable[[str], int]:
    """An argparse type: a whole number no smaller than ``minimum``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value

    return parse


def setup_logging(level: str) -> None:
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def die(prog: str, message: str, code: int = EXIT_ERROR) -> NoReturn:
    """Print ``prog: message`` to stderr and exit with ``code`` (no traceback)."""
    print(f"{prog}: {message}", file=sys.stderr, flush=True)
    sys.exit(code)


def make_reactor(prog: str, args: argparse.Namespace) -> Reactor:
    """The Reactor the options ask for: --backend, --trace, and --close-timeout if any."""
    trace = True if getattr(args, "trace", False) else None
    close_timeout: float | None = getattr(args, "close_timeout", None)
    try:
        if close_timeout is None:
            return Reactor(backend=args.backend, trace=trace)
        return Reactor(backend=args.backend, trace=trace, close_timeout=close_timeout)
    except ValueError as exc:
        die(prog, str(exc), EXIT_USAGE)


def listen_or_die(prog: str, listen: Callable[[], _T]) -> _T:
    """Return what ``listen()`` opens (a listener or a bound transport).

    If it fails with OSError (port in use, address not available, ...), print
    the reason as ``prog: reason`` and exit 1, with no traceback.
    """
    try:
        return listen()
    except OSError as exc:
        die(prog, exc.strerror or str(exc), EXIT_ERROR)


def print_listening(what: str, address: Any, reactor: Reactor | str) -> None:
    """The one start-up line: where the server listens and which backend (or its name) it uses."""
    if isinstance(address, tuple):
        host, port = address[0], address[1]
        where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    else:
        where = str(address)
    backend = reactor if isinstance(reactor, str) else reactor.backend
    # One write, newline included: with --workers several processes share this
    # stdout, and print() on an unbuffered one writes text and newline apart.
    sys.stdout.write(f"{what} listening on {where} (backend {backend})\n")
    sys.stdout.flush()


def add_workers_option(parser: argparse.ArgumentParser) -> None:
    """Add ``--workers N`` (default 1; 0: one per CPU), which :func:`run_workers` serves."""
    parser.add_argument(
        "--workers",
        type=int_at_least(0),
        default=1,
        metavar="N",
        help="serve from N processes, each with its own reactor and listening socket, so the "
        "kernel spreads connections over N cores; one that dies is restarted, and SIGHUP "
        "replaces them all without dropping a connection; 0: one per CPU (default: 1, "
        "this process serves alone)",
    )


def run_workers(
    prog: str,
    what: str,
    args: argparse.Namespace,
    setup: Callable[[WorkerContext], object],
    *,
    drain_timeout: float,
) -> int:
    """Serve ``--host``/``--port`` from ``--workers`` processes, each running ``setup``.

    Uses :func:`reactor.serve_workers`' supervisor; prints the start-up line
    once every worker serves; returns its exit status (1 if a worker could
    not start). ``drain_timeout``: how long a worker may take to stop.
    """
    ready: set[int] = set()

    def on_event(event: WorkerEvent) -> None:
        if event.kind != "ready" or len(ready) == supervisor.count:
            return
        ready.add(event.index)
        if len(ready) == supervisor.count:
            where = f"{what} with {supervisor.count} workers"
            print_listening(where, supervisor.address, event.backend or "?")

    supervisor = listen_or_die(
        prog,
        lambda: Supervisor(
            args.workers,
            setup,
            host=args.host,
            port=args.port,
            drain_timeout=drain_timeout,
            on_event=on_event,
        ),
    )
    return supervisor.run()


class GracefulShutdown:
    """Stops a server cleanly on SIGINT/SIGTERM.

    On the first signal: ``close_listeners()`` stop accepting, ``goodbye()``
    lets the app tell its clients, then every open transport is closed (which
    flushes it) and the reactor stops once they are all gone or after
    ``deadline`` seconds, whichever comes first. A second signal stops at once.

    "Gone" includes the lingering close: after a connection's buffer is
    flushed the reactor still reads and discards what the client sends until
    its FIN, because closing a socket with unread input makes the kernel send
    a reset, which can destroy the last bytes we sent before the client reads
    them. So the reactor stops only when no connection is lingering either
    (``reactor.stats()["lingering"]``); what is left at the deadline is
    aborted when the reactor closes.
    """

    def __init__(
        self,
        reactor: Reactor,
        *,
        listeners: Iterable[Any] = (),
        transports: Callable[[], Iterable[Any]] = lambda: (),
        goodbye: Callable[[], object] | None = None,
        deadline: float = 2.0,
    ) -> None:
        self.reactor = reactor
        self.listeners = list(listeners)
        self.transports = transports
        self.goodbye = goodbye
        self.deadline = deadline
        self.stopping = False
        for sig in (signal.SIGINT, signal.SIGTERM):
            reactor.add_signal_handler(sig, self.shutdown)

    def shutdown(self) -> None:
        if self.stopping:
            self.reactor.stop()
            return
        self.stopping = True
        logging.getLogger("apps").info("shutting down")
        for listener in self.listeners:
            listener.close()
        if self.goodbye is not None:
            try:
                self.goodbye()
            except Exception:
                logging.getLogger("apps").exception("error while saying goodbye")
        for transport in list(self.transports()):
            transport.close()
        self.reactor.call_later(self.deadline, self.reactor.stop)
        self._wait_for_flush()

    def _wait_for_flush(self) -> None:
        if any(not _is_gone(t) for t in self.transports()) or self.reactor.stats()["lingering"]:
            self.reactor.call_later(0.02, self._wait_for_flush)
        else:
            self.reactor.stop()


def _is_gone(transport: Any) -> bool:
    closing = getattr(transport, "is_closing", None)
    size = getattr(transport, "get_write_buffer_size", None)
    return bool(closing and closing() and (size is None or size() == 0))
