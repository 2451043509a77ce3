"""The udpchat datagram format: one small, strict UTF-8 text format.

A datagram is a header line, optionally followed by ``\\n`` and a text::

    HELLO <nick>\\n<padding>             client -> server: let me in (padded to HELLO_MIN bytes)
    COOKIE <cookie>                     server -> client: prove you got this (echo it in VERIFY)
    VERIFY <cookie> <nick>              client -> server: join with the cookie; then keepalive
    SAY <cookie>\\n<text>                client -> server: a message to relay
    BYE <cookie>                        client -> server: leaving
    STATS [<cookie>]                    asker -> server: the counters (this host, or a peer)
    WELCOME <seq> <timeout>\\n<text>     server -> client: you joined; keepalive within <timeout> s
    MSG <seq> <nick>\\n<text>            server -> client: a relayed message
    INFO <seq>\\n<text>                  server -> client: a notice (joined, left, timed out)
    CLOSE <seq>\\n<text>                 server -> client: the server is shutting down
    REFUSE\\n<text>                      server -> client: not admitted, and why
    STATS <name>=<count> ...            server -> asker: the counters
    JOIN <id> <nick>                    serverless peer -> LAN: I just started
    HERE <id> <nick>                    serverless peer -> LAN: I am here (keepalive)
    BMSG <id> <seq> <nick>\\n<text>      serverless peer -> LAN: a message
    GONE <id> <nick>                    serverless peer -> LAN: leaving

The rules, all enforced by :func:`parse`:

* at most :data:`MAX_DATAGRAM` bytes, valid UTF-8;
* header fields are separated by single spaces; the types with a text have
  exactly one ``\\n`` after the header, the others none (HELLO may have one,
  followed by padding, or not);
* ``<nick>``: 1 to 32 of ``A-Z a-z 0-9 _ . -``; ``<seq>``: a decimal number
  from 1, no leading zero; ``<id>``: 8 lowercase hex digits; ``<timeout>``:
  a decimal number of seconds; ``<cookie>``: 32 lowercase hex digits;
* ``<text>`` (and HELLO's padding) is one line with no control characters
  (tab excepted); it is non-empty in SAY, MSG and BMSG.

The handshake is a return-routability check (like QUIC's Retry or DTLS's
HelloVerifyRequest): the server answers a HELLO from an address it does not
know with a COOKIE, an HMAC of that address and a coarse timestamp under a
secret of its own, and admits the address only when it echoes the cookie in
a VERIFY. The server keeps nothing for an address until then, and a COOKIE
(:data:`COOKIE_SIZE` bytes) is never bigger than the HELLO it answers
(at least :data:`HELLO_MIN` bytes), so a forged source address gets no more
bytes than were sent in its name. The cookie then stays the peer's token:
SAY, BYE, keepalives and a peer's STATS carry it, so a datagram forged from
a peer's address cannot speak or leave in its name.

``<seq>`` numbers what one sender sends to one receiver (1, 2, 3...), so the
receiver can tell when datagrams were lost: the server keeps one counter per
peer, and a serverless peer one counter for its broadcasts.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

__all__ = [
    "COOKIE_LEN",
    "COOKIE_SIZE",
    "HELLO_MIN",
    "MAX_DATAGRAM",
    "MAX_TEXT",
    "Datagram",
    "WireError",
    "clean_text",
    "encode",
    "encode_hello",
    "encode_stats",
    "encode_stats_request",
    "parse",
    "valid_nick",
]

#: The largest datagram accepted or sent (fits in one Ethernet frame).
MAX_DATAGRAM = 1200
#: The longest text a client sends: what is left after the longest header.
MAX_TEXT = 1024
#: The length of a cookie: 32 lowercase hex digits (128 bits of an HMAC).
COOKIE_LEN = 32
#: The size of a COOKIE datagram, in bytes.
COOKIE_SIZE = len("COOKIE ") + COOKIE_LEN
#: The least size of a HELLO the server answers; clients pad theirs to it. More
#: than :data:`COOKIE_SIZE`, so the answer is never bigger than the question.
HELLO_MIN = 64

_NICK = re.compile(r"[A-Za-z0-9_.\-]{1,32}\Z")
_SEQ = re.compile(r"[1-9][0-9]{0,18}\Z")
_ID = re.compile(r"[0-9a-f]{8}\Z")
_COOKIE = re.compile(rf"[0-9a-f]{{{COOKIE_LEN}}}\Z")
_SECONDS = re.compile(r"[0-9]{1,9}(\.[0-9]{1,6})?\Z")
_STAT = re.compile(r"([a-z][a-z0-9_]{0,31})=([0-9]{1,19})\Z")
# Control characters other than tab: C0, DEL and C1.
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f]")

# What follows the header line: nothing, maybe a text (HELLO's padding), a
# text that may be empty, or a text that must not be.
_NONE, _OPTIONAL, _ANY, _NONEMPTY = "none", "optional", "any", "nonempty"

# type -> (header fields after the type, the text rule)
_SHAPES: dict[str, tuple[tuple[str, ...], str]] = {
    "HELLO": (("nick",), _OPTIONAL),
    "COOKIE": (("cookie",), _NONE),
    "VERIFY": (("cookie", "nick"), _NONE),
    "SAY": (("cookie",), _NONEMPTY),
    "BYE": (("cookie",), _NONE),
    "WELCOME": (("seq", "timeout"), _ANY),
    "MSG": (("seq", "nick"), _NONEMPTY),
    "INFO": (("seq",), _ANY),
    "CLOSE": (("seq",), _ANY),
    "REFUSE": ((), _ANY),
    "JOIN": (("id", "nick"), _NONE),
    "HERE": (("id", "nick"), _NONE),
    "BMSG": (("id", "seq", "nick"), _NONEMPTY),
    "GONE": (("id", "nick"), _NONE),
}


class WireError(ValueError):
    """A datagram does not follow the format. ``kind`` says how, for the counters."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        #: "oversized", "not_utf8" or "malformed".
        self.kind = kind


