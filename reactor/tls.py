"""TLS over any stream transport, with the standard library's memory BIOs.

The layering is Twisted's ``TLSMemoryBIOProtocol`` and asyncio's
``SSLProtocol``: a :class:`TLSTransport` sits between a plain stream transport
(TCP or Unix, any backend) and the user's protocol. Towards the plain
transport it is a buffered protocol (its :class:`CipherSide` receives the
ciphertext); towards the user it is a transport with the same methods and
hooks as TCP, carrying plaintext. ``ssl.SSLObject`` does the cryptography;
this module only moves bytes between the two BIOs and the two sides, and owns
the state machine::

    handshake --> open --> closing --> shutdown --> done
        \\___________\\__________\\___________\\-----> done   (abort, error, peer gone)

Some facts about TLS over memory BIOs, in one place:

* ``do_handshake``, ``read``, ``write`` and ``unwrap`` raise
  ``SSLWantReadError`` when they need more bytes from the peer. Whatever they
  put in the outgoing BIO must be sent even then: a handshake flight, an
  alert, a close_notify. So the outgoing BIO is flushed after every step.
* Reading can produce output too (TLS 1.3 session tickets, key updates).
* ``read`` raises ``SSLZeroReturnError`` once the peer's close_notify has been
  read, and ``SSLEOFError`` when the incoming BIO reached EOF (the TCP FIN
  was seen) without one: the stream may have been truncated by an attacker
  or a crash, and the protocol is told so instead of seeing a clean close.
* TLS 1.2 and 1.3 have no portable half-close: close_notify ends both
  directions, so ``write_eof`` is refused and ``eof_received``'s answer is
  ignored.
* Bytes after the peer's close_notify are not the peer's data any more: they
  are discarded, never delivered.
* Many TLS 1.3 peers never answer a close_notify. Waiting for the answer is
  therefore bounded (``ssl_shutdown_timeout``), and a timeout of 0 does not
  wait at all, which is what HTTPS clients do.

Memory stays bounded on both sides. Received ciphertext goes through one
receive buffer and one plaintext buffer per reactor, not per connection
(``SSLObject.read(n, buffer)`` decrypts into it), and the user's data is
copied out before anything else can run. Writes are encrypted 64 KiB at a
time and only while the plain transport is below its high-water mark, so the
ciphertext waiting in memory is bounded by the water marks; plaintext that
waits behind it pauses the protocol (:meth:`TLSTransport._update_flow`), and
``get_write_buffer_size`` counts both.
"""

from __future__ import annotations

import logging
import ssl
import threading
import weakref
from collections import deque
from collections.abc import Callable
from typing import Any, Final

from reactor.factory import build_protocol, factory_hook
from reactor.flow import DEFAULT_HIGH_WATER, DEFAULT_LOW_WATER, resolve_limits
from reactor.interfaces import Address, FactoryArg, ProtocolInterface, ReactorPort
from reactor.sockets import Seconds, check_timeout
from reactor.transport import as_bytes, get_ident, is_buffered_protocol

__all__ = [
    "DEFAULT_SSL_HANDSHAKE_TIMEOUT",
    "DEFAULT_SSL_SHUTDOWN_TIMEOUT",
    "CipherSide",
    "TLSFactory",
    "TLSTransport",
    "check_shutdown_timeout",
    "client_context",
    "server_context",
    "start_tls",
]

log = logging.getLogger("reactor")

#: asyncio's defaults, in seconds.
DEFAULT_SSL_HANDSHAKE_TIMEOUT = 60.0
DEFAULT_SSL_SHUTDOWN_TIMEOUT = 30.0

#: Ciphertext received per recv_into, and plaintext decrypted per read.
_CHUNK: Final = 64 * 1024

#: Called when a handshake ends: None on success, else why it failed.
HandshakeCallback = Callable[[BaseException | None], object]


class _Buffers:
    """The receive and plaintext buffers, one pair per reactor.

    Sharing them is safe because a reactor runs in one thread at a time and
    a buffer is emptied before the callback that filled it returns:
    ciphertext goes into the connection's incoming BIO at once, plaintext is
    copied into bytes before the protocol sees it. A connection looks its
    pair up once, when it is made.
    """

    __slots__ = ("cipher", "plain", "plain_view")

    def __init__(self) -> None:
        self.cipher = memoryview(bytearray(_CHUNK))
        self.plain = bytearray(_CHUNK)  # what SSLObject.read(n, buffer) fills
        self.plain_view = memoryview(self.plain)  # to copy out without a second copy


_per_thread = threading.local()
_by_reactor: weakref.WeakKeyDictionary[object, _Buffers] = weakref.WeakKeyDictionary()


def _buffers_for(reactor: object) -> _Buffers:
    try:
        return _by_reactor[reactor]
    except KeyError:
        buffers = _by_reactor[reactor] = _Buffers()
        return buffers
    except TypeError:
        # A reactor that cannot be weakly referenced (the compiled build's):
        # the pair of the thread making the connection, its loop's thread.
        mine: _Buffers | None = getattr(_per_thread, "buffers", None)
        if mine is None:
            mine = _per_thread.buffers = _Buffers()
        return mine


