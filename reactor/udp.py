"""UDP: the datagram transport, and listening/connecting endpoints.

UDP has no connection and no stream: each ``sendto`` is one datagram that
arrives whole or not at all, and ``datagram_received`` gets exactly one. A
zero-length datagram is real and is delivered as ``b""``.

Reading takes up to ``_READS_PER_EVENT`` datagrams per readiness event: one
per event would make a busy UDP server pay a whole loop turn per packet,
while an unbounded loop would let a flood starve every other connection.

A *connected* UDP socket (``connect_udp``) talks to one peer; the kernel then
reports an ICMP "port unreachable" from that peer as ECONNREFUSED on the
next send or receive, which reaches ``error_received``.

A datagram that cannot be sent (too large, or an ICMP error pending) is
reported to ``error_received`` and dropped, never retried.
"""

from __future__ import annotations

import errno
import logging
import socket
from collections import deque
from collections.abc import Callable
from typing import Any, Final

from reactor.factory import check_datagram_protocol
from reactor.flow import DEFAULT_HIGH_WATER, DEFAULT_LOW_WATER
from reactor.interfaces import Address, DatagramProtocolInterface, ReactorPort
from reactor.sockets import Port, check_port, ip_family, set_reuse_port
from reactor.transport import BaseTransport, as_bytes

__all__ = ["DatagramMaker", "DatagramTransport", "connect_udp", "listen_udp"]

log = logging.getLogger("reactor")

_READS_PER_EVENT: Final = 32
#: Larger than any UDP payload (65,507 bytes over IPv4), so none is truncated.
_MAX_DATAGRAM: Final = 65536


