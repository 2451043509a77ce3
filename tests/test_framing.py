"""Tests for protocols.framing: lines, length prefixes and netstrings."""

from __future__ import annotations

import itertools
import logging
import struct
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocols.framing import (
    ANY_NEWLINE,
    FrameTooLongError,
    FramingError,
    Int8Receiver,
    Int16Receiver,
    Int32Receiver,
    LengthPrefixedReceiver,
    LineReceiver,
    LineTooLongError,
    NetstringError,
    NetstringReceiver,
)
from protocols.testing import MemoryTransport

pytestmark = pytest.mark.timeout(60)

MIB = 1 << 20
PEER = ("192.0.2.7", 4242)


class Lines(LineReceiver):
    """Records lines and raw data; ``on_line`` runs inside line_received."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: list[bytes] = []
        self.raw: list[bytes] = []
        self.on_line: Callable[[bytes], None] | None = None
        self.on_raw: Callable[[bytes], None] | None = None

    def line_received(self, line: bytes) -> None:
        self.lines.append(line)
        if self.on_line is not None:
            self.on_line(line)

    def raw_data_received(self, data: bytes) -> None:
        self.raw.append(data)
        if self.on_raw is not None:
            self.on_raw(data)


class LenientLines(Lines):
    """Keeps the connection open on over-long lines, and records them."""

    def __init__(self) -> None:
        super().__init__()
        self.events: list[tuple[str, bytes]] = []

    def line_received(self, line: bytes) -> None:
        super().line_received(line)
        self.events.append(("line", line))

    def line_length_exceeded(self, line: bytes) -> None:
        self.events.append(("long", b""))


class Frames(Int32Receiver):
    def __init__(self) -> None:
        super().__init__()
        self.frames: list[bytes] = []
        self.on_frame: Callable[[bytes], None] | None = None

    def frame_received(self, frame: bytes) -> None:
        self.frames.append(frame)
        if self.on_frame is not None:
            self.on_frame(frame)


class Frames8(Int8Receiver):
    def __init__(self) -> None:
        super().__init__()
        self.frames: list[bytes] = []

    def frame_received(self, frame: bytes) -> None:
        self.frames.append(frame)


class Frames16(Int16Receiver):
    def __init__(self) -> None:
        super().__init__()
        self.frames: list[bytes] = []

    def frame_received(self, frame: bytes) -> None:
        self.frames.append(frame)


class Strings(NetstringReceiver):
    def __init__(self) -> None:
        super().__init__()
        self.strings: list[bytes] = []
        self.errors: list[str] = []

    def string_received(self, data: bytes) -> None:
        self.strings.append(data)


class LenientStrings(Strings):
    """Records netstring errors instead of closing."""

    def netstring_error(self, reason: str) -> None:
        self.errors.append(reason)


def connect(proto: LineReceiver | LengthPrefixedReceiver | NetstringReceiver) -> MemoryTransport:
    transport = MemoryTransport(peername=PEER)
    transport.connect(proto)
    return transport


def single_bytes(data: bytes) -> list[bytes]:
    return [data[i : i + 1] for i in range(len(data))]


def split_at(data: bytes, cuts: list[int]) -> list[bytes]:
    points = [0, *sorted(set(cuts)), len(data)]
    return [data[a:b] for a, b in itertools.pairwise(points) if b > a]


@st.composite
def chunked(draw: st.DrawFn, data: bytes) -> list[bytes]:
    """``data`` cut into chunks, sometimes one byte each."""
    if draw(st.booleans()):
        return single_bytes(data)
    cuts = draw(st.lists(st.integers(0, max(0, len(data))), max_size=12))
    return split_at(data, cuts)


# -- LineReceiver --------------------------------------------------------------


def test_lines_are_split_on_the_delimiter() -> None:
    proto = Lines()
    transport = connect(proto)
    transport.feed(b"one\r\ntwo\r\n\r\nthree")
    assert proto.lines == [b"one", b"two", b""]
    assert proto.buffer_size == 5
    transport.feed(b"\r\n")
    assert proto.lines == [b"one", b"two", b"", b"three"]
    assert proto.buffer_size == 0
    assert proto.line_mode


def test_a_delimiter_split_across_chunks() -> None:
    proto = Lines()
    transport = connect(proto)
    for chunk in (b"ab\r", b"\ncd\r", b"", b"\n", b"\r", b"\r\n"):
        transport.feed(chunk)
    assert proto.lines == [b"ab", b"cd", b"\r"]


def test_by_default_lines_end_at_lf_or_crlf() -> None:
    proto = Lines()
    transport = connect(proto)
    transport.feed(b"a\nb\rc\r\nd\r\r\n\n\r\n")
    # One "\r" before the "\n" is dropped; a lone "\r" is part of the line.
    assert proto.lines == [b"a", b"b\rc", b"d\r", b"", b""]
    for chunk in single_bytes(b"nc\nstyle\r\n"):
        transport.feed(chunk)
    assert proto.lines[-2:] == [b"nc", b"style"]
    assert proto.buffer_size == 0


def test_an_lf_terminated_client_gets_replies() -> None:
    class Upper(LineReceiver):
        def line_received(self, line: bytes) -> None:
            self.send_line(line.upper())

    proto = Upper()
    transport = connect(proto)
    transport.feed(b"hello\n")  # what nc sends
    assert transport.value() == b"HELLO\r\n"


def test_the_default_delimiter_is_any_newline_and_sends_crlf() -> None:
    assert LineReceiver.delimiter is ANY_NEWLINE
    assert ANY_NEWLINE == b"\r\n"
    assert repr(ANY_NEWLINE) == "ANY_NEWLINE"


def test_an_explicit_crlf_delimiter_is_exact() -> None:
    class Strict(Lines):
        delimiter = b"\r\n"

    proto = Strict()
    connect(proto).feed(b"a\nb\rc\r\nd\r\r\n")
    assert proto.lines == [b"a\nb\rc", b"d\r"]


def test_an_explicit_lf_delimiter_keeps_the_cr() -> None:
    class Unix(Lines):
        delimiter = b"\n"

    proto = Unix()
    transport = connect(proto)
    transport.feed(b"a\r\nb\n")
    assert proto.lines == [b"a\r", b"b"]
    proto.send_line(b"x\ry")
    assert transport.value() == b"x\ry\n"


def test_switching_between_any_newline_and_an_explicit_crlf_mid_chunk() -> None:
    proto = Lines()
    transport = connect(proto)

    def switch(line: bytes) -> None:
        if line == b"STRICT":
            proto.delimiter = b"\r\n"  # equal to ANY_NEWLINE, but exact
        elif line == b"LENIENT":
            proto.delimiter = ANY_NEWLINE

    proto.on_line = switch
    transport.feed(b"STRICT\na\nb\r\nLENIENT\r\nc\nd\r\n")
    assert proto.lines == [b"STRICT", b"a\nb", b"LENIENT", b"c", b"d"]


def test_any_newline_measures_lines_without_the_cr() -> None:
    class Short(Lines):
        max_line_length = 5

    proto = Short()
    transport = connect(proto)
    transport.feed(b"12345\r\n12345\n")
    assert proto.lines == [b"12345", b"12345"]
    transport.feed(b"12345\r")  # max + "\r": maybe a line of exactly the maximum
    assert not transport.closed
    transport.feed(b"\n")
    assert proto.lines == [b"12345"] * 3
    transport.feed(b"123456\n")
    assert transport.closed


@pytest.mark.parametrize("delimiter", [b"\n", b"\0", b"<END>", b"aab"])
def test_custom_delimiters(delimiter: bytes) -> None:
    class Custom(Lines):
        pass

    Custom.delimiter = delimiter
    proto = Custom()
    transport = connect(proto)
    stream = delimiter.join([b"x", b"", b"yy"]) + delimiter
    for chunk in single_bytes(stream):
        transport.feed(chunk)
    assert proto.lines == [b"x", b"", b"yy"]


def test_overlapping_delimiter_is_found_leftmost() -> None:
    class Custom(Lines):
        delimiter = b"aab"

    proto = Custom()
    transport = connect(proto)
    transport.feed(b"aa")
    transport.feed(b"ab")
    assert proto.lines == [b"a"]


def test_changing_the_delimiter_between_chunks_rescans() -> None:
    class Strict(Lines):
        delimiter = b"\r\n"

    proto = Strict()
    transport = connect(proto)
    transport.feed(b"ab\n\n")
    proto.delimiter = b"\n\n\n"
    transport.feed(b"\n")
    assert proto.lines == [b"ab"]


def test_a_line_of_exactly_the_maximum_is_accepted() -> None:
    class Short(Lines):
        max_line_length = 5

    proto = Short()
    transport = connect(proto)
    transport.feed(b"12345\r")
    assert proto.buffer_size == 6
    transport.feed(b"\n12345\r\n")
    assert proto.lines == [b"12345", b"12345"]
    assert not transport.closed


def test_a_long_line_closes_the_connection(caplog: pytest.LogCaptureFixture) -> None:
    class Short(Lines):
        max_line_length = 5

    proto = Short()
    transport = connect(proto)
    with caplog.at_level(logging.WARNING, logger="protocols.framing"):
        transport.feed(b"ok\r\n123456\r\nnever\r\n")
    assert proto.lines == [b"ok"]
    assert transport.closed
    assert transport.lost
    assert proto.buffer_size == 0
    assert "line longer than 5 bytes" in caplog.text
    assert "192.0.2.7" in caplog.text
    proto.data_received(b"more\r\n")  # a transport would not call, but it is harmless
    assert proto.lines == [b"ok"]


def test_a_long_partial_line_closes_as_soon_as_it_is_too_long() -> None:
    class Short(Lines):
        max_line_length = 5

    proto = Short()
    transport = connect(proto)
    transport.feed(b"123456")  # max + len(delimiter) - 1 bytes: not judged yet
    assert not transport.closed
    transport.feed(b"7")
    assert transport.closed
    assert proto.lines == []


def test_a_lenient_receiver_skips_long_lines() -> None:
    class Short(LenientLines):
        max_line_length = 3

    proto = Short()
    transport = connect(proto)
    transport.feed(b"abc\r\ntoo long\r\nx\r\n")
    transport.feed(b"0123456789")  # reported as soon as it is too long
    assert proto.events[-1] == ("long", b"")
    transport.feed(b"more of the same\r")  # discarded: only a "\n" can end it
    assert proto.buffer_size == 0
    transport.feed(b"\nyes\r\n")
    assert proto.lines == [b"abc", b"x", b"yes"]
    assert [kind for kind, _ in proto.events] == ["line", "long", "line", "long", "line"]
    assert not transport.closed


def test_a_delimiter_split_at_the_point_where_a_long_line_is_cut() -> None:
    class Short(LenientLines):
        max_line_length = 3

    proto = Short()
    transport = connect(proto)
    transport.feed(b"abcdef\r")  # too long already; the "\r" may start the delimiter
    transport.feed(b"\nok\r\n")
    assert proto.events == [("long", b""), ("line", b"ok")]


def test_changing_the_delimiter_inside_line_received() -> None:
    proto = Lines()
    transport = connect(proto)

    def switch(line: bytes) -> None:
        if line == b"SWITCH":
            proto.delimiter = b"\n"

    proto.on_line = switch
    transport.feed(b"SWITCH\r\na\nb\r\nc\n")
    assert proto.lines == [b"SWITCH", b"a", b"b\r", b"c"]


def test_lines_after_close_in_line_received_are_not_delivered() -> None:
    proto = Lines()
    transport = connect(proto)
    proto.on_line = lambda line: transport.close() if line == b"quit" else None
    transport.feed(b"a\r\nquit\r\nb\r\n")
    assert proto.lines == [b"a", b"quit"]
    assert transport.lost
    assert proto.buffer_size == 0  # released by connection_lost


def test_data_for_a_closing_transport_is_not_even_buffered() -> None:
    proto = Lines()
    transport = MemoryTransport(stalled=True)
    transport.connect(proto)
    transport.write(b"unsent")
    transport.close()  # waits for the buffer: closing, not yet lost
    proto.data_received(b"x\r\npartial")
    assert proto.lines == []
    assert proto.buffer_size == 0


def test_raw_mode_switch_inside_line_received() -> None:
    proto = Lines()
    transport = connect(proto)
    proto.on_line = lambda line: proto.set_raw_mode() if line == b"RAW" else None
    transport.feed(b"a\r\nRAW\r\nraw bytes\r\nstill raw")
    assert proto.lines == [b"a", b"RAW"]
    assert proto.raw == [b"raw bytes\r\nstill raw"]
    assert not proto.line_mode
    transport.feed(b"x\r\n")
    assert proto.raw[-1] == b"x\r\n"
    assert proto.buffer_size == 0


def test_line_mode_switch_inside_raw_data_received_parses_the_extra() -> None:
    proto = Lines()
    transport = connect(proto)

    def back_to_lines(data: bytes) -> None:
        _body, bar, rest = data.partition(b"|")
        if bar:
            proto.set_line_mode(rest)

    proto.on_raw = back_to_lines
    proto.set_raw_mode()
    transport.feed(b"body|line1\r\nline2\r\npart")  # the unbuffered fast path
    assert proto.raw == [b"body|line1\r\nline2\r\npart"]
    assert proto.lines == [b"line1", b"line2"]
    transport.feed(b"ial\r\n")
    assert proto.lines == [b"line1", b"line2", b"partial"]


def test_raw_mode_round_trip_within_one_chunk() -> None:
    proto = Lines()
    transport = connect(proto)
    proto.on_line = lambda line: proto.set_raw_mode() if line == b"RAW" else None

    def back_to_lines(data: bytes) -> None:
        proto.set_line_mode(data[3:])

    proto.on_raw = back_to_lines
    transport.feed(b"RAW\r\n123after\r\n")
    assert proto.raw == [b"123after\r\n"]
    assert proto.lines == [b"RAW", b"after"]


def test_set_line_mode_from_outside() -> None:
    proto = Lines()
    connect(proto)
    proto.set_raw_mode()
    proto.set_line_mode(b"x\r\ny")
    assert proto.lines == [b"x"]
    proto.set_line_mode()
    assert proto.buffer_size == 1


def test_raw_mode_while_data_is_buffered() -> None:
    proto = Lines()
    transport = connect(proto)
    transport.feed(b"partial")
    proto.set_raw_mode()
    transport.feed(b" line")
    assert proto.raw == [b"partial line"]


def test_pause_and_resume_producing() -> None:
    proto = Lines()
    transport = connect(proto)
    proto.on_line = lambda line: proto.pause_producing() if line == b"pause" else None
    transport.feed(b"a\r\npause\r\nb\r\nc")
    assert proto.lines == [b"a", b"pause"]
    assert not transport.is_reading()
    proto.pause_producing()  # again: nothing changes
    proto.data_received(b"\r\n")  # arrived before the transport stopped reading
    assert proto.lines == [b"a", b"pause"]
    proto.on_line = None
    proto.resume_producing()
    assert proto.lines == [b"a", b"pause", b"b", b"c"]
    assert transport.is_reading()
    proto.resume_producing()  # not paused: nothing to do
    transport.feed(b"d\r\n")
    assert proto.lines[-1] == b"d"


def test_pause_and_resume_within_a_handler_changes_nothing() -> None:
    proto = Lines()
    transport = connect(proto)

    def blip(line: bytes) -> None:
        proto.pause_producing()
        proto.resume_producing()

    proto.on_line = blip
    transport.feed(b"a\r\nb\r\n")
    assert proto.lines == [b"a", b"b"]
    assert transport.is_reading()


def test_resume_producing_can_pause_again() -> None:
    proto = Lines()
    transport = connect(proto)
    proto.on_line = lambda line: proto.pause_producing()
    transport.feed(b"a\r\nb\r\nc\r\n")
    assert proto.lines == [b"a"]
    proto.resume_producing()
    assert proto.lines == [b"a", b"b"]
    assert not transport.is_reading()


def test_pause_after_an_error_is_ignored() -> None:
    proto = Lines()
    transport = connect(proto)
    transport.close()
    proto.pause_producing()
    proto.resume_producing()
    assert proto.buffer_size == 0


def test_nested_data_received_is_queued_behind_the_current_chunk() -> None:
    proto = Lines()
    connect(proto)
    proto.on_line = lambda line: proto.data_received(b"nested\r\n") if line == b"a" else None
    proto.data_received(b"a\r\nb\r\n")
    assert proto.lines == [b"a", b"b", b"nested"]


def test_without_a_transport(caplog: pytest.LogCaptureFixture) -> None:
    class Short(Lines):
        max_line_length = 2

    proto = Short()
    proto.data_received(b"ab\r\n")
    proto.pause_producing()
    proto.resume_producing()
    with caplog.at_level(logging.WARNING, logger="protocols.framing"):
        proto.data_received(b"abc\r\nab\r\n")
    assert proto.lines == [b"ab"]
    assert "unknown peer" in caplog.text


def test_send_line() -> None:
    proto = Lines()
    transport = connect(proto)
    proto.send_line(b"hello")
    proto.send_line(b"")
    proto.send_line(b"lone\rcr\r")  # read back as it was, by CRLF and by lenient readers
    assert transport.value() == b"hello\r\n\r\nlone\rcr\r\r\n"
    for bad in (b"a\r\nb", b"a\nb", b"a\n"):
        with pytest.raises(ValueError, match="line contains b'\\\\n'"):
            proto.send_line(bad)
    assert transport.value() == b"hello\r\n\r\nlone\rcr\r\r\n"


def test_send_line_refuses_a_line_that_would_end_early() -> None:
    class Doubled(Lines):
        delimiter = b"aa"

    proto = Doubled()
    connect(proto)
    with pytest.raises(ValueError, match="delimiter"):
        proto.send_line(b"xa")  # "xaaa" would read as "x"


def test_unimplemented_handlers_raise() -> None:
    proto = LineReceiver()
    with pytest.raises(NotImplementedError, match="line_received"):
        proto.data_received(b"x\r\n")
    proto = LineReceiver()
    proto.set_raw_mode()
    with pytest.raises(NotImplementedError, match="raw_data_received"):
        proto.data_received(b"x")
    with pytest.raises(NotImplementedError, match="frame_received"):
        Int8Receiver().data_received(b"\0")
    with pytest.raises(NotImplementedError, match="string_received"):
        NetstringReceiver().data_received(b"0:,")


def test_a_handler_exception_goes_to_the_transport(caplog: pytest.LogCaptureFixture) -> None:
    proto = Lines()
    transport = connect(proto)

    def fail(line: bytes) -> None:
        raise ValueError("handler bug")

    proto.on_line = fail
    with caplog.at_level(logging.ERROR, logger="protocols.testing"):
        transport.feed(b"a\r\nb\r\n")
    assert transport.lost
    assert "handler bug" in caplog.text
    assert proto.buffer_size == 0


class Ending(Lines):
    """Records the reason ``connection_lost`` is given."""

    max_line_length = 5

    def __init__(self) -> None:
        super().__init__()
        self.reasons: list[BaseException | None] = []

    def connection_lost(self, exc: BaseException | None) -> None:
        self.reasons.append(exc)
        super().connection_lost(exc)


def test_a_long_line_ends_the_connection_with_line_too_long_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    proto = Ending()
    transport = connect(proto)
    transport.write(b"unsent")  # an abort discards it
    transport.stalled = True
    transport.write(b"stalled")
    with caplog.at_level(logging.WARNING, logger="protocols.framing"):
        transport.feed(b"123456\n")
    assert transport.aborted
    [reason] = proto.reasons
    assert isinstance(reason, LineTooLongError)
    assert isinstance(reason, FramingError)
    assert isinstance(reason, ValueError)
    assert "line longer than 5 bytes" in str(reason)
    assert "raise max_line_length on Ending" in str(reason)
    [record] = [r for r in caplog.records if r.name == "protocols.framing"]
    assert str(reason) in record.getMessage()
    assert transport.value() == b"unsent"


def test_a_long_partial_line_ends_the_connection_with_line_too_long_error() -> None:
    proto = Ending()
    transport = connect(proto)
    transport.feed(b"1234567")
    [reason] = proto.reasons
    assert isinstance(reason, LineTooLongError)
    assert "7 received" in str(reason)


class _ReasonlessAbort(MemoryTransport):
    """A transport whose ``abort()`` takes no reason, like asyncio's."""

    def abort(self) -> None:  # type: ignore[override]
        super().abort()


