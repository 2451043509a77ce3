"""asyncio.BufferedProtocol over the stream transport, TCP and Unix, on every backend.

A buffered protocol has ``get_buffer(sizehint)`` and ``buffer_updated(nbytes)``
instead of ``data_received``: the transport reads straight into the buffer the
protocol hands it (``recv_into``), so no bytes object is made per read. Its
other hooks (``eof_received``, ``connection_lost``...) are the usual ones.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import pytest

from protocols.base import Protocol
from reactor import FactoryArg, Reactor
from tests.conftest import run_until

pytestmark = pytest.mark.timeout(60)

MIB = 1 << 20


# ---------------------------------------------------------------- protocols


class BufferedEcho(asyncio.BufferedProtocol):
    """Writes back every chunk the transport reads into its buffer."""

    def __init__(self, size: int = 64 * 1024) -> None:
        self.buf = bytearray(size)
        self.transport: Any = None
        self.made = 0
        self.updates = 0
        self.received = 0
        self.eof = False
        self.lost: list[BaseException | None] = []

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self.made += 1

    def get_buffer(self, sizehint: int) -> bytearray:
        return self.buf

    def buffer_updated(self, nbytes: int) -> None:
        assert 0 < nbytes <= len(self.buf)
        self.updates += 1
        self.received += nbytes
        self.transport.write(bytes(self.buf[:nbytes]))

    def eof_received(self) -> bool | None:
        self.eof = True
        return None  # close (after flushing what was written)

    def connection_lost(self, exc: BaseException | None) -> None:
        self.lost.append(exc)


class BufferedClient(asyncio.BufferedProtocol):
    """Sends ``payload`` with flow control, half-closes, and collects the answer.

    Its buffer is small and a memoryview slice of a bigger one, so a big
    answer takes many reads, each into exactly what get_buffer returned.
    """

    def __init__(self, payload: bytes, size: int = 4096, chunk: int = 64 * 1024) -> None:
        self.payload = payload
        self.chunk = chunk
        self.offset = 0
        self.paused = False
        self._storage = bytearray(size + 16)
        self.view = memoryview(self._storage)[8 : 8 + size]
        self.received = bytearray()
        self.transport: Any = None
        self.eof = False
        self.lost: list[BaseException | None] = []

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self._send_more()

    def _send_more(self) -> None:
        while self.offset < len(self.payload) and not self.paused:
            self.transport.write(self.payload[self.offset : self.offset + self.chunk])
            self.offset += self.chunk
        if self.offset >= len(self.payload) and not self.paused:
            self.transport.write_eof()

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        self._send_more()

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.view

    def buffer_updated(self, nbytes: int) -> None:
        assert 0 < nbytes <= len(self.view)
        self.received += self.view[:nbytes]

    def eof_received(self) -> bool | None:
        self.eof = True
        return None

    def connection_lost(self, exc: BaseException | None) -> None:
        self.lost.append(exc)


class PlainClient(Protocol):
    """A data_received client: sends ``payload``, half-closes, collects the answer."""

    def __init__(self, payload: bytes = b"", eof: bool = True) -> None:
        self.payload = payload
        self.send_eof = eof
        self.received = bytearray()
        self.eof = False
        self.lost: list[BaseException | None] = []

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        if self.payload:
            transport.write(self.payload)
        if self.send_eof:
            transport.write_eof()

    def data_received(self, data: bytes) -> None:
        self.received += data

    def eof_received(self) -> bool | None:
        self.eof = True
        return None

    def connection_lost(self, exc: BaseException | None) -> None:
        self.lost.append(exc)


class PlainEcho(Protocol):
    def data_received(self, data: bytes) -> None:
        self.transport.write(data)


# ---------------------------------------------------------------- plumbing


def as_factory(make: Callable[[], asyncio.BaseProtocol]) -> FactoryArg:
    """A zero-argument callable making buffered protocols, typed as the reactor's factory."""
    return cast("FactoryArg", make)


class Made:
    """A factory that remembers every protocol it made, in order."""

    def __init__(self, make: Callable[[], asyncio.BaseProtocol]) -> None:
        self.make = make
        self.protocols: list[Any] = []

    def __call__(self) -> Any:
        protocol = self.make()
        self.protocols.append(protocol)
        return protocol


