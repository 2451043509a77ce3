"""TLS echo cost: this reactor against asyncio, uvloop and Twisted, each serving TLS.

    python benchmarks/tls_bench.py                              # everything, ~25 min
    python benchmarks/tls_bench.py --parts native --repeats 3 --duration 4
    python benchmarks/tls_bench.py --parts callgrind --profile 30
    python benchmarks/tls_bench.py --parts callgrind-stream     # instructions per 256 KiB
    python benchmarks/tls_bench.py --parts callgrind-handshake   # instructions per connection
    python benchmarks/tls_bench.py --parts callgrind --servers reactor,reactor-plain

Five figures, every server serving the same echo over TLS 1.3 with a
certificate that trustme makes at run time (never a checked-in key). The
pseudo-server ``reactor-plain`` is the reactor's echo without TLS, driven by
the same client with ``--plain``: it puts the reactor's plain-TCP figure in
the same run as its TLS one (ping-pong and stream only), and every table that
has both prints the TLS/plain ratio (the issue's target: at most 1.6x).

1. ``callgrind``: user-space instructions per 1 KiB request, from
   callgrind_bench.py's two runs of N and N + D requests (handshakes,
   start-up and warm-up cancel out), every server in the same run.
   ``callgrind-stream`` does the same for one connection streaming 256 KiB
   chunks (echo_bench's ``stream`` scenario over TLS): instructions per
   chunk, and per MiB. ``callgrind-handshake`` does the same with N and
   N + D new TLS connections (100 at a time: handshake, one 1 KiB
   ping-pong, close): instructions per connection.
2. ``tls-pingpong-1k``: requests/s and server CPU per request, 100
   connections, 1 KiB ping-pong, from a plain run (echo_bench.py's
   ``run_once``: CPU sampled over the client's measured window).
   ``tls-stream``: MB/s and server CPU per MB, one connection streaming
   256 KiB chunks with up to 4 MiB not yet echoed; the client decrypts and
   compares every byte (over TLS the bytes cannot be dropped in the kernel,
   as streamclient.py does in plain TCP).
3. ``tls-handshake``: new TLS connections per second and server CPU per
   connection: 16 client slots, each in a loop of connect, full handshake
   (no resumption), one 64 B ping-pong, close_notify both ways, close.
4. ``idle``: server RSS per idle TLS connection, from the difference of
   two runs holding ``--idle-conns`` and twice as many connections (what
   the warm-up and start-up leave in the heap cancels out).

The client is ``tls_loadgen.c`` (built here with the system's OpenSSL):
loadgen's flags and JSON, the TLS work in C, so the server saturates first;
the tables' ``saturated`` column says which side did. Each server is warmed
by the client before anything is measured: echo_bench.py's warm-up, over TLS.

Run by hand, never in CI; loopback only; every run bounded (see
benchmarks/README.md for the columns and the caveats).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shlex
import shutil
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import callgrind_bench
import tls_floor
from echo_bench import (
    BASELINE,
    RESULTS_DIR,
    SCENARIOS,
    SERVERS_DIR,
    WARM_BULK,
    WARM_CONNS,
    WARM_PING_SIZE,
    WARM_PINGS,
    Scenario,
    ServerKind,
    csv,
    fmt_num,
    fmt_ratio,
    importable,
    machine_info,
    package_version,
    paired,
    raised_fd_limit,
    render_table,
    report,
    run_once,
    summarize,
)

HERE = Path(__file__).resolve().parent
#: The reactor's echo over plain TCP, for the TLS/plain ratio (same client, ``--plain``).
PLAIN = "reactor-plain"
CLIENT_SOURCE = HERE / "tls_loadgen.c"
SERVER_NAMES = ("reactor", PLAIN, "asyncio", "uvloop", "twisted", "aio_tls")
#: The servers' names in the results (the reactor's carries its backend).
TLS_REACTOR = "reactor-epoll"
#: The callgrind parts' scenarios (echo_bench's: 100 connections of 1 KiB, and
#: one connection streaming 256 KiB chunks).
CALLGRIND_SCENARIO = "pingpong-1k"
STREAM_SCENARIO = "stream"
PARTS = ("callgrind", "callgrind-stream", "callgrind-handshake", "native")
#: The scenarios the plain-TCP reactor runs in (it has no handshake to count).
PLAIN_SCENARIOS = frozenset({CALLGRIND_SCENARIO, STREAM_SCENARIO, "tls-pingpong-1k", "tls-stream"})
#: The issue's targets: TLS CPU per request at most this many times plain TCP's...
TARGET_VS_PLAIN = 1.6
#: ...and at most asyncio's TLS figure.
TARGET_VS_ASYNCIO = 1.0
#: The client's warm-up, echo_bench.warm_server's amounts over TLS.
WARM_WRITE = 64 * 1024


def warm_args() -> list[str]:
    return [
        "--warm-conns",
        str(WARM_CONNS),
        "--warm-pings",
        str(WARM_PINGS),
        "--warm-bulk",
        str(WARM_BULK),
    ]


def warm_text() -> str:
    return (
        f"by the client, over TLS: {WARM_CONNS} connections one after another, each "
        f"{WARM_PINGS} x {WARM_PING_SIZE} B ping-pong, {WARM_BULK >> 10} KiB echoed in "
        f"{WARM_WRITE >> 10} KiB writes, then close_notify both ways"
    )


def native_scenarios(idle_conns: int, handshake_conns: int) -> list[Scenario]:
    pingpong = SCENARIOS["pingpong-1k"]
    return [
        Scenario("tls-pingpong-1k", "100 TLS connections, 1 KiB ping-pong", pingpong.conns, 1024),
        Scenario(
            "tls-stream",
            "1 TLS connection streaming 256 KiB writes",
            1,
            SCENARIOS[STREAM_SCENARIO].size,
            mode="stream",
        ),
        Scenario(
            "tls-handshake",
            f"{handshake_conns} slots: connect, full TLS handshake, 64 B ping-pong, close",
            handshake_conns,
            64,
        ),
        Scenario(
            f"idle-{idle_conns}",
            f"{idle_conns:,} idle TLS connections",
            idle_conns,
            64,
            mode="idle",
        ),
        Scenario(
            f"idle-{2 * idle_conns}",
            f"{2 * idle_conns:,} idle TLS connections",
            2 * idle_conns,
            64,
            mode="idle",
        ),
    ]


# --------------------------------------------------------------------------- set-up


def make_certificates(directory: Path) -> dict[str, str]:
    """A throw-away CA and a server certificate for 127.0.0.1 and localhost (trustme)."""
    import trustme

    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    paths = {name: str(directory / name) for name in ("ca.pem", "server.pem", "server.key")}
    ca.cert_pem.write_to_path(paths["ca.pem"])
    cert.private_key_pem.write_to_path(paths["server.key"])
    for n, pem in enumerate(cert.cert_chain_pems):
        pem.write_to_path(paths["server.pem"], append=n > 0)
    return paths


def build_client(source: Path = CLIENT_SOURCE) -> Path:
    """Compile tls_loadgen.c against OpenSSL into a per-user temp dir (never the repo)."""
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        raise SystemExit("tls_bench needs a C compiler and OpenSSL's headers (libssl-dev)")
    target = Path(tempfile.gettempdir()) / f"pyreactor-bench-{os.getuid()}" / source.stem
    if target.exists() and target.stat().st_mtime >= source.stat().st_mtime:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    cmd = [compiler, "-O2", "-Wall", "-Wextra", "-o", str(target), str(source)]
    built = subprocess.run([*cmd, "-lssl", "-lcrypto"], capture_output=True, text=True, check=False)
    if built.returncode != 0:
        raise SystemExit(
            f"building {source.name} failed (is libssl-dev installed?):\n{built.stderr}"
        )
    return target


def client_args(client: Path, cafile: str, plain: bool) -> list[str]:
    """The client's command for one server: TLS against ``cafile``, or ``--plain``."""
    return [str(client), *(["--plain"] if plain else ["--cafile", cafile]), *warm_args()]