def test_a_transport_whose_abort_takes_no_reason_is_still_aborted() -> None:
    proto = Ending()
    transport = _ReasonlessAbort()
    transport.connect(proto)
    transport.feed(b"123456\n")
    assert transport.aborted
    assert proto.reasons == [None]


# -- LengthPrefixedReceiver ----------------------------------------------------


@pytest.mark.parametrize(
    ("cls", "limit"),
    [(Frames8, 255), (Frames16, 65535), (Frames, MIB)],
)
def test_frame_limits(cls: type[LengthPrefixedReceiver], limit: int) -> None:
    proto = cls()
    assert proto.frame_limit == limit
    proto.max_frame_size = 100
    assert proto.frame_limit == 100


@pytest.mark.parametrize("cls", [Frames8, Frames16, Frames])
def test_frames_round_trip(cls: type[Frames8 | Frames16 | Frames]) -> None:
    sender = cls()
    wire = connect(sender)
    payloads = [b"", b"x", bytes(range(200))]
    for payload in payloads:
        sender.send_frame(payload)
    receiver = cls()
    transport = connect(receiver)
    for chunk in single_bytes(wire.value()):
        transport.feed(chunk)
    assert receiver.frames == payloads
    assert receiver.buffer_size == 0


def test_frame_wire_format() -> None:
    proto = Frames16()
    transport = connect(proto)
    proto.send_frame(b"abc")
    assert transport.value() == b"\x00\x03abc"


