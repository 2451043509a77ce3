"""A Redis connection as a reactor Protocol, on hiredis's ``Reader`` and ``pack_command``.

The wire format is hiredis's business: this module only matches replies to
the commands that asked for them (Redis answers in order) and hands a
subscribed connection's pushes to a callback. Nothing here ever pauses
reading: Redis disconnects a subscriber whose output buffer stays over its
pub/sub limit, so the bus connection reads as fast as Redis sends.

hiredis is an optional dependency (the ``redis`` extra); :func:`load_hiredis`
says how to install it when it is missing.
"""

from __future__ import annotations

import logging
import types
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

from protocols import Protocol

__all__ = ["RedisAddress", "RedisConnection", "Reply", "ReplyCallback", "load_hiredis"]

log = logging.getLogger("apps.chat.redis")

#: A reply: bytes, int, None, a list of replies, or an exception (an error
#: reply from Redis, or ConnectionError if the connection ended first).
Reply = Any
ReplyCallback = Callable[[Reply], None]

INSTALL_HINT = "pip install 'pyreactor[redis]'"


def load_hiredis() -> types.ModuleType:
    """The hiredis module, or RuntimeError naming the extra that installs it."""
    try:
        import hiredis
    except ImportError as exc:
        raise RuntimeError(
            f"--redis needs the hiredis package, which is not installed ({exc}); "
            f"install it with: {INSTALL_HINT}"
        ) from None
    return hiredis


@dataclass(frozen=True, slots=True)
class RedisAddress:
    """Where Redis is and how to log in: parsed from ``redis://[[user]:password@]host[:port][/db]``."""

    host: str
    port: int = 6379
    db: int = 0
    username: str | None = None
    password: str | None = None

    @classmethod
    def parse(cls, url: str) -> RedisAddress:
        """Parse a Redis URL; ValueError says what is wrong with it."""
        parts = urlsplit(url)
        if parts.scheme != "redis":
            raise ValueError(
                f"not a Redis URL: {url!r} (expected redis://HOST[:PORT][/DB], "
                "for example redis://127.0.0.1:6379/0)"
            )
        try:
            port = parts.port or 6379
        except ValueError:
            raise ValueError(f"bad port in the Redis URL {url!r}") from None
        path = parts.path.strip("/")
        if path and not path.isdigit():
            raise ValueError(
                f"the database in the Redis URL {url!r} must be a number, not {path!r}"
            )
        if not parts.hostname:
            raise ValueError(f"no host in the Redis URL {url!r}")
        return cls(
            host=parts.hostname,
            port=port,
            db=int(path or 0),
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password is not None else None,
        )

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"redis://{host}:{self.port}/{self.db}"


class RedisConnection(Protocol):
    """One connection to Redis: commands with callbacks, or (once subscribed) pushes.

    ``command(*args, callback=cb)`` sends a command; ``cb(reply)`` is called
    with its reply, or with a ConnectionError if the connection ends first.
    After :meth:`subscribe`, every message Redis pushes goes to ``on_push``.
    ``on_lost(exc)`` is called once when the connection ends.

    The output buffer is never allowed to grow past ``max_output`` bytes:
    if Redis stops reading that long, the connection is aborted (the owner
    reconnects) rather than growing without bound.
    """

    def __init__(
        self,
        on_lost: Callable[[BaseException | None], None],
        on_push: Callable[[list[Any]], None] | None = None,
        max_output: int = 64 * 1024 * 1024,
    ) -> None:
        hiredis = load_hiredis()
        self._pack = hiredis.pack_command
        self._reader = hiredis.Reader()
        self._protocol_error: type[Exception] = hiredis.ProtocolError
        self._callbacks: deque[ReplyCallback] = deque()
        self._on_lost = on_lost
        self._on_push = on_push
        self._subscribed = False
        self.max_output = max_output
        self.connected = False
        self.closed = False

    # ------------------------------------------------------------ connection

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        self.connected = True

    def connection_lost(self, exc: BaseException | None) -> None:
        self.connected = False
        self.closed = True
        callbacks, self._callbacks = self._callbacks, deque()
        lost = ConnectionError(f"the connection to Redis ended ({exc or 'closed'})")
        for callback in callbacks:
            self._call(callback, lost)
        self._on_lost(exc)

    def close(self) -> None:
        """Close once what was sent is flushed."""
        if self.connected and not self.transport.is_closing():
            self.transport.close()

    def abort(self, reason: BaseException) -> None:
        """Drop the connection now (the owner hears it through ``on_lost``)."""
        if self.connected and not self.transport.is_closing():
            log.warning("dropping the connection to Redis: %s", reason)
            self.transport.abort(reason)

    # -------------------------------------------------------------- commands

    def command(
        self, *args: str | bytes | int | float, callback: ReplyCallback | None = None
    ) -> None:
        """Send one command; ``callback(reply)`` gets its reply (none: the reply is dropped)."""
        if not self.connected or self.transport.is_closing():
            if callback is not None:
                self._call(callback, ConnectionError("not connected to Redis"))
            return
        self._callbacks.append(callback or _ignore)
        transport = self.transport
        transport.write(self._pack(args))
        if transport.get_write_buffer_size() > self.max_output:
            self.abort(
                ConnectionError(
                    f"Redis is not reading: over {self.max_output} bytes wait to be sent to it"
                )
            )

    def subscribe(self, *channels: str | bytes) -> None:
        """Subscribe to ``channels``; from now on every reply is a push (to ``on_push``)."""
        self._subscribed = True
        if self.connected and not self.transport.is_closing():
            self.transport.write(self._pack(("SUBSCRIBE", *channels)))

    @property
    def waiting(self) -> int:
        """Commands sent whose reply has not come yet."""
        return len(self._callbacks)

    # ---------------------------------------------------------------- replies

    def data_received(self, data: bytes) -> None:
        reader = self._reader
        reader.feed(data)
        while not self.closed:
            try:
                reply = reader.gets()
            except self._protocol_error as exc:
                self.abort(ConnectionError(f"Redis sent something unreadable: {exc}"))
                return
            if reply is False:  # no complete reply yet
                return
            if self._subscribed and self._on_push is not None and not self._callbacks:
                # Subscribed: what is not the answer to an earlier command is a push.
                self._call(self._on_push, reply)
                continue
            if self._callbacks:
                self._call(self._callbacks.popleft(), reply)
            else:
                self.abort(ConnectionError(f"Redis sent a reply nobody asked for: {reply!r}"))
                return

    @staticmethod
    def _call(callback: Callable[[Any], None], reply: Reply) -> None:
        # A bug in one callback must not desynchronise the replies of the rest.
        try:
            callback(reply)
        except Exception:
            log.exception("error handling a reply from Redis")


def _ignore(reply: Reply) -> None:
    if isinstance(reply, Exception) and not isinstance(reply, ConnectionError):
        log.warning("Redis refused a command: %s", reply)
