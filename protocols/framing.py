"""Framing: cutting a byte stream into messages.

TCP delivers bytes, not messages: one ``data_received`` may carry half a
message or ten of them. These protocols buffer the stream and call a
handler once per complete message, however the bytes were chunked:

* :class:`LineReceiver`: delimiter-terminated lines, with a raw mode for
  switching to unframed bytes mid-stream (as in Twisted).
* :class:`LengthPrefixedReceiver` (:class:`Int8Receiver`,
  :class:`Int16Receiver`, :class:`Int32Receiver`): a big-endian unsigned
  length, then that many bytes.
* :class:`NetstringReceiver`: ``b"<length>:<data>,"``.

Each enforces a maximum message size, so a peer cannot make it buffer
without bound: the buffer holds at most one maximal message (plus the chunk
being parsed). A malformed or oversized message calls an overridable hook
which by default logs the reason once and aborts that connection with a
:class:`FramingError` (:class:`LineTooLongError`, :class:`FrameTooLongError`
or :class:`NetstringError`) that ``connection_lost`` receives;
``data_received`` itself never raises because of what the peer sent.

:class:`LineReceiver` also bounds time and work, for servers open to
untrusted peers: ``line_timeout`` is a deadline for each line (a peer that
trickles a line byte by byte, never finishing it, is cut off with a
:class:`LineTimeoutError`), and ``max_lines_per_turn`` caps the lines one
connection gets handled per turn of the loop (a peer that sends thousands of
lines at once has the rest handled on the following turns, reading paused
meanwhile, so it cannot hold up the other connections).

Subclasses that define ``__init__`` must call ``super().__init__()``.
"""

from __future__ import annotations

import logging
import math
import struct
from typing import Any, ClassVar

from protocols.base import Protocol, _abort_with_reason
from protocols.policies import _clock_for
from reactor import Handle, TimerHandle

__all__ = [
    "ANY_NEWLINE",
    "FrameTooLongError",
    "FramingError",
    "Int8Receiver",
    "Int16Receiver",
    "Int32Receiver",
    "LengthPrefixedReceiver",
    "LineReceiver",
    "LineTimeoutError",
    "LineTooLongError",
    "NetstringError",
    "NetstringReceiver",
]

log = logging.getLogger("protocols.framing")

_MIB = 1 << 20
_UNSIGNED_CODES = frozenset("BHILQ")


class FramingError(ValueError):
    """The peer broke the framing rules; the receiver ended the connection with this.

    It is what ``connection_lost`` receives when a receiver's default error
    hook aborts the connection. The subclasses say which rule was broken.
    """


class LineTooLongError(FramingError):
    """A line was longer than the receiver's ``max_line_length``."""


class LineTimeoutError(TimeoutError):
    """A line was begun but not completed within the receiver's ``line_timeout``.

    Not a :class:`FramingError`: the bytes were fine, they came too slowly.
    """


class FrameTooLongError(FramingError):
    """A length prefix announced a frame over the receiver's ``max_frame_size``."""


class NetstringError(FramingError):
    """The stream is not valid netstrings (a bad length, a missing ``,``, a string too long)."""


class _AnyNewline(bytes):
    """The type of :data:`ANY_NEWLINE`: a delimiter value that asks for lenient line ends."""

    def __repr__(self) -> str:
        return "ANY_NEWLINE"


ANY_NEWLINE: bytes = _AnyNewline(b"\r\n")
"""The default :attr:`LineReceiver.delimiter`: lines may end with ``\\n`` or ``\\r\\n``.

A received line ends at ``b"\\n"`` and one ``b"\\r"`` just before it is
dropped; :meth:`LineReceiver.send_line` writes ``b"\\r\\n"``, which is also
the value (``ANY_NEWLINE == b"\\r\\n"``). An explicit ``b"\\r\\n"`` is
matched exactly instead.
"""


def _same_delimiter(a: bytes, b: bytes) -> bool:
    """Equal and both lenient or both exact (``ANY_NEWLINE == b"\\r\\n"`` on its own)."""
    return a == b and (type(a) is _AnyNewline) == (type(b) is _AnyNewline)


