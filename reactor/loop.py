"""The event loop core: wait for readiness, call back, run timers. Nothing else.

One turn of the loop (:meth:`EventLoop._run_once`):

1. Work out how long it may sleep: zero if callbacks are ready, else until
   the earliest timer (or forever).
2. Ask the backend which fds are ready, and call each fd's reader and/or
   writer directly. There is no queue on this path: a readable socket goes
   straight to its transport's read method, which calls the protocol.
3. Run the timers that are due, then the callbacks queued with
   ``call_soon``/``call_from_thread`` before this turn began.

Every callback runs inside one exception sink (:meth:`EventLoop.call_exception_handler`):
an error is logged with its traceback and the loop goes on.

This module knows no socket, transport, signal, trace or debug mode. The
:class:`~reactor.Reactor` users make is assembled on top of it
(``reactor/reactor.py``), and transports see it only through the
:class:`~reactor.interfaces.ReactorPort` interface.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from functools import partial
from types import TracebackType
from typing import Any, Final, TypeVar

from reactor.backends import INVALID, READ, READ_BITS, WRITE_BITS, Poller
from reactor.fdwatch import FdRegistry, HasFileno, fileno_of
from reactor.timers import Handle, PeriodicCall, TimerHandle, TimerQueue
from reactor.waker import Waker

__all__ = ["EventLoop"]

log = logging.getLogger("reactor")

_monotonic = time.monotonic
#: A timer due within the clock's resolution counts as due now (see _run_once).
#: A module constant, not an attribute: interpreted, an instance with more
#: than 30 attributes keeps them in a dict, and every ``self.x`` gets slower.
_CLOCK_RESOLUTION: Final = time.get_clock_info("monotonic").resolution
_T = TypeVar("_T")


class EventLoop:
    """An event loop over one readiness backend; runs in one thread at a time."""

    def __init__(self, poller: Poller, timers: TimerQueue | None = None) -> None:
        self._fds = FdRegistry(poller)
        # The hot path reads these two tables directly (see _run_once).
        self._readers = self._fds.readers
        self._writers = self._fds.writers
        self._ready: deque[Handle] = deque()
        # Bound once: compiled, ``self._ready.append(h)`` looks the method up
        # by name on every call (mypyc knows no deque), a bound one is just called.
        self._ready_append = self._ready.append
        self._timers = TimerQueue() if timers is None else timers
        self._running = False
        self._stopping = False
        self._closed = False
        #: The ident of the thread running the loop, while it runs (else None).
        self.thread_id: int | None = None
        # Iterations slower than this go to _slow_iteration(); never, unless a
        # debug layer lowers it, so the check is one comparison with inf.
        self._slow_threshold = math.inf
        # Counters for stats(); plain numbers so keeping them is nearly free.
        self._iterations = 0
        self._events = 0
        self._callbacks = 0
        self._longest_iteration = 0.0
        # A replacement exception sink (call_exception_handler), or None.
        self._exception_handler: Callable[[dict[str, Any]], object] | None = None
        waker = None
        try:
            waker = Waker()
            self._fds.add_reader(waker.fileno(), waker.consume)
        except BaseException:
            # Release what was made (select cannot watch an fd >= FD_SETSIZE).
            if waker is not None:
                waker.close()
            poller.close()
            raise
        self._waker = waker

    # ------------------------------------------------------------------ state

    def __repr__(self) -> str:
        state = "closed" if self._closed else ("running" if self._running else "idle")
        return f"<{type(self).__name__} backend={self._fds.poller.name} {state}>"

    def __enter__(self: _T) -> _T:
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
        """The loop's clock: ``time.monotonic()``, in seconds."""
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
        append = self._ready_append  # through a local: see __init__
        append(handle)
        return handle

    def call_from_thread(self, callback: Callable[..., object], *args: Any) -> Handle:
        """Like :meth:`call_soon`, but safe from any thread; wakes a sleeping loop.

        Calls made by one thread run in the order that thread made them.
        """
        if self._closed:
            self._check_open()
        handle = Handle(callback, args)
        # deque.append is atomic; the waker writes only if no wake-up is
        # pending already, so a burst of calls costs one system call.
        append = self._ready_append
        append(handle)
        self._waker.wake()
        return handle

    def call_soon_threadsafe(self, callback: Callable[..., object], *args: Any) -> Handle:
        """asyncio's name for :meth:`call_from_thread`."""
        return self.call_from_thread(callback, *args)

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

    @property
    def call_exception_handler(self) -> Callable[[dict[str, Any]], object]:
        """The exception sink: by default, log ``context['message']`` and the traceback.

        Replace it per reactor (``reactor.call_exception_handler = fn``) to
        send errors elsewhere; ``fn(context)`` must not raise. Assigning None
        restores the default. (An attribute, not a method to override, so
        that replacing it works the same in the compiled build.)
        """
        handler = self._exception_handler
        return self.default_exception_handler if handler is None else handler

    @call_exception_handler.setter
    def call_exception_handler(self, handler: Callable[[dict[str, Any]], object] | None) -> None:
        self._exception_handler = handler

    def default_exception_handler(self, context: dict[str, Any]) -> None:
        """Log ``context['message']``, the other keys, and the exception's traceback."""
        exc = context.get("exception")
        message = context.get("message", "unhandled exception in a callback")
        details = "".join(
            f"\n  {key}: {value!r}"
            for key, value in context.items()
            if key not in ("message", "exception")
        )
        exc_info = (type(exc), exc, exc.__traceback__) if exc is not None else None
        log.error("%s%s", message, details, exc_info=exc_info)

    def report_error(self, context: dict[str, Any]) -> None:
        """Hand ``context`` to the exception sink; never raises (transports use this)."""
        try:
            # Through a local: mypyc would call the property's getter with
            # the argument, not the callable it returns.
            handler = self.call_exception_handler
            handler(context)
        except Exception:  # the sink itself failed: last resort, never kill the loop
            # Name the original error too, or a broken handler would hide every error.
            log.exception(
                "exception in the exception handler, while handling: %s: %r",
                context.get("message"),
                context.get("exception"),
            )

    def _callback_error(self, callback: object, exc: Exception) -> None:
        context = {"message": "exception in callback", "exception": exc, "callback": callback}
        self.report_error(context)

    # ----------------------------------------------------------- fd watching

    def add_reader(self, fd: int | HasFileno, callback: Callable[..., object], *args: Any) -> None:
        """Call ``callback(*args)`` whenever ``fd`` is readable (replaces any earlier reader)."""
        self._check_open()
        n = fileno_of(fd)
        self._fds.forget(n)
        self._fds.add_reader(n, partial(callback, *args) if args else callback)

    def remove_reader(self, fd: int | HasFileno) -> bool:
        """Stop watching ``fd`` for reading; returns whether it was watched."""
        return self._fds.remove_reader(fileno_of(fd))

    def add_writer(self, fd: int | HasFileno, callback: Callable[..., object], *args: Any) -> None:
        """Call ``callback(*args)`` whenever ``fd`` is writable (replaces any earlier writer)."""
        self._check_open()
        n = fileno_of(fd)
        self._fds.forget(n)
        self._fds.add_writer(n, partial(callback, *args) if args else callback)

    def remove_writer(self, fd: int | HasFileno) -> bool:
        """Stop watching ``fd`` for writing; returns whether it was watched."""
        return self._fds.remove_writer(fileno_of(fd))

    # The transports' versions: an fd number they own, no checks, no re-registering.

    def watch_read(self, fd: int, callback: Callable[[], object]) -> None:
        self._fds.add_reader(fd, callback)

    def unwatch_read(self, fd: int) -> bool:
        return self._fds.remove_reader(fd)

    def watch_write(self, fd: int, callback: Callable[[], object]) -> None:
        self._fds.add_writer(fd, callback)

    def unwatch_write(self, fd: int) -> bool:
        return self._fds.remove_writer(fd)

    # ----------------------------------------------------------------- running

    def run(self) -> None:
        """Run until :meth:`stop` is called."""
        self._check_open()
        if self._running:
            raise RuntimeError("this reactor is already running")
        self._running = True
        self.thread_id = threading.get_ident()
        try:
            while True:
                self._run_once(None)
                if self._stopping:
                    break
        finally:
            self._stopping = False
            self._running = False
            self.thread_id = None

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
        self.thread_id = threading.get_ident()
        try:
            self._run_once(timeout)
        finally:
            self._stopping = False
            self._running = False
            self.thread_id = None

    # --------------------------------------------------------------- embedding

    def fileno(self) -> int:
        """The backend's own fd, readable whenever this loop has I/O to handle.

        For hosting the reactor in another loop (asyncio, Tk, Qt, a game
        loop): watch this fd for reading there, and when it is readable, or
        when :meth:`next_timeout` says, call :meth:`run_once` with timeout 0.
        epoll and kqueue have such an fd. poll and select keep no kernel
        object, so for them this raises NotImplementedError: host the reactor
        on epoll or kqueue, or have the host call ``run_once()`` at least every
        ``next_timeout()`` seconds and whenever it may have I/O. The number
        changes if the fd registry ever rebuilds the backend (it says so in
        the log), so a host should check it after each turn.
        """
        self._check_open()
        fileno = getattr(self._fds.poller, "fileno", None)
        if fileno is None:
            raise NotImplementedError(
                f"the {self._fds.poller.name} backend has no fd of its own to watch: "
                "make the Reactor with backend='epoll' (or 'kqueue') to host it in "
                "another loop, or call run_once() from that loop on its schedule"
            )
        return int(fileno())

    def next_timeout(self) -> float | None:
        """Seconds until this loop has work that no fd will announce.

        0.0 if callbacks are queued (or a stop is pending); else the time to
        the earliest timer; None if there is neither, when only I/O (or a
        call from another thread, which makes :meth:`fileno` readable) can
        give it work. What a host loop's timer should be set to.
        """
        if self._ready or self._stopping:
            return 0.0
        deadline = self._timers.next_deadline()
        if deadline is None:
            return None
        timeout = deadline - _monotonic()
        return timeout if timeout > 0.0 else 0.0

    def stop(self) -> None:
        """Stop :meth:`run` after the current turn. Safe from callbacks, signal
        handlers and other threads. Called before run(), run() does one turn."""
        self._stopping = True
        if self.thread_id is not None:
            # From a callback this costs one write per run(). It is needed from
            # another thread, and from a plain signal.signal() handler: that runs
            # in the loop's thread, after which poll() is retried (PEP 475).
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

        events = self._fds.poller.poll(timeout)
        start = _monotonic()
        self._iterations += 1
        if events:
            self._events += len(events)
            readers = self._readers
            for fd, bits in events:
                if bits == READ:  # the common case, kept short: readable, nothing else
                    callback = readers.get(fd)
                    if callback is not None:
                        try:
                            callback()
                        except Exception as exc:
                            self._fd_callback_error(fd, callback, exc)
                        continue
                self._dispatch(fd, bits)

        if timers._heap:
            # A timer due within the clock's resolution counts as due now,
            # or the loop would wake, find nothing due, and sleep 0 again.
            ready.extend(timers.pop_due(_monotonic() + _CLOCK_RESOLUTION))

        # Run only what was queued before now: callbacks queued by these
        # callbacks wait for the next turn, so I/O is never starved.
        if ready:
            self._run_ready(len(ready))

        took = _monotonic() - start
        if took > self._longest_iteration:
            self._longest_iteration = took
        if took > self._slow_threshold:
            self._slow_iteration(took)

    def _dispatch(self, fd: int, bits: int) -> None:
        """Any event but a plain READ: writable, errors, hang-ups, stale or closed fds."""
        fds = self._fds
        if bits & INVALID:
            fds.drop(fd)
            return
        handled = False
        # The writer is looked up after the reader ran: the reader may remove it.
        for wanted, callbacks in ((READ_BITS, self._readers), (WRITE_BITS, self._writers)):
            if bits & wanted:
                callback = callbacks.get(fd)
                if callback is not None:
                    handled = True
                    try:
                        callback()
                    except Exception as exc:
                        self._fd_callback_error(fd, callback, exc)
        if not handled and fd not in fds.registered:
            # Reported but no longer ours (a stale registration):
            # drop it so it cannot make the loop spin.
            fds.unwatch_stale(fd)

    def _fd_callback_error(self, fd: int, callback: object, exc: Exception) -> None:
        self._callback_error(callback, exc)
        self._fds.callback_failed(fd, exc)

    def _run_ready(self, count: int) -> None:
        """Run the first ``count`` callbacks of the ready queue."""
        popleft = self._ready.popleft
        self._callbacks += count
        # Written for the compiled build too: a named counter (mypyc boxes
        # "_"), the method bound once, the callback read into a local (called
        # as an attribute, it is looked up by name like a method).
        for _i in range(count):
            item = popleft()
            if item._cancelled:
                continue
            callback = item._callback
            try:
                callback(*item._args)
            except Exception as exc:
                self._callback_error(callback, exc)

    def _slow_iteration(self, took: float) -> None:
        """Called after a turn slower than ``_slow_threshold`` (a debug layer's hook)."""

    # ---------------------------------------------------------------- closing

    def close(self) -> None:
        """Run the callbacks already queued, then release the backend and the
        waker. Not while running."""
        if self._running:
            raise RuntimeError("close() called while the reactor is running; stop() it first")
        if self._closed:
            return
        # A few passes (a callback may queue another, e.g. connection_lost
        # closing something else), but bounded: a callback that keeps
        # rescheduling itself must not hang close().
        for _ in range(8):
            if not self._ready:
                break
            self._run_ready(len(self._ready))
        self._closed = True
        self._timers.clear()
        self._ready.clear()
        self._fds.close()
        self._waker.close()
