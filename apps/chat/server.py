"""The chat server: one room, line-based, UTF-8 (see ``docs/chat-protocol.md``).

:class:`ChatRoom` is the shared state (who is connected, who has which nick)
and the factory that makes one :class:`ChatSession` per connection. The
policies that keep one client from hurting the others live here too:

* lines are capped (an over-long line is answered with an error and skipped)
  and must be valid UTF-8 without terminal control characters or
  bidirectional formatting characters; refused lines are logged (INFO);
* a line must be complete within ``line_timeout`` of its first byte, so a
  client that trickles bytes without ever ending a line ("slowloris") cannot
  hold a connection slot for long;
* one client's lines are handled at most ``max_lines_per_turn`` per turn of
  the loop, reading from it paused meanwhile, so a client that pipelines
  thousands of commands cannot hold up the others;
* each client's output buffer is capped: a client that stops reading is cut
  off once the bytes waiting for it pass ``max_output``, so it cannot grow
  the server's memory or hold up anyone else; a connection closed with output
  still unsent (``/quit`` from a client that does not read) is aborted after
  ``close_timeout``;
* a client quiet for ``ping_interval`` gets ``PING`` and is dropped if
  nothing comes back within ``ping_timeout``; a connection that never sets a
  nick is closed after ``nick_timeout``;
* connections in total and per IP address are capped by
  :class:`protocols.policies.ConnectionLimiter` (see :func:`make_factory`).

Broadcasts are batched: lines for the room are queued and written once per
turn of the loop, joined into one bytes object that every member gets as is.
Under load this turns thousands of small writes per client into a few large
ones, and each line is encoded once whatever the number of members. Replies
to one client (errors, ``/who``, private messages) flush the queue first, so
every client sees lines in the order the server produced them. Leaves are
batched too: a leaver is written its own share of the queue, the rest of the
room gets the notices with the next flush, so a thousand clients leaving at
once cost a write per client, not a write per client per leave.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar, cast

from apps._common import (
    EXIT_ERROR,
    EXIT_USAGE,
    GracefulShutdown,
    die,
    int_at_least,
    positive_seconds,
    print_listening,
    run_workers,
)
from apps._tls import server_tls_context
from apps.chat import wire
from apps.chat.broker import Broker, LocalBroker
from protocols import ConnectionLimiter, LineReceiver
from reactor import (
    Address,
    Clock,
    FactoryArg,
    Handle,
    Reactor,
    TimerHandle,
    WorkerContext,
)

__all__ = [
    "ChatConfig",
    "ChatRoom",
    "ChatSession",
    "add_server_options",
    "make_factory",
    "make_server_reactor",
    "run_server",
]

log = logging.getLogger("apps.chat")

_T = TypeVar("_T")

EOL = b"\r\n"
_PING_LINE = wire.PING.encode() + EOL
_PONG_LINE = wire.PONG.encode() + EOL

HELP = [
    "commands (a line that does not start with / is a message to the room):",
    "/nick NAME       set or change your nick (needed before you can talk)",
    "/who             list who is in the room",
    "/me ACTION       act: '/me waves' shows '*NAME* waves'",
    "/msg NICK TEXT   private message to NICK",
    "/quit [REASON]   leave",
    "/help            this list",
    "//TEXT           a message that starts with '/'",
]


@dataclass(frozen=True, slots=True)
class ChatConfig:
    """The server's limits and timers (the defaults are the command line's)."""

    #: Longest line accepted, in bytes, not counting the line end.
    max_line: int = 2048
    #: Bytes that may wait for one client before it is dropped as not reading.
    max_output: int = 1024 * 1024
    #: Send PING after this many seconds without hearing from a client.
    ping_interval: float = 30.0
    #: Drop a client that sends nothing for this long after a PING.
    ping_timeout: float = 30.0
    #: Close a connection that has not set a nick after this many seconds.
    nick_timeout: float = 60.0
    #: A line must be complete within this many seconds of its first byte.
    line_timeout: float = 10.0
    #: A closed connection whose output is not flushed within this long is aborted.
    close_timeout: float = 10.0
    #: Lines of one client handled per turn of the loop before the rest waits.
    max_lines_per_turn: int = 64
    #: Connections in total and per IP address; 0 means no limit.
    max_clients: int = 1000
    max_per_ip: int = 20


def _line(text: str) -> bytes:
    return text.encode("utf-8") + EOL


class ChatRoom:
    """The room: every connection, the nick table, and the broadcast queue.

    It is the factory too (``build_protocol(addr)``), so ``listen_tcp`` or
    :func:`make_factory` take it directly.

    Every room line goes through ``broker`` (:mod:`apps.chat.broker`) and is
    delivered when the broker gives it back: at once with the default
    :class:`~apps.chat.broker.LocalBroker` (one node), or when it comes back
    from Redis with :class:`~apps.chat.redis_broker.RedisBroker`, so that
    every node delivers the same lines in the same order.
    """

    def __init__(
        self, clock: Clock, config: ChatConfig | None = None, broker: Broker | None = None
    ) -> None:
        self.clock = clock
        self.config = config or ChatConfig()
        #: Every open connection, nick or not, in connection order.
        self.sessions: dict[ChatSession, None] = {}
        #: The members (sessions with a nick), by case-folded nick, in join order.
        self.members: dict[str, ChatSession] = {}
        #: The members that hear the room (a newcomer does once its join came back).
        self.audience: dict[ChatSession, None] = {}
        #: Nicks being claimed from the broker, and by whom (held as if taken).
        self.claims: dict[str, ChatSession] = {}
        self._joining: dict[int, ChatSession] = {}  # joined, not yet admitted, by ref
        self._refs = 0
        self.closing = False
        self.broker: Broker = broker or LocalBroker()
        self.broker.attach(self)
        self._pending: list[bytes] = []
        self._late: dict[ChatSession, int] = {}  # joined mid-batch: where its share starts
        self._flush_handle: Handle | None = None
        self._flushing = False

    # ------------------------------------------------------------ factory

    def build_protocol(self, addr: Address) -> ChatSession:
        """A session for a new connection from ``addr`` (it joins the room with /nick)."""
        self._refs += 1
        return ChatSession(self, addr, self._refs)

    # ---------------------------------------------------------- membership

    def find(self, nick: str) -> ChatSession | None:
        """The member called ``nick`` (case-insensitive), if any."""
        return self.members.get(nick.casefold())

    def holder(self, nick: str) -> ChatSession | None:
        """Who holds ``nick`` here: a member, or a session still claiming it."""
        folded = nick.casefold()
        return self.members.get(folded) or self.claims.get(folded)

    def kick(self, nick: str, reason: str) -> None:
        """Disconnect the member ``nick`` with an error line saying ``reason``."""
        session = self.find(nick)
        if session is not None:
            session.kick(reason)

    def nicks(self) -> list[str]:
        """The members' nicks, sorted case-insensitively."""
        return sorted((s.nick for s in self.members.values() if s.nick), key=str.casefold)

    def join(self, session: ChatSession, nick: str) -> None:
        """``session`` took its first nick: it is a member from now on.

        It hears the room from its own join line on, once the broker gives
        that back (:meth:`admit`).
        """
        self.members[nick.casefold()] = session
        self._joining[session.ref] = session
        self.broker.joined(session.ref, nick, wire.event(f"{nick} joined"))
        log.info("%s joined from %s", nick, session.addr)

    def admit(self, ref: int) -> None:
        """The session numbered ``ref`` hears the room from now on (if it is still here)."""
        session = self._joining.pop(ref, None)
        if session is None:
            return
        if self._pending:
            # What is queued was said before the join: not for the newcomer.
            # (Noting where its share starts, rather than flushing now, keeps
            # a burst of joins from costing a write per member per join.)
            self._late[session] = len(self._pending)
        self.audience[session] = None

    def rename(self, session: ChatSession, old: str, new: str) -> None:
        """A member changed its nick (``session.nick`` is already ``new``)."""
        del self.members[old.casefold()]
        self.members[new.casefold()] = session
        self.broker.renamed(old, new, wire.event(f"{old} is now known as {new}"))

    def leave(self, session: ChatSession, how: str | None) -> None:
        """``session`` is out of the room (it may still be flushing a last reply)."""
        nick = session.nick
        if nick is None or self.members.get(nick.casefold()) is not session:
            return
        # The leaver still gets what was queued before it left: its share of
        # the queue, written to it alone. (Flushing the whole room here would
        # cost a write per member per leave: quadratic when many leave at once.
        # The others get the queue, and the notice, with the next flush.)
        start = self._late.pop(session, 0)
        pending = self._pending
        hears = session in self.audience
        self.audience.pop(session, None)
        if hears and len(pending) > start and not session.transport.is_closing():
            session.deliver(b"".join(pending[start:]))
        del self.members[nick.casefold()]
        self._joining.pop(session.ref, None)
        log.info("%s left%s", nick, f" ({how})" if how else "")
        line = None if self.closing else wire.event(f"{nick} left" + (f" ({how})" if how else ""))
        self.broker.left(nick, line)

    def say(self, line: str) -> None:
        """A member said ``line`` (a message or an action) to the room."""
        self.broker.say(line)

    # ---------------------------------------------------------- broadcasting

    def broadcast(self, text: str) -> None:
        """Queue ``text`` for every member; it is written at the end of this turn."""
        self._pending.append(_line(text))
        if self._flush_handle is None:
            self._flush_handle = self.clock.call_soon(self._flush_soon)

    def _flush_soon(self) -> None:
        self._flush_handle = None
        self.flush()

    def flush(self) -> None:
        """Write the queued broadcast lines to every member: one join, one write each."""
        if self._flushing:
            return  # the loop below picks up what is queued meanwhile
        self._flushing = True
        try:
            pending = self._pending
            while pending:
                batch = pending[:]
                pending.clear()
                data = b"".join(batch)
                late, self._late = self._late, {}
                for session in list(self.audience):
                    start = late.get(session) if late else None
                    session.deliver(data if start is None else b"".join(batch[start:]))
        finally:
            self._flushing = False

    # ----------------------------------------------------------- shutting down

    def transports(self) -> Iterator[Any]:
        """The transports of every open connection and the broker's (for GracefulShutdown)."""
        yield from (s.transport for s in list(self.sessions))
        yield from self.broker.transports()

    def goodbye(self) -> None:
        """Tell every connection, nick or not, that the server is going away (and the bus)."""
        self.flush()
        self.closing = True
        try:
            self.broker.close()
        except Exception:
            log.exception("error while closing the bus")
        data = _line(wire.event("server is going away"))
        for session in list(self.sessions):
            session.stop_timers()
            session.deliver(data)


