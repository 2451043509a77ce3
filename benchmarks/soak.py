"""Soak: misbehaving clients against the chat and file servers, while good ones measure.

    python benchmarks/soak.py                   # 180 s, the default mix
    python benchmarks/soak.py --duration 60     # shorter

Starts ``apps.chat server`` and ``apps.files serve`` on loopback (small
connection limits, short deadlines, so the attacks would matter), then runs
for ``--duration`` seconds, all at once:

* chat: slowloris clients (one byte every 1.5 s, never a newline), clients
  that join and never read while a flooder pipelines ``/who`` commands,
  ``/quit`` from clients that do not read, and waves of members that join
  and leave at once;
* files: clients that request a large file and never read, and slowloris
  clients that never finish their request line;
* good clients: chat members timing ``/who`` round trips, and downloaders
  fetching a small file, timing each download and counting refusals.

It prints the good clients' latency (p50, p99, max), how many of their
attempts were refused or failed, and what the servers logged. Run by hand,
never in CI. Every loop is bounded by the duration and by counts.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"


class Stats:
    """Thread-safe counters and latency samples for one kind of good client."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.samples: list[float] = []
        self.refused = 0
        self.failed = 0
        self.errors: dict[str, int] = {}

    def add(self, seconds: float) -> None:
        with self.lock:
            self.samples.append(seconds)

    def note(self, error: str) -> None:
        with self.lock:
            self.errors[error] = self.errors.get(error, 0) + 1

    def count(self, what: str) -> None:
        with self.lock:
            setattr(self, what, getattr(self, what) + 1)

    def summary(self) -> dict[str, object]:
        with self.lock:
            samples = sorted(self.samples)
        if not samples:
            return {"n": 0, "refused": self.refused, "failed": self.failed, "errors": self.errors}
        p99 = samples[min(len(samples) - 1, int(len(samples) * 0.99))]
        return {
            "n": len(samples),
            "p50_ms": round(statistics.median(samples) * 1000, 2),
            "p99_ms": round(p99 * 1000, 2),
            "max_ms": round(samples[-1] * 1000, 2),
            "refused": self.refused,
            "failed": self.failed,
            "errors": dict(self.errors),
        }


