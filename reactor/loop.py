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

import logging
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
from typing import Any, Protocol

from reactor.backends import READ, READ_BITS, WRITE, WRITE_BITS, Poller, make_poller
from reactor.backends.base import INVALID
from reactor.interfaces import FactoryArg
from reactor.tcp import Connector, Listener, connect_tcp, listen_tcp
from reactor.timers import Handle, PeriodicCall, TimerHandle, TimerQueue
from reactor.waker import Waker

__all__ = ["Reactor"]

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


def _ignore_signal(signum: int, frame: Any) -> None:
    """The Python-level handler: the real work is done via the wake-up fd."""


class Reactor:
    """An event loop. Make as many as you like; each runs in one thread at a time.

    ``backend`` picks the readiness mechanism by name ("epoll", "kqueue",
    "poll", "select") or takes a ready-made poller; by default the
    ``REACTOR_BACKEND`` environment variable, or else the best one available.
    """

    def __init__(self, backend: str | Poller | None = None) -> None:
        self._poller: Poller = (
            make_poller(backend) if backend is None or isinstance(backend, str) else backend
        )
        #: The name of the readiness backend in use.
        self.backend: str = self._poller.name
        self._readers: dict[int, Callable[[], object]] = {}
        self._writers: dict[int, Callable[[], object]] = {}
        self._registered: dict[int, int] = {}  # fd -> bits the poller watches
        self._ready: deque[Handle] = deque()
        self._timers = TimerQueue()
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
        self._spare_fd = -1
        # Counters for stats(); plain ints so keeping them is nearly free.
        self._iterations = 0
        self._events = 0
        self._waker = Waker()
        self._add_reader(self._waker.fileno(), self._waker.consume)

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
        return self._timers.push(_monotonic() + delay, callback, args)

    def call_at(self, when: float, callback: Callable[..., object], *args: Any) -> TimerHandle:
        """Run ``callback(*args)`` at ``when`` on the :meth:`time` clock."""
        return self._timers.push(when, callback, args)

    def call_every(
        self, interval: float, callback: Callable[..., object], *args: Any, now: bool = False
    ) -> PeriodicCall:
        """Run ``callback(*args)`` every ``interval`` seconds without drift.

        With ``now=True`` the first call is on the next turn. Cancel with
        ``.cancel()`` on the returned object.
        """
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
        log.error(
            "%s%s", message, details, exc_info=(type(exc), exc, exc.__traceback__) if exc else None
        )

    def _callback_error(self, callback: object, exc: Exception) -> None:
        self._report_error(
            {"message": "exception in callback", "exception": exc, "callback": callback}
        )

    def _report_error(self, context: dict[str, Any]) -> None:
        try:
            self.call_exception_handler(context)
        except Exception:  # the sink itself failed: last resort, never kill the loop
            log.exception("exception in the exception handler")

    # ----------------------------------------------------------- fd watching

    def add_reader(self, fd: int | _HasFileno, callback: Callable[..., object], *args: Any) -> None:
        """Call ``callback(*args)`` whenever ``fd`` is readable (replaces any earlier reader)."""
        self._check_open()
        self._add_reader(_fileno(fd), partial(callback, *args) if args else callback)

    def remove_reader(self, fd: int | _HasFileno) -> bool:
        """Stop watching ``fd`` for reading; returns whether it was watched."""
        return self._remove_reader(_fileno(fd))

    def add_writer(self, fd: int | _HasFileno, callback: Callable[..., object], *args: Any) -> None:
        """Call ``callback(*args)`` whenever ``fd`` is writable (replaces any earlier writer)."""
        self._check_open()
        self._add_writer(_fileno(fd), partial(callback, *args) if args else callback)

    def remove_writer(self, fd: int | _HasFileno) -> bool:
        """Stop watching ``fd`` for writing; returns whether it was watched."""
        return self._remove_writer(_fileno(fd))

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
            if old is not None:
                del self._registered[fd]
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
                    # The old fd was closed (the kernel dropped it) and its
                    # number has been reused: register the new one.
                    poller.register(fd, bits)
        except BaseException:
            # Keep our tables consistent with the kernel's: nothing watched.
            self._readers.pop(fd, None)
            self._writers.pop(fd, None)
            self._registered.pop(fd, None)
            raise
        self._registered[fd] = bits

    def _drop_fd(self, fd: int, bits: int) -> None:
        """The poller reported an fd we have no callback for, or one that was closed."""
        if bits & INVALID:
            had = fd in self._readers or fd in self._writers
            self._readers.pop(fd, None)
            self._writers.pop(fd, None)
            if had:
                log.error(
                    "fd %d was closed while still watched; its callbacks were removed "
                    "(call remove_reader/remove_writer before closing an fd)",
                    fd,
                )
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
        if self._thread_id is not None and self._thread_id != threading.get_ident():
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
        self._iterations += 1
        if events:
            self._events += len(events)
            readers = self._readers
            writers = self._writers
            for fd, bits in events:
                if bits & INVALID:
                    self._drop_fd(fd, bits)
                    continue
                handled = False
                if bits & READ_BITS:
                    callback = readers.get(fd)
                    if callback is not None:
                        handled = True
                        try:
                            callback()
                        except Exception as exc:
                            self._callback_error(callback, exc)
                if bits & WRITE_BITS:
                    callback = writers.get(fd)
                    if callback is not None:
                        handled = True
                        try:
                            callback()
                        except Exception as exc:
                            self._callback_error(callback, exc)
                if not handled and fd not in self._registered:
                    # Reported but no longer ours (a stale registration):
                    # drop it so it cannot make the loop spin.
                    self._poller.unregister(fd)

        if timers._heap:
            # A timer due within the clock's resolution counts as due now,
            # or the loop would wake, find nothing due, and sleep 0 again.
            ready.extend(timers.pop_due(_monotonic() + self._clock_resolution))

        # Run only what was queued before now: callbacks queued by these
        # callbacks wait for the next turn, so I/O is never starved.
        for _ in range(len(ready)):
            item = ready.popleft()
            if item._cancelled:
                continue
            try:
                item._callback(*item._args)
            except Exception as exc:
                self._callback_error(item._callback, exc)

    # ----------------------------------------------------------------- signals

    def add_signal_handler(self, sig: int, callback: Callable[..., object], *args: Any) -> None:
        """Run ``callback(*args)`` as an ordinary callback when signal ``sig`` arrives.

        Uses ``signal.set_wakeup_fd``: the C-level handler writes the signal
        number to a socket the loop watches. Main thread only (Python
        delivers signals there). The previous wake-up fd and Python handler
        are restored by :meth:`remove_signal_handler`.
        """
        self._check_open()
        if threading.current_thread() is not threading.main_thread():
            raise RuntimeError(
                "add_signal_handler() must be called from the main thread: Python only "
                "delivers signals there; use call_from_thread() to reach the reactor"
            )
        if not isinstance(sig, int) or sig not in signal.valid_signals():
            raise ValueError(f"{sig!r} is not a valid signal number")
        if sig in (signal.SIGKILL, signal.SIGSTOP):
            raise ValueError(f"signal {sig} cannot be caught")
        if self._signal_sock is None:
            rsock, wsock = socket.socketpair()
            rsock.setblocking(False)
            wsock.setblocking(False)
            self._old_wakeup_fd = signal.set_wakeup_fd(wsock.fileno(), warn_on_full_buffer=False)
            self._signal_sock, self._signal_wsock = rsock, wsock
            self._add_reader(rsock.fileno(), self._read_signals)
        previous = self._signal_handlers.get(sig)
        old_handler = previous[1] if previous else signal.signal(sig, _ignore_signal)
        self._signal_handlers[sig] = (Handle(callback, args), old_handler)

    def remove_signal_handler(self, sig: int) -> bool:
        """Remove the handler for ``sig`` and restore what was there before."""
        entry = self._signal_handlers.pop(sig, None)
        if entry is None:
            return False
        signal.signal(sig, entry[1] if entry[1] is not None else signal.SIG_DFL)
        if not self._signal_handlers and self._signal_sock is not None:
            signal.set_wakeup_fd(self._old_wakeup_fd)
            self._remove_reader(self._signal_sock.fileno())
            self._signal_sock.close()
            assert self._signal_wsock is not None
            self._signal_wsock.close()
            self._signal_sock = self._signal_wsock = None
        return True

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
        for resource in list(self._resources):
            try:
                resource._force_close()
            except Exception as exc:
                self._callback_error(resource, exc)
        # Deliver the connection_lost callbacks the closes queued.
        while self._ready:
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

    def stats(self) -> dict[str, int]:
        """Counters about this reactor, cheap enough to keep always."""
        return {
            "iterations": self._iterations,
            "events": self._events,
            "registered_fds": len(self._registered),
            "timers": len(self._timers),
            "resources": len(self._resources),
        }
