"""The Reactor users import: the loop core plus networking, signals and stats.

:class:`~reactor.loop.EventLoop` knows no transport. This class is where the
pieces meet, the way Twisted's ``posixbase`` assembles its reactor: each
network method is a checked call into the module that owns that transport
(``tcp.py``, ``unix.py``, ``udp.py``); signals come from ``signals.py``;
trace mode swaps in tracing parts and debug mode a checking subclass, so
neither costs anything when off.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from ssl import SSLContext
from typing import Any, SupportsIndex, TypedDict, TypeVar, cast

from reactor import debug, tcp, tls, udp, unix
from reactor._build import COMPILED
from reactor.backends import Poller, make_poller
from reactor.factory import check_factory
from reactor.fdwatch import HasFileno
from reactor.interfaces import DatagramProtocolInterface, FactoryArg
from reactor.loop import EventLoop
from reactor.resources import Connection, ResourceTable
from reactor.signals import SignalHandlers
from reactor.sockets import Port, Seconds, check_timeout
from reactor.stream import StreamTransport
from reactor.tcp import Connector, Listener, TransportMaker
from reactor.timers import Handle, TimerHandle
from reactor.trace import (
    TracingPoller,
    TracingTimerQueue,
    TracingTransportMaker,
    enable_trace_output,
    trace_log,
)
from reactor.udp import DatagramTransport
from reactor.unix import UnixConnector, UnixListener

__all__ = ["DebugReactor", "Reactor", "ReactorStats"]

_T = TypeVar("_T")


class ReactorStats(TypedDict):
    """What :meth:`Reactor.stats` returns."""

    backend: str
    iterations: int
    events: int
    callbacks: int
    timers_scheduled: int
    timers_fired: int
    timers_cancelled: int
    timers_pending: int
    registered_fds: int
    connections: int
    datagram_endpoints: int
    listeners: int
    lingering: int
    resources: int
    bytes_in: int
    bytes_out: int
    longest_iteration: float


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


class Reactor(EventLoop):
    """An event loop with TCP, Unix-socket and UDP transports, signals and stats.

    Make as many as you like; each runs in one thread at a time.

    ``backend`` picks the readiness mechanism by name ("epoll", "kqueue",
    "poll", "select") or takes a ready-made poller; by default
    ``$REACTOR_BACKEND``, else the best one available. ``trace`` logs one
    line per state change of the loop and of each connection (default:
    ``$REACTOR_TRACE``).
    ``debug`` warns about slow callbacks, wrong-thread calls and connections
    left open (default: ``$REACTOR_DEBUG``); ``slow_callback_duration`` is
    what counts as slow there, in seconds. ``close_timeout``: after
    ``transport.close()``, a stream connection whose write buffer has not
    drained within this many seconds (the peer stopped reading) is aborted,
    so it cannot hold its slot forever; ``transport.set_close_timeout()``
    changes it per connection.
    """

    #: The resolver connect_tcp() runs in a worker thread (replace it on an
    #: instance to fake DNS in tests); socket.getaddrinfo's signature.
    getaddrinfo: Callable[..., list[tuple[Any, ...]]] = staticmethod(socket.getaddrinfo)

    def __new__(cls, *args: Any, debug: bool | None = None, **kwargs: Any) -> Reactor:
        # Debug mode is the subclass below; choosing it here keeps the plain
        # Reactor free of any debug check. (Written as a call back into this
        # __new__ so that ``super().__new__(cls)`` is the only allocation:
        # the form mypyc compiles for a subclass too.)
        if cls is Reactor and (_env_flag("REACTOR_DEBUG") if debug is None else debug):
            return Reactor.__new__(DebugReactor)
        return super().__new__(cls)

    def __init__(
        self,
        backend: str | Poller | None = None,
        *,
        trace: bool | None = None,
        debug: bool | None = None,
        slow_callback_duration: float = 0.1,
        close_timeout: Seconds = 30.0,
    ) -> None:
        self.close_timeout = check_timeout(close_timeout, "close_timeout")
        """Seconds a closed connection may take to flush its buffer before it is aborted."""
        poller = make_poller(backend) if backend is None or isinstance(backend, str) else backend
        self.backend: str = poller.name
        """The name of the readiness backend in use."""
        self.trace: bool = _env_flag("REACTOR_TRACE") if trace is None else trace
        """Whether trace mode is on: one log line per state change (polls, timers,
        each connection's reads, writes, water marks, closes and TLS steps)."""
        self.debug: bool = _env_flag("REACTOR_DEBUG") if debug is None else debug
        """Whether debug mode is on: warnings about slow callbacks and misuse."""
        self.slow_callback_duration = slow_callback_duration
        """In debug mode, callbacks and iterations slower than this (seconds) are logged."""
        timers = None
        # How listeners and connectors make transports: the class itself, or
        # in trace mode tracing ones that also say how the connection began.
        self._accepted: TransportMaker = StreamTransport
        self._connected: TransportMaker = StreamTransport
        self._datagram: udp.DatagramMaker = DatagramTransport
        if self.trace:
            poller = TracingPoller(poller, self)
            timers = TracingTimerQueue()
            tracer = TracingTransportMaker()
            self._accepted = tracer.maker("accepted")
            self._connected = tracer.maker("connected to")
            self._datagram = tracer.datagram_maker()
            enable_trace_output()
            build = "compiled (mypyc)" if COMPILED else "pure-Python"
            trace_log.info("trace on: %s build, backend %s", build, poller.name)
        self._resources = ResourceTable()
        super().__init__(poller, timers)
        self._signals = SignalHandlers(self)
        self._executor: ThreadPoolExecutor | None = None
        self._pending_futures: set[Future[Any]] = set()  # run_from_thread's, not yet run
        if self.debug:
            self._slow_threshold = slow_callback_duration

    @property
    def resources(self) -> ResourceTable:
        """What is open on this reactor: transports, listeners, connectors."""
        return self._resources

    # ---------------------------------------------------------------- networking

    def listen_tcp(
        self,
        port: Port,
        factory: FactoryArg,
        host: str | None = "127.0.0.1",
        backlog: int = 1024,
        reuse_port: bool = False,
        *,
        ssl: SSLContext | None = None,
        ssl_handshake_timeout: float = tls.DEFAULT_SSL_HANDSHAKE_TIMEOUT,
        ssl_shutdown_timeout: float = tls.DEFAULT_SSL_SHUTDOWN_TIMEOUT,
    ) -> Listener:
        """Accept TCP connections on ``host:port``; each gets a protocol from ``factory``.

        ``port=0`` picks a free port (read it from ``listener.port``); ``host``
        may be IPv4 or IPv6, and None listens on every interface. ``factory`` is
        a Factory (``build_protocol(addr)``) or a zero-argument callable such as
        a Protocol class. Raises OSError with a clear message if the address is
        in use, ValueError for a port outside 0-65535.

        ``ssl``, an ``ssl.SSLContext`` holding the server's certificate, makes
        every connection TLS: the protocol's ``connection_made`` comes after the
        handshake, which must finish within ``ssl_handshake_timeout`` seconds;
        ``ssl_shutdown_timeout`` bounds the wait for the peer's close_notify
        after ``close()`` (0: do not wait).
        """
        self._check_open()
        if ssl is not None:
            factory = self._tls_server(
                factory, ssl, "listen_tcp()", ssl_handshake_timeout, ssl_shutdown_timeout
            )
        return tcp.listen_tcp(self, port, factory, host, backlog, reuse_port, self._accepted)

    def listen_socket(
        self,
        sock: socket.socket,
        factory: FactoryArg,
        *,
        ssl: SSLContext | None = None,
        ssl_handshake_timeout: float = tls.DEFAULT_SSL_HANDSHAKE_TIMEOUT,
        ssl_shutdown_timeout: float = tls.DEFAULT_SSL_SHUTDOWN_TIMEOUT,
    ) -> Listener:
        """Accept connections on ``sock``, a stream socket already bound and listening.

        For a socket made elsewhere: inherited across ``fork()`` from a
        supervisor (:func:`reactor.serve_workers` gives each worker its own),
        or passed in by a service manager. The listener takes it over: it is
        made non-blocking and closed when the listener closes. Raises
        ValueError if ``sock`` is not a listening stream socket. ``ssl`` and
        the timeouts are as for :meth:`listen_tcp`.
        """
        self._check_open()
        if ssl is not None:
            factory = self._tls_server(
                factory, ssl, "listen_socket()", ssl_handshake_timeout, ssl_shutdown_timeout
            )
        return tcp.listen_socket(self, sock, factory, self._accepted)

    def connect_tcp(
        self,
        host: str,
        port: Port,
        factory: FactoryArg,
        *,
        timeout: float | None = 30.0,
        on_connect: Callable[[Any], object] | None = None,
        on_failure: Callable[[BaseException], object] | None = None,
        ssl: SSLContext | bool | None = None,
        server_hostname: str | None = None,
        ssl_handshake_timeout: float = tls.DEFAULT_SSL_HANDSHAKE_TIMEOUT,
        ssl_shutdown_timeout: float = tls.DEFAULT_SSL_SHUTDOWN_TIMEOUT,
    ) -> Connector:
        """Connect to ``host:port`` without blocking; returns a :class:`Connector`.

        A host name is resolved in a worker thread. Success calls the
        protocol's ``connection_made`` and then ``on_connect(protocol)``; a
        failure (refused, timed out, name not found) goes to the factory's
        ``client_connection_failed(connector, reason)`` and ``on_failure(reason)``.
        Bad arguments (a port outside 0-65535, a protocol instance instead of
        a class or factory) raise at the call instead.

        ``ssl=True`` (the default context: the certificate and the host name
        are verified) or an ``ssl.SSLContext`` makes it TLS; success is then
        the end of the handshake, and a failed handshake (an untrusted
        certificate, a wrong host name) is a failure like a refused
        connection. ``server_hostname`` is the name checked and sent as SNI
        (default: ``host``).
        """
        self._check_open()
        if ssl is not None and ssl is not False:
            tls_factory = self._tls_client(
                factory,
                ssl,
                "connect_tcp()",
                server_hostname or host,
                ssl_handshake_timeout,
                ssl_shutdown_timeout,
                on_connect,
                on_failure,
            )
            factory, on_connect, on_failure = tls_factory, None, None
        elif server_hostname is not None:
            raise ValueError("connect_tcp(): server_hostname is only meaningful with ssl=")
        connector = tcp.connect_tcp(
            self,
            host,
            port,
            factory,
            timeout=timeout,
            on_connect=on_connect,
            on_failure=on_failure,
            make_transport=self._connected,
        )
        if isinstance(factory, tls.TLSFactory):
            factory.connector = connector
        return connector

    def listen_unix(
        self,
        path: str,
        factory: FactoryArg,
        backlog: int = 1024,
        *,
        ssl: SSLContext | None = None,
        ssl_handshake_timeout: float = tls.DEFAULT_SSL_HANDSHAKE_TIMEOUT,
        ssl_shutdown_timeout: float = tls.DEFAULT_SSL_SHUTDOWN_TIMEOUT,
    ) -> UnixListener:
        """Accept connections on the Unix socket ``path``, like :meth:`listen_tcp`.

        A stale socket file left by a dead server is replaced; a path a live
        server listens on is refused; the file is removed when the listener
        closes. ``ssl`` and the timeouts are as for :meth:`listen_tcp`.
        """
        self._check_open()
        if ssl is not None:
            factory = self._tls_server(
                factory, ssl, "listen_unix()", ssl_handshake_timeout, ssl_shutdown_timeout
            )
        return unix.listen_unix(self, path, factory, backlog, self._accepted)

    def connect_unix(
        self,
        path: str,
        factory: FactoryArg,
        *,
        timeout: float | None = 30.0,
        on_connect: Callable[[Any], object] | None = None,
        on_failure: Callable[[BaseException], object] | None = None,
        ssl: SSLContext | bool | None = None,
        server_hostname: str | None = None,
        ssl_handshake_timeout: float = tls.DEFAULT_SSL_HANDSHAKE_TIMEOUT,
        ssl_shutdown_timeout: float = tls.DEFAULT_SSL_SHUTDOWN_TIMEOUT,
    ) -> UnixConnector:
        """Connect to the Unix socket ``path``, like :meth:`connect_tcp`.

        With ``ssl``, pass ``server_hostname`` (a path is no host name to check
        the certificate against) or a context with ``check_hostname`` off.
        """
        self._check_open()
        if ssl is not None and ssl is not False:
            context = tls.client_context(ssl, "connect_unix()")
            if server_hostname is None and context.check_hostname:
                raise ValueError(
                    "connect_unix(ssl=...) needs server_hostname=: a socket path is not a "
                    "host name to check the server's certificate against (or pass a context "
                    "with check_hostname=False)"
                )
            tls_factory = self._tls_client(
                factory,
                context,
                "connect_unix()",
                server_hostname,
                ssl_handshake_timeout,
                ssl_shutdown_timeout,
                on_connect,
                on_failure,
            )
            factory, on_connect, on_failure = tls_factory, None, None
        elif server_hostname is not None:
            raise ValueError("connect_unix(): server_hostname is only meaningful with ssl=")
        connector = unix.connect_unix(
            self,
            path,
            factory,
            timeout=timeout,
            on_connect=on_connect,
            on_failure=on_failure,
            make_transport=self._connected,
        )
        if isinstance(factory, tls.TLSFactory):
            factory.connector = connector
        return connector

    def _tls_server(
        self, factory: FactoryArg, context: object, what: str, handshake: float, shutdown: float
    ) -> FactoryArg:
        """``factory`` wrapped so that each connection it builds speaks TLS (a server)."""
        return tls.TLSFactory(  # type: ignore[return-value]
            self,
            check_factory(factory, what.rstrip("()")),
            tls.server_context(context, what),
            server_side=True,
            ssl_handshake_timeout=check_timeout(handshake, "ssl_handshake_timeout"),
            ssl_shutdown_timeout=tls.check_shutdown_timeout(shutdown, "ssl_shutdown_timeout"),
        )

    def _tls_client(
        self,
        factory: FactoryArg,
        context: object,
        what: str,
        server_hostname: str | None,
        handshake: float,
        shutdown: float,
        on_connect: Callable[[Any], object] | None,
        on_failure: Callable[[BaseException], object] | None,
    ) -> FactoryArg:
        """``factory`` wrapped for a TLS client; the callbacks fire after the handshake."""
        return tls.TLSFactory(  # type: ignore[return-value]
            self,
            check_factory(factory, what.rstrip("()")),
            tls.client_context(context, what),
            server_side=False,
            server_hostname=server_hostname,
            ssl_handshake_timeout=check_timeout(handshake, "ssl_handshake_timeout"),
            ssl_shutdown_timeout=tls.check_shutdown_timeout(shutdown, "ssl_shutdown_timeout"),
            on_connect=on_connect,
            on_failure=on_failure,
        )

    def listen_udp(
        self,
        port: Port,
        protocol: DatagramProtocolInterface,
        host: str | None = "127.0.0.1",
        *,
        broadcast: bool = False,
        reuse_port: bool = False,
    ) -> DatagramTransport:
        """Bind a UDP endpoint; ``protocol.datagram_received(data, addr)`` gets each datagram.

        ``protocol`` is an instance (one endpoint, one protocol).
        ``connection_made`` runs on the next turn. ``broadcast`` sets
        SO_BROADCAST; ``reuse_port`` lets several endpoints share the port.
        """
        self._check_open()
        return udp.listen_udp(
            self,
            port,
            protocol,
            host,
            broadcast=broadcast,
            reuse_port=reuse_port,
            make_transport=self._datagram,
        )

    def connect_udp(
        self,
        host: str,
        port: Port,
        protocol: DatagramProtocolInterface,
        *,
        local_host: str | None = None,
        local_port: Port = 0,
        broadcast: bool = False,
    ) -> DatagramTransport:
        """A UDP endpoint connected to ``host:port`` (an IP address).

        ``sendto(data)`` needs no address, and an ICMP port-unreachable from the
        peer reaches ``protocol.error_received``.
        """
        self._check_open()
        return udp.connect_udp(
            self,
            host,
            port,
            protocol,
            local_host=local_host,
            local_port=local_port,
            broadcast=broadcast,
            make_transport=self._datagram,
        )

    # ------------------------------------------------------------------- threads

    def run_in_thread(self, fn: Callable[..., _T], *args: Any) -> Future[_T]:
        """Run blocking ``fn(*args)`` in a worker thread; returns its ``concurrent.futures.Future``.

        To act on the result in the loop, hand it back with
        ``future.add_done_callback(lambda f: reactor.call_from_thread(done, f))``.
        """
        self._check_open()
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=4, thread_name_prefix="reactor-worker")
        return self._executor.submit(fn, *args)

    def run_from_thread(self, fn: Callable[..., _T], *args: Any) -> Future[_T]:
        """From another thread, run ``fn(*args)`` in the loop; returns a Future of its result.

        The other thread may block on ``future.result()`` while the loop runs
        (Twisted's ``blockingCallFromThread``). An exception goes to the future,
        not to the exception sink; a reactor closed first cancels the future.
        """
        future: Future[_T] = Future()
        pending = self._pending_futures

        def run() -> None:
            pending.discard(future)
            if not future.set_running_or_notify_cancel():
                return
            try:
                future.set_result(fn(*args))
            except BaseException as exc:  # delivered to the waiting thread
                future.set_exception(exc)

        pending.add(future)  # set.add is atomic: safe from any thread
        try:
            self.call_from_thread(run)
        except BaseException:
            pending.discard(future)
            raise
        return future

    # ------------------------------------------------------------------- signals

    def add_signal_handler(
        self, sig: SupportsIndex, callback: Callable[..., object], *args: Any
    ) -> None:
        """Run ``callback(*args)`` as an ordinary callback when signal ``sig`` arrives.

        The C-level handler writes the signal number to a socket the loop
        watches (``signal.set_wakeup_fd``). Main thread only (Python delivers
        signals there). The previous wake-up fd and Python handler are
        restored by :meth:`remove_signal_handler`.
        """
        self._check_open()
        self._signals.add(sig, callback, args)

    def remove_signal_handler(self, sig: int) -> bool:
        """Remove the handler for ``sig`` and restore what was there before.

        Returns whether there was one. Main thread only.
        """
        return self._signals.remove(sig)

    # ----------------------------------------------------------------- lifecycle

    def close(self) -> None:
        """Release everything: open transports, listeners and connectors, signal
        handlers, the backend, the waker and worker threads (a thread waiting on
        a run_from_thread() future sees it cancelled). Not while running."""
        if self._running:
            raise RuntimeError("close() called while the reactor is running; stop() it first")
        if self._closed:
            return
        if self._signals.handlers:
            # Check before releasing anything, so a failed close() can be retried.
            self._signals.close()
        for resource in self._resources.all():
            try:
                resource.force_close()
            except Exception as exc:
                self._callback_error(resource, exc)
        super().close()  # runs the connection_lost callbacks those closes queued
        for future in list(self._pending_futures):
            future.cancel()  # a thread may be waiting on it
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None

    def stats(self) -> ReactorStats:
        """Counters about this reactor, cheap enough to keep always on.

        ``iterations`` (loop turns), ``events`` (readiness events dispatched),
        ``callbacks`` (call_soon/timer/thread callbacks run), ``timers_scheduled``,
        ``timers_fired``, ``timers_cancelled``, ``timers_pending``,
        ``registered_fds``, ``connections`` (open stream connections),
        ``datagram_endpoints``, ``listeners``, ``lingering`` (closed connections
        waiting for the peer's FIN), ``resources`` (everything close() would
        release), ``bytes_in``, ``bytes_out`` (stream payload bytes),
        ``longest_iteration`` (seconds, the slowest turn's work, not counting
        the wait in poll).
        """
        table = self._resources
        kinds = {"connection": 0, "listener": 0, "datagram": 0, "connector": 0}
        bytes_in = table.bytes_in_closed
        bytes_out = table.bytes_out_closed
        for resource in table.open:
            kind = resource.kind
            kinds[kind] += 1
            if kind == "connection":
                connection = cast(Connection, resource)
                bytes_in += connection.bytes_received
                bytes_out += connection.bytes_sent
        timers = self._timers
        return {
            "backend": self.backend,
            "iterations": self._iterations,
            "events": self._events,
            "callbacks": self._callbacks,
            "timers_scheduled": timers.scheduled,
            "timers_fired": timers.fired,
            "timers_cancelled": timers.cancelled_total,
            "timers_pending": len(timers),
            "registered_fds": len(self._fds.registered),
            "connections": kinds["connection"],
            "datagram_endpoints": kinds["datagram"],
            "listeners": kinds["listener"],
            "lingering": len(table.lingering),
            "resources": len(table),
            "bytes_in": bytes_in,
            "bytes_out": bytes_out,
            "longest_iteration": self._longest_iteration,
        }


