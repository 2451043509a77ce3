"""The udpchat app: the relay server and its clients end to end, plus the pieces in memory."""

from __future__ import annotations

import itertools
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from apps.udpchat.__main__ import main as udpchat_main
from apps.udpchat.client import (
    KEEPALIVE_MIN,
    LEAVE_WAIT,
    ChatClient,
    GapCounter,
    LanPeer,
    LineInput,
)
from apps.udpchat.server import RelayServer, size_receive_buffer
from apps.udpchat.wire import (
    COOKIE_SIZE,
    HELLO_MIN,
    MAX_DATAGRAM,
    Datagram,
    WireError,
    encode,
    encode_hello,
    encode_stats_request,
    parse,
)
from protocols.testing import Clock
from reactor import Reactor
from tests.app_helpers import (
    AppGroup,
    AppProcess,
    ServerProcess,
    Stdin,
    console_script,
    exit_code,
    exits_cleanly,
    exits_with,
    port_in_use,
    run_cli,
    stop_cleanly,
)

pytestmark = pytest.mark.timeout(60)


# ----------------------------------------------------------------- helpers


@pytest.fixture
def apps() -> Iterator[AppGroup]:
    """Apps started by a test are killed at its end, however it ends."""
    with AppGroup() as group:
        yield group


def start_server(apps: AppGroup, *args: str) -> tuple[ServerProcess, int]:
    server = apps.server("apps.udpchat", "server", *args)
    return server, server.port


def start_client(
    apps: AppGroup, port: int, nick: str, *args: str, stdin: Stdin = subprocess.PIPE
) -> AppProcess:
    return apps.start(
        "apps.udpchat", "client", "127.0.0.1", str(port), "--nick", nick, *args, stdin=stdin
    )


class RawPeer:
    """A hand-driven UDP socket talking to the server."""

    def __init__(self, port: int) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.connect(("127.0.0.1", port))

    def send(self, data: bytes) -> None:
        self.sock.send(data)

    def receive(self, timeout: float = 10.0) -> Datagram:
        self.sock.settimeout(timeout)
        return parse(self.sock.recv(65536))

    def pending(self) -> list[Datagram]:
        """What has arrived so far, without waiting."""
        got = []
        self.sock.setblocking(False)
        try:
            while True:
                got.append(parse(self.sock.recv(65536)))
        except BlockingIOError:
            return got

    def join(self, nick: str) -> tuple[str, Datagram]:
        """Do the handshake as ``nick``; returns the cookie and the WELCOME."""
        self.send(encode_hello(nick))
        challenge = self.receive()
        assert challenge.type == "COOKIE" and challenge.cookie is not None, challenge
        self.send(encode("VERIFY", cookie=challenge.cookie, nick=nick))
        return challenge.cookie, self.receive()

    def received_bytes(self) -> int:
        """How many bytes have arrived so far (read without waiting)."""
        total = 0
        self.sock.setblocking(False)
        try:
            while True:
                total += len(self.sock.recv(65536))
        except BlockingIOError:
            return total

    def stats(self) -> dict[str, int]:
        self.send(b"STATS")
        reply = self.receive()
        while reply.type != "STATS":  # skip what the server relayed meanwhile
            reply = self.receive()
        assert reply.stats is not None
        return reply.stats

    def close(self) -> None:
        self.sock.close()


# ----------------------------------------------------------------- end to end


def test_three_peers_exchange_messages(apps: AppGroup) -> None:
    server, port = start_server(apps)
    alice = start_client(apps, port, "alice")
    alice.expect(r"^\* welcome alice; nobody else")
    bob = start_client(apps, port, "bob")
    bob.expect(r"^\* welcome bob; 1 other\(s\) here: alice")
    alice.expect(r"^\* bob joined")
    carol = start_client(apps, port, "carol")
    carol.expect(r"^\* welcome carol; 2 other\(s\) here: alice, bob")
    alice.expect(r"^\* carol joined")
    bob.expect(r"^\* carol joined")

    for nick, speaker, others in (
        ("alice", alice, (bob, carol)),
        ("bob", bob, (alice, carol)),
        ("carol", carol, (alice, bob)),
    ):
        speaker.send(f"hello from {nick}, with ünïcödé\n")
        for other in others:
            other.expect(rf"^<{nick}> hello from {nick}, with ünïcödé$")

    alice.close_stdin()  # end of input: alice says goodbye and exits
    exits_cleanly(alice)
    bob.expect(r"^\* alice left")
    carol.expect(r"^\* alice left")
    assert not any(line.startswith("<alice>") for line in alice.lines)  # not echoed to her
    assert not any("lost" in line for app in (alice, bob, carol) for line in app.lines)

    server.proc.send_signal(signal.SIGTERM)
    for client in (bob, carol):
        client.expect(r"^\* server closed: the server is shutting down")
        exits_cleanly(client)
    exits_cleanly(server)
    server.expect(r"udpchat server stopped: 3 messages relayed 6 times; 0 datagrams dropped")
    assert "Traceback" not in server.stderr()