class ChatSession(LineReceiver):
    """One connection: parses its lines, runs its commands, watches its health."""

    delimiter = b"\n"

    def __init__(self, room: ChatRoom, addr: Address, ref: int = 0) -> None:
        super().__init__()
        self.room = room
        #: This session's number in its room (how the broker names it).
        self.ref = ref
        self.clock = room.clock
        self.config = room.config
        # One more byte than the limit, for the '\r' of a '\r\n' line end.
        self.max_line_length = self.config.max_line + 1
        self.line_timeout = self.config.line_timeout
        self.max_lines_per_turn = self.config.max_lines_per_turn
        self.addr = addr
        self.nick: str | None = None
        self._left = False
        self._heard = False  # something arrived since the last PING
        self._last_heard = 0.0
        self._ping_out = False  # a PING is waiting for an answer
        self._heartbeat: TimerHandle | None = None
        self._nick_timer: TimerHandle | None = None
        self._refused = 0  # lines refused so far (the first few are logged)

    def __repr__(self) -> str:
        return f"<ChatSession {self.nick or '(no nick)'} {self.addr!r}>"

    # --------------------------------------------------------- connection

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        set_close_timeout = getattr(transport, "set_close_timeout", None)
        if set_close_timeout is not None:  # the reactor's transports have it
            set_close_timeout(self.config.close_timeout)
        room = self.room
        room.sessions[self] = None
        now = self.clock.time()
        self._last_heard = now
        self._heartbeat = self.clock.call_at(now + self.config.ping_interval, self._heartbeat_due)
        self._nick_timer = self.clock.call_later(self.config.nick_timeout, self._nick_expired)
        if room.closing:
            self.send(wire.event("server is going away"))
            self.transport.close()
            return
        where = "on this server" if room.broker.spans_nodes else "online"
        self.send(
            wire.info(
                f"welcome to reactor-chat ({len(room.members)} {where}); "
                "choose a nick with /nick NAME, /help lists the commands"
            )
        )

    def data_received(self, data: bytes) -> None:
        # Any traffic proves the client is alive, not only PONG.
        self._heard = True
        self._last_heard = self.clock.time()
        super().data_received(data)

    def eof_received(self) -> bool | None:
        if self.buffer_size:
            # A last line without a line end still counts.
            self.data_received(self.delimiter)
        self._leave(None)
        return None  # close our side too

    def connection_lost(self, exc: BaseException | None) -> None:
        super().connection_lost(exc)
        if isinstance(exc, TimeoutError):  # the close timeout, or the TCP stack gave up
            log.info("%r: connection ended: %s", self, exc)
        self._leave(None if exc is None else "connection lost")
        self.room.sessions.pop(self, None)

    def stop_timers(self) -> None:
        """Cancel the heartbeat and the nick timeout (leaving, or the server stopping)."""
        for timer in (self._heartbeat, self._nick_timer):
            if timer is not None:
                timer.cancel()
        self._heartbeat = self._nick_timer = None

    def _leave(self, how: str | None) -> None:
        """Leave the room (once): stop the timers and tell the others."""
        if self._left:
            return
        self._left = True
        self.stop_timers()
        self.room.leave(self, how)

    def kick(self, reason: str) -> None:
        """Leave with an error line saying ``reason``, and close."""
        if self._left:
            return
        log.info("%r: disconnected: %s", self, reason)
        self._leave("disconnected")
        self.send(wire.error(reason))
        self._end()

    def _ask(self, ask: Callable[[Callable[[_T], None]], None], then: Callable[[_T], None]) -> None:
        """Run ``ask(done)``; ``done(answer)`` runs ``then(answer)``.

        If the answer does not come at once (the broker asked Redis), this
        session's next lines wait for it, so that they are handled in order.
        """
        answered = waiting = False

        def done(answer: _T) -> None:
            nonlocal answered
            answered = True
            then(answer)
            if waiting:
                self.resume_producing()

        ask(done)
        if not answered:
            waiting = True
            self.pause_producing()

    def _end(self) -> None:
        """Close, flushing what is buffered, unless the client is not reading it."""
        if self.transport.get_write_buffer_size():
            self.transport.abort()
        else:
            self.transport.close()

    # ------------------------------------------------------------- output

    def send(self, text: str) -> None:
        """Send one line to this client only (after what is queued for the room)."""
        self.room.flush()
        self.deliver(_line(text))

    def deliver(self, data: bytes) -> None:
        """Write ``data``; drop the client if too much is now waiting for it."""
        transport = self.transport
        if transport.is_closing():
            return
        transport.write(data)
        if transport.get_write_buffer_size() > self.config.max_output:
            self._overflow()

    def _overflow(self) -> None:
        if not self._left:
            size = self.transport.get_write_buffer_size()
            log.info("%r: %d bytes waiting, over the cap: dropping it", self, size)
            self._leave("dropped: not reading")
        # It is not reading: a goodbye would only queue behind the rest.
        self.transport.abort()

    # ------------------------------------------------------------- timers

    def _heartbeat_due(self) -> None:
        self._heartbeat = None
        clock, config = self.clock, self.config
        if self._ping_out:
            self._ping_out = False
            if not self._heard:
                self._leave("ping timeout")
                self.send(wire.error(f"no answer to PING within {config.ping_timeout:g} s"))
                self._end()
                return
        now = clock.time()
        due = self._last_heard + config.ping_interval
        if now < due:
            self._heartbeat = clock.call_at(due, self._heartbeat_due)
            return
        self._heard = False
        self._ping_out = True
        self.room.flush()
        self.deliver(_PING_LINE)
        if not self._left:
            self._heartbeat = clock.call_later(config.ping_timeout, self._heartbeat_due)

    def _nick_expired(self) -> None:
        self._nick_timer = None
        if self.nick is None and not self._left:
            self._leave(None)
            self.send(wire.error(f"no nick set within {self.config.nick_timeout:g} s; closing"))
            self._end()

    # -------------------------------------------------------------- input

    def line_length_exceeded(self, line: bytes) -> None:
        # Keep the connection: LineReceiver skips the rest of this line.
        self._refuse(f"line too long (limit {self.config.max_line} bytes); discarded")

    def line_timeout_exceeded(self) -> None:
        timeout = self.config.line_timeout
        log.info(
            "%r: no complete line within %g s (%d bytes of it received): closing",
            self,
            timeout,
            self.buffer_size,
        )
        self._leave("line timeout")
        self.send(wire.error(f"no complete line within {timeout:g} s; closing"))
        self._end()

    # Refused lines are logged, but only the first few per connection: a
    # client sending nothing but bad lines must not flood the log.
    _LOGGED_REFUSALS: ClassVar[int] = 5

    def _refuse(self, reason: str) -> None:
        """Answer a refused line with an error line, and log why."""
        self._refused += 1
        if self._refused <= self._LOGGED_REFUSALS:
            more = (
                "; further refusals are not logged"
                if self._refused == self._LOGGED_REFUSALS
                else ""
            )
            log.info("%r: line refused: %s%s", self, reason, more)
        self.send(wire.error(reason))

    def line_received(self, line: bytes) -> None:
        if self._left:
            return
        while line.endswith(b"\r"):
            line = line[:-1]
        if len(line) > self.config.max_line:
            self.line_length_exceeded(line)
            return
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError:
            self._refuse("invalid UTF-8; line discarded")
            return
        if wire.has_control(text):
            self._refuse("control characters are not allowed; line discarded")
            return
        bidi = wire.bidi_controls(text)
        if bidi:
            self._refuse(
                f"bidirectional formatting characters ({', '.join(bidi)}) are not allowed; "
                "line discarded"
            )
            return
        if not text or text.isspace():
            return
        if text[0] == "/":
            if text.startswith("//"):
                self._say(text[1:])
            else:
                self._command(text)
        elif text == wire.PONG:
            pass  # data_received already noted that the client is alive
        elif text == wire.PING:
            self.room.flush()
            self.deliver(_PONG_LINE)
        else:
            self._say(text)

    def _say(self, text: str) -> None:
        if self.nick is None:
            self.send(wire.error("set a nick first with /nick NAME"))
            return
        self.room.say(wire.message(self.nick, text))

    def _command(self, text: str) -> None:
        name, _, rest = text[1:].partition(" ")
        handler = self._COMMANDS.get(name.lower())
        if handler is None:
            self.send(wire.error(f"unknown command /{name} (/help lists them)"))
            return
        handler(self, rest.strip())

    def _cmd_nick(self, arg: str) -> None:
        if not arg:
            self.send(wire.error("usage: /nick NAME"))
            return
        problem = wire.nick_problem(arg)
        if problem is not None:
            self.send(wire.error(f"invalid nick {arg!r}: {problem}"))
            return
        room = self.room
        holder = room.holder(arg)
        if holder is not None and holder is not self:
            self.send(wire.error(f"nick {arg} is taken"))
            return
        old = self.nick
        if old == arg:
            self.send(wire.info(f"you are already {arg}"))
            return
        # Held here while the broker asks the other nodes (if any).
        folded = arg.casefold()
        room.claims[folded] = self

        def granted(refusal: str | None) -> None:
            if room.claims.get(folded) is self:
                del room.claims[folded]
            if refusal is not None:
                if not self._left:
                    self.send(wire.error(refusal))
            elif self._left or room.closing:
                room.broker.release(arg)  # gone meanwhile: nobody uses it
            else:
                self._take_nick(old, arg)

        self._ask(lambda done: room.broker.claim(arg, done), granted)

    def _take_nick(self, old: str | None, new: str) -> None:
        self.nick = new
        if old is None:
            if self._nick_timer is not None:
                self._nick_timer.cancel()
                self._nick_timer = None
            self.room.join(self, new)
        else:
            self.room.rename(self, old, new)

    def _cmd_who(self, arg: str) -> None:
        def answer(nicks: list[str], note: str | None) -> None:
            if not self._left:
                where = f" ({note})" if note else ""
                self.send(wire.info(f"{len(nicks)} online{where}: {', '.join(nicks)}"))

        self._ask(self.room.broker.who, lambda result: answer(*result))

    def _cmd_me(self, arg: str) -> None:
        if self.nick is None:
            self.send(wire.error("set a nick first with /nick NAME"))
        elif not arg:
            self.send(wire.error("usage: /me ACTION"))
        else:
            self.room.say(wire.action(self.nick, arg))

    def _cmd_msg(self, arg: str) -> None:
        target_nick, _, body = arg.partition(" ")
        body = body.lstrip(" ")
        if self.nick is None:
            self.send(wire.error("set a nick first with /nick NAME"))
        elif not target_nick or not body:
            self.send(wire.error("usage: /msg NICK TEXT"))
        else:

            def sent(problem: str | None) -> None:
                if problem is not None and not self._left:
                    self.send(wire.error(problem))

            nick = self.nick
            self._ask(lambda done: self.room.broker.private(nick, target_nick, body, done), sent)

    def _cmd_quit(self, arg: str) -> None:
        self._leave(f"quit: {arg}" if arg else "quit")
        self.send(wire.info("bye"))
        self.transport.close()

    def _cmd_help(self, arg: str) -> None:
        for text in HELP:
            self.send(wire.info(text))

    _COMMANDS: ClassVar[dict[str, Callable[[ChatSession, str], None]]] = {
        "nick": _cmd_nick,
        "who": _cmd_who,
        "me": _cmd_me,
        "msg": _cmd_msg,
        "quit": _cmd_quit,
        "help": _cmd_help,
    }


