"""UDP endpoints (listen_udp / connect_udp) and the datagram transport, on every backend.

Loopback only. Every wait is on a condition (``run_until``), never a sleep.
"""

from __future__ import annotations

import errno
import logging
import os
import select
import socket
from typing import Any

import pytest

from protocols.base import DatagramProtocol
from reactor import Reactor, udp
from reactor.interfaces import Address
from reactor.udp import DatagramTransport
from tests.conftest import run_until

pytestmark = pytest.mark.timeout(60)

MAX_UDP_PAYLOAD = 65507  # 65,535 - 20 (IPv4 header) - 8 (UDP header)


class Recorder(DatagramProtocol):
    """Records every callback the transport makes."""

    def __init__(self) -> None:
        self.made: list[Any] = []
        self.datagrams: list[tuple[bytes, Address]] = []
        self.errors: list[OSError] = []
        self.lost: list[BaseException | None] = []
        self.paused = 0
        self.resumed = 0

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        self.made.append(transport)

    def datagram_received(self, data: bytes, addr: Address) -> None:
        self.datagrams.append((data, addr))

    def error_received(self, exc: OSError) -> None:
        self.errors.append(exc)

    def connection_lost(self, exc: BaseException | None) -> None:
        self.lost.append(exc)

    def pause_writing(self) -> None:
        self.paused += 1

    def resume_writing(self) -> None:
        self.resumed += 1

    @property
    def data(self) -> list[bytes]:
        return [d for d, _ in self.datagrams]


class EchoServer(Recorder):
    """Sends every datagram back to where it came from."""

    def datagram_received(self, data: bytes, addr: Address) -> None:
        super().datagram_received(data, addr)
        self.transport.sendto(data, addr)


def _port(transport: DatagramTransport) -> int:
    return int(transport.get_extra_info("sockname")[1])


def _free_udp_port(host: str = "127.0.0.1") -> int:
    """A port nothing is bound to (bound and released at once)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _raw_udp(family: int = socket.AF_INET, host: str = "127.0.0.1") -> socket.socket:
    s = socket.socket(family, socket.SOCK_DGRAM)
    s.bind((host, 0))
    return s


def _started(reactor: Reactor, *protocols: Recorder) -> None:
    run_until(reactor, lambda: all(p.made for p in protocols), what="connection_made")


def t_closed(t: DatagramTransport) -> bool:
    """Whether the endpoint's socket has been closed."""
    return bool(t.get_extra_info("socket").fileno() == -1)


def _ipv6_loopback() -> bool:
    if not socket.has_ipv6:  # pragma: no cover - every CI machine has IPv6
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.bind(("::1", 0))
    except OSError:  # pragma: no cover - IPv6 disabled on this machine
        return False
    return True


# ---------------------------------------------------------------------- bulk echo


class WindowedClient(Recorder):
    """Sends numbered datagrams, never more than ``window`` unanswered at a time.

    Nothing is ever resent. A datagram the kernel dropped is declared lost by
    the test (see ``declare_lost``) and a new one takes its slot, so the client
    keeps sending until ``total`` echoes came back or ``max_sends`` were sent.
    """

    def __init__(self, total: int, window: int, max_sends: int, size: int) -> None:
        super().__init__()
        self.total = total
        self.window = window
        self.max_sends = max_sends
        self.size = size
        self.next_seq = 0
        self.outstanding: set[int] = set()
        self.echoed: set[int] = set()
        self.declared_lost: set[int] = set()
        self.corrupt = 0
        self.duplicates = 0

    def payload(self, seq: int) -> bytes:
        return seq.to_bytes(4, "big") + bytes([seq % 251]) * (self.size - 4)

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        self.fill()

    def fill(self) -> None:
        while (
            len(self.outstanding) < self.window
            and len(self.echoed) + len(self.outstanding) < self.total
            and self.next_seq < self.max_sends
        ):
            seq = self.next_seq
            self.next_seq += 1
            self.outstanding.add(seq)
            self.transport.sendto(self.payload(seq))

    def datagram_received(self, data: bytes, addr: Address) -> None:
        seq = int.from_bytes(data[:4], "big")
        if data != self.payload(seq):
            self.corrupt += 1
        elif seq in self.echoed:
            self.duplicates += 1
        else:
            self.outstanding.discard(seq)
            self.declared_lost.discard(seq)  # it was late, not lost
            self.echoed.add(seq)
        self.fill()

    def declare_lost(self) -> None:
        self.declared_lost |= self.outstanding
        self.outstanding.clear()
        self.fill()


