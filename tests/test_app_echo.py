"""The echo app end to end: ``python -m apps.echo`` in a subprocess, over 127.0.0.1."""

from __future__ import annotations

import errno
import os
import re
import resource
import select
import selectors
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import pytest

from apps.echo import Echo, EchoDatagram
from protocols.testing import MemoryTransport
from reactor import available_backends

pytestmark = pytest.mark.timeout(60)

REPO = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------- helpers


class App:
    """An app in a subprocess; its stdout is read line by line as it comes."""

    def __init__(self, *args: str, stdin: Any = subprocess.DEVNULL) -> None:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
        self._stderr: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115 - closed in kill()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", *args],
            stdin=stdin,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            env=env,
            cwd=REPO,
        )
        self.lines: list[str] = []
        self._buf = b""
        self._cursor = 0
        self._eof = False

    def _read(self, timeout: float) -> None:
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        ready, _, _ = select.select([fd], [], [], max(timeout, 0.0))
        if not ready:
            return
        chunk = os.read(fd, 65536)
        if not chunk:
            self._eof = True
            return
        self._buf += chunk
        *lines, self._buf = self._buf.split(b"\n")
        self.lines.extend(line.decode("utf-8", "replace") for line in lines)

    def expect(self, pattern: str, timeout: float = 10.0) -> re.Match[str]:
        """Wait for a line (after the last one matched) that matches ``pattern``."""
        deadline = time.monotonic() + timeout
        regex = re.compile(pattern)
        while True:
            for i in range(self._cursor, len(self.lines)):
                match = regex.search(self.lines[i])
                if match:
                    self._cursor = i + 1
                    return match
            self._cursor = len(self.lines)
            left = deadline - time.monotonic()
            if self._eof or left <= 0:
                pytest.fail(
                    f"no line matching {pattern!r} (exited: {self.proc.poll()}); "
                    f"stdout: {self.lines!r}; stderr: {self.stderr()!r}"
                )
            self._read(left)

    def port(self) -> int:
        """The port from the 'listening on HOST:PORT (backend NAME)' line."""
        return int(self.expect(r"listening on \S+:(\d+) \(backend \w+\)").group(1))

    def stderr(self) -> str:
        self._stderr.seek(0)
        return self._stderr.read().decode("utf-8", "replace")

    def finish(self, timeout: float = 10.0) -> tuple[int, str]:
        """Wait for the exit; returns (exit code, stderr), all stdout having been read."""
        deadline = time.monotonic() + timeout
        while not self._eof and time.monotonic() < deadline:
            self._read(deadline - time.monotonic())
        code = self.proc.wait(max(deadline - time.monotonic(), 0.1))
        return code, self.stderr()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._stderr.close()


@pytest.fixture
def apps() -> Iterator[list[App]]:
    """Apps started by a test are killed at its end, however it ends."""
    started: list[App] = []
    yield started
    for app in started:
        app.kill()


def start(apps: list[App], *args: str) -> App:
    app = App(*args)
    apps.append(app)
    return app


def run(*args: str, timeout: float = 20.0) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return subprocess.run(
        [sys.executable, "-m", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=REPO,
        stdin=subprocess.DEVNULL,
        check=False,
    )


def stop_cleanly(app: App) -> None:
    app.proc.send_signal(signal.SIGTERM)
    code, err = app.finish()
    assert code == 0, err
    assert "Traceback" not in err


# ----------------------------------------------------------------- TCP echo


def test_thousand_connections_each_get_their_own_bytes_back(apps: list[App]) -> None:
    count = 1000
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = count + 200
    if soft != resource.RLIM_INFINITY and soft < need:
        if hard != resource.RLIM_INFINITY and hard < need:
            pytest.skip(f"the descriptor limit ({hard}) is too low for {count} connections")
        resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))  # the server inherits it
    # select() cannot watch descriptors past FD_SETSIZE (1024): use a scalable backend.
    backend = next(name for name in available_backends() if name != "select")
    server = start(apps, "apps.echo", "--port", "0", "--backend", backend)
    port = server.port()

    sel = selectors.DefaultSelector()
    want: dict[socket.socket, bytes] = {}
    got: dict[socket.socket, bytearray] = {}
    try:
        for i in range(count):
            sock = socket.socket()
            sock.setblocking(False)
            err = sock.connect_ex(("127.0.0.1", port))
            assert err in (0, errno.EINPROGRESS), os.strerror(err)
            want[sock] = f"connection {i:04d} ".encode() * (1 + i % 37)
            got[sock] = bytearray()
            sel.register(sock, selectors.EVENT_WRITE, sock)
        done = 0
        deadline = time.monotonic() + 30
        while done < count:
            assert time.monotonic() < deadline, f"only {done} of {count} echoed in time"
            for key, events in sel.select(timeout=1.0):
                conn = key.data
                if events & selectors.EVENT_WRITE:
                    conn.sendall(want[conn])  # small: fits in the socket buffer
                    sel.modify(conn, selectors.EVENT_READ, conn)
                    continue
                data = conn.recv(65536)
                assert data, "the server closed a connection before echoing"
                got[conn] += data
                if len(got[conn]) >= len(want[conn]):
                    assert got[conn] == want[conn]
                    sel.unregister(conn)
                    done += 1
    finally:
        sel.close()
        for sock in want:
            sock.close()
    stop_cleanly(server)


