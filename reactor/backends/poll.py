"""POSIX poll(): no fd limit, O(registered) per call."""

from __future__ import annotations

import select

from reactor.backends.base import MAX_TIMEOUT

__all__ = ["PollPoller"]


class PollPoller:
    """Readiness through ``select.poll``; its bits equal the reactor's."""

    name = "poll"

    def __init__(self) -> None:
        self._poll = select.poll()

    def register(self, fd: int, events: int) -> None:
        self._poll.register(fd, events)

    def modify(self, fd: int, events: int) -> None:
        self._poll.modify(fd, events)

    def unregister(self, fd: int) -> None:
        try:
            self._poll.unregister(fd)
        except KeyError:
            pass

    def poll(self, timeout: float | None) -> list[tuple[int, int]]:
        if timeout is None:
            ms = -1
        elif timeout <= 0.0:
            ms = 0  # a negative ms would mean "forever"
        else:
            if timeout > MAX_TIMEOUT:
                timeout = MAX_TIMEOUT  # poll() takes an int of milliseconds
            # Round up: waking a millisecond early would make the reactor
            # spin once more just to wait the remainder.
            ms = int(timeout * 1000.0)
            if ms < timeout * 1000.0:
                ms += 1
        try:
            return self._poll.poll(ms)
        except InterruptedError:
            return []

    def close(self) -> None:
        self._poll = select.poll()