def test_10000_datagrams_echoed_with_a_bounded_window(reactor: Reactor) -> None:
    total, window = 10_000, 32
    max_sends = total + total // 10  # at most 10% may be lost on the way
    server = EchoServer()
    st = reactor.listen_udp(0, server)
    client = WindowedClient(total, window, max_sends, size=64)
    ct = reactor.connect_udp("127.0.0.1", _port(st), client)
    socks = [st.get_extra_info("socket"), ct.get_extra_info("socket")]

    def in_flight() -> bool:
        """Whether any datagram is still queued somewhere on its way.

        Loopback delivery is synchronous: once sendto() returns, the datagram
        is in the receiver's queue or was dropped. So when neither socket has
        anything to read and neither transport has anything queued, whatever
        is outstanding was dropped by the kernel.
        """
        readable, _, _ = select.select(socks, [], [], 0)
        return bool(readable) or bool(st.get_write_buffer_size() + ct.get_write_buffer_size())

    progress = {"echoed": -1, "idle_turns": 0}

    def done() -> bool:
        if len(client.echoed) >= total or client.next_seq >= max_sends:
            return True
        if len(client.echoed) != progress["echoed"] or in_flight():
            progress["echoed"] = len(client.echoed)
            progress["idle_turns"] = 0
        else:
            # Two whole turns without an echo and nothing in flight (a turn
            # waits up to 50 ms for events): the outstanding ones are lost.
            progress["idle_turns"] += 1
            if progress["idle_turns"] >= 2:
                client.declare_lost()
                progress["idle_turns"] = 0
        return False

    run_until(reactor, done, timeout=50, what="10,000 echoes")
    lost = len(client.declared_lost)
    assert len(client.echoed) >= total, (len(client.echoed), lost, client.next_seq)
    assert client.next_seq == len(client.echoed) + lost <= max_sends
    assert client.corrupt == client.duplicates == 0
    assert client.errors == server.errors == []
    # Everything the server got, it echoed; the client counted every echo.
    assert len(server.datagrams) == st.datagrams_sent >= total
    assert ct.datagrams_sent == client.next_seq
    assert ct.datagrams_received == len(client.echoed)
    assert st.datagrams_received == len(server.datagrams)
    ct.close()
    st.close()
    run_until(reactor, lambda: client.lost and server.lost, what="connection_lost")
    assert client.lost == server.lost == [None]


# -------------------------------------------------------------- sizes and errors


def test_largest_datagram_arrives_whole_and_zero_length_is_delivered(reactor: Reactor) -> None:
    server = EchoServer()
    st = reactor.listen_udp(0, server)
    client = Recorder()
    ct = reactor.connect_udp("127.0.0.1", _port(st), client)
    _started(reactor, server, client)
    payload = os.urandom(MAX_UDP_PAYLOAD)
    ct.sendto(payload)
    ct.sendto(b"")
    ct.sendto(bytearray(b"after"))
    ct.sendto(memoryview(b"xxview")[2:])
    run_until(reactor, lambda: len(client.datagrams) == 4, what="4 echoes")
    assert server.data == [payload, b"", b"after", b"view"]
    assert client.data == server.data
    assert all(type(d) is bytes for d in client.data)
    assert client.datagrams[0][1] == ct.get_extra_info("peername")
    assert server.datagrams[0][1] == ct.get_extra_info("sockname")
    # One byte more cannot be one IPv4 datagram: error_received, nothing sent.
    ct.sendto(b"x" * (MAX_UDP_PAYLOAD + 1))
    assert [e.errno for e in client.errors] == [errno.EMSGSIZE]
    assert ct.datagrams_sent == 4
    assert not ct.is_closing()


def test_icmp_port_unreachable_reaches_error_received(reactor: Reactor) -> None:
    client = Recorder()
    ct = reactor.connect_udp("127.0.0.1", _free_udp_port(), client)
    _started(reactor, client)
    ct.sendto(b"anyone there?")
    run_until(reactor, lambda: client.errors, what="error_received")
    assert isinstance(client.errors[0], ConnectionRefusedError)
    # The error is reported, not fatal: the endpoint stays open.
    assert not ct.is_closing()
    assert client.lost == []
    ct.close()
    run_until(reactor, lambda: client.lost, what="connection_lost")
    assert client.lost == [None]


def test_exception_in_datagram_received_is_logged_and_endpoint_keeps_serving(
    reactor: Reactor, caplog: pytest.LogCaptureFixture
) -> None:
    class Picky(EchoServer):
        def datagram_received(self, data: bytes, addr: Address) -> None:
            if data == b"boom":
                raise RuntimeError("cannot handle this one")
            super().datagram_received(data, addr)

    server = Picky()
    st = reactor.listen_udp(0, server)
    bad, good = Recorder(), Recorder()
    bt = reactor.connect_udp("127.0.0.1", _port(st), bad)
    gt = reactor.connect_udp("127.0.0.1", _port(st), good)
    _started(reactor, server, bad, good)
    with caplog.at_level(logging.ERROR, logger="reactor"):
        bt.sendto(b"boom")
        gt.sendto(b"fine")
        bt.sendto(b"fine too")
        run_until(reactor, lambda: good.data and bad.data, what="the echoes")
    assert good.data == [b"fine"]
    assert bad.data == [b"fine too"]
    assert st.datagrams_received == 3
    assert not st.is_closing()
    assert server.lost == []
    records = [r for r in caplog.records if "Picky.datagram_received" in r.getMessage()]
    assert len(records) == 1
    assert records[0].exc_info is not None
    assert isinstance(records[0].exc_info[1], RuntimeError)


