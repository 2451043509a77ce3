"""Both builds of the reactor beside asyncio, uvloop and Twisted, from one command.

    python benchmarks/builds_bench.py --compiled /tmp/bench-compiled \\
        --loadgen ../shared/tools/loadgen/loadgen.c            # the full run (~25 min)
    python benchmarks/builds_bench.py --compiled /tmp/bench-compiled \\
        --scenarios pingpong-1k -N 2000 -D 2000 --repeats 1 --duration 1   # a quick check
    python benchmarks/builds_bench.py --summarize benchmarks/results/builds-DATE.json

It runs callgrind_bench.py (user-space instructions per request, counted under
valgrind) and then echo_bench.py (requests per second, server CPU per request
and which side saturated, memory per idle connection; native, timed) as
subprocesses, passing both the same servers, scenarios, ``--compiled`` tree,
loadgen and the flags they share, each writing its JSON into a temporary
directory. Then it reads both files and prints one markdown table per
scenario, a row per server:

    reactor (pure)      python -m apps.echo on epoll, this checkout's reactor
    reactor (compiled)  the same app with --compiled TREE's mypyc-compiled reactor
    asyncio, uvloop, Twisted, bare loop   the peers from benchmarks/servers/

with instructions per request, req/s and server CPU per request, each with
its ratio to asyncio, and which side saturated; and for ``idle-5k`` the
server's memory per idle connection and its ratio. Everything, both parts
whole and the exact commands that made them, goes into
``benchmarks/results/builds-DATE.json`` (``--json`` for another path);
``--summarize FILE`` prints a file's tables again without running anything.

Instructions per request come from callgrind_bench.py (the epoll reactor and
the compiled build, by its server names ``reactor`` and ``reactor-compiled``);
echo_bench.py is run with ``--backends epoll`` and ``--client loadgen`` so its
``reactor-epoll`` is the same server with the same client. ``--wait-quiet``
goes to echo_bench.py only: a count of instructions does not depend on the
machine's other load. Run by hand, never in CI; see benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from callgrind_bench import CALLGRIND_SCENARIOS, COMPILED_SERVER
from callgrind_bench import SERVER_NAMES as CALLGRIND_SERVERS
from echo_bench import BASELINE, SATURATED_PCT, SCENARIOS, fmt_num, fmt_ratio, saturation

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RESULTS_DIR = HERE / "results"
CALLGRIND_SCRIPT = HERE / "callgrind_bench.py"
ECHO_SCRIPT = HERE / "echo_bench.py"

#: The reactor's one backend here: callgrind_bench.py always runs it on epoll.
BACKEND = "epoll"
IDLE_SCENARIO = "idle-5k"
SCENARIO_NAMES = (*CALLGRIND_SCENARIOS, IDLE_SCENARIO)
DEFAULT_SERVERS = ("reactor", "asyncio", "uvloop", "twisted", "bare")


@dataclasses.dataclass(frozen=True)
class Member:
    """One row: its label, and its server's name in each harness's JSON."""

    label: str
    callgrind: str
    echo: str


#: The rows, in order; a server neither part ran is left out.
MEMBERS = (
    Member("reactor (pure)", "reactor", f"reactor-{BACKEND}"),
    Member("reactor (compiled)", COMPILED_SERVER, COMPILED_SERVER),
    Member("asyncio", "asyncio", "asyncio"),
    Member("uvloop", "uvloop", "uvloop"),
    Member("Twisted", "twisted", "twisted"),
    Member("bare loop", "bare", "bare"),
)


@dataclasses.dataclass(frozen=True)
class Row:
    """A request/response scenario's figures for one server (None: not measured)."""

    label: str
    ir_per_request: float | None
    ir_ratio: float | None
    rps: float | None
    rps_ratio: float | None
    cpu_us_per_request: float | None
    cpu_ratio: float | None
    saturated: str | None


@dataclasses.dataclass(frozen=True)
class IdleRow:
    """Server memory per idle connection for one server."""

    label: str
    bytes_per_conn: float | None
    ratio: float | None


