"""A bulk-stream client that costs less per byte than the server it measures.

    python benchmarks/streamclient.py --port 8007 --duration 5

One connection streams bulk data to an echo server and reads it back, like
``loadgen --mode stream``. On a 2-core machine loadgen saturates its core near
900 MB/s: it copies every byte out of its socket and compares it, so the
stream scenario measured the client, not the server. This client leaves the
copying to the kernel:

* it sends with ``os.sendfile()`` from a pattern file (in ``/dev/shm`` when it
  exists): the kernel copies page cache into the socket, with no user buffer;
* it reads with ``recv(MSG_TRUNC)``, which on Linux TCP drops the bytes in
  the kernel without copying them out. Every ``--verify-every``-th read
  (default 16) is an ordinary read, compared byte for byte with what was sent
  at that offset of the stream, and every byte is counted. A server that
  garbles bytes is caught by the sampled reads (``mismatches``); one that
  drops some shifts every later byte against the pattern (``mismatches``
  again) or, dropping many, stalls the stream (a failed run); one that adds
  bytes shows ``excess_bytes``.

Elsewhere than Linux it falls back to ``send`` and ordinary reads of every
byte, all verified: correct, but no cheaper than ``pyclient.py``.

Same flags (the stream subset) and the same one-line JSON result on stdout as
loadgen; ``connected``, ``measure_start`` and ``measure_end`` events on stderr,
so a harness can sample the server over exactly the measured window.
Loopback only; an alarm ends the run if anything hangs.
"""

from __future__ import annotations

import argparse
import json
import os
import selectors
import signal
import socket
import sys
import tempfile
import time
from typing import Any

from pyclient import event, on_alarm, resolve_loopback

#: The stream is this pattern repeated. A prime period means that a byte the
#: server moves, drops or duplicates lands where a different byte is expected.
PERIOD = 65521
PATTERN = bytes((i * 7 + 3) & 0xFF for i in range(PERIOD))
#: Largest read: MSG_TRUNC reads cost nothing per byte, so ask for a lot.
RECV_MAX = 1 << 20
#: Linux TCP discards MSG_TRUNC reads in the kernel; elsewhere the flag means
#: something else (or nothing), so every byte is read and checked.
DISCARD = sys.platform.startswith("linux") and hasattr(socket, "MSG_TRUNC")


