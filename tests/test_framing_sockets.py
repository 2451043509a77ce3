"""Every framing receiver once over real sockets, on every backend.

The in-memory tests (test_framing.py) cover the parsing rules; these check
that the receivers work on a real transport: frames split across TCP
segments arrive whole, replies go back through ``send_*``, and a malformed or
oversized frame closes only its own connection.
"""

from __future__ import annotations

import socket
import struct

import pytest

from protocols import (
    FrameTooLongError,
    Int8Receiver,
    Int16Receiver,
    Int32Receiver,
    LengthPrefixedReceiver,
    LineReceiver,
    LineTooLongError,
    NetstringError,
    NetstringReceiver,
)
from reactor import Reactor
from tests.conftest import run_until

pytestmark = pytest.mark.timeout(60)


class LineEcho(LineReceiver):
    delimiter = b"\n"
    max_line_length = 1000

    def line_received(self, line: bytes) -> None:
        self.send_line(line.upper())


class DefaultLineEcho(LineReceiver):
    """The default delimiter: lines end at ``\\n`` or ``\\r\\n``; replies end with ``\\r\\n``."""

    max_line_length = 100

    def __init__(self, lost: list[BaseException | None]) -> None:
        super().__init__()
        self.lost = lost

    def line_received(self, line: bytes) -> None:
        self.send_line(line.upper())

    def connection_lost(self, exc: BaseException | None) -> None:
        self.lost.append(exc)
        super().connection_lost(exc)


class NetstringEcho(NetstringReceiver):
    max_frame_size = 1000

    def string_received(self, data: bytes) -> None:
        self.send_string(data[::-1])


def _frame_echo(base: type[LengthPrefixedReceiver]) -> type[LengthPrefixedReceiver]:
    class Echo(base):  # type: ignore[valid-type,misc]
        max_frame_size = 200

        def frame_received(self, frame: bytes) -> None:
            self.send_frame(frame + b"!")

    return Echo


def _read_until(reactor: Reactor, sock: socket.socket, size: int) -> bytes:
    """Turn the loop until ``size`` bytes arrived on a blocking-free client socket."""
    sock.setblocking(False)
    got = bytearray()

    def enough() -> bool:
        try:
            chunk = sock.recv(65536)
        except BlockingIOError:
            return False
        if not chunk:
            return True
        got.extend(chunk)
        return len(got) >= size

    run_until(reactor, enough, what=f"{size} bytes")
    return bytes(got)


def _closed(reactor: Reactor, sock: socket.socket) -> None:
    sock.setblocking(False)

    def ended() -> bool:
        try:
            return sock.recv(65536) == b""
        except BlockingIOError:
            return False
        except ConnectionResetError:
            return True

    run_until(reactor, ended, what="the server to close the connection")


def _send_in_pieces(sock: socket.socket, data: bytes) -> None:
    """Send byte by byte at first, so frames and delimiters straddle segments."""
    sock.setblocking(True)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    for i in range(min(len(data), 40)):
        sock.sendall(data[i : i + 1])
    sock.sendall(data[40:])


def test_line_receiver_over_tcp(reactor: Reactor) -> None:
    listener = reactor.listen_tcp(0, LineEcho)
    good = socket.create_connection(listener.address)
    bad = socket.create_connection(listener.address)
    lines = [b"hello", b"", b"x" * 999, b"last one"]
    _send_in_pieces(good, b"".join(line + b"\n" for line in lines))
    expected = b"".join(line.upper() + b"\n" for line in lines)
    assert _read_until(reactor, good, len(expected)) == expected
    # An over-long line closes only its connection.
    bad.sendall(b"y" * 2000)
    _closed(reactor, bad)
    good.setblocking(True)
    good.sendall(b"still here\n")
    assert _read_until(reactor, good, 11) == b"STILL HERE\n"
    good.close()
    bad.close()