def client_wrapper(
    client: Path, cafile: str, directory: Path, extra: tuple[str, ...] = (), plain: bool = False
) -> Path:
    """An executable that runs the client with the CA and the warm-up (and ``extra``):
    it takes loadgen's flags, so callgrind_bench's runs drive it in loadgen's place."""
    name = "tls_loadgen" + "_plain" * plain + "".join(extra).replace("-", "_")
    script = directory / (name + ".sh")
    command = shlex.join([*client_args(client, cafile, plain), *extra])
    script.write_text(f'#!/bin/sh\nexec {command} "$@"\n')
    script.chmod(0o755)
    return script


def server_kinds(certs: dict[str, str]) -> dict[str, ServerKind]:
    """Each server's TLS echo: the script in servers/ with ``--tls-cert``/``--tls-key``."""
    tls = ["--tls-cert", certs["server.pem"], "--tls-key", certs["server.key"]]
    kinds = {}
    for name in SERVER_NAMES:
        script = SERVERS_DIR / ("reactor_echo.py" if name == PLAIN else f"{name}_echo.py")
        argv = [str(script), "--host", "127.0.0.1", "--port", "0"]
        if name == PLAIN:
            kinds[name] = ServerKind(PLAIN, [*argv, "--backend", "epoll"])
            continue
        argv += tls
        if name == "reactor":
            kinds[name] = ServerKind(TLS_REACTOR, [*argv, "--backend", "epoll"])
        else:
            kinds[name] = ServerKind(name, argv, callgrind_bench.NEEDS.get(name))
    return kinds