def test_a_silent_peer_expires_while_an_idle_client_stays(apps: AppGroup) -> None:
    # 3 s, the shortest: clients keep alive at most once a second.
    server, port = start_server(apps, "--peer-timeout", "3")
    alice = start_client(apps, port, "alice")
    alice.expect(r"^\* welcome alice")
    mute = RawPeer(port)
    try:
        _, welcome = mute.join("mute")
        assert welcome.type == "WELCOME"
        assert welcome.timeout == 3.0
        alice.expect(r"^\* mute joined")
        # mute says nothing more. alice types nothing either, but her client
        # keeps her alive: only mute is forgotten.
        alice.expect(r"^\* mute timed out", timeout=10)
        assert mute.pending() == []  # nothing came to mute meanwhile
        bob = start_client(apps, port, "bob")
        bob.expect(r"^\* welcome bob; 1 other\(s\) here: alice$")
        bob.send("anyone there?\n")
        alice.expect(r"^<bob> anyone there\?$")
        # The server sends to every peer in one go: had mute still been a
        # peer, its copy would be in its socket by now.
        assert all(d.type != "MSG" for d in mute.pending())
        stats = mute.stats()
        assert stats["expired"] == 1
        assert stats["peers"] == 2
    finally:
        mute.close()
    stop_cleanly(server)


def test_garbage_datagrams_are_counted_and_dropped(apps: AppGroup) -> None:
    server, port = start_server(apps)
    alice = start_client(apps, port, "alice")
    alice.expect(r"^\* welcome alice")
    bob = start_client(apps, port, "bob")
    bob.expect(r"^\* welcome bob")
    vandal = RawPeer(port)
    garbage = {
        "not_utf8": [b"\xff\xfe\xfd", b"SAY eve\n\xc3\x28"],
        "oversized": [b"SAY eve\n" + b"x" * MAX_DATAGRAM],
        "malformed": [
            b"",
            b"HELLO",
            b"HELLO two words",
            b"HELLO bad!nick",
            b"SAY eve",
            b"SAY eve\n",
            b"SAY eve\n\x1b[2Jescape",
            b"SAY  eve\nspaces",
            b"\x00\x01\x02",
            b"BYE eve\ntext",
        ],
        "unexpected": [b"MSG 1 eve\nforged", b"WELCOME 1 30\nhi", b"STATS peers=9"],
        # Well formed, but with no valid cookie (or too short to be answered).
        "unverified": [
            b"HELLO eve",
            b"SAY " + b"0" * 32 + b"\nforged",
            b"VERIFY " + b"0" * 32 + b" eve",
            b"BYE " + b"0" * 32,
        ],
    }
    try:
        for datagrams in garbage.values():
            for data in datagrams:
                vandal.send(data)
        stats = vandal.stats()
        for kind, datagrams in garbage.items():
            assert stats[kind] == len(datagrams), kind
        assert stats["dropped"] == sum(len(d) for d in garbage.values())
        assert stats["peers"] == 2  # the vandal never became one
    finally:
        vandal.close()
    # Nothing was relayed, and the server still works.
    alice.send("still here\n")
    bob.expect(r"^<alice> still here$")
    assert not any("forged" in line or "eve" in line for line in alice.lines + bob.lines)
    stop_cleanly(server)
    server.expect(
        r"20 datagrams dropped \(10 malformed, 1 oversized, 2 not UTF-8, 3 unexpected, "
        r"4 unverified, 0 rate-limited, 0 refused\)"
    )


def test_client_reads_piped_and_file_stdin_and_exits_at_its_end(
    apps: AppGroup, tmp_path: Path
) -> None:
    server, port = start_server(apps)
    alice = start_client(apps, port, "alice")
    alice.expect(r"^\* welcome alice")
    script = tmp_path / "lines.txt"
    script.write_bytes(b"first line\n\nsecond \xff line\r\nno newline at the end")
    with script.open("rb") as stdin:  # a regular file: epoll cannot watch it
        carol = start_client(apps, port, "carol", stdin=stdin)
        exits_cleanly(carol)
    alice.expect(r"^<carol> first line$")
    alice.expect(r"^<carol> second \ufffd line$")
    alice.expect(r"^<carol> no newline at the end$")
    alice.expect(r"^\* carol left$")
    piped = run_cli(
        "apps.udpchat",
        "client",
        "127.0.0.1",
        str(port),
        "--nick",
        "dave",
        input_text="x" * 2000 + "\nshort\n",
    )
    assert piped.returncode == 0, piped.stderr
    assert "line too long (2000 bytes; the limit is 1024): not sent" in piped.stdout
    alice.expect(r"^<dave> short$")
    stop_cleanly(server)


def test_broadcast_peers_find_each_other_without_a_server(apps: AppGroup) -> None:
    address = "127.255.255.255"
    probes = []
    try:
        for _ in range(2):
            probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            probes.append(probe)
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
            probe.bind(("0.0.0.0", probes[0].getsockname()[1] if len(probes) > 1 else 0))
            probe.settimeout(2)
        port = probes[0].getsockname()[1]
        probes[0].sendto(b"probe", (address, port))
        for probe in probes:
            probe.recv(100)
    except (OSError, AttributeError) as exc:
        pytest.skip(f"broadcast to {address} does not reach this host's sockets here: {exc}")
    finally:
        for probe in probes:
            probe.close()

    def start_client_bcast(nick: str) -> AppProcess:
        app = apps.start(
            "apps.udpchat",
            "client",
            address,
            str(port),
            "--nick",
            nick,
            "--broadcast",
            stdin=subprocess.PIPE,
        )
        app.expect(r"chatting by broadcast")
        return app

    ann = start_client_bcast("ann")
    ben = start_client_bcast("ben")
    ann.expect(r"^\* ben joined$")
    ben.expect(r"^\* ann is here$")
    cat = start_client_bcast("cat")
    cat.expect(r"^\* (ann|ben) is here$")
    cat.expect(r"^\* (ann|ben) is here$")
    ann.expect(r"^\* cat joined$")
    ben.expect(r"^\* cat joined$")
    ann.send("hi all\n")
    ben.expect(r"^<ann> hi all$")
    cat.expect(r"^<ann> hi all$")
    cat.send("hi ann\n")
    ann.expect(r"^<cat> hi ann$")
    ben.expect(r"^<cat> hi ann$")
    assert not any(line.startswith("<ann>") for line in ann.lines)
    ann.close_stdin()
    exits_cleanly(ann)
    ben.expect(r"^\* ann left$")
    cat.expect(r"^\* ann left$")
    for app in (ben, cat):
        stop_cleanly(app)


