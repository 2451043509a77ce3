"""Trace mode shows every state change of a connection and of the loop, on every backend.

Each test drives one situation over loopback sockets and asserts the trace
lines it must produce: what the kernel took of a write, the buffer and its
water marks, reading paused and resumed, FINs, the lingering close and why
it ended, resets, UDP datagrams, and the names of the fds in poll lines.
"""

from __future__ import annotations

import logging
import os
import select
import signal
import socket
import ssl
from collections.abc import Iterator
from typing import Any

import pytest

from apps.echo import Echo
from protocols import Protocol
from reactor import Reactor
from reactor import stream as stream_module
from reactor.trace import TracingPoller, describe_watcher, format_bits
from tests.conftest import make_reactor, run_until
from tests.tls_helpers import make_certs

pytestmark = pytest.mark.timeout(60)

_RESET = b"\x01\x00\x00\x00\x00\x00\x00\x00"  # SO_LINGER on, 0 s: close() sends RST


class Lines:
    """The trace lines logged so far, as text, for ``in`` checks."""

    def __init__(self, caplog: pytest.LogCaptureFixture) -> None:
        self._caplog = caplog

    def all(self) -> list[str]:
        return [r.getMessage() for r in self._caplog.records if r.name == "reactor.trace"]

    def __contains__(self, text: str) -> bool:
        return any(text in line for line in self.all())

    def index(self, text: str) -> int:
        for i, line in enumerate(self.all()):
            if text in line:
                return i
        raise AssertionError(f"no trace line contains {text!r}:\n" + "\n".join(self.all()))


@pytest.fixture
def traced(backend: str) -> Iterator[Reactor]:
    r = make_reactor(backend, trace=True)
    try:
        yield r
    finally:
        r.close()


@pytest.fixture
def lines(caplog: pytest.LogCaptureFixture) -> Lines:
    caplog.set_level(logging.INFO, "reactor.trace")
    return Lines(caplog)


class Server(Protocol):
    """Records what happens to it; the test drives its transport."""

    def __init__(self) -> None:
        self.received = b""
        self.eof = False
        self.keep_open = False
        self.lost: list[BaseException | None] = []
        self.paused = 0
        self.resumed = 0

    def data_received(self, data: bytes) -> None:
        self.received += data

    def eof_received(self) -> bool:
        self.eof = True
        return self.keep_open

    def pause_writing(self) -> None:
        self.paused += 1

    def resume_writing(self) -> None:
        self.resumed += 1

    def connection_lost(self, exc: BaseException | None) -> None:
        self.lost.append(exc)


def _serve(reactor: Reactor) -> tuple[list[Server], Any]:
    servers: list[Server] = []

    def make() -> Server:
        servers.append(Server())
        return servers[-1]

    return servers, reactor.listen_tcp(0, make)


def _accept_one(reactor: Reactor) -> tuple[Server, socket.socket]:
    servers, listener = _serve(reactor)
    client = socket.create_connection(listener.address)
    run_until(reactor, lambda: servers, what="the connection accepted")
    return servers[0], client


# ----------------------------------------------------------------- fd names


def test_poll_lines_name_the_waker_the_listener_and_connections(backend: str, lines: Lines) -> None:
    with make_reactor(backend, trace=True) as traced:
        _names_in_poll_lines(traced, lines)


def _names_in_poll_lines(traced: Reactor, lines: Lines) -> None:
    assert "(waker) for READ" in lines
    servers, listener = _serve(traced)
    assert f"(listener 127.0.0.1:{listener.port}) for READ" in lines
    client = socket.create_connection(listener.address)
    run_until(traced, lambda: servers, what="accepted")
    assert f"fd {listener._fd} (listener 127.0.0.1:{listener.port}) READ" in lines
    client.sendall(b"x")
    run_until(traced, lambda: servers[0].received, what="data")
    fd = servers[0].transport._fd  # type: ignore[attr-defined]
    assert f"fd {fd} (#1) READ" in lines
    traced.call_from_thread(lambda: None)
    traced.run_once(1.0)
    assert "(waker) READ" in lines
    client.close()
    listener.close()
    assert f"stopped watching fd {listener._fd} (listener 127.0.0.1:" in lines


def test_poll_waiting_forever_says_so(traced: Reactor, lines: Lines) -> None:
    traced._waker.wake()  # readable at once: the wait below returns
    traced.run_once(None)
    assert "poll timeout=forever -> 1 ready: fd" in lines


