"""asyncio's selector interface over a reactor's fd tables.

asyncio's selector loop keeps its fd watches in ``loop._selector``: it calls
``register``/``modify``/``unregister``/``get_map`` with ``(reader, writer)``
handle pairs as the key's data, and then asks ``select()`` what is ready.
:class:`ReactorSelector` keeps that registry, but the watching is the
reactor's: every registration becomes a reactor reader or writer, and the
reactor's poll does the waiting. ``select()`` is never called; the
:class:`~reactor.aio.EventLoop` runs the reactor's turn instead.

Order: when the reactor reports an asyncio fd ready, its handle is appended
to the asyncio ready queue, behind the callbacks queued earlier, and runs
with them after the poll, as on asyncio's own loop (the reactor's native
transports are still called at once, from the poll).
"""

from __future__ import annotations

import selectors
from collections import deque
from collections.abc import Iterator, Mapping
from functools import partial
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import asyncio

    from reactor.reactor import Reactor

__all__ = ["ReactorSelector"]

_READ = selectors.EVENT_READ
_WRITE = selectors.EVENT_WRITE


def _fd_of(fileobj: Any) -> int:
    """The fd of an int or of an object with ``fileno()``, as selectors requires."""
    if isinstance(fileobj, int):
        fd = fileobj
    else:
        try:
            fd = int(fileobj.fileno())
        except (AttributeError, TypeError, ValueError):
            raise ValueError(f"Invalid file object: {fileobj!r}") from None
    if fd < 0:
        raise ValueError(f"Invalid file descriptor: {fd}")
    return fd


class _KeyMap(Mapping[Any, selectors.SelectorKey]):
    """``get_map()``: the keys, looked up by fd or by file object."""

    def __init__(self, keys: dict[int, selectors.SelectorKey]) -> None:
        self._keys = keys

    def __len__(self) -> int:
        return len(self._keys)

    def __getitem__(self, fileobj: Any) -> selectors.SelectorKey:
        try:
            return self._keys[_fd_of(fileobj)]
        except ValueError:
            raise KeyError(f"{fileobj!r} is not registered") from None

    def __iter__(self) -> Iterator[Any]:
        return iter(self._keys)


class ReactorSelector(selectors.BaseSelector):
    """A selector whose registrations are a reactor's readers and writers.

    ``ready`` is the asyncio loop's ready queue and ``remove_reader`` /
    ``remove_writer`` its private removal methods (a cancelled handle found
    ready is removed, as asyncio's ``_process_events`` does).
    """

    def __init__(self, reactor: Reactor) -> None:
        self._reactor = reactor
        self._keys: dict[int, selectors.SelectorKey] = {}
        self._map = _KeyMap(self._keys)
        self._ready: deque[asyncio.Handle] | None = None
        self._loop: Any = None

    def attach(self, loop: Any, ready: deque[asyncio.Handle]) -> None:
        """Connect to the asyncio loop whose handles this selector queues."""
        self._loop = loop
        self._ready = ready

    # ---------------------------------------------------------- the registry

    def register(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        if not events or events & ~(_READ | _WRITE):
            raise ValueError(f"Invalid events: {events!r}")
        fd = _fd_of(fileobj)
        if fd in self._keys:
            raise KeyError(f"{fileobj!r} (FD {fd}) is already registered")
        key = selectors.SelectorKey(fileobj, fd, events, data)
        try:
            self._watch(fd, 0, events)
        except BaseException:
            # Half-registered (the writer failed after the reader): undo.
            self._reactor.unwatch_read(fd)
            self._reactor.unwatch_write(fd)
            raise
        self._keys[fd] = key
        return key

    def unregister(self, fileobj: Any) -> selectors.SelectorKey:
        fd = _fd_of(fileobj)
        key = self._keys.pop(fd, None)
        if key is None:
            raise KeyError(f"{fileobj!r} is not registered")
        self._watch(fd, key.events, 0)
        return key

    def modify(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        fd = _fd_of(fileobj)
        old = self._keys.get(fd)
        if old is None:
            raise KeyError(f"{fileobj!r} is not registered")
        if not events or events & ~(_READ | _WRITE):
            raise ValueError(f"Invalid events: {events!r}")
        key = selectors.SelectorKey(old.fileobj, fd, events, data)
        if events != old.events:
            self._watch(fd, old.events, events)
        self._keys[fd] = key
        return key

    def get_map(self) -> Mapping[Any, selectors.SelectorKey]:
        return self._map

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        raise RuntimeError(
            "ReactorSelector.select() is not used: the reactor polls, and "
            "reactor.aio.EventLoop runs its turn (see docs/aio.md)"
        )

    def close(self) -> None:
        """Stop watching every fd still registered (the reactor stays open)."""
        reactor = self._reactor
        if not reactor.is_closed():
            for fd, key in self._keys.items():
                self._watch(fd, key.events, 0)
        self._keys.clear()
        self._loop = self._ready = None

    # ------------------------------------------------- reactor-side watching

    def _watch(self, fd: int, old: int, new: int) -> None:
        """Make the reactor watch ``fd`` for ``new`` instead of ``old``."""
        reactor = self._reactor
        if not old:
            # A new registration: the public add_* forget whatever the backend
            # still had under this (possibly reused) fd number.
            if new & _READ:
                reactor.add_reader(fd, partial(self._read_ready, fd))
                if new & _WRITE:
                    reactor.watch_write(fd, partial(self._write_ready, fd))
            else:
                reactor.add_writer(fd, partial(self._write_ready, fd))
            return
        if (new ^ old) & _READ:
            if new & _READ:
                reactor.watch_read(fd, partial(self._read_ready, fd))
            else:
                reactor.unwatch_read(fd)
        if (new ^ old) & _WRITE:
            if new & _WRITE:
                reactor.watch_write(fd, partial(self._write_ready, fd))
            else:
                reactor.unwatch_write(fd)

    def _read_ready(self, fd: int) -> None:
        key = self._keys.get(fd)
        if key is None or self._ready is None:
            return
        reader = key.data[0]
        if reader is not None:
            if reader._cancelled:
                self._loop._remove_reader(fd)
            else:
                self._ready.append(reader)

    def _write_ready(self, fd: int) -> None:
        key = self._keys.get(fd)
        if key is None or self._ready is None:
            return
        writer = key.data[1]
        if writer is not None:
            if writer._cancelled:
                self._loop._remove_writer(fd)
            else:
                self._ready.append(writer)
