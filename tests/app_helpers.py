"""What the apps' end-to-end tests share: running ``python -m apps.X`` in a subprocess.

* :class:`AppProcess`: an app running in the background; its stdout is read line
  by line as it comes (:meth:`AppProcess.expect`), its stderr kept in a file.
* :class:`ServerProcess`: a server app started with ``--port 0``; the port comes
  from the line it prints once it listens.
* :class:`AppGroup`: the apps one test starts, all killed at its end.
* :func:`exit_code`: an app's ``main()`` run in this process, to the exit argparse makes.
* :func:`run_cli`: an app run to its end, its output captured.
* :func:`exits_cleanly`, :func:`stop_cleanly`, :func:`exits_with`: the checks on
  how an app ended (the exit code, and no traceback on stderr).

Every subprocess runs from this checkout (it is put first on ``PYTHONPATH``),
with unbuffered output, so that a line printed is a line the test can read.
"""

from __future__ import annotations

import os
import re
import select
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import IO, Any, TypeVar

import pytest

__all__ = [
    "REPO",
    "AppGroup",
    "AppProcess",
    "ServerProcess",
    "Stdin",
    "app_command",
    "app_env",
    "console_script",
    "exit_code",
    "exits_cleanly",
    "exits_with",
    "port_in_use",
    "run_cli",
    "stop_cleanly",
]

#: The checkout the apps are run from.
REPO = Path(__file__).resolve().parents[1]

#: What a subprocess's stdin may be: DEVNULL, PIPE, a descriptor or an open file.
Stdin = int | IO[Any] | None

_K = TypeVar("_K", bound="_KilledOnExit")


def app_env(**extra: str) -> dict[str, str]:
    """The environment for an app: this checkout first on the path, output unbuffered."""
    env = dict(os.environ, PYTHONUNBUFFERED="1", **extra)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


def app_command(module: str, *args: str) -> list[str]:
    """The command line that runs ``python -m MODULE ARGS`` with this interpreter."""
    return [sys.executable, "-m", module, *args]


class _KilledOnExit:
    """A context manager whose ``kill()`` runs on leaving the block, however it is left."""

    def kill(self) -> None:
        raise NotImplementedError

    def __enter__(self: _K) -> _K:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.kill()