class Endpoints:
    """Listen and connect over TCP or a Unix socket, the same way for both."""

    def __init__(self, reactor: Reactor, kind: str, tmp_path: Path) -> None:
        self.reactor = reactor
        self.kind = kind
        self.path = str(tmp_path / "s.sock")
        self.port = 0

    def listen(self, factory: FactoryArg) -> None:
        if self.kind == "tcp":
            self.port = self.reactor.listen_tcp(0, factory).port
        else:
            self.reactor.listen_unix(self.path, factory)

    def connect(self, factory: FactoryArg) -> list[BaseException]:
        """Start connecting; returns the list on_failure appends to."""
        failures: list[BaseException] = []
        if self.kind == "tcp":
            self.reactor.connect_tcp("127.0.0.1", self.port, factory, on_failure=failures.append)
        else:
            self.reactor.connect_unix(self.path, factory, on_failure=failures.append)
        return failures


@pytest.fixture(params=["tcp", "unix"])
def endpoints(request: pytest.FixtureRequest, reactor: Reactor, tmp_path: Path) -> Endpoints:
    return Endpoints(reactor, str(request.param), tmp_path)


def pattern(size: int, seed: int = 1) -> bytes:
    """Bytes that are not periodic, so a reordered or repeated chunk shows."""
    return random.Random(seed).randbytes(size)


# ------------------------------------------------------------------- tests


def test_buffered_server_echoes_to_a_plain_client(reactor: Reactor, endpoints: Endpoints) -> None:
    servers = Made(BufferedEcho)
    endpoints.listen(as_factory(servers))
    client = PlainClient(b"hello, buffered world")
    failures = endpoints.connect(lambda: client)
    run_until(reactor, lambda: client.lost or failures, what="the echo and the close")
    assert failures == []
    assert bytes(client.received) == b"hello, buffered world"
    assert client.eof
    assert client.lost == [None]
    run_until(reactor, lambda: servers.protocols[0].lost, what="the server's connection_lost")
    server = servers.protocols[0]
    assert server.made == 1
    assert server.eof  # eof_received is called on a buffered protocol too
    assert server.updates >= 1
    assert server.received == len(b"hello, buffered world")
    assert server.lost == [None]


def test_buffered_client_reads_from_a_plain_server(reactor: Reactor, endpoints: Endpoints) -> None:
    endpoints.listen(PlainEcho)
    payload = pattern(100_000)
    client = BufferedClient(payload)
    failures = endpoints.connect(as_factory(lambda: client))
    run_until(reactor, lambda: client.lost or failures, what="the echo and the close")
    assert failures == []
    assert client.received == payload
    assert client.eof
    assert client.lost == [None]


def test_a_mebibyte_both_ways_arrives_intact_and_in_order(
    reactor: Reactor, endpoints: Endpoints
) -> None:
    servers = Made(BufferedEcho)
    endpoints.listen(as_factory(servers))
    payload = pattern(MIB, seed=7)
    client = BufferedClient(payload, size=4096)
    failures = endpoints.connect(as_factory(lambda: client))
    run_until(reactor, lambda: client.lost or failures, timeout=30, what="1 MiB echoed")
    assert failures == []
    assert len(client.received) == len(payload)
    assert client.received == payload
    assert client.lost == [None]
    run_until(reactor, lambda: servers.protocols[0].lost, what="the server's connection_lost")
    assert servers.protocols[0].received == MIB
    assert servers.protocols[0].lost == [None]


def test_a_one_byte_buffer_still_gets_everything(reactor: Reactor, endpoints: Endpoints) -> None:
    servers = Made(lambda: BufferedEcho(size=1))
    endpoints.listen(as_factory(servers))
    payload = pattern(3000, seed=3)
    client = PlainClient(payload)
    endpoints.connect(lambda: client)
    run_until(reactor, lambda: client.lost, what="the echo and the close")
    assert bytes(client.received) == payload
    assert servers.protocols[0].updates == len(payload)  # one byte per read


class BrokenBuffer(BufferedEcho):
    """get_buffer() gives nothing to read into, or raises."""

    def __init__(self, how: str) -> None:
        super().__init__()
        self.how = how
        self.error = ValueError("get_buffer failed on purpose")

    def get_buffer(self, sizehint: int) -> bytearray:
        if self.how == "raise":
            raise self.error
        return bytearray()


class BrokenUpdate(BufferedEcho):
    """buffer_updated() raises."""

    def __init__(self) -> None:
        super().__init__()
        self.error = ValueError("buffer_updated failed on purpose")

    def buffer_updated(self, nbytes: int) -> None:
        raise self.error


def _logged_errors(caplog: pytest.LogCaptureFixture) -> list[BaseException]:
    return [
        record.exc_info[1]
        for record in caplog.records
        if record.levelno >= logging.ERROR and record.exc_info and record.exc_info[1] is not None
    ]


