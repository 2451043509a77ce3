"""Idle timeouts, heartbeats and connection limits: in memory, then over real sockets."""

from __future__ import annotations

import ast
import logging
import socket
import typing
from pathlib import Path
from typing import Any

import pytest

import protocols
import reactor as reactor_package
from protocols import Factory, Protocol
from protocols.framing import LineReceiver
from protocols.policies import (
    ConnectionLimiter,
    HeartbeatMixin,
    HeartbeatTimeoutError,
    IdleTimeout,
    IdleTimeoutError,
    IdleTimeoutMixin,
    ProtocolWrapper,
)
from protocols.testing import Clock, MemoryTransport
from reactor import Reactor
from tests.conftest import run_until

pytestmark = pytest.mark.timeout(60)


class Recorder(Protocol):
    """Records every hook call."""

    def __init__(self) -> None:
        self.data: list[bytes] = []
        self.lost: list[BaseException | None] = []
        self.eofs = 0
        self.paused = 0
        self.resumed = 0

    def data_received(self, data: bytes) -> None:
        self.data.append(data)

    def eof_received(self) -> bool | None:
        self.eofs += 1
        return True

    def connection_lost(self, exc: BaseException | None) -> None:
        self.lost.append(exc)

    def pause_writing(self) -> None:
        self.paused += 1

    def resume_writing(self) -> None:
        self.resumed += 1


# ----------------------------------------------------------------- idle timeout


class IdleEcho(IdleTimeoutMixin, Recorder):
    idle_timeout: float | None = 10.0

    def __init__(self, clock: Any) -> None:
        super().__init__()
        self.clock = clock
        self.timed_out = 0

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if data == b"answer":
            self.transport.write(b"ok")

    def timeout_connection(self) -> None:
        self.timed_out += 1
        self.transport.write(b"bye")
        super().timeout_connection()


def test_idle_mixin_closes_after_silence_with_reason() -> None:
    clock = Clock()
    proto = IdleEcho(clock)
    transport = MemoryTransport()
    transport.connect(proto)
    clock.advance(9.9)
    assert not transport.closed
    clock.advance(0.2)
    assert proto.timed_out == 1
    assert transport.value() == b"bye"
    assert transport.lost
    assert len(proto.lost) == 1
    assert isinstance(proto.lost[0], IdleTimeoutError)
    assert "10.0 s" in str(proto.lost[0])


def test_idle_mixin_rearmed_by_incoming_and_outgoing_traffic() -> None:
    clock = Clock()
    proto = IdleEcho(clock)
    transport = MemoryTransport()
    transport.connect(proto)
    clock.advance(8)
    transport.feed(b"hello")  # incoming activity at t=8
    clock.advance(8)  # t=16: only 8 s since the last traffic
    assert not transport.closed
    proto.transport.write(b"x")  # outgoing activity at t=16
    clock.advance(9)  # t=25
    assert not transport.closed
    proto.reset_timeout()  # explicit activity at t=25
    clock.advance(9.5)
    assert not transport.closed
    clock.advance(1)  # t=35.5 > 25 + 10
    assert transport.closed
    assert proto.timed_out == 1


def test_idle_mixin_cancelled_when_connection_ends_first() -> None:
    clock = Clock()
    proto = IdleEcho(clock)
    transport = MemoryTransport()
    transport.connect(proto)
    transport.feed_close()
    assert proto.lost == [None]
    assert clock.pending() == []
    clock.advance(100)
    assert proto.timed_out == 0


def test_idle_mixin_disabled_with_none() -> None:
    class NoTimeout(IdleEcho):
        idle_timeout = None

    clock = Clock()
    proto = NoTimeout(clock)
    transport = MemoryTransport()
    transport.connect(proto)
    clock.advance(1000)
    assert not transport.closed
    proto.reset_timeout()  # harmless without a timer
    assert clock.pending() == []


