"""BSD/macOS kqueue: one kernel filter per direction.

kqueue reports reading and writing as separate events (filters), and marks
a peer's close with EV_EOF *together with* any unread data. The adapter only
translates: EV_EOF does not end the connection here; the reader drains the
socket and sees the end as ``recv() == b""``.

The module is a parameter so the tests can run this adapter on Linux
against an emulation of ``select.kqueue``.
"""

from __future__ import annotations

import errno
import select
from types import ModuleType
from typing import Any

from reactor.backends.base import ERROR, MAX_TIMEOUT, READ, WRITE

__all__ = ["KqueuePoller"]


class KqueuePoller:
    """Readiness through ``select.kqueue`` (or a stand-in module with its API)."""

    name = "kqueue"

    def __init__(self, module: ModuleType | Any = select) -> None:
        self._m = module
        self._kq = module.kqueue()
        self._events: dict[int, int] = {}

    def register(self, fd: int, events: int) -> None:
        if fd in self._events:
            raise FileExistsError(f"fd {fd} is already registered")
        self._events[fd] = 0
        try:
            self._apply(fd, 0, events)
        except BaseException:
            del self._events[fd]
            raise
        self._events[fd] = events

    def modify(self, fd: int, events: int) -> None:
        old = self._events.get(fd)
        if old is None:
            # As epoll and poll do (the reactor then registers the fd).
            raise FileNotFoundError(errno.ENOENT, f"fd {fd} is not registered")
        self._apply(fd, old, events)
        self._events[fd] = events

    def unregister(self, fd: int) -> None:
        old = self._events.pop(fd, None)
        if old is None:
            return
        try:
            self._apply(fd, old, 0)
        except OSError:
            # The fd was closed first; kqueue already forgot its filters.
            pass

    def _apply(self, fd: int, old: int, new: int) -> None:
        m = self._m
        # Every wanted filter is (re-)added, not only the new ones: re-adding is
        # harmless (it updates the same knote), and if the fd was closed without
        # being unregistered and its number reused, the kernel has forgotten
        # the old filters, which the reactor's recovery (register, then
        # FileExistsError, then modify) relies on getting back. Adds go first.
        changes = []
        deletes = 0
        if new & READ:
            changes.append(m.kevent(fd, m.KQ_FILTER_READ, m.KQ_EV_ADD))
        if new & WRITE:
            changes.append(m.kevent(fd, m.KQ_FILTER_WRITE, m.KQ_EV_ADD))
        if old & READ and not new & READ:
            changes.append(m.kevent(fd, m.KQ_FILTER_READ, m.KQ_EV_DELETE))
            deletes += 1
        if old & WRITE and not new & WRITE:
            changes.append(m.kevent(fd, m.KQ_FILTER_WRITE, m.KQ_EV_DELETE))
            deletes += 1
        if not changes:
            return
        try:
            self._kq.control(changes, 0, 0)
        except OSError:
            if not deletes:
                raise
            # The kernel stops at the first change that fails. Apply them one
            # by one: deleting a filter that is already gone (ENOENT: the fd
            # was closed and its number reused) leaves what was wanted.
            for change in changes:
                try:
                    self._kq.control([change], 0, 0)
                except FileNotFoundError:
                    if not change.flags & m.KQ_EV_DELETE:
                        raise

    def poll(self, timeout: float | None) -> list[tuple[int, int]]:
        m = self._m
        # Each fd can produce two events (read and write filters).
        max_events = 2 * len(self._events) or 1
        if timeout is not None:
            if timeout > MAX_TIMEOUT:
                timeout = MAX_TIMEOUT
            elif timeout < 0.0:
                timeout = 0.0  # kqueue.control() raises ValueError
        try:
            kevents = self._kq.control(None, max_events, timeout)
        except InterruptedError:
            return []
        ready: dict[int, int] = {}
        for kev in kevents:
            bits = READ if kev.filter == m.KQ_FILTER_READ else WRITE
            if kev.flags & m.KQ_EV_ERROR:
                bits |= ERROR
            fd = kev.ident
            ready[fd] = ready.get(fd, 0) | bits
        return list(ready.items())

    def close(self) -> None:
        self._kq.close()
        self._events.clear()

    def fileno(self) -> int:
        """The kqueue's own fd: readable when a watched fd is ready (for embedding)."""
        return int(self._kq.fileno())
