"""Tests for protocols.testing: MemoryTransport, Clock and Pump."""

from __future__ import annotations

import errno
import logging
import math
from collections.abc import Callable
from typing import Any

import pytest

import reactor
from protocols.base import Protocol
from protocols.testing import Clock, MemoryTransport, Pump, connect_pair
from reactor.interfaces import TransportInterface

pytestmark = pytest.mark.timeout(60)

Event = tuple[Any, ...]


class Recorder(Protocol):
    """Records every callback; optional hooks run inside them."""

    def __init__(self, keep_open: bool = False) -> None:
        self.events: list[Event] = []
        self.keep_open = keep_open
        self.on_made: Callable[[], None] | None = None
        self.on_data: Callable[[bytes], None] | None = None
        self.on_eof: Callable[[], None] | None = None
        self.on_lost: Callable[[], None] | None = None
        self.on_pause: Callable[[], None] | None = None

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        self.events.append(("made",))
        if self.on_made is not None:
            self.on_made()

    def data_received(self, data: bytes) -> None:
        self.events.append(("data", data))
        if self.on_data is not None:
            self.on_data(data)
        self.events.append(("data-end",))

    def eof_received(self) -> bool | None:
        self.events.append(("eof",))
        if self.on_eof is not None:
            self.on_eof()
        return self.keep_open

    def connection_lost(self, exc: BaseException | None) -> None:
        self.events.append(("lost", exc))
        if self.on_lost is not None:
            self.on_lost()

    def pause_writing(self) -> None:
        self.events.append(("pause",))
        if self.on_pause is not None:
            self.on_pause()

    def resume_writing(self) -> None:
        self.events.append(("resume",))

    def names(self) -> list[str]:
        return [event[0] for event in self.events]

    def received(self) -> bytes:
        return b"".join(event[1] for event in self.events if event[0] == "data")

    def lost_exc(self) -> BaseException | None:
        [exc] = [event[1] for event in self.events if event[0] == "lost"]
        assert exc is None or isinstance(exc, BaseException)
        return exc


def connected(**kwargs: Any) -> tuple[MemoryTransport, Recorder]:
    transport = MemoryTransport(**kwargs)
    proto = Recorder()
    transport.connect(proto)
    return transport, proto


class BoomError(Exception):
    pass


def boom(*_: object) -> None:
    raise BoomError("boom")


# -- MemoryTransport: connecting and reading -----------------------------------


def test_is_a_transport() -> None:
    transport: TransportInterface = MemoryTransport()
    assert transport.can_write_eof()


def test_connect_calls_connection_made_with_the_transport() -> None:
    transport, proto = connected()
    assert proto.events == [("made",)]
    assert proto.transport is transport
    assert transport.get_protocol() is proto
    assert not transport.closed
    assert not transport.lost
    assert transport.is_reading()


def test_connect_twice_or_after_close_is_an_error() -> None:
    transport, _ = connected()
    with pytest.raises(RuntimeError, match="twice"):
        transport.connect(Recorder())
    closed = MemoryTransport()
    closed.close()
    assert closed.lost
    with pytest.raises(RuntimeError, match="closed"):
        closed.connect(Recorder())


@pytest.mark.parametrize("method", ["feed_eof", "feed_reset", "feed_close"])
def test_peer_actions_need_a_protocol(method: str) -> None:
    with pytest.raises(RuntimeError, match="before connect"):
        getattr(MemoryTransport(), method)()
    with pytest.raises(RuntimeError, match="before connect"):
        MemoryTransport().feed(b"x")


def test_feed_delivers_each_chunk_as_bytes() -> None:
    transport, proto = connected()
    transport.feed(b"ab")
    transport.feed(bytearray(b"cd"))
    transport.feed(memoryview(b"ef"))
    transport.feed(b"")
    datas = [event[1] for event in proto.events if event[0] == "data"]
    assert datas == [b"ab", b"cd", b"ef"]
    assert all(type(data) is bytes for data in datas)


def test_feed_rejects_non_bytes() -> None:
    transport, _ = connected()
    with pytest.raises(TypeError, match="str"):
        transport.feed("text")  # type: ignore[arg-type]