class _BufferedReceiver(Protocol):
    """The machinery shared by the receivers: a buffer, a parse loop, pausing, failing.

    A subclass implements ``_parse``, which consumes complete messages from
    ``self._buf[self._off:]`` and stops when :meth:`_halted` turns true.
    """

    def __init__(self) -> None:
        self._buf = bytearray()
        self._off = 0  # _buf[:_off] is consumed but not yet deleted (see _consumed)
        self._busy = False  # inside _parse: a nested data_received only appends
        self._paused = False  # pause_producing(): keep buffering, deliver nothing
        self._lines_deferred = False  # out of budget: the rest is delivered by a call_soon
        self._stopped = False  # framing ended: an error, or the connection was lost

    @property
    def buffer_size(self) -> int:
        """Bytes received but not yet delivered (bounded by the maximum message size)."""
        return len(self._buf) - self._off

    def data_received(self, data: bytes) -> None:
        """Buffer ``data`` and deliver every message it completes.

        A subclass that overrides it (to watch the raw traffic, say) must call
        ``super().data_received(data)``.
        """
        if self._stopped or self._transport_closing():
            return
        self._buf += data
        self._run()

    def connection_lost(self, exc: BaseException | None) -> None:
        """Release the buffer; call ``super().connection_lost(exc)`` when overriding."""
        self._stop()

    def pause_producing(self) -> None:
        """Stop delivering messages and ask the transport to stop reading.

        Messages already buffered wait for :meth:`resume_producing`. Safe to
        call from a message handler: the rest of the chunk waits too.
        """
        if self._paused or self._stopped:
            return
        self._paused = True
        transport = getattr(self, "transport", None)
        if transport is not None:
            transport.pause_reading()

    def resume_producing(self) -> None:
        """Deliver the buffered messages, then let the transport read again."""
        if not self._paused or self._stopped:
            return
        self._paused = False
        self._run()
        transport = getattr(self, "transport", None)
        if transport is None:
            return
        if self._lines_deferred:
            # Out of budget again: the continuation resumes reading once caught up.
            self._resume_when_caught_up()
        elif not self._halted():
            transport.resume_reading()

    def _resume_when_caught_up(self) -> None:
        """Overridden by LineReceiver, the only receiver with a work budget."""

    def _run(self) -> None:
        if self._busy or self._paused or self._lines_deferred:
            return
        self._busy = True
        try:
            self._parse()
        finally:
            self._busy = False

    def _parse(self) -> None:
        raise NotImplementedError

    def _halted(self) -> bool:
        """Whether to stop delivering: paused, out of budget, stopped, or the transport closing."""
        if self._paused or self._stopped or self._lines_deferred:
            return True
        transport = getattr(self, "transport", None)
        return transport is not None and bool(transport.is_closing())

    def _transport_closing(self) -> bool:
        transport = getattr(self, "transport", None)
        return transport is not None and bool(transport.is_closing())

    def _stop(self) -> None:
        """End framing for good: drop the buffer and ignore further data."""
        self._stopped = True
        self._buf.clear()
        self._off = 0

    def _consumed(self, pos: int) -> int:
        """Mark ``_buf[:pos]`` consumed; return by how much offsets into the buffer shifted.

        The bytes are deleted only once they are at least half the buffer, so
        a handler that pauses after every message does not cost a memmove of
        the rest of the buffer each time (amortised O(1) per byte).
        """
        if pos * 2 >= len(self._buf):
            del self._buf[:pos]
            self._off = 0
            return pos
        self._off = pos
        return 0

    def _abort_framing(self, error: Exception) -> None:
        """The default for the error hooks: stop, log ``error`` once and abort with it.

        The transport's ``abort(error)`` discards unsent output and hands
        ``error`` to ``connection_lost``. (Not named ``_fail``: subclasses in
        the wild use that name for their own purposes.)
        """
        self._stop()
        transport = getattr(self, "transport", None)
        peer = transport.get_extra_info("peername") if transport is not None else None
        log.warning("closing the connection to %s: %s", peer or "an unknown peer", error)
        if transport is not None:
            _abort_with_reason(transport, error)