def test_send_frame_refuses_oversized_frames() -> None:
    proto = Frames8()
    transport = connect(proto)
    proto.send_frame(b"x" * 255)
    with pytest.raises(ValueError, match="256 bytes is over the limit of 255"):
        proto.send_frame(b"x" * 256)
    big = Frames()
    connect(big)
    with pytest.raises(ValueError, match="limit"):
        big.send_frame(b"x" * (MIB + 1))
    assert len(transport.value()) == 256


def test_an_oversized_prefix_closes_before_the_body_arrives(
    caplog: pytest.LogCaptureFixture,
) -> None:
    proto = Frames()
    proto.max_frame_size = 10
    transport = connect(proto)
    with caplog.at_level(logging.WARNING, logger="protocols.framing"):
        transport.feed(struct.pack("!I", 3) + b"abc" + struct.pack("!I", 11))
    assert proto.frames == [b"abc"]
    assert transport.closed
    assert proto.buffer_size == 0
    assert "frame of 11 bytes announced, the limit is 10" in caplog.text


def test_an_oversized_prefix_ends_the_connection_with_frame_too_long_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    reasons: list[BaseException | None] = []

    class Small(Frames16):
        max_frame_size = 10

        def connection_lost(self, exc: BaseException | None) -> None:
            reasons.append(exc)
            super().connection_lost(exc)

    proto = Small()
    transport = connect(proto)
    with caplog.at_level(logging.WARNING, logger="protocols.framing"):
        transport.feed(struct.pack("!H", 11))
    assert transport.aborted
    [reason] = reasons
    assert isinstance(reason, FrameTooLongError)
    assert isinstance(reason, FramingError)
    assert "frame of 11 bytes announced, the limit is 10 bytes" in str(reason)
    assert "raise max_frame_size on Small" in str(reason)
    assert len([r for r in caplog.records if r.name == "protocols.framing"]) == 1