def test_feed_eof_closes_unless_eof_received_returns_true() -> None:
    transport, proto = connected()
    transport.feed_eof()
    assert proto.names() == ["made", "eof", "lost"]
    assert proto.lost_exc() is None
    assert transport.closed

    transport = MemoryTransport()
    proto = Recorder(keep_open=True)
    transport.connect(proto)
    transport.feed_eof()
    assert proto.names() == ["made", "eof"]
    assert not transport.closed
    transport.write(b"still writing")
    assert transport.value() == b"still writing"
    transport.close()
    assert proto.names() == ["made", "eof", "lost"]


def test_eof_both_ways_closes() -> None:
    # Our EOF first, then the peer's.
    transport = MemoryTransport()
    proto = Recorder(keep_open=True)
    transport.connect(proto)
    transport.write_eof()
    assert not transport.closed
    transport.feed_eof()
    assert proto.names() == ["made", "eof", "lost"]

    # The peer's first; ours is sent once the stalled buffer drains.
    transport = MemoryTransport(stalled=True)
    proto = Recorder(keep_open=True)
    transport.connect(proto)
    transport.feed_eof()
    transport.write(b"last words")
    transport.write_eof()
    assert not transport.closed
    transport.drain(4)
    assert not transport.closed
    transport.drain()
    assert proto.names() == ["made", "eof", "lost"]
    assert transport.value() == b"last words"

    # Without the peer's EOF, draining just sends ours.
    transport = MemoryTransport(stalled=True)
    transport.connect(Recorder())
    transport.write(b"x")
    transport.write_eof()
    transport.drain()
    assert not transport.closed


def test_feed_after_feed_eof_is_an_error() -> None:
    transport = MemoryTransport()
    transport.connect(Recorder(keep_open=True))
    transport.feed_eof()
    with pytest.raises(RuntimeError, match="after feed_eof"):
        transport.feed(b"x")
    with pytest.raises(RuntimeError, match="twice"):
        transport.feed_eof()


def test_feed_reset_loses_the_connection_with_econnreset() -> None:
    transport, proto = connected(stalled=True)
    transport.write(b"unsent")
    transport.feed_reset()
    exc = proto.lost_exc()
    assert isinstance(exc, ConnectionResetError)
    assert exc.errno == errno.ECONNRESET
    assert transport.closed
    assert transport.lost
    assert transport.get_write_buffer_size() == 0
    transport.feed_reset()
    transport.feed_close()
    transport.abort()
    assert proto.names() == ["made", "lost"]
    assert not transport.aborted


def test_feed_close_is_a_clean_loss() -> None:
    transport, proto = connected()
    transport.feed_close()
    assert proto.names() == ["made", "lost"]
    assert proto.lost_exc() is None


def test_nothing_reaches_the_protocol_after_connection_lost() -> None:
    transport, proto = connected()
    transport.close()
    transport.feed(b"late")
    transport.feed_eof()
    transport.feed_reset()
    transport.resume_reading()
    transport.close()
    assert proto.names() == ["made", "lost"]


# -- MemoryTransport: writing ---------------------------------------------------


def test_write_records_bytes_and_clear_forgets_them() -> None:
    transport, _ = connected()
    transport.write(b"ab")
    transport.write(bytearray(b"cd"))
    transport.write(memoryview(b"ef"))
    transport.writelines([b"g", bytearray(b"h"), memoryview(b"i")])
    transport.write(b"")
    assert transport.value() == b"abcdefghi"
    assert transport.get_write_buffer_size() == 0
    transport.clear()
    assert transport.value() == b""
    transport.write(b"j")
    assert transport.value() == b"j"


def test_write_rejects_non_bytes() -> None:
    transport, _ = connected()
    with pytest.raises(TypeError, match="not str"):
        transport.write("text")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        transport.writelines([b"ok", "text"])  # type: ignore[list-item]
    assert transport.value() == b"ok"


def test_write_after_close_is_dropped_and_counted() -> None:
    transport, _ = connected()
    transport.write(b"before")
    transport.close()
    transport.write(b"after")
    transport.writelines([b"more"])
    assert transport.value() == b"before"
    assert transport.dropped_writes == 2


