"""Which fds the loop watches, and every quirk of keeping the kernel in step.

The loop keeps two tables, ``readers`` and ``writers`` (fd -> callback), and
this module makes the backend watch exactly what they hold. That sounds like
one ``register`` call, but file descriptors are numbers the kernel reuses,
and the backends disagree about what a closed fd means. Some facts, all of
which are handled here and nowhere else:

* epoll and kqueue silently forget an fd when its last reference is closed,
  while poll and select keep reporting it (poll says POLLNVAL: INVALID).
  So "we registered fd 9" may be false by the time we modify it.
* The number of a closed fd is reused by the next ``socket()``/``accept()``.
  ``register`` of a "new" fd 9 may then fail with EEXIST (the kernel still
  has the old one: it was dup'ed or inherited), and ``modify`` may fail with
  ENOENT (the kernel dropped the old one).
* epoll keys a registration by file *and* number. If a watched fd is closed
  while a duplicate of its file lives on (``dup()``, a child process), the
  kernel keeps reporting it, and ``unregister`` by number can no longer
  remove it: the only cure is a new epoll object.
* A callback that fails with EBADF was probably given an fd closed under it;
  left registered it would fail again on every turn.

The loop's hot path reads ``readers`` and ``writers`` directly; everything
else (registering, recovering) goes through :class:`FdRegistry`.
"""

from __future__ import annotations

import errno
import logging
import os
from collections.abc import Callable
from typing import Protocol

from reactor.backends import READ, WRITE, Poller

__all__ = ["FdRegistry", "HasFileno", "file_identity", "fileno_of"]

log = logging.getLogger("reactor")

_CLOSED_WHILE_WATCHED = (
    "fd %d was closed while still watched; its callbacks were removed "
    "(call remove_reader/remove_writer before closing an fd)"
)


class HasFileno(Protocol):
    def fileno(self) -> int: ...


def fileno_of(fd: int | HasFileno) -> int:
    """The fd number of an int or of an object with ``fileno()``; ValueError otherwise."""
    if isinstance(fd, int):
        n = fd
    else:
        try:
            n = int(fd.fileno())
        except (AttributeError, TypeError, ValueError):
            raise ValueError(f"not a file descriptor or an object with fileno(): {fd!r}") from None
    if n < 0:
        raise ValueError(f"invalid file descriptor {n} (is the file closed?)")
    return n


def file_identity(fd: int) -> tuple[int, int] | None:
    """What file ``fd`` names (device, inode), to tell if its number was reused; None if closed."""
    if fd < 0:
        return None
    try:
        st = os.fstat(fd)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