class LineReceiver(_BufferedReceiver):
    """Delimiter-terminated lines, with a raw mode (Twisted's ``LineReceiver``).

    Override :meth:`line_received`. ``delimiter`` and ``max_line_length``
    (default 64 KiB, not counting the line end) are class attributes; a
    longer line calls :meth:`line_length_exceeded`.

    By default (``delimiter = ANY_NEWLINE``) a line ends at ``b"\\n"`` and one
    ``b"\\r"`` just before it is dropped, so peers that end lines with
    ``\\n`` (``nc``, most scripts) and with ``\\r\\n`` (telnet, the Internet
    protocols) both work; :meth:`send_line` ends lines with ``b"\\r\\n"``,
    which every such reader accepts. Any other ``delimiter`` (including an
    explicit ``b"\\r\\n"`` or ``b"\\n"``) is matched exactly, as it is
    written, and is also what :meth:`send_line` writes.

    :meth:`set_raw_mode` makes the receiver hand bytes to
    :meth:`raw_data_received` as they come, instead of lines;
    :meth:`set_line_mode` goes back. Called from a handler, a switch applies
    to the rest of the data already received.

    Two more limits, off by default, protect a server from peers that are
    slow on purpose or flood it (set them as class or instance attributes,
    before ``connection_made``):

    * ``line_timeout`` (seconds): each line must be complete within this
      long of its first byte. While a partial line is buffered a timer runs;
      the line end cancels it. If it fires, :meth:`line_timeout_exceeded` is
      called, which by default logs the reason once and aborts the
      connection with a :class:`LineTimeoutError`. This defeats "slowloris"
      peers that keep a connection (and its slot) by sending a byte every
      few seconds and never a line end: unlike an idle timeout, the trickle
      does not restart the deadline. It does not run in raw mode or while
      delivery is paused.
    * ``max_lines_per_turn``: at most this many lines are handled per
      ``data_received`` (one chunk may carry tens of thousands). Then the
      transport's reading is paused and the rest is handled on the next
      turns of the loop (``call_soon``), the same number at a time, so other
      connections get their turn in between. Lines keep their order and
      none is lost; once the buffered lines are handled, reading resumes,
      unless the protocol paused delivery itself (:meth:`pause_producing`)
      or the transport is closing. The budget counts every line end,
      including over-long lines and lines after a switch of ``delimiter``.

    Both need a clock: ``self.clock`` if the class has one, else the reactor
    the transport runs on (``transport.get_extra_info("reactor")``), as for
    the policies in :mod:`protocols.policies`.
    """

    delimiter: bytes = ANY_NEWLINE
    max_line_length: int = 65536
    #: Seconds within which a line must be complete once begun; None: no deadline.
    line_timeout: float | None = None
    #: Lines handled per turn of the loop before the rest waits; None: no budget.
    max_lines_per_turn: int | None = None

    def __init__(self) -> None:
        super().__init__()
        self._line_mode = True
        # No separator starts before _scan (an offset in _buf): the search for
        # one resumes there, so a long line arriving in pieces is scanned once.
        # _scan_separator is the byte string that search was for.
        self._scan = 0
        self._scan_separator = b""
        self._discarding = False  # skipping the rest of an over-long line
        self._line_timer: TimerHandle | None = None  # the line_timeout deadline
        self._budget_handle: Handle | None = None  # the call_soon that delivers the rest
        self._budget_paused = False  # reading is paused for the budget: resume it after
        self._cleared = False  # clear_line_buffer() was called from a handler

    def connection_made(self, transport: Any) -> None:
        """Check ``line_timeout`` and ``max_lines_per_turn`` (and that a clock is at hand).

        Raises ValueError for a bad value, RuntimeError if a limit is set and
        there is no clock (see the class documentation).
        """
        super().connection_made(transport)
        if self.line_timeout is not None or self.max_lines_per_turn is not None:
            name = type(self).__name__
            timeout = self.line_timeout
            if timeout is not None and (
                isinstance(timeout, bool)
                or not isinstance(timeout, (int, float))
                or not 0 < timeout < math.inf
            ):
                raise ValueError(
                    f"line_timeout must be a positive, finite number of seconds or None, "
                    f"not {timeout!r}: fix {name}.line_timeout"
                )
            budget = self.max_lines_per_turn
            if budget is not None and (
                isinstance(budget, bool) or not isinstance(budget, int) or budget < 1
            ):
                raise ValueError(
                    f"max_lines_per_turn must be a whole number of at least 1 or None, "
                    f"not {budget!r}: fix {name}.max_lines_per_turn"
                )
            _clock_for(self, transport)  # fail now, not at the first partial line

    @property
    def line_mode(self) -> bool:
        """True in line mode, False in raw mode."""
        return self._line_mode

    def line_received(self, line: bytes) -> None:
        """Called with each line, without its delimiter."""
        raise NotImplementedError(f"{type(self).__name__} must override line_received()")

    def raw_data_received(self, data: bytes) -> None:
        """Called with the bytes received in raw mode."""
        raise NotImplementedError(f"{type(self).__name__} must override raw_data_received()")

    def line_timeout_exceeded(self) -> None:
        """A line was begun ``line_timeout`` seconds ago and is still not complete.

        By default the reason is logged and the connection aborted:
        ``connection_lost`` gets a :class:`LineTimeoutError`. The partial
        line is :attr:`buffer_size` bytes long. An override that keeps the
        connection open gets a new deadline when the next bytes arrive.
        """
        self._abort_framing(
            LineTimeoutError(
                f"no complete line within {self.line_timeout:g} s of its first byte "
                f"({self.buffer_size} bytes of it received); to allow slower lines, "
                f"raise line_timeout on {type(self).__name__}"
            )
        )

    def line_length_exceeded(self, line: bytes) -> None:
        """A line longer than ``max_line_length`` arrived; ``line`` is it, or its start.

        By default the reason is logged and the connection aborted:
        ``connection_lost`` gets a :class:`LineTooLongError`. An override
        that keeps the connection open gets the next lines: the rest of the
        long line, up to its delimiter, is skipped.
        """
        self._abort_framing(
            LineTooLongError(
                f"line longer than {self.max_line_length} bytes ({len(line)} received); "
                f"to accept longer lines, raise max_line_length on {type(self).__name__}"
            )
        )

    def clear_line_buffer(self) -> bytes:
        """Take every byte received after the current line, and stop parsing them.

        For a protocol that hands the rest of the stream to someone else,
        such as a STARTTLS command whose TLS handshake may follow it in the
        same read (``transport.start_tls(..., already_received=...)``).
        """
        rest = bytes(self._buf[self._off :])
        self._buf.clear()
        self._off = self._scan = 0
        self._cleared = self._busy
        return rest

    def set_raw_mode(self) -> None:
        """Deliver the following bytes to :meth:`raw_data_received`, unsplit."""
        self._line_mode = False

    def set_line_mode(self, extra: bytes = b"") -> None:
        """Go back to lines; ``extra`` is parsed as if it had just been received."""
        self._line_mode = True
        if extra:
            self.data_received(extra)

    def send_line(self, line: bytes) -> None:
        """Write ``line`` followed by the delimiter (``b"\\r\\n"`` by default).

        Raises ValueError if ``line`` contains the delimiter (or ends with a
        part of it that would complete one early), or with the default
        delimiter if it contains ``b"\\n"``: the peer would read more than
        one line.
        """
        delimiter = self.delimiter
        data = bytes(line) + delimiter
        if type(delimiter) is _AnyNewline:
            if b"\n" in line:
                raise ValueError(
                    f"line contains b'\\n', which ends a line for the peer: "
                    f"send it as separate lines ({bytes(line[:40])!r}...)"
                )
        elif data.find(delimiter) != len(line):
            raise ValueError(
                f"line contains the delimiter {delimiter!r}: the peer would read more than "
                "one line; send it as separate lines"
            )
        self.transport.write(data)

    def pause_producing(self) -> None:
        """Stop delivering lines and ask the transport to stop reading.

        Lines already buffered wait for :meth:`resume_producing`; so does
        the ``line_timeout`` deadline (the peer cannot finish a line that is
        not read). Safe to call from :meth:`line_received`.
        """
        super().pause_producing()
        self._cancel_line_timer()

    def data_received(self, data: bytes) -> None:
        if self._lines_deferred:
            # Out of budget, yet data came: reading was resumed behind our back.
            # Pause it again (the continuation resumes it once caught up).
            self._pause_for_budget()
        elif not self._line_mode and not self._buf and not self._busy and not self._halted():
            # Raw mode with nothing buffered: hand the chunk over without copying.
            self._busy = True
            try:
                self.raw_data_received(data)
            finally:
                self._busy = False
            if self._buf:  # set_line_mode(extra) was called in the handler
                self._run()
            return
        super().data_received(data)

    def _parse(self) -> None:
        buf = self._buf
        pos = self._off  # buf[:pos] is consumed
        window = 256
        # Lines that may still be handled in this call: -1 counts down forever.
        budget = self.max_lines_per_turn
        left = -1 if budget is None else budget
        completed = False  # a line end was seen: a new line's deadline starts
        try:
            while pos < len(buf) and not self._halted():
                if not self._line_mode:
                    data = bytes(buf[pos:])
                    buf.clear()
                    pos = self._scan = 0
                    self.raw_data_received(data)
                    continue
                delimiter = self.delimiter
                # The separator searched for, and the most bytes a line end takes
                # (an unterminated line is over the limit once it is longer than
                # max_line_length plus all but one of them).
                lenient = type(delimiter) is _AnyNewline
                separator = b"\n" if lenient else bytes(delimiter)
                size = len(separator)
                end_size = 2 if lenient else size
                start = pos
                if self._scan > pos and separator == self._scan_separator:
                    start = self._scan
                end = buf.find(separator, start)
                if end < 0:
                    # The last size - 1 bytes may begin a separator.
                    tail = max(pos, len(buf) - size + 1)
                    self._scan, self._scan_separator = tail, separator
                    if self._discarding:
                        pos = tail
                    elif len(buf) - pos >= self.max_line_length + end_size:
                        partial = bytes(buf[pos:])
                        pos = tail
                        self._discarding = True
                        self.line_length_exceeded(partial)
                    break
                # Split the lines in a window at C speed (split is leftmost-first,
                # like find). The window doubles while no handler interrupts, so a
                # handler that pauses after each line does not make us re-copy the
                # whole buffer each time.
                window = max(window, end + size - pos)
                lines = bytes(buf[pos : pos + window]).split(separator)
                lines.pop()  # the incomplete rest: searched again from pos
                completed = True  # (if the budget stops us first, the timer is off anyway)
                for raw in lines:
                    if not left:
                        self._out_of_budget()
                        break
                    left -= 1
                    pos += len(raw) + size
                    self._off = pos  # what clear_line_buffer() leaves out
                    line = raw[:-1] if lenient and raw.endswith(b"\r") else raw
                    if self._discarding:
                        self._discarding = False
                    elif len(line) > self.max_line_length:
                        self.line_length_exceeded(line)
                    else:
                        self.line_received(line)
                    if self._cleared:  # the handler took the rest of the buffer
                        self._cleared = False
                        pos = 0
                        break
                    # A handler may have paused, closed, switched mode or delimiter.
                    if (
                        self._halted()
                        or not self._line_mode
                        or not _same_delimiter(self.delimiter, delimiter)
                    ):
                        break
                else:
                    window *= 2
        finally:
            self._scan = max(0, self._scan - self._consumed(pos))
            if self.line_timeout is not None or self._line_timer is not None:
                self._update_line_timer(completed)

    # -- the work budget -------------------------------------------------------

    def _out_of_budget(self) -> None:
        """``max_lines_per_turn`` lines were handled: deliver the rest on the next turn."""
        transport = getattr(self, "transport", None)
        self._budget_handle = _clock_for(self, transport).call_soon(self._continue_lines)
        self._lines_deferred = True
        self._pause_for_budget()

    def _pause_for_budget(self) -> None:
        """Pause reading while out of budget, if it is not paused already (by the protocol)."""
        transport = getattr(self, "transport", None)
        if transport is not None and transport.is_reading():
            transport.pause_reading()
            self._budget_paused = True

    def _resume_when_caught_up(self) -> None:
        self._budget_paused = True

    def _continue_lines(self) -> None:
        """The next turn: deliver the next lines; once caught up, read again."""
        self._budget_handle = None
        if not self._lines_deferred:
            return
        self._lines_deferred = False
        self._run()
        if self._lines_deferred:
            return  # out of budget again: the next continuation carries on
        resume, self._budget_paused = self._budget_paused, False
        transport = getattr(self, "transport", None)
        if resume and transport is not None and not self._halted():
            transport.resume_reading()

    # -- the line deadline -----------------------------------------------------

    def _awaiting_line(self) -> bool:
        """Whether the peer is in the middle of a line we are waiting for."""
        return (
            self._line_mode
            and (self._discarding or len(self._buf) > self._off)
            and not self._halted()
        )

    def _update_line_timer(self, completed: bool) -> None:
        """Restart the deadline if a line ended; start it if a line is begun; else stop it."""
        awaiting = self._awaiting_line()
        if self._line_timer is not None and (completed or not awaiting):
            self._cancel_line_timer()
        timeout = self.line_timeout
        if awaiting and self._line_timer is None and timeout is not None:
            clock = _clock_for(self, getattr(self, "transport", None))
            self._line_timer = clock.call_later(timeout, self._line_deadline)

    def _cancel_line_timer(self) -> None:
        timer = self._line_timer
        if timer is not None:
            self._line_timer = None
            timer.cancel()

    def _line_deadline(self) -> None:
        self._line_timer = None
        if self._awaiting_line():
            self.line_timeout_exceeded()

    def _stop(self) -> None:
        super()._stop()
        self._cancel_line_timer()
        handle = self._budget_handle
        if handle is not None:
            self._budget_handle = None
            handle.cancel()


