"""Instructions per request: each echo server under valgrind's callgrind, counted, not timed.

    python benchmarks/callgrind_bench.py                          # every scenario and server
    python benchmarks/callgrind_bench.py --scenarios pingpong-1k --servers reactor,asyncio
    python benchmarks/callgrind_bench.py --project /tmp/baseline  # another checkout's reactor
    python benchmarks/callgrind_bench.py --compiled /tmp/built    # also the compiled build

``--compiled DIR`` adds the server ``reactor-compiled``: the same echo app
with DIR first on ``sys.path``, where DIR holds the compiled ``reactor``
package (a copy of the checkout built in place with
``REACTOR_COMPILE=1 python setup.py build_ext --inplace``, or the
site-packages of a venv where ``REACTOR_COMPILE=1 pip install .`` put it),
so the pure and the compiled build are counted in one run.

Each server runs under ``valgrind --tool=callgrind``, which counts the
user-space instructions the process executes (``Ir``: the interpreter, the C
library, C extensions; not the kernel). A run starts the server, warms it
(``echo_bench.warm_server``), drives exactly N requests with the C loadgen
(``--requests N``, outside valgrind), stops the server and reads the total
``Ir`` from the callgrind output. A second run, with a fresh server, drives
N + D requests the same way. The figure is

    (Ir(N + D) - Ir(N)) / D

instructions per request: start-up, imports, warm-up, the connections' set-up
and the shutdown are the same in both runs and cancel out. Unlike CPU time it
does not depend on the machine's other load, CPU steal or frequency, so a
change of a few percent shows. It does not see the kernel (system calls cost
the same for servers that make the same calls; echo_bench.py measures those).

Run by hand, never in CI; see benchmarks/README.md ("Instructions per
request"). Every run is bounded: a time limit on the client, on the warm-up,
and on the server's start and stop (SIGKILL after that), and loopback only.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from echo_bench import (
    MALLOC_CONTROL_ENV,
    SCENARIOS,
    Server,
    ServerKind,
    find_loadgen,
    fmt_num,
    fmt_ratio,
    importable,
    package_version,
    pin_prefix,
    render_table,
    run_client,
    warm_description,
    warm_server,
)

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
SERVERS_DIR = HERE / "servers"
RESULTS_DIR = HERE / "results"

BASELINE = "asyncio"
#: Scenarios echo_bench.py also has, by the same names; all are request/response.
CALLGRIND_SCENARIOS = ("pingpong-1k", "pingpong-64", "pipeline-16")
SERVER_NAMES = ("reactor", "asyncio", "uvloop", "twisted", "bare")
COMPILED_SERVER = "reactor-compiled"
#: Modules a peer needs (skipped with a note when they do not import).
NEEDS = {"uvloop": "uvloop", "twisted": "twisted", "tornado": "tornado"}


# --------------------------------------------------------------------------- pure functions


def parse_callgrind_total(text: str, event: str = "Ir") -> int:
    """The total count of ``event`` in a callgrind output file.

    The ``totals:`` line (written at the end) if there is one, else the
    ``summary:`` line; the position of ``event`` comes from the ``events:``
    line. Raises ValueError if the file has neither, or not that event.
    """
    events: list[str] | None = None
    summary: list[str] | None = None
    totals: list[str] | None = None
    for line in text.splitlines():
        if line.startswith("events:"):
            events = line.split(":", 1)[1].split()
        elif line.startswith("summary:"):
            summary = line.split(":", 1)[1].split()
        elif line.startswith("totals:"):
            totals = line.split(":", 1)[1].split()
    counts = totals if totals is not None else summary
    if counts is None:
        raise ValueError("no totals: or summary: line (did the server exit cleanly?)")
    names = events if events is not None else ["Ir"]
    if event not in names:
        raise ValueError(f"event {event!r} not counted; events: {names}")
    index = names.index(event)
    if index >= len(counts):
        return 0  # callgrind leaves off trailing zero counts
    return int(counts[index])


_NAME_KEYS = {"ob": "ob", "fn": "fn", "cob": "cob", "cfn": "cfn"}


def parse_self_costs(text: str, event: str = "Ir") -> dict[str, int]:
    """Self cost of ``event`` per function in a callgrind output file.

    Functions are named ``name [object file name]``. The file's name
    compression (``fn=(12) name`` once, ``fn=(12)`` after) is undone, and the
    cost line after each ``calls=`` line (the callee's inclusive cost) is not
    counted as the caller's own.
    """
    positions = 1
    index = 0
    names: dict[tuple[str, str], str] = {}  # (kind, id) -> name, kind "ob" or "fn"
    obj = fn = ""
    costs: dict[str, int] = {}
    skip_next = False
    for line in text.splitlines():
        if not line:
            continue
        head = line[0]
        if head.isdigit() or head in "+-*":
            if skip_next:
                skip_next = False
                continue
            fields = line.split()
            if len(fields) > positions + index:
                key = f"{fn} [{obj}]"
                costs[key] = costs.get(key, 0) + int(fields[positions + index])
            continue
        key, sep, value = line.partition("=")
        if not sep:
            key, sep, value = line.partition(":")
            if key == "positions":
                positions = len(value.split())
            elif key == "events":
                events = value.split()
                if event not in events:
                    raise ValueError(f"event {event!r} not counted; events: {events}")
                index = events.index(event)
            continue
        if key == "calls":
            skip_next = True
            continue
        kind = _NAME_KEYS.get(key)
        if kind is None:
            continue
        name = _resolve_name(names, kind[-2:], value)
        if kind == "ob":
            obj = Path(name).name
        elif kind == "fn":
            fn = name
    return costs


def _resolve_name(names: dict[tuple[str, str], str], kind: str, value: str) -> str:
    """``(id) name`` defines a compressed name, ``(id)`` uses it, ``name`` is plain."""
    value = value.strip()
    if value.startswith("("):
        ident, _, rest = value[1:].partition(")")
        rest = rest.strip()
        if rest:
            names[kind, ident] = rest
            return rest
        return names.get((kind, ident), f"({ident})")
    return value


def profile_difference(
    small: dict[str, int], large: dict[str, int], delta: int, top: int = 25
) -> list[tuple[str, float]]:
    """The functions whose self cost grows most per request between two runs:
    (function, instructions per request), largest first, at most ``top``."""
    if delta <= 0:
        raise ValueError("delta must be > 0")
    diff = {fn: (large.get(fn, 0) - small.get(fn, 0)) / delta for fn in small.keys() | large}
    ranked = sorted(diff.items(), key=lambda item: (-item[1], item[0]))
    return ranked[:top]


def per_request(ir_small: int, ir_large: int, delta: int) -> float:
    """Instructions per request from two runs that differ by ``delta`` requests."""
    if delta <= 0:
        raise ValueError("delta must be > 0")
    return (ir_large - ir_small) / delta


def fixed_cost(ir_small: int, requests: int, per_req: float) -> float:
    """What the smaller run spent besides its requests: start-up, warm-up, connects, exit."""
    return ir_small - requests * per_req


def summarize(
    runs: Iterable[dict[str, Any]], baseline: str = BASELINE
) -> dict[str, dict[str, Any]]:
    """Per scenario and server: median (min, max) instructions per request over the
    repeats, and the ratio of the medians to ``baseline``'s."""
    per: dict[str, dict[str, list[float]]] = {}
    fixed: dict[str, dict[str, list[float]]] = {}
    tried: dict[str, dict[str, int]] = {}
    for run in runs:
        scen, server = run["scenario"], run["server"]
        tried.setdefault(scen, {}).setdefault(server, 0)
        tried[scen][server] += 1
        if run.get("ok") and run.get("ir_per_request") is not None:
            per.setdefault(scen, {}).setdefault(server, []).append(float(run["ir_per_request"]))
            if run.get("fixed_ir") is not None:
                fixed.setdefault(scen, {}).setdefault(server, []).append(float(run["fixed_ir"]))
    out: dict[str, dict[str, Any]] = {}
    for scen, servers in tried.items():
        entries: dict[str, Any] = {}
        for server, count in servers.items():
            values = per.get(scen, {}).get(server, [])
            entry: dict[str, Any] = {"repeats": count, "ok": len(values)}
            if values:
                entry["ir_per_request"] = {
                    "median": statistics.median(values),
                    "min": min(values),
                    "max": max(values),
                }
            fixed_values = fixed.get(scen, {}).get(server, [])
            if fixed_values:
                entry["fixed_ir"] = statistics.median(fixed_values)
            entries[server] = entry
        base = entries.get(baseline, {}).get("ir_per_request")
        for entry in entries.values():
            mine = entry.get("ir_per_request")
            if base and mine and base["median"]:
                entry["ratio"] = mine["median"] / base["median"]
        out[scen] = entries
    return out


def report(scenario: str, title: str, entries: dict[str, Any], order: list[str]) -> str:
    """The table of one scenario."""
    headers = [
        "server",
        "ok",
        "instructions/req median (min-max)",
        "vs asyncio",
        "fixed Ir (M)",
    ]
    rows = []
    for name in order:
        entry = entries.get(name)
        if entry is None:
            continue
        stats = entry.get("ir_per_request")
        spread = (
            f"{fmt_num(stats['median'])} ({fmt_num(stats['min'])}-{fmt_num(stats['max'])})"
            if stats
            else "-"
        )
        fixed = entry.get("fixed_ir")
        rows.append(
            [
                name,
                f"{entry['ok']}/{entry['repeats']}",
                spread,
                fmt_ratio(entry.get("ratio")),
                fmt_num(fixed / 1e6, 1) if fixed is not None else "-",
            ]
        )
    return f"\n== {scenario}: {title}\n{render_table(headers, rows)}"


# --------------------------------------------------------------------------- one run


ECHO_ARGS = ["--host", "127.0.0.1", "--port", "0", "--backend", "epoll"]


def server_kinds(project: Path) -> dict[str, ServerKind]:
    """The servers: the reactor from ``project`` (``python -m apps.echo``), the peers
    and the bare loop from this script's own ``servers/`` (they do not import the project)."""
    kinds = {"reactor": ServerKind("reactor", ["-m", "apps.echo", *ECHO_ARGS])}
    for name in SERVER_NAMES[1:]:
        script = SERVERS_DIR / f"{name}_echo.py"
        kinds[name] = ServerKind(
            name, [str(script), "--host", "127.0.0.1", "--port", "0"], NEEDS.get(name)
        )
    return kinds


def compiled_kind(compiled: Path) -> ServerKind:
    """The same echo app with ``compiled`` first on sys.path (``--compiled``).

    With ``-m``, the working directory (the project) would come first: the
    compiled package is put before it, then the app runs as ``-m`` would.
    """
    code = (
        f"import runpy, sys; sys.path.insert(0, {str(compiled)!r}); "
        "runpy.run_module('apps.echo', run_name='__main__', alter_sys=True)"
    )
    return ServerKind(COMPILED_SERVER, ["-c", code, *ECHO_ARGS])


def valgrind_prefix(out_file: Path, extra: list[str]) -> list[str]:
    return [
        "valgrind",
        "--tool=callgrind",
        "--collect-atstart=yes",
        f"--callgrind-out-file={out_file}",
        *extra,
    ]


def count_run(
    kind: ServerKind,
    scenario: str,
    requests: int,
    opts: argparse.Namespace,
    loadgen: Path,
    workdir: Path,
    tag: str,
) -> dict[str, Any]:
    """One server under callgrind: start, warm, exactly ``requests`` requests, stop.

    Returns the run's record, with ``ir`` (the process's total) when it worked.
    """
    scen = SCENARIOS[scenario]
    out_file = workdir / f"callgrind.{kind.name}.{scenario}.{tag}.out"
    record: dict[str, Any] = {"requests": requests, "ok": False}
    server = Server(
        kind,
        opts.python,
        opts.server_cpu_used,
        workdir,
        env=opts.server_env,
        prefix=valgrind_prefix(out_file, opts.valgrind_arg),
        repo=opts.project,
    )
    started = time.monotonic()
    try:
        server.wait_ready(timeout=opts.start_limit)
        record["start_s"] = round(time.monotonic() - started, 1)
        if opts.warm:
            record["warmup"] = warm_server("127.0.0.1", server.port, timeout=opts.time_limit)
        args = [
            *pin_prefix(opts.client_cpu_used),
            str(loadgen),
            "--host",
            "127.0.0.1",
            "--port",
            str(server.port),
            "--conns",
            str(scen.conns),
            "--size",
            str(scen.size),
            "--verify",
            "--requests",
            str(requests),
            "--duration",
            f"{opts.time_limit:g}",
        ]
        if scen.pipeline > 1:
            args += ["--pipeline", str(scen.pipeline)]
        result, code, other = run_client(args, lambda _event: None, opts.time_limit + 60)
        record["client"] = result
        if result is None or not result.get("ok") or code != 0:
            reason = (result or {}).get("reason") or other[-300:] or "no result"
            record["error"] = f"client failed (exit {code}): {reason}"
            return record
        bad = int(result.get("errors", 0)) + int(result.get("mismatches", 0))
        if int(result.get("requests", -1)) != requests or bad:
            record["error"] = f"client counted {result.get('requests')} requests, {bad} errors"
            return record
        record["client_s"] = result.get("duration_s")
    except Exception as exc:  # one failed run must not end the suite
        record["error"] = f"{type(exc).__name__}: {exc}"
        return record
    finally:
        server.stop(timeout=opts.stop_limit)
        record["server_exit"] = server.exit_code
        record["wall_s"] = round(time.monotonic() - started, 1)
    if server.exit_code not in (0, -15, 143):  # SIGTERM is how every server is asked to stop
        record["error"] = f"server exit {server.exit_code}: " + " | ".join(
            server.stderr_lines()[-3:]
        )
        return record
    try:
        text = out_file.read_text(errors="replace")
        record["ir"] = parse_callgrind_total(text)
        if opts.profile:
            record["self_costs"] = parse_self_costs(text)  # measure() replaces it
    except (OSError, ValueError) as exc:
        record["error"] = f"callgrind output: {exc}"
        return record
    if opts.keep:
        keep = Path(opts.keep)
        keep.mkdir(parents=True, exist_ok=True)
        shutil.copy(out_file, keep / out_file.name)
    out_file.unlink(missing_ok=True)
    record["ok"] = True
    return record


def measure(
    kind: ServerKind,
    scenario: str,
    opts: argparse.Namespace,
    loadgen: Path,
    workdir: Path,
    repeat: int,
) -> dict[str, Any]:
    """The N run and the N + D run of one server, and the difference."""
    n, d = opts.requests, opts.delta
    small = count_run(kind, scenario, n, opts, loadgen, workdir, f"r{repeat}-n")
    large = count_run(kind, scenario, n + d, opts, loadgen, workdir, f"r{repeat}-nd")
    record: dict[str, Any] = {
        "scenario": scenario,
        "server": kind.name,
        "repeat": repeat,
        "N": n,
        "D": d,
        "run_n": small,
        "run_n_plus_d": large,
        "ok": bool(small.get("ok") and large.get("ok")),
    }
    costs = small.pop("self_costs", None), large.pop("self_costs", None)
    if record["ok"]:
        per = per_request(small["ir"], large["ir"], d)
        record["ir_per_request"] = per
        record["fixed_ir"] = fixed_cost(small["ir"], n, per)
        if costs[0] is not None and costs[1] is not None:
            record["profile"] = profile_difference(costs[0], costs[1], d, opts.profile)
    else:
        record["error"] = small.get("error") or large.get("error")
    return record


# --------------------------------------------------------------------------- main


def csv(value: str) -> list[str]:
    return [item.strip() for item in value.split(",") if item.strip()]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="scenarios:\n"
        + "\n".join(f"  {n:<12} {SCENARIOS[n].title}" for n in CALLGRIND_SCENARIOS),
    )
    parser.add_argument(
        "--project",
        type=Path,
        default=REPO,
        help="the checkout whose reactor is measured (python -m apps.echo run from there); "
        "default: the one this script is in",
    )
    parser.add_argument(
        "--compiled",
        type=Path,
        metavar="DIR",
        help=f"also measure {COMPILED_SERVER}: the reactor package found in DIR (see above)",
    )
    parser.add_argument(
        "--scenarios", type=csv, default=list(CALLGRIND_SCENARIOS), help="comma list"
    )
    parser.add_argument(
        "--servers", type=csv, default=list(SERVER_NAMES), help="comma list (default: all)"
    )
    parser.add_argument("--requests", "-N", type=int, default=20000, help="N (default 20000)")
    parser.add_argument("--delta", "-D", type=int, default=20000, help="D (default 20000)")
    parser.add_argument(
        "--repeats", type=int, default=1, help="pairs of runs per server (median reported)"
    )
    parser.add_argument("--python", default=sys.executable, help="interpreter for the servers")
    parser.add_argument("--loadgen", help="loadgen binary (or loadgen.c to build)")
    parser.add_argument(
        "--warm",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="warm every server before its requests (default: on): " + warm_description(),
    )
    parser.add_argument(
        "--malloc-control",
        action="store_true",
        help="run every server with " + " ".join(f"{k}={v}" for k, v in MALLOC_CONTROL_ENV.items()),
    )
    parser.add_argument(
        "--pin",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="taskset the server on --server-cpu and the client on --client-cpu "
        "(default: when taskset exists and there are 2+ CPUs)",
    )
    parser.add_argument("--server-cpu", type=int, default=0)
    parser.add_argument("--client-cpu", type=int, default=1)
    parser.add_argument(
        "--time-limit",
        type=float,
        default=300.0,
        help="seconds allowed for the warm-up and for the requests of one run (default 300)",
    )
    parser.add_argument("--start-limit", type=float, default=180.0, help="seconds to start")
    parser.add_argument("--stop-limit", type=float, default=120.0, help="seconds to exit")
    parser.add_argument(
        "--valgrind-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="another valgrind option (repeatable), e.g. --valgrind-arg=--dump-instr=yes",
    )
    parser.add_argument("--keep", metavar="DIR", help="keep the callgrind output files here")
    parser.add_argument(
        "--profile",
        type=int,
        default=0,
        metavar="TOP",
        help="print (and put in the JSON) the TOP functions by instructions per request: "
        "the difference of the two runs' self costs per function (default 0: none)",
    )
    parser.add_argument(
        "--json", help="output file (default benchmarks/results/callgrind-DATE.json)"
    )
    args = parser.parse_args(argv)
    unknown = [s for s in args.scenarios if s not in CALLGRIND_SCENARIOS]
    if unknown:
        parser.error(f"unknown scenario(s) {unknown}; choose from {list(CALLGRIND_SCENARIOS)}")
    if args.compiled is not None:
        args.compiled = args.compiled.resolve()
        if not (args.compiled / "reactor" / "__init__.py").is_file():
            parser.error(f"--compiled {args.compiled} holds no reactor package")
        if COMPILED_SERVER not in args.servers:
            args.servers.insert(
                args.servers.index("reactor") + 1 if "reactor" in args.servers else 0,
                COMPILED_SERVER,
            )
    names = (*SERVER_NAMES, COMPILED_SERVER) if args.compiled is not None else SERVER_NAMES
    bad = [s for s in args.servers if s not in names]
    if bad:
        parser.error(f"unknown server(s) {bad}; choose from {list(names)}")
    if args.requests < 1 or args.delta < 1 or args.repeats < 1:
        parser.error("need --requests >= 1, --delta >= 1, --repeats >= 1")
    if args.profile < 0:
        parser.error("need --profile >= 0")
    if not 0 < args.time_limit <= 3600:
        parser.error("need 0 < --time-limit <= 3600")
    args.project = args.project.resolve()
    if not (args.project / "apps" / "echo.py").is_file():
        parser.error(f"{args.project} has no apps/echo.py: not a checkout of this project")
    args.server_env = dict(MALLOC_CONTROL_ENV) if args.malloc_control else {}
    return args


