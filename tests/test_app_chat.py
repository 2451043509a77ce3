"""The chat app end to end: a real server in a subprocess, clients over loopback.

The server is started with ``python -m apps.chat server --port 0`` and the
port is read from its listening line. Clients are plain ``socket`` objects
(:class:`LineSocket`: a complete chat client in a few lines, which is the
point of a line protocol) or the bundled client in a subprocess. Tests wait
for lines, never for time to pass; every wait has a deadline that only
bounds a broken test.
"""

from __future__ import annotations

import logging
import os
import queue
import re
import select
import selectors
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import cast

import pytest

from apps.chat.__main__ import build_parser
from apps.chat.server import (
    ChatRoom,
    ChatSession,
    config_from_args,
    make_factory,
    make_server_reactor,
)
from reactor import FactoryArg, available_backends
from tests.app_helpers import (
    REPO,
    AppProcess,
    ServerProcess,
    Stdin,
    app_command,
    app_env,
    exits_cleanly,
    exits_with,
    port_in_use,
    run_cli,
)
from tests.conftest import run_until

pytestmark = pytest.mark.timeout(60)

WAIT = 10.0  # how long any one expected event may take before the test fails


def run_chat(*args: str, stdin: Stdin = subprocess.DEVNULL) -> subprocess.CompletedProcess[str]:
    """Run ``python -m apps.chat ARGS`` to completion (input: ``stdin``, by default none)."""
    return run_cli("apps.chat", *args, stdin=stdin)


class ChatServer(ServerProcess):
    """``python -m apps.chat server ARGS --port 0`` in a subprocess; stderr goes to a file."""

    def __init__(self, *args: str) -> None:
        super().__init__("apps.chat", "server", *args)
        pattern = r"chat server listening on 127\.0\.0\.1:\d+ \(backend \w+\)"
        assert re.fullmatch(pattern, self.listening), self.listening


class LineSocket:
    """A chat client made of a plain blocking socket, a line buffer and a reader thread.

    The thread reads lines as they come and answers ``PING`` with ``PONG`` at
    once (unless ``auto_pong`` is off), so a client the test is not looking at
    right now still keeps up with short heartbeats; :meth:`expect` takes the
    lines in order, and every line taken is kept in ``history``.
    :meth:`stop_reading` makes it a client that stops reading.
    """

    def __init__(
        self,
        port: int,
        nick: str | None = None,
        *,
        auto_pong: bool = True,
        rcvbuf: int | None = None,
        welcome: bool = True,
    ) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(WAIT)
        self.sock.connect(("127.0.0.1", port))
        self.sock.settimeout(None)
        self.auto_pong = auto_pong
        self.history: list[str] = []
        self.pings = 0
        self._lines: queue.Queue[str | BaseException | None] = queue.Queue()
        self._send_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read_lines, daemon=True)
        self._thread.start()
        if welcome:
            self.expect(lambda line: line.startswith("= welcome"))
        if nick is not None:
            self.send(f"/nick {nick}")
            self.expect(f"* {nick} joined")

    def send(self, line: str | bytes, end: bytes = b"\n") -> None:
        data = line.encode() if isinstance(line, str) else line
        with self._send_lock:
            self.sock.sendall(data + end)

    def _read_lines(self) -> None:
        buf = b""
        try:
            while not self._stop.is_set():
                if not select.select([self.sock], [], [], 0.05)[0]:
                    continue
                chunk = self.sock.recv(65536)
                if not chunk:
                    self._lines.put(None)
                    return
                buf += chunk
                *lines, buf = buf.split(b"\n")
                for raw in lines:
                    line = raw.rstrip(b"\r").decode("utf-8")
                    if line == "PING" and self.auto_pong:
                        self.send("PONG")
                    self._lines.put(line)
        except (OSError, ValueError) as exc:
            if not self._stop.is_set():
                self._lines.put(exc)

    def stop_reading(self) -> None:
        """Stop reading from the socket (what is already read can still be taken)."""
        self._stop.set()
        self._thread.join(WAIT)

    def read_line(self, timeout: float = WAIT) -> str | None:
        """The next line (without its line end), or None at EOF; TimeoutError if none comes."""
        try:
            item = self._lines.get(timeout=max(0.0, timeout))
        except queue.Empty:
            raise TimeoutError(f"no line within {timeout} s") from None
        if item is None:
            self._lines.put(None)  # EOF stays EOF
            return None
        if isinstance(item, BaseException):
            self._lines.put(item)
            raise item
        self.history.append(item)
        if item == "PING":
            self.pings += 1
        return item

    def expect(self, want: str | Callable[[str], bool], timeout: float = WAIT) -> str:
        """Read until a line equals ``want`` (or satisfies it); fail on EOF or timeout."""
        match = want if callable(want) else (lambda line: line == want)
        start = len(self.history)
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.read_line(deadline - time.monotonic())
            except TimeoutError:
                pytest.fail(f"timed out waiting for {want!r}; read {self.history[start:]!r}")
            if line is None:
                pytest.fail(f"EOF while waiting for {want!r}; read {self.history[start:]!r}")
            if match(line):
                return line

    def expect_all(self, wanted: list[str], timeout: float = WAIT) -> None:
        """Read until every line in ``wanted`` has come, in any order."""
        missing = list(wanted)
        deadline = time.monotonic() + timeout
        while missing:
            line = self.expect(lambda line: line in missing, deadline - time.monotonic())
            missing.remove(line)

    def expect_eof(self, timeout: float = WAIT) -> list[str]:
        """Read until the server closes cleanly (not a reset); returns the lines read meanwhile."""
        start = len(self.history)
        deadline = time.monotonic() + timeout
        while self.read_line(deadline - time.monotonic()) is not None:
            pass
        return self.history[start:]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(WAIT)
        self.sock.close()


