"""``ssl=`` on the fast path: asyncio TLS connections carried by ``reactor/tls.py``.

asyncio makes every TLS transport in one place, ``_make_ssl_transport``
(``create_connection``, ``create_server``, their Unix variants,
``connect_accepted_socket``, and so ``open_connection``/``start_server``),
and upgrades in one other, ``start_tls``. On :class:`~reactor.aio.EventLoop`
both make a :class:`NativeSSLTransport`: an ``asyncio.Transport`` whose
encryption is the reactor's :class:`~reactor.tls.TLSTransport` (made with
``asyncio_compatible=True``), over the reactor's ``StreamTransport`` (through
the loop's :class:`~reactor.aio.transport.AioPort`, so callbacks run in
asyncio's order).

What asyncio code observes is asyncio's ``SSLProtocol``'s behaviour: the
awaitable completes after the handshake and raises its error
(``ssl.SSLCertVerificationError``, ``ConnectionAbortedError`` for
``ssl_handshake_timeout``); a server's failed handshake never reaches the
protocol, and is reported as asyncio's is (the exception handler for errors
that are not ``OSError``, a debug log for the rest); ``get_extra_info``
answers ``sslcontext`` at once and ``peercert``/``cipher``/``compression``/
``ssl_object`` from the handshake on; ``close()`` during the handshake
aborts; a peer's FIN without close_notify is a clean end.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from asyncio.log import logger as _asyncio_logger
from typing import Any, cast

from reactor.aio.transport import AioPort, attach_to_server, detach_from_server, socket_names
from reactor.interfaces import ReactorPort
from reactor.stream import StreamTransport
from reactor.tls import DEFAULT_SSL_HANDSHAKE_TIMEOUT, DEFAULT_SSL_SHUTDOWN_TIMEOUT, TLSTransport

__all__ = ["NativeSSLTransport", "check_ssl_timeouts", "default_client_context"]

#: The TLS transport's methods a NativeSSLTransport exposes as its own.
_FORWARDED = (
    "write",
    "writelines",
    "write_eof",
    "can_write_eof",
    "pause_reading",
    "resume_reading",
    "is_reading",
    "get_write_buffer_size",
    "get_write_buffer_limits",
    "set_write_buffer_limits",
)

#: get_extra_info names that belong to one TLS layer (not copied by start_tls).
_TLS_NAMES = ("sslcontext", "peercert", "cipher", "compression", "ssl_object")

#: What a TLS transport's protocol becomes once the connection is over.
_RELEASED = asyncio.Protocol()


def check_ssl_timeouts(handshake: float | None, shutdown: float | None) -> tuple[float, float]:
    """asyncio's defaults and checks (those of ``SSLProtocol.__init__``), same messages."""
    if handshake is None:
        handshake = DEFAULT_SSL_HANDSHAKE_TIMEOUT
    elif handshake <= 0:
        raise ValueError(f"ssl_handshake_timeout should be a positive number, got {handshake}")
    if shutdown is None:
        shutdown = DEFAULT_SSL_SHUTDOWN_TIMEOUT
    elif shutdown <= 0:
        raise ValueError(f"ssl_shutdown_timeout should be a positive number, got {shutdown}")
    return float(handshake), float(shutdown)


def default_client_context(server_side: bool, server_hostname: str | None) -> ssl.SSLContext:
    """``ssl=True``: what asyncio makes (no host name to check: no hostname check)."""
    if server_side:
        raise ValueError("Server side SSL needs a valid SSLContext")
    context = ssl.create_default_context()
    if not server_hostname:
        context.check_hostname = False
    return context


class _Introducer:
    """The TLS transport's first protocol: puts the real one in place at the handshake's end.

    The TLS transport calls nothing on a protocol before ``connection_made``
    (not even ``connection_lost`` when the handshake fails), so this is the
    only hook it needs. Once it has run, data goes straight to the real
    protocol. What the real ``connection_made`` raises is the TLS
    transport's to report; it then aborts the connection, as asyncio's
    ``SSLProtocol`` does.
    """

    def __init__(self, face: NativeSSLTransport, protocol: Any) -> None:
        self.face = face
        self.protocol = protocol

    def connection_made(self, transport: Any) -> None:
        transport.set_protocol(self.protocol)
        self.face._handshake_complete()  # get_extra_info answers from here on
        self.protocol.connection_made(self.face)


