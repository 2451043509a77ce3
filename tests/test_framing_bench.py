"""benchmarks/framing_bench.py: its workloads deliver what they claim, its table reads right.

The benchmark counts instructions under valgrind, by hand, never in CI. What
it counts must be right, though: every scenario's worker is run here in
process (a few cycles, no valgrind) and must deliver exactly the messages
and bytes its workload promises, and the table must flag a tree whose
checksum differs from the first.
"""

from __future__ import annotations

from collections.abc import Iterator
from types import ModuleType

import pytest

from tests.bench_import import bench_script

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def fb() -> Iterator[ModuleType]:
    with bench_script("framing_bench", "callgrind_bench", "echo_bench") as module:
        yield module


#: Bytes of payload per message each scenario delivers (what the checksum adds up).
PAYLOAD = {
    "lines": 62,
    "lines-configured": 63,  # split on b"\n" alone: each line keeps its b"\r"
    "lines-super": 62,
    "lines-mixin": 62,
    "lines-echo": 62,
    "int32": 64,
    "netstring": 64,
    "protocol": 1024,
}


def test_every_scenario_has_a_payload_here(fb: ModuleType) -> None:
    assert set(fb.SCENARIOS) == set(PAYLOAD)


@pytest.mark.parametrize("name", sorted(PAYLOAD))
def test_worker_delivers_every_message_whole(fb: ModuleType, name: str) -> None:
    report = fb.run_worker(name, 3)
    assert report["count"] == report["expected"] > 0
    assert report["checksum"] == report["count"] * PAYLOAD[name]
    assert report["framing_compiled"] is False  # this checkout is not built in place


def test_echo_scenario_writes_every_line_back(fb: ModuleType) -> None:
    work = fb.build_workload("lines-echo")
    for chunk in work.chunks:
        work.protocol.data_received(chunk)
    written = work.protocol.transport.value()
    assert written == b"".join(work.chunks)


def test_render_flags_a_changed_checksum(fb: ModuleType) -> None:
    counts = [
        fb.Count("pure", "lines", 1000.0, 62, "pure"),
        fb.Count("other", "lines", 800.0, 63, "compiled+framing"),
        fb.Count("pure", "int32", 500.0, 64, "pure"),
        fb.Count("other", "int32", 600.0, 64, "compiled+framing"),
    ]
    table = fb.render(counts, ["pure", "other"], ["lines", "int32"])
    rows = table.splitlines()
    assert "other (compiled+framing)" in rows[0]
    lines_row = next(r for r in rows if r.strip().startswith("lines"))
    assert "800 (0.80x) CHECKSUM DIFFERS" in lines_row
    int32_row = next(r for r in rows if r.strip().startswith("int32"))
    assert "600 (1.20x)" in int32_row and "CHECKSUM" not in int32_row


def test_bad_tree_argument_is_refused(fb: ModuleType, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        fb.main(["--tree", "no-equals-sign"])
    assert "--tree takes NAME=DIR" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        fb.main(["--scenarios", "lines,nonsense"])
    assert "unknown scenarios ['nonsense']" in capsys.readouterr().err
