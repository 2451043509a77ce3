"""The stream transport: a connected TCP or Unix socket driven by the reactor.

Reading: the reactor calls :meth:`StreamTransport._read_ready` when the
socket is readable; one ``recv`` per event (the backends are level-triggered,
so a busy socket is simply called again next turn, and cannot starve the
others). ``recv() == b""`` is the peer's FIN: ``eof_received``.

Writing: :meth:`write` sends at once when nothing is buffered, which is the
common case, so most writes cost one system call and no buffering. What the
kernel does not take is kept in a deque of chunks (never concatenated, so no
quadratic copying), and the transport asks for writability only while the
deque is not empty; it then flushes up to ``_IOV_MAX`` chunks per ``sendmsg``.

Ending: ``connection_lost`` is called exactly once, always from the loop
(never from inside another protocol callback), and the socket is closed right
after it, having first been unregistered from the backend (transport.py).

Buffered protocols (asyncio's ``BufferedProtocol``: ``get_buffer`` and
``buffer_updated`` instead of ``data_received``) are read with ``recv_into``
straight into the protocol's own buffer, as asyncio does.
"""

from __future__ import annotations

import errno
import logging
import socket
from collections import deque
from collections.abc import Callable
from itertools import islice
from ssl import SSLContext
from typing import Any, Final

from reactor.flow import DEFAULT_HIGH_WATER, DEFAULT_LOW_WATER
from reactor.interfaces import ProtocolInterface, ReactorPort
from reactor.sockets import Seconds, check_timeout, set_abortive_close
from reactor.tls import (
    DEFAULT_SSL_HANDSHAKE_TIMEOUT,
    DEFAULT_SSL_SHUTDOWN_TIMEOUT,
    HandshakeCallback,
    TLSTransport,
    start_tls,
)
from reactor.transport import BaseTransport, as_bytes, get_ident, is_buffered_protocol

__all__ = ["LINGER_TIME", "MAX_LINGERING", "StreamTransport"]

log = logging.getLogger("reactor")

#: Chunks per sendmsg(); well under every platform's IOV_MAX (1024 on Linux).
_IOV_MAX: Final = 64
#: Bytes asked of each recv(). CPython allocates the whole size for every
#: recv() and shrinks the result after; above glibc's 128 KiB mmap threshold
#: that allocation is an mmap+mremap+munmap per call, which cost 3x the recv
#: itself for small messages (benchmarks/README.md). So reads start at 64 KiB
#: and grow to _READ_MAX only while they come back full (a bulk transfer).
_READ_SIZE: Final = 64 * 1024
_READ_MAX: Final = 256 * 1024

#: How long a gracefully closed connection waits for the peer's FIN, and how
#: many may wait at once per reactor (past that, sockets close at once).
LINGER_TIME = 2.0
MAX_LINGERING = 1024

# Errors that mean the peer went away: logged quietly, not as failures.
_PEER_GONE = (ConnectionResetError, BrokenPipeError, ConnectionAbortedError, TimeoutError)
# ENOTCONN: shutdown() on a connection the peer has already reset.
_PEER_GONE_ERRNOS = frozenset({errno.ECONNRESET, errno.EPIPE, errno.ENOTCONN})


