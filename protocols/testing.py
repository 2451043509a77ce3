"""In-memory stand-ins for a connection and for the reactor's clock, for unit tests.

* :class:`MemoryTransport` is a stream transport with no socket behind it: it
  records what the protocol writes and lets the test play the peer (send
  data, EOF, a reset). Its callback rules are a real transport's, so a
  protocol that passes with it behaves the same on the reactor.
* :class:`Clock` is fake time with the reactor's timer API: nothing fires
  until the test calls :meth:`Clock.advance`.
* :class:`Pump` (made by :func:`connect_pair`) wires a client protocol to a
  server protocol through two memory transports.

Everything is synchronous and deterministic: no threads, no sleeping.
"""

from __future__ import annotations

import errno
import logging
import math
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from reactor import (
    DEFAULT_HIGH_WATER,
    DEFAULT_LOW_WATER,
    Address,
    Handle,
    PeriodicCall,
    ProtocolInterface,
    TimerHandle,
    TimerQueue,
    resolve_limits,
)
from reactor import Clock as ClockInterface

__all__ = ["Clock", "MemoryTransport", "Pump", "connect_pair"]

log = logging.getLogger("protocols.testing")


class MemoryTransport:
    """A stream transport that keeps written bytes in memory and is driven by the test.

    The test connects a protocol with :meth:`connect`, then plays the peer:
    :meth:`feed` (data arrives), :meth:`feed_eof` (the peer sent FIN),
    :meth:`feed_reset` (the peer reset the connection) and
    :meth:`feed_close` (the connection ended cleanly). What the protocol
    wrote is in :meth:`value`.

    The rules a real transport keeps are kept here too:

    * ``connection_lost`` is called exactly once, and nothing is called on the
      protocol after it.
    * No protocol callback runs inside another. If the protocol calls
      ``close()`` from ``data_received``, ``connection_lost(None)`` comes
      right after ``data_received`` returns. Called from outside any
      callback (by the test, or from a :class:`Clock` timer), it comes
      before ``close()`` returns: there is no event loop to defer it to.
    * ``close()`` with unsent (stalled) data waits for it to drain before
      ``connection_lost``; ``abort(reason)`` discards it and ends at once,
      with ``connection_lost(reason)``.
    * Once EOF has gone both ways (``write_eof()`` sent, ``eof_received``
      returned True), the transport closes.
    * Data fed while reading is paused is held (coalesced) and delivered on
      ``resume_reading()``; EOF waits behind it.
    * An exception from a protocol callback is logged with its traceback
      and the connection is closed with ``connection_lost(exc)`` (an
      exception from ``connection_lost`` itself is only logged).
    * ``write()`` after ``write_eof()`` raises RuntimeError; otherwise after
      ``close()`` it is dropped and counted in :attr:`dropped_writes`;
      anything but bytes, bytearray or memoryview raises TypeError.
    * The first reason for the end is the one ``connection_lost`` gets.

    With ``stalled=True`` the peer is not reading: written bytes stay in
    the write buffer (``get_write_buffer_size()``), ``pause_writing`` is
    called when the buffer grows past the high-water mark, and
    :meth:`drain` plays the peer catching up.

    ``clock`` (e.g. a fake :class:`Clock`) plays the reactor the connection
    runs on: ``get_extra_info("reactor")`` answers it, so protocols that
    default their timers to the transport's reactor (the idle timeout and
    heartbeat policies) use it.
    """

    def __init__(
        self,
        *,
        peername: Address = None,
        sockname: Address = None,
        socket: Any = None,
        extra: Mapping[str, Any] | None = None,
        stalled: bool = False,
        clock: ClockInterface | None = None,
    ) -> None:
        self._extra: dict[str, Any] = dict(extra or {})
        for name, value in (
            ("peername", peername),
            ("sockname", sockname),
            ("socket", socket),
            ("reactor", clock),
        ):
            if value is not None:
                self._extra[name] = value
        #: The clock given to the constructor (``get_extra_info("reactor")``), or None.
        self.clock = clock
        self._protocol: ProtocolInterface | None = None
        self._connected = False
        self._closing = False
        self._lost = False
        self._lost_pending = False
        self._lost_exc: BaseException | None = None
        self._depth = 0  # how many protocol callbacks are running right now
        self._settling = False
        self._reading = True
        self._incoming = bytearray()  # fed while reading was paused or inside a callback
        self._eof_pending = False
        self._eof_fed = False
        self._eof_delivered = False
        self._write_paused = False
        self._buffer = bytearray()  # written but not yet taken by the (stalled) peer
        self._written = bytearray()
        self._high = DEFAULT_HIGH_WATER
        self._low = DEFAULT_LOW_WATER
        self._stalled = stalled
        #: ``write_eof()`` was called.
        self.eof_written = False
        #: ``abort()`` was called before the connection was lost.
        self.aborted = False
        #: How many ``write()`` calls were dropped because the transport was closed.
        self.dropped_writes = 0

    # -- what the test looks at ------------------------------------------------

    @property
    def closed(self) -> bool:
        """The transport is closed or closing: ``close()``/``abort()`` ran, or the peer ended it."""
        return self._closing

    @property
    def lost(self) -> bool:
        """``connection_lost`` has been delivered."""
        return self._lost

    @property
    def stalled(self) -> bool:
        """Whether the peer is not reading. Setting it to False drains the buffer."""
        return self._stalled

    @stalled.setter
    def stalled(self, value: bool) -> None:
        self._stalled = value
        if not value:
            self.drain()

    def value(self) -> bytes:
        """Everything written so far that reached the peer (not what is stalled in the buffer)."""
        return bytes(self._written)

    def clear(self) -> None:
        """Forget what :meth:`value` returns, to look only at what is written next."""
        self._written.clear()

    # -- what the test does as the peer ----------------------------------------

    def connect(self, protocol: ProtocolInterface) -> None:
        """Attach ``protocol`` and call its ``connection_made(self)``."""
        if self._connected:
            raise RuntimeError("connect() called twice: a transport carries one connection")
        if self._closing:
            raise RuntimeError("connect() on a transport that is already closed")
        self._protocol = protocol
        self._connected = True
        self._call("connection_made", self)
        self._settle()

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """The peer sent ``data``: deliver it with ``data_received``.

        Ignored once the transport is closing (a closed socket reads nothing).
        """
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"feed() takes bytes-like data, not {type(data).__name__}")
        self._check_connected("feed")
        if self._eof_fed:
            raise RuntimeError("feed() after feed_eof(): the peer has already closed its side")
        if self._closing or not data:
            return
        if self._depth or not self._reading or self._incoming:
            self._incoming += data
        else:
            self._call("data_received", bytes(data))
        self._settle()

    def feed_eof(self) -> None:
        """The peer closed its write side: call ``eof_received``; close unless it returns True."""
        self._check_connected("feed_eof")
        if self._eof_fed:
            raise RuntimeError("feed_eof() called twice")
        self._eof_fed = True
        if self._closing:
            return
        self._eof_pending = True
        self._settle()

    def feed_reset(self) -> None:
        """The peer reset the connection: ``connection_lost(ConnectionResetError)``."""
        self._check_connected("feed_reset")
        if self._lost:
            return
        self._force_close(ConnectionResetError(errno.ECONNRESET, "Connection reset by peer"))
        self._settle()

    def feed_close(self) -> None:
        """The connection ended cleanly under the protocol: ``connection_lost(None)``.

        Unsent (stalled) data is discarded.
        """
        self._check_connected("feed_close")
        if self._lost:
            return
        self._force_close(None)
        self._settle()

    def drain(self, max_bytes: int | None = None) -> bytes:
        """The stalled peer reads up to ``max_bytes`` (default: all) of the write buffer.

        The bytes move to :meth:`value` and are returned. ``resume_writing``
        is called if the protocol was paused and the buffer is now at or
        below the low-water mark; a pending ``close()`` completes once the
        buffer is empty.
        """
        if max_bytes is not None and max_bytes < 0:
            raise ValueError(f"max_bytes must be >= 0, got {max_bytes!r}")
        count = len(self._buffer) if max_bytes is None else min(max_bytes, len(self._buffer))
        chunk = bytes(self._buffer[:count])
        del self._buffer[:count]
        self._written += chunk
        if self._write_paused and len(self._buffer) <= self._low:
            self._write_paused = False
            self._call("resume_writing")
        if not self._buffer:
            if self._closing:
                self._schedule_lost(None)
            elif self.eof_written:
                self._eof_sent()
        self._settle()
        return chunk

    # -- TransportInterface ----------------------------------------------------

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Send ``data`` (recorded in :meth:`value`, or buffered while stalled)."""
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(
                f"data must be a bytes, bytearray or memoryview object, not {type(data).__name__}"
            )
        if self.eof_written:
            raise RuntimeError("write() after write_eof(): the write side is already shut down")
        if self._closing:
            self.dropped_writes += 1
            return
        if not data:
            return
        if not self._stalled:
            self._written += data
            return
        self._buffer += data
        if not self._write_paused and len(self._buffer) > self._high:
            self._write_paused = True
            self._call("pause_writing")
            self._settle()

    def writelines(self, chunks: Iterable[bytes | bytearray | memoryview]) -> None:
        """``write()`` each chunk."""
        for chunk in chunks:
            self.write(chunk)

    def write_eof(self) -> None:
        """Shut down the write side once the buffer is sent. Ignored when closing or repeated."""
        if self._closing or self.eof_written:
            return
        self.eof_written = True
        self._eof_sent()

    def can_write_eof(self) -> bool:
        return True

    def close(self) -> None:
        """Close after the write buffer drains; then ``connection_lost(None)``. Idempotent."""
        if self._closing:
            return
        self._closing = True
        self._incoming.clear()
        self._eof_pending = False
        if not self._buffer:
            self._schedule_lost(None)
        self._settle()

    def abort(self, reason: BaseException | None = None) -> None:
        """Close now, discarding unsent data; then ``connection_lost(reason)``."""
        if self._lost:
            return
        self.aborted = True
        self._force_close(reason)
        self._settle()

    def is_closing(self) -> bool:
        return self._closing

    def pause_reading(self) -> None:
        """Stop calling ``data_received`` (and ``eof_received``) until resumed."""
        if not self._closing:
            self._reading = False

    def resume_reading(self) -> None:
        """Resume delivery; data fed in the meantime is delivered now (or after the callback)."""
        if self._closing or self._reading:
            return
        self._reading = True
        self._settle()

    def is_reading(self) -> bool:
        return self._reading and not self._closing

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        """``peername``, ``sockname``, ``socket``, ``reactor`` (the ``clock``) or an ``extra`` key.

        Each is what was given to the constructor; ``default`` if it was not.
        """
        value = self._extra.get(name)
        return default if value is None else value

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        """Set the flow-control marks; asyncio's defaulting rules (64 KiB, ``low = high // 4``)."""
        self._high, self._low = high, low = resolve_limits(high, low)
        if not self._write_paused and len(self._buffer) > high:
            self._write_paused = True
            self._call("pause_writing")
        elif self._write_paused and len(self._buffer) <= low:
            self._write_paused = False
            self._call("resume_writing")
        self._settle()

    def get_write_buffer_limits(self) -> tuple[int, int]:
        """``(low, high)``, in asyncio's order."""
        return self._low, self._high

    def get_write_buffer_size(self) -> int:
        return len(self._buffer)

    def set_protocol(self, protocol: ProtocolInterface) -> None:
        """Hand the connection to another protocol (no ``connection_made`` is called)."""
        self._protocol = protocol

    def get_protocol(self) -> ProtocolInterface | None:
        return self._protocol

    # -- machinery -------------------------------------------------------------

    def _check_connected(self, name: str) -> None:
        if not self._connected:
            raise RuntimeError(f"{name}() before connect(): attach a protocol first")

    def _call(self, name: str, *args: Any) -> Any:
        """Call a protocol method; an exception closes the connection with it."""
        protocol = self._protocol
        if protocol is None or self._lost:
            return None
        self._depth += 1
        try:
            return getattr(protocol, name)(*args)
        except Exception as exc:
            log.exception(
                "unhandled exception in %s.%s(); closing the connection",
                type(protocol).__name__,
                name,
            )
            self._force_close(exc)
            return None
        finally:
            self._depth -= 1

    def _force_close(self, exc: BaseException | None) -> None:
        self._closing = True
        self._incoming.clear()
        self._eof_pending = False
        self._buffer.clear()
        self._schedule_lost(exc)

    def _schedule_lost(self, exc: BaseException | None) -> None:
        if not (self._lost or self._lost_pending):
            self._lost_pending = True
            self._lost_exc = exc

    def _eof_sent(self) -> None:
        """Our FIN is out (nothing left buffered): if the peer's came too, both sides are done."""
        if self._eof_delivered and not self._buffer:
            self.close()

    def _settle(self) -> None:
        """Deliver whatever is due, unless a protocol callback is running (then it runs later)."""
        if self._depth or self._settling:
            return
        self._settling = True
        try:
            while not self._lost:
                if self._incoming and self._reading and not self._closing:
                    data = bytes(self._incoming)
                    self._incoming.clear()
                    self._call("data_received", data)
                elif self._eof_pending and self._reading and not self._closing:
                    self._eof_pending = False
                    self._eof_delivered = True
                    if not self._call("eof_received") or self.eof_written:
                        self.close()
                elif self._lost_pending:
                    self._deliver_lost()
                else:
                    break
        finally:
            self._settling = False

    def _deliver_lost(self) -> None:
        self._lost = True
        self._lost_pending = False
        protocol = self._protocol
        if protocol is None:
            return
        self._depth += 1
        try:
            protocol.connection_lost(self._lost_exc)
        except Exception:
            log.exception("unhandled exception in %s.connection_lost()", type(protocol).__name__)
        finally:
            self._depth -= 1

    def __repr__(self) -> str:
        state = "lost" if self._lost else "closing" if self._closing else "open"
        return (
            f"<MemoryTransport {state} written={len(self._written)} buffered={len(self._buffer)}>"
        )


