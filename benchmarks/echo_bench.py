"""Echo benchmark: this reactor against asyncio (and uvloop, Twisted, Tornado, threads) in one run.

    python benchmarks/echo_bench.py --scenarios pingpong-1k --repeats 3 --duration 4
    python benchmarks/echo_bench.py --compiled /tmp/bench-compiled   # also the compiled build

Every scenario puts the same load on every server, interleaved round-robin
over ``--repeats`` rounds (the order rotates each round), so slow drift of
the machine hits every server alike. For each run it samples the server's CPU
time (``/proc/PID/stat``) exactly over the client's measured window, using
the client's ``measure_start``/``measure_end`` events, and its RSS. It prints
medians with min and max, the ratio to asyncio, both processes' CPU use (so
you can see which one saturated), and writes everything to JSON.

``--compiled TREE`` adds the server ``reactor-compiled`` to every scenario:
the same echo app (``apps.echo`` on the first of ``--backends``) with TREE
first on ``sys.path``, where TREE holds the mypyc-compiled ``reactor``
package (a copy of the checkout built in place with
``REACTOR_COMPILE=1 python setup.py build_ext --inplace``), so the pure and
the compiled build are timed in one run, as callgrind_bench.py counts them.
TREE is checked before anything runs, and again by the server as it starts:
``reactor`` must be imported from TREE and ``reactor.COMPILED`` be True.

Run by hand, never in CI: it needs a quiet machine and takes minutes. See
benchmarks/README.md for what each column means and the caveats.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import json
import os
import platform
import re
import resource
import selectors
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
SERVERS_DIR = HERE / "servers"
LOADGEN_DIR = REPO.parent / "shared" / "tools" / "loadgen"
RESULTS_DIR = HERE / "results"

BASELINE = "asyncio"
#: ``--compiled``: the server that runs the compiled build's reactor.
COMPILED_SERVER = "reactor-compiled"
READY_RE = re.compile(r"listening on \[?([0-9A-Fa-f.:]+?)\]?:(\d+)")
CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
#: A process at or above this CPU share during the window counts as saturated.
SATURATED_PCT = 90.0
#: The issue's targets, checked on the 1 KiB ping-pong scenario.
TARGET_SCENARIO = "pingpong-1k"
TARGET_RPS_RATIO = 1.3
TARGET_CPU_RATIO = 0.7
#: ``--malloc-control``: glibc settings that take the mmap threshold out of the
#: picture (see "Warm servers" in benchmarks/README.md). Setting either one
#: also turns off glibc's dynamic threshold, so it never moves during a run.
MALLOC_CONTROL_ENV = {
    "MALLOC_MMAP_THRESHOLD_": "4194304",
    "MALLOC_TRIM_THRESHOLD_": "67108864",
}


# --------------------------------------------------------------------------- scenarios


@dataclasses.dataclass(frozen=True)
class Scenario:
    name: str
    title: str
    conns: int
    size: int
    pipeline: int = 1
    mode: str = "echo"  # "echo", "stream" or "idle"

    @property
    def unit(self) -> str:
        """What the rate counts: requests, or megabytes for the stream."""
        return "MB" if self.mode == "stream" else "req"

    def client_args(self, duration: float, warmup: float) -> list[str]:
        """Flags understood by both loadgen and pyclient."""
        args = ["--conns", str(self.conns), "--size", str(self.size), "--verify"]
        if self.mode == "idle":
            return [*args, "--idle", "--duration", f"{duration:g}"]
        args += ["--duration", f"{duration:g}", "--warmup", f"{warmup:g}"]
        if self.mode == "stream":
            args += ["--mode", "stream"]
        if self.pipeline > 1:
            args += ["--pipeline", str(self.pipeline)]
        return args


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario("pingpong-64", "100 connections, 64 B ping-pong", 100, 64),
        Scenario("pingpong-1k", "100 connections, 1 KiB ping-pong", 100, 1024),
        Scenario("pipeline-16", "10 connections, 64 B messages pipelined 16 deep", 10, 64, 16),
        Scenario("stream", "1 connection streaming 256 KiB writes", 1, 262144, mode="stream"),
        Scenario("idle-5k", "5,000 idle connections (server memory)", 5000, 64, mode="idle"),
    )
}


# --------------------------------------------------------------------------- servers


@dataclasses.dataclass(frozen=True)
class ServerKind:
    name: str
    argv: list[str]  # what follows the interpreter (or the whole command if external)
    needs: str | None = None  # a module that must import
    external: bool = False  # argv is a full command line (from --extra)
    max_fds: int | None = None  # e.g. select(): FD_SETSIZE


def server_kinds(python: str, backends: list[str]) -> dict[str, ServerKind]:
    kinds: dict[str, ServerKind] = {}
    for backend in backends:
        kinds[f"reactor-{backend}"] = ServerKind(
            f"reactor-{backend}",
            ["-m", "apps.echo", "--host", "127.0.0.1", "--port", "0", "--backend", backend],
            max_fds=1000 if backend == "select" else None,
        )
    for name, needs in (
        ("asyncio", None),
        ("uvloop", "uvloop"),
        ("twisted", "twisted"),
        ("tornado", "tornado"),
        ("threads", None),
        ("bare", None),  # a pure-Python epoll loop, no framework (Linux, like this harness)
    ):
        script = SERVERS_DIR / f"{name}_echo.py"
        kinds[name] = ServerKind(name, [str(script), "--host", "127.0.0.1", "--port", "0"], needs)
    return kinds


def compiled_prelude(tree: Path) -> str:
    """Python code that puts ``tree`` first on ``sys.path`` and imports ``reactor``,
    exiting with an error unless that came from ``tree`` and is a compiled build.

    The server's working directory and ``PYTHONPATH`` are this checkout (as for
    every server), so the compiled tree is put before both.
    """
    name = COMPILED_SERVER
    build = "REACTOR_COMPILE=1 python setup.py build_ext --inplace"
    return "\n".join(
        (
            "import os, sys",
            f"tree = {str(tree)!r}",
            "sys.path.insert(0, tree)",
            "import reactor",
            "found = reactor.__file__ or '?'",
            "if not found.startswith(tree + os.sep):",
            f"    sys.exit(f'{name}: reactor imported from {{found}}, not from {{tree}}')",
            "if not reactor.COMPILED:",
            f"    sys.exit(f'{name}: {{tree}} is not a compiled build (reactor.COMPILED is False); "
            f"build it with {build}')",
        )
    )


def compiled_kind(tree: Path, backend: str) -> ServerKind:
    """``--compiled``: the reactor's echo app run with the compiled ``reactor`` of ``tree``."""
    code = (
        compiled_prelude(tree)
        + "\nimport runpy\nrunpy.run_module('apps.echo', run_name='__main__', alter_sys=True)"
    )
    return ServerKind(
        COMPILED_SERVER,
        ["-c", code, "--host", "127.0.0.1", "--port", "0", "--backend", backend],
        max_fds=1000 if backend == "select" else None,
    )


