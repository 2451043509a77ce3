"""The fast path: asyncio connections carried by the reactor's own StreamTransport.

asyncio's ``create_server``, ``create_connection``, ``connect_accepted_socket``
(and so ``start_server``/``open_connection``) keep asyncio's code for
everything but the connection itself: listening, accepting, happy eyeballs,
``asyncio.Server``. Each connected socket is then handed to
:class:`NativeTransport` instead of asyncio's ``_SelectorSocketTransport``:
the reading, writing, buffering, flow control and closing are
:class:`reactor.StreamTransport`'s.

Two pieces make that work without changing asyncio's behaviour:

* :class:`AioPort` is the :class:`~reactor.ReactorPort` the stream transport
  is given. Its ``call_soon``/``call_later`` are the asyncio loop's, and
  its ``watch_read``/``watch_write`` make the reactor append a prepared
  asyncio handle to asyncio's ready queue when the fd is ready (a C call:
  ``deque.append`` through ``functools.partial``). So ``data_received`` and
  ``connection_lost`` run in asyncio's order, as they would on its own loop.
* :class:`NativeTransport` is what the protocol sees: an
  ``asyncio.Transport`` (``isinstance`` holds, ``get_extra_info`` answers
  ``socket``/``sockname``/``peername`` as asyncio does, the ``asyncio.Server``
  counts it) whose methods are the stream transport's own bound methods, so
  ``transport.write(data)`` costs no extra Python frame.
"""

from __future__ import annotations

import asyncio
import inspect
import socket
from asyncio.trsock import TransportSocket
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from functools import partial
from typing import TYPE_CHECKING, Any, cast

from reactor.interfaces import ReactorPort
from reactor.resources import ResourceTable
from reactor.stream import MAX_LINGERING, StreamTransport

if TYPE_CHECKING:
    from reactor.reactor import Reactor

__all__ = ["AioPort", "NativeTransport", "attach_to_server", "detach_from_server", "socket_names"]

# asyncio.Server counts its connections: by object from 3.13 (close_clients),
# by number before.
_ATTACH_TAKES_TRANSPORT = len(inspect.signature(asyncio.Server._attach).parameters) > 1  # type: ignore[attr-defined]

#: The stream transport's methods a NativeTransport exposes as its own.
_FORWARDED = (
    "write",
    "writelines",
    "write_eof",
    "can_write_eof",
    "close",
    "abort",
    "is_closing",
    "pause_reading",
    "resume_reading",
    "is_reading",
    "get_write_buffer_size",
    "get_write_buffer_limits",
    "set_write_buffer_limits",
    "get_protocol",
    "set_protocol",
)


class _NeverLinger(set[Any]):
    """A lingering set that is always full: the stream transport then closes at once."""

    def __len__(self) -> int:
        return MAX_LINGERING


class _AsyncioResources:
    """The reactor's ResourceTable as asyncio's connections see it: no lingering close.

    A reactor StreamTransport closed gracefully lingers (sends FIN and reads
    until the peer's, up to LINGER_TIME) unless the table's lingering set is
    full. asyncio closes the socket as soon as connection_lost has run (the
    peer may get a reset), and its users and tests rely on that (a closed
    transport's socket is closed, its fd free), so here the set is always full.
    Everything else is the reactor's own table, so ``reactor.close()`` and
    ``stats()`` see these connections.
    """

    def __init__(self, table: ResourceTable) -> None:
        self._table = table
        self.lingering = _NeverLinger()

    @property
    def open(self) -> dict[Any, None]:
        return self._table.open

    def add(self, resource: Any) -> None:
        self._table.add(resource)

    def discard(self, resource: Any) -> None:
        self._table.discard(resource)

    @property
    def bytes_in_closed(self) -> int:
        return self._table.bytes_in_closed

    @bytes_in_closed.setter
    def bytes_in_closed(self, value: int) -> None:
        self._table.bytes_in_closed = value

    @property
    def bytes_out_closed(self) -> int:
        return self._table.bytes_out_closed

    @bytes_out_closed.setter
    def bytes_out_closed(self, value: int) -> None:
        self._table.bytes_out_closed = value