class Clock:
    """Fake time with the reactor's timer API; time moves only in :meth:`advance`.

    Timers fire in deadline order (ties in the order they were scheduled),
    each at its own deadline: inside a callback, :meth:`time` is that
    callback's deadline (or the current time, for a deadline already past),
    not the end of the advance, and timers scheduled by callbacks fire in
    the same advance if they fall due within it. ``call_soon`` callbacks
    run at the start of the next :meth:`advance` (``advance(0)`` is enough)
    or on :meth:`run_soon`, and after each batch of timers.

    Time is a float and deadlines are compared exactly: ten ``advance(0.1)``
    reach 0.9999999999999999, not 1.0, so prefer one ``advance(1.0)``.

    Unlike the reactor, which logs an exception from a callback and goes on,
    the clock lets it propagate out of :meth:`advance` so the test sees it.
    Time then stays at that callback's deadline; timers still due run on the
    next ``advance``.
    """

    def __init__(self, start: float = 0.0) -> None:
        self._now = float(start)
        self._timers = TimerQueue()
        self._ready: deque[Handle] = deque()
        self._due: deque[TimerHandle] = deque()  # popped from the heap, not run yet
        self._live: dict[TimerHandle, None] = {}  # scheduled, not yet run (for pending())
        self._running = False

    def time(self) -> float:
        """The fake current time, in seconds."""
        return self._now

    def call_soon(self, callback: Callable[..., object], *args: Any) -> Handle:
        """Run ``callback(*args)`` on the next :meth:`advance` or :meth:`run_soon`."""
        handle = Handle(callback, args)
        self._ready.append(handle)
        return handle

    def call_later(self, delay: float, callback: Callable[..., object], *args: Any) -> TimerHandle:
        """Run ``callback(*args)`` once ``delay`` seconds have been advanced."""
        return self.call_at(self._now + delay, callback, *args)

    def call_at(self, when: float, callback: Callable[..., object], *args: Any) -> TimerHandle:
        """Run ``callback(*args)`` when the clock reaches ``when``."""
        if math.isnan(when):
            raise ValueError("a timer deadline cannot be NaN")
        handle = self._timers.push(when, callback, args)
        live = self._live
        live[handle] = None
        if len(live) > 64 and len(live) > 2 * (len(self._timers) + len(self._due)):
            self._prune()
        return handle

    def call_every(
        self, interval: float, callback: Callable[..., object], *args: Any, now: bool = False
    ) -> PeriodicCall:
        """Run ``callback(*args)`` every ``interval`` seconds (first call now if ``now``)."""
        return PeriodicCall(self, interval, callback, args, now=now)

    def pending(self) -> list[TimerHandle]:
        """The timers not yet run nor cancelled, earliest first."""
        self._prune()
        return sorted(self._live, key=lambda handle: handle.when)

    def run_soon(self) -> None:
        """Run the ``call_soon`` callbacks (and those they schedule), without moving time."""
        self._enter()
        try:
            self._run_ready()
        finally:
            self._running = False

    def advance(self, seconds: float = 0.0) -> None:
        """Move time forward by ``seconds``, firing every timer that falls due on the way."""
        if not 0 <= seconds < math.inf:
            raise ValueError(f"advance() takes a finite number of seconds >= 0, got {seconds!r}")
        self._enter()
        try:
            target = self._now + seconds
            while True:
                self._run_due()
                self._run_ready()
                when = self._timers.next_deadline()
                if when is None or when > target:
                    break
                self._now = max(self._now, when)
                self._due.extend(self._timers.pop_due(self._now))
            self._now = target
        finally:
            self._running = False

    def _enter(self) -> None:
        if self._running:
            raise RuntimeError("the clock cannot be advanced from inside one of its callbacks")
        self._running = True

    def _run_due(self) -> None:
        due = self._due
        while due:
            handle = due.popleft()
            self._live.pop(handle, None)
            if not handle.cancelled():
                handle._run()

    def _run_ready(self) -> None:
        ready = self._ready
        while ready:
            handle = ready.popleft()
            if not handle.cancelled():
                handle._run()

    def _prune(self) -> None:
        self._live = {handle: None for handle in self._live if not handle.cancelled()}


