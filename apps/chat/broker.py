"""The bus between chat nodes, as the room sees it: the Broker interface and LocalBroker.

The room (:class:`apps.chat.server.ChatRoom`) never delivers a room line
itself: it hands every join, leave, nick change, message and private message
to its broker, and delivers what the broker gives back. With one node the
broker is :class:`LocalBroker`, which gives everything back at once, so a
single server behaves exactly as if there were no broker. With several nodes
it is :class:`apps.chat.redis_broker.RedisBroker`, which sends everything
through Redis and delivers what comes back from it, so that every node sees
the same lines in the same order.

Answers that may have to wait for the bus (is this nick free? who is online?)
come through callbacks; :class:`LocalBroker` calls them before returning.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from apps.chat import wire

__all__ = ["Broker", "LocalBroker", "Member", "RoomPort"]


class Member(Protocol):
    """A member of the room as the broker sees it: a nick, and a way to write to it."""

    @property
    def nick(self) -> str | None: ...

    def send(self, text: str) -> None: ...


class RoomPort(Protocol):
    """What a broker may ask of the room it serves."""

    @property
    def closing(self) -> bool: ...

    def broadcast(self, text: str) -> None:
        """Queue ``text`` for every member that hears the room (written at the end of the turn)."""

    def admit(self, ref: int) -> None:
        """The join of the session numbered ``ref`` came back: it hears the room from now on."""

    def find(self, nick: str) -> Member | None:
        """The local member called ``nick`` (case-insensitive), if any."""

    def nicks(self) -> list[str]:
        """The local members' nicks, sorted case-insensitively."""

    def kick(self, nick: str, reason: str) -> None:
        """Tell the local member ``nick`` why, and disconnect it (its nick is no longer its own)."""


class Broker(ABC):
    """Carries the room's lines to every node and back, and keeps nicks unique among nodes."""

    room: RoomPort
    #: What the start-up line says about the bus ("" for none).
    description = ""
    #: Whether the room spans several nodes (the room's own members are then not all).
    spans_nodes = False

    def attach(self, room: RoomPort) -> None:
        """Serve ``room`` (called once, by the room)."""
        self.room = room

    def start(self) -> None:  # noqa: B027 - optional hook: LocalBroker has nothing to start
        """Start talking to the bus (connect, subscribe); the room works before and meanwhile."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """The node is shutting down: say so to the other nodes and stop."""

    def transports(self) -> Iterable[Any]:
        """The broker's own connections, to be flushed and closed on shutdown."""
        return ()

    @abstractmethod
    def claim(self, nick: str, done: Callable[[str | None], None]) -> None:
        """Reserve ``nick`` across every node: ``done(None)`` if granted, ``done(reason)`` if not.

        The room has already checked that no local member holds it.
        """

    @abstractmethod
    def joined(self, ref: int, nick: str, line: str) -> None:
        """Session ``ref`` joined as ``nick``: admit it, then deliver ``line``, in bus order."""

    @abstractmethod
    def renamed(self, old: str, new: str, line: str) -> None:
        """A member changed its nick (``new`` was claimed): release ``old``, deliver ``line``."""

    @abstractmethod
    def left(self, nick: str, line: str | None) -> None:
        """A member left: release ``nick``; deliver ``line`` (None: tell nobody)."""

    @abstractmethod
    def say(self, line: str) -> None:
        """Deliver ``line`` (a message or an action) to the whole room."""

    @abstractmethod
    def who(self, done: Callable[[tuple[list[str], str | None]], None]) -> None:
        """``done((nicks, note))``: every member on every node, and a note if that is not all."""

    @abstractmethod
    def private(
        self, sender: str, target: str, text: str, done: Callable[[str | None], None]
    ) -> None:
        """Send a private message; ``done(None)`` once it is on its way, ``done(error)`` if not.

        Delivery writes ``<- sender: text`` to the target and ``-> TARGET: text``
        to the sender (see :func:`deliver_private`).
        """

    def release(self, nick: str) -> None:  # noqa: B027 - nothing to release with one node
        """Give back a claimed nick that ended up unused (its session went away meanwhile)."""


def deliver_private(room: RoomPort, sender: str, target: str, text: str) -> None:
    """Write a private message to ``target`` and the receipt to ``sender`` (if they are here)."""
    to = room.find(target)
    if to is not None and to.nick is not None:
        to.send(wire.private_in(sender, text))
        target = to.nick
    deliver_receipt(room, sender, target, text)


def deliver_receipt(room: RoomPort, sender: str, target: str, text: str) -> None:
    """Write ``-> target: text`` to ``sender``, if it is a member here."""
    by = room.find(sender)
    if by is not None:
        by.send(wire.private_out(target, text))


class LocalBroker(Broker):
    """One node, no bus: everything is delivered here and now."""

    def claim(self, nick: str, done: Callable[[str | None], None]) -> None:
        done(None)  # the room checked its members, and there is no one else

    def joined(self, ref: int, nick: str, line: str) -> None:
        self.room.admit(ref)
        self.room.broadcast(line)

    def renamed(self, old: str, new: str, line: str) -> None:
        self.room.broadcast(line)

    def left(self, nick: str, line: str | None) -> None:
        if line is not None:
            self.room.broadcast(line)

    def say(self, line: str) -> None:
        self.room.broadcast(line)

    def who(self, done: Callable[[tuple[list[str], str | None]], None]) -> None:
        done((self.room.nicks(), None))

    def private(
        self, sender: str, target: str, text: str, done: Callable[[str | None], None]
    ) -> None:
        to = self.room.find(target)
        if to is None or to.nick is None:
            done(f"no such nick: {target}")
            return
        deliver_private(self.room, sender, target, text)
        done(None)
