"""The floor of a TLS echo in Python: what the ``ssl`` module's calls alone cost.

    python benchmarks/tls_floor.py                 # CPU time per 1 KiB echo
    python benchmarks/tls_floor.py --callgrind     # and instructions per echo

A server that echoes 1 KiB over TLS on ``ssl.MemoryBIO`` (asyncio, uvloop and
this reactor all do) must, per request, hand the record it received to the
incoming BIO, decrypt it (``SSLObject.read``), encrypt the answer
(``SSLObject.write``) and take the record out of the outgoing BIO: four calls
into OpenSSL that plain TCP does not make. Everything else (the system calls,
the loop, the protocol) is the same in both. So however thin the Python around
them, a TLS echo costs at least plain TCP's figure plus this one, and the
lowest TLS/plain ratio any such server can reach is ``(plain + floor) / plain``.
``tls_bench.py`` prints that bound beside the reactor's measured ratio.

What is counted is only the server's side: the client's records are made
first (by a second ``SSLObject``, TLS 1.3 with the same certificate kind as
tls_bench.py: trustme's ECDSA P-256), then the server's four calls run over
them in a plain loop. Run by hand, never in CI; nothing touches the network.
"""

from __future__ import annotations

import argparse
import os
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

#: The echo's payload, as tls_bench.py's ping-pong (1 KiB requests).
PAYLOAD = b"x" * 1024


def tls_pair() -> tuple[ssl.SSLObject, ssl.MemoryBIO, ssl.MemoryBIO, ssl.SSLObject, ssl.MemoryBIO]:
    """A finished TLS 1.3 handshake between two SSLObjects over memory BIOs.

    Returns the server's object with its incoming and outgoing BIOs, and the
    client's object with its outgoing BIO (what the client sends).
    """
    import trustme  # the bench extra's

    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(server_ctx)
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    s_in, s_out, c_in, c_out = (ssl.MemoryBIO() for _ in range(4))
    server = server_ctx.wrap_bio(s_in, s_out, server_side=True)
    client = client_ctx.wrap_bio(c_in, c_out, server_hostname="localhost")
    for _ in range(10):  # a handshake takes two or three flights; ten is plenty
        done = 0
        for side in (client, server):
            try:
                side.do_handshake()
                done += 1
            except ssl.SSLWantReadError:
                pass
        s_in.write(c_out.read())
        c_in.write(s_out.read())
        if done == 2:
            break
    else:
        raise RuntimeError("the in-memory TLS handshake did not finish in ten flights")
    # One round trip first, so the session tickets TLS 1.3 sends after the
    # handshake are read and out of the way.
    client.write(PAYLOAD)
    s_in.write(c_out.read())
    server.read(len(PAYLOAD))
    return server, s_in, s_out, client, c_out


def run_floor(n: int) -> float:
    """CPU seconds of the server's four ``ssl`` calls for ``n`` 1 KiB echoes."""
    server, incoming, outgoing, client, client_out = tls_pair()
    records = []
    for _ in range(n):
        client.write(PAYLOAD)
        records.append(client_out.read())
    buffer = bytearray(256 * 1024)  # decrypted into, as the reactor does
    view = memoryview(buffer)
    # With a buffer, read() returns the count (typeshed says bytes).
    read: Any = server.read
    write, feed, take = server.write, incoming.write, outgoing.read
    start = time.process_time()
    for record in records:
        feed(record)
        size: int = read(len(buffer), buffer)
        write(view[:size])
        take()
    return time.process_time() - start


def _callgrind_total(path: Path) -> int:
    for line in path.read_text().splitlines():
        if line.startswith("summary:"):
            return int(line.split()[1])
    raise ValueError(f"{path}: no summary line (did the run fail?)")


def count_instructions(n: int) -> float:
    """Instructions of the server's four calls per echo: a run of 2n minus one of n.

    Both runs make their client records too; a run with ``--no-serve`` of each
    size is subtracted, so only the server's side is left.
    """
    totals: dict[tuple[int, bool], int] = {}
    with tempfile.TemporaryDirectory(prefix="tls-floor-") as tmp:
        for size in (n, 2 * n):
            for serve in (True, False):
                out = Path(tmp) / f"cg.{size}.{serve}"
                command = [
                    "valgrind",
                    "--tool=callgrind",
                    f"--callgrind-out-file={out}",
                    sys.executable,
                    __file__,
                    "--once",
                    "-n",
                    str(size),
                ]
                if not serve:
                    command.append("--no-serve")
                env = dict(os.environ, PYTHONHASHSEED="0")
                subprocess.run(command, check=True, env=env, capture_output=True)
                totals[size, serve] = _callgrind_total(out)
    served = totals[2 * n, True] - totals[n, True]
    made = totals[2 * n, False] - totals[n, False]
    return (served - made) / n


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-n", type=int, default=100_000, help="echoes per run")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs (median)")
    parser.add_argument("--callgrind", action="store_true", help="also count instructions")
    parser.add_argument("--once", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--no-serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if not 1 <= args.n <= 10_000_000 or not 1 <= args.repeats <= 100:
        parser.error("need 1 <= -n <= 10,000,000 and 1 <= --repeats <= 100")
    if args.once:  # one run under callgrind (count_instructions)
        if args.no_serve:
            *_, client, client_out = tls_pair()
            for _ in range(args.n):
                client.write(PAYLOAD)
                client_out.read()
        else:
            run_floor(args.n)
        return 0
    times = sorted(run_floor(args.n) / args.n for _ in range(args.repeats))
    median = times[len(times) // 2]
    print(
        f"floor: {median * 1e6:.2f} us CPU per 1 KiB echo (median of {args.repeats}, "
        f"{times[0] * 1e6:.2f}-{times[-1] * 1e6:.2f}); {ssl.OPENSSL_VERSION}"
    )
    if args.callgrind:
        per_echo = count_instructions(min(args.n, 20_000))
        print(f"floor: {per_echo:,.0f} instructions per 1 KiB echo (callgrind)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