# ---------------------------------------------------------------- arguments


def server_context(ssl_arg: object, what: str) -> ssl.SSLContext:
    """A listener's ``ssl=``: an SSLContext holding the server's certificate."""
    if isinstance(ssl_arg, ssl.SSLContext):
        return ssl_arg
    raise TypeError(
        f"{what}: ssl= must be an ssl.SSLContext holding the server's certificate, not "
        f"{ssl_arg!r}; make one with ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH) "
        "and ctx.load_cert_chain(certfile, keyfile)"
    )


def client_context(ssl_arg: object, what: str) -> ssl.SSLContext:
    """A connector's ``ssl=``: True means the default context, which verifies the peer."""
    if ssl_arg is True:
        return ssl.create_default_context()
    if isinstance(ssl_arg, ssl.SSLContext):
        return ssl_arg
    raise TypeError(
        f"{what}: ssl= must be True (verify against the system's CA store) or an "
        f"ssl.SSLContext, not {ssl_arg!r}"
    )


def check_shutdown_timeout(seconds: object, what: str) -> float:
    """``ssl_shutdown_timeout``: 0 (send close_notify, do not wait) or positive and finite."""
    if seconds == 0 and not isinstance(seconds, bool):
        return 0.0
    return check_timeout(seconds, what)


def _truncation() -> ssl.SSLEOFError:
    return ssl.SSLEOFError(
        ssl.SSL_ERROR_EOF,
        "the peer closed the TCP connection without a TLS close_notify: the data may "
        "have been truncated",
    )


# ---------------------------------------------------------------- the transport


class CipherSide:
    """The protocol of the plain transport underneath: ciphertext in and out.

    A separate small object, so that the user's transport has no protocol
    hooks on it and the plain transport none of the user's methods.
    ``buffer_updated`` is the transport's own ``_received``, bound once: the
    hot path runs one Python call fewer per read.
    """

    __slots__ = ("_cipher", "_tls", "buffer_updated")

    buffer_updated: Callable[[int], None]

    def __init__(self, tls: TLSTransport) -> None:
        self._tls: TLSTransport | None = tls
        self._cipher = tls._bufs.cipher
        self.buffer_updated = tls._received

    @property
    def tls(self) -> TLSTransport | None:
        """The TLS transport this side carries (what an observer of the plain
        connection, such as trace mode, reports on); None once released."""
        return self._tls

    def release(self) -> None:
        """Let go of the TLS transport once the connection is over.

        The side and the transport point at each other (and the plain
        transport at the side), a cycle only the cycle collector would free,
        keeping the SSLObject and its context alive until it runs. Nothing
        calls the side after the plain transport's ``connection_lost``.
        """
        self._tls = None
        self.buffer_updated = _ignore_count

    def connection_made(self, transport: Any) -> None:
        if self._tls is not None:
            self._tls._attach(transport)

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._cipher

    def eof_received(self) -> bool:
        return self._tls._peer_fin() if self._tls is not None else False

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._tls is not None:
            self._tls._lost(exc)

    def pause_writing(self) -> None:
        if self._tls is not None:
            self._tls._plain_paused(True)

    def resume_writing(self) -> None:
        if self._tls is not None:
            self._tls._plain_paused(False)


def _ignore_count(nbytes: int) -> None:
    """A released side's ``buffer_updated``: no transport is left to decrypt for."""


