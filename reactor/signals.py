"""Signals delivered as ordinary loop callbacks, through the wake-up fd.

Python runs a signal handler between two bytecodes of the main thread, which
may be in the middle of anything, and never while a system call such as
``epoll_wait`` blocks. So the reactor does not act in the handler. It gives
the interpreter a socket with ``signal.set_wakeup_fd``: the C-level handler
writes the signal number there, which wakes the poll; the loop reads the
numbers and queues each registered callback like a ``call_soon``.

Only the main thread may install handlers (Python delivers signals there).
The previous wake-up fd and Python-level handlers are restored when the last
handler is removed.
"""

from __future__ import annotations

import signal
import socket
import threading
from collections.abc import Callable
from typing import Any, Protocol

from reactor.fdwatch import file_identity
from reactor.timers import Handle

__all__ = ["SignalHandlers"]


class _Loop(Protocol):
    """What signal handling needs of the loop."""

    def watch_read(self, fd: int, callback: Callable[[], object]) -> None: ...
    def unwatch_read(self, fd: int) -> bool: ...
    def call_soon(self, callback: Callable[..., object], *args: Any) -> Handle: ...


def _ignore_signal(signum: int, frame: Any) -> None:
    """The Python-level handler: the real work is done via the wake-up fd."""


def check_main_thread(what: str) -> None:
    if threading.current_thread() is not threading.main_thread():
        raise RuntimeError(
            f"{what}() must be called from the main thread: Python only "
            "delivers signals there; use call_from_thread() to reach the reactor"
        )


class SignalHandlers:
    """One loop's signal handlers and the socket pair they arrive through."""

    def __init__(self, loop: _Loop) -> None:
        self._loop = loop
        #: signal number -> (callback, args, the Python handler it replaced)
        self.handlers: dict[int, tuple[Callable[..., object], tuple[Any, ...], Any]] = {}
        self.rsock: socket.socket | None = None  # the loop reads signal numbers here
        self.wsock: socket.socket | None = None  # the wake-up fd the C handler writes
        self._old_wakeup_fd = -1
        self._old_wakeup_id: tuple[int, int] | None = None  # which file that fd was

    def add(self, sig: object, callback: Callable[..., object], args: tuple[Any, ...]) -> None:
        check_main_thread("add_signal_handler")
        if not isinstance(sig, int) or sig not in signal.valid_signals():
            raise ValueError(f"{sig!r} is not a valid signal number")
        if sig in (signal.SIGKILL, signal.SIGSTOP):
            raise ValueError(f"signal {sig} cannot be caught")
        if self.rsock is None:
            self._install()
        previous = self.handlers.get(sig)
        if previous is not None:
            old_handler = previous[2]
        else:
            try:
                old_handler = signal.signal(sig, _ignore_signal)
            except BaseException:
                if not self.handlers:
                    self._teardown()
                raise
        self.handlers[sig] = (callback, args, old_handler)

    def remove(self, sig: int) -> bool:
        if sig not in self.handlers:
            return False
        check_main_thread("remove_signal_handler")
        old_handler = self.handlers.pop(sig)[2]
        signal.signal(sig, old_handler if old_handler is not None else signal.SIG_DFL)
        if not self.handlers:
            self._teardown()
        return True

    def close(self) -> None:
        """Remove every handler (main thread only, checked before anything changes)."""
        if self.handlers:
            check_main_thread("close")
        for sig in list(self.handlers):
            self.remove(sig)

    def _install(self) -> None:
        rsock, wsock = socket.socketpair()
        rsock.setblocking(False)
        wsock.setblocking(False)
        self._old_wakeup_fd = signal.set_wakeup_fd(wsock.fileno(), warn_on_full_buffer=False)
        self._old_wakeup_id = file_identity(self._old_wakeup_fd)
        self.rsock, self.wsock = rsock, wsock
        try:
            self._loop.watch_read(rsock.fileno(), self._read)
        except BaseException:
            self._teardown()
            raise

    def _teardown(self) -> None:
        """Give back the wake-up fd and close the socket pair."""
        rsock, wsock = self.rsock, self.wsock
        assert rsock is not None and wsock is not None  # only called while installed
        old = self._old_wakeup_fd
        if old >= 0 and file_identity(old) != self._old_wakeup_id:
            # The previous owner closed its fd meanwhile (and the number may
            # name another file now): restoring it would let the C signal
            # handler write into a stranger's fd.
            old = -1
        current = signal.set_wakeup_fd(old)
        if current != wsock.fileno():
            # Someone installed their own wake-up fd after ours (another
            # reactor, asyncio): it stays theirs.
            signal.set_wakeup_fd(current)
        self._loop.unwatch_read(rsock.fileno())
        rsock.close()
        wsock.close()
        self.rsock = self.wsock = None
        self._old_wakeup_fd = -1
        self._old_wakeup_id = None

    def _read(self) -> None:
        assert self.rsock is not None
        try:
            data = self.rsock.recv(4096)
        except (BlockingIOError, InterruptedError):
            return
        for signum in data:
            entry = self.handlers.get(signum)
            if entry is not None:
                self._loop.call_soon(entry[0], *entry[1])
