"""What is open on a reactor: the table ``close()`` and ``stats()`` read.

Transports, listeners and connectors add themselves when they open and
discard themselves when they are done, so that closing the reactor can
release whatever the program left open, and ``stats()`` can count it. The
loop core never looks in here; the assembled :class:`~reactor.Reactor` does.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

__all__ = ["Connection", "Resource", "ResourceTable"]


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


class ResourceTable:
    """Open resources, connections lingering after their close, and byte totals."""

    __slots__ = ("bytes_in_closed", "bytes_out_closed", "lingering", "open")

    def __init__(self) -> None:
        self.open: set[Resource] = set()
        #: Closed connections waiting for their peer's FIN (see stream.py).
        self.lingering: set[Resource] = set()
        #: Payload bytes of stream connections already gone.
        self.bytes_in_closed = 0
        self.bytes_out_closed = 0

    def add(self, resource: Resource) -> None:
        self.open.add(resource)

    def discard(self, resource: Resource) -> None:
        self.open.discard(resource)

    def __len__(self) -> int:
        return len(self.open) + len(self.lingering)

    def __contains__(self, resource: object) -> bool:
        return resource in self.open or resource in self.lingering

    def __iter__(self) -> Iterator[Resource]:
        return iter(self.all())

    def all(self) -> list[Resource]:
        """Everything still to release, open ones first."""
        return [*self.open, *self.lingering]