def test_default_line_receiver_answers_lf_and_crlf_clients_over_tcp(reactor: Reactor) -> None:
    lost: list[BaseException | None] = []
    listener = reactor.listen_tcp(0, lambda: DefaultLineEcho(lost))
    nc = socket.create_connection(listener.address)
    _send_in_pieces(nc, b"hello\nfrom nc\n")  # what nc sends
    assert _read_until(reactor, nc, 16) == b"HELLO\r\nFROM NC\r\n"
    telnet = socket.create_connection(listener.address)
    _send_in_pieces(telnet, b"hello\r\n")
    assert _read_until(reactor, telnet, 7) == b"HELLO\r\n"
    # An over-long line ends its connection, and connection_lost is told why.
    nc.sendall(b"y" * 200)
    _closed(reactor, nc)
    run_until(reactor, lambda: lost, what="connection_lost")
    [reason] = lost
    assert isinstance(reason, LineTooLongError)
    assert "max_line_length" in str(reason)
    nc.close()
    telnet.close()


def test_framing_errors_reach_connection_lost_over_tcp(reactor: Reactor) -> None:
    reasons: list[BaseException | None] = []

    class Frames(Int16Receiver):
        max_frame_size = 10

        def frame_received(self, frame: bytes) -> None:
            pass

        def connection_lost(self, exc: BaseException | None) -> None:
            reasons.append(exc)
            super().connection_lost(exc)

    class Strings(NetstringReceiver):
        def string_received(self, data: bytes) -> None:
            pass

        def connection_lost(self, exc: BaseException | None) -> None:
            reasons.append(exc)
            super().connection_lost(exc)

    frames = socket.create_connection(reactor.listen_tcp(0, Frames).address)
    frames.sendall(struct.pack("!H", 11))
    run_until(reactor, lambda: len(reasons) == 1, what="the frame receiver to give up")
    strings = socket.create_connection(reactor.listen_tcp(0, Strings).address)
    strings.sendall(b"1:ab")
    run_until(reactor, lambda: len(reasons) == 2, what="the netstring receiver to give up")
    assert isinstance(reasons[0], FrameTooLongError)
    assert isinstance(reasons[1], NetstringError)
    assert "expected ','" in str(reasons[1])
    frames.close()
    strings.close()


@pytest.mark.parametrize(
    ("base", "fmt"),
    [(Int8Receiver, "!B"), (Int16Receiver, "!H"), (Int32Receiver, "!I")],
    ids=["int8", "int16", "int32"],
)
def test_length_prefixed_receivers_over_tcp(
    reactor: Reactor, base: type[LengthPrefixedReceiver], fmt: str
) -> None:
    listener = reactor.listen_tcp(0, _frame_echo(base))
    good = socket.create_connection(listener.address)
    frames = [b"", b"a", b"frame" * 20, bytes(range(150))]
    _send_in_pieces(good, b"".join(struct.pack(fmt, len(f)) + f for f in frames))
    expected = b"".join(struct.pack(fmt, len(f) + 1) + f + b"!" for f in frames)
    assert _read_until(reactor, good, len(expected)) == expected
    # A prefix over the maximum closes only that connection.
    bad = socket.create_connection(listener.address)
    bad.sendall(struct.pack(fmt, 250) + b"z" * 250)
    _closed(reactor, bad)
    good.setblocking(True)
    good.sendall(struct.pack(fmt, 2) + b"ok")
    assert _read_until(reactor, good, struct.calcsize(fmt) + 3) == struct.pack(fmt, 3) + b"ok!"
    good.close()
    bad.close()


def test_netstring_receiver_over_tcp(reactor: Reactor) -> None:
    listener = reactor.listen_tcp(0, NetstringEcho)
    good = socket.create_connection(listener.address)
    strings = [b"", b"abc", b"netstring" * 50]
    _send_in_pieces(good, b"".join(b"%d:%s," % (len(s), s) for s in strings))
    expected = b"".join(b"%d:%s," % (len(s), s[::-1]) for s in strings)
    assert _read_until(reactor, good, len(expected)) == expected
    # Malformed: a leading zero; only this connection is closed.
    bad = socket.create_connection(listener.address)
    bad.sendall(b"03:abc,")
    _closed(reactor, bad)
    good.setblocking(True)
    good.sendall(b"2:hi,")
    assert _read_until(reactor, good, 5) == b"2:ih,"
    good.close()
    bad.close()