@contextlib.contextmanager
def server(args: list[str], ready: str) -> Iterator[tuple[int, subprocess.Popen[str]]]:
    """Start ``python -m apps...`` and yield the port it printed."""
    # The log goes to a file: an unread pipe would fill and block the server.
    log = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 - closed in the finally below
    proc = subprocess.Popen(
        [sys.executable, "-m", *args, "--port", "0", "--log-level", "INFO"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        match = re.search(ready + r" on \S+:(\d+)", line)
        if not match:
            log.seek(0)
            raise RuntimeError(f"{args[0]} did not start: {line!r} {log.read()}")
        yield int(match.group(1)), proc
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        log.close()


def until(deadline: float, body: Callable[[], None], pause: threading.Event) -> None:
    """Run ``body`` until the deadline (each call bounded by its socket timeouts)."""
    while time.monotonic() < deadline and not pause.is_set():
        try:
            body()
        except OSError:
            pause.wait(0.05)


def connect(port: int, timeout: float = 5.0) -> socket.socket:
    sock = socket.create_connection((HOST, port), timeout=timeout)
    sock.settimeout(timeout)
    return sock


def read_line(sock: socket.socket, buf: bytearray) -> bytes:
    while b"\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed")
        buf += chunk
    line, _, rest = bytes(buf).partition(b"\n")
    buf[:] = rest
    return line


# --------------------------------------------------------------------- chat


def chat_good(port: int, n: int, stats: Stats, deadline: float, stop: threading.Event) -> None:
    try:
        _chat_good(port, n, stats, deadline, stop)
    except OSError as exc:
        stats.count("failed")
        stats.note(f"chat client {n}: {exc!r}")


def _chat_good(port: int, n: int, stats: Stats, deadline: float, stop: threading.Event) -> None:
    sock = connect(port)
    buf = bytearray()
    read_line(sock, buf)  # welcome
    sock.sendall(f"/nick good{n}\n".encode())
    while time.monotonic() < deadline and not stop.is_set():
        start = time.monotonic()
        sock.sendall(b"/who\n")
        while True:
            line = read_line(sock, buf)
            if line.startswith(b"PING"):
                sock.sendall(b"PONG\n")
            elif b"online:" in line:
                break
        stats.add(time.monotonic() - start)
        stop.wait(0.1)
    sock.close()


def chat_slowloris(port: int, deadline: float, stop: threading.Event) -> None:
    def body() -> None:
        sock = connect(port)
        with sock:
            sock.sendall(b"/nick slow" + str(threading.get_ident() % 100000).encode() + b"\n")
            while time.monotonic() < deadline and not stop.is_set():
                sock.sendall(b"x")  # never a newline
                stop.wait(1.5)

    until(deadline, body, stop)


def chat_flooder(port: int, deadline: float, stop: threading.Event) -> None:
    def body() -> None:
        sock = connect(port)
        with sock:
            sock.sendall(b"/nick flooder\n")
            batch = b"/who\n" * 5000
            while time.monotonic() < deadline and not stop.is_set():
                sock.sendall(batch)
                with contextlib.suppress(socket.timeout):
                    sock.recv(1 << 20)  # reads a little, so it is not merely a non-reader
                stop.wait(0.05)

    until(deadline, body, stop)


def chat_non_reader_quits(port: int, deadline: float, stop: threading.Event) -> None:
    def body() -> None:
        sock = connect(port)
        with sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.sendall(f"/nick mute{threading.get_ident() % 100000}\n".encode())
            stop.wait(5.0)  # gathers room traffic it never reads
            sock.sendall(b"/quit\n")
            stop.wait(5.0)

    until(deadline, body, stop)


def chat_wave(port: int, size: int, deadline: float, stop: threading.Event) -> None:
    def body() -> None:
        members = []
        try:
            for i in range(size):
                sock = connect(port)
                sock.sendall(f"/nick wave{i}\n".encode())
                members.append(sock)
            stop.wait(2.0)
        finally:
            for sock in members:  # all leave at once
                sock.close()
        stop.wait(3.0)

    until(deadline, body, stop)


# -------------------------------------------------------------------- files


def files_good(port: int, stats: Stats, deadline: float, stop: threading.Event) -> None:
    while time.monotonic() < deadline and not stop.is_set():
        start = time.monotonic()
        try:
            sock = connect(port, timeout=10.0)
            with sock:
                sock.sendall(b"GET 0 small.txt\n")
                buf = bytearray()
                header = read_line(sock, buf)
                if not header.startswith(b"OK"):
                    stats.count("refused")
                    stop.wait(0.2)
                    continue
                size = int(header.split()[1])
                while len(buf) < size:
                    chunk = sock.recv(65536)
                    if not chunk:
                        break
                    buf += chunk
                if len(buf) != size:
                    stats.count("failed")
                    continue
        except OSError as exc:
            stats.count("failed")
            stats.note(f"download: {exc!r}")
            continue
        stats.add(time.monotonic() - start)
        stop.wait(0.1)


def files_non_reader(port: int, deadline: float, stop: threading.Event) -> None:
    def body() -> None:
        sock = connect(port)
        with sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.sendall(b"GET 0 big.bin\n")
            stop.wait(10.0)  # never reads

    until(deadline, body, stop)


def files_slowloris(port: int, deadline: float, stop: threading.Event) -> None:
    def body() -> None:
        sock = connect(port)
        with sock:
            for byte in b"GET 0 small.tx":  # never the newline
                if time.monotonic() > deadline or stop.is_set():
                    return
                sock.sendall(bytes([byte]))
                stop.wait(1.5)

    until(deadline, body, stop)


# --------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=180.0, help="seconds (default 180)")
    parser.add_argument("--wave", type=int, default=300, help="members per join/leave wave")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    if not 5 <= args.duration <= 3600:
        parser.error("--duration must be 5-3600 seconds")

    with tempfile.TemporaryDirectory() as root:
        Path(root, "small.txt").write_bytes(b"hello\n" * 100)
        Path(root, "big.bin").write_bytes(os.urandom(8 << 20))
        chat_args = [
            "apps.chat", "server", "--max-clients", "400", "--max-per-ip", "400",
            "--line-timeout", "5", "--close-timeout", "3",
        ]  # fmt: skip
        files_args = [
            "apps.files", "serve", "--root", root, "--max-connections", "20",
            "--idle-timeout", "3", "--close-timeout", "3", "--request-timeout", "5",
        ]  # fmt: skip
        with (
            server(chat_args, "listening") as (chat_port, chat),
            server(files_args, "listening") as (files_port, files),
        ):
            stop = threading.Event()
            deadline = time.monotonic() + args.duration
            chat_stats, files_stats = Stats(), Stats()
            jobs: list[Callable[[], None]] = [
                *(partial(chat_good, chat_port, n, chat_stats, deadline, stop) for n in range(5)),
                *(lambda: chat_slowloris(chat_port, deadline, stop) for _ in range(10)),
                lambda: chat_flooder(chat_port, deadline, stop),
                *(lambda: chat_non_reader_quits(chat_port, deadline, stop) for _ in range(5)),
                lambda: chat_wave(chat_port, args.wave, deadline, stop),
                *(lambda: files_good(files_port, files_stats, deadline, stop) for _ in range(3)),
                *(lambda: files_non_reader(files_port, deadline, stop) for _ in range(5)),
                *(lambda: files_slowloris(files_port, deadline, stop) for _ in range(10)),
            ]
            threads = [threading.Thread(target=job, daemon=True) for job in jobs]
            for thread in threads:
                thread.start()
            try:
                for thread in threads:
                    thread.join(max(0.0, deadline - time.monotonic()) + 30)
            finally:
                stop.set()
            alive = [chat.poll() is None, files.poll() is None]
        report = {
            "duration_s": args.duration,
            "chat_who_roundtrip": chat_stats.summary(),
            "files_small_download": files_stats.summary(),
            "servers_alive_at_end": alive,
        }
    if args.json:
        print(json.dumps(report))
    else:
        for key, value in report.items():
            print(f"{key}: {value}")
    return 0 if all(alive) else 1


if __name__ == "__main__":
    sys.exit(main())