@pytest.mark.parametrize("how", ["empty", "raise", "buffer_updated"])
def test_a_bad_buffer_closes_only_that_connection_and_is_logged(
    reactor: Reactor, endpoints: Endpoints, caplog: pytest.LogCaptureFixture, how: str
) -> None:
    caplog.set_level(logging.ERROR)
    # The first connection gets the broken protocol, the second a good one.
    broken: BufferedEcho = BrokenUpdate() if how == "buffer_updated" else BrokenBuffer(how)
    made: list[BufferedEcho] = []

    def factory() -> BufferedEcho:
        made.append(broken if not made else BufferedEcho())
        return made[-1]

    endpoints.listen(as_factory(factory))
    first = PlainClient(b"data for a broken buffer", eof=False)
    endpoints.connect(lambda: first)
    run_until(reactor, lambda: broken.lost, what="the broken connection to close")
    assert len(broken.lost) == 1
    reason = broken.lost[0]
    assert reason is not None, "connection_lost must get the exception"
    if how != "empty":
        assert reason is getattr(broken, "error", None)
    assert reason in _logged_errors(caplog), "the exception must be logged"
    run_until(reactor, lambda: first.lost, what="the client to see the close")
    assert first.received == b""

    # The listener keeps serving.
    second = PlainClient(b"still there?")
    endpoints.connect(lambda: second)
    run_until(reactor, lambda: second.lost, what="the second connection's echo")
    assert bytes(second.received) == b"still there?"
    assert second.lost == [None]
    assert len(made) == 2
    assert made[1].lost == [None]


class Switcher(Protocol):
    """A plain protocol that hands the connection to ``then`` on its first data."""

    def __init__(self, then: Any) -> None:
        self.then = then
        self.got = bytearray()

    def data_received(self, data: bytes) -> None:
        self.got += data
        if self.got == b"switch":
            transport: Any = self.transport  # set_protocol is not in TransportInterface
            self.then.connection_made(transport)
            transport.set_protocol(self.then)
            transport.write(b"ok")


class SwitchingClient(Protocol):
    """Asks the server to switch, then sends ``payload`` once it says ok."""

    def __init__(self, payload: bytes) -> None:
        self.payload = payload
        self.received = bytearray()
        self.switched = False
        self.lost: list[BaseException | None] = []

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        transport.write(b"switch")

    def data_received(self, data: bytes) -> None:
        self.received += data
        if not self.switched and self.received == b"ok":
            self.switched = True
            self.received.clear()
            self.transport.write(self.payload)
            self.transport.write_eof()

    def connection_lost(self, exc: BaseException | None) -> None:
        self.lost.append(exc)


def test_set_protocol_from_a_plain_protocol_to_a_buffered_one(
    reactor: Reactor, endpoints: Endpoints
) -> None:
    buffered = BufferedEcho(size=1000)
    plain = Switcher(buffered)
    endpoints.listen(lambda: plain)
    payload = pattern(200_000, seed=5)
    client = SwitchingClient(payload)
    endpoints.connect(lambda: client)
    run_until(reactor, lambda: client.lost, what="the echo after the switch")
    assert bytes(plain.got) == b"switch"  # nothing after the switch went to the old one
    assert bytes(client.received) == payload
    assert buffered.received == len(payload)
    assert buffered.eof
    run_until(reactor, lambda: buffered.lost, what="the buffered protocol's connection_lost")
    assert buffered.lost == [None]


class SwitchBack(BufferedEcho):
    """A buffered protocol that hands the connection to a plain one after "switch"."""

    def __init__(self, then: Protocol) -> None:
        super().__init__()
        self.then = then
        self.got = bytearray()

    def buffer_updated(self, nbytes: int) -> None:
        self.got += self.buf[:nbytes]
        if self.got == b"switch":
            self.then.connection_made(self.transport)
            self.transport.set_protocol(self.then)
            self.transport.write(b"ok")


def test_set_protocol_from_a_buffered_protocol_to_a_plain_one(
    reactor: Reactor, endpoints: Endpoints
) -> None:
    plain = PlainEcho()
    buffered = SwitchBack(plain)
    endpoints.listen(as_factory(lambda: buffered))
    payload = pattern(200_000, seed=9)
    client = SwitchingClient(payload)
    endpoints.connect(lambda: client)
    run_until(reactor, lambda: bytes(client.received) == payload or client.lost, what="the echo")
    assert bytes(buffered.got) == b"switch"
    assert bytes(client.received) == payload
