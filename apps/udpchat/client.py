"""udpchat clients: one that talks through a relay server, one that broadcasts on the LAN.

Both read lines from stdin (:class:`LineInput`), send each as a message, print
what arrives on stdout, keep themselves alive with a periodic datagram, and
report the datagrams they can tell were lost (:class:`GapCounter`).

:class:`ChatClient` joins with the server's handshake: a padded HELLO, the
COOKIE it is answered with echoed in a VERIFY, then WELCOME; lines typed
before the WELCOME wait for it. The keepalive interval is kept between
:data:`KEEPALIVE_MIN` and :data:`KEEPALIVE_MAX` seconds whatever the command
line or the server says, so a server announcing a tiny peer timeout cannot
make the client flood it.
"""

from __future__ import annotations

import errno
import logging
import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from apps.udpchat.wire import (
    MAX_TEXT,
    Datagram,
    WireError,
    clean_text,
    encode,
    encode_hello,
    parse,
)
from protocols import DatagramProtocol
from reactor import Address

__all__ = [
    "KEEPALIVE_MAX",
    "KEEPALIVE_MIN",
    "LEAVE_WAIT",
    "MAX_QUEUED",
    "ChatClient",
    "GapCounter",
    "LanPeer",
    "LineInput",
    "clamp_keepalive",
]

log = logging.getLogger("apps.udpchat.client")

Output = Callable[[str], object]

#: The shortest keepalive interval a client uses, whatever it is told (seconds).
KEEPALIVE_MIN = 1.0
#: The longest one.
KEEPALIVE_MAX = 3600.0
#: How long :meth:`ChatClient.leave` waits for the WELCOME that lets queued lines go.
LEAVE_WAIT = 3.0
#: How many typed lines may wait for the WELCOME; more are refused with a notice.
MAX_QUEUED = 100