@dataclass(frozen=True)
class Datagram:
    """One parsed datagram; the fields its type does not have are None."""

    type: str
    nick: str | None = None
    seq: int | None = None
    text: str | None = None
    peer_id: str | None = None
    timeout: float | None = None
    cookie: str | None = None
    stats: dict[str, int] | None = field(default=None, compare=False)


def valid_nick(nick: str) -> bool:
    """Whether ``nick`` is allowed: 1 to 32 of A-Z a-z 0-9 _ . -"""
    return _NICK.match(nick) is not None


def clean_text(text: str) -> str:
    """``text`` with each control character (tab excepted) replaced by a space."""
    return _CONTROL.sub(" ", text)


def parse(data: bytes) -> Datagram:
    """Parse one datagram; raises :class:`WireError` if it breaks any rule."""
    if len(data) > MAX_DATAGRAM:
        raise WireError("oversized", f"{len(data)} bytes, the limit is {MAX_DATAGRAM}")
    try:
        message = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise WireError("not_utf8", f"not UTF-8: {exc.reason}") from None
    header, sep, text = message.partition("\n")
    fields = header.split(" ")
    kind = fields[0]
    if kind == "STATS":
        return _parse_stats(fields, sep)
    shape = _SHAPES.get(kind)
    if shape is None:
        raise WireError("malformed", f"unknown type {kind[:16]!r}")
    names, text_rule = shape
    if len(fields) != len(names) + 1:
        raise WireError("malformed", f"{kind} takes {len(names)} header field(s)")
    values: dict[str, str] = {}
    for name, value in zip(names, fields[1:], strict=True):
        if not _FIELDS[name].match(value):
            raise WireError("malformed", f"bad {_FIELD_NAMES[name]}")
        values[name] = value
    body: str | None = None
    if text_rule == _NONE:
        if sep:
            raise WireError("malformed", f"{kind} takes no text")
    elif sep or text_rule != _OPTIONAL:
        if not sep:
            raise WireError("malformed", f"{kind} needs a text after the header line")
        if _CONTROL.search(text):
            raise WireError("malformed", "control characters in the text")
        if text_rule == _NONEMPTY and not text:
            raise WireError("malformed", f"{kind} with an empty text")
        body = text
    seq = values.get("seq")
    timeout = values.get("timeout")
    return Datagram(
        kind,
        nick=values.get("nick"),
        seq=int(seq) if seq is not None else None,
        text=body,
        peer_id=values.get("id"),
        timeout=float(timeout) if timeout is not None else None,
        cookie=values.get("cookie"),
    )


