"""An emulation of ``select.kqueue`` on top of ``select.poll``, for Linux.

It implements the part of the BSD kqueue API that
:class:`reactor.backends.kqueue.KqueuePoller` uses, with kqueue's own
semantics where an adapter could tell the difference:

* Read and write are separate *filters*. Each (fd, filter) pair is one knote,
  and an fd that is ready both ways yields two kevents.
* A read filter on a socket whose peer has closed reports ``EV_EOF`` in
  ``flags`` *together with* the bytes still unread in ``data``; a write
  filter whose peer is gone reports ``EV_EOF`` too.
* ``EV_DELETE`` (or ``EV_ENABLE``/``EV_DISABLE``) of a filter that was never
  added fails with ENOENT; any change on a closed fd fails with EBADF.
* Closing an fd makes the kqueue forget its filters, silently. (The emulation
  notices at the next change or wait: POLLNVAL, or an fd number that now names
  another file, as its device and inode show.)
* The changelist is applied before waiting. With ``max_events == 0`` the call
  returns at once; with room in the event list a failing change comes back as
  an ``EV_ERROR`` kevent (``data`` = errno) and the call returns without
  waiting; without room it raises. ``max_events`` limits the result, and
  the events left out are returned first the next time, as kqueue's queue does.
* ``timeout=None`` blocks, ``0`` polls; a negative timeout is a ValueError.

Not emulated: ``EV_CLEAR`` (edge-triggering cannot be built from poll's level
readiness; it raises NotImplementedError), filters other than read and write,
the socket error in ``fflags`` with ``EV_EOF`` (reading SO_ERROR would clear
it), and the free space in a write filter's ``data`` (always 0).

Real kqueue almost never reports EINTR (CPython retries it), so
:meth:`EmulatedKqueue.inject_eintr` makes the next waits raise
InterruptedError, to test that an adapter does not let it escape.
"""

from __future__ import annotations

import array
import errno
import fcntl
import math
import os
import select
import termios
import time
from collections.abc import Iterable
from typing import Any, Final

from reactor.backends.kqueue import KqueuePoller

__all__ = [
    "EMULATED_SELECT",
    "KQ_EV_ADD",
    "KQ_EV_CLEAR",
    "KQ_EV_DELETE",
    "KQ_EV_DISABLE",
    "KQ_EV_ENABLE",
    "KQ_EV_EOF",
    "KQ_EV_ERROR",
    "KQ_EV_FLAG1",
    "KQ_EV_ONESHOT",
    "KQ_EV_SYSFLAGS",
    "KQ_FILTER_READ",
    "KQ_FILTER_WRITE",
    "EmulatedKqueue",
    "EmulatedSelectModule",
    "kevent",
    "make_emulated_kqueue_poller",
]

# The values of <sys/event.h> on FreeBSD and macOS (the same on both).
KQ_FILTER_READ: Final = -1
KQ_FILTER_WRITE: Final = -2
KQ_EV_ADD: Final = 0x0001
KQ_EV_DELETE: Final = 0x0002
KQ_EV_ENABLE: Final = 0x0004
KQ_EV_DISABLE: Final = 0x0008
KQ_EV_ONESHOT: Final = 0x0010
KQ_EV_CLEAR: Final = 0x0020
KQ_EV_SYSFLAGS: Final = 0xF000
KQ_EV_FLAG1: Final = 0x2000
KQ_EV_ERROR: Final = 0x4000
KQ_EV_EOF: Final = 0x8000

# Flags that are actions, not state: the kernel does not keep them in the knote
# nor report them back.
_ACTION_FLAGS: Final = KQ_EV_ADD | KQ_EV_DELETE | KQ_EV_ENABLE | KQ_EV_DISABLE

_POLLIN: Final = select.POLLIN
_POLLOUT: Final = select.POLLOUT
_POLLERR: Final = select.POLLERR
_POLLHUP: Final = select.POLLHUP
_POLLNVAL: Final = select.POLLNVAL
# Linux reports a peer's shutdown of its sending side (half-close) only as
# POLLRDHUP; elsewhere a hang-up is the best we have.
_POLLRDHUP: Final = getattr(select, "POLLRDHUP", 0)