class LengthPrefixedReceiver(_BufferedReceiver):
    """Frames preceded by their length as an unsigned integer (Twisted's ``IntNStringReceiver``).

    ``prefix_format`` is a :mod:`struct` format of one unsigned integer
    (default ``"!I"``, 32-bit big-endian). Override :meth:`frame_received`.
    Frames longer than ``max_frame_size`` (default 1 MiB; never more than
    the prefix can express, see :attr:`frame_limit`) are refused as soon
    as their prefix arrives: :meth:`frame_length_exceeded` is called and
    the rest of the stream is ignored, since it cannot be re-synchronised.
    """

    prefix_format: ClassVar[str] = "!I"
    max_frame_size: int = _MIB

    def __init__(self) -> None:
        super().__init__()
        if self.prefix_format.lstrip("@=<>!") not in _UNSIGNED_CODES:
            raise ValueError(
                f"prefix_format must be one unsigned integer such as '!I', "
                f"not {self.prefix_format!r}"
            )
        self._prefix = struct.Struct(self.prefix_format)
        self._prefix_max = (1 << (8 * self._prefix.size)) - 1

    @property
    def frame_limit(self) -> int:
        """The longest frame accepted or sent: ``max_frame_size`` capped by the prefix."""
        return min(self.max_frame_size, self._prefix_max)

    def frame_received(self, frame: bytes) -> None:
        """Called with each complete frame, without its prefix."""
        raise NotImplementedError(f"{type(self).__name__} must override frame_received()")

    def frame_length_exceeded(self, length: int) -> None:
        """The peer announced a frame of ``length`` bytes, over :attr:`frame_limit`.

        By default the reason is logged and the connection aborted:
        ``connection_lost`` gets a :class:`FrameTooLongError`.
        """
        self._abort_framing(
            FrameTooLongError(
                f"frame of {length} bytes announced, the limit is {self.frame_limit} bytes; "
                f"to accept bigger frames, raise max_frame_size on {type(self).__name__}"
            )
        )

    def send_frame(self, data: bytes) -> None:
        """Write ``data`` with its length prefix; ValueError if over :attr:`frame_limit`."""
        limit = self.frame_limit
        if len(data) > limit:
            raise ValueError(f"frame of {len(data)} bytes is over the limit of {limit} bytes")
        self.transport.write(self._prefix.pack(len(data)) + bytes(data))

    def _parse(self) -> None:
        buf = self._buf
        prefix = self._prefix
        size = prefix.size
        pos = self._off
        try:
            while not self._halted() and len(buf) - pos >= size:
                (length,) = prefix.unpack_from(buf, pos)
                if length > self.max_frame_size:  # the prefix cannot exceed its own range
                    self._stop()
                    self.frame_length_exceeded(length)
                    return
                end = pos + size + length
                if end > len(buf):
                    break
                frame = bytes(buf[pos + size : end])
                pos = end
                self.frame_received(frame)
        finally:
            self._consumed(pos)