@pytest.fixture
def sockets() -> Iterator[list[LineSocket]]:
    """A list the test appends its LineSockets to; all closed afterwards."""
    made: list[LineSocket] = []
    yield made
    for s in made:
        s.close()


# ---------------------------------------------------------------- command line


def test_help_explains_every_option() -> None:
    top = run_chat("--help")
    assert top.returncode == 0
    assert "server" in top.stdout and "client" in top.stdout
    server = run_chat("server", "--help")
    assert server.returncode == 0
    for option in (
        "--host",
        "--port",
        "--backend",
        "--log-level",
        "--max-line",
        "--max-output",
        "--max-clients",
        "--max-per-ip",
        "--ping-interval",
        "--ping-timeout",
        "--nick-timeout",
        "--line-timeout",
        "--close-timeout",
    ):
        assert option in server.stdout
    client = run_chat("client", "--help")
    assert client.returncode == 0
    for word in ("host", "port", "--nick", "--backend", "--log-level"):
        assert word in client.stdout


@pytest.mark.parametrize(
    "args",
    [
        ["server", "--port", "70000"],
        ["server", "--backend", "carrier-pigeon"],
        ["client", "127.0.0.1", "8070"],
        [],
    ],
    ids=["bad-port", "bad-backend", "no-nick", "no-command"],
)
def test_bad_arguments_exit_2_without_traceback(args: list[str]) -> None:
    assert "error" in exits_with(run_chat(*args), 2)


def test_port_in_use_exits_1_with_a_message() -> None:
    with port_in_use() as port:
        err = exits_with(run_chat("server", "--port", str(port)), 1)
    assert f"cannot listen on 127.0.0.1:{port}" in err
    assert "in use" in err


def test_client_cannot_connect_exits_1() -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = run_chat("client", "127.0.0.1", str(port), "--nick", "nobody")
    assert "cannot connect" in exits_with(result, 1)


# ------------------------------------------------------------------ the protocol