class DebugReactor(Reactor):
    """What ``Reactor(debug=True)`` makes: a Reactor that checks how it is used.

    Each scheduling and fd-watching method times the callback it is given
    (a warning when one call is slower than ``slow_callback_duration``) and
    checks the calling thread, then defers to the Reactor's own; slow loop
    turns and connections left open at close() are reported too. The checks
    are in ``reactor/debug.py``; this class only puts them in the path, so
    the plain Reactor has none. Make it with ``Reactor(debug=True)`` (or
    ``REACTOR_DEBUG=1``).
    """

    def call_soon(self, callback: Callable[..., object], *args: Any) -> Handle:
        debug.check_thread(self, "call_soon")
        return super().call_soon(debug.timed(callback, self.slow_callback_duration), *args)

    def call_later(self, delay: float, callback: Callable[..., object], *args: Any) -> TimerHandle:
        debug.check_thread(self, "call_later")
        timed = debug.timed(callback, self.slow_callback_duration)
        return super().call_later(delay, timed, *args)

    def call_at(self, when: float, callback: Callable[..., object], *args: Any) -> TimerHandle:
        debug.check_thread(self, "call_at")
        return super().call_at(when, debug.timed(callback, self.slow_callback_duration), *args)

    def call_from_thread(self, callback: Callable[..., object], *args: Any) -> Handle:
        timed = debug.timed(callback, self.slow_callback_duration)
        return super().call_from_thread(timed, *args)

    def add_reader(self, fd: int | HasFileno, callback: Callable[..., object], *args: Any) -> None:
        debug.check_thread(self, "add_reader")
        super().add_reader(fd, debug.timed_partial(callback, args, self.slow_callback_duration))

    def add_writer(self, fd: int | HasFileno, callback: Callable[..., object], *args: Any) -> None:
        debug.check_thread(self, "add_writer")
        super().add_writer(fd, debug.timed_partial(callback, args, self.slow_callback_duration))

    def remove_reader(self, fd: int | HasFileno) -> bool:
        debug.check_thread(self, "remove_reader")
        return super().remove_reader(fd)

    def remove_writer(self, fd: int | HasFileno) -> bool:
        debug.check_thread(self, "remove_writer")
        return super().remove_writer(fd)

    def watch_read(self, fd: int, callback: Callable[[], object]) -> None:
        debug.check_thread(self, "watch_read")
        super().watch_read(fd, debug.timed(callback, self.slow_callback_duration))

    def watch_write(self, fd: int, callback: Callable[[], object]) -> None:
        debug.check_thread(self, "watch_write")
        super().watch_write(fd, debug.timed(callback, self.slow_callback_duration))

    def unwatch_read(self, fd: int) -> bool:
        debug.check_thread(self, "unwatch_read")
        return super().unwatch_read(fd)

    def unwatch_write(self, fd: int) -> bool:
        debug.check_thread(self, "unwatch_write")
        return super().unwatch_write(fd)

    def _slow_iteration(self, took: float) -> None:
        debug.warn_slow_iteration(took, self.slow_callback_duration)

    def close(self) -> None:
        if not self._closed and not self._running:
            debug.warn_never_closed(list(self._resources.open))
        super().close()
