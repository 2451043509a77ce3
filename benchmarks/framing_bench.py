"""Instructions per message for the framing receivers, counted by callgrind, not timed.

    python benchmarks/framing_bench.py                               # this checkout
    python benchmarks/framing_bench.py --tree pure=. --tree compiled=/tmp/built
    python benchmarks/framing_bench.py --scenarios lines,int32 --chunks 4000

What a user's protocol costs in :mod:`protocols.framing` (and
:class:`protocols.base.Protocol`), per line or frame, with no sockets and no
loop: each scenario is a user's plain-Python subclass, connected to a
:class:`protocols.testing.MemoryTransport`, whose ``data_received`` is
called directly with 1 KiB chunks, the way a transport would:

* ``lines``: a ``LineReceiver`` whose ``line_received`` counts; each chunk
  holds 16 lines of 62 bytes and ``\\r\\n`` (the default delimiter);
* ``lines-configured``: the same with class attributes set, as the docs show
  (``delimiter = b"\\n"``, ``max_line_length``): the lines keep their
  ``\\r``, so the checksum shows whether the subclass's values were used;
* ``lines-super``: ``data_received`` overridden (counting bytes), calling
  ``super().data_received``;
* ``lines-mixin``: ``IdleTimeoutMixin`` before ``LineReceiver``, on a fake
  clock, as in the docs' examples and the apps;
* ``lines-echo``: ``line_received`` answers each line with ``send_line``;
* ``int32``: an ``Int32Receiver`` counting 64-byte frames (68 bytes with
  the prefix, so frames straddle the chunks);
* ``netstring``: a ``NetstringReceiver`` counting 64-byte strings
  (``b"64:...,"``, 68 bytes);
* ``protocol``: a plain ``Protocol`` subclass whose ``data_received`` counts
  bytes (per chunk): what every protocol pays for the base class.

Each scenario runs in a fresh interpreter under ``valgrind --tool=callgrind``
twice, feeding N chunks and then 2N; the figure is

    (Ir(2N) - Ir(N)) / (messages in N chunks)

user-space instructions per line, frame or chunk: start-up, imports and
set-up are the same in both runs and cancel out. Each run checks that
exactly the expected number of messages arrived, and the table flags a
scenario whose checksum (the bytes delivered) differs from the first
tree's: a build that treats a subclass differently shows instead of being
counted as faster.

``--tree NAME=DIR`` (repeatable) runs the scenarios with DIR first on
``sys.path``: a checkout as it is (the pure build), or a copy built in place
with ``REACTOR_COMPILE=1 python setup.py build_ext --inplace`` (the compiled
build). Every tree's worker reports which build it imported, and the table
compares each tree with the first. Run by hand, never in CI; needs valgrind.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.machinery
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from callgrind_bench import parse_callgrind_total
from echo_bench import MALLOC_CONTROL_ENV

REPO = Path(__file__).resolve().parent.parent
CHUNK = 1024
LINES_PER_CHUNK = 16
PAYLOAD = 64  # bytes of data in each frame and netstring


# --------------------------------------------------------------------------- the worker


@dataclasses.dataclass
class Workload:
    """A connected protocol, the chunks to feed it in turn, and how to read what it got."""

    protocol: Any
    chunks: list[bytes]
    per_cycle: int  # messages delivered by one pass over the chunks
    result: Callable[[], tuple[int, int]]  # (messages, checksum) received so far


def _line_chunk(line_end: bytes) -> bytes:
    body = b"x" * (CHUNK // LINES_PER_CHUNK - len(line_end))
    chunk = (body + line_end) * LINES_PER_CHUNK
    assert len(chunk) == CHUNK
    return chunk


def _cut(stream: bytes) -> list[bytes]:
    """``stream`` in chunks of CHUNK bytes (its length is a multiple of CHUNK)."""
    assert len(stream) % CHUNK == 0
    return [stream[i : i + CHUNK] for i in range(0, len(stream), CHUNK)]


def _connected(protocol: Any, **transport_args: Any) -> Any:
    from protocols.testing import MemoryTransport

    MemoryTransport(**transport_args).connect(protocol)
    return protocol


def build_workload(name: str) -> Workload:
    """The scenario ``name``: its classes are defined here, as a user's would be."""
    from protocols import (
        Clock,
        IdleTimeoutMixin,
        Int32Receiver,
        LineReceiver,
        NetstringReceiver,
        Protocol,
    )

    class CountingLines(LineReceiver):
        def __init__(self) -> None:
            super().__init__()
            self.count = 0
            self.total = 0

        def line_received(self, line: bytes) -> None:
            self.count += 1
            self.total += len(line)

    class ConfiguredLines(CountingLines):
        delimiter = b"\n"
        max_line_length = 4096

    class WatchingLines(CountingLines):
        received = 0

        def data_received(self, data: bytes) -> None:
            self.received += len(data)
            super().data_received(data)

    class IdleLines(IdleTimeoutMixin, CountingLines):
        idle_timeout = 60.0

    class EchoLines(CountingLines):
        def line_received(self, line: bytes) -> None:
            self.count += 1
            self.total += len(line)
            self.send_line(line)

    class CountingFrames(Int32Receiver):
        def __init__(self) -> None:
            super().__init__()
            self.count = 0
            self.total = 0

        def frame_received(self, frame: bytes) -> None:
            self.count += 1
            self.total += len(frame)

    class CountingStrings(NetstringReceiver):
        def __init__(self) -> None:
            super().__init__()
            self.count = 0
            self.total = 0

        def string_received(self, data: bytes) -> None:
            self.count += 1
            self.total += len(data)

    class CountingBytes(Protocol):
        def __init__(self) -> None:
            self.count = 0
            self.total = 0

        def data_received(self, data: bytes) -> None:
            self.count += 1
            self.total += len(data)

    lines = [_line_chunk(b"\r\n")]
    # 256 frames of 68 bytes are exactly 17 chunks: the cycle repeats whole.
    frames = _cut((len(b"x" * PAYLOAD).to_bytes(4, "big") + b"x" * PAYLOAD) * 256)
    strings = _cut(b"%d:%s," % (PAYLOAD, b"x" * PAYLOAD) * 256)
    table: dict[str, tuple[Callable[[], Any], list[bytes], int]] = {
        "lines": (CountingLines, lines, LINES_PER_CHUNK),
        "lines-configured": (ConfiguredLines, lines, LINES_PER_CHUNK),
        "lines-super": (WatchingLines, lines, LINES_PER_CHUNK),
        "lines-mixin": (IdleLines, lines, LINES_PER_CHUNK),
        "lines-echo": (EchoLines, lines, LINES_PER_CHUNK),
        "int32": (CountingFrames, frames, 256),
        "netstring": (CountingStrings, strings, 256),
        "protocol": (CountingBytes, lines, 1),
    }
    factory, chunks, per_cycle = table[name]
    protocol = _connected(factory(), clock=Clock())
    return Workload(protocol, chunks, per_cycle, lambda: (protocol.count, protocol.total))


