"""The room's side of the broker contract, without Redis: answers that come later.

:class:`DeferredBroker` is the one-node broker, except that it answers nick
claims, ``/who`` and private messages only when the test says, as the Redis
broker does when Redis answers, and holds room lines until the test lets them
"come back from the bus". The room runs on a MemoryTransport and a fake clock
(see :mod:`tests.test_app_chat_unit`), so these tests are exact and instant.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from apps.chat.broker import LocalBroker
from apps.chat.server import ChatConfig, ChatRoom
from protocols.testing import Clock, MemoryTransport

pytestmark = pytest.mark.timeout(30)


class DeferredBroker(LocalBroker):
    """LocalBroker whose answers and deliveries wait for :meth:`answer` and :meth:`deliver`."""

    def __init__(self) -> None:
        self.answers: list[Callable[[], None]] = []
        self.bus: list[Callable[[], None]] = []
        self.released: list[str] = []

    def claim(self, nick: str, done: Callable[[str | None], None]) -> None:
        self.answers.append(lambda: super(DeferredBroker, self).claim(nick, done))

    def who(self, done: Callable[[tuple[list[str], str | None]], None]) -> None:
        self.answers.append(lambda: super(DeferredBroker, self).who(done))

    def private(
        self, sender: str, target: str, text: str, done: Callable[[str | None], None]
    ) -> None:
        self.answers.append(lambda: super(DeferredBroker, self).private(sender, target, text, done))

    def joined(self, ref: int, nick: str, line: str) -> None:
        self.bus.append(lambda: super(DeferredBroker, self).joined(ref, nick, line))

    def say(self, line: str) -> None:
        self.bus.append(lambda: super(DeferredBroker, self).say(line))

    def release(self, nick: str) -> None:
        self.released.append(nick)

    def answer(self) -> None:
        """Answer the oldest question."""
        self.answers.pop(0)()

    def deliver(self) -> None:
        """Everything published comes back, in order."""
        while self.bus:
            self.bus.pop(0)()


class Room:
    def __init__(self) -> None:
        self.clock = Clock()
        self.broker = DeferredBroker()
        self.room = ChatRoom(self.clock, ChatConfig(), self.broker)
        self._port = 40000

    def connect(self) -> MemoryTransport:
        self._port += 1
        addr = ("10.0.0.1", self._port)
        transport = MemoryTransport(peername=addr)
        transport.connect(self.room.build_protocol(addr))
        assert self.lines(transport)[0].startswith("= welcome")
        return transport

    def feed(self, transport: MemoryTransport, *lines: str) -> None:
        transport.feed("".join(line + "\n" for line in lines).encode())
        self.clock.advance(0)

    def lines(self, transport: MemoryTransport) -> list[str]:
        self.clock.advance(0)
        data = transport.value()
        transport.clear()
        return data.decode().split("\r\n")[:-1]

    def settle(self) -> None:
        """Deliver what is on the bus, and let the loop turn."""
        self.broker.deliver()
        self.clock.advance(0)


@pytest.fixture
def r() -> Room:
    return Room()


def test_lines_after_a_nick_claim_wait_for_its_answer(r: Room) -> None:
    t = r.connect()
    r.feed(t, "/nick alice", "hello", "/me waves")
    # Unanswered: "hello" is neither refused ("set a nick first") nor said.
    assert r.lines(t) == []
    assert r.room.claims.keys() == {"alice"}
    r.broker.answer()
    r.settle()
    assert r.lines(t) == ["* alice joined", "<alice> hello", "*alice* waves"]
    assert r.room.claims == {}


def test_a_newcomer_hears_the_room_from_its_own_join_on(r: Room) -> None:
    bob = r.connect()
    r.feed(bob, "/nick bob")
    r.broker.answer()
    r.settle()
    assert r.lines(bob) == ["* bob joined"]
    alice = r.connect()
    r.feed(bob, "before alice")  # published, not yet back from the bus
    r.feed(alice, "/nick alice")
    r.broker.answer()  # alice is a member now, but what was published before is not hers
    r.settle()
    assert r.lines(alice) == ["* alice joined"]
    assert r.lines(bob) == ["<bob> before alice", "* alice joined"]


def test_a_nick_being_claimed_is_held_on_this_node(r: Room) -> None:
    first, second = r.connect(), r.connect()
    r.feed(first, "/nick alice")
    r.feed(second, "/nick ALICE")
    assert r.lines(second) == ["! error: nick ALICE is taken"]
    r.broker.answer()
    r.settle()
    assert r.lines(first) == ["* alice joined"]


def test_a_claim_answered_after_its_session_left_is_given_back(r: Room) -> None:
    t = r.connect()
    r.feed(t, "/nick alice")
    t.close()
    r.clock.advance(0)
    r.broker.answer()
    r.settle()
    assert r.broker.released == ["alice"]
    assert r.room.members == {}
    assert r.room.claims == {}


def test_who_and_private_messages_answer_in_order(r: Room) -> None:
    alice, bob = r.connect(), r.connect()
    for t, nick in ((alice, "alice"), (bob, "bob")):
        r.feed(t, f"/nick {nick}")
        r.broker.answer()
    r.settle()
    r.lines(alice)
    r.lines(bob)
    r.feed(alice, "/who", "/msg bob psst", "/msg carol hi", "after")
    assert r.lines(alice) == []  # all wait for /who's answer
    r.broker.answer()
    assert r.lines(alice) == ["= 2 online: alice, bob"]
    r.broker.answer()
    assert r.lines(alice) == ["-> bob: psst"]
    assert r.lines(bob) == ["<- alice: psst"]
    r.broker.answer()
    r.settle()
    assert r.lines(alice) == ["! error: no such nick: carol", "<alice> after"]


def test_a_member_kicked_by_the_broker_is_told_why_and_closed(r: Room) -> None:
    t = r.connect()
    r.feed(t, "/nick alice")
    r.broker.answer()
    r.settle()
    r.lines(t)
    r.room.kick("ALICE", "your nick alice was taken elsewhere")
    assert r.lines(t) == ["! error: your nick alice was taken elsewhere"]
    assert t.is_closing()
    assert r.room.members == {}
    r.room.kick("nobody", "no one to kick: nothing happens")


def test_the_room_hands_the_broker_its_transports_and_goodbye(r: Room) -> None:
    closed: list[bool] = []
    marker: Any = object()
    r.broker.transports = lambda: [marker]  # type: ignore[method-assign]
    r.broker.close = lambda: closed.append(True)  # type: ignore[method-assign]
    t = r.connect()
    assert list(r.room.transports()) == [t, marker]
    r.room.goodbye()
    assert closed == [True]