def test_a_connecting_socket_and_the_signal_pipe_are_named(traced: Reactor, lines: Lines) -> None:
    listener = traced.listen_tcp(0, Echo)
    connected: list[Any] = []
    traced.connect_tcp("127.0.0.1", listener.port, Protocol, on_connect=connected.append)
    assert f"(connecting to 127.0.0.1:{listener.port}) for WRITE" in lines
    run_until(traced, lambda: connected, what="connected")
    assert f"connected to 127.0.0.1:{listener.port} as connection #" in lines
    fired: list[int] = []
    traced.add_signal_handler(signal.SIGUSR1, fired.append, 1)
    try:
        assert "(signal pipe) for READ" in lines
        os.kill(os.getpid(), signal.SIGUSR1)
        run_until(traced, lambda: fired, what="the signal")
        assert "(signal pipe) READ" in lines
    finally:
        traced.remove_signal_handler(signal.SIGUSR1)
    assert "(signal pipe)" in lines.all()[-1]
    assert "stopped watching fd" in lines.all()[-1]


def test_user_fds_are_named_by_their_callback(traced: Reactor, lines: Lines) -> None:
    r, w = socket.socketpair()
    seen: list[bytes] = []

    def on_readable() -> None:
        seen.append(r.recv(10))

    traced.add_reader(r, on_readable)
    w.send(b"x")
    run_until(traced, lambda: seen)
    assert "on_readable) READ" in lines
    traced.remove_reader(r)
    r.close()
    w.close()


def test_trace_and_debug_together_still_name_fds(backend: str, lines: Lines) -> None:
    with make_reactor(backend, trace=True, debug=True) as r:
        listener = r.listen_tcp(0, Echo)
        assert f"(listener 127.0.0.1:{listener.port}) for READ" in lines


def test_names_of_unknown_fds_and_bits() -> None:
    assert format_bits(0) == "0x0"
    assert describe_watcher(object()).startswith("<object")  # its repr
    with make_reactor("select") as plain:
        poller = TracingPoller(plain._fds.poller)  # no loop: nothing to name fds by
        assert poller.describe(99) == "?"


# ------------------------------------------------------------------ writing


def test_writes_say_what_the_kernel_took_and_the_buffer_its_flushes(
    traced: Reactor, lines: Lines
) -> None:
    server, client = _accept_one(traced)
    transport: Any = server.transport
    transport.set_write_buffer_limits(high=64 * 1024)
    transport.write(b"hello")
    assert "#1 write 5 bytes: sent whole" in lines
    # The client reads nothing yet: the kernel's buffers fill, the rest is ours
    # (until it is over the high-water mark: the write that fills the kernel
    # may leave less than that buffered).
    chunk = b"x" * (1 << 20)
    while transport.get_write_buffer_size() <= 64 * 1024:
        transport.write(chunk)
    assert "#1 write 1048576 bytes: partial, the kernel took" in lines
    assert "watching WRITE" in lines
    assert "> high water 65536: pause_writing()" in lines
    assert server.paused == 1
    transport.write(b"more")
    assert "#1 write 4 bytes: queued behind" in lines
    # Now the client reads: the buffer flushes, and drains below the low mark.
    client.setblocking(False)

    def drain() -> bool:
        try:
            while client.recv(1 << 20):
                pass
        except BlockingIOError:
            pass
        return bool(transport.get_write_buffer_size() == 0)

    run_until(traced, drain, what="the buffer to drain")
    assert "#1 flush: the kernel took" in lines
    assert "buffer empty, unwatching WRITE" in lines
    assert "<= low water 16384: resume_writing()" in lines
    # The flush line comes before the resume_writing it caused.
    assert lines.index("buffer empty") < lines.index("resume_writing()")
    assert server.resumed == 1
    client.close()


def test_close_flushes_first_and_a_dropped_write_is_traced(traced: Reactor, lines: Lines) -> None:
    server, client = _accept_one(traced)
    transport: Any = server.transport
    while transport.get_write_buffer_size() == 0:
        transport.write(b"y" * (1 << 20))
    transport.close()
    assert "close(): flushing" in lines
    assert "buffered bytes first (aborted if not done in 30 s)" in lines
    transport.write(b"late")
    assert "#1 write 4 bytes after close(): dropped" in lines
    client.close()  # unread data: the kernel answers our next send with RST
    run_until(traced, lambda: server.lost, what="the end")
    assert "RST received" in lines or "the peer is gone" in lines


