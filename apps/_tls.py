"""The TLS options every app shares, and the SSL contexts they ask for.

Servers take ``--tls-cert FILE --tls-key FILE``; clients take ``--tls``,
``--cafile FILE`` (default: the system's CA store), ``--server-name NAME``
(the name the certificate must carry, when it is not the host you dial) and
``--insecure`` (no verification at all: for a self-signed test server, with
a warning, never the default). A problem with the files is a clear one-line
error at start-up, not a traceback at the first connection.
"""

from __future__ import annotations

import argparse
import ssl
import sys

from apps._common import EXIT_USAGE, die

__all__ = [
    "add_client_tls_options",
    "add_server_tls_options",
    "client_tls_context",
    "server_tls_context",
]


def add_server_tls_options(parser: argparse.ArgumentParser) -> None:
    """Add ``--tls-cert`` and ``--tls-key``: serve TLS only, with this certificate."""
    group = parser.add_argument_group("TLS (docs/tls.md)")
    group.add_argument(
        "--tls-cert",
        metavar="FILE",
        help="serve TLS with this certificate chain (PEM); needs --tls-key",
    )
    group.add_argument("--tls-key", metavar="FILE", help="the certificate's private key (PEM)")


def server_tls_context(prog: str, args: argparse.Namespace) -> ssl.SSLContext | None:
    """The server's context from ``--tls-cert``/``--tls-key``, or None for plain TCP."""
    cert, key = args.tls_cert, args.tls_key
    if cert is None and key is None:
        return None
    if cert is None or key is None:
        die(prog, "--tls-cert and --tls-key go together: pass both, or neither", EXIT_USAGE)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        die(
            prog,
            f"cannot load the TLS certificate {cert!r} with key {key!r}: {exc} (both must be "
            "PEM files, and the key must match the certificate)",
            EXIT_USAGE,
        )
    return context


def add_client_tls_options(parser: argparse.ArgumentParser) -> None:
    """Add ``--tls``, ``--cafile``, ``--server-name`` and ``--insecure``."""
    group = parser.add_argument_group("TLS (docs/tls.md)")
    group.add_argument("--tls", action="store_true", help="connect with TLS")
    group.add_argument(
        "--cafile",
        metavar="FILE",
        help="trust the certificates in this PEM file (default: the system's CA store)",
    )
    group.add_argument(
        "--server-name",
        metavar="NAME",
        help="the name the server's certificate must carry (default: the host you connect to)",
    )
    group.add_argument(
        "--insecure",
        action="store_true",
        help="do not verify the server's certificate at all (a self-signed test server only: "
        "anyone in the middle can read and change the traffic)",
    )


def client_tls_context(prog: str, args: argparse.Namespace) -> ssl.SSLContext | None:
    """The client's context from the options, or None for plain TCP."""
    tls_asked = args.tls or args.cafile is not None or args.insecure
    if not tls_asked:
        if args.server_name is not None:
            die(prog, "--server-name needs --tls", EXIT_USAGE)
        return None
    if args.insecure:
        if args.cafile is not None:
            die(prog, "--insecure and --cafile contradict each other: pick one", EXIT_USAGE)
        print(
            f"{prog}: warning: --insecure: the server's certificate is not checked, so this "
            "connection is encrypted but not authenticated",
            file=sys.stderr,
            flush=True,
        )
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    try:
        return ssl.create_default_context(cafile=args.cafile)
    except (OSError, ssl.SSLError) as exc:
        die(prog, f"cannot load the CA file {args.cafile!r}: {exc}", EXIT_USAGE)