def test_idle_wrapper_with_hook_and_writelines() -> None:
    clock = Clock()
    inner = Recorder()
    seen: list[IdleTimeout] = []
    wrapper = IdleTimeout(inner, clock, 5.0, on_timeout=seen.append)
    transport = MemoryTransport()
    transport.connect(wrapper)
    clock.advance(4)
    inner.transport.writelines([b"a", b"b"])  # the inner protocol sees the proxy
    clock.advance(4)
    assert not transport.closed
    transport.feed(b"in")
    assert inner.data == [b"in"]
    clock.advance(5)
    assert seen == [wrapper]
    assert transport.lost
    assert isinstance(inner.lost[0], IdleTimeoutError)
    assert transport.value() == b"ab"
    # The proxy forwards everything else to the real transport.
    assert inner.transport.is_closing()


def test_idle_wrapper_connection_lost_before_timeout_keeps_reason() -> None:
    clock = Clock()
    inner = Recorder()
    wrapper = IdleTimeout(inner, clock, 5.0)
    transport = MemoryTransport()
    transport.connect(wrapper)
    transport.feed_reset()
    assert isinstance(inner.lost[0], ConnectionResetError)
    assert clock.pending() == []


class IdleNoClock(IdleTimeoutMixin, Recorder):
    """An idle timeout with no ``clock`` set: it must come from the transport."""

    idle_timeout = 10.0


def test_idle_mixin_without_a_clock_uses_the_transports_reactor() -> None:
    clock = Clock()
    proto = IdleNoClock()
    transport = MemoryTransport(clock=clock)
    transport.connect(proto)
    assert proto.clock is clock
    clock.advance(9.9)
    assert not transport.closed
    clock.advance(0.2)
    assert transport.lost
    assert len(proto.lost) == 1
    assert isinstance(proto.lost[0], IdleTimeoutError)


def test_idle_mixin_with_no_clock_anywhere_says_to_set_clock() -> None:
    proto = IdleNoClock()
    transport = MemoryTransport()  # answers get_extra_info("reactor") with None
    transport.connect(proto)  # the error is logged and ends the connection
    assert transport.lost
    [reason] = proto.lost
    assert isinstance(reason, RuntimeError)
    assert "IdleNoClock has no clock: set IdleNoClock.clock" in str(reason)


def test_an_explicit_clock_wins_over_the_transports_reactor() -> None:
    mine, theirs = Clock(), Clock()
    proto = IdleEcho(mine)
    transport = MemoryTransport(clock=theirs)
    transport.connect(proto)
    theirs.advance(100)
    assert not transport.closed
    mine.advance(100)
    assert transport.lost


def test_idle_wrapper_without_a_clock_uses_the_transports_reactor() -> None:
    clock = Clock()
    inner = Recorder()
    wrapper = IdleTimeout(inner, None, 5.0)
    transport = MemoryTransport(clock=clock)
    transport.connect(wrapper)
    clock.advance(5.0)
    assert transport.lost
    assert isinstance(inner.lost[0], IdleTimeoutError)

    bare = MemoryTransport()
    inner = Recorder()
    bare.connect(IdleTimeout(inner, None, 5.0))
    assert bare.lost
    assert isinstance(inner.lost[0], RuntimeError)
    assert "IdleTimeout has no clock" in str(inner.lost[0])


def test_idle_timeout_rejects_bad_values() -> None:
    with pytest.raises(ValueError, match="positive"):
        IdleTimeout(Recorder(), Clock(), 0)

    class Negative(IdleEcho):
        idle_timeout = -1.0

    transport = MemoryTransport()
    transport.connect(Negative(Clock()))  # the error is logged; the connection closed
    assert transport.lost


# -------------------------------------------------------------------- heartbeat


class Pinger(HeartbeatMixin, LineReceiver):
    heartbeat_interval = 1.0
    heartbeat_misses = 3
    delimiter = b"\n"

    def __init__(self, clock: Any) -> None:
        super().__init__()
        self.clock = clock
        self.lost: list[BaseException | None] = []

    def send_ping(self) -> None:
        self.send_line(b"PING")

    def line_received(self, line: bytes) -> None:
        if line == b"PONG":
            self.pong_received()

    def connection_lost(self, exc: BaseException | None) -> None:
        super().connection_lost(exc)
        self.lost.append(exc)