class Pump:
    """Two protocols connected through a pair of :class:`MemoryTransport`.

    The server's ``connection_made`` runs first, then the client's. Bytes
    move only in :meth:`flush`. A side that calls ``write_eof()`` or
    ``close()`` sends EOF to the other side once its buffer is sent; a side
    that aborts (or dies of an exception) resets the other side. A stalled
    transport keeps its bytes until the test drains it. ``clock``, if given,
    is both transports' ``get_extra_info("reactor")``.
    """

    def __init__(
        self,
        client: ProtocolInterface,
        server: ProtocolInterface,
        *,
        client_address: Address = ("127.0.0.1", 50000),
        server_address: Address = ("127.0.0.1", 8000),
        clock: ClockInterface | None = None,
    ) -> None:
        self.client = client
        self.server = server
        self.client_transport = MemoryTransport(
            peername=server_address, sockname=client_address, clock=clock
        )
        self.server_transport = MemoryTransport(
            peername=client_address, sockname=server_address, clock=clock
        )
        # What each direction has told the receiving side: "", "eof" or "reset".
        self._ended = {"to_server": "", "to_client": ""}
        self.server_transport.connect(server)
        self.client_transport.connect(client)

    def flush(self, max_rounds: int = 10_000) -> int:
        """Deliver all pending bytes both ways until neither side writes more.

        Returns the number of bytes moved. Raises RuntimeError if the
        protocols are still talking after ``max_rounds`` rounds.
        """
        total = 0
        for _ in range(max_rounds):
            moved_up, active_up = self._move(
                self.client_transport, self.server_transport, "to_server"
            )
            moved_down, active_down = self._move(
                self.server_transport, self.client_transport, "to_client"
            )
            total += moved_up + moved_down
            if not (active_up or active_down):
                return total
        raise RuntimeError(f"the protocols are still talking after {max_rounds} rounds")

    def _move(self, src: MemoryTransport, dst: MemoryTransport, direction: str) -> tuple[int, bool]:
        data = src.value()
        if data:
            src.clear()
            if not dst._eof_fed:
                dst.feed(data)
        ended = self._ended[direction]
        if ended != "reset" and (src.aborted or (src.lost and src._lost_exc is not None)):
            self._ended[direction] = "reset"
            dst.feed_reset()
            return len(data), True
        if not ended and (src.eof_written or src.closed) and not src.get_write_buffer_size():
            self._ended[direction] = "eof"
            if not dst._eof_fed:
                dst.feed_eof()
            return len(data), True
        return len(data), bool(data)


def connect_pair(
    client: ProtocolInterface, server: ProtocolInterface, *, clock: ClockInterface | None = None
) -> Pump:
    """Connect ``client`` to ``server`` in memory; call ``pump.flush()`` to move bytes.

    ``clock`` is what both transports answer to ``get_extra_info("reactor")``.
    """
    return Pump(client, server, clock=clock)
