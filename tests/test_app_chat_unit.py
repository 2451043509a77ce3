"""Unit tests of the chat app: the server's logic on MemoryTransport and a fake Clock,
the wire format, and the client's pieces. Fast and deterministic: no sockets, no sleeps.
"""

from __future__ import annotations

import io
import logging
from typing import Any

import pytest

from apps.chat import wire
from apps.chat.__main__ import build_parser
from apps.chat.client import ChatClientProtocol, Console, LineInput, TerminalInput
from apps.chat.server import (
    FULL_MESSAGE,
    PER_IP_MESSAGE,
    ChatConfig,
    ChatRoom,
    ChatSession,
    config_from_args,
    make_factory,
    make_server_reactor,
)
from protocols.testing import Clock, MemoryTransport
from tests.app_helpers import exit_code
from tests.test_framing_budget import TurnClock

pytestmark = pytest.mark.timeout(30)


class SpyTransport(MemoryTransport):
    """A MemoryTransport that also keeps each object passed to write()."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.writes: list[bytes] = []

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.writes.append(bytes(data) if not isinstance(data, bytes) else data)
        super().write(data)


class Room:
    """A ChatRoom on a fake clock, with helpers to connect and talk."""

    def __init__(self, **config: Any) -> None:
        self.clock = Clock()
        self.room = ChatRoom(self.clock, ChatConfig(**config))
        self._port = 40000

    def connect(
        self, nick: str | None = None, *, ip: str = "10.0.0.1", stalled: bool = False
    ) -> SpyTransport:
        self._port += 1
        addr = (ip, self._port)
        transport = SpyTransport(peername=addr)
        transport.connect(self.room.build_protocol(addr))
        assert self.lines(transport)[0].startswith("= welcome")
        if nick is not None:
            self.say(transport, f"/nick {nick}")
            assert f"* {nick} joined" in self.lines(transport)
        transport.stalled = stalled  # from now on the peer does not read
        return transport

    def say(self, transport: MemoryTransport, line: str | bytes, end: bytes = b"\n") -> None:
        """The peer sends a line; the loop turn ends (so broadcasts go out)."""
        transport.feed((line.encode() if isinstance(line, str) else line) + end)
        self.clock.advance(0)

    def lines(self, transport: MemoryTransport) -> list[str]:
        """What the transport received since the last call, as lines."""
        self.clock.advance(0)
        data = transport.value()
        transport.clear()
        assert not data or data.endswith(b"\r\n"), data
        return data.decode().split("\r\n")[:-1]

    def session(self, transport: MemoryTransport) -> ChatSession:
        protocol = transport.get_protocol()
        assert isinstance(protocol, ChatSession)
        return protocol


@pytest.fixture
def r() -> Room:
    return Room()


# ------------------------------------------------------------------- basics


def test_a_connection_must_set_a_nick_before_talking(r: Room) -> None:
    t = r.connect()
    r.say(t, "hello")
    assert r.lines(t) == ["! error: set a nick first with /nick NAME"]
    r.say(t, "/me waves")
    r.say(t, "/msg someone hi")
    assert r.lines(t) == ["! error: set a nick first with /nick NAME"] * 2
    r.say(t, "/nick alice")
    assert r.lines(t) == ["* alice joined"]
    r.say(t, "hello")
    assert r.lines(t) == ["<alice> hello"]


def test_room_lines_reach_every_member_and_only_members(r: Room) -> None:
    alice, bob = r.connect("alice"), r.connect("bob")
    lurker = r.connect()
    assert r.lines(alice) == ["* bob joined"]
    r.say(alice, "hi", end=b"\r\n")
    r.say(bob, "yo")
    for t in (alice, bob):
        assert r.lines(t) == ["<alice> hi", "<bob> yo"]
    assert r.lines(lurker) == []


def test_a_broadcast_is_encoded_once_and_batched_per_turn(r: Room) -> None:
    alice, bob, carol = r.connect("alice"), r.connect("bob"), r.connect("carol")
    r.lines(alice), r.lines(bob)
    for t in (alice, bob, carol):
        t.writes.clear()
    alice.feed(b"one\ntwo\n")
    bob.feed(b"three\n")
    assert alice.writes == []  # nothing is written until the turn ends
    r.clock.advance(0)
    # One write per member, of the very same bytes object.
    assert len(alice.writes) == len(bob.writes) == len(carol.writes) == 1
    assert alice.writes[0] is bob.writes[0] is carol.writes[0]
    assert alice.writes[0] == b"<alice> one\r\n<alice> two\r\n<bob> three\r\n"


def test_lines_may_arrive_in_pieces_and_with_either_line_end(r: Room) -> None:
    alice = r.connect("alice")
    for piece in (b"he", b"llo\r", b"\nwor", b"ld\n\n   \n"):
        alice.feed(piece)
    assert r.lines(alice) == ["<alice> hello", "<alice> world"]


def test_a_newcomer_gets_only_what_is_said_after_it_joined(r: Room) -> None:
    alice = r.connect("alice")
    newcomer = r.connect()
    alice.feed(b"before\n")
    newcomer.feed(b"/nick bob\n")
    alice.feed(b"after\n")
    assert r.lines(alice) == ["<alice> before", "* bob joined", "<alice> after"]
    assert r.lines(newcomer) == ["* bob joined", "<alice> after"]


def test_replies_to_one_client_keep_their_place_among_room_lines(r: Room) -> None:
    alice = r.connect("alice")
    alice.feed(b"first\n/who\nsecond\n")
    assert r.lines(alice) == ["<alice> first", "= 1 online: alice", "<alice> second"]


# ------------------------------------------------------------------- commands


def test_nick_rules(r: Room) -> None:
    alice = r.connect("alice")
    t = r.connect()
    r.say(t, "/nick ALICE")
    assert r.lines(t) == ["! error: nick ALICE is taken"]
    r.say(t, "/nick")
    assert r.lines(t) == ["! error: usage: /nick NAME"]
    r.say(t, "/nick bad*nick")
    assert r.lines(t)[0].startswith("! error: invalid nick 'bad*nick': a nick may contain only")
    r.say(t, "/nick " + "x" * 33)
    assert "at most 32" in r.lines(t)[0]
    r.say(t, "/nick " + "x" * 32)
    assert r.lines(t) == [f"* {'x' * 32} joined"]
    r.say(t, "/NICK bob.smith-2_")
    assert r.lines(t) == [f"* {'x' * 32} is now known as bob.smith-2_"]
    r.say(t, "/nick bob.smith-2_")
    assert r.lines(t) == ["= you are already bob.smith-2_"]
    r.say(t, "/nick Bob.Smith-2_")  # a change of case is a change of nick
    assert r.lines(t) == ["* bob.smith-2_ is now known as Bob.Smith-2_"]
    assert r.lines(alice)[-1] == "* bob.smith-2_ is now known as Bob.Smith-2_"
    # The old nick is free again; the new one is taken whatever its case.
    other = r.connect()
    r.say(other, "/nick BOB.smith-2_")
    assert r.lines(other) == ["! error: nick BOB.smith-2_ is taken"]
    r.say(other, "/nick " + "x" * 32)
    assert r.lines(other) == [f"* {'x' * 32} joined"]


def test_who_me_msg_help_and_unknown_commands(r: Room) -> None:
    bob, alice = r.connect("bob"), r.connect("alice")
    r.lines(bob)
    r.say(alice, "/who")
    assert r.lines(alice) == ["= 2 online: alice, bob"]
    r.say(alice, "/me  waves happily")
    assert r.lines(bob) == ["*alice* waves happily"]
    r.say(alice, "/me")
    assert r.lines(alice)[-1] == "! error: usage: /me ACTION"
    r.say(alice, "/msg BOB  psst:  two spaces")
    assert r.lines(bob) == ["<- alice: psst:  two spaces"]
    assert r.lines(alice) == ["-> bob: psst:  two spaces"]
    r.say(alice, "/msg bob")
    assert r.lines(alice) == ["! error: usage: /msg NICK TEXT"]
    r.say(alice, "/msg carol hi")
    assert r.lines(alice) == ["! error: no such nick: carol"]
    r.say(alice, "/HELP")
    help_lines = r.lines(alice)
    assert all(line.startswith("= ") for line in help_lines)
    for command in ("/nick", "/who", "/me", "/msg", "/quit", "/help"):
        assert any(line.startswith(f"= {command} ") for line in help_lines)
    r.say(alice, "/dance")
    assert r.lines(alice) == ["! error: unknown command /dance (/help lists them)"]
    r.say(alice, "//dance")
    assert r.lines(bob) == ["<alice> /dance"]
    assert r.lines(alice) == ["<alice> /dance"]


def test_quit_says_bye_closes_and_tells_the_others(r: Room) -> None:
    alice, bob = r.connect("alice"), r.connect("bob")
    r.lines(alice)
    r.say(bob, "/quit gotta go\nignored after quit")
    assert r.lines(bob) == ["= bye"]
    assert bob.lost
    assert r.lines(alice) == ["* bob left (quit: gotta go)"]
    carol = r.connect("carol")
    r.say(carol, "/quit")
    assert r.lines(alice)[-1] == "* carol left (quit)"
    assert set(r.room.members) == {"alice"}


def test_ping_from_the_client_is_answered(r: Room) -> None:
    t = r.connect()
    r.say(t, "PING")
    assert r.lines(t) == ["PONG"]


# -------------------------------------------------------------------- limits


def test_an_over_long_line_gets_an_error_and_the_connection_stays() -> None:
    r = Room(max_line=20)
    alice, bob = r.connect("alice"), r.connect("bob")
    r.lines(alice)
    r.say(bob, "x" * 21)
    assert r.lines(bob) == ["! error: line too long (limit 20 bytes); discarded"]
    # In pieces, longer than the limit before its end arrives: one error, then skipped.
    bob.feed(b"y" * 15)
    bob.feed(b"y" * 15)
    bob.feed(b"y" * 100 + b"\nok\n")
    r.say(bob, "z" * 20, end=b"\r\n")  # exactly the limit, with CRLF
    assert r.lines(bob) == [
        "! error: line too long (limit 20 bytes); discarded",
        "<bob> ok",
        "<bob> " + "z" * 20,
    ]
    assert r.lines(alice) == ["<bob> ok", "<bob> " + "z" * 20]
    assert not bob.closed


def test_invalid_utf8_and_control_characters_are_refused_never_relayed(r: Room) -> None:
    alice, bob = r.connect("alice"), r.connect("bob")
    r.lines(alice)
    r.say(bob, b"caf\xe9")
    r.say(bob, b"\xed\xa0\x80 surrogate")
    r.say(bob, b"\x1b]0;pwned\x07")
    r.say(bob, "c1 \u009b control")
    assert r.lines(bob) == [
        "! error: invalid UTF-8; line discarded",
        "! error: invalid UTF-8; line discarded",
        "! error: control characters are not allowed; line discarded",
        "! error: control characters are not allowed; line discarded",
    ]
    r.say(bob, "tabs\tare fine, ünïcödé too")
    assert r.lines(alice) == ["<bob> tabs\tare fine, ünïcödé too"]


def test_a_client_that_stops_reading_is_dropped_at_the_cap() -> None:
    r = Room(max_output=4096, max_line=1000)
    alice, bob = r.connect("alice"), r.connect("bob")
    slow = r.connect("slow", stalled=True)
    r.lines(alice), r.lines(bob)
    message = "m" * 900
    sent = 0
    while not slow.lost:
        r.say(alice, message)
        sent += 1
        assert sent < 10, "never dropped"
    # Dropped once more than 4096 bytes were waiting: on the 5th line of ~900 bytes.
    assert sent == 5
    assert slow.aborted
    for t in (alice, bob):
        assert r.lines(t) == [f"<alice> {message}"] * sent + ["* slow left (dropped: not reading)"]
    r.say(alice, "/who")
    assert r.lines(alice) == ["= 2 online: alice, bob"]


def test_connection_limits_send_an_error_line_then_close() -> None:
    r = Room(max_clients=3, max_per_ip=2)
    factory = make_factory(r.room)

    def connect(ip: str) -> MemoryTransport:
        t = MemoryTransport(peername=(ip, 5000))
        protocol = factory.build_protocol((ip, 5000))
        assert protocol is not None
        t.connect(protocol)
        return t

    first, second = connect("10.0.0.1"), connect("10.0.0.1")
    third = connect("10.0.0.1")
    assert third.value() == PER_IP_MESSAGE == b"! error: too many connections from your address\r\n"
    assert third.lost
    fourth = connect("10.0.0.2")
    assert fourth.value().startswith(b"= welcome")
    fifth = connect("10.0.0.3")
    assert fifth.value() == FULL_MESSAGE
    assert fifth.lost
    first.feed_close()  # a slot is free again
    assert connect("10.0.0.3").value().startswith(b"= welcome")
    assert not second.lost


# ------------------------------------------------------------------- timers


def test_a_quiet_client_is_pinged_and_dropped_if_it_does_not_answer() -> None:
    r = Room(ping_interval=10, ping_timeout=5)
    alice, quiet = r.connect("alice"), r.connect("quiet")
    r.lines(alice)
    r.clock.advance(9.9)
    assert r.lines(quiet) == []
    r.say(alice, "PONG")  # alice keeps talking: alice is not pinged
    r.clock.advance(0.1)
    assert r.lines(quiet) == ["PING"]
    assert r.lines(alice) == []
    r.clock.advance(4.9)
    assert not quiet.closed
    r.clock.advance(0.1)
    assert r.lines(quiet) == ["! error: no answer to PING within 5 s"]
    assert quiet.lost
    assert r.lines(alice) == ["* quiet left (ping timeout)"]


def test_any_answer_keeps_a_pinged_client() -> None:
    r = Room(ping_interval=10, ping_timeout=5)
    alice = r.connect("alice")
    r.clock.advance(1)
    for answer in ("PONG", "still here", "PONG"):
        r.clock.advance(9)  # an interval after alice was last heard from
        assert r.lines(alice) == ["PING"]
        r.clock.advance(4)
        r.say(alice, answer)
        r.lines(alice)
        r.clock.advance(1)  # the ping timeout passes
        assert not alice.closed
    # The next ping comes an interval after the last thing heard.
    r.clock.advance(8.9)
    assert r.lines(alice) == []
    r.clock.advance(0.1)
    assert r.lines(alice) == ["PING"]


def test_a_client_that_never_sets_a_nick_is_closed() -> None:
    r = Room(nick_timeout=30, ping_interval=100)
    anonymous, named = r.connect(), r.connect()
    r.clock.advance(10)
    r.say(named, "/nick named")
    r.say(anonymous, "/who")  # activity is not a nick
    r.clock.advance(20)
    assert r.lines(anonymous)[-1] == "! error: no nick set within 30 s; closing"
    assert anonymous.lost
    assert not named.closed
    assert r.lines(named) == ["* named joined"]


def test_timers_are_cancelled_when_the_connection_ends(r: Room) -> None:
    alice = r.connect("alice")
    assert r.clock.pending()
    alice.feed_reset()
    assert r.clock.pending() == []
    assert r.room.sessions == {}
    assert r.room.members == {}


# ---------------------------------------------------------------- endings


def test_eof_counts_a_last_unterminated_line_then_leaves(r: Room) -> None:
    alice, bob = r.connect("alice"), r.connect("bob")
    r.lines(alice)
    bob.feed(b"last words")
    bob.feed_eof()
    assert r.lines(alice) == ["<bob> last words", "* bob left"]
    assert bob.lost


def test_a_reset_is_a_leave_with_a_reason(r: Room) -> None:
    alice, bob = r.connect("alice"), r.connect("bob")
    r.lines(alice)
    bob.feed_reset()
    assert r.lines(alice) == ["* bob left (connection lost)"]


def test_goodbye_tells_everyone_and_then_stays_quiet(r: Room) -> None:
    alice, bob, anonymous = r.connect("alice"), r.connect("bob"), r.connect()
    r.lines(alice)
    alice.feed(b"queued before the goodbye\n")
    r.room.goodbye()
    assert r.lines(anonymous) == ["* server is going away"]
    assert r.lines(alice) == ["<alice> queued before the goodbye", "* server is going away"]
    assert r.clock.pending() == []  # no pings, no nick timeout any more
    for t in (alice, bob, anonymous):
        t.close()
    assert r.lines(bob) == ["<alice> queued before the goodbye", "* server is going away"]
    assert r.room.sessions == {}
    assert list(r.room.transports()) == []


# ---------------------------------------------------------------- the wire


@pytest.mark.parametrize(
    ("line", "kind", "nick", "text"),
    [
        ("<alice> hello <world>", wire.Kind.MESSAGE, "alice", "hello <world>"),
        ("*alice* waves * twice", wire.Kind.ACTION, "alice", "waves * twice"),
        ("<- bob: psst", wire.Kind.PRIVATE_IN, "bob", "psst"),
        ("-> bob: psst", wire.Kind.PRIVATE_OUT, "bob", "psst"),
        ("* alice joined", wire.Kind.EVENT, None, "alice joined"),
        ("= 2 online: a, b", wire.Kind.INFO, None, "2 online: a, b"),
        ("! error: nick bob is taken", wire.Kind.ERROR, None, "nick bob is taken"),
        ("PING", wire.Kind.PING, None, ""),
        ("<-> hi", wire.Kind.MESSAGE, "-", "hi"),
        ("what?", wire.Kind.UNKNOWN, None, "what?"),
        ("<broken", wire.Kind.UNKNOWN, None, "<broken"),
    ],
)
def test_server_lines_parse(line: str, kind: wire.Kind, nick: str | None, text: str) -> None:
    parsed = wire.parse(line)
    assert (parsed.kind, parsed.nick, parsed.text) == (kind, nick, text)


def test_what_the_server_formats_the_client_parses() -> None:
    cases = [
        (wire.message("a", "x"), wire.Kind.MESSAGE),
        (wire.action("a", "x"), wire.Kind.ACTION),
        (wire.private_in("a", "x"), wire.Kind.PRIVATE_IN),
        (wire.private_out("a", "x"), wire.Kind.PRIVATE_OUT),
        (wire.event("x"), wire.Kind.EVENT),
        (wire.info("x"), wire.Kind.INFO),
        (wire.error("x"), wire.Kind.ERROR),
    ]
    for line, kind in cases:
        assert wire.parse(line).kind is kind
        assert wire.parse(line).text == "x"


def test_nick_problem_and_sanitize() -> None:
    assert wire.nick_problem("a") is None
    assert wire.nick_problem("A-b_c.9" + "x" * 25) is None
    assert wire.nick_problem("") is not None
    assert wire.nick_problem("x" * 33) is not None
    for bad in ("a b", "a*", "<a>", "é", "a\n"):
        assert wire.nick_problem(bad) is not None
    assert wire.sanitize("a\x1b[2Jb\tc\x9bd") == "a\ufffd[2Jb\tc\ufffdd"


# ---------------------------------------------------------------- the client


def test_the_client_protocol_sends_its_nick_answers_pings_and_shows_lines() -> None:
    out = io.BytesIO()
    console = Console(out, interactive=False)
    lost: list[BaseException | None] = []
    welcomed: list[bool] = []
    protocol = ChatClientProtocol(console, "alice", lost.append, lambda: welcomed.append(True))
    t = MemoryTransport()
    t.connect(protocol)
    assert t.value() == b""  # the server speaks first
    t.feed(b"= welcome\r\n")
    assert t.value() == b"/nick alice\n"
    assert welcomed == [True]
    t.clear()
    t.feed(b"* alice joined\r\nPING\r\n<bob> \x1b[31mred\r\n<bob> caf\xe9\r\n= not again\r\n")
    assert t.value() == b"PONG\n"
    assert out.getvalue().decode() == (
        "= welcome\n* alice joined\n<bob> \ufffd[31mred\n<bob> caf\ufffd\n= not again\n"
    )
    assert welcomed == [True]
    t.feed_close()
    assert lost == [None]


def test_the_client_protocol_sends_nothing_to_a_server_that_refuses_it() -> None:
    out = io.BytesIO()
    protocol = ChatClientProtocol(Console(out, interactive=False), "alice", lambda exc: None)
    t = MemoryTransport()
    t.connect(protocol)
    t.feed(PER_IP_MESSAGE)
    t.feed_eof()
    assert t.value() == b""
    assert not protocol.welcomed
    assert out.getvalue() == b"! error: too many connections from your address\n"


def test_the_client_skips_an_over_long_line() -> None:
    out = io.BytesIO()
    protocol = ChatClientProtocol(Console(out, interactive=False), "a", lambda exc: None)
    protocol.max_line_length = 10
    t = MemoryTransport()
    t.connect(protocol)
    t.feed(b"x" * 50 + b"\r\nshort\r\n")
    assert out.getvalue() == b"[a line of over 10 bytes was skipped]\nshort\n"
    assert not t.closed


def test_the_console_redraws_the_partial_input_on_a_terminal() -> None:
    out = io.BytesIO()
    console = Console(out, interactive=True, prompt="> ")
    console.set_input("half a li")
    console.flush()
    console.show("<bob> hi")
    console.show("<bob> again")
    console.flush()
    assert out.getvalue() == (
        b"\r\x1b[K> half a li" + b"\r\x1b[K<bob> hi\r\n<bob> again\r\n> half a li"
    )
    out.seek(0)
    out.truncate()
    console.flush()  # nothing new: nothing written
    assert out.getvalue() == b""
    console.close()
    assert out.getvalue() == b"\r\x1b[K"


def test_line_input_cuts_lines_and_keeps_the_last_one_at_eof() -> None:
    got: list[bytes] = []
    lines = LineInput(got.append)
    lines.feed(b"one\r\ntw")
    lines.feed(b"o\nthree")
    assert got == [b"one", b"two"]
    lines.eof()
    assert got == [b"one", b"two", b"three"]


def test_terminal_input_edits_the_line() -> None:
    console = Console(io.BytesIO(), interactive=True)
    sent: list[bytes] = []
    ended: list[bool] = []
    keys = TerminalInput(console, sent.append, lambda: ended.append(True))
    keys.feed(b"helo\x7flo")
    assert keys.line == "hello"
    keys.feed(b" big\x17world\x1b[D\x1bOA\x1bx!")  # Ctrl-W, arrow keys, Alt-x ignored
    assert keys.line == "hello world!"
    keys.feed(b"\r")
    assert sent == [b"hello world!"]
    keys.feed("caf\u00e9".encode()[:-1])  # a character split across reads
    keys.feed("caf\u00e9".encode()[-1:] + b"\x15")  # ... then Ctrl-U clears the line
    assert keys.line == ""
    keys.feed("\u00fcber\tall\n".encode())
    assert sent[-1] == "\u00fcber all".encode()
    keys.feed(b"x\x04")  # Ctrl-D with text: ignored
    assert not ended
    keys.feed(b"\x15\x04")
    assert ended == [True]


# --------------------------------------------------------------- command line


def test_the_command_line_defaults_are_the_config_defaults() -> None:
    args = build_parser().parse_args(["server"])
    assert config_from_args(args) == ChatConfig()
    assert (args.host, args.port) == ("127.0.0.1", 8070)
    args = build_parser().parse_args(
        ["server", "--max-line", "100", "--ping-interval", "0.5", "--max-per-ip", "0"]
    )
    config = config_from_args(args)
    assert (config.max_line, config.ping_interval, config.max_per_ip) == (100, 0.5, 0)
    args = build_parser().parse_args(["client", "example.org", "6000", "--nick", "me"])
    assert (args.host, args.port, args.nick) == ("example.org", 6000, "me")


@pytest.mark.parametrize(
    "argv",
    [
        ["server", "--max-output", "10"],
        ["server", "--ping-timeout", "-1"],
        ["server", "--nick-timeout", "nan"],
        ["server", "--line-timeout", "0"],
        ["server", "--close-timeout", "nan"],
        ["server", "--close-timeout", "-5"],
        ["server", "--max-clients", "-1"],
        ["client", "h", "0", "--nick", "x"],
        ["client", "h", "1", "--nick", ""],
    ],
)
def test_bad_arguments_are_usage_errors(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert exit_code(build_parser().parse_args, argv) == 2
    assert "error:" in capsys.readouterr().err


# ------------------------------------------------------------------ hardening


def test_a_slowloris_client_is_disconnected_at_the_line_timeout(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """One byte every 1.5 s and never a line end: cut off 10 s after its first byte
    (any traffic counts as a sign of life for the heartbeat, so without a line
    deadline it would hold its connection slot for ever)."""
    r = Room(line_timeout=10, ping_interval=5, ping_timeout=5)
    alice, slow = r.connect("alice"), r.connect("slow")
    anonymous = r.connect()
    r.lines(alice)
    caplog.set_level(logging.INFO, logger="apps.chat")
    for _ in range(6):  # t = 0, 1.5, ... 7.5
        slow.feed(b"x")
        anonymous.feed(b"y")
        r.say(alice, "PONG")  # alice keeps answering the heartbeat
        r.clock.advance(1.5)
    r.clock.advance(0.5)
    assert not slow.closed and not anonymous.closed
    r.clock.advance(0.5)  # t = 10
    for t in (slow, anonymous):
        assert r.lines(t)[-1] == "! error: no complete line within 10 s; closing"
        assert t.lost
    assert r.lines(alice) == ["* slow left (line timeout)"]
    assert caplog.text.count("no complete line within 10 s") == 2
    assert not alice.closed


def test_many_leaving_at_once_cost_a_write_per_client_not_per_client_per_leave() -> None:
    """A mass disconnect: each leave used to flush the room, a write to every
    member per leave (quadratic). Now the room gets one write each per turn."""
    r = Room(max_clients=0, max_per_ip=0)
    n = 200
    stay = [r.connect(f"stay{i}") for i in range(5)]
    go = [r.connect(f"go{i:03d}") for i in range(n)]
    for t in stay + go:
        r.lines(t)
        t.writes.clear()
    for i, t in enumerate(go):  # all in one turn: half send EOF, half reset
        if i % 2:
            t.feed_eof()
        else:
            t.feed_reset()
    notices = [f"* go{i:03d} left" + ("" if i % 2 else " (connection lost)") for i in range(n)]
    r.clock.advance(0)
    for t in stay:
        assert len(t.writes) == 1
        assert r.lines(t) == notices
    # A client that left with EOF still got what was queued before it left, in one write.
    for i in range(1, n, 2):
        assert len(go[i].writes) == 1
        assert r.lines(go[i]) == notices[:i]
        assert go[i].lost
    writes = sum(len(t.writes) for t in stay + go)
    assert writes == len(stay) + n // 2
    assert set(r.room.members) == {f"stay{i}" for i in range(5)}
    assert r.room.sessions.keys() == {r.session(t) for t in stay}


def test_a_member_who_joins_and_leaves_in_one_turn_gets_only_its_share(r: Room) -> None:
    alice = r.connect("alice")
    newcomer = r.connect()
    alice.feed(b"before\n")
    newcomer.feed(b"/nick bob\n")
    alice.feed(b"during\n")
    newcomer.feed(b"/quit\n")
    alice.feed(b"after\n")
    assert r.lines(newcomer) == ["* bob joined", "<alice> during", "= bye"]
    assert r.lines(alice) == [
        "<alice> before",
        "* bob joined",
        "<alice> during",
        "* bob left (quit)",
        "<alice> after",
    ]


def test_pipelined_commands_are_handled_a_few_per_turn_and_answered_in_order() -> None:
    clock = TurnClock()
    room = ChatRoom(clock, ChatConfig(max_lines_per_turn=8))
    t = SpyTransport(peername=("10.0.0.1", 5000))
    session = room.build_protocol(("10.0.0.1", 5000))
    t.connect(session)
    t.feed(b"/nick alice\n")
    while clock.soon:
        clock.turn()
    t.clear()
    handled: list[bytes] = []
    line_received = session.line_received

    def counting(line: bytes) -> None:
        handled.append(line)
        line_received(line)

    session.line_received = counting  # type: ignore[method-assign]
    commands = 500
    t.feed(b"".join(b"/who\n%d\n" % i for i in range(commands)))
    per_turn = [len(handled)]
    assert not t.is_reading()  # the rest waits for its turns
    while clock.soon:
        before = len(handled)
        clock.turn()
        per_turn.append(len(handled) - before)
    assert max(per_turn) == 8
    assert sum(per_turn) == 2 * commands
    assert t.is_reading()
    got = t.value().decode().split("\r\n")[:-1]
    assert got == [line for i in range(commands) for line in ("= 1 online: alice", f"<alice> {i}")]


def test_bidirectional_formatting_characters_are_refused_and_logged(
    r: Room, caplog: pytest.LogCaptureFixture
) -> None:
    alice, bob = r.connect("alice"), r.connect("bob")
    r.lines(alice)
    caplog.set_level(logging.INFO, logger="apps.chat")
    r.say(bob, "see invoice \u202egpj.exe")
    r.say(bob, "/msg alice \u2066hidden\u2069 and \u202a")
    r.say(bob, "/nick b\u202eob")
    assert r.lines(bob) == [
        "! error: bidirectional formatting characters (U+202E) are not allowed; line discarded",
        "! error: bidirectional formatting characters (U+2066, U+2069, U+202A) are not allowed; "
        "line discarded",
        "! error: bidirectional formatting characters (U+202E) are not allowed; line discarded",
    ]
    assert r.lines(alice) == []
    refused = [rec for rec in caplog.records if "line refused" in rec.getMessage()]
    assert len(refused) == 3
    assert all(rec.levelno == logging.INFO for rec in refused)
    assert "bob" in refused[0].getMessage()
    assert "U+202E" in refused[0].getMessage()
    # The invisible marks right-to-left text needs are fine.
    r.say(bob, "\u200f\u05e9\u05dc\u05d5\u05dd")
    assert r.lines(alice) == ["<bob> \u200f\u05e9\u05dc\u05d5\u05dd"]
    # Nicks are ASCII anyway: a bidi character in one is an invalid nick.
    assert wire.nick_problem("b\u202eob") is not None


def test_refused_lines_are_logged_with_the_reason_a_few_per_connection(
    r: Room, caplog: pytest.LogCaptureFixture
) -> None:
    t = r.connect("alice")
    caplog.set_level(logging.INFO, logger="apps.chat")
    r.say(t, "x" * 3000)
    for _ in range(8):
        r.say(t, b"caf\xe9")
    r.say(t, "\x1b[2J")
    assert len(r.lines(t)) == 10
    refused = [rec.getMessage() for rec in caplog.records if "line refused" in rec.getMessage()]
    assert len(refused) == 5
    assert "line too long (limit 2048 bytes)" in refused[0]
    assert "invalid UTF-8" in refused[1]
    assert refused[-1].endswith("further refusals are not logged")


def test_sanitize_hides_bidi_formatting_characters_from_the_terminal() -> None:
    assert wire.sanitize("a\u202eb\u2066c\u2069d\u200fe") == "a\ufffdb\ufffdc\ufffdd\u200fe"
    assert wire.bidi_controls("plain") == []
    out = io.BytesIO()
    protocol = ChatClientProtocol(Console(out, interactive=False), "a", lambda exc: None)
    t = MemoryTransport()
    t.connect(protocol)
    t.feed("<mallory> \u202eevil\r\n".encode())
    assert out.getvalue().decode() == "<mallory> \ufffdevil\n"


class CloseTimeoutSpy(MemoryTransport):
    """A MemoryTransport with the reactor's set_close_timeout(), recorded."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.close_timeouts: list[float] = []

    def set_close_timeout(self, seconds: float) -> None:
        self.close_timeouts.append(seconds)


def test_each_connection_gets_the_rooms_close_timeout() -> None:
    room = ChatRoom(Clock(), ChatConfig(close_timeout=2.5))
    t = CloseTimeoutSpy(peername=("10.0.0.1", 5000))
    t.connect(room.build_protocol(("10.0.0.1", 5000)))
    assert t.close_timeouts == [2.5]


def test_line_and_close_timeouts_come_from_the_command_line() -> None:
    args = build_parser().parse_args(
        ["server", "--line-timeout", "2.5", "--close-timeout", "0.5", "--backend", "select"]
    )
    config = config_from_args(args)
    assert (config.line_timeout, config.close_timeout) == (2.5, 0.5)
    with make_server_reactor("reactor-chat", args, config) as reactor:
        assert reactor.close_timeout == 0.5
        assert reactor.backend == "select"
