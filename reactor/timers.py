"""Callback handles, the timer heap and periodic calls.

The heap holds ``(when, seq, handle)`` tuples: tuples compare in C, and the
sequence number makes equal deadlines run in the order they were scheduled.
Cancelling only marks a handle (O(1)); the entry stays in the heap until it
reaches the top or until cancelled entries are the majority, when the heap is
rebuilt without them, so scheduling and cancelling a million timers does not
leave a million entries behind.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable
from typing import Any, Final, Protocol

__all__ = ["Clock", "Handle", "PeriodicCall", "TimerHandle", "TimerQueue"]

_INF: Final = math.inf
#: Below this size the heap is never compacted: rebuilding is not worth it.
_COMPACT_MIN: Final = 64


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
        super().__init__(callback, args)
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
        heapq.heappush(self._heap, (when, self.scheduled, handle))
        return handle

    def next_deadline(self) -> float | None:
        """The earliest live deadline, dropping cancelled entries from the top."""
        heap = self._heap
        while heap:
            entry = heap[0]
            if not entry[2]._cancelled:
                return entry[0]
            heapq.heappop(heap)
            self._cancelled -= 1
        return None

    def pop_due(self, now: float) -> list[TimerHandle]:
        """Remove and return the live timers due at or before ``now``, in order."""
        heap = self._heap
        due = []
        while heap and heap[0][0] <= now:
            handle = heapq.heappop(heap)[2]
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
            heapq.heapify(self._heap)
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