def _is_extension(module: str) -> bool:
    path = getattr(sys.modules[module], "__file__", None) or ""
    return path.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES))


def run_worker(name: str, cycles: int) -> dict[str, Any]:
    """Feed ``cycles`` passes over the scenario's chunks; report what arrived and the build."""
    import protocols.framing
    import reactor

    work = build_workload(name)
    receive = work.protocol.data_received
    chunks = work.chunks
    for _ in range(cycles):
        for chunk in chunks:
            receive(chunk)
    count, total = work.result()
    return {
        "scenario": name,
        "cycles": cycles,
        "count": count,
        "checksum": total,
        "expected": cycles * work.per_cycle,
        "reactor_compiled": reactor.COMPILED,
        "framing_compiled": _is_extension("protocols.framing"),
        "framing_file": protocols.framing.__file__,
    }


# --------------------------------------------------------------------------- the driver

SCENARIOS = (
    "lines",
    "lines-configured",
    "lines-super",
    "lines-mixin",
    "lines-echo",
    "int32",
    "netstring",
    "protocol",
)
UNITS = {"int32": "frame", "netstring": "string", "protocol": "chunk"}
#: Chunks in one pass over each scenario's cycle (frames and strings: 17).
CYCLE_CHUNKS = {"int32": 17, "netstring": 17}
#: Cheap scenarios feed more chunks, so that the runs' noise (a few hundred
#: thousand instructions, start-up's) stays well under 1% of the difference.
SCALE = {"protocol": 10}


@dataclasses.dataclass(frozen=True)
class Count:
    tree: str
    scenario: str
    per_message: float
    checksum: int
    build: str


def _env(tree: Path, cache: Path) -> dict[str, str]:
    # glibc's malloc thresholds pinned, as echo_bench.py --malloc-control does,
    # so that they do not move between the two counted runs.
    env = dict(os.environ, PYTHONHASHSEED="0", PYTHONPYCACHEPREFIX=str(cache), **MALLOC_CONTROL_ENV)
    env["PYTHONPATH"] = os.pathsep.join([str(tree), *filter(None, [env.get("PYTHONPATH")])])
    return env


