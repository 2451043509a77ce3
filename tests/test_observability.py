"""stats(), trace mode and debug mode, on every backend."""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from apps.echo import Echo
from protocols import Protocol
from reactor import Reactor, available_backends
from reactor.trace import describe_reason, enable_trace_output, format_address, trace_log
from tests.conftest import make_reactor, run_until

pytestmark = pytest.mark.timeout(60)

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def traced(backend: str) -> Iterator[Reactor]:
    r = make_reactor(backend, trace=True)
    try:
        yield r
    finally:
        r.close()


@pytest.fixture
def debugged(backend: str) -> Iterator[Reactor]:
    r = make_reactor(backend, debug=True, slow_callback_duration=0.02)
    try:
        yield r
    finally:
        r.close()


class Client(Protocol):
    def __init__(self, payload: bytes) -> None:
        self.payload = payload
        self.received = b""
        self.lost: list[BaseException | None] = []

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        transport.write(self.payload)
        transport.write_eof()

    def data_received(self, data: bytes) -> None:
        self.received += data

    def connection_lost(self, exc: BaseException | None) -> None:
        self.lost.append(exc)


# ------------------------------------------------------------------------ stats


def test_stats_count_the_loop_timers_and_bytes(reactor: Reactor) -> None:
    listener = reactor.listen_tcp(0, Echo)
    clients = [Client(b"x" * 1000) for _ in range(3)]
    for c in clients:
        reactor.connect_tcp("127.0.0.1", listener.port, lambda c=c: c)  # type: ignore[misc]
    run_until(reactor, lambda: any(r for r in reactor.resources if r not in (listener,)))
    middle = reactor.stats()
    assert middle["listeners"] == 1
    run_until(reactor, lambda: all(c.lost for c in clients), what="all echoed")
    fired: list[int] = []
    reactor.call_later(0, fired.append, 1)
    reactor.call_later(100, fired.append, 2).cancel()
    run_until(reactor, lambda: fired)
    stats = reactor.stats()
    assert stats["backend"] == reactor.backend
    assert stats["iterations"] > 0
    assert stats["events"] > 0
    assert stats["callbacks"] > 0
    assert stats["timers_scheduled"] >= 2
    assert stats["timers_fired"] >= 1
    assert stats["timers_cancelled"] >= 1
    assert stats["timers_pending"] == 0
    assert stats["connections"] == 0
    # Both ends of each connection are this reactor's: 3000 in and out at
    # the server, and 3000 out and in at the clients.
    assert stats["bytes_in"] == 6000
    assert stats["bytes_out"] == 6000
    assert stats["registered_fds"] >= 2  # the waker and the listener
    assert 0 < stats["longest_iteration"] < 60
    assert all(c.received == b"x" * 1000 for c in clients)


def test_stats_count_open_connections_and_datagram_endpoints(reactor: Reactor) -> None:
    listener = reactor.listen_tcp(0, Echo)
    client = socket.create_connection(listener.address)
    client.sendall(b"ping")
    endpoint = reactor.listen_udp(0, _Datagrams())
    run_until(reactor, lambda: reactor.stats()["connections"] == 1, what="one connection")
    run_until(reactor, lambda: reactor.stats()["bytes_out"] == 4, what="the echo")
    assert reactor.stats()["datagram_endpoints"] == 1
    endpoint.close()
    client.close()
    run_until(reactor, lambda: reactor.stats()["connections"] == 0, what="closed")
    assert reactor.stats()["bytes_in"] == 4


class _Datagrams:
    def connection_made(self, transport: Any) -> None:
        pass

    def datagram_received(self, data: bytes, addr: Any) -> None:
        pass

    def error_received(self, exc: OSError) -> None:
        pass

    def connection_lost(self, exc: BaseException | None) -> None:
        pass

    def pause_writing(self) -> None:
        pass

    def resume_writing(self) -> None:
        pass


# ------------------------------------------------------------------------ trace


def _trace_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "reactor.trace"]


