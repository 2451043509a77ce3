"""``EventLoop``: an asyncio event loop whose I/O, timers and turn are a reactor's.

It is asyncio's own selector loop (``asyncio.SelectorEventLoop``) with four
things routed to a :class:`~reactor.Reactor`:

* **fd watching**: ``loop._selector`` is a :class:`ReactorSelector`, so every
  reader and writer asyncio registers (its transports, ``sock_*`` methods,
  ``add_reader``, the self-pipe, subprocess pipes) is watched by the reactor's
  backend, in the same poll as the reactor's native transports.
* **timers**: ``call_at``/``call_later`` put their timers on the reactor's
  timer heap; when one is due, the reactor appends its asyncio handle to
  asyncio's ready queue (a C call, no Python frame).
* **the turn**: ``_run_once`` runs one reactor turn (poll, native fd
  callbacks, due timers, native callbacks), then asyncio's ready queue as it
  stood after the poll. So asyncio callbacks run in asyncio's order: callbacks
  queued earlier, then fd handles, then due timers, and anything they queue
  waits for the next turn.
* **run/stop**: while the loop runs, the reactor counts as running in this
  thread (``reactor.is_running()``, its thread checks), and ``reactor.stop()``
  stops the asyncio loop too.

Connected TCP and Unix sockets, plain and TLS, are then carried by the
reactor's own transports (``reactor/aio/transport.py``, ``reactor/aio/tls.py``).
Everything else (listening, happy eyeballs, streams, subprocesses, signals,
the executor, DNS) is asyncio's code, unchanged. The private asyncio names this
relies on are listed in ``docs/aio.md``.
"""

from __future__ import annotations

import asyncio
import math
import socket
import ssl
import sys
import threading
import time
from asyncio.log import logger as _asyncio_logger
from collections import deque
from collections.abc import Callable
from contextvars import Context
from typing import Any, TypeVar

from reactor.aio.selector import ReactorSelector
from reactor.aio.tls import NativeSSLTransport, check_ssl_timeouts, default_client_context
from reactor.aio.transport import AioPort, NativeTransport
from reactor.reactor import Reactor
from reactor.timers import TimerHandle as _ReactorTimer

__all__ = ["EventLoop"]

_T = TypeVar("_T")
_INF = math.inf


class _Timer(asyncio.TimerHandle):
    """asyncio's timer handle, plus the reactor timer that fires it."""

    __slots__ = ("_entry",)

    _entry: _ReactorTimer | None

    def _run(self) -> None:
        # The reactor's entry holds this handle: let go of it once fired, so
        # that a fired timer and what it refers to are freed at once.
        self._entry = None
        super()._run()


# asyncio's messages name handles by their class (debug mode's "Executing <TimerHandle ...>").
_Timer.__name__ = _Timer.__qualname__ = "TimerHandle"


def _format_handle(handle: asyncio.Handle) -> str:
    """How debug mode names a slow callback: a task step by its task, as asyncio does."""
    owner = getattr(getattr(handle, "_callback", None), "__self__", None)
    if isinstance(owner, asyncio.Task):
        return repr(owner)
    return repr(handle)