def test_write_after_write_eof_raises() -> None:
    transport, _ = connected()
    transport.write(b"x")
    transport.write_eof()
    transport.write_eof()  # idempotent
    assert transport.eof_written
    with pytest.raises(RuntimeError, match="write_eof"):
        transport.write(b"y")
    transport.close()
    with pytest.raises(RuntimeError, match="write_eof"):
        transport.write(b"z")  # as on a real transport: the EOF check comes first
    assert transport.dropped_writes == 0


def test_write_eof_after_close_is_ignored() -> None:
    transport, _ = connected()
    transport.close()
    transport.write_eof()
    assert not transport.eof_written


def test_close_is_idempotent_and_loses_once() -> None:
    transport, proto = connected()
    transport.close()
    transport.close()
    transport.abort()
    assert transport.is_closing()
    assert not transport.is_reading()
    assert proto.names() == ["made", "lost"]


def test_close_before_connect_then_nothing_is_called() -> None:
    transport = MemoryTransport()
    transport.close()
    assert transport.lost
    assert transport.get_protocol() is None


def test_close_inside_data_received_loses_after_the_callback_returns() -> None:
    transport, proto = connected()

    def close_then_write(data: bytes) -> None:
        transport.close()
        transport.write(b"dropped")
        assert not transport.lost

    proto.on_data = close_then_write
    transport.feed(b"x")
    assert proto.names() == ["made", "data", "data-end", "lost"]
    assert transport.dropped_writes == 1


def test_abort_discards_the_buffer_and_loses_at_once() -> None:
    transport, proto = connected(stalled=True)
    transport.write(b"unsent")
    transport.close()
    assert not transport.lost  # close() waits for the buffer
    transport.abort()
    assert transport.aborted
    assert transport.get_write_buffer_size() == 0
    assert transport.value() == b""
    assert proto.names() == ["made", "lost"]
    assert proto.lost_exc() is None


def test_abort_with_a_reason() -> None:
    transport, proto = connected()
    reason = TimeoutError("peer is dead")
    transport.abort(reason)
    assert proto.lost_exc() is reason
    assert transport.aborted


def test_abort_inside_a_callback_is_deferred() -> None:
    transport, proto = connected()
    proto.on_data = lambda data: transport.abort()
    transport.feed(b"x")
    assert proto.names() == ["made", "data", "data-end", "lost"]
    assert transport.aborted


# -- MemoryTransport: flow control ---------------------------------------------


def test_stalled_writes_buffer_and_pause_past_the_high_mark() -> None:
    transport, proto = connected(stalled=True)
    transport.set_write_buffer_limits(high=10, low=4)
    assert transport.get_write_buffer_limits() == (4, 10)
    transport.write(b"x" * 10)
    assert proto.names() == ["made"]  # at the mark, not past it
    transport.write(b"x")
    assert proto.names() == ["made", "pause"]
    transport.write(b"x" * 5)  # already paused: no second call
    assert proto.names() == ["made", "pause"]
    assert transport.get_write_buffer_size() == 16
    assert transport.value() == b""

    assert transport.drain(10) == b"x" * 10
    assert transport.get_write_buffer_size() == 6
    assert proto.names() == ["made", "pause"]  # 6 > low
    assert transport.drain(2) == b"xx"
    assert proto.names() == ["made", "pause", "resume"]  # 4 <= low
    assert transport.drain() == b"xxxx"
    assert transport.drain() == b""
    assert transport.value() == b"x" * 16
    assert proto.names() == ["made", "pause", "resume"]


def test_drain_rejects_a_negative_count() -> None:
    transport, _ = connected(stalled=True)
    with pytest.raises(ValueError, match="max_bytes"):
        transport.drain(-1)


def test_unstalling_drains() -> None:
    transport, _ = connected(stalled=True)
    assert transport.stalled
    transport.write(b"abc")
    transport.stalled = False
    assert transport.value() == b"abc"
    transport.write(b"d")
    assert transport.value() == b"abcd"
    assert transport.get_write_buffer_size() == 0