def test_trace_shows_a_connections_life(traced: Reactor, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "reactor.trace")
    listener = traced.listen_tcp(0, Echo)
    client = Client(b"hello\n")
    traced.connect_tcp("127.0.0.1", listener.port, lambda: client)
    traced.call_later(0, _tick)
    run_until(traced, lambda: client.lost, what="the echo and close")
    run_until(traced, lambda: traced.stats()["connections"] == 0, what="both sides closed")
    lines = _trace_lines(caplog)
    text = "\n".join(lines)
    assert any(line.startswith("poll timeout=") and " READ" in line for line in lines)
    assert "accepted 127.0.0.1:" in text
    assert "connected to 127.0.0.1:" in text
    assert "#1 connection_made peer=127.0.0.1:" in text
    assert "data in 6 bytes" in text
    assert "write 6 bytes: sent whole" in text
    assert "FIN received (recv returned b''): eof_received()" in text
    assert "FIN sent (shutdown SHUT_WR)" in text
    assert "connection_lost: clean close" in text
    assert "timer fired: _tick" in text
    # Connection numbers: the client and the server side are #1 and #2.
    assert "#2 connection_made" in text
    assert client.received == b"hello\n"


def _tick() -> None:
    pass


def test_trace_names_a_reset_and_an_abort(
    traced: Reactor, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "reactor.trace")
    servers: list[Protocol] = []

    def make() -> Protocol:
        servers.append(Protocol())
        return servers[-1]

    listener = traced.listen_tcp(0, make)
    raw = socket.create_connection(listener.address)
    run_until(traced, lambda: servers, what="accepted")
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    raw.close()  # RST
    run_until(traced, lambda: "reset by peer" in "\n".join(_trace_lines(caplog)), what="reset")
    raw2 = socket.create_connection(listener.address)
    run_until(traced, lambda: len(servers) == 2, what="second")
    servers[1].transport.abort()
    run_until(traced, lambda: "connection_lost: aborted" in "\n".join(_trace_lines(caplog)))
    raw2.close()


def test_trace_follows_a_protocol_switch(traced: Reactor, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "reactor.trace")
    first: list[Protocol] = []
    second = Client(b"")

    def make() -> Protocol:
        first.append(Protocol())
        return first[-1]

    listener = traced.listen_tcp(0, make)
    raw = socket.create_connection(listener.address)
    run_until(traced, lambda: first, what="accepted")
    transport: Any = first[0].transport
    transport.set_protocol(second)
    raw.sendall(b"abc")
    run_until(traced, lambda: second.received == b"abc", what="data to the new protocol")
    assert any(line.endswith("data in 3 bytes") for line in _trace_lines(caplog))
    raw.close()


def test_trace_from_the_environment(monkeypatch: pytest.MonkeyPatch, backend: str) -> None:
    monkeypatch.setenv("REACTOR_TRACE", "1")
    r = make_reactor(backend)
    try:
        assert r.trace
    finally:
        r.close()
    monkeypatch.setenv("REACTOR_TRACE", "0")
    r = make_reactor(backend)
    try:
        assert not r.trace
    finally:
        r.close()


def test_trace_poll_lines_for_a_timeout(traced: Reactor, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "reactor.trace")
    traced.run_once(0.001)
    assert "poll timeout=0.001s -> nothing ready" in _trace_lines(caplog)
    traced.run_once(0)  # zero-timeout polls with nothing ready are not logged
    assert len([line for line in _trace_lines(caplog) if "nothing ready" in line]) == 1


def test_enable_trace_output_adds_a_handler_only_when_logging_is_unconfigured() -> None:
    root = logging.getLogger()
    saved_root, saved_trace = root.handlers[:], trace_log.handlers[:]
    saved_level = trace_log.level
    try:
        root.handlers = []
        trace_log.handlers = []
        trace_log.setLevel(logging.WARNING)
        enable_trace_output()
        assert trace_log.level == logging.INFO
        assert len(trace_log.handlers) == 1
        enable_trace_output()  # idempotent
        assert len(trace_log.handlers) == 1
    finally:
        root.handlers = saved_root
        trace_log.handlers = saved_trace
        trace_log.setLevel(saved_level)


def test_trace_helpers_describe_things() -> None:
    assert describe_reason(None) == "clean close"
    assert describe_reason(None, aborted=True) == "aborted"
    assert describe_reason(ConnectionResetError()) == "reset by peer (ConnectionResetError)"
    assert "BrokenPipeError" in describe_reason(BrokenPipeError())
    assert describe_reason(ValueError("bad")) == "ValueError: bad"
    assert format_address(("::1", 5, 0, 0)) == "[::1]:5"
    assert format_address(("1.2.3.4", 5)) == "1.2.3.4:5"
    assert format_address("/tmp/sock") == "'/tmp/sock'"
    assert format_address("") == "unnamed"