def test_heartbeat_pings_every_interval_and_stays_up_while_answered() -> None:
    clock = Clock()
    proto = Pinger(clock)
    transport = MemoryTransport()
    transport.connect(proto)
    for _ in range(10):
        clock.advance(1.0)
        transport.feed(b"PONG\n")
    assert transport.value() == b"PING\n" * 10
    assert not transport.closed


def test_heartbeat_declares_peer_dead_after_k_misses() -> None:
    clock = Clock()
    proto = Pinger(clock)
    transport = MemoryTransport()
    transport.connect(proto)
    clock.advance(3.0)  # three pings, unanswered
    assert transport.value() == b"PING\n" * 3
    assert not transport.closed
    clock.advance(1.0)  # the fourth interval ends with no answer: dead
    assert transport.aborted
    assert len(proto.lost) == 1
    assert isinstance(proto.lost[0], HeartbeatTimeoutError)
    assert "did not answer 3" in str(proto.lost[0])
    assert clock.pending() == []


def test_heartbeat_late_pong_resets_the_count() -> None:
    clock = Clock()
    proto = Pinger(clock)
    transport = MemoryTransport()
    transport.connect(proto)
    clock.advance(3.0)
    transport.feed(b"PONG\n")  # answered just in time
    clock.advance(3.0)
    assert not transport.closed
    clock.advance(1.0)
    assert transport.closed


def test_heartbeat_stop_and_restart() -> None:
    clock = Clock()
    proto = Pinger(clock)
    transport = MemoryTransport()
    transport.connect(proto)
    proto.stop_heartbeat()
    clock.advance(10)
    assert transport.value() == b""
    proto.start_heartbeat()
    proto.start_heartbeat()  # idempotent
    clock.advance(1)
    assert transport.value() == b"PING\n"


def test_heartbeat_send_ping_must_be_overridden() -> None:
    class Bare(HeartbeatMixin, Protocol):
        pass

    clock = Clock()
    proto = Bare()
    proto.clock = clock
    transport = MemoryTransport()
    transport.connect(proto)
    # The error surfaces from the timer (the fake clock propagates it).
    with pytest.raises(NotImplementedError, match="send_ping"):
        clock.advance(10)


class PingerNoClock(HeartbeatMixin, LineReceiver):
    heartbeat_interval = 1.0
    heartbeat_misses = 1

    def __init__(self) -> None:
        super().__init__()
        self.lost: list[BaseException | None] = []

    def send_ping(self) -> None:
        self.send_line(b"PING")

    def line_received(self, line: bytes) -> None:
        self.pong_received()

    def connection_lost(self, exc: BaseException | None) -> None:
        super().connection_lost(exc)
        self.lost.append(exc)


def test_heartbeat_without_a_clock_uses_the_transports_reactor() -> None:
    clock = Clock()
    proto = PingerNoClock()
    transport = MemoryTransport(clock=clock)
    transport.connect(proto)
    assert proto.clock is clock
    clock.advance(1.0)
    assert transport.value() == b"PING\r\n"
    clock.advance(1.0)
    assert transport.aborted
    assert isinstance(proto.lost[0], HeartbeatTimeoutError)


def test_heartbeat_with_no_clock_anywhere_says_to_set_clock() -> None:
    proto = PingerNoClock()
    with pytest.raises(RuntimeError, match=r"set PingerNoClock\.clock"):
        proto.start_heartbeat()  # before any connection: no transport to ask either
    transport = MemoryTransport()
    transport.connect(proto)
    assert transport.lost
    [reason] = proto.lost
    assert isinstance(reason, RuntimeError)
    assert "PingerNoClock has no clock" in str(reason)


# ------------------------------------------------------------ connection limits


def _connect(limiter: ConnectionLimiter, ip: str) -> tuple[Any, MemoryTransport]:
    proto = limiter.build_protocol((ip, 40000))
    transport = MemoryTransport(peername=(ip, 40000))
    assert proto is not None
    transport.connect(proto)
    return proto, transport


