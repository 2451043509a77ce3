"""Callback handles, the timer heap and periodic calls.

The heap orders timers by deadline, then by a sequence number, so that equal
deadlines run in the order they were scheduled. Cancelling only marks a handle
(O(1)); the entry stays in the heap until it reaches the top or until
cancelled entries are the majority, when the heap is rebuilt without them, so
scheduling and cancelling a million timers does not leave a million entries
behind.

The heap has one shape per build, chosen by one constant (``_OWN_SIFT``),
because what is fast in one is slow in the other:

* Interpreted, it holds ``(when, seq, handle)`` tuples kept by :mod:`heapq`:
  tuples compare in C, and heapq's C code is faster than any sift written in
  Python.
* Compiled, it holds the :class:`TimerHandle` objects themselves, sifted by
  :func:`_sift_up` and :func:`_sift_down` below. mypyc makes a handle's
  ``when`` and ``_seq`` C fields, so a comparison is two C doubles read from
  the objects: no tuple to allocate per timer, no float to unbox per step.
  (heapq would compare them through Python's generic comparison, the slow
  part of firing a timer.)

Both pop the same timers in the same order; :meth:`TimerQueue.handles` is
the one way to see what the heap holds.
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
#: A heap of handles sifted by this module (compiled), or of tuples kept by
#: heapq (interpreted): see the module's docstring.
_OWN_SIFT: Final = COMPILED


def _sift_up(heap: list[TimerHandle], pos: int) -> None:
    """Move ``heap[pos]`` up until its parent is earlier: after an append."""
    handle = heap[pos]
    when = handle.when
    while pos > 0:
        parent_pos = (pos - 1) >> 1
        parent = heap[parent_pos]
        # (when, seq) order: an earlier deadline first, then the earlier push.
        if when < parent.when or (when == parent.when and handle._seq < parent._seq):
            heap[pos] = parent
            pos = parent_pos
        else:
            break
    heap[pos] = handle


def _sift_down(heap: list[TimerHandle], pos: int) -> None:
    """Move ``heap[pos]`` down until both children are later: after a pop.

    (heapq goes down to a leaf first and back up, which saves comparisons of
    whole tuples; here a comparison is two C doubles, and stopping early was
    measured to cost fewer instructions.)
    """
    size = len(heap)
    handle = heap[pos]
    when = handle.when
    child = 2 * pos + 1
    while child < size:
        earliest = heap[child]
        right = child + 1
        if right < size:
            other = heap[right]
            if other.when < earliest.when or (
                other.when == earliest.when and other._seq < earliest._seq
            ):
                child = right
                earliest = other
        if earliest.when < when or (earliest.when == when and earliest._seq < handle._seq):
            heap[pos] = earliest
            pos = child
            child = 2 * pos + 1
        else:
            break
    heap[pos] = handle


def _heap_pop(heap: list[TimerHandle]) -> TimerHandle:
    """Remove and return the earliest handle (heapq.heappop's contract)."""
    last = heap.pop()
    if not heap:
        return last
    first = heap[0]
    heap[0] = last
    _sift_down(heap, 0)
    return first


def _heapify(heap: list[TimerHandle]) -> None:
    """Make ``heap`` a heap in place (heapq.heapify's contract), in O(n)."""
    for pos in range(len(heap) // 2 - 1, -1, -1):
        _sift_down(heap, pos)


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

    __slots__ = ("_queue", "_seq", "when")

    #: The tie-breaker between equal deadlines, set by the compiled build's
    #: queue when it pushes the handle (the interpreted one keeps it in a tuple).
    _seq: int

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
        # (when, seq, handle) tuples interpreted, the handles themselves
        # compiled (the module's docstring says why): read it through
        # handles(), or as a list of handles in an ``if _OWN_SIFT`` branch.
        self._heap: list[Any] = []
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

    def handles(self) -> list[TimerHandle]:
        """The handles in the heap, cancelled ones included, in no set order (a copy:
        cancelling them while iterating is safe)."""
        if _OWN_SIFT:
            return list(self._heap)
        return [entry[2] for entry in self._heap]

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
            handle._seq = self.scheduled
            own: list[TimerHandle] = self._heap
            own.append(handle)
            _sift_up(own, len(own) - 1)
        else:
            heappush(self._heap, (when, self.scheduled, handle))
        return handle

    def next_deadline(self) -> float | None:
        """The earliest live deadline, dropping cancelled entries from the top."""
        heap = self._heap
        while heap:
            if _OWN_SIFT:
                top: TimerHandle = heap[0]
                if not top._cancelled:
                    return top.when
                _heap_pop(heap)
            else:
                entry = heap[0]
                if not entry[2]._cancelled:
                    return cast(float, entry[0])
                heappop(heap)
            self._cancelled -= 1
        return None

    def pop_due(self, now: float) -> list[TimerHandle]:
        """Remove and return the live timers due at or before ``now``, in order."""
        heap = self._heap
        due = []
        while heap:
            if _OWN_SIFT:
                first: TimerHandle = heap[0]
                if first.when > now:
                    break
                handle = _heap_pop(heap)
            else:
                if heap[0][0] > now:
                    break
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
            if _OWN_SIFT:
                handles = [handle for handle in self.handles() if not handle._cancelled]
                _heapify(handles)
                self._heap = handles
            else:
                entries = [entry for entry in self._heap if not entry[2]._cancelled]
                heapify(entries)
                self._heap = entries
            self._cancelled = 0

    def clear(self) -> None:
        for handle in self.handles():
            handle._queue = None
            handle._cancelled = True
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
