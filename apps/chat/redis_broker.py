"""The chat's bus between nodes on Redis pub/sub: :class:`RedisBroker`.

Each node keeps two connections to Redis: one for commands, one subscribed
to the room's channel and to its own node channel. Every room line (a
message, an action, a join, a leave, a nick change) is published to the room
channel and delivered, on every node and on the sender's too, when it comes
back, so every node shows the room in the one order Redis published it in;
one connection publishes a node's lines, so each sender's lines keep their
order. Private messages go to the target node's channel, the receipt to the
sender's (from one script, so they too keep the sender's order).

Nicks live in Redis (``SET`` only if absent or already this node's, with a
time to live the node's heartbeat renews), so they are unique across the
nodes; a node that dies stops renewing, and the first node whose heartbeat
finds it expired announces its users' departures (see
:mod:`apps.chat.redis_scripts`).

Redis going away does not stop the chat: the node tells its users, delivers
locally meanwhile, reconnects with exponential back-off and jitter (capped
near 5 s), subscribes again, registers its nicks again (a nick another node
took meanwhile is its user's to give up) and tells its users the link is
back. Pub/sub is at-most-once: what is published while a node is
disconnected does not reach it, and the users were told so.
"""

from __future__ import annotations

import json
import logging
import os
import random
from collections.abc import Callable, Iterable
from typing import Any

from apps.chat import redis_scripts as scripts
from apps.chat import wire
from apps.chat.broker import Broker, deliver_private, deliver_receipt
from apps.chat.resp import RedisAddress, RedisConnection, Reply
from reactor import Connector, PeriodicCall, Reactor, TimerHandle

__all__ = ["LINK_BACK", "LINK_DOWN", "RedisBroker"]

log = logging.getLogger("apps.chat.redis")

#: What a node's users are told when its link to Redis goes down, and comes back.
LINK_DOWN = (
    "the link to the other chat servers is down: until it is back, what is said here "
    "reaches only the users of this server, and what was sent just before may be lost"
)
LINK_BACK = "the link to the other chat servers is back"
#: The note /who adds while the link is down.
WHO_LOCAL = "this server only: the link to the other servers is down"

_ROOM_LINE = b"m"  # a line for the room
_JOIN = b"j"  # a join: "jNODE REF LINE", the newcomer hears the room from it on