class Int8Receiver(LengthPrefixedReceiver):
    """Frames of up to 255 bytes behind a one-byte length."""

    prefix_format = "!B"


class Int16Receiver(LengthPrefixedReceiver):
    """Frames of up to 65,535 bytes behind a two-byte big-endian length."""

    prefix_format = "!H"


class Int32Receiver(LengthPrefixedReceiver):
    """Frames behind a four-byte big-endian length (up to ``max_frame_size``)."""

    prefix_format = "!I"


class NetstringReceiver(_BufferedReceiver):
    """Netstrings: ``b"<length>:<data>,"`` with a decimal length (D. J. Bernstein's format).

    Override :meth:`string_received`. The parser is strict: the length is
    ASCII digits without leading zeros (``0:`` itself is fine), at most as
    many digits as ``max_frame_size`` (default 1 MiB) has, and not over it;
    the data must be followed by ``,``. Anything else calls
    :meth:`netstring_error` as soon as it is seen, and the rest of the
    stream is ignored.
    """

    max_frame_size: int = _MIB

    def __init__(self) -> None:
        super().__init__()
        self._length: int | None = None  # the length of the string being read, once known

    def string_received(self, data: bytes) -> None:
        """Called with the data of each complete netstring."""
        raise NotImplementedError(f"{type(self).__name__} must override string_received()")

    def netstring_error(self, reason: str) -> None:
        """The stream is not valid netstrings.

        By default ``reason`` is logged and the connection aborted:
        ``connection_lost`` gets a :class:`NetstringError` saying why.
        """
        self._abort_framing(NetstringError(f"invalid netstring: {reason}"))

    def send_string(self, data: bytes) -> None:
        """Write ``data`` as a netstring; ValueError if over ``max_frame_size``."""
        if len(data) > self.max_frame_size:
            raise ValueError(
                f"string of {len(data)} bytes is over the limit of {self.max_frame_size} bytes"
            )
        self.transport.write(b"%d:%s," % (len(data), data))

    def _error(self, reason: str) -> None:
        self._stop()
        self.netstring_error(reason)

    def _parse(self) -> None:
        buf = self._buf
        pos = self._off
        try:
            while not self._halted():
                length = self._length
                if length is None:
                    digits = len(str(self.max_frame_size))
                    colon = buf.find(b":", pos, pos + digits + 1)
                    field = bytes(buf[pos : colon if colon >= 0 else pos + digits + 1])
                    if field and not field.isdigit():
                        return self._error(f"the length {field!r} is not a decimal number")
                    if len(field) > 1 and field.startswith(b"0"):
                        return self._error(f"the length {field!r} has a leading zero")
                    if colon < 0:
                        if len(field) > digits:
                            return self._error(
                                f"the length field is longer than {digits} digits, so over "
                                f"the limit of {self.max_frame_size} bytes; to accept longer "
                                f"strings, raise max_frame_size on {type(self).__name__}"
                            )
                        break
                    if not field:
                        return self._error("the length is empty")
                    length = int(field)
                    if length > self.max_frame_size:
                        return self._error(
                            f"a string of {length} bytes is over the limit of "
                            f"{self.max_frame_size} bytes; to accept longer strings, "
                            f"raise max_frame_size on {type(self).__name__}"
                        )
                    self._length = length
                    pos = colon + 1
                end = pos + length
                if end >= len(buf):
                    break
                if buf[end] != 0x2C:  # b","
                    return self._error(
                        f"expected ',' after {length} bytes, got {bytes(buf[end : end + 1])!r}"
                    )
                data = bytes(buf[pos:end])
                pos = end + 1
                self._length = None
                self.string_received(data)
        finally:
            self._consumed(pos)