def test_close_waits_for_a_stalled_buffer() -> None:
    transport, proto = connected(stalled=True)
    transport.write(b"abc")
    transport.write_eof()
    transport.close()
    assert transport.closed
    assert proto.names() == ["made"]
    transport.drain(1)
    assert proto.names() == ["made"]
    transport.drain()
    assert proto.names() == ["made", "lost"]
    assert transport.value() == b"abc"


def test_set_write_buffer_limits_defaults_and_validation() -> None:
    transport = MemoryTransport()
    assert transport.get_write_buffer_limits() == (16 * 1024, 64 * 1024)
    transport.set_write_buffer_limits(high=100)
    assert transport.get_write_buffer_limits() == (25, 100)
    transport.set_write_buffer_limits(low=10)
    assert transport.get_write_buffer_limits() == (10, 40)
    transport.set_write_buffer_limits()
    assert transport.get_write_buffer_limits() == (16 * 1024, 64 * 1024)
    with pytest.raises(ValueError, match=r"need high \(.*\) >= low"):
        transport.set_write_buffer_limits(high=1, low=2)
    with pytest.raises(ValueError, match=r"need high \(.*\) >= low"):
        transport.set_write_buffer_limits(high=1, low=-1)


def test_raising_the_marks_resumes() -> None:
    transport, proto = connected(stalled=True)
    transport.set_write_buffer_limits(high=10)
    transport.write(b"x" * 20)
    transport.set_write_buffer_limits(high=15)
    assert proto.names() == ["made", "pause"]  # 20 > 15 // 4
    transport.set_write_buffer_limits(high=100)
    assert proto.names() == ["made", "pause", "resume"]


def test_lowering_the_high_mark_pauses() -> None:
    transport, proto = connected(stalled=True)
    transport.write(b"x" * 100)
    transport.set_write_buffer_limits(high=200)
    assert proto.names() == ["made"]
    transport.set_write_buffer_limits(high=50)
    assert proto.names() == ["made", "pause"]
    transport.set_write_buffer_limits(high=40)
    assert proto.names() == ["made", "pause"]


def test_pause_reading_holds_data_and_eof_until_resumed() -> None:
    transport, proto = connected()
    transport.pause_reading()
    transport.pause_reading()
    assert not transport.is_reading()
    transport.feed(b"ab")
    transport.feed(b"cd")
    transport.feed_eof()
    assert proto.names() == ["made"]
    transport.resume_reading()
    assert transport.is_reading() is False  # closed after EOF
    assert proto.events[1:] == [("data", b"abcd"), ("data-end",), ("eof",), ("lost", None)]


def test_feed_while_data_is_held_queues_behind_it() -> None:
    transport, proto = connected()
    transport.pause_reading()
    transport.feed(b"a")
    transport.resume_reading()
    transport.resume_reading()  # already reading: nothing to do
    transport.feed(b"b")
    assert [e[1] for e in proto.events if e[0] == "data"] == [b"a", b"b"]


def test_close_while_paused_discards_held_data() -> None:
    transport, proto = connected()
    transport.pause_reading()
    transport.feed(b"held")
    transport.close()
    transport.pause_reading()
    assert proto.names() == ["made", "lost"]


def test_resume_reading_inside_a_callback_delivers_after_it() -> None:
    transport, proto = connected(stalled=True)
    transport.set_write_buffer_limits(high=0)
    transport.pause_reading()
    transport.feed(b"held")
    proto.on_pause = transport.resume_reading
    transport.write(b"x")
    assert proto.names() == ["made", "pause", "data", "data-end"]


def test_feed_from_inside_a_callback_is_not_reentrant() -> None:
    transport, proto = connected()
    proto.on_data = lambda data: transport.feed(b"second") if data == b"first" else None
    transport.feed(b"first")
    assert proto.events[1:] == [
        ("data", b"first"),
        ("data-end",),
        ("data", b"second"),
        ("data-end",),
    ]


def test_feed_eof_and_reset_inside_a_callback_wait_for_it() -> None:
    transport, proto = connected()
    proto.on_data = lambda data: transport.feed_eof()
    transport.feed(b"x")
    assert proto.names() == ["made", "data", "data-end", "eof", "lost"]

    transport, proto = connected()
    proto.on_data = lambda data: transport.feed_reset()
    transport.feed(b"x")
    assert proto.names() == ["made", "data", "data-end", "lost"]
    assert isinstance(proto.lost_exc(), ConnectionResetError)