_READ_MASK: Final = _POLLIN | _POLLRDHUP
_WRITE_MASK: Final = _POLLOUT
# What makes each filter fire (POLLERR and POLLHUP are reported unasked).
_READ_FIRES: Final = _POLLIN | _POLLRDHUP | _POLLHUP | _POLLERR
_WRITE_FIRES: Final = _POLLOUT | _POLLHUP | _POLLERR
_READ_EOF: Final = _POLLRDHUP | _POLLHUP
_WRITE_EOF: Final = _POLLHUP | _POLLERR

_FIONREAD: Final[int | None] = getattr(termios, "FIONREAD", None)
_MAX_POLL_MS: Final = 2**31 - 1  # poll() takes a C int of milliseconds


def _oserror(code: int, fd: int) -> OSError:
    # OSError(errno, strerror) picks the subclass (FileNotFoundError for ENOENT).
    return OSError(code, f"{os.strerror(code)} (kevent ident {fd})")


class kevent:  # noqa: N801 - named as select.kevent is
    """A change to apply, or an event reported; ``select.kevent``'s fields."""

    __slots__ = ("data", "fflags", "filter", "flags", "ident", "udata")

    def __init__(
        self,
        ident: int | Any,
        filter: int = KQ_FILTER_READ,
        flags: int = KQ_EV_ADD,
        fflags: int = 0,
        data: int = 0,
        udata: int = 0,
    ) -> None:
        if not isinstance(ident, int):
            # Like select.kevent: anything with a fileno() names its fd.
            ident = ident.fileno()
        self.ident: int = ident
        self.filter: int = filter
        self.flags: int = flags
        self.fflags: int = fflags
        self.data: int = data
        self.udata: int = udata

    def _key(self) -> tuple[int, int, int, int, int, int]:
        return (self.ident, self.filter, self.flags, self.fflags, self.data, self.udata)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, kevent):
            return NotImplemented
        return self._key() == other._key()

    __hash__ = None  # type: ignore[assignment]  # mutable, as select.kevent is

    def __repr__(self) -> str:
        return (
            f"<kevent ident={self.ident} filter={self.filter} flags={self.flags:#x} "
            f"fflags={self.fflags:#x} data={self.data:#x} udata={self.udata:#x}>"
        )


class _Knote:
    """One (fd, filter) registration."""

    __slots__ = ("data", "enabled", "fflags", "flags", "seq", "udata")

    def __init__(self, kev: kevent) -> None:
        self.flags = kev.flags & ~_ACTION_FLAGS
        self.fflags = kev.fflags
        self.data = kev.data
        self.udata = kev.udata
        self.enabled = not kev.flags & KQ_EV_DISABLE
        self.seq = 0  # when last delivered: kqueue's queue puts it at the tail


class _FdState:
    """The knotes of one fd, which file it named, and what poll watches."""

    __slots__ = ("file_id", "knotes", "mask")

    def __init__(self, file_id: tuple[int, int]) -> None:
        self.file_id = file_id
        self.knotes: dict[int, _Knote] = {}
        self.mask = 0  # the poll() mask registered for this fd; 0: not registered


def _file_id(fd: int) -> tuple[int, int]:
    """The (device, inode) of the file ``fd`` names; OSError(EBADF) if closed."""
    try:
        st = os.fstat(fd)
    except (OSError, OverflowError, ValueError):
        raise _oserror(errno.EBADF, fd) from None
    return (st.st_dev, st.st_ino)


def _bytes_readable(fd: int, revents: int) -> int:
    if _FIONREAD is not None:
        buf = array.array("i", [0])
        try:
            fcntl.ioctl(fd, _FIONREAD, buf, True)
        except OSError:
            pass  # not a socket, pipe or tty (a listening socket, an eventfd...)
        else:
            return buf[0]
    # kqueue's data is then a count of something ready (connections, for a
    # listening socket); say one.
    return 1 if revents & _POLLIN else 0