@pytest.mark.parametrize("backend", available_backends())
def test_a_plain_socket_client_can_chat(backend: str, sockets: list[LineSocket]) -> None:
    """Everything the protocol offers, from clients written with nothing but ``socket``."""
    with ChatServer("--backend", backend) as server:
        assert f"(backend {backend})" in server.listening
        alice = LineSocket(server.port)
        sockets.append(alice)
        alice.send("/who", end=b"\r\n")
        assert alice.expect(lambda line: line.startswith("= ")) == "= 0 online: "
        alice.send("hello before a nick", end=b"\r\n")
        alice.expect("! error: set a nick first with /nick NAME")
        alice.send("/nick alice", end=b"\r\n")
        alice.expect("* alice joined")

        bob = LineSocket(server.port, "bob")
        sockets.append(bob)
        alice.expect("* bob joined")

        alice.send("hello, bob", end=b"\r\n")  # CRLF ...
        bob.send("hi alice")  # ... and LF both end a line
        for who in (alice, bob):  # the server decides the order
            who.expect_all(["<alice> hello, bob", "<bob> hi alice"])

        bob.send("/me waves")
        alice.expect("*bob* waves")
        bob.send("/msg alice psst, only for you")
        alice.expect("<- bob: psst, only for you")
        bob.expect("-> alice: psst, only for you")
        bob.send("/msg carol anyone?")
        bob.expect("! error: no such nick: carol")
        bob.send("//slashes are fine")
        alice.expect("<bob> /slashes are fine")
        bob.send("héllo wörld ✓")
        alice.expect("<bob> héllo wörld ✓")

        bob.send("/who")
        bob.expect("= 2 online: alice, bob")
        bob.send("/nick robert")
        alice.expect("* bob is now known as robert")
        bob.send("/help")
        bob.expect(lambda line: line.startswith("= /msg NICK TEXT"))
        bob.send("/dance")
        bob.expect("! error: unknown command /dance (/help lists them)")

        bob.send("/quit see you")
        bob.expect("= bye")
        assert bob.expect_eof() == []
        alice.expect("* robert left (quit: see you)")

        # A last line without a line end still counts when the peer closes.
        carol = LineSocket(server.port, "carol")
        sockets.append(carol)
        carol.send("bye without a newline", end=b"")
        carol.sock.shutdown(socket.SHUT_WR)
        alice.expect("<carol> bye without a newline")
        alice.expect("* carol left")
        assert server.stop() == 0


def test_bad_input_gets_error_lines_and_the_connection_stays(sockets: list[LineSocket]) -> None:
    with ChatServer("--max-line", "64") as server:
        alice = LineSocket(server.port, "alice")
        bob = LineSocket(server.port, "bob")
        sockets += [alice, bob]

        # Over-long lines, in one piece or trickled in, are refused; the limit itself is fine.
        bob.send("x" * 65)
        bob.expect("! error: line too long (limit 64 bytes); discarded")
        bob.send(b"y" * 50, end=b"")
        bob.send(b"y" * 50 + b"z" * 1000)
        bob.expect("! error: line too long (limit 64 bytes); discarded")
        bob.send("a" * 62, end=b"\r\n")
        alice.expect("<bob> " + "a" * 62)

        # Invalid UTF-8 and terminal control characters are refused, never relayed.
        bob.send(b"\xff\xfe broken \xc3")
        bob.expect("! error: invalid UTF-8; line discarded")
        bob.send(b"\x1b[2Jclear screen")
        bob.expect("! error: control characters are not allowed; line discarded")

        # Nicks: taken (case-insensitively), invalid, too long.
        carol = LineSocket(server.port)
        sockets.append(carol)
        carol.send("/nick ALICE")
        carol.expect("! error: nick ALICE is taken")
        carol.send("/nick al!ce")
        carol.expect(lambda line: line.startswith("! error: invalid nick 'al!ce'"))
        carol.send("/nick " + "c" * 33)
        carol.expect(lambda line: line.startswith("! error: invalid nick") and "32" in line)
        carol.send("/nick carol")
        carol.expect("* carol joined")

        bob.send("still here")
        for who in (alice, bob, carol):
            who.expect("<bob> still here")
        # Nothing of the refused lines reached alice.
        assert not [line for line in alice.history if "broken" in line or "yyy" in line]
        assert not [line for line in alice.history if "clear screen" in line]
        assert server.stop() == 0


