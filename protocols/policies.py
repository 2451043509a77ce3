"""Connection policies: idle timeouts, heartbeats and connection limits.

Each policy comes in the form that fits it:

* :class:`IdleTimeoutMixin` / :class:`IdleTimeout`: close a connection after
  N seconds with no traffic in either direction, as a mixin for your protocol
  class or as a wrapper around any protocol.
* :class:`HeartbeatMixin`: send the protocol's own ping every interval and
  declare the peer dead after K unanswered pings.
* :class:`ConnectionLimiter`: a factory wrapper that caps connections in
  total and per peer IP address.

They need a clock: a ``reactor.Clock`` (``time()``, ``call_soon()``,
``call_later()``, ``call_at()``, ``call_every()``), i.e. a
:class:`reactor.Reactor` or, in tests, the fake :class:`protocols.testing.Clock`.
Left unset, it is the reactor the connection runs on (what the transport
answers to ``get_extra_info("reactor")``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

from protocols.base import _abort_with_reason
from reactor import (
    Address,
    Clock,
    FactoryArg,
    PeriodicCall,
    ProtocolInterface,
    TimerHandle,
    build_protocol,
)

__all__ = [
    "ConnectionLimiter",
    "HeartbeatMixin",
    "HeartbeatTimeoutError",
    "IdleTimeout",
    "IdleTimeoutError",
    "IdleTimeoutMixin",
    "ProtocolWrapper",
    "WrappingTransport",
]

log = logging.getLogger("protocols.policies")


def _clock_for(owner: object, transport: Any) -> Clock:
    """``owner.clock`` if set, else the reactor ``transport`` runs on; else a clear error."""
    clock: Clock | None = getattr(owner, "clock", None)
    if clock is None and transport is not None:
        clock = transport.get_extra_info("reactor")
    if clock is None:
        name = type(owner).__name__
        raise RuntimeError(
            f"{name} has no clock: set {name}.clock (a reactor.Clock, usually the reactor, "
            "or protocols.testing.Clock in tests) before connection_made; it defaults to the "
            "transport's get_extra_info('reactor'), which this transport does not provide"
        )
    return clock


class IdleTimeoutError(TimeoutError):
    """The connection was closed because it was idle too long."""


class HeartbeatTimeoutError(TimeoutError):
    """The peer did not answer the heartbeat pings: it is considered dead."""


# --------------------------------------------------------------------- wrappers


class WrappingTransport:
    """A transport proxy that tells its wrapper about every write.

    Everything else is forwarded to the real transport unchanged.
    """

    def __init__(self, transport: Any, on_write: Callable[[], object]) -> None:
        self._transport = transport
        self._on_write = on_write

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self._on_write()
        self._transport.write(data)

    def writelines(self, chunks: Iterable[bytes | bytearray | memoryview]) -> None:
        self._on_write()
        self._transport.writelines(chunks)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class ProtocolWrapper:
    """A protocol that forwards every hook to a wrapped protocol.

    Subclass it to observe or alter a connection without touching the
    protocol inside (Twisted's ``policies.ProtocolWrapper``).
    """

    def __init__(self, wrapped: ProtocolInterface) -> None:
        self.wrapped = wrapped
        self.transport: Any = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self.wrapped.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        self.wrapped.data_received(data)

    def eof_received(self) -> bool | None:
        return self.wrapped.eof_received()

    def connection_lost(self, exc: BaseException | None) -> None:
        self.wrapped.connection_lost(exc)

    def pause_writing(self) -> None:
        self.wrapped.pause_writing()

    def resume_writing(self) -> None:
        self.wrapped.resume_writing()


# ----------------------------------------------------------------- idle timeout


class _IdleTimer:
    """Closes a transport after ``timeout`` seconds without activity.

    Activity only stores a timestamp (no timer is cancelled and re-made per
    chunk, which would cost a heap operation per read); when the timer fires
    it re-arms itself for the remaining time if there was activity meanwhile.
    """

    def __init__(
        self,
        clock: Clock,
        timeout: float,
        expire: Callable[[], object],
    ) -> None:
        if not timeout > 0:
            raise ValueError(f"idle timeout must be a positive number of seconds, got {timeout!r}")
        self.clock = clock
        self.timeout = timeout
        self._expire = expire
        self.last_activity = clock.time()
        self._handle: TimerHandle | None = clock.call_later(timeout, self._check)

    def touch(self) -> None:
        self.last_activity = self.clock.time()

    def _check(self) -> None:
        self._handle = None
        deadline = self.last_activity + self.timeout
        if self.clock.time() < deadline:
            self._handle = self.clock.call_at(deadline, self._check)
        else:
            self._expire()

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None


class IdleTimeoutMixin:
    """Mixin: close the connection after ``idle_timeout`` seconds of silence.

    Put it before your protocol base class::

        class Session(IdleTimeoutMixin, LineReceiver):
            idle_timeout = 300.0

    The timer runs on ``clock``: set it before ``connection_made`` (e.g. to a
    fake :class:`protocols.testing.Clock` in a test), or leave it unset to use
    the reactor the connection runs on (the transport's
    ``get_extra_info("reactor")``; ``connection_made`` then sets ``clock``).
    With neither, ``connection_made`` raises RuntimeError.

    Traffic in either direction re-arms it: ``data_received`` is watched, and
    ``self.transport`` is a proxy that notes each write. Before closing,
    :meth:`timeout_connection` is called (override it to send a goodbye or to
    do otherwise) and the connection is closed.

    Why it ended: ``self.idle_reason`` holds the :class:`IdleTimeoutError`
    once the timeout fired, and the classes after the mixin (e.g. your base
    protocol) get it as ``connection_lost``'s reason; an override of
    ``connection_lost`` in your own class, which runs before the mixin's,
    sees the transport's plain None and should look at ``self.idle_reason``.
    """

    idle_timeout: float | None = 60.0
    clock: Clock
    transport: Any
    _idle: _IdleTimer | None = None
    idle_reason: IdleTimeoutError | None = None
    """The :class:`IdleTimeoutError` once the idle timeout has fired, else None."""

    def connection_made(self, transport: Any) -> None:
        if self.idle_timeout is not None:
            self.clock = _clock_for(self, transport)
            self._idle = _IdleTimer(self.clock, self.idle_timeout, self._idle_expired)
            transport = WrappingTransport(transport, self._idle.touch)
        super().connection_made(transport)  # type: ignore[misc]

    def data_received(self, data: bytes) -> None:
        if self._idle is not None:
            self._idle.touch()
        super().data_received(data)  # type: ignore[misc]

    def reset_timeout(self) -> None:
        """Count as activity now (for activity the transport does not see)."""
        if self._idle is not None:
            self._idle.touch()

    def _idle_expired(self) -> None:
        self._idle = None
        self.idle_reason = IdleTimeoutError(
            f"no traffic for {self.idle_timeout} s: closing the idle connection"
        )
        self.timeout_connection()

    def timeout_connection(self) -> None:
        """Hook: the connection has been idle too long. By default, close it."""
        log.info("%s", self.idle_reason)
        self.transport.close()

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None
        super().connection_lost(exc or self.idle_reason)  # type: ignore[misc]


class IdleTimeout(ProtocolWrapper):
    """Wrapper: give any protocol an idle timeout.

    ``IdleTimeout(protocol, clock, 30.0)`` closes the connection after 30 s
    with no traffic either way; ``on_timeout(wrapper)``, if given, runs first
    and may close the connection itself (or send a last message). With
    ``clock=None`` the timer runs on the reactor the connection runs on (the
    transport's ``get_extra_info("reactor")``).
    """

    def __init__(
        self,
        wrapped: ProtocolInterface,
        clock: Clock | None,
        timeout: float,
        on_timeout: Callable[[IdleTimeout], object] | None = None,
    ) -> None:
        if not timeout > 0:
            raise ValueError(f"idle timeout must be a positive number of seconds, got {timeout!r}")
        super().__init__(wrapped)
        self.clock = clock
        self.timeout = timeout
        self.on_timeout = on_timeout
        self._idle: _IdleTimer | None = None
        self._reason: BaseException | None = None

    def connection_made(self, transport: Any) -> None:
        self.clock = _clock_for(self, transport)
        self._idle = _IdleTimer(self.clock, self.timeout, self._expired)
        super().connection_made(WrappingTransport(transport, self._idle.touch))

    def data_received(self, data: bytes) -> None:
        if self._idle is not None:
            self._idle.touch()
        self.wrapped.data_received(data)

    def _expired(self) -> None:
        self._idle = None
        self._reason = IdleTimeoutError(
            f"no traffic for {self.timeout} s: closing the idle connection"
        )
        if self.on_timeout is not None:
            self.on_timeout(self)
        log.info("%s", self._reason)
        self.transport.close()

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None
        self.wrapped.connection_lost(exc or self._reason)


# -------------------------------------------------------------------- heartbeat


class HeartbeatMixin:
    """Mixin: ping the peer every ``heartbeat_interval`` s; dead after K misses.

    The ping and pong are the protocol's own: implement :meth:`send_ping`
    (e.g. ``self.send_line(b"PING")``) and call :meth:`pong_received` when the
    answer arrives. After ``heartbeat_misses`` intervals without an answer the
    connection is closed and ``connection_lost`` gets a
    :class:`HeartbeatTimeoutError` saying so. :meth:`heartbeat_failed` may be
    overridden.

    The pings run on ``clock``: set it before ``connection_made``, or leave it
    unset to use the reactor the connection runs on (the transport's
    ``get_extra_info("reactor")``); with neither, ``connection_made`` raises
    RuntimeError.
    """

    heartbeat_interval: float = 10.0
    heartbeat_misses: int = 3
    clock: Clock
    transport: Any
    _heartbeat: PeriodicCall | None = None
    _unanswered = 0
    heartbeat_reason: HeartbeatTimeoutError | None = None
    """The :class:`HeartbeatTimeoutError` once the peer was declared dead, else None."""

    def connection_made(self, transport: Any) -> None:
        self.clock = _clock_for(self, transport)
        super().connection_made(transport)  # type: ignore[misc]
        self.start_heartbeat()

    def start_heartbeat(self) -> None:
        """Start pinging (called by connection_made; call again after stop_heartbeat)."""
        if self._heartbeat is None:
            clock = _clock_for(self, getattr(self, "transport", None))
            self._unanswered = 0
            self._heartbeat = clock.call_every(self.heartbeat_interval, self._heartbeat_tick)

    def stop_heartbeat(self) -> None:
        """Stop pinging (the connection stays open)."""
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            self._heartbeat = None

    def _heartbeat_tick(self) -> None:
        if self._unanswered >= self.heartbeat_misses:
            self.stop_heartbeat()
            self.heartbeat_reason = HeartbeatTimeoutError(
                f"peer did not answer {self._unanswered} heartbeat pings "
                f"({self.heartbeat_interval} s apart): considered dead"
            )
            self.heartbeat_failed()
            return
        self._unanswered += 1
        self.send_ping()

    def send_ping(self) -> None:
        """Send the protocol's ping message. Must be overridden."""
        raise NotImplementedError("HeartbeatMixin.send_ping() must send the protocol's ping")

    def pong_received(self) -> None:
        """Call when the peer's answer arrives: the peer is alive."""
        self._unanswered = 0

    def heartbeat_failed(self) -> None:
        """Hook: the peer is dead. By default, log and abort the connection.

        The transport is asked to deliver the :class:`HeartbeatTimeoutError`
        to ``connection_lost``; a transport whose ``abort()`` takes no reason
        (asyncio's) gets a plain abort, and the mixin passes the reason on to
        the classes after it.
        """
        log.info("%s", self.heartbeat_reason)
        if self.heartbeat_reason is not None:
            _abort_with_reason(self.transport, self.heartbeat_reason)
        else:  # only if a subclass calls this hook itself
            self.transport.abort()

    def connection_lost(self, exc: BaseException | None) -> None:
        self.stop_heartbeat()
        super().connection_lost(exc or self.heartbeat_reason)  # type: ignore[misc]


# ------------------------------------------------------------ connection limits


class _Rejected:
    """Sends the refusal message (if any) and closes.

    The reactor's transports close gracefully: they send FIN and wait for the
    client's before closing the socket, so input the client already sent
    cannot turn the close into a reset that destroys the message.
    """

    def __init__(self, message: bytes | None) -> None:
        self.message = message

    def connection_made(self, transport: Any) -> None:
        if self.message:
            transport.write(self.message)
        transport.close()

    def data_received(self, data: bytes) -> None:
        pass

    def eof_received(self) -> bool | None:
        return None

    def connection_lost(self, exc: BaseException | None) -> None:
        pass

    def pause_writing(self) -> None:
        pass

    def resume_writing(self) -> None:
        pass


class _Counted(ProtocolWrapper):
    """Gives the limiter its slot back when the connection ends."""

    def __init__(self, wrapped: ProtocolInterface, limiter: ConnectionLimiter, key: Any) -> None:
        super().__init__(wrapped)
        self._limiter = limiter
        self._key = key
        self._released = False

    def connection_lost(self, exc: BaseException | None) -> None:
        if not self._released:
            self._released = True
            self._limiter._release(self._key)
        self.wrapped.connection_lost(exc)


def _peer_key(addr: Address) -> Any:
    """The per-client key: the IP address (a Unix socket peer counts as one)."""
    if isinstance(addr, tuple) and addr:
        return addr[0]
    return addr


class ConnectionLimiter:
    """A factory wrapper that caps connections in total and per peer IP address.

    ``ConnectionLimiter(factory, max_total=1000, max_per_ip=10, message=b"busy\\n")``:
    a connection over either limit is sent ``message`` (if any) and closed; the
    wrapped factory never sees it. Counts go down as connections end, however
    they end. ``total`` and :meth:`count` tell the current numbers.
    """

    def __init__(
        self,
        factory: FactoryArg,
        *,
        max_total: int | None = None,
        max_per_ip: int | None = None,
        message: bytes | None = None,
        per_ip_message: bytes | None = None,
    ) -> None:
        for name, value in (("max_total", max_total), ("max_per_ip", max_per_ip)):
            if value is not None and value < 1:
                raise ValueError(f"{name} must be at least 1 (or None for no limit), got {value!r}")
        self.factory = factory
        self.max_total = max_total
        self.max_per_ip = max_per_ip
        self.message = message
        self.per_ip_message = per_ip_message if per_ip_message is not None else message
        self.total = 0
        self.rejected = 0
        self._per_ip: dict[Any, int] = {}

    def count(self, ip: Any) -> int:
        """Open connections from ``ip``."""
        return self._per_ip.get(ip, 0)

    def build_protocol(self, addr: Address) -> ProtocolInterface | None:
        key = _peer_key(addr)
        if self.max_total is not None and self.total >= self.max_total:
            self.rejected += 1
            log.info(
                "refusing %r: %d connections open (limit %d)", addr, self.total, self.max_total
            )
            return _Rejected(self.message)
        current = self._per_ip.get(key, 0)
        if self.max_per_ip is not None and current >= self.max_per_ip:
            self.rejected += 1
            log.info(
                "refusing %r: %d connections from %r (limit %d)",
                addr,
                current,
                key,
                self.max_per_ip,
            )
            return _Rejected(self.per_ip_message)
        inner = build_protocol(self.factory, addr)
        if inner is None:
            return None
        self.total += 1
        self._per_ip[key] = current + 1
        return _Counted(inner, self, key)

    def _release(self, key: Any) -> None:
        self.total -= 1
        left = self._per_ip.get(key, 0) - 1
        if left > 0:
            self._per_ip[key] = left
        else:
            self._per_ip.pop(key, None)

    def do_start(self) -> None:
        hook = getattr(self.factory, "do_start", None)
        if hook is not None:
            hook()

    def do_stop(self) -> None:
        hook = getattr(self.factory, "do_stop", None)
        if hook is not None:
            hook()
