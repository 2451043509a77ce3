"""Trace mode: one readable log line per state change, to watch the loop turn.

Turned on by ``Reactor(trace=True)`` or ``REACTOR_TRACE=1`` (and ``--trace``
on every app). It logs on the ``reactor.trace`` logger at INFO. Every fd is
named by what it is (``waker``, ``signal pipe``, ``listener 127.0.0.1:8007``,
``#1`` for connection 1, ``udp 127.0.0.1:5353``), and every line says what
changed, for example an echo of one line followed by the client's close::

    watching fd 4 (waker) for READ
    watching fd 6 (listener 127.0.0.1:8007) for READ
    poll timeout=forever -> 1 ready: fd 6 (listener 127.0.0.1:8007) READ
    accepted 127.0.0.1:53422 as connection #1 (fd 7)
    #1 connection_made peer=127.0.0.1:53422
    poll timeout=forever -> 1 ready: fd 7 (#1) READ
    #1 data in 6 bytes
    #1 write 6 bytes: sent whole
    poll timeout=forever -> 1 ready: fd 7 (#1) READ
    #1 FIN received (recv returned b''): eof_received()
    #1 close(): nothing buffered, closing now
    #1 connection_lost: clean close
    #1 socket closed (fd 7): the peer's FIN came first, so close() sends ours

Writes are logged as what the kernel took (``sent whole``, or ``partial``
with the bytes buffered), then each flush of the buffer, the water marks
crossed (``pause_writing``/``resume_writing``), ``pause_reading`` and
``resume_reading``, FINs sent and received, the lingering close (its start,
and its end with the reason), resets, and UDP datagrams in and out with their
sizes and peers.

Nothing here costs anything when tracing is off, and nothing below this
module knows it exists: the reactor (``reactor/reactor.py``) swaps in a
tracing poller, a tracing timer queue and tracing transport makers instead of
testing a flag on the hot path. The transports' tracing subclasses override
the transport's own steps and log around them; they change no decision.
"""

from __future__ import annotations

import fcntl
import logging
import socket
import sys
import termios
from collections.abc import Callable
from typing import Any, Protocol

from reactor import stream as stream_module
from reactor.backends.base import ERROR, HANGUP, INVALID, READ, WRITE, Poller
from reactor.interfaces import (
    Address,
    DatagramProtocolInterface,
    ProtocolInterface,
    ReactorPort,
    TLSObservable,
)
from reactor.stream import StreamTransport
from reactor.tcp import Connector, Listener, TransportMaker
from reactor.timers import TimerHandle, TimerQueue
from reactor.tls import CipherSide
from reactor.udp import DatagramMaker, DatagramTransport
from reactor.waker import Waker