def test_echo_app_trace_flag_shows_the_loop_turning() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "apps.echo", "--port", "0", "--trace"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=ROOT,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        port = int(line.split(" on ")[1].split()[0].rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port)) as conn:
            conn.sendall(b"hi\n")
            assert conn.recv(10) == b"hi\n"
    finally:
        proc.terminate()
        _out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0
    assert "data in 3 bytes" in err
    assert "connection_made" in err
    assert "poll timeout=" in err


# ------------------------------------------------------------------------ debug


def test_debug_warns_about_a_slow_callback(
    debugged: Reactor, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "reactor.debug")

    def slow() -> None:
        time.sleep(0.05)  # the slowness being detected, not synchronization

    debugged.call_soon(slow)
    debugged.run_once(0)
    messages = [r.getMessage() for r in caplog.records if r.name == "reactor.debug"]
    assert any("slow callback" in m and "slow" in m and "0.020 s" in m for m in messages)
    assert any("slow loop iteration" in m for m in messages)


def test_debug_times_io_and_timer_callbacks(
    debugged: Reactor, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "reactor.debug")
    r, w = socket.socketpair()
    seen: list[bytes] = []

    def slow_reader() -> None:
        seen.append(r.recv(10))
        time.sleep(0.05)

    debugged.add_reader(r.fileno(), slow_reader)
    w.send(b"x")
    fired: list[int] = []
    debugged.call_later(0, fired.append, 1)
    debugged.call_at(debugged.time(), fired.append, 2)
    run_until(debugged, lambda: seen and len(fired) == 2)
    assert any("slow_reader" in r.getMessage() for r in caplog.records)
    debugged.remove_reader(r.fileno())
    r.close()
    w.close()


def test_debug_warns_about_calls_from_another_thread(
    debugged: Reactor, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "reactor.debug")
    done = threading.Event()

    def misuse() -> None:
        debugged.call_soon(done.set)  # wrong: should be call_from_thread
        debugged.call_from_thread(debugged.stop)

    debugged.call_soon(lambda: threading.Thread(target=misuse).start())
    debugged.call_later(30, debugged.stop)  # bounds a broken test
    debugged.run()
    assert any(
        "call_soon() called from thread" in r.getMessage() and "call_from_thread" in r.getMessage()
        for r in caplog.records
    )


def test_debug_warns_about_unclosed_transports_at_close(
    backend: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "reactor.debug")
    r = make_reactor(backend, debug=True)
    listener = r.listen_tcp(0, Echo)
    client = socket.create_connection(listener.address)
    run_until(r, lambda: r.stats()["connections"] == 1)
    r.close()
    messages = [rec.getMessage() for rec in caplog.records if rec.name == "reactor.debug"]
    # The listener is not reported: a reactor closing its listeners is a
    # normal ending. A connection left open is.
    assert not any("Listener" in m for m in messages)
    assert any("StreamTransport" in m and "never closed" in m for m in messages)
    client.close()


def test_debug_from_the_environment(monkeypatch: pytest.MonkeyPatch, backend: str) -> None:
    monkeypatch.setenv("REACTOR_DEBUG", "yes")
    r = make_reactor(backend)
    try:
        assert r.debug
        # The debug versions still schedule and remove correctly.
        handle = r.call_later(10, _tick)
        handle.cancel()
        assert r.remove_writer(12345) is False
    finally:
        r.close()


def test_trace_mode_survives_a_rebuilt_backend() -> None:
    """The fd registry rebuilds the backend to drop a closed fd it keeps reporting
    (epoll's closed-fd quirk); in trace mode the rebuilt one is traced too."""
    from reactor.trace import TracingPoller

    reactor = Reactor(backend="poll", trace=True)
    try:
        reactor._fds._rebuild()
        assert isinstance(reactor._fds.poller, TracingPoller)
        ran: list[int] = []
        reactor.call_from_thread(ran.append, 1)  # the waker, watched by the new poller
        reactor.run_once(1.0)
        assert ran == [1]
    finally:
        reactor.close()


@pytest.mark.skipif("epoll" not in available_backends(), reason="needs epoll")
def test_a_traced_reactor_can_be_hosted() -> None:
    """fileno() sees through the tracing wrapper: the backend's fd, or the same refusal."""
    epoll = Reactor(backend="epoll", trace=True)
    poll = Reactor(backend="poll", trace=True)
    try:
        assert epoll.fileno() >= 0
        with pytest.raises(NotImplementedError, match="no fd of its own"):
            poll.fileno()
    finally:
        epoll.close()
        poll.close()