def test_reads_per_readiness_event_are_bounded(reactor: Reactor) -> None:
    proto = Recorder()
    t = reactor.listen_udp(0, proto)
    _started(reactor, proto)
    with _raw_udp() as peer:
        for i in range(100):
            peer.sendto(i.to_bytes(2, "big"), t.get_extra_info("sockname"))
        # All 100 are queued in the kernel; one readiness event takes a batch.
        t._read_ready()
        assert len(proto.datagrams) == udp._READS_PER_EVENT
        assert 1 < udp._READS_PER_EVENT < 100
        run_until(reactor, lambda: len(proto.datagrams) == 100, what="all 100")
    assert [int.from_bytes(d, "big") for d in proto.data] == list(range(100))


def test_close_from_datagram_received_stops_reading(reactor: Reactor) -> None:
    class OneShot(Recorder):
        def datagram_received(self, data: bytes, addr: Address) -> None:
            super().datagram_received(data, addr)
            self.transport.close()

    proto = OneShot()
    t = reactor.listen_udp(0, proto)
    _started(reactor, proto)
    with _raw_udp() as peer:
        for _ in range(5):
            peer.sendto(b"x", t.get_extra_info("sockname"))
        run_until(reactor, lambda: proto.lost, what="connection_lost")
    assert proto.data == [b"x"]
    assert proto.lost == [None]


# ------------------------------------------------------------------ validation


def test_sendto_validation(reactor: Reactor) -> None:
    server = Recorder()
    st = reactor.listen_udp(0, server)
    client = Recorder()
    ct = reactor.connect_udp("127.0.0.1", _port(st), client)
    _started(reactor, server, client)
    with pytest.raises(ValueError, match="needs an address"):
        st.sendto(b"x")
    with pytest.raises(ValueError, match="connected to"):
        ct.sendto(b"x", ("127.0.0.1", _port(st) + 1 if _port(st) < 65535 else 1))
    with pytest.raises(TypeError, match="not str"):
        ct.sendto("text")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="not int"):
        st.sendto(42, ("127.0.0.1", 9))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="connected to"):
        ct.sendto(b"x", "not an address")
    with pytest.raises(ValueError, match="connected to"):
        ct.sendto(b"x", 42)
    # The peer's own address is allowed on a connected endpoint.
    ct.sendto(b"explicit", ("127.0.0.1", _port(st)))
    run_until(reactor, lambda: server.datagrams, what="the datagram")
    assert server.data == [b"explicit"]
    assert ct.dropped_writes == st.dropped_writes == 0


def test_connect_udp_needs_an_ip_address(reactor: Reactor) -> None:
    with pytest.raises(ValueError, match="needs an IP address"):
        reactor.connect_udp("localhost", 9, Recorder())


def test_connect_udp_local_address(reactor: Reactor) -> None:
    server = EchoServer()
    st = reactor.listen_udp(0, server)
    client = Recorder()
    ct = reactor.connect_udp("127.0.0.1", _port(st), client, local_host="127.0.0.1")
    _started(reactor, server, client)
    local = ct.get_extra_info("sockname")
    assert local[0] == "127.0.0.1"
    assert local[1] != 0
    ct.sendto(b"hi")
    run_until(reactor, lambda: client.datagrams, what="the echo")
    assert server.datagrams == [(b"hi", local)]
    # A local port that is taken: the error is raised and nothing leaks.
    resources = len(reactor.resources)
    with pytest.raises(OSError) as info:
        reactor.connect_udp(
            "127.0.0.1", _port(st), Recorder(), local_host="127.0.0.1", local_port=_port(st)
        )
    assert info.value.errno == errno.EADDRINUSE
    assert len(reactor.resources) == resources


def test_listen_udp_port_in_use_is_a_clear_error(reactor: Reactor) -> None:
    st = reactor.listen_udp(0, Recorder())
    resources = len(reactor.resources)
    with pytest.raises(OSError, match=r"cannot bind UDP 127\.0\.0\.1:") as info:
        reactor.listen_udp(_port(st), Recorder())
    assert info.value.errno == errno.EADDRINUSE
    assert len(reactor.resources) == resources


def test_ports_out_of_range_and_unresolvable_hosts(
    reactor: Reactor, monkeypatch: pytest.MonkeyPatch
) -> None:
    # getaddrinfo() would wrap 70000 to 4464 and bind that.
    for port in (70000, -1):
        with pytest.raises(ValueError, match=r"port must be (an int )?in 0-65535"):
            reactor.listen_udp(port, Recorder())
    made: list[socket.socket] = []
    real_socket = socket.socket

    def recording_socket(*args: Any) -> socket.socket:
        sock = real_socket(*args)
        made.append(sock)
        return sock

    monkeypatch.setattr(socket, "socket", recording_socket)
    with pytest.raises(ValueError, match=r"port must be in 0-65535"):
        reactor.connect_udp("127.0.0.1", 70000, Recorder())
    assert made == []  # refused before any socket was made

    def no_such_host(*args: Any, **kwargs: Any) -> Any:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_such_host)
    with pytest.raises(OSError, match=r"cannot bind UDP no\.such\.host:0") as info:
        reactor.listen_udp(0, Recorder(), host="no.such.host")
    assert info.value.errno == errno.EINVAL
    assert len(reactor.resources) == 0