class EventLoop(asyncio.SelectorEventLoop):
    """A complete asyncio event loop on a :class:`~reactor.Reactor`.

    ``EventLoop()`` makes a reactor (``backend`` picks the readiness
    mechanism by name, as ``Reactor(backend=...)`` does) and closes it when
    the loop closes. ``EventLoop(reactor=r)`` runs on a reactor you made;
    closing the loop then leaves ``r`` open. Either way ``loop.reactor`` is
    that reactor: native Protocol servers (``loop.reactor.listen_tcp``) and
    coroutines share one loop and one thread.
    """

    # asyncio's private state this class reads (BaseEventLoop's attributes).
    _ready: deque[asyncio.Handle]
    _stopping: bool
    _debug: bool
    _current_handle: asyncio.Handle | None
    slow_callback_duration: float
    # Until asyncio's __init__ sets it: an EventLoop whose construction was
    # refused is "closed", so asyncio's __del__ has nothing to warn about.
    _closed = True

    def __init__(
        self,
        reactor: Reactor | None = None,
        backend: str | None = None,
        *,
        native_transports: bool = True,
    ) -> None:
        if reactor is not None and backend is not None:
            raise ValueError(
                "give EventLoop either a reactor or a backend, not both: "
                "the reactor's backend is fixed when it is made"
            )
        if reactor is None:
            reactor = Reactor(backend)
            self._owns_reactor = True
        else:
            if not isinstance(reactor, Reactor):
                raise TypeError(f"reactor must be a reactor.Reactor, not {type(reactor).__name__}")
            if reactor.is_closed():
                raise RuntimeError("that reactor is closed; make a new Reactor()")
            self._owns_reactor = False
        self._reactor = reactor
        selector = ReactorSelector(reactor)
        try:
            super().__init__(selector)
        except BaseException:
            self._closed = True  # half made: nothing for asyncio's __del__ to close
            if self._owns_reactor:
                reactor.close()
            raise
        # Nothing is reported ready before the first turn, so the selector
        # can be given the ready queue (made by __init__) only now.
        selector.attach(self, self._ready)
        self._native_transports = native_transports
        self._port = AioPort(self, reactor)
        # The reactor's timers fire asyncio handles by appending them here.
        self._fire = self._ready.append
        # One exception sink: errors in native callbacks go to this loop's
        # handler (set_exception_handler), unless the reactor has its own.
        self._routed_errors = reactor._exception_handler is None
        if self._routed_errors:
            reactor.call_exception_handler = self.call_exception_handler

    @property
    def reactor(self) -> Reactor:
        """The :class:`~reactor.Reactor` this loop runs on."""
        return self._reactor

    def __repr__(self) -> str:
        return (
            f"<{type(self).__name__} backend={self._reactor.backend} "
            f"running={self.is_running()} closed={self.is_closed()} debug={self.get_debug()}>"
        )

    # -------------------------------------------------------------- transports

    def _make_socket_transport(
        self,
        sock: socket.socket,
        protocol: asyncio.BaseProtocol,
        waiter: asyncio.Future[None] | None = None,
        *,
        extra: dict[str, Any] | None = None,
        server: asyncio.Server | None = None,
    ) -> asyncio.Transport:
        """A connected socket's transport: the reactor's stream transport (the fast path)."""
        if not self._native_transports:
            return super()._make_socket_transport(  # type: ignore[misc,no-any-return]
                sock, protocol, waiter, extra=extra, server=server
            )
        self._ensure_fd_no_transport(sock)  # type: ignore[attr-defined]
        return NativeTransport(self, self._port, sock, protocol, waiter, extra, server)

    def _make_ssl_transport(
        self,
        rawsock: socket.socket,
        protocol: asyncio.BaseProtocol,
        sslcontext: ssl.SSLContext | None,
        waiter: asyncio.Future[None] | None = None,
        *,
        server_side: bool = False,
        server_hostname: str | None = None,
        extra: dict[str, Any] | None = None,
        server: asyncio.Server | None = None,
        ssl_handshake_timeout: float | None = None,
        ssl_shutdown_timeout: float | None = None,
    ) -> asyncio.Transport:
        """A TLS connection's transport: the reactor's TLS over its stream transport."""
        if not self._native_transports:
            options: dict[str, Any] = {"ssl_handshake_timeout": ssl_handshake_timeout}
            if sys.version_info >= (3, 11):  # 3.10's SSLProtocol has no shutdown timeout
                options["ssl_shutdown_timeout"] = ssl_shutdown_timeout
            return super()._make_ssl_transport(  # type: ignore[misc,no-any-return]
                rawsock, protocol, sslcontext, waiter,
                server_side=server_side, server_hostname=server_hostname,
                extra=extra, server=server, **options,
            )  # fmt: skip
        handshake, shutdown = check_ssl_timeouts(ssl_handshake_timeout, ssl_shutdown_timeout)
        if sslcontext is None:  # ssl=True
            sslcontext = default_client_context(server_side, server_hostname)
        self._ensure_fd_no_transport(rawsock)  # type: ignore[attr-defined]
        return NativeSSLTransport.over_socket(
            self, self._port, rawsock, protocol, sslcontext, waiter, extra, server,
            server_side=server_side, server_hostname=server_hostname,
            ssl_handshake_timeout=handshake, ssl_shutdown_timeout=shutdown,
        )  # fmt: skip

    async def start_tls(
        self,
        transport: asyncio.BaseTransport,
        protocol: asyncio.BaseProtocol,
        sslcontext: ssl.SSLContext,
        *,
        server_side: bool = False,
        server_hostname: str | None = None,
        ssl_handshake_timeout: float | None = None,
        ssl_shutdown_timeout: float | None = None,
    ) -> asyncio.Transport | None:
        """Upgrade a connection to TLS; the loop's own transports get the reactor's TLS.

        Any other transport (one asyncio made, with ``native_transports=False``)
        is upgraded by asyncio's own ``SSLProtocol``, as on asyncio's loop.
        """
        if not isinstance(transport, (NativeTransport, NativeSSLTransport)):
            options: dict[str, Any] = {}
            if ssl_shutdown_timeout is not None:  # not a keyword on 3.10
                options["ssl_shutdown_timeout"] = ssl_shutdown_timeout
            return await super().start_tls(
                transport, protocol, sslcontext,
                server_side=server_side, server_hostname=server_hostname,
                ssl_handshake_timeout=ssl_handshake_timeout, **options,
            )  # fmt: skip
        if not isinstance(sslcontext, ssl.SSLContext):
            raise TypeError(
                f"sslcontext is expected to be an instance of ssl.SSLContext, got {sslcontext!r}"
            )
        handshake, shutdown = check_ssl_timeouts(ssl_handshake_timeout, ssl_shutdown_timeout)
        waiter: asyncio.Future[None] = self.create_future()
        tls = NativeSSLTransport.upgrade(
            self, self._port, transport, protocol, sslcontext, waiter,
            server_side=server_side, server_hostname=server_hostname,
            ssl_handshake_timeout=handshake, ssl_shutdown_timeout=shutdown,
        )  # fmt: skip
        try:
            await waiter
        except BaseException:
            transport.close()  # as asyncio's start_tls
            raise
        return tls

    async def _sendfile_native(
        self, transp: asyncio.BaseTransport, file: Any, offset: int, count: int | None
    ) -> int:
        if isinstance(transp, NativeTransport):
            return await transp._sendfile(file, offset, count)
        return await super()._sendfile_native(transp, file, offset, count)  # type: ignore[misc,no-any-return]

    # ------------------------------------------------------------------ timers

    def call_at(  # type: ignore[override]
        self,
        when: float,
        callback: Callable[..., object],
        *args: Any,
        context: Context | None = None,
    ) -> asyncio.TimerHandle:
        """Run ``callback(*args)`` at loop time ``when``, on the reactor's timer heap."""
        if when is None:
            raise TypeError("when cannot be None")
        if math.isnan(when):
            raise ValueError("call_at()'s time (or call_later()'s delay) is NaN")
        self._check_closed()  # type: ignore[attr-defined]
        if self._debug:
            self._check_thread()  # type: ignore[attr-defined]
            self._check_callback(callback, "call_at")  # type: ignore[attr-defined]
        timer = _Timer(when, callback, args, self, context)
        if timer._source_traceback:  # type: ignore[attr-defined]
            del timer._source_traceback[-1]  # type: ignore[attr-defined]
        if when < _INF:
            # A time before any the clock will show (even -inf) fires next turn.
            timer._entry = self._reactor.call_at(max(when, 0.0), self._fire, timer)
        else:
            timer._entry = None  # never due: asyncio keeps such a timer, unfired
        timer._scheduled = True  # type: ignore[attr-defined]
        return timer

    def _timer_handle_cancelled(self, handle: asyncio.TimerHandle) -> None:
        entry = getattr(handle, "_entry", None)
        if entry is not None:
            entry.cancel()

    # ----------------------------------------------------------------- running

    def run_forever(self) -> None:
        """Run until ``stop()`` (or the reactor's ``stop()``) is called."""
        self._check_closed()  # type: ignore[attr-defined]
        self._check_running()  # type: ignore[attr-defined]
        reactor = self._reactor
        if reactor.is_running():
            raise RuntimeError(
                "the reactor under this loop is already running (reactor.run() "
                "or another EventLoop); one loop drives it at a time"
            )
        reactor._running = True
        reactor.thread_id = threading.get_ident()
        try:
            super().run_forever()
        finally:
            reactor._running = False
            reactor._stopping = False
            reactor.thread_id = None

    def _run_once(self) -> None:
        """One turn: the reactor's (poll, fds, timers), then asyncio's ready queue."""
        ready = self._ready
        reactor = self._reactor
        reactor._run_once(0.0 if ready or self._stopping else None)
        if reactor._stopping:
            self._stopping = True
        count = len(ready)
        if self._debug:
            self._run_ready_debug(count)
            return
        popleft = ready.popleft
        for _ in range(count):
            handle = popleft()
            if not handle._cancelled:
                try:
                    handle._run()
                except (SystemExit, KeyboardInterrupt):
                    raise
                except BaseException as exc:  # asyncio's handles catch their own
                    self._handle_error(handle, exc)

    def _handle_error(self, handle: asyncio.Handle, exc: BaseException) -> None:
        """A native transport's fd callback raised (its handle runs without asyncio's guard)."""
        self.call_exception_handler(
            {"message": f"Exception in callback {handle!r}", "exception": exc, "handle": handle}
        )

    def _run_ready_debug(self, count: int) -> None:
        """Debug mode: time every callback and warn about slow ones, as asyncio does."""
        ready = self._ready
        for _ in range(count):
            handle = ready.popleft()
            if handle._cancelled:
                continue
            self._current_handle = handle
            start = time.monotonic()
            try:
                handle._run()
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException as exc:
                self._handle_error(handle, exc)
            finally:
                self._current_handle = None
            took = time.monotonic() - start
            if took >= self.slow_callback_duration:
                _asyncio_logger.warning(
                    "Executing %s took %.3f seconds", _format_handle(handle), took
                )

    # ----------------------------------------------------------------- closing

    def close(self) -> None:
        """Close the loop; also the reactor if the loop made it. Not while running."""
        if self.is_running():
            raise RuntimeError("Cannot close a running event loop")
        if self.is_closed():
            return
        super().close()
        reactor = self._reactor
        if self._routed_errors:
            self._routed_errors = False
            reactor.call_exception_handler = None  # the default again
        if self._owns_reactor:
            reactor.close()
        elif not reactor.is_closed():
            # The reactor lives on: take this loop's timers off its heap.
            fire = self._fire
            for handle in reactor._timers.handles():
                if handle._callback is fire:
                    handle.cancel()
