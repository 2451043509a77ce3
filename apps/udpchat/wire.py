"""The udpchat datagram format: one small, strict UTF-8 text format.

A datagram is a header line, optionally followed by ``\\n`` and a text::

    HELLO <nick>                        client -> server: join, or keepalive
    SAY <nick>\\n<text>                  client -> server: a message to relay
    BYE <nick>                          client -> server: leaving
    STATS                               anyone -> server: ask for the counters
    WELCOME <seq> <timeout>\\n<text>     server -> client: you joined; keepalive within <timeout> s
    MSG <seq> <nick>\\n<text>            server -> client: a relayed message
    INFO <seq>\\n<text>                  server -> client: a notice (joined, left, timed out)
    CLOSE <seq>\\n<text>                 server -> client: the server is shutting down
    STATS <name>=<count> ...            server -> asker: the counters
    JOIN <id> <nick>                    serverless peer -> LAN: I just started
    HERE <id> <nick>                    serverless peer -> LAN: I am here (keepalive)
    BMSG <id> <seq> <nick>\\n<text>      serverless peer -> LAN: a message
    GONE <id> <nick>                    serverless peer -> LAN: leaving

The rules, all enforced by :func:`parse`:

* at most :data:`MAX_DATAGRAM` bytes, valid UTF-8;
* header fields are separated by single spaces; the types with a text have
  exactly one ``\\n`` after the header, the others none;
* ``<nick>``: 1 to 32 of ``A-Z a-z 0-9 _ . -``; ``<seq>``: a decimal number
  from 1, no leading zero; ``<id>``: 8 lowercase hex digits; ``<timeout>``:
  a decimal number of seconds;
* ``<text>`` is one line with no control characters (tab excepted); it is
  non-empty in SAY, MSG and BMSG.

``<seq>`` numbers what one sender sends to one receiver (1, 2, 3...), so the
receiver can tell when datagrams were lost: the server keeps one counter per
peer, and a serverless peer one counter for its broadcasts.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

__all__ = [
    "MAX_DATAGRAM",
    "MAX_TEXT",
    "Datagram",
    "WireError",
    "clean_text",
    "encode",
    "encode_stats",
    "parse",
    "valid_nick",
]

#: The largest datagram accepted or sent (fits in one Ethernet frame).
MAX_DATAGRAM = 1200
#: The longest text a client sends: what is left after the longest header.
MAX_TEXT = 1024

_NICK = re.compile(r"[A-Za-z0-9_.\-]{1,32}\Z")
_SEQ = re.compile(r"[1-9][0-9]{0,18}\Z")
_ID = re.compile(r"[0-9a-f]{8}\Z")
_SECONDS = re.compile(r"[0-9]{1,9}(\.[0-9]{1,6})?\Z")
_STAT = re.compile(r"([a-z][a-z0-9_]{0,31})=([0-9]{1,19})\Z")
# Control characters other than tab: C0, DEL and C1.
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f]")

# type -> (header fields after the type, has a text, the text must not be empty)
_SHAPES: dict[str, tuple[tuple[str, ...], bool, bool]] = {
    "HELLO": (("nick",), False, False),
    "SAY": (("nick",), True, True),
    "BYE": (("nick",), False, False),
    "WELCOME": (("seq", "timeout"), True, False),
    "MSG": (("seq", "nick"), True, True),
    "INFO": (("seq",), True, False),
    "CLOSE": (("seq",), True, False),
    "JOIN": (("id", "nick"), False, False),
    "HERE": (("id", "nick"), False, False),
    "BMSG": (("id", "seq", "nick"), True, True),
    "GONE": (("id", "nick"), False, False),
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
    names, has_text, needs_text = shape
    if len(fields) != len(names) + 1:
        raise WireError("malformed", f"{kind} takes {len(names)} header field(s)")
    nick: str | None = None
    seq: int | None = None
    peer_id: str | None = None
    timeout: float | None = None
    for name, value in zip(names, fields[1:], strict=True):
        if name == "nick":
            if not _NICK.match(value):
                raise WireError("malformed", "bad nick")
            nick = value
        elif name == "seq":
            if not _SEQ.match(value):
                raise WireError("malformed", "bad sequence number")
            seq = int(value)
        elif name == "id":
            if not _ID.match(value):
                raise WireError("malformed", "bad peer id")
            peer_id = value
        else:  # timeout
            if not _SECONDS.match(value):
                raise WireError("malformed", "bad timeout")
            timeout = float(value)
    body: str | None = None
    if has_text:
        if not sep:
            raise WireError("malformed", f"{kind} needs a text after the header line")
        if _CONTROL.search(text):
            raise WireError("malformed", "control characters in the text")
        if needs_text and not text:
            raise WireError("malformed", f"{kind} with an empty text")
        body = text
    elif sep:
        raise WireError("malformed", f"{kind} takes no text")
    return Datagram(kind, nick=nick, seq=seq, text=body, peer_id=peer_id, timeout=timeout)


def _parse_stats(fields: list[str], sep: str) -> Datagram:
    if sep:
        raise WireError("malformed", "STATS takes no text")
    if len(fields) == 1:
        return Datagram("STATS")
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
) -> bytes:
    """Build one datagram of type ``kind``; ValueError if it would not :func:`parse`.

    A text with control characters is cleaned (they become spaces); one that
    makes the datagram longer than :data:`MAX_DATAGRAM` bytes is refused.
    """
    shape = _SHAPES.get(kind)
    if shape is None:
        raise ValueError(f"unknown datagram type {kind!r}")
    names, has_text, _needs_text = shape
    given: dict[str, str | int | float | None] = {
        "nick": nick,
        "seq": seq,
        "id": peer_id,
        "timeout": timeout,
    }
    parts = [kind]
    for name in names:
        value = given[name]
        if value is None:
            raise ValueError(f"{kind} needs {name}")
        parts.append(_format_seconds(value) if name == "timeout" else str(value))
    header = " ".join(parts)
    data = header + "\n" + clean_text(text or "") if has_text else header
    raw = data.encode("utf-8")
    parse(raw)  # the same rules both ways: never send what a peer would drop
    return raw


def encode_stats(stats: dict[str, int]) -> bytes:
    """The server's answer to STATS: ``STATS name=count ...``."""
    return " ".join(["STATS", *(f"{name}={count}" for name, count in stats.items())]).encode()


def _format_seconds(value: float | int | str) -> str:
    text = f"{float(value):.6f}".rstrip("0").rstrip(".")
    return text or "0"