def project_commit(project: Path) -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=project, capture_output=True, text=True, check=False
        )
    except OSError:
        return None
    return out.stdout.strip() or None


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed (apt-get install -y valgrind)")
    loadgen = find_loadgen(args.loadgen)
    if loadgen is None:
        raise SystemExit("no loadgen: pass --loadgen PATH (binary or loadgen.c)")
    can_pin = shutil.which("taskset") is not None and (os.cpu_count() or 1) >= 2
    pinned = can_pin if args.pin is None else args.pin and can_pin
    args.server_cpu_used = args.server_cpu if pinned else None
    args.client_cpu_used = args.client_cpu if pinned else None

    kinds = server_kinds(args.project)
    if args.compiled is not None:
        kinds[COMPILED_SERVER] = compiled_kind(args.compiled)
    servers: list[ServerKind] = []
    for name in args.servers:
        kind = kinds[name]
        if kind.needs and not importable(args.python, kind.needs):
            print(f"note: {name} skipped ({kind.needs} is not installed)", file=sys.stderr)
            continue
        servers.append(kind)
    valgrind_version = subprocess.run(
        ["valgrind", "--version"], capture_output=True, text=True, check=False
    ).stdout.strip()
    meta: dict[str, Any] = {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "python": subprocess.run(
            [args.python, "-c", "import sys; print(sys.version.split()[0])"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip(),
        "valgrind": valgrind_version,
        "valgrind_args": ["--tool=callgrind", "--collect-atstart=yes", *args.valgrind_arg],
        "project": str(args.project),
        "compiled": None if args.compiled is None else str(args.compiled),
        "commit": project_commit(args.project),
        "versions": {d: package_version(args.python, d) for d in ("uvloop", "twisted")},
        "loadgen": str(loadgen),
        "pinned": pinned,
        "N": args.requests,
        "D": args.delta,
        "repeats": args.repeats,
        "server_warmup": warm_description() if args.warm else None,
        "server_env": args.server_env,
        "method": "(Ir(N+D) - Ir(N)) / D, fresh server per run, user-space instructions",
        "argv": sys.argv[1:],
    }
    conditions = (
        f"project {args.project}; N={args.requests}, D={args.delta}, {args.repeats} repeat(s); "
        f"servers warmed: {meta['server_warmup'] or 'no'}; "
        f"environment: {' '.join(f'{k}={v}' for k, v in args.server_env.items()) or 'unchanged'}"
    )
    print(conditions, flush=True)
    out_path = (
        Path(args.json)
        if args.json
        else RESULTS_DIR / ("callgrind-" + dt.datetime.now().strftime("%Y%m%d-%H%M%S") + ".json")
    )
    runs: list[dict[str, Any]] = []
    texts: list[str] = []
    order = [k.name for k in servers]
    with tempfile.TemporaryDirectory(prefix="callgrind-bench-") as tmp:
        for scenario in args.scenarios:
            for repeat in range(1, args.repeats + 1):
                for kind in servers:
                    record = measure(kind, scenario, args, loadgen, Path(tmp), repeat)
                    runs.append(record)
                    if record["ok"]:
                        line = (
                            f"{record['ir_per_request']:,.0f} instructions/request "
                            f"(runs: {record['run_n']['wall_s']}s, "
                            f"{record['run_n_plus_d']['wall_s']}s)"
                        )
                    else:
                        line = f"FAILED: {record.get('error')}"
                    print(f"{scenario} repeat {repeat} {kind.name}: {line}", flush=True)
                    for fn, ir in record.get("profile", []):
                        print(f"    {ir:10,.1f}  {fn}")
            summary = summarize(runs)
            text = report(scenario, SCENARIOS[scenario].title, summary[scenario], order)
            texts.append(text)
            print(text, flush=True)
    document = {
        "meta": meta,
        "scenarios": {s: dataclasses.asdict(SCENARIOS[s]) for s in args.scenarios},
        "summary": summarize(runs),
        "runs": runs,
    }
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(document, indent=1) + "\n")
    print("\n".join(["", "==== summary", conditions, *texts, "", f"results: {out_path}"]))
    return 0 if all(r["ok"] for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