def probe_compiled(python: str, tree: Path, backend: str) -> str:
    """The ``--version`` line of ``--compiled``'s server, started as it will be run.

    Raises ValueError saying why if ``tree`` is not a compiled build (or its
    server does not start).
    """
    if not (tree / "reactor" / "__init__.py").is_file():
        raise ValueError(f"{tree} holds no reactor package")
    kind = compiled_kind(tree, backend)
    environ = dict(os.environ)
    environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), environ.get("PYTHONPATH")]))
    probe = subprocess.run(
        [python, kind.argv[0], kind.argv[1], "--backend", backend, "--version"],
        cwd=REPO,
        env=environ,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    lines = (probe.stderr.strip() or probe.stdout.strip() or "no output").splitlines()
    if probe.returncode != 0:  # the prelude's refusal, or why the app failed
        last = lines[-1]
        raise ValueError(last if last.startswith(COMPILED_SERVER) else f"{tree}: {last}")
    version = probe.stdout.strip()
    if "compiled" not in version:  # apps' --version names the build
        raise ValueError(f"{tree}: its echo app says {version!r}, not a compiled build")
    return version


def importable(python: str, module: str) -> bool:
    probe = subprocess.run(
        [python, "-c", f"import {module}"], capture_output=True, timeout=60, check=False
    )
    return probe.returncode == 0


def package_version(python: str, dist: str) -> str | None:
    code = f"import importlib.metadata as m; print(m.version({dist!r}))"
    probe = subprocess.run([python, "-c", code], capture_output=True, text=True, check=False)
    return probe.stdout.strip() or None if probe.returncode == 0 else None


# --------------------------------------------------------------------------- /proc sampling


def proc_cpu(pid: int) -> tuple[float, float] | None:
    """(user, system) CPU seconds of a process and all its threads, or None."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    return int(fields[11]) / CLK_TCK, int(fields[12]) / CLK_TCK


def machine_times() -> tuple[float, float] | None:
    """(busy, stolen) CPU seconds of the whole machine so far, over all CPUs.

    Busy is time spent running anything here (not idle, iowait or steal).
    Stolen is time a virtual machine's CPUs were ready but the host ran someone
    else: it slows every process at once, so it is reported per run, apart.
    """
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:9]]
    except (OSError, ValueError):
        return None
    while len(fields) < 8:  # very old kernels lack the steal column
        fields.append(0)
    busy = sum(fields) - fields[3] - fields[4] - fields[7]
    return busy / CLK_TCK, fields[7] / CLK_TCK


def machine_busy_s() -> float | None:
    """CPU seconds the whole machine has been busy (all CPUs, not idle, iowait or steal)."""
    times = machine_times()
    return times[0] if times is not None else None


def wait_quiet(limit_s: float, busy_pct: float) -> tuple[float, float | None]:
    """Wait (at most ``limit_s``) until other processes use under ``busy_pct`` of one CPU.

    For shared machines: returns (seconds waited, the last busy share seen).
    """
    start = time.monotonic()
    share = None
    while True:
        b0 = machine_busy_s()
        time.sleep(0.5)
        b1 = machine_busy_s()
        if b0 is None or b1 is None:
            return 0.0, None
        share = (b1 - b0) / 0.5 * 100
        waited = time.monotonic() - start
        if share < busy_pct or waited >= limit_s:
            return waited, share


def proc_rss_kb(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


# --------------------------------------------------------------------------- processes


def pin_prefix(cpu: int | None) -> list[str]:
    return ["taskset", "-c", str(cpu)] if cpu is not None else []


class Server:
    """A server process started on a free port; stdout/stderr go to files, never pipes.

    ``env`` adds to the environment (e.g. ``MALLOC_CONTROL_ENV``), ``prefix``
    goes before the interpreter (e.g. valgrind), and ``repo`` is the checkout
    the server runs from (its working directory and first ``PYTHONPATH`` entry).
    """

    def __init__(
        self,
        kind: ServerKind,
        python: str,
        cpu: int | None,
        workdir: Path,
        *,
        env: Mapping[str, str] | None = None,
        prefix: Sequence[str] = (),
        repo: Path = REPO,
    ) -> None:
        self.kind = kind
        self.out_path = workdir / f"{kind.name}.out"
        self.err_path = workdir / f"{kind.name}.err"
        argv = kind.argv if kind.external else [python, *kind.argv]
        environ = dict(os.environ, PYTHONUNBUFFERED="1", **(env or {}))
        environ["PYTHONPATH"] = os.pathsep.join(
            filter(None, [str(repo), environ.get("PYTHONPATH")])
        )
        with open(self.out_path, "wb") as out, open(self.err_path, "wb") as err:
            self.proc = subprocess.Popen(
                [*pin_prefix(cpu), *prefix, *argv],
                cwd=repo,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                env=environ,
            )
        self.pid = self.proc.pid
        self.port = 0
        self.exit_code: int | None = None
        self.cpu_total_s: float | None = None

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            match = READY_RE.search(self.out_path.read_text(errors="replace"))
            if match:
                self.port = int(match.group(2))
                return
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.kind.name} exited ({self.proc.returncode}) before ready")
            time.sleep(0.02)
        raise RuntimeError(f"{self.kind.name} printed no ready line within {timeout:g}s")

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, then SIGKILL if it does not stop; collects its total CPU time."""
        if self.proc.returncode is not None or self.proc.poll() is not None:
            self.exit_code = self.proc.returncode  # it had already exited
            return
        self.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                pid, status, usage = os.wait4(self.pid, os.WNOHANG)
            except ChildProcessError:
                self.exit_code = self.proc.poll()
                return
            if pid:
                self.exit_code = os.waitstatus_to_exitcode(status)
                self.proc.returncode = self.exit_code
                self.cpu_total_s = usage.ru_utime + usage.ru_stime
                return
            time.sleep(0.02)
        self.proc.kill()
        self.proc.wait()
        self.exit_code = -9

    def stderr_lines(self) -> list[str]:
        try:
            return self.err_path.read_text(errors="replace").splitlines()
        except OSError:
            return []


def run_client(
    argv: list[str], on_event: Callable[[dict[str, Any]], None], timeout: float
) -> tuple[dict[str, Any] | None, int | None, str]:
    """Run a client, calling ``on_event`` as each progress event arrives on its stderr.

    Returns (its JSON result, exit code, other stderr text). The client is
    killed if it outlives ``timeout`` (loadgen and pyclient have their own
    alarms too, so this is a backstop).
    """
    proc = subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert proc.stdout is not None and proc.stderr is not None
    other: list[str] = []
    buf = b""
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stderr, selectors.EVENT_READ)
        eof = False
        while not eof and time.monotonic() < deadline:
            if not sel.select(min(1.0, max(0.0, deadline - time.monotonic()))):
                continue
            chunk = os.read(proc.stderr.fileno(), 65536)
            eof = not chunk
            buf += chunk
            *lines, buf = buf.split(b"\n")
            for raw in lines:
                line = raw.decode(errors="replace").strip()
                try:
                    message = json.loads(line)
                except ValueError:
                    message = None
                if isinstance(message, dict) and "event" in message:
                    on_event(message)
                elif line:
                    other.append(line)
    if not eof:
        proc.kill()
    try:
        out, _ = proc.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
    result = None
    for line in reversed(out.decode(errors="replace").splitlines()):
        with contextlib.suppress(ValueError):
            parsed = json.loads(line)
            if isinstance(parsed, dict):
                result = parsed
                break
    return result, proc.returncode, "\n".join(other)