class DatagramTransport(BaseTransport):
    """A UDP endpoint with asyncio's ``DatagramTransport`` method names."""

    kind = "datagram"

    __slots__ = ("_buffer", "_datagram_received", "datagrams_received", "datagrams_sent")

    def __init__(
        self,
        reactor: ReactorPort,
        sock: socket.socket,
        protocol: DatagramProtocolInterface,
        peer: Address = None,
    ) -> None:
        super().__init__(reactor, sock, protocol, peer)
        self._buffer: deque[tuple[bytes, Address]] = deque()
        self._buffer_size = 0
        self._high = DEFAULT_HIGH_WATER
        self._low = DEFAULT_LOW_WATER
        self._protocol_paused = False
        self.datagrams_received = 0
        self.datagrams_sent = 0
        # Bound once: _read_ready calls it per datagram (trace mode wraps it).
        self._datagram_received = protocol.datagram_received

    def _start(self) -> None:
        if self._conn_lost:
            return
        if not self._closing:
            self._started = True
            try:
                self._protocol.connection_made(self)
            except Exception as exc:
                self._protocol_error(exc, "connection_made")
                self._force_close(exc)
                return
            if not self._closing:
                self._reactor.watch_read(self._fd, self._read_ready)
        # Datagrams queued before the loop started us (or by connection_made);
        # also when close() came first: close() promises to send them.
        if self._buffer:
            self._reactor.watch_write(self._fd, self._write_ready)

    # ------------------------------------------------------------------ reading

    def _read_ready(self) -> None:
        recvfrom = self._sock.recvfrom
        deliver = self._datagram_received
        for _ in range(_READS_PER_EVENT):
            try:
                data, addr = recvfrom(_MAX_DATAGRAM)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                # ICMP errors (e.g. ECONNREFUSED) on a connected socket.
                self._error_received(exc)
                return
            self.datagrams_received += 1
            try:
                deliver(data, addr)
            except Exception as exc:
                # One bad datagram must not take the endpoint down for every
                # other peer: log it and keep serving.
                self._protocol_error(exc, "datagram_received")
            if self._closing:
                return

    def _error_received(self, exc: OSError) -> None:
        try:
            self._protocol.error_received(exc)
        except Exception as error:
            self._protocol_error(error, "error_received")

    def _protocol_error(self, exc: Exception, where: str) -> None:
        self._report(exc, where, "")

    # ------------------------------------------------------------------ writing

    def sendto(self, data: bytes | bytearray | memoryview, addr: Address = None) -> None:
        """Send one datagram to ``addr`` (or to the connected peer when None)."""
        if type(data) is not bytes:
            data = as_bytes(data, "sendto")
        self._check_thread("sendto")
        peer = self._peername
        if peer is not None:
            if addr is not None and addr != peer and not _same_peer(addr, peer):
                raise ValueError(
                    f"this endpoint is connected to {peer!r}; sendto() cannot send to {addr!r}"
                )
            addr = None
        elif addr is None:
            raise ValueError("sendto() needs an address: this endpoint is not connected")
        if self._closing:
            self.dropped_writes += 1
            return
        if not self._buffer and self._started:
            try:
                if addr is None:
                    self._sock.send(data)
                else:
                    self._sock.sendto(data, addr)
                self.datagrams_sent += 1
                return
            except (BlockingIOError, InterruptedError):
                self._reactor.watch_write(self._fd, self._write_ready)
            except OSError as exc:
                self._error_received(exc)
                return
        self._buffer.append((data, addr))
        self._buffer_size += len(data)
        if self._buffer_size > self._high and not self._protocol_paused:
            self._pause_protocol()

    def _write_ready(self) -> None:
        buf = self._buffer
        sock = self._sock
        while buf:
            data, addr = buf[0]
            error: BaseException | None = None
            try:
                if addr is None:
                    sock.send(data)
                else:
                    sock.sendto(data, addr)
            except (BlockingIOError, InterruptedError):
                return
            except Exception as exc:
                # This datagram cannot be sent (too large, ICMP error, or an
                # address the socket module rejects): report it, drop it and go
                # on with the next, or it would be retried on every turn.
                error = exc
            else:
                self.datagrams_sent += 1
            # Dequeue before calling the protocol, which may abort() or sendto().
            buf.popleft()
            self._buffer_size -= len(data)
            if error is not None:
                if isinstance(error, OSError):
                    self._error_received(error)
                else:
                    self._reactor.report_error(
                        {
                            "message": f"{self!r}: cannot send a queued datagram to {addr!r}; "
                            "dropped it",
                            "exception": error,
                            "transport": self,
                        }
                    )
                if self._conn_lost:
                    return  # aborted from error_received()
            if self._protocol_paused and self._buffer_size <= self._low:
                self._resume_protocol()
        self._reactor.unwatch_write(self._fd)
        if self._closing:
            self._lose(None)

    # ------------------------------------------------------------------ options

    def set_broadcast(self, enabled: bool = True) -> None:
        """Allow sending to broadcast addresses (SO_BROADCAST)."""
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, int(enabled))

    def join_group(self, group: str, interface: str = "0.0.0.0") -> None:
        """Receive datagrams sent to IPv4 multicast ``group`` on ``interface``."""
        mreq = socket.inet_aton(group) + socket.inet_aton(interface)
        self._sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreq)

    def leave_group(self, group: str, interface: str = "0.0.0.0") -> None:
        mreq = socket.inet_aton(group) + socket.inet_aton(interface)
        self._sock.setsockopt(socket.IPPROTO_IP, socket.IP_DROP_MEMBERSHIP, mreq)

    def set_multicast_ttl(self, ttl: int) -> None:
        """How many router hops multicast datagrams may take (1: this network only)."""
        self._sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, ttl)

    def set_multicast_loopback(self, enabled: bool) -> None:
        """Whether this host receives its own multicast datagrams."""
        self._sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, int(enabled))

    def set_multicast_interface(self, interface: str) -> None:
        """Send multicast datagrams out of the interface with this IPv4 address."""
        self._sock.setsockopt(
            socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(interface)
        )

    # ------------------------------------------------------------------ closing

    def close(self) -> None:
        """Stop receiving; send what is queued, then connection_lost(None).

        Closed before the loop started the endpoint, the queued datagrams are
        still sent, but the protocol hears nothing (no connection_made, so no
        connection_lost).
        """
        self._check_thread("close")
        if self._closing:
            return
        self._closing = True
        self._reactor.unwatch_read(self._fd)
        if not self._buffer:
            self._lose(None)
        # else _write_ready (or _start, if the loop has not started us yet)
        # sends what is queued, then loses the endpoint.

    def abort(self) -> None:
        """Close now, dropping queued datagrams."""
        self._check_thread("abort")
        self._force_close(None)

    def _force_close(self, exc: BaseException | None) -> None:
        if self._conn_lost:
            # Already ending; after connection_lost the fd number may belong
            # to another socket, whose callbacks must not be removed.
            return
        self._closing = True
        self._buffer.clear()
        self._buffer_size = 0
        self._reactor.unwatch_read(self._fd)
        self._reactor.unwatch_write(self._fd)
        self._lose(exc)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        """``"sockname"``, ``"peername"`` (connected endpoints), ``"socket"``, ``"reactor"``."""
        if name == "sockname":
            try:
                return self._sock.getsockname()
            except OSError:
                return default
        return super().get_extra_info(name, default)


