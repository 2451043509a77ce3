"""TLS against peers this project did not write, on every backend.

Python's blocking ``ssl`` sockets (in a thread), asyncio's own TLS client and
server (its loop in a thread), and ``openssl s_client``/``s_server`` as
subprocesses: each side of ours against each of theirs.
"""

from __future__ import annotations

import asyncio
import functools
import os
import shutil
import socket
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from reactor import Reactor
from tests.conftest import run_until
from tests.test_tls import connect, serve
from tests.tls_helpers import Certs, Recorder, make_certs

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def certs() -> Certs:
    return make_certs()


@pytest.fixture(scope="module")
def pem(certs: Certs, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("pem")
    cert, key, ca = root / "server.pem", root / "server.key", root / "ca.pem"
    certs.server.cert_chain_pems[0].write_to_path(str(cert))
    certs.server.private_key_pem.write_to_path(str(key))
    certs.ca.cert_pem.write_to_path(str(ca))
    return {"cert": str(cert), "key": str(key), "ca": str(ca)}


class Worker(threading.Thread):
    """Runs ``fn`` in a thread; keeps its result or its exception for the test."""

    def __init__(self, fn: Callable[[], Any]) -> None:
        super().__init__(daemon=True)
        self.fn = fn
        self.result: Any = None
        self.error: BaseException | None = None
        self.done = threading.Event()

    def run(self) -> None:
        try:
            self.result = self.fn()
        except BaseException as exc:
            self.error = exc
        finally:
            self.done.set()

    def outcome(self) -> Any:
        if self.error is not None:
            raise self.error
        return self.result


def blocking_echo_client(port: int, certs: Certs, payload: bytes) -> bytes:
    context = certs.client_context()
    with (
        socket.create_connection(("127.0.0.1", port), timeout=20) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as conn,
    ):
        conn.sendall(payload)
        received = b""
        while len(received) < len(payload):
            chunk = conn.recv(65536)
            assert chunk, "the server closed early"
            received += chunk
        conn.unwrap()  # close_notify both ways: a clean TLS close
        return received


def test_blocking_ssl_clients_against_our_server(reactor: Reactor, certs: Certs) -> None:
    listener = serve(reactor, certs)
    payloads = [os.urandom(1 + 37_000 * i) for i in range(8)]
    workers = [
        Worker(functools.partial(blocking_echo_client, listener.port, certs, p)) for p in payloads
    ]
    for worker in workers:
        worker.start()
    run_until(reactor, lambda: all(w.done.is_set() for w in workers), 30)
    assert [w.outcome() for w in workers] == payloads
    run_until(reactor, lambda: len(listener.servers) == 8 and all(s.lost for s in listener.servers))
    assert all(s.lost == [None] and s.eof == 1 for s in listener.servers)


def test_our_client_against_a_blocking_ssl_server(reactor: Reactor, certs: Certs) -> None:
    context = certs.server_context()
    with socket.create_server(("127.0.0.1", 0)) as listening:
        port = listening.getsockname()[1]

        def serve_one() -> bytes:
            raw, _ = listening.accept()
            with context.wrap_socket(raw, server_side=True) as conn:
                data = conn.recv(65536)
                conn.sendall(data[::-1])
                conn.unwrap()  # waits for the client's close_notify
                return data

        worker = Worker(serve_one)
        worker.start()
        client = Recorder()
        connect(reactor, port, certs, client)
        run_until(reactor, lambda: client.made)
        client.transport.write(b"abcdef")
        run_until(reactor, lambda: client.data == b"fedcba")
        client.transport.close()
        run_until(reactor, lambda: client.lost and worker.done.is_set())
        assert worker.outcome() == b"abcdef"
        assert client.lost == [None]


@pytest.fixture
def asyncio_loop() -> Iterator[asyncio.AbstractEventLoop]:
    """asyncio's own loop, running in a thread."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield loop
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def test_our_client_against_asyncio_server(
    reactor: Reactor, certs: Certs, asyncio_loop: asyncio.AbstractEventLoop
) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        data = await reader.read(65536)
        writer.write(data.upper())
        await writer.drain()
        await reader.read()  # until our close_notify
        writer.close()

    async def start() -> asyncio.Server:
        return await asyncio.start_server(handle, "127.0.0.1", 0, ssl=certs.server_context())

    server = asyncio.run_coroutine_threadsafe(start(), asyncio_loop).result(20)
    port = server.sockets[0].getsockname()[1]
    client = Recorder()
    connect(reactor, port, certs, client)
    run_until(reactor, lambda: client.made)
    client.transport.write(b"from the reactor")
    run_until(reactor, lambda: client.data == b"FROM THE REACTOR")
    client.transport.close()
    run_until(reactor, lambda: client.lost)
    assert client.lost == [None]
    asyncio_loop.call_soon_threadsafe(server.close)


def test_asyncio_client_against_our_server(
    reactor: Reactor, certs: Certs, asyncio_loop: asyncio.AbstractEventLoop
) -> None:
    listener = serve(reactor, certs)

    async def talk() -> bytes:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", listener.port, ssl=certs.client_context(), server_hostname="localhost"
        )
        writer.write(b"from asyncio")
        data = await reader.readexactly(len(b"from asyncio"))
        writer.close()
        await writer.wait_closed()
        return data

    future = asyncio.run_coroutine_threadsafe(talk(), asyncio_loop)
    run_until(reactor, future.done, 30)
    assert future.result() == b"from asyncio"
    run_until(reactor, lambda: listener.servers and listener.servers[0].lost)
    assert listener.servers[0].lost == [None]


needs_openssl = pytest.mark.skipif(
    shutil.which("openssl") is None, reason="the openssl command-line tool is not installed"
)


def _accept_line(proc: subprocess.Popen[str]) -> int:
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith("ACCEPT"):
            return int(line.rsplit(":", 1)[1])
    raise AssertionError(f"openssl s_server did not start: {proc.stderr and proc.stderr.read()}")


@needs_openssl
def test_our_client_against_openssl_s_server(
    reactor: Reactor, certs: Certs, pem: dict[str, str]
) -> None:
    # -rev: a line in, the line reversed out; -naccept 1: one connection, then exit.
    proc = subprocess.Popen(
        ["openssl", "s_server", "-accept", "127.0.0.1:0", "-cert", pem["cert"], "-key",
         pem["key"], "-rev", "-naccept", "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )  # fmt: skip
    try:
        port = _accept_line(proc)
        client = Recorder()
        connect(reactor, port, certs, client)
        run_until(reactor, lambda: client.made)
        client.transport.write(b"openssl\n")
        run_until(reactor, lambda: b"lssnepo" in client.data)
        client.transport.close()
        run_until(reactor, lambda: client.lost)
        assert client.lost == [None]
    finally:
        proc.kill()
        proc.communicate(timeout=10)


@needs_openssl
def test_openssl_s_client_against_our_server(
    reactor: Reactor, certs: Certs, pem: dict[str, str]
) -> None:
    listener = serve(reactor, certs)
    proc = subprocess.Popen(
        ["openssl", "s_client", "-connect", f"127.0.0.1:{listener.port}", "-CAfile", pem["ca"],
         "-servername", "localhost", "-verify_return_error", "-quiet", "-no_ign_eof"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(b"hello from openssl\n")
        proc.stdin.flush()
        run_until(reactor, lambda: listener.servers and listener.servers[0].data, 20)
        assert listener.servers[0].data == b"hello from openssl\n"
        proc.stdin.close()  # s_client then sends close_notify and exits
        run_until(reactor, lambda: listener.servers[0].lost, 20)
        assert listener.servers[0].lost == [None] and listener.servers[0].eof == 1
        code = proc.wait(20)
        assert proc.stderr is not None
        out, err = proc.stdout.read(), proc.stderr.read()
        assert b"hello from openssl" in out, err
        assert code == 0, err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


def test_tls_over_tls(reactor: Reactor, certs: Certs) -> None:
    """A TLS session inside another (a tunnel through a TLS proxy): start_tls on a TLSTransport."""

    class Inner(Recorder):
        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if data == b"upgrade\n":
                self.transport = self.transport.start_tls(certs.server_context(), server_side=True)
            elif self.transport.get_extra_info("sslcontext") is not None:
                self.transport.write(data[::-1])

    listener = serve(reactor, certs, factory=Inner)
    client = Recorder()
    connect(reactor, listener.port, certs, client)
    run_until(reactor, lambda: client.made)
    client.transport.write(b"upgrade\n")
    inner = client.transport.start_tls(certs.client_context(), server_hostname="localhost")
    handshake_done: list[Any] = []
    inner._on_handshake = handshake_done.append
    run_until(reactor, lambda: handshake_done)
    assert handshake_done == [None]
    inner.write(b"nested")
    run_until(reactor, lambda: client.data == b"detsen")
    assert inner.get_extra_info("peercert") is not None
    inner.close()
    run_until(reactor, lambda: client.lost and listener.servers[0].lost)
    assert client.lost == [None]


def test_listen_socket_with_tls(reactor: Reactor, certs: Certs, tmp_path: Path) -> None:
    sock = socket.create_server(("127.0.0.1", 0))
    server = Recorder(echo=True)
    listener = reactor.listen_socket(sock, lambda: server, ssl=certs.server_context())
    client = Recorder()
    connect(reactor, listener.port, certs, client)
    run_until(reactor, lambda: client.made)
    client.transport.write(b"inherited socket")
    run_until(reactor, lambda: client.data == b"inherited socket")
    client.transport.close()
    run_until(reactor, lambda: server.lost == [None])
    listener.close()
