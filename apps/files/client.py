"""File-transfer clients: ``get`` (download, verify, rename into place) and ``list``.

A download is written to ``OUT.part`` while it arrives, hashed as it goes,
and renamed to ``OUT`` only once the SHA-256 matches what the server
announced. If it is interrupted the part file stays, and ``--resume`` asks
the server for the rest from the part file's size (the part is hashed
first, so the end-to-end check covers it too).
"""

from __future__ import annotations

import hashlib
import logging
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, Any

from apps.files.wire import (
    MAX_LINE,
    ProtocolError,
    Response,
    format_get,
    parse_list_entry,
    parse_response,
)
from protocols import IdleTimeoutError, IdleTimeoutMixin, LineReceiver

__all__ = ["GetClient", "ListClient", "Outcome", "Progress", "human_size", "part_path_for"]

log = logging.getLogger("apps.files.client")

#: Bytes read per step when hashing an existing part file.
_HASH_CHUNK = 1024 * 1024


@dataclass
class Outcome:
    """How a client run ended: ``code`` 0 on success; ``message`` to print."""

    code: int
    message: str


def human_size(size: float) -> str:
    """``1536`` -> ``"1.5 KiB"``."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")  # pragma: no cover


def _duration(seconds: float) -> str:
    seconds = int(seconds + 0.5)
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


def part_path_for(out: str) -> str:
    """Where a download to ``out`` is kept until it is verified."""
    return out + ".part"


class Progress:
    """A progress bar (bytes, rate, time left) on a terminal; silent otherwise."""

    def __init__(
        self,
        clock: Any,
        stream: IO[str] | None,
        *,
        width: int = 30,
        interval: float = 0.1,
    ) -> None:
        self.clock = clock
        self.stream = stream
        self.width = width
        self.interval = interval
        self.total = 0
        self.start_offset = 0
        self.done = 0
        self._started = 0.0
        self._last_draw = 0.0
        self._drawn = False

    def start(self, offset: int, total: int) -> None:
        self.start_offset = self.done = offset
        self.total = total
        self._started = self.clock.time()
        self.draw()

    def update(self, done: int) -> None:
        self.done = done
        if self.clock.time() - self._last_draw >= self.interval:
            self.draw()

    def rate(self) -> float:
        elapsed = self.clock.time() - self._started
        return (self.done - self.start_offset) / elapsed if elapsed > 0 else 0.0

    def line(self) -> str:
        """The bar as text: ``[#####.....]  50.0%  128.0 MiB/256.0 MiB  99.1 MiB/s  ETA 0:01``."""
        fraction = self.done / self.total if self.total else 1.0
        filled = int(fraction * self.width)
        rate = self.rate()
        left = (self.total - self.done) / rate if rate > 0 else None
        eta = _duration(left) if left is not None else "--:--"
        return (
            f"[{'#' * filled}{'.' * (self.width - filled)}] {fraction * 100:5.1f}%  "
            f"{human_size(self.done)}/{human_size(self.total)}  "
            f"{human_size(rate)}/s  ETA {eta}"
        )

    def draw(self) -> None:
        """Redraw the bar in place (a carriage return, the line, clear to its end)."""
        if self.stream is None:
            return
        self._last_draw = self.clock.time()
        self.stream.write("\r" + self.line() + "\x1b[K")
        self.stream.flush()
        self._drawn = True

    def finish(self) -> None:
        if self.stream is not None and self._drawn:
            self.draw()
            self.stream.write("\n")
            self.stream.flush()


def hash_prefix(path: str) -> tuple[Any, int]:
    """The SHA-256 object fed with the file at ``path``, and its size (0 if absent)."""
    digest = hashlib.sha256()
    size = 0
    try:
        with open(path, "rb") as f:
            while chunk := f.read(_HASH_CHUNK):
                digest.update(chunk)
                size += len(chunk)
    except FileNotFoundError:
        pass
    return digest, size


class GetClient(IdleTimeoutMixin, LineReceiver):
    """Downloads one file: GET, check the answer, stream to the part file, verify, rename.

    ``on_done(outcome)`` is called once, when the download ends either way.
    """

    delimiter = b"\n"
    max_line_length = MAX_LINE

    def __init__(
        self,
        clock: Any,
        name: str,
        out: str,
        *,
        resume: bool = False,
        on_done: Callable[[Outcome], object],
        progress: Progress | None = None,
        limit_rate: float | None = None,
        timeout: float = 30.0,
    ) -> None:
        super().__init__()
        self.clock = clock
        self.idle_timeout = timeout
        self.name = name
        self.out = out
        self.part = part_path_for(out)
        self.on_done = on_done
        self.progress = progress
        self.limit_rate = limit_rate
        self.outcome: Outcome | None = None
        self.digest: Any
        self.offset = 0
        if resume:
            self.digest, self.offset = hash_prefix(self.part)
        else:
            self.digest = hashlib.sha256()
        self.size = 0
        self.expected = ""
        self.received = 0  # bytes of the body so far
        self._file: IO[bytes] | None = None
        self._started = 0.0
        self._resume_handle: Any = None
        self._request = format_get(name, self.offset)

    # --------------------------------------------------------------- protocol

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        self._started = self.clock.time()
        self.transport.write(self._request)

    def line_received(self, line: bytes) -> None:
        self.set_raw_mode()
        try:
            response = parse_response(line)
        except ProtocolError as exc:
            self._fail(f"the server's answer is not understood: {exc}")
            return
        if not response.ok:
            self._fail(f"server: {response.message}")
            return
        if not response.sha256:
            self._fail("the server's answer is not understood: no SHA-256 in it")
            return
        self._begin(response)

    def line_length_exceeded(self, line: bytes) -> None:
        self._fail("the server's answer is not understood: its first line is too long")

    def _begin(self, response: Response) -> None:
        self.size, self.expected = response.size, response.sha256
        if self.offset > self.size:
            self._fail(f"{self.part} is longer than the file on the server: delete it")
            return
        try:
            self._file = open(self.part, "ab" if self.offset else "wb")  # noqa: SIM115
            if self._file.tell() != self.offset:
                self._fail(f"{self.part} changed since it was hashed; try again")
                return
        except OSError as exc:
            self._fail(f"cannot write {self.part}: {exc.strerror}")
            return
        if self.progress is not None:
            self.progress.start(self.offset, self.size)
        self._started = self.clock.time()
        if self.offset == self.size:
            self._complete()

    def raw_data_received(self, data: bytes) -> None:
        if self._file is None or self.outcome is not None:
            return
        left = self.size - self.offset - self.received
        if len(data) > left:
            self._fail("the server sent more bytes than it announced", remove_part=True)
            return
        try:
            self._file.write(data)
        except OSError as exc:
            self._fail(f"cannot write {self.part}: {exc.strerror}")
            return
        self.digest.update(data)
        self.received += len(data)
        if self.progress is not None:
            self.progress.update(self.offset + self.received)
        if self.received == self.size - self.offset:
            self._complete()
        elif self.limit_rate:
            self._throttle()

    def _throttle(self) -> None:
        """Stop reading long enough to keep to ``limit_rate`` bytes per second."""
        assert self.limit_rate
        due = self.received / self.limit_rate - (self.clock.time() - self._started)
        if due > 0.005 and self._resume_handle is None:
            self.transport.pause_reading()
            self._resume_handle = self.clock.call_later(due, self._unthrottle)

    def _unthrottle(self) -> None:
        self._resume_handle = None
        if self.outcome is None:
            self.transport.resume_reading()

    def connection_lost(self, exc: BaseException | None) -> None:
        super().connection_lost(exc)
        if self._resume_handle is not None:
            self._resume_handle.cancel()
            self._resume_handle = None
        if self.outcome is not None:
            return
        if isinstance(exc, IdleTimeoutError):
            why = f"no data for {self.idle_timeout:g} s"
        elif exc is not None:
            why = str(exc) or type(exc).__name__
        else:
            why = "the server closed the connection"
        if self._file is None:
            self._fail(f"{why} before answering")
        else:
            got = self.offset + self.received
            self._fail(
                f"interrupted ({why}) after {got} of {self.size} bytes; the partial "
                f"download is kept in {self.part}: run again with --resume to finish it",
            )

    def interrupt(self) -> None:
        """Stop now (Ctrl-C): the part file is kept for --resume."""
        if self.outcome is None:
            got = self.offset + self.received
            self._fail(
                f"interrupted after {got} of {self.size or '?'} bytes; the partial download "
                f"is kept in {self.part}: run again with --resume to finish it",
            )

    # ----------------------------------------------------------------- ending

    def _complete(self) -> None:
        assert self._file is not None
        try:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
        except OSError as exc:
            self._fail(f"cannot write {self.part}: {exc.strerror}")
            return
        self._file = None
        actual = self.digest.hexdigest()
        if actual != self.expected:
            self._fail(
                f"SHA-256 mismatch: expected {self.expected}, got {actual} (the file changed on "
                f"the server, or the partial file was not a part of it); {self.part} was removed",
                remove_part=True,
            )
            return
        try:
            os.replace(self.part, self.out)
        except OSError as exc:
            self._fail(f"cannot rename {self.part} to {self.out}: {exc.strerror}")
            return
        if self.progress is not None:
            self.progress.finish()
        elapsed = max(self.clock.time() - self._started, 1e-9)
        resumed = f", resumed at {human_size(self.offset)}" if self.offset else ""
        self._finish(
            Outcome(
                0,
                f"saved {self.out}: {human_size(self.size)} ({self.size} bytes), sha256 "
                f"{actual[:16]}... verified; {human_size(self.received)} in {elapsed:.2f} s "
                f"({human_size(self.received / elapsed)}/s{resumed})",
            )
        )

    def _fail(self, message: str, *, remove_part: bool = False) -> None:
        """End with an error; the part file is kept for --resume unless it is known bad."""
        if self.outcome is not None:
            return
        if self._file is not None:
            try:
                self._file.close()
            except OSError:
                pass
            self._file = None
        if remove_part:
            try:
                os.unlink(self.part)
            except OSError:
                pass
        if self.progress is not None:
            self.progress.finish()
        self._finish(Outcome(1, message))

    def _finish(self, outcome: Outcome) -> None:
        self.outcome = outcome
        transport = getattr(self, "transport", None)
        if transport is not None:
            if outcome.code:
                transport.abort()
            else:
                transport.close()
        self.on_done(outcome)


class ListClient(IdleTimeoutMixin, LineReceiver):
    """Asks for the list of files and gathers it; ``on_done(outcome)`` at the end."""

    delimiter = b"\n"
    max_line_length = MAX_LINE

    def __init__(
        self,
        clock: Any,
        *,
        on_done: Callable[[Outcome], object],
        output: Callable[[str], object] = print,
        timeout: float = 30.0,
    ) -> None:
        super().__init__()
        self.clock = clock
        self.idle_timeout = timeout
        self.on_done = on_done
        self.output = output
        self.count: int | None = None
        self.entries: list[tuple[int, str]] = []
        self.outcome: Outcome | None = None

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        self.transport.write(b"LIST\n")

    def line_received(self, line: bytes) -> None:
        if self.outcome is not None:
            return
        try:
            if self.count is None:
                response = parse_response(line)
                if not response.ok:
                    self._end(Outcome(1, f"server: {response.message}"))
                    return
                if response.sha256:
                    raise ProtocolError("a GET answer to a LIST request")
                self.count = response.count
            else:
                entry = parse_list_entry(line)
                self.entries.append((entry.size, entry.name))
        except ProtocolError as exc:
            self._end(Outcome(1, f"the server's answer is not understood: {exc}"))
            return
        if len(self.entries) == self.count:
            for size, name in self.entries:
                self.output(f"{size:>14}  {name}")
            total = sum(size for size, _ in self.entries)
            self._end(Outcome(0, f"{self.count} files, {human_size(total)}"))

    def connection_lost(self, exc: BaseException | None) -> None:
        super().connection_lost(exc)
        if self.outcome is None:
            why = "timed out" if isinstance(exc, IdleTimeoutError) else "connection closed"
            got = f"{len(self.entries)} of {self.count} entries" if self.count else "no answer"
            self._end(Outcome(1, f"{why} after {got}"))

    def _end(self, outcome: Outcome) -> None:
        self.outcome = outcome
        transport = getattr(self, "transport", None)
        if transport is not None:
            transport.close()
        self.on_done(outcome)


def stderr_progress(clock: Any) -> Progress:
    """A progress bar on stderr if it is a terminal; a silent one otherwise."""
    stream = sys.stderr if sys.stderr is not None and sys.stderr.isatty() else None
    return Progress(clock, stream)