def test_close_timeout_aborts_with_a_reset(traced: Reactor, lines: Lines) -> None:
    server, client = _accept_one(traced)
    transport: Any = server.transport
    transport.set_close_timeout(0.05)
    while transport.get_write_buffer_size() == 0:
        transport.write(b"z" * (1 << 20))
    transport.close()
    run_until(traced, lambda: server.lost, what="the close timeout")
    assert "close timeout:" in lines
    assert "aborting with RST (SO_LINGER 0)" in lines
    assert "#1 connection_lost: TimeoutError" in lines
    assert "socket closed (fd" in lines
    assert "RST sent (the close timeout's abort)" in lines
    client.close()


def test_reading_paused_and_resumed(traced: Reactor, lines: Lines) -> None:
    server, client = _accept_one(traced)
    transport: Any = server.transport
    transport.pause_reading()
    transport.pause_reading()  # already paused: no second line
    assert "#1 pause_reading(): unwatching READ" in lines
    client.sendall(b"held")
    transport.resume_reading()
    assert "#1 resume_reading(): watching READ again" in lines
    run_until(traced, lambda: server.received == b"held", what="the held data")
    assert len([ln for ln in lines.all() if "pause_reading" in ln]) == 1
    client.close()


# ------------------------------------------------------------- FIN and RST


def test_half_close_fin_received_and_sent(traced: Reactor, lines: Lines) -> None:
    server, client = _accept_one(traced)
    server.keep_open = True
    client.shutdown(socket.SHUT_WR)
    run_until(traced, lambda: server.eof, what="the client's FIN")
    assert "#1 FIN received (recv returned b''): eof_received()" in lines
    assert "#1 eof_received() returned True: half-closed, this side may still write" in lines
    transport: Any = server.transport
    transport.write(b"answer")
    transport.write_eof()
    assert "#1 FIN sent (shutdown SHUT_WR)" in lines
    run_until(traced, lambda: server.lost, what="closed once both sides are shut")
    assert client.recv(100) == b"answer"
    assert "#1 connection_lost: clean close" in lines
    assert "the peer's FIN came first" in lines
    client.close()


def test_write_eof_waits_for_the_buffer(traced: Reactor, lines: Lines) -> None:
    server, client = _accept_one(traced)
    transport: Any = server.transport
    while transport.get_write_buffer_size() == 0:
        transport.write(b"w" * (1 << 20))
    transport.write_eof()
    assert "#1 write_eof(): FIN after the" in lines
    assert "FIN sent" not in lines
    client.setblocking(False)
    got = bytearray()

    def read_to_eof() -> bool:
        try:
            while data := client.recv(1 << 20):
                got.extend(data)
            return True  # b"": the FIN
        except BlockingIOError:
            return False

    run_until(traced, read_to_eof, what="the FIN after the data")
    assert lines.index("buffer empty") < lines.index("#1 FIN sent")
    client.close()


def test_a_reset_from_the_peer(traced: Reactor, lines: Lines) -> None:
    server, client = _accept_one(traced)
    client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET)
    client.close()
    run_until(traced, lambda: server.lost, what="the reset")
    assert "#1 RST received: the peer reset the connection (ConnectionResetError)" in lines
    assert "#1 connection_lost: reset by peer" in lines
    assert "the connection was already reset: nothing more is sent" in lines


def test_abort_and_a_protocol_error(traced: Reactor, lines: Lines) -> None:
    server, client = _accept_one(traced)
    transport: Any = server.transport
    transport.abort(ValueError("policy says no"))
    run_until(traced, lambda: server.lost, what="the abort")
    assert "#1 abort() (ValueError: policy says no): dropping 0 buffered bytes" in lines

    class Broken(Protocol):
        def data_received(self, data: bytes) -> None:
            raise RuntimeError("bug")

    listener = traced.listen_tcp(0, Broken)
    other = socket.create_connection(listener.address)
    other.sendall(b"boom")
    run_until(traced, lambda: "data_received() raised RuntimeError" in lines, what="the error")
    client.close()
    other.close()


# --------------------------------------------------------------- lingering