class Stream:
    """One connection: send the pattern, count (and sample) what comes back."""

    def __init__(self, sock: socket.socket, args: argparse.Namespace) -> None:
        self.sock = sock
        self.chunk: int = args.size
        self.window: int = args.window
        # Compare every Nth read (0: none); without MSG_TRUNC every read is whole.
        self.every: int = 1 if not DISCARD else args.verify_every if args.verify else 0
        self.sent = 0
        self.recvd = 0
        self.reads = 0
        self.verified = 0
        self.mismatches = 0
        self.excess = 0
        self.closed = False
        self.error: str | None = None
        self.buf = bytearray(RECV_MAX)
        # Any offset's expected bytes, as one slice: the pattern repeated past
        # the longest read.
        self.ring = PATTERN * (RECV_MAX // PERIOD + 2)
        self.file = self._pattern_file(args.size) if DISCARD else None

    @staticmethod
    def _pattern_file(chunk: int) -> int:
        """An unlinked file holding the pattern from any offset for ``chunk`` bytes."""
        where = "/dev/shm" if os.path.isdir("/dev/shm") else None  # RAM, not disk
        fd, path = tempfile.mkstemp(prefix="streamclient-", dir=where)
        os.unlink(path)
        with os.fdopen(os.dup(fd), "wb") as f:
            f.write(PATTERN * (chunk // PERIOD + 2))
        return fd

    def close(self) -> None:
        if self.file is not None:
            os.close(self.file)
            self.file = None
        self.sock.close()

    def room(self) -> int:
        """Bytes we may send now without more than --window un-echoed."""
        return self.window - (self.sent - self.recvd)

    def send(self) -> None:
        count = min(self.room(), self.chunk)
        offset = self.sent % PERIOD
        try:
            if self.file is not None:
                n = os.sendfile(self.sock.fileno(), self.file, offset, count)
            else:
                n = self.sock.send(self.ring[offset : offset + count])
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self.error = f"send: {exc.strerror or exc}"
            return
        self.sent += n

    def read(self) -> None:
        self.reads += 1
        check = self.every and self.reads % self.every == 0
        try:
            if check or not DISCARD:
                n = self.sock.recv_into(self.buf, RECV_MAX)
            else:
                n = self.sock.recv_into(self.buf, RECV_MAX, socket.MSG_TRUNC)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self.error = f"recv: {exc.strerror or exc}"
            return
        if n == 0:
            self.closed = True
            return
        if self.recvd + n > self.sent:  # bytes we never sent (at most this read's)
            self.excess += min(n, self.recvd + n - self.sent)
        elif check:
            offset = self.recvd % PERIOD
            got, want = self.buf[:n], self.ring[offset : offset + n]
            if got != want:
                self.mismatches += sum(a != b for a, b in zip(got, want, strict=True))
            self.verified += n
        self.recvd += n


def run(stream: Stream, args: argparse.Namespace) -> dict[str, Any]:
    sel = selectors.DefaultSelector()
    read_only = selectors.EVENT_READ
    read_write = selectors.EVENT_READ | selectors.EVENT_WRITE
    interest = read_write
    sel.register(stream.sock, interest)
    start = time.monotonic()
    measure_at, end_at = start + args.warmup, start + args.warmup + args.duration
    measuring = False
    base = 0
    cpu0 = os.times()
    t0 = start
    while not (stream.closed or stream.error):
        now = time.monotonic()
        if not measuring and now >= measure_at:
            measuring, base, t0, cpu0 = True, stream.recvd, now, os.times()
            event("measure_start")
        if now >= end_at:
            break
        for _, mask in sel.select(min(0.1, end_at - now)):
            if mask & selectors.EVENT_READ:
                stream.read()
        if stream.room() >= min(stream.chunk, stream.window // 4):
            stream.send()
            wanted = read_write
        else:
            wanted = read_only  # the window is full: wait for the echo
        if wanted != interest:
            interest = wanted
            sel.modify(stream.sock, interest)
    elapsed = time.monotonic() - t0
    cpu1 = os.times()
    event("measure_end")
    sel.close()
    got = stream.recvd - base if measuring else 0
    cpu_s = (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system)
    return {
        "duration_s": round(elapsed, 3),
        "bytes": got,
        "MB_per_sec": round(got / elapsed / 1e6, 2) if elapsed > 0 else 0.0,
        "requests": got // args.size,
        "requests_per_sec": round(got / args.size / elapsed, 1) if elapsed > 0 else 0.0,
        "client_cpu_pct": round(cpu_s / elapsed * 100, 1) if elapsed > 0 else 0.0,
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--conns", type=int, default=1, help="must be 1: one stream")
    parser.add_argument("--size", type=int, default=256 * 1024, help="largest write, bytes")
    parser.add_argument("--duration", type=float, default=5.0, help="measured seconds")
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--mode", choices=("stream",), default="stream")
    parser.add_argument("--window", type=int, default=4 * 1024 * 1024, help="bytes un-echoed")
    parser.add_argument("--verify", action="store_true", help="compare sampled reads")
    parser.add_argument(
        "--verify-every", type=int, default=16, help="with --verify: compare every Nth read"
    )
    parser.add_argument("--connect-timeout", type=float, default=15.0)
    args = parser.parse_args(argv)
    if args.conns != 1:
        parser.error("--conns must be 1: this client drives one stream (use loadgen for more)")
    if not 1 <= args.size <= 64 << 20:
        parser.error("--size must be 1..67108864")
    if args.verify_every < 1:
        parser.error("--verify-every must be at least 1")
    if not (0 < args.duration <= 3600 and 0 <= args.warmup <= 3600):
        parser.error("--duration must be 0..3600 (not 0) and --warmup 0..3600")
    if not 0 < args.connect_timeout <= 600:
        parser.error("--connect-timeout must be 0..600")
    args.window = max(args.window, args.size)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    addr = resolve_loopback(args.host, args.port)
    signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(int(args.connect_timeout + args.warmup + args.duration) + 30)
    head: dict[str, Any] = {"client": "streamclient", "mode": "stream", "conns": 1}
    began = time.monotonic()
    try:
        sock = socket.create_connection(addr[:2], timeout=args.connect_timeout)
    except OSError as exc:
        event("connected", connected=0, connect_s=round(time.monotonic() - began, 3))
        print(json.dumps({**head, "ok": False, "reason": f"connect: {exc}", "errors": 1}))
        return 1
    connect_s = time.monotonic() - began
    sock.setblocking(False)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    event("connected", connected=1, connect_s=round(connect_s, 3))
    stream = Stream(sock, args)
    try:
        result = run(stream, args)
    finally:
        stream.close()
    stalled = not (stream.closed or stream.error) and result["bytes"] == 0
    errors = int(stream.closed) + int(stream.error is not None) + int(stalled)
    reason = stream.error or ("closed by the server" if stream.closed else None)
    if stalled:
        reason = "the server echoed nothing during the measured window"
    print(
        json.dumps(
            {
                **head,
                "ok": errors == 0,
                **({"reason": reason} if reason else {}),
                "connected": 1,
                "size": args.size,
                "window": args.window,
                "warmup_s": args.warmup,
                "connect_s": round(connect_s, 3),
                **result,
                "errors": errors,
                "io_errors": int(stream.error is not None),
                "closed_by_peer": int(stream.closed),
                "stalled": int(stalled),
                "mismatches": stream.mismatches,
                "excess_bytes": stream.excess,
                "verify": bool(args.verify),
                "verified_bytes": stream.verified,
                "discard": DISCARD,
            }
        ),
        flush=True,
    )
    return 0 if errors == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
