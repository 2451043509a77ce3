"""call_soon, timers, the timer heap and periodic calls."""

from __future__ import annotations

import logging
import math
import os
import random
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from reactor import Reactor
from reactor.timers import Handle, PeriodicCall, TimerHandle, TimerQueue
from tests.conftest import run_until

pytestmark = pytest.mark.timeout(60)


# ---------------------------------------------------------------------- call_soon


def test_call_soon_is_fifo(reactor: Reactor) -> None:
    out: list[int] = []
    for i in range(1000):
        reactor.call_soon(out.append, i)
    reactor.run_once(0)
    assert out == list(range(1000))


def test_call_soon_passes_args_and_returns_a_handle(reactor: Reactor) -> None:
    out: list[tuple[Any, ...]] = []
    handle = reactor.call_soon(lambda *a: out.append(a), 1, "two", None)
    assert isinstance(handle, Handle)
    assert not handle.cancelled()
    reactor.run_once(0)
    assert out == [(1, "two", None)]


def test_cancelled_call_soon_never_runs(reactor: Reactor) -> None:
    out: list[int] = []
    handles = [reactor.call_soon(out.append, i) for i in range(10)]
    for handle in handles[::2]:
        handle.cancel()
        handle.cancel()  # twice is harmless
        assert handle.cancelled()
    reactor.run_once(0)
    assert out == [1, 3, 5, 7, 9]
    handles[1].cancel()  # after it ran: harmless
    reactor.run_once(0)
    assert out == [1, 3, 5, 7, 9]


def test_callback_can_cancel_a_later_one_in_the_same_turn(reactor: Reactor) -> None:
    out: list[str] = []
    later: list[Handle] = []

    def cancel_later() -> None:
        later[0].cancel()

    reactor.call_soon(cancel_later)
    later.append(reactor.call_soon(out.append, "cancelled"))
    reactor.call_soon(out.append, "ran")
    reactor.run_once(0)
    assert out == ["ran"]


def test_handle_repr_and_run() -> None:
    out: list[int] = []
    handle = Handle(out.append, (5,))
    assert "append" in repr(handle)
    handle._run()
    assert out == [5]
    handle.cancel()
    assert "cancelled" in repr(handle)

    class NoName:
        def __call__(self) -> None:
            pass

        def __repr__(self) -> str:
            return "<no name>"

    callable_obj = NoName()
    assert "<no name>" in repr(Handle(callable_obj, ()))
    timer = TimerHandle(3.0, out.append, (1,), None)
    assert repr(timer).startswith("<TimerHandle")
    assert timer.when == 3.0
    timer.cancel()  # no queue: nothing to tell
    assert timer.cancelled()


# ------------------------------------------------------------------------- timers


def test_time_is_monotonic(reactor: Reactor) -> None:
    values = [reactor.time() for _ in range(10_000)]
    assert values == sorted(values)
    assert abs(reactor.time() - time.monotonic()) < 1.0


def test_call_later_fires_in_deadline_order(reactor: Reactor) -> None:
    out: list[float] = []
    delays = [0.05, 0.01, 0.04, 0.0, 0.02, 0.03, -1.0]
    for delay in delays:
        reactor.call_later(delay, out.append, delay)
    run_until(reactor, lambda: len(out) == len(delays))
    assert out == sorted(delays)


def test_call_later_does_not_fire_early(reactor: Reactor) -> None:
    fired: list[float] = []
    start = reactor.time()
    handle = reactor.call_later(0.05, lambda: fired.append(reactor.time()))
    assert handle.when == pytest.approx(start + 0.05, abs=0.01)
    run_until(reactor, lambda: fired)
    assert fired[0] >= handle.when - 1e-6


def test_call_at_ties_fire_in_scheduling_order(reactor: Reactor) -> None:
    out: list[int] = []
    when = reactor.time() + 0.01
    for i in range(2000):
        reactor.call_at(when, out.append, i)
    # An earlier deadline scheduled later still goes first.
    reactor.call_at(when - 0.005, out.append, -1)
    # A later one scheduled among them goes last.
    reactor.call_at(when + 0.001, out.append, 9999)
    run_until(reactor, lambda: len(out) == 2002)
    assert out == [-1, *range(2000), 9999]


