"""Callback handles, the timer heap and periodic calls.

The heap holds ``(when, seq, handle)`` tuples: tuples compare in C, and the
sequence number makes equal deadlines run in the order they were scheduled.
Cancelling only marks a handle (O(1)); the entry stays in the heap until it
reaches the top or until cancelled entries are the majority, when the heap is
rebuilt without them, so scheduling and cancelling a million timers does not
leave a million entries behind.

Interpreted, :mod:`heapq` keeps the heap: its C code is faster than any sift
written in Python. Compiled, it is the slow part of firing a timer, because
heapq compares whole tuples through Python's generic comparison (an equality
test and an order test per element, every step down the heap); so the
compiled build sifts with :func:`_sift_up` and :func:`_sift_down` below, which
mypyc turns into C that compares the deadlines as C doubles. Both keep the
same heap of the same tuples in the same order.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from heapq import heapify, heappop, heappush
from typing import Any, Final, Protocol, cast

from reactor._build import COMPILED

__all__ = ["Clock", "Handle", "PeriodicCall", "TimerHandle", "TimerQueue"]

_INF: Final = math.inf
#: Below this size the heap is never compacted: rebuilding is not worth it.
_COMPACT_MIN: Final = 64
#: Sift with this module's own functions (compiled) or with heapq (interpreted).
_OWN_SIFT: Final = COMPILED

#: A heap entry as the sift functions see it: ``(when, seq, handle)``, read
#: without unpacking the tuple (mypyc would build a new one to store it back).
_Entry = tuple[Any, ...]


def _sift_up(heap: list[_Entry], pos: int) -> None:
    """Move ``heap[pos]`` up until its parent is earlier: after an append."""
    entry = heap[pos]
    when: float = entry[0]
    while pos > 0:
        parent_pos = (pos - 1) >> 1
        parent = heap[parent_pos]
        parent_when: float = parent[0]
        # (when, seq) order: an earlier deadline first, then the earlier push.
        if when < parent_when or (when == parent_when and _seq(entry) < _seq(parent)):
            heap[pos] = parent
            pos = parent_pos
        else:
            break
    heap[pos] = entry


def _sift_down(heap: list[_Entry], pos: int) -> None:
    """Move ``heap[pos]`` down until both children are later: after a pop.

    (heapq goes down to a leaf first and back up, which saves comparisons of
    whole tuples; here a comparison is two C doubles, and stopping early was
    measured to cost fewer instructions.)
    """
    size = len(heap)
    entry = heap[pos]
    when: float = entry[0]
    child = 2 * pos + 1
    while child < size:
        earliest = heap[child]
        earliest_when: float = earliest[0]
        right = child + 1
        if right < size:
            other = heap[right]
            other_when: float = other[0]
            if other_when < earliest_when or (
                other_when == earliest_when and _seq(other) < _seq(earliest)
            ):
                child = right
                earliest = other
                earliest_when = other_when
        if earliest_when < when or (earliest_when == when and _seq(earliest) < _seq(entry)):
            heap[pos] = earliest
            pos = child
            child = 2 * pos + 1
        else:
            break
    heap[pos] = entry


def _seq(entry: _Entry) -> int:
    """An entry's sequence number: the tie-breaker between equal deadlines."""
    seq: int = entry[1]
    return seq


def _heap_pop(heap: list[_Entry]) -> _Entry:
    """Remove and return the earliest entry (heapq.heappop's contract)."""
    last = heap.pop()
    if not heap:
        return last
    first = heap[0]
    heap[0] = last
    _sift_down(heap, 0)
    return first


def _cancelled(*args: object) -> None:
    """What a cancelled handle holds instead of its callback (never called)."""


class Handle:
    """A scheduled callback; ``cancel()`` stops it from running."""

    __slots__ = ("_args", "_callback", "_cancelled")

    def __init__(self, callback: Callable[..., object], args: tuple[Any, ...]) -> None:
        self._callback = callback
        self._args = args
        self._cancelled = False

    def cancel(self) -> None:
        """Do not run the callback. Safe to call more than once, or after it ran."""
        self._cancelled = True
        self._drop_references()

    def _drop_references(self) -> None:
        # A cancelled timer may wait in the heap until compaction or its due
        # time: it must not keep its callback's object (a closed connection)
        # alive meanwhile. asyncio's Handle.cancel does the same.
        self._callback = _cancelled
        self._args = ()

    def cancelled(self) -> bool:
        return self._cancelled

    def _run(self) -> None:
        self._callback(*self._args)

    def __repr__(self) -> str:
        state = " cancelled" if self._cancelled else ""
        name = getattr(self._callback, "__qualname__", repr(self._callback))
        return f"<{type(self).__name__} {name}{state}>"


class TimerHandle(Handle):
    """A callback due at ``when`` (on the owning clock's time scale)."""

    __slots__ = ("_queue", "when")

    def __init__(
        self,
        when: float,
        callback: Callable[..., object],
        args: tuple[Any, ...],
        queue: TimerQueue | None,
    ) -> None:
        # Handle's fields set here rather than through super().__init__(),
        # which costs more than the rest of scheduling a timer, interpreted.
        self._callback = callback
        self._args = args
        self._cancelled = False
        self.when = when
        self._queue = queue

    def cancel(self) -> None:
        if not self._cancelled:
            self._cancelled = True
            self._drop_references()
            queue = self._queue
            if queue is not None:
                self._queue = None
                queue._cancelled_one()


