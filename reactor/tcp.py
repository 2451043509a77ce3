"""Listening for and making stream connections (TCP here; Unix sockets reuse it).

:class:`Listener` accepts several connections per readiness event and
survives running out of file descriptors; :class:`Connector` makes a
non-blocking outgoing connection, resolving host names in a worker thread so
the loop never blocks on DNS.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
from collections.abc import Callable
from typing import Any, Final, TypeAlias

from reactor.factory import build_protocol, check_factory, factory_hook
from reactor.interfaces import Address, FactoryArg, ProtocolInterface, ReactorPort
from reactor.sockets import (
    Port,
    check_port,
    connect_error,
    ip_family,
    listening_socket,
    set_nodelay,
)
from reactor.stream import StreamTransport

__all__ = ["Connector", "Listener", "TransportMaker", "connect_tcp", "listen_socket", "listen_tcp"]

#: How listeners and connectors make a connection's transport: the class
#: itself, or (in trace mode) a tracing one. The reactor chooses.
TransportMaker: TypeAlias = Callable[
    [ReactorPort, socket.socket, ProtocolInterface, Address], StreamTransport
]

log = logging.getLogger("reactor")

#: How many connections one readiness event may accept: enough to empty a
#: burst, few enough that a flood cannot hold the loop for long.
ACCEPTS_PER_EVENT: Final = 64
#: How long accepting pauses after a failure, doubling (up to 1 s) while it
#: keeps failing, back to this after a successful accept.
_MIN_BACKOFF: Final = 0.05
_MAX_BACKOFF: Final = 1.0

# accept() failures that mean "this one connection died before we took it".
_ACCEPT_SKIP = frozenset({errno.ECONNABORTED, errno.EPROTO, errno.EPERM, errno.EINTR})
# accept() failures that mean "no descriptors (or memory) for a new socket".
_ACCEPT_EXHAUSTED = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


def _reserve_fd() -> int:
    """A descriptor held in reserve, to be closed when accept() runs out of them."""
    try:
        return os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return -1


class Listener:
    """A listening socket that makes a protocol and transport per connection.

    It keeps one spare descriptor. When accept() fails for want of
    descriptors, the connection waiting in the backlog would make the
    listening socket readable on every turn (a busy loop) and the client
    would hang. Closing the spare lets one pending connection be accepted
    and closed at once; then the spare is taken back.
    """

    kind = "listener"

    def __init__(
        self,
        reactor: ReactorPort,
        sock: socket.socket,
        factory: FactoryArg,
        make_transport: TransportMaker = StreamTransport,
    ) -> None:
        self._reactor = reactor
        self._sock = sock
        self._fd = sock.fileno()
        self._factory = factory
        self._make_transport = make_transport
        self._closed = False
        self._exhausted = False
        self._paused_handle: Any = None
        self._backoff = _MIN_BACKOFF
        #: Connections accepted; shed for lack of descriptors; refused because
        #: the backend could not watch their socket.
        self.accepted = 0
        self.shed = 0
        self.refused = 0
        #: The bound address (port 0 becomes the port the kernel chose).
        self.address: Address = sock.getsockname()
        # Registering first: it is what can fail (select() refuses a
        # descriptor past FD_SETSIZE), and it must fail before the factory is
        # started or the listener is counted as open.
        reactor.watch_read(self._fd, self._accept_ready)
        reactor.resources.add(self)
        self._spare_fd = _reserve_fd()
        factory_hook(factory, "do_start", reactor)

    def __repr__(self) -> str:
        return f"<Listener {self.address!r}{' closed' if self._closed else ''}>"

    @property
    def port(self) -> int:
        """The bound port (for TCP listeners)."""
        return int(self.address[1])

    @property
    def closed(self) -> bool:
        return self._closed

    def _accept_ready(self) -> None:
        accept = self._sock._accept  # type: ignore[attr-defined]
        family = self._sock.family
        for _ in range(ACCEPTS_PER_EVENT):
            try:
                fd, addr = accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if self._closed:
                    return  # a callback during this burst closed the listener
                if exc.errno in _ACCEPT_SKIP:
                    continue
                if exc.errno in _ACCEPT_EXHAUSTED:
                    self._out_of_descriptors(exc)
                    return
                log.error("%r: accept() failed: %s; pausing accepts briefly", self, exc)
                self._pause_accepting()
                return
            self._backoff = _MIN_BACKOFF  # accepting works: the next pause starts short
            if self._exhausted:
                self._exhausted = False
                log.warning("%r: descriptors available again; accepting (shed %d)", self, self.shed)
                self._spare_reserve()
            sock = socket.socket(family, socket.SOCK_STREAM, 0, fd)
            self._connection(sock, addr)

    def _connection(self, sock: socket.socket, addr: Address) -> None:
        self.accepted += 1
        try:
            sock.setblocking(False)
            set_nodelay(sock)
            protocol = build_protocol(self._factory, addr)
        except Exception as exc:
            self._reactor.report_error(
                {
                    "message": f"{self!r}: could not build a protocol for {addr!r}; "
                    "closing that connection",
                    "exception": exc,
                }
            )
            sock.close()
            return
        if protocol is None:  # the factory refused this connection (Twisted's rule)
            sock.close()
            return
        try:
            self._make_transport(self._reactor, sock, protocol, addr)._start()
        except (ValueError, OSError) as exc:
            # The backend cannot watch this socket (select and an fd at or
            # above FD_SETSIZE): it was closed, and the client sees that.
            self.refused += 1
            if self.refused == 1:
                log.error(
                    "%r: cannot serve a connection from %r: %s (this and later such "
                    "connections are closed at once and counted in listener.refused)",
                    self,
                    addr,
                    exc,
                )

    def _out_of_descriptors(self, exc: OSError) -> None:
        """No descriptor for a new connection: shed pending ones, never spin.

        The reserved spare descriptor is closed so that one pending connection
        can be accepted and closed at once (the client sees the close at once,
        rather than waiting in the backlog), then re-reserved. If no spare can
        be had, accepting pauses for a moment instead.
        """
        if not self._exhausted:
            self._exhausted = True
            log.warning(
                "%r: out of file descriptors (%s); existing connections are still served, "
                "new ones are closed until descriptors free up (raise the limit with "
                "'ulimit -n')",
                self,
                exc.strerror,
            )
        for _ in range(ACCEPTS_PER_EVENT):
            if not self._spare_release():
                break
            try:
                fd, _addr = self._sock._accept()  # type: ignore[attr-defined]
            except (BlockingIOError, InterruptedError):
                self._spare_reserve()
                return
            except OSError:
                self._spare_reserve()
                break
            socket.close(fd)
            self.shed += 1
            self._spare_reserve()
        else:
            return  # shed a full batch; the next readiness event goes on
        self._pause_accepting()

    def _spare_release(self) -> bool:
        """Free the spare descriptor so one pending connection can be shed."""
        if self._spare_fd < 0:
            return False
        os.close(self._spare_fd)
        self._spare_fd = -1
        return True

    def _spare_reserve(self) -> None:
        if self._spare_fd < 0 and not self._closed:
            self._spare_fd = _reserve_fd()

    def _pause_accepting(self) -> None:
        if self._paused_handle is not None or self._closed:
            return
        self._reactor.unwatch_read(self._fd)
        self._paused_handle = self._reactor.call_later(self._backoff, self._resume_accepting)
        self._backoff = min(self._backoff * 2, _MAX_BACKOFF)

    def _resume_accepting(self) -> None:
        self._paused_handle = None
        if not self._closed:
            self._reactor.watch_read(self._fd, self._accept_ready)

    def close(self) -> None:
        """Stop listening. Connections already accepted are not touched."""
        if self._closed:
            return
        self._closed = True
        if self._paused_handle is not None:
            self._paused_handle.cancel()
            self._paused_handle = None
        self._reactor.unwatch_read(self._fd)
        self._sock.close()
        self._spare_release()
        self._reactor.resources.discard(self)
        factory_hook(self._factory, "do_stop", self._reactor)

    def force_close(self) -> None:
        self.close()


def listen_tcp(
    reactor: ReactorPort,
    port: Port,
    factory: FactoryArg,
    host: str | None = "127.0.0.1",
    backlog: int = 1024,
    reuse_port: bool = False,
    make_transport: TransportMaker = StreamTransport,
) -> Listener:
    """Listen on ``host:port`` (port 0 picks a free one; host None: every interface)."""
    number = check_port(port, "listen_tcp()")
    check_factory(factory, "listen_tcp")
    sock = listening_socket(host, number, backlog, reuse_port)
    try:
        return Listener(reactor, sock, factory, make_transport)
    except BaseException:
        sock.close()
        raise


def listen_socket(
    reactor: ReactorPort,
    sock: socket.socket,
    factory: FactoryArg,
    make_transport: TransportMaker = StreamTransport,
) -> Listener:
    """Serve on ``sock``, a stream socket someone else bound and made listen.

    For a socket made before this reactor: inherited across ``fork()`` from a
    supervisor (``reactor.workers``) or passed in by a service manager. The
    listener takes it over (made non-blocking; closed with the listener).
    ValueError if it is not a listening stream socket.
    """
    check_factory(factory, "listen_socket")
    if not isinstance(sock, socket.socket):
        raise ValueError(f"listen_socket(): expected a socket.socket, not {sock!r}")
    if sock.fileno() < 0:
        raise ValueError("listen_socket(): the socket is closed")
    if sock.type != socket.SOCK_STREAM:
        raise ValueError(f"listen_socket(): {sock!r} is not a stream socket")
    accepting = getattr(socket, "SO_ACCEPTCONN", None)
    if accepting is not None and not sock.getsockopt(socket.SOL_SOCKET, accepting):
        raise ValueError(f"listen_socket(): {sock!r} is not listening; call listen() on it first")
    sock.setblocking(False)
    return Listener(reactor, sock, factory, make_transport)


class Connector:
    """One outgoing connection attempt: resolving, then connecting, then done.

    On success the factory's protocol gets ``connection_made`` and
    ``on_connect(protocol)`` is called. On failure (refused, timed out, name
    not found, cancelled) the reason goes to the factory's
    ``client_connection_failed(connector, reason)`` and to ``on_failure(reason)``;
    it is never raised out of the loop, and is reported on a later turn, never
    from inside ``connect_tcp()``.

    The factory's ``do_start()`` runs when the attempt starts; its ``do_stop()``
    when the attempt fails or, after a success, when the connection ends.
    """

    kind = "connector"

    def __init__(
        self,
        reactor: ReactorPort,
        host: str,
        port: int,
        factory: FactoryArg,
        timeout: float | None,
        on_connect: Callable[[Any], object] | None,
        on_failure: Callable[[BaseException], object] | None,
        make_transport: TransportMaker = StreamTransport,
    ) -> None:
        self._reactor = reactor
        self._make_transport = make_transport
        self.host = host
        self.port = port
        self.address = (host, port)
        self._factory = factory
        self._on_connect = on_connect
        self._on_failure = on_failure
        #: "resolving", "connecting", "connected" or "failed".
        self.state = "resolving"
        self.protocol: Any = None
        self.transport: StreamTransport | None = None
        self.reason: BaseException | None = None
        self._sock: socket.socket | None = None
        self._addrs: list[tuple[int, Any]] = []
        self._last_error: BaseException | None = None
        self._timer = (
            reactor.call_later(timeout, self._timed_out, timeout) if timeout is not None else None
        )
        reactor.resources.add(self)
        factory_hook(factory, "do_start", reactor)

    def __repr__(self) -> str:
        return f"<Connector {self.host}:{self.port} {self.state}>"

    def _start(self) -> None:
        family = ip_family(self.host)
        if family is not None:
            self._addrs = [(family, (self.host, self.port))]
            self._try_next()
            return
        reactor = self._reactor
        future = reactor.run_in_thread(
            reactor.getaddrinfo, self.host, self.port, 0, socket.SOCK_STREAM
        )
        future.add_done_callback(self._resolved_in_thread)

    def _resolved_in_thread(self, future: Any) -> None:
        """In the resolver's thread: hand the answer to the loop (if it still runs)."""
        try:
            self._reactor.call_from_thread(self._resolved, future)
        except RuntimeError:
            pass  # the reactor was closed meanwhile: nobody is waiting

    def _resolved(self, future: Any) -> None:
        if self.state != "resolving":
            return  # cancelled or timed out meanwhile
        exc = future.exception()
        if exc is not None:
            if isinstance(exc, socket.gaierror):
                exc = socket.gaierror(exc.errno, f"cannot resolve {self.host!r}: {exc.strerror}")
            self._fail(exc)
            return
        self._addrs = [(info[0], info[4]) for info in future.result()]
        self._try_next()

    def _try_next(self) -> None:
        self.state = "connecting"
        while self._addrs:
            family, sockaddr = self._addrs.pop(0)
            try:
                # socket() fails with EMFILE when out of descriptors, or for a
                # family the kernel lacks: this address's failure, not the loop's.
                sock = socket.socket(family, socket.SOCK_STREAM)
            except OSError as exc:
                self._last_error = exc
                continue
            sock.setblocking(False)
            err = sock.connect_ex(sockaddr)
            # EINTR: a non-blocking connect carries on in the background, like
            # EINPROGRESS. EAGAIN is not "in progress" for TCP (only for Unix
            # sockets): the attempt never started, so it is this address's failure.
            if err in (0, errno.EINPROGRESS, errno.EINTR):
                self._watch_connect(sock)
                return
            sock.close()
            self._last_error = connect_error(err, self.host, self.port)
        self._fail(self._last_error or OSError(f"no address to connect to for {self.host!r}"))

    def _watch_connect(self, sock: socket.socket) -> None:
        """Wait for the connect to finish (the socket turns writable)."""
        try:
            self._reactor.watch_write(sock.fileno(), self._connect_ready)
        except (ValueError, OSError) as exc:  # select: an fd at or above FD_SETSIZE
            sock.close()
            self._fail(exc)
            return
        self._sock = sock

    def _connect_ready(self) -> None:
        sock = self._sock
        assert sock is not None
        self._reactor.unwatch_write(sock.fileno())
        err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            self._sock = None
            sock.close()
            self._last_error = connect_error(err, self.host, self.port)
            self._try_next()
            return
        self._sock = None
        if self._timer is not None:
            self._timer.cancel()
        try:
            set_nodelay(sock)
            peer = sock.getpeername()
            protocol = build_protocol(self._factory, peer)
        except Exception as exc:
            sock.close()
            self._fail(exc)
            return
        if protocol is None:
            sock.close()
            self._fail(ConnectionRefusedError("the factory built no protocol"))
            return
        self.state = "connected"
        reactor = self._reactor
        reactor.resources.discard(self)
        self.protocol = protocol
        self.transport = self._make_transport(reactor, sock, protocol, peer)
        # The factory stays in use until the connection ends (do_start/do_stop pair).
        factory = self._factory
        self.transport._on_lost = lambda: factory_hook(factory, "do_stop", reactor)
        try:
            self.transport._start()
        except (ValueError, OSError) as exc:  # the backend cannot watch it: closed
            self.transport = self.protocol = None
            self._fail(exc)
            return
        if self._on_connect is not None:
            try:
                self._on_connect(protocol)
            except Exception as exc:
                reactor.report_error(
                    {"message": "exception in on_connect callback", "exception": exc}
                )

    def _timed_out(self, timeout: float) -> None:
        if self.state in ("resolving", "connecting"):
            self._fail(
                TimeoutError(f"connecting to {self.host}:{self.port} timed out after {timeout} s")
            )

    def cancel(self) -> None:
        """Give up the attempt; reported as a failure with ConnectionAbortedError."""
        if self.state in ("resolving", "connecting"):
            self._fail(ConnectionAbortedError(f"connection to {self.host}:{self.port} cancelled"))

    def force_close(self) -> None:
        self.cancel()

    def _fail(self, reason: BaseException) -> None:
        self.state = "failed"
        self.reason = reason
        self._addrs = []
        if self._timer is not None:
            self._timer.cancel()
        if self._sock is not None:
            self._reactor.unwatch_write(self._sock.fileno())
            self._sock.close()
            self._sock = None
        self._reactor.resources.discard(self)
        # Report from the loop, never from inside connect_tcp() itself.
        self._reactor.call_soon(self._report_failure, reason)

    def _report_failure(self, reason: BaseException) -> None:
        told = False
        failed = getattr(self._factory, "client_connection_failed", None)
        for callback, args in ((failed, (self, reason)), (self._on_failure, (reason,))):
            if callback is not None:
                told = True
                try:
                    callback(*args)
                except Exception as exc:
                    self._reactor.report_error(
                        {"message": "exception in a connection-failure callback", "exception": exc}
                    )
        if not told:
            log.warning("connection to %s:%s failed: %s", self.host, self.port, reason)
        factory_hook(self._factory, "do_stop", self._reactor)


def connect_tcp(
    reactor: ReactorPort,
    host: str,
    port: Port,
    factory: FactoryArg,
    *,
    timeout: float | None = 30.0,
    on_connect: Callable[[Any], object] | None = None,
    on_failure: Callable[[BaseException], object] | None = None,
    make_transport: TransportMaker = StreamTransport,
) -> Connector:
    """Start connecting; returns at once. See :class:`Connector`."""
    number = check_port(port, "connect_tcp()")
    check_factory(factory, "connect_tcp")
    connector = Connector(
        reactor, host, number, factory, timeout, on_connect, on_failure, make_transport
    )
    connector._start()
    return connector