def test_call_at_random_deadlines(reactor: Reactor) -> None:
    rng = random.Random(1234)
    base = reactor.time()
    out: list[tuple[float, int]] = []
    expected = []
    for i in range(500):
        when = base + rng.choice([0.0, 0.001, 0.002, 0.003, 0.01, 0.02])
        reactor.call_at(when, out.append, (when, i))
        expected.append((when, i))
    run_until(reactor, lambda: len(out) == 500)
    assert out == sorted(expected)


def test_call_at_in_the_past_fires_next_turn(reactor: Reactor) -> None:
    out: list[str] = []
    reactor.call_at(reactor.time() - 1, out.append, "past")
    reactor.call_at(0, out.append, "long past")
    reactor.run_once(0)
    assert out == ["long past", "past"]


def test_timer_scheduled_from_a_timer_waits_for_the_next_turn(reactor: Reactor) -> None:
    out: list[int] = []

    def chain(n: int) -> None:
        out.append(n)
        reactor.call_later(0, chain, n + 1)

    reactor.call_later(0, chain, 0)
    reactor.run_once(0)
    reactor.run_once(0)
    reactor.run_once(0)
    # One link per turn: a timer re-arming itself cannot starve I/O.
    assert out == [0, 1, 2]


def test_cancelled_timers_never_fire(reactor: Reactor) -> None:
    out: list[int] = []
    handles = [reactor.call_later(0.001 * (i % 5), out.append, i) for i in range(100)]
    for handle in handles[::2]:
        handle.cancel()
    assert reactor.stats()["timers_pending"] == 50
    done: list[bool] = []
    reactor.call_later(0.02, done.append, True)
    run_until(reactor, lambda: done)
    assert sorted(out) == list(range(1, 100, 2))
    assert reactor.stats()["timers_pending"] == 0


def test_cancel_after_firing_is_harmless(reactor: Reactor) -> None:
    out: list[int] = []
    handle = reactor.call_later(0, out.append, 1)
    run_until(reactor, lambda: out)
    handle.cancel()
    handle.cancel()
    assert reactor.stats()["timers_pending"] == 0
    assert len(reactor._timers) == 0
    # The queue's bookkeeping is not disturbed by it.
    other = reactor.call_later(0, out.append, 2)
    assert reactor.stats()["timers_pending"] == 1
    run_until(reactor, lambda: len(out) == 2)
    other.cancel()
    assert len(reactor._timers) == 0


def test_cancel_between_due_and_run(reactor: Reactor) -> None:
    # Two timers due in the same turn: the first cancels the second.
    out: list[str] = []
    when = reactor.time()
    second: list[TimerHandle] = []

    def cancel_second() -> None:
        second[0].cancel()

    reactor.call_at(when, cancel_second)
    second.append(reactor.call_at(when, out.append, "second"))
    reactor.run_once(0)
    assert out == []
    assert len(reactor._timers) == 0


_MILLION_SCRIPT = """
import sys
from tests.conftest import make_reactor

reactor = make_reactor(sys.argv[1])
call_later = reactor.call_later
noop = lambda: None
max_heap = 0
for _ in range(1000):
    for _ in range(1000):
        call_later(10.0, noop).cancel()
    max_heap = max(max_heap, reactor._timers.heap_size)
print(max_heap, reactor._timers.heap_size, len(reactor._timers), reactor.stats()["timers_pending"])
reactor.close()
"""


def test_a_million_call_later_and_cancel_keep_the_heap_small(backend: str) -> None:
    # In a child process: under the coverage tracer a million pairs would take
    # half a minute per backend, and the point is the full million.
    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": str(root)}
    env.pop("COV_CORE_SOURCE", None)  # no coverage in the child
    result = subprocess.run(
        [sys.executable, "-c", _MILLION_SCRIPT, backend],
        capture_output=True,
        text=True,
        timeout=100,
        env=env,
        cwd=root,
        check=True,
    )
    max_heap, heap_size, live, stats_timers = map(int, result.stdout.split())
    # The heap is compacted once cancelled entries are the majority.
    assert max_heap < 1000
    assert heap_size < 1000
    assert live == 0
    assert stats_timers == 0


