"""Bulk data through a real echo server on every backend."""

from __future__ import annotations

import hashlib
import os
from typing import Any

import pytest

from apps.echo import Echo
from reactor import Reactor
from tests.conftest import run_until

pytestmark = pytest.mark.timeout(120)


class Sender:
    """Writes a payload in uneven chunks, half-closes, and hashes what comes back."""

    def __init__(self, payload: bytes) -> None:
        self.payload = payload
        self.received = hashlib.sha256()
        self.count = 0
        self.lost: list[BaseException | None] = []
        self.paused = False
        self.offset = 0

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self._send_more()

    def _send_more(self) -> None:
        # Keep writing until the transport asks us to pause: exercises the
        # water marks under real load.
        step = 7919
        while self.offset < len(self.payload) and not self.paused:
            self.transport.write(self.payload[self.offset : self.offset + step])
            self.offset += step
            step = 7919 if step > 100_000 else step * 2
        if self.offset >= len(self.payload) and not self.paused:
            self.transport.write_eof()

    def data_received(self, data: bytes) -> None:
        self.received.update(data)
        self.count += len(data)

    def eof_received(self) -> bool | None:
        return None

    def connection_lost(self, exc: BaseException | None) -> None:
        self.lost.append(exc)

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        self._send_more()


def test_16mib_over_10_connections_arrive_intact(reactor: Reactor) -> None:
    listener = reactor.listen_tcp(0, Echo)
    payloads = [os.urandom(16 * 1024 * 1024 // 10) for _ in range(10)]
    senders = [Sender(p) for p in payloads]
    for sender in senders:
        reactor.connect_tcp("127.0.0.1", listener.port, lambda s=sender: s)  # type: ignore[misc]
    run_until(reactor, lambda: all(s.lost for s in senders), timeout=100, what="all echoes")
    for sender, payload in zip(senders, payloads, strict=True):
        assert sender.lost == [None]
        assert sender.count == len(payload)
        assert sender.received.hexdigest() == hashlib.sha256(payload).hexdigest()
    listener.close()


class ByteAtATime(Sender):
    """Sends its payload one byte per write."""

    def _send_more(self) -> None:
        for i in range(len(self.payload)):
            self.transport.write(self.payload[i : i + 1])
        self.transport.write_eof()


class Recorder:
    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.eof = False

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        # Feed the protocol under test one byte at a time.
        for i in range(len(data)):
            self.chunks.append(data[i : i + 1])

    def eof_received(self) -> bool | None:
        self.eof = True
        return None

    def connection_lost(self, exc: BaseException | None) -> None:
        pass

    def pause_writing(self) -> None:
        pass

    def resume_writing(self) -> None:
        pass


def test_byte_at_a_time_sees_same_stream(reactor: Reactor) -> None:
    recorder = Recorder()
    listener = reactor.listen_tcp(0, lambda: recorder)
    payload = os.urandom(4096)
    sender = ByteAtATime(payload)
    reactor.connect_tcp("127.0.0.1", listener.port, lambda: sender)
    run_until(reactor, lambda: recorder.eof, what="eof at the server")
    assert b"".join(recorder.chunks) == payload
    assert all(len(c) == 1 for c in recorder.chunks)
