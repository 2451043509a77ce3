"""benchmarks/streamclient.py: the stream scenario's client counts and checks what it measures.

It runs as a subprocess against small blocking servers on loopback: an honest
echo, one that garbles bytes, one that talks without being asked. Each run is
bounded by the client's own --duration and an alarm.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

CLIENT = Path(__file__).resolve().parents[1] / "benchmarks" / "streamclient.py"

Handler = Callable[[socket.socket], None]


def echo(conn: socket.socket) -> None:
    while data := conn.recv(1 << 20):
        conn.sendall(data)


def garble(conn: socket.socket) -> None:
    flip = bytes(b ^ 0x01 for b in range(256))
    while data := conn.recv(1 << 20):
        conn.sendall(data.translate(flip))


def dropper(conn: socket.socket) -> None:
    first = conn.recv(1 << 20)
    conn.sendall(first[1000:])  # loses 1,000 bytes, then echoes honestly
    echo(conn)


def sink(conn: socket.socket) -> None:
    while conn.recv(1 << 20):
        pass


def chatter(conn: socket.socket) -> None:
    # Far more than the kernel buffers between the two can hold, never reading:
    # the client cannot have sent what it receives.
    block = b"x" * (1 << 20)
    for _ in range(32):
        conn.sendall(block)


@pytest.fixture
def serve() -> Iterator[Callable[[Handler], int]]:
    """Start a one-connection blocking server; returns its port."""
    listeners: list[socket.socket] = []
    threads: list[threading.Thread] = []

    def start(handler: Handler) -> int:
        lsock = socket.create_server(("127.0.0.1", 0))
        listeners.append(lsock)

        def main() -> None:
            try:
                conn, _ = lsock.accept()
            except OSError:
                return  # closed by the fixture
            with conn:
                try:
                    handler(conn)
                except OSError:
                    pass  # the client hung up at the end of its run

        thread = threading.Thread(target=main, daemon=True)
        thread.start()
        threads.append(thread)
        return int(lsock.getsockname()[1])

    yield start
    for lsock in listeners:
        lsock.close()
    for thread in threads:
        thread.join(timeout=10)


def run_client(port: int, *extra: str) -> tuple[int, dict[str, Any], list[dict[str, Any]]]:
    proc = subprocess.run(
        [sys.executable, str(CLIENT), "--port", str(port), "--warmup", "0.1", *extra],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    result = json.loads(proc.stdout) if proc.stdout.strip() else {}
    events = [json.loads(line) for line in proc.stderr.splitlines() if line.startswith("{")]
    return proc.returncode, result, events


def test_an_echo_stream_is_counted_and_verified(serve: Callable[[Handler], int]) -> None:
    code, result, events = run_client(serve(echo), "--duration", "0.5", "--verify")
    assert code == 0, result
    assert result["ok"] is True
    assert result["bytes"] > 0
    assert result["MB_per_sec"] > 0
    assert result["mismatches"] == 0
    assert result["excess_bytes"] == 0
    assert result["verified_bytes"] > 0  # sampled reads were compared
    assert result["stalled"] == 0
    assert result["client_cpu_pct"] >= 0
    assert [e["event"] for e in events] == ["connected", "measure_start", "measure_end"]


def test_garbled_bytes_are_caught_by_the_sampled_reads(serve: Callable[[Handler], int]) -> None:
    code, result, _ = run_client(
        serve(garble), "--duration", "0.3", "--verify", "--verify-every", "1"
    )
    assert result["bytes"] > 0
    assert result["verified_bytes"] > 0
    assert result["mismatches"] == result["verified_bytes"]  # every byte was flipped
    assert code == 0  # the run itself worked: the harness reports mismatches as errors


def test_dropped_bytes_shift_the_stream_and_are_caught(serve: Callable[[Handler], int]) -> None:
    code, result, _ = run_client(
        serve(dropper), "--duration", "0.3", "--verify", "--verify-every", "1"
    )
    assert code == 0
    assert result["bytes"] > 0
    assert result["mismatches"] > result["verified_bytes"] // 2


def test_bytes_never_sent_are_counted_as_excess(serve: Callable[[Handler], int]) -> None:
    code, result, _ = run_client(
        serve(chatter), "--duration", "1", "--size", "65536", "--window", "65536"
    )
    assert 0 < result["excess_bytes"] <= 32 << 20
    # The chatty server hangs up after its 32 MiB, with our bytes unread: a
    # FIN, or a reset that fails the next send. Either way the run failed.
    assert code == 1
    assert result["ok"] is False
    assert result["closed_by_peer"] + result["io_errors"] == 1
    reason = result["reason"]
    assert reason == "closed by the server" or reason.startswith(("recv: ", "send: "))


def test_a_server_that_echoes_nothing_fails_the_run(serve: Callable[[Handler], int]) -> None:
    code, result, _ = run_client(serve(sink), "--duration", "0.3")
    assert code == 1
    assert result["ok"] is False
    assert result["bytes"] == 0
    assert result["reason"] == "the server echoed nothing during the measured window"
    assert result["stalled"] == 1
    assert result["io_errors"] == 0


def test_a_refused_connection_is_a_failed_run() -> None:
    with socket.create_server(("127.0.0.1", 0)) as lsock:
        port = lsock.getsockname()[1]
    code, result, _ = run_client(port, "--duration", "0.2", "--connect-timeout", "5")
    assert code == 1
    assert result["ok"] is False
    assert "connect" in result["reason"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--conns", "2"], "--conns must be 1"),
        (["--verify-every", "0"], "--verify-every must be at least 1"),
        (["--host", "192.0.2.1"], "loopback"),
    ],
)
def test_bad_arguments_are_refused(args: list[str], message: str) -> None:
    proc = subprocess.run(
        [sys.executable, str(CLIENT), "--port", "9", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode != 0
    assert message in proc.stderr