def test_cancelling_most_timers_among_live_ones(reactor: Reactor) -> None:
    live = [reactor.call_later(0.001 + i * 1e-6, _noop) for i in range(1000)]
    for _ in range(100_000):
        reactor.call_later(5.0, _noop).cancel()
    timers = reactor._timers
    assert timers.heap_size <= 2 * len(live) + 200
    assert len(timers) == 1000
    # Cancelling a batch of the live ones compacts too; the rest still fire in order.
    out: list[int] = []
    live = [reactor.call_later(0.002 + i * 1e-6, out.append, i) for i in range(1000)]
    for handle in live[:900]:
        handle.cancel()
    run_until(reactor, lambda: len(out) == 100)
    assert out == list(range(900, 1000))


def test_timers_fire_with_a_long_running_loop(reactor: Reactor) -> None:
    out: list[int] = []
    for i in range(5):
        reactor.call_later(0.005 * i, out.append, i)
    reactor.call_later(0.03, reactor.stop)
    reactor.run()
    assert out == [0, 1, 2, 3, 4]


def _noop() -> None:
    pass


# -------------------------------------------------------------------- TimerQueue


def test_timer_queue_basics() -> None:
    q = TimerQueue()
    assert len(q) == 0
    assert q.heap_size == 0
    assert q.next_deadline() is None
    assert q.pop_due(1e9) == []
    out: list[int] = []
    a = q.push(3.0, out.append, (3,))
    b = q.push(1.0, out.append, (1,))
    c = q.push(2.0, out.append, (2,))
    assert len(q) == 3
    assert q.next_deadline() == 1.0
    b.cancel()
    assert len(q) == 2
    assert q.heap_size == 3
    # The cancelled entry at the top is dropped when the deadline is asked for.
    assert q.next_deadline() == 2.0
    assert q.heap_size == 2
    assert q.pop_due(1.5) == []
    assert q.pop_due(2.0) == [c]
    c.cancel()  # fired: does not count
    assert len(q) == 1
    a.cancel()
    assert len(q) == 0
    assert q.pop_due(10.0) == []
    assert q.heap_size == 0
    assert q.next_deadline() is None


def test_timer_queue_ties_and_clear() -> None:
    q = TimerQueue()
    handles = [q.push(1.0, _noop, ()) for _ in range(100)]
    assert q.pop_due(1.0) == handles
    more = [q.push(float(i % 3), _noop, ()) for i in range(10)]
    more[0].cancel()
    q.clear()
    assert len(q) == 0
    assert q.heap_size == 0
    for handle in more:
        assert handle.cancelled()
        handle.cancel()
    assert len(q) == 0


def test_timer_queue_compaction_threshold() -> None:
    q = TimerQueue()
    keep = [q.push(float(i), _noop, ()) for i in range(100)]
    drop = [q.push(1000.0 + i, _noop, ()) for i in range(200)]
    for handle in drop[:100]:
        handle.cancel()
    # 100 of 300 cancelled: not a majority yet, no rebuild.
    assert q.heap_size == 300
    for handle in drop[100:151]:
        handle.cancel()
    # 151 of 300: rebuilt without them.
    assert q.heap_size == 149
    assert len(q) == 149
    assert [h for h in q.pop_due(99.0)] == keep
    # Few cancellations never trigger a rebuild.
    small = TimerQueue()
    hs = [small.push(1.0, _noop, ()) for _ in range(64)]
    for handle in hs:
        handle.cancel()
    assert small.heap_size == 64
    assert len(small) == 0


# ---------------------------------------------------------------- periodic calls


