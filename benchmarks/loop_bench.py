"""Loop micro-benchmarks: timers, call_from_thread, and the cost of stats().

Run by hand (never in CI), e.g.::

    python benchmarks/loop_bench.py --repeats 5

Each scenario runs this reactor and, where installed, asyncio, uvloop and
Twisted, interleaved round-robin over the repeats so that machine drift hits
them alike; it prints the median (min-max) operations per second and the
ratio to asyncio, and writes JSON next to the echo results.

Scenarios:

* ``timers-cancel``: schedule a timer 60 s ahead and cancel it, N times (the
  idle-timeout pattern: most timers never fire).
* ``timers-fire``: schedule N timers at spread deadlines within 1 ms and run
  the loop until all fired.
* ``threads``: 4 threads each make N/4 ``call_from_thread`` calls; the loop
  runs them all. The callback is a C builtin (``reactor_threads`` says why).
* ``stats-cost`` (reactor only): the cost of one empty loop turn, and of the
  always-on counters within it, measured by timing the same statements.

``--callgrind`` counts instructions instead of timing, which a busy machine
does not disturb: each peer runs once with N and once with 2N operations
under ``valgrind --tool=callgrind``, and the difference divided by N is the
instructions per operation (start-up and import cancel out). ``--compiled
TREE`` adds the reactor from another checkout (one built with
``REACTOR_COMPILE=1 python setup.py build_ext --inplace``), counted in the
same run::

    python benchmarks/loop_bench.py --callgrind -n 20000 --peers reactor,asyncio \
        --compiled /tmp/bench-compiled --scenarios timers-cancel,timers-fire,threads
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import timeit
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from reactor import Reactor  # noqa: E402

Runner = Callable[[int], float]  # n -> seconds


def _noop() -> None:
    pass


# --------------------------------------------------------------------- reactor


def reactor_timers_cancel(n: int) -> float:
    with Reactor() as r:
        call_later = r.call_later
        t0 = time.perf_counter()
        for _ in range(n):
            call_later(60.0, _noop).cancel()
        r.run_once(0)
        return time.perf_counter() - t0


def reactor_timers_fire(n: int) -> float:
    with Reactor() as r:
        fired = [0]

        def hit() -> None:
            fired[0] += 1

        t0 = time.perf_counter()
        base = r.time()
        for i in range(n):
            r.call_at(base + (i % 1000) * 1e-6, hit)
        while fired[0] < n:
            r.run_once(0.01)
        return time.perf_counter() - t0


def reactor_threads(n: int) -> float:
    """4 threads make n/4 ``call_from_thread`` calls each; the loop runs them.

    The callback is ``itertools.count().__next__`` and the threads loop over
    ``itertools.repeat``: both are C, so what is counted is the loop's work
    (the call, the wake-up, queueing and running the handle), not an
    interpreted callback's, which costs the same in every loop and build
    (about 1,100 instructions per call on CPython 3.13, more than a third of
    the compiled reactor's count with it). Each thread queues one more
    callback after its calls; the fourth of those ends the run, which then
    checks that every call ran.
    """
    with Reactor() as r:
        per_thread = n // 4
        hit = itertools.count().__next__  # C, as in reactor_threads
        finished = itertools.count(1).__next__

        def thread_done() -> None:
            if finished() == 4:
                r.stop()

        def work() -> None:
            call = r.call_from_thread
            for _ in itertools.repeat(None, per_thread):
                call(hit)
            call(thread_done)  # after this thread's calls: one thread's run in order

        threads = [threading.Thread(target=work) for _ in range(4)]
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        r.run()
        elapsed = time.perf_counter() - t0
        for t in threads:
            t.join()
        if hit() != per_thread * 4:
            raise RuntimeError("the loop did not run every call_from_thread callback")
        return elapsed


# --------------------------------------------------------------------- asyncio


def _asyncio_loop(use_uvloop: bool) -> asyncio.AbstractEventLoop:
    if use_uvloop:
        import uvloop

        loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
        return loop
    return asyncio.new_event_loop()


def asyncio_timers_cancel(n: int, use_uvloop: bool = False) -> float:
    loop = _asyncio_loop(use_uvloop)
    try:
        call_later = loop.call_later
        t0 = time.perf_counter()
        for _ in range(n):
            call_later(60.0, _noop).cancel()
        loop.run_until_complete(asyncio.sleep(0))
        return time.perf_counter() - t0
    finally:
        loop.close()


def asyncio_timers_fire(n: int, use_uvloop: bool = False) -> float:
    loop = _asyncio_loop(use_uvloop)
    try:
        done = loop.create_future()
        fired = [0]

        def hit() -> None:
            fired[0] += 1
            if fired[0] == n:
                done.set_result(None)

        t0 = time.perf_counter()
        base = loop.time()
        for i in range(n):
            loop.call_at(base + (i % 1000) * 1e-6, hit)
        loop.run_until_complete(done)
        return time.perf_counter() - t0
    finally:
        loop.close()


def asyncio_threads(n: int, use_uvloop: bool = False) -> float:
    loop = _asyncio_loop(use_uvloop)
    try:
        done = loop.create_future()
        per_thread = n // 4
        hit = itertools.count().__next__  # C, as in reactor_threads
        finished = itertools.count(1).__next__

        def thread_done() -> None:
            if finished() == 4:
                done.set_result(None)

        def work() -> None:
            call = loop.call_soon_threadsafe
            for _ in itertools.repeat(None, per_thread):
                call(hit)
            call(thread_done)

        threads = [threading.Thread(target=work) for _ in range(4)]
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        loop.run_until_complete(done)
        elapsed = time.perf_counter() - t0
        for t in threads:
            t.join()
        if hit() != per_thread * 4:
            raise RuntimeError("the loop did not run every call_soon_threadsafe callback")
        return elapsed
    finally:
        loop.close()


# --------------------------------------------------------------------- twisted


def twisted_timers_cancel(n: int) -> float:
    # A fresh reactor object, never installed or run: the global reactor is a
    # singleton that cannot be restarted, but its timer code is the same.
    from twisted.internet.epollreactor import EPollReactor

    r = EPollReactor()  # type: ignore[no-untyped-call]
    t0 = time.perf_counter()
    call_later = r.callLater
    for _ in range(n):
        call_later(60.0, _noop).cancel()
    r.runUntilCurrent()
    return time.perf_counter() - t0


def twisted_timers_fire(n: int) -> float:
    from twisted.internet.epollreactor import EPollReactor

    r = EPollReactor()  # type: ignore[no-untyped-call]
    fired = [0]

    def hit() -> None:
        fired[0] += 1

    t0 = time.perf_counter()
    for i in range(n):
        r.callLater((i % 1000) * 1e-6, hit)
    while fired[0] < n:
        r.runUntilCurrent()
    return time.perf_counter() - t0


# ------------------------------------------------------------------ stats cost


def stats_cost(n: int) -> dict[str, float]:
    """Per-turn time of an empty loop turn, and of the counter statements in it."""
    with Reactor() as r:
        run_once = r.run_once
        t0 = time.perf_counter()
        for _ in range(n):
            run_once(0)
        turn = (time.perf_counter() - t0) / n
        # The statements _run_once spends on stats(): a clock read and a
        # comparison for the longest turn, and three counter updates.
        setup = (
            "from time import monotonic as m\n"
            "class S: pass\n"
            "s = S(); s.a = s.b = s.c = 0; s.l = 0.0\n"
        )
        stmt = "t = m()\ns.a += 1\ns.c += 0\nd = m() - t\nif d > s.l: s.l = d\nif d > 1e9: pass"
        counters = min(timeit.repeat(stmt, setup, number=n, repeat=3)) / n
        call = min(timeit.repeat(r.stats, number=10_000, repeat=3)) / 10_000
    return {
        "empty_turn_us": turn * 1e6,
        "counters_us": counters * 1e6,
        "counters_pct_of_turn": 100 * counters / turn,
        "stats_call_us": call * 1e6,
    }


# ---------------------------------------------------------------------- driver


def peers(scenario: str) -> dict[str, Runner]:
    table: dict[str, dict[str, Runner]] = {
        "timers-cancel": {
            "reactor": reactor_timers_cancel,
            "asyncio": asyncio_timers_cancel,
            "uvloop": lambda n: asyncio_timers_cancel(n, True),
            "twisted": twisted_timers_cancel,
        },
        "timers-fire": {
            "reactor": reactor_timers_fire,
            "asyncio": asyncio_timers_fire,
            "uvloop": lambda n: asyncio_timers_fire(n, True),
            "twisted": twisted_timers_fire,
        },
        "threads": {
            "reactor": reactor_threads,
            "asyncio": asyncio_threads,
            "uvloop": lambda n: asyncio_threads(n, True),
        },
    }
    runners = table[scenario]
    available: dict[str, Runner] = {}
    for name, runner in runners.items():
        module = {"uvloop": "uvloop", "twisted": "twisted"}.get(name)
        if module is not None:
            try:
                __import__(module)
            except ImportError:
                continue
        available[name] = runner
    return available


def callgrind_total(path: Path) -> int:
    """The total instruction count (``Ir``) of a callgrind output file."""
    events = ["Ir"]
    counts: list[str] | None = None
    for line in path.read_text().splitlines():
        if line.startswith("events:"):
            events = line.split(":", 1)[1].split()
        elif line.startswith(("summary:", "totals:")):
            counts = line.split(":", 1)[1].split()
    if counts is None:
        raise ValueError(f"{path}: no summary: or totals: line (did the run fail?)")
    return int(counts[events.index("Ir")])


def count_instructions(tree: Path, scenario: str, peer: str, n: int, workdir: Path) -> int:
    """Instructions one run of ``peer`` on ``scenario`` with ``n`` operations takes, in total.

    Runs ``tree``'s copy of this script (so its reactor is the one
    imported) under callgrind, in ``--once`` mode.
    """
    out = workdir / f"callgrind.{tree.name}.{scenario}.{peer}.{n}.out"
    command = [
        "valgrind",
        "--tool=callgrind",
        f"--callgrind-out-file={out}",
        sys.executable,
        str(tree / "benchmarks" / "loop_bench.py"),
        "--once",
        peer,
        "--scenarios",
        scenario,
        "-n",
        str(n),
    ]
    # The interpreter's own memory-management choices must not differ between runs.
    env = dict(os.environ, PYTHONHASHSEED="0")
    subprocess.run(command, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return callgrind_total(out)


def run_callgrind(args: argparse.Namespace) -> dict[str, Any]:
    """``--callgrind``: instructions per operation, N vs 2N, per scenario and peer."""
    trees = [("reactor", ROOT, "reactor")]
    if args.compiled is not None:
        trees.append(("reactor-compiled", args.compiled.resolve(), "reactor"))
    wanted = args.peers.split(",")
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="loop-callgrind-") as tmp:
        for scenario in args.scenarios.split(","):
            rows: dict[str, float] = {}
            runs = [(label, tree, peer) for label, tree, peer in trees if peer in wanted]
            runs += [(p, ROOT, p) for p in peers(scenario) if p != "reactor" and p in wanted]
            for label, tree, peer in runs:
                small = count_instructions(tree, scenario, peer, args.n, Path(tmp))
                large = count_instructions(tree, scenario, peer, 2 * args.n, Path(tmp))
                rows[label] = (large - small) / args.n
            results[scenario] = rows
            print(f"\n{scenario} (instructions per operation, callgrind, N={args.n:,} vs 2N):")
            base = rows.get("reactor")
            for label, per_op in rows.items():
                ratio = f"  {per_op / base:5.2f}x the pure reactor" if base else ""
                print(f"  {label:17} {per_op:>10,.0f}{ratio}")
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("-n", type=int, default=200_000, help="operations per run")
    parser.add_argument(
        "--scenarios", default="timers-cancel,timers-fire,threads,stats-cost", help="comma list"
    )
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument(
        "--callgrind",
        action="store_true",
        help="count instructions per operation under callgrind instead of timing",
    )
    parser.add_argument(
        "--peers",
        default="reactor,asyncio,uvloop,twisted",
        help="with --callgrind: which to count (comma list)",
    )
    parser.add_argument(
        "--compiled",
        type=Path,
        default=None,
        metavar="TREE",
        help="with --callgrind: also count the reactor of this checkout (the compiled build)",
    )
    parser.add_argument("--once", metavar="PEER", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.once is not None:
        # One run, nothing printed: what --callgrind runs under valgrind.
        peers(args.scenarios)[args.once](args.n)
        return 0
    results: dict[str, Any] = {"python": sys.version.split()[0], "n": args.n, "scenarios": {}}
    if args.callgrind:
        results["callgrind"] = run_callgrind(args)
        print(json.dumps(results["callgrind"]))
        return 0
    for scenario in args.scenarios.split(","):
        if scenario == "stats-cost":
            cost = stats_cost(args.n)
            results["scenarios"][scenario] = cost
            print(
                f"\nstats-cost: empty loop turn {cost['empty_turn_us']:.2f} us, of which the "
                f"counters {cost['counters_us']:.3f} us ({cost['counters_pct_of_turn']:.1f}%); "
                f"one stats() call {cost['stats_call_us']:.2f} us"
            )
            continue
        runners = peers(scenario)
        samples: dict[str, list[float]] = {name: [] for name in runners}
        for _ in range(args.repeats):
            for name, runner in runners.items():  # interleaved round-robin
                samples[name].append(args.n / runner(args.n))
        base = statistics.median(samples["asyncio"])
        print(f"\n{scenario} (ops/s, {args.n:,} per run, {args.repeats} runs):")
        rows = {}
        for name, values in samples.items():
            med = statistics.median(values)
            rows[name] = {
                "median": med,
                "min": min(values),
                "max": max(values),
                "ratio": med / base,
            }
            print(
                f"  {name:10} {med:>12,.0f}  ({min(values):,.0f} - {max(values):,.0f})"
                f"  {med / base:5.2f}x asyncio"
            )
        results["scenarios"][scenario] = rows
    out = (
        args.json or ROOT / "benchmarks" / "results" / f"loop-{time.strftime('%Y%m%d-%H%M%S')}.json"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