__all__ = [
    "TracingDatagramTransport",
    "TracingPoller",
    "TracingStreamTransport",
    "TracingTimerQueue",
    "TracingTransportMaker",
    "describe_reason",
    "enable_trace_output",
    "format_address",
    "format_bits",
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
    """Readiness bits as names: ``READ|WRITE``."""
    return "|".join(name for bit, name in _BIT_NAMES if bits & bit) or hex(bits)


def format_address(addr: Address) -> str:
    """``host:port``, ``[v6]:port``, a quoted Unix path, or ``unnamed``."""
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


def _unread_bytes(sock: socket.socket) -> int:
    """Bytes the peer sent that nobody read (FIONREAD); 0 if it cannot be asked."""
    try:
        raw = fcntl.ioctl(sock.fileno(), termios.FIONREAD, b"\0\0\0\0")
    except OSError:
        return 0
    return int.from_bytes(raw, sys.byteorder)


# ------------------------------------------------------------------ fd names


class _Watches(Protocol):
    """What naming an fd needs of the loop: its reader and writer tables."""

    _readers: dict[int, Callable[[], object]]
    _writers: dict[int, Callable[[], object]]


def _owner(callback: Any) -> tuple[Any, str]:
    """The object a watched callback belongs to, and the callback's name.

    Sees through ``functools.partial`` and through debug mode's timing
    wrapper (a closure over the real callback).
    """
    for _ in range(4):
        func = getattr(callback, "func", None)  # functools.partial
        if func is not None:
            callback = func
            continue
        owner = getattr(callback, "__self__", None)
        if owner is not None:
            return owner, getattr(callback, "__name__", "")
        inner = [
            cell.cell_contents
            for cell in getattr(callback, "__closure__", None) or ()
            if callable(getattr(cell, "cell_contents", None))
        ]
        if len(inner) != 1:
            break
        callback = inner[0]
    return None, _name(callback)


def describe_watcher(callback: Any) -> str:
    """What an fd is, named from the callback watching it."""
    owner, name = _owner(callback)
    if isinstance(owner, TracingStreamTransport):
        return f"#{owner.trace_id} lingering" if name == "_linger_read" else f"#{owner.trace_id}"
    if isinstance(owner, TracingDatagramTransport):
        return owner.trace_name
    if isinstance(owner, StreamTransport):
        return "connection"
    if isinstance(owner, DatagramTransport):
        return "udp"
    if isinstance(owner, Listener):
        return f"listener {format_address(owner.address)}"
    if isinstance(owner, Connector):
        return f"connecting to {format_address(owner.address)}"
    if isinstance(owner, Waker):
        return "waker"
    if type(owner).__name__ == "SignalHandlers":  # reactor.signals: a sibling layer
        return "signal pipe"
    return name or "?"


class TracingPoller:
    """Wraps a poller: logs every poll (its timeout and what was ready) and the
    fds the loop starts and stops watching, each named by what it is.

    Connections are not logged here when watched or unwatched: their own
    lines say so (``watching WRITE``, ``pause_reading``) in their order.
    """

    def __init__(self, poller: Poller, loop: _Watches | None = None) -> None:
        self._poller = poller
        self._loop = loop
        self._names: dict[int, str] = {}
        self.name = poller.name

    @property
    def fileno(self) -> Callable[[], int]:
        """The backend's own fd (epoll, kqueue), for hosting the reactor in
        another loop; AttributeError where the backend has none, as there."""
        fileno: Callable[[], int] = self._poller.fileno  # type: ignore[attr-defined]
        return fileno

    def fresh(self) -> TracingPoller:
        """A new, empty poller of the same kind, traced the same way (the fd
        registry rebuilds the backend this way to drop a closed fd)."""
        inner = self._poller
        fresh = getattr(inner, "fresh", None)
        return TracingPoller(fresh() if fresh is not None else type(inner)(), self._loop)

    def describe(self, fd: int) -> str:
        """The name of ``fd``: what watches it now, or what watched it last."""
        loop = self._loop
        if loop is not None:
            callback = loop._readers.get(fd) or loop._writers.get(fd)
            if callback is not None:
                name = self._names[fd] = describe_watcher(callback)
                return name
        return self._names.get(fd, "?")

    def register(self, fd: int, events: int) -> None:
        self._poller.register(fd, events)
        name = self.describe(fd)
        if not name.startswith("#"):
            trace_log.info("watching fd %d (%s) for %s", fd, name, format_bits(events))

    def modify(self, fd: int, events: int) -> None:
        self._poller.modify(fd, events)
        self.describe(fd)  # the owner may have changed (a lingering connection)

    def unregister(self, fd: int) -> None:
        self._poller.unregister(fd)
        name = self._names.pop(fd, None)
        if name is not None and not name.startswith("#"):
            trace_log.info("stopped watching fd %d (%s)", fd, name)

    def poll(self, timeout: float | None) -> list[tuple[int, int]]:
        events = self._poller.poll(timeout)
        wait = "forever" if timeout is None else f"{timeout:.3f}s"
        if events:
            names = self._names
            ready = ", ".join(
                f"fd {fd} ({names.get(fd) or self.describe(fd)}) {format_bits(bits)}"
                for fd, bits in events
            )
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


# ----------------------------------------------------------------- streams


def _what_reset(exc: OSError) -> str:
    if isinstance(exc, ConnectionResetError):
        return "RST received: the peer reset the connection (ConnectionResetError)"
    if isinstance(exc, BrokenPipeError):
        return "the peer is gone (BrokenPipeError: it had sent RST, or we had sent FIN)"
    return f"socket error: {type(exc).__name__}: {exc}"


def _tls_of(protocol: object) -> TLSObservable | None:
    """The TLS transport a plain connection carries (its protocol is then TLS's
    cipher side), seen through its declared observer surface; else None."""
    return protocol.tls if isinstance(protocol, CipherSide) else None


class TracingStreamTransport(StreamTransport):
    """A stream transport that logs its connection's life, numbered #1, #2, ...

    Each override logs what the step it wraps did, judged from the state
    before and after (bytes sent, bytes buffered), so the tracing changes no
    decision. A step that triggers another (a write that crosses the high
    water mark calls ``pause_writing``) keeps its own line pending until the
    inner one starts, so lines come out in the order things happened.
    """

    __slots__ = (
        "_aborted",
        "_delivering",
        "_linger_why",
        "_note",
        "_reset",
        "_reset_on_close",
        "_tls_seen",
        "trace_id",
    )

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
        self._note: tuple[str, int, int, int] | None = None
        self._linger_why: str | None = None
        self._reset_on_close = False
        self._reset = False  # the peer reset the connection
        self._tls_seen: tuple[object, bool] | None = None  # the TLS layer's (state, peer closed)
        self._delivering = False  # inside data_received: what changes now, data caused
        super().__init__(reactor, sock, protocol, peername)

    def _say(self, message: str, *args: object) -> None:
        trace_log.info("#%d " + message, self.trace_id, *args)

    # A pending line: (what, size, bytes_sent before, bytes buffered before).

    def _flush_note(self) -> None:
        note = self._note
        if note is None:
            return
        self._note = None
        what, size, sent_before, buffered_before = note
        took = self.bytes_sent - sent_before
        left = self._buffer_size
        if what == "write":
            if buffered_before:
                self._say(
                    "write %d bytes: queued behind %d buffered bytes (buffer %d bytes)",
                    size,
                    buffered_before,
                    left,
                )
            elif took == size:
                self._say("write %d bytes: sent whole", size)
            elif left:
                self._say(
                    "write %d bytes: partial, the kernel took %d; buffered %d, watching WRITE",
                    size,
                    took,
                    left,
                )
        elif took:
            if left:
                self._say("flush: the kernel took %d bytes; %d still buffered", took, left)
            else:
                self._say("flush: the kernel took %d bytes; buffer empty, unwatching WRITE", took)

    def _use_protocol(self, protocol: ProtocolInterface) -> None:
        super()._use_protocol(protocol)
        deliver: Callable[[Any], object] = self._data_received
        trace_id = self.trace_id

        def data_received(data: Any) -> None:
            size = data if isinstance(data, int) else len(data)  # buffer_updated(nbytes)
            trace_log.info("#%d data in %d bytes", trace_id, size)
            self._delivering = True
            try:
                deliver(data)
            finally:
                self._delivering = False
            self._watch_tls()

        self._data_received = data_received

    def _connection_made(self) -> None:
        self._say("connection_made peer=%s", format_address(self._peername))
        tls = _tls_of(self._protocol)
        if tls is not None:
            self._tls_seen = ("handshake", False)
            side = "server" if tls.server_side else "client"
            self._say("TLS handshake starts (this is the %s side)", side)
        super()._connection_made()
        self._watch_tls()

    # TLS (reactor/tls.py) runs as this transport's protocol. Its steps are
    # seen from here, after each event of the connection underneath, as
    # changes of its state: the handshake's end, close_notify each way.

    def _watch_tls(self) -> None:
        tls = _tls_of(self._protocol)
        if tls is None:
            return
        now = (tls.tls_state, tls.peer_closed)
        before = self._tls_seen or (None, False)
        if now == before:
            return
        self._tls_seen = now
        state, peer_closed = now
        if peer_closed and not before[1]:
            self._say("TLS close_notify received: the peer ends the TLS session")
        if state == before[0]:
            return
        if state == "handshake":  # start_tls: TLS over a connection already open
            self._say("TLS handshake starts (STARTTLS on an open connection)")
        elif state == "open":
            ssl_object = tls.get_extra_info("ssl_object")
            version = ssl_object.version() if ssl_object is not None else None
            cipher = ssl_object.cipher() if ssl_object is not None else None
            self._say("TLS handshake done: %s, %s", version or "?", cipher[0] if cipher else "?")
        elif state == "closing":
            self._say("TLS close(): encrypting what is buffered, then close_notify")
        elif state == "shutdown":
            self._say("TLS shutdown: sending close_notify")
        elif state == "done":
            failure = tls.handshake_error
            if before[0] == "handshake" and failure is not None:
                self._say("TLS handshake failed: %s", describe_reason(failure))
            elif before[0] == "shutdown" and self._delivering and not peer_closed:
                self._say("TLS close_notify received (the peer's answer): session over")
            else:
                self._say("TLS session over")

    # ----------------------------------------------------------- reading

    def _read_eof(self) -> None:
        self._say("FIN received (recv returned b''): eof_received()")
        super()._read_eof()
        self._watch_tls()
        if not self._closing:
            self._say("eof_received() returned True: half-closed, this side may still write")

    def pause_reading(self) -> None:
        if self._reading and not self._closing:
            self._say("pause_reading(): unwatching READ (the kernel buffers what arrives)")
        super().pause_reading()

    def resume_reading(self) -> None:
        if not self._reading and not self._closing:
            if self._eof_received:
                self._say("resume_reading(): the peer's FIN was already received")
            else:
                self._say("resume_reading(): watching READ again")
        super().resume_reading()

    # ----------------------------------------------------------- writing

    def write(self, data: bytes | bytearray | memoryview) -> None:
        try:
            size = memoryview(data).nbytes
        except TypeError:
            size = 0  # not bytes-like: the transport refuses it
        if size and self._closing and not self._eof_written:
            self._say("write %d bytes after close(): dropped", size)
        if not size or self._closing or self._eof_written:
            super().write(data)
            return
        self._watch_tls()  # what the TLS layer did before it wrote this
        self._note = ("write", size, self.bytes_sent, self._buffer_size)
        try:
            super().write(data)
        finally:
            self._flush_note()
        self._watch_tls()

    def _write_ready(self) -> None:
        self._note = ("flush", 0, self.bytes_sent, self._buffer_size)
        try:
            super()._write_ready()
        finally:
            self._flush_note()

    def _pause_protocol(self) -> None:
        self._flush_note()
        self._say("buffer %d bytes > high water %d: pause_writing()", self._buffer_size, self._high)
        super()._pause_protocol()

    def _resume_protocol(self) -> None:
        self._flush_note()
        self._say("buffer %d bytes <= low water %d: resume_writing()", self._buffer_size, self._low)
        super()._resume_protocol()

    def write_eof(self) -> None:
        if not (self._eof_written or self._closing) and self._buffer_size:
            self._say("write_eof(): FIN after the %d buffered bytes", self._buffer_size)
        super().write_eof()

    def _shutdown_write(self) -> None:
        self._flush_note()
        self._say("FIN sent (shutdown SHUT_WR): this side will write no more")
        super()._shutdown_write()

    # ----------------------------------------------------------- closing

    def close(self) -> None:
        self._watch_tls()  # the TLS layer closes this transport once it is done
        closing, buffered = self._closing, self._buffer_size
        super().close()
        if closing:
            return
        if buffered:
            timeout = self._close_timeout
            if timeout is None:
                timeout = self._reactor.close_timeout
            self._say(
                "close(): flushing %d buffered bytes first (aborted if not done in %g s)",
                buffered,
                timeout,
            )
        else:
            self._say("close(): nothing buffered, closing now")

    def _close_expired(self, timeout: float) -> None:
        self._say(
            "close timeout: %d bytes unsent after %g s; aborting with RST (SO_LINGER 0)",
            self._buffer_size,
            timeout,
        )
        self._reset_on_close = True
        super()._close_expired(timeout)

    def abort(self, reason: BaseException | None = None) -> None:
        self._watch_tls()
        if not self._conn_lost:
            why = "" if reason is None else f" ({describe_reason(reason)})"
            self._say("abort()%s: dropping %d buffered bytes", why, self._buffer_size)
        self._aborted = True
        super().abort(reason)

    def force_close(self) -> None:
        if not self._conn_lost:
            self._say("the reactor is closing: closing now, %d bytes dropped", self._buffer_size)
        super().force_close()

    def _force_close(self, exc: BaseException | None) -> None:
        if self._conn_lost and self._linger_timer is not None:
            self._linger_why = "cut short (the reactor is closing, or abort())"
        super()._force_close(exc)

    def _fatal_error(self, exc: OSError) -> None:
        self._reset = isinstance(exc, (ConnectionResetError, BrokenPipeError))
        note, self._note = self._note, None
        if note is not None and note[0] == "write":
            self._say("write %d bytes failed: %s", note[1], _what_reset(exc))
        else:
            self._say("%s", _what_reset(exc))
        super()._fatal_error(exc)

    def _protocol_error(self, exc: Exception, where: str) -> None:
        self._flush_note()
        self._say("%s() raised %s: closing the connection", where, type(exc).__name__)
        super()._protocol_error(exc, where)

    def _call_connection_lost(self, exc: BaseException | None) -> None:
        self._watch_tls()
        self._say("connection_lost: %s", describe_reason(exc, self._aborted))
        super()._call_connection_lost(exc)

    def _release(self) -> None:
        unread = _unread_bytes(self._sock)
        fd = self._fd
        super()._release()
        if self._linger_timer is not None:
            return  # _start_linger said so
        if self._reset_on_close:
            why = "RST sent (the close timeout's abort)"
        elif self._reset:
            why = "the connection was already reset: nothing more is sent"
        elif unread:
            why = f"RST sent: {unread} bytes from the peer were never read"
        elif self._eof_received:
            why = "the peer's FIN came first, so close() sends ours"
        elif not self._graceful:
            why = "aborted: FIN sent, no waiting for the peer's"
        else:
            why = "too many connections lingering already: FIN sent, no waiting"
        self._say("socket closed (fd %d): %s", fd, why)

    # A graceful close lingers for the peer's FIN (see StreamTransport).

    def _start_linger(self) -> None:
        fin = "FIN already sent" if self._eof_written else "FIN sent"
        self._say(
            "linger: %s; waiting up to %g s for the peer's FIN before closing fd %d "
            "(closing with its data unread would send RST)",
            fin,
            stream_module.LINGER_TIME,
            self._fd,
        )
        super()._start_linger()

    def _linger_read(self) -> None:
        # Look first (MSG_PEEK), to say what arrived; the real read decides.
        try:
            data = self._sock.recv(65536, socket.MSG_PEEK)
        except (BlockingIOError, InterruptedError):
            data = None
        except OSError as exc:
            self._linger_why = _what_reset(exc)
        else:
            if data:
                self._say("linger: discarding %d bytes the peer sent after our close", len(data))
            else:
                self._linger_why = "the peer's FIN arrived"
        super()._linger_read()
        self._linger_why = None

    def _end_linger(self) -> None:
        if self._linger_timer is not None:
            why = self._linger_why or (
                f"no FIN from the peer within {stream_module.LINGER_TIME:g} s"
            )
            self._say("linger end: %s; socket closed (fd %d)", why, self._fd)
        super()._end_linger()


# --------------------------------------------------------------- datagrams


class TracingDatagramTransport(DatagramTransport):
    """A UDP endpoint that logs each datagram in and out, with sizes and peers."""

    __slots__ = ("_errors", "trace_name")

    def __init__(
        self,
        reactor: ReactorPort,
        sock: socket.socket,
        protocol: DatagramProtocolInterface,
        peer: Address = None,
    ) -> None:
        try:
            local = format_address(sock.getsockname())
        except OSError:  # pragma: no cover - a bound socket has a name
            local = "unbound"
        self.trace_name = f"udp {local}"
        self._errors = 0  # error_received calls, to tell a failed send
        super().__init__(reactor, sock, protocol, peer)
        deliver = self._datagram_received
        name = self.trace_name

        def datagram_received(data: bytes, addr: Address) -> None:
            trace_log.info("%s datagram in %d bytes from %s", name, len(data), format_address(addr))
            deliver(data, addr)

        self._datagram_received = datagram_received

    def _say(self, message: str, *args: object) -> None:
        trace_log.info("%s " + message, self.trace_name, *args)

    def _start(self) -> None:
        if not self._conn_lost and not self._closing:
            self._say("connection_made (fd %d)", self._fd)
        super()._start()

    def sendto(self, data: bytes | bytearray | memoryview, addr: Address = None) -> None:
        sent, queued, errors = self.datagrams_sent, len(self._buffer), self._errors
        super().sendto(data, addr)
        to = format_address(self._peername if addr is None else addr)
        size = memoryview(data).nbytes
        if self._errors > errors:
            return  # refused: error_received said so (and may have sent again)
        if self.datagrams_sent > sent:
            self._say("datagram out %d bytes to %s", size, to)
        elif len(self._buffer) > queued:
            self._say(
                "datagram out %d bytes to %s: queued (%d waiting)", size, to, len(self._buffer)
            )
        elif self._closing:
            self._say("datagram of %d bytes to %s after close(): dropped", size, to)

    def _write_ready(self) -> None:
        sent = self.datagrams_sent
        super()._write_ready()
        if self.datagrams_sent > sent:
            self._say("flush: %d queued datagrams sent", self.datagrams_sent - sent)

    def _error_received(self, exc: OSError) -> None:
        self._errors += 1
        self._say("error_received: %s: %s", type(exc).__name__, exc)
        super()._error_received(exc)

    def close(self) -> None:
        if not self._closing:
            self._say("close(): %d datagrams still queued", len(self._buffer))
        super().close()

    def _call_connection_lost(self, exc: BaseException | None) -> None:
        self._say(
            "connection_lost: %s (%d datagrams in, %d out)",
            describe_reason(exc),
            self.datagrams_received,
            self.datagrams_sent,
        )
        super()._call_connection_lost(exc)


class TracingTransportMaker:
    """Makes one reactor's tracing transports, numbering its connections from #1.

    ``maker("accepted")`` is what listeners get, ``maker("connected to")``
    what connectors get, so the first line of a connection says which it was;
    ``datagram_maker`` is what UDP endpoints are made by.
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

    @staticmethod
    def datagram_maker() -> DatagramMaker:
        return TracingDatagramTransport
