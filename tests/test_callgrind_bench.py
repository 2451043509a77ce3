"""benchmarks/callgrind_bench.py: the arithmetic and the parsing behind instructions per request.

The benchmark itself runs servers under valgrind by hand, never in CI; what it
reads from callgrind's output files and how it turns two runs into one figure
is checked here on made-up files. The warm-up every server gets
(``echo_bench.warm_server``) is checked against small blocking servers on
loopback, each bounded by the warm-up's own timeout.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from types import ModuleType
from typing import Any

import pytest

from tests.bench_import import bench_script


@pytest.fixture(scope="module")
def cb() -> Iterator[ModuleType]:
    """callgrind_bench, imported as its script would be (it imports echo_bench beside it)."""
    with bench_script("callgrind_bench", "echo_bench") as module:
        yield module


CALLGRIND_FILE = """\
# callgrind format
version: 1
creator: callgrind-3.19.0
cmd:  python -m apps.echo
part: 1

positions: line
events: Ir Dr
summary: 1000 300

ob=(1) /usr/lib/libpython3.13.so.1.0
fl=(1) ???
fn=(1) _PyEval_EvalFrameDefault
0 500 100
+3 100 20
cob=(2) /usr/lib/libc.so.6
cfi=(2) ???
cfn=(2) malloc
calls=4 0
0 250 90
ob=(2)
fl=(2)
fn=(2)
0 250 90
ob=(1)
fl=(1)
fn=(1)
* 50 10
fn=(3) sock_recv
-2 100