# ------------------------------------------------------------------ the app

FULL_MESSAGE = _line(wire.error("server full (too many connections); try again later"))
PER_IP_MESSAGE = _line(wire.error("too many connections from your address"))


def make_factory(room: ChatRoom) -> ConnectionLimiter:
    """The room behind the connection limits (the rejected get an error line, then a close)."""
    config = room.config
    return ConnectionLimiter(
        room,
        max_total=config.max_clients or None,
        max_per_ip=config.max_per_ip or None,
        message=FULL_MESSAGE,
        per_ip_message=PER_IP_MESSAGE,
    )


def add_server_options(parser: argparse.ArgumentParser) -> None:
    """The chat server's own options (limits and timers), with safe defaults."""
    d = ChatConfig()
    group = parser.add_argument_group("limits and timers")
    group.add_argument(
        "--max-line",
        type=int_at_least(16),
        default=d.max_line,
        metavar="BYTES",
        help="longest line accepted, without its line end; a longer one gets an error "
        f"line and is discarded, the connection stays (default: {d.max_line})",
    )
    group.add_argument(
        "--max-output",
        type=int_at_least(1024),
        default=d.max_output,
        metavar="BYTES",
        help="bytes that may wait to be sent to one client; a client that stops reading "
        f"is disconnected once this is passed (default: {d.max_output})",
    )
    group.add_argument(
        "--max-clients",
        type=int_at_least(0),
        default=d.max_clients,
        metavar="N",
        help="connections at once in total; over it a newcomer gets an error line and "
        f"is closed; 0 for no limit (default: {d.max_clients})",
    )
    group.add_argument(
        "--max-per-ip",
        type=int_at_least(0),
        default=d.max_per_ip,
        metavar="N",
        help="connections at once from one IP address, likewise; 0 for no limit "
        f"(default: {d.max_per_ip})",
    )
    group.add_argument(
        "--ping-interval",
        type=positive_seconds,
        default=d.ping_interval,
        metavar="SECONDS",
        help="send PING to a client quiet for this long (default: %(default)g)",
    )
    group.add_argument(
        "--ping-timeout",
        type=positive_seconds,
        default=d.ping_timeout,
        metavar="SECONDS",
        help="disconnect a client that sends nothing (not even PONG) this long after "
        "a PING (default: %(default)g)",
    )
    group.add_argument(
        "--nick-timeout",
        type=positive_seconds,
        default=d.nick_timeout,
        metavar="SECONDS",
        help="disconnect a connection that has not set a nick after this long "
        "(default: %(default)g)",
    )
    group.add_argument(
        "--line-timeout",
        type=positive_seconds,
        default=d.line_timeout,
        metavar="SECONDS",
        help="a line must be complete (line end included) within this long of its first "
        "byte; a client that trickles a line slower than that gets an error line and is "
        "disconnected, so it cannot hold a connection slot (default: %(default)g)",
    )
    group.add_argument(
        "--close-timeout",
        type=positive_seconds,
        default=d.close_timeout,
        metavar="SECONDS",
        help="a connection being closed (after /quit, an error or a timeout) whose pending "
        "output the client does not read within this long is cut off (default: %(default)g)",
    )

    group = parser.add_argument_group("several servers (docs/scaling.md)")
    group.add_argument(
        "--redis",
        metavar="URL",
        default=None,
        help="join the chat servers that share this Redis, e.g. redis://127.0.0.1:6379/0: "
        "their users are in one room, nicks are unique across them (needs the redis extra: "
        "pip install 'pyreactor[redis]')",
    )
    group.add_argument(
        "--redis-ttl",
        type=_redis_ttl,
        default=15.0,
        metavar="SECONDS",
        help="with --redis: how long this server's nicks outlive it if it dies without "
        "saying so; the others announce its users' departures by then, give or take a "
        "third (default: %(default)g)",
    )
    group.add_argument(
        "--workers",
        type=int_at_least(0),
        default=1,
        metavar="N",
        help="serve from N processes sharing the port (0: one per CPU); more than one "
        "needs --redis, or each process would be a room of its own (default: 1)",
    )