# -- MemoryTransport: protocol errors -----------------------------------------


def test_exception_in_data_received_is_logged_and_closes(
    caplog: pytest.LogCaptureFixture,
) -> None:
    transport, proto = connected()
    proto.on_data = boom
    with caplog.at_level(logging.ERROR, logger="protocols.testing"):
        transport.feed(b"x")
    exc = proto.lost_exc()
    assert isinstance(exc, BoomError)
    assert "Recorder.data_received" in caplog.text
    assert caplog.records[0].exc_info is not None
    assert transport.closed
    transport.feed(b"ignored")
    assert proto.names() == ["made", "data", "lost"]


def test_exception_in_connection_made_closes() -> None:
    transport = MemoryTransport()
    proto = Recorder()
    proto.on_made = boom
    transport.connect(proto)
    assert proto.names() == ["made", "lost"]
    assert isinstance(proto.lost_exc(), BoomError)


def test_exception_in_eof_received_closes_with_it() -> None:
    transport, proto = connected()
    proto.on_eof = boom
    transport.feed_eof()
    assert proto.names() == ["made", "eof", "lost"]
    assert isinstance(proto.lost_exc(), BoomError)


def test_exception_in_pause_writing_closes_with_it() -> None:
    transport, proto = connected(stalled=True)
    transport.set_write_buffer_limits(high=0)
    proto.on_pause = boom
    transport.write(b"x")
    assert proto.names() == ["made", "pause", "lost"]
    assert isinstance(proto.lost_exc(), BoomError)


def test_the_first_reason_wins_over_a_later_error() -> None:
    transport, proto = connected()

    def close_then_fail(data: bytes) -> None:
        transport.close()
        raise BoomError("after close")

    proto.on_data = close_then_fail
    transport.feed(b"x")
    assert proto.lost_exc() is None


def test_exception_in_connection_lost_is_only_logged(caplog: pytest.LogCaptureFixture) -> None:
    transport, proto = connected()
    proto.on_lost = boom
    with caplog.at_level(logging.ERROR, logger="protocols.testing"):
        transport.close()
    assert "connection_lost" in caplog.text
    assert proto.names() == ["made", "lost"]
    assert transport.lost


# -- MemoryTransport: the rest -------------------------------------------------


def test_get_extra_info() -> None:
    sock = object()
    transport = MemoryTransport(
        peername=("10.0.0.1", 1234), sockname=("10.0.0.2", 80), socket=sock, extra={"x": 1}
    )
    assert transport.get_extra_info("peername") == ("10.0.0.1", 1234)
    assert transport.get_extra_info("sockname") == ("10.0.0.2", 80)
    assert transport.get_extra_info("socket") is sock
    assert transport.get_extra_info("x") == 1
    bare = MemoryTransport(extra={"x": None})
    for name in ("peername", "sockname", "socket", "x"):
        assert bare.get_extra_info(name) is None
    assert bare.get_extra_info("peername", "default") == "default"


def test_get_extra_info_reactor_is_the_clock() -> None:
    clock = Clock()
    transport = MemoryTransport(clock=clock)
    assert transport.clock is clock
    assert transport.get_extra_info("reactor") is clock
    bare = MemoryTransport()
    assert bare.clock is None
    assert bare.get_extra_info("reactor") is None
    assert bare.get_extra_info("reactor", "default") == "default"
    other = object()
    assert MemoryTransport(extra={"reactor": other}).get_extra_info("reactor") is other


def test_set_protocol_hands_over_the_connection() -> None:
    transport, first = connected()
    second = Recorder()
    transport.set_protocol(second)
    assert transport.get_protocol() is second
    transport.feed(b"x")
    transport.close()
    assert first.names() == ["made"]
    assert second.names() == ["data", "data-end", "lost"]


def test_repr() -> None:
    transport, _ = connected()
    assert "open" in repr(transport)
    transport.close()
    assert "lost" in repr(transport)
    stalled, _ = connected(stalled=True)
    stalled.write(b"x")
    stalled.close()
    assert "closing" in repr(stalled)


# -- Clock ---------------------------------------------------------------------


