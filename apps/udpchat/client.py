"""udpchat clients: one that talks through a relay server, one that broadcasts on the LAN.

Both read lines from stdin (:class:`LineInput`), send each as a message, print
what arrives on stdout, keep themselves alive with a periodic datagram, and
report the datagrams they can tell were lost (:class:`GapCounter`).
"""

from __future__ import annotations

import errno
import logging
import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from apps.udpchat.wire import MAX_TEXT, Datagram, WireError, clean_text, encode, parse
from protocols import DatagramProtocol
from reactor import Address

__all__ = ["ChatClient", "GapCounter", "LanPeer", "LineInput"]

log = logging.getLogger("apps.udpchat.client")

Output = Callable[[str], object]


class GapCounter:
    """Tracks the sequence numbers from each source and counts the gaps.

    ``strict`` sources (the server) number from 1, so a first datagram with
    seq 5 means 4 were lost; otherwise the first number seen is the start
    (a LAN peer may have been talking before we started listening).
    """

    def __init__(self, *, strict: bool) -> None:
        self.strict = strict
        self.lost = 0
        self._last: dict[Any, int] = {}

    def check(self, source: Any, seq: int) -> int:
        """Note ``seq`` from ``source``; returns how many datagrams were skipped.

        A repeated or late number returns -1. A 1 after higher numbers means
        the source restarted: the count starts over.
        """
        last = self._last.get(source, 0 if self.strict else None)
        if last is None or (seq == 1 and last >= 1):
            self._last[source] = seq
            return 0
        if seq <= last:
            return -1
        self._last[source] = seq
        missed = seq - last - 1
        self.lost += missed
        return missed

    def forget(self, source: Any) -> None:
        self._last.pop(source, None)


def _lost_line(missed: int) -> str:
    return f"* {missed} message{'s' if missed != 1 else ''} lost"


class _Client(DatagramProtocol):
    """What both clients share: keepalive, output, closing."""

    keepalive: float

    def __init__(
        self,
        clock: Any,
        nick: str,
        *,
        keepalive: float,
        output: Output = print,
        on_closed: Callable[[], object] | None = None,
    ) -> None:
        self.clock = clock
        self.nick = nick
        self.keepalive = keepalive
        self.output = output
        self.on_closed = on_closed
        #: Datagrams dropped because they did not parse or were not for us.
        self.dropped = 0
        self._ticker: Any = None

    def _start_keepalive(self, interval: float) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
        self._ticker = self.clock.call_every(interval, self._keepalive)

    def _keepalive(self) -> None:
        raise NotImplementedError

    def _receive(self, data: bytes) -> Datagram | None:
        try:
            return parse(data)
        except WireError as exc:
            self.dropped += 1
            log.debug("dropped a datagram (%s): %s", exc.kind, exc)
            return None

    def say(self, line: str) -> None:
        """Send one typed line as a message (empty lines are skipped)."""
        text = clean_text(line.rstrip("\r\n"))
        if not text.strip():
            return
        size = len(text.encode("utf-8"))
        if size > MAX_TEXT:
            self.output(f"* line too long ({size} bytes; the limit is {MAX_TEXT}): not sent")
            return
        self._send_text(text)

    def _send_text(self, text: str) -> None:
        raise NotImplementedError

    def leave(self) -> None:
        """Say goodbye and close (sends what is queued first)."""
        raise NotImplementedError

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            self._ticker = None
        if self.on_closed is not None:
            self.on_closed()