def test_connection_limits_per_address_and_in_total(sockets: list[LineSocket]) -> None:
    with ChatServer("--max-per-ip", "3") as server:
        sockets += [LineSocket(server.port) for _ in range(3)]
        extra = LineSocket(server.port, welcome=False)
        sockets.append(extra)
        extra.expect("! error: too many connections from your address")
        assert extra.expect_eof() == []
        # The bundled client shows the error line and exits 1.
        refused = run_chat("client", "127.0.0.1", str(server.port), "--nick", "refused")
        assert refused.returncode == 1
        assert refused.stdout == "! error: too many connections from your address\n"
        assert "refused the connection" in refused.stderr
        # A slot frees up when a connection ends.
        sockets[0].send("/quit")
        sockets[0].expect_eof()
        again = LineSocket(server.port, "again")
        sockets.append(again)
        assert server.stop() == 0

    with ChatServer("--max-clients", "2", "--max-per-ip", "0") as server:
        sockets += [LineSocket(server.port) for _ in range(2)]
        extra = LineSocket(server.port, welcome=False)
        sockets.append(extra)
        extra.expect("! error: server full (too many connections); try again later")
        assert extra.expect_eof() == []
        assert server.stop() == 0


def test_a_client_that_does_not_answer_pings_is_dropped_in_time(
    sockets: list[LineSocket],
) -> None:
    interval, timeout = 0.2, 0.3
    with ChatServer("--ping-interval", str(interval), "--ping-timeout", str(timeout)) as server:
        alive = LineSocket(server.port, "alive")
        sockets.append(alive)
        dead = LineSocket(server.port, auto_pong=False)
        sockets.append(dead)
        silent_since = time.monotonic()
        dead.send("/nick dead")
        dead.expect("* dead joined")
        dead.expect("PING")
        dead.expect(f"! error: no answer to PING within {timeout:g} s")
        assert dead.expect_eof() == []
        silent_for = time.monotonic() - silent_since
        # Dropped no earlier than the bound allows, and not much later.
        assert interval + timeout - 0.05 <= silent_for < interval + timeout + 1.5

        alive.expect("* dead left (ping timeout)")
        # The client that answers survives round after round of pings.
        seen = alive.pings
        while alive.pings < seen + 4:
            alive.read_line()
        alive.send("/who")
        alive.expect("= 1 online: alive")
        assert server.stop() == 0


def test_a_connection_that_never_sets_a_nick_is_closed(sockets: list[LineSocket]) -> None:
    with ChatServer("--nick-timeout", "0.3") as server:
        named = LineSocket(server.port, "named")
        anonymous = LineSocket(server.port)
        sockets += [named, anonymous]
        anonymous.expect("! error: no nick set within 0.3 s; closing")
        assert anonymous.expect_eof() == []
        named.send("/who")
        named.expect("= 1 online: named")
        assert server.stop() == 0