def test_framing_stops_after_an_oversized_prefix_even_if_the_hook_does_not_close() -> None:
    class Lenient(Frames8):
        def __init__(self) -> None:
            super().__init__()
            self.exceeded: list[int] = []

        def frame_length_exceeded(self, length: int) -> None:
            self.exceeded.append(length)

    proto = Lenient()
    proto.max_frame_size = 2
    transport = connect(proto)
    transport.feed(b"\x03abc\x01x")
    assert proto.exceeded == [3]
    assert proto.frames == []
    assert not transport.closed
    transport.feed(b"\x01x")
    assert proto.frames == []


def test_a_split_prefix() -> None:
    proto = Frames()
    transport = connect(proto)
    transport.feed(b"\x00\x00")
    transport.feed(b"\x00")
    assert proto.buffer_size == 3
    transport.feed(b"\x02h")
    transport.feed(b"i\x00\x00\x00\x00")
    assert proto.frames == [b"hi", b""]


def test_frames_after_close_in_frame_received_are_not_delivered() -> None:
    proto = Frames()
    transport = connect(proto)
    proto.on_frame = lambda frame: transport.close()
    transport.feed(b"\0\0\0\1a\0\0\0\1b")
    assert proto.frames == [b"a"]


@pytest.mark.parametrize("fmt", ["!i", "!BB", "", "!f", "!?"])
def test_prefix_format_must_be_one_unsigned_integer(fmt: str) -> None:
    class Bad(LengthPrefixedReceiver):
        prefix_format = fmt

    with pytest.raises(ValueError, match="prefix_format"):
        Bad()


