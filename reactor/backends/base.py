"""The interface every readiness backend implements, and the event bits.

A backend watches file descriptors and reports which are ready. It knows
nothing about callbacks: the reactor keeps those. The bits are chosen to be
epoll's and poll's own (``EPOLLIN == POLLIN == 1`` and so on), so those two
backends can hand their kernel's answer to the reactor without translating it.
"""

from __future__ import annotations

from typing import Final, Protocol

__all__ = ["ERROR", "HANGUP", "INVALID", "MAX_TIMEOUT", "READ", "WRITE", "Poller"]

READ: Final = 0x001  # EPOLLIN / POLLIN
WRITE: Final = 0x004  # EPOLLOUT / POLLOUT
ERROR: Final = 0x008  # EPOLLERR / POLLERR: reported even when not asked for
HANGUP: Final = 0x010  # EPOLLHUP / POLLHUP: reported even when not asked for
INVALID: Final = 0x020  # POLLNVAL: the fd is not open (it was closed while registered)

#: Bits that mean "call the reader": a hang-up or error is seen by the reader
#: as EOF or as an exception from recv(), after any unread data is drained.
READ_BITS: Final = READ | ERROR | HANGUP | INVALID
#: Bits that mean "call the writer": send() will report the error.
WRITE_BITS: Final = WRITE | ERROR | HANGUP | INVALID

#: The longest one wait may be, in seconds. Longer timeouts are cut to this:
#: epoll and poll take a C int of milliseconds (24.8 days) and raise
#: OverflowError beyond it, so a timer a month away would crash the loop.
#: Waking early is allowed ("up to"); the reactor just waits again.
MAX_TIMEOUT: Final = 86400.0


class Poller(Protocol):
    """One readiness mechanism. ``events`` is a combination of READ and WRITE."""

    #: The mechanism's name, as ``Reactor(backend=...)`` takes it.
    name: str

    def register(self, fd: int, events: int) -> None:
        """Start watching ``fd``; raises OSError/ValueError if the fd is unusable."""

    def modify(self, fd: int, events: int) -> None:
        """Change what a registered ``fd`` is watched for."""

    def unregister(self, fd: int) -> None:
        """Stop watching ``fd``; call before closing it. Unknown fds are ignored."""

    def poll(self, timeout: float | None) -> list[tuple[int, int]]:
        """Wait up to ``timeout`` seconds (None: forever) for readiness.

        A negative timeout counts as 0; one above MAX_TIMEOUT as MAX_TIMEOUT.

        Returns ``(fd, bits)`` pairs. An interrupted wait (EINTR) returns an
        empty list instead of raising, so the reactor can run signal handlers.
        """
        ...

    def close(self) -> None:
        """Release the kernel object, if any."""