# --------------------------------------------------------------------------- the tables


def _median(entry: dict[str, Any] | None, metric: str) -> float | None:
    stats = (entry or {}).get(metric)
    return float(stats["median"]) if stats else None


def _members(callgrind: dict[str, Any], echo: dict[str, Any]) -> list[Member]:
    """The known servers in MEMBERS order, then any other server a part names."""
    known = [m for m in MEMBERS if m.callgrind in callgrind or m.echo in echo]
    seen = {m.callgrind for m in MEMBERS} | {m.echo for m in MEMBERS}
    others = [n for n in dict.fromkeys([*callgrind, *echo]) if n not in seen]
    return known + [Member(n, n, n) for n in others]


def _summary(document: dict[str, Any] | None, scenario: str) -> dict[str, Any]:
    return dict(((document or {}).get("summary") or {}).get(scenario) or {})


def scenario_rows(
    callgrind_doc: dict[str, Any] | None, echo_doc: dict[str, Any] | None, scenario: str
) -> list[Row]:
    """One request/response scenario: callgrind_bench's and echo_bench's summaries side by side."""
    cg, echo = _summary(callgrind_doc, scenario), _summary(echo_doc, scenario)
    rows = []
    for member in _members(cg, echo):
        c, e = cg.get(member.callgrind), echo.get(member.echo)
        rows.append(
            Row(
                label=member.label,
                ir_per_request=_median(c, "ir_per_request"),
                ir_ratio=(c or {}).get("ratio"),
                rps=_median(e, "rate"),
                rps_ratio=(e or {}).get("rate_ratio"),
                cpu_us_per_request=_median(e, "cpu_per_unit_us"),
                cpu_ratio=(e or {}).get("cpu_ratio"),
                saturated=saturation(e) if e and e.get("ok") else None,
            )
        )
    return rows


def idle_rows(echo_doc: dict[str, Any] | None, scenario: str = IDLE_SCENARIO) -> list[IdleRow]:
    """Memory per idle connection, from echo_bench's summary of ``scenario``."""
    echo = _summary(echo_doc, scenario)
    return [
        IdleRow(
            member.label,
            _median(echo.get(member.echo), "rss_per_conn_bytes"),
            (echo.get(member.echo) or {}).get("rss_ratio"),
        )
        for member in _members({}, echo)
    ]


def failures(
    callgrind_doc: dict[str, Any] | None, echo_doc: dict[str, Any] | None, scenario: str
) -> list[str]:
    """Servers with runs that failed in ``scenario``, as 'name: part ok/tried'."""
    notes = []
    for part, document, tried in (
        ("callgrind", callgrind_doc, "repeats"),
        ("echo", echo_doc, "runs"),
    ):
        for name, entry in _summary(document, scenario).items():
            if entry.get("ok", 0) < entry.get(tried, 0):
                notes.append(f"{name}: {part} {entry.get('ok', 0)}/{entry.get(tried, 0)} ok")
    return notes


def markdown_table(headers: list[str], rows: list[list[str]], text_last: bool = False) -> str:
    """A GitHub markdown table: figures right-aligned, the first column (and with
    ``text_last`` the last) left-aligned."""
    aligns = ["---"] + ["---:"] * (len(headers) - 1)
    if text_last:
        aligns[-1] = "---"
    lines = ["| " + " | ".join(headers) + " |", "| " + " | ".join(aligns) + " |"]
    lines += ["| " + " | ".join(cells) + " |" for cells in rows]
    return "\n".join(lines)


def render_rows(rows: list[Row]) -> str:
    headers = [
        "server",
        "instructions/req",
        f"vs {BASELINE}",
        "req/s",
        f"vs {BASELINE}",
        "server CPU µs/req",
        f"vs {BASELINE}",
        "saturated",
    ]
    cells = [
        [
            r.label,
            fmt_num(r.ir_per_request),
            fmt_ratio(r.ir_ratio),
            fmt_num(r.rps),
            fmt_ratio(r.rps_ratio),
            fmt_num(r.cpu_us_per_request, 2),
            fmt_ratio(r.cpu_ratio),
            r.saturated or "-",
        ]
        for r in rows
    ]
    return markdown_table(headers, cells, text_last=True)