class EmulatedKqueue:
    """``select.kqueue()``: a set of knotes, watched through one ``select.poll``."""

    def __init__(self) -> None:
        self._poll = select.poll()
        self._fds: dict[int, _FdState] = {}
        self._delivered = 0  # a clock for _Knote.seq
        self._closed = False
        self._fileno: int | None = None
        self._eintr = 0

    # ---------------------------------------------------------------- object

    @property
    def closed(self) -> bool:
        return self._closed

    def fileno(self) -> int:
        """A real descriptor (of /dev/null), opened when first asked for."""
        self._check_open()
        if self._fileno is None:
            self._fileno = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
        return self._fileno

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._fds.clear()
        self._poll = select.poll()
        if self._fileno is not None:
            os.close(self._fileno)
            self._fileno = None

    def __enter__(self) -> EmulatedKqueue:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def inject_eintr(self, count: int = 1) -> None:
        """Make the next ``count`` waits raise InterruptedError (after changes)."""
        self._eintr += count

    def watched(self) -> dict[int, set[int]]:
        """The filters each fd has (for tests): ``{fd: {filter, ...}}``."""
        return {fd: set(state.knotes) for fd, state in self._fds.items()}

    def _check_open(self) -> None:
        if self._closed:
            raise ValueError("I/O operation on closed kqueue object")

    # --------------------------------------------------------------- control

    def control(
        self,
        changelist: Iterable[kevent] | None,
        max_events: int,
        timeout: float | None = None,
    ) -> list[kevent]:
        """Apply ``changelist``, then wait up to ``timeout`` for ``max_events``."""
        self._check_open()
        if max_events < 0:
            raise ValueError(f"Length of eventlist must be 0 or positive, got {max_events}")
        if timeout is not None:
            if not isinstance(timeout, (int, float)):
                raise TypeError(
                    f"timeout argument must be a number or None, got {type(timeout).__name__}"
                )
            if timeout < 0:
                raise ValueError("timeout must be positive or None")
            if not timeout * 1e9 < 2**63:  # CPython's nanosecond clock type
                raise OverflowError("timestamp too large to convert to C PyTime_t")

        errors: list[kevent] = []
        if changelist is not None:
            for kev in changelist:
                if not isinstance(kev, kevent):
                    raise TypeError("changelist must be an iterable of select.kevent objects")
                try:
                    self._change(kev)
                except OSError as exc:
                    if len(errors) >= max_events:
                        raise
                    code = exc.errno if exc.errno is not None else errno.EINVAL
                    errors.append(
                        kevent(kev.ident, kev.filter, KQ_EV_ERROR, kev.fflags, code, kev.udata)
                    )
        if errors:
            return errors
        if max_events == 0:
            return []
        return self._wait(max_events, timeout)

    def _change(self, kev: kevent) -> None:
        fd, filt, flags = kev.ident, kev.filter, kev.flags
        if filt not in (KQ_FILTER_READ, KQ_FILTER_WRITE):
            raise _oserror(errno.EINVAL, fd)
        try:
            file_id = _file_id(fd)
        except OSError:
            self._forget(fd)  # closed: the kernel dropped its knotes
            raise
        state = self._fds.get(fd)
        if state is not None and state.file_id != file_id:
            # The fd was closed and its number reused: the old knotes are gone.
            self._forget(fd)
            state = None
        knote = None if state is None else state.knotes.get(filt)
        if flags & KQ_EV_CLEAR and flags & KQ_EV_ADD:
            raise NotImplementedError("EV_CLEAR (edge-triggered) is not emulated")
        if knote is None:
            if not flags & KQ_EV_ADD:
                raise _oserror(errno.ENOENT, fd)
            if state is None:
                state = self._fds[fd] = _FdState(file_id)
            knote = state.knotes[filt] = _Knote(kev)
        elif flags & KQ_EV_ADD:
            # Re-adding updates the knote; it is not a second one.
            knote.flags = kev.flags & ~_ACTION_FLAGS
            knote.fflags = kev.fflags
            knote.data = kev.data
            knote.udata = kev.udata
            if flags & KQ_EV_DISABLE:
                knote.enabled = False
        elif flags & KQ_EV_DISABLE:
            knote.enabled = False
        assert state is not None
        if flags & KQ_EV_ENABLE:
            knote.enabled = True
        if flags & KQ_EV_DELETE:
            del state.knotes[filt]
        self._sync(fd, state)

    def _sync(self, fd: int, state: _FdState) -> None:
        """Make the poll object's mask for ``fd`` match its enabled knotes."""
        mask = 0
        for filt, knote in state.knotes.items():
            if knote.enabled:
                mask |= _READ_MASK if filt == KQ_FILTER_READ else _WRITE_MASK
        if mask != state.mask:
            if mask:
                self._poll.register(fd, mask)  # registers or modifies
            else:
                self._poll.unregister(fd)
            state.mask = mask
        if not state.knotes:
            del self._fds[fd]

    def _forget(self, fd: int) -> None:
        state = self._fds.pop(fd, None)
        if state is not None and state.mask:
            self._poll.unregister(fd)

    # ------------------------------------------------------------------ wait

    def _wait(self, max_events: int, timeout: float | None) -> list[kevent]:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if self._eintr:
                self._eintr -= 1
                raise InterruptedError(errno.EINTR, os.strerror(errno.EINTR))
            if deadline is None:
                ms = -1
            else:
                remaining = max(0.0, deadline - time.monotonic()) * 1000.0
                ms = min(math.ceil(remaining), _MAX_POLL_MS)
            # poll() retries EINTR itself (PEP 475) unless a signal handler raises.
            ready = self._poll.poll(ms)
            if ready:
                events = self._collect(ready)
                if events:
                    return self._deliver(events, max_events)
                # Only closed or reused fds woke us: real kqueue would not have.
            if deadline is not None and time.monotonic() >= deadline:
                return []

    def _collect(self, ready: list[tuple[int, int]]) -> list[tuple[kevent, _Knote]]:
        events: list[tuple[kevent, _Knote]] = []
        fds = self._fds
        for fd, revents in ready:
            state = fds.get(fd)
            if state is None:
                continue
            if revents & _POLLNVAL:
                self._forget(fd)  # closed while watched: kqueue forgets it
                continue
            try:
                file_id = _file_id(fd)
            except OSError:
                file_id = None
            if file_id != state.file_id:
                self._forget(fd)  # closed, and the number now names another file
                continue
            for filt, knote in state.knotes.items():
                if not knote.enabled:
                    continue
                if filt == KQ_FILTER_READ:
                    if not revents & _READ_FIRES:
                        continue
                    flags = knote.flags | (KQ_EV_EOF if revents & _READ_EOF else 0)
                    data = _bytes_readable(fd, revents)
                else:
                    if not revents & _WRITE_FIRES:
                        continue
                    flags = knote.flags | (KQ_EV_EOF if revents & _WRITE_EOF else 0)
                    data = 0
                events.append((kevent(fd, filt, flags, 0, data, knote.udata), knote))
        return events

    def _deliver(self, events: list[tuple[kevent, _Knote]], max_events: int) -> list[kevent]:
        if len(events) > max_events:
            # Those waiting longest first, as in kqueue's queue (a level-
            # triggered knote goes back to its tail when delivered), so a
            # small event list starves no one.
            events.sort(key=lambda pair: pair[1].seq)
            del events[max_events:]
        result = []
        for kev, knote in events:
            self._delivered += 1
            knote.seq = self._delivered
            if kev.flags & KQ_EV_ONESHOT:
                state = self._fds[kev.ident]
                del state.knotes[kev.filter]
                self._sync(kev.ident, state)
            result.append(kev)
        return result