def test_limiter_per_ip_and_total_with_messages(caplog: pytest.LogCaptureFixture) -> None:
    built: list[Recorder] = []

    def make() -> Recorder:
        built.append(Recorder())
        return built[-1]

    limiter = ConnectionLimiter(
        make, max_total=3, max_per_ip=2, message=b"server full\n", per_ip_message=b"too many\n"
    )
    caplog.set_level(logging.INFO, "protocols.policies")
    _, t1 = _connect(limiter, "10.0.0.1")
    _, t2 = _connect(limiter, "10.0.0.1")
    _, t3 = _connect(limiter, "10.0.0.1")  # third from one address: refused
    assert t3.value() == b"too many\n"
    assert t3.lost
    assert limiter.count("10.0.0.1") == 2
    _, t4 = _connect(limiter, "10.0.0.2")
    _, t5 = _connect(limiter, "10.0.0.3")  # fourth in total: refused
    assert t5.value() == b"server full\n"
    assert t5.lost
    assert limiter.total == 3
    assert limiter.rejected == 2
    assert len(built) == 3  # refused connections never reach the factory
    assert "limit" in caplog.text
    # Slots come back however a connection ends.
    t1.feed_reset()
    t4.close()
    assert limiter.total == 1
    assert limiter.count("10.0.0.2") == 0
    _, t6 = _connect(limiter, "10.0.0.3")
    assert not t6.closed
    t2.feed_close()
    t6.abort()
    assert limiter.total == 0
    assert limiter.count("10.0.0.1") == 0


def test_limiter_wraps_factories_and_refusals() -> None:
    events: list[str] = []

    class Tracking(Factory[Recorder]):
        protocol = Recorder

        def start_factory(self) -> None:
            events.append("start")

        def stop_factory(self) -> None:
            events.append("stop")

    limiter = ConnectionLimiter(Tracking(), max_per_ip=1)
    limiter.do_start()
    proto, transport = _connect(limiter, "::1")
    assert isinstance(proto, ProtocolWrapper)
    assert isinstance(proto.wrapped, Recorder)
    assert proto.wrapped.factory is limiter.factory
    transport.feed(b"x")
    transport.feed_eof()
    assert proto.wrapped.data == [b"x"]
    assert proto.wrapped.eofs == 1
    limiter.do_stop()
    assert events == ["start", "stop"]
    # A factory that refuses (returns None) is passed through, not counted.
    refusing = ConnectionLimiter(lambda: None, max_total=1)  # type: ignore[arg-type,return-value]
    assert refusing.build_protocol(("1.2.3.4", 1)) is None
    assert refusing.total == 0
    # No message: a refused connection is just closed.
    quiet = ConnectionLimiter(Recorder, max_total=1)
    _connect(quiet, "1.1.1.1")
    _, refused = _connect(quiet, "1.1.1.2")
    assert refused.value() == b""
    assert refused.lost
    # A plain callable has no do_start/do_stop: harmless.
    quiet.do_start()
    quiet.do_stop()


def test_limiter_rejects_bad_limits() -> None:
    with pytest.raises(ValueError, match="max_per_ip"):
        ConnectionLimiter(Recorder, max_per_ip=0)


def test_wrapper_forwards_flow_control() -> None:
    inner = Recorder()
    wrapper = ProtocolWrapper(inner)
    transport = MemoryTransport(stalled=True)
    transport.connect(wrapper)
    transport.set_write_buffer_limits(high=4, low=0)
    wrapper.transport.write(b"0123456789")
    assert inner.paused == 1
    transport.drain()
    assert inner.resumed == 1


# ------------------------------------------------------------ over real sockets


class RealIdle(IdleTimeoutMixin, Recorder):
    idle_timeout = 0.2


def test_idle_timeout_closes_a_real_connection(reactor: Reactor) -> None:
    protos: list[RealIdle] = []

    def make() -> RealIdle:
        proto = RealIdle()
        proto.clock = reactor
        protos.append(proto)
        return proto

    listener = reactor.listen_tcp(0, make)
    client = socket.create_connection(listener.address)
    client.setblocking(False)
    run_until(reactor, lambda: protos and protos[0].lost, what="the idle close")
    assert isinstance(protos[0].lost[0], IdleTimeoutError)
    run_until(reactor, lambda: _peer_closed(client), what="the client to see the close")
    client.close()


