"""Prefork workers (reactor.workers): the supervisor, the socket it hands over, the apps' --workers.

The supervisor runs in a subprocess (``python -m tests.workers_server``, which
prints one line per worker event); the tests synchronise on those lines, on
what the served connections say (each starts with its worker's pid), and on
the end of the server's stdout, which every worker holds open until it exits.
Nothing here sleeps; every wait has a deadline.
"""

from __future__ import annotations

import os
import select
import signal
import socket
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO, Any

import pytest

from reactor import Reactor, Supervisor, WorkerContext, serve_workers
from reactor.workers import (
    FIRST_RESTART_DELAY,
    MAX_RESTART_DELAY,
    cpu_count,
    restart_delay,
)
from tests.app_helpers import AppGroup, app_command, app_env, port_in_use, run_cli
from tests.conftest import run_until
from tests.workers_server import pattern

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="prefork workers need fork()")

#: Seconds any single wait in these tests may take before the test fails.
WAIT = 10.0


# ---------------------------------------------------------------- the server under test


@dataclass
class Event:
    kind: str
    index: int
    pid: int
    time: float
    extra: str
    seen: float  # when this test read it (time.monotonic())


class Master:
    """``python -m tests.workers_server ARGS``: its events, read as they come."""

    def __init__(self, *args: str) -> None:
        self._stderr: IO[bytes] = open(os.devnull, "wb")  # noqa: SIM115 - closed in kill()
        self.proc = subprocess.Popen(
            app_command("tests.workers_server", *args),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=app_env(),
        )
        self.lines: list[str] = []
        self.events: list[Event] = []
        self.eof = False
        self._buf = b""
        first = self.wait_line(lambda line: line.startswith("listening "))
        _, port, self.mode = first.split()
        self.port = int(port)

    def _read(self, timeout: float) -> float:
        """Read what has come (waiting up to ``timeout``); returns when the last read was."""
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        ready, _, _ = select.select([fd], [], [], max(timeout, 0.0))
        now = time.monotonic()
        if not ready:
            return now
        chunk = os.read(fd, 65536)
        if not chunk:
            self.eof = True
            return now
        self._buf += chunk
        *lines, self._buf = self._buf.split(b"\n")
        for raw in lines:
            line = raw.decode("utf-8", "replace")
            self.lines.append(line)
            if line.startswith("event "):
                _, kind, index, pid, when, *extra = line.split()
                event = Event(kind, int(index), int(pid), float(when), " ".join(extra), now)
                self.events.append(event)
        return now

    def wait_line(self, match: Callable[[str], bool], timeout: float = WAIT) -> str:
        deadline = time.monotonic() + timeout
        seen = 0
        while True:
            for line in self.lines[seen:]:
                if match(line):
                    return line
            seen = len(self.lines)
            if self.eof or time.monotonic() > deadline:
                pytest.fail(f"no such line (exit {self.proc.poll()}); output: {self.lines!r}")
            self._read(deadline - time.monotonic())

    def wait_events(
        self, match: Callable[[Event], bool], count: int = 1, timeout: float = WAIT
    ) -> list[Event]:
        """Wait until ``count`` events (seen so far or to come) match; returns them."""
        deadline = time.monotonic() + timeout
        while True:
            found = [e for e in self.events if match(e)]
            if len(found) >= count:
                return found
            if self.eof or time.monotonic() > deadline:
                pytest.fail(
                    f"{len(found)} of {count} events came (exit {self.proc.poll()}); "
                    f"output: {self.lines!r}"
                )
            self._read(deadline - time.monotonic())

    def ready(self, count: int) -> dict[int, int]:
        """Wait for ``count`` workers to serve; returns their pid -> slot."""
        events = self.wait_events(lambda e: e.kind == "ready", count)
        return {e.pid: e.index for e in events}

    def wait_eof(self, timeout: float) -> float:
        """Wait for the end of the server's stdout (the master and every worker gone)."""
        deadline = time.monotonic() + timeout
        while not self.eof:
            if time.monotonic() > deadline:
                pytest.fail(f"the server's processes still run after {timeout} s: {self.lines!r}")
            last = self._read(deadline - time.monotonic())
        return last

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        # The workers drain once the master is gone; wait for them (bounded).
        if not self.eof:
            deadline = time.monotonic() + WAIT
            while not self.eof and time.monotonic() < deadline:
                self._read(deadline - time.monotonic())
        assert self.proc.stdout is not None
        self.proc.stdout.close()
        self._stderr.close()


