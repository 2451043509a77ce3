"""The tutorial's code (docs/examples/kvstore.py and kvclient.py) does what docs/tutorial.md says.

Most tests run in memory, with protocols.testing's MemoryTransport, Pump and
fake Clock: no sockets, no sleeping, timeouts tested in fake seconds. One test
runs client and server over real sockets on every backend, and one runs the
two scripts as a reader of the tutorial would.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from protocols.policies import HeartbeatTimeoutError
from protocols.testing import Clock, MemoryTransport, connect_pair
from reactor import Reactor
from tests.conftest import run_until

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "docs" / "examples"
if str(EXAMPLES) not in sys.path:
    sys.path.insert(0, str(EXAMPLES))

import kvclient  # noqa: E402
from kvclient import KVClient, Reply  # noqa: E402
from kvstore import KVStoreFactory  # noqa: E402

pytestmark = pytest.mark.timeout(60)

PEER = ("127.0.0.1", 50000)


# --8<-- [start:test-server]
def serve(
    clock: Clock | None = None, idle_timeout: float | None = 300.0
) -> tuple[KVStoreFactory, MemoryTransport]:
    """A server protocol on a memory transport; the test plays the client."""
    factory = KVStoreFactory(clock or Clock(), idle_timeout=idle_timeout)
    transport = MemoryTransport(peername=PEER)
    transport.connect(factory.build_protocol(PEER))
    return factory, transport


def replies(transport: MemoryTransport) -> list[bytes]:
    """The lines the server wrote since the last call."""
    data = transport.value()
    transport.clear()
    return data.splitlines()


# ------------------------------------------------------------------ the server


def test_set_get_del_keys() -> None:
    factory, transport = serve()
    transport.feed(b"SET name alice smith\nGET name\nSET lang python\nKEYS\n")
    assert replies(transport) == [b"OK", b"VALUE alice smith", b"OK", b"KEYS lang name"]
    transport.feed(b"DEL lang\nDEL lang\nGET lang\n")
    assert replies(transport) == [b"DELETED", b"NOT_FOUND", b"NOT_FOUND"]
    assert factory.store == {b"name": b"alice smith"}
    # --8<-- [end:test-server]


def test_commands_may_arrive_in_any_chunks() -> None:
    _, transport = serve()
    for byte in b"SET k v\nGET k\n":
        transport.feed(bytes([byte]))
    assert replies(transport) == [b"OK", b"VALUE v"]


def test_telnet_line_ends_lower_case_and_blank_lines() -> None:
    _, transport = serve()
    transport.feed(b"set k v\r\n\r\n  get k  \r\nkeys\r\n")
    assert replies(transport) == [b"OK", b"VALUE v", b"KEYS k"]


def test_errors_keep_the_connection_open() -> None:
    _, transport = serve()
    transport.feed(b"FLY away\nSET\nGET\nGET a b\nDEL\n")
    assert replies(transport) == [
        b"ERROR unknown command FLY",
        b"ERROR usage: SET key value",
        b"ERROR usage: GET key",
        b"ERROR usage: GET key",
        b"ERROR usage: DEL key",
    ]
    transport.feed(b"SET " + b"x" * 5000 + b"\nPING\n")
    assert replies(transport) == [b"ERROR line too long", b"PONG"]
    assert not transport.closed


def test_quit_says_bye_then_closes() -> None:
    factory, transport = serve()
    assert len(factory.clients) == 1
    transport.feed(b"QUIT\nGET never-answered\n")
    assert replies(transport) == [b"BYE"]
    assert transport.lost
    assert not factory.clients


def test_connections_share_the_store() -> None:
    factory = KVStoreFactory(Clock())
    first, second = MemoryTransport(), MemoryTransport()
    first.connect(factory.build_protocol(PEER))
    second.connect(factory.build_protocol(PEER))
    first.feed(b"SET shared yes\n")
    second.feed(b"GET shared\n")
    assert second.value() == b"VALUE yes\n"
    assert len(factory.clients) == 2


# --8<-- [start:test-idle]
def test_idle_timeout_closes_a_silent_connection(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="kvstore")
    clock = Clock()
    factory = KVStoreFactory(clock, idle_timeout=300.0)
    protocol = factory.build_protocol(PEER)
    transport = MemoryTransport(peername=PEER)
    transport.connect(protocol)

    clock.advance(299)
    transport.feed(b"PING\n")  # traffic: the 300 s start again
    clock.advance(299)
    assert not transport.closed
    clock.advance(1)
    assert replies(transport) == [b"PONG", b"ERROR idle timeout"]
    assert transport.lost
    assert protocol.timed_out
    assert not factory.clients
    assert "gone: idle timeout" in caplog.text
    # --8<-- [end:test-idle]


def test_no_idle_timeout_when_disabled() -> None:
    clock = Clock()
    _, transport = serve(clock, idle_timeout=None)
    clock.advance(1e6)
    assert not transport.closed


# ------------------------------------------------------------------ the client


# --8<-- [start:test-pair]
def test_client_and_server_in_memory() -> None:
    clock = Clock()
    factory = KVStoreFactory(clock)
    client = KVClient(clock)
    pump = connect_pair(client, factory.build_protocol(PEER))
    got: list[Reply] = []
    client.set(b"name", b"alice", got.append)
    client.get(b"name", got.append)
    client.get(b"other", got.append)
    client.delete(b"name", got.append)
    client.keys(got.append)
    assert got == []  # nothing moves until the pump flushes
    pump.flush()
    assert got == [
        Reply("OK"),
        Reply("VALUE", b"alice"),
        Reply("NOT_FOUND"),
        Reply("DELETED"),
        Reply("KEYS"),
    ]
    assert [str(reply) for reply in got[:2]] == ["OK", "VALUE alice"]
    # --8<-- [end:test-pair]


def test_heartbeat_keeps_a_quiet_connection_open() -> None:
    # The client pings every 10 s; the pings are traffic, so the server's
    # 300 s idle timeout never fires, and the PONGs reach no callback.
    clock = Clock()
    factory = KVStoreFactory(clock, idle_timeout=300.0)
    lost: list[BaseException | None] = []
    client = KVClient(clock, on_lost=lost.append)
    pump = connect_pair(client, factory.build_protocol(PEER))
    for _ in range(100):  # 1,000 fake seconds
        clock.advance(10)
        pump.flush()
    assert not lost
    assert client.connected
    assert len(factory.clients) == 1
    got: list[Reply] = []
    client.get(b"x", got.append)
    pump.flush()
    assert got == [Reply("NOT_FOUND")]


# --8<-- [start:test-heartbeat]
def test_heartbeat_gives_up_on_a_silent_server() -> None:
    clock = Clock()
    lost: list[BaseException | None] = []
    client = KVClient(clock, on_lost=lost.append)
    transport = MemoryTransport()  # a server that never answers
    transport.connect(client)
    got: list[Reply] = []
    client.get(b"x", got.append)
    clock.advance(30)  # three PINGs, none answered
    assert transport.value() == b"GET x\nPING\nPING\nPING\n"
    assert not lost
    clock.advance(10)  # the fourth interval: declared dead
    assert transport.aborted
    [reason] = lost
    assert isinstance(reason, HeartbeatTimeoutError)
    assert got == [Reply("ERROR", b"connection lost")]
    # --8<-- [end:test-heartbeat]


def test_any_reply_counts_as_a_pong() -> None:
    clock = Clock()
    lost: list[BaseException | None] = []
    client = KVClient(clock, on_lost=lost.append)
    transport = MemoryTransport()
    transport.connect(client)
    for _ in range(10):
        clock.advance(10)
        transport.feed(b"PONG\n")
    assert not lost


def test_reset_fails_requests_in_flight() -> None:
    lost: list[BaseException | None] = []
    client = KVClient(Clock(), on_lost=lost.append)
    transport = MemoryTransport()
    transport.connect(client)
    got: list[Reply] = []
    client.set(b"a", b"1", got.append)
    client.get(b"a", got.append)
    transport.feed(b"OK\n")
    transport.feed_reset()
    assert got == [Reply("OK"), Reply("ERROR", b"connection lost")]
    [reason] = lost
    assert isinstance(reason, ConnectionResetError)
    with pytest.raises(RuntimeError, match="not connected"):
        client.keys(got.append)


def test_request_before_connecting_raises() -> None:
    with pytest.raises(RuntimeError, match="not connected"):
        KVClient(Clock()).keys(print)


# --------------------------------------------------------------- real sockets


# --8<-- [start:test-real]
def test_over_real_sockets(reactor: Reactor) -> None:
    factory = KVStoreFactory(reactor)
    listener = reactor.listen_tcp(0, factory)
    lost: list[BaseException | None] = []
    failures: list[BaseException] = []
    client = KVClient(reactor, on_lost=lost.append)
    reactor.connect_tcp("127.0.0.1", listener.port, lambda: client, on_failure=failures.append)
    run_until(reactor, lambda: client.connected or failures, what="the connection")
    assert not failures

    got: list[Reply] = []
    client.set(b"name", b"alice", got.append)
    client.set(b"lang", b"python", got.append)
    client.get(b"name", got.append)
    client.keys(got.append)
    client.delete(b"lang", got.append)
    client.get(b"lang", got.append)
    run_until(reactor, lambda: len(got) == 6, what="six replies")
    assert [str(reply) for reply in got] == [
        "OK",
        "OK",
        "VALUE alice",
        "KEYS lang name",
        "DELETED",
        "NOT_FOUND",
    ]
    assert factory.store == {b"name": b"alice"}

    client.transport.close()  # the client hangs up: FIN, and the server closes too
    run_until(reactor, lambda: bool(lost) and not factory.clients, what="both sides closed")
    assert lost == [None]
    listener.close()
    # --8<-- [end:test-real]


def test_the_scripts(capsys: pytest.CaptureFixture[str]) -> None:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    }
    server = subprocess.Popen(
        [sys.executable, str(EXAMPLES / "kvstore.py"), "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert server.stdout is not None
        banner = server.stdout.readline()
        assert banner.startswith("kvstore listening on 127.0.0.1:"), banner
        port = banner.split(":")[1].split()[0]
        status = kvclient.main(["127.0.0.1", port, "SET name alice", "GET name", "KEYS", "FLY"])
        assert status == 1  # FLY is an error
        assert capsys.readouterr().out.splitlines() == [
            "OK",
            "VALUE alice",
            "KEYS name",
            "ERROR unknown command FLY",
        ]
        assert kvclient.main(["127.0.0.1", port, "GET name"]) == 0
        assert capsys.readouterr().out == "VALUE alice\n"
    finally:
        server.send_signal(signal.SIGTERM)
        _, errors = server.communicate(timeout=20)
    assert server.returncode == 0, errors
    assert "connected" in errors
