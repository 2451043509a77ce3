"""The udpchat relay server: remembers who it has heard from and relays to the others.

There is no connection: a peer is an address the server has had a valid
datagram from. It is forgotten after ``peer_timeout`` seconds of silence
(clients send a keepalive ``HELLO`` well within it), on ``BYE``, or never
admitted when ``max_peers`` are already known. Everything the server sends a
peer is numbered 1, 2, 3... per peer, so each client can tell what it lost.

Datagrams that do not parse (malformed, oversized, not UTF-8) or that only
a server would send are counted and dropped; the counters are answered to a
``STATS`` datagram and printed when the server stops.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from apps.udpchat.wire import MAX_TEXT, Datagram, WireError, encode, encode_stats, parse
from protocols import DatagramProtocol
from reactor import Address

__all__ = ["Peer", "RelayServer"]

log = logging.getLogger("apps.udpchat.server")

#: The counters, in the order STATS reports them.
COUNTERS = (
    "received",
    "messages",
    "relayed",
    "joined",
    "left",
    "expired",
    "dropped",
    "malformed",
    "oversized",
    "not_utf8",
    "unexpected",
    "refused",
)


@dataclass
class Peer:
    """One client the server has heard from."""

    addr: Address
    nick: str
    last_heard: float
    #: The sequence number of the last datagram sent to this peer.
    seq: int = 0


class RelayServer(DatagramProtocol):
    """The relay, as a datagram protocol. ``clock`` is the reactor (or a fake clock)."""

    def __init__(self, clock: Any, *, peer_timeout: float = 30.0, max_peers: int = 1000) -> None:
        if not peer_timeout > 0:
            raise ValueError(f"peer_timeout must be positive, got {peer_timeout!r}")
        self.clock = clock
        self.peer_timeout = peer_timeout
        self.max_peers = max_peers
        self.peers: dict[Address, Peer] = {}
        self.counters: dict[str, int] = dict.fromkeys(COUNTERS, 0)
        self._sweeper: Any = None
        self._handlers: dict[str, Callable[[Datagram, Address], None]] = {
            "HELLO": self._hello,
            "SAY": self._say,
            "BYE": self._bye,
            "STATS": self._stats,
        }

    # -------------------------------------------------------------- datagrams

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        # Check often enough that a peer is forgotten at most a quarter of the
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
        handler(datagram, addr)

    def error_received(self, exc: OSError) -> None:
        log.debug("send or receive failed: %s", exc)

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None

    def _drop(self, kind: str, addr: Address, reason: str) -> None:
        self.counters[kind] += 1
        self.counters["dropped"] += 1
        log.debug("dropped a datagram from %s (%s): %s", _where(addr), kind, reason)

    # ---------------------------------------------------------------- handlers

    def _hello(self, datagram: Datagram, addr: Address) -> None:
        assert datagram.nick is not None  # parse() guarantees it for HELLO
        self._heard(addr, datagram.nick)

    def _say(self, datagram: Datagram, addr: Address) -> None:
        assert datagram.nick is not None  # and for SAY
        sender = self._heard(addr, datagram.nick)
        if sender is None:
            return
        self.counters["messages"] += 1
        for peer in list(self.peers.values()):
            if peer is not sender:
                self._send(peer, "MSG", nick=sender.nick, text=datagram.text)
                self.counters["relayed"] += 1

    def _bye(self, datagram: Datagram, addr: Address) -> None:
        peer = self.peers.pop(addr, None)
        if peer is None:
            return
        self.counters["left"] += 1
        log.info("%s (%s) left", peer.nick, _where(addr))
        self._notify(f"{peer.nick} left")

    def _stats(self, datagram: Datagram, addr: Address) -> None:
        # The answer is bigger than the question: to keep the server from being
        # an amplifier for forged source addresses, only peers and this host ask.
        if addr not in self.peers and not _is_loopback(addr):
            self._drop("refused", addr, "STATS from a stranger")
            return
        self.transport.sendto(encode_stats(self.stats()), addr)

    # ------------------------------------------------------------------ peers

    def _heard(self, addr: Address, nick: str) -> Peer | None:
        """Note that ``addr`` spoke; admit it if new. None if it was refused."""
        now = self.clock.time()
        peer = self.peers.get(addr)
        if peer is not None:
            peer.last_heard = now
            if peer.nick != nick:
                old, peer.nick = peer.nick, nick
                self._notify(f"{old} is now known as {nick}", exclude=peer)
            return peer
        if len(self.peers) >= self.max_peers:
            self._drop("refused", addr, f"already {self.max_peers} peers")
            return None
        others = [p.nick for p in self.peers.values()]
        peer = self.peers[addr] = Peer(addr, nick, now)
        self.counters["joined"] += 1
        log.info("%s (%s) joined", nick, _where(addr))
        self._send(peer, "WELCOME", timeout=self.peer_timeout, text=_welcome(nick, others))
        self._notify(f"{nick} joined", exclude=peer)
        return peer

    def expire(self) -> None:
        """Forget the peers silent for longer than the timeout, and tell the others."""
        deadline = self.clock.time() - self.peer_timeout
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

    def _send(self, peer: Peer, kind: str, **fields: Any) -> None:
        peer.seq += 1
        self.transport.sendto(encode(kind, seq=peer.seq, **fields), peer.addr)

    def _notify(self, text: str, exclude: Peer | None = None) -> None:
        for peer in list(self.peers.values()):
            if peer is not exclude:
                self._send(peer, "INFO", text=text)

    # ---------------------------------------------------------------- control

    def stats(self) -> dict[str, int]:
        """The counters, with the number of peers known now first."""
        return {"peers": len(self.peers), **self.counters}

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
            f"{c['refused']} refused); {c['expired']} peers expired"
        )


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
