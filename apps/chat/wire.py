"""The chat wire format: what a line means, in both directions.

Shared by the server (which formats lines), the bundled client (which parses
them) and the tests. The format is documented for people in
``docs/chat-protocol.md``; this module is the code version of that page.

Every line is UTF-8 text. Clients may end lines with ``\\n`` or ``\\r\\n``;
the server always sends ``\\r\\n`` (what telnet expects). A server line is
classified by its first characters, so that it reads naturally in ``nc`` and
a program can still tell the kinds apart without guessing:

========================  ===========================================
``<alice> hello``          a message to the room
``*alice* waves``          an action (``/me waves``)
``<- alice: psst``         a private message to you
``-> bob: psst``           your private message, as delivered to bob
``* alice joined``         a room event (joins, leaves, nick changes,
                           the server going away)
``= ...``                  a reply to you (welcome, /who, /help, bye)
``! error: ...``           an error: your line was refused
``PING``                   heartbeat: answer ``PONG``
========================  ===========================================

Nicks contain no spaces, ``*``, ``<`` or ``>``, which keeps every form
unambiguous.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum

__all__ = [
    "NICK_CHARS",
    "NICK_MAX",
    "PING",
    "PONG",
    "Kind",
    "ServerLine",
    "action",
    "bidi_controls",
    "error",
    "event",
    "has_control",
    "info",
    "message",
    "nick_problem",
    "parse",
    "private_in",
    "private_out",
    "sanitize",
]

#: The heartbeat lines, exactly (no prefix, no trailing text).
PING = "PING"
PONG = "PONG"

#: A nick is 1 to NICK_MAX characters from NICK_CHARS (ASCII letters, digits, ``_ - .``).
NICK_MAX = 32
NICK_CHARS = "ASCII letters, digits, '_', '-' and '.'"
_NICK_RE = re.compile(rf"[A-Za-z0-9_.\-]{{1,{NICK_MAX}}}")

#: Control characters that could drive a terminal (everything below space but
#: tab, DEL, and the C1 range). Never relayed by the server, never printed raw
#: by the client.
_CONTROL_RE = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f]")

#: The explicit bidirectional formatting characters: embeddings and overrides
#: (U+202A to U+202E) and isolates (U+2066 to U+2069). Relayed, they reorder
#: how the rest of the line, and what a client prints after it, is displayed
#: (the "Trojan Source" trick): a message could seem to say something else, or
#: come from someone else. Never relayed by the server, never printed raw by
#: the client. (The invisible marks U+200E, U+200F and U+061C are allowed:
#: right-to-left text needs them, and their effect does not spread.)
_BIDI_RE = re.compile("[\u202a-\u202e\u2066-\u2069]")
_UNSAFE_RE = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")  # both


def nick_problem(nick: str) -> str | None:
    """Why ``nick`` is not a valid nick, or None if it is."""
    if not nick:
        return "a nick cannot be empty"
    if len(nick) > NICK_MAX:
        return f"a nick has at most {NICK_MAX} characters ({len(nick)} given)"
    if _NICK_RE.fullmatch(nick) is None:
        return f"a nick may contain only {NICK_CHARS}"
    return None


def has_control(text: str) -> bool:
    """Whether ``text`` contains a terminal control character (tab is fine)."""
    return _CONTROL_RE.search(text) is not None


def bidi_controls(text: str) -> list[str]:
    """The bidirectional formatting characters in ``text``, as ``U+XXXX``, in order, once each."""
    if _BIDI_RE.search(text) is None:
        return []
    return list(dict.fromkeys(f"U+{ord(ch):04X}" for ch in _BIDI_RE.findall(text)))


def sanitize(text: str) -> str:
    """``text`` with every control or bidi formatting character shown as U+FFFD.

    Safe to print on a terminal: nothing in it can drive the terminal or
    reorder how the text around it is displayed.
    """
    return _UNSAFE_RE.sub("\ufffd", text)


# ---------------------------------------------------------------- formatting
# The server's lines, without the line end.


def message(nick: str, text: str) -> str:
    return f"<{nick}> {text}"


def action(nick: str, text: str) -> str:
    return f"*{nick}* {text}"


def private_in(sender: str, text: str) -> str:
    return f"<- {sender}: {text}"


def private_out(recipient: str, text: str) -> str:
    return f"-> {recipient}: {text}"


def event(text: str) -> str:
    return f"* {text}"


def info(text: str) -> str:
    return f"= {text}"


def error(text: str) -> str:
    return f"! error: {text}"


# ------------------------------------------------------------------- parsing


class Kind(Enum):
    """What a server line is."""

    MESSAGE = "message"
    ACTION = "action"
    PRIVATE_IN = "private_in"
    PRIVATE_OUT = "private_out"
    EVENT = "event"
    INFO = "info"
    ERROR = "error"
    PING = "ping"
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class ServerLine:
    """One parsed server line: its kind, the nick it names (if any) and its text."""

    kind: Kind
    text: str
    nick: str | None = None


_MESSAGE_RE = re.compile(r"<([^\s<>*]+)> (.*)", re.DOTALL)
_ACTION_RE = re.compile(r"\*([^\s<>*]+)\* (.*)", re.DOTALL)
_PRIVATE_RE = re.compile(r"(<-|->) ([^\s<>*]+): (.*)", re.DOTALL)


def parse(line: str) -> ServerLine:
    """Classify a server line (without its line end)."""
    if line == PING:
        return ServerLine(Kind.PING, "")
    first = line[:1]
    if first == "<":
        m = _MESSAGE_RE.fullmatch(line)
        if m:
            return ServerLine(Kind.MESSAGE, m.group(2), m.group(1))
        m = _PRIVATE_RE.fullmatch(line)
        if m:
            return ServerLine(Kind.PRIVATE_IN, m.group(3), m.group(2))
    elif first == "-":
        m = _PRIVATE_RE.fullmatch(line)
        if m:
            return ServerLine(Kind.PRIVATE_OUT, m.group(3), m.group(2))
    elif first == "*":
        if line.startswith("* "):
            return ServerLine(Kind.EVENT, line[2:])
        m = _ACTION_RE.fullmatch(line)
        if m:
            return ServerLine(Kind.ACTION, m.group(2), m.group(1))
    elif line.startswith("= "):
        return ServerLine(Kind.INFO, line[2:])
    elif line.startswith("! error: "):
        return ServerLine(Kind.ERROR, line[9:])
    return ServerLine(Kind.UNKNOWN, line)
