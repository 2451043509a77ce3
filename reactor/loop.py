"""The event loop: one object that waits for readiness and runs callbacks.

One turn of the loop (:meth:`Reactor._run_once`):

1. Work out how long it may sleep: zero if callbacks are ready, else until
   the earliest timer (or forever).
2. Ask the backend which fds are ready, and call each fd's reader and/or
   writer directly. There is no intermediate queue on this path: a readable
   socket goes straight to its transport's ``_read_ready``, which calls the
   protocol's ``data_received``.
3. Run the timers that are due, then the callbacks queued with
   ``call_soon``/``call_from_thread`` before this turn began.

Every callback runs inside one exception sink (:meth:`Reactor.call_exception_handler`):
an error is logged with its traceback and the loop goes on.
"""

from __future__ import annotations

import errno
import logging
import math
import os
import signal
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from types import TracebackType
from typing import Any, Protocol, TypedDict

from reactor.backends import READ, READ_BITS, WRITE, WRITE_BITS, Poller, make_poller
from reactor.backends.base import INVALID
from reactor.debug import install_debug, warn_slow_iteration, warn_unclosed
from reactor.interfaces import DatagramProtocolInterface, FactoryArg
from reactor.stream import StreamTransport
from reactor.tcp import Connector, Listener, connect_tcp, listen_tcp
from reactor.timers import Handle, PeriodicCall, TimerHandle, TimerQueue
from reactor.trace import (
    TracingPoller,
    TracingStreamTransport,
    TracingTimerQueue,
    enable_trace_output,
)
from reactor.udp import DatagramTransport, connect_udp, listen_udp
from reactor.unix import UnixConnector, UnixListener, connect_unix, listen_unix
from reactor.waker import Waker

__all__ = ["Reactor", "ReactorStats"]

log = logging.getLogger("reactor")

_monotonic = time.monotonic


class _HasFileno(Protocol):
    def fileno(self) -> int: ...


def _fileno(fd: int | _HasFileno) -> int:
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


def _file_id(fd: int) -> tuple[int, int] | None:
    """What file ``fd`` names, to tell if its number was closed and reused; None if not open."""
    if fd < 0:
        return None
    try:
        st = os.fstat(fd)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


_CLOSED_WHILE_WATCHED = (
    "fd %d was closed while still watched; its callbacks were removed "
    "(call remove_reader/remove_writer before closing an fd)"
)


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


def _is_closing(resource: Any) -> bool:
    closing = getattr(resource, "is_closing", None)
    if closing is not None:
        return bool(closing())
    return bool(getattr(resource, "closed", False))


def _ignore_signal(signum: int, frame: Any) -> None:
    """The Python-level handler: the real work is done via the wake-up fd."""


