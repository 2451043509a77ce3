"""The udpchat app: the relay server and its clients end to end, plus the pieces in memory."""

from __future__ import annotations

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
from apps.udpchat.client import ChatClient, GapCounter, LanPeer, LineInput
from apps.udpchat.server import RelayServer
from apps.udpchat.wire import MAX_DATAGRAM, Datagram, WireError, encode, parse
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


def test_a_silent_peer_expires_while_an_idle_client_stays(apps: AppGroup) -> None:
    server, port = start_server(apps, "--peer-timeout", "1")
    alice = start_client(apps, port, "alice")
    alice.expect(r"^\* welcome alice")
    mute = RawPeer(port)
    try:
        mute.send(b"HELLO mute")
        welcome = mute.receive()
        assert welcome.type == "WELCOME"
        assert welcome.timeout == 1.0
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
    server.expect(r"16 datagrams dropped \(10 malformed, 1 oversized, 2 not UTF-8, 3 unexpected")


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
        ["server", "--max-peers", "0"],
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
        ("server", ("--host", "--port", "--backend", "--log-level", "--peer-timeout")),
        ("client", ("--nick", "--keepalive", "--broadcast", "HOST", "PORT", "--backend")),
    ):
        assert exit_code(udpchat_main, [command, "--help"]) == 0
        out = capsys.readouterr().out
        for option in options:
            assert option in out
    assert console_script("reactor-udpchat") == "apps.udpchat.__main__:main"


# ----------------------------------------------------------------- in memory


class FakeDatagramTransport:
    """Records what a datagram protocol sends."""

    def __init__(self) -> None:
        self.sent: list[tuple[Datagram | bytes, Any]] = []
        self.closing = False

    def sendto(self, data: bytes, addr: Any = None) -> None:
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


def test_wire_round_trips_and_refuses() -> None:
    data = encode("MSG", seq=7, nick="a_b.c-d", text="hi\tthere")
    assert data == b"MSG 7 a_b.c-d\nhi\tthere"
    assert parse(data) == Datagram("MSG", nick="a_b.c-d", seq=7, text="hi\tthere")
    assert encode("SAY", nick="x", text="bell\x07 and \x1b[m") == b"SAY x\nbell  and  [m"
    assert parse(encode("WELCOME", seq=1, timeout=0.5, text="")).timeout == 0.5
    assert parse(b"STATS a=1 b_c=22").stats == {"a": 1, "b_c": 22}
    for bad in (b"MSG 0 x\nseq zero", b"MSG 01 x\nleading zero", b"HERE ABCDEF12 x", b"JOIN 1 x"):
        with pytest.raises(WireError):
            parse(bad)
    with pytest.raises(ValueError):
        encode("SAY", nick="x", text="y" * MAX_DATAGRAM)
    with pytest.raises(ValueError):
        encode("SAY", nick="bad nick", text="y")


def test_server_numbers_per_peer_and_expires_the_silent() -> None:
    clock = Clock()
    server = RelayServer(clock, peer_timeout=10.0)
    transport = FakeDatagramTransport()
    server.connection_made(transport)
    a, b = ("10.0.0.1", 1), ("10.0.0.2", 2)
    server.datagram_received(b"HELLO alice", a)
    server.datagram_received(b"SAY bob\nfirst", b)  # a SAY also joins
    server.datagram_received(b"SAY alice\nsecond", a)
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
    server.datagram_received(b"HELLO alice", a)  # keepalive
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
    server = RelayServer(Clock(), max_peers=1)
    transport = FakeDatagramTransport()
    server.connection_made(transport)
    server.datagram_received(b"HELLO one", ("192.0.2.1", 1))
    server.datagram_received(b"HELLO two", ("192.0.2.1", 2))
    assert list(server.peers) == [("192.0.2.1", 1)]
    transport.take()
    # STATS is answered to peers and to this host, not to anyone (no amplifier).
    server.datagram_received(b"STATS", ("192.0.2.9", 9))
    assert transport.take() == []
    server.datagram_received(b"STATS", ("192.0.2.1", 1))
    server.datagram_received(b"STATS", ("::1", 5, 0, 0))
    replies = [(d.stats, addr) for d, addr in transport.take() if isinstance(d, Datagram)]
    assert [addr for _, addr in replies] == [("192.0.2.1", 1), ("::1", 5, 0, 0)]
    assert replies[0][0] is not None and replies[0][0]["refused"] == 2


def test_gap_counter() -> None:
    strict = GapCounter(strict=True)
    assert [strict.check("s", n) for n in (1, 2, 5, 4, 6, 1, 3)] == [0, 0, 2, -1, 0, 0, 1]
    assert strict.lost == 3
    loose = GapCounter(strict=False)
    assert [loose.check("p", n) for n in (40, 41, 43)] == [0, 0, 1]


def test_client_reports_lost_messages_and_closes_on_close() -> None:
    clock = Clock()
    out: list[str] = []
    closed: list[bool] = []
    client = ChatClient(clock, "me", output=out.append, on_closed=lambda: closed.append(True))
    transport = FakeDatagramTransport()
    client.connection_made(transport)
    assert [d.type for d, _ in transport.take()] == ["HELLO"]  # type: ignore[union-attr]
    client.datagram_received(b"WELCOME 1 3\nwelcome me", None)
    clock.advance(1.0)  # the keepalive follows the server's timeout: every 1 s
    assert [d.type for d, _ in transport.take()] == ["HELLO"]  # type: ignore[union-attr]
    client.datagram_received(b"MSG 4 you\nhello", None)
    client.datagram_received(b"garbage", None)
    client.datagram_received(b"CLOSE 5\nbye", None)
    assert out == ["* welcome me", "* 2 messages lost", "<you> hello", "* server closed: bye"]
    assert client.dropped == 1
    assert transport.closing
    client.connection_lost(None)
    assert closed == [True]


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