def test_linger_waits_for_the_peers_fin(traced: Reactor, lines: Lines) -> None:
    server, client = _accept_one(traced)
    transport: Any = server.transport
    transport.write(b"goodbye\n")
    transport.close()
    run_until(traced, lambda: "linger: FIN sent" in lines, what="the linger")
    assert "waiting up to 2 s for the peer's FIN before closing fd" in lines
    assert lines.index("#1 connection_lost") < lines.index("linger: FIN sent")
    client.sendall(b"too late")
    run_until(traced, lambda: "linger: discarding 8 bytes" in lines, what="the discard")
    assert "(#1 lingering) READ" in lines
    assert client.recv(100) == b"goodbye\n"
    client.close()
    run_until(traced, lambda: not traced.resources.lingering, what="the linger's end")
    assert "#1 linger end: the peer's FIN arrived; socket closed" in lines


def test_linger_gives_up(traced: Reactor, lines: Lines, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stream_module, "LINGER_TIME", 0.05)
    server, client = _accept_one(traced)
    server.transport.close()
    run_until(traced, lambda: "linger end" in lines, what="the linger to time out")
    assert "#1 linger end: no FIN from the peer within 0.05 s" in lines
    client.close()


def test_linger_ended_by_a_reset_or_the_reactor(backend: str, lines: Lines) -> None:
    with make_reactor(backend, trace=True) as traced:
        server, client = _accept_one(traced)
        server.transport.close()
        run_until(traced, lambda: traced.resources.lingering, what="lingering")
        client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET)
        client.close()
        run_until(traced, lambda: not traced.resources.lingering, what="the reset")
        assert "#1 linger end: RST received" in lines
        servers, listener = _serve(traced)
        other = socket.create_connection(listener.address)
        run_until(traced, lambda: servers, what="accepted")
        servers[0].transport.close()
        run_until(traced, lambda: traced.resources.lingering, what="lingering")
    assert "#2 linger end: cut short (the reactor is closing, or abort())" in lines
    other.close()


def test_reactor_close_closes_open_connections(backend: str, lines: Lines) -> None:
    with make_reactor(backend, trace=True) as traced:
        _server, client = _accept_one(traced)
    assert "#1 the reactor is closing: closing now, 0 bytes dropped" in lines
    client.close()


# --------------------------------------------------------------------- UDP


class Datagrams:
    def __init__(self) -> None:
        self.received: list[tuple[bytes, Any]] = []
        self.errors: list[OSError] = []
        self.lost: list[BaseException | None] = []

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.received.append((data, addr))

    def error_received(self, exc: OSError) -> None:
        self.errors.append(exc)

    def connection_lost(self, exc: BaseException | None) -> None:
        self.lost.append(exc)

    def pause_writing(self) -> None:
        pass

    def resume_writing(self) -> None:
        pass


def test_datagrams_in_and_out_with_sizes_and_peers(traced: Reactor, lines: Lines) -> None:
    a, b = Datagrams(), Datagrams()
    ta = traced.listen_udp(0, a)
    tb = traced.listen_udp(0, b)
    port_a = ta.get_extra_info("sockname")[1]
    port_b = tb.get_extra_info("sockname")[1]
    tb.sendto(b"queued before start", ("127.0.0.1", port_a))
    assert f"udp 127.0.0.1:{port_b} datagram out 19 bytes to 127.0.0.1:{port_a}: queued" in lines
    run_until(traced, lambda: a.received, what="the queued datagram")
    assert f"udp 127.0.0.1:{port_b} flush: 1 queued datagrams sent" in lines
    assert f"udp 127.0.0.1:{port_a} connection_made (fd" in lines
    tb.sendto(b"ping", ("127.0.0.1", port_a))
    run_until(traced, lambda: len(a.received) == 2, what="ping")
    assert f"udp 127.0.0.1:{port_b} datagram out 4 bytes to 127.0.0.1:{port_a}" in lines
    assert f"udp 127.0.0.1:{port_a} datagram in 4 bytes from 127.0.0.1:{port_b}" in lines
    assert f"fd {ta._fd} (udp 127.0.0.1:{port_a}) READ" in lines
    ta.close()
    run_until(traced, lambda: a.lost, what="closed")
    assert f"udp 127.0.0.1:{port_a} close(): 0 datagrams still queued" in lines
    assert f"udp 127.0.0.1:{port_a} connection_lost: clean close (2 datagrams in, 0 out)" in lines
    ta.sendto(b"late", ("127.0.0.1", port_b))
    assert "after close(): dropped" in lines
    tb.close()


def test_a_connected_endpoint_traces_icmp_errors(traced: Reactor, lines: Lines) -> None:
    closed = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()  # nobody listens there: ICMP port unreachable
    p = Datagrams()
    t = traced.connect_udp("127.0.0.1", port, p)
    run_until(traced, lambda: hasattr(p, "transport"), what="started")
    t.sendto(b"anyone?")
    assert f"datagram out 7 bytes to 127.0.0.1:{port}" in lines
    run_until(traced, lambda: p.errors, what="the ICMP error")
    assert "error_received: ConnectionRefusedError" in lines
    t.close()