def render_idle(rows: list[IdleRow]) -> str:
    headers = ["server", "bytes/idle connection", f"vs {BASELINE}"]
    return markdown_table(
        headers, [[r.label, fmt_num(r.bytes_per_conn), fmt_ratio(r.ratio)] for r in rows]
    )


def is_idle(scenario: str) -> bool:
    known = SCENARIOS.get(scenario)
    return known is not None and known.mode == "idle"


def table_rows(
    callgrind_doc: dict[str, Any] | None, echo_doc: dict[str, Any] | None, scenario: str
) -> list[dict[str, Any]]:
    """A scenario's rows as plain dicts (the merged JSON's ``tables``)."""
    if is_idle(scenario):
        return [dataclasses.asdict(r) for r in idle_rows(echo_doc, scenario)]
    return [dataclasses.asdict(r) for r in scenario_rows(callgrind_doc, echo_doc, scenario)]


def _title(scenario: str) -> str:
    known = SCENARIOS.get(scenario)
    return f"{scenario}: {known.title}" if known else scenario


def conditions(callgrind_doc: dict[str, Any] | None, echo_doc: dict[str, Any] | None) -> str:
    """One line on how the figures were made (from the parts' meta)."""
    parts = []
    if callgrind_doc:
        m = callgrind_doc.get("meta", {})
        parts.append(
            f"instructions: callgrind, (Ir(N+D) - Ir(N)) / D with N={fmt_num(m.get('N'))}, "
            f"D={fmt_num(m.get('D'))}, median of {m.get('repeats')} pair(s)"
        )
    if echo_doc:
        m = echo_doc.get("meta", {})
        parts.append(
            f"req/s, CPU and memory: native, median of {m.get('repeats')} round(s) x "
            f"{m.get('duration_s')} s (+{m.get('warmup_s')} s warm-up), "
            f"client {m.get('client')}, pinned {m.get('pinned')}"
        )
    parts.append(f"saturated: a process at >= {SATURATED_PCT:g}% of one CPU")
    return "; ".join(parts)


def tables(
    callgrind_doc: dict[str, Any] | None,
    echo_doc: dict[str, Any] | None,
    scenarios: list[str] | None = None,
) -> str:
    """Every scenario's markdown table (``scenarios``: default, those either part ran)."""
    if scenarios is None:
        found = [*(callgrind_doc or {}).get("summary", {}), *(echo_doc or {}).get("summary", {})]
        scenarios = [s for s in SCENARIO_NAMES if s in found]
        scenarios += [s for s in dict.fromkeys(found) if s not in scenarios]
    blocks = []
    for scenario in scenarios:
        if is_idle(scenario):
            body = render_idle(idle_rows(echo_doc, scenario))
        else:
            body = render_rows(scenario_rows(callgrind_doc, echo_doc, scenario))
        notes = failures(callgrind_doc, echo_doc, scenario)
        text = f"### {_title(scenario)}\n\n{body}"
        if notes:
            text += "\n\nfailed runs: " + "; ".join(notes)
        blocks.append(text)
    blocks.append(conditions(callgrind_doc, echo_doc))
    return "\n\n".join(blocks)


# --------------------------------------------------------------------------- the commands


def csv(value: str) -> list[str]:
    return [item.strip() for item in value.split(",") if item.strip()]


def _shared_flags(args: argparse.Namespace) -> list[str]:
    """The flags both harnesses take, the same way."""
    flags: list[str] = []
    if args.compiled is not None:
        flags += ["--compiled", str(args.compiled)]
    if args.loadgen:
        flags += ["--loadgen", args.loadgen]
    if args.python:
        flags += ["--python", args.python]
    if not args.warm:
        flags.append("--no-warm")
    if args.malloc_control:
        flags.append("--malloc-control")
    if args.pin is not None:
        flags.append("--pin" if args.pin else "--no-pin")
    if args.server_cpu is not None:
        flags += ["--server-cpu", str(args.server_cpu)]
    if args.client_cpu is not None:
        flags += ["--client-cpu", str(args.client_cpu)]
    return flags