def _redis_ttl(text: str) -> float:
    """``--redis-ttl``: seconds, from 0.3 (three heartbeats in it) to a day."""
    value = positive_seconds(text)
    if not 0.3 <= value <= 86400:
        raise argparse.ArgumentTypeError(f"must be 0.3 to 86400 seconds, got {text}")
    return value


def config_from_args(args: argparse.Namespace) -> ChatConfig:
    return ChatConfig(
        max_line=args.max_line,
        max_output=args.max_output,
        ping_interval=args.ping_interval,
        ping_timeout=args.ping_timeout,
        nick_timeout=args.nick_timeout,
        line_timeout=args.line_timeout,
        close_timeout=args.close_timeout,
        max_clients=args.max_clients,
        max_per_ip=args.max_per_ip,
    )


def make_server_reactor(prog: str, args: argparse.Namespace, config: ChatConfig) -> Reactor:
    """The reactor for the server: ``--backend``, ``--trace`` and ``--close-timeout``.

    A bad value is a usage error: ``prog: reason`` and exit 2.
    """
    try:
        return Reactor(
            backend=args.backend,
            trace=True if getattr(args, "trace", False) else None,
            close_timeout=config.close_timeout,
        )
    except ValueError as exc:
        die(prog, str(exc), EXIT_USAGE)


