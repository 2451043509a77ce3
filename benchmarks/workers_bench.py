"""Echo requests per second with ``--workers 1`` and ``--workers 2`` (prefork, reactor.workers).

    python benchmarks/workers_bench.py --loadgen ../shared/tools/loadgen/loadgen --rounds 3

For each round it starts ``python -m apps.echo --workers N --port 0`` for each
N in ``--workers`` (the order rotates each round), waits until every worker
serves, runs the client (loadgen when given, else the suite's Python client)
for ``--duration`` seconds after ``--warmup``, and stops the server with
SIGTERM. It prints the median requests per second per N, with min and max.

No CPU pinning: the workers and the client share the machine's cores, so on
a 2-core machine the client takes one core's worth of time away from the
workers, and ``--workers 2`` cannot double the figure there. Run by hand,
never in CI.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
READY = re.compile(r"listening on \S+:(\d+) ")


def run_once(workers: int, client: list[str], python: str, timeout: float) -> dict[str, float]:
    """One measurement: a fresh server with ``workers`` workers, one client run."""
    env = dict(os.environ, PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1")
    server = subprocess.Popen(
        [python, "-m", "apps.echo", "--port", "0", "--workers", str(workers)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
        cwd=REPO,
    )
    try:
        assert server.stdout is not None
        line = server.stdout.readline()  # printed once every worker serves
        match = READY.search(line)
        if match is None:
            raise RuntimeError(f"the server did not start: {line!r}")
        result = subprocess.run(
            [*client, "--port", match.group(1)],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=True,
        )
        data: dict[str, float] = json.loads(result.stdout.strip().splitlines()[-1])
        return data
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", default="1,2", help="worker counts, comma-separated")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=4.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--conns", type=int, default=50)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--loadgen", help="the loadgen binary (default: benchmarks/pyclient.py)")
    parser.add_argument("--python", default=sys.executable, help="interpreter for the server")
    args = parser.parse_args(argv)
    counts = [int(n) for n in args.workers.split(",")]
    load = ["--conns", str(args.conns), "--size", str(args.size)]
    load += ["--duration", str(args.duration), "--warmup", str(args.warmup)]
    if args.loadgen:
        client = [args.loadgen, *load]
    else:
        client = [sys.executable, str(HERE / "pyclient.py"), *load]
    timeout = args.duration + args.warmup + 60
    results: dict[int, list[float]] = {n: [] for n in counts}
    for round_ in range(args.rounds):
        order = counts[round_ % len(counts) :] + counts[: round_ % len(counts)]
        for n in order:
            data = run_once(n, client, args.python, timeout)
            results[n].append(float(data["requests_per_sec"]))
            cpu = data.get("client_cpu_pct", float("nan"))
            print(
                f"round {round_ + 1}: --workers {n}: {data['requests_per_sec']:,.0f} req/s "
                f"(client CPU {cpu:.0f}%)",
                flush=True,
            )
    print(f"\nCPUs: {os.cpu_count()}; load average before: {os.getloadavg()[0]:.1f}")
    for n in counts:
        runs = results[n]
        print(
            f"--workers {n}: median {statistics.median(runs):,.0f} req/s "
            f"(min {min(runs):,.0f}, max {max(runs):,.0f}, {len(runs)} runs)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