def test_a_client_that_stops_reading_is_dropped_at_the_cap(sockets: list[LineSocket]) -> None:
    with ChatServer("--max-output", "65536", "--max-line", "10000") as server:
        talker = LineSocket(server.port, "talker")
        watcher = LineSocket(server.port, "watcher")
        staller = LineSocket(server.port, "staller", rcvbuf=4096)
        sockets += [talker, watcher, staller]
        staller.stop_reading()
        payload = "x" * 8000
        dropped_after = None
        for i in range(5000):  # a bound on a broken test, far above what it takes
            talker.send(f"{i} {payload}")
            for reader in (talker, watcher):
                reader.expect(f"<talker> {i} {payload}")
            # The notice follows the message that overflowed the staller's buffer.
            if "* staller left (dropped: not reading)" in watcher.history:
                dropped_after = i
                break
        assert dropped_after is not None, "the stalled client was never dropped"
        if "* staller left (dropped: not reading)" not in talker.history:
            talker.expect("* staller left (dropped: not reading)")
        # Dropped at the cap: 64 KiB past what the kernel buffers could take (on
        # Linux at most tcp_wmem's maximum on the server's side; the staller's
        # receive buffer is tiny), give or take a message.
        wmem = Path("/proc/sys/net/ipv4/tcp_wmem")
        if wmem.exists():
            kernel = int(wmem.read_text().split()[2]) + 256 * 1024
            assert (dropped_after + 1) * 8000 <= kernel + 65536 + 2 * 8000
        # The others carry on.
        talker.send("/who")
        talker.expect("= 2 online: talker, watcher")
        talker.send("after the drop")
        watcher.expect("<talker> after the drop")
        assert server.stop() == 0


# ------------------------------------------------------------ the bundled client


def test_the_bundled_client_works_from_a_pipe(sockets: list[LineSocket]) -> None:
    # Short heartbeats: the client must answer PINGs by itself to stay.
    with ChatServer("--ping-interval", "0.2", "--ping-timeout", "0.3") as server:
        observer = LineSocket(server.port, "observer")
        sockets.append(observer)
        piper = ("client", "127.0.0.1", str(server.port), "--nick", "piper")
        with AppProcess("apps.chat", *piper, stdin=subprocess.PIPE) as client:
            observer.expect("* piper joined")
            client.send("hello from piper\n/me pipes up\n")
            observer.expect("<piper> hello from piper")
            observer.expect("*piper* pipes up")
            observer.send("/msg piper psst")
            observer.send("hello piper")
            observer.expect("<observer> hello piper")
            # Several ping rounds pass (the observer answers its own) ...
            seen = observer.pings
            while observer.pings < seen + 5:
                observer.read_line()
            # ... and piper, quiet all along, is still there: it answered its own.
            observer.send("/who")
            observer.expect("= 2 online: observer, piper")
            client.send("last words")  # no line end: still sent
            client.close_stdin()  # EOF: the client quits and exits 0
            exits_cleanly(client)
        observer.expect("<piper> last words")
        observer.expect("* piper left (quit)")
        lines = client.lines
        assert lines[0].startswith("= welcome")
        for expected in (
            "* piper joined",
            "<piper> hello from piper",
            "*piper* pipes up",
            "<- observer: psst",
            "<observer> hello piper",
            "<piper> last words",
            "= bye",
        ):
            assert expected in lines
        assert "PING" not in lines  # answered, not shown
        assert server.stop() == 0


def test_the_bundled_client_takes_a_file_or_nothing_as_input(tmp_path: Path) -> None:
    # epoll cannot watch a regular file or /dev/null: the client reads them in turns.
    script = tmp_path / "script.txt"
    script.write_bytes(b"from a file\r\n/me reads\n")
    with ChatServer() as server:
        port = str(server.port)
        with script.open("rb") as stdin:
            result = run_chat("client", "127.0.0.1", port, "--nick", "reader", stdin=stdin)
        assert result.returncode == 0, result.stderr
        lines = result.stdout.splitlines()
        assert lines[1:] == ["* reader joined", "<reader> from a file", "*reader* reads", "= bye"]
        result = run_chat("client", "127.0.0.1", port, "--nick", "nobody")
        assert result.returncode == 0, result.stderr
        assert result.stdout.splitlines()[1:] == ["* nobody joined", "= bye"]
        assert server.stop() == 0


