"""Linux epoll: O(ready) polling, level-triggered.

Level-triggered keeps the reactor simple and fair: a transport that reads one
chunk per event is called again next turn if more is waiting, so one busy
connection cannot starve the others.
"""

from __future__ import annotations

import select

from reactor.backends.base import MAX_TIMEOUT

__all__ = ["EpollPoller"]


class EpollPoller:
    """Readiness through ``select.epoll``; the kernel's bits are passed through."""

    name = "epoll"

    def __init__(self) -> None:
        self._epoll = select.epoll()
        # Hand-sized so each poll() can return many fds without a resize.
        self._max_events = 1024

    def register(self, fd: int, events: int) -> None:
        self._epoll.register(fd, events)

    def modify(self, fd: int, events: int) -> None:
        self._epoll.modify(fd, events)

    def unregister(self, fd: int) -> None:
        try:
            self._epoll.unregister(fd)
        except (OSError, ValueError):
            # Already closed or never registered: the kernel dropped it for us.
            pass

    def poll(self, timeout: float | None) -> list[tuple[int, int]]:
        # epoll.poll treats -1 (and any negative timeout) as "forever"; Python
        # rounds a float timeout up to whole milliseconds, so a timer is never
        # woken early. EINTR is retried inside CPython (PEP 475), but only
        # until a signal handler raises; we also never let it out.
        if timeout is None:
            timeout = -1.0
        elif timeout > MAX_TIMEOUT:
            timeout = MAX_TIMEOUT  # epoll_wait takes an int of milliseconds
        elif timeout < 0.0:
            timeout = 0.0
        try:
            return self._epoll.poll(timeout, self._max_events)
        except InterruptedError:
            return []

    def close(self) -> None:
        self._epoll.close()

    def fileno(self) -> int:
        return self._epoll.fileno()
