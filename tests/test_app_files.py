"""The files app: serving, downloading, resuming and refusing, end to end and in memory."""

from __future__ import annotations

import hashlib
import io
import os
import re
import signal
import socket
import stat
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from apps.files import server as server_module
from apps.files.__main__ import main as files_main
from apps.files.client import Progress, human_size
from apps.files.server import (
    CHUNK,
    FileServerProtocol,
    FileService,
    RefusedError,
    list_files,
    open_under_root,
)
from apps.files.wire import (
    ProtocolError,
    Response,
    format_error,
    format_get,
    parse_request,
    parse_response,
)
from protocols.testing import Clock, MemoryTransport
from reactor import Reactor
from tests.app_helpers import (
    REPO,
    AppGroup,
    ServerProcess,
    console_script,
    exit_code,
    exits_cleanly,
    exits_with,
    port_in_use,
    run_cli,
    stop_cleanly,
)

pytestmark = pytest.mark.timeout(90)

MIB = 1 << 20


# ----------------------------------------------------------------- helpers


@pytest.fixture
def apps() -> Iterator[AppGroup]:
    """Apps started by a test are killed at its end, however it ends."""
    with AppGroup() as group:
        yield group


def serve(apps: AppGroup, root: Path, *args: str) -> tuple[ServerProcess, int]:
    server = apps.server("apps.files", "serve", "--root", str(root), *args)
    return server, server.port