@pytest.mark.skipif(not hasattr(os, "openpty"), reason="needs a pseudo-terminal")
def test_the_bundled_client_redraws_the_input_line_on_a_terminal(
    sockets: list[LineSocket],
) -> None:
    with ChatServer() as server:
        observer = LineSocket(server.port, "observer")
        sockets.append(observer)
        master, slave = os.openpty()
        client = subprocess.Popen(
            app_command("apps.chat", "client", "127.0.0.1", str(server.port), "--nick", "typist"),
            stdin=slave,
            stdout=slave,
            stderr=slave,
            cwd=REPO,
            env=app_env(TERM="xterm", COLUMNS="80"),
            start_new_session=True,
        )
        os.close(slave)
        screen = PtyReader(master)
        try:
            observer.expect("* typist joined")
            screen.expect(rb"\* typist joined")
            os.write(master, b"half a li")  # typed, not yet sent
            screen.expect(b"> half a li")
            observer.send("interrupting")
            # The input line is cleared, the message printed, the input drawn again.
            screen.expect(rb"\r\x1b\[K<observer> interrupting\r*\n> half a li")
            os.write(master, b"x\x7fne\r")  # a typo, backspace, more, Enter
            observer.expect("<typist> half a line")
            os.write(master, b"\x04")  # Ctrl-D on an empty line: leave
            observer.expect("* typist left (quit)")
            assert client.wait(WAIT) == 0
        finally:
            if client.poll() is None:
                client.kill()
                client.wait()
            os.close(master)
        assert b"Traceback" not in screen.data
        assert server.stop() == 0