class EmulatedSelectModule:
    """The kqueue part of the ``select`` module, to pass as ``KqueuePoller(module=...)``."""

    KQ_FILTER_READ: Final = KQ_FILTER_READ
    KQ_FILTER_WRITE: Final = KQ_FILTER_WRITE
    KQ_EV_ADD: Final = KQ_EV_ADD
    KQ_EV_DELETE: Final = KQ_EV_DELETE
    KQ_EV_ENABLE: Final = KQ_EV_ENABLE
    KQ_EV_DISABLE: Final = KQ_EV_DISABLE
    KQ_EV_ONESHOT: Final = KQ_EV_ONESHOT
    KQ_EV_CLEAR: Final = KQ_EV_CLEAR
    KQ_EV_SYSFLAGS: Final = KQ_EV_SYSFLAGS
    KQ_EV_FLAG1: Final = KQ_EV_FLAG1
    KQ_EV_EOF: Final = KQ_EV_EOF
    KQ_EV_ERROR: Final = KQ_EV_ERROR

    kevent = kevent

    def kqueue(self) -> EmulatedKqueue:
        return EmulatedKqueue()


#: The module-like object; ``KqueuePoller(EMULATED_SELECT)``.
EMULATED_SELECT: Final = EmulatedSelectModule()


def make_emulated_kqueue_poller() -> KqueuePoller:
    """The kqueue adapter over the emulation (the "kqueue-emulated" backend)."""
    return KqueuePoller(EMULATED_SELECT)
