"""This project's echo server, as the benchmark runs it: ``python -m apps.echo``.

    python benchmarks/servers/reactor_echo.py --port 0 --backend epoll
    python benchmarks/servers/reactor_echo.py --port 0 --tls-cert server.pem --tls-key server.key

A thin wrapper so every server kind has a script here; the benchmark itself
runs ``python -m apps.echo`` directly, which is the same code. With
``--tls-cert FILE --tls-key FILE`` it serves the same echo protocol over TLS
(``listen_tcp(ssl=...)``, reactor/tls.py) for ``tls_bench.py``: the echo's
``eof_received`` half-closes, which TLS cannot, so that one hook differs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from apps._common import (
    GracefulShutdown,
    add_common_options,
    listen_or_die,
    make_reactor,
    print_listening,
    setup_logging,
)
from apps._tls import add_server_tls_options, server_tls_context
from apps.echo import LINGER_ALLOWANCE, PROG, _TrackedEcho, main

#: Seconds a shutdown waits for the clients' close_notify and FIN.
TLS_CLOSE_TIMEOUT = 2.0


class _TLSEcho(_TrackedEcho):
    """apps.echo's server protocol (one write per chunk), minus the half-close."""

    __slots__ = ()

    def eof_received(self) -> bool:
        return False  # the peer's close_notify: the TLS transport closes after the echo


def serve_tls(argv: list[str]) -> int:
    """The echo server over TLS until SIGINT/SIGTERM; returns the exit code."""
    parser = argparse.ArgumentParser(prog=f"{PROG} (TLS)", description=__doc__.splitlines()[0])
    add_common_options(parser, default_port=0)
    add_server_tls_options(parser)
    args = parser.parse_args(argv)
    setup_logging(args.log_level)
    context = server_tls_context(parser.prog, args)
    reactor = make_reactor(parser.prog, args)
    with reactor:
        live: set[Any] = set()
        listener = listen_or_die(
            parser.prog,
            lambda: reactor.listen_tcp(
                args.port, lambda: _TLSEcho(live), host=args.host, ssl=context
            ),
        )
        GracefulShutdown(
            reactor,
            listeners=[listener],
            transports=lambda: list(live),
            deadline=TLS_CLOSE_TIMEOUT + LINGER_ALLOWANCE,
        )
        print_listening("echo server (TLS)", listener.address, reactor)
        reactor.run()
    return 0


if __name__ == "__main__":
    argv = sys.argv[1:]
    tls = any(arg.split("=")[0] in ("--tls-cert", "--tls-key") for arg in argv)
    sys.exit(serve_tls(argv) if tls else main(argv))