def test_sigterm_closes_clients_cleanly(apps: list[App]) -> None:
    server = start(apps, "apps.echo", "--port", "0")
    port = server.port()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as client:
        client.sendall(b"ping")
        assert client.recv(100) == b"ping"
        server.proc.send_signal(signal.SIGTERM)
        assert client.recv(100) == b""  # a FIN, not a reset
    code, err = server.finish()
    assert code == 0, err
    assert "Traceback" not in err


def test_sigint_stops_it_too(apps: list[App]) -> None:
    server = start(apps, "apps.echo", "--port", "0", "--backend", "select")
    assert "(backend select)" in server.expect("listening on").string
    server.proc.send_signal(signal.SIGINT)
    code, err = server.finish()
    assert code == 0, err
    assert "Traceback" not in err


# ----------------------------------------------------------------- UDP echo


def test_udp_echo_of_ten_thousand_datagrams(apps: list[App]) -> None:
    server = start(apps, "apps.echo", "--port", "0", "--udp")
    line = server.expect(r"listening on \S+:(\d+)")
    assert "TCP and UDP" in line.string
    port = int(line.group(1))

    total, window = 10_000, 64

    def payload(seq: int) -> bytes:
        return b"%08d:" % seq + bytes([65 + seq % 26]) * (seq % 700)

    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    sock.connect(("127.0.0.1", port))
    sock.setblocking(False)
    received: set[int] = set()
    in_flight: set[int] = set()
    next_seq = 0
    resent = 0
    deadline = time.monotonic() + 30
    try:
        while len(received) < total:
            assert time.monotonic() < deadline, f"only {len(received)} of {total} came back"
            while len(in_flight) < window and next_seq < total:
                sock.send(payload(next_seq))
                in_flight.add(next_seq)
                next_seq += 1
            ready, _, _ = select.select([sock], [], [], 0.5)
            if not ready:
                # Quiet for a while: whatever is in flight was lost; send it again.
                for seq in in_flight:
                    sock.send(payload(seq))
                    resent += 1
                continue
            while True:
                try:
                    data = sock.recv(2048)
                except BlockingIOError:
                    break
                seq = int(data[:8])
                assert data == payload(seq)
                received.add(seq)
                in_flight.discard(seq)
    finally:
        sock.close()
    assert len(received) == total
    assert resent < total // 10, f"{resent} datagrams had to be sent again"
    # TCP still works alongside.
    with socket.create_connection(("127.0.0.1", port), timeout=10) as client:
        client.sendall(b"tcp too")
        assert client.recv(100) == b"tcp too"
    stop_cleanly(server)


# ----------------------------------------------------------------- errors


def test_port_in_use_is_a_clear_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        result = run("apps.echo", "--port", str(taken.getsockname()[1]))
    assert result.returncode == 1
    assert "reactor-echo: cannot listen on 127.0.0.1" in result.stderr
    assert "in use" in result.stderr
    assert "Traceback" not in result.stderr


def test_udp_port_in_use_is_a_clear_error() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        result = run("apps.echo", "--port", str(taken.getsockname()[1]), "--udp")
    assert result.returncode == 1
    assert "reactor-echo: cannot bind UDP" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "args",
    [["--port", "http"], ["--port", "70000"], ["--backend", "nope"], ["--bogus"]],
)
def test_bad_arguments_exit_2(args: list[str]) -> None:
    result = run("apps.echo", *args)
    assert result.returncode == 2
    assert "usage:" in result.stderr
    assert "Traceback" not in result.stderr


def test_help_explains_every_option() -> None:
    result = run("apps.echo", "--help")
    assert result.returncode == 0
    for option in ("--host", "--port", "--backend", "--log-level", "--udp"):
        assert option in result.stdout


def test_console_script_points_at_main() -> None:
    tomllib = pytest.importorskip("tomllib")
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["reactor-echo"] == "apps.echo:main"
    result = run("apps.echo", "--help")
    assert result.stdout.startswith("usage: reactor-echo")


# ----------------------------------------------------------------- unit


def test_echo_protocol_echoes_and_honours_half_close() -> None:
    transport = MemoryTransport()
    transport.connect(Echo())
    transport.feed(b"hello")
    transport.feed(b" world")
    assert transport.value() == b"hello world"
    transport.feed_eof()
    assert transport.eof_written


def test_echo_protocol_pauses_reading_when_the_peer_does_not_read() -> None:
    transport = MemoryTransport(stalled=True)
    transport.connect(Echo())
    transport.feed(b"x" * 100_000)
    assert not transport.is_reading()
    transport.drain()
    assert transport.is_reading()


def test_echo_datagram_sends_back_to_the_sender() -> None:
    sent: list[tuple[bytes, Any]] = []

    class FakeTransport:
        def sendto(self, data: bytes, addr: Any = None) -> None:
            sent.append((data, addr))

    proto = EchoDatagram()
    proto.connection_made(FakeTransport())
    proto.datagram_received(b"abc", ("10.0.0.1", 5))
    proto.datagram_received(b"", ("10.0.0.2", 6))
    assert sent == [(b"abc", ("10.0.0.1", 5)), (b"", ("10.0.0.2", 6))]