# --------------------------------------------------------------------------- warm-up

#: The warm-up every server gets before it is measured (``warm_server``).
WARM_CONNS = 4
WARM_PINGS = 200
WARM_PING_SIZE = 1024
WARM_BULK = 1 << 20
WARM_CHUNK = 256 * 1024


def warm_description(
    conns: int = WARM_CONNS,
    pings: int = WARM_PINGS,
    bulk: int = WARM_BULK,
) -> str:
    """One line saying what ``warm_server`` does, for the output and the JSON."""
    return (
        f"{conns} connections, each {pings} x {WARM_PING_SIZE} B ping-pong, "
        f"{bulk >> 10} KiB streamed in {WARM_CHUNK >> 10} KiB sends, then closed"
    )


def _pattern(n: int, seed: int) -> bytes:
    return bytes((seed + i * 7) & 0xFF for i in range(256)) * (n // 256 + 1)


def warm_server(
    host: str,
    port: int,
    *,
    conns: int = WARM_CONNS,
    pings: int = WARM_PINGS,
    bulk: int = WARM_BULK,
    timeout: float = 60.0,
) -> dict[str, Any]:
    """Put a fresh server into the state of a long-running one, then close.

    One connection at a time: ``pings`` round trips of 1 KiB (the interpreter
    specializes the hot path), then ``bulk`` bytes streamed while reading the
    echo back, so the server's reads come back full-size (256 KiB), and last a
    half-close and close, so the server frees a full-size read buffer.

    Why: CPython's ``recv(n)`` allocates n bytes and shrinks the result. A
    fresh process asking for 256 KiB is above glibc's 128 KiB mmap threshold,
    so every read is an mmap+munmap, until glibc raises its threshold, which
    it does the first time a chunk that large is freed (any full-size read,
    any closed connection). A server that has run for a while is past that;
    one measured fresh is not, and pays several microseconds per read that
    no long-running server pays.

    Every echoed byte is compared; raises OSError (or ``TimeoutError``) if the
    echo is wrong or the server does not answer within ``timeout`` seconds.
    Returns what was done: connections, bytes echoed, seconds.
    """
    start = time.monotonic()
    deadline = start + timeout
    echoed = 0
    for n in range(conns):
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            ping = _pattern(WARM_PING_SIZE, n)[:WARM_PING_SIZE]
            for _ in range(pings):
                sock.sendall(ping)
                echoed += len(_read_exactly(sock, len(ping), ping, deadline))
            echoed += _stream(sock, _pattern(bulk, n + 1)[:bulk], deadline)
            sock.shutdown(socket.SHUT_WR)
            _read_exactly(sock, 0, b"", deadline, until_eof=True)
    return {
        "conns": conns,
        "bytes_echoed": echoed,
        "seconds": round(time.monotonic() - start, 3),
    }


def _remaining(deadline: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError("warm-up: the server did not answer in time")
    return left


def _read_exactly(
    sock: socket.socket, n: int, expect: bytes, deadline: float, *, until_eof: bool = False
) -> bytes:
    """Read n bytes (or, with ``until_eof``, up to the peer's FIN) and check them."""
    got = bytearray()
    while until_eof or len(got) < n:
        sock.settimeout(_remaining(deadline))
        chunk = sock.recv(max(n - len(got), 65536))
        if not chunk:
            if until_eof:
                break
            raise OSError(f"warm-up: connection closed after {len(got)} of {n} bytes")
        got += chunk
    if bytes(got) != expect:
        raise OSError("warm-up: the echo differs from what was sent")
    return bytes(got)


def _stream(sock: socket.socket, data: bytes, deadline: float) -> int:
    """Send ``data`` in large writes while reading the echo back; check it."""
    view = memoryview(data)
    sent = 0
    got = bytearray()
    sock.setblocking(False)
    try:
        with selectors.DefaultSelector() as sel:
            sel.register(sock, selectors.EVENT_READ | selectors.EVENT_WRITE)
            while len(got) < len(data):
                if sent == len(data):
                    sel.modify(sock, selectors.EVENT_READ)
                for _key, mask in sel.select(min(1.0, _remaining(deadline))):
                    if mask & selectors.EVENT_WRITE and sent < len(data):
                        with contextlib.suppress(BlockingIOError):
                            sent += sock.send(view[sent : sent + WARM_CHUNK])
                    if mask & selectors.EVENT_READ:
                        try:
                            chunk = sock.recv(WARM_CHUNK)
                        except BlockingIOError:
                            continue
                        if not chunk:
                            raise OSError("warm-up: connection closed during the stream")
                        got += chunk
    finally:
        sock.setblocking(True)
    if bytes(got) != data:
        raise OSError("warm-up: the streamed echo differs from what was sent")
    return len(got)


# --------------------------------------------------------------------------- the client


def find_loadgen(explicit: str | None) -> Path | None:
    """An executable loadgen: the one named, the shared one, or one built from its source."""
    if explicit:
        path = Path(explicit)
        if path.suffix == ".c":
            return build_loadgen(path)
        return path if os.access(path, os.X_OK) else None
    shared = LOADGEN_DIR / "loadgen"
    if shared.is_file() and os.access(shared, os.X_OK):
        return shared
    source = LOADGEN_DIR / "loadgen.c"
    return build_loadgen(source) if source.is_file() else None


def build_loadgen(source: Path) -> Path | None:
    """Compile loadgen.c into a per-user temp dir (never into the repo); reused while fresh."""
    compiler = shutil.which("gcc") or shutil.which("cc")
    if compiler is None:
        return None
    target = Path(tempfile.gettempdir()) / f"pyreactor-bench-{os.getuid()}" / "loadgen"
    if target.exists() and target.stat().st_mtime >= source.stat().st_mtime:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    cmd = [compiler, "-O2", "-Wall", "-Wextra", "-o", str(target), str(source)]
    built = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if built.returncode != 0:
        print(f"note: building loadgen failed:\n{built.stderr}", file=sys.stderr)
        return None
    return target


# --------------------------------------------------------------------------- one run


def run_once(
    scenario: Scenario,
    kind: ServerKind,
    client_cmd: list[str],
    opts: argparse.Namespace,
    workdir: Path,
) -> dict[str, Any]:
    record: dict[str, Any] = {"scenario": scenario.name, "server": kind.name, "ok": False}
    if opts.wait_quiet > 0:
        waited, share = wait_quiet(opts.wait_quiet, opts.quiet_pct)
        record["quiet_wait_s"] = round(waited, 2)
        record["busy_before_pct"] = round(share, 1) if share is not None else None
    server = Server(kind, opts.python, opts.server_cpu_used, workdir, env=opts.server_env)
    try:
        server.wait_ready()
        record["port"] = server.port
        if opts.warm:
            record["warmup"] = warm_server("127.0.0.1", server.port)
        pid = server.pid
        samples: dict[str, Any] = {"rss_before_kb": proc_rss_kb(pid)}

        def on_event(message: dict[str, Any]) -> None:
            name = message.get("event")
            if name == "measure_start":
                samples["t0"], samples["cpu0"] = time.monotonic(), proc_cpu(pid)
                samples["times0"] = machine_times()
            elif name == "measure_end":
                samples["t1"], samples["cpu1"] = time.monotonic(), proc_cpu(pid)
                samples["times1"] = machine_times()
                samples["rss_end_kb"] = proc_rss_kb(pid)
            elif name == "ready":
                samples["rss_ready_kb"] = proc_rss_kb(pid)

        argv = [
            *pin_prefix(opts.client_cpu_used),
            *client_cmd,
            "--host",
            "127.0.0.1",
            "--port",
            str(server.port),
            *scenario.client_args(opts.duration, opts.warmup),
        ]
        limit = opts.duration + opts.warmup + 120
        result, code, other = run_client(argv, on_event, limit)
        record["client"] = result
        record["client_exit"] = code
        if other:
            record["client_stderr"] = other[-2000:]
        if result is None or not result.get("ok"):
            reason = (result or {}).get("reason") or other[-300:] or "no result"
            record["error"] = f"client failed (exit {code}): {reason}"
            return record
        record.update(derive(scenario, result, samples))
        record["ok"] = True
        return record
    except Exception as exc:  # one failed run must not end the suite
        record["error"] = f"{type(exc).__name__}: {exc}"
        return record
    finally:
        server.stop()
        record["server_exit"] = server.exit_code
        record["server_cpu_total_s"] = server.cpu_total_s
        lines = server.stderr_lines()
        if lines:
            record["server_stderr_lines"] = len(lines)
            record["server_stderr_head"] = lines[:5]


def run_units(scenario: Scenario, requests: float, client: dict[str, Any]) -> float:
    """What a run's CPU is divided by: its requests, or the MB the client got back."""
    return requests if scenario.unit == "req" else float(client.get("bytes", 0)) / 1e6


def derive(scenario: Scenario, result: dict[str, Any], s: dict[str, Any]) -> dict[str, Any]:
    """The figures of one run, from the client's result and the /proc samples."""
    out: dict[str, Any] = {
        "errors": int(result.get("errors", 0)),
        "mismatches": int(result.get("mismatches", 0)),
    }
    if scenario.mode == "idle":
        held = int(result.get("held", 0))
        before, ready = s.get("rss_before_kb"), s.get("rss_ready_kb")
        out["held"] = held
        out["rss_before_kb"] = before
        out["rss_ready_kb"] = ready
        if before is not None and ready is not None and held:
            out["rss_per_conn_bytes"] = (ready - before) * 1024 / held
        out["ping_p50_us"] = result.get("ping_p50_us")
        out["ping_p99_us"] = result.get("ping_p99_us")
        return out
    window = float(result.get("duration_s") or 0.0)
    requests = int(result.get("requests", 0))
    out["window_s"] = window
    out["requests"] = requests
    out["rps"] = float(result.get("requests_per_sec", 0.0))
    out["mbps"] = float(result.get("MB_per_sec", 0.0))
    out["rate"] = out["mbps"] if scenario.unit == "MB" else out["rps"]
    out["client_cpu_pct"] = float(result.get("client_cpu_pct", 0.0))
    out["lat_p50_us"] = result.get("lat_p50_us")
    out["lat_p99_us"] = result.get("lat_p99_us")
    out["rss_before_kb"] = s.get("rss_before_kb")
    out["rss_end_kb"] = s.get("rss_end_kb")
    cpu0, cpu1 = s.get("cpu0"), s.get("cpu1")
    if cpu0 is not None and cpu1 is not None:
        user, system = cpu1[0] - cpu0[0], cpu1[1] - cpu0[1]
        observed = s["t1"] - s["t0"]
        out["server_user_s"] = round(user, 3)
        out["server_sys_s"] = round(system, 3)
        out["server_cpu_s"] = round(user + system, 3)
        out["server_cpu_pct"] = (user + system) / observed * 100 if observed > 0 else None
        units = run_units(scenario, requests, result)
        out["cpu_per_unit_us"] = (user + system) * 1e6 / units if units else None
        # The server's own code (user time): the part a faster loop can shrink.
        # System time is the kernel's TCP work, much the same for every server.
        out["user_per_unit_us"] = user * 1e6 / units if units else None
        times0, times1 = s.get("times0"), s.get("times1")
        if times0 is not None and times1 is not None and observed > 0:
            # Everything else the machine did meanwhile: other people's work
            # (or the kernel's) competing with the two processes measured.
            client_s = out["client_cpu_pct"] * window / 100
            other = (times1[0] - times0[0]) - (user + system) - client_s
            out["other_cpu_pct"] = max(0.0, other / observed * 100)
            # Time the host took from this VM's CPUs: with a few percent of
            # steal, runs seconds apart differ by far more than servers do.
            out["steal_pct"] = (times1[1] - times0[1]) / observed * 100
    return out


# --------------------------------------------------------------------------- summary


METRICS = (
    "rate",
    "rps",
    "mbps",
    "cpu_per_unit_us",
    "user_per_unit_us",
    "server_cpu_pct",
    "client_cpu_pct",
    "lat_p50_us",
    "lat_p99_us",
    "rss_per_conn_bytes",
    "ping_p50_us",
    "other_cpu_pct",
    "steal_pct",
)


def spread(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


#: Peers every server is also compared with round by round (the issue's targets).
PAIRED_PEERS = (BASELINE, "twisted")


def paired(runs: list[dict[str, Any]], server: str, peer: str, metric: str) -> dict[str, Any]:
    """``server`` against ``peer`` round by round: the median of the per-round ratios
    of ``metric``, and in how many rounds the ratio was above 1.

    Runs of one round are seconds apart, so a drift of the machine (other
    tenants, CPU steal) that moves whole rounds cancels out of each ratio; the
    ratio of two medians taken over different rounds keeps it.
    """
    by_round: dict[int, dict[str, float]] = {}
    for run in runs:
        if run.get("ok") and run.get(metric) is not None and "round" in run:
            by_round.setdefault(run["round"], {})[run["server"]] = float(run[metric])
    ratios = [
        pair[server] / pair[peer] for pair in by_round.values() if server in pair and pair.get(peer)
    ]
    if not ratios:
        return {}
    return {
        "rounds": len(ratios),
        "median": statistics.median(ratios),
        "above_1": sum(r > 1 for r in ratios),
    }


def summarize(runs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per scenario, per server: median/min/max of each figure, ratios to asyncio, and
    round-by-round ratios to asyncio and Twisted (``paired``)."""
    summary: dict[str, dict[str, Any]] = {}
    for run in runs:
        scen = summary.setdefault(run["scenario"], {})
        entry = scen.setdefault(run["server"], {"runs": 0, "ok": 0, "errors": 0, "_r": []})
        entry["runs"] += 1
        if run.get("ok"):
            entry["ok"] += 1
            entry["errors"] += run.get("errors", 0) + run.get("mismatches", 0)
            entry["_r"].append(run)
    for scen in summary.values():
        for entry in scen.values():
            ok_runs = entry.pop("_r")
            for metric in METRICS:
                values = [float(r[metric]) for r in ok_runs if r.get(metric) is not None]
                stats = spread(values)
                if stats is not None:
                    entry[metric] = stats
        base = scen.get(BASELINE, {})
        for entry in scen.values():
            for metric, key in (
                ("rate", "rate_ratio"),
                ("cpu_per_unit_us", "cpu_ratio"),
                ("user_per_unit_us", "user_ratio"),
                ("rss_per_conn_bytes", "rss_ratio"),
            ):
                if metric in entry and metric in base and base[metric]["median"]:
                    entry[key] = entry[metric]["median"] / base[metric]["median"]
    for name, scen in summary.items():
        scen_runs = [r for r in runs if r["scenario"] == name]
        for server, entry in scen.items():
            for peer in PAIRED_PEERS:
                if peer == server or peer not in scen:
                    continue
                pairs = {
                    metric: paired(scen_runs, server, peer, metric)
                    for metric in ("rate", "cpu_per_unit_us", "user_per_unit_us")
                }
                if any(pairs.values()):
                    entry.setdefault("paired", {})[peer] = pairs
    return summary


def fmt_num(value: float | None, digits: int = 0) -> str:
    if value is None:
        return "-"
    if digits == 0:
        return f"{value:,.0f}"
    return f"{value:,.{digits}f}"


def fmt_spread(stats: dict[str, float] | None, digits: int = 0) -> str:
    if not stats:
        return "-"
    m, lo, hi = (fmt_num(stats[k], digits) for k in ("median", "min", "max"))
    return f"{m} ({lo}-{hi})"


def fmt_ratio(value: float | None) -> str:
    return f"{value:.2f}x" if value is not None else "-"


def saturation(entry: dict[str, Any]) -> str:
    srv = entry.get("server_cpu_pct", {}).get("median", 0.0)
    cli = entry.get("client_cpu_pct", {}).get("median", 0.0)
    sides = [name for name, pct in (("server", srv), ("client", cli)) if pct >= SATURATED_PCT]
    return "+".join(sides) or "neither"


def render_table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]

    def line(cells: list[str]) -> str:
        return "  ".join(
            c.rjust(w) if i else c.ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )

    return "\n".join([line(headers), line(["-" * w for w in widths]), *map(line, rows)])


def report(scenario: Scenario, scen: dict[str, Any], order: list[str]) -> str:
    names = [n for n in order if n in scen]
    if scenario.mode == "idle":
        headers = ["server", "runs ok", "RSS B/conn median (min-max)", "vs asyncio", "ping p50 us"]
        rows = [
            [
                n,
                f"{scen[n]['ok']}/{scen[n]['runs']}",
                fmt_spread(scen[n].get("rss_per_conn_bytes")),
                fmt_ratio(scen[n].get("rss_ratio")),
                fmt_num(scen[n].get("ping_p50_us", {}).get("median")),
            ]
            for n in names
        ]
    else:
        rate_name = "MB/s" if scenario.unit == "MB" else "req/s"
        per = "us/MB" if scenario.unit == "MB" else "us/req"
        headers = [
            "server",
            "ok",
            f"{rate_name} median (min-max)",
            "vs asyncio",
            f"srv CPU {per} (min-max)",
            "vs asyncio",
            f"user {per}",
            "vs asyncio",
            "srv CPU%",
            "cli CPU%",
            "other%",
            "steal%",
            "saturated",
            "p50 us",
            "p99 us",
            "errs",
        ]
        rows = []
        for n in names:
            e = scen[n]
            digits = 0 if scenario.unit == "MB" else 2
            rows.append(
                [
                    n,
                    f"{e['ok']}/{e['runs']}",
                    fmt_spread(e.get("rate"), 1 if scenario.unit == "MB" else 0),
                    fmt_ratio(e.get("rate_ratio")),
                    fmt_spread(e.get("cpu_per_unit_us"), digits),
                    fmt_ratio(e.get("cpu_ratio")),
                    fmt_num(e.get("user_per_unit_us", {}).get("median"), digits),
                    fmt_ratio(e.get("user_ratio")),
                    fmt_num(e.get("server_cpu_pct", {}).get("median")),
                    fmt_num(e.get("client_cpu_pct", {}).get("median")),
                    fmt_num(e.get("other_cpu_pct", {}).get("median")),
                    fmt_num(e.get("steal_pct", {}).get("median")),
                    saturation(e) if e.get("ok") else "-",
                    fmt_num(e.get("lat_p50_us", {}).get("median")),
                    fmt_num(e.get("lat_p99_us", {}).get("median")),
                    str(e["errors"]),
                ]
            )
    text = f"\n== {scenario.name}: {scenario.title}\n{render_table(headers, rows)}"
    if scenario.mode != "idle":
        text += "".join(paired_lines(scenario, scen, names))
    if scenario.name == TARGET_SCENARIO and BASELINE in scen:
        for n in names:
            if not n.startswith("reactor-"):
                continue
            rr, cr = scen[n].get("rate_ratio"), scen[n].get("cpu_ratio")
            rate_ok = rr is not None and rr >= TARGET_RPS_RATIO
            cpu_ok = cr is not None and cr <= TARGET_CPU_RATIO
            text += (
                f"\ntarget {n}: req/s {fmt_ratio(rr)} of asyncio (want >= {TARGET_RPS_RATIO}x: "
                f"{'PASS' if rate_ok else 'FAIL'}); CPU/req {fmt_ratio(cr)} "
                f"(want <= {TARGET_CPU_RATIO}x: {'PASS' if cpu_ok else 'FAIL'})"
            )
    return text


def paired_lines(scenario: Scenario, scen: dict[str, Any], names: list[str]) -> list[str]:
    """One line per reactor server and peer: the round-by-round ratios."""
    rate_name = "MB/s" if scenario.unit == "MB" else "req/s"
    lines = []
    for n in names:
        if not n.startswith("reactor-"):
            continue
        for peer, pairs in scen[n].get("paired", {}).items():
            rate = pairs.get("rate")
            if not rate:
                continue
            line = (
                f"\nround by round, {n} vs {peer}: {rate_name} {fmt_ratio(rate['median'])} "
                f"(higher in {rate['above_1']} of {rate['rounds']} rounds)"
            )
            for metric, label in (("cpu_per_unit_us", "CPU"), ("user_per_unit_us", "user CPU")):
                cost = pairs.get(metric)
                if cost:
                    lower = cost["rounds"] - cost["above_1"]
                    line += (
                        f", {label}/{scenario.unit} {fmt_ratio(cost['median'])} "
                        f"(lower in {lower} of {cost['rounds']})"
                    )
            lines.append(line)
        if saturation(scen[n]) == "client":
            lines.append(
                f"\n{n}: the client saturated, so {rate_name} measures the client here; "
                f"compare the server's CPU per {scenario.unit}"
            )
    return lines


# --------------------------------------------------------------------------- main


def csv(value: str) -> list[str]:
    return [item.strip() for item in value.split(",") if item.strip()]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    from reactor.backends import available_backends

    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="scenarios:\n" + "\n".join(f"  {s.name:<12} {s.title}" for s in SCENARIOS.values()),
    )
    parser.add_argument(
        "--scenarios", type=csv, default=list(SCENARIOS), help="comma list (default: all)"
    )
    parser.add_argument("--repeats", type=int, default=5, help="rounds over all servers")
    parser.add_argument("--duration", type=float, default=5.0, help="measured seconds per run")
    parser.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds first")
    parser.add_argument(
        "--servers",
        type=csv,
        default=["reactor", "asyncio", "uvloop", "twisted", "tornado", "threads", "bare"],
        help="comma list; 'reactor' means one per --backends; peers not installed are skipped",
    )
    parser.add_argument(
        "--backends", type=csv, default=available_backends(), help="reactor backends"
    )
    parser.add_argument(
        "--compiled",
        type=Path,
        metavar="TREE",
        help=f"also run {COMPILED_SERVER}: the echo app with the mypyc-compiled reactor of "
        "TREE (a copy of the checkout built with REACTOR_COMPILE=1 python setup.py "
        "build_ext --inplace), on the first of --backends; refused unless TREE's reactor "
        "has COMPILED True",
    )
    parser.add_argument(
        "--extra",
        action="append",
        default=[],
        metavar="NAME=COMMAND",
        help="another server to compare (e.g. a patched build): a command line that listens "
        "on a free port and prints 'listening on HOST:PORT'; may be repeated",
    )
    parser.add_argument("--client", choices=("auto", "loadgen", "python"), default="auto")
    parser.add_argument(
        "--stream-client",
        choices=("streamclient", "same"),
        default="streamclient",
        help="client for the stream scenario: streamclient.py (sendfile out, discarding "
        "reads in the kernel, sampled verification; cheap enough that the server "
        "saturates first) or the same as --client (default: streamclient)",
    )
    parser.add_argument("--loadgen", help="loadgen binary (or loadgen.c to build)")
    parser.add_argument(
        "--pin",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="taskset the server and client onto separate CPUs (default: when taskset "
        "exists and there are 2+ CPUs)",
    )
    parser.add_argument("--server-cpu", type=int, default=0)
    parser.add_argument("--client-cpu", type=int, default=1)
    parser.add_argument(
        "--wait-quiet",
        type=float,
        default=0.0,
        metavar="S",
        help="before each run wait up to S seconds for other processes to go quiet "
        "(for shared machines; default 0: do not wait)",
    )
    parser.add_argument(
        "--quiet-pct",
        type=float,
        default=15.0,
        help="'quiet' means other processes use under this %% of one CPU (default 15)",
    )
    parser.add_argument("--python", default=sys.executable, help="interpreter for the servers")
    parser.add_argument(
        "--warm",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="warm every server before it is measured: " + warm_description() + " (default: on; "
        "--no-warm measures fresh servers, which pay an mmap per large read)",
    )
    parser.add_argument(
        "--malloc-control",
        action="store_true",
        help="run every server with "
        + " ".join(f"{k}={v}" for k, v in MALLOC_CONTROL_ENV.items())
        + ": a control that takes glibc's mmap threshold out of the picture "
        "(the ratios should not move)",
    )
    parser.add_argument("--json", help="output file (default benchmarks/results/echo-DATE.json)")
    parser.add_argument(
        "--summarize",
        metavar="FILE",
        help="run nothing: read a results file, print its tables with this version's "
        "analysis, and rewrite its summary",
    )
    args = parser.parse_args(argv)
    args.server_env = dict(MALLOC_CONTROL_ENV) if args.malloc_control else {}
    unknown = [s for s in args.scenarios if s not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenario(s) {unknown}; choose from {list(SCENARIOS)}")
    if args.repeats < 1 or not 0 < args.duration <= 600 or not 0 <= args.warmup <= 60:
        parser.error("need --repeats >= 1, 0 < --duration <= 600, 0 <= --warmup <= 60")
    for backend in args.backends:
        if backend not in available_backends():
            parser.error(f"backend {backend!r} not available here: {available_backends()}")
    args.compiled_version = None
    if args.compiled is not None and not args.summarize:
        args.compiled = args.compiled.resolve()
        if not args.backends:
            parser.error("--compiled needs a backend (--backends)")
        try:
            args.compiled_version = probe_compiled(args.python, args.compiled, args.backends[0])
        except (ValueError, OSError, subprocess.SubprocessError) as exc:
            parser.error(f"--compiled: {exc}")
        if COMPILED_SERVER not in args.servers:
            at = args.servers.index("reactor") + 1 if "reactor" in args.servers else 0
            args.servers.insert(at, COMPILED_SERVER)
    elif COMPILED_SERVER in args.servers and not args.summarize:
        parser.error(f"server {COMPILED_SERVER} needs --compiled TREE")
    return args


def select_servers(args: argparse.Namespace) -> list[ServerKind]:
    kinds = server_kinds(args.python, args.backends)
    if args.compiled is not None:
        kinds[COMPILED_SERVER] = compiled_kind(args.compiled, args.backends[0])
    chosen: list[ServerKind] = []
    for name in args.servers:
        if name == "reactor":
            chosen += [kinds[f"reactor-{b}"] for b in args.backends]
            continue
        kind = kinds.get(name) or (
            ServerKind(name, ["-m", "apps.echo", "--port", "0", "--backend", name[8:]])
            if name.startswith("reactor-")
            else None
        )
        if kind is None:
            raise SystemExit(f"unknown server {name!r}; known: reactor, {', '.join(kinds)}")
        if kind.needs and not importable(args.python, kind.needs):
            print(f"note: {name} skipped ({kind.needs} is not installed)", file=sys.stderr)
            continue
        chosen.append(kind)
    for extra in args.extra:
        name, sep, command = extra.partition("=")
        if not sep or not name or not command:
            raise SystemExit(f"--extra wants NAME=COMMAND, got {extra!r}")
        chosen.append(ServerKind(name, shlex.split(command), external=True))
    if not any(k.name == BASELINE for k in chosen):
        print("note: asyncio is not in --servers: no ratios", file=sys.stderr)
    return chosen


def machine_info(args: argparse.Namespace, loadgen: Path | None) -> dict[str, Any]:
    cpu_model = None
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    commit = None
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, check=False
        ).stdout.strip()
    server_python = subprocess.run(
        [args.python, "-c", "import sys; print(sys.version.split()[0])"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    info: dict[str, Any] = {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "platform": platform.platform(),
        "cpu_model": cpu_model,
        "cpus": os.cpu_count(),
        "python": server_python,
        "commit": commit,
        "versions": {d: package_version(args.python, d) for d in ("uvloop", "twisted", "tornado")},
        "client": args.client_used,
        "stream_client": args.stream_client,
        "loadgen": str(loadgen) if loadgen else None,
        "pinned": args.pin_used,
        "server_cpu": args.server_cpu_used,
        "client_cpu": args.client_cpu_used,
        "repeats": args.repeats,
        "duration_s": args.duration,
        "warmup_s": args.warmup,
        "server_warmup": warm_description() if args.warm else None,
        "server_env": args.server_env,
        "argv": sys.argv[1:],
    }
    if args.compiled is not None:  # only then, so other runs' files stay as they were
        info["compiled"] = {"tree": str(args.compiled), "version": args.compiled_version}
    return info


@contextlib.contextmanager
def raised_fd_limit() -> Iterator[None]:
    """Let servers and clients (which inherit it) hold thousands of sockets."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    try:
        yield
    finally:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def backfill(run: dict[str, Any], scenario: Scenario) -> None:
    """Add the figures a run recorded by an older version of this file lacks,
    where its raw figures allow (user CPU per unit, from the user seconds)."""
    user = run.get("server_user_s")
    if "user_per_unit_us" in run or user is None or not run.get("ok"):
        return
    units = run_units(scenario, float(run.get("requests") or 0), run.get("client") or {})
    run["user_per_unit_us"] = user * 1e6 / units if units else None


def resummarize(path: Path) -> int:
    """--summarize: the tables of a results file, as this version would print them."""
    try:
        document = json.loads(path.read_text())
        runs: list[dict[str, Any]] = document["runs"]
        names = list(document["scenarios"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise SystemExit(f"{path}: not an echo_bench results file ({exc})") from exc
    scenarios = [SCENARIOS[n] for n in names if n in SCENARIOS]
    for scenario in scenarios:
        for run in runs:
            if run.get("scenario") == scenario.name:
                backfill(run, scenario)
    document["summary"] = summary = summarize(runs)
    order = list(dict.fromkeys(r["server"] for r in runs))
    for scenario in scenarios:
        if scenario.name in summary:
            print(report(scenario, summary[scenario.name], order))
    path.write_text(json.dumps(document, indent=1) + "\n")
    print(f"\nsummary rewritten: {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    sys.path.insert(0, str(REPO))
    args = parse_args(argv)
    if args.summarize:
        return resummarize(Path(args.summarize))
    if not Path("/proc/self/stat").exists():
        raise SystemExit("echo_bench needs Linux's /proc to sample the server's CPU and memory")

    loadgen = None
    if args.client in ("auto", "loadgen"):
        loadgen = find_loadgen(args.loadgen)
        if loadgen is None and args.client == "loadgen":
            raise SystemExit("no loadgen: pass --loadgen PATH (binary or loadgen.c)")
    if loadgen is not None:
        args.client_used, client_cmd = "loadgen", [str(loadgen)]
    else:
        if args.client == "auto":
            print("note: no loadgen found or buildable; using the Python client", file=sys.stderr)
        args.client_used, client_cmd = "python", [args.python, str(HERE / "pyclient.py")]
    stream_cmd = client_cmd
    if args.stream_client == "streamclient":
        stream_cmd = [sys.executable, str(HERE / "streamclient.py")]

    can_pin = shutil.which("taskset") is not None and (os.cpu_count() or 1) >= 2
    args.pin_used = can_pin if args.pin is None else args.pin and can_pin
    if args.pin and not can_pin:
        print("note: cannot pin (no taskset, or one CPU)", file=sys.stderr)
    args.server_cpu_used = args.server_cpu if args.pin_used else None
    args.client_cpu_used = args.client_cpu if args.pin_used else None

    servers = select_servers(args)
    scenarios = [SCENARIOS[name] for name in args.scenarios]
    meta = machine_info(args, loadgen)
    pinned = (
        f"server CPU {args.server_cpu}, client CPU {args.client_cpu}" if args.pin_used else "no"
    )
    print(
        f"client {args.client_used}{' ' + str(loadgen) if loadgen else ''}; "
        f"stream client: {args.stream_client}; "
        f"pinned: {pinned}; "
        f"servers: {', '.join(k.name for k in servers)}; "
        f"{args.repeats} rounds x {args.duration:g}s (+{args.warmup:g}s warm-up)",
        flush=True,
    )
    print(
        "servers warmed before measuring: "
        + (warm_description() if args.warm else "NO (--no-warm: fresh servers)")
        + "; server environment: "
        + (" ".join(f"{k}={v}" for k, v in args.server_env.items()) or "unchanged"),
        flush=True,
    )
    if args.compiled is not None:
        print(f"{COMPILED_SERVER}: {args.compiled} ({args.compiled_version})", flush=True)
    out_path = (
        Path(args.json)
        if args.json
        else RESULTS_DIR / ("echo-" + dt.datetime.now().strftime("%Y%m%d-%H%M%S") + ".json")
    )

    runs: list[dict[str, Any]] = []
    texts: list[str] = []
    total = (
        sum(len([k for k in servers if not (k.max_fds and s.conns > k.max_fds)]) for s in scenarios)
        * args.repeats
    )
    done = 0
    with raised_fd_limit(), tempfile.TemporaryDirectory(prefix="echo-bench-") as tmp:
        for scenario in scenarios:
            eligible = [k for k in servers if not (k.max_fds and scenario.conns > k.max_fds)]
            for k in servers:
                if k not in eligible:
                    print(f"note: {k.name} skipped for {scenario.name} (fd limit)", flush=True)
            for rnd in range(args.repeats):
                shift = rnd % len(eligible) if eligible else 0
                for position, kind in enumerate(eligible[shift:] + eligible[:shift]):
                    done += 1
                    cmd = stream_cmd if scenario.mode == "stream" else client_cmd
                    record = run_once(scenario, kind, cmd, args, Path(tmp))
                    record["round"] = rnd + 1
                    record["position"] = position
                    runs.append(record)
                    print(f"[{done}/{total}] {progress_line(scenario, record)}", flush=True)
                    time.sleep(0.3)  # let the sockets of the last run drain
            summary = summarize(runs)
            if scenario.name in summary:
                text = report(scenario, summary[scenario.name], [k.name for k in servers])
                texts.append(text)
                print(text, flush=True)

    summary = summarize(runs)
    document = {
        "meta": meta,
        "scenarios": {s.name: dataclasses.asdict(s) | {"unit": s.unit} for s in scenarios},
        "summary": summary,
        "runs": runs,
    }
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(document, indent=1) + "\n")
    conditions = "servers warmed: " + (meta["server_warmup"] or "no (--no-warm)")
    if args.server_env:
        conditions += "; " + " ".join(f"{k}={v}" for k, v in args.server_env.items())
    print(
        "\n".join(["", "==== summary", conditions, *texts, "", f"results: {out_path}"]),
        flush=True,
    )
    return 0 if all(r.get("ok") for r in runs) else 1


def progress_line(scenario: Scenario, r: dict[str, Any]) -> str:
    head = f"{scenario.name} round {r['round']} {r['server']}:"
    if not r.get("ok"):
        return f"{head} FAILED: {r.get('error')}"
    if scenario.mode == "idle":
        per = r.get("rss_per_conn_bytes")
        return f"{head} {r['held']} held, RSS {fmt_num(per)} B/conn"
    per = "us/MB" if scenario.unit == "MB" else "us/req"
    rate = f"{r['mbps']:,.1f} MB/s" if scenario.unit == "MB" else f"{r['rps']:,.0f} req/s"
    warn = ""
    if r.get("server_stderr_lines"):
        warn = f" [server stderr: {r['server_stderr_lines']} lines]"
    return (
        f"{head} {rate}, server {fmt_num(r.get('cpu_per_unit_us'), 2)} {per} "
        f"({fmt_num(r.get('server_cpu_pct'))}% CPU, {fmt_num(r.get('server_sys_s'), 2)}s sys), "
        f"client {r['client_cpu_pct']:.0f}% CPU, other {fmt_num(r.get('other_cpu_pct'))}%, "
        f"steal {fmt_num(r.get('steal_pct'))}%, "
        f"errors {r['errors']}{warn}"
    )


if __name__ == "__main__":
    sys.exit(main())