# --------------------------------------------------------------------------- the parts


def run_callgrind(
    servers: list[ServerKind],
    opts: argparse.Namespace,
    wrappers: dict[bool, Path],
    workdir: Path,
    what: str,
    scenario: str = CALLGRIND_SCENARIO,
) -> dict[str, Any]:
    """Figure 1: callgrind_bench's N and N + D runs of every server, with the TLS client
    (``wrappers[plain]``; ``what``: "request", "256 KiB chunk", or "connection" when
    the wrapper makes a connection each) in echo_bench's ``scenario``."""
    runs = []
    for repeat in range(1, opts.cg_repeats + 1):
        for kind in servers:
            plain = kind.name == PLAIN
            if plain and scenario not in PLAIN_SCENARIOS:
                continue
            record = callgrind_bench.measure(kind, scenario, opts, wrappers[plain], workdir, repeat)
            runs.append(record)
            if record["ok"]:
                line = f"{record['ir_per_request']:,.0f} instructions/{what}"
            else:
                line = f"FAILED: {record.get('error')}"
            print(f"callgrind {what} repeat {repeat} {kind.name}: {line}", flush=True)
            for fn, ir in record.get("profile", []):
                print(f"    {ir:10,.1f}  {fn}", flush=True)
    summary = callgrind_bench.summarize(runs)
    load = SCENARIOS[scenario].title.replace("connection", "TLS connection")
    title = f"{load}, instructions per {what}"
    entries = summary.get(scenario, {})
    print(callgrind_bench.report(f"tls {what}", title, entries, opts.order), flush=True)
    document = {"unit": what, "N": opts.requests, "D": opts.delta, "summary": summary, "runs": runs}
    ir = {name: e["ir_per_request"]["median"] for name, e in entries.items() if e.get("ok")}
    if TLS_REACTOR in ir and ir.get(PLAIN):
        document["tls_vs_plain"] = ir[TLS_REACTOR] / ir[PLAIN]
        print(
            f"reactor TLS / plain TCP, same client: {document['tls_vs_plain']:.2f}x "
            f"instructions per {what} ({ir[TLS_REACTOR]:,.0f} vs {ir[PLAIN]:,.0f})",
            flush=True,
        )
    if scenario == STREAM_SCENARIO:
        chunks_per_mib = (1 << 20) / SCENARIOS[scenario].size
        document["ir_per_mib"] = {name: value * chunks_per_mib for name, value in ir.items()}
        per_mib = ", ".join(f"{n} {v:,.0f}" for n, v in document["ir_per_mib"].items())
        print(f"instructions per MiB: {per_mib}", flush=True)
    return document


def run_native(
    servers: list[ServerKind],
    opts: argparse.Namespace,
    client: dict[bool, list[str]],
    workdir: Path,
) -> dict[str, Any]:
    """Figures 2-4: echo_bench's run_once, round-robin over the servers, order rotating."""
    runs: list[dict[str, Any]] = []
    scenarios = native_scenarios(opts.idle_conns, opts.handshake_conns)
    targets: dict[str, Any] = {}
    floor_us = measure_floor()
    for scenario in scenarios:
        extra = ["--handshakes"] if scenario.name == "tls-handshake" else []
        these = [k for k in servers if k.name != PLAIN or scenario.name in PLAIN_SCENARIOS]
        for rnd in range(opts.repeats):
            shift = rnd % len(these)
            for position, kind in enumerate(these[shift:] + these[:shift]):
                cmd = [*client[kind.name == PLAIN], *extra]
                record = run_once(scenario, kind, cmd, opts, workdir)
                record.update(round=rnd + 1, position=position)
                runs.append(record)
                print(f"{scenario.name} round {rnd + 1} {kind.name}: {brief(record)}", flush=True)
                time.sleep(0.3)  # let the last run's sockets drain
        summary = summarize(runs)
        print(report(scenario, summary[scenario.name], opts.order), flush=True)
        if scenario.name in PLAIN_SCENARIOS:
            floor = floor_us if scenario.name == "tls-pingpong-1k" else None
            targets[scenario.name] = target_lines(scenario, runs, floor)
    idle = idle_difference(runs, scenarios[-2], scenarios[-1])
    print(idle_table(idle, opts.order), flush=True)
    return {
        "scenarios": {s.name: {**vars(s), "unit": s.unit} for s in scenarios},
        "summary": summarize(runs),
        "idle_difference": idle,
        "targets": targets,
        "floor_us_per_request": floor_us,
        "runs": runs,
    }