# ----------------------------------------------------------------- errors


def test_port_in_use_is_a_clear_error() -> None:
    with port_in_use(socket.SOCK_DGRAM) as port:
        result = run_cli("apps.udpchat", "server", "--port", str(port))
    assert exits_with(result, 1).startswith("reactor-udpchat: cannot bind UDP 127.0.0.1:")


def test_bad_arguments_exit_2() -> None:
    result = run_cli("apps.udpchat", "client", "127.0.0.1", "9", "--nick", "no spaces allowed")
    assert "argument --nick: 'no spaces allowed' is not a valid nick" in exits_with(result, 2)


@pytest.mark.parametrize(
    "args",
    [
        ["client", "127.0.0.1", "port", "--nick", "x"],
        ["client", "127.0.0.1", "0", "--nick", "x"],
        ["client", "127.0.0.1", "9"],
        ["server", "--peer-timeout", "-1"],
        ["server", "--peer-timeout", "2.9"],
        ["server", "--max-peers", "0"],
        ["server", "--max-peers-per-host", "0"],
        ["server", "--recv-buffer", "100"],
        ["client", "127.0.0.1", "9", "--nick", "x", "--keepalive", "0.000001"],
        ["client", "127.0.0.1", "9", "--nick", "x", "--keepalive", "3601"],
        ["server", "--port", "65536"],
        ["client", "example.invalid", "9", "--nick", "x", "--broadcast"],
        ["talk"],
    ],
)
def test_more_bad_arguments_exit_2(args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert exit_code(udpchat_main, args) == 2
    assert "reactor-udpchat" in capsys.readouterr().err


def test_help_explains_every_option(capsys: pytest.CaptureFixture[str]) -> None:
    for command, options in (
        (
            "server",
            (
                "--host",
                "--port",
                "--backend",
                "--log-level",
                "--peer-timeout",
                "--max-peers-per-host",
                "--recv-buffer",
            ),
        ),
        ("client", ("--nick", "--keepalive", "--broadcast", "HOST", "PORT", "--backend")),
    ):
        assert exit_code(udpchat_main, [command, "--help"]) == 0
        out = capsys.readouterr().out
        for option in options:
            assert option in out
    assert console_script("reactor-udpchat") == "apps.udpchat.__main__:main"


# ----------------------------------------------------------------- in memory


class FakeDatagramTransport:
    """Records what a datagram protocol sends (parsed, and the bytes per address)."""

    def __init__(self) -> None:
        self.sent: list[tuple[Datagram | bytes, Any]] = []
        self.bytes_to: dict[Any, int] = {}
        self.closing = False

    def sendto(self, data: bytes, addr: Any = None) -> None:
        self.bytes_to[addr] = self.bytes_to.get(addr, 0) + len(data)
        try:
            self.sent.append((parse(data), addr))
        except WireError:
            self.sent.append((data, addr))

    def close(self) -> None:
        self.closing = True

    def is_closing(self) -> bool:
        return self.closing

    def take(self) -> list[tuple[Datagram | bytes, Any]]:
        sent, self.sent = self.sent, []
        return sent

    def types(self) -> list[str]:
        """The types of what was sent since the last take() (which this is)."""
        return [d.type if isinstance(d, Datagram) else "?" for d, _ in self.take()]


def relay(**options: Any) -> tuple[Clock, RelayServer, FakeDatagramTransport]:
    clock = Clock()
    server = RelayServer(clock, secret=b"k" * 32, **options)
    transport = FakeDatagramTransport()
    server.connection_made(transport)
    return clock, server, transport


def cookie_from(transport: FakeDatagramTransport, addr: Any) -> str:
    """Take the COOKIE sent to ``addr`` out of what ``transport`` recorded."""
    for i, (d, to) in enumerate(transport.sent):
        if isinstance(d, Datagram) and d.type == "COOKIE" and to == addr:
            del transport.sent[i]
            assert d.cookie is not None
            return d.cookie
    raise AssertionError(f"no COOKIE was sent to {addr}: {transport.sent!r}")


def join(server: RelayServer, transport: FakeDatagramTransport, addr: Any, nick: str) -> str:
    """The handshake from ``addr`` as ``nick``; returns the cookie (the peer's token)."""
    server.datagram_received(encode_hello(nick), addr)
    cookie = cookie_from(transport, addr)
    server.datagram_received(encode("VERIFY", cookie=cookie, nick=nick), addr)
    return cookie


def test_wire_round_trips_and_refuses() -> None:
    data = encode("MSG", seq=7, nick="a_b.c-d", text="hi\tthere")
    assert data == b"MSG 7 a_b.c-d\nhi\tthere"
    assert parse(data) == Datagram("MSG", nick="a_b.c-d", seq=7, text="hi\tthere")
    cookie = "0123456789abcdef" * 2
    assert encode("SAY", cookie=cookie, text="bell\x07 and \x1b[m") == (
        f"SAY {cookie}\nbell  and  [m".encode()
    )
    assert parse(encode("WELCOME", seq=1, timeout=0.5, text="")).timeout == 0.5
    assert parse(b"STATS a=1 b_c=22").stats == {"a": 1, "b_c": 22}
    assert parse(encode_stats_request(cookie)) == Datagram("STATS", cookie=cookie)
    assert parse(encode("VERIFY", cookie=cookie, nick="x")).cookie == cookie
    assert parse(b"REFUSE\nfull") == Datagram("REFUSE", text="full")
    # HELLO: bare (not answered by the server) or padded to HELLO_MIN bytes.
    assert parse(b"HELLO x") == Datagram("HELLO", nick="x")
    for nick in ("x", "n" * 32):
        assert len(encode_hello(nick)) == HELLO_MIN > COOKIE_SIZE
        assert parse(encode_hello(nick)).nick == nick
    assert len(encode("COOKIE", cookie=cookie)) == COOKIE_SIZE
    # The shortest VERIFY may be answered with a COOKIE (a server that restarted).
    assert len(encode("VERIFY", cookie=cookie, nick="x")) >= COOKIE_SIZE
    for bad in (
        b"MSG 0 x\nseq zero",
        b"MSG 01 x\nleading zero",
        b"HERE ABCDEF12 x",
        b"JOIN 1 x",
        b"COOKIE " + b"A" * 32,
        b"COOKIE " + b"a" * 31,
        b"VERIFY " + b"a" * 32 + b" bad!nick",
        b"BYE " + b"a" * 32 + b"\ntext",
        b"SAY " + b"a" * 32 + b"\n",
        b"HELLO x\npadding with a \x1b control",
        b"REFUSE extra\nfull",
    ):
        with pytest.raises(WireError):
            parse(bad)
    with pytest.raises(ValueError):
        encode("SAY", cookie=cookie, text="y" * MAX_DATAGRAM)
    with pytest.raises(ValueError):
        encode("VERIFY", cookie=cookie, nick="bad nick")
    with pytest.raises(ValueError):
        encode_stats_request("not a cookie")


def test_server_numbers_per_peer_and_expires_the_silent() -> None:
    clock, server, transport = relay(peer_timeout=10.0)
    a, b = ("10.0.0.1", 1), ("10.0.0.2", 2)
    ta = join(server, transport, a, "alice")
    tb = join(server, transport, b, "bob")
    server.datagram_received(encode("SAY", cookie=tb, text="first"), b)
    server.datagram_received(encode("SAY", cookie=ta, text="second"), a)
    sent = [
        (d.type, d.seq, d.text, addr) for d, addr in transport.take() if isinstance(d, Datagram)
    ]
    assert sent == [
        ("WELCOME", 1, "welcome alice; nobody else is here yet", a),
        ("WELCOME", 1, "welcome bob; 1 other(s) here: alice", b),
        ("INFO", 2, "bob joined", a),
        ("MSG", 3, "first", a),
        ("MSG", 2, "second", b),
    ]
    clock.advance(6)
    server.datagram_received(encode("VERIFY", cookie=ta, nick="alice"), a)  # keepalive
    clock.advance(6)
    assert list(server.peers) == [a]
    assert [(d.type, d.seq, d.text) for d, _ in transport.take()] == [  # type: ignore[union-attr]
        ("INFO", 4, "bob timed out")
    ]
    assert server.stats()["expired"] == 1
    server.say_goodbye()
    assert [(d.type, addr) for d, addr in transport.take()] == [("CLOSE", a)]  # type: ignore[union-attr]
    server.connection_lost(None)
    assert clock.pending() == []


def test_server_refuses_peers_over_the_limit_and_strangers_stats() -> None:
    _, server, transport = relay(max_peers=1)
    one, two = ("192.0.2.1", 1), ("192.0.2.2", 2)
    token = join(server, transport, one, "one")
    join(server, transport, two, "two")
    assert list(server.peers) == [one]
    refusals = [(d, addr) for d, addr in transport.take() if getattr(d, "type", "") == "REFUSE"]
    assert [(d.text, addr) for d, addr in refusals] == [  # type: ignore[union-attr]
        ("the server is full (1 peers); try again later", two)
    ]
    # STATS is answered to this host and to a peer showing its token, not to
    # anyone: the answer is bigger than the question (no amplifier).
    server.datagram_received(b"STATS", ("192.0.2.9", 9))
    server.datagram_received(b"STATS", one)  # a peer's address, but no token: forgeable
    server.datagram_received(encode_stats_request("0" * 32), one)  # a wrong token
    assert transport.take() == []
    server.datagram_received(encode_stats_request(token), one)
    server.datagram_received(b"STATS", ("::1", 5, 0, 0))
    replies = [(d.stats, addr) for d, addr in transport.take() if isinstance(d, Datagram)]
    assert [addr for _, addr in replies] == [one, ("::1", 5, 0, 0)]
    assert replies[0][0] is not None and replies[0][0]["refused"] == 4


def test_gap_counter() -> None:
    strict = GapCounter(strict=True)
    assert [strict.check("s", n) for n in (1, 2, 5, 4, 6, 1, 3)] == [0, 0, 2, -1, 0, 0, 1]
    assert strict.lost == 3
    loose = GapCounter(strict=False)
    assert [loose.check("p", n) for n in (40, 41, 43)] == [0, 0, 1]


COOKIE = "c0ffee" + "0" * 26


def test_client_reports_lost_messages_and_closes_on_close() -> None:
    clock = Clock()
    out: list[str] = []
    closed: list[bool] = []
    client = ChatClient(clock, "me", output=out.append, on_closed=lambda: closed.append(True))
    transport = FakeDatagramTransport()
    client.connection_made(transport)
    assert transport.types() == ["HELLO"]
    client.datagram_received(f"COOKIE {COOKIE}".encode(), None)
    assert [(d.type, d.cookie, d.nick) for d, _ in transport.take()] == [  # type: ignore[union-attr]
        ("VERIFY", COOKIE, "me")
    ]
    client.datagram_received(b"WELCOME 1 3\nwelcome me", None)
    clock.advance(1.0)  # the keepalive follows the server's timeout: every 1 s
    assert transport.types() == ["VERIFY"]
    client.datagram_received(b"MSG 4 you\nhello", None)
    client.datagram_received(b"garbage", None)
    client.datagram_received(b"CLOSE 5\nbye", None)
    assert out == ["* welcome me", "* 2 messages lost", "<you> hello", "* server closed: bye"]
    assert client.dropped == 1
    assert transport.closing
    client.connection_lost(None)
    assert closed == [True]


def test_client_holds_lines_until_welcome_and_gives_up_in_time() -> None:
    clock = Clock()
    out: list[str] = []
    client = ChatClient(clock, "me", output=out.append)
    transport = FakeDatagramTransport()
    client.connection_made(transport)
    transport.take()
    client.say("early")  # not admitted yet: it waits
    client.leave()  # and so does the goodbye
    assert transport.take() == [] and not transport.closing
    client.datagram_received(f"COOKIE {COOKIE}".encode(), None)
    client.datagram_received(b"WELCOME 1 30\nwelcome me", None)
    sent = [d for d, _ in transport.take() if isinstance(d, Datagram)]
    assert [(d.type, d.cookie, d.text) for d in sent] == [
        ("VERIFY", COOKIE, None),
        ("SAY", COOKIE, "early"),
        ("BYE", COOKIE, None),
    ]
    assert transport.closing
    # A server that never answers: the goodbye waits LEAVE_WAIT seconds, no more.
    lonely = ChatClient(clock, "me", output=out.append)
    transport = FakeDatagramTransport()
    lonely.connection_made(transport)
    lonely.say("anyone?")
    lonely.leave()
    clock.advance(LEAVE_WAIT - 0.5)
    assert not transport.closing
    clock.advance(0.5)
    assert transport.closing
    assert out[-1] == f"* the server did not let us in within {LEAVE_WAIT:g} s: 1 line not sent"
    assert transport.types() == ["HELLO", "HELLO"]  # at 0 and 1 s (the next at 3 s); no BYE


def test_lan_peer_ignores_itself_and_tracks_others() -> None:
    clock = Clock()
    out: list[str] = []
    me = LanPeer(clock, "me", ("127.255.255.255", 9), output=out.append, peer_id="0000000a")
    transport = FakeDatagramTransport()
    me.connection_made(transport)
    me.datagram_received(b"JOIN 0000000a me", None)  # our own, looped back
    me.datagram_received(b"JOIN 0000000b you", None)
    me.datagram_received(b"BMSG 0000000b 1 you\nhi", None)
    me.datagram_received(b"BMSG 0000000b 3 you\nagain", None)
    me.say("hello")
    sent = [d for d, _ in transport.take() if isinstance(d, Datagram)]
    assert [d.type for d in sent] == ["JOIN", "HERE", "BMSG"]
    assert sent[2].peer_id == "0000000a" and sent[2].seq == 1
    clock.advance(31)
    assert out == ["* you joined", "<you> hi", "* 1 message lost from you", "<you> again",
                   "* you timed out"]  # fmt: skip


def test_line_input_splits_lines_from_a_pipe() -> None:
    got: list[str] = []
    ended: list[bool] = []
    r, w = os.pipe()
    with Reactor() as reactor:
        lines = LineInput(reactor, r, got.append, lambda: ended.append(True))
        lines.start()
        os.write(w, b"one\ntw")
        deadline = time.monotonic() + 5
        while not got and time.monotonic() < deadline:
            reactor.run_once(0.1)
        os.write(w, b"o\nthree")
        os.close(w)
        while not ended and time.monotonic() < deadline:
            reactor.run_once(0.1)
    os.close(r)
    assert got == ["one", "two", "three"]
    assert ended == [True]


# ------------------------------------------------- hardening (issue 11): the relay


def forged_datagrams(nick: str, *, stats: bool = True) -> list[bytes]:
    """What an attacker may send in someone else's name, knowing no cookie.

    ``stats=False`` leaves out the STATS requests, which this host may send.
    """
    zeros = "0" * 32
    asks = [b"STATS", encode_stats_request(zeros)] if stats else []
    return [
        encode("HELLO", nick=nick),  # 7 bytes for a 1-letter nick: the cheapest
        encode_hello(nick),  # padded: answered with a COOKIE no bigger than itself
        encode("VERIFY", cookie=zeros, nick=nick),
        encode("SAY", cookie=zeros, text="spam"),
        encode("BYE", cookie=zeros),
        *asks,
        b"garbage",
    ]


def test_a_forged_source_never_gets_more_bytes_than_were_sent_in_its_name() -> None:
    clock, server, transport = relay(peer_timeout=30.0)
    a, b = ("10.0.0.1", 1), ("10.0.0.2", 2)
    ta, tb = join(server, transport, a, "alice"), join(server, transport, b, "bob")
    victim, bare = ("198.51.100.7", 4444), ("198.51.100.8", 5555)
    sent_as_victim = 0
    # For 60 s the attacker sends all it can in the victim's name, while the
    # peers chat and keep alive (the old relay admitted the victim on its
    # first HELLO and sent it every notice and message from then on).
    for second in range(60):
        for data in forged_datagrams("x"):
            server.datagram_received(data, victim)
            sent_as_victim += len(data)
        server.datagram_received(b"HELLO x", bare)
        for addr, token, nick in ((a, ta, "alice"), (b, tb, "bob")):
            server.datagram_received(encode("VERIFY", cookie=token, nick=nick), addr)
            server.datagram_received(encode("SAY", cookie=token, text=f"at {second}"), addr)
        clock.advance(1.0)
    assert victim not in server.peers and bare not in server.peers
    assert transport.bytes_to.get(bare, 0) == 0  # a bare 7-byte HELLO gets nothing at all
    assert 0 < transport.bytes_to[victim] <= sent_as_victim
    sent_to_victim = [d for d, addr in transport.sent if addr == victim]
    assert {d.type for d in sent_to_victim} == {"COOKIE"}  # type: ignore[union-attr]
    assert sorted(server.peers) == [a, b]
    assert server.counters["relayed"] == 120


def test_a_forged_source_gets_nothing_from_a_running_relay(apps: AppGroup) -> None:
    server, port = start_server(apps)
    alice = start_client(apps, port, "alice")
    alice.expect(r"^\* welcome alice")
    victim, observer = RawPeer(port), RawPeer(port)
    try:
        victim.send(b"HELLO x")  # the 7-byte HELLO of the report
        sent = 7
        # (Not STATS: this host is trusted with it, and a source address
        # on loopback cannot be forged from another host.)
        for data in forged_datagrams("alice", stats=False):
            victim.send(data)
            sent += len(data)
        bob = start_client(apps, port, "bob")
        bob.expect(r"^\* welcome bob; 1 other\(s\) here: alice$")
        alice.send("hi bob\n")
        bob.expect(r"^<alice> hi bob$")
        stats = observer.stats()  # the relay has handled all the above by now
        got = victim.received_bytes()
        assert got <= sent, f"the relay sent {got} bytes to an address that sent {sent}"
        assert stats["peers"] == 2  # alice and bob, not the victim
        assert stats["unverified"] == 5  # the two short HELLOs, VERIFY, SAY and BYE
        assert stats["malformed"] == 1
    finally:
        victim.close()
        observer.close()
    assert not any("spam" in line for line in alice.lines + bob.lines)
    stop_cleanly(server)


def test_a_forged_bye_or_say_cannot_act_for_a_peer() -> None:
    _, server, transport = relay()
    a, b = ("10.0.0.1", 1), ("10.0.0.2", 2)
    ta, tb = join(server, transport, a, "alice"), join(server, transport, b, "bob")
    transport.take()
    # Datagrams forged with alice's source address, without her token (or
    # with bob's): no goodbye, no message, no rename.
    for data in (
        encode("BYE", cookie="0" * 32),
        encode("BYE", cookie=tb),
        encode("SAY", cookie="f" * 32, text="I am alice"),
        encode("SAY", cookie=tb, text="I am alice"),
        encode("VERIFY", cookie="1" * 32, nick="mallory"),
        encode("HELLO", nick="alice"),
    ):
        server.datagram_received(data, a)
    assert sorted(server.peers) == [a, b] and server.peers[a].nick == "alice"
    assert [(d.type, addr) for d, addr in transport.take()] == [  # type: ignore[union-attr]
        ("COOKIE", a)  # offered to each SAY and VERIFY (big enough to answer), no more
    ] * 3
    assert server.counters["unverified"] == 6 and server.counters["relayed"] == 0
    server.datagram_received(encode("BYE", cookie=ta), a)  # alice herself
    assert list(server.peers) == [b]


def test_a_nick_belongs_to_one_address() -> None:
    _, server, transport = relay()
    a, c = ("10.0.0.1", 1), ("10.0.0.3", 3)
    ta = join(server, transport, a, "alice")
    join(server, transport, c, "ALICE")  # letter case aside, the same nick
    assert list(server.peers) == [a]
    refused = [d for d, addr in transport.take() if addr == c]
    assert [(d.type, d.text) for d in refused] == [  # type: ignore[union-attr]
        ("REFUSE", "the nick ALICE is taken by someone else here; choose another with --nick")
    ]
    tc = join(server, transport, c, "carol")
    transport.take()
    server.datagram_received(encode("VERIFY", cookie=tc, nick="alice"), c)  # a rename
    assert server.peers[c].nick == "carol"
    assert [(d.type, d.text, addr) for d, addr in transport.take()] == [  # type: ignore[union-attr]
        ("INFO", "the nick alice is taken; you are still carol", c)
    ]
    server.datagram_received(encode("BYE", cookie=ta), a)
    server.datagram_received(encode("VERIFY", cookie=tc, nick="alice"), c)  # free now
    assert server.peers[c].nick == "alice"


def test_one_host_cannot_fill_the_table() -> None:
    _, server, transport = relay(max_peers=50, max_peers_per_host=4)
    for port in range(1, 61):  # the report: 60 source ports of one host
        join(server, transport, ("192.0.2.1", port), f"n{port}")
    assert len(server.peers) == 4
    refusals = [d for d, _ in transport.take() if getattr(d, "type", "") == "REFUSE"]
    assert len(refusals) == 56
    assert refusals[0].text == (  # type: ignore[union-attr]
        "already 4 peers from your host (the server's --max-peers-per-host); close one first"
    )
    join(server, transport, ("192.0.2.2", 1), "other")  # another host still gets in
    # IPv6: a host is its /64; an IPv4-mapped address is the IPv4 host.
    for i in range(6):
        join(server, transport, (f"2001:db8::{i + 1}", 9, 0, 0), f"six{i}")
    join(server, transport, ("2001:db8:0:1::1", 9, 0, 0), "elsewhere")
    join(server, transport, ("::ffff:192.0.2.1", 7, 0, 0), "mapped")
    nicks = {peer.nick for peer in server.peers.values()}
    assert {"other", "six0", "six3", "elsewhere"} <= nicks
    assert not {"six4", "six5", "mapped"} & nicks
    assert server.stats()["refused"] == 56 + 2 + 1


def test_max_peers_per_host_refuses_a_client_with_the_reason(apps: AppGroup) -> None:
    server, port = start_server(apps, "--max-peers-per-host", "1")
    alice = start_client(apps, port, "alice")
    alice.expect(r"^\* welcome alice")
    bob = start_client(apps, port, "bob")  # from the same host: 127.0.0.1
    bob.expect(
        r"^\* the server refused us: already 1 peers from your host "
        r"\(the server's --max-peers-per-host\); close one first$"
    )
    code, err = bob.finish()
    assert code == 1 and "Traceback" not in err
    stop_cleanly(alice)
    stop_cleanly(server)


def test_cookies_are_bound_to_the_address_and_expire() -> None:
    clock, server, transport = relay()
    a, b = ("10.0.0.1", 1), ("10.0.0.2", 2)
    server.datagram_received(encode_hello("alice"), a)
    cookie = cookie_from(transport, a)
    assert cookie == server.cookie_for(a) != server.cookie_for(b)
    server.datagram_received(encode("VERIFY", cookie=cookie, nick="bob"), b)  # a's cookie
    assert b not in server.peers
    assert transport.types() == ["COOKIE"]  # b is offered its own instead
    clock.advance(61.0)  # two windows of 30 s later, the cookie is stale
    server.datagram_received(encode("VERIFY", cookie=cookie, nick="alice"), a)
    assert a not in server.peers
    fresh = cookie_from(transport, a)
    assert fresh != cookie
    other = RelayServer(Clock(61.0), secret=b"another secret")  # another server's cookie
    assert other.cookie_for(a) != fresh
    server.datagram_received(encode("VERIFY", cookie=fresh, nick="alice"), a)
    assert a in server.peers
    assert server.counters["unverified"] == 2


def test_cookies_are_rate_limited() -> None:
    clock, server, transport = relay(cookie_rate=100.0)
    hello = encode_hello("x")
    for i in range(1000):
        server.datagram_received(hello, ("203.0.113.1", 1000 + i))
    assert transport.types().count("COOKIE") == 100
    assert server.stats()["rate_limited"] == 900
    clock.advance(0.5)
    for i in range(1000):
        server.datagram_received(hello, ("203.0.113.2", 1000 + i))
    assert transport.types().count("COOKIE") == 50


def test_drops_are_reported_in_stats_and_logged_at_info_rate_limited(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock, server, transport = relay()
    server.recv_buffer = 425984
    caplog.set_level("INFO", logger="apps.udpchat.server")
    flood = ("203.0.113.9", 9)
    for _ in range(10_000):
        server.datagram_received(b"\x00garbage", flood)
    server.datagram_received(b"HELLO short", flood)
    infos = [r.getMessage() for r in caplog.records if r.levelname == "INFO"]
    assert infos == [
        "dropped a datagram from 203.0.113.9:9 (malformed): unknown type '\\x00garbage'"
    ]
    clock.advance(10.0)  # the sweeper reports what was held back, in one line
    infos = [r.getMessage() for r in caplog.records if r.levelname == "INFO"]
    assert len(infos) == 2
    assert infos[1].startswith(
        "dropped 10000 more datagrams since the last report (9999 malformed, 1 unverified); "
        "the latest from 203.0.113.9:9 (unverified): a HELLO of 11 bytes is not answered"
    )
    server.datagram_received(b"STATS", ("127.0.0.1", 5))
    (reply,) = [d for d, _ in transport.take() if isinstance(d, Datagram)]
    assert reply.stats is not None
    assert {k: reply.stats[k] for k in ("dropped", "malformed", "unverified", "rate_limited")} == {
        "dropped": 10_001,
        "malformed": 10_000,
        "unverified": 1,
        "rate_limited": 0,
    }
    assert reply.stats["recv_buffer"] == 425984


def test_the_relay_reports_the_receive_buffer_it_got(apps: AppGroup) -> None:
    server, port = start_server(apps)
    match = server.expect(r"^udpchat server receive buffer: (\d+) bytes")
    observer = RawPeer(port)
    try:
        assert observer.stats()["recv_buffer"] == int(match.group(1))
    finally:
        observer.close()
    stop_cleanly(server)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        default = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
        assert size_receive_buffer(sock, 4 * 1024 * 1024) >= default


# ------------------------------------------------ hardening (issue 11): the clients


def test_a_client_rejoins_a_relay_that_restarted() -> None:
    clock = Clock()
    out: list[str] = []
    client = ChatClient(clock, "me", output=out.append)
    to_server, to_client = FakeDatagramTransport(), FakeDatagramTransport()
    me = ("10.0.0.5", 5)

    def pump(server: RelayServer) -> None:
        for _ in range(10):  # a handshake takes two round trips
            raw = [encode_raw(d) for d, _ in to_server.take()]
            for data in raw:
                server.datagram_received(data, me)
            back = [encode_raw(d) for d, addr in to_client.take() if addr == me]
            for data in back:
                client.datagram_received(data, None)
            if not raw and not back:
                return
        raise AssertionError("the client and the server never went quiet")

    first = RelayServer(clock, secret=b"first")
    first.connection_made(to_client)
    client.connection_made(to_server)
    pump(first)
    assert client.admitted and me in first.peers
    second = RelayServer(clock, secret=b"second")  # the relay restarted: it knows nobody
    second.connection_made(to_client)
    clock.advance(KEEPALIVE_MIN)  # (a client answers one COOKIE a second at most)
    client.say("lost, alas")
    pump(second)  # the SAY is dropped, but answered with a COOKIE: the client re-joins
    assert me in second.peers
    assert out == ["* welcome me; nobody else is here yet"] * 2
    assert second.counters["unverified"] == 1


def encode_raw(d: Datagram | bytes) -> bytes:
    """A recorded datagram back to its bytes (they parsed, so they encode)."""
    if isinstance(d, bytes):
        return d
    if d.type == "STATS":
        return encode_stats_request(d.cookie)
    return encode(
        d.type,
        nick=d.nick,
        seq=d.seq,
        text=d.text,
        peer_id=d.peer_id,
        timeout=d.timeout,
        cookie=d.cookie,
    )


def test_the_client_clamps_the_keepalive_a_server_announces(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    client = ChatClient(clock, "me", output=lambda _: None)
    transport = FakeDatagramTransport()
    client.connection_made(transport)
    client.datagram_received(f"COOKIE {COOKIE}".encode(), None)
    transport.take()
    caplog.set_level("WARNING", logger="apps.udpchat.client")
    for seq in range(1, 101):  # the report's 0.000001 s, again and again
        client.datagram_received(f"WELCOME {seq} 0.000001\nhi".encode(), None)
    assert client.interval == KEEPALIVE_MIN
    clock.advance(10.0)
    assert transport.types() == ["VERIFY"] * 10  # not 81,814 a second: one
    warnings = [r.getMessage() for r in caplog.records]
    assert warnings == [
        "the server announced a peer timeout of 1e-06 s, which asks for a keepalive every "
        "3.33333e-07 s: sending one every 1 s instead, the least allowed (the server may "
        "forget us; its --peer-timeout should be at least 3 s)"
    ]
    client.datagram_received(b"WELCOME 101 0\nhi", None)  # nonsense: the own interval
    assert client.interval == 10.0
    for asked, used in ((1e-6, 1.0), (0.0, 1.0), (float("nan"), 1.0), (1e9, 3600.0)):
        assert ChatClient(Clock(), "me", keepalive=asked).interval == used
    assert "sending one every 3600 s" in caplog.records[-1].getMessage()


def test_the_client_keeps_alive_once_a_second_at_most_against_a_fake_relay(
    apps: AppGroup,
) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as fake:
        fake.bind(("127.0.0.1", 0))
        fake.settimeout(10)
        client = start_client(apps, fake.getsockname()[1], "me")
        hello, addr = fake.recvfrom(2048)
        assert parse(hello).type == "HELLO" and len(hello) == HELLO_MIN
        fake.sendto(f"COOKIE {COOKIE}".encode(), addr)
        assert parse(fake.recvfrom(2048)[0]).type == "VERIFY"
        fake.sendto(b"WELCOME 1 0.000001\nwelcome me, keep alive every microsecond", addr)
        client.expect(r"^\* welcome me, keep alive every microsecond$")
        arrivals: list[float] = []
        count = 0
        while len(arrivals) < 3:  # bounded: each keepalive comes within 10 s or fails
            data, _ = fake.recvfrom(2048)
            count += 1
            assert count < 10, "the client sends far more than keepalives"
            if parse(data).type == "VERIFY":
                arrivals.append(time.monotonic())
        gaps = [later - earlier for earlier, later in itertools.pairwise(arrivals)]
        assert all(gap > 0.8 for gap in gaps), gaps
    stop_cleanly(client)
    assert "sending one every 1 s instead, the least allowed" in client.stderr()


def test_the_client_answers_at_most_one_cookie_a_second() -> None:
    clock = Clock()
    client = ChatClient(clock, "me", output=lambda _: None)
    transport = FakeDatagramTransport()
    client.connection_made(transport)
    transport.take()
    for i in range(1000):
        client.datagram_received(f"COOKIE {i:032x}".encode(), None)
    assert transport.types() == ["VERIFY"]
    assert client.cookie == f"{0:032x}" and client.dropped == 999
    clock.advance(KEEPALIVE_MIN)
    client.datagram_received(f"COOKIE {7:032x}".encode(), None)
    # The join retry (1 s after the HELLO) with the first cookie, then the new one.
    assert [d.cookie for d, _ in transport.take()] == [f"{0:032x}", f"{7:032x}"]  # type: ignore[union-attr]


def test_a_lan_peer_answers_a_flood_of_joins_once_a_second() -> None:
    clock = Clock()
    me = LanPeer(clock, "me", ("127.255.255.255", 9), output=lambda _: None, peer_id="0000000a")
    transport = FakeDatagramTransport()
    me.connection_made(transport)
    transport.take()
    for i in range(500):
        me.datagram_received(f"JOIN {i + 16:08x} n{i}".encode(), None)
    assert transport.types() == ["HERE"]  # the first JOIN is answered at once
    clock.advance(KEEPALIVE_MIN / 2)
    assert transport.types() == []
    clock.advance(KEEPALIVE_MIN / 2)
    assert transport.types() == ["HERE"]  # the 499 others, a second later, once
    clock.advance(5.0)
    me.datagram_received(b"JOIN 0000ffff late", None)
    assert transport.types() == ["HERE"]
    me.datagram_received(b"JOIN 0000fffe later", None)
    me.connection_lost(None)
    assert clock.pending() == []