class RedisBroker(Broker):
    """The room's lines through Redis pub/sub; nicks and presence in Redis.

    ``on_link(up)`` is called each time the link comes up or goes down.
    ``ttl`` is how long a node's nicks and presence outlive its last
    heartbeat (sent every ``ttl / 3`` seconds): a node that dies has its users'
    departures announced by the others between ``ttl`` and ``4/3 ttl`` later.
    """

    spans_nodes = True

    def __init__(
        self,
        reactor: Reactor,
        address: RedisAddress,
        *,
        ttl: float = 15.0,
        connect_timeout: float = 5.0,
        backoff_base: float = 0.1,
        backoff_cap: float = 5.0,
        node: str | None = None,
        rng: random.Random | None = None,
        on_link: Callable[[bool], object] | None = None,
    ) -> None:
        if not 0.3 <= ttl <= 86400:
            raise ValueError(f"ttl must be 0.3 to 86400 seconds, got {ttl!r}")
        self.reactor = reactor
        self.address = address
        self.ttl = ttl
        self.connect_timeout = connect_timeout
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        #: This node's name in Redis: random, so a restarted node is a new node.
        self.node = node or os.urandom(6).hex()
        self._node_bytes = self.node.encode()
        self.description = f"linking to {address} as node {self.node}"
        self._rng = rng or random.Random()
        self._on_link = on_link
        prefix = f"reactor-chat:{address.db}:"
        self.prefix = prefix
        self.room_channel = (prefix + "room").encode()
        self.node_channel = (prefix + "node:" + self.node).encode()
        self._nodes_key = prefix + "nodes"
        self._members_key = prefix + "members:" + self.node
        before, _, after = wire.event("\x00 left (lost with its server)").partition("\x00")
        self._lost_line = ("m" + before, after)
        before, _, after = wire.event("\x00 left (server shut down)").partition("\x00")
        self._shutdown_line = ("m" + before, after)
        #: True while both connections are up, subscribed and registered.
        self.up = False
        self.closed = False
        #: Times the link came up (1 after the first connection).
        self.connections = 0
        self.failures = 0  # consecutive failed attempts: the back-off's exponent
        self._told_down = False
        self._generation = 0
        self._cmd: RedisConnection | None = None
        self._sub: RedisConnection | None = None
        self._ready = 0  # connections of this generation that are connected
        self._subscribed = 0
        self._registered = False  # the first heartbeat of this connection came back
        self._retry: TimerHandle | None = None
        self._setup_timer: TimerHandle | None = None
        self._heartbeat: PeriodicCall | None = None
        self._connectors: list[Connector] = []  # this generation's connection attempts

    def __repr__(self) -> str:
        state = "up" if self.up else "closed" if self.closed else "down"
        return f"<RedisBroker node {self.node} {self.address} {state}>"

    # ------------------------------------------------------------ the link

    def start(self) -> None:
        self._heartbeat = self.reactor.call_every(self.ttl / 3, self._beat)
        self._connect()

    def transports(self) -> Iterable[Any]:
        for conn in (self._cmd, self._sub):
            if conn is not None and conn.connected:
                yield conn.transport

    def _connect(self) -> None:
        self._retry = None
        if self.closed:
            return
        self._generation += 1
        generation = self._generation
        self._ready = self._subscribed = 0
        self._registered = False
        self._connectors = []
        self._cmd = RedisConnection(lambda exc: self._lost(generation, exc, "commands"))
        self._sub = RedisConnection(
            lambda exc: self._lost(generation, exc, "subscription"), on_push=self._push
        )
        self._dial(self._cmd, generation)
        self._dial(self._sub, generation)
        self._setup_timer = self.reactor.call_later(
            self.connect_timeout, self._setup_timed_out, generation
        )

    def _dial(self, conn: RedisConnection, generation: int) -> None:
        connector = self.reactor.connect_tcp(
            self.address.host,
            self.address.port,
            lambda: conn,
            timeout=self.connect_timeout,
            on_connect=lambda _protocol: self._connected(generation, conn),
            on_failure=lambda exc: self._lost(generation, exc, "connect"),
        )
        self._connectors.append(connector)

    def _connected(self, generation: int, attempt: RedisConnection) -> None:
        if generation != self._generation:
            attempt.close()  # its twin failed meanwhile: this attempt is over
            return
        self._ready += 1
        if self._ready < 2:
            return
        cmd, sub = self._cmd, self._sub
        assert cmd is not None and sub is not None
        for conn in (cmd, sub):
            if self.address.password is not None:
                login = [self.address.username] if self.address.username else []
                conn.command("AUTH", *login, self.address.password, callback=self._setup_reply)
        if self.address.db:
            cmd.command("SELECT", self.address.db, callback=self._setup_reply)
        sub.subscribe(self.room_channel, self.node_channel)

    def _setup_reply(self, reply: Reply) -> None:
        if isinstance(reply, Exception) and not isinstance(reply, ConnectionError):
            self._fail(f"Redis refused the connection's set-up: {reply}")

    def _setup_timed_out(self, generation: int) -> None:
        if generation == self._generation and not self.up:
            self._fail(f"no answer from Redis within {self.connect_timeout:g} s")

    def _fail(self, reason: str) -> None:
        """Give up on this connection: drop both, reconnect after the back-off."""
        for conn in (self._cmd, self._sub):
            if conn is not None:
                conn.abort(ConnectionError(reason))
        self._lost(self._generation, ConnectionError(reason), "set-up")

    def _lost(self, generation: int, exc: BaseException | None, which: str) -> None:
        if generation != self._generation:
            return  # a connection already given up
        self._generation += 1  # whatever else this generation reports is old news
        if self._setup_timer is not None:
            self._setup_timer.cancel()
            self._setup_timer = None
        for connector in self._connectors:
            connector.cancel()  # an attempt still under way (reported, and ignored, later)
        for conn in (self._cmd, self._sub):
            if conn is not None and conn.connected:
                conn.abort(ConnectionError("its twin connection to Redis was lost"))
        self._cmd = self._sub = None
        if self.closed:
            return
        was_up, self.up = self.up, False
        if was_up:
            log.warning("lost the link to Redis at %s (%s): reconnecting", self.address, which)
            if self._on_link is not None:
                self._on_link(False)
        else:
            # Loud the first time; then quieter, as the attempts go on every few seconds.
            level = logging.WARNING if self.failures == 0 else logging.INFO
            log.log(
                level,
                "cannot reach Redis at %s (%s: %s); attempt %d",
                self.address,
                which,
                exc,
                self.failures + 1,
            )
        if not self._told_down:
            # Members hear it now, newcomers when they join (see joined()).
            self._told_down = True
            self.room.broadcast(wire.event(LINK_DOWN))
        delay = self.backoff()
        self.failures += 1
        self._retry = self.reactor.call_later(delay, self._connect)

    def backoff(self) -> float:
        """Seconds before the next attempt: exponential in the failures, jittered, capped."""
        exp = min(self.backoff_base * 2.0**self.failures, self.backoff_cap)
        # "Equal jitter": half the delay fixed, half random, so nodes that lost
        # Redis together do not all come back in the same instant.
        return min(exp / 2 + self._rng.uniform(0, exp / 2), self.backoff_cap)

    def _push(self, reply: Any) -> None:
        """What the subscription connection receives: messages and subscribe confirmations."""
        if isinstance(reply, Exception):  # say, NOAUTH: a password is needed
            self._fail(f"Redis refused the subscription: {reply}")
            return
        kind = reply[0]
        if kind == b"message":
            channel, payload = reply[1], reply[2]
            if channel == self.room_channel:
                self._room_message(payload)
            elif channel == self.node_channel:
                self._node_message(payload)
        elif kind == b"subscribe":
            self._subscribed = reply[2]
            if self._subscribed == 2:
                self._register()

    def _register(self) -> None:
        """Subscribed: renew presence and nicks at once; the link is up when that answers."""
        self._send_heartbeat()

    # ------------------------------------------------------------ heartbeat

    def _beat(self) -> None:
        if self.up:
            self._send_heartbeat()
            cmd = self._cmd
            if cmd is not None:
                before, after = self._lost_line
                cmd.command(
                    "EVAL",
                    scripts.SWEEP,
                    2,
                    self._nodes_key,
                    self.room_channel,
                    self.prefix,
                    before,
                    after,
                    callback=self._swept,
                )

    def _send_heartbeat(self) -> None:
        cmd = self._cmd
        if cmd is None:
            return
        generation = self._generation
        cmd.command(
            "EVAL",
            scripts.HEARTBEAT,
            2,
            self._nodes_key,
            self._members_key,
            self.node,
            int(self.ttl * 1000),
            self.prefix,
            *self.room.nicks(),
            callback=lambda reply: self._heartbeat_reply(generation, reply),
        )

    def _heartbeat_reply(self, generation: int, reply: Reply) -> None:
        if generation != self._generation or isinstance(reply, ConnectionError):
            return
        if isinstance(reply, Exception):
            self._fail(f"Redis refused the heartbeat: {reply}")
            return
        new, lost = reply
        for raw in lost:
            nick = raw.decode()
            log.warning("nick %s was taken on another server while this one was away", nick)
            self.room.kick(
                nick,
                f"your nick {nick} was taken on another server while this one was cut off; "
                "reconnect and choose another",
            )
        linked_before = self.connections > 0
        if not self._registered:
            self._registered = True
            self._link_up()
        if new and linked_before:
            # This node was missing from the presence set: declared dead by
            # the others (cut off, or stalled, past the ttl: they announced its
            # users' departures) or Redis restarted empty. Either way the
            # others may not know its users: announce them again.
            log.warning("this server was missing from Redis's presence set: announcing its users")
            for nick in self.room.nicks():
                self._publish(_ROOM_LINE, wire.event(f"{nick} joined"))

    def _link_up(self) -> None:
        if self._setup_timer is not None:
            self._setup_timer.cancel()
            self._setup_timer = None
        self.up = True
        self.failures = 0
        self.connections += 1
        log.info("linked to Redis at %s as node %s", self.address, self.node)
        if self._on_link is not None:
            self._on_link(True)
        if self._told_down:
            self._told_down = False
            self.room.broadcast(wire.event(LINK_BACK))

    def _swept(self, reply: Reply) -> None:
        if isinstance(reply, int) and reply:
            log.info("announced the departure of %d users of dead servers", reply)

    # ------------------------------------------------------------ receiving

    def _room_message(self, payload: bytes) -> None:
        kind = payload[:1]
        room = self.room
        if kind == _ROOM_LINE:
            room.broadcast(_text(payload[1:]))
        elif kind == _JOIN:
            node, ref, line = payload[1:].split(b" ", 2)
            if node == self._node_bytes:
                room.admit(int(ref))
            room.broadcast(_text(line))
        else:
            log.warning("ignored a room message of unknown kind from Redis: %r", payload[:40])

    def _node_message(self, payload: bytes) -> None:
        try:
            message = json.loads(payload)
            kind, sender, target, text = (
                message["k"],
                message["from"],
                message["to"],
                wire.sanitize(message["text"]),
            )
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("ignored a malformed private message from Redis (%s): %r", exc, payload)
            return
        if kind == "pm":
            to = self.room.find(target)
            if to is not None:
                to.send(wire.private_in(sender, text))
        elif kind == "sent":
            deliver_receipt(self.room, sender, target, text)

    # -------------------------------------------------------------- sending

    def _publish(self, kind: bytes, line: str) -> bool:
        """Publish a room line; False if the link is down (the caller delivers it here)."""
        cmd = self._cmd
        if not self.up or cmd is None:
            return False
        cmd.command("PUBLISH", self.room_channel, kind + line.encode())
        return True

    def _nick_key(self, nick: str) -> str:
        return self.prefix + "nick:" + nick.casefold()

    def claim(self, nick: str, done: Callable[[str | None], None]) -> None:
        cmd = self._cmd
        if not self.up or cmd is None:
            done(None)  # this node alone for now: registered (or refused) when the link is back
            return

        def answer(reply: Reply) -> None:
            if reply == 1 or isinstance(reply, ConnectionError):
                done(None)  # granted, or the link went down: as above
            elif reply == 0:
                done(f"nick {nick} is taken")
            else:
                log.warning("Redis could not claim a nick: %s", reply)
                done(f"could not claim nick {nick} just now; try again")

        cmd.command(
            "EVAL",
            scripts.CLAIM,
            2,
            self._nick_key(nick),
            self._members_key,
            self.node,
            nick,
            int(self.ttl * 1000),
            callback=answer,
        )

    def release(self, nick: str, *, keep_key: bool = False) -> None:
        cmd = self._cmd
        if self.up and cmd is not None:
            cmd.command(
                "EVAL",
                scripts.RELEASE,
                2,
                self._nick_key(nick),
                self._members_key,
                self.node,
                nick,
                "1" if keep_key else "0",
            )

    def joined(self, ref: int, nick: str, line: str) -> None:
        if self._publish(_JOIN, f"{self.node} {ref} {line}"):
            return
        room = self.room
        room.admit(ref)
        room.broadcast(line)
        member = room.find(nick)
        if member is not None and self._told_down:
            member.send(wire.event(LINK_DOWN))

    def renamed(self, old: str, new: str, line: str) -> None:
        self.release(old, keep_key=old.casefold() == new.casefold())
        if not self._publish(_ROOM_LINE, line):
            self.room.broadcast(line)

    def left(self, nick: str, line: str | None) -> None:
        self.release(nick)
        if line is not None and not self._publish(_ROOM_LINE, line):
            self.room.broadcast(line)

    def say(self, line: str) -> None:
        if not self._publish(_ROOM_LINE, line):
            self.room.broadcast(line)

    def who(self, done: Callable[[tuple[list[str], str | None]], None]) -> None:
        cmd = self._cmd
        if not self.up or cmd is None:
            done((self.room.nicks(), WHO_LOCAL))
            return

        def answer(reply: Reply) -> None:
            if isinstance(reply, Exception):
                done((self.room.nicks(), WHO_LOCAL))
                return
            nicks = sorted({n.decode() for n in reply}, key=str.casefold)
            done((nicks, None))

        cmd.command("EVAL", scripts.WHO, 1, self._nodes_key, self.prefix, callback=answer)

    def private(
        self, sender: str, target: str, text: str, done: Callable[[str | None], None]
    ) -> None:
        cmd = self._cmd
        if not self.up or cmd is None:
            if self.room.find(target) is None:
                done(f"no such nick on this server: {target} (the link to the others is down)")
            else:
                deliver_private(self.room, sender, target, text)
                done(None)
            return

        def answer(reply: Reply) -> None:
            if reply is None:
                done(f"no such nick: {target}")
            elif isinstance(reply, Exception):
                done(f"could not send to {target}: the link to the other servers failed")
            else:
                done(None)  # the message and the receipt come back through the bus

        cmd.command(
            "EVAL",
            scripts.PRIVATE,
            1,
            self._nick_key(target),
            self.prefix,
            sender,
            text,
            self.node,
            callback=answer,
        )

    # ------------------------------------------------------------ stopping

    def close(self) -> None:
        """Announce this node's users' departures, free their nicks, and stop for good."""
        if self.closed:
            return
        cmd = self._cmd
        if self.up and cmd is not None:
            before, after = self._shutdown_line
            cmd.command(
                "EVAL",
                scripts.GONE,
                1,
                self.room_channel,
                self.node,
                self.prefix,
                before,
                after,
            )
        self.closed = True
        self.up = False
        for timer in (self._retry, self._setup_timer, self._heartbeat):
            if timer is not None:
                timer.cancel()
        for conn in (self._cmd, self._sub):
            if conn is not None:
                conn.close()


def _text(data: bytes) -> str:
    """A room line from the bus, safe to relay: valid UTF-8, no control characters."""
    return wire.sanitize(data.decode("utf-8", "replace"))