class TLSTransport:
    """An encrypted stream: the user's transport, over a plain stream transport.

    The protocol gets ``connection_made`` once the handshake is done (never
    for a connection whose handshake failed, which is logged and closed),
    then the same hooks as on TCP, with plaintext. ``close()`` sends
    close_notify after what is buffered; ``abort()`` is always immediate.
    """

    __slots__ = (
        "__weakref__",
        "_app_paused",
        "_asyncio_compatible",
        "_buffered",
        "_bufs",
        "_closing",
        "_context",
        "_decrypt_handle",
        "_dropped",
        "_failure",
        "_handshake_timeout",
        "_high",
        "_incoming",
        "_lost_reason",
        "_low",
        "_made",
        "_on_handshake",
        "_outgoing",
        "_peer_closed",
        "_pending",
        "_pending_size",
        "_plain",
        "_plain_is_paused",
        "_protocol",
        "_quiet_end",
        "_reactor",
        "_reading",
        "_shutdown_timeout",
        "_ssl",
        "_state",
        "_timer",
        "cipher_side",
    )

    def __init__(
        self,
        reactor: ReactorPort,
        protocol: ProtocolInterface,
        context: ssl.SSLContext,
        *,
        server_side: bool,
        server_hostname: str | None = None,
        ssl_handshake_timeout: float = DEFAULT_SSL_HANDSHAKE_TIMEOUT,
        ssl_shutdown_timeout: float = DEFAULT_SSL_SHUTDOWN_TIMEOUT,
        on_handshake: HandshakeCallback | None = None,
        made: bool = False,
        asyncio_compatible: bool = False,
    ) -> None:
        self._reactor = reactor
        #: Where the reactor and asyncio's SSLProtocol differ, do as asyncio
        #: (for reactor.aio): a handshake timeout is ConnectionAbortedError,
        #: and a FIN without close_notify is a clean end (eof_received, then
        #: connection_lost(None)) instead of a truncation (SSLEOFError).
        self._asyncio_compatible = asyncio_compatible
        self._context = context
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._ssl = context.wrap_bio(
            self._incoming,
            self._outgoing,
            server_side=server_side,
            server_hostname=server_hostname,
        )
        self._handshake_timeout = ssl_handshake_timeout
        self._shutdown_timeout = ssl_shutdown_timeout
        self._on_handshake = on_handshake
        #: Whether the protocol has had connection_made (start_tls: before us).
        self._made = made
        self._state = "handshake"
        self._closing = False  # close() was called (it may wait for the handshake)
        self._peer_closed = False  # the peer's close_notify was read
        self._quiet_end = False  # a bare FIN read as an end (asyncio_compatible): no close_notify
        self._plain: Any = None  # the plain transport, once attached
        self._timer: Any = None  # the handshake or the shutdown deadline
        self._decrypt_handle: Any = None  # resume_reading's catch-up, scheduled
        self._failure: BaseException | None = None  # why the handshake failed
        self._lost_reason: BaseException | None = None  # e.g. a truncation
        self._pending: deque[memoryview] = deque()  # plaintext not yet encrypted
        self._pending_size = 0
        self._high = DEFAULT_HIGH_WATER
        self._low = DEFAULT_LOW_WATER
        self._plain_is_paused = False  # the plain transport is over its high-water mark
        self._app_paused = False  # the protocol was told pause_writing
        self._reading = True
        self._dropped = 0
        self._bufs = _buffers_for(reactor)
        self.cipher_side = CipherSide(self)
        self._use_protocol(protocol)

    def __repr__(self) -> str:
        peer = self._plain.get_extra_info("peername") if self._plain is not None else None
        return f"<TLSTransport peer={peer!r} {self._state}>"

    def _use_protocol(self, protocol: ProtocolInterface) -> None:
        self._protocol = protocol
        self._buffered = is_buffered_protocol(protocol)

    # What an observer sees (reactor.interfaces.TLSObservable): read-only views
    # of the state the transport keeps anyway, so nothing is done for them.

    @property
    def tls_state(self) -> str:
        """``"handshake"``, ``"open"``, ``"closing"``, ``"shutdown"`` or ``"done"``."""
        return self._state

    @property
    def server_side(self) -> bool:
        """Whether this end is the TLS server."""
        return bool(self._ssl.server_side)

    @property
    def peer_closed(self) -> bool:
        """Whether the peer closed first (its close_notify read before we sent ours)."""
        return self._peer_closed

    @property
    def handshake_error(self) -> BaseException | None:
        """Why the handshake failed, else None."""
        return self._failure

    # ------------------------------------------------------------ the handshake

    def _attach(self, plain: Any) -> None:
        """The plain connection is up (or was, for start_tls): start the handshake."""
        self._plain = plain
        high, low = plain.get_write_buffer_limits()[::-1]
        self._high, self._low = high, low
        self._plain_is_paused = plain.get_write_buffer_size() > high
        self._app_paused = self._made and self._plain_is_paused
        self._reading = plain.is_reading()
        self._timer = self._reactor.call_later(self._handshake_timeout, self._handshake_expired)
        self._handshake_step()

    def _handshake_step(self) -> None:
        try:
            self._ssl.do_handshake()
        except ssl.SSLWantReadError:
            self._flush()
            return
        except (ssl.SSLError, OSError) as exc:
            self._handshake_failed(exc)
            return
        self._flush()
        self._handshake_done()

    def _handshake_done(self) -> None:
        """Tell the protocol (connection_made) and the caller, then start the data flow."""
        self._cancel_timer()
        self._state = "open"
        if not self._made:
            self._made = True
            try:
                self._protocol.connection_made(self)
            except Exception as exc:
                self._protocol_error(exc, "connection_made")
                return
        self._tell_handshake(None)
        if self._state != "open":
            return  # the protocol or the callback ended it
        if self._closing:  # close() was called during the handshake
            self._begin_close()
            return
        self._encrypt()
        self._update_flow()
        self._decrypt()  # application data may have come with the last flight

    def _handshake_failed(self, exc: BaseException) -> None:
        peer = self._plain.get_extra_info("peername")
        log.warning("TLS handshake with %r failed: %s; closing that connection", peer, exc)
        self._failure = exc
        self._state = "done"
        self._cancel_timer()
        self._flush()  # the alert telling the peer why
        self._plain.close()
        self._tell_handshake(exc)

    def _handshake_expired(self) -> None:
        self._timer = None
        seconds = self._handshake_timeout
        if self._asyncio_compatible:
            exc: BaseException = ConnectionAbortedError(
                f"SSL handshake is taking longer than {seconds} seconds: aborting the connection"
            )
        else:
            exc = TimeoutError(
                f"the TLS handshake did not finish within {seconds:g} s (ssl_handshake_timeout)"
            )
        log.warning("%r: %s; aborting that connection", self, exc)
        self._failure = exc
        self._state = "done"
        self._plain.abort(exc)
        self._tell_handshake(exc)

    def _tell_handshake(self, exc: BaseException | None) -> None:
        callback, self._on_handshake = self._on_handshake, None
        if callback is not None:
            try:
                callback(exc)
            except Exception as error:
                self._reactor.report_error(
                    {"message": "exception in a TLS handshake callback", "exception": error}
                )

    # ------------------------------------------------------------------ reading

    def _decrypt(self) -> None:
        """Decrypt what has arrived and hand it to the protocol while it is reading."""
        self._received(0)

    def _received(self, nbytes: int) -> None:
        """``nbytes`` of ciphertext from the plain transport, in the shared receive
        buffer (0: none, decrypt what waits); then the step the state calls for.

        Every TLS read runs this, so decrypting, and delivering to a
        data_received protocol, is written out here rather than in helpers:
        one record per read into the shared plaintext buffer, copied into
        bytes for the protocol. (Records are delivered one by one, not joined:
        a protocol that switches to TLS inside TLS on a line must get the
        records after that line only once it has switched.)
        """
        incoming = self._incoming
        if nbytes:
            incoming.write(self._bufs.cipher[:nbytes])  # empties the shared buffer
        state = self._state
        if state not in ("open", "closing"):
            if state == "handshake":
                self._handshake_step()
            elif state == "shutdown":
                self._shutdown_step()
            return
        # With a buffer, read() returns the count (typeshed says bytes): called
        # through Any, or the compiled build would check for bytes.
        read: Any = self._ssl.read
        bufs = self._bufs
        while self._reading and self._state == "open":
            buffered = self._buffered
            try:
                # _read_into delivers too (-1: the protocol raised)
                n: int = self._read_into() if buffered else read(_CHUNK, bufs.plain)
            except ssl.SSLWantReadError:
                break
            except (ssl.SSLError, OSError) as exc:
                self._read_failed(exc)
                return
            if n <= 0:
                if n == 0:  # read() returns 0 only once the peer's close_notify is read
                    self._close_notify_received()
                    return
                break  # the protocol raised: the connection is being aborted
            if buffered:
                if not (incoming.pending or self._ssl.pending()):
                    break  # all read: spare the SSLWantReadError another read would raise
                continue
            try:
                self._protocol.data_received(bytes(bufs.plain_view[:n]))
            except Exception as exc:
                self._protocol_error(exc, "data_received")
                break
            # A read that did not fill the buffer used up its record (a record
            # holds at most 16 KiB), so SSLObject.pending() is 0: what is left
            # is in the incoming BIO. Asking for it there is cheaper.
            if n < _CHUNK and not incoming.pending:
                break  # all read: spare the SSLWantReadError another read would raise
        if self._state == "closing" and not self._peer_closed:
            self._discard()
        if self._outgoing.pending:
            self._flush()

    def _read_failed(self, exc: BaseException) -> None:
        """A read met the end of the stream: the peer's close_notify, a FIN without
        one (a truncation), or a broken record (``exc``: what read() raised)."""
        if isinstance(exc, ssl.SSLZeroReturnError):
            self._close_notify_received()
        elif isinstance(exc, ssl.SSLEOFError):
            if self._asyncio_compatible:  # a clean end (see _peer_fin)
                self._fin_as_eof()
            else:
                self._fatal(_truncation())
        else:
            self._fatal(exc)

    def _read_into(self) -> int:
        """A buffered protocol's read: into the buffer it lends, then buffer_updated.
        Returns the count (0: the peer's close_notify was read, as _ssl.c turns
        SSL_ERROR_ZERO_RETURN into an empty read), or -1 if the protocol raised."""
        protocol: Any = self._protocol
        try:
            buf = protocol.get_buffer(-1)
            if not len(buf):
                raise RuntimeError("get_buffer() returned an empty buffer")
        except Exception as exc:
            self._protocol_error(exc, "get_buffer")
            return -1
        read: Any = self._ssl.read  # returns the count (see _decrypt)
        n: int = read(len(buf), buf)
        if n:
            try:
                protocol.buffer_updated(n)
            except Exception as exc:
                self._protocol_error(exc, "buffer_updated")
                return -1
        return n

    def _discard(self) -> None:
        """Read and drop records after close(): the protocol asked for no more data."""
        try:
            read: Any = self._ssl.read  # returns the count (see _decrypt)
            while read(_CHUNK, self._bufs.plain):
                pass
            self._close_notify_received()  # read() returns 0 only after close_notify
        except ssl.SSLWantReadError:
            pass
        except ssl.SSLZeroReturnError:
            self._close_notify_received()
        except ssl.SSLEOFError:
            self._end_quietly()  # we are closing anyway: the peer just went first
        except (ssl.SSLError, OSError) as exc:
            self._fatal(exc)

    def _tell_eof(self) -> bool:
        """The protocol's eof_received(); False if it raised (the connection is
        then being aborted). Its answer cannot keep a half-open TLS stream."""
        try:
            if self._protocol.eof_received():
                log.debug("%r: eof_received() returned true, but TLS has no half-close", self)
        except Exception as exc:
            self._protocol_error(exc, "eof_received")
            return False
        return True

    def _close_notify_received(self) -> None:
        """The peer ended its side cleanly: tell the protocol, then answer in kind
        (after what the protocol has buffered: no half-close, but nothing lost)."""
        if self._peer_closed:
            return
        self._peer_closed = True
        if self._state == "open":
            if not self._tell_eof():
                return
            if self._state == "open":
                self._closing = True
                self._begin_close()
        elif self._state == "closing" and not self._pending:
            self._start_shutdown()

    def _fin_as_eof(self) -> None:
        """asyncio's reading of a FIN without close_notify (``asyncio_compatible``): the
        peer's end, so eof_received(), then close after what is written, sending no
        close_notify (the TLS session is left as it is, as asyncio leaves it)."""
        self._peer_closed = True
        if not self._tell_eof():
            return
        if self._state == "open":
            # Close after what is written, all of it: what flow control holds
            # back is encrypted as the plain transport drains (bounded by the
            # shutdown timeout, as any close), then the plain transport closes.
            self._closing = True
            self._quiet_end = True
            self._begin_close()

    def _peer_fin(self) -> bool:
        """The TCP FIN: a clean end only if the peer's close_notify came before it."""
        if not self._asyncio_compatible or not self._reading:
            # (asyncio's SSLProtocol never tells the engine: an engine that
            # hits EOF mid-record fails the session, and getpeercert() with
            # it. Paused, the EOF is how _catch_up learns of the FIN.)
            self._incoming.write_eof()
        state = self._state
        if state == "handshake":
            self._failure = ConnectionResetError(
                "the peer closed the connection during the TLS handshake"
            )
            log.info("%r: %s", self, self._failure)
            self._state = "done"
            self._cancel_timer()
            self._tell_handshake(self._failure)
        elif state in ("open", "closing"):
            self._decrypt()  # what is left, up to the close_notify or the truncation
            if self._state == "open":  # paused for reading: it ends here all the same
                if self._asyncio_compatible:  # asyncio calls it a clean end
                    if not self._reading:
                        return True  # once resumed: what is left, then the end (_catch_up)
                    self._fin_as_eof()
                    # Still writing what flow control held back: keep the
                    # plain transport's sending side open; _end_quietly
                    # closes it once all is sent.
                    return self._state == "closing"
                self._fatal(_truncation())
            elif self._state == "closing":
                self._end_quietly()
        return False  # the plain transport closes (unless kept open above)

    def pause_reading(self) -> None:
        """Stop decrypting and delivering until resume_reading() (the socket is not read)."""
        if not self._reading or self._state not in ("handshake", "open"):
            return
        self._reading = False
        self._plain.pause_reading()

    def resume_reading(self) -> None:
        if self._reading or self._state not in ("handshake", "open"):
            return
        self._reading = True
        self._plain.resume_reading()
        # Records may wait in the incoming BIO with nothing more coming from
        # the socket to prompt a read: decrypt them on the next turn (not
        # now, inside whatever callback called us).
        if self._decrypt_handle is None:
            self._decrypt_handle = self._reactor.call_soon(self._catch_up)

    def _catch_up(self) -> None:
        self._decrypt_handle = None
        if self._state == "open":
            self._decrypt()
            if self._state == "open" and self._incoming.eof:  # a FIN kept while paused
                self._fin_as_eof()

    def is_reading(self) -> bool:
        return self._reading and self._state in ("handshake", "open")

    # ------------------------------------------------------------------ writing

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Encrypt and send ``data``; before the handshake ends it waits, in order."""
        if type(data) is not bytes:
            data = as_bytes(data, "write")
        owner = self._reactor.thread_id
        if owner is not None and owner != get_ident():
            self._check_thread("write")
        if self._closing or self._state == "done":
            self._drop(len(data))
            return
        if not data:
            return
        # The common case: nothing waits, so encrypt and send at once. (Flow
        # control has nothing to do here: with nothing waiting the protocol is
        # not paused, and if this write fills the plain transport, its
        # pause_writing reaches _plain_paused, which decides.)
        if (
            self._state == "open"
            and not self._pending
            and not self._plain_is_paused
            and len(data) <= _CHUNK
        ):
            try:
                self._ssl.write(data)
            except (ssl.SSLError, OSError) as exc:
                self._fatal(exc)
                return
            plain = self._plain
            if not plain.is_closing():  # a write makes records: no need to ask the BIO
                plain.write(self._outgoing.read())
            return
        self._pending.append(memoryview(data))
        self._pending_size += len(data)
        if self._state == "open":
            self._encrypt()
        self._update_flow()

    def writelines(self, chunks: Any) -> None:
        self.write(b"".join(chunks))

    def _encrypt(self) -> None:
        """Encrypt buffered plaintext while the plain transport is below its high-water mark."""
        pending = self._pending
        while pending and not self._plain_is_paused and self._state in ("open", "closing"):
            head = pending[0]
            piece = head[:_CHUNK]
            try:
                self._ssl.write(piece)
            except (ssl.SSLError, OSError) as exc:
                self._fatal(exc)
                return
            if len(piece) == len(head):
                pending.popleft()
            else:
                pending[0] = head[_CHUNK:]
            self._pending_size -= len(piece)
            self._flush()

    def _flush(self) -> None:
        """Send what the TLS engine produced (records, alerts, close_notify)."""
        if self._outgoing.pending and not self._plain.is_closing():
            self._plain.write(self._outgoing.read())

    def _plain_paused(self, paused: bool) -> None:
        """The plain transport crossed a water mark."""
        self._plain_is_paused = paused
        if not paused:
            self._encrypt()
            if self._closing and self._state == "closing" and not self._pending:
                self._start_shutdown()
                return
        self._update_flow()

    def _update_flow(self) -> None:
        """Tell the protocol to pause while plaintext waits behind a full pipe.

        The plain transport's water marks are this transport's. Once it holds
        more than the high-water mark of ciphertext it pauses us, and we stop
        encrypting; plaintext written meanwhile waits, and the protocol is
        paused. When the plain transport drains to its low-water mark it
        resumes us, we encrypt what waits, and once nothing waits the protocol
        is resumed. (Resuming on the plain transport's signal is what makes
        it reliable: that signal always comes after a pause.) During the
        handshake nothing can be encrypted, so the plaintext alone counts.
        """
        if self._state == "done" or not self._made:
            return
        pending = self._pending_size
        if self._state == "handshake":
            wanted = pending > self._high
        else:
            wanted = self._plain_is_paused and pending > 0
        if wanted != self._app_paused:
            self._app_paused = wanted
            self._call_protocol("pause_writing" if wanted else "resume_writing")

    def _call_protocol(self, name: str) -> None:
        try:
            getattr(self._protocol, name)()
        except Exception as exc:
            self._protocol_error(exc, name)

    def get_write_buffer_size(self) -> int:
        """Plaintext not yet encrypted plus ciphertext not yet taken by the kernel."""
        plain = 0 if self._plain is None else self._plain.get_write_buffer_size()
        return self._pending_size + plain

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return (self._low, self._high)

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        """Water marks for pause_writing/resume_writing, over both buffers."""
        self._high, self._low = resolve_limits(high, low)
        if self._plain is not None:
            self._plain.set_write_buffer_limits(self._high, self._low)
            self._update_flow()

    def write_eof(self) -> None:
        raise NotImplementedError(
            "TLS has no half-close: close_notify ends both directions, so write_eof() is "
            "not supported on a TLS transport (can_write_eof() is False); call close()"
        )

    def can_write_eof(self) -> bool:
        return False

    # ------------------------------------------------------------------ closing

    def close(self) -> None:
        """Send what is buffered, then close_notify; the connection ends when the
        peer answers, or at once with ``ssl_shutdown_timeout=0``. Bounded by
        ``ssl_shutdown_timeout`` either way."""
        self._check_thread("close")
        if self._closing or self._state == "done":
            return
        self._closing = True
        if self._state == "handshake":
            return  # the handshake finishes (or times out) first
        self._begin_close()

    def _begin_close(self) -> None:
        """Stop delivering, encrypt what is buffered, then shut down (all bounded)."""
        self._state = "closing"
        self._timer = self._reactor.call_later(
            self._shutdown_timeout or self._reactor.close_timeout, self._shutdown_expired
        )
        if not self._peer_closed:
            self._discard()
        if self._state == "closing":
            self._encrypt()
            if not self._pending:
                self._start_shutdown()

    def _start_shutdown(self) -> None:
        """Everything is encrypted: send close_notify and maybe wait for the peer's."""
        if self._quiet_end:
            self._end_quietly()
            return
        self._state = "shutdown"
        plain = self._plain
        if not plain.is_reading():
            plain.resume_reading()  # the peer's close_notify must be read
        if self._timer is None:
            timeout = self._shutdown_timeout or self._reactor.close_timeout
            self._timer = self._reactor.call_later(timeout, self._shutdown_expired)
        self._shutdown_step()

    def _shutdown_step(self) -> None:
        try:
            self._ssl.unwrap()
        except ssl.SSLWantReadError:
            self._flush()
            if self._shutdown_timeout:
                return  # wait for the peer's close_notify
        except (ssl.SSLError, OSError) as exc:
            log.debug("%r: TLS shutdown: %s", self, exc)
        else:
            self._flush()
        self._state = "done"
        self._cancel_timer()
        self._plain.close()  # flushes, then lingers for the FIN as any stream does

    def _shutdown_expired(self) -> None:
        self._timer = None
        plain = self._plain
        unsent = self.get_write_buffer_size()
        if unsent:
            self._state = "done"
            plain.abort(
                TimeoutError(
                    f"closed with {unsent} bytes unsent: the peer read nothing for the "
                    "close timeout after close(), so the connection was aborted"
                )
            )
            return
        log.debug("%r: no close_notify from the peer in time; closing", self)
        self._state = "done"
        plain.close()

    def abort(self, reason: BaseException | None = None) -> None:
        """Close now, dropping what is buffered; ``connection_lost(reason)`` follows."""
        self._check_thread("abort")
        self._closing = True
        self._state = "done"
        self._cancel_timer()
        self._pending.clear()
        self._pending_size = 0
        if self._plain is not None:
            self._plain.abort(reason)  # also turns a close in progress into an abort

    def is_closing(self) -> bool:
        """True once closed, aborted, failed, or when the connection underneath died."""
        return self._closing or self._state == "done" or self._plain.is_closing()

    def _end_quietly(self) -> None:
        """The peer closed while we were closing: nothing more to wait for."""
        self._state = "done"
        self._cancel_timer()
        self._plain.close()

    def _fatal(self, exc: BaseException) -> None:
        """The TLS stream is broken (a bad record, a truncation): end with ``exc``."""
        if isinstance(exc, ssl.SSLEOFError):  # common: many clients just close
            log.info("%r: %s", self, exc)
        else:
            log.warning("%r: closing that connection: %s", self, exc)
        self._lost_reason = exc
        self._state = "done"
        self._cancel_timer()
        self._flush()  # an alert, if the engine made one
        self._plain.close()

    def _protocol_error(self, exc: Exception, where: str) -> None:
        self._reactor.report_error(
            {
                "message": f"exception in {type(self._protocol).__name__}.{where}(); "
                "closing its connection",
                "exception": exc,
                "transport": self,
            }
        )
        self._state = "done"
        self._closing = True
        self._cancel_timer()
        self._plain.abort(exc)

    def _lost(self, exc: BaseException | None) -> None:
        """The plain transport is gone: tell the protocol, once, and only if it was made."""
        if self._state == "handshake":
            log.debug("%r: connection lost during the TLS handshake: %s", self, exc)
        self._state = "done"
        self._closing = True
        self._cancel_timer()
        if self._decrypt_handle is not None:
            self._decrypt_handle.cancel()
            self._decrypt_handle = None
        reason = exc if exc is not None else self._lost_reason
        if self._on_handshake is not None:
            self._tell_handshake(
                reason or ConnectionResetError("the connection closed during the TLS handshake")
            )
        if self._made:
            if self._failure is not None and reason is None:
                reason = self._failure  # start_tls: the protocol hears why
            try:
                self._protocol.connection_lost(reason)
            except Exception as error:
                self._reactor.report_error(
                    {
                        "message": f"exception in {type(self._protocol).__name__}"
                        ".connection_lost()",
                        "exception": error,
                        "transport": self,
                    }
                )
        # The plain transport calls its protocol (the cipher side) no more:
        # break the cycles through it, including the read path the plain
        # transport bound to our _received (set_protocol binds it again).
        self.cipher_side.release()
        if self._plain is not None:
            self._plain.set_protocol(self.cipher_side)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _drop(self, size: int) -> None:
        self._dropped += 1
        if self._dropped == 1:
            log.warning("%r: write of %d bytes after close() was dropped", self, size)

    def _check_thread(self, what: str) -> None:
        owner = self._reactor.thread_id
        if owner is not None and owner != get_ident():
            raise RuntimeError(
                f"TLSTransport.{what}() called from another thread while the reactor runs: "
                f"transports are not thread-safe; use reactor.call_from_thread(transport."
                f"{what}, ...) instead"
            )

    # --------------------------------------------------------------------- misc

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        """TCP's names, plus ``ssl_object``, ``peercert``, ``cipher``,
        ``compression`` and ``sslcontext`` (asyncio's)."""
        sslobj = self._ssl
        if name == "ssl_object":
            return sslobj
        if name == "sslcontext":
            return self._context
        if name in ("peercert", "cipher", "compression"):
            try:
                value = getattr(sslobj, "getpeercert" if name == "peercert" else name)()
            except ValueError:  # no handshake yet
                return default
            return default if value is None else value
        if self._plain is None:
            return default
        return self._plain.get_extra_info(name, default)

    def get_protocol(self) -> Any:
        return self._protocol

    def set_protocol(self, protocol: ProtocolInterface) -> None:
        self._use_protocol(protocol)

    def start_tls(
        self,
        context: ssl.SSLContext,
        *,
        server_side: bool = False,
        server_hostname: str | None = None,
        ssl_handshake_timeout: float = DEFAULT_SSL_HANDSHAKE_TIMEOUT,
        ssl_shutdown_timeout: float = DEFAULT_SSL_SHUTDOWN_TIMEOUT,
        on_handshake: HandshakeCallback | None = None,
        already_received: bytes = b"",
    ) -> TLSTransport:
        """TLS inside this TLS connection (a tunnel through a TLS proxy); the
        arguments and the result are those of ``StreamTransport.start_tls``."""
        self._check_thread("start_tls")
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
            transport_class=type(self),
        )

    def set_close_timeout(self, seconds: Seconds) -> None:
        """The plain transport's flush deadline after close (see StreamTransport)."""
        self._plain.set_close_timeout(seconds)