def test_other_prefix_formats() -> None:
    class LittleQ(LengthPrefixedReceiver):
        prefix_format = "<Q"

        def __init__(self) -> None:
            super().__init__()
            self.frames: list[bytes] = []

        def frame_received(self, frame: bytes) -> None:
            self.frames.append(frame)

    proto = LittleQ()
    assert proto.frame_limit == MIB
    transport = connect(proto)
    proto.send_frame(b"xyz")
    assert transport.value() == struct.pack("<Q", 3) + b"xyz"
    transport.feed(transport.value())
    assert proto.frames == [b"xyz"]
    assert LengthPrefixedReceiver().frame_limit == MIB


def test_frames_pause_and_resume() -> None:
    proto = Frames()
    transport = connect(proto)
    proto.on_frame = lambda frame: proto.pause_producing()
    transport.feed(b"\0\0\0\1a\0\0\0\1b")
    assert proto.frames == [b"a"]
    proto.on_frame = None
    proto.resume_producing()
    assert proto.frames == [b"a", b"b"]


# -- NetstringReceiver ---------------------------------------------------------


def test_netstrings() -> None:
    proto = Strings()
    transport = connect(proto)
    transport.feed(b"3:abc,0:,")
    transport.feed(b"12:hello world!,1")
    assert proto.strings == [b"abc", b"", b"hello world!"]
    transport.feed(b"0:0123456789,")
    assert proto.strings[-1] == b"0123456789"
    assert proto.buffer_size == 0
    assert not transport.closed


