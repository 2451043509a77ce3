"""The echo app end to end: ``python -m apps.echo`` in a subprocess, over 127.0.0.1."""

from __future__ import annotations

import errno
import os
import resource
import select
import selectors
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest

from apps.echo import Echo, EchoDatagram
from protocols.testing import MemoryTransport
from reactor import available_backends
from tests.app_helpers import (
    AppGroup,
    console_script,
    exits_cleanly,
    exits_with,
    port_in_use,
    run_cli,
    stop_cleanly,
)

pytestmark = pytest.mark.timeout(60)

MIB = 1 << 20


@pytest.fixture
def apps() -> Iterator[AppGroup]:
    """Apps started by a test are killed at its end, however it ends."""
    with AppGroup() as group:
        yield group


# ----------------------------------------------------------------- TCP echo


def test_thousand_connections_each_get_their_own_bytes_back(apps: AppGroup) -> None:
    count = 1000
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = count + 200
    if soft != resource.RLIM_INFINITY and soft < need:
        if hard != resource.RLIM_INFINITY and hard < need:
            pytest.skip(f"the descriptor limit ({hard}) is too low for {count} connections")
        resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))  # the server inherits it
    # select() cannot watch descriptors past FD_SETSIZE (1024): use a scalable backend.
    backend = next(name for name in available_backends() if name != "select")
    server = apps.server("apps.echo", "--backend", backend)
    port = server.port

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


def test_sigterm_closes_clients_cleanly(apps: AppGroup) -> None:
    server = apps.server("apps.echo")
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as client:
        client.sendall(b"ping")
        assert client.recv(100) == b"ping"
        server.proc.send_signal(signal.SIGTERM)
        assert client.recv(100) == b""  # a FIN, not a reset
    exits_cleanly(server)


def test_idle_clients_are_closed_after_the_timeout(apps: AppGroup) -> None:
    server = apps.server("apps.echo", "--idle-timeout", "0.5")
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as client:
        client.sendall(b"ping")
        assert client.recv(100) == b"ping"
        quiet_since = time.monotonic()
        assert client.recv(100) == b""  # a FIN once idle for 0.5 s (a timeout fails)
        assert time.monotonic() - quiet_since > 0.3
    stop_cleanly(server)


def _stuff(socks: list[socket.socket], limit: int) -> list[bytes]:
    """Send each socket a numbered pattern, without reading, until none takes more.

    "Takes no more" is when none has had room for 0.5 s (the echo server has
    stopped reading them all), or each has been sent ``limit`` bytes.
    Returns what each was sent.
    """
    sent = {sock: bytearray() for sock in socks}
    blocks = dict.fromkeys(socks, 0)
    for sock in socks:
        sock.setblocking(False)
    try:
        while room := [sock for sock in socks if len(sent[sock]) < limit]:
            _, writable, _ = select.select([], room, [], 0.5)
            if not writable:
                break
            for sock in writable:
                first = blocks[sock] * 4096
                chunk = b"".join(b"%012d\n" % n for n in range(first, first + 4096))
                try:
                    count = sock.send(chunk)
                except BlockingIOError:
                    continue
                sent[sock] += chunk[:count]  # what was sent, exactly, even if cut short
                blocks[sock] += 1
    finally:
        for sock in socks:
            sock.setblocking(True)
    return [bytes(sent[sock]) for sock in socks]


def _read_all(socks: list[socket.socket]) -> list[bytes]:
    """Read each socket to its end, all together (a reset raises ConnectionResetError)."""
    got = {sock: bytearray() for sock in socks}
    reading = list(socks)
    deadline = time.monotonic() + 30
    while reading:
        assert time.monotonic() < deadline, "the echo did not end in 30 s"
        readable, _, _ = select.select(reading, [], [], 10)
        assert readable, "nothing to read for 10 s, and no end"
        for sock in readable:
            chunk = sock.recv(256 * 1024)
            if not chunk:
                reading.remove(sock)
            got[sock] += chunk
    return [bytes(got[sock]) for sock in socks]


def test_sigterm_lets_slow_readers_take_everything_they_were_sent(apps: AppGroup) -> None:
    """Clients that were not reading when SIGTERM came, and are slow to start, get all their echo.

    The server had stopped reading them (their echo was not being taken), so
    their input sat unread in its sockets; closing a socket like that makes
    the kernel send a reset, which throws away what was still on its way. So
    the server must wait, up to --close-timeout, until each client has taken
    it all and closed; it used to give up after 2 s and reset them.
    """
    server = apps.server("apps.echo", "--close-timeout", "20")
    clients = []
    for _ in range(3):
        client = socket.socket()
        clients.append(client)
        # A small receive buffer: what the client has not read stays in the server.
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        client.settimeout(10)
        client.connect(("127.0.0.1", server.port))
    try:
        sent = _stuff(clients, 64 * MIB)
        server.proc.send_signal(signal.SIGTERM)
        # Once it no longer accepts, the server is shutting down.
        deadline = time.monotonic() + 10
        while True:
            assert time.monotonic() < deadline, "the server kept accepting after SIGTERM"
            try:
                socket.create_connection(("127.0.0.1", server.port), timeout=10).close()
            except (ConnectionRefusedError, ConnectionResetError):  # reset: closed in the backlog
                break
        # The clients are slow: they start reading 2.5 s later. The server waits for them.
        with pytest.raises(subprocess.TimeoutExpired):
            server.proc.wait(timeout=2.5)
        echoed = _read_all(clients)
        for got, data in zip(echoed, sent, strict=True):
            assert len(got) > 1 * MIB, "the server had more to echo than that"
            assert got == data[: len(got)]
    finally:
        for client in clients:
            client.close()
    exits_cleanly(server)


def test_sigint_stops_it_too(apps: AppGroup) -> None:
    server = apps.server("apps.echo", "--backend", "select")
    assert "(backend select)" in server.listening
    stop_cleanly(server, signal.SIGINT)


# ----------------------------------------------------------------- UDP echo


def test_udp_echo_of_ten_thousand_datagrams(apps: AppGroup) -> None:
    server = apps.server("apps.echo", "--udp")
    assert "TCP and UDP" in server.listening
    port = server.port

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
    with port_in_use() as port:
        err = exits_with(run_cli("apps.echo", "--port", str(port)), 1)
    assert "reactor-echo: cannot listen on 127.0.0.1" in err
    assert "in use" in err


def test_udp_port_in_use_is_a_clear_error() -> None:
    with port_in_use(socket.SOCK_DGRAM) as port:
        err = exits_with(run_cli("apps.echo", "--port", str(port), "--udp"), 1)
    assert "reactor-echo: cannot bind UDP" in err


@pytest.mark.parametrize(
    "args",
    [["--port", "http"], ["--port", "70000"], ["--backend", "nope"], ["--bogus"]],
)
def test_bad_arguments_exit_2(args: list[str]) -> None:
    assert "usage:" in exits_with(run_cli("apps.echo", *args), 2)


def test_help_explains_every_option() -> None:
    result = run_cli("apps.echo", "--help")
    assert result.returncode == 0
    for option in (
        "--host",
        "--port",
        "--backend",
        "--log-level",
        "--udp",
        "--idle-timeout",
        "--close-timeout",
    ):
        assert option in result.stdout


def test_console_script_points_at_main() -> None:
    assert console_script("reactor-echo") == "apps.echo:main"
    result = run_cli("apps.echo", "--help")
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