class FdRegistry:
    """The reader and writer tables, and the backend kept in step with them."""

    __slots__ = ("poller", "readers", "registered", "writers")

    def __init__(self, poller: Poller) -> None:
        self.poller = poller
        self.readers: dict[int, Callable[[], object]] = {}
        self.writers: dict[int, Callable[[], object]] = {}
        self.registered: dict[int, int] = {}  # fd -> the bits the backend watches

    # The four calls transports make (through the loop's watch_* methods).

    def add_reader(self, fd: int, callback: Callable[[], object]) -> None:
        self.readers[fd] = callback
        self._update(fd)

    def add_writer(self, fd: int, callback: Callable[[], object]) -> None:
        self.writers[fd] = callback
        self._update(fd)

    def remove_reader(self, fd: int) -> bool:
        if self.readers.pop(fd, None) is None:
            return False
        self._update(fd)
        return True

    def remove_writer(self, fd: int) -> bool:
        if self.writers.pop(fd, None) is None:
            return False
        self._update(fd)
        return True

    def forget(self, fd: int) -> None:
        """Drop the backend's registration of ``fd`` so the next update makes a fresh one.

        The public add_reader/add_writer call this (transports do not): the
        number may name a new file now, the old one closed while watched, and
        epoll/kqueue would have forgotten the old one silently, so "already
        registered for these events" would be a lie.
        """
        if self.registered.pop(fd, None) is not None:
            self.poller.unregister(fd)

    def _update(self, fd: int) -> None:
        """Make the backend watch ``fd`` for exactly what has callbacks."""
        bits = (READ if fd in self.readers else 0) | (WRITE if fd in self.writers else 0)
        old = self.registered.get(fd)
        if old == bits:
            return
        poller = self.poller
        if not bits:
            # Only a removal gets here, and only for an fd that was registered.
            del self.registered[fd]
            poller.unregister(fd)
            return
        try:
            if old is None:
                try:
                    poller.register(fd, bits)
                except FileExistsError:
                    # The kernel still has an fd of this number from a socket
                    # closed without being unregistered.
                    poller.modify(fd, bits)
            else:
                try:
                    poller.modify(fd, bits)
                except FileNotFoundError:
                    if not bits & ~old:
                        raise  # less interest in a file that is gone: see below
                    # The old file was closed (the kernel dropped it) and its
                    # number reused: register the new one.
                    poller.register(fd, bits)
        except BaseException as exc:
            # Keep our tables consistent with the kernel's: nothing watched.
            self.drop(fd, log_closed=False)
            if (
                old is not None
                and not bits & ~old
                and isinstance(exc, OSError)
                and exc.errno in (errno.EBADF, errno.ENOENT)
            ):
                # Removing a reader or writer of an fd closed while watched
                # (epoll and kqueue forget such fds silently, so this is where
                # it shows): its other callback goes too, as when poll reports
                # POLLNVAL. A removal does not fail.
                log.error(_CLOSED_WHILE_WATCHED, fd)
                return
            raise
        self.registered[fd] = bits

    # Recovery: what the loop calls when the backend's answer makes no sense.

    def drop(self, fd: int, log_closed: bool = True) -> None:
        """Forget ``fd`` entirely: the backend reported it closed (INVALID)."""
        if log_closed and (fd in self.readers or fd in self.writers):
            log.error(_CLOSED_WHILE_WATCHED, fd)
        self.readers.pop(fd, None)
        self.writers.pop(fd, None)
        self.registered.pop(fd, None)
        self.poller.unregister(fd)

    def callback_failed(self, fd: int, exc: Exception) -> None:
        """A reader or writer raised: if its fd was closed under it, drop the fd,
        or it would be called (and fail) again every turn."""
        if (
            isinstance(exc, OSError)
            and exc.errno == errno.EBADF
            and fd in self.registered
            and file_identity(fd) is None
        ):
            self.drop(fd)

    def unwatch_stale(self, fd: int) -> None:
        """The backend reported an fd nobody watches: make it stop."""
        poller = self.poller
        poller.unregister(fd)
        if file_identity(fd) is None and any(ready == fd for ready, _ in poller.poll(0.0)):
            # Closed, yet still reported after unregister(): the epoll quirk
            # above (the file lives on elsewhere). Left alone, the loop would
            # spin on it for good.
            self._rebuild()

    def _rebuild(self) -> None:
        """Replace the backend with a new one watching what the tables say."""
        old = self.poller
        try:
            # A wrapper (trace mode's TracingPoller) knows how to make its twin.
            fresh = getattr(old, "fresh", None)
            new = fresh() if fresh is not None else type(old)()
        except Exception:
            log.exception("could not make a new %s poller to drop a closed fd", old.name)
            return
        dead = []
        for fd, bits in self.registered.items():
            try:
                new.register(fd, bits)
            except OSError:
                dead.append(fd)  # closed while watched as well
        self.poller = new
        old.close()
        for fd in dead:
            self.drop(fd)
        log.warning("rebuilt the %s poller to drop a closed fd it kept reporting", new.name)

    def close(self) -> None:
        self.readers.clear()
        self.writers.clear()
        self.registered.clear()
        self.poller.close()