#: How listen_udp/connect_udp make the endpoint: the class itself, or (in
#: trace mode) a tracing one. The reactor chooses.
DatagramMaker = Callable[
    [ReactorPort, socket.socket, DatagramProtocolInterface, Address], DatagramTransport
]


def _same_peer(addr: Address, peer: Address) -> bool:
    """Whether ``addr`` names the connected peer: IPv6 ``(host, port)`` matches
    the ``(host, port, flowinfo, scope_id)`` that getpeername() gives."""
    try:
        return len(peer) == 4 and len(addr) == 2 and tuple(addr) == peer[:2]
    except TypeError:
        return False


def _udp_socket(family: int, broadcast: bool, reuse_port: bool) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        sock.setblocking(False)
        if broadcast:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            set_reuse_port(sock)
    except BaseException:
        sock.close()
        raise
    return sock


def listen_udp(
    reactor: ReactorPort,
    port: Port,
    protocol: DatagramProtocolInterface,
    host: str | None = "127.0.0.1",
    *,
    broadcast: bool = False,
    reuse_port: bool = False,
    make_transport: DatagramMaker = DatagramTransport,
) -> DatagramTransport:
    """Bind a UDP endpoint on ``host:port``; ``protocol`` gets every datagram."""
    number = check_port(port, "listen_udp()")
    check_datagram_protocol(protocol, "listen_udp")
    try:
        infos = socket.getaddrinfo(host, number, type=socket.SOCK_DGRAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise OSError(errno.EINVAL, f"cannot bind UDP {host}:{number}: {exc}") from None
    family, sockaddr = infos[0][0], infos[0][4]
    sock = _udp_socket(family, broadcast, reuse_port)
    try:
        sock.bind(sockaddr)
    except OSError as exc:
        sock.close()
        raise OSError(
            exc.errno, f"cannot bind UDP {host or '*'}:{number}: {exc.strerror}"
        ) from None
    transport = make_transport(reactor, sock, protocol, None)
    reactor.call_soon(transport._start)
    return transport


def connect_udp(
    reactor: ReactorPort,
    host: str,
    port: Port,
    protocol: DatagramProtocolInterface,
    *,
    local_host: str | None = None,
    local_port: Port = 0,
    broadcast: bool = False,
    make_transport: DatagramMaker = DatagramTransport,
) -> DatagramTransport:
    """A UDP endpoint connected to ``host:port``: ``sendto(data)`` needs no address.

    ``host`` must be an IP address (UDP endpoints are made at once, and a
    name lookup would block the loop); resolve names beforehand.
    """
    number = check_port(port, "connect_udp()")
    local_number = check_port(local_port, "connect_udp() local_port")
    check_datagram_protocol(protocol, "connect_udp")
    family = ip_family(host)
    if family is None:
        raise ValueError(
            f"connect_udp() needs an IP address, not {host!r}: resolve the name first "
            "(for example with socket.getaddrinfo in a worker thread)"
        )
    sock = _udp_socket(family, broadcast, False)
    try:
        if local_host is not None or local_number:
            sock.bind(
                (local_host or ("::" if family == socket.AF_INET6 else "0.0.0.0"), local_number)
            )
        sock.connect((host, number))
        peer = sock.getpeername()
    except BaseException:  # OSError, or OverflowError for a port out of range
        sock.close()
        raise
    transport = make_transport(reactor, sock, protocol, peer)
    reactor.call_soon(transport._start)
    return transport