def test_reuse_port_lets_two_endpoints_bind_the_same_port(reactor: Reactor) -> None:
    if not hasattr(socket, "SO_REUSEPORT"):  # pragma: no cover - not on Linux/BSD
        pytest.skip("SO_REUSEPORT is not available on this platform")
    a, b = Recorder(), Recorder()
    ta = reactor.listen_udp(0, a, reuse_port=True)
    tb = reactor.listen_udp(_port(ta), b, reuse_port=True)
    assert _port(ta) == _port(tb)
    for t in (ta, tb):
        sock = t.get_extra_info("socket")
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT) == 1
    _started(reactor, a, b)
    with _raw_udp() as peer:
        peer.sendto(b"to whoever", ta.get_extra_info("sockname"))
        run_until(reactor, lambda: a.datagrams or b.datagrams, what="a datagram")
    # Exactly one of the two endpoints gets each datagram.
    assert a.data + b.data == [b"to whoever"]


def test_reuse_port_setup_failure_closes_the_socket(
    reactor: Reactor, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not hasattr(socket, "SO_REUSEPORT"):  # pragma: no cover - not on Linux/BSD
        pytest.skip("SO_REUSEPORT is not available on this platform")
    made: list[socket.socket] = []
    real_socket = socket.socket

    def recording_socket(*args: Any) -> socket.socket:
        sock = real_socket(*args)
        made.append(sock)
        return sock

    monkeypatch.setattr(socket, "socket", recording_socket)
    monkeypatch.setattr(socket, "SO_REUSEPORT", 0x7FFF)  # no such option: setsockopt fails
    with pytest.raises(OSError):
        reactor.listen_udp(0, Recorder(), reuse_port=True)
    assert len(made) == 1
    assert made[0].fileno() == -1


# ---------------------------------------------------------- closing and counting


def test_sends_after_close_are_dropped_and_counted(reactor: Reactor) -> None:
    server = Recorder()
    st = reactor.listen_udp(0, server)
    client = Recorder()
    ct = reactor.connect_udp("127.0.0.1", _port(st), client)
    _started(reactor, server, client)
    ct.sendto(b"before")
    ct.close()
    assert ct.is_closing()
    ct.sendto(b"after 1")
    ct.sendto(b"after 2")
    assert ct.dropped_writes == 2
    run_until(reactor, lambda: client.lost and server.datagrams, what="close")
    assert server.data == [b"before"]
    assert ct.datagrams_sent == 1
    # Address checks still come first: a bad call is an error, not a drop.
    st.close()
    with pytest.raises(ValueError):
        st.sendto(b"x")
    st.sendto(b"x", ("127.0.0.1", 9))
    assert st.dropped_writes == 1


def test_connection_lost_exactly_once(reactor: Reactor) -> None:
    proto = Recorder()
    t = reactor.listen_udp(0, proto)
    _started(reactor, proto)
    assert repr(t).endswith(" open>")
    t.close()
    t.close()
    t.abort()
    t._force_close(None)
    run_until(reactor, lambda: proto.lost, what="connection_lost")
    for _ in range(3):
        reactor.run_once(0)
    t.abort()
    t.close()
    assert proto.lost == [None]
    assert proto.made == [t]
    assert repr(t).endswith(" closed>")
    assert t.get_extra_info("socket").fileno() == -1
    assert t not in reactor.resources


def test_abort_after_connection_lost_leaves_a_reused_fd_alone(reactor: Reactor) -> None:
    """The closed endpoint's fd number is reused by the next socket at once."""
    first = Recorder()
    t1 = reactor.listen_udp(0, first)
    _started(reactor, first)
    old_fd = t1._fd
    t1.close()
    run_until(reactor, lambda: first.lost, what="connection_lost")
    second = Recorder()
    t2 = reactor.listen_udp(0, second)
    _started(reactor, second)
    if t2._fd != old_fd:  # pragma: no cover - something else took the number
        pytest.skip("the fd number was not reused")
    t1.abort()  # must not unregister t2's reader, which has the same fd number
    with _raw_udp() as peer:
        peer.sendto(b"still served", t2.get_extra_info("sockname"))
        run_until(reactor, lambda: second.datagrams, what="the datagram")
    assert second.data == [b"still served"]


def test_close_and_abort_before_the_loop_starts_the_endpoint(reactor: Reactor) -> None:
    receiver = Recorder()
    rt = reactor.listen_udp(0, receiver)
    where = rt.get_extra_info("sockname")
    # Queued before the loop ran, then closed: close() still sends them.
    closed = Recorder()
    ct = reactor.listen_udp(0, closed)
    ct.sendto(b"one", where)
    ct.sendto(b"two", where)
    assert ct.get_write_buffer_size() == 6
    ct.close()
    # Aborted before the loop ran: nothing is sent.
    aborted = Recorder()
    at = reactor.listen_udp(0, aborted)
    at.sendto(b"never", where)
    at.abort()
    assert at.get_write_buffer_size() == 0
    run_until(reactor, lambda: len(receiver.datagrams) == 2, what="the flushed datagrams")
    run_until(reactor, lambda: t_closed(ct) and t_closed(at), what="both closed")
    assert receiver.data == [b"one", b"two"]
    assert ct.datagrams_sent == 2
    assert at.datagrams_sent == 0
    # Neither protocol was started, so neither hears anything.
    assert closed.made == closed.lost == aborted.made == aborted.lost == []


def test_reactor_close_releases_endpoints(backend: str) -> None:
    from tests.conftest import make_reactor

    reactor = make_reactor(backend)
    started, pending = Recorder(), Recorder()
    st = reactor.listen_udp(0, started)
    _started(reactor, started)
    pt = reactor.listen_udp(0, pending)  # never started
    pt.sendto(b"queued", st.get_extra_info("sockname"))
    reactor.close()
    assert started.lost == [None]
    assert pending.made == pending.lost == []
    assert t_closed(st)
    assert t_closed(pt)


def test_connection_made_may_close_and_queued_datagrams_still_go(reactor: Reactor) -> None:
    class Closer(Recorder):
        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            transport.close()

    receiver = Recorder()
    rt = reactor.listen_udp(0, receiver)
    proto = Closer()
    t = reactor.listen_udp(0, proto)
    t.sendto(b"queued before start", rt.get_extra_info("sockname"))
    run_until(reactor, lambda: proto.lost and receiver.datagrams, what="flush and close")
    assert receiver.data == [b"queued before start"]
    assert proto.lost == [None]
    assert len(proto.made) == 1


def test_exceptions_in_protocol_callbacks_are_logged(
    reactor: Reactor, caplog: pytest.LogCaptureFixture
) -> None:
    class Faulty(Recorder):
        def error_received(self, exc: OSError) -> None:
            super().error_received(exc)
            raise RuntimeError("in error_received")

        def connection_lost(self, exc: BaseException | None) -> None:
            super().connection_lost(exc)
            raise RuntimeError("in connection_lost")

    proto = Faulty()
    t = reactor.connect_udp("127.0.0.1", _free_udp_port(), proto)
    _started(reactor, proto)
    with caplog.at_level(logging.ERROR, logger="reactor"):
        t.sendto(b"x" * (MAX_UDP_PAYLOAD + 1))
        t.close()
        run_until(reactor, lambda: proto.lost, what="connection_lost")
    messages = [r.getMessage() for r in caplog.records]
    assert any("Faulty.error_received()" in m for m in messages)
    assert any("Faulty.connection_lost()" in m for m in messages)
    assert len(proto.errors) == 1
    assert proto.lost == [None]
    assert t_closed(t)


def test_exception_in_connection_made_closes_with_it(
    reactor: Reactor, caplog: pytest.LogCaptureFixture
) -> None:
    error = RuntimeError("in connection_made")

    class Broken(Recorder):
        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            raise error

    proto = Broken()
    with caplog.at_level(logging.ERROR, logger="reactor"):
        t = reactor.listen_udp(0, proto)
        run_until(reactor, lambda: proto.lost, what="connection_lost")
    assert proto.lost == [error]
    assert t_closed(t)
    assert any("Broken.connection_made()" in r.getMessage() for r in caplog.records)


# ---------------------------------------------------- buffered sends, flow control


def _dgram_pair(reactor: Reactor, proto: Recorder) -> tuple[DatagramTransport, socket.socket]:
    """A datagram transport over one end of an AF_UNIX datagram socketpair.

    On Linux a UDP socket on loopback never blocks (the kernel releases its
    send memory as soon as the datagram is handed to the loopback device),
    but a Unix datagram socket does: when the peer's queue is full or its own
    (shrunk) send buffer is spent. So the transport's buffering is tested
    against real EAGAINs from the kernel.
    """
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    a.setblocking(False)
    b.setblocking(False)
    a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    t = DatagramTransport(reactor, a, proto, peer="peer")
    reactor.call_soon(t._start)
    _started(reactor, proto)
    return t, b


def _drain_into(reactor: Reactor, sock: socket.socket, into: list[bytes]) -> None:
    def read() -> None:
        for _ in range(64):
            try:
                into.append(sock.recv(65536))
            except BlockingIOError:
                return

    reactor.add_reader(sock, read)


def test_buffered_sends_pause_and_resume_writing(reactor: Reactor) -> None:
    proto = Recorder()
    t, peer = _dgram_pair(reactor, proto)
    t.set_write_buffer_limits(high=8 * 1024)
    assert t.get_write_buffer_limits() == (2 * 1024, 8 * 1024)
    payloads = [i.to_bytes(4, "big") * 250 for i in range(200)]  # 1000 bytes each
    for p in payloads:
        t.sendto(p)
    # The kernel took the first few; the rest is queued, past the high mark.
    assert 0 < t.datagrams_sent < len(payloads)
    assert t.get_write_buffer_size() > 8 * 1024
    assert proto.paused == 1
    assert proto.resumed == 0
    got: list[bytes] = []
    with peer:
        _drain_into(reactor, peer, got)
        run_until(reactor, lambda: len(got) == len(payloads), what="all datagrams")
        reactor.remove_reader(peer)
    assert got == payloads
    assert proto.paused == proto.resumed == 1
    assert t.get_write_buffer_size() == 0
    assert t.datagrams_sent == len(payloads)
    assert proto.errors == []
    t.close()
    run_until(reactor, lambda: proto.lost, what="connection_lost")


def test_udp_send_buffer_shrunk_blocks_where_the_kernel_allows_it(reactor: Reactor) -> None:
    server = Recorder()
    st = reactor.listen_udp(0, server)
    client = Recorder()
    ct = reactor.connect_udp("127.0.0.1", _port(st), client)
    _started(reactor, server, client)
    sock = ct.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1)
    ct.set_write_buffer_limits(high=4096)
    # Small enough that the server's receive buffer holds the whole burst.
    for i in range(40):
        ct.sendto(i.to_bytes(4, "big") * 1000)
        if ct.get_write_buffer_size():
            break
    else:
        pytest.skip(
            "UDP sends on loopback never block here (Linux frees the send buffer as soon as "
            "the loopback device takes a datagram); buffering is tested over AF_UNIX datagrams"
        )
    ct.sendto(b"last")
    assert client.paused == 1
    run_until(reactor, lambda: server.data[-1:] == [b"last"], what="the burst")
    assert client.resumed == 1
    assert ct.get_write_buffer_size() == 0