def _run(
    python: str, tree: Path, cache: Path, name: str, cycles: int, out: Path | None
) -> dict[str, Any]:
    prefix = (
        []
        if out is None
        else ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", "--quiet"]
    )
    command = [*prefix, python, str(Path(__file__).resolve()), "--worker", name, str(cycles)]
    done = subprocess.run(
        command,
        check=False,
        env=_env(tree, cache),
        cwd=tree,
        capture_output=True,
        text=True,
        timeout=900,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} in {tree} failed:\n{done.stderr}")
    report: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    if report["count"] != report["expected"]:
        raise RuntimeError(
            f"{name} in {tree}: {report['count']} messages, not {report['expected']}"
        )
    return report


def measure(python: str, tree_name: str, tree: Path, name: str, chunks: int, cache: Path) -> Count:
    cycles = max(1, chunks * SCALE.get(name, 1) // CYCLE_CHUNKS.get(name, 1))
    with tempfile.TemporaryDirectory(prefix="framing-bench-") as tmp:
        totals = []
        reports = []
        for run_cycles in (cycles, 2 * cycles):
            out = Path(tmp) / f"callgrind.{run_cycles}"
            reports.append(_run(python, tree, cache, name, run_cycles, out))
            totals.append(parse_callgrind_total(out.read_text()))
    first = reports[0]
    build = "compiled" if first["reactor_compiled"] else "pure"
    if first["framing_compiled"]:
        build += "+framing"
    return Count(
        tree_name,
        name,
        (totals[1] - totals[0]) / first["expected"],
        first["checksum"] // cycles,
        build,
    )


def render(counts: Sequence[Count], trees: Sequence[str], scenarios: Sequence[str]) -> str:
    by = {(c.tree, c.scenario): c for c in counts}
    head = ["scenario", "per", *(f"{t} ({by[t, scenarios[0]].build})" for t in trees)]
    rows = [head]
    for name in scenarios:
        base = by[trees[0], name]
        row = [name, UNITS.get(name, "line")]
        for tree in trees:
            count = by[tree, name]
            cell = f"{count.per_message:,.0f}"
            if tree != trees[0]:
                cell += f" ({count.per_message / base.per_message:.2f}x)"
            if count.checksum != base.checksum:
                cell += " CHECKSUM DIFFERS"
            row.append(cell)
        rows.append(row)
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = ["  ".join(cell.rjust(w) for cell, w in zip(r, widths, strict=True)) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--worker", nargs=2, metavar=("SCENARIO", "CYCLES"), help=argparse.SUPPRESS)
    parser.add_argument(
        "--tree",
        action="append",
        default=[],
        metavar="NAME=DIR",
        help="a checkout (pure, or built in place) to count; repeatable (default: this one)",
    )
    parser.add_argument(
        "--scenarios", default=",".join(SCENARIOS), help="comma-separated (default: all)"
    )
    parser.add_argument("--chunks", type=int, default=2000, help="N: 1 KiB chunks in the short run")
    parser.add_argument("--python", default=sys.executable, help="the interpreter to run")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="runs at a time")
    opts = parser.parse_args(argv)

    if opts.worker:
        print(json.dumps(run_worker(opts.worker[0], int(opts.worker[1]))))
        return 0
    scenarios = [s for s in opts.scenarios.split(",") if s]
    unknown = sorted(set(scenarios) - set(SCENARIOS))
    if unknown:
        parser.error(f"unknown scenarios {unknown}; known: {', '.join(SCENARIOS)}")
    trees: dict[str, Path] = {}
    for spec in opts.tree or [f"this={REPO}"]:
        name, sep, path = spec.partition("=")
        if not sep or not name:
            parser.error(f"--tree takes NAME=DIR, not {spec!r}")
        trees[name] = Path(path).resolve()
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed (apt-get install -y valgrind)")

    with tempfile.TemporaryDirectory(prefix="framing-bench-pyc-") as cache_dir:
        cache = Path(cache_dir)
        # One run outside valgrind per tree first: the bytecode is cached for both counted runs.
        for tree in trees.values():
            _run(opts.python, tree, cache, scenarios[0], 1, None)
        jobs = [(t, p, s) for t, p in trees.items() for s in scenarios]
        with ThreadPoolExecutor(max_workers=max(1, opts.jobs)) as pool:
            counts = list(
                pool.map(
                    lambda job: measure(opts.python, job[0], job[1], job[2], opts.chunks, cache),
                    jobs,
                )
            )
    print(f"instructions per message (callgrind Ir, {opts.chunks} vs {2 * opts.chunks} chunks)")
    print(render(counts, list(trees), scenarios))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
