"""The chat client: the terminal and the socket, both read by one reactor.

Standard input is watched with ``reactor.add_reader(0, ...)`` and read with
``os.read``; the server connection is a :class:`~protocols.framing.LineReceiver`.
Incoming lines are printed as they come; ``PING`` is answered with ``PONG``
and not shown.

On a terminal (stdin and stdout both TTYs) the client edits the input line
itself, with the terminal in non-canonical, no-echo mode: an incoming line
clears the input line (``\\r\\x1b[K``), is printed, and the prompt and the
partial input are drawn again, so what the user is typing is never mangled.
Otherwise (a pipe, a file) it reads lines and prints lines, nothing more.

The client leaves on ``/quit``, on end of input (Ctrl-D, or the pipe
closing) and on SIGINT/SIGTERM: it sends ``/quit`` and exits 0 once the
server has closed the connection (or after a short grace period). It exits 1
if it cannot connect or the connection breaks.
"""

from __future__ import annotations

import argparse
import codecs
import contextlib
import logging
import os
import shutil
import signal
import sys
from collections.abc import Callable, Iterator
from ssl import SSLContext
from typing import BinaryIO

from apps._common import EXIT_ERROR, make_reactor
from apps._tls import client_tls_context
from apps.chat import wire
from protocols import LineReceiver
from reactor import Reactor, TimerHandle

__all__ = [
    "ChatClient",
    "ChatClientProtocol",
    "Console",
    "LineInput",
    "TerminalInput",
    "run_client",
]

log = logging.getLogger("apps.chat")

PROMPT = "> "
#: Seconds to wait for the server to close after we sent /quit.
QUIT_GRACE = 5.0


class Console:
    """Where output goes: incoming lines, and on a terminal the line being typed.

    Lines are collected with :meth:`show` and written by :meth:`flush`, once
    per batch, so a burst of lines costs one write and one redraw.
    """

    def __init__(self, output: BinaryIO, *, interactive: bool, prompt: str = PROMPT) -> None:
        self.output = output
        self.interactive = interactive
        self.prompt = prompt
        self.encoding = getattr(output, "encoding", None) or "utf-8"
        self._input = ""
        self._lines: list[str] = []
        self._dirty = False

    def show(self, text: str) -> None:
        """Print ``text`` as a line (control characters made harmless)."""
        self._lines.append(wire.sanitize(text))
        self._dirty = True

    def set_input(self, text: str) -> None:
        """The partial input line changed: redraw it (terminal only)."""
        self._input = text
        self._dirty = self._dirty or self.interactive

    def flush(self) -> None:
        if not self._dirty:
            return
        self._dirty = False
        lines, self._lines = self._lines, []
        if self.interactive:
            out = "\r\x1b[K" + "".join(line + "\r\n" for line in lines)
            out += self.prompt + self._visible_input()
        else:
            out = "".join(line + "\n" for line in lines)
        self._write(out)

    def close(self) -> None:
        """Flush, and leave the terminal on a fresh line."""
        self.flush()
        if self.interactive:
            self._write("\r\x1b[K")

    def error(self, message: str) -> None:
        """Print ``message`` to stderr without mangling the input line."""
        self.flush()
        if self.interactive:
            self._write("\r\x1b[K")
            self._dirty = True  # the prompt comes back on the next flush
        print(message, file=sys.stderr, flush=True)

    def _visible_input(self) -> str:
        # Only what fits on one row: a wrapped line could not be cleared with \r\x1b[K.
        width = shutil.get_terminal_size().columns - len(self.prompt) - 1
        text = self._input
        if width > 1 and len(text) > width:
            text = "<" + text[-(width - 1) :]
        return text

    def _write(self, text: str) -> None:
        try:
            self.output.write(text.encode(self.encoding, "replace"))
            self.output.flush()
        except (BrokenPipeError, ValueError):  # nobody reads our output any more
            pass


class LineInput:
    """Input from a pipe or a file: bytes cut into lines (``\\n`` or ``\\r\\n``)."""

    def __init__(self, on_line: Callable[[bytes], object]) -> None:
        self.on_line = on_line
        self._buf = b""

    def feed(self, data: bytes) -> None:
        lines = (self._buf + data).split(b"\n")
        self._buf = lines.pop()
        for line in lines:
            self.on_line(line.rstrip(b"\r"))

    def eof(self) -> None:
        """The input ended: a last line without a line end still counts."""
        if self._buf:
            line, self._buf = self._buf, b""
            self.on_line(line.rstrip(b"\r"))