_FIELDS: dict[str, re.Pattern[str]] = {
    "nick": _NICK,
    "seq": _SEQ,
    "id": _ID,
    "timeout": _SECONDS,
    "cookie": _COOKIE,
}
_FIELD_NAMES = {
    "nick": "nick",
    "seq": "sequence number",
    "id": "peer id",
    "timeout": "timeout",
    "cookie": "cookie",
}


def _parse_stats(fields: list[str], sep: str) -> Datagram:
    if sep:
        raise WireError("malformed", "STATS takes no text")
    if len(fields) == 1:
        return Datagram("STATS")
    if len(fields) == 2 and _COOKIE.match(fields[1]):
        return Datagram("STATS", cookie=fields[1])  # a peer asking
    stats: dict[str, int] = {}
    for item in fields[1:]:
        match = _STAT.match(item)
        if match is None:
            raise WireError("malformed", "bad STATS field")
        stats[match.group(1)] = int(match.group(2))
    return Datagram("STATS", stats=stats)


def encode(
    kind: str,
    *,
    nick: str | None = None,
    seq: int | None = None,
    text: str | None = None,
    peer_id: str | None = None,
    timeout: float | None = None,
    cookie: str | None = None,
) -> bytes:
    """Build one datagram of type ``kind``; ValueError if it would not :func:`parse`.

    A text with control characters is cleaned (they become spaces); one that
    makes the datagram longer than :data:`MAX_DATAGRAM` bytes is refused.
    HELLO carries its text (padding) only if one is given.
    """
    shape = _SHAPES.get(kind)
    if shape is None:
        raise ValueError(f"unknown datagram type {kind!r}")
    names, text_rule = shape
    given: dict[str, str | int | float | None] = {
        "nick": nick,
        "seq": seq,
        "id": peer_id,
        "timeout": timeout,
        "cookie": cookie,
    }
    parts = [kind]
    for name in names:
        value = given[name]
        if value is None:
            raise ValueError(f"{kind} needs {name}")
        parts.append(_format_seconds(value) if name == "timeout" else str(value))
    header = " ".join(parts)
    with_text = text_rule in (_ANY, _NONEMPTY) or (text_rule == _OPTIONAL and text is not None)
    data = header + "\n" + clean_text(text or "") if with_text else header
    raw = data.encode("utf-8")
    parse(raw)  # the same rules both ways: never send what a peer would drop
    return raw


def encode_hello(nick: str) -> bytes:
    """A HELLO padded to :data:`HELLO_MIN` bytes, so the server may answer it."""
    bare = len(encode("HELLO", nick=nick))
    return encode("HELLO", nick=nick, text="." * max(0, HELLO_MIN - bare - 1))


def encode_stats_request(cookie: str | None = None) -> bytes:
    """Ask the server for its counters: ``STATS`` from this host, ``STATS <cookie>`` from a peer."""
    if cookie is None:
        return b"STATS"
    if not _COOKIE.match(cookie):
        raise ValueError(f"not a cookie: {cookie!r}")
    return f"STATS {cookie}".encode()


def encode_stats(stats: dict[str, int]) -> bytes:
    """The server's answer to STATS: ``STATS name=count ...``."""
    return " ".join(["STATS", *(f"{name}={count}" for name, count in stats.items())]).encode()


def _format_seconds(value: float | int | str) -> str:
    text = f"{float(value):.6f}".rstrip("0").rstrip(".")
    return text or "0"