class PtyReader:
    """Accumulates what a program writes to a pseudo-terminal."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.data = b""

    def expect(self, wanted: bytes, timeout: float = WAIT) -> None:
        """Read until the screen matches the regular expression ``wanted``."""
        pattern = re.compile(wanted)
        deadline = time.monotonic() + timeout
        with selectors.DefaultSelector() as sel:
            sel.register(self.fd, selectors.EVENT_READ)
            while not pattern.search(self.data):
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not sel.select(remaining):
                    pytest.fail(f"timed out waiting for {wanted!r}; screen: {self.data!r}")
                try:
                    chunk = os.read(self.fd, 4096)
                except OSError:  # EIO: the other side is closed
                    chunk = b""
                if not chunk:
                    pytest.fail(f"terminal closed waiting for {wanted!r}; screen: {self.data!r}")
                self.data += chunk


# -------------------------------------------------------------------- shutdown


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_stops_the_server_gracefully(sig: int, sockets: list[LineSocket]) -> None:
    with ChatServer() as server:
        alice = LineSocket(server.port, "alice")
        bob = LineSocket(server.port, "bob")
        anonymous = LineSocket(server.port)
        sockets += [alice, bob, anonymous]
        alice.expect("* bob joined")
        server.proc.send_signal(sig)
        for client in (alice, bob, anonymous):
            client.expect("* server is going away")
            assert client.expect_eof() == []  # a clean close (FIN), not a reset
        exits_cleanly(server)
        # It stopped accepting.
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", server.port), timeout=WAIT).close()


def test_shutdown_does_not_wait_forever_for_a_client_that_does_not_read(
    sockets: list[LineSocket],
) -> None:
    with ChatServer("--max-line", "60000") as server:
        talker = LineSocket(server.port, "talker")
        staller = LineSocket(server.port, "staller", rcvbuf=4096)
        sockets += [talker, staller]
        staller.stop_reading()
        for i in range(40):  # about 2 MB: more than the kernel buffers for the staller
            talker.send(f"{i} " + "x" * 50000)
            talker.expect(f"<talker> {i} " + "x" * 50000)
        started = time.monotonic()
        assert server.stop() == 0
        assert time.monotonic() - started < 5.0  # the flush deadline is 2 s
        talker.expect("* server is going away")
        assert talker.expect_eof() == []


# ------------------------------------------------------------------- hardening


def test_slowloris_clients_cannot_keep_a_legitimate_client_out(sockets: list[LineSocket]) -> None:
    """Ten clients fill a server with room for ten, then trickle a byte at a time
    and never end a line ("slowloris"). Each is cut off --line-timeout after its
    first byte, however it trickles, and a legitimate client gets in."""
    timeout = 1.0
    pace = 0.3  # the attackers send a byte whenever nothing happened for this long
    args = ("--max-clients", "10", "--max-per-ip", "0", "--line-timeout", str(timeout))
    with ChatServer(*args) as server:
        attackers: list[socket.socket] = []
        sel = selectors.DefaultSelector()
        try:
            for _ in range(10):
                sock = socket.create_connection(("127.0.0.1", server.port), timeout=WAIT)
                attackers.append(sock)
                welcome = b""
                while not welcome.endswith(b"\n"):
                    welcome += sock.recv(4096)
                assert welcome.startswith(b"= welcome"), welcome
            refused = LineSocket(server.port, welcome=False)
            sockets.append(refused)
            refused.expect("! error: server full (too many connections); try again later")
            refused.expect_eof()
            refused.close()  # (the server waits for its FIN before letting go of the socket)

            first_byte: dict[int, float] = {}
            sent = [0] * 10
            for i, sock in enumerate(attackers):
                sock.sendall(b"x")
                first_byte[i] = time.monotonic()
                sent[i] = 1
                sock.setblocking(False)
                sel.register(sock, selectors.EVENT_READ, i)
            received = [b""] * 10
            dropped: dict[int, float] = {}
            deadline = time.monotonic() + WAIT
            while len(dropped) < 10:
                if time.monotonic() > deadline:
                    pytest.fail(f"only {len(dropped)} of 10 slowloris clients were cut off")
                events = sel.select(pace)
                for key, _ in events:
                    i = key.data
                    try:
                        chunk = attackers[i].recv(4096)
                    except ConnectionResetError:
                        chunk = b""
                    if chunk:
                        received[i] += chunk
                    else:
                        dropped[i] = time.monotonic()
                        sel.unregister(attackers[i])
                if not events:
                    for i, sock in enumerate(attackers):
                        if i not in dropped:
                            sock.send(b"x")
                            sent[i] += 1
            for i in range(10):
                assert (
                    f"! error: no complete line within {timeout:g} s; closing".encode()
                    in (received[i])
                )
                # The trickle did not restart the deadline (as activity restarts an
                # idle timeout): the line had to be complete a second after it began.
                took = dropped[i] - first_byte[i]
                assert timeout - 0.05 <= took < timeout + 5.0, took
            assert max(sent) >= 2
        finally:
            sel.close()
            for sock in attackers:
                sock.close()
        legit = LineSocket(server.port, "legit")
        sockets.append(legit)
        legit.send("/who")
        legit.expect("= 1 online: legit")
        assert server.stop() == 0


def test_quit_from_a_client_that_does_not_read_ends_within_the_close_timeout(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A client stops reading, lets the server's output to it back up, then sends
    /quit: the server's close cannot flush, and --close-timeout ends it.

    The server runs in this process (the chat server's own reactor, room and
    factory, made from its command line), so the test can wait for the
    server's output to back up and for the connection to be released.
    """
    close_timeout = 0.5
    args = build_parser().parse_args(
        ["server", "--close-timeout", str(close_timeout), "--max-output", str(64 << 20)]
    )
    config = config_from_args(args)
    caplog.set_level(logging.INFO, logger="apps.chat")
    with make_server_reactor("reactor-chat", args, config) as reactor:
        assert reactor.close_timeout == close_timeout
        room = ChatRoom(reactor, config)
        listener = reactor.listen_tcp(0, cast(FactoryArg, make_factory(room)))
        staller = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            staller.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            staller.connect(listener.address)
            staller.setblocking(False)
            run_until(reactor, lambda: room.sessions, what="the connection")
            [session] = list(room.sessions)
            assert isinstance(session, ChatSession)
            outgoing = bytearray(b"/nick staller\n")
            requests = 0

            def pump() -> None:
                try:
                    del outgoing[: staller.send(outgoing)]
                except BlockingIOError:
                    pass

            def backed_up() -> bool:
                # Ask for /help (8 lines back for 6 bytes) until the server holds
                # output that the kernel would not take: the client is not reading.
                nonlocal requests
                if session.transport.get_write_buffer_size() > 0:
                    return True
                if not outgoing:
                    assert requests < 200_000, "the server's output never backed up"
                    outgoing.extend(b"/help\n" * 500)
                    requests += 500
                pump()
                return False

            run_until(reactor, backed_up, timeout=30, what="the output to back up")
            outgoing.extend(b"/quit\n")

            def quit_sent() -> bool:
                pump()
                return not outgoing

            run_until(reactor, quit_sent, what="the /quit to be sent")
            sent_at = time.monotonic()
            run_until(reactor, lambda: session not in room.sessions, what="the close timeout")
            took = time.monotonic() - sent_at
            assert close_timeout - 0.05 <= took < WAIT, took
            assert session.nick is not None and session.nick not in room.members
            assert "the close timeout" in caplog.text
            assert session.transport.is_closing()
        finally:
            staller.close()