def _wait_readable(sock: socket.socket) -> None:
    """Block until the kernel has something for ``sock`` (data, FIN or RST)."""
    ready, _, _ = select.select([sock], [], [], 10)
    assert ready, "nothing arrived within 10 s"


def test_a_write_into_a_reset_connection(traced: Reactor, lines: Lines) -> None:
    server, client = _accept_one(traced)
    client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET)
    client.close()
    transport: Any = server.transport
    _wait_readable(transport.get_extra_info("socket"))  # the RST is there
    transport.write(b"too late")
    assert "#1 write 8 bytes failed: " in lines
    run_until(traced, lambda: server.lost, what="the end")


def test_closing_with_unread_data_sends_a_reset(traced: Reactor, lines: Lines) -> None:
    server, client = _accept_one(traced)
    transport: Any = server.transport
    transport.pause_reading()
    client.sendall(b"unread")
    _wait_readable(transport.get_extra_info("socket"))
    transport.abort()
    run_until(traced, lambda: server.lost, what="the abort")
    assert "#1 socket closed (fd" in lines
    assert "RST sent: 6 bytes from the peer were never read" in lines
    with pytest.raises(ConnectionResetError):
        client.recv(10)
    client.close()


def test_no_linger_when_too_many_linger(
    traced: Reactor, lines: Lines, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(stream_module, "MAX_LINGERING", 0)
    server, client = _accept_one(traced)
    server.transport.close()
    run_until(traced, lambda: server.lost, what="closed")
    assert "too many connections lingering already: FIN sent, no waiting" in lines
    client.close()


def test_a_write_that_is_not_bytes_is_refused_as_before(traced: Reactor, lines: Lines) -> None:
    server, client = _accept_one(traced)
    with pytest.raises(TypeError, match="takes a bytes-like object"):
        server.transport.write("text")  # type: ignore[arg-type]
    assert "write" not in lines
    client.close()


# --------------------------------------------------------------------- TLS


class _Hello(Protocol):
    """Says hello over TLS, closes on the echo."""

    def __init__(self) -> None:
        self.lost: list[BaseException | None] = []

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        transport.write(b"hello\n")

    def data_received(self, data: bytes) -> None:
        self.transport.close()

    def connection_lost(self, exc: BaseException | None) -> None:
        self.lost.append(exc)


def test_tls_handshake_and_close_notify_both_ways(traced: Reactor, lines: Lines) -> None:
    certs = make_certs()
    listener = traced.listen_tcp(0, Echo, ssl=certs.server_context())
    client = _Hello()
    traced.connect_tcp(
        "127.0.0.1",
        listener.port,
        lambda: client,
        ssl=certs.client_context(),
        server_hostname="localhost",
    )
    run_until(traced, lambda: client.lost, what="the TLS round trip and close")
    run_until(traced, lambda: traced.stats()["connections"] == 0, what="both ends closed")
    assert "#1 TLS handshake starts (this is the server side)" in lines
    assert "#2 TLS handshake starts (this is the client side)" in lines
    assert "#1 TLS handshake done: TLSv1." in lines
    assert "#2 TLS handshake done: TLSv1." in lines
    # The client closes first: close_notify out, the server's answer back.
    assert lines.index("#2 TLS shutdown: sending close_notify") < lines.index(
        "#1 TLS close_notify received: the peer ends the TLS session"
    )
    assert "#1 TLS shutdown: sending close_notify" in lines
    assert "#2 TLS close_notify received (the peer's answer): session over" in lines
    assert client.lost == [None]


def test_a_failed_tls_handshake_is_traced(traced: Reactor, lines: Lines) -> None:
    certs = make_certs()
    listener = traced.listen_tcp(0, Echo, ssl=certs.server_context())
    failures: list[BaseException] = []
    untrusting = ssl.create_default_context()
    certs.other_ca.configure_trust(untrusting)  # not the CA that signed the server
    traced.connect_tcp(
        "127.0.0.1",
        listener.port,
        Protocol,
        ssl=untrusting,
        server_hostname="localhost",
        on_failure=failures.append,
    )
    run_until(traced, lambda: failures, what="the handshake to fail")
    assert "#2 TLS handshake failed: SSLCertVerificationError" in lines