class StreamTransport(BaseTransport):
    """A byte-stream transport with asyncio's method names."""

    __slots__ = (
        "_buffer",
        "_close_timeout",
        "_close_timer",
        "_data_received",
        "_eof_received",
        "_eof_written",
        "_graceful",
        "_linger_timer",
        "_on_lost",
        "_read_size",
        "_reader",
        "_reading",
        "bytes_received",
        "bytes_sent",
    )

    def __init__(
        self,
        reactor: ReactorPort,
        sock: socket.socket,
        protocol: ProtocolInterface,
        peername: Any = None,
    ) -> None:
        super().__init__(reactor, sock, protocol, peername)
        self._read_size = _READ_SIZE
        # Made on the first write the kernel does not take whole: most
        # connections never need one, and an empty deque is 760 bytes, 40% of
        # an idle connection's memory.
        self._buffer: deque[bytes | memoryview] | None = None
        self._buffer_size = 0
        self._high = DEFAULT_HIGH_WATER
        self._low = DEFAULT_LOW_WATER
        self._protocol_paused = False
        self._reading = True
        self._eof_written = False
        self._eof_received = False
        self.bytes_received = 0
        self.bytes_sent = 0
        #: Called (no arguments) once the connection is over, after
        #: connection_lost: how a Connector releases its factory (do_stop).
        self._on_lost: Callable[[], object] | None = None
        self._graceful = False  # close() (not abort or an error) ended it
        self._linger_timer: Any = None
        self._close_timeout: float | None = None  # None: the reactor's close_timeout
        self._close_timer: Any = None  # aborts a close() whose buffer never drains
        self._use_protocol(protocol)

    def _use_protocol(self, protocol: ProtocolInterface) -> None:
        """Bind the read path to ``protocol``: data_received, or get_buffer/buffer_updated."""
        self._protocol = protocol
        if is_buffered_protocol(protocol):
            self._reader = self._read_into_ready
            self._data_received = protocol.buffer_updated  # type: ignore[attr-defined]
        else:
            self._reader = self._read_ready
            self._data_received = protocol.data_received

    def _start(self) -> None:
        """Start reading, then tell the protocol the connection is up.

        Watching comes first because it is what can fail (select cannot
        watch an fd at or above FD_SETSIZE); then the socket is closed and
        the error raised, and the protocol never hears of a connection it
        could not have served. Nothing is read before connection_made: the
        loop runs no reader until this callback has returned.
        """
        try:
            self._reactor.watch_read(self._fd, self._reader)
        except BaseException:
            self._conn_lost = self._closing = True
            self._reactor.resources.discard(self)
            self._sock.close()
            raise
        self._started = True
        self._connection_made()

    def _connection_made(self) -> None:
        try:
            self._protocol.connection_made(self)
        except Exception as exc:
            self._protocol_error(exc, "connection_made")

    # ------------------------------------------------------------------ reading

    def _read_ready(self) -> None:
        size = self._read_size
        try:
            data = self._sock.recv(size)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._fatal_error(exc)
            return
        if data:
            n = len(data)
            if n == size:
                self._read_size = _READ_MAX  # more was waiting: ask for more
            elif size != _READ_SIZE and n <= _READ_SIZE:
                self._read_size = _READ_SIZE  # the burst is over
            self.bytes_received += n
            try:
                self._data_received(data)
            except Exception as exc:
                self._protocol_error(exc, "data_received")
        else:
            self._read_eof()

    def _read_into_ready(self) -> None:
        """The read path of a buffered protocol: recv_into the buffer it lends."""
        try:
            buf = self._protocol.get_buffer(-1)
            if not len(buf):
                raise RuntimeError("get_buffer() returned an empty buffer")
        except Exception as exc:
            self._protocol_error(exc, "get_buffer")
            return
        try:
            n = self._sock.recv_into(buf)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._fatal_error(exc)
            return
        if n:
            self.bytes_received += n
            try:
                self._data_received(n)
            except Exception as exc:
                self._protocol_error(exc, "buffer_updated")
        else:
            self._read_eof()

    def _read_eof(self) -> None:
        self._eof_received = True
        self._reactor.unwatch_read(self._fd)
        try:
            keep_open = self._protocol.eof_received()
        except Exception as exc:
            self._protocol_error(exc, "eof_received")
            return
        # A half-close: the protocol asked to keep writing. Once our own side
        # is shut too (write_eof), both directions are done and we close.
        if not keep_open or self._eof_written:
            self.close()

    def pause_reading(self) -> None:
        """Stop calling data_received until resume_reading() (backpressure upstream)."""
        if self._closing or not self._reading:
            return
        self._reading = False
        self._reactor.unwatch_read(self._fd)

    def resume_reading(self) -> None:
        if self._closing or self._reading:
            return
        self._reading = True
        if not self._eof_received:
            self._reactor.watch_read(self._fd, self._reader)

    def is_reading(self) -> bool:
        return self._reading and not self._closing

    # ------------------------------------------------------------------ writing

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Send ``data``, buffering whatever the kernel does not take now.

        After close() the data is dropped (and counted in ``dropped_writes``);
        after write_eof() it is an error.
        """
        if type(data) is not bytes:
            data = as_bytes(data, "write")
        owner = self._reactor.thread_id
        if owner is not None and owner != get_ident():
            self._check_thread("write")
        if self._eof_written:
            raise RuntimeError("write() after write_eof(): this side of the connection is shut")
        if self._closing:
            self._dropped(len(data))
            return
        if not data:
            return
        buf = self._buffer
        if not buf:
            try:
                n = self._sock.send(data)
            except (BlockingIOError, InterruptedError):
                n = 0
            except OSError as exc:
                self._fatal_error(exc)
                return
            self.bytes_sent += n
            if n == len(data):
                return
            if buf is None:
                buf = self._buffer = deque()
            buf.append(memoryview(data)[n:] if n else data)
            self._buffer_size += len(data) - n
            self._reactor.watch_write(self._fd, self._write_ready)
        else:
            buf.append(data)
            self._buffer_size += len(data)
        if self._buffer_size > self._high and not self._protocol_paused:
            self._pause_protocol()

    def writelines(self, chunks: Any) -> None:
        """Write the chunks of an iterable as one write (one ``send`` when nothing is
        buffered, so a header and its body leave in one segment with TCP_NODELAY).

        All or nothing: a chunk that is not bytes-like raises TypeError before
        anything is written.
        """
        self.write(b"".join(chunks))

    def _write_ready(self) -> None:
        buf = self._buffer
        assert buf, "writability is watched only while something is buffered"
        try:
            if len(buf) == 1:
                n = self._sock.send(buf[0])
            else:
                n = self._sock.sendmsg(list(islice(buf, _IOV_MAX)))
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._fatal_error(exc)
            return
        self.bytes_sent += n
        self._buffer_size -= n
        while n:
            head = buf[0]
            size = len(head)
            if n >= size:
                buf.popleft()
                n -= size
            else:
                buf[0] = memoryview(head)[n:]
                break
        if self._protocol_paused and self._buffer_size <= self._low:
            self._resume_protocol()
        if not buf:
            self._reactor.unwatch_write(self._fd)
            if self._closing:
                self._cancel_close_timer()
                self._lose(None)
            elif self._eof_written:
                self._shutdown_write()

    def write_eof(self) -> None:
        """Shut the write side (send FIN) once the buffer is flushed; reading goes on."""
        if self._eof_written or self._closing:
            return
        self._eof_written = True
        if not self._buffer:
            self._shutdown_write()

    def _shutdown_write(self) -> None:
        try:
            self._sock.shutdown(socket.SHUT_WR)
        except OSError as exc:
            self._fatal_error(exc)
            return
        if self._eof_received:
            self.close()

    def can_write_eof(self) -> bool:
        return True

    # ------------------------------------------------------------------ closing

    def close(self) -> None:
        """Stop reading, flush what is buffered, then close (connection_lost(None)).

        A peer that stops reading could keep the flush waiting forever; if
        the buffer has not drained within the close timeout (the reactor's
        ``close_timeout``, or :meth:`set_close_timeout`), the connection is
        aborted and ``connection_lost`` gets a TimeoutError saying so.
        """
        self._check_thread("close")
        if self._closing:
            return
        self._closing = True
        self._graceful = True
        self._reactor.unwatch_read(self._fd)
        if not self._buffer:
            self._lose(None)
        else:
            self._start_close_timer()

    def set_close_timeout(self, seconds: Seconds) -> None:
        """Seconds a close() may wait for the buffer to drain before aborting."""
        self._close_timeout = check_timeout(seconds, "set_close_timeout()")
        if self._close_timer is not None:  # a close is waiting: restart its clock
            self._cancel_close_timer()
            self._start_close_timer()

    def _start_close_timer(self) -> None:
        timeout = self._close_timeout
        if timeout is None:
            timeout = self._reactor.close_timeout
        self._close_timer = self._reactor.call_later(timeout, self._close_expired, timeout)

    def _cancel_close_timer(self) -> None:
        if self._close_timer is not None:
            self._close_timer.cancel()
            self._close_timer = None

    def _close_expired(self, timeout: float) -> None:
        self._close_timer = None
        size = self._buffer_size
        log.info("%r: %d bytes not flushed %.3g s after close(); aborting", self, size, timeout)
        set_abortive_close(self._sock)  # a reset: the kernel keeps nothing for it either
        self._force_close(
            TimeoutError(
                f"closed with {size} bytes unsent: the peer read nothing for {timeout:g} s "
                "after close() (the close timeout), so the connection was aborted"
            )
        )

    def abort(self, reason: BaseException | None = None) -> None:
        """Close now, dropping anything buffered; ``connection_lost(reason)`` follows.

        ``reason`` (not in asyncio's API, which always passes None) lets a
        policy say why it ended the connection, e.g. a heartbeat timeout.
        """
        self._check_thread("abort")
        self._force_close(reason)

    def _force_close(self, exc: BaseException | None) -> None:
        if self._conn_lost:
            self._graceful = False  # abort() after close(): no lingering
            if self._linger_timer is not None:
                self._end_linger()  # the reactor is closing: stop lingering now
            return
        self._closing = True
        self._graceful = False
        self._cancel_close_timer()
        if self._buffer:
            self._buffer.clear()
            self._buffer_size = 0
            self._reactor.unwatch_write(self._fd)
        self._reactor.unwatch_read(self._fd)
        self._lose(exc)

    def _release(self) -> None:
        resources = self._reactor.resources
        resources.bytes_in_closed += self.bytes_received
        resources.bytes_out_closed += self.bytes_sent
        if self._graceful and not self._eof_received and len(resources.lingering) < MAX_LINGERING:
            self._start_linger()
        else:
            self._sock.close()
        # Called once, then dropped: the hook is usually a bound method of
        # whatever owns this stream, which must not stay tied to it in a cycle.
        on_lost, self._on_lost = self._on_lost, None
        if on_lost is not None:
            on_lost()

    # A lingering close. Closing a socket while the peer's data sits unread in
    # it makes the kernel send a reset instead of a FIN, and a reset can destroy
    # what we wrote last (a goodbye line, a refusal message) before the peer
    # reads it. So after a graceful close() whose peer has not yet closed its
    # side, we send FIN, read and discard until the peer's FIN (or an error),
    # and only then close, giving up after LINGER_TIME seconds. The protocol
    # has already had connection_lost; this is the transport tidying up.

    def _start_linger(self) -> None:
        try:
            if not self._eof_written:
                self._sock.shutdown(socket.SHUT_WR)
        except OSError:
            self._sock.close()
            return
        reactor = self._reactor
        reactor.resources.lingering.add(self)
        self._linger_timer = reactor.call_later(LINGER_TIME, self._end_linger)
        reactor.watch_read(self._fd, self._linger_read)

    def _linger_read(self) -> None:
        try:
            if self._sock.recv(_READ_SIZE):
                return  # discarded
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            pass
        self._end_linger()

    def _end_linger(self) -> None:
        if self._linger_timer is None:
            return
        self._linger_timer.cancel()
        self._linger_timer = None
        reactor = self._reactor
        reactor.resources.lingering.discard(self)
        reactor.unwatch_read(self._fd)
        self._sock.close()

    def _fatal_error(self, exc: OSError) -> None:
        """A system call failed: the connection is over (usually the peer reset it)."""
        if isinstance(exc, _PEER_GONE) or exc.errno in _PEER_GONE_ERRNOS:
            log.debug("%r: %s", self, exc)
        else:
            log.warning("%r: closing after socket error: %s", self, exc)
        self._force_close(exc)

    def _protocol_error(self, exc: Exception, where: str) -> None:
        """User code raised: log it, and end this connection with the exception as reason."""
        self._report(exc, where, "; closing its connection")
        self._force_close(exc)

    # -------------------------------------------------------------------- misc

    def start_tls(
        self,
        context: SSLContext,
        *,
        server_side: bool = False,
        server_hostname: str | None = None,
        ssl_handshake_timeout: float = DEFAULT_SSL_HANDSHAKE_TIMEOUT,
        ssl_shutdown_timeout: float = DEFAULT_SSL_SHUTDOWN_TIMEOUT,
        on_handshake: HandshakeCallback | None = None,
        already_received: bytes = b"",
    ) -> TLSTransport:
        """Upgrade this connection to TLS in place (STARTTLS); returns the TLS transport.

        From now on the protocol writes through the returned transport (keep
        it: ``self.transport = transport.start_tls(...)``); what it writes
        before the handshake ends is sent, encrypted, right after it, and
        what it wrote to this transport before the call leaves first, in
        the clear. ``on_handshake(exc)`` is called when the handshake ends,
        with None on success. ``already_received``: bytes of the TLS stream
        the protocol has already read (what followed its STARTTLS line in
        the same read); they are fed to TLS first, so nothing is lost. A
        failed handshake closes the connection: ``connection_lost(exc)``.
        """
        self._check_thread("start_tls")
        if self._eof_written:
            raise RuntimeError("start_tls() after write_eof(): this side is already shut")
        return start_tls(
            self._reactor,
            self,
            context,
            server_side=server_side,
            server_hostname=server_hostname,
            ssl_handshake_timeout=ssl_handshake_timeout,
            ssl_shutdown_timeout=ssl_shutdown_timeout,
            on_handshake=on_handshake,
            already_received=already_received,
        )

    def set_protocol(self, protocol: ProtocolInterface) -> None:
        """Switch to another protocol (e.g. after a handshake); it may be a buffered one."""
        old_reader = self._reader
        self._use_protocol(protocol)
        if self._reader != old_reader and self.is_reading() and not self._eof_received:
            self._reactor.watch_read(self._fd, self._reader)