def measure_floor(repeats: int = 5, n: int = 100_000) -> float:
    """The ssl module's own CPU per 1 KiB echo, in µs (tls_floor.py), median of ``repeats``."""
    times = sorted(tls_floor.run_floor(n) / n * 1e6 for _ in range(repeats))
    floor = times[len(times) // 2]
    print(f"floor: the ssl calls of a 1 KiB echo alone cost {floor:.2f} us (tls_floor.py)")
    return floor


def target_lines(
    scenario: Scenario, runs: list[dict[str, Any]], floor_us: float | None = None
) -> dict[str, Any]:
    """The reactor's TLS CPU per unit against its plain TCP and asyncio's TLS, round by
    round (echo_bench.paired: the runs of one round are seconds apart); printed. With
    ``floor_us`` (tls_floor.py), also the lowest TLS/plain ratio any server on
    ``ssl.MemoryBIO`` could reach in those rounds: (plain + floor) / plain."""
    mine = [r for r in runs if r["scenario"] == scenario.name]
    out: dict[str, Any] = {}
    plain = [r["cpu_per_unit_us"] for r in mine if r["server"] == PLAIN and r.get("ok")]
    if floor_us is not None and plain:
        bound = statistics.median((p + floor_us) / p for p in plain)
        out["lowest_possible_vs_plain"] = bound
        print(
            f"bound ({scenario.name}): with no Python around the ssl calls at all, TLS would "
            f"cost {bound:.2f}x plain TCP (plain {statistics.median(plain):.2f} us + the "
            f"ssl calls' {floor_us:.2f} us)",
            flush=True,
        )
    for peer, limit, label in (
        (PLAIN, TARGET_VS_PLAIN, "its plain TCP"),
        (BASELINE, TARGET_VS_ASYNCIO, "asyncio's TLS"),
    ):
        pair = paired(mine, TLS_REACTOR, peer, "cpu_per_unit_us")
        if not pair:
            continue
        out[peer] = {**pair, "target": limit, "met": pair["median"] <= limit}
        print(
            f"target ({scenario.name}): reactor TLS CPU/{scenario.unit} = "
            f"{pair['median']:.2f}x {label}, round by round ({pair['rounds']} rounds; "
            f"target <= {limit:g}x: {'met' if out[peer]['met'] else 'NOT met'})",
            flush=True,
        )
    return out


def brief(record: dict[str, Any]) -> str:
    if not record.get("ok"):
        return f"FAILED: {record.get('error')}"
    if "held" in record:
        return f"{record['held']} held, RSS +{record['rss_ready_kb'] - record['rss_before_kb']} KiB"
    rate = f"{record['mbps']:,.1f} MB/s" if record["scenario"] == "tls-stream" else None
    return (
        f"{rate or format(record['rps'], ',.0f') + '/s'}, "
        f"server {fmt_num(record.get('cpu_per_unit_us'), 1)} us each "
        f"({fmt_num(record.get('server_cpu_pct'))}% CPU), client {record['client_cpu_pct']:.0f}%, "
        f"errors {record['errors'] + record['mismatches']}"
    )


def idle_difference(
    runs: list[dict[str, Any]], small: Scenario, large: Scenario
) -> dict[str, dict[str, Any]]:
    """Figure 4: RSS per idle connection, (growth(2K) - growth(K)) / (2K - K) per server,
    from the medians of each size's growth (RSS when all are answered minus RSS at start)."""
    growth: dict[str, dict[str, list[tuple[float, int]]]] = {}
    for run in runs:
        if run.get("ok") and run["scenario"] in (small.name, large.name):
            before, ready = run.get("rss_before_kb"), run.get("rss_ready_kb")
            if before is not None and ready is not None and run.get("held"):
                per_server = growth.setdefault(run["server"], {})
                per_server.setdefault(run["scenario"], []).append(
                    ((ready - before) * 1024.0, int(run["held"]))
                )
    out: dict[str, dict[str, Any]] = {}
    for server, sizes in growth.items():
        if small.name not in sizes or large.name not in sizes:
            continue
        g1 = statistics.median(g for g, _ in sizes[small.name])
        g2 = statistics.median(g for g, _ in sizes[large.name])
        n1 = statistics.median(n for _, n in sizes[small.name])
        n2 = statistics.median(n for _, n in sizes[large.name])
        out[server] = {
            "growth_small_bytes": g1,
            "growth_large_bytes": g2,
            "held": [n1, n2],
            "per_conn_bytes": (g2 - g1) / (n2 - n1) if n2 != n1 else None,
            "naive_per_conn_bytes": g1 / n1 if n1 else None,
        }
    base = out.get(BASELINE, {}).get("per_conn_bytes")
    for entry in out.values():
        mine = entry["per_conn_bytes"]
        entry["ratio"] = mine / base if base and mine is not None else None
    return out


def idle_table(idle: dict[str, dict[str, Any]], order: list[str]) -> str:
    headers = ["server", "RSS B/idle TLS conn (difference)", "vs asyncio", "growth/conn, small run"]
    rows = [
        [
            name,
            fmt_num(idle[name]["per_conn_bytes"]),
            fmt_ratio(idle[name]["ratio"]),
            fmt_num(idle[name]["naive_per_conn_bytes"]),
        ]
        for name in order
        if name in idle
    ]
    return "\n== idle: server RSS per idle TLS connection\n" + render_table(headers, rows)


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--parts", type=csv, default=list(PARTS), help=",".join(PARTS))
    parser.add_argument("--servers", type=csv, default=list(SERVER_NAMES), help="comma list")
    parser.add_argument("--repeats", type=int, default=3, help="native rounds (default 3)")
    parser.add_argument("--duration", type=float, default=4.0, help="measured s per native run")
    parser.add_argument("--warmup", type=float, default=1.0, help="unmeasured s of load first")
    parser.add_argument("--idle-conns", type=int, default=1000, help="and twice as many")
    parser.add_argument("--handshake-conns", type=int, default=16, help="handshake slots")
    parser.add_argument("--requests", "-N", type=int, default=20000, help="callgrind N")
    parser.add_argument("--delta", "-D", type=int, default=20000, help="callgrind D")
    parser.add_argument("--cg-repeats", type=int, default=1, help="callgrind pairs per server")
    parser.add_argument("--stream-requests", type=int, default=200, help="callgrind-stream N")
    parser.add_argument("--stream-delta", type=int, default=200, help="callgrind-stream D")
    parser.add_argument("--hs-requests", type=int, default=1000, help="callgrind-handshake N")
    parser.add_argument("--hs-delta", type=int, default=1000, help="callgrind-handshake D")
    parser.add_argument("--profile", type=int, default=0, metavar="TOP", help="callgrind profile")
    parser.add_argument("--keep", metavar="DIR", help="keep the callgrind output files here")
    parser.add_argument("--python", default=sys.executable, help="interpreter for the servers")
    parser.add_argument(
        "--pin", action=argparse.BooleanOptionalAction, default=None, help="taskset (default: yes)"
    )
    parser.add_argument("--server-cpu", type=int, default=0)
    parser.add_argument("--client-cpu", type=int, default=1)
    parser.add_argument("--wait-quiet", type=float, default=0.0, metavar="S")
    parser.add_argument("--quiet-pct", type=float, default=15.0)
    parser.add_argument("--time-limit", type=float, default=300.0, help="s per callgrind run")
    parser.add_argument("--json", help="output (default benchmarks/results/tls-DATE.json)")
    args = parser.parse_args(argv)
    bad = [p for p in args.parts if p not in PARTS] + [
        s for s in args.servers if s not in SERVER_NAMES
    ]
    if bad:
        parser.error(f"unknown {bad}; parts: {list(PARTS)}, servers: {list(SERVER_NAMES)}")
    counts = (args.repeats, args.cg_repeats, args.requests, args.delta, args.hs_requests)
    if min(*counts, args.hs_delta, args.stream_requests, args.stream_delta) < 1:
        parser.error("need --repeats, --cg-repeats, --requests, --delta, --hs-*, --stream-* >= 1")
    if not 0 < args.duration <= 600 or not 0 <= args.warmup <= 60:
        parser.error("need 0 < --duration <= 600 and 0 <= --warmup <= 60")
    if not 1 <= args.idle_conns <= 20000 or not 1 <= args.handshake_conns <= 1000:
        parser.error("need 1 <= --idle-conns <= 20000 and 1 <= --handshake-conns <= 1000")
    if not 0 < args.time_limit <= 3600 or args.profile < 0:
        parser.error("need 0 < --time-limit <= 3600 and --profile >= 0")
    # What echo_bench's run_once and callgrind_bench's count_run read from their options:
    # the warm-up is the client's (over TLS), so theirs (plain TCP) is off.
    can_pin = shutil.which("taskset") is not None and (os.cpu_count() or 1) >= 2
    args.pin_used = can_pin if args.pin is None else args.pin and can_pin
    args.server_cpu_used = args.server_cpu if args.pin_used else None
    args.client_cpu_used = args.client_cpu if args.pin_used else None
    args.warm = False
    args.server_env = {}
    args.project = HERE.parent
    args.valgrind_arg = []
    args.start_limit, args.stop_limit = 180.0, 120.0
    args.client_used, args.stream_client = "tls_loadgen", None
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if any(p.startswith("callgrind") for p in args.parts) and shutil.which("valgrind") is None:
        raise SystemExit("the callgrind part needs valgrind (apt-get install -y valgrind)")
    client = build_client()
    document: dict[str, Any] = {}
    with raised_fd_limit(), tempfile.TemporaryDirectory(prefix="tls-bench-") as tmp:
        workdir = Path(tmp)
        certs = make_certificates(workdir)
        kinds = server_kinds(certs)
        servers = []
        for name in args.servers:
            kind = kinds[name]
            if kind.needs and not importable(args.python, kind.needs):
                print(f"note: {name} skipped ({kind.needs} is not installed)", file=sys.stderr)
                continue
            servers.append(kind)
        args.order = [k.name for k in servers]
        meta = machine_info(args, client)
        meta.update(
            server_warmup=warm_text(),
            openssl={
                "python_ssl": ssl.OPENSSL_VERSION,
                "client": subprocess.run(
                    ["openssl", "version"], capture_output=True, text=True, check=False
                ).stdout.strip(),
            },
            tls_versions={d: package_version(args.python, d) for d in ("pyOpenSSL", "trustme")},
            certificate="trustme CA and a server certificate for 127.0.0.1/localhost, made per run",
        )
        document["meta"] = meta
        print(
            f"servers: {', '.join(args.order)}; pinned: {args.pin_used}; warmed {warm_text()}",
            flush=True,
        )
        ca = certs["ca.pem"]
        if "callgrind" in args.parts:
            wrappers = {p: client_wrapper(client, ca, workdir, plain=p) for p in (False, True)}
            document["callgrind"] = run_callgrind(servers, args, wrappers, workdir, "request")
        if "callgrind-stream" in args.parts:
            extra = ("--mode", "stream")
            wrappers = {p: client_wrapper(client, ca, workdir, extra, p) for p in (False, True)}
            counts = argparse.Namespace(**vars(args))
            counts.requests, counts.delta = args.stream_requests, args.stream_delta
            document["callgrind_stream"] = run_callgrind(
                servers, counts, wrappers, workdir, "256 KiB chunk", STREAM_SCENARIO
            )
        if "callgrind-handshake" in args.parts:
            wrapper = client_wrapper(client, ca, workdir, ("--handshakes",))
            counts = argparse.Namespace(**vars(args))
            counts.requests, counts.delta = args.hs_requests, args.hs_delta
            handshakers = [k for k in servers if k.name != PLAIN]
            document["callgrind_handshake"] = run_callgrind(
                handshakers, counts, {False: wrapper}, workdir, "connection"
            )
        if "native" in args.parts:
            commands = {p: client_args(client, ca, p) for p in (False, True)}
            document["native"] = run_native(servers, args, commands, workdir)
    out_path = Path(args.json) if args.json else RESULTS_DIR / f"tls-{dt.date.today()}.json"
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(document, indent=1) + "\n")
    print(f"\nresults: {out_path}")
    names = ("callgrind", "callgrind_stream", "callgrind_handshake", "native")
    parts = [document.get(p, {}) for p in names]
    return 0 if all(r.get("ok") for part in parts for r in part.get("runs", [])) else 1


if __name__ == "__main__":
    sys.exit(main())
