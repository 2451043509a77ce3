"""An aiohttp "hello" server on a chosen event loop: asyncio's, uvloop's or reactor.aio.

    python benchmarks/servers/aio_http_hello.py --port 0 --loop reactor
    python benchmarks/servers/aio_http_hello.py --bench --requests 20000 --concurrency 50

With ``--bench`` it starts the server on each loop in turn (a child
process each), drives it with ApacheBench (``ab -k``, keep-alive, loopback
only, bounded in requests and time), and prints requests per second and the
server's CPU time per request for every loop, interleaved over ``--rounds``.
Needs aiohttp (the test extra) and ``ab`` (Debian: apache2-utils).
"""

from __future__ import annotations

import argparse
import asyncio
import re
import shutil
import signal
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from aio_echo import LOOPS, run_on  # noqa: E402 (this script's folder is on sys.path)


async def serve(host: str, port: int, name: str) -> None:
    from aiohttp import web

    async def hello(request: web.Request) -> web.Response:
        return web.Response(text="Hello, world")

    app = web.Application()
    app.router.add_get("/", hello)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port, backlog=1024)
    await site.start()
    server: Any = site._server  # the asyncio.Server aiohttp keeps
    address = server.sockets[0].getsockname()
    print(f"http server listening on {address[0]}:{address[1]} ({name})", flush=True)
    loop = asyncio.get_running_loop()
    stopped = loop.create_future()

    def stop() -> None:
        if not stopped.done():
            stopped.set_result(None)

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop)
    try:
        await stopped
    finally:
        await runner.cleanup()


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])
    return ticks / 100.0  # USER_HZ is 100 on Linux


def bench_one(loop: str, requests: int, concurrency: int, limit: float) -> tuple[float, float]:
    """Requests/s and server CPU us/request for one run of ab against a fresh server."""
    server = subprocess.Popen(
        [sys.executable, str(Path(__file__)), "--port", "0", "--loop", loop],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        line = server.stdout.readline()
        match = re.search(r"listening on ([\d.]+):(\d+)", line)
        if match is None:
            raise SystemExit(f"the {loop} server did not start: {line!r}")
        url = f"http://{match[1]}:{match[2]}/"
        warm = ["ab", "-q", "-k", "-n", "2000", "-c", str(concurrency), "-s", "10", url]
        subprocess.run(warm, capture_output=True, check=True, timeout=limit)
        cpu = _cpu_seconds(server.pid)
        command = ["ab", "-q", "-k", "-n", str(requests), "-c", str(concurrency)]
        command += ["-s", "10", "-t", str(int(limit)), url]
        out = subprocess.run(
            command, capture_output=True, text=True, check=True, timeout=limit + 30
        )
        cpu = _cpu_seconds(server.pid) - cpu
        rate = re.search(r"Requests per second:\s+([\d.]+)", out.stdout)
        done = re.search(r"Complete requests:\s+(\d+)", out.stdout)
        failed = re.search(r"Failed requests:\s+(\d+)", out.stdout)
        if rate is None or done is None or failed is None or int(failed[1]):
            raise SystemExit(f"ab against {loop} failed:\n{out.stdout}")
        return float(rate[1]), cpu / int(done[1]) * 1e6
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def bench(args: argparse.Namespace) -> int:
    if shutil.which("ab") is None:
        raise SystemExit("ab is not installed (Debian: apt-get install apache2-utils)")
    results: dict[str, list[tuple[float, float]]] = {loop: [] for loop in LOOPS}
    for round_ in range(args.rounds):
        order = LOOPS[round_ % len(LOOPS) :] + LOOPS[: round_ % len(LOOPS)]
        for loop in order:
            rate, cpu = bench_one(loop, args.requests, args.concurrency, args.time_limit)
            results[loop].append((rate, cpu))
            print(
                f"round {round_ + 1} {loop}: {rate:,.0f} req/s, server {cpu:.1f} us/req", flush=True
            )
    base = statistics.median(r for r, _ in results["asyncio"])
    base_cpu = statistics.median(c for _, c in results["asyncio"])
    print(f"\naiohttp hello, {args.requests} requests, {args.concurrency} keep-alive connections")
    header = ("loop", "req/s (median)", "vs asyncio", "CPU us/req", "vs asyncio")
    print(f"{header[0]:10} {header[1]:>15} {header[2]:>11} {header[3]:>11} {header[4]:>11}")
    for loop, runs in results.items():
        rate = statistics.median(r for r, _ in runs)
        cpu = statistics.median(c for _, c in runs)
        print(f"{loop:10} {rate:15,.0f} {rate / base:10.2f}x {cpu:11.1f} {cpu / base_cpu:10.2f}x")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080, help="0 picks a free port")
    parser.add_argument("--loop", choices=LOOPS, default="reactor")
    parser.add_argument("--bench", action="store_true", help="drive every loop with ab")
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--time-limit", type=float, default=60.0, help="seconds per ab run")
    args = parser.parse_args(argv)
    if args.bench:
        if not (1 <= args.requests <= 10_000_000 and 1 <= args.concurrency <= 1000):
            parser.error("--requests must be 1..10,000,000 and --concurrency 1..1000")
        return bench(args)
    run_on(args.loop, serve(args.host, args.port, f"aiohttp on {args.loop}"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
