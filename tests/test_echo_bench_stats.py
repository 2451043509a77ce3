"""The echo benchmark's statistics: pure functions, checked on made-up runs.

The benchmark itself runs by hand, never in CI; what it concludes from its runs
(medians, ratios, round-by-round comparisons, steal) is tested here.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "echo_bench.py"


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("echo_bench_under_test", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up here
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules[spec.name]
    return module


def run(
    server: str, rnd: int, rate: float, cpu: float, client_pct: float = 50.0, user: float = 0.0
) -> dict[str, Any]:
    return {
        "scenario": "stream",
        "server": server,
        "round": rnd,
        "ok": True,
        "errors": 0,
        "mismatches": 0,
        "rate": rate,
        "mbps": rate,
        "cpu_per_unit_us": cpu,
        "user_per_unit_us": user or cpu / 5,
        "server_cpu_pct": 60.0,
        "client_cpu_pct": client_pct,
        "steal_pct": 5.0,
    }


def test_round_by_round_ratios_cancel_a_drift_that_medians_keep(bench: ModuleType) -> None:
    # The machine doubles its speed halfway (a quiet host): "r" is 10% faster
    # than "a" in every round, but its runs happen to fall in the slow rounds
    # more often than not, so the ratio of medians says it is slower.
    runs = []
    for rnd, speed in enumerate([1.0, 1.0, 1.0, 2.0, 2.0], start=1):
        runs.append(run("asyncio", rnd, 100 * speed, 800 / speed))
        runs.append(run("reactor-epoll", rnd, 110 * speed, 700 / speed))
    runs.append(run("asyncio", 6, 200, 400))  # asyncio alone in a fast round
    runs.append(run("asyncio", 7, 200, 400))

    pairs = bench.paired(runs, "reactor-epoll", "asyncio", "rate")
    assert pairs == {"rounds": 5, "median": pytest.approx(1.1), "above_1": 5}
    cpu = bench.paired(runs, "reactor-epoll", "asyncio", "cpu_per_unit_us")
    assert cpu["median"] == pytest.approx(700 / 800)
    assert cpu["above_1"] == 0

    summary = bench.summarize(runs)["stream"]
    assert summary["reactor-epoll"]["rate_ratio"] < 1  # the misleading one
    assert summary["reactor-epoll"]["paired"]["asyncio"]["rate"]["median"] == pytest.approx(1.1)
    assert "twisted" not in summary["reactor-epoll"]["paired"]  # not in this run
    assert "paired" not in summary["asyncio"]  # no peer but itself
    assert summary["reactor-epoll"]["steal_pct"]["median"] == 5.0


def test_failed_runs_and_lone_rounds_are_left_out_of_pairs(bench: ModuleType) -> None:
    runs = [
        run("asyncio", 1, 100, 800),
        {**run("reactor-epoll", 1, 500, 100), "ok": False},
        run("asyncio", 2, 100, 800),
        run("reactor-epoll", 2, 90, 900),
        run("reactor-epoll", 3, 90, 900),
    ]
    assert bench.paired(runs, "reactor-epoll", "asyncio", "rate") == {
        "rounds": 1,
        "median": pytest.approx(0.9),
        "above_1": 0,
    }
    assert bench.paired(runs, "reactor-epoll", "twisted", "rate") == {}


def test_report_says_when_the_client_is_what_was_measured(bench: ModuleType) -> None:
    runs = []
    for rnd in (1, 2, 3):
        runs.append(run("asyncio", rnd, 800, 800, client_pct=95))
        runs.append(run("twisted", rnd, 600, 1400, client_pct=70))
        runs.append(run("reactor-epoll", rnd, 820 if rnd < 3 else 780, 700, client_pct=95))
    scenario = bench.SCENARIOS["stream"]
    text = bench.report(scenario, bench.summarize(runs)["stream"], ["reactor-epoll", "asyncio"])
    assert "round by round, reactor-epoll vs asyncio: MB/s 1.02x (higher in 2 of 3 rounds)" in text
    assert "CPU/MB 0.88x (lower in 3 of 3), user CPU/MB 0.88x (lower in 3 of 3)" in text
    assert "reactor-epoll vs twisted" in text
    assert "the client saturated, so MB/s measures the client here" in text
    assert "steal%" in text


def test_machine_times_reads_busy_and_stolen_seconds(bench: ModuleType) -> None:
    times = bench.machine_times()
    if times is None:
        pytest.skip("no /proc/stat on this system")
    busy, stolen = times
    assert busy > 0
    assert stolen >= 0
    assert bench.machine_busy_s() == pytest.approx(busy, abs=1.0)


def test_an_old_results_file_is_summarized_anew(
    bench: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A run recorded before user CPU per unit existed: it is derived from the
    # raw user seconds and the client's byte count.
    runs = []
    for rnd in (1, 2):
        for server, user_s in (("asyncio", 0.9), ("reactor-epoll", 0.6)):
            r = run(server, rnd, 800, 700)
            del r["user_per_unit_us"]
            r["server_user_s"] = user_s
            r["client"] = {"bytes": 3_000_000_000}
            runs.append(r)
    path = tmp_path / "old.json"
    path.write_text(json.dumps({"scenarios": {"stream": {}}, "summary": {}, "runs": runs}))

    assert bench.main(["--summarize", str(path)]) == 0

    out = capsys.readouterr().out
    assert "user CPU/MB 0.67x (lower in 2 of 2)" in out
    summary = json.loads(path.read_text())["summary"]["stream"]
    assert summary["reactor-epoll"]["user_per_unit_us"]["median"] == pytest.approx(200)
    assert summary["asyncio"]["user_per_unit_us"]["median"] == pytest.approx(300)


def test_a_file_that_is_not_results_is_refused(bench: ModuleType, tmp_path: Path) -> None:
    path = tmp_path / "other.json"
    path.write_text("[1, 2]")
    with pytest.raises(SystemExit, match="not an echo_bench results file"):
        bench.main(["--summarize", str(path)])


def test_compiled_refuses_a_tree_that_is_not_a_compiled_build(
    bench: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A tree whose reactor is the pure build (here a stand-in that says so),
    # and one with no reactor at all: neither is run as reactor-compiled.
    pure = tmp_path / "pure"
    (pure / "reactor").mkdir(parents=True)
    (pure / "reactor" / "__init__.py").write_text("COMPILED = False\n")
    with pytest.raises(SystemExit):
        bench.parse_args(["--compiled", str(pure), "--scenarios", "pingpong-1k"])
    assert "is not a compiled build (reactor.COMPILED is False)" in capsys.readouterr().err

    with pytest.raises(SystemExit):
        bench.parse_args(["--compiled", str(tmp_path / "empty")])
    assert "holds no reactor package" in capsys.readouterr().err

    with pytest.raises(SystemExit):
        bench.parse_args(["--servers", "reactor-compiled"])
    assert "needs --compiled TREE" in capsys.readouterr().err