def callgrind_command(args: argparse.Namespace, out: Path) -> list[str] | None:
    """callgrind_bench.py's command line, or None if no scenario of it was asked for."""
    scenarios = [s for s in args.scenarios if s in CALLGRIND_SCENARIOS]
    if not scenarios:
        return None
    return [
        sys.executable,
        str(CALLGRIND_SCRIPT),
        "--servers",
        ",".join(args.servers),
        "--scenarios",
        ",".join(scenarios),
        "--requests",
        str(args.requests),
        "--delta",
        str(args.delta),
        "--repeats",
        str(args.callgrind_repeats),
        *_shared_flags(args),
        "--json",
        str(out),
    ]


def echo_command(args: argparse.Namespace, out: Path) -> list[str]:
    """echo_bench.py's command line: the reactor on epoll only, the C client only."""
    command = [
        sys.executable,
        str(ECHO_SCRIPT),
        "--servers",
        ",".join(args.servers),
        "--backends",
        BACKEND,
        "--client",
        "loadgen",
        "--scenarios",
        ",".join(args.scenarios),
        "--repeats",
        str(args.repeats),
        "--duration",
        f"{args.duration:g}",
        "--warmup",
        f"{args.warmup:g}",
        *_shared_flags(args),
    ]
    if args.wait_quiet:
        command += ["--wait-quiet", f"{args.wait_quiet:g}", "--quiet-pct", f"{args.quiet_pct:g}"]
    return [*command, "--json", str(out)]


def default_json(today: dt.date) -> Path:
    return RESULTS_DIR / f"builds-{today.isoformat()}.json"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="scenarios:\n"
        + "\n".join(f"  {n:<12} {SCENARIOS[n].title}" for n in SCENARIO_NAMES),
    )
    parser.add_argument(
        "--compiled",
        type=Path,
        metavar="TREE",
        help=f"also run {COMPILED_SERVER}: the reactor package of TREE, a copy of the checkout "
        "built with REACTOR_COMPILE=1 python setup.py build_ext --inplace (to both harnesses)",
    )
    parser.add_argument("--loadgen", help="loadgen binary, or loadgen.c to build (to both)")
    parser.add_argument(
        "--servers",
        type=csv,
        default=list(DEFAULT_SERVERS),
        help=f"comma list of {', '.join(CALLGRIND_SERVERS)} (default: all); "
        f"'reactor' is the reactor on {BACKEND}",
    )
    parser.add_argument(
        "--scenarios",
        type=csv,
        default=list(SCENARIO_NAMES),
        help=f"comma list (default: all); {IDLE_SCENARIO} runs in echo_bench.py only",
    )
    callgrind = parser.add_argument_group("callgrind_bench.py")
    callgrind.add_argument("--requests", "-N", type=int, default=20000, help="N (default 20000)")
    callgrind.add_argument("--delta", "-D", type=int, default=20000, help="D (default 20000)")
    callgrind.add_argument(
        "--callgrind-repeats", type=int, default=1, help="pairs of runs per server (default 1)"
    )
    echo = parser.add_argument_group("echo_bench.py")
    echo.add_argument("--repeats", type=int, default=5, help="rounds over all servers (default 5)")
    echo.add_argument("--duration", type=float, default=5.0, help="measured seconds per run")
    echo.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds first")
    echo.add_argument(
        "--wait-quiet",
        type=float,
        default=0.0,
        metavar="S",
        help="before each run wait up to S seconds for other processes to go quiet",
    )
    echo.add_argument(
        "--quiet-pct", type=float, default=15.0, help="'quiet' threshold, %% of a CPU"
    )
    both = parser.add_argument_group("both")
    both.add_argument("--python", help="interpreter for the servers (default: this one)")
    both.add_argument("--warm", action=argparse.BooleanOptionalAction, default=True)
    both.add_argument("--malloc-control", action="store_true")
    both.add_argument("--pin", action=argparse.BooleanOptionalAction, default=None)
    both.add_argument("--server-cpu", type=int)
    both.add_argument("--client-cpu", type=int)
    parser.add_argument(
        "--json", type=Path, help="merged output (default benchmarks/results/builds-DATE.json)"
    )
    parser.add_argument(
        "--summarize", type=Path, metavar="FILE", help="run nothing: print FILE's tables"
    )
    args = parser.parse_args(argv)
    unknown = [s for s in args.scenarios if s not in SCENARIO_NAMES]
    if unknown:
        parser.error(f"unknown scenario(s) {unknown}; choose from {list(SCENARIO_NAMES)}")
    if COMPILED_SERVER in args.servers:
        if args.compiled is None:
            parser.error(f"server {COMPILED_SERVER} needs --compiled TREE")
        args.servers.remove(COMPILED_SERVER)  # both harnesses add it after reactor
    bad = [s for s in args.servers if s not in CALLGRIND_SERVERS]
    if bad:
        parser.error(f"unknown server(s) {bad}; choose from {list(CALLGRIND_SERVERS)}")
    if args.compiled is not None:
        args.compiled = args.compiled.resolve()
    return args