class Reactor:
    """An event loop. Make as many as you like; each runs in one thread at a time.

    ``backend`` picks the readiness mechanism by name ("epoll", "kqueue",
    "poll", "select") or takes a ready-made poller; by default the
    ``REACTOR_BACKEND`` environment variable, or else the best one available.
    """

    def __init__(
        self,
        backend: str | Poller | None = None,
        *,
        trace: bool | None = None,
        debug: bool | None = None,
        slow_callback_duration: float = 0.1,
    ) -> None:
        self._poller: Poller = (
            make_poller(backend) if backend is None or isinstance(backend, str) else backend
        )
        self.backend: str = self._poller.name
        """The name of the readiness backend in use."""
        self.trace: bool = _env_flag("REACTOR_TRACE") if trace is None else trace
        """Whether trace mode logs each poll, connection event and timer (``reactor.trace``)."""
        self.debug: bool = _env_flag("REACTOR_DEBUG") if debug is None else debug
        """Whether debug mode warns about slow callbacks and misuse (``reactor.debug``)."""
        self.slow_callback_duration = slow_callback_duration
        """In debug mode, callbacks and iterations slower than this (seconds) are logged."""
        self._slow_iteration = slow_callback_duration if self.debug else math.inf
        self._transport_class: type[StreamTransport] = StreamTransport
        self._trace_ids = 0  # connection numbers in trace lines
        self._readers: dict[int, Callable[[], object]] = {}
        self._writers: dict[int, Callable[[], object]] = {}
        self._registered: dict[int, int] = {}  # fd -> bits the poller watches
        self._ready: deque[Handle] = deque()
        self._timers = TimerQueue()
        if self.trace:
            self._poller = TracingPoller(self._poller)
            self._timers = TracingTimerQueue()
            self._transport_class = TracingStreamTransport
            enable_trace_output()
        self._running = False
        self._stopping = False
        self._closed = False
        self._thread_id: int | None = None
        self._clock_resolution = time.get_clock_info("monotonic").resolution
        # Open transports and listeners, so close() can release them.
        self._resources: set[Any] = set()
        self._executor: ThreadPoolExecutor | None = None
        self._signal_handlers: dict[int, tuple[Handle, Any]] = {}
        self._signal_sock: socket.socket | None = None
        self._signal_wsock: socket.socket | None = None
        self._old_wakeup_fd = -1
        self._old_wakeup_id: tuple[int, int] | None = None  # (st_dev, st_ino) of it
        self._spare_fd = -1
        self._lingering = 0  # closed connections waiting for their peer's FIN
        # Counters for stats(); plain numbers so keeping them is nearly free.
        self._iterations = 0
        self._events = 0
        self._callbacks = 0
        self._longest_iteration = 0.0
        self._bytes_in_closed = 0  # bytes of connections already gone
        self._bytes_out_closed = 0
        waker = None
        try:
            waker = Waker()
            self._add_reader(waker.fileno(), waker.consume)
        except BaseException:
            # Release what was made (select cannot watch an fd >= FD_SETSIZE).
            if waker is not None:
                waker.close()
            self._poller.close()
            raise
        self._waker = waker
        if self.debug:
            install_debug(self)

    # ------------------------------------------------------------------ state

    def __repr__(self) -> str:
        state = "closed" if self._closed else ("running" if self._running else "idle")
        return f"<Reactor backend={self.backend} {state}>"

    def __enter__(self) -> Reactor:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def is_running(self) -> bool:
        return self._running

    def is_closed(self) -> bool:
        return self._closed

    def time(self) -> float:
        """The reactor's clock: ``time.monotonic()``, in seconds."""
        return _monotonic()

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("this reactor is closed; make a new Reactor()")

    # ------------------------------------------------------------- callbacks

    def call_soon(self, callback: Callable[..., object], *args: Any) -> Handle:
        """Run ``callback(*args)`` on the next turn of the loop, in FIFO order."""
        if self._closed:
            self._check_open()
        handle = Handle(callback, args)
        self._ready.append(handle)
        return handle

    def call_from_thread(self, callback: Callable[..., object], *args: Any) -> Handle:
        """Like :meth:`call_soon`, but safe from any thread; wakes a sleeping loop.

        Calls made by one thread run in the order that thread made them.
        """
        self._check_open()
        handle = Handle(callback, args)
        # deque.append is atomic; the waker is written only if no wake-up is
        # already pending, so a burst of calls costs one system call.
        self._ready.append(handle)
        self._waker.wake()
        return handle

    call_soon_threadsafe = call_from_thread

    def call_later(self, delay: float, callback: Callable[..., object], *args: Any) -> TimerHandle:
        """Run ``callback(*args)`` after ``delay`` seconds; returns a cancellable handle."""
        if self._closed:
            self._check_open()
        return self._timers.push(_monotonic() + delay, callback, args)

    def call_at(self, when: float, callback: Callable[..., object], *args: Any) -> TimerHandle:
        """Run ``callback(*args)`` at ``when`` on the :meth:`time` clock."""
        if self._closed:
            self._check_open()
        return self._timers.push(when, callback, args)

    def call_every(
        self, interval: float, callback: Callable[..., object], *args: Any, now: bool = False
    ) -> PeriodicCall:
        """Run ``callback(*args)`` every ``interval`` seconds without drift.

        With ``now=True`` the first call is on the next turn. Cancel with
        ``.cancel()`` on the returned object.
        """
        self._check_open()
        return PeriodicCall(self, interval, callback, args, now=now)

    def call_exception_handler(self, context: dict[str, Any]) -> None:
        """The exception sink: log ``context['message']`` and the exception's traceback.

        Replace it per reactor (``reactor.call_exception_handler = fn``) to
        send errors elsewhere; it must not raise.
        """
        exc = context.get("exception")
        message = context.get("message", "unhandled exception in a callback")
        details = "".join(
            f"\n  {key}: {value!r}"
            for key, value in context.items()
            if key not in ("message", "exception")
        )
        exc_info = (type(exc), exc, exc.__traceback__) if exc is not None else None
        log.error("%s%s", message, details, exc_info=exc_info)

    def _callback_error(self, callback: object, exc: Exception) -> None:
        self._report_error(
            {"message": "exception in callback", "exception": exc, "callback": callback}
        )

    def _report_error(self, context: dict[str, Any]) -> None:
        try:
            self.call_exception_handler(context)
        except Exception:  # the sink itself failed: last resort, never kill the loop
            # Name the original error too, or a broken handler would hide every error.
            log.exception(
                "exception in the exception handler, while handling: %s: %r",
                context.get("message"),
                context.get("exception"),
            )

    # ----------------------------------------------------------- fd watching

    def add_reader(self, fd: int | _HasFileno, callback: Callable[..., object], *args: Any) -> None:
        """Call ``callback(*args)`` whenever ``fd`` is readable (replaces any earlier reader)."""
        self._check_open()
        n = _fileno(fd)
        self._forget_registration(n)
        self._add_reader(n, partial(callback, *args) if args else callback)

    def remove_reader(self, fd: int | _HasFileno) -> bool:
        """Stop watching ``fd`` for reading; returns whether it was watched."""
        return self._remove_reader(_fileno(fd))

    def add_writer(self, fd: int | _HasFileno, callback: Callable[..., object], *args: Any) -> None:
        """Call ``callback(*args)`` whenever ``fd`` is writable (replaces any earlier writer)."""
        self._check_open()
        n = _fileno(fd)
        self._forget_registration(n)
        self._add_writer(n, partial(callback, *args) if args else callback)

    def remove_writer(self, fd: int | _HasFileno) -> bool:
        """Stop watching ``fd`` for writing; returns whether it was watched."""
        return self._remove_writer(_fileno(fd))

    def _forget_registration(self, fd: int) -> None:
        """Drop the poller's registration of ``fd`` so the next update makes a fresh one.

        The public add_reader/add_writer do this (it is not on the transports'
        path): the number may now name a new file, the old one having been
        closed while watched. epoll and kqueue forget a closed fd silently, so
        "already registered for these events" would be a lie and the new fd
        would never be watched.
        """
        if self._registered.pop(fd, None) is not None:
            self._poller.unregister(fd)

    # The underscore versions are what transports use: no argument checks.

    def _add_reader(self, fd: int, callback: Callable[[], object]) -> None:
        self._readers[fd] = callback
        self._update(fd)

    def _add_writer(self, fd: int, callback: Callable[[], object]) -> None:
        self._writers[fd] = callback
        self._update(fd)

    def _remove_reader(self, fd: int) -> bool:
        if self._readers.pop(fd, None) is None:
            return False
        self._update(fd)
        return True

    def _remove_writer(self, fd: int) -> bool:
        if self._writers.pop(fd, None) is None:
            return False
        self._update(fd)
        return True

    def _update(self, fd: int) -> None:
        """Make the poller watch ``fd`` for exactly what has callbacks."""
        bits = (READ if fd in self._readers else 0) | (WRITE if fd in self._writers else 0)
        old = self._registered.get(fd)
        if old == bits:
            return
        poller = self._poller
        if not bits:
            # Only a removal gets here, and only for an fd that was registered.
            self._registered.pop(fd, None)
            poller.unregister(fd)
            return
        try:
            if old is None:
                try:
                    poller.register(fd, bits)
                except FileExistsError:
                    # The kernel still had an fd of this number from a socket
                    # that was closed without being unregistered.
                    poller.modify(fd, bits)
            else:
                try:
                    poller.modify(fd, bits)
                except FileNotFoundError:
                    if not bits & ~old:
                        raise  # less interest in a file that is gone: see below
                    # The old fd was closed (the kernel dropped it) and its
                    # number has been reused: register the new one.
                    poller.register(fd, bits)
        except BaseException as exc:
            # Keep our tables consistent with the kernel's: nothing watched.
            self._drop_fd(fd, log_closed=False)
            if (
                old is not None
                and not bits & ~old
                and isinstance(exc, OSError)
                and exc.errno in (errno.EBADF, errno.ENOENT)
            ):
                # Removing a reader or writer of an fd that was closed while
                # watched (epoll and kqueue forget such fds silently, so this
                # is where it shows): its other callback goes too, as when
                # poll reports POLLNVAL. A removal does not fail.
                log.error(_CLOSED_WHILE_WATCHED, fd)
                return
            raise
        self._registered[fd] = bits

    def _fd_callback_error(self, fd: int, callback: object, exc: Exception) -> None:
        """A reader or writer raised. If it failed because its fd was closed
        while watched, drop the fd, or it would be called again every turn."""
        self._callback_error(callback, exc)
        if (
            isinstance(exc, OSError)
            and exc.errno == errno.EBADF
            and fd in self._registered
            and _file_id(fd) is None
        ):
            self._drop_fd(fd)

    def _unwatch_stale(self, fd: int) -> None:
        """The poller reported an fd the reactor does not watch: make it stop."""
        poller = self._poller
        poller.unregister(fd)
        if _file_id(fd) is None and any(ready == fd for ready, _ in poller.poll(0.0)):
            # Closed, yet still reported after unregister(): epoll keys a
            # registration by file *and* number, and the file lives on
            # elsewhere (a dup, a child process), so the number can no longer
            # remove it. Left alone, the loop would spin on it for good.
            self._rebuild_poller()

    def _rebuild_poller(self) -> None:
        """Replace the poller with a new one watching what the tables say."""
        old = self._poller
        try:
            new = type(old)()
        except Exception:
            log.exception("could not make a new %s poller to drop a closed fd", old.name)
            return
        dead = []
        for fd, bits in self._registered.items():
            try:
                new.register(fd, bits)
            except OSError:
                dead.append(fd)  # closed while watched as well
        self._poller = new
        old.close()
        for fd in dead:
            self._drop_fd(fd)
        log.warning("rebuilt the %s poller to drop a closed fd it kept reporting", new.name)

    def _drop_fd(self, fd: int, log_closed: bool = True) -> None:
        """Forget ``fd`` entirely; the poller reported it closed (INVALID)."""
        if log_closed and (fd in self._readers or fd in self._writers):
            log.error(_CLOSED_WHILE_WATCHED, fd)
        self._readers.pop(fd, None)
        self._writers.pop(fd, None)
        self._registered.pop(fd, None)
        self._poller.unregister(fd)

    # ----------------------------------------------------------------- running

    def run(self) -> None:
        """Run until :meth:`stop` is called."""
        self._check_open()
        if self._running:
            raise RuntimeError("this reactor is already running")
        self._running = True
        self._thread_id = threading.get_ident()
        try:
            while True:
                self._run_once(None)
                if self._stopping:
                    break
        finally:
            self._stopping = False
            self._running = False
            self._thread_id = None

    def run_once(self, timeout: float | None = 0.0) -> None:
        """Run one turn of the loop, waiting at most ``timeout`` seconds for events.

        For embedding in another loop: call it repeatedly from that loop.
        """
        self._check_open()
        if self._running:
            raise RuntimeError("run_once() called while the reactor is running")
        if timeout is not None and timeout < 0.0:
            timeout = 0.0
        self._running = True
        self._thread_id = threading.get_ident()
        try:
            self._run_once(timeout)
        finally:
            self._stopping = False
            self._running = False
            self._thread_id = None

    def stop(self) -> None:
        """Stop :meth:`run` after the current turn. Safe from callbacks, signal
        handlers and other threads. Called before run(), run() does one turn."""
        self._stopping = True
        if self._thread_id is not None:
            # From a callback this costs one write per run(). It is needed from
            # another thread, and from a plain signal.signal() handler: that runs
            # in the loop's thread, after which poll() is retried (PEP 475).
            # (Such a handler for a signal that lands just before the wait
            # begins runs only when the wait ends; add_signal_handler() has
            # no such gap.)
            self._waker.wake()

    def _run_once(self, max_wait: float | None) -> None:
        ready = self._ready
        timers = self._timers
        if ready or self._stopping:
            timeout: float | None = 0.0
        else:
            deadline = timers.next_deadline()
            if deadline is None:
                timeout = max_wait
            else:
                timeout = deadline - _monotonic()
                if timeout < 0.0:
                    timeout = 0.0
                if max_wait is not None and max_wait < timeout:
                    timeout = max_wait

        events = self._poller.poll(timeout)
        start = _monotonic()
        self._iterations += 1
        if events:
            self._events += len(events)
            readers = self._readers
            writers = self._writers
            for fd, bits in events:
                if bits & INVALID:
                    self._drop_fd(fd)
                    continue
                handled = False
                if bits & READ_BITS:
                    callback = readers.get(fd)
                    if callback is not None:
                        handled = True
                        try:
                            callback()
                        except Exception as exc:
                            self._fd_callback_error(fd, callback, exc)
                if bits & WRITE_BITS:
                    callback = writers.get(fd)
                    if callback is not None:
                        handled = True
                        try:
                            callback()
                        except Exception as exc:
                            self._fd_callback_error(fd, callback, exc)
                if not handled and fd not in self._registered:
                    # Reported but no longer ours (a stale registration):
                    # drop it so it cannot make the loop spin.
                    self._unwatch_stale(fd)

        if timers._heap:
            # A timer due within the clock's resolution counts as due now,
            # or the loop would wake, find nothing due, and sleep 0 again.
            ready.extend(timers.pop_due(_monotonic() + self._clock_resolution))

        # Run only what was queued before now: callbacks queued by these
        # callbacks wait for the next turn, so I/O is never starved.
        count = len(ready)
        self._callbacks += count
        for _ in range(count):
            item = ready.popleft()
            if item._cancelled:
                continue
            try:
                item._callback(*item._args)
            except Exception as exc:
                self._callback_error(item._callback, exc)

        took = _monotonic() - start
        if took > self._longest_iteration:
            self._longest_iteration = took
        if took > self._slow_iteration:  # never true outside debug mode (inf)
            warn_slow_iteration(took, self.slow_callback_duration)

    # ----------------------------------------------------------------- signals

    def add_signal_handler(self, sig: int, callback: Callable[..., object], *args: Any) -> None:
        """Run ``callback(*args)`` as an ordinary callback when signal ``sig`` arrives.

        Uses ``signal.set_wakeup_fd``: the C-level handler writes the signal
        number to a socket the loop watches. Main thread only (Python
        delivers signals there). The previous wake-up fd and Python handler
        are restored by :meth:`remove_signal_handler`.
        """
        self._check_open()
        self._check_main_thread("add_signal_handler")
        if not isinstance(sig, int) or sig not in signal.valid_signals():
            raise ValueError(f"{sig!r} is not a valid signal number")
        if sig in (signal.SIGKILL, signal.SIGSTOP):
            raise ValueError(f"signal {sig} cannot be caught")
        if self._signal_sock is None:
            rsock, wsock = socket.socketpair()
            rsock.setblocking(False)
            wsock.setblocking(False)
            self._old_wakeup_fd = signal.set_wakeup_fd(wsock.fileno(), warn_on_full_buffer=False)
            self._old_wakeup_id = _file_id(self._old_wakeup_fd)
            self._signal_sock, self._signal_wsock = rsock, wsock
            try:
                self._add_reader(rsock.fileno(), self._read_signals)
            except BaseException:
                self._teardown_signals()
                raise
        previous = self._signal_handlers.get(sig)
        if previous is not None:
            old_handler = previous[1]
        else:
            try:
                old_handler = signal.signal(sig, _ignore_signal)
            except BaseException:
                if not self._signal_handlers:
                    self._teardown_signals()
                raise
        self._signal_handlers[sig] = (Handle(callback, args), old_handler)

    def remove_signal_handler(self, sig: int) -> bool:
        """Remove the handler for ``sig`` and restore what was there before.

        Returns whether there was one. Main thread only, like
        :meth:`add_signal_handler`.
        """
        if sig not in self._signal_handlers:
            return False
        self._check_main_thread("remove_signal_handler")
        entry = self._signal_handlers.pop(sig)
        signal.signal(sig, entry[1] if entry[1] is not None else signal.SIG_DFL)
        if not self._signal_handlers:
            self._teardown_signals()
        return True

    def _check_main_thread(self, what: str) -> None:
        if threading.current_thread() is not threading.main_thread():
            raise RuntimeError(
                f"{what}() must be called from the main thread: Python only "
                "delivers signals there; use call_from_thread() to reach the reactor"
            )

    def _teardown_signals(self) -> None:
        """Give back the wake-up fd and close the signal socket pair."""
        rsock, wsock = self._signal_sock, self._signal_wsock
        assert rsock is not None and wsock is not None  # only called while installed
        old = self._old_wakeup_fd
        if old >= 0 and _file_id(old) != self._old_wakeup_id:
            # The previous owner closed its fd meanwhile (and the number may
            # name another file now): restoring it would let the C signal
            # handler write into a stranger's fd.
            old = -1
        current = signal.set_wakeup_fd(old)
        if current != wsock.fileno():
            # Someone installed their own wake-up fd after ours (another
            # reactor, asyncio): it stays theirs.
            signal.set_wakeup_fd(current)
        self._remove_reader(rsock.fileno())
        rsock.close()
        wsock.close()
        self._signal_sock = self._signal_wsock = None
        self._old_wakeup_fd = -1
        self._old_wakeup_id = None

    def _read_signals(self) -> None:
        assert self._signal_sock is not None
        try:
            data = self._signal_sock.recv(4096)
        except (BlockingIOError, InterruptedError):
            return
        for signum in data:
            entry = self._signal_handlers.get(signum)
            if entry is not None:
                self._ready.append(entry[0])

    # ---------------------------------------------------------------- networking

    #: The resolver connect_tcp() runs in a worker thread (tests replace it).
    _getaddrinfo = staticmethod(socket.getaddrinfo)

    def listen_tcp(
        self,
        port: int,
        factory: FactoryArg,
        host: str | None = "127.0.0.1",
        backlog: int = 1024,
        reuse_port: bool = False,
    ) -> Listener:
        """Accept TCP connections on ``host:port``; each gets a protocol from ``factory``.

        ``port=0`` picks a free port (read it from ``listener.port``); ``host``
        may be IPv4 or IPv6, and None listens on every interface. ``factory`` is
        a Factory (``build_protocol(addr)``) or a zero-argument callable such as
        a Protocol class. Raises OSError with a clear message if the address is
        in use.
        """
        self._check_open()
        return listen_tcp(self, port, factory, host, backlog, reuse_port)

    def connect_tcp(
        self,
        host: str,
        port: int,
        factory: FactoryArg,
        *,
        timeout: float | None = 30.0,
        on_connect: Callable[[Any], object] | None = None,
        on_failure: Callable[[BaseException], object] | None = None,
    ) -> Connector:
        """Connect to ``host:port`` without blocking; returns a :class:`Connector`.

        A host name is resolved in a worker thread. Success calls the
        protocol's ``connection_made`` and then ``on_connect(protocol)``; a
        failure (refused, timed out, name not found) goes to the factory's
        ``client_connection_failed(connector, reason)`` and ``on_failure(reason)``.
        """
        self._check_open()
        return connect_tcp(
            self, host, port, factory, timeout=timeout, on_connect=on_connect, on_failure=on_failure
        )

    def listen_unix(self, path: str, factory: FactoryArg, backlog: int = 1024) -> UnixListener:
        """Accept connections on the Unix socket ``path``, like :meth:`listen_tcp`.

        A stale socket file left by a dead server is replaced; a path a live
        server listens on is refused; the file is removed when the listener closes.
        """
        self._check_open()
        return listen_unix(self, path, factory, backlog)

    def connect_unix(
        self,
        path: str,
        factory: FactoryArg,
        *,
        timeout: float | None = 30.0,
        on_connect: Callable[[Any], object] | None = None,
        on_failure: Callable[[BaseException], object] | None = None,
    ) -> UnixConnector:
        """Connect to the Unix socket ``path``, like :meth:`connect_tcp`."""
        self._check_open()
        return connect_unix(
            self, path, factory, timeout=timeout, on_connect=on_connect, on_failure=on_failure
        )

    def listen_udp(
        self,
        port: int,
        protocol: DatagramProtocolInterface,
        host: str | None = "127.0.0.1",
        *,
        broadcast: bool = False,
        reuse_port: bool = False,
    ) -> DatagramTransport:
        """Bind a UDP endpoint; ``protocol.datagram_received(data, addr)`` gets each datagram.

        ``connection_made`` runs on the next turn. ``broadcast`` sets
        SO_BROADCAST; ``reuse_port`` lets several endpoints share the port.
        """
        self._check_open()
        return listen_udp(self, port, protocol, host, broadcast=broadcast, reuse_port=reuse_port)

    def connect_udp(
        self,
        host: str,
        port: int,
        protocol: DatagramProtocolInterface,
        *,
        local_host: str | None = None,
        local_port: int = 0,
        broadcast: bool = False,
    ) -> DatagramTransport:
        """A UDP endpoint connected to ``host:port`` (an IP address).

        ``sendto(data)`` needs no address, and an ICMP port-unreachable from the
        peer reaches ``protocol.error_received``.
        """
        self._check_open()
        return connect_udp(
            self,
            host,
            port,
            protocol,
            local_host=local_host,
            local_port=local_port,
            broadcast=broadcast,
        )

    def _run_in_thread(
        self, fn: Callable[[], Any], done: Callable[[Any, BaseException | None], None]
    ) -> None:
        """Run blocking ``fn`` in a worker thread; ``done(result, exc)`` runs on the loop."""
        if self._executor is None:
            self._executor = ThreadPoolExecutor(
                max_workers=4, thread_name_prefix="reactor-resolver"
            )

        def work() -> None:
            try:
                result = fn()
            except BaseException as exc:  # delivered to the loop, never lost in the thread
                if not self._closed:
                    self.call_from_thread(done, None, exc)
                return
            if not self._closed:
                self.call_from_thread(done, result, None)

        self._executor.submit(work)

    def _spare_fd_release(self) -> bool:
        """Free the reserved descriptor so one pending connection can be shed."""
        if self._spare_fd < 0:
            return False
        os.close(self._spare_fd)
        self._spare_fd = -1
        return True

    def _spare_fd_reserve(self) -> None:
        if self._spare_fd < 0:
            try:
                self._spare_fd = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                self._spare_fd = -1

    # ---------------------------------------------------------------- lifecycle

    def close(self) -> None:
        """Release everything: open transports and listeners, the backend, the
        waker, signal handlers and resolver threads. Not while running."""
        if self._running:
            raise RuntimeError("close() called while the reactor is running; stop() it first")
        if self._closed:
            return
        if self._signal_handlers:
            # Check before releasing anything, so a failed close() can be retried.
            self._check_main_thread("close")
        if self.debug:
            warn_unclosed([r for r in self._resources if not _is_closing(r)])
        for resource in list(self._resources):
            try:
                resource._force_close()
            except Exception as exc:
                self._callback_error(resource, exc)
        # Deliver the connection_lost callbacks the closes queued. A few passes
        # (a connection_lost may close something else), but bounded: a
        # callback that keeps rescheduling itself must not hang close().
        for _ in range(8):
            if not self._ready:
                break
            for _ in range(len(self._ready)):
                handle = self._ready.popleft()
                if not handle._cancelled:
                    try:
                        handle._callback(*handle._args)
                    except Exception as exc:
                        self._callback_error(handle._callback, exc)
        for sig in list(self._signal_handlers):
            self.remove_signal_handler(sig)
        self._closed = True
        self._timers.clear()
        self._ready.clear()
        self._readers.clear()
        self._writers.clear()
        self._registered.clear()
        self._poller.close()
        self._waker.close()
        if self._spare_fd >= 0:
            os.close(self._spare_fd)
            self._spare_fd = -1
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None

    # -------------------------------------------------------------- statistics

    def stats(self) -> ReactorStats:
        """Counters about this reactor, cheap enough to keep always on.

        ``iterations`` (loop turns), ``events`` (readiness events dispatched),
        ``callbacks`` (call_soon/timer/thread callbacks run), ``timers_scheduled``,
        ``timers_fired``, ``timers_cancelled``, ``timers_pending``,
        ``registered_fds``, ``connections`` (open stream connections),
        ``datagram_endpoints``, ``listeners``, ``lingering`` (closed connections
        waiting for the peer's FIN), ``bytes_in``, ``bytes_out`` (stream payload
        bytes), ``longest_iteration`` (seconds, the slowest turn's work, not
        counting the wait in poll).
        """
        connections = listeners = datagrams = 0
        bytes_in = self._bytes_in_closed
        bytes_out = self._bytes_out_closed
        for resource in self._resources:
            if isinstance(resource, StreamTransport):
                if not resource._conn_lost:
                    connections += 1
                    bytes_in += resource.bytes_received
                    bytes_out += resource.bytes_sent
            elif isinstance(resource, Listener):
                listeners += 1
            elif isinstance(resource, DatagramTransport):
                datagrams += 1
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
            "registered_fds": len(self._registered),
            "connections": connections,
            "datagram_endpoints": datagrams,
            "listeners": listeners,
            "lingering": self._lingering,
            "resources": len(self._resources),
            "bytes_in": bytes_in,
            "bytes_out": bytes_out,
            "longest_iteration": self._longest_iteration,
        }
