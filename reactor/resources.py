"""What is open on a reactor: the table ``close()`` and ``stats()`` read.

Transports, listeners and connectors add themselves when they open and
discard themselves when they are done, so that closing the reactor can
release whatever the program left open, and ``stats()`` can count it. The
loop core never looks in here; the assembled :class:`~reactor.Reactor` does.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

__all__ = ["Connection", "LingerSet", "Resource", "ResourceRegistry", "ResourceTable"]


class Resource(Protocol):
    """Something a reactor must release when it closes."""

    @property
    def kind(self) -> str:
        """ "connection", "listener", "datagram" or "connector": what stats() counts it as."""
        ...

    def force_close(self) -> None:
        """Release it now (the reactor is closing): no flushing, no waiting."""
        ...


class Connection(Resource, Protocol):
    """A resource of kind "connection": it also counts its payload bytes."""

    bytes_received: int
    bytes_sent: int


class LingerSet(Protocol):
    """The connections lingering after their close: a set, or a stand-in for one."""

    def __len__(self) -> int: ...
    def add(self, resource: Resource, /) -> None: ...
    def discard(self, resource: Resource, /) -> None: ...


class ResourceRegistry(Protocol):
    """What a transport uses of its reactor's table (``ReactorPort.resources``).

    A :class:`ResourceTable`, or a port's own view of one (``reactor.aio``
    gives asyncio's connections a table whose lingering set is always full).
    Typed structurally so that the compiled build accepts either, and calls
    the view's own methods (``len()`` of a set-typed value would not).
    """

    bytes_in_closed: int
    bytes_out_closed: int

    @property
    def lingering(self) -> LingerSet: ...

    def add(self, resource: Resource) -> None: ...
    def discard(self, resource: Resource) -> None: ...


class ResourceTable:
    """Open resources, connections lingering after their close, and byte totals."""

    __slots__ = ("bytes_in_closed", "bytes_out_closed", "lingering", "open")

    def __init__(self) -> None:
        # A dict used as an ordered set: close() releases what is open in the
        # order it was opened, the same in every build and run (a set's
        # order follows the objects' addresses).
        self.open: dict[Resource, None] = {}
        #: Closed connections waiting for their peer's FIN (see stream.py).
        self.lingering: set[Resource] = set()
        #: Payload bytes of stream connections already gone.
        self.bytes_in_closed = 0
        self.bytes_out_closed = 0

    def add(self, resource: Resource) -> None:
        self.open[resource] = None

    def discard(self, resource: Resource) -> None:
        self.open.pop(resource, None)

    def __len__(self) -> int:
        return len(self.open) + len(self.lingering)

    def __contains__(self, resource: object) -> bool:
        return resource in self.open or resource in self.lingering

    def __iter__(self) -> Iterator[Resource]:
        return iter(self.all())

    def all(self) -> list[Resource]:
        """Everything still to release, open ones first."""
        return [*self.open, *self.lingering]