# ---------------------------------------------------------------- the entry points


class TLSFactory:
    """Wraps a stream factory so that each connection it builds speaks TLS.

    ``listen_*(ssl=...)`` and ``connect_*(ssl=...)`` pass this to the plain
    listener or connector; it builds the user's protocol and puts a
    :class:`TLSTransport` in front of it. For a client, ``on_connect`` and
    ``on_failure`` are called when the handshake ends, and a failed
    handshake also goes to the user factory's ``client_connection_failed``.
    """

    def __init__(
        self,
        reactor: ReactorPort,
        factory: FactoryArg,
        context: ssl.SSLContext,
        *,
        server_side: bool,
        server_hostname: str | None = None,
        ssl_handshake_timeout: float = DEFAULT_SSL_HANDSHAKE_TIMEOUT,
        ssl_shutdown_timeout: float = DEFAULT_SSL_SHUTDOWN_TIMEOUT,
        on_connect: Callable[[Any], object] | None = None,
        on_failure: Callable[[BaseException], object] | None = None,
        transport_class: type[TLSTransport] | None = None,
    ) -> None:
        self._reactor = reactor
        self._transport_class = transport_class or TLSTransport
        self._factory = factory
        self._context = context
        self._server_side = server_side
        self._server_hostname = server_hostname
        self._handshake_timeout = ssl_handshake_timeout
        self._shutdown_timeout = ssl_shutdown_timeout
        self._on_connect = on_connect
        self._on_failure = on_failure
        #: The connector using this factory (a client), for failure reports.
        self.connector: Any = None

    def build_protocol(self, addr: Address) -> CipherSide | None:
        protocol = build_protocol(self._factory, addr)
        if protocol is None:
            return None
        on_handshake = None if self._server_side else self._client_handshake(protocol)
        tls = self._transport_class(
            self._reactor,
            protocol,
            self._context,
            server_side=self._server_side,
            server_hostname=self._server_hostname,
            ssl_handshake_timeout=self._handshake_timeout,
            ssl_shutdown_timeout=self._shutdown_timeout,
            on_handshake=on_handshake,
        )
        return tls.cipher_side

    def _client_handshake(self, protocol: Any) -> HandshakeCallback:
        def done(exc: BaseException | None) -> None:
            if exc is None:
                if self.connector is not None:
                    self.connector.protocol = protocol
                if self._on_connect is not None:
                    self._on_connect(protocol)
                return
            failed = getattr(self._factory, "client_connection_failed", None)
            if failed is not None:
                failed(self.connector, exc)
            if self._on_failure is not None:
                self._on_failure(exc)

        return done

    def client_connection_failed(self, connector: Any, reason: BaseException) -> None:
        """The TCP connection itself failed: the user's factory hears it as usual."""
        failed = getattr(self._factory, "client_connection_failed", None)
        if failed is not None:
            failed(connector, reason)
        if self._on_failure is not None:
            self._on_failure(reason)
        if failed is None and self._on_failure is None:
            log.warning("TLS connection to %s failed: %s", self._server_hostname, reason)

    def do_start(self) -> None:
        factory_hook(self._factory, "do_start", self._reactor)

    def do_stop(self) -> None:
        factory_hook(self._factory, "do_stop", self._reactor)