class _FdHandle(asyncio.Handle):
    """The handle a watched fd queues: its ``_run`` is a C call chain, no Python frame.

    ``handle._run()`` is ``context.run(callback)`` through ``functools.partial``
    instead of ``Handle._run``'s Python frame (one per request saved). What a
    callback raises is caught by the loop's turn (``EventLoop._run_once``)
    instead, and goes to the exception handler as asyncio's would.
    """

    def __init__(self, callback: Callable[[], object], loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(callback, (), loop)
        self._run = partial(self._context.run, callback)  # type: ignore[attr-defined,method-assign]


class AioPort:
    """A :class:`~reactor.ReactorPort` that runs a transport's callbacks in asyncio's order."""

    def __init__(self, loop: asyncio.AbstractEventLoop, reactor: Reactor) -> None:
        self._loop = loop
        self._reactor = reactor
        self._ready: deque[asyncio.Handle] = loop._ready  # type: ignore[attr-defined]
        self._resources = _AsyncioResources(reactor.resources)
        # The handle each watched fd appends when ready, so that unwatching
        # can cancel one already queued in this turn (as asyncio's does).
        self._readers: dict[int, asyncio.Handle] = {}
        self._writers: dict[int, asyncio.Handle] = {}
        self._drain_waiters: dict[int, list[asyncio.Future[None]]] = {}

    @property
    def resources(self) -> ResourceTable:
        return cast(ResourceTable, self._resources)

    @property
    def thread_id(self) -> int | None:
        return self._reactor.thread_id

    @property
    def close_timeout(self) -> float:
        return self._reactor.close_timeout

    def time(self) -> float:
        return self._loop.time()

    def call_soon(self, callback: Callable[..., object], *args: Any) -> Any:
        if self._loop.is_closed():
            # The asyncio loop closed before its reactor: the reactor's close()
            # force-closes what is left and runs these callbacks itself.
            return self._reactor.call_soon(callback, *args)
        return self._loop.call_soon(callback, *args)

    def call_later(self, delay: float, callback: Callable[..., object], *args: Any) -> Any:
        if self._loop.is_closed():
            return self._reactor.call_later(delay, callback, *args)
        return self._loop.call_later(delay, callback, *args)

    def call_from_thread(self, callback: Callable[..., object], *args: Any) -> Any:
        return self._loop.call_soon_threadsafe(callback, *args)

    def watch_read(self, fd: int, callback: Callable[[], object]) -> None:
        handle = _FdHandle(callback, self._loop)
        self._reactor.watch_read(fd, partial(self._ready.append, handle))
        old = self._readers.pop(fd, None)
        if old is not None:
            old.cancel()
        self._readers[fd] = handle

    def unwatch_read(self, fd: int) -> bool:
        handle = self._readers.pop(fd, None)
        if handle is not None:
            handle.cancel()
        return self._reactor.unwatch_read(fd)

    def watch_write(self, fd: int, callback: Callable[[], object]) -> None:
        handle = _FdHandle(callback, self._loop)
        self._reactor.watch_write(fd, partial(self._ready.append, handle))
        old = self._writers.pop(fd, None)
        if old is not None:
            old.cancel()
        self._writers[fd] = handle

    def unwatch_write(self, fd: int) -> bool:
        handle = self._writers.pop(fd, None)
        if handle is not None:
            handle.cancel()
        # A stream transport stops watching for writability when its buffer
        # is empty (or it is gone): what drained() waits for.
        waiters = self._drain_waiters.pop(fd, None)
        if waiters:
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)
        return self._reactor.unwatch_write(fd)

    async def drained(self, fd: int, stream: StreamTransport) -> None:
        """Wait until ``stream`` (on ``fd``) has sent everything it buffered."""
        while stream.get_write_buffer_size():
            if stream.is_closing() and stream._conn_lost:
                raise ConnectionError("Connection closed by peer")
            waiter: asyncio.Future[None] = self._loop.create_future()
            self._drain_waiters.setdefault(fd, []).append(waiter)
            await waiter

    def report_error(self, context: dict[str, Any]) -> None:
        self._loop.call_exception_handler(context)

    def run_in_thread(self, fn: Callable[..., Any], *args: Any) -> Future[Any]:
        return self._reactor.run_in_thread(fn, *args)

    def getaddrinfo(
        self, host: str | None, port: int | str | None, family: int = 0, type: int = 0
    ) -> list[tuple[Any, ...]]:
        return self._reactor.getaddrinfo(host, port, family, type)


class _Introducer:
    """The stream transport's first protocol: hands the real one its NativeTransport.

    On ``connection_made`` it switches the stream transport to the real
    protocol (so data goes straight there from then on) and calls the real
    ``connection_made`` with the asyncio-facing transport.
    """

    def __init__(self, outer: NativeTransport, protocol: Any) -> None:
        self._outer = outer
        self._protocol = protocol

    def connection_made(self, transport: Any) -> None:
        transport.set_protocol(self._protocol)
        try:
            self._protocol.connection_made(self._outer)
        except Exception as exc:
            # asyncio reports it and leaves the connection up (the reactor's
            # own transports would close it): the asyncio face does as asyncio.
            self._outer._loop.call_exception_handler(
                {
                    "message": "Exception in protocol.connection_made()",
                    "exception": exc,
                    "transport": self._outer,
                    "protocol": self._protocol,
                }
            )

    # Never called: the real protocol is in place before any data is read
    # or written.
    def data_received(self, data: bytes) -> None:  # pragma: no cover
        self._protocol.data_received(data)

    def eof_received(self) -> bool | None:  # pragma: no cover
        return bool(self._protocol.eof_received())

    def connection_lost(self, exc: BaseException | None) -> None:  # pragma: no cover
        self._protocol.connection_lost(exc)

    def pause_writing(self) -> None:  # pragma: no cover
        self._protocol.pause_writing()

    def resume_writing(self) -> None:  # pragma: no cover
        self._protocol.resume_writing()


