"""A TCP echo server: every byte received is sent back.

It is also the benchmark target, so the protocol is as lean as it can be:
``data_received`` is one ``write``.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from typing import Any

from reactor import Reactor, available_backends

__all__ = ["Echo", "main"]


class Echo:
    """Echoes each chunk back to its sender; honours half-close."""

    __slots__ = ("transport",)

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)

    def eof_received(self) -> bool:
        # The peer finished sending: finish our side once the echo is flushed.
        self.transport.write_eof()
        return True

    def connection_lost(self, exc: BaseException | None) -> None:
        pass

    def pause_writing(self) -> None:
        # The peer is not reading what we echo: stop reading until it does.
        self.transport.pause_reading()

    def resume_writing(self) -> None:
        self.transport.resume_reading()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="reactor-echo", description=__doc__)
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)"
    )
    parser.add_argument(
        "--port", type=int, default=8007, help="port (0 picks a free one; default 8007)"
    )
    parser.add_argument("--backend", choices=available_backends(), help="readiness backend")
    parser.add_argument("--log-level", default="WARNING", help="logging level (default WARNING)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    with Reactor(backend=args.backend) as reactor:
        try:
            listener = reactor.listen_tcp(args.port, Echo, host=args.host)
        except OSError as exc:
            print(f"reactor-echo: {exc}", file=sys.stderr)
            return 1
        for sig in (signal.SIGINT, signal.SIGTERM):
            reactor.add_signal_handler(sig, reactor.stop)
        host, port = listener.address[:2]
        print(f"echo server listening on {host}:{port} (backend {reactor.backend})", flush=True)
        reactor.run()
        listener.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