def test_clock_starts_where_asked() -> None:
    assert Clock().time() == 0.0
    assert Clock(100).time() == 100.0


def test_timers_fire_in_order_each_at_its_deadline() -> None:
    clock = Clock()
    fired: list[tuple[str, float]] = []

    def record(name: str) -> None:
        fired.append((name, clock.time()))

    clock.call_later(2, record, "b")
    clock.call_at(1, record, "a1")
    clock.call_later(1, record, "a2")
    clock.call_later(5, record, "late")
    clock.advance(0.5)
    assert fired == []
    assert clock.time() == 0.5
    clock.advance(2.5)
    assert fired == [("a1", 1.0), ("a2", 1.0), ("b", 2.0)]
    assert clock.time() == 3.0
    assert [h.when for h in clock.pending()] == [5]


def test_timers_scheduled_by_callbacks_fire_within_the_window() -> None:
    clock = Clock()
    fired: list[float] = []

    def tick() -> None:
        fired.append(clock.time())
        clock.call_later(1, tick)

    clock.call_later(1, tick)
    clock.advance(3.5)
    assert fired == [1.0, 2.0, 3.0]
    assert clock.time() == 3.5
    clock.advance(0.5)
    assert fired == [1.0, 2.0, 3.0, 4.0]


def test_a_timer_in_the_past_fires_now() -> None:
    clock = Clock(10)
    fired: list[float] = []
    clock.call_at(3, lambda: fired.append(clock.time()))
    clock.call_later(-1, lambda: fired.append(clock.time()))
    clock.advance(0)
    assert fired == [10.0, 10.0]


def test_call_soon_runs_on_the_next_advance() -> None:
    clock = Clock()
    order: list[str] = []
    clock.call_soon(order.append, "soon")
    assert order == []
    clock.advance(0)
    assert order == ["soon"]

    def timer() -> None:
        order.append("t1")
        clock.call_soon(order.append, "soon-from-t1")

    clock.call_later(1, timer)
    clock.call_later(2, order.append, "t2")
    clock.advance(5)
    assert order == ["soon", "t1", "soon-from-t1", "t2"]


def test_run_soon_runs_only_soon_callbacks() -> None:
    clock = Clock()
    order: list[str] = []
    clock.call_at(0, order.append, "timer")
    clock.call_soon(lambda: clock.call_soon(order.append, "nested"))
    clock.call_soon(order.append, "soon")
    clock.run_soon()
    assert order == ["soon", "nested"]
    clock.advance()
    assert order == ["soon", "nested", "timer"]


def test_cancelled_callbacks_do_not_run() -> None:
    clock = Clock()
    fired: list[str] = []
    soon = clock.call_soon(fired.append, "soon")
    soon.cancel()
    later = clock.call_later(1, fired.append, "later")
    second = clock.call_later(1, fired.append, "second")
    clock.call_later(1, second.cancel)  # runs after second: too late
    first = clock.call_at(1, fired.append, "cancelled-by-zero")
    clock.call_at(0.5, first.cancel)
    later.cancel()
    later.cancel()
    clock.advance(2)
    assert fired == ["second"]
    assert clock.pending() == []


def test_a_callback_can_cancel_a_timer_due_at_the_same_time() -> None:
    clock = Clock()
    fired: list[str] = []
    handles: dict[str, Any] = {}

    def cancel_b() -> None:
        handles["b"].cancel()

    clock.call_at(1, cancel_b)
    handles["b"] = clock.call_at(1, fired.append, "b")
    clock.advance(1)
    assert fired == []


def test_pending_lists_live_timers_and_forgets_cancelled_ones() -> None:
    clock = Clock()
    keep = clock.call_later(3, lambda: None)
    handles = [clock.call_later(1, lambda: None) for _ in range(200)]
    for handle in handles:
        handle.cancel()
    clock.call_later(2, lambda: None)  # many cancelled entries: pruned here
    assert [h.when for h in clock.pending()] == [2, 3]
    assert clock.pending()[-1] is keep