class ChatClient(_Client):
    """A client of the relay server, on a UDP endpoint connected to it."""

    def __init__(
        self,
        clock: Any,
        nick: str,
        *,
        keepalive: float = 10.0,
        output: Output = print,
        on_closed: Callable[[], object] | None = None,
    ) -> None:
        super().__init__(clock, nick, keepalive=keepalive, output=output, on_closed=on_closed)
        self.gaps = GapCounter(strict=True)
        self.server_closed = False
        self._unreachable = False

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        self.transport.sendto(encode("HELLO", nick=self.nick))
        self._start_keepalive(self.keepalive)

    def _keepalive(self) -> None:
        self.transport.sendto(encode("HELLO", nick=self.nick))

    def _send_text(self, text: str) -> None:
        self.transport.sendto(encode("SAY", nick=self.nick, text=text))

    def leave(self) -> None:
        transport = getattr(self, "transport", None)
        if transport is not None and not transport.is_closing():
            transport.sendto(encode("BYE", nick=self.nick))
            transport.close()

    def datagram_received(self, data: bytes, addr: Address) -> None:
        datagram = self._receive(data)
        if datagram is None:
            return
        if self._unreachable:
            self._unreachable = False
            self.output("* the server answers again")
        kind = datagram.type
        if kind not in ("WELCOME", "MSG", "INFO", "CLOSE") or datagram.seq is None:
            self.dropped += 1
            log.debug("dropped a %s datagram: not for a client", kind)
            return
        missed = self.gaps.check("server", datagram.seq)
        if missed > 0:
            self.output(_lost_line(missed))
        if kind == "MSG":
            self.output(f"<{datagram.nick}> {datagram.text}")
        elif kind == "INFO":
            self.output(f"* {datagram.text}")
        elif kind == "WELCOME":
            self.output(f"* {datagram.text}")
            timeout = datagram.timeout or 0.0
            # Keep alive well within the server's timeout, whatever it is.
            if timeout > 0 and timeout / 3 < self.keepalive:
                self._start_keepalive(timeout / 3)
        else:  # CLOSE
            self.server_closed = True
            self.output(f"* server closed: {datagram.text}")
            self.transport.close()

    def error_received(self, exc: OSError) -> None:
        if exc.errno == errno.ECONNREFUSED:
            if not self._unreachable:
                self._unreachable = True
                self.output("* the server is not answering (connection refused); still trying")
        else:
            log.warning("%s", exc)


@dataclass
class _LanFriend:
    nick: str
    last_heard: float


class LanPeer(_Client):
    """A serverless peer: broadcasts to ``target`` and hears everyone on its port.

    Each peer has a random id (several may share one host and port); datagrams
    carrying our own id are our own broadcasts coming back, and are ignored.
    """

    def __init__(
        self,
        clock: Any,
        nick: str,
        target: tuple[str, int],
        *,
        keepalive: float = 10.0,
        peer_timeout: float = 30.0,
        output: Output = print,
        on_closed: Callable[[], object] | None = None,
        peer_id: str | None = None,
    ) -> None:
        super().__init__(clock, nick, keepalive=keepalive, output=output, on_closed=on_closed)
        self.target = target
        self.peer_timeout = peer_timeout
        self.peer_id = peer_id or secrets.token_hex(4)
        self.friends: dict[str, _LanFriend] = {}
        self.gaps = GapCounter(strict=False)
        self.seq = 0
        self._sweeper: Any = None

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        self._broadcast("JOIN")
        self._start_keepalive(self.keepalive)
        self._sweeper = self.clock.call_every(min(1.0, self.peer_timeout / 4), self.expire)

    def _broadcast(self, kind: str, **fields: Any) -> None:
        data = encode(kind, peer_id=self.peer_id, nick=self.nick, **fields)
        self.transport.sendto(data, self.target)

    def _keepalive(self) -> None:
        self._broadcast("HERE")

    def _send_text(self, text: str) -> None:
        self.seq += 1
        self._broadcast("BMSG", seq=self.seq, text=text)

    def leave(self) -> None:
        transport = getattr(self, "transport", None)
        if transport is not None and not transport.is_closing():
            self._broadcast("GONE")
            transport.close()

    def datagram_received(self, data: bytes, addr: Address) -> None:
        datagram = self._receive(data)
        if datagram is None:
            return
        kind, pid, nick = datagram.type, datagram.peer_id, datagram.nick
        if pid is None or nick is None:
            self.dropped += 1
            log.debug("dropped a %s datagram: not a LAN peer's", kind)
            return
        if pid == self.peer_id:
            return  # our own broadcast, looped back
        if kind == "GONE":
            if self.friends.pop(pid, None) is not None:
                self.gaps.forget(pid)
                self.output(f"* {nick} left")
            return
        friend = self.friends.get(pid)
        if friend is None:
            friend = self.friends[pid] = _LanFriend(nick, self.clock.time())
            self.output(f"* {nick} joined" if kind == "JOIN" else f"* {nick} is here")
        else:
            friend.last_heard = self.clock.time()
            if friend.nick != nick:
                self.output(f"* {friend.nick} is now known as {nick}")
                friend.nick = nick
        if kind == "JOIN":
            # A newcomer: tell it we are here rather than make it wait a keepalive.
            self._broadcast("HERE")
        elif kind == "BMSG" and datagram.seq is not None:
            missed = self.gaps.check(pid, datagram.seq)
            if missed > 0:
                self.output(_lost_line(missed) + f" from {nick}")
            self.output(f"<{nick}> {datagram.text}")

    def expire(self) -> None:
        """Forget the peers not heard from within the timeout."""
        deadline = self.clock.time() - self.peer_timeout
        for pid, friend in list(self.friends.items()):
            if friend.last_heard < deadline:
                del self.friends[pid]
                self.gaps.forget(pid)
                self.output(f"* {friend.nick} timed out")

    def error_received(self, exc: OSError) -> None:
        log.warning("%s", exc)

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        super().connection_lost(exc)


