"""The timer heap's own sift functions, which the compiled build uses instead of heapq.

Interpreted, :class:`~reactor.timers.TimerQueue` keeps a heap of tuples with
heapq; compiled, a heap of handles with ``_sift_up``/``_heap_pop``/``_heapify``
(``reactor/timers.py`` says why). These tests run the functions directly, so
both builds check them, whichever one their TimerQueue uses, and check that
the queue orders timers the same either way: by deadline, then in the order
they were scheduled.
"""

from __future__ import annotations

import heapq
import random

import pytest

from reactor.timers import TimerHandle, TimerQueue, _heap_pop, _heapify, _sift_up

pytestmark = pytest.mark.timeout(60)


def _noop() -> None:
    pass


def _handle(when: float, seq: int) -> TimerHandle:
    handle = TimerHandle(when, _noop, (), None)
    handle._seq = seq
    return handle


@pytest.mark.parametrize("deadlines", [5, 50, 100_000])
def test_own_sift_pops_in_when_then_seq_order(deadlines: int) -> None:
    # Few distinct deadlines: many ties, which the sequence number must break.
    rng = random.Random(deadlines)
    ours: list[TimerHandle] = []
    theirs: list[tuple[float, int, int]] = []
    popped = 0
    for seq in range(20_000):
        if rng.random() < 0.6 or not ours:
            when = float(rng.randrange(deadlines))
            ours.append(_handle(when, seq))
            _sift_up(ours, len(ours) - 1)
            heapq.heappush(theirs, (when, seq, seq))
        else:
            handle = _heap_pop(ours)
            assert (handle.when, handle._seq) == heapq.heappop(theirs)[:2]
            popped += 1
    rest = [_heap_pop(ours) for _ in range(len(ours))]
    assert [(h.when, h._seq) for h in rest] == [entry[:2] for entry in sorted(theirs)]
    assert ours == []
    assert popped > 5_000


def test_heapify_makes_a_heap_that_pops_in_order() -> None:
    rng = random.Random(3)
    handles = [_handle(float(rng.randrange(40)), seq) for seq in range(3_000)]
    heap = list(handles)
    _heapify(heap)
    popped = [_heap_pop(heap) for _ in range(len(handles))]
    assert popped == sorted(handles, key=lambda h: (h.when, h._seq))


def test_heap_pop_of_one_entry_empties_the_heap() -> None:
    only = _handle(1.0, 1)
    heap = [only]
    assert _heap_pop(heap) is only
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
    assert q.heap_size < 5_000  # compacted
    assert len(q) == 2_000
    expected = [handle for when, seq, handle in sorted(scheduled) if seq not in cancelled]
    fired = q.pop_due(49.0) + q.pop_due(100.0)
    assert fired == expected
    assert len(q) == 0
    assert q.next_deadline() is None


def test_handles_lists_what_the_heap_holds_in_either_build() -> None:
    # reactor.aio reads them to drop its own timers from a shared reactor.
    q = TimerQueue()
    handles = [q.push(float(3 - i), _noop, ()) for i in range(3)]
    handles[0].cancel()
    assert {id(h) for h in q.handles()} == {id(h) for h in handles}
    assert q.next_deadline() == 1.0
    q.clear()
    assert q.handles() == [] and all(h.cancelled() for h in handles)
