"""Trace mode: one readable log line per notable event, to watch the loop turn.

Turned on by ``Reactor(trace=True)`` or ``REACTOR_TRACE=1`` (and ``--trace``
on every app). It logs on the ``reactor.trace`` logger at INFO::

    poll timeout=forever -> 1 ready: fd 6 READ
    accepted 127.0.0.1:53422 as connection #1 (fd 8)
    #1 connection_made peer=127.0.0.1:53422
    #1 data in 6 bytes
    #1 data out 6 bytes
    #1 eof_received (peer sent FIN)
    #1 write_eof (sending FIN)
    #1 connection_lost: clean close
    timer fired: Session._expire

Nothing here costs anything when tracing is off, and nothing below this
module knows it exists: the reactor (``reactor/reactor.py``) swaps in a
tracing poller, a tracing timer queue and a tracing transport maker instead
of testing a flag on the hot path.
"""

from __future__ import annotations

import logging
import socket
import sys
from collections.abc import Callable
from typing import Any

from reactor.backends.base import ERROR, HANGUP, INVALID, READ, WRITE, Poller
from reactor.interfaces import Address, ProtocolInterface, ReactorPort
from reactor.stream import StreamTransport
from reactor.tcp import TransportMaker
from reactor.timers import TimerHandle, TimerQueue

__all__ = [
    "TracingPoller",
    "TracingStreamTransport",
    "TracingTimerQueue",
    "TracingTransportMaker",
    "describe_reason",
    "enable_trace_output",
    "format_address",
    "trace_log",
]

trace_log = logging.getLogger("reactor.trace")

_BIT_NAMES = (
    (READ, "READ"),
    (WRITE, "WRITE"),
    (ERROR, "ERROR"),
    (HANGUP, "HANGUP"),
    (INVALID, "INVALID"),
)


def enable_trace_output() -> None:
    """Make sure trace lines are seen: INFO on ``reactor.trace``, and a stderr
    handler if logging has not been configured at all."""
    if trace_log.getEffectiveLevel() > logging.INFO:
        trace_log.setLevel(logging.INFO)
    if not logging.getLogger().handlers and not trace_log.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("trace: %(message)s"))
        trace_log.addHandler(handler)


def format_bits(bits: int) -> str:
    return "|".join(name for bit, name in _BIT_NAMES if bits & bit) or hex(bits)


def format_address(addr: Address) -> str:
    if isinstance(addr, tuple) and len(addr) >= 2:
        host = str(addr[0])
        return f"[{host}]:{addr[1]}" if ":" in host else f"{host}:{addr[1]}"
    return repr(addr) if addr else "unnamed"


def describe_reason(exc: BaseException | None, aborted: bool = False) -> str:
    """How a connection ended, in words (for connection_lost lines)."""
    if exc is None:
        return "aborted" if aborted else "clean close"
    if isinstance(exc, ConnectionResetError):
        return "reset by peer (ConnectionResetError)"
    if isinstance(exc, BrokenPipeError):
        return "peer gone while writing (BrokenPipeError)"
    return f"{type(exc).__name__}: {exc}"


def _name(callback: Any) -> str:
    func = getattr(callback, "func", callback)  # functools.partial
    return str(getattr(func, "__qualname__", None) or repr(func))


class TracingPoller:
    """Wraps a poller and logs every poll with its timeout and what was ready."""

    def __init__(self, poller: Poller) -> None:
        self._poller = poller
        self.name = poller.name

    def register(self, fd: int, events: int) -> None:
        self._poller.register(fd, events)

    def modify(self, fd: int, events: int) -> None:
        self._poller.modify(fd, events)

    def unregister(self, fd: int) -> None:
        self._poller.unregister(fd)

    def poll(self, timeout: float | None) -> list[tuple[int, int]]:
        events = self._poller.poll(timeout)
        wait = "forever" if timeout is None else f"{timeout:.3f}s"
        if events:
            ready = ", ".join(f"fd {fd} {format_bits(bits)}" for fd, bits in events)
            trace_log.info("poll timeout=%s -> %d ready: %s", wait, len(events), ready)
        elif timeout != 0.0:
            trace_log.info("poll timeout=%s -> nothing ready", wait)
        return events

    def close(self) -> None:
        self._poller.close()


class TracingTimerQueue(TimerQueue):
    """A timer queue that logs each timer as it fires."""

    __slots__ = ()

    def pop_due(self, now: float) -> list[TimerHandle]:
        due = super().pop_due(now)
        for handle in due:
            trace_log.info("timer fired: %s", _name(handle._callback))
        return due


class TracingStreamTransport(StreamTransport):
    """A stream transport that logs its connection's life, numbered #1, #2, ..."""

    __slots__ = ("_aborted", "trace_id")

    def __init__(
        self,
        reactor: ReactorPort,
        sock: socket.socket,
        protocol: ProtocolInterface,
        peername: Any,
        trace_id: int,
    ) -> None:
        self.trace_id = trace_id
        self._aborted = False
        super().__init__(reactor, sock, protocol, peername)

    def _use_protocol(self, protocol: ProtocolInterface) -> None:
        super()._use_protocol(protocol)
        deliver: Callable[[Any], object] = self._data_received
        trace_id = self.trace_id

        def data_received(data: Any) -> None:
            size = data if isinstance(data, int) else len(data)  # buffer_updated(nbytes)
            trace_log.info("#%d data in %d bytes", trace_id, size)
            deliver(data)

        self._data_received = data_received

    def _connection_made(self) -> None:
        peer = format_address(self._peername)
        trace_log.info("#%d connection_made peer=%s", self.trace_id, peer)
        super()._connection_made()

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if data and not self._closing:
            trace_log.info("#%d data out %d bytes", self.trace_id, len(data))
        super().write(data)

    def _read_eof(self) -> None:
        trace_log.info("#%d eof_received (peer sent FIN)", self.trace_id)
        super()._read_eof()

    def write_eof(self) -> None:
        if not (self._eof_written or self._closing):
            trace_log.info("#%d write_eof (sending FIN)", self.trace_id)
        super().write_eof()

    def abort(self, reason: BaseException | None = None) -> None:
        self._aborted = True
        super().abort(reason)

    def _call_connection_lost(self, exc: BaseException | None) -> None:
        trace_log.info(
            "#%d connection_lost: %s", self.trace_id, describe_reason(exc, self._aborted)
        )
        super()._call_connection_lost(exc)


class TracingTransportMaker:
    """Makes one reactor's tracing transports, numbering its connections from #1.

    ``maker("accepted")`` is what listeners get, ``maker("connected to")``
    what connectors get, so the first line of a connection says which it was.
    """

    def __init__(self) -> None:
        self.count = 0

    def maker(self, origin: str) -> TransportMaker:
        def make(
            reactor: ReactorPort, sock: socket.socket, protocol: ProtocolInterface, peer: Address
        ) -> StreamTransport:
            self.count += 1
            transport = TracingStreamTransport(reactor, sock, protocol, peer, self.count)
            trace_log.info(
                "%s %s as connection #%d (fd %d)",
                origin,
                format_address(peer),
                self.count,
                transport._fd,
            )
            return transport

        return make