@pytest.fixture
def start() -> Any:
    """Start ``tests.workers_server`` with the given arguments; killed after the test."""
    started: list[Master] = []

    def start_master(*args: str) -> Master:
        master = Master(*args)
        started.append(master)
        return master

    yield start_master
    for master in started:
        master.kill()


# ---------------------------------------------------------------- clients


def connect(port: int) -> tuple[socket.socket, int]:
    """A connection to the server and the pid of the worker serving it."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=WAIT)
    return sock, int(read_line(sock))


def read_line(sock: socket.socket) -> bytes:
    data = b""
    while not data.endswith(b"\n"):
        chunk = sock.recv(1)  # byte by byte: nothing after the line is taken
        if not chunk:
            raise ConnectionError(f"connection closed after {data!r}")
        data += chunk
    return data[:-1]


def draining(pid: int) -> Callable[[str], bool]:
    """Matches the log line of worker ``pid`` starting its drain."""
    return lambda line: line.startswith(f"{pid} ") and "draining" in line


def ping(sock: socket.socket) -> None:
    sock.sendall(b"ping\n")
    assert read_line(sock) == b"ping"


@dataclass
class ClientLoop:
    """Short connections, one after another in a thread: connect, learn the pid, ping, close.

    Bounded: at most ``limit`` connections and ``seconds`` of time. ``served``
    counts the successes per worker pid; ``failures`` holds (exception, pid
    of the worker that had answered, if one had).
    """

    port: int
    limit: int = 20000
    seconds: float = 30.0
    served: Counter[int] = field(default_factory=Counter)
    failures: list[tuple[BaseException, int | None]] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _changed: threading.Condition = field(default_factory=threading.Condition)

    def __enter__(self) -> ClientLoop:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        assert self._thread is not None
        self._thread.join(WAIT)

    def _run(self) -> None:
        deadline = time.monotonic() + self.seconds
        for _ in range(self.limit):
            if self.stop.is_set() or time.monotonic() > deadline:
                break
            pid: int | None = None
            try:
                sock = socket.create_connection(("127.0.0.1", self.port), timeout=WAIT)
                with sock:
                    pid = int(read_line(sock))
                    ping(sock)
            except (OSError, ValueError, AssertionError) as exc:
                with self._changed:
                    self.failures.append((exc, pid))
                    self._changed.notify_all()
                continue
            with self._changed:
                self.served[pid] += 1
                self._changed.notify_all()

    def wait_served(self, count: int, pid: int | None = None) -> None:
        """Wait until ``count`` connections were served (by worker ``pid``, if given)."""
        if pid is None:
            self.wait_for(lambda: sum(self.served.values()) >= count)
        else:
            self.wait_for(lambda: self.served[pid] >= count)

    def wait_for(self, what: Callable[[], bool], timeout: float = WAIT) -> None:
        """Wait until ``what()`` holds (checked each time a connection ends)."""
        with self._changed:
            if not self._changed.wait_for(what, timeout):
                pytest.fail(f"client loop: timed out; served {self.served}, {self.failures}")


# ---------------------------------------------------------------- in-process parts


class _Recorder:
    def __init__(self, received: list[bytes]) -> None:
        self.received = received
        self.transport: Any = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.received.append(data)
        self.transport.write(data)

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: BaseException | None) -> None:
        pass

    def pause_writing(self) -> None:
        pass

    def resume_writing(self) -> None:
        pass


@pytest.mark.timeout(30)
def test_listen_socket_serves_a_socket_bound_elsewhere(reactor: Reactor) -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    received: list[bytes] = []
    listener = reactor.listen_socket(sock, lambda: _Recorder(received))
    assert listener.address == sock.getsockname()
    assert not sock.getblocking()
    with socket.create_connection(listener.address, timeout=WAIT) as client:
        client.sendall(b"hello")
        run_until(reactor, lambda: received == [b"hello"], what="the data to arrive")
        run_until(reactor, lambda: select.select([client], [], [], 0)[0], what="the echo")
        assert client.recv(100) == b"hello"
    listener.close()
    assert sock.fileno() == -1  # the listener took it over


def test_listen_socket_refuses_what_it_cannot_serve(reactor: Reactor) -> None:
    with socket.socket() as unbound, pytest.raises(ValueError, match="not listening; call"):
        reactor.listen_socket(unbound, lambda: _Recorder([]))
    with socket.socket(type=socket.SOCK_DGRAM) as udp, pytest.raises(ValueError, match="stream"):
        reactor.listen_socket(udp, lambda: _Recorder([]))
    closed = socket.socket()
    closed.close()
    with pytest.raises(ValueError, match="closed"):
        reactor.listen_socket(closed, lambda: _Recorder([]))
    with pytest.raises(ValueError, match=r"expected a socket\.socket"):
        reactor.listen_socket(3, lambda: _Recorder([]))  # type: ignore[arg-type]
    assert reactor.stats()["listeners"] == 0


def _no_setup(worker: WorkerContext) -> None:
    raise AssertionError("never run: these supervisors are not started")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"workers": -1}, "0 .one per CPU. or more"),
        ({"workers": "2"}, "whole number"),
        ({"workers": True}, "whole number"),
        ({"setup": "not callable"}, "setup must be a callable"),
        ({"port": 70000}, "0-65535"),
        ({"drain_timeout": 0}, "drain_timeout must be positive"),
        ({"boot_timeout": float("nan")}, "boot_timeout must be positive"),
    ],
)
def test_supervisor_refuses_bad_arguments(kwargs: dict[str, Any], message: str) -> None:
    arguments: dict[str, Any] = {"workers": 2, "setup": _no_setup, **kwargs}
    with pytest.raises(ValueError, match=message):
        Supervisor(arguments.pop("workers"), arguments.pop("setup"), **arguments)


def test_supervisor_binds_one_reuseport_socket_per_worker() -> None:
    supervisor = Supervisor(3, _no_setup)
    try:
        assert supervisor.balanced
        sockets = supervisor._sockets
        assert len(sockets) == 3
        assert {s.getsockname() for s in sockets} == {supervisor.address}
        assert all(s.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT) for s in sockets)
        assert supervisor.port == supervisor.address[1] > 0
    finally:
        supervisor.close()
    shared = Supervisor(3, _no_setup, reuse_port=False)
    try:
        assert not shared.balanced
        assert len(shared._sockets) == 1
    finally:
        shared.close()


def test_supervisor_refuses_a_port_in_use() -> None:
    with port_in_use() as port, pytest.raises(OSError, match=r"cannot listen on .*another program"):
        Supervisor(2, _no_setup, port=port)


def test_zero_workers_means_one_per_cpu() -> None:
    supervisor = Supervisor(0, _no_setup)
    supervisor.close()
    assert supervisor.count == cpu_count() >= 1


def test_run_refuses_while_another_thread_runs() -> None:
    supervisor = Supervisor(1, _no_setup)
    release = threading.Event()
    thread = threading.Thread(target=release.wait, args=(WAIT,), name="a-stray-thread")
    thread.start()
    try:
        with pytest.raises(RuntimeError, match=r"before any thread starts .*a-stray-thread"):
            supervisor.run()
    finally:
        release.set()
        thread.join()
        supervisor.close()


def test_serve_workers_refuses_to_run_outside_the_main_thread() -> None:
    caught: list[BaseException] = []

    def serve() -> None:
        try:
            serve_workers(1, _no_setup)
        except RuntimeError as exc:
            caught.append(exc)

    thread = threading.Thread(target=serve)
    thread.start()
    thread.join(WAIT)
    assert len(caught) == 1 and "main thread" in str(caught[0])


@pytest.mark.timeout(30)
def test_worker_context_reports_ready_and_drains_when_the_master_goes(reactor: Reactor) -> None:
    """What a worker does on its reactor, run here without a fork: the master's
    pipes are plain pipes, and "the master dies" is closing the writing end."""
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # so listen() installs a drain
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    ready_r, ready_w = os.pipe()
    master_r, master_w = os.pipe()
    try:
        worker = WorkerContext(0, 1, sock, 0, WAIT, ready_w, master_r)
        listener = worker.listen(reactor, lambda: _Recorder([]))
        with pytest.raises(RuntimeError, match="already called"):
            worker.listen(reactor, lambda: _Recorder([]))
        run_until(reactor, lambda: worker.ready, what="the ready report")
        assert os.read(ready_r, 100) == f"0 {os.getpid()} {reactor.backend}\n".encode()
        client = socket.create_connection(listener.address, timeout=WAIT)
        run_until(reactor, lambda: reactor.stats()["connections"] == 1, what="the connection")
        os.close(master_w)  # the master is gone: the worker drains
        master_w = -1
        run_until(reactor, lambda: listener.closed, what="the drain to start")
        assert reactor.stats()["connections"] == 1  # the open connection is left to finish
        client.close()
        stuck = reactor.call_later(WAIT, reactor.stop)
        reactor.run()  # until the drain stops it, once no connection is left
        assert reactor.time() < stuck.when  # stopped by the drain, not by this timer
        assert reactor.stats()["connections"] == 0
    finally:
        for fd in (ready_r, ready_w, master_r, master_w):
            if fd >= 0:
                os.close(fd)


def test_restart_delay_backs_off_and_is_capped() -> None:
    assert restart_delay(0) == 0.0  # a one-off crash is replaced at once
    assert restart_delay(1) == FIRST_RESTART_DELAY
    assert restart_delay(2) == 2 * FIRST_RESTART_DELAY
    assert restart_delay(3) == 4 * FIRST_RESTART_DELAY
    assert restart_delay(100) == MAX_RESTART_DELAY


# ---------------------------------------------------------------- the supervisor at work


@pytest.mark.timeout(60)
def test_connections_spread_fairly_over_the_workers(start: Callable[..., Master]) -> None:
    """1,000 short connections: each of 2 workers gets within 10% of a fair share.

    The kernel picks a socket by a hash of each connection's addresses, so a
    batch's share is binomial: 500 +- 16 (one standard deviation), and 10% is
    about 3 of them. A fair kernel still misses now and then (one batch in a
    few hundred was seen at 551/449 in CI, the client ports being
    consecutive), so up to three independent batches are tried: a kernel that
    balances passes with near certainty, one that does not fails all three.
    """
    master = start("--workers", "2")
    assert master.mode == "balanced"
    pids = master.ready(2)
    batches: list[Counter[int]] = []
    for _ in range(3):
        served: Counter[int] = Counter()
        for _ in range(1000):
            sock, pid = connect(master.port)
            sock.close()
            served[pid] += 1
        assert set(served) == set(pids), (served, pids)  # every worker, and only them
        batches.append(served)
        if all(abs(count - 500) <= 50 for count in served.values()):
            return
    pytest.fail(f"no batch of 1,000 connections was within 10% of a fair share: {batches}")


@pytest.mark.timeout(90)
def test_sigkill_under_load_loses_only_that_workers_connections(
    start: Callable[..., Master],
) -> None:
    """A worker killed under load: its own connections end, nothing else fails, and a
    new worker serves its slot within a second."""
    master = start("--workers", "2")
    pids = master.ready(2)
    victim = next(pid for pid, index in pids.items() if index == 0)
    # Long-lived connections on both workers (the kernel decides who gets which).
    held: list[tuple[socket.socket, int]] = []
    for _ in range(200):
        held.append(connect(master.port))
        per_worker = Counter(pid for _, pid in held)
        if len(per_worker) == 2 and min(per_worker.values()) >= 3:
            break
    else:
        pytest.fail(f"200 connections did not reach both workers: {per_worker}")
    try:
        with ClientLoop(master.port) as loop_a, ClientLoop(master.port) as loop_b:
            loops = (loop_a, loop_b)
            for loop in loops:
                loop.wait_served(20)
            killed_at = time.monotonic()
            os.kill(victim, signal.SIGKILL)
            exited = master.wait_events(lambda e: e.kind == "exited" and e.pid == victim)
            assert exited[0].extra == str(-signal.SIGKILL)
            new = master.wait_events(lambda e: e.kind == "ready" and e.pid not in pids)[0]
            assert new.index == 0
            assert new.seen - killed_at < 1.0, "the killed worker was not replaced within 1 s"
            for loop in loops:  # the new worker takes the slot's connections
                loop.wait_served(10, new.pid)
        for loop in loops:
            for exc, pid in loop.failures:
                assert not isinstance(exc, ConnectionRefusedError), loop.failures
                assert pid in (None, victim), loop.failures  # only the killed worker's
            assert len(loop.failures) <= 1, loop.failures  # the one it had in hand, at most
        for sock, pid in held:
            if pid == victim:
                with pytest.raises((ConnectionError, AssertionError, OSError)):
                    ping(sock)
            else:
                ping(sock)  # the survivor's connections are untouched
    finally:
        for sock, _ in held:
            sock.close()


@pytest.mark.timeout(60)
def test_sighup_replaces_every_worker_while_clients_see_no_failure(
    start: Callable[..., Master],
) -> None:
    master = start("--workers", "2")
    old = master.ready(2)
    with ClientLoop(master.port) as loop:
        loop.wait_for(lambda: len(loop.served) == 2 and min(loop.served.values()) >= 10)
        os.kill(master.proc.pid, signal.SIGHUP)
        new = master.wait_events(lambda e: e.kind == "ready" and e.pid not in old, 2)
        assert sorted(e.index for e in new) == [0, 1]
        gone = master.wait_events(lambda e: e.kind == "exited" and e.pid in old, 2)
        assert [e.extra for e in gone] == ["0", "0"]  # drained, not killed
        new_pids = {e.pid for e in new}
        loop.wait_for(lambda: all(loop.served[pid] >= 10 for pid in new_pids))
    assert loop.failures == []
    assert master.proc.poll() is None


@pytest.mark.timeout(30)
def test_killing_the_master_ends_the_workers(start: Callable[..., Master]) -> None:
    master = start("--workers", "2")
    master.ready(2)
    killed_at = time.monotonic()
    master.proc.kill()
    # Every worker holds the server's stdout: its end means they have all exited.
    ended = master.wait_eof(timeout=2.0)
    assert ended - killed_at < 2.0


@pytest.mark.timeout(60)
def test_sigterm_drains_every_worker_without_losing_a_byte(start: Callable[..., Master]) -> None:
    size = 4_000_000  # far more than the socket buffers: most of it is still to send
    master = start("--workers", "2", "--drain-timeout", "10")
    master.ready(2)
    transfers: list[tuple[socket.socket, int]] = []
    try:
        for _ in range(200):
            sock, pid = connect(master.port)
            sock.sendall(b"GET %d\n" % size)
            assert sock.recv(1) == pattern(1)  # the worker is sending
            transfers.append((sock, pid))
            per_worker = Counter(pid for _, pid in transfers)
            if len(per_worker) == 2 and min(per_worker.values()) >= 2:
                break
        else:
            pytest.fail(f"200 connections did not reach both workers: {per_worker}")
        asked_at = time.monotonic()
        master.proc.send_signal(signal.SIGTERM)
        # The workers are told to drain while most of every transfer is unsent.
        master.wait_line(lambda line: "draining the workers" in line)
        for sock, _ in transfers:
            received = bytearray(pattern(1))
            while chunk := sock.recv(1 << 20):
                received += chunk
            assert len(received) == size
            assert received == pattern(size)
    finally:
        for sock, _ in transfers:
            sock.close()
    assert master.proc.wait(WAIT) == 0
    assert master.wait_eof(WAIT) - asked_at < 10.0
    assert [e.extra for e in master.events if e.kind == "exited"] == ["0", "0"]


@pytest.mark.timeout(30)
def test_a_worker_failing_at_boot_stops_the_master(start: Callable[..., Master]) -> None:
    master = start("--workers", "2", "--fail-boot")
    master.wait_eof(WAIT)
    assert master.proc.wait(WAIT) == 1
    output = "\n".join(master.lines)
    assert "configured to fail at boot" in output  # the worker's traceback
    assert "failed to start" in output and "exiting with status 1" in output
    spawned = [e for e in master.events if e.kind == "spawned"]
    assert len(spawned) <= 2  # no restart loop
    assert not any(e.kind == "ready" for e in master.events)


@pytest.mark.timeout(30)
def test_a_crashing_worker_is_restarted_with_a_growing_back_off(
    start: Callable[..., Master],
) -> None:
    master = start("--workers", "1", "--crash-after-ready")
    exits = master.wait_events(lambda e: e.kind == "exited", 5)
    master.proc.send_signal(signal.SIGTERM)
    assert master.proc.wait(WAIT) == 0
    master.wait_eof(WAIT)
    spawns = [e for e in master.events if e.kind == "spawned"]
    assert all(e.extra == "1" for e in exits)  # each crashed after it served
    for crashes, (exited, respawned) in enumerate(zip(exits[:4], spawns[1:5], strict=True)):
        waited = respawned.time - exited.time
        assert waited >= restart_delay(crashes), (crashes, waited)
        assert waited < restart_delay(crashes) + 1.0, (crashes, waited)


@pytest.mark.timeout(60)
def test_one_shared_socket_without_reuseport(start: Callable[..., Master]) -> None:
    master = start("--workers", "2", "--shared")
    assert master.mode == "shared"
    pids = master.ready(2)
    with ClientLoop(master.port) as loop:
        loop.wait_for(lambda: sum(loop.served.values()) >= 200)
        victim = next(iter(pids))
        os.kill(victim, signal.SIGKILL)
        new = master.wait_events(lambda e: e.kind == "ready" and e.pid not in pids)[0]
        count = sum(loop.served.values())
        loop.wait_for(lambda: sum(loop.served.values()) >= count + 100)
    assert set(loop.served) <= {*pids, new.pid}
    assert not any(isinstance(exc, ConnectionRefusedError) for exc, _ in loop.failures)
    assert len(loop.failures) <= 1


@pytest.mark.timeout(30)
def test_a_replacement_failing_at_boot_leaves_the_old_worker_serving(
    start: Callable[..., Master],
) -> None:
    master = start("--workers", "1", "--fail-restarts")
    (old,) = master.ready(1)
    os.kill(master.proc.pid, signal.SIGHUP)
    failed = master.wait_events(lambda e: e.kind == "exited" and e.pid != old)[0]
    assert failed.extra == "3"  # the worker's "my setup failed" status
    master.wait_line(lambda line: "the slot's running worker keeps serving" in line)
    for _ in range(5):
        sock, pid = connect(master.port)
        with sock:
            assert pid == old
            ping(sock)
    master.proc.send_signal(signal.SIGTERM)
    assert master.proc.wait(WAIT) == 0


@pytest.mark.timeout(30)
def test_a_worker_that_never_serves_stops_the_master(start: Callable[..., Master]) -> None:
    master = start("--workers", "1", "--hang-boot", "--boot-timeout", "0.5")
    master.wait_eof(WAIT)
    assert master.proc.wait(WAIT) == 1
    assert any("did not serve within boot_timeout=0.5 s" in line for line in master.lines)
    assert [e.extra for e in master.events if e.kind == "exited"] == [str(-signal.SIGKILL)]


@pytest.mark.timeout(30)
def test_workers_killed_at_boot_are_retried_then_given_up(start: Callable[..., Master]) -> None:
    master = start("--workers", "1", "--die-at-boot")
    master.wait_eof(WAIT)
    assert master.proc.wait(WAIT) == 1
    assert any("died before serving 5 times in a row" in line for line in master.lines)
    exits = [e for e in master.events if e.kind == "exited"]
    spawns = [e for e in master.events if e.kind == "spawned"]
    assert len(spawns) == len(exits) == 5
    for crashes, (exited, respawned) in enumerate(zip(exits, spawns[1:], strict=False)):
        assert respawned.time - exited.time >= restart_delay(crashes)


@pytest.mark.timeout(30)
def test_the_drain_deadline_ends_a_worker_that_does_not_finish(
    start: Callable[..., Master],
) -> None:
    master = start("--workers", "1", "--drain-timeout", "0.5")
    master.ready(1)
    sock, _pid = connect(master.port)  # idle: the worker's drain waits for it
    with sock:
        asked_at = time.monotonic()
        master.proc.send_signal(signal.SIGTERM)
        assert master.proc.wait(WAIT) == 0
        master.wait_eof(WAIT)
        assert time.monotonic() - asked_at >= 0.5
        assert [e.extra for e in master.events if e.kind == "exited"] == [str(-signal.SIGKILL)]
        assert any("still running after drain_timeout=0.5 s" in line for line in master.lines)
        with pytest.raises((ConnectionError, AssertionError)):
            ping(sock)


@pytest.mark.timeout(30)
def test_a_second_sigterm_stops_the_workers_at_once(start: Callable[..., Master]) -> None:
    master = start("--workers", "2", "--drain-timeout", "60")
    pids = master.ready(2)
    held = [connect(master.port) for _ in range(20)]
    try:
        master.proc.send_signal(signal.SIGTERM)
        for pid in pids:  # each worker started its drain (and waits for its connections)
            master.wait_line(draining(pid))
        master.proc.send_signal(signal.SIGTERM)
        assert master.proc.wait(WAIT) == 0  # well before the 60 s drain deadline
        master.wait_eof(WAIT)
        assert [e.extra for e in master.events if e.kind == "exited"] == ["0", "0"]
    finally:
        for sock, _ in held:
            sock.close()


# ---------------------------------------------------------------- the apps' --workers


@pytest.mark.timeout(60)
def test_echo_with_workers() -> None:
    with AppGroup() as apps:
        server = apps.server("apps.echo", "--workers", "2")
        assert "echo server with 2 workers listening on 127.0.0.1:" in server.listening
        for _ in range(20):
            with socket.create_connection(("127.0.0.1", server.port), timeout=WAIT) as sock:
                sock.sendall(b"hello\n")
                assert read_line(sock) == b"hello"
        server.proc.send_signal(signal.SIGTERM)
        code, err = server.finish()
        assert code == 0, err
        assert "Traceback" not in err


@pytest.mark.timeout(60)
def test_files_serve_with_workers(tmp_path: Any) -> None:
    (tmp_path / "a.txt").write_bytes(b"x" * 100_000)
    with AppGroup() as apps:
        server = apps.server("apps.files", "serve", "--root", str(tmp_path), "--workers", "0")
        assert f"with {cpu_count()} workers listening" in server.listening
        for _ in range(4):
            listed = run_cli("apps.files", "list", "127.0.0.1", str(server.port))
            assert listed.returncode == 0, listed
            assert "a.txt" in listed.stdout
        out = tmp_path / "copy.txt"
        got = run_cli("apps.files", "get", "127.0.0.1", str(server.port), "a.txt", "-o", str(out))
        assert got.returncode == 0, got
        assert out.read_bytes() == b"x" * 100_000
        server.proc.send_signal(signal.SIGTERM)
        code, err = server.finish()
        assert code == 0, err
        assert "Traceback" not in err


def test_workers_option_is_checked() -> None:
    result = run_cli("apps.echo", "--workers", "-1")
    assert result.returncode == 2 and "must be at least 0" in result.stderr
    result = run_cli("apps.echo", "--workers", "2", "--udp", "--port", "0")
    assert result.returncode == 2
    assert "--udp is served by one process" in result.stderr