def files(*args: str, cwd: Path = REPO, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    """Run ``python -m apps.files ARGS`` to the end."""
    return run_cli("apps.files", *args, cwd=cwd, timeout=timeout)


def memory_kib(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM of a process, in KiB."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            fields[name] = int(value.split()[0])
    return fields


def make_file(path: Path, size: int) -> str:
    """Write ``size`` bytes of incompressible, non-repeating data fast; returns the SHA-256."""
    block = bytearray(os.urandom(MIB))
    digest = hashlib.sha256()
    with path.open("wb") as f:
        for i in range(size // MIB):
            block[:8] = i.to_bytes(8, "big")  # every MiB differs
            f.write(block)
            digest.update(block)
        tail = os.urandom(size % MIB)
        f.write(tail)
        digest.update(tail)
    return digest.hexdigest()


def request(port: int, line: bytes) -> bytes:
    """Send one raw request line; returns everything the server answers until it closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(line)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


# ----------------------------------------------------------------- downloads


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str]]:
    """A 256 MiB file, removed afterwards (pytest keeps old temporary directories)."""
    root = tmp_path_factory.mktemp("big")
    try:
        yield root, make_file(root / "big.bin", 256 * MIB)
    finally:
        (root / "big.bin").unlink(missing_ok=True)


def test_256_mib_download_verifies_and_keeps_server_memory_bounded(
    apps: AppGroup, big: tuple[Path, str], tmp_path: Path
) -> None:
    root, digest = big
    server, port = serve(apps, root, "--log-level", "INFO")
    before = memory_kib(server.proc.pid)
    client = apps.start(
        "apps.files", "get", "127.0.0.1", str(port), "big.bin", "-o", "copy.bin", cwd=tmp_path
    )
    # While the server hashes 256 MiB (in a worker thread), its loop still answers.
    deadline = time.monotonic() + 20
    while "GET 'big.bin' from 0" not in server.stderr():
        assert time.monotonic() < deadline and client.proc.poll() is None, server.stderr()
        time.sleep(0.01)  # polling a condition, with a deadline
    assert request(port, b"GET 0 nope\n") == b"ERR not found: 'nope'\n"
    assert "sha256 of 'big.bin' computed" not in server.stderr()
    code, err = client.finish(timeout=60)
    assert code == 0, err
    assert len(client.lines) == 1, client.lines  # not a terminal: a one-line summary, no bar
    assert re.match(
        r"saved copy\.bin: 256\.0 MiB \(268435456 bytes\), sha256 \w+\.\.\. verified",
        client.lines[0],
    )
    assert "\r" not in err
    after = memory_kib(server.proc.pid)
    growth = after["VmHWM"] - before["VmRSS"]
    assert growth < 32 * 1024, f"the server grew by {growth} KiB: {before} -> {after}"
    assert not (tmp_path / "copy.bin.part").exists()
    got = hashlib.sha256()
    with (tmp_path / "copy.bin").open("rb") as f:
        while chunk := f.read(4 * MIB):
            got.update(chunk)
    assert got.hexdigest() == digest
    (tmp_path / "copy.bin").unlink()  # 256 MiB: give the space back now
    stop_cleanly(server)


def test_interrupted_download_resumes_to_the_right_hash(apps: AppGroup, tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    size = 16 * MIB
    digest = make_file(root / "data.bin", size)
    out = tmp_path / "data.bin"
    part = tmp_path / "data.bin.part"
    server, port = serve(apps, root, "--log-level", "INFO")
    # A slow client (8 MiB/s), killed without warning once it has more than half.
    slow = apps.start(
        "apps.files", "get", "127.0.0.1", str(port), "data.bin", "--limit-rate", "8M", cwd=tmp_path
    )
    deadline = time.monotonic() + 20
    while not (part.exists() and part.stat().st_size >= size // 2):
        assert slow.proc.poll() is None, slow.stderr()
        assert time.monotonic() < deadline, "the download made no progress"
        time.sleep(0.01)  # polling a condition, with a deadline
    slow.proc.kill()
    slow.proc.wait()
    kept = part.stat().st_size
    assert size // 2 <= kept < size
    assert not out.exists()

    result = files("get", "127.0.0.1", str(port), "data.bin", "--resume", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "resumed at" in result.stdout
    assert not part.exists()
    assert hashlib.sha256(out.read_bytes()).hexdigest() == digest
    err = stop_cleanly(server)
    # Two downloads of one file, one SHA-256 computation: the second came from the cache.
    assert err.count("sha256 of 'data.bin' computed") == 1, err
    assert f"GET 'data.bin' from {kept}" in err


def test_a_download_that_does_not_verify_is_not_kept(apps: AppGroup, tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (root / "f.txt").write_bytes(b"the real content\n")
    (tmp_path / "f.txt.part").write_bytes(b"THE")  # not a prefix of it
    _server, port = serve(apps, root)
    result = files("get", "127.0.0.1", str(port), "f.txt", "--resume", cwd=tmp_path)
    assert result.returncode == 1
    assert "SHA-256 mismatch" in result.stderr
    assert not (tmp_path / "f.txt").exists()
    assert not (tmp_path / "f.txt.part").exists()
    result = files("get", "127.0.0.1", str(port), "f.txt", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "f.txt").read_bytes() == b"the real content\n"


def test_refusals_are_clear(apps: AppGroup, tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "ok.txt").write_text("fine\n")
    (tmp_path / "secret.txt").write_text("outside\n")
    (root / "out").symlink_to(tmp_path / "secret.txt")
    (root / "in").symlink_to(root / "sub" / "ok.txt")
    (root / "updir").symlink_to(tmp_path)
    (root / "zero").symlink_to("/dev/zero")
    os.mkfifo(root / "fifo")
    try:
        os.mknod(root / "null", stat.S_IFCHR | 0o600, os.makedev(1, 3))
        device = "null"
    except OSError:  # no privilege to make device nodes here: the pipe stands in
        device = "fifo"
    server, port = serve(apps, root)
    cases = {
        b"GET 0 ../secret.txt\n": "refused: '../secret.txt' contains '..'",
        b"GET 0 sub/../../secret.txt\n": "contains '..'",
        b"GET 0 " + str(tmp_path / "secret.txt").encode() + b"\n": "is an absolute path",
        b"GET 0 /dev/zero\n": "refused: '/dev/zero' is an absolute path",
        b"GET 0 out\n": "refused: 'out' leads outside the served directory",
        b"GET 0 updir/secret.txt\n": "leads outside the served directory",
        b"GET 0 zero\n": "refused: 'zero' leads outside the served directory",
        b"GET 0 sub\n": "refused: 'sub' is a directory",
        b"GET 0 .\n": "refused: '.' is a directory",
        b"GET 0 fifo\n": "refused: 'fifo' is not a regular file",
        f"GET 0 {device}\n".encode(): f"refused: '{device}' is not a regular file",
        b"GET 0 nope\n": "not found: 'nope'",
        b"GET 0 sub/ok.txt/x\n": "not found",
        b"GET 99 sub/ok.txt\n": "the offset 99 is beyond the end of 'sub/ok.txt' (5 bytes)",
        b"GET -1 sub/ok.txt\n": "bad request: the offset is not a decimal number",
        b"PUT 0 x\n": "bad request: unknown request 'PUT'",
        b"GET 0 \xff\n": "bad request: the line is not UTF-8",
        b"GET 0 " + b"a" * 5000 + b"\n": "bad request: the request line is longer than 4096",
    }
    for line, message in cases.items():
        answer = request(port, line)
        assert answer.startswith(b"ERR ") and answer.endswith(b"\n"), answer[:200]
        assert answer.count(b"\n") == 1
        assert message in answer.decode(), (line[:40], answer)
    # What is inside the root is served, through a symlink too.
    assert request(port, b"GET 0 in\r\n").endswith(b"\nfine\n")
    assert request(port, b"GET 2 ./sub//ok.txt\n").endswith(b"\nne\n")
    # The command-line client says why, exits 1 and leaves no file behind.
    result = files("get", "127.0.0.1", str(port), "out", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr == (
        "reactor-files: server: refused: 'out' leads outside the served directory\n"
    )
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.part").exists()
    stop_cleanly(server)


def test_list(apps: AppGroup, tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "a" / "b").mkdir(parents=True)
    (root / "one.txt").write_bytes(b"1")
    (root / "a" / "b" / "two words.bin").write_bytes(b"22")
    (root / "a" / "link").symlink_to(root / "one.txt")
    (root / "escape").symlink_to("/etc/hostname")
    os.mkfifo(root / "fifo")
    server, port = serve(apps, root)
    result = files("list", "127.0.0.1", str(port))
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "             2  a/b/two words.bin",
        "             1  a/link",
        "             1  one.txt",
        "3 files, 4 B",
    ]
    stop_cleanly(server)


def test_sigterm_tells_waiting_clients_and_exits_0(apps: AppGroup, tmp_path: Path) -> None:
    (tmp_path / "x").write_bytes(b"x")
    server, port = serve(apps, tmp_path)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as waiting:
        # A full request on a second connection: once it is answered, the
        # first connection (accepted before it) is known to the server.
        assert request(port, b"LIST\n").startswith(b"OK 1\n")
        server.proc.send_signal(signal.SIGTERM)
        answer = b""
        while chunk := waiting.recv(1024):
            answer += chunk
        assert answer == b"ERR the server is shutting down\n"
    exits_cleanly(server)


# ----------------------------------------------------------------- slots held by bad clients


TOO_MANY = b"ERR too many connections; try again later\n"


def served_soon(port: int, line: bytes) -> bytes:
    """Send ``line``; a refusal for too many connections is tried again, a few times.

    For just after the server has let connections go: the slots are given back
    as the connections end, which may be a loop turn after the client sees them end.
    """
    for _ in range(100):
        answer = request(port, line)
        if answer != TOO_MANY:
            return answer
    pytest.fail("still refused: the server did not give the slots back")


def wait_for_log(server: ServerProcess, text: str, count: int, timeout: float = 15.0) -> str:
    """Wait until the server's stderr has ``count`` lines containing ``text``; returns it."""
    deadline = time.monotonic() + timeout
    while (err := server.stderr()).count(text) < count:
        assert time.monotonic() < deadline, f"not {count} times {text!r} in time: {err}"
        assert server.proc.poll() is None, err
        time.sleep(0.01)  # polling the server's output, with a deadline
    return err


def test_clients_that_stop_reading_cannot_hold_every_slot(apps: AppGroup, tmp_path: Path) -> None:
    """Five clients ask for a big file and never read; a sixth is served once they time out."""
    (tmp_path / "big.bin").write_bytes(b"\0" * (32 * MIB))
    (tmp_path / "small.txt").write_bytes(b"small\n")
    server, port = serve(
        apps,
        tmp_path,
        "--max-connections", "5",
        "--idle-timeout", "1",
        "--close-timeout", "1",
        "--log-level", "INFO",
    )  # fmt: skip
    stuck: list[socket.socket] = []
    try:
        started = time.monotonic()
        for _ in range(5):
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a small window
            sock.settimeout(10)
            sock.connect(("127.0.0.1", port))
            sock.sendall(b"GET 0 big.bin\n")
            stuck.append(sock)
        assert request(port, b"GET 0 small.txt\n") == TOO_MANY  # the five hold every slot
        # Idle (no progress) for 1 s, then closed; not drained 1 s later, aborted.
        wait_for_log(server, "connection lost after", 5)
        answer = served_soon(port, b"GET 0 small.txt\n")
        waited = time.monotonic() - started
        assert answer.startswith(b"OK 6 ") and answer.endswith(b"\nsmall\n"), answer
        assert waited < 10, f"served only after {waited:.1f} s"
        # The stuck downloads were cut short, not completed.
        for sock in stuck:
            got = 0
            try:
                while chunk := sock.recv(1 << 20):
                    got += len(chunk)
            except ConnectionResetError:
                pass
            assert 0 < got < 32 * MIB
    finally:
        for sock in stuck:
            sock.close()
    stop_cleanly(server)


def test_slow_request_lines_cannot_hold_every_slot(apps: AppGroup, tmp_path: Path) -> None:
    """Ten clients send part of a request line and never finish it ("slowloris").

    A slowloris trickles a byte now and then, which keeps an idle timeout from
    firing; a long --idle-timeout stands in for that here. The request
    timeout is what frees the slots.
    """
    (tmp_path / "small.txt").write_bytes(b"small\n")
    server, port = serve(
        apps,
        tmp_path,
        "--max-connections", "5",
        "--idle-timeout", "60",
        "--request-timeout", "1",
    )  # fmt: skip
    slow: list[socket.socket] = []
    answers = []
    try:
        started = time.monotonic()
        for _ in range(10):
            sock = socket.create_connection(("127.0.0.1", port), timeout=10)
            sock.sendall(b"GET 0 sma")  # and no more
            slow.append(sock)
        assert request(port, b"GET 0 small.txt\n") == TOO_MANY  # five of them hold every slot
        for sock in slow:  # each is answered: five refused at once, five after 1 s
            data = b""
            while chunk := sock.recv(1024):
                data += chunk
            answers.append(data)
        answer = served_soon(port, b"GET 0 small.txt\n")
        waited = time.monotonic() - started
        assert answer.endswith(b"\nsmall\n"), answer
        assert waited < 10, f"served only after {waited:.1f} s"
    finally:
        for sock in slow:
            sock.close()
    timed_out = (
        b"ERR bad request: no complete request line within 1 s of its first byte; "
        b"send the whole line at once\n"
    )
    assert sorted(answers) == sorted([timed_out] * 5 + [TOO_MANY] * 5), answers
    stop_cleanly(server)


# ----------------------------------------------------------------- errors


def test_port_in_use_is_a_clear_error(tmp_path: Path) -> None:
    with port_in_use() as port:
        result = files("serve", "--root", str(tmp_path), "--port", str(port))
    assert exits_with(result, 1).startswith("reactor-files: cannot listen on 127.0.0.1:")


def test_bad_arguments_exit_2(tmp_path: Path) -> None:
    result = files("serve", "--root", str(tmp_path / "missing"))
    assert "is not a directory" in exits_with(result, 2)


@pytest.mark.parametrize(
    "args",
    [
        ["get", "127.0.0.1", "9"],
        ["get", "127.0.0.1", "port", "x"],
        ["get", "127.0.0.1", "9", "x", "--limit-rate", "fast"],
        ["serve", "--port", "-1"],
        ["serve", "--max-connections", "0"],
        ["list"],
        ["get", "127.0.0.1", "9", ".."],
        ["get", "127.0.0.1", "9", "bad\nname", "-o", "x"],
    ],
)
def test_more_bad_arguments_exit_2(
    args: list[str], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert exit_code(files_main, args) == 2
    assert "reactor-files" in capsys.readouterr().err


def test_help_explains_every_option(capsys: pytest.CaptureFixture[str]) -> None:
    for command, options in (
        (
            "serve",
            (
                "--root",
                "--host",
                "--port",
                "--backend",
                "--log-level",
                "--idle-timeout",
                "--request-timeout",
                "--close-timeout",
            ),
        ),
        ("get", ("HOST", "PORT", "NAME", "--output", "--resume", "--limit-rate", "--timeout")),
        ("list", ("HOST", "PORT", "--backend")),
    ):
        assert exit_code(files_main, [command, "--help"]) == 0
        out = capsys.readouterr().out
        for option in options:
            assert option in out, (command, option)
    assert console_script("reactor-files") == "apps.files.__main__:main"


# ----------------------------------------------------------------- in memory


def test_wire_format() -> None:
    assert format_get("a b/c.txt", 5) == b"GET 5 a b/c.txt\n"
    assert parse_request(b"GET 5 a b/c.txt\r").name == "a b/c.txt"
    assert parse_request(b"LIST").command == "LIST"
    assert parse_response(b"OK 3 " + b"a" * 64) == Response(True, size=3, sha256="a" * 64)
    assert parse_response(b"OK 7") == Response(True, count=7)
    assert parse_response(b"ERR no such thing") == Response(False, message="no such thing")
    assert format_error("two\nlines") == b"ERR two lines\n"
    for bad in (b"GET 01 x", b"GET 1", b"GET 1 a\x00b", b"LIST x"):
        with pytest.raises(ProtocolError):
            parse_request(bad)
    for bad in (b"OK", b"OK 1 xyz", b"OK -1 " + b"a" * 64, b"HELLO"):
        with pytest.raises(ProtocolError):
            parse_response(bad)


def test_open_under_root(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (root / "f").write_bytes(b"data")
    (root / "loop").symlink_to("loop")
    fd, st = open_under_root(str(root), "f")
    try:
        assert st.st_size == 4 and os.read(fd, 10) == b"data"
    finally:
        os.close(fd)
    for name, message in (
        ("a\x00b", "NUL"),
        ("/f", "absolute"),
        ("..", "'..'"),
        ("", "is a directory"),
        ("loop", "cannot open 'loop'"),  # a symlink loop: ELOOP
    ):
        with pytest.raises(RefusedError, match=message):
            open_under_root(str(root), name)
    assert list_files(str(root)) == [(4, "f")]


# ----------------------------------------------------------------- symlink races


def _swap_fixture(tmp_path: Path) -> tuple[Path, Path, Callable[[], None]]:
    """A root whose ``d/f.txt`` says ``inside``, and a way to swap ``d`` for a symlink.

    The symlink points at a directory outside the root whose ``f.txt`` says
    ``SECRET``; the swap replaces the directory with it, as a client that can
    write in the served directory could.
    """
    root = tmp_path / "root"
    (root / "d").mkdir(parents=True)
    (root / "d" / "f.txt").write_bytes(b"inside")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "f.txt").write_bytes(b"SECRET")

    def swap() -> None:
        (root / "d").rename(tmp_path / "held")
        (root / "d").symlink_to(outside)

    return root, outside, swap


class _SwapAtCall:
    """Stands in for ``os`` in the server module: runs ``swap()`` just before the n-th look-up.

    A look-up is a call of ``os.open``, ``os.stat`` or ``os.lstat``, the calls
    a check-then-open makes between checking a path and opening it.
    """

    def __init__(self, at: int, swap: Callable[[], None]) -> None:
        self.at = at
        self.swap = swap
        self.calls = 0

    def __getattr__(self, name: str) -> Any:
        real = getattr(os, name)
        if name not in ("open", "stat", "lstat"):
            return real

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls += 1
            if self.calls == self.at:
                self.swap()
            return real(*args, **kwargs)

        return counted


@pytest.mark.parametrize("at", range(1, 7))
def test_a_directory_swapped_for_a_symlink_during_the_open_never_leaks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, at: int
) -> None:
    """Whichever step of the open the swap comes before, the outside file is not opened."""
    root, _outside, swap = _swap_fixture(tmp_path)
    proxy = _SwapAtCall(at, swap)
    monkeypatch.setattr(server_module, "os", proxy)
    try:
        fd, _st = open_under_root(str(root), "d/f.txt")
    except RefusedError as exc:
        assert "leads outside the served directory" in str(exc) or "changed" in str(exc)
        return
    finally:
        monkeypatch.undo()
    try:
        content = os.read(fd, 100)
    finally:
        os.close(fd)
    assert content == b"inside", f"read {content!r} from outside the root (swap at look-up {at})"


def test_symlinks_are_followed_only_inside_the_root(tmp_path: Path) -> None:
    root, outside, _swap = _swap_fixture(tmp_path)
    (root / "sub").mkdir()
    (root / "top.txt").write_bytes(b"top")
    (root / "sub" / "up").symlink_to("../top.txt")  # relative, stays inside
    (root / "sub" / "abs").symlink_to(root / "d" / "f.txt")  # absolute, inside
    (root / "sub" / "dirlink").symlink_to("../d")  # a directory on the way
    (root / "sub" / "escape").symlink_to("../../outside/f.txt")
    (root / "sub" / "parent").symlink_to("..")
    (root / "out").symlink_to(outside)
    for name, content in (
        ("sub/up", b"top"),
        ("sub/abs", b"inside"),
        ("sub/dirlink/f.txt", b"inside"),
        ("sub/parent/top.txt", b"top"),
    ):
        fd, _st = open_under_root(str(root), name)
        try:
            assert os.read(fd, 100) == content, name
        finally:
            os.close(fd)
    for name, message in (
        ("out/f.txt", "refused: 'out/f.txt' leads outside the served directory"),
        ("sub/escape", "leads outside"),
        ("sub/parent/out/f.txt", "leads outside"),
        ("sub/parent/sub/parent", "is a directory"),
        ("sub/up/x", "not found"),
    ):
        with pytest.raises(RefusedError, match=re.escape(message)):
            open_under_root(str(root), name)


def test_swapping_race_never_serves_outside_content(tmp_path: Path) -> None:
    """A thread swaps ``d`` between a directory and a symlink to outside while we open."""
    root, _outside, swap = _swap_fixture(tmp_path)
    held = tmp_path / "held"
    stop = threading.Event()
    swaps = 0

    def swapper() -> None:
        nonlocal swaps
        while not stop.is_set() and swaps < 100_000:
            swap()
            (root / "d").unlink()
            held.rename(root / "d")
            swaps += 1

    thread = threading.Thread(target=swapper, daemon=True)
    thread.start()
    served = refused = 0
    deadline = time.monotonic() + 2.0
    try:
        for _ in range(50_000):
            if time.monotonic() > deadline:
                break
            try:
                fd, _st = open_under_root(str(root), "d/f.txt")
            except RefusedError:
                refused += 1
                continue
            try:
                content = os.read(fd, 100)
            finally:
                os.close(fd)
            assert content == b"inside", "a file outside the root was served"
            served += 1
    finally:
        stop.set()
        thread.join(10)
    assert not thread.is_alive()
    assert served and refused and swaps, (served, refused, swaps)


def test_a_client_that_sends_but_does_not_read_is_still_idle(tmp_path: Path) -> None:
    """Past the request, what a client sends is not progress: only the server's writes are."""
    data = os.urandom(4 * MIB)
    (tmp_path / "f").write_bytes(data)
    clock = Clock()
    service = FileService(clock, str(tmp_path), idle_timeout=5.0, request_timeout=None)
    fd, st = open_under_root(service.root, "f")
    os.close(fd)
    service.hashes.remember(st, hashlib.sha256(data).hexdigest())
    transport = MemoryTransport(stalled=True, peername=("127.0.0.1", 1), clock=clock)
    transport.connect(FileServerProtocol(service))
    transport.feed(b"GET 0 f\n")
    clock.advance(0)  # the pump's next turn, if any: it stops at the high-water mark
    assert transport.get_write_buffer_size() > 0 and not transport.is_closing()
    for _ in range(10):  # a byte a second, and nothing read
        clock.advance(1)
        if transport.is_closing():
            break
        transport.feed(b"x")
    assert transport.is_closing(), "the chatter kept a stuck download alive"
    assert clock.time() == 5  # idle since the last write, at 0


def test_a_request_line_sent_a_byte_at_a_time_is_cut_off(tmp_path: Path) -> None:
    clock = Clock()
    service = FileService(clock, str(tmp_path), idle_timeout=30.0, request_timeout=3.0)
    transport = MemoryTransport(peername=("127.0.0.1", 1), clock=clock)
    transport.connect(FileServerProtocol(service))
    for byte in b"GET 0 f":  # one byte a second: the idle timer never fires
        transport.feed(bytes([byte]))
        clock.advance(1)
        if transport.closed:
            break
    assert transport.closed
    assert clock.time() == 3
    assert transport.value() == (
        b"ERR bad request: no complete request line within 3 s of its first byte; "
        b"send the whole line at once\n"
    )
    assert service.refused == 1


def test_server_streams_no_faster_than_the_client_reads(tmp_path: Path) -> None:
    """With a peer that does not read, the server holds a chunk or two, not the file."""
    data = os.urandom(4 * MIB + 123)
    (tmp_path / "f").write_bytes(data)
    with Reactor() as reactor:
        service = FileService(reactor, str(tmp_path))
        fd, st = open_under_root(service.root, "f")
        os.close(fd)
        digest = hashlib.sha256(data).hexdigest()
        service.hashes.remember(st, digest)  # known: no worker thread needed
        transport = MemoryTransport(stalled=True, peername=("127.0.0.1", 1))
        transport.connect(FileServerProtocol(service))
        transport.feed(b"GET 0 f\n")
        got = bytearray()
        rounds = 0
        while not transport.lost:
            assert transport.get_write_buffer_size() <= 2 * CHUNK
            got += transport.drain(100_000)
            reactor.run_once(0)  # the pump's call_soon, if it used up a turn's budget
            rounds += 1
            assert rounds < 10_000
        header, _, body = bytes(got).partition(b"\n")
        assert header == f"OK {len(data)} {digest}".encode()
        assert body == data
        assert service.files_sent == 1


def test_progress_bar() -> None:
    clock = Clock()
    stream = io.StringIO()
    progress = Progress(clock, stream)
    progress.start(0, 100 * MIB)
    clock.advance(2)
    progress.update(50 * MIB)
    assert "50.0%" in progress.line()
    assert "25.0 MiB/s" in progress.line() and "ETA 0:02" in progress.line()
    progress.finish()
    assert stream.getvalue().endswith("\n") and "\r[" in stream.getvalue()
    silent = Progress(clock, None)
    silent.start(0, 10)
    silent.finish()
    assert human_size(1536) == "1.5 KiB" and human_size(5) == "5 B"


def test_nobody_listening_is_a_clear_error(tmp_path: Path) -> None:
    result = files("get", "127.0.0.1", "1", "x", cwd=tmp_path)
    assert exits_with(result, 1).startswith("reactor-files: cannot connect to 127.0.0.1:1")
