"""Wakes a sleeping poll from another thread.

On Linux an eventfd (one descriptor, an 8-byte counter); elsewhere a
non-blocking pipe. Wake-ups are coalesced: while one is pending, further
wakes write nothing, so 10,000 calls from a thread cost one system call per
loop turn rather than 10,000.
"""

from __future__ import annotations

import os

__all__ = ["Waker"]


class Waker:
    """A file descriptor that becomes readable when :meth:`wake` is called."""

    __slots__ = ("_pending", "_rfd", "_wbytes", "_wfd")

    def __init__(self) -> None:
        if hasattr(os, "eventfd"):
            fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
            self._rfd = self._wfd = fd
            self._wbytes = (1).to_bytes(8, "little")
        else:  # pragma: no cover - macOS/BSD
            self._rfd, self._wfd = os.pipe()
            os.set_blocking(self._rfd, False)
            os.set_blocking(self._wfd, False)
            self._wbytes = b"\0"
        self._pending = False

    def fileno(self) -> int:
        return self._rfd

    def wake(self) -> None:
        """Make the fd readable (safe from any thread)."""
        if self._pending:
            return
        self._pending = True
        try:
            os.write(self._wfd, self._wbytes)
        except OSError:
            # BlockingIOError: the pipe is full, so a wake-up is already there.
            # Other errors: the waker was closed while a thread still wakes it.
            pass

    def consume(self) -> None:
        """Reset the fd; called by the loop when it became readable.

        Read first, then clear the flag: clearing first would let a thread's
        wake land between the two and be swallowed by the read while the flag
        stayed set, and every later wake would be skipped.
        """
        try:
            os.read(self._rfd, 4096)
        except OSError:
            pass
        self._pending = False

    def close(self) -> None:
        rfd, wfd = self._rfd, self._wfd
        if rfd >= 0:
            # Forget the numbers before closing them: a thread still calling
            # wake() must not write into a new file that reuses the number.
            self._rfd = self._wfd = -1
            os.close(rfd)
            if wfd != rfd:  # pragma: no cover - pipe fallback
                os.close(wfd)