class FakeClock:
    """A clock that moves only when told, with call_at over a TimerQueue.

    ``advance_to`` is a perfect loop: each timer runs with the clock at its
    deadline. ``jump_to`` is a late wake-up: the clock jumps, then every due
    timer runs at that late time. ``cost`` is how long each callback "takes".
    """

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start
        self.queue = TimerQueue()
        self.errors: list[BaseException] = []

    def time(self) -> float:
        return self.now

    def call_at(self, when: float, callback: Callable[..., object], *args: Any) -> TimerHandle:
        return self.queue.push(when, callback, args)

    # The rest of the Clock interface, in terms of call_at.

    def call_later(self, delay: float, callback: Callable[..., object], *args: Any) -> TimerHandle:
        return self.call_at(self.now + delay, callback, *args)

    def call_soon(self, callback: Callable[..., object], *args: Any) -> TimerHandle:
        return self.call_at(self.now, callback, *args)

    def call_every(
        self, interval: float, callback: Callable[..., object], *args: Any, now: bool = False
    ) -> PeriodicCall:
        return PeriodicCall(self, interval, callback, args, now=now)

    def _run(self, handles: list[TimerHandle]) -> None:
        for handle in handles:
            if not handle.cancelled():
                try:
                    handle._run()
                except Exception as exc:
                    self.errors.append(exc)

    def advance_to(self, target: float) -> None:
        while True:
            deadline = self.queue.next_deadline()
            if deadline is None or deadline > target:
                break
            self.now = max(self.now, deadline)
            self._run(self.queue.pop_due(self.now))
        self.now = max(self.now, target)

    def jump_to(self, target: float) -> None:
        self.now = target
        self._run(self.queue.pop_due(self.now))


def test_periodic_does_not_drift_with_slow_callbacks() -> None:
    clock = FakeClock()
    calls: list[float] = []

    def tick() -> None:
        calls.append(clock.time())
        clock.now += 0.03  # the callback takes 30 ms of a 100 ms interval

    p = PeriodicCall(clock, 0.1, tick)
    clock.advance_to(1000.0 + 1000 * 0.1 + 0.05)
    assert len(calls) == 1000
    assert p.calls == 1000
    assert p.missed == 0
    # Each call is at start + k * interval: the 30 ms never accumulate.
    for k, t in enumerate(calls, start=1):
        assert t == pytest.approx(1000.0 + k * 0.1, abs=1e-9)
    assert calls[-1] == pytest.approx(1100.0, abs=1e-9)


def test_periodic_late_wakeups_do_not_push_later_calls_back() -> None:
    clock = FakeClock(start=0.0)
    calls: list[float] = []
    p = PeriodicCall(clock, 1.0, lambda: calls.append(clock.time()))
    clock.jump_to(1.4)  # woken 0.4 s late
    clock.jump_to(2.0)  # the next is still due at 2.0, not 2.4
    clock.jump_to(3.9)
    clock.advance_to(4.0)
    assert calls == [1.4, 2.0, 3.9, 4.0]
    assert p.missed == 0


def test_periodic_skips_missed_ticks() -> None:
    clock = FakeClock(start=0.0)
    calls: list[float] = []
    p = PeriodicCall(clock, 1.0, lambda: calls.append(clock.time()))
    clock.jump_to(4.5)  # ticks 1..4 were due; one call, three missed
    assert calls == [4.5]
    assert p.missed == 3
    assert clock.queue.next_deadline() == 5.0  # back on the original grid
    # Exactly on a tick: this call is tick 5, run late; 6 and 7 count as
    # missed, so that calls + missed is always the number of ticks so far.
    clock.jump_to(7.0)
    assert calls == [4.5, 7.0]
    assert p.missed == 5
    assert clock.queue.next_deadline() == 8.0
    clock.advance_to(10.0)
    assert calls == [4.5, 7.0, 8.0, 9.0, 10.0]
    assert p.missed == 5
    assert p.calls + p.missed == 10


def test_periodic_is_not_fooled_by_an_early_wakeup() -> None:
    # The reactor runs a timer due within its clock's resolution: the callback
    # may see a time a hair before the deadline. That is not a missed tick,
    # and the next deadline is the following tick, not the same one.
    clock = FakeClock(start=0.0)
    p = PeriodicCall(clock, 1.0, _noop)
    clock.now = 1.0 - 1e-9
    clock._run(clock.queue.pop_due(1.0))
    assert p.calls == 1
    assert p.missed == 0
    assert clock.queue.next_deadline() == 2.0


def test_periodic_float_intervals_do_not_accumulate_error() -> None:
    clock = FakeClock(start=12345.678)
    p = PeriodicCall(clock, 0.1, _noop)
    clock.advance_to(12345.678 + 10_000 * 0.1 + 0.01)
    assert p.calls == 10_000
    assert p.missed == 0
    assert clock.queue.next_deadline() == pytest.approx(12345.678 + 10_001 * 0.1, abs=1e-9)


