"""What the stream and datagram transports share: the life of an endpoint.

An endpoint is opened (it registers with the reactor's resource table),
closed gracefully (``close``: flush, then end) or at once (``abort``, an
error, or the reactor closing), and then ended exactly once: the protocol's
``connection_lost`` is called from the loop, never from inside another
protocol callback, and the socket is unwatched before it is closed (a
closed fd's number is reused at once, and must not inherit our callbacks).
"""

from __future__ import annotations

import logging
import socket
from threading import get_ident
from typing import Any, ClassVar

from reactor.flow import FlowControl
from reactor.interfaces import ReactorPort

__all__ = ["BaseTransport", "as_bytes", "get_ident", "is_buffered_protocol"]

log = logging.getLogger("reactor")


def as_bytes(data: object, what: str) -> bytes:
    """``data`` as immutable bytes (the caller may change a bytearray later)."""
    if type(data) is bytes:
        return data
    if isinstance(data, (bytearray, memoryview)):
        return bytes(data)
    raise TypeError(
        f"{what}() takes a bytes-like object (bytes, bytearray or memoryview), "
        f"not {type(data).__name__}"
    )


def is_buffered_protocol(protocol: object) -> bool:
    """asyncio's BufferedProtocol shape: get_buffer/buffer_updated, no data_received."""
    return hasattr(protocol, "get_buffer") and not hasattr(protocol, "data_received")


class BaseTransport(FlowControl):
    """The endpoint lifecycle; subclasses add reading and writing."""

    #: What stats() counts this as.
    kind: ClassVar[str] = "connection"

    __slots__ = (
        "_closing",
        "_conn_lost",
        "_fd",
        "_peername",
        "_protocol",
        "_reactor",
        "_sock",
        "_sockname",
        "_started",
        "dropped_writes",
    )

    def __init__(
        self, reactor: ReactorPort, sock: socket.socket, protocol: Any, peername: Any
    ) -> None:
        self._reactor = reactor
        self._sock = sock
        self._fd = sock.fileno()
        self._protocol = protocol
        self._peername = peername
        self._sockname: Any = None  # asked for at most once, then kept
        self._closing = False
        self._conn_lost = False
        self._started = False  # connection_made was called: connection_lost is owed
        #: Writes made after close() and dropped.
        self.dropped_writes = 0
        reactor.resources.add(self)

    def __repr__(self) -> str:
        state = "closed" if self._conn_lost else ("closing" if self._closing else "open")
        peer = "" if self._peername is None else f" peer={self._peername!r}"
        return f"<{type(self).__name__} fd={self._fd}{peer} {state}>"

    def is_closing(self) -> bool:
        return self._closing

    def _check_thread(self, what: str) -> None:
        """Refuse a call from a thread other than the running loop's.

        A transport is not thread-safe: from another thread, a write could
        interleave with the loop's own, and a change of what the backend
        watches would go unseen until something else woke the loop (poll and
        select copy their sets when the wait begins). Failing loudly beats
        a silent stall.
        """
        owner = self._reactor.thread_id
        if owner is not None and owner != get_ident():
            raise RuntimeError(
                f"{type(self).__name__}.{what}() called from another thread while the "
                f"reactor runs: transports are not thread-safe; use "
                f"reactor.call_from_thread(transport.{what}, ...) instead"
            )

    def get_protocol(self) -> Any:
        return self._protocol

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        """asyncio's ``"peername"``, ``"sockname"``, ``"socket"``, and ``"reactor"``."""
        if name == "peername":
            value = self._peername
        elif name == "socket":
            value = self._sock
        elif name == "reactor":
            value = self._reactor
        elif name == "sockname":
            if self._sockname is None:
                try:
                    self._sockname = self._sock.getsockname()
                except OSError:  # closed already, and never asked before
                    return default
            value = self._sockname
        else:
            return default
        return default if value is None else value

    # ------------------------------------------------------------------ ending

    def force_close(self) -> None:
        """End now, dropping what is buffered (the reactor is closing)."""
        self._force_close(None)

    def _force_close(self, exc: BaseException | None) -> None:
        raise NotImplementedError

    def _dropped(self, size: int) -> None:
        self.dropped_writes += 1
        if self.dropped_writes == 1:
            log.warning(
                "%r: write of %d bytes after close() was dropped (further drops are "
                "counted in transport.dropped_writes, not logged)",
                self,
                size,
            )

    def _lose(self, exc: BaseException | None) -> None:
        """Schedule connection_lost: from the loop, so never inside another callback."""
        if not self._conn_lost:
            self._conn_lost = True
            self._reactor.call_soon(self._call_connection_lost, exc)

    def _call_connection_lost(self, exc: BaseException | None) -> None:
        try:
            if self._started:
                self._protocol.connection_lost(exc)
        except Exception as error:
            self._report(error, "connection_lost", "")
        finally:
            # Unwatch before closing: a closed fd's number is reused at once.
            reactor = self._reactor
            reactor.unwatch_read(self._fd)
            reactor.unwatch_write(self._fd)
            reactor.resources.discard(self)
            self._release()

    def _release(self) -> None:
        """Close the socket once connection_lost has run (a stream may linger first)."""
        self._sock.close()

    def _report(self, exc: Exception, where: str, consequence: str) -> None:
        """User code raised: log it with its traceback, naming what it was."""
        self._reactor.report_error(
            {
                "message": f"exception in {type(self._protocol).__name__}.{where}(){consequence}",
                "exception": exc,
                "transport": self,
            }
        )