class AppProcess(_KilledOnExit):
    """``python -m MODULE ARGS`` in a subprocess; its stdout is read line by line as it comes.

    A context manager: the process is killed on leaving the block, however it is
    left (and by :meth:`kill`, which may be called any number of times).
    """

    def __init__(
        self, module: str, *args: str, stdin: Stdin = subprocess.DEVNULL, cwd: Path = REPO
    ) -> None:
        self._stderr: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115 - closed in kill()
        self.proc = subprocess.Popen(
            app_command(module, *args),
            stdin=stdin,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            env=app_env(),
            cwd=cwd,
        )
        #: Every complete line the app has printed so far (read by expect and finish).
        self.lines: list[str] = []
        self._buf = b""
        self._cursor = 0
        self._eof = False

    def _read(self, timeout: float) -> None:
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        ready, _, _ = select.select([fd], [], [], max(timeout, 0.0))
        if not ready:
            return
        chunk = os.read(fd, 65536)
        if not chunk:
            self._eof = True
            return
        self._buf += chunk
        *lines, self._buf = self._buf.split(b"\n")
        self.lines.extend(line.decode("utf-8", "replace") for line in lines)

    def expect(self, pattern: str, timeout: float = 10.0) -> re.Match[str]:
        """Wait for a line (after the last one matched) that matches ``pattern``."""
        deadline = time.monotonic() + timeout
        regex = re.compile(pattern)
        while True:
            for i in range(self._cursor, len(self.lines)):
                match = regex.search(self.lines[i])
                if match:
                    self._cursor = i + 1
                    return match
            self._cursor = len(self.lines)
            left = deadline - time.monotonic()
            if self._eof or left <= 0:
                pytest.fail(
                    f"no line matching {pattern!r} (exited: {self.proc.poll()}); "
                    f"stdout: {self.lines!r}; stderr: {self.stderr()!r}"
                )
            self._read(left)

    def send(self, text: str) -> None:
        """Write ``text`` to the app's stdin (started with ``stdin=subprocess.PIPE``)."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(text.encode())
        self.proc.stdin.flush()

    def close_stdin(self) -> None:
        """End the app's input."""
        assert self.proc.stdin is not None
        self.proc.stdin.close()

    def stderr(self) -> str:
        """All the app has written to stderr so far."""
        self._stderr.seek(0)
        return self._stderr.read().decode("utf-8", "replace")

    def finish(self, timeout: float = 10.0) -> tuple[int, str]:
        """Wait for the exit; returns (exit code, stderr), all stdout having been read."""
        deadline = time.monotonic() + timeout
        while not self._eof and time.monotonic() < deadline:
            self._read(deadline - time.monotonic())
        code = self.proc.wait(max(deadline - time.monotonic(), 0.1))
        return code, self.stderr()

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int:
        """Send ``sig`` and wait for the exit code."""
        self.proc.send_signal(sig)
        return self.proc.wait(timeout)

    def kill(self) -> None:
        """Kill the app if it still runs, and close the pipes and the stderr file."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                try:
                    stream.close()
                except OSError:  # stdin: unwritten input to a pipe nobody reads
                    pass
        self._stderr.close()


class ServerProcess(AppProcess):
    """A server app: ``python -m MODULE ARGS --port 0``, up once it says where it listens.

    The constructor waits (up to 10 seconds) for the line
    ``... listening on HOST:PORT (backend NAME)``, which it keeps in
    :attr:`listening`, and the port in :attr:`port`; it kills the server if
    that line does not come.
    """

    def __init__(self, module: str, *args: str) -> None:
        super().__init__(module, *args, "--port", "0")
        try:
            match = self.expect(r"listening on \S+:(\d+) \(backend \w+\)")
        except BaseException:
            self.kill()
            raise
        self.listening: str = match.string
        self.port = int(match.group(1))


class AppGroup(_KilledOnExit):
    """The apps one test starts; :meth:`kill` (or leaving the block) kills them all."""

    def __init__(self) -> None:
        self.started: list[AppProcess] = []

    def start(
        self, module: str, *args: str, stdin: Stdin = subprocess.DEVNULL, cwd: Path = REPO
    ) -> AppProcess:
        """Start ``python -m MODULE ARGS`` (see :class:`AppProcess`)."""
        app = AppProcess(module, *args, stdin=stdin, cwd=cwd)
        self.started.append(app)
        return app

    def server(self, module: str, *args: str) -> ServerProcess:
        """Start a server with ``--port 0``; returns once it listens (a ServerProcess)."""
        server = ServerProcess(module, *args)
        self.started.append(server)
        return server

    def kill(self) -> None:
        for app in self.started:
            app.kill()


def exits_cleanly(app: AppProcess) -> str:
    """Wait for ``app`` to exit; check it exited 0 with no traceback; returns its stderr."""
    code, err = app.finish()
    assert code == 0, err
    assert "Traceback" not in err, err
    return err


def stop_cleanly(app: AppProcess, sig: int = signal.SIGTERM) -> str:
    """Send ``sig`` (SIGTERM) to ``app``, then :func:`exits_cleanly`; returns its stderr."""
    app.proc.send_signal(sig)
    return exits_cleanly(app)


def run_cli(
    module: str,
    *args: str,
    timeout: float = 20.0,
    cwd: Path = REPO,
    stdin: Stdin = subprocess.DEVNULL,
    input_text: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m MODULE ARGS`` to its end; its stdout and stderr are captured as text.

    The input is ``input_text`` if given, else ``stdin`` (nothing, by default).
    """
    return subprocess.run(
        app_command(module, *args),
        capture_output=True,
        text=True,
        timeout=timeout,
        env=app_env(),
        cwd=cwd,
        stdin=None if input_text is not None else stdin,
        input=input_text,
        check=False,
    )


def exits_with(result: subprocess.CompletedProcess[str], code: int) -> str:
    """Check a :func:`run_cli` result exited with ``code``, with no traceback; returns stderr."""
    assert result.returncode == code, result
    assert "Traceback" not in result.stderr, result.stderr
    return result.stderr


@contextmanager
def port_in_use(kind: socket.SocketKind = socket.SOCK_STREAM) -> Iterator[int]:
    """A port on 127.0.0.1 that is taken while the block runs.

    By a listening TCP socket, or with ``socket.SOCK_DGRAM`` a bound UDP one.
    """
    if kind == socket.SOCK_STREAM:
        with socket.socket(socket.AF_INET, kind) as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            yield taken.getsockname()[1]
        return
    # A UDP port whose TCP twin is free: the app under test listens on TCP
    # first, and must fail on UDP, not on a TCP port someone else holds.
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
            udp = socket.socket(socket.AF_INET, kind)
            try:
                udp.bind(("127.0.0.1", port))
            except OSError:
                udp.close()
                continue
        with udp:
            yield port
        return
    pytest.fail("found no port free for both TCP and UDP in 100 tries")


def exit_code(main: Callable[[list[str]], object], argv: list[str]) -> int | str | None:
    """Run an app's ``main(argv)`` in this process; returns the code argparse exits with.

    For ``--help`` and bad arguments, where argparse exits (fails if it does not);
    ``main`` may also be a parser's ``parse_args``.
    """
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    return exit_.value.code


def console_script(name: str) -> str:
    """What the console script ``name`` runs, per pyproject.toml (skips without tomllib)."""
    tomllib = pytest.importorskip("tomllib")
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    return str(scripts[name])
