"""Twisted's echo server on its epoll reactor (the best one on Linux).

    python benchmarks/servers/twisted_echo.py --port 0

Prints ``echo server listening on HOST:PORT (twisted epoll)`` once it accepts
connections; Twisted's own signal handlers stop it on SIGINT and SIGTERM.
``--tls-cert FILE --tls-key FILE`` serves TLS with that certificate
(``listenSSL``: Twisted's ``TLSMemoryBIOProtocol`` over pyOpenSSL, which the
bench extra installs).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8007, help="0 picks a free port")
    parser.add_argument("--tls-cert", metavar="FILE", help="serve TLS with this certificate (PEM)")
    parser.add_argument("--tls-key", metavar="FILE", help="the certificate's private key (PEM)")
    args = parser.parse_args(argv)
    if (args.tls_cert is None) != (args.tls_key is None):
        parser.error("--tls-cert and --tls-key go together: pass both, or neither")

    name = "default"
    try:
        from twisted.internet import epollreactor

        epollreactor.install()  # type: ignore[no-untyped-call]
        name = "epoll"
    except ImportError:  # not Linux: keep Twisted's default reactor
        pass
    from twisted.internet import protocol, reactor

    class Echo(protocol.Protocol):
        def dataReceived(self, data: bytes) -> None:  # noqa: N802 (Twisted's name)
            self.transport.write(data)  # type: ignore[union-attr, call-arg, misc]

    factory = protocol.Factory.forProtocol(Echo)
    factory.noisy = False
    rx: Any = reactor
    if args.tls_cert is not None:
        from twisted.internet import ssl

        pem = Path(args.tls_key).read_text() + Path(args.tls_cert).read_text()
        options = ssl.PrivateCertificate.loadPEM(pem).options()  # type: ignore[no-untyped-call]
        port = rx.listenSSL(args.port, factory, options, backlog=1024, interface=args.host)
        name += ", TLS"
    else:
        port = rx.listenTCP(args.port, factory, backlog=1024, interface=args.host)
    host = port.getHost()

    def ready() -> None:
        print(f"echo server listening on {host.host}:{host.port} (twisted {name})", flush=True)

    rx.callWhenRunning(ready)
    rx.run()  # installs SIGINT/SIGTERM handlers that stop the reactor
    return 0


if __name__ == "__main__":
    sys.exit(main())