def test_advance_and_call_at_validate_their_arguments() -> None:
    clock = Clock()
    for bad in (-1, math.nan, math.inf):
        with pytest.raises(ValueError, match="advance"):
            clock.advance(bad)
    with pytest.raises(ValueError, match="NaN"):
        clock.call_at(math.nan, lambda: None)
    # As on the reactor: an infinite timer would never fire, so it is refused.
    with pytest.raises(ValueError, match="infinite"):
        clock.call_later(math.inf, lambda: None)
    assert clock.pending() == []


def test_exceptions_propagate_and_the_rest_run_later() -> None:
    clock = Clock()
    fired: list[tuple[str, float]] = []
    clock.call_at(1, boom)
    clock.call_at(1, lambda: fired.append(("same", clock.time())))
    clock.call_at(2, lambda: fired.append(("next", clock.time())))
    with pytest.raises(BoomError):
        clock.advance(5)
    assert clock.time() == 1.0
    assert fired == []
    assert [h.when for h in clock.pending()] == [1, 2]
    clock.advance(1)
    assert fired == [("same", 1.0), ("next", 2.0)]
    assert clock.time() == 2.0


def test_the_clock_is_not_reentrant() -> None:
    clock = Clock()
    clock.call_soon(clock.advance, 1)
    with pytest.raises(RuntimeError, match="inside"):
        clock.advance()
    clock.call_soon(clock.run_soon)
    with pytest.raises(RuntimeError, match="inside"):
        clock.run_soon()
    clock.advance(1)  # usable again afterwards
    assert clock.time() == 1.0


def test_call_every() -> None:
    clock = Clock()
    ticks: list[float] = []
    periodic = clock.call_every(1, lambda: ticks.append(clock.time()))
    assert periodic.running
    clock.advance(3.5)
    assert ticks == [1.0, 2.0, 3.0]
    assert periodic.missed == 0
    periodic.cancel()
    clock.advance(5)
    assert ticks == [1.0, 2.0, 3.0]
    assert clock.pending() == []

    now_ticks: list[str] = []
    clock.call_every(2, now_ticks.append, "x", now=True)
    clock.advance(0)
    assert now_ticks == ["x"]
    clock.advance(4)
    assert now_ticks == ["x", "x", "x"]
    with pytest.raises(ValueError, match="interval"):
        clock.call_every(0, lambda: None)


def _as_reactor_clock(clock: Clock) -> reactor.Clock:
    return clock  # mypy checks that the fake clock has the whole reactor.Clock API


def test_the_fake_clock_is_a_reactor_clock() -> None:
    clock = Clock()
    api = [name for name in vars(reactor.Clock) if not name.startswith("_")]
    assert {"time", "call_soon", "call_later", "call_at", "call_every"} <= set(api)
    for name in api:
        assert callable(getattr(clock, name)), name
    ran: list[str] = []
    _as_reactor_clock(clock).call_soon(ran.append, "soon")
    _as_reactor_clock(clock).call_every(1.0, ran.append, "tick")
    clock.advance(2.0)
    assert ran == ["soon", "tick", "tick"]


# -- Pump ----------------------------------------------------------------------


class Echo(Protocol):
    """Echoes data; closes when the peer closes."""

    def __init__(self) -> None:
        self.lost: list[BaseException | None] = []

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)

    def connection_lost(self, exc: BaseException | None) -> None:
        self.lost.append(exc)


def test_pump_moves_bytes_both_ways() -> None:
    client = Recorder()
    client.on_made = lambda: client.transport.write(b"hello")
    server = Echo()
    pump = connect_pair(client, server)
    assert isinstance(pump, Pump)
    assert pump.client is client
    assert pump.server is server
    assert pump.flush() == 10
    assert client.received() == b"hello"
    assert pump.flush() == 0
    client.transport.write(b" again")
    pump.flush()
    assert client.received() == b"hello again"


def test_pump_clock_is_both_sides_reactor() -> None:
    clock = Clock()
    pump = connect_pair(Recorder(), Recorder(), clock=clock)
    assert pump.client_transport.get_extra_info("reactor") is clock
    assert pump.server_transport.get_extra_info("reactor") is clock
    assert connect_pair(Recorder(), Recorder()).client_transport.get_extra_info("reactor") is None


