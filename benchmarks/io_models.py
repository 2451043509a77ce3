"""A thread per connection vs select vs poll vs epoll: memory, CPU per request, latency.

    python benchmarks/io_models.py                       # 10, 1,000, 10,000 idle connections
    python benchmarks/io_models.py --idle 10,1000 --requests 2000 --models threads,epoll

The seed notes of this project assert that a blocking server with a thread
per connection costs more than an event loop, and that select stops scaling
where epoll does not. This measures it on loopback. For each model and each
count of idle connections N:

1. start the server (``benchmarks/servers/threads_echo.py`` for threads,
   ``python -m apps.echo --backend B`` for select, poll and epoll: this
   reactor on each backend);
2. open N connections and leave them idle; read the server's resident memory
   (VmRSS) and thread count from /proc, minus what it had with none;
3. with the N still open, run a ping-pong of 64-byte messages on 10 more
   connections (``--requests`` round trips in all) from one client thread,
   measuring each round trip's latency, and the server's CPU time (user +
   system, from /proc) per request.

Everything is bounded: the connection counts, the requests, a time limit per
phase (``--time-limit``), loopback only. select cannot watch a descriptor at
or above FD_SETSIZE (1024): the reactor refuses such connections (it closes
them and counts them in ``listener.refused``), so select at 10,000 shows as
"refused": that is the finding, not a failure. Linux only (/proc).

Writes ``benchmarks/results/io-models-DATE.json`` and the chart
``docs/img/io_models.png`` (with matplotlib, the bench extra).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import resource
import selectors
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
MODELS = ("threads", "select", "poll", "epoll")
ACTIVE = 10  # connections doing the ping-pong
MESSAGE = b"p" * 63 + b"\n"
_CLK = os.sysconf("SC_CLK_TCK")


def server_command(model: str) -> list[str]:
    if model == "threads":
        return [sys.executable, str(REPO / "benchmarks/servers/threads_echo.py"), "--port", "0"]
    return [sys.executable, "-m", "apps.echo", "--port", "0", "--backend", model]


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


def threads_of(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    return 0


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _CLK  # utime + stime


class Server:
    def __init__(self, model: str, limit: float) -> None:
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        self.proc = subprocess.Popen(
            server_command(model),
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env=env,
            cwd=REPO,
        )
        assert self.proc.stdout is not None
        with selectors.DefaultSelector() as sel:
            sel.register(self.proc.stdout, selectors.EVENT_READ)
            if not sel.select(limit):
                self.stop()
                raise RuntimeError(f"{model}: no 'listening on' line within {limit} s")
        line = self.proc.stdout.readline()
        self.port = int(line.split(" on ")[1].split()[0].rsplit(":", 1)[1])
        self.pid = self.proc.pid

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def open_idle(port: int, count: int, limit: float) -> tuple[list[socket.socket], int]:
    """Open ``count`` connections, each proven served by one echo; returns (served, refused)."""
    deadline = time.monotonic() + limit
    socks: list[socket.socket] = []
    refused = 0
    for _ in range(count):
        if time.monotonic() > deadline:
            raise RuntimeError(f"opening {count} connections took over {limit} s")
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        try:
            s.sendall(b"x")
            ok = s.recv(1) == b"x"
        except OSError:
            ok = False
        if ok:
            socks.append(s)
        else:
            refused += 1
            s.close()
    return socks, refused


def ping_pong(port: int, requests: int, limit: float) -> list[float]:
    """``requests`` round trips over ACTIVE connections, all in flight at once; latencies in s."""
    conns = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(ACTIVE)]
    sel = selectors.DefaultSelector()
    sent_at: dict[int, float] = {}
    got: dict[int, int] = {}
    latencies: list[float] = []
    started = 0
    try:
        for c in conns:
            c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            c.setblocking(False)
            sel.register(c, selectors.EVENT_READ)
            sent_at[c.fileno()] = time.perf_counter()
            got[c.fileno()] = 0
            c.send(MESSAGE)
            started += 1
        deadline = time.monotonic() + limit
        while len(latencies) < requests:
            if time.monotonic() > deadline:
                raise RuntimeError(f"ping-pong: {len(latencies)} of {requests} in {limit} s")
            for key, _ in sel.select(1.0):
                conn = key.fileobj
                assert isinstance(conn, socket.socket)
                fd = conn.fileno()
                data = conn.recv(65536)
                if not data:
                    raise RuntimeError("the server closed a ping-pong connection")
                got[fd] += len(data)
                if got[fd] >= len(MESSAGE):
                    got[fd] = 0
                    now = time.perf_counter()
                    latencies.append(now - sent_at[fd])
                    if started < requests:
                        sent_at[fd] = now
                        conn.send(MESSAGE)
                        started += 1
    finally:
        sel.close()
        for c in conns:
            c.close()
    return latencies


def measure(model: str, idle: int, requests: int, limit: float) -> dict[str, Any]:
    server = Server(model, limit)
    socks: list[socket.socket] = []
    try:
        base_rss = rss_kib(server.pid)
        socks, refused = open_idle(server.port, idle, limit)
        rss = rss_kib(server.pid)
        threads = threads_of(server.pid)
        result: dict[str, Any] = {
            "model": model,
            "idle": idle,
            "served": len(socks),
            "refused": refused,
            "rss_mib": rss / 1024,
            "rss_per_connection_kib": (rss - base_rss) / max(len(socks), 1),
            "threads": threads,
        }
        if refused:
            return result  # the backend cannot serve them all: no ping-pong to compare
        cpu0 = cpu_seconds(server.pid)
        lat = ping_pong(server.port, requests, limit)
        cpu = cpu_seconds(server.pid) - cpu0
        lat.sort()
        result.update(
            requests=len(lat),
            cpu_us_per_request=cpu / len(lat) * 1e6,
            latency_p50_us=statistics.median(lat) * 1e6,
            latency_p99_us=lat[int(len(lat) * 0.99) - 1] * 1e6,
        )
        return result
    finally:
        for s in socks:
            s.close()
        server.stop()


def chart(results: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.6))
    panels = (
        ("rss_mib", "server memory (MiB RSS)"),
        ("cpu_us_per_request", "server CPU per request (µs)"),
        ("latency_p99_us", "round-trip latency p99 (µs)"),
    )
    for ax, (key, title) in zip(axes, panels, strict=True):
        for model in MODELS:
            points = [
                (r["idle"], r[key])
                for r in results
                if r["model"] == model and key in r and not r["refused"]
            ]
            if points:
                xs, ys = zip(*points, strict=True)
                ax.plot(xs, ys, marker="o", label=model)
            refused = [r["idle"] for r in results if r["model"] == model and r["refused"]]
            for x in refused:
                ax.annotate(
                    f"{model}: refused",
                    (x, 0),
                    textcoords="offset points",
                    xytext=(0, 8),
                    ha="center",
                    fontsize=8,
                    color="grey",
                )
        ax.set_xscale("log")
        ax.set_xlabel("idle connections held open")
        ax.set_title(title)
        ax.grid(True, alpha=0.3)
        ax.set_ylim(bottom=0)
    axes[0].legend()
    fig.suptitle(
        f"Thread per connection vs select / poll / epoll (this reactor): {ACTIVE} connections "
        "ping-pong 64 B while the others idle; loopback"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--idle", default="10,1000,10000", help="comma list of idle counts")
    parser.add_argument("--models", default=",".join(MODELS), help="comma list")
    parser.add_argument("--requests", type=int, default=5000, help="ping-pong round trips")
    parser.add_argument("--time-limit", type=float, default=120.0, help="seconds per phase")
    parser.add_argument("--json", type=Path, help="output (default benchmarks/results/...)")
    parser.add_argument("--chart", type=Path, default=REPO / "docs/img/io_models.png")
    parser.add_argument(
        "--replot", type=Path, metavar="JSON", help="draw the chart from earlier results only"
    )
    args = parser.parse_args(argv)
    if args.replot is not None:
        chart(json.loads(args.replot.read_text())["results"], args.chart)
        return 0
    idle = [int(n) for n in args.idle.split(",")]
    models = args.models.split(",")
    if any(m not in MODELS for m in models):
        parser.error(f"models are {MODELS}")
    if any(not 0 <= n <= 10000 for n in idle) or not 1 <= args.requests <= 1_000_000:
        parser.error("need 0 <= idle <= 10000 and 1 <= requests <= 1000000")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = max(idle) + ACTIVE + 64
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, need), hard))
    results = []
    for n in idle:
        for model in models:
            r = measure(model, n, args.requests, args.time_limit)
            results.append(r)
            print(json.dumps(r), flush=True)
    stamp = dt.date.today().isoformat()
    out = args.json or REPO / f"benchmarks/results/io-models-{stamp}.json"
    meta = {
        "date": stamp,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "kernel": platform.release(),
        "active_connections": ACTIVE,
        "message_bytes": len(MESSAGE),
        "requests": args.requests,
    }
    out.write_text(json.dumps({"meta": meta, "results": results}, indent=2) + "\n")
    chart(results, args.chart)
    print(f"results: {out}\nchart: {args.chart}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
