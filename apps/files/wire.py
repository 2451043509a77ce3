"""The file-transfer protocol: one request line, one response line, then the bytes.

One request per connection. Every line ends with ``\\n`` (a ``\\r`` before
it is ignored, for people typing into ``nc``), is UTF-8, and is at most
:data:`MAX_LINE` bytes::

    GET <offset> <name>\\n      ->  OK <size> <sha256>\\n   then bytes offset..size, then close
    LIST\\n                     ->  OK <count>\\n           then <count> lines "<size> <name>\\n"
    anything                   ->  ERR <message>\\n        then close

``<offset>`` and ``<size>`` are decimal byte counts; ``<size>`` is the size of
the whole file and ``<sha256>`` the lowercase hex SHA-256 of the whole file,
so a download resumed at ``<offset>`` can still be verified end to end.
``<name>`` is the rest of the line (it may contain spaces): a path relative
to the served directory, with ``/`` between components.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = [
    "MAX_LINE",
    "ListEntry",
    "ProtocolError",
    "Request",
    "Response",
    "format_error",
    "format_get",
    "format_list_entry",
    "parse_list_entry",
    "parse_request",
    "parse_response",
]

#: The longest request or response line, without its ``\n``.
MAX_LINE = 4096

_NUMBER = re.compile(r"(0|[1-9][0-9]{0,18})\Z")
_SHA256 = re.compile(r"[0-9a-f]{64}\Z")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class ProtocolError(ValueError):
    """A line that does not follow the protocol."""


@dataclass(frozen=True)
class Request:
    """``GET`` (with ``name`` and ``offset``) or ``LIST``."""

    command: str
    name: str = ""
    offset: int = 0


@dataclass(frozen=True)
class Response:
    """``OK`` with ``size`` and ``sha256`` (GET) or ``count`` (LIST), or ``ERR`` and ``message``."""

    ok: bool
    size: int = 0
    sha256: str = ""
    count: int = 0
    message: str = ""


@dataclass(frozen=True)
class ListEntry:
    size: int
    name: str


def _text(line: bytes) -> str:
    if line.endswith(b"\r"):
        line = line[:-1]
    try:
        return line.decode("utf-8")
    except UnicodeDecodeError:
        raise ProtocolError("the line is not UTF-8") from None


def _number(text: str, what: str) -> int:
    if not _NUMBER.match(text):
        raise ProtocolError(f"{what} is not a decimal number: {text[:32]!r}")
    return int(text)


def parse_request(line: bytes) -> Request:
    """Parse a request line (without its ``\\n``); ProtocolError if it is not one."""
    text = _text(line)
    if text == "LIST":
        return Request("LIST")
    command, _, rest = text.partition(" ")
    if command != "GET":
        raise ProtocolError(f"unknown request {command[:16]!r}: expected GET or LIST")
    offset_text, sep, name = rest.partition(" ")
    if not sep or not name:
        raise ProtocolError("expected 'GET <offset> <name>'")
    offset = _number(offset_text, "the offset")
    if _CONTROL.search(name):
        raise ProtocolError("control characters in the name")
    return Request("GET", name=name, offset=offset)


def parse_response(line: bytes) -> Response:
    """Parse a response line (without its ``\\n``); ProtocolError if it is not one."""
    text = _text(line)
    if text.startswith("ERR "):
        return Response(False, message=text[4:])
    fields = text.split(" ")
    if fields[0] != "OK" or len(fields) not in (2, 3):
        raise ProtocolError(f"unexpected response {text[:64]!r}")
    if len(fields) == 2:
        return Response(True, count=_number(fields[1], "the count"))
    if not _SHA256.match(fields[2]):
        raise ProtocolError("the SHA-256 is not 64 lowercase hex digits")
    return Response(True, size=_number(fields[1], "the size"), sha256=fields[2])


def parse_list_entry(line: bytes) -> ListEntry:
    """Parse one ``<size> <name>`` line of a LIST answer."""
    size_text, sep, name = _text(line).partition(" ")
    if not sep or not name:
        raise ProtocolError("expected '<size> <name>'")
    return ListEntry(_number(size_text, "the size"), name)


def format_get(name: str, offset: int = 0) -> bytes:
    """The GET request line; ValueError for a name the protocol cannot carry."""
    if not name or _CONTROL.search(name):
        raise ValueError(f"a name must be non-empty, without control characters: {name!r}")
    line = f"GET {offset} {name}\n".encode()
    if len(line) > MAX_LINE:
        raise ValueError(f"the name is too long ({len(line)} bytes; the limit is {MAX_LINE})")
    return line


def format_error(message: str) -> bytes:
    """``ERR <message>``, with the message made one line and cut to fit."""
    one_line = _CONTROL.sub(" ", message)
    return ("ERR " + one_line).encode("utf-8")[: MAX_LINE - 1].decode("utf-8", "ignore").encode(
        "utf-8"
    ) + b"\n"


def format_ok(size: int, sha256: str) -> bytes:
    return f"OK {size} {sha256}\n".encode()


def format_list_entry(size: int, name: str) -> bytes:
    return f"{size} {name}\n".encode()