class TerminalInput:
    """Keystrokes from a terminal in non-canonical mode, edited into a line.

    Enter sends the line; Backspace, Ctrl-U (clear) and Ctrl-W (delete a
    word) edit it; Ctrl-D on an empty line ends the input. Escape sequences
    (arrow keys and such) and other control characters are ignored.
    """

    def __init__(
        self,
        console: Console,
        on_line: Callable[[bytes], object],
        on_eof: Callable[[], object],
    ) -> None:
        self.console = console
        self.on_line = on_line
        self.on_eof = on_eof
        self.line = ""
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self._escape = 0  # 0: none, 1: after ESC, 2: inside a CSI/SS3 sequence

    def feed(self, data: bytes) -> None:
        for ch in self._decoder.decode(data):
            if self._escape:
                if self._escape == 1 and ch in "[O":
                    self._escape = 2
                elif self._escape == 1 or "\x40" <= ch <= "\x7e":
                    self._escape = 0
            elif ch in "\r\n":
                line, self.line = self.line, ""
                self.console.set_input("")
                if line.strip():
                    self.on_line(line.encode("utf-8"))
            elif ch in "\x7f\x08":
                self.line = self.line[:-1]
            elif ch == "\x15":
                self.line = ""
            elif ch == "\x17":
                head = self.line.rstrip(" ")
                self.line = head[: head.rfind(" ") + 1]
            elif ch == "\x04":
                if not self.line:
                    self.console.set_input("")
                    self.on_eof()
                    return
            elif ch == "\x1b":
                self._escape = 1
            elif ch == "\t":
                self.line += " "
            elif not wire.has_control(ch):
                self.line += ch
        self.console.set_input(self.line)

    def eof(self) -> None:
        """The terminal went away: drop the unfinished line."""
        self.line = ""


class ChatClientProtocol(LineReceiver):
    """The connection to the server: shows each line, answers PING.

    The server speaks first: a welcome line, or an error line and a close if
    it is full. The nick is sent only after the welcome, so a refused client
    has sent nothing (had it, the server's close could reset the connection
    and the error line be lost); ``on_welcome`` is then called.
    """

    delimiter = b"\n"
    max_line_length = 1024 * 1024

    def __init__(
        self,
        console: Console,
        nick: str,
        on_lost: Callable[[BaseException | None], object],
        on_welcome: Callable[[], object] = lambda: None,
    ) -> None:
        super().__init__()
        self.console = console
        self.nick = nick
        self.on_lost = on_lost
        self.on_welcome = on_welcome
        self.welcomed = False

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self.console.flush()

    def line_received(self, line: bytes) -> None:
        text = line.rstrip(b"\r").decode("utf-8", "replace")
        if text == wire.PING:
            self.transport.write(wire.PONG.encode() + b"\n")
            return
        self.console.show(text)
        if not self.welcomed and wire.parse(text).kind is wire.Kind.INFO:
            self.welcomed = True
            self.transport.write(f"/nick {self.nick}\n".encode())
            self.on_welcome()

    def line_length_exceeded(self, line: bytes) -> None:
        # Skip it and carry on (the default would close the connection).
        self.console.show(f"[a line of over {self.max_line_length} bytes was skipped]")

    def connection_lost(self, exc: BaseException | None) -> None:
        super().connection_lost(exc)
        self.on_lost(exc)