def test_periodic_now_runs_at_once() -> None:
    clock = FakeClock(start=0.0)
    calls: list[float] = []
    PeriodicCall(clock, 2.0, lambda: calls.append(clock.time()), now=True)
    clock.advance_to(0.0)
    assert calls == [0.0]
    clock.advance_to(4.0)
    assert calls == [0.0, 2.0, 4.0]


def test_periodic_args_cancel_and_stop() -> None:
    clock = FakeClock(start=0.0)
    out: list[tuple[int, str]] = []
    p = PeriodicCall(clock, 1.0, lambda a, b: out.append((a, b)), (1, "x"))
    assert p.running
    clock.advance_to(2.0)
    assert out == [(1, "x"), (1, "x")]
    p.cancel()
    assert not p.running
    p.cancel()
    p.stop()
    clock.advance_to(10.0)
    assert len(out) == 2
    assert len(clock.queue) == 0


def test_periodic_cancel_from_inside_the_callback() -> None:
    clock = FakeClock(start=0.0)
    holder: list[PeriodicCall] = []

    def tick() -> None:
        if holder[0].calls == 3:
            holder[0].cancel()

    holder.append(PeriodicCall(clock, 1.0, tick))
    clock.advance_to(100.0)
    assert holder[0].calls == 3
    assert not holder[0].running
    assert len(clock.queue) == 0


def test_periodic_exception_does_not_stop_the_series() -> None:
    clock = FakeClock(start=0.0)

    def tick() -> None:
        raise ValueError("tick failed")

    p = PeriodicCall(clock, 1.0, tick)
    clock.advance_to(5.0)
    assert p.calls == 5
    assert len(clock.errors) == 5
    assert p.running


@pytest.mark.parametrize("interval", [0, -1, 0.0, -0.001, math.nan, math.inf, -math.inf])
def test_periodic_bad_interval(interval: float) -> None:
    clock = FakeClock()
    with pytest.raises(ValueError, match="interval must be a positive"):
        PeriodicCall(clock, interval, _noop)
    assert len(clock.queue) == 0


@pytest.mark.parametrize("interval", [0, -1, math.nan, math.inf])
def test_call_every_bad_interval(reactor: Reactor, interval: float) -> None:
    with pytest.raises(ValueError, match="interval"):
        reactor.call_every(interval, _noop)
    assert reactor.stats()["timers_pending"] == 0


def test_call_every_on_a_real_reactor(reactor: Reactor) -> None:
    times: list[float] = []
    p = reactor.call_every(0.01, lambda: times.append(reactor.time()))
    assert isinstance(p, PeriodicCall)
    run_until(reactor, lambda: len(times) >= 5)
    p.cancel()
    assert p.calls == len(times)
    # No call before its tick: the last one ran at or after tick calls + missed.
    assert times == sorted(times)
    assert times[-1] >= p._start + (p.calls + p.missed) * 0.01 - 1e-6
    count = len(times)
    done: list[bool] = []
    reactor.call_later(0.05, done.append, True)
    run_until(reactor, lambda: done)
    assert len(times) == count
    assert reactor.stats()["timers_pending"] == 0


def test_call_every_now_on_a_real_reactor(reactor: Reactor) -> None:
    out: list[str] = []
    p = reactor.call_every(3600, out.append, "tick", now=True)
    reactor.run_once(0)
    assert out == ["tick"]
    p.cancel()


def test_call_every_exception_is_logged_and_series_goes_on(
    reactor: Reactor, caplog: pytest.LogCaptureFixture
) -> None:
    count: list[int] = []

    def tick() -> None:
        count.append(1)
        raise RuntimeError("periodic failure")

    with caplog.at_level(logging.ERROR, logger="reactor"):
        p = reactor.call_every(0.005, tick)
        run_until(reactor, lambda: len(count) >= 3)
        p.cancel()
    records = [r for r in caplog.records if r.name == "reactor"]
    assert len(records) == len(count)
    assert all(r.exc_info and r.exc_info[0] is RuntimeError for r in records)