def test_abort_from_resume_writing(reactor: Reactor, caplog: pytest.LogCaptureFixture) -> None:
    class AbortOnResume(Recorder):
        def resume_writing(self) -> None:
            super().resume_writing()
            self.transport.abort()

    proto = AbortOnResume()
    t, peer = _dgram_pair(reactor, proto)
    t.set_write_buffer_limits(high=2000, low=1000)
    for i in range(100):
        t.sendto(bytes([i]) * 500)
    assert proto.paused == 1
    t.close()  # close() would flush everything; the abort in resume_writing stops that
    got: list[bytes] = []
    with peer, caplog.at_level(logging.ERROR):
        _drain_into(reactor, peer, got)
        run_until(reactor, lambda: proto.lost, what="connection_lost")
        reactor.remove_reader(peer)
    assert proto.resumed == 1
    assert proto.lost == [None]
    assert t.get_write_buffer_size() == 0
    assert t.datagrams_sent < 100
    assert [r.getMessage() for r in caplog.records] == []


def test_close_flushes_queued_datagrams_and_abort_drops_them(reactor: Reactor) -> None:
    payloads = [bytes([i]) * 500 for i in range(100)]
    got: dict[str, list[bytes]] = {}
    for how in ("close", "abort"):
        proto = Recorder()
        t, peer = _dgram_pair(reactor, proto)
        for p in payloads:
            t.sendto(p)
        queued = t.get_write_buffer_size()
        assert queued > 0
        sent_before = t.datagrams_sent
        getattr(t, how)()
        assert t.is_closing()
        assert repr(t).endswith(" closing>" if how == "close" else " closed>")
        if how == "abort":
            assert t.get_write_buffer_size() == 0
        got[how] = []
        with peer:
            _drain_into(reactor, peer, got[how])
            run_until(reactor, lambda p=proto: p.lost, what=f"connection_lost after {how}")  # type: ignore[misc]
            # Whatever was still queued in the kernel's socket is readable.
            while True:
                try:
                    got[how].append(peer.recv(65536))
                except BlockingIOError:
                    break
            reactor.remove_reader(peer)
        assert proto.lost == [None]
        if how == "close":
            assert got[how] == payloads
            assert t.datagrams_sent == len(payloads)
        else:
            assert got[how] == payloads[:sent_before]
            assert t.datagrams_sent == sent_before
    assert len(got["abort"]) < len(got["close"])