class TimerQueue:
    """A min-heap of timers with lazy cancellation and compaction."""

    __slots__ = ("_cancelled", "_heap", "cancelled_total", "fired", "scheduled")

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, TimerHandle]] = []
        self._cancelled = 0  # cancelled entries still in the heap
        #: Counters for stats(): timers pushed (also the tie-breaking sequence
        #: number), fired, and cancelled before firing.
        self.scheduled = 0
        self.fired = 0
        self.cancelled_total = 0

    def __len__(self) -> int:
        """The number of live (not cancelled, not yet fired) timers."""
        return len(self._heap) - self._cancelled

    @property
    def heap_size(self) -> int:
        """Entries in the heap, cancelled ones included (for tests and stats)."""
        return len(self._heap)

    def push(
        self, when: float, callback: Callable[..., object], args: tuple[Any, ...]
    ) -> TimerHandle:
        if not -_INF < when < _INF:  # NaN (compares false) or infinite
            raise ValueError(
                f"a timer's time must be a finite number, not {when!r}: call_later()'s "
                "delay or call_at()'s time was NaN or infinite (a NaN would break the "
                "heap's order, an infinite timer never fires: schedule none instead)"
            )
        handle = TimerHandle(when, callback, args, self)
        self.scheduled += 1
        if _OWN_SIFT:
            own = cast("list[_Entry]", self._heap)
            own.append((when, self.scheduled, handle))
            _sift_up(own, len(own) - 1)
        else:
            heappush(self._heap, (when, self.scheduled, handle))
        return handle

    def next_deadline(self) -> float | None:
        """The earliest live deadline, dropping cancelled entries from the top."""
        heap = self._heap
        while heap:
            entry = heap[0]
            if not entry[2]._cancelled:
                return entry[0]
            if _OWN_SIFT:
                _heap_pop(cast("list[_Entry]", heap))
            else:
                heappop(heap)
            self._cancelled -= 1
        return None

    def pop_due(self, now: float) -> list[TimerHandle]:
        """Remove and return the live timers due at or before ``now``, in order."""
        heap = self._heap
        due = []
        while heap and heap[0][0] <= now:
            if _OWN_SIFT:
                handle: TimerHandle = _heap_pop(cast("list[_Entry]", heap))[2]
            else:
                handle = heappop(heap)[2]
            if handle._cancelled:
                self._cancelled -= 1
            else:
                handle._queue = None  # fired: a later cancel() must not count it
                due.append(handle)
        self.fired += len(due)
        return due

    def _cancelled_one(self) -> None:
        self._cancelled += 1
        self.cancelled_total += 1
        if self._cancelled > _COMPACT_MIN and self._cancelled * 2 > len(self._heap):
            self._heap = [entry for entry in self._heap if not entry[2]._cancelled]
            heapify(self._heap)
            self._cancelled = 0

    def clear(self) -> None:
        for entry in self._heap:
            entry[2]._queue = None
            entry[2]._cancelled = True
        self._heap.clear()
        self._cancelled = 0


class Clock(Protocol):
    """The timer API: the reactor's, or :class:`protocols.testing.Clock`'s in tests.

    Everything that schedules work by time (periodic calls, idle timeouts,
    heartbeats, the apps' timers) is typed against this, so a test can drive
    it with fake time.
    """

    def time(self) -> float: ...
    def call_soon(self, callback: Callable[..., object], *args: Any) -> Handle: ...
    def call_later(
        self, delay: float, callback: Callable[..., object], *args: Any
    ) -> TimerHandle: ...
    def call_at(self, when: float, callback: Callable[..., object], *args: Any) -> TimerHandle: ...
    def call_every(
        self, interval: float, callback: Callable[..., object], *args: Any, now: bool = False
    ) -> PeriodicCall: ...


class PeriodicCall:
    """Calls ``callback(*args)`` every ``interval`` seconds without drifting.

    Deadlines are ``start + k * interval``, so time spent in the callback or a
    late wake-up does not push later calls back. If the loop falls behind by
    whole intervals, the missed calls are skipped (counted in ``missed``), not
    run in a burst. An exception in the callback is logged by the reactor and
    the calls go on; ``cancel()`` stops them.
    """

    def __init__(
        self,
        clock: Clock,
        interval: float,
        callback: Callable[..., object],
        args: tuple[Any, ...] = (),
        *,
        now: bool = False,
    ) -> None:
        if not 0 < interval < math.inf:
            raise ValueError(
                f"interval must be a positive, finite number of seconds, got {interval!r}"
            )
        self.interval = interval
        self.missed = 0
        self.calls = 0
        self._clock = clock
        self._callback = callback
        self._args = args
        self._start = clock.time()
        self._tick = 0 if now else 1
        self._handle: TimerHandle | None = clock.call_at(
            self._start + self._tick * interval, self._fire
        )

    @property
    def running(self) -> bool:
        return self._handle is not None

    def cancel(self) -> None:
        """Stop calling. Safe from inside the callback."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def stop(self) -> None:
        """The same as :meth:`cancel`. (A method, not ``stop = cancel``: mypyc
        compiles no class-level alias of a method.)"""
        self.cancel()

    def _fire(self) -> None:
        now = self._clock.time()
        # The next tick strictly after now; ticks in between were missed.
        next_tick = max(self._tick + 1, math.floor((now - self._start) / self.interval) + 1)
        self.missed += next_tick - self._tick - 1
        self._tick = next_tick
        # Schedule first, so an exception in the callback does not end the series.
        self._handle = self._clock.call_at(self._start + next_tick * self.interval, self._fire)
        self.calls += 1
        self._callback(*self._args)