def clamp_keepalive(seconds: float) -> float:
    """``seconds`` kept between :data:`KEEPALIVE_MIN` and :data:`KEEPALIVE_MAX` (NaN: the least)."""
    if not seconds >= KEEPALIVE_MIN:
        return KEEPALIVE_MIN
    return min(seconds, KEEPALIVE_MAX)


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
        self.keepalive = clamp_keepalive(keepalive)
        if self.keepalive != keepalive:
            log.warning(
                "a keepalive every %g s is out of bounds: sending one every %g s "
                "(the interval is kept between %g and %g s)",
                keepalive,
                self.keepalive,
                KEEPALIVE_MIN,
                KEEPALIVE_MAX,
            )
        #: The keepalive interval in use (the server may shorten it, within bounds).
        self.interval = self.keepalive
        self.output = output
        self.on_closed = on_closed
        #: Datagrams dropped because they did not parse or were not for us.
        self.dropped = 0
        self._ticker: Any = None

    def _start_keepalive(self, interval: float) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
        self.interval = interval
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
    """A client of the relay server, on a UDP endpoint connected to it.

    :attr:`admitted` turns True at the first WELCOME; :attr:`refused` holds
    the server's reason if it sent REFUSE (the client then closes).
    """

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
        self.admitted = False
        self.refused: str | None = None
        #: The cookie the server gave us: our token once admitted.
        self.cookie: str | None = None
        self._unreachable = False
        self._queue: list[str] = []
        self._leaving: Any = None
        self._retry: Any = None
        self._answered_at = float("-inf")

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        self.transport.sendto(encode_hello(self.nick))
        # Until the WELCOME, try again after 1 s, then 2, 4... up to the keepalive.
        self._retry = self.clock.call_later(KEEPALIVE_MIN, self._try_again, KEEPALIVE_MIN)

    def _try_again(self, delay: float) -> None:
        self._retry = None
        if self.admitted or self.transport.is_closing():
            return
        self._keepalive()
        delay = min(2 * delay, self.keepalive)
        self._retry = self.clock.call_later(delay, self._try_again, delay)

    def _keepalive(self) -> None:
        if self.cookie is None:
            self.transport.sendto(encode_hello(self.nick))  # the HELLO or COOKIE was lost
        else:
            self.transport.sendto(encode("VERIFY", cookie=self.cookie, nick=self.nick))

    def _send_text(self, text: str) -> None:
        if self.admitted and self.cookie is not None:
            self.transport.sendto(encode("SAY", cookie=self.cookie, text=text))
        elif len(self._queue) < MAX_QUEUED:
            self._queue.append(text)
        else:
            self.output(f"* the server has not let us in yet and {MAX_QUEUED} lines wait: not sent")

    def leave(self) -> None:
        """Say goodbye and close; lines still waiting for the WELCOME wait up to LEAVE_WAIT s."""
        transport = getattr(self, "transport", None)
        if transport is None or transport.is_closing():
            return
        if self._queue and not self.admitted and not self._unreachable:
            if self._leaving is None:
                self._leaving = self.clock.call_later(LEAVE_WAIT, self._give_up)
            return
        self._close()

    def _give_up(self) -> None:
        self._leaving = None
        count = len(self._queue)
        self._queue.clear()
        self.output(
            f"* the server did not let us in within {LEAVE_WAIT:g} s: "
            f"{count} line{'s' if count != 1 else ''} not sent"
        )
        self._close()

    def _close(self) -> None:
        if self._leaving is not None:
            self._leaving.cancel()
            self._leaving = None
        if not self.transport.is_closing():
            if self.cookie is not None:
                self.transport.sendto(encode("BYE", cookie=self.cookie))
            self.transport.close()

    def datagram_received(self, data: bytes, addr: Address) -> None:
        datagram = self._receive(data)
        if datagram is None:
            return
        if self._unreachable:
            self._unreachable = False
            self.output("* the server answers again")
        kind = datagram.type
        if kind == "COOKIE":
            self._answer_cookie(datagram)
            return
        if kind == "REFUSE":
            self.refused = datagram.text or "no reason given"
            self.output(f"* the server refused us: {self.refused}")
            self._queue.clear()
            self.transport.close()
            return
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
            self.admitted = True
            if self._retry is not None:
                self._retry.cancel()
                self._retry = None
            self._follow_server_timeout(datagram.timeout)
            queued, self._queue = self._queue, []
            for text in queued:
                self._send_text(text)
            if self._leaving is not None:
                self._close()
        else:  # CLOSE
            self.server_closed = True
            self.output(f"* server closed: {datagram.text}")
            self.transport.close()

    def _answer_cookie(self, datagram: Datagram) -> None:
        # At most one answer a second: a flood of COOKIEs (from a broken or
        # hostile server) must not become a flood of VERIFYs.
        now = self.clock.time()
        if now - self._answered_at < KEEPALIVE_MIN:
            self.dropped += 1
            log.debug("dropped a COOKIE: one was answered less than %g s ago", KEEPALIVE_MIN)
            return
        self._answered_at = now
        self.cookie = datagram.cookie
        self.transport.sendto(encode("VERIFY", cookie=self.cookie, nick=self.nick))

    def _follow_server_timeout(self, timeout: float | None) -> None:
        """Keep alive well within the server's peer timeout, but within bounds.

        Logged (as a warning) only when the interval changes, so a flood of
        WELCOMEs cannot flood the log.
        """
        valid = timeout is not None and timeout > 0
        wanted = (
            min(self.keepalive, timeout / 3) if timeout is not None and valid else self.keepalive
        )
        interval = clamp_keepalive(wanted)
        if interval == self.interval and self._ticker is not None:
            return
        if not valid:
            log.warning(
                "the server announced a peer timeout of %s s, which makes no sense: "
                "ignored, keeping alive every %g s",
                timeout,
                interval,
            )
        elif interval != wanted:
            log.warning(
                "the server announced a peer timeout of %g s, which asks for a keepalive "
                "every %g s: sending one every %g s instead, the least allowed (the server "
                "may forget us; its --peer-timeout should be at least %g s)",
                timeout,
                wanted,
                interval,
                3 * KEEPALIVE_MIN,
            )
        self._start_keepalive(interval)

    def error_received(self, exc: OSError) -> None:
        if exc.errno == errno.ECONNREFUSED:
            if not self._unreachable:
                self._unreachable = True
                self.output("* the server is not answering (connection refused); still trying")
        else:
            log.warning("%s", exc)

    def connection_lost(self, exc: BaseException | None) -> None:
        for timer in (self._leaving, self._retry):
            if timer is not None:
                timer.cancel()
        self._leaving = self._retry = None
        super().connection_lost(exc)


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
        self._answered_join_at = float("-inf")
        self._answer: Any = None  # the HERE put off to answer JOINs, if one is

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
            # A newcomer: tell it we are here rather than make it wait a
            # keepalive; at most once a second (JOINs meanwhile share the
            # next HERE), so a flood of JOINs (anyone on the LAN may send
            # them) does not become a flood of HEREs.
            wait = self._answered_join_at + KEEPALIVE_MIN - self.clock.time()
            if wait <= 0:
                self._answer_joins()
            elif self._answer is None:
                self._answer = self.clock.call_later(wait, self._answer_joins)
        elif kind == "BMSG" and datagram.seq is not None:
            missed = self.gaps.check(pid, datagram.seq)
            if missed > 0:
                self.output(_lost_line(missed) + f" from {nick}")
            self.output(f"<{nick}> {datagram.text}")

    def _answer_joins(self) -> None:
        self._answer = None
        self._answered_join_at = self.clock.time()
        if not self.transport.is_closing():
            self._broadcast("HERE")

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
        for timer in (self._sweeper, self._answer):
            if timer is not None:
                timer.cancel()
        self._sweeper = self._answer = None
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
