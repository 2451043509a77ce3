"""benchmarks/builds_bench.py: the merged tables, from made-up results of both harnesses.

The benchmark runs callgrind_bench.py and echo_bench.py by hand, never in CI;
how it puts their JSON side by side (server names, ratios, saturation, idle
memory) and which commands it would run are checked here, running nothing.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tests.bench_import import bench_script

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def bb() -> Iterator[ModuleType]:
    """builds_bench, imported as its script would be (it imports the harnesses beside it)."""
    with bench_script("builds_bench", "callgrind_bench", "echo_bench") as module:
        yield module


def spread(median: float) -> dict[str, float]:
    return {"median": median, "min": median, "max": median}


def cg_entry(ir: float, ratio: float, ok: int = 1) -> dict[str, Any]:
    entry: dict[str, Any] = {"repeats": 1, "ok": ok, "fixed_ir": 1e8, "ratio": ratio}
    if ok:
        entry["ir_per_request"] = spread(ir)
    return entry


def echo_entry(rps: float, cpu: float, srv_pct: float, cli_pct: float) -> dict[str, Any]:
    return {
        "runs": 2,
        "ok": 2,
        "errors": 0,
        "rate": spread(rps),
        "rps": spread(rps),
        "cpu_per_unit_us": spread(cpu),
        "server_cpu_pct": spread(srv_pct),
        "client_cpu_pct": spread(cli_pct),
        "rate_ratio": rps / 50000.0,
        "cpu_ratio": cpu / 10.0,
    }


def idle_entry(per_conn: float) -> dict[str, Any]:
    return {
        "runs": 2,
        "ok": 2,
        "errors": 0,
        "rss_per_conn_bytes": spread(per_conn),
        "rss_ratio": per_conn / 3000.0,
    }


#: Shaped like callgrind_bench.py's JSON: the reactor is "reactor", Twisted failed.
CALLGRIND: dict[str, Any] = {
    "meta": {"N": 2000, "D": 2000, "repeats": 1},
    "summary": {
        "pingpong-1k": {
            "reactor": cg_entry(10000.0, 0.5),
            "reactor-compiled": cg_entry(7000.0, 0.35),
            "asyncio": cg_entry(20000.0, 1.0),
            "uvloop": cg_entry(4600.0, 0.23),
            "twisted": cg_entry(0.0, 0.0, ok=0) | {"ratio": None},
            "bare": cg_entry(6000.0, 0.3),
        }
    },
    "runs": [],
}

#: Shaped like echo_bench.py's JSON: the reactor is "reactor-epoll"; no bare loop here.
ECHO: dict[str, Any] = {
    "meta": {"repeats": 2, "duration_s": 1.0, "warmup_s": 1.0, "client": "loadgen"},
    "summary": {
        "pingpong-1k": {
            "reactor-epoll": echo_entry(60000.0, 8.0, 95.0, 60.0),
            "reactor-compiled": echo_entry(70000.0, 7.0, 96.0, 70.0),
            "asyncio": echo_entry(50000.0, 10.0, 97.0, 50.0),
            "uvloop": echo_entry(90000.0, 5.0, 80.0, 95.0),
            "twisted": echo_entry(30000.0, 20.0, 98.0, 30.0),
        },
        "idle-5k": {
            "reactor-epoll": idle_entry(1500.0),
            "reactor-compiled": idle_entry(1200.0),
            "asyncio": idle_entry(3000.0),
        },
    },
    "runs": [],
}


def test_rows_join_both_harnesses_by_server(bb: ModuleType) -> None:
    rows = bb.scenario_rows(CALLGRIND, ECHO, "pingpong-1k")
    assert [r.label for r in rows] == [
        "reactor (pure)",
        "reactor (compiled)",
        "asyncio",
        "uvloop",
        "Twisted",
        "bare loop",
    ]
    pure, compiled, asyncio_row, uvloop, twisted, bare = rows
    assert (pure.ir_per_request, pure.ir_ratio) == (10000.0, 0.5)
    assert (pure.rps, pure.rps_ratio) == (60000.0, 1.2)
    assert (pure.cpu_us_per_request, pure.cpu_ratio) == (8.0, 0.8)
    assert pure.saturated == "server"
    assert (compiled.ir_per_request, compiled.rps, compiled.cpu_ratio) == (7000.0, 70000.0, 0.7)
    assert asyncio_row.ir_ratio == asyncio_row.rps_ratio == asyncio_row.cpu_ratio == 1.0
    assert uvloop.saturated == "client"
    assert (twisted.ir_per_request, twisted.rps) == (None, 30000.0)  # callgrind failed
    assert (bare.ir_per_request, bare.rps, bare.saturated) == (6000.0, None, None)  # no echo run


def test_markdown_table_and_failures(bb: ModuleType) -> None:
    text = bb.tables(CALLGRIND, ECHO, ["pingpong-1k", "idle-5k"])
    lines = text.splitlines()
    assert "### pingpong-1k: 100 connections, 1 KiB ping-pong" in lines
    assert lines[lines.index("### pingpong-1k: 100 connections, 1 KiB ping-pong") + 2] == (
        "| server | instructions/req | vs asyncio | req/s | vs asyncio "
        "| server CPU µs/req | vs asyncio | saturated |"
    )
    assert "| reactor (pure) | 10,000 | 0.50x | 60,000 | 1.20x | 8.00 | 0.80x | server |" in lines
    assert "| Twisted | - | - | 30,000 | 0.60x | 20.00 | 2.00x | server |" in lines
    assert "| bare loop | 6,000 | 0.30x | - | - | - | - | - |" in lines
    assert "failed runs: twisted: callgrind 0/1 ok" in lines
    assert "| reactor (compiled) | 1,200 | 0.40x |" in lines
    assert "N=2,000, D=2,000" in lines[-1]


def test_idle_rows(bb: ModuleType) -> None:
    rows = bb.idle_rows(ECHO)
    assert [(r.label, r.bytes_per_conn, r.ratio) for r in rows] == [
        ("reactor (pure)", 1500.0, 0.5),
        ("reactor (compiled)", 1200.0, 0.4),
        ("asyncio", 3000.0, 1.0),
    ]
    assert bb.table_rows(CALLGRIND, ECHO, "idle-5k")[0] == {
        "label": "reactor (pure)",
        "bytes_per_conn": 1500.0,
        "ratio": 0.5,
    }


def test_commands_share_flags_and_split_scenarios(bb: ModuleType, tmp_path: Path) -> None:
    args: argparse.Namespace = bb.parse_args(
        [
            "--compiled",
            str(tmp_path),
            "--loadgen",
            "lg.c",
            "--servers",
            "reactor,asyncio,twisted",
            "--scenarios",
            "pingpong-1k,idle-5k",
            "-N",
            "500",
            "--repeats",
            "1",
            "--duration",
            "1",
            "--wait-quiet",
            "30",
        ]
    )
    cg = bb.callgrind_command(args, tmp_path / "cg.json")
    echo = bb.echo_command(args, tmp_path / "echo.json")
    assert cg[1].endswith("callgrind_bench.py") and echo[1].endswith("echo_bench.py")
    for command in (cg, echo):
        assert command[command.index("--compiled") + 1] == str(tmp_path.resolve())
        assert command[command.index("--loadgen") + 1] == "lg.c"
        assert command[command.index("--servers") + 1] == "reactor,asyncio,twisted"
    assert cg[cg.index("--scenarios") + 1] == "pingpong-1k"  # idle-5k is echo_bench's alone
    assert cg[cg.index("--requests") + 1] == "500"
    assert "--wait-quiet" not in cg
    assert echo[echo.index("--scenarios") + 1] == "pingpong-1k,idle-5k"
    assert echo[echo.index("--backends") + 1] == "epoll"
    assert echo[echo.index("--wait-quiet") + 1] == "30"
    assert echo[-2:] == ["--json", str(tmp_path / "echo.json")]
    idle_only = bb.parse_args(["--scenarios", "idle-5k"])
    assert bb.callgrind_command(idle_only, tmp_path / "cg.json") is None