class ChatClient:
    """Connects, relays standard input to the server and the server to the console."""

    def __init__(
        self,
        reactor: Reactor,
        host: str,
        port: int,
        nick: str,
        console: Console,
        *,
        stdin_fd: int = 0,
        prog: str = "reactor-chat",
        quit_grace: float = QUIT_GRACE,
        ssl: SSLContext | None = None,
        server_hostname: str | None = None,
    ) -> None:
        self.reactor = reactor
        self.ssl = ssl  # TLS, when the options asked for it (apps/_tls.py)
        self.server_hostname = server_hostname
        self.host = host
        self.port = port
        self.nick = nick
        self.console = console
        self.stdin_fd = stdin_fd
        self.prog = prog
        self.quit_grace = quit_grace
        self.exit_code = 0
        self.protocol: ChatClientProtocol | None = None
        self.input: LineInput | TerminalInput
        if console.interactive:
            self.input = TerminalInput(console, self.send_line, self._input_ended)
        else:
            self.input = LineInput(self.send_line)
        self._watching = False  # stdin is registered with the reactor
        self._reading = False  # stdin is being read (by the reactor, or pumped)
        self._quitting = False
        self._quit_timer: TimerHandle | None = None

    # ------------------------------------------------------------ connecting

    def start(self) -> None:
        self.reactor.connect_tcp(
            self.host,
            self.port,
            lambda: ChatClientProtocol(self.console, self.nick, self._lost, self._start_reading),
            timeout=10.0,
            on_connect=self._connected,
            on_failure=self._failed,
            ssl=self.ssl,
            server_hostname=self.server_hostname if self.ssl is not None else None,
        )

    def _connected(self, protocol: ChatClientProtocol) -> None:
        # Standard input is read once the server has welcomed us (and our
        # /nick is sent): see ChatClientProtocol.
        self.protocol = protocol

    def _failed(self, reason: BaseException) -> None:
        self._error(f"cannot connect to {self.host}:{self.port}: {_reason(reason)}")
        self.exit_code = EXIT_ERROR
        self.reactor.stop()

    def _lost(self, exc: BaseException | None) -> None:
        self._stop_reading()
        if self._quit_timer is not None:
            self._quit_timer.cancel()
        self.console.flush()
        if exc is not None:
            self._error(f"connection lost: {_reason(exc)}")
            self.exit_code = EXIT_ERROR
        elif self.protocol is None or not self.protocol.welcomed:
            self._error("the server refused the connection")
            self.exit_code = EXIT_ERROR
        elif not self._quitting:
            self._error("the server closed the connection")
        self.reactor.stop()

    # --------------------------------------------------------------- input

    def _start_reading(self) -> None:
        self._reading = True
        try:
            self.reactor.add_reader(self.stdin_fd, self._stdin_ready)
            self._watching = True
        except (OSError, ValueError):
            # epoll cannot watch a regular file (or /dev/null), which is
            # always readable anyway: read it in turns of the loop instead.
            self.reactor.call_soon(self._stdin_pump)

    def _stop_reading(self) -> None:
        self._reading = False
        if self._watching:
            self._watching = False
            self.reactor.remove_reader(self.stdin_fd)

    def _stdin_pump(self) -> None:
        if self._reading:
            self._stdin_ready()
            if self._reading:
                self.reactor.call_soon(self._stdin_pump)

    def _stdin_ready(self) -> None:
        try:
            data = os.read(self.stdin_fd, 65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if data:
            self.input.feed(data)
        else:
            self.input.eof()
            self._input_ended()
        self.console.flush()

    def _input_ended(self) -> None:
        self._stop_reading()
        if not self._quitting:  # after a typed /quit, just wait for the server
            self.quit()

    def send_line(self, line: bytes) -> None:
        """Send one line the user typed (commands go as they are)."""
        protocol = self.protocol
        if protocol is None or protocol.transport.is_closing():
            return
        protocol.transport.write(line + b"\n")
        if line.split(b" ", 1)[0].lower() == b"/quit":
            self._stop_reading()
            self._await_close()

    # --------------------------------------------------------------- leaving

    def quit(self) -> None:
        """Leave politely: send /quit and wait for the server to close.

        A second call (a second Ctrl-C) stops at once.
        """
        protocol = self.protocol
        if self._quitting or protocol is None or protocol.transport.is_closing():
            self.reactor.stop()
            return
        self._stop_reading()
        protocol.transport.write(b"/quit\n")
        self._await_close()

    def _await_close(self) -> None:
        self._quitting = True
        if self._quit_timer is None:
            self._quit_timer = self.reactor.call_later(self.quit_grace, self._give_up)

    def _give_up(self) -> None:
        self._error(f"the server did not close the connection within {self.quit_grace:g} s")
        self.reactor.stop()

    def _error(self, message: str) -> None:
        self.console.error(f"{self.prog}: {message}")
        self.console.flush()


def _reason(exc: BaseException) -> str:
    return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__


@contextlib.contextmanager
def terminal_mode(fd: int) -> Iterator[None]:
    """Non-canonical, no-echo input on terminal ``fd`` (signals still work); restored after."""
    import termios

    saved = termios.tcgetattr(fd)
    mode = termios.tcgetattr(fd)
    mode[3] &= ~(termios.ICANON | termios.ECHO)
    mode[6][termios.VMIN] = 1
    mode[6][termios.VTIME] = 0
    termios.tcsetattr(fd, termios.TCSANOW, mode)
    try:
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def run_client(prog: str, args: argparse.Namespace) -> int:
    """Run the client until it quits; returns the exit code."""
    stdin_fd = 0
    interactive = os.isatty(stdin_fd) and sys.stdout.isatty()
    console = Console(sys.stdout.buffer, interactive=interactive)
    console.encoding = sys.stdout.encoding or "utf-8"
    context = client_tls_context(prog, args)
    with make_reactor(prog, args) as reactor:
        client = ChatClient(
            reactor,
            args.host,
            args.port,
            args.nick,
            console,
            prog=prog,
            ssl=context,
            server_hostname=args.server_name,
        )
        for sig in (signal.SIGINT, signal.SIGTERM):
            reactor.add_signal_handler(sig, client.quit)
        with terminal_mode(stdin_fd) if interactive else contextlib.nullcontext():
            if interactive:
                console.set_input("")
                console.flush()
            client.start()
            reactor.run()
            console.close()
    return client.exit_code
