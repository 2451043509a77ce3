"""The shapes the reactor talks to: protocols, factories and transports.

:class:`ReactorPort` is the other direction: everything a transport may ask
of the loop. Transports are typed against it, never against the reactor
class, so the loop core knows no transport and no transport knows the loop's
insides.

The reactor never imports ``protocols/``. It calls whatever object a factory
returns through the structural interfaces below, so a subclass of
``protocols.Protocol``, a hand-written class, or an ``asyncio.Protocol`` all
work unchanged. The method names are asyncio's.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from concurrent.futures import Future
from typing import Any, Protocol, TypeAlias, TypeVar, runtime_checkable

from reactor.resources import ResourceRegistry
from reactor.timers import Clock

_T = TypeVar("_T")

__all__ = [
    "Address",
    "Cancellable",
    "Clock",
    "DatagramProtocolInterface",
    "DatagramTransportInterface",
    "FactoryArg",
    "ProtocolFactoryInterface",
    "ProtocolInterface",
    "ReactorPort",
    "TLSObservable",
    "TransportInterface",
]

#: A socket address as the socket module gives it: ``(host, port)`` for IPv4,
#: ``(host, port, flowinfo, scope_id)`` for IPv6, a path for Unix sockets.
Address: TypeAlias = Any


class TransportInterface(Protocol):
    """A bidirectional byte stream (TCP, Unix socket, in-memory)."""

    def write(self, data: bytes | bytearray | memoryview) -> None: ...
    def writelines(self, chunks: Iterable[bytes | bytearray | memoryview]) -> None: ...
    def write_eof(self) -> None: ...
    def can_write_eof(self) -> bool: ...
    def close(self) -> None: ...
    def abort(self, reason: BaseException | None = None) -> None: ...
    def is_closing(self) -> bool: ...
    def pause_reading(self) -> None: ...
    def resume_reading(self) -> None: ...
    def is_reading(self) -> bool: ...
    def get_extra_info(self, name: str, default: Any = None) -> Any: ...
    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None: ...
    def get_write_buffer_limits(self) -> tuple[int, int]: ...
    def get_write_buffer_size(self) -> int: ...


class TLSObservable(TransportInterface, Protocol):
    """What a TLS transport (``reactor.tls.TLSTransport``) shows an observer.

    Trace mode logs a connection's TLS steps (the handshake's start and end,
    close_notify each way) from these read-only properties, looked at after
    each event of the connection underneath; the TLS layer only keeps its
    state, so they cost nothing while nobody reads them. The cipher suite and
    the version come from ``get_extra_info("ssl_object")`` as for any user.
    """

    @property
    def tls_state(self) -> str:
        """``"handshake"``, ``"open"``, ``"closing"`` (close() called: what is
        buffered is encrypted first), ``"shutdown"`` (close_notify sent, maybe
        waiting for the peer's) or ``"done"``."""
        ...

    @property
    def server_side(self) -> bool:
        """Whether this end is the TLS server."""
        ...

    @property
    def peer_closed(self) -> bool:
        """Whether the peer closed first: its close_notify was read before we
        sent ours. (Its answer to ours ends ``"shutdown"`` in ``"done"``.)"""
        ...

    @property
    def handshake_error(self) -> BaseException | None:
        """Why the handshake failed (a timeout, a bad certificate), else None."""
        ...


class DatagramTransportInterface(Protocol):
    """A datagram endpoint (UDP)."""

    def sendto(self, data: bytes | bytearray | memoryview, addr: Address = None) -> None: ...
    def close(self) -> None: ...
    def abort(self) -> None: ...
    def is_closing(self) -> bool: ...
    def get_extra_info(self, name: str, default: Any = None) -> Any: ...
    def get_write_buffer_size(self) -> int: ...


@runtime_checkable
class ProtocolInterface(Protocol):
    """What a stream transport calls. ``asyncio.Protocol`` has this shape."""

    def connection_made(self, transport: Any) -> None: ...
    def data_received(self, data: bytes) -> None: ...
    def eof_received(self) -> bool | None: ...
    def connection_lost(self, exc: BaseException | None) -> None: ...
    def pause_writing(self) -> None: ...
    def resume_writing(self) -> None: ...


@runtime_checkable
class DatagramProtocolInterface(Protocol):
    """What a datagram transport calls. ``asyncio.DatagramProtocol`` has this shape."""

    def connection_made(self, transport: Any) -> None: ...
    def datagram_received(self, data: bytes, addr: Address) -> None: ...
    def error_received(self, exc: OSError) -> None: ...
    def connection_lost(self, exc: BaseException | None) -> None: ...
    def pause_writing(self) -> None: ...
    def resume_writing(self) -> None: ...


class ProtocolFactoryInterface(Protocol):
    """A Twisted-style factory: builds one protocol per connection.

    A factory may also define ``do_start()`` and ``do_stop()``; a listener
    calls them when it starts and stops listening, a connector when it starts
    connecting and when the connection attempt or the connection ends.
    """

    def build_protocol(self, addr: Address) -> ProtocolInterface | None:
        """The protocol for a connection from ``addr``; None refuses the connection."""
        ...


#: What ``listen_tcp``/``connect_tcp`` accept: a factory object, or any
#: zero-argument callable returning a protocol (a protocol class works).
FactoryArg: TypeAlias = ProtocolFactoryInterface | Callable[[], ProtocolInterface]


class Cancellable(Protocol):
    """What scheduling a call returns to a transport: something to cancel.

    The Reactor returns a :class:`~reactor.Handle` or
    :class:`~reactor.TimerHandle`; another port (``reactor.aio``'s, which
    schedules on asyncio) returns its own. Typed structurally so that the
    compiled build checks nothing more than this.
    """

    def cancel(self) -> None: ...


class ReactorPort(Protocol):
    """Everything a transport, listener or connector may ask of its reactor.

    The one declared way in: a transport holds its reactor typed as this,
    and uses nothing else of it. The ``watch_*`` calls are the fast,
    unchecked versions of ``add_reader`` and friends, for fds the transport
    owns; a callback is called with no arguments when the fd is ready.
    """

    @property
    def resources(self) -> ResourceRegistry:
        """Where transports register so that closing the reactor releases them."""
        ...

    #: The ident of the thread running the loop, or None while it is not
    #: running (transports refuse calls from other threads while it runs).
    thread_id: int | None
    #: Seconds a closed stream connection may take to flush before it is aborted.
    close_timeout: float

    def time(self) -> float:
        """The loop's clock (monotonic seconds), the one timers use."""
        ...

    def call_soon(self, callback: Callable[..., object], *args: Any) -> Cancellable:
        """Run ``callback(*args)`` on the next turn (connection_lost is delivered so)."""
        ...

    def call_later(self, delay: float, callback: Callable[..., object], *args: Any) -> Cancellable:
        """Run ``callback(*args)`` in ``delay`` seconds (accept back-off, lingering, deadlines)."""
        ...

    def call_from_thread(self, callback: Callable[..., object], *args: Any) -> Cancellable:
        """Run ``callback(*args)`` on the loop, from any thread (a resolver's answer)."""
        ...

    def watch_read(self, fd: int, callback: Callable[[], object]) -> None:
        """Call ``callback()`` whenever ``fd`` is readable. May raise if the backend
        cannot watch ``fd`` (select: at or above FD_SETSIZE)."""
        ...

    def unwatch_read(self, fd: int) -> bool:
        """Stop watching ``fd`` for reading (before closing it); whether it was watched."""
        ...

    def watch_write(self, fd: int, callback: Callable[[], object]) -> None:
        """Call ``callback()`` whenever ``fd`` is writable (only while data is queued)."""
        ...

    def unwatch_write(self, fd: int) -> bool:
        """Stop watching ``fd`` for writing; whether it was watched."""
        ...

    def report_error(self, context: dict[str, Any]) -> None:
        """Log an error (``message``, ``exception``, ...) through the exception sink."""
        ...

    def run_in_thread(self, fn: Callable[..., _T], *args: Any) -> Future[_T]:
        """Run blocking ``fn(*args)`` in a worker thread (name resolution)."""
        ...

    def getaddrinfo(
        self, host: str | None, port: int | str | None, family: int = 0, type: int = 0
    ) -> list[tuple[Any, ...]]:
        """The resolver (``socket.getaddrinfo``), run in a worker thread by connectors."""
        ...