def _redis_address(prog: str, args: argparse.Namespace) -> Any:
    """The parsed ``--redis`` URL (None without it); exits with a clear error if unusable.

    A bad URL is a usage error (exit 2); a missing hiredis is an error
    (exit 1) that says how to install it.
    """
    url: str | None = getattr(args, "redis", None)
    if url is None:
        return None
    from apps.chat.resp import RedisAddress, load_hiredis

    try:
        address = RedisAddress.parse(url)
    except ValueError as exc:
        die(prog, str(exc), EXIT_USAGE)
    try:
        load_hiredis()
    except RuntimeError as exc:
        die(prog, str(exc), EXIT_ERROR)
    return address


def make_broker(prog: str, args: argparse.Namespace, reactor: Reactor) -> Broker:
    """The bus the options ask for: Redis with ``--redis URL``, else this node alone."""
    address = _redis_address(prog, args)
    if address is None:
        return LocalBroker()
    from apps.chat.redis_broker import RedisBroker

    def report(up: bool) -> None:
        # On stdout, like the listening line: what an operator (or a test) waits for.
        # One write per line (end=""), so the lines of several workers never interleave.
        line = f"chat server {'linked to' if up else 'lost the link to'} {address}\n"
        print(line, end="", flush=True)

    return RedisBroker(reactor, address, ttl=args.redis_ttl, on_link=report)


