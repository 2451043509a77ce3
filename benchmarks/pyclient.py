"""A pure-Python echo load client: loadgen's modes and output, on the stdlib's selectors.

    python benchmarks/pyclient.py --port 8007 --conns 100 --size 1024 --duration 5

It is the suite's own client, for machines without a C compiler, and it is
independent of the reactor under test (plain ``selectors``, one thread). It is
itself Python, so on a 2-core machine it saturates its core long before a fast
server does: read its ``client_cpu_pct``, and prefer loadgen for numbers.

Modes (the same flags and the same one-line JSON result as loadgen):

* ping-pong (default): each connection keeps ``--pipeline`` messages of
  ``--size`` bytes in flight; a message completes when all its bytes are back.
* ``--mode stream``: each connection writes ``--size``-byte chunks, keeping at
  most ``--window`` bytes un-echoed, and reads back (MB/s).
* ``--idle``: open ``--conns`` connections, one ping each, print a ``ready``
  event on stderr, hold them for ``--duration`` seconds, close.

Progress events go to stderr as JSON lines (``connected``, ``measure_start``,
``measure_end``, ``ready``), so a harness can sample the server exactly over
the measured window. Loopback targets only; every phase has a deadline and an
alarm backs them up, so a run always ends by itself.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import math
import os
import resource
import selectors
import signal
import socket
import sys
import time
from collections import deque
from types import FrameType
from typing import Any

_RECV_SIZE = 256 * 1024
_READ = selectors.EVENT_READ
_WRITE = selectors.EVENT_WRITE


def event(name: str, **fields: Any) -> None:
    print(json.dumps({"event": name, **fields}), file=sys.stderr, flush=True)


#: How this client names itself in errors (pyclient, or a client importing these helpers).
PROG = os.path.splitext(os.path.basename(sys.argv[0]))[0] or "pyclient"


def on_alarm(signum: int, frame: FrameType | None) -> None:
    os.write(2, f"{PROG}: hard time limit reached, aborting\n".encode())
    os._exit(3)


def resolve_loopback(host: str, port: int) -> tuple[Any, ...]:
    """The first loopback address of ``host``; anything else is refused."""
    for family, _, _, _, addr in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM):
        if (
            family in (socket.AF_INET, socket.AF_INET6)
            and ipaddress.ip_address(str(addr[0])).is_loopback
        ):
            return tuple(addr)
    raise SystemExit(f"{PROG}: refusing: --host must be a loopback address (127.0.0.0/8 or ::1)")


def percentile(sorted_values: list[float], p: float) -> float:
    """Nearest-rank percentile of an already sorted list."""
    rank = max(1, math.ceil(p / 100.0 * len(sorted_values)))
    return sorted_values[rank - 1]


class Conn:
    """One connection: a repeating byte pattern out, the same pattern checked back."""

    __slots__ = (
        "done",
        "dropped",
        "issued",
        "out",
        "out_off",
        "recvd",
        "ring",
        "sent",
        "sock",
        "ts",
        "want_write",
    )

    def __init__(self, sock: socket.socket, index: int, size: int) -> None:
        self.sock = sock
        # The stream of bytes on this connection is ``msg`` repeated, so any
        # slice of what comes back is checked against ``ring`` at an offset.
        msg = bytes((index * 131 + j * 7 + 1) & 0xFF for j in range(size))
        self.ring = msg * (_RECV_SIZE // size + 2)
        self.out = b""  # bytes to send: out[out_off:]
        self.out_off = 0
        self.sent = 0
        self.recvd = 0
        self.issued = 0
        self.done = 0
        self.ts: deque[float] = deque()
        self.want_write = False
        self.dropped = False


class Client:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.size: int = args.size
        self.sel = selectors.DefaultSelector()
        self.conns: list[Conn] = []
        self.running = True
        self.measuring = False
        self.latencies: list[float] = []
        self.requests = 0
        self.bytes = 0
        self.mismatches = 0
        self.err_connect = 0
        self.err_io = 0
        self.err_closed = 0
        self.open = 0

    # ------------------------------------------------------------ connecting

    def connect_all(self, addr: tuple[Any, ...], family: int) -> float:
        t0 = time.monotonic()
        deadline = t0 + self.args.connect_timeout
        for i in range(self.args.conns):
            left = deadline - time.monotonic()
            if left <= 0:
                self.err_connect += self.args.conns - i
                break
            sock = socket.socket(family, socket.SOCK_STREAM)
            sock.settimeout(left)
            try:
                sock.connect(addr)
            except OSError:
                sock.close()
                self.err_connect += 1
                continue
            sock.setblocking(False)
            if self.args.nodelay:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn = Conn(sock, i, self.size)
            self.conns.append(conn)
            self.sel.register(sock, _READ, conn)
            self.open += 1
        return time.monotonic() - t0

    # ------------------------------------------------------------ the traffic

    def kill(self, conn: Conn, closed_by_peer: bool) -> None:
        if conn.dropped:
            return
        conn.dropped = True
        if closed_by_peer:
            self.err_closed += 1
        else:
            self.err_io += 1
        self.open -= 1
        self.sel.unregister(conn.sock)
        conn.sock.close()

    def queue(self, conn: Conn, data: bytes) -> None:
        if conn.out_off:
            conn.out = conn.out[conn.out_off :] + data
            conn.out_off = 0
        else:
            conn.out += data

    def flush(self, conn: Conn) -> None:
        out = conn.out
        if out:
            try:
                n = conn.sock.send(memoryview(out)[conn.out_off :] if conn.out_off else out)
            except (BlockingIOError, InterruptedError):
                n = 0
            except OSError:
                self.kill(conn, False)
                return
            conn.sent += n
            conn.out_off += n
            if conn.out_off == len(out):
                conn.out = out = b""
                conn.out_off = 0
        if out and not conn.want_write:
            conn.want_write = True
            self.sel.modify(conn.sock, _READ | _WRITE, conn)
        elif not out and conn.want_write:
            conn.want_write = False
            self.sel.modify(conn.sock, _READ, conn)

    def issue(self, conn: Conn, count: int, now: float) -> None:
        """Queue ``count`` more messages on ``conn`` (ping-pong and idle modes)."""
        self.queue(conn, conn.ring[: self.size] * count)
        conn.issued += count
        conn.ts.extend([now] * count)

    def stream_fill(self, conn: Conn) -> None:
        size = self.size
        window: int = self.args.window
        pending = conn.sent + len(conn.out) - conn.out_off
        chunks = (window - (pending - conn.recvd)) // size
        if chunks > 0:
            self.queue(conn, conn.ring[:size] * chunks)

    def on_readable(self, conn: Conn) -> None:
        try:
            data = conn.sock.recv(_RECV_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self.kill(conn, False)
            return
        if not data:
            self.kill(conn, True)
            return
        n = len(data)
        offset = conn.recvd % self.size
        if self.args.verify and data != conn.ring[offset : offset + n]:
            expected = conn.ring[offset : offset + n]
            self.mismatches += sum(a != b for a, b in zip(data, expected, strict=False))
            self.mismatches += max(0, n - len(expected))
        conn.recvd += n
        if self.measuring:
            self.bytes += n
        if self.args.mode == "stream":
            if self.measuring:
                self.requests = self.bytes // self.size
            if self.running:
                self.stream_fill(conn)
        else:
            completed = min(conn.recvd // self.size, conn.issued) - conn.done
            if completed > 0:
                now = time.monotonic()
                conn.done += completed
                ts = conn.ts
                if self.measuring:
                    self.requests += completed
                    lat = self.latencies
                    for _ in range(completed):
                        lat.append(now - ts.popleft())
                else:
                    for _ in range(completed):
                        ts.popleft()
                if self.running and not self.args.idle:
                    self.issue(conn, completed, now)
        if conn.out:
            self.flush(conn)

    def poll(self, deadline: float) -> None:
        timeout = min(max(0.0, deadline - time.monotonic()), 1.0)
        for key, mask in self.sel.select(timeout):
            conn: Conn = key.data
            if conn.dropped:
                continue
            if mask & _READ:
                self.on_readable(conn)
            if mask & _WRITE and not conn.dropped:
                self.flush(conn)

    # ---------------------------------------------------------------- phases

    def run_traffic(self) -> dict[str, Any]:
        args = self.args
        now = time.monotonic()
        for conn in self.conns:
            if args.mode == "stream":
                self.stream_fill(conn)
            else:
                self.issue(conn, args.pipeline, now)
            self.flush(conn)
        t_measure = now + args.warmup
        t_end = t_measure + args.duration
        m0 = cpu0 = 0.0
        while True:
            t = time.monotonic()
            if not self.measuring and m0 == 0.0 and t >= t_measure:
                self.measuring = True
                m0 = t
                cpu0 = time.process_time()
                event("measure_start")
            if t >= t_end or self.open == 0:
                break
            self.poll(t_end if self.measuring else t_measure)
        m1 = time.monotonic()
        cpu1 = time.process_time()
        if m0 == 0.0:
            m0 = m1
        self.measuring = False
        self.running = False
        event("measure_end")
        elapsed = m1 - m0
        open_at_end = self.open
        for conn in self.conns:
            if not conn.dropped:
                conn.dropped = True
                conn.sock.close()
        lat = sorted(self.latencies)
        result: dict[str, Any] = {
            "ok": True,
            "mode": args.mode,
            "open_at_end": open_at_end,
            "size": self.size,
            "pipeline": args.pipeline if args.mode == "echo" else 0,
            "window": args.window if args.mode == "stream" else 0,
            "warmup_s": args.warmup,
            "duration_s": round(elapsed, 3),
            "requests": self.requests,
            "requests_per_sec": round(self.requests / elapsed, 1) if elapsed > 0 else 0.0,
            "bytes": self.bytes,
            "MB_per_sec": round(self.bytes / elapsed / 1e6, 2) if elapsed > 0 else 0.0,
            "client_cpu_pct": round((cpu1 - cpu0) / elapsed * 100, 1) if elapsed > 0 else 0.0,
        }
        for name, p in (("p50", 50.0), ("p90", 90.0), ("p99", 99.0), ("p999", 99.9)):
            result[f"lat_{name}_us"] = round(percentile(lat, p) * 1e6, 1) if lat else None
        result["lat_max_us"] = round(lat[-1] * 1e6, 1) if lat else None
        result["lat_mean_us"] = round(sum(lat) / len(lat) * 1e6, 1) if lat else None
        return result

    def run_idle(self) -> dict[str, Any]:
        args = self.args
        now = time.monotonic()
        self.measuring = True  # record the ping round trips
        for conn in self.conns:
            self.issue(conn, 1, now)
            self.flush(conn)
        ping_deadline = time.monotonic() + args.connect_timeout
        while time.monotonic() < ping_deadline:
            if all(c.dropped or c.done == c.issued for c in self.conns):
                break
            self.poll(ping_deadline)
        self.measuring = False
        answered = sum(1 for c in self.conns if not c.dropped and c.done == c.issued)
        event("ready", connected=self.open, answered=answered)
        h0 = time.monotonic()
        hold_end = h0 + args.duration
        while time.monotonic() < hold_end:
            self.poll(hold_end)
        elapsed = time.monotonic() - h0
        held = self.open
        for conn in self.conns:
            if not conn.dropped:
                conn.dropped = True
                conn.sock.close()
        lat = sorted(self.latencies)
        return {
            "ok": True,
            "mode": "idle",
            "answered": answered,
            "held": held,
            "hold_s": round(elapsed, 3),
            "ping_p50_us": round(percentile(lat, 50) * 1e6, 1) if lat else None,
            "ping_p99_us": round(percentile(lat, 99) * 1e6, 1) if lat else None,
        }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--conns", type=int, default=100)
    parser.add_argument("--size", type=int, default=64, help="message (or chunk) size in bytes")
    parser.add_argument("--duration", type=float, default=5.0, help="measured seconds")
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--pipeline", type=int, default=1, help="messages in flight per conn")
    parser.add_argument("--mode", choices=("echo", "stream"), default="echo")
    parser.add_argument("--window", type=int, default=4 * 1024 * 1024, help="stream window")
    parser.add_argument("--verify", action="store_true", help="check every echoed byte")
    parser.add_argument("--idle", action="store_true", help="hold idle connections")
    parser.add_argument("--connect-timeout", type=float, default=15.0)
    parser.add_argument("--no-nodelay", dest="nodelay", action="store_false")
    args = parser.parse_args(argv)
    if not 1 <= args.conns <= 1_000_000:
        parser.error("--conns out of range")
    if not 1 <= args.size <= 64 << 20:
        parser.error("--size must be 1..67108864")
    if not 1 <= args.pipeline <= 65536:
        parser.error("--pipeline out of range")
    if not (0 <= args.duration <= 3600 and 0 <= args.warmup <= 3600):
        parser.error("--duration and --warmup must be 0..3600")
    if not 0 < args.connect_timeout <= 600:
        parser.error("--connect-timeout must be 0..600")
    args.window = max(args.window, args.size)
    if args.idle:
        args.pipeline = 1
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    addr = resolve_loopback(args.host, args.port)
    family = socket.AF_INET6 if ":" in str(addr[0]) else socket.AF_INET
    signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(int(args.connect_timeout * 2 + args.warmup + args.duration) + 30)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    client = Client(args)
    connect_s = client.connect_all(addr, family)
    established = client.open
    event("connected", connected=established, connect_s=round(connect_s, 3))
    head: dict[str, Any] = {"client": "pyclient", "conns": args.conns, "connected": established}
    if established == 0:
        head.update(ok=False, reason="no connection established", errors=client.err_connect)
        print(json.dumps(head), flush=True)
        return 1
    result = client.run_idle() if args.idle else client.run_traffic()
    errors = client.err_connect + client.err_io + client.err_closed
    print(
        json.dumps(
            {
                **head,
                **result,
                "connect_s": round(connect_s, 3),
                "errors": errors,
                "connect_errors": client.err_connect,
                "io_errors": client.err_io,
                "closed_by_peer": client.err_closed,
                "mismatches": client.mismatches,
                "verify": bool(args.verify),
            }
        ),
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