class LineInput:
    """Reads lines from a file descriptor (stdin) on the reactor, without blocking it.

    Pipes and terminals are watched with ``add_reader``. A regular file (stdin
    redirected from one) cannot be watched by epoll, and is always readable
    anyway: it is read a chunk per loop turn instead. ``on_line`` gets each
    line (decoded, undecodable bytes replaced); ``on_eof`` runs once at the end.
    """

    #: A "line" longer than this is handed over as it is (and refused as too long).
    max_line = 64 * 1024

    def __init__(
        self,
        reactor: Any,
        fd: int,
        on_line: Callable[[str], object],
        on_eof: Callable[[], object],
    ) -> None:
        self.reactor = reactor
        self.fd = fd
        self.on_line = on_line
        self.on_eof = on_eof
        self._buf = b""
        self._watched = False
        self._done = False

    def start(self) -> None:
        """Start reading; with no input at all (fd < 0), the end comes at once."""
        if self.fd < 0:
            self._done = True
            self.reactor.call_soon(self.on_eof)
            return
        try:
            self.reactor.add_reader(self.fd, self._readable)
            self._watched = True
        except (OSError, ValueError):
            self.reactor.call_soon(self._poll_file)

    def stop(self) -> None:
        self._done = True
        if self._watched:
            self._watched = False
            self.reactor.remove_reader(self.fd)

    def _poll_file(self) -> None:
        if not self._done:
            self._readable()
            if not self._done:
                self.reactor.call_soon(self._poll_file)

    def _readable(self) -> None:
        try:
            chunk = os.read(self.fd, 65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            log.warning("cannot read the input: %s", exc)
            chunk = b""
        if not chunk:
            if self._buf:
                self._deliver(self._buf)
                self._buf = b""
            self.stop()
            self.on_eof()
            return
        data = self._buf + chunk
        *lines, rest = data.split(b"\n")
        for line in lines:
            if self._done:
                return
            self._deliver(line)
        while len(rest) > self.max_line:
            self._deliver(rest[: self.max_line])
            rest = rest[self.max_line :]
        self._buf = rest

    def _deliver(self, line: bytes) -> None:
        self.on_line(line.decode("utf-8", "replace"))