def check_workers(prog: str, args: argparse.Namespace) -> None:
    """Refuse ``--workers`` other than 1 without ``--redis``, saying why (exit 2)."""
    workers: int = getattr(args, "workers", 1)
    if workers != 1 and getattr(args, "redis", None) is None:
        many = "processes (one per CPU)" if workers == 0 else f"{workers} processes"
        die(
            prog,
            f"--workers {workers} needs --redis URL: without a bus between them, each of the "
            f"{many} would be a chat room of its own, and users would see only those who "
            "landed on the same process. Start Redis and add --redis "
            "redis://127.0.0.1:6379/0 (docs/scaling.md), or run one worker.",
            EXIT_USAGE,
        )


def _serve(
    prog: str,
    args: argparse.Namespace,
    config: ChatConfig,
    listen: Callable[[Reactor, FactoryArg], Any],
) -> None:
    """Run one chat node: listen with ``listen(reactor, factory)``, serve until told to stop."""
    with make_server_reactor(prog, args, config) as reactor:
        broker = make_broker(prog, args, reactor)
        room = ChatRoom(reactor, config, broker)
        # The cast: ConnectionLimiter.build_protocol may return None (a refusal,
        # which the listener handles), but FactoryArg does not say so.
        factory = cast(FactoryArg, make_factory(room))
        listener = listen(reactor, factory)
        if broker.description:
            print(f"chat server {broker.description}\n", end="", flush=True)
        broker.start()
        GracefulShutdown(
            reactor, listeners=[listener], transports=room.transports, goodbye=room.goodbye
        )
        reactor.run()
        listener.close()


