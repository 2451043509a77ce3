"""select(): available everywhere, limited to fds below FD_SETSIZE.

select() cannot watch an fd at or above FD_SETSIZE (1024 on Linux); it would
fail or corrupt memory inside the call. So such an fd is refused when it is
registered, with an error that says which backend to use instead.
"""

from __future__ import annotations

import errno
import os
import select

from reactor.backends.base import INVALID, MAX_TIMEOUT, READ, WRITE

__all__ = ["FD_SETSIZE", "SelectPoller"]

FD_SETSIZE = 1024


class SelectPoller:
    """Readiness through ``select.select``."""

    name = "select"

    def __init__(self) -> None:
        self._readers: set[int] = set()
        self._writers: set[int] = set()

    def register(self, fd: int, events: int) -> None:
        if fd >= FD_SETSIZE:
            raise ValueError(
                f"fd {fd} is at or above FD_SETSIZE ({FD_SETSIZE}): the select backend "
                "cannot watch it; use the epoll, kqueue or poll backend instead"
            )
        if fd < 0:
            raise ValueError(f"invalid fd {fd}")
        self.modify(fd, events)

    def modify(self, fd: int, events: int) -> None:
        if events & READ:
            self._readers.add(fd)
        else:
            self._readers.discard(fd)
        if events & WRITE:
            self._writers.add(fd)
        else:
            self._writers.discard(fd)

    def unregister(self, fd: int) -> None:
        self._readers.discard(fd)
        self._writers.discard(fd)

    def poll(self, timeout: float | None) -> list[tuple[int, int]]:
        if timeout is not None:
            if timeout > MAX_TIMEOUT:
                timeout = MAX_TIMEOUT
            elif timeout < 0.0:
                # select() would raise ValueError, taken below for a closed fd.
                timeout = 0.0
        try:
            r, w, _ = select.select(self._readers, self._writers, [], timeout)
        except InterruptedError:
            return []
        except OSError as exc:
            if exc.errno != errno.EBADF:
                raise
            # One of the fds was closed while registered. select() does not
            # say which, so find them and report them like poll's POLLNVAL.
            return self._bad_fds()
        except ValueError:
            # A negative fd (the socket was closed and its fileno is -1).
            return self._bad_fds()
        if not w:
            return [(fd, READ) for fd in r]
        events: dict[int, int] = dict.fromkeys(r, READ)
        for fd in w:
            events[fd] = events.get(fd, 0) | WRITE
        return list(events.items())

    def _bad_fds(self) -> list[tuple[int, int]]:
        bad = []
        for fd in self._readers | self._writers:
            try:
                os.fstat(fd)
            except OSError:
                bad.append((fd, INVALID))
        return bad

    def close(self) -> None:
        self._readers.clear()
        self._writers.clear()