def test_send_string() -> None:
    proto = Strings()
    transport = connect(proto)
    proto.send_string(b"abc")
    proto.send_string(b"")
    assert transport.value() == b"3:abc,0:,"
    proto.max_frame_size = 2
    with pytest.raises(ValueError, match="3 bytes is over the limit of 2"):
        proto.send_string(b"abc")


@pytest.mark.parametrize(
    ("stream", "reason"),
    [
        (b"03:abc,", "leading zero"),
        (b"00:,", "leading zero"),
        (b"01", "leading zero"),
        (b"a:", "not a decimal number"),
        (b"x", "not a decimal number"),
        (b"-1:", "not a decimal number"),
        (b"+1:", "not a decimal number"),
        (b" 1:", "not a decimal number"),
        (b"1 :", "not a decimal number"),
        (b"\xd9\xa3:", "not a decimal number"),
        (b":", "empty"),
        (b"3:abcX", "expected ','"),
        (b"0:;", "expected ','"),
        (b"12345678", "longer than 7 digits"),
        (b"99999999:", "longer than 7 digits"),
        (b"1048577:", "over the limit"),
        (b"9999999:", "over the limit"),
    ],
)
def test_netstring_errors(stream: bytes, reason: str) -> None:
    proto = LenientStrings()
    transport = connect(proto)
    for chunk in (stream, b"1:a,"):  # nothing after an error is parsed
        transport.feed(chunk)
    assert len(proto.errors) == 1
    assert reason in proto.errors[0]
    assert proto.strings == []
    assert proto.buffer_size == 0


def test_netstring_error_closes_by_default(caplog: pytest.LogCaptureFixture) -> None:
    proto = Strings()
    transport = connect(proto)
    with caplog.at_level(logging.WARNING, logger="protocols.framing"):
        transport.feed(b"1:a,GET / HTTP/1.1\r\n")
    assert proto.strings == [b"a"]
    assert transport.closed
    assert "invalid netstring" in caplog.text
    assert "not a decimal number" in caplog.text


@pytest.mark.parametrize(
    ("stream", "reason"),
    [
        (b"x:", "not a decimal number"),
        (b"1:ab", "expected ','"),
        (b"11:", "over the limit of 10 bytes; to accept longer strings, raise max_frame_size"),
        (b"100", "longer than 2 digits, so over the limit of 10 bytes"),
    ],
)
def test_netstring_errors_end_the_connection_with_netstring_error(
    stream: bytes, reason: str, caplog: pytest.LogCaptureFixture
) -> None:
    reasons: list[BaseException | None] = []

    class Small(Strings):
        max_frame_size = 10

        def connection_lost(self, exc: BaseException | None) -> None:
            reasons.append(exc)
            super().connection_lost(exc)

    proto = Small()
    transport = connect(proto)
    with caplog.at_level(logging.WARNING, logger="protocols.framing"):
        transport.feed(stream)
    assert transport.aborted
    [error] = reasons
    assert isinstance(error, NetstringError)
    assert isinstance(error, FramingError)
    assert str(error).startswith("invalid netstring: ")
    assert reason in str(error)
    [record] = [r for r in caplog.records if r.name == "protocols.framing"]
    assert str(error) in record.getMessage()


def test_netstring_small_maximum() -> None:
    proto = LenientStrings()
    proto.max_frame_size = 10
    transport = connect(proto)
    transport.feed(b"10:0123456789,")
    assert proto.strings == [b"0123456789"]
    transport.feed(b"11:")
    assert "over the limit of 10" in proto.errors[0]

    proto = LenientStrings()
    proto.max_frame_size = 10
    connect(proto).feed(b"100")
    assert "longer than 2 digits" in proto.errors[0]


