"""Base classes that users subclass: Protocol, DatagramProtocol and factories.

Every hook has a do-nothing default, so a subclass overrides only what it
needs. The method names are asyncio's; ``Factory`` is Twisted's idea.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from reactor import Address, DatagramTransportInterface, TransportInterface

__all__ = ["ClientFactory", "DatagramProtocol", "Factory", "Protocol"]

log = logging.getLogger("protocols")


def _abort_with_reason(transport: Any, reason: BaseException) -> None:
    """Abort ``transport`` so that ``connection_lost`` gets ``reason``.

    The reactor's transports (and :class:`protocols.testing.MemoryTransport`)
    take the reason; a transport whose ``abort()`` takes none (asyncio's)
    gets a plain abort, and its ``connection_lost`` sees None.
    """
    try:
        transport.abort(reason)
    except TypeError:
        transport.abort()


class Protocol:
    """A stream protocol: one instance per connection.

    ``connection_made`` stores the transport in ``self.transport``; a
    subclass that overrides it should call ``super().connection_made``.
    ``factory`` is set by :class:`Factory` to the factory that built it.
    """

    transport: TransportInterface
    factory: Any = None

    def connection_made(self, transport: Any) -> None:
        """Called once when the connection is up, before any data."""
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        """Called with each chunk of bytes as it arrives (chunking is arbitrary)."""

    def eof_received(self) -> bool | None:
        """The peer closed its write side (FIN). Return True to keep writing (half-close)."""
        return None

    def connection_lost(self, exc: BaseException | None) -> None:
        """Called exactly once when the connection ends; ``exc`` is None for a clean close."""

    def pause_writing(self) -> None:
        """The transport's write buffer passed its high-water mark: stop writing."""

    def resume_writing(self) -> None:
        """The transport's write buffer drained below its low-water mark."""


class DatagramProtocol:
    """A datagram (UDP) protocol: one instance per endpoint."""

    transport: DatagramTransportInterface

    def connection_made(self, transport: Any) -> None:
        """Called once when the endpoint is ready; stores ``self.transport``."""
        self.transport = transport

    def datagram_received(self, data: bytes, addr: Address) -> None:
        """Called with each datagram and the address it came from."""

    def error_received(self, exc: OSError) -> None:
        """A send or receive failed (e.g. ICMP port unreachable on a connected socket)."""

    def connection_lost(self, exc: BaseException | None) -> None:
        """Called once when the endpoint is closed."""

    def pause_writing(self) -> None:
        """The send buffer passed its high-water mark."""

    def resume_writing(self) -> None:
        """The send buffer drained below its low-water mark."""


P = TypeVar("P", bound=Protocol)


class Factory(Generic[P]):
    """Builds one protocol per connection (Twisted's ``Factory``).

    Set ``protocol`` (a class or any zero-argument callable) or pass it to the
    constructor; override :meth:`build_protocol` for more control. The hooks
    :meth:`start_factory` and :meth:`stop_factory` run when the first listener
    using this factory starts and when the last one stops.
    """

    protocol: Callable[[], P] | None = None

    def __init__(self, protocol: Callable[[], P] | None = None) -> None:
        if protocol is not None:
            self.protocol = protocol
        self._users = 0

    @classmethod
    def for_protocol(cls, protocol: Callable[..., P], *args: Any, **kwargs: Any) -> Factory[P]:
        """A factory whose protocols are ``protocol(*args, **kwargs)``."""
        if args or kwargs:
            return cls(lambda: protocol(*args, **kwargs))
        return cls(protocol)

    def build_protocol(self, addr: Address) -> P:
        """Make the protocol for a new connection from ``addr``; sets its ``factory``."""
        if self.protocol is None:
            raise TypeError(
                f"{type(self).__name__}.protocol is not set: pass a Protocol class to "
                "the constructor or override build_protocol()"
            )
        proto = self.protocol()
        try:
            proto.factory = self
        except AttributeError:
            pass  # a lean protocol with __slots__ and no 'factory' slot
        return proto

    def do_start(self) -> None:
        """Called by each listener or connector that starts using this factory."""
        if self._users == 0:
            self.start_factory()
        self._users += 1

    def do_stop(self) -> None:
        """Called by each listener or connector that stops using this factory."""
        if self._users <= 0:
            return
        self._users -= 1
        if self._users == 0:
            self.stop_factory()

    def start_factory(self) -> None:
        """Hook: the factory is about to be used (open files, start timers)."""

    def stop_factory(self) -> None:
        """Hook: the factory is no longer used (release what start_factory took)."""


class ClientFactory(Factory[P]):
    """A factory for outgoing connections, told when a connection attempt fails."""

    def client_connection_failed(self, connector: Any, reason: BaseException) -> None:
        """The connection could not be made (refused, timed out, name not found)."""
        log.warning("connection to %s failed: %s", getattr(connector, "address", "?"), reason)