def run_server(prog: str, args: argparse.Namespace) -> int:
    """Listen, print where, serve until SIGINT/SIGTERM, then say goodbye and exit 0.

    With ``--workers N`` (N other than 1), N processes serve the port under
    :func:`reactor.serve_workers`' supervisor, each a chat node of its own
    linked to the others through ``--redis``.
    """
    config = config_from_args(args)
    check_workers(prog, args)
    context = server_tls_context(prog, args)
    what = "chat server" if context is None else "chat server (TLS)"
    _redis_address(prog, args)  # a bad URL stops us here, before any fork
    if args.workers != 1:

        def worker_main(worker: WorkerContext) -> None:
            _serve(
                prog,
                args,
                config,
                lambda reactor, factory: worker.listen(reactor, factory, ssl=context),
            )

        # GracefulShutdown's deadline, and a second for the worker to exit.
        return run_workers(prog, what, args, worker_main, drain_timeout=3.0)

    def listen(reactor: Reactor, factory: FactoryArg) -> Any:
        try:
            listener = reactor.listen_tcp(args.port, factory, host=args.host, ssl=context)
        except OSError as exc:
            die(prog, exc.strerror or str(exc), EXIT_ERROR)
        print_listening(what, listener.address, reactor)
        return listener

    _serve(prog, args, config, listen)
    return 0
