"""Running out of file descriptors: an echo server under a connection flood.

The server runs in a child process whose descriptor limit is lowered to
64, so a flood of 200 connections from this process (whose limit is high)
exhausts it. The server must keep serving the connections it has, shed the
ones it cannot take (their clients see the close instead of hanging), not
spin, say so once in its log, and accept again once descriptors are free.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from reactor import Reactor

pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.skipif(
        not os.path.exists("/proc/self/stat"), reason="needs /proc to read the server's CPU time"
    ),
]

REPO_ROOT = Path(__file__).resolve().parent.parent
FD_LIMIT = 64
FLOOD = 200
EXHAUSTED = "out of file descriptors"
RECOVERED = "descriptors available again"

SERVER = """\
import logging
import resource
import signal
import sys

_soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, ({limit}, hard))
logging.basicConfig(
    level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s"
)

from apps.echo import Echo
from reactor import Reactor

backend = sys.argv[1]
if backend == "kqueue-emulated":
    from tests.kqueue_emulation import make_emulated_kqueue_poller

    reactor = Reactor(backend=make_emulated_kqueue_poller())
else:
    reactor = Reactor(backend=backend)
listener = reactor.listen_tcp(0, Echo)
reactor.add_signal_handler(signal.SIGTERM, reactor.stop)
print(listener.port, flush=True)
reactor.run()
listener.close()
reactor.close()
"""


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of ``pid`` so far, from /proc/<pid>/stat."""
    with open(f"/proc/{pid}/stat") as f:
        stat = f.read()
    # Fields after the parenthesised command name: state is field 3, so
    # utime (field 14) and stime (field 15) are at offsets 11 and 12.
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll a condition on the other process (no loop of ours to turn)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.01)


def echoes(sock: socket.socket, message: bytes) -> bool:
    """Send ``message``; True if it comes back, False if the server closed the connection."""
    try:
        sock.sendall(message)
        received = b""
        while len(received) < len(message):
            data = sock.recv(len(message) - len(received))
            if not data:
                return False
            received += data
    except (ConnectionResetError, BrokenPipeError):
        return False
    # A timeout (socket.timeout) propagates: a client left hanging is a failure.
    assert received == message
    return True


def connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=10)


@pytest.fixture
def server(tmp_path: Path, backend: str) -> Iterator[tuple[subprocess.Popen[str], int, Path]]:
    script = tmp_path / "echo_server.py"
    script.write_text(SERVER.format(limit=FD_LIMIT))
    stderr_path = tmp_path / "stderr.txt"
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    with open(stderr_path, "w") as stderr:
        child = subprocess.Popen(
            [sys.executable, str(script), backend],
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            env=env,
            cwd=tmp_path,
        )
    try:
        assert child.stdout is not None
        line = child.stdout.readline()
        if not line:
            child.wait(10)
            pytest.fail(f"the server did not start:\n{stderr_path.read_text()}")
        yield child, int(line), stderr_path
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(10)
        if child.stdout is not None:
            child.stdout.close()


def test_server_survives_descriptor_exhaustion(
    reactor: Reactor, server: tuple[subprocess.Popen[str], int, Path]
) -> None:
    del reactor  # the server under test runs in the child, on the same backend
    child, port, stderr_path = server
    keepers = [connect(port) for _ in range(3)]
    flood: list[socket.socket] = []
    try:
        for i, sock in enumerate(keepers):
            assert echoes(sock, b"keeper %d" % i)
        baseline_fds = open_fds(child.pid)
        assert baseline_fds < FD_LIMIT

        # The flood: far more connections than the server has descriptors for.
        flood = [connect(port) for _ in range(FLOOD)]
        served = [echoes(sock, b"flood") for sock in flood]
        shed = served.count(False)
        # Every flood client got an answer: echoed, or its connection closed.
        assert served.count(True) + shed == FLOOD
        assert served.count(True) <= FD_LIMIT - baseline_fds
        assert shed >= FLOOD - FD_LIMIT

        # Existing connections are still served.
        for i, sock in enumerate(keepers):
            assert echoes(sock, b"keeper %d during the flood" % i)

        # Flooded and otherwise idle, the server must not spin. (This window
        # is a measurement of CPU use over a fixed time, not synchronization.)
        before = cpu_seconds(child.pid)
        time.sleep(1.0)
        used = cpu_seconds(child.pid) - before
        assert used < 0.3, f"the server used {used:.2f} s of CPU in 1 s while idle"

        log = stderr_path.read_text()
        assert log.count(EXHAUSTED) == 1, log
        assert RECOVERED not in log

        # The flood ends: once the server has let go of those descriptors,
        # a new connection is accepted and served.
        for sock in flood:
            sock.close()
        flood = []
        wait_for(
            lambda: open_fds(child.pid) <= baseline_fds,
            timeout=20,
            what="the server to close the flood connections",
        )
        with connect(port) as fresh:
            assert echoes(fresh, b"after the flood")
        for i, sock in enumerate(keepers):
            assert echoes(sock, b"keeper %d after the flood" % i)
        assert RECOVERED in stderr_path.read_text()
    finally:
        for sock in keepers + flood:
            sock.close()

    child.send_signal(signal.SIGTERM)
    assert child.wait(20) == 0, stderr_path.read_text()
    log = stderr_path.read_text()
    assert log.count(EXHAUSTED) == 1, log
    assert "Traceback" not in log, log
