"""The udpchat relay server: admits the addresses that prove themselves and relays between them.

There is no connection: a peer is an address that has passed the handshake.
A HELLO from an address the server does not know is answered with a COOKIE
(an HMAC of the address and a coarse timestamp, under a secret made when
the server starts): nothing is remembered about the address, and the COOKIE
is never bigger than the HELLO, so a forged source address cannot turn the
server into an amplifier. Echoing the cookie in a VERIFY proves the address
receives what is sent to it, and admits it; the cookie then stays the peer's
token, which its SAY, BYE and keepalive VERIFY carry, so a datagram forged
from a peer's address cannot speak for it or make it leave. A nick belongs to
one peer at a time; ``max_peers_per_host`` peers at most share a host (an
IPv4 address, an IPv6 /64), so one host cannot fill the table.

A peer is forgotten after ``peer_timeout`` seconds of silence (clients keep
alive well within it), on ``BYE``, and never admitted when ``max_peers`` are
already known. Everything the server sends a peer is numbered 1, 2, 3... per
peer, so each client can tell what it lost.

Datagrams that do not parse (malformed, oversized, not UTF-8), that only a
server would send, that lack a valid cookie or token (unverified), that
would be answered beyond the COOKIE rate limit (rate_limited), or that ask
for what is refused are counted and dropped; the counters are answered to
``STATS`` and printed when the server stops. Drops are logged at DEBUG one
by one and at INFO at most once every :data:`DROP_LOG_INTERVAL` seconds.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
import secrets
import socket
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from apps.udpchat.wire import (
    COOKIE_LEN,
    COOKIE_SIZE,
    HELLO_MIN,
    MAX_TEXT,
    Datagram,
    WireError,
    encode,
    encode_stats,
    parse,
)
from protocols import DatagramProtocol
from reactor import Address

__all__ = [
    "COOKIE_WINDOW",
    "DEFAULT_RECV_BUFFER",
    "DROP_LOG_INTERVAL",
    "Peer",
    "RelayServer",
    "host_key",
    "size_receive_buffer",
]

log = logging.getLogger("apps.udpchat.server")

#: The counters, in the order STATS reports them. ``dropped`` is the sum of
#: the kinds after it.
COUNTERS = (
    "received",
    "messages",
    "relayed",
    "challenged",
    "joined",
    "left",
    "expired",
    "dropped",
    "malformed",
    "oversized",
    "not_utf8",
    "unexpected",
    "unverified",
    "rate_limited",
    "refused",
)

#: A cookie is valid in the window it was made in and the next: 30 to 60 s.
COOKIE_WINDOW = 30.0
#: At most one INFO line about dropped datagrams per this many seconds.
DROP_LOG_INTERVAL = 10.0
#: The receive buffer the command line asks the kernel for (4 MiB).
DEFAULT_RECV_BUFFER = 4 * 1024 * 1024


@dataclass
class Peer:
    """One client that has passed the handshake."""

    addr: Address
    nick: str
    last_heard: float
    #: The cookie it echoed when admitted: what its later datagrams must carry.
    token: str = ""
    #: What :func:`host_key` gives for its address (for the per-host limit).
    host: str = ""
    #: The sequence number of the last datagram sent to this peer.
    seq: int = 0


class RelayServer(DatagramProtocol):
    """The relay, as a datagram protocol. ``clock`` is the reactor (or a fake clock).

    ``secret`` keys the cookies (random unless given, for tests);
    ``cookie_rate`` caps the COOKIEs sent per second, in all (a burst of as
    many is allowed), so the server cannot be made to reflect a flood.
    """

    def __init__(
        self,
        clock: Any,
        *,
        peer_timeout: float = 30.0,
        max_peers: int = 1000,
        max_peers_per_host: int = 16,
        secret: bytes | None = None,
        cookie_rate: float = 1000.0,
    ) -> None:
        if not peer_timeout > 0:
            raise ValueError(f"peer_timeout must be positive, got {peer_timeout!r}")
        if max_peers < 1 or max_peers_per_host < 1:
            raise ValueError(
                f"max_peers and max_peers_per_host must be at least 1, "
                f"got {max_peers!r} and {max_peers_per_host!r}"
            )
        if not cookie_rate > 0:
            raise ValueError(f"cookie_rate must be positive, got {cookie_rate!r}")
        self.clock = clock
        self.peer_timeout = peer_timeout
        self.max_peers = max_peers
        self.max_peers_per_host = max_peers_per_host
        self.cookie_rate = cookie_rate
        self.peers: dict[Address, Peer] = {}
        self.counters: dict[str, int] = dict.fromkeys(COUNTERS, 0)
        #: The receive buffer the kernel granted, if known (reported by STATS).
        self.recv_buffer: int | None = None
        self._secret = secret if secret is not None else secrets.token_bytes(32)
        self._budget = cookie_rate
        self._budget_at = clock.time()
        self._sweeper: Any = None
        self._drop_log_at = float("-inf")
        self._unlogged: Counter[str] = Counter()
        self._latest_drop = ""
        self._handlers: dict[str, Callable[[Datagram, Address, int], None]] = {
            "HELLO": self._hello,
            "VERIFY": self._verify,
            "SAY": self._say,
            "BYE": self._bye,
            "STATS": self._stats,
        }

    # -------------------------------------------------------------- datagrams

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        # Often enough that a peer is forgotten at most a quarter of the
        # timeout late (and within a second).
        self._sweeper = self.clock.call_every(min(1.0, self.peer_timeout / 4), self.expire)

    def datagram_received(self, data: bytes, addr: Address) -> None:
        self.counters["received"] += 1
        try:
            datagram = parse(data)
        except WireError as exc:
            self._drop(exc.kind, addr, str(exc))
            return
        handler = self._handlers.get(datagram.type)
        if handler is None or (datagram.type == "STATS" and datagram.stats is not None):
            self._drop("unexpected", addr, f"a {datagram.type} is not for the server")
            return
        handler(datagram, addr, len(data))

    def error_received(self, exc: OSError) -> None:
        log.debug("send or receive failed: %s", exc)

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        self._flush_drop_log()

    # ------------------------------------------------------------------ drops

    def _drop(self, kind: str, addr: Address, reason: str) -> None:
        self.counters[kind] += 1
        self.counters["dropped"] += 1
        where = _where(addr)
        log.debug("dropped a datagram from %s (%s): %s", where, kind, reason)
        now = self.clock.time()
        if not self._unlogged and now - self._drop_log_at >= DROP_LOG_INTERVAL:
            self._drop_log_at = now
            log.info("dropped a datagram from %s (%s): %s", where, kind, reason)
            return
        self._unlogged[kind] += 1
        self._latest_drop = f"{where} ({kind}): {reason}"
        if now - self._drop_log_at >= DROP_LOG_INTERVAL:
            self._flush_drop_log()

    def _flush_drop_log(self) -> None:
        """Log the drops not logged yet, in one INFO line."""
        if not self._unlogged:
            return
        total = sum(self._unlogged.values())
        kinds = ", ".join(f"{count} {kind}" for kind, count in self._unlogged.most_common())
        log.info(
            "dropped %d more datagram%s since the last report (%s); the latest from %s",
            total,
            "" if total == 1 else "s",
            kinds,
            self._latest_drop,
        )
        self._unlogged.clear()
        self._drop_log_at = self.clock.time()

    # ---------------------------------------------------------------- cookies

    def cookie_for(self, addr: Address, window: int | None = None) -> str:
        """The cookie for ``addr`` in the current (or the given) time window."""
        if window is None:
            window = int(self.clock.time() // COOKIE_WINDOW)
        message = f"{window}|{addr[0]}|{addr[1]}".encode()
        return hmac.new(self._secret, message, hashlib.sha256).hexdigest()[:COOKIE_LEN]

    def _fresh_cookie(self, addr: Address, cookie: str) -> bool:
        """Whether ``cookie`` was made for ``addr`` in this window or the one before."""
        window = int(self.clock.time() // COOKIE_WINDOW)
        return any(
            hmac.compare_digest(self.cookie_for(addr, w), cookie) for w in (window, window - 1)
        )

    def _challenge(self, addr: Address, size: int) -> str | None:
        """Send ``addr`` a COOKIE in answer to ``size`` bytes; None if sent, else why not.

        Never more bytes than were received, and at most ``cookie_rate`` a second.
        """
        if size < COOKIE_SIZE:
            return f"{size} bytes is less than the {COOKIE_SIZE}-byte COOKIE that would answer it"
        now = self.clock.time()
        self._budget = min(
            self.cookie_rate, self._budget + (now - self._budget_at) * self.cookie_rate
        )
        self._budget_at = now
        if self._budget < 1:
            return f"more than {self.cookie_rate:g} COOKIEs a second asked for"
        self._budget -= 1
        self.counters["challenged"] += 1
        self.transport.sendto(encode("COOKIE", cookie=self.cookie_for(addr)), addr)
        return None

    def _verified(self, addr: Address, cookie: str | None) -> Peer | None:
        """The peer at ``addr`` if ``cookie`` is its token, else None."""
        peer = self.peers.get(addr)
        if peer is None or cookie is None or not hmac.compare_digest(peer.token, cookie):
            return None
        return peer

    # ---------------------------------------------------------------- handlers

    def _hello(self, datagram: Datagram, addr: Address, size: int) -> None:
        if size < HELLO_MIN:
            self._drop(
                "unverified",
                addr,
                f"a HELLO of {size} bytes is not answered: pad it to {HELLO_MIN} bytes",
            )
            return
        why = self._challenge(addr, size)
        if why is not None:
            self._drop("rate_limited", addr, why)

    def _verify(self, datagram: Datagram, addr: Address, size: int) -> None:
        assert datagram.nick is not None and datagram.cookie is not None  # parse() checks
        peer = self._verified(addr, datagram.cookie)
        if peer is None and self._fresh_cookie(addr, datagram.cookie):
            peer = self.peers.get(addr)
            if peer is None:
                self._admit(addr, datagram.nick, datagram.cookie)
                return
            peer.token = datagram.cookie  # the same address, proven again
        if peer is None:
            self._unverified(addr, size, "VERIFY with a cookie that is wrong or expired")
            return
        peer.last_heard = self.clock.time()
        if peer.nick != datagram.nick:
            self._rename(peer, datagram.nick)

    def _say(self, datagram: Datagram, addr: Address, size: int) -> None:
        sender = self._verified(addr, datagram.cookie)
        if sender is None:
            self._unverified(addr, size, "SAY from an address that is not a peer, or a bad token")
            return
        sender.last_heard = self.clock.time()
        self.counters["messages"] += 1
        for peer in list(self.peers.values()):
            if peer is not sender:
                self._send(peer, "MSG", nick=sender.nick, text=datagram.text)
                self.counters["relayed"] += 1

    def _bye(self, datagram: Datagram, addr: Address, size: int) -> None:
        peer = self._verified(addr, datagram.cookie)
        if peer is None:
            self._drop("unverified", addr, "BYE from an address that is not a peer, or a bad token")
            return
        del self.peers[addr]
        self.counters["left"] += 1
        log.info("%s (%s) left", peer.nick, _where(addr))
        self._notify(f"{peer.nick} left")

    def _stats(self, datagram: Datagram, addr: Address, size: int) -> None:
        # The answer is bigger than the question: to keep the server from being
        # an amplifier for forged source addresses, only this host and peers
        # that show their token are answered.
        if not _is_loopback(addr) and self._verified(addr, datagram.cookie) is None:
            self._drop("refused", addr, "STATS from a stranger (a peer must add its token)")
            return
        self.transport.sendto(encode_stats(self.stats()), addr)

    def _unverified(self, addr: Address, size: int, reason: str) -> None:
        """Drop what needed a verified address, and offer ``addr`` a (new) cookie.

        So a client the server no longer knows (it restarted, or forgot the
        client) joins again on its next datagram.
        """
        self._drop("unverified", addr, reason)
        self._challenge(addr, size)

    # ------------------------------------------------------------------ peers

    def _admit(self, addr: Address, nick: str, token: str) -> None:
        """Admit ``addr``, which has just proven it receives, unless a limit says no."""
        host = host_key(addr)
        holder = self._holder(nick)
        if holder is not None:
            self._refuse(
                addr,
                f"the nick {nick} is taken by someone else here; choose another with --nick",
            )
            return
        if len(self.peers) >= self.max_peers:
            self._refuse(addr, f"the server is full ({self.max_peers} peers); try again later")
            return
        if sum(1 for p in self.peers.values() if p.host == host) >= self.max_peers_per_host:
            self._refuse(
                addr,
                f"already {self.max_peers_per_host} peers from your host "
                f"(the server's --max-peers-per-host); close one first",
            )
            return
        others = [p.nick for p in self.peers.values()]
        now = self.clock.time()
        peer = self.peers[addr] = Peer(addr, nick, now, token=token, host=host)
        self.counters["joined"] += 1
        log.info("%s (%s) joined", nick, _where(addr))
        self._send(peer, "WELCOME", timeout=self.peer_timeout, text=_welcome(nick, others))
        self._notify(f"{nick} joined", exclude=peer)

    def _refuse(self, addr: Address, reason: str) -> None:
        # addr echoed a cookie made for it: it receives what is sent to it.
        self._drop("refused", addr, reason)
        self.transport.sendto(encode("REFUSE", text=reason), addr)

    def _holder(self, nick: str) -> Peer | None:
        """The peer using ``nick`` (letter case aside), if any."""
        folded = nick.lower()
        for peer in self.peers.values():
            if peer.nick.lower() == folded:
                return peer
        return None

    def _rename(self, peer: Peer, nick: str) -> None:
        holder = self._holder(nick)
        if holder is not None and holder is not peer:
            self._drop("refused", peer.addr, f"{peer.nick} asked for {nick}, which is taken")
            self._send(peer, "INFO", text=f"the nick {nick} is taken; you are still {peer.nick}")
            return
        old, peer.nick = peer.nick, nick
        self._notify(f"{old} is now known as {nick}", exclude=peer)

    def expire(self) -> None:
        """Forget the peers silent for longer than the timeout, and tell the others."""
        now = self.clock.time()
        deadline = now - self.peer_timeout
        for addr, peer in list(self.peers.items()):
            if peer.last_heard < deadline and self.peers.get(addr) is peer:
                del self.peers[addr]
                self.counters["expired"] += 1
                log.info(
                    "%s (%s) expired: silent for more than %g s",
                    peer.nick,
                    _where(addr),
                    self.peer_timeout,
                )
                self._notify(f"{peer.nick} timed out")
        if now - self._drop_log_at >= DROP_LOG_INTERVAL:
            self._flush_drop_log()

    def _send(self, peer: Peer, kind: str, **fields: Any) -> None:
        peer.seq += 1
        self.transport.sendto(encode(kind, seq=peer.seq, **fields), peer.addr)

    def _notify(self, text: str, exclude: Peer | None = None) -> None:
        for peer in list(self.peers.values()):
            if peer is not exclude:
                self._send(peer, "INFO", text=text)

    # ---------------------------------------------------------------- control

    def stats(self) -> dict[str, int]:
        """The counters, with the number of peers known now first (and the receive buffer)."""
        extra = {} if self.recv_buffer is None else {"recv_buffer": self.recv_buffer}
        return {"peers": len(self.peers), **self.counters, **extra}

    def say_goodbye(self, reason: str = "the server is shutting down") -> None:
        """Tell every peer the server is going away (CLOSE), and forget them."""
        for peer in list(self.peers.values()):
            self._send(peer, "CLOSE", text=reason)
        self.peers.clear()

    def summary(self) -> str:
        """One line about what the server did, for when it stops."""
        c = self.counters
        return (
            f"udpchat server stopped: {c['messages']} messages relayed "
            f"{c['relayed']} times; {c['dropped']} datagrams dropped "
            f"({c['malformed']} malformed, {c['oversized']} oversized, "
            f"{c['not_utf8']} not UTF-8, {c['unexpected']} unexpected, "
            f"{c['unverified']} unverified, {c['rate_limited']} rate-limited, "
            f"{c['refused']} refused); {c['expired']} peers expired"
        )


def host_key(addr: Address) -> str:
    """What the per-host limit counts by: an IPv4 address, or an IPv6 /64 network."""
    try:
        ip = ipaddress.ip_address(str(addr[0]).split("%")[0])
    except (ValueError, TypeError, IndexError):
        return str(addr)
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


def size_receive_buffer(sock: socket.socket, wanted: int) -> int:
    """Ask for a ``wanted``-byte receive buffer on ``sock``; returns what the kernel reports.

    Linux caps the request at ``net.core.rmem_max`` and reports twice what it
    grants (the other half is its bookkeeping); other systems may refuse
    outright, which is logged and leaves the buffer as it was.
    """
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, wanted)
    except OSError as exc:
        log.warning("cannot set the receive buffer to %d bytes: %s", wanted, exc)
    return int(sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF))


def _welcome(nick: str, others: list[str]) -> str:
    if not others:
        return f"welcome {nick}; nobody else is here yet"
    text = f"welcome {nick}; {len(others)} other(s) here: " + ", ".join(others[:20])
    if len(others) > 20:
        text += ", ..."
    return text[:MAX_TEXT]


def _where(addr: Address) -> str:
    if isinstance(addr, tuple) and len(addr) >= 2:
        host = str(addr[0])
        return f"[{host}]:{addr[1]}" if ":" in host else f"{host}:{addr[1]}"
    return str(addr)


def _is_loopback(addr: Address) -> bool:
    try:
        return ipaddress.ip_address(str(addr[0]).split("%")[0]).is_loopback
    except (ValueError, TypeError, IndexError):
        return False