# --------------------------------------------------------------------------- main


def run_part(name: str, command: list[str], out: Path) -> dict[str, Any]:
    """Run one harness (its output goes straight to ours) and read its JSON."""
    print(f"\n==== {name}\n$ {shlex.join(command)}", flush=True)
    started = time.monotonic()
    code = subprocess.run(command, cwd=REPO, check=False).returncode
    part: dict[str, Any] = {
        "argv": command,
        "command": shlex.join(command),
        "exit": code,
        "wall_s": round(time.monotonic() - started, 1),
        "result": None,
    }
    try:
        part["result"] = json.loads(out.read_text())
    except (OSError, ValueError) as exc:
        part["error"] = f"no results from {name} (exit {code}): {exc}"
        print(f"note: {part['error']}", file=sys.stderr, flush=True)
    return part


def summarize_file(path: Path) -> int:
    try:
        document = json.loads(path.read_text())
        cg, echo = document["callgrind"]["result"], document["echo"]["result"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise SystemExit(f"{path}: not a builds_bench results file ({exc})") from exc
    print(f"$ {document.get('command', '?')}\n\n{tables(cg, echo, document.get('scenarios'))}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.summarize:
        return summarize_file(args.summarize)
    if args.compiled is None:
        print("note: no --compiled TREE: the compiled build is not measured", file=sys.stderr)
    out_path = args.json or default_json(dt.date.today())
    command = shlex.join([sys.executable, sys.argv[0], *sys.argv[1:]])
    started = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    with tempfile.TemporaryDirectory(prefix="builds-bench-") as tmp:
        cg_out, echo_out = Path(tmp) / "callgrind.json", Path(tmp) / "echo.json"
        cg_command = callgrind_command(args, cg_out)
        callgrind = (
            run_part("callgrind_bench.py", cg_command, cg_out)
            if cg_command
            else {"command": None, "result": None}
        )
        echo = run_part("echo_bench.py", echo_command(args, echo_out), echo_out)
    text = tables(callgrind["result"], echo["result"], args.scenarios)
    document = {
        "meta": {
            "started": started,
            "finished": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "cwd": str(Path.cwd()),
            "argv": sys.argv[1:],
        },
        "command": command,
        "scenarios": args.scenarios,
        "callgrind": callgrind,
        "echo": echo,
        "tables": {s: table_rows(callgrind["result"], echo["result"], s) for s in args.scenarios},
        "markdown": text,
    }
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(document, indent=1) + "\n")
    lines = ["", "==== both builds", f"$ {command}"]
    lines += [f"$ {part['command']}" for part in (callgrind, echo) if part["command"]]
    print("\n".join([*lines, "", text, "", f"results: {out_path}"]), flush=True)
    ran = [part for part in (callgrind, echo) if part["command"]]
    return 0 if all(p["exit"] == 0 and p["result"] is not None for p in ran) else 1


if __name__ == "__main__":
    sys.exit(main())
