"""The timer heap's own sift functions, which the compiled build uses instead of heapq.

Interpreted, :class:`~reactor.timers.TimerQueue` keeps its heap with heapq;
compiled, with ``_sift_up``/``_heap_pop`` (``reactor/timers.py`` says why).
These tests run the functions directly, so both builds check them, whichever
one their TimerQueue uses, and check that the queue orders timers the same
either way: by deadline, then in the order they were scheduled.
"""

from __future__ import annotations

import heapq
import random
from typing import Any

import pytest

from reactor.timers import TimerHandle, TimerQueue, _heap_pop, _sift_up

pytestmark = pytest.mark.timeout(60)


def _noop() -> None:
    pass


@pytest.mark.parametrize("deadlines", [5, 50, 100_000])
def test_own_sift_pops_in_when_then_seq_order(deadlines: int) -> None:
    # Few distinct deadlines: many ties, which the sequence number must break.
    rng = random.Random(deadlines)
    ours: list[tuple[Any, ...]] = []
    theirs: list[tuple[float, int, str]] = []
    popped: list[tuple[Any, ...]] = []
    for seq in range(20_000):
        if rng.random() < 0.6 or not ours:
            entry = (float(rng.randrange(deadlines)), seq, f"timer {seq}")
            ours.append(entry)
            _sift_up(ours, len(ours) - 1)
            heapq.heappush(theirs, entry)
        else:
            popped.append(_heap_pop(ours))
            assert popped[-1] == heapq.heappop(theirs)
    rest = [_heap_pop(ours) for _ in range(len(ours))]
    assert rest == sorted(theirs)
    assert ours == []
    assert len(popped) > 5_000


def test_heap_pop_of_one_entry_empties_the_heap() -> None:
    heap: list[tuple[Any, ...]] = [(1.0, 1, "only")]
    assert _heap_pop(heap) == (1.0, 1, "only")
    assert heap == []


def test_queue_fires_by_deadline_then_scheduling_order_with_cancellations() -> None:
    rng = random.Random(7)
    q = TimerQueue()
    scheduled: list[tuple[float, int, TimerHandle]] = []
    for seq in range(5_000):
        when = float(rng.randrange(100))
        scheduled.append((when, seq, q.push(when, _noop, ())))
    cancelled = set(rng.sample(range(5_000), 3_000))  # enough to compact the heap
    for seq in sorted(cancelled):
        scheduled[seq][2].cancel()
    assert len(q) == 2_000
    expected = [handle for when, seq, handle in sorted(scheduled) if seq not in cancelled]
    fired = q.pop_due(49.0) + q.pop_due(100.0)
    assert fired == expected
    assert len(q) == 0
    assert q.next_deadline() is None


def test_heap_entries_stay_when_seq_handle_tuples() -> None:
    # reactor.aio reads the entries (entry[2] is the handle) to drop its own
    # timers from a shared reactor: both builds keep that shape.
    q = TimerQueue()
    handles = [q.push(float(3 - i), _noop, ()) for i in range(3)]
    assert {id(entry[2]) for entry in q._heap} == {id(handle) for handle in handles}
    assert all(isinstance(entry, tuple) and len(entry) == 3 for entry in q._heap)
    assert q._heap[0][2] is handles[2]
