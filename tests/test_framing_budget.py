"""LineReceiver's limits on time and work: ``line_timeout`` and ``max_lines_per_turn``.

``line_timeout`` is a deadline per line (slowloris peers); ``max_lines_per_turn``
caps the lines one connection gets handled per turn of the loop (flooding
peers). Most tests run on MemoryTransport with a fake clock; :class:`TurnClock`
runs ``call_soon`` callbacks one loop turn at a time, so a test can count the
work done per turn. The last tests run over real sockets.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocols import (
    Clock,
    LineReceiver,
    LineTimeoutError,
    LineTooLongError,
    MemoryTransport,
)
from reactor import Handle, Reactor
from tests.conftest import run_until
from tests.test_framing import chunked, reference_lines

pytestmark = pytest.mark.timeout(60)

PEER = ("192.0.2.9", 4242)


class TurnClock(Clock):
    """A fake clock whose ``call_soon`` callbacks run one loop turn at a time (:meth:`turn`)."""

    def __init__(self) -> None:
        super().__init__()
        self.soon: list[Handle] = []

    def call_soon(self, callback: Callable[..., object], *args: Any) -> Handle:
        handle = Handle(callback, args)
        self.soon.append(handle)
        return handle

    def turn(self) -> int:
        """Run the callbacks scheduled so far (not those they schedule); how many ran."""
        batch, self.soon = self.soon, []
        ran = 0
        for handle in batch:
            if not handle.cancelled():
                handle._run()
                ran += 1
        return ran


class Lines(LineReceiver):
    """Records lines, raw data and how the connection ended."""

    delimiter = b"\n"

    def __init__(self, **limits: Any) -> None:
        super().__init__()
        for name, value in limits.items():
            setattr(self, name, value)
        self.lines: list[bytes] = []
        self.raw: list[bytes] = []
        self.lost: list[BaseException | None] = []
        self.on_line: Callable[[bytes], None] | None = None

    def line_received(self, line: bytes) -> None:
        self.lines.append(line)
        if self.on_line is not None:
            self.on_line(line)

    def raw_data_received(self, data: bytes) -> None:
        self.raw.append(data)

    def connection_lost(self, exc: BaseException | None) -> None:
        self.lost.append(exc)
        super().connection_lost(exc)


def connect(proto: LineReceiver, clock: Clock) -> MemoryTransport:
    transport = MemoryTransport(peername=PEER, clock=clock)
    transport.connect(proto)
    return transport


# -- line_timeout --------------------------------------------------------------


def test_a_trickled_line_is_cut_off_at_the_deadline(caplog: pytest.LogCaptureFixture) -> None:
    """Slowloris: one byte every 1.5 s and never a line end. The trickle does not
    restart the deadline (an idle timeout would): the line must be complete
    within ``line_timeout`` of its first byte."""
    clock = Clock()
    proto = Lines(line_timeout=10.0)
    t = connect(proto, clock)
    caplog.set_level(logging.WARNING, logger="protocols.framing")
    for _ in range(6):  # bytes at 0, 1.5, ... 7.5 s
        t.feed(b"x")
        clock.advance(1.5)
    assert not t.lost  # 9.0 s
    t.feed(b"x")
    clock.advance(0.99)
    assert not t.lost
    clock.advance(0.01)  # 10 s after the first byte
    assert t.lost and t.aborted
    [reason] = proto.lost
    assert isinstance(reason, LineTimeoutError)
    assert isinstance(reason, TimeoutError)
    assert "within 10 s" in str(reason)
    assert "7 bytes" in str(reason)
    assert "raise line_timeout on Lines" in str(reason)
    assert proto.lines == []
    warnings = [r for r in caplog.records if r.name == "protocols.framing"]
    assert len(warnings) == 1
    assert "192.0.2.9" in warnings[0].getMessage()
    assert clock.pending() == []


def test_each_line_gets_its_own_deadline_from_its_first_byte() -> None:
    clock = Clock()
    proto = Lines(line_timeout=5.0)
    t = connect(proto, clock)
    t.feed(b"one\n")
    assert clock.pending() == []  # nothing partial: no timer
    clock.advance(100)  # an idle connection is not this limit's business
    t.feed(b"tw")
    clock.advance(4)
    t.feed(b"o\nthr")  # "two" is complete in time; "three" starts now (t=104)
    clock.advance(4.9)
    assert not t.lost
    t.feed(b"ee\n")
    assert clock.pending() == []
    assert proto.lines == [b"one", b"two", b"three"]
    t.feed(b"four")  # t=108.9
    clock.advance(4.9)
    assert not t.lost
    clock.advance(0.1)
    assert t.lost
    assert isinstance(proto.lost[0], LineTimeoutError)


def test_a_lone_cr_of_a_crlf_line_end_is_still_a_partial_line() -> None:
    class Lenient(Lines):
        delimiter = LineReceiver.delimiter  # ANY_NEWLINE

    clock = Clock()
    proto = Lenient(line_timeout=1.0)
    t = connect(proto, clock)
    t.feed(b"hello\r")
    clock.advance(1.0)
    assert t.lost
    assert proto.lines == []


def test_the_deadline_covers_an_over_long_line_being_skipped() -> None:
    """A receiver that skips over-long lines must not let a peer trickle one forever."""

    class Skipping(Lines):
        def line_length_exceeded(self, line: bytes) -> None:
            self.lines.append(b"<too long>")

    clock = Clock()
    proto = Skipping(line_timeout=3.0, max_line_length=10)
    t = connect(proto, clock)
    t.feed(b"y" * 20)  # over the limit: skipped up to its line end
    assert proto.lines == [b"<too long>"]
    assert proto.buffer_size == 0
    for _ in range(2):
        clock.advance(1.4)
        t.feed(b"y")
    clock.advance(0.2)
    assert t.lost
    assert isinstance(proto.lost[0], LineTimeoutError)


def test_no_deadline_in_raw_mode_nor_while_paused() -> None:
    clock = Clock()
    proto = Lines(line_timeout=1.0)
    t = connect(proto, clock)
    proto.on_line = lambda line: proto.set_raw_mode()
    t.feed(b"go raw\nraw bytes, no line end")
    assert proto.raw == [b"raw bytes, no line end"]
    clock.advance(10)
    assert not t.lost
    proto.set_line_mode(b"partial")
    assert clock.pending()
    proto.pause_producing()  # we are not reading: the peer cannot finish its line
    assert clock.pending() == []
    clock.advance(10)
    assert not t.lost
    proto.resume_producing()  # a fresh deadline
    clock.advance(0.9)
    assert not t.lost
    clock.advance(0.1)
    assert t.lost


def test_an_override_that_keeps_the_connection_gets_a_new_deadline_with_more_bytes() -> None:
    class Patient(Lines):
        timeouts = 0

        def line_timeout_exceeded(self) -> None:
            self.timeouts += 1

    clock = Clock()
    proto = Patient(line_timeout=2.0)
    t = connect(proto, clock)
    t.feed(b"slow")
    clock.advance(5)
    assert proto.timeouts == 1
    assert clock.pending() == []  # no new deadline until the peer sends more
    t.feed(b"er")
    clock.advance(2)
    assert proto.timeouts == 2
    t.feed(b"\n")
    assert proto.lines == [b"slower"]
    assert not t.closed


def test_the_clock_is_self_clock_if_set_else_the_transports_reactor() -> None:
    own, transports = Clock(), Clock()
    proto = Lines(line_timeout=1.0)
    proto.clock = own  # type: ignore[attr-defined]
    t = connect(proto, transports)
    t.feed(b"x")
    assert own.pending() and not transports.pending()
    own.advance(1)
    assert t.lost


def test_without_limits_no_timer_and_no_clock_is_needed() -> None:
    proto = Lines()
    t = MemoryTransport(peername=PEER)  # no clock at all
    t.connect(proto)
    t.feed(b"x" * 100 + b"\n" * 200 + b"partial")
    assert len(proto.lines) == 200
    assert not t.closed


@pytest.mark.parametrize(
    ("limits", "message"),
    [
        ({"line_timeout": 0}, "line_timeout must be a positive"),
        ({"line_timeout": -1.0}, "line_timeout must be a positive"),
        ({"line_timeout": float("nan")}, "line_timeout must be a positive"),
        ({"line_timeout": float("inf")}, "line_timeout must be a positive"),
        ({"line_timeout": "5"}, "line_timeout must be a positive"),
        ({"max_lines_per_turn": 0}, "max_lines_per_turn must be a whole number"),
        ({"max_lines_per_turn": 2.5}, "max_lines_per_turn must be a whole number"),
        ({"max_lines_per_turn": True}, "max_lines_per_turn must be a whole number"),
    ],
)
def test_bad_limits_are_refused_at_connection_made(limits: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message) as info:
        Lines(**limits).connection_made(MemoryTransport(clock=Clock()))
    assert "fix Lines." in str(info.value)


def test_a_limit_without_a_clock_is_refused_at_connection_made() -> None:
    with pytest.raises(RuntimeError, match="has no clock"):
        Lines(line_timeout=1.0).connection_made(MemoryTransport())


# -- max_lines_per_turn ----------------------------------------------------------


def flood(count: int) -> bytes:
    return b"".join(b"%d\n" % i for i in range(count))


def test_a_flood_is_handled_k_lines_per_turn_in_order_with_reading_paused() -> None:
    clock = TurnClock()
    proto = Lines(max_lines_per_turn=64)
    t = connect(proto, clock)
    total = 50_000
    t.feed(flood(total))
    per_turn = [len(proto.lines)]
    assert per_turn == [64]
    assert not t.is_reading()
    t.feed(b"more\n")  # arrives while paused: held by the transport
    while clock.soon:
        assert not t.is_reading()
        before = len(proto.lines)
        assert clock.turn() == 1
        per_turn.append(len(proto.lines) - before)
    assert max(per_turn) == 64
    # 782 turns; the held chunk is delivered as reading resumes, at the end of the last.
    assert len(per_turn) == -(-total // 64)
    assert per_turn[-1] == total % 64 + 1
    assert proto.lines == [b"%d" % i for i in range(total)] + [b"more"]
    assert t.is_reading()
    assert proto.buffer_size == 0


def test_a_chunk_within_the_budget_costs_no_extra_turn() -> None:
    clock = TurnClock()
    proto = Lines(max_lines_per_turn=3)
    t = connect(proto, clock)
    t.feed(b"a\nb\nc\npartial")
    assert proto.lines == [b"a", b"b", b"c"]
    assert clock.soon == [] and t.is_reading()


def test_switching_to_raw_mode_after_the_budget_ran_out() -> None:
    clock = TurnClock()
    proto = Lines(max_lines_per_turn=4)
    t = connect(proto, clock)
    proto.on_line = lambda line: proto.set_raw_mode() if line == b"raw" else None
    t.feed(flood(10) + b"raw\n" + b"bytes\nas they come")
    while clock.soon:
        clock.turn()
    assert proto.lines == [b"%d" % i for i in range(10)] + [b"raw"]
    assert b"".join(proto.raw) == b"bytes\nas they come"
    assert t.is_reading()


def test_an_over_long_line_behind_the_budget_still_ends_the_connection() -> None:
    clock = TurnClock()
    proto = Lines(max_lines_per_turn=2, max_line_length=5)
    t = connect(proto, clock)
    t.feed(b"1\n2\n3\n4\n" + b"z" * 50 + b"\nnever\n")
    assert proto.lines == [b"1", b"2"]
    clock.turn()
    assert proto.lines == [b"1", b"2", b"3", b"4"]
    clock.turn()
    assert t.lost
    assert isinstance(proto.lost[0], LineTooLongError)
    assert proto.lines == [b"1", b"2", b"3", b"4"]
    assert clock.soon == [] or clock.turn() == 0


def test_pause_producing_while_out_of_budget_keeps_reading_paused_until_resumed() -> None:
    clock = TurnClock()
    proto = Lines(max_lines_per_turn=2)
    t = connect(proto, clock)
    proto.on_line = lambda line: proto.pause_producing() if line == b"3" else None
    t.feed(flood(8))
    clock.turn()
    assert proto.lines == [b"0", b"1", b"2", b"3"]  # paused after "3"
    assert clock.soon == []
    assert not t.is_reading()
    proto.on_line = None
    proto.resume_producing()  # two lines, then out of budget again
    assert proto.lines[-1] == b"5"
    assert not t.is_reading()
    clock.turn()
    assert proto.lines == [b"%d" % i for i in range(8)]
    assert t.is_reading()


def test_a_protocol_that_paused_reading_itself_is_not_resumed() -> None:
    clock = TurnClock()
    proto = Lines(max_lines_per_turn=2)
    t = connect(proto, clock)
    proto.on_line = lambda line: t.pause_reading() if line == b"0" else None
    t.feed(flood(6))
    while clock.soon:
        clock.turn()
    assert len(proto.lines) == 6
    assert not t.is_reading()  # the protocol paused it; only the protocol resumes it


def test_reading_resumed_behind_our_back_is_paused_again() -> None:
    clock = TurnClock()
    proto = Lines(max_lines_per_turn=2)
    t = connect(proto, clock)
    t.feed(flood(6))
    t.resume_reading()  # e.g. a proxy that resumes on its own schedule
    t.feed(b"6\n")
    assert not t.is_reading()
    assert len(proto.lines) == 2
    while clock.soon:
        clock.turn()
    assert proto.lines == [b"%d" % i for i in range(7)]
    assert t.is_reading()


def test_closing_while_out_of_budget_stops_delivery() -> None:
    clock = TurnClock()
    proto = Lines(max_lines_per_turn=2)
    t = connect(proto, clock)
    proto.on_line = lambda line: t.close() if line == b"3" else None
    t.feed(flood(10))
    while clock.soon:
        clock.turn()
    assert proto.lines == [b"0", b"1", b"2", b"3"]
    assert t.lost


def test_losing_the_connection_while_out_of_budget_cancels_the_rest() -> None:
    clock = TurnClock()
    proto = Lines(max_lines_per_turn=2)
    t = connect(proto, clock)
    t.feed(flood(10))
    t.feed_reset()
    assert clock.turn() == 0  # the continuation was cancelled
    assert proto.lines == [b"0", b"1"]


def test_the_budget_and_the_deadline_together() -> None:
    """While lines wait for their turn, the peer is not late: no deadline runs."""
    clock = TurnClock()
    proto = Lines(max_lines_per_turn=2, line_timeout=1.0)
    t = connect(proto, clock)
    t.feed(flood(5) + b"partial")
    assert clock.pending() == []
    clock.advance(5)
    assert not t.lost
    while clock.soon:
        clock.turn()
    assert len(proto.lines) == 5
    assert clock.pending()  # now the partial line is the peer's to finish
    clock.advance(1)
    assert t.lost


class Events(Lines):
    """Keeps the connection on over-long lines; records lines and skips in order."""

    def __init__(self, **limits: Any) -> None:
        super().__init__(**limits)
        self.events: list[tuple[str, bytes]] = []

    def line_received(self, line: bytes) -> None:
        self.events.append(("line", line))

    def line_length_exceeded(self, line: bytes) -> None:
        self.events.append(("long", b""))


@settings(max_examples=60, deadline=None)
@given(stream=st.binary(max_size=300), budget=st.integers(1, 5), data=st.data())
def test_the_budget_changes_when_lines_come_never_which(
    stream: bytes, budget: int, data: st.DataObject
) -> None:
    clock = TurnClock()
    proto = Events(max_lines_per_turn=budget, max_line_length=20)
    t = connect(proto, clock)
    for chunk in data.draw(chunked(stream)):
        t.feed(chunk)
        if data.draw(st.booleans()):
            clock.turn()
    while clock.soon:
        clock.turn()
    assert proto.events == reference_lines(stream, b"\n", 20)
    assert t.is_reading()


# -- over real sockets -----------------------------------------------------------


def test_a_flooding_client_does_not_hold_up_another_over_tcp() -> None:
    """50,000 lines in one burst: handled at most 64 per callback, all in order,
    and another client's line is handled long before the flood is through.

    A loop iteration runs the I/O callbacks, then the callbacks they queued: so
    the first iteration may handle 64 lines in data_received and 64 more in the
    continuation; after that, reading is paused and each iteration handles 64.
    """
    total = 50_000
    with Reactor() as reactor:
        handled: list[tuple[str, bytes]] = []
        per_turn: dict[tuple[str, int], int] = {}

        class Recorder(Lines):
            max_lines_per_turn = 64

            def line_received(self, line: bytes) -> None:
                who = "flood" if line.isdigit() else "other"
                handled.append((who, line))
                key = (who, reactor.stats()["iterations"])
                per_turn[key] = per_turn.get(key, 0) + 1
                if line == b"ping":
                    self.transport.write(b"pong\n")

        listener = reactor.listen_tcp(0, Recorder)
        flooder = socket.create_connection(listener.address)
        other = socket.create_connection(listener.address)
        try:
            run_until(reactor, lambda: reactor.stats()["connections"] == 2, what="the accepts")
            data = flood(total)
            flooder.setblocking(False)
            sent = flooder.send(data)
            assert sent > 65536  # loopback takes far more than one read's worth at once
            other.sendall(b"ping\n")

            def flood_sent() -> bool:
                nonlocal sent
                if sent < len(data):
                    try:
                        sent += flooder.send(data[sent:])
                    except BlockingIOError:
                        pass
                return sent == len(data) and len(handled) == total + 1

            run_until(reactor, flood_sent, what="every line to be handled")
            flood_lines = [line for who, line in handled if who == "flood"]
            assert flood_lines == [b"%d" % i for i in range(total)]
            flood_turns = [n for (who, _), n in per_turn.items() if who == "flood"]
            assert max(flood_turns) <= 2 * 64
            assert len(flood_turns) >= total // (2 * 64)
            position = handled.index(("other", b"ping"))
            assert position <= 4 * 64, f"the other client waited behind {position} lines"
            other.settimeout(10)
            assert other.recv(16) == b"pong\n"
        finally:
            flooder.close()
            other.close()


def test_a_slowloris_client_is_cut_off_over_tcp() -> None:
    lost: list[BaseException | None] = []
    with Reactor() as reactor:

        class Server(Lines):
            line_timeout = 0.3

            def connection_lost(self, exc: BaseException | None) -> None:
                lost.append(exc)
                super().connection_lost(exc)

        listener = reactor.listen_tcp(0, Server)
        slow = socket.create_connection(listener.address)
        try:
            slow.sendall(b"GET / HTTP/1.1")
            run_until(reactor, lambda: lost, what="the line deadline")
            assert isinstance(lost[0], LineTimeoutError)
            slow.settimeout(10)
            try:
                assert slow.recv(100) == b""  # closed by the server
            except ConnectionResetError:
                pass
        finally:
            slow.close()