def test_netstring_length_arriving_digit_by_digit() -> None:
    proto = Strings()
    transport = connect(proto)
    for chunk in single_bytes(b"1048576:"):
        transport.feed(chunk)
    assert not transport.closed
    transport.feed(b"x" * MIB + b",")
    assert proto.strings == [b"x" * MIB]


def test_netstrings_after_close_are_not_delivered() -> None:
    class Closing(Strings):
        def string_received(self, data: bytes) -> None:
            super().string_received(data)
            self.transport.close()

    proto = Closing()
    connect(proto).feed(b"1:a,1:b,")
    assert proto.strings == [b"a"]


# -- properties ----------------------------------------------------------------

small_bytes = st.binary(max_size=300)
abc = st.lists(st.sampled_from(b"ab\r\n"), max_size=200).map(bytes)


def reference_lines(stream: bytes, delimiter: bytes, max_length: int) -> list[tuple[str, bytes]]:
    """What a lenient LineReceiver reports for ``stream``, computed the obvious way."""
    if delimiter is ANY_NEWLINE:
        *lines, rest = stream.split(b"\n")
        lines = [line.removesuffix(b"\r") for line in lines]
    else:
        *lines, rest = stream.split(delimiter)
    events = [("line", line) if len(line) <= max_length else ("long", b"") for line in lines]
    if len(rest) >= max_length + len(delimiter):
        events.append(("long", b""))
    return events


@settings(deadline=None, max_examples=100)
@given(
    stream=abc,
    delimiter=st.sampled_from([ANY_NEWLINE, b"\r\n", b"\n", b"a", b"aab", b"abab", b"\r\n\r\n"]),
    max_length=st.integers(0, 12),
    data=st.data(),
)
def test_lines_do_not_depend_on_chunking(
    stream: bytes, delimiter: bytes, max_length: int, data: st.DataObject
) -> None:
    proto = LenientLines()
    proto.delimiter = delimiter
    proto.max_line_length = max_length
    transport = connect(proto)
    for chunk in data.draw(chunked(stream)):
        transport.feed(chunk)
        assert proto.buffer_size <= max_length + len(delimiter) - 1
    assert proto.events == reference_lines(stream, delimiter, max_length)
    assert not transport.closed


@settings(deadline=None, max_examples=60)
@given(
    lines=st.lists(st.binary(max_size=40).map(lambda b: b.replace(b"\n", b""))),
    delimiter=st.sampled_from([ANY_NEWLINE, b"\n"]),
    data=st.data(),
)
def test_sent_lines_are_received(lines: list[bytes], delimiter: bytes, data: st.DataObject) -> None:
    sender = Lines()
    sender.delimiter = delimiter
    wire = connect(sender)
    for line in lines:
        sender.send_line(line)
    receiver = Lines()
    receiver.delimiter = delimiter
    transport = connect(receiver)
    for chunk in data.draw(chunked(wire.value())):
        transport.feed(chunk)
    assert receiver.lines == lines


@settings(deadline=None, max_examples=60)
@given(frames=st.lists(st.binary(max_size=300)), data=st.data())
def test_frames_do_not_depend_on_chunking(frames: list[bytes], data: st.DataObject) -> None:
    sender = Frames16()
    wire = connect(sender)
    for frame in frames:
        sender.send_frame(frame)
    receiver = Frames16()
    transport = connect(receiver)
    for chunk in data.draw(chunked(wire.value())):
        transport.feed(chunk)
    assert receiver.frames == frames


@settings(deadline=None, max_examples=60)
@given(strings=st.lists(st.binary(max_size=300)), data=st.data())
def test_netstrings_do_not_depend_on_chunking(strings: list[bytes], data: st.DataObject) -> None:
    sender = Strings()
    wire = connect(sender)
    for string in strings:
        sender.send_string(string)
    receiver = Strings()
    transport = connect(receiver)
    for chunk in data.draw(chunked(wire.value())):
        transport.feed(chunk)
    assert receiver.strings == strings
    assert not transport.closed


def reference_frames(stream: bytes, limit: int) -> tuple[list[bytes], bool]:
    """Frames of a one-byte-prefix stream, and whether it hit an oversized prefix."""
    frames: list[bytes] = []
    pos = 0
    while pos < len(stream):
        length = stream[pos]
        if length > limit:
            return frames, True
        if pos + 1 + length > len(stream):
            break
        frames.append(stream[pos + 1 : pos + 1 + length])
        pos += 1 + length
    return frames, False


@settings(deadline=None, max_examples=100)
@given(stream=small_bytes, limit=st.integers(0, 255), data=st.data())
def test_random_bytes_as_frames(stream: bytes, limit: int, data: st.DataObject) -> None:
    proto = Frames8()
    proto.max_frame_size = limit
    transport = connect(proto)
    for chunk in data.draw(chunked(stream)):
        proto.data_received(chunk)  # directly: an exception would fail the test
        assert proto.buffer_size <= limit  # one-byte prefix + at most limit - 1 bytes
    frames, failed = reference_frames(stream, limit)
    assert proto.frames == frames
    assert transport.closed == failed