def test_a_mass_disconnect_does_not_stall_the_others(sockets: list[LineSocket]) -> None:
    """300 members vanish at once. Their leaves are batched (one write per member
    per turn, not per leave): another client's PING is answered promptly and it
    hears every leave."""
    crowd_size = 300
    left_re = re.compile(r"\* (c\d{3}) left(?: \(connection lost\))?")
    with ChatServer("--max-per-ip", "0", "--max-clients", "0") as server:
        observer = LineSocket(server.port, "observer")
        sockets.append(observer)
        crowd: list[socket.socket] = []
        try:
            for i in range(crowd_size):
                sock = socket.create_connection(("127.0.0.1", server.port), timeout=WAIT)
                crowd.append(sock)
                sock.sendall(b"/nick c%03d\n" % i)
            observer.expect_all([f"* c{i:03d} joined" for i in range(crowd_size)], timeout=30)
        finally:
            for sock in crowd:
                sock.close()  # unread lines in their buffers: most go as resets
        start = time.monotonic()
        observer.send("PING")
        observer.expect("PONG")
        round_trip = time.monotonic() - start
        gone = {m.group(1) for line in observer.history if (m := left_re.fullmatch(line))}
        while len(gone) < crowd_size:
            line = observer.expect(lambda line: left_re.fullmatch(line) is not None)
            gone.add(line.split()[1])
        assert gone == {f"c{i:03d}" for i in range(crowd_size)}
        assert round_trip < 5.0, round_trip  # a generous bound: it only catches a stall
        observer.send("/who")
        observer.expect("= 1 online: observer")
        assert server.stop() == 0


def test_a_client_pipelining_commands_does_not_hold_up_the_others(
    sockets: list[LineSocket],
) -> None:
    """One client sends 20,000 commands in one go. The server handles them a few
    dozen per turn: another client's PING is answered promptly, and every command
    is answered, in order."""
    commands = 20_000
    with ChatServer("--max-output", str(64 << 20)) as server:
        observer = LineSocket(server.port, "observer")
        flooder = LineSocket(server.port, "flooder")
        sockets += [observer, flooder]
        observer.expect("* flooder joined")
        flood = b"".join(b"mark %d\n" % i if i % 1000 == 0 else b"/who\n" for i in range(commands))
        flooder.send(flood, end=b"")
        start = time.monotonic()
        observer.send("PING")
        observer.expect("PONG")
        round_trip = time.monotonic() - start
        expected = [
            f"<flooder> mark {i}" if i % 1000 == 0 else "= 2 online: flooder, observer"
            for i in range(commands)
        ]
        got: list[str] = []
        while len(got) < commands:
            line = flooder.read_line()
            assert line is not None, f"EOF after {len(got)} replies"
            if line != "PING":
                got.append(line)
        assert got == expected
        assert round_trip < 5.0, round_trip  # a generous bound: it only catches a stall
        assert server.stop() == 0
