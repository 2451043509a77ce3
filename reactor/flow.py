"""Write-buffer flow control shared by the stream and datagram transports.

A transport buffers what the kernel will not take yet. When the buffer grows
past the high-water mark the protocol is told to ``pause_writing``; when it
drains to the low-water mark, to ``resume_writing``. The rule for the
defaults is asyncio's: 64 KiB high, and low a quarter of high.
"""

from __future__ import annotations

from typing import Any, Final, Protocol

__all__ = ["DEFAULT_HIGH_WATER", "DEFAULT_LOW_WATER", "FlowControl"]

DEFAULT_HIGH_WATER: Final = 64 * 1024
DEFAULT_LOW_WATER: Final = 16 * 1024


class _Writer(Protocol):
    def pause_writing(self) -> None: ...
    def resume_writing(self) -> None: ...


def resolve_limits(high: int | None, low: int | None) -> tuple[int, int]:
    """asyncio's defaulting rule: ``high`` 64 KiB (or 4 x low), ``low`` high // 4."""
    if high is None:
        high = DEFAULT_HIGH_WATER if low is None else 4 * low
    if low is None:
        low = high // 4
    if not high >= low >= 0:
        raise ValueError(f"need high ({high!r}) >= low ({low!r}) >= 0")
    return high, low


class FlowControl:
    """Mixin: the water marks and the pause/resume calls around them.

    The transport keeps ``_buffer_size`` up to date and defines
    ``_protocol_error``; this class decides when to call the protocol.
    """

    # The mixin owns the slots it writes; the transport sets them in __init__.
    __slots__ = ("_buffer_size", "_high", "_low", "_protocol_paused")

    _buffer_size: int
    _high: int
    _low: int
    _protocol_paused: bool
    _conn_lost: bool
    # The protocol (a stream or a datagram one, both _Writer): declared once,
    # here, as Any, because a compiled (mypyc) class may not narrow an
    # attribute's type in a subclass.
    _protocol: Any

    def _protocol_error(self, exc: Exception, where: str) -> None:
        raise NotImplementedError

    def get_write_buffer_size(self) -> int:
        """Bytes (or datagram bytes) buffered and not yet taken by the kernel (O(1))."""
        return self._buffer_size

    def get_write_buffer_limits(self) -> tuple[int, int]:
        """``(low, high)``, in asyncio's order."""
        return (self._low, self._high)

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        """Set the water marks for pause_writing/resume_writing (asyncio's defaults rule)."""
        self._high, self._low = resolve_limits(high, low)
        if self._conn_lost:
            return  # nothing is called on a protocol after connection_lost
        if self._buffer_size > self._high and not self._protocol_paused:
            self._pause_protocol()
        elif self._protocol_paused and self._buffer_size <= self._low:
            self._resume_protocol()

    def _pause_protocol(self) -> None:
        self._protocol_paused = True
        try:
            self._protocol.pause_writing()
        except Exception as exc:
            self._protocol_error(exc, "pause_writing")

    def _resume_protocol(self) -> None:
        self._protocol_paused = False
        try:
            self._protocol.resume_writing()
        except Exception as exc:
            self._protocol_error(exc, "resume_writing")
