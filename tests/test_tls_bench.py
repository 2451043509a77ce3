"""benchmarks/tls_bench.py: what it derives from its runs, checked on made-up runs.

The benchmark itself runs servers and its C client by hand, never in CI; the
idle-memory arithmetic (the difference of two runs, which cancels what the
warm-up left in the heap) and the wrapper that lets callgrind_bench drive the
TLS client are tested here.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tests.bench_import import bench_script

pytestmark = pytest.mark.timeout(30)


@pytest.fixture(scope="module")
def tb() -> Iterator[ModuleType]:
    """tls_bench, imported as its script would be (it imports its neighbours)."""
    with bench_script("tls_bench", "tls_floor", "callgrind_bench", "echo_bench") as module:
        yield module


def idle_run(
    server: str, scenario: str, before_kb: int, ready_kb: int, held: int
) -> dict[str, Any]:
    return {
        "scenario": scenario,
        "server": server,
        "ok": True,
        "rss_before_kb": before_kb,
        "rss_ready_kb": ready_kb,
        "held": held,
    }


def test_idle_difference_cancels_what_both_runs_share(tb: ModuleType) -> None:
    small, large = tb.native_scenarios(1000, 16)[-2:]
    # asyncio: 4,000 KiB of warm-up leftovers in both runs, then 20 KiB per connection.
    runs = [
        idle_run("asyncio", small.name, 10_000, 10_000 + 4_000 + 20_000, 1000),
        idle_run("asyncio", large.name, 10_100, 10_100 + 4_000 + 40_000, 2000),
        idle_run("reactor-epoll", small.name, 9_000, 9_000 + 4_000 + 10_000, 1000),
        idle_run("reactor-epoll", large.name, 9_000, 9_000 + 4_000 + 20_000, 2000),
        # a failed run and a server with only one size are left out
        {**idle_run("reactor-epoll", large.name, 0, 999_999, 2000), "ok": False},
        idle_run("uvloop", small.name, 9_000, 20_000, 1000),
    ]
    idle = tb.idle_difference(runs, small, large)
    assert set(idle) == {"asyncio", "reactor-epoll"}
    assert idle["asyncio"]["per_conn_bytes"] == pytest.approx(20 * 1024)
    assert idle["reactor-epoll"]["per_conn_bytes"] == pytest.approx(10 * 1024)
    assert idle["reactor-epoll"]["ratio"] == pytest.approx(0.5)
    # the naive figure of one run keeps the leftovers
    assert idle["asyncio"]["naive_per_conn_bytes"] == pytest.approx(24 * 1024)
    assert "reactor-epoll" in tb.idle_table(idle, ["reactor-epoll", "asyncio"])


def test_idle_difference_takes_medians_of_repeats(tb: ModuleType) -> None:
    small, large = tb.native_scenarios(100, 16)[-2:]
    runs = [idle_run("asyncio", small.name, 0, kb, 100) for kb in (1_000, 1_100, 5_000)] + [
        idle_run("asyncio", large.name, 0, kb, 200) for kb in (2_100, 2_000, 9_000)
    ]
    idle = tb.idle_difference(runs, small, large)
    assert idle["asyncio"]["per_conn_bytes"] == pytest.approx((2_100 - 1_100) * 1024 / 100)
    assert idle["asyncio"]["ratio"] == pytest.approx(1.0)


def test_scenarios_are_loadgen_shaped(tb: ModuleType) -> None:
    pingpong, stream, handshake, small, large = tb.native_scenarios(500, 8)
    assert (pingpong.conns, pingpong.size, pingpong.unit) == (100, 1024, "req")
    # echo_bench's stream scenario, over TLS: one connection, 256 KiB writes, MB/s
    assert (stream.conns, stream.size, stream.unit) == (1, 256 * 1024, "MB")
    assert stream.client_args(2.0, 0.5)[-2:] == ["--mode", "stream"]
    assert handshake.conns == 8
    assert (small.mode, small.conns, large.conns) == ("idle", 500, 1000)
    assert "--idle" in small.client_args(2.0, 0.0)


def test_the_wrapper_adds_the_ca_and_the_warm_up(tb: ModuleType, tmp_path: Path) -> None:
    fake = tmp_path / "client"
    fake.write_text('#!/bin/sh\nprintf "%s\\n" "$@"\n')
    fake.chmod(0o755)
    wrapper = tb.client_wrapper(fake, str(tmp_path / "ca dir" / "ca.pem"), tmp_path)
    out = subprocess.run(
        [str(wrapper), "--port", "1234", "--requests", "5"],
        capture_output=True,
        text=True,
        check=True,
        timeout=10,
    ).stdout.splitlines()
    assert out[:2] == ["--cafile", str(tmp_path / "ca dir" / "ca.pem")]
    assert out[2:8] == tb.warm_args()
    assert out[8:] == ["--port", "1234", "--requests", "5"]


def test_the_plain_wrapper_speaks_plain_tcp(tb: ModuleType, tmp_path: Path) -> None:
    fake = tmp_path / "client"
    fake.write_text('#!/bin/sh\nprintf "%s\\n" "$@"\n')
    fake.chmod(0o755)
    ca = str(tmp_path / "ca.pem")
    tls = tb.client_wrapper(fake, ca, tmp_path, ("--mode", "stream"))
    plain = tb.client_wrapper(fake, ca, tmp_path, ("--mode", "stream"), plain=True)
    assert tls != plain  # both exist side by side in one run
    run = [str(plain), "--port", "1"]
    out = subprocess.run(run, capture_output=True, text=True, check=True, timeout=10).stdout
    lines = out.splitlines()
    assert lines[0] == "--plain" and "--cafile" not in lines
    assert lines[1:7] == tb.warm_args()
    assert lines[7:] == ["--mode", "stream", "--port", "1"]


def cpu_run(server: str, rnd: int, us: float) -> dict[str, Any]:
    return {
        "scenario": "tls-pingpong-1k",
        "server": server,
        "ok": True,
        "round": rnd,
        "cpu_per_unit_us": us,
    }


def test_targets_compare_tls_with_plain_and_asyncio_round_by_round(tb: ModuleType) -> None:
    pingpong = tb.native_scenarios(100, 8)[0]
    runs = [
        # round 1: a quiet machine; round 2: everything twice as slow
        cpu_run("reactor-epoll", 1, 9.0),
        cpu_run("reactor-plain", 1, 6.0),
        cpu_run("asyncio", 1, 12.0),
        cpu_run("reactor-epoll", 2, 18.0),
        cpu_run("reactor-plain", 2, 12.0),
        cpu_run("asyncio", 2, 24.0),
        {**cpu_run("reactor-plain", 3, 1.0), "ok": False},  # a failed run counts for nothing
    ]
    targets = tb.target_lines(pingpong, runs)
    plain, asyncio = targets["reactor-plain"], targets["asyncio"]
    assert (plain["median"], plain["rounds"], plain["met"]) == (pytest.approx(1.5), 2, True)
    assert (asyncio["median"], asyncio["met"]) == (pytest.approx(0.75), True)
    slow = [cpu_run("reactor-epoll", 1, 10.0), cpu_run("reactor-plain", 1, 6.0)]
    assert tb.target_lines(pingpong, slow)["reactor-plain"]["met"] is False  # 1.67x > 1.6x


def test_every_server_gets_the_certificate(tb: ModuleType) -> None:
    certs = {"server.pem": "/c/server.pem", "server.key": "/c/server.key"}
    kinds = tb.server_kinds(certs)
    assert set(kinds) == set(tb.SERVER_NAMES)
    for name, kind in kinds.items():
        if name == tb.PLAIN:  # the reactor's plain TCP echo, for the TLS/plain ratio
            assert "--tls-cert" not in kind.argv and kind.argv[0].endswith("reactor_echo.py")
            continue
        assert kind.argv[kind.argv.index("--tls-cert") + 1] == "/c/server.pem"
        assert kind.argv[kind.argv.index("--tls-key") + 1] == "/c/server.key"
    assert kinds["reactor"].name == "reactor-epoll"