def test_write_buffer_limits(reactor: Reactor) -> None:
    proto = Recorder()
    t = reactor.listen_udp(0, proto)
    assert t.get_write_buffer_limits() == (16 * 1024, 64 * 1024)
    t.set_write_buffer_limits(low=1000)
    assert t.get_write_buffer_limits() == (1000, 4000)
    t.set_write_buffer_limits()
    assert t.get_write_buffer_limits() == (16 * 1024, 64 * 1024)
    with pytest.raises(ValueError, match="high"):
        t.set_write_buffer_limits(high=10, low=20)
    with pytest.raises(ValueError, match="high"):
        t.set_write_buffer_limits(high=-1)
    # Before the loop starts the endpoint, datagrams are queued: lowering the
    # high mark below what is queued pauses, raising the low mark resumes.
    where = t.get_extra_info("sockname")
    t.sendto(b"x" * 100, where)
    t.set_write_buffer_limits(high=50, low=10)
    assert proto.paused == 1
    t.set_write_buffer_limits(high=50, low=10)
    assert proto.paused == 1
    t.set_write_buffer_limits(high=200, low=100)
    assert proto.resumed == 1
    t.set_write_buffer_limits(high=200, low=100)
    assert proto.resumed == 1
    run_until(reactor, lambda: proto.datagrams, what="the datagram to itself")
    assert proto.data == [b"x" * 100]