@settings(deadline=None, max_examples=60)
@given(
    stream=st.one_of(small_bytes, st.lists(st.sampled_from(b"0129:,x"), max_size=60).map(bytes)),
    limit=st.integers(0, 150),
    data=st.data(),
)
def test_random_bytes_as_netstrings(stream: bytes, limit: int, data: st.DataObject) -> None:
    whole = Strings()
    whole.max_frame_size = limit
    whole_transport = connect(whole)
    whole.data_received(stream)

    proto = Strings()
    proto.max_frame_size = limit
    transport = connect(proto)
    bound = len(str(limit)) + 1 + limit  # "<digits>:" and the data, before its comma
    for chunk in data.draw(chunked(stream)):
        proto.data_received(chunk)
        assert proto.buffer_size <= bound
    assert proto.strings == whole.strings
    assert transport.closed == whole_transport.closed


@settings(deadline=None, max_examples=60)
@given(stream=small_bytes, max_length=st.integers(0, 20), data=st.data())
def test_random_bytes_as_lines(stream: bytes, max_length: int, data: st.DataObject) -> None:
    proto = Lines()
    proto.max_line_length = max_length
    transport = connect(proto)
    for chunk in data.draw(chunked(stream)):
        proto.data_received(chunk)
        assert proto.buffer_size <= max_length + 1
    *lines, rest = stream.split(b"\n")
    expected = []
    for line in (line.removesuffix(b"\r") for line in lines):
        if len(line) > max_length:
            break
        expected.append(line)
    assert proto.lines == expected
    long_rest = len(lines) == len(expected) and len(rest) >= max_length + 2
    assert transport.closed == (len(lines) > len(expected) or long_rest)


@settings(deadline=None, max_examples=60)
@given(
    stream=abc,
    delimiter=st.sampled_from([ANY_NEWLINE, b"\r\n", b"a", b"aab"]),
    max_length=st.integers(0, 12),
    pauses=st.sets(st.integers(1, 60)),
    data=st.data(),
)
def test_pausing_does_not_change_lines(
    stream: bytes, delimiter: bytes, max_length: int, pauses: set[int], data: st.DataObject
) -> None:
    proto = LenientLines()
    proto.delimiter = delimiter
    proto.max_line_length = max_length
    transport = connect(proto)
    proto.on_line = lambda line: proto.pause_producing() if len(proto.lines) in pauses else None
    for chunk in data.draw(chunked(stream)):
        transport.feed(chunk)  # held by the transport while paused
        while not transport.is_reading():
            proto.resume_producing()
    assert proto.events == reference_lines(stream, delimiter, max_length)


@settings(deadline=None, max_examples=60)
@given(frames=st.lists(st.binary(max_size=30)), pauses=st.sets(st.integers(1, 30)), data=st.data())
def test_pausing_does_not_change_frames_or_netstrings(
    frames: list[bytes], pauses: set[int], data: st.DataObject
) -> None:
    int_sender, str_sender = Frames(), Strings()
    int_wire, str_wire = connect(int_sender), connect(str_sender)
    for frame in frames:
        int_sender.send_frame(frame)
        str_sender.send_string(frame)

    int_receiver = Frames()
    int_transport = connect(int_receiver)
    int_receiver.on_frame = lambda frame: (
        int_receiver.pause_producing() if len(int_receiver.frames) in pauses else None
    )
    for chunk in data.draw(chunked(int_wire.value())):
        int_transport.feed(chunk)
        while not int_transport.is_reading():
            int_receiver.resume_producing()
    assert int_receiver.frames == frames

    class PausingStrings(Strings):
        def string_received(self, data: bytes) -> None:
            super().string_received(data)
            if len(self.strings) in pauses:
                self.pause_producing()

    str_receiver = PausingStrings()
    str_transport = connect(str_receiver)
    for chunk in data.draw(chunked(str_wire.value())):
        str_transport.feed(chunk)
        while not str_transport.is_reading():
            str_receiver.resume_producing()
    assert str_receiver.strings == frames


def test_pausing_after_every_line_is_linear() -> None:
    # Each resume must not copy or move the rest of the buffer: 20,000 lines
    # in one chunk would otherwise cost seconds.
    class OneAtATime(Lines):
        delimiter = b"\n"

    proto = OneAtATime()
    transport = connect(proto)
    proto.on_line = lambda line: proto.pause_producing()
    transport.feed(b"123456789\n" * 20_000)
    while not transport.is_reading():
        proto.resume_producing()
    assert len(proto.lines) == 20_000
    assert proto.buffer_size == 0


def test_long_lines_grow_the_split_window() -> None:
    proto = Lines()
    transport = connect(proto)
    lines = [bytes([65 + i % 26]) * (i * 37 % 3000) for i in range(200)]
    transport.feed(b"".join(line + b"\r\n" for line in lines))
    assert proto.lines == lines


def test_large_line_in_many_chunks_is_linear() -> None:
    # A quadratic rescan of 64 KiB in 1-byte chunks would take seconds.
    proto = Lines()
    transport = connect(proto)
    line = b"x" * 65536
    for i in range(0, len(line), 16):
        transport.feed(line[i : i + 16])
    transport.feed(b"\r\n")
    assert proto.lines == [line]