totals: 1050 310
"""


# --------------------------------------------------------------------------- totals


def test_total_prefers_the_totals_line(cb: ModuleType) -> None:
    assert cb.parse_callgrind_total(CALLGRIND_FILE) == 1050
    assert cb.parse_callgrind_total(CALLGRIND_FILE, "Dr") == 310


def test_total_falls_back_to_the_summary_line(cb: ModuleType) -> None:
    text = "events: Ir\nsummary: 616609035\nfn=(1) main\n0 5\n"
    assert cb.parse_callgrind_total(text) == 616609035


def test_total_of_an_event_left_off_as_zero(cb: ModuleType) -> None:
    # callgrind leaves off trailing zero counts.
    assert cb.parse_callgrind_total("events: Ir Dw\ntotals: 77\n", "Dw") == 0


def test_total_without_totals_or_event_is_an_error(cb: ModuleType) -> None:
    with pytest.raises(ValueError, match="totals"):
        cb.parse_callgrind_total("events: Ir\nfn=(1) main\n0 5\n")
    with pytest.raises(ValueError, match="not counted"):
        cb.parse_callgrind_total("events: Dr\ntotals: 5\n")


def test_total_without_an_events_line_means_ir(cb: ModuleType) -> None:
    assert cb.parse_callgrind_total("totals: 12\n") == 12


# --------------------------------------------------------------------------- the difference


def test_per_request_is_the_difference_over_delta(cb: ModuleType) -> None:
    # Start-up (5e8) is in both runs and cancels; 20,000 more requests cost 2e8.
    assert cb.per_request(500_000_000 + 20_000 * 10_000, 500_000_000 + 40_000 * 10_000, 20_000) == (
        10_000.0
    )
    with pytest.raises(ValueError):
        cb.per_request(1, 2, 0)


def test_fixed_cost_is_what_the_requests_do_not_explain(cb: ModuleType) -> None:
    assert cb.fixed_cost(700, 20, 10.0) == 500.0


# --------------------------------------------------------------------------- per function


def test_self_costs_undo_name_compression_and_skip_call_costs(cb: ModuleType) -> None:
    costs = cb.parse_self_costs(CALLGRIND_FILE)
    assert costs == {
        # 500 + 100 + 50; the 250 after calls= is malloc's, counted under malloc.
        "_PyEval_EvalFrameDefault [libpython3.13.so.1.0]": 650,
        "malloc [libc.so.6]": 250,
        "sock_recv [libpython3.13.so.1.0]": 100,
    }
    assert sum(costs.values()) == 1000  # the summary: every instruction counted once
    assert cb.parse_self_costs(CALLGRIND_FILE, "Dr")["malloc [libc.so.6]"] == 90


def test_self_costs_with_two_position_columns(cb: ModuleType) -> None:
    text = "positions: instr line\nevents: Ir\nob=x.so\nfn=f\n0x10 3 7\n+2 * 5\n"
    assert cb.parse_self_costs(text) == {"f [x.so]": 12}


def test_self_costs_of_an_uncounted_event(cb: ModuleType) -> None:
    with pytest.raises(ValueError):
        cb.parse_self_costs(CALLGRIND_FILE, "Bc")


def test_profile_difference_ranks_growth_per_request(cb: ModuleType) -> None:
    small = {"eval": 1000, "malloc": 300, "startup": 900}
    large = {"eval": 5000, "malloc": 500, "startup": 900, "new": 100}
    ranked = cb.profile_difference(small, large, 100, top=3)
    assert ranked == [("eval", 40.0), ("malloc", 2.0), ("new", 1.0)]
    with pytest.raises(ValueError):
        cb.profile_difference(small, large, 0)


# --------------------------------------------------------------------------- summary


def record(server: str, per: float | None, scenario: str = "pingpong-1k") -> dict[str, Any]:
    ok = per is not None
    out: dict[str, Any] = {"scenario": scenario, "server": server, "ok": ok}
    if ok:
        out["ir_per_request"] = per
        out["fixed_ir"] = 4e8
    return out


def test_summary_medians_and_ratio_to_asyncio(cb: ModuleType) -> None:
    runs = [
        record("asyncio", 20_000),
        record("asyncio", 21_000),
        record("asyncio", 19_000),
        record("reactor", 10_000),
        record("reactor", 10_200),
        record("reactor", None),  # a failed pair: counted, not in the median
        record("asyncio", 5_000, scenario="pingpong-64"),
    ]
    summary = cb.summarize(runs)
    reactor = summary["pingpong-1k"]["reactor"]
    assert reactor["repeats"] == 3 and reactor["ok"] == 2
    assert reactor["ir_per_request"] == {"median": 10_100, "min": 10_000, "max": 10_200}
    assert reactor["ratio"] == pytest.approx(10_100 / 20_000)
    assert reactor["fixed_ir"] == 4e8
    assert summary["pingpong-1k"]["asyncio"]["ratio"] == 1.0
    assert set(summary["pingpong-64"]) == {"asyncio"}
    text = cb.report("pingpong-1k", "title", summary["pingpong-1k"], ["reactor", "asyncio", "x"])
    assert "0.51x" in text and "10,100 (10,000-10,200)" in text and "2/3" in text


def test_summary_without_asyncio_has_no_ratio(cb: ModuleType) -> None:
    summary = cb.summarize([record("reactor", 10_000)])
    assert "ratio" not in summary["pingpong-1k"]["reactor"]


# --------------------------------------------------------------------------- warm-up


@pytest.fixture
def serve() -> Iterator[Callable[[Callable[[socket.socket], None]], int]]:
    """Start a one-thread blocking server on loopback with a handler per connection."""
    listeners: list[socket.socket] = []
    threads: list[threading.Thread] = []
    stopping = threading.Event()

    def start(handler: Callable[[socket.socket], None]) -> int:
        listener = socket.create_server(("127.0.0.1", 0))
        listener.settimeout(10)
        listeners.append(listener)

        def loop() -> None:
            while True:
                try:
                    conn, _ = listener.accept()
                except OSError:
                    return
                if stopping.is_set():
                    conn.close()
                    return
                with conn:
                    conn.settimeout(10)
                    try:
                        handler(conn)
                    except OSError:
                        pass

        thread = threading.Thread(target=loop, daemon=True)
        thread.start()
        threads.append(thread)
        port: int = listener.getsockname()[1]
        return port

    yield start
    stopping.set()
    for listener in listeners:
        # Wake the blocked accept(); the thread sees ``stopping`` and returns.
        with socket.create_connection(listener.getsockname()[:2], timeout=10):
            pass
    for thread in threads:
        thread.join(timeout=10)
    for listener in listeners:
        listener.close()


def echo(conn: socket.socket) -> None:
    while data := conn.recv(1 << 18):
        conn.sendall(data)
    conn.shutdown(socket.SHUT_WR)


def garble(conn: socket.socket) -> None:
    while data := conn.recv(1 << 18):
        conn.sendall(data[::-1])


def test_warm_server_echoes_and_closes(
    cb: ModuleType, serve: Callable[[Callable[[socket.socket], None]], int]
) -> None:
    assert cb.warm_server.__module__ == "echo_bench"  # the same warm-up as echo_bench.py
    port = serve(echo)
    done = cb.warm_server("127.0.0.1", port, conns=2, pings=3, bulk=300_000, timeout=30)
    assert done["conns"] == 2
    assert done["bytes_echoed"] == 2 * (3 * 1024 + 300_000)


def test_warm_server_refuses_a_wrong_echo(
    cb: ModuleType, serve: Callable[[Callable[[socket.socket], None]], int]
) -> None:
    port = serve(garble)
    with pytest.raises(OSError, match="differs"):
        cb.warm_server("127.0.0.1", port, conns=1, pings=1, bulk=1024, timeout=30)