def socket_names(extra: dict[str, Any], sock: socket.socket) -> Any:
    """Fill in ``socket``, ``sockname`` and ``peername`` as asyncio does; returns the peer."""
    try:
        peername = sock.getpeername()
    except OSError:
        peername = None
    try:
        sockname = sock.getsockname()
    except OSError:
        sockname = None
    extra["socket"] = TransportSocket(sock)
    extra.setdefault("sockname", sockname)
    extra.setdefault("peername", peername)
    return peername


def attach_to_server(server: asyncio.Server | None, transport: asyncio.BaseTransport) -> None:
    """Count a new connection in its ``asyncio.Server`` (``wait_closed``, ``close_clients``)."""
    if server is not None:
        if _ATTACH_TAKES_TRANSPORT:
            server._attach(transport)  # type: ignore[attr-defined]
        else:
            server._attach()  # type: ignore[attr-defined]


def detach_from_server(server: asyncio.Server | None, transport: asyncio.BaseTransport) -> None:
    if server is not None:
        if _ATTACH_TAKES_TRANSPORT:
            server._detach(transport)  # type: ignore[attr-defined]
        else:
            server._detach()  # type: ignore[attr-defined]


def _refuse_write(*args: Any) -> None:
    raise RuntimeError("unable to write; sendfile is in progress")


def _resolve(waiter: asyncio.Future[None] | None) -> None:
    if waiter is not None and not waiter.cancelled():
        waiter.set_result(None)


class NativeTransport(asyncio.transports._FlowControlMixin):
    """An ``asyncio.Transport`` over a :class:`reactor.StreamTransport`.

    Made by the loop for each plain (non-TLS) TCP or Unix connection. The
    stream transport is ``transport.stream``; the methods a protocol calls
    (``write``, ``close``, ``pause_reading``, ...) are its bound methods.
    """

    _extra: dict[str, Any]

    # asyncio's start_tls() upgrades any transport that says it can, and
    # loop.sendfile() tries os.sendfile() on it first (_sendfile below).
    _start_tls_compatible = True
    _sendfile_compatible = asyncio.constants._SendfileMode.TRY_NATIVE  # type: ignore[attr-defined]

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        port: AioPort,
        sock: socket.socket,
        protocol: Any,
        waiter: asyncio.Future[None] | None = None,
        extra: dict[str, Any] | None = None,
        server: asyncio.Server | None = None,
    ) -> None:
        asyncio.Transport.__init__(self, extra)
        self._loop = loop
        self._port = port
        peername = socket_names(self._extra, sock)
        stream = StreamTransport(
            cast(ReactorPort, port), sock, _Introducer(self, protocol), peername
        )
        self.stream = stream
        """The reactor stream transport carrying this connection."""
        for name in _FORWARDED:
            setattr(self, name, getattr(stream, name))
        self._server = server
        attach_to_server(server, self)
        stream._on_lost = self._lost
        loop._transports[sock.fileno()] = self  # type: ignore[attr-defined]
        # As asyncio's transport: connection_made and reading start on the next
        # turn, then the waiter is told.
        loop.call_soon(self._begin)
        loop.call_soon(_resolve, waiter)

    def __repr__(self) -> str:
        return f"<NativeTransport {self.stream!r}>"

    @property
    def _protocol_paused(self) -> bool:
        """Whether the protocol was asked to pause writing (asyncio's sendfile reads it)."""
        return bool(self.stream._protocol_paused)

    @_protocol_paused.setter
    def _protocol_paused(self, value: bool) -> None:
        pass  # the stream transport keeps its own

    def _begin(self) -> None:
        if not self.stream.is_closing():
            self.stream._start()

    def _lost(self) -> None:
        server, self._server = self._server, None
        detach_from_server(server, self)

    async def _sendfile(self, file: Any, offset: int, count: int | None) -> int:
        """``loop.sendfile()`` natively: drain, then ``os.sendfile`` on the socket.

        Reading pauses meanwhile and ``write()`` is refused, as on asyncio's
        transports; SendfileNotAvailableError (no os.sendfile, not a regular
        file) lets the loop fall back to reading and writing.
        """
        stream = self.stream
        loop: Any = self._loop
        sock = self._extra["socket"]._sock
        fd = sock.fileno()
        resume = stream.is_reading()
        stream.pause_reading()
        self.write = self.writelines = _refuse_write  # type: ignore[method-assign,assignment]
        try:
            await self._port.drained(fd, stream)
            if stream.is_closing():
                raise ConnectionError("Connection closed during sendfile")
            del loop._transports[fd]  # sock_sendfile refuses a transport's socket
            try:
                return int(await loop.sock_sendfile(sock, file, offset, count, fallback=False))
            finally:
                loop._transports[fd] = self
        finally:
            self.write = stream.write  # type: ignore[method-assign]
            self.writelines = stream.writelines  # type: ignore[method-assign,assignment]
            if resume and not stream.is_closing():
                stream.resume_reading()

    def get_write_buffer_size(self) -> int:  # replaced per instance; for the ABC
        return int(self.stream.get_write_buffer_size())