def test_idle_timeout_without_a_clock_runs_on_the_connections_reactor(reactor: Reactor) -> None:
    protos: list[RealIdle] = []

    def make() -> RealIdle:
        protos.append(RealIdle())  # no clock: the transport's reactor is used
        return protos[-1]

    listener = reactor.listen_tcp(0, make)
    client = socket.create_connection(listener.address)
    client.setblocking(False)
    run_until(reactor, lambda: protos and protos[0].lost, what="the idle close")
    assert protos[0].clock is reactor
    assert isinstance(protos[0].lost[0], IdleTimeoutError)
    client.close()


def _peer_closed(sock: socket.socket) -> bool:
    try:
        return sock.recv(100) == b""
    except BlockingIOError:
        return False
    except ConnectionResetError:
        return True


class RealPinger(Pinger):
    heartbeat_interval = 0.05
    heartbeat_misses = 2


def test_heartbeat_over_real_sockets_drops_a_silent_peer(reactor: Reactor) -> None:
    protos: list[RealPinger] = []

    def make() -> RealPinger:
        protos.append(RealPinger(reactor))
        return protos[-1]

    listener = reactor.listen_tcp(0, make)
    client = socket.create_connection(listener.address)  # never answers
    run_until(reactor, lambda: protos and protos[0].lost, what="the peer to be declared dead")
    assert isinstance(protos[0].lost[0], HeartbeatTimeoutError)
    client.close()


def test_connection_limits_stay_right_over_hundreds_of_cycles(reactor: Reactor) -> None:
    # Protocol's default eof_received closes the connection when the client does.
    limiter = ConnectionLimiter(Protocol, max_total=20, max_per_ip=5, message=b"busy\n")
    listener = reactor.listen_tcp(0, limiter)
    for _cycle in range(40):  # 40 cycles x 8 connections = 320 opens and closes
        clients = [socket.create_connection(listener.address) for _ in range(8)]
        for c in clients:
            c.setblocking(False)
        # Five are accepted; three over the per-IP limit get "busy" and a close.
        refused: list[socket.socket] = []

        def settled(
            clients: list[socket.socket] = clients, refused: list[socket.socket] = refused
        ) -> bool:
            return _count_refused(clients, refused) == 3 and limiter.total == 5

        run_until(reactor, settled, what="5 accepted and 3 refused")
        assert limiter.count("127.0.0.1") == 5
        for c in clients:
            c.close()
        run_until(reactor, lambda: limiter.total == 0, what="every slot back")
    assert limiter.rejected == 40 * 3
    listener.close()


def _count_refused(clients: list[socket.socket], refused: list[socket.socket]) -> int:
    for c in clients:
        if c in refused:
            continue
        try:
            data = c.recv(100)
        except BlockingIOError:
            continue
        if data.startswith(b"busy"):
            refused.append(c)
    return len(refused)


# ------------------------------------------------------------ the reactor's API


def test_the_policies_are_typed_against_the_reactor_clock() -> None:
    for cls in (IdleTimeoutMixin, HeartbeatMixin):
        assert typing.get_type_hints(cls)["clock"] is reactor_package.Clock


def test_protocols_import_only_what_the_reactor_package_exports() -> None:
    exported = set(reactor_package.__all__)
    wrong = []
    for path in sorted(Path(protocols.__file__).parent.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                wrong += [
                    f"{path.name}:{node.lineno}: import {alias.name}"
                    for alias in node.names
                    if alias.name.startswith("reactor.")
                ]
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("reactor"):
                if node.module != "reactor":
                    wrong.append(f"{path.name}:{node.lineno}: from {node.module} import ...")
                wrong += [
                    f"{path.name}:{node.lineno}: reactor does not export {alias.name}"
                    for alias in node.names
                    if node.module == "reactor" and alias.name not in exported
                ]
    assert wrong == [], "protocols/ may only use `from reactor import <exported name>`"