def test_pump_addresses() -> None:
    pump = Pump(Recorder(), Recorder(), client_address=("c", 1), server_address=("s", 2))
    assert pump.client_transport.get_extra_info("peername") == ("s", 2)
    assert pump.client_transport.get_extra_info("sockname") == ("c", 1)
    assert pump.server_transport.get_extra_info("peername") == ("c", 1)


def test_pump_close_sends_eof_and_both_sides_end_cleanly() -> None:
    client = Recorder()
    server = Echo()
    pump = connect_pair(client, server)
    client.transport.write(b"bye")
    client.transport.close()
    pump.flush()
    assert server.lost == [None]
    assert client.names() == ["made", "lost"]  # the echo went to a closed socket
    assert pump.server_transport.closed


def test_pump_half_close() -> None:
    client = Recorder()
    server = Recorder(keep_open=True)

    def reply() -> None:
        server.transport.write(b"answer")
        server.transport.close()

    server.on_eof = reply
    pump = connect_pair(client, server)
    client.transport.write(b"question")
    client.transport.write_eof()
    pump.flush()
    assert server.received() == b"question"
    assert server.names()[-2:] == ["eof", "lost"]
    assert client.received() == b"answer"
    assert client.names()[-2:] == ["eof", "lost"]
    assert client.lost_exc() is None


def test_pump_abort_resets_the_peer() -> None:
    client = Recorder()
    server = Recorder()
    pump = connect_pair(client, server)
    client.transport.write_eof()
    pump.flush()
    assert server.names() == ["made", "eof", "lost"]  # the server closed on EOF

    client, server = Recorder(keep_open=True), Recorder(keep_open=True)
    pump = connect_pair(client, server)
    client.transport.write_eof()
    pump.flush()
    client.transport.abort()
    pump.flush()
    assert isinstance(server.lost_exc(), ConnectionResetError)
    assert client.lost_exc() is None


def test_pump_protocol_error_resets_the_peer() -> None:
    client = Recorder()
    server = Recorder()
    server.on_data = boom
    pump = connect_pair(client, server)
    client.transport.write(b"x")
    pump.flush()
    assert isinstance(server.lost_exc(), BoomError)
    assert isinstance(client.lost_exc(), ConnectionResetError)


def test_pump_respects_a_stalled_transport() -> None:
    client = Recorder()
    server = Recorder()
    pump = connect_pair(client, server)
    pump.client_transport.stalled = True
    client.transport.write(b"held")
    client.transport.close()
    pump.flush()
    assert server.received() == b""
    pump.client_transport.drain()
    pump.flush()
    assert server.received() == b"held"
    assert server.names()[-1] == "lost"
    assert client.names()[-1] == "lost"


def test_pump_does_not_feed_a_side_that_already_had_eof() -> None:
    client = Recorder()
    server = Recorder(keep_open=True)
    pump = connect_pair(client, server)
    pump.server_transport.feed_eof()  # the test played the client's FIN itself
    client.transport.write(b"x")
    client.transport.write_eof()
    pump.flush()
    assert server.names() == ["made", "eof"]


def test_pump_gives_up_on_endless_chatter() -> None:
    client = Echo()
    server = Echo()
    pump = connect_pair(client, server)
    client.transport.write(b"ping")
    with pytest.raises(RuntimeError, match="still talking after 50 rounds"):
        pump.flush(max_rounds=50)


def test_the_first_error_wins() -> None:
    transport, proto = connected()

    def reset_then_fail(data: bytes) -> None:
        transport.feed_reset()
        raise BoomError("second")

    proto.on_data = reset_then_fail
    transport.feed(b"x")
    assert isinstance(proto.lost_exc(), ConnectionResetError)


def test_drain_after_the_connection_is_lost_calls_nothing() -> None:
    transport, proto = connected(stalled=True)
    transport.set_write_buffer_limits(high=0)
    transport.write(b"x")
    transport.feed_reset()
    assert transport.drain() == b""
    assert proto.names() == ["made", "pause", "lost"]


def test_a_stalled_transport_without_a_protocol_just_buffers() -> None:
    transport = MemoryTransport(stalled=True)
    transport.set_write_buffer_limits(high=0)
    transport.write(b"x")
    assert transport.get_write_buffer_size() == 1
    assert transport.drain() == b"x"