def test_pause_and_resume_writing_exceptions_are_logged(
    reactor: Reactor, caplog: pytest.LogCaptureFixture
) -> None:
    class Faulty(Recorder):
        def pause_writing(self) -> None:
            super().pause_writing()
            raise RuntimeError("in pause_writing")

        def resume_writing(self) -> None:
            super().resume_writing()
            raise RuntimeError("in resume_writing")

    proto = Faulty()
    with caplog.at_level(logging.ERROR, logger="reactor"):
        t = reactor.listen_udp(0, proto)
        t.set_write_buffer_limits(high=10)
        t.sendto(b"x" * 100, t.get_extra_info("sockname"))  # queued: not started yet
        run_until(reactor, lambda: proto.datagrams, what="the datagram")
    assert proto.paused == proto.resumed == 1
    messages = [r.getMessage() for r in caplog.records]
    assert any("Faulty.pause_writing()" in m for m in messages)
    assert any("Faulty.resume_writing()" in m for m in messages)
    assert not t.is_closing()


def test_queued_datagrams_that_cannot_be_sent_are_reported_and_dropped(
    reactor: Reactor, caplog: pytest.LogCaptureFixture
) -> None:
    receiver = Recorder()
    rt = reactor.listen_udp(0, receiver)
    where = rt.get_extra_info("sockname")
    proto = Recorder()
    t = reactor.listen_udp(0, proto)
    # Queued before the loop starts the endpoint, so sent from _write_ready.
    t.sendto(b"x" * (MAX_UDP_PAYLOAD + 1), where)  # too big: error_received
    t.sendto(b"bad address", "not an address")  # the socket module rejects it
    t.sendto(b"bad port", ("127.0.0.1", 70000))
    t.sendto(b"fine", where)
    with caplog.at_level(logging.ERROR, logger="reactor"):
        run_until(reactor, lambda: receiver.datagrams, what="the good datagram")
        for _ in range(3):
            reactor.run_once(0)
    assert receiver.data == [b"fine"]
    assert [e.errno for e in proto.errors] == [errno.EMSGSIZE]
    dropped = [r for r in caplog.records if "cannot send a queued datagram" in r.getMessage()]
    assert len(dropped) == 2
    assert t.get_write_buffer_size() == 0
    assert t.datagrams_sent == 1
    # Nothing is left registered for writing, so the loop does not spin.
    assert t._fd not in reactor._writers


def test_abort_from_error_received_while_flushing(
    reactor: Reactor, caplog: pytest.LogCaptureFixture
) -> None:
    class AbortOnError(Recorder):
        def error_received(self, exc: OSError) -> None:
            super().error_received(exc)
            self.transport.abort()

    receiver = Recorder()
    rt = reactor.listen_udp(0, receiver)
    where = rt.get_extra_info("sockname")
    proto = AbortOnError()
    t = reactor.listen_udp(0, proto)
    t.sendto(b"first", where)
    t.sendto(b"x" * (MAX_UDP_PAYLOAD + 1), where)
    t.sendto(b"never", where)
    with caplog.at_level(logging.ERROR):
        run_until(reactor, lambda: proto.lost, what="connection_lost")
        for _ in range(3):
            reactor.run_once(0)
    assert proto.lost == [None]
    assert len(proto.errors) == 1
    assert t.get_write_buffer_size() == 0
    assert receiver.data == [b"first"]
    assert [r.getMessage() for r in caplog.records] == []


# ------------------------------------------------------------- extra info, repr


def test_get_extra_info(reactor: Reactor) -> None:
    server = Recorder()
    st = reactor.listen_udp(0, server)
    client = Recorder()
    ct = reactor.connect_udp("127.0.0.1", _port(st), client)
    assert st.get_extra_info("sockname") == ("127.0.0.1", _port(st))
    assert st.get_extra_info("peername") is None
    assert st.get_extra_info("peername", "none") == "none"
    assert ct.get_extra_info("peername") == ("127.0.0.1", _port(st))
    assert isinstance(ct.get_extra_info("socket"), socket.socket)
    assert ct.get_extra_info("socket").type == socket.SOCK_DGRAM
    assert ct.get_extra_info("no such thing") is None
    assert ct.get_extra_info("no such thing", 7) == 7
    assert ct.get_protocol() is client
    assert f"fd={ct._fd}" in repr(ct)
    ct.close()
    run_until(reactor, lambda: t_closed(ct), what="the socket closed")
    assert ct.get_extra_info("sockname") is None
    assert ct.get_extra_info("sockname", "gone") == "gone"