class NativeSSLTransport(asyncio.transports._FlowControlMixin):
    """An ``asyncio.Transport`` over a :class:`reactor.tls.TLSTransport`.

    ("SSL" as in asyncio's names: its tests look for it in the class name.)

    ``transport.tls`` is the TLS transport and ``transport.stream`` the one
    under it (a ``StreamTransport``, or for TLS inside TLS another
    ``TLSTransport``). ``write``, ``pause_reading``, ``get_write_buffer_size``
    and the rest are the TLS transport's own bound methods.
    """

    _extra: dict[str, Any]

    # asyncio's start_tls() may put TLS inside this one (a TLS proxy), and
    # loop.sendfile() reads and writes through it, as on asyncio's SSL transport.
    _start_tls_compatible = True
    _sendfile_compatible = asyncio.constants._SendfileMode.FALLBACK  # type: ignore[attr-defined]

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        port: AioPort,
        protocol: Any,
        context: ssl.SSLContext,
        waiter: asyncio.Future[None] | None,
        extra: dict[str, Any] | None,
        *,
        server_side: bool,
        server_hostname: str | None,
        ssl_handshake_timeout: float,
        ssl_shutdown_timeout: float,
        upgrade: bool,
    ) -> None:
        """Use :meth:`over_socket` or :meth:`upgrade`, which attach it to a connection."""
        asyncio.Transport.__init__(self, extra)
        self._loop = loop
        self._waiter = waiter
        self._closed = False
        self._done = False  # the handshake succeeded
        self._started = False  # the TLS transport has its plain transport
        self._released = False  # the connection is over and the protocol let go
        self._server: asyncio.Server | None = None
        self._extra["sslcontext"] = context
        # asyncio sends no SNI and checks no name for an empty server_hostname.
        hostname = server_hostname if server_hostname and not server_side else None
        self.tls = TLSTransport(
            cast(ReactorPort, port),
            protocol if upgrade else cast(Any, _Introducer(self, protocol)),
            context,
            server_side=server_side,
            server_hostname=hostname,
            ssl_handshake_timeout=ssl_handshake_timeout,
            ssl_shutdown_timeout=ssl_shutdown_timeout,
            on_handshake=self._handshake_over,
            made=upgrade,  # start_tls: the protocol already had connection_made
            asyncio_compatible=True,
        )
        """The reactor TLS transport doing the encryption."""
        self.stream: Any = None
        """The transport under the TLS one, carrying ciphertext."""
        for name in _FORWARDED:
            setattr(self, name, getattr(self.tls, name))

    @classmethod
    def over_socket(
        cls,
        loop: asyncio.AbstractEventLoop,
        port: AioPort,
        sock: socket.socket,
        protocol: Any,
        context: ssl.SSLContext,
        waiter: asyncio.Future[None] | None,
        extra: dict[str, Any] | None,
        server: asyncio.Server | None,
        **options: Any,
    ) -> NativeSSLTransport:
        """A new connection's TLS transport (``_make_ssl_transport``); the
        handshake starts on the next turn, as asyncio's does."""
        face = cls(loop, port, protocol, context, waiter, extra, upgrade=False, **options)
        peername = socket_names(face._extra, sock)
        stream = StreamTransport(
            cast(ReactorPort, port), sock, cast(Any, face.tls.cipher_side), peername
        )
        face.stream = stream
        face._server = server
        attach_to_server(server, face)
        stream._on_lost = face._lost
        loop._transports[sock.fileno()] = face  # type: ignore[attr-defined]
        loop.call_soon(face._begin)
        return face

    @classmethod
    def upgrade(
        cls,
        loop: asyncio.AbstractEventLoop,
        port: AioPort,
        transport: Any,
        protocol: Any,
        context: ssl.SSLContext,
        waiter: asyncio.Future[None],
        **options: Any,
    ) -> NativeSSLTransport:
        """``loop.start_tls`` on one of the loop's own transports (plain or TLS)."""
        plain = transport.tls if isinstance(transport, NativeSSLTransport) else transport.stream
        if plain.is_closing():
            raise RuntimeError(
                "start_tls() on a closing transport: there is no connection to upgrade"
            )
        extra = {k: v for k, v in transport._extra.items() if k not in _TLS_NAMES}
        face = cls(loop, port, protocol, context, waiter, extra, upgrade=True, **options)
        face.stream = plain
        # asyncio reads again for the handshake even if the protocol had paused.
        plain.resume_reading()
        plain.set_protocol(cast(Any, face.tls.cipher_side))
        face._started = True
        face.tls.cipher_side.connection_made(plain)  # starts the handshake
        return face

    def __repr__(self) -> str:
        return f"<NativeSSLTransport {self.tls!r}>"

    # ------------------------------------------------------------ the handshake

    def _begin(self) -> None:
        if self.stream.is_closing():
            return
        self._started = True
        self.stream._start()  # connection_made on the cipher side: the handshake starts

    def _handshake_complete(self) -> None:
        """The names asyncio's SSL transport answers once the handshake is done."""
        if self._done:
            return
        self._done = True
        sslobj = self.tls.get_extra_info("ssl_object")
        self._extra.update(
            peercert=sslobj.getpeercert(),
            cipher=sslobj.cipher(),
            compression=sslobj.compression(),
            ssl_object=sslobj,
        )

    def _handshake_over(self, exc: BaseException | None) -> None:
        """The TLS transport's on_handshake: wake the waiter, as SSLProtocol does."""
        waiter, self._waiter = self._waiter, None
        if exc is None:
            self._handshake_complete()
            if waiter is not None and not waiter.cancelled():
                waiter.set_result(None)
            return
        self._closed = True
        # asyncio's SSLProtocol._fatal_error: an OSError (every ssl.SSLError,
        # a reset, the timeout's ConnectionAbortedError) is only logged in
        # debug mode; anything else goes to the exception handler. (After a
        # handshake that succeeded, it is what connection_made raised, which
        # the TLS transport has reported already.)
        if self._done:
            pass
        elif isinstance(exc, OSError):
            if self._loop.get_debug():
                _asyncio_logger.debug("%r: SSL handshake failed", self, exc_info=exc)
        elif not isinstance(exc, asyncio.CancelledError):
            self._loop.call_exception_handler(
                {
                    "message": "SSL handshake failed",
                    "exception": exc,
                    "transport": self,
                    "protocol": self.get_protocol(),
                }
            )
        if waiter is not None and not waiter.cancelled():
            waiter.set_exception(exc)

    def _lost(self) -> None:
        """The connection is over (the stream's ``_on_lost``, after the
        protocol's ``connection_lost``): the server forgets it, and the
        transport lets go of its protocol, as asyncio's do.

        A protocol that keeps its transport (``self.transport = t``) makes a
        cycle with it; asyncio's transports break it here, so that the
        connection, its SSLObject and the SSLContext are freed as soon as the
        program drops them, without the cycle collector (CPython's
        ``test_create_connection_memory_leak`` checks exactly that).
        """
        self._closed = True
        server, self._server = self._server, None
        detach_from_server(server, self)
        self._released = True
        self.tls.set_protocol(cast(Any, _RELEASED))

    # --------------------------------------------------------------- the face

    def get_protocol(self) -> Any:
        if self._released:
            return None  # asyncio's transports answer None after connection_lost
        protocol = self.tls.get_protocol()
        return protocol.protocol if isinstance(protocol, _Introducer) else protocol

    def set_protocol(self, protocol: Any) -> None:
        current = self.tls.get_protocol()
        if isinstance(current, _Introducer):  # before the handshake's end
            current.protocol = protocol
        else:
            self.tls.set_protocol(protocol)

    def is_closing(self) -> bool:
        return self._closed or (self._started and self.tls.is_closing())

    def close(self) -> None:
        """close_notify after what is buffered; during the handshake, abort (as asyncio)."""
        if self._closed:
            return
        self._closed = True
        if self._done:
            self.tls.close()
        else:
            self._force_close(None)

    def abort(self) -> None:
        self._force_close(None)

    def _force_close(self, exc: BaseException | None) -> None:
        self._closed = True
        self.tls.abort(exc)  # aborts the stream too once it is attached
        if not self._started and self.stream is not None:
            self.stream.abort(exc)

    @property
    def _protocol_paused(self) -> bool:
        """Whether the protocol was asked to pause writing (asyncio's sendfile reads it)."""
        return bool(self.tls._app_paused)

    @_protocol_paused.setter
    def _protocol_paused(self, value: bool) -> None:
        pass  # the TLS transport keeps its own

    def _test__append_write_backlog(self, data: bytes) -> None:
        """asyncio's test hook to fill the SSL write backlog: here, a write
        (whatever the plain transport cannot take waits in the TLS transport)."""
        self.tls.write(data)

    @property
    def _ssl_protocol(self) -> Any:
        """What asyncio's tests reach as the SSL transport's protocol: the TLS
        transport's cipher side (the protocol of the plain transport, whose
        ``pause_writing``/``resume_writing`` stop and restart encryption)."""
        return self.tls.cipher_side