def start_tls(
    reactor: ReactorPort,
    plain: Any,
    context: ssl.SSLContext,
    *,
    server_side: bool = False,
    server_hostname: str | None = None,
    ssl_handshake_timeout: float = DEFAULT_SSL_HANDSHAKE_TIMEOUT,
    ssl_shutdown_timeout: float = DEFAULT_SSL_SHUTDOWN_TIMEOUT,
    on_handshake: HandshakeCallback | None = None,
    already_received: bytes = b"",
    transport_class: type[TLSTransport] | None = None,
) -> TLSTransport:
    """Upgrade the open connection ``plain`` to TLS in place; see StreamTransport.start_tls."""
    if not isinstance(context, ssl.SSLContext):
        raise TypeError(f"start_tls() needs an ssl.SSLContext, not {context!r}")
    if plain.is_closing():
        raise RuntimeError("start_tls() on a closing transport: there is no connection to upgrade")
    tls = (transport_class or TLSTransport)(
        reactor,
        plain.get_protocol(),
        context,
        server_side=server_side,
        server_hostname=server_hostname,
        ssl_handshake_timeout=check_timeout(ssl_handshake_timeout, "ssl_handshake_timeout"),
        ssl_shutdown_timeout=check_shutdown_timeout(ssl_shutdown_timeout, "ssl_shutdown_timeout"),
        on_handshake=on_handshake,
        made=True,
    )
    # Bytes the protocol already read past its STARTTLS line are the first
    # bytes of the TLS stream: they go into the engine before anything else.
    if already_received:
        tls._incoming.write(as_bytes(already_received, "start_tls"))
    plain.set_protocol(tls.cipher_side)
    tls._attach(plain)
    return tls