# -------------------------------------------------------------------- options


def test_broadcast_on_loopback(reactor: Reactor) -> None:
    receiver = Recorder()
    try:
        rt = reactor.listen_udp(0, receiver, host="127.255.255.255")
    except OSError as exc:  # pragma: no cover - depends on the machine
        pytest.skip(f"cannot bind the loopback broadcast address 127.255.255.255: {exc}")
    where = ("127.255.255.255", _port(rt))
    plain, allowed = Recorder(), Recorder()
    pt = reactor.listen_udp(0, plain)
    bt = reactor.listen_udp(0, allowed, broadcast=True)
    _started(reactor, receiver, plain, allowed)
    sock = bt.get_extra_info("socket")
    assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST) == 1
    # Without SO_BROADCAST the kernel refuses: reported, not raised.
    pt.sendto(b"refused", where)
    assert [type(e) for e in plain.errors] == [PermissionError]
    bt.sendto(b"to everyone", where)
    run_until(reactor, lambda: receiver.datagrams or allowed.errors, what="the broadcast")
    if allowed.errors:  # pragma: no cover - depends on the machine
        pytest.skip(f"broadcast on loopback is not allowed here: {allowed.errors[0]}")
    assert receiver.data == [b"to everyone"]
    # set_broadcast() turns it on and off on an existing endpoint.
    pt.set_broadcast(True)
    pt.sendto(b"now allowed", where)
    run_until(reactor, lambda: len(receiver.datagrams) == 2, what="the second broadcast")
    assert receiver.data[1] == b"now allowed"
    pt.set_broadcast(False)
    assert pt.get_extra_info("socket").getsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST) == 0


def test_multicast_on_loopback(reactor: Reactor) -> None:
    group = "239.255.0.1"
    receiver = Recorder()
    try:
        rt = reactor.listen_udp(0, receiver, host=group)
        rt.join_group(group, "127.0.0.1")
    except OSError as exc:  # pragma: no cover - depends on the machine
        pytest.skip(f"cannot join multicast group {group} on 127.0.0.1: {exc}")
    sender = Recorder()
    st = reactor.listen_udp(0, sender)
    st.set_multicast_interface("127.0.0.1")
    st.set_multicast_ttl(1)
    st.set_multicast_loopback(True)
    _started(reactor, receiver, sender)
    st.sendto(b"to the group", (group, _port(rt)))
    run_until(reactor, lambda: receiver.datagrams or sender.errors, what="the multicast")
    if sender.errors:  # pragma: no cover - depends on the machine
        pytest.skip(f"cannot send multicast on loopback here (no route?): {sender.errors[0]}")
    assert receiver.datagrams == [(b"to the group", st.get_extra_info("sockname"))]
    rt.leave_group(group, "127.0.0.1")
    # Left already: the kernel says so, which shows the first leave happened.
    with pytest.raises(OSError) as info:
        rt.leave_group(group, "127.0.0.1")
    assert info.value.errno == errno.EADDRNOTAVAIL


def test_multicast_options(reactor: Reactor) -> None:
    t = reactor.listen_udp(0, Recorder())
    sock = t.get_extra_info("socket")
    t.set_multicast_ttl(5)
    assert sock.getsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL) == 5
    t.set_multicast_loopback(False)
    assert sock.getsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP) == 0
    t.set_multicast_loopback(True)
    assert sock.getsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP) == 1
    t.set_multicast_interface("127.0.0.1")
    assert sock.getsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, 4) == socket.inet_aton(
        "127.0.0.1"
    )
    with pytest.raises(OSError):
        t.join_group("not-an-address")


# ----------------------------------------------------------------------- IPv6


@pytest.mark.skipif(not _ipv6_loopback(), reason="IPv6 loopback (::1) is not available")
def test_ipv6_echo_on_loopback(reactor: Reactor) -> None:
    server = EchoServer()
    st = reactor.listen_udp(0, server, host="::1")
    client = Recorder()
    ct = reactor.connect_udp("::1", _port(st), client, local_host="::1")
    _started(reactor, server, client)
    assert ct.get_extra_info("socket").family == socket.AF_INET6
    peer = ct.get_extra_info("peername")
    assert peer[:2] == ("::1", _port(st))
    ct.sendto(b"six")
    # (host, port) names the peer as well as getpeername()'s 4-tuple does.
    ct.sendto(b"seven", ("::1", _port(st)))
    ct.sendto(b"eight", peer)
    with pytest.raises(ValueError, match="connected to"):
        ct.sendto(b"x", ("::1", _port(st), 0, 0, 0))
    with pytest.raises(ValueError, match="connected to"):
        ct.sendto(b"x", 42)
    payload = os.urandom(MAX_UDP_PAYLOAD)
    ct.sendto(payload)
    run_until(reactor, lambda: len(client.datagrams) == 4, what="the echoes")
    assert client.data == [b"six", b"seven", b"eight", payload]
    assert server.datagrams[0][1][:2] == ct.get_extra_info("sockname")[:2]
