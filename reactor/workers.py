"""Prefork workers: one server on several cores, each worker a process with its own Reactor.

One reactor is one thread on one core. :func:`serve_workers` runs a small,
single-threaded supervisor (the *master*) that binds the listening sockets,
forks ``n`` worker processes, and keeps them running:

* **One ``SO_REUSEPORT`` socket per worker**, all bound by the master before
  any fork, so the kernel spreads new connections evenly over the workers'
  accept queues. (One socket shared by every worker lets whichever worker
  wakes first take the connection: shares of 17-67% were measured with 2-4
  workers.) Where the kernel does not balance ``SO_REUSEPORT`` sockets (only
  Linux is relied on to), every worker shares one socket instead.
* **Worker i keeps socket i** and builds its Reactor only after the fork: the
  master never runs a loop, a thread or a resolver pool, since ``fork()``
  copies only the calling thread and would leave their locks and descriptors
  half-copied.
* **The master keeps every socket open**, so a worker that dies or is
  replaced resets no connection waiting in its accept queue: the next worker
  for that slot accepts it.
* **A worker that dies is restarted**, at once the first time and then after
  a back-off that doubles (up to :data:`MAX_RESTART_DELAY`) while the slot
  keeps crashing, so a crash loop does not spin. A worker that **fails at
  boot** (its setup raised before it served) stops the master with exit
  status 1 instead: the next one would fail the same way.
* **SIGTERM or SIGINT** drains: the master closes its copies of the sockets
  and sends SIGTERM to every worker, which stops accepting and finishes its
  connections; the ones still running after ``drain_timeout`` are killed. A
  second signal is passed on, which the apps take as "stop at once".
* **SIGHUP** is a rolling restart: a new worker is forked for every slot, and
  each old one is told to drain once its successor serves, so no connection
  is refused or reset. (The new workers are forked from the master, so they
  run the code the master loaded: restart the master to run new code.)
* **Workers exit when the master dies**, however it dies: each watches a pipe
  whose only writer is the master, and drains when it reads end-of-file.

A worker is the ``setup(worker)`` callable: it makes a Reactor, serves on the
worker's socket with :meth:`WorkerContext.listen`, and runs the reactor. For
example::

    def setup(worker: WorkerContext) -> None:
        with Reactor() as reactor:
            worker.listen(reactor, Echo)
            reactor.run()

    sys.exit(serve_workers(4, setup, port=8007))
"""

from __future__ import annotations

import logging
import os
import select
import signal
import socket
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NoReturn

from reactor.interfaces import Address, FactoryArg
from reactor.reactor import Reactor
from reactor.sockets import check_port, check_timeout, listening_socket, set_reuse_port
from reactor.tcp import Listener

__all__ = [
    "EXIT_BOOT_FAILED",
    "MAX_RESTART_DELAY",
    "Supervisor",
    "WorkerContext",
    "WorkerEvent",
    "cpu_count",
    "serve_workers",
]

log = logging.getLogger("reactor.workers")

#: What :meth:`Supervisor.run` returns when it stopped because workers failed to start.
EXIT_BOOT_FAILED = 1
#: The longest wait, in seconds, before a worker that keeps crashing is restarted.
MAX_RESTART_DELAY = 5.0
#: The first back-off after a repeated crash; it doubles with each further one.
FIRST_RESTART_DELAY = 0.1
#: A worker that served this long before it died was not crash-looping: its
#: slot's back-off starts again from zero.
STABLE_AFTER = 10.0
#: Deaths in a row before a slot's worker ever served (killed while booting,
#: not a setup error) after which the master gives up.
MAX_BOOT_FAILURES = 5

# How a worker tells the master that its setup failed (a reserved exit status).
_WORKER_BOOT_ERROR = 3
# The signals the master handles; blocked around fork() so that none reaches
# a new worker before it has put the default handlers back.
_MASTER_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD)


def cpu_count() -> int:
    """The CPUs this process may run on: the worker count that ``workers=0`` means."""
    process_cpu_count = getattr(os, "process_cpu_count", None)  # Python 3.13+
    if process_cpu_count is not None:
        return int(process_cpu_count() or 1)
    affinity = getattr(os, "sched_getaffinity", None)
    if affinity is not None:
        return len(affinity(0)) or 1
    return os.cpu_count() or 1  # pragma: no cover - neither (Windows has no fork anyway)


def _kernel_balances() -> bool:
    """Whether the kernel spreads a port's connections over its ``SO_REUSEPORT`` sockets.

    Linux does; elsewhere (macOS, the BSDs' plain ``SO_REUSEPORT``) the
    option lets sockets share a port but one of them gets the connections.
    """
    return sys.platform.startswith("linux") and hasattr(socket, "SO_REUSEPORT")


@dataclass(frozen=True)
class WorkerEvent:
    """Something that happened to a worker, as the master saw it (see ``on_event``).

    ``kind`` is "spawned" (forked), "ready" (serving; ``backend`` names its
    Reactor's backend) or "exited" (``exit_code``: its exit status, or minus
    the signal that killed it). ``time`` is ``time.monotonic()`` in the master.
    """

    kind: str
    index: int
    pid: int
    time: float
    backend: str | None = None
    exit_code: int | None = None


class _Child:
    """The master's record of one worker process."""

    __slots__ = ("boot_timed_out", "index", "pid", "ready_at", "retiring", "seq", "started")

    def __init__(self, index: int, pid: int, seq: int, started: float) -> None:
        self.index = index
        self.pid = pid
        self.seq = seq  # spawn order: a rolling restart retires the older ones
        self.started = started
        self.ready_at: float | None = None
        self.retiring = False  # sent SIGTERM to drain (rolling restart or shutdown)
        self.boot_timed_out = False


class WorkerContext:
    """What a worker's ``setup`` gets: which worker it is and the socket it serves.

    ``index`` is the worker's slot, 0 to ``count - 1``; a restarted worker gets
    its predecessor's slot and socket. ``starts`` counts the workers this slot
    has had before this one (0 for the first).
    """

    def __init__(
        self,
        index: int,
        count: int,
        sock: socket.socket,
        starts: int,
        drain_timeout: float,
        ready_fd: int,
        master_fd: int,
    ) -> None:
        self.index = index
        self.count = count
        self.socket = sock
        """This worker's listening socket (serve it with :meth:`listen`)."""
        self.starts = starts
        self.address: Address = sock.getsockname()
        self.drain_timeout = drain_timeout
        self.ready = False
        """Whether this worker has told the master it serves."""
        self._ready_fd = ready_fd
        self._master_fd = master_fd
        self._listener: Listener | None = None
        self._draining = False

    def listen(self, reactor: Reactor, factory: FactoryArg, **options: Any) -> Listener:
        """Serve this worker's socket on ``reactor``, a protocol from ``factory`` per connection.

        ``options`` go to :meth:`Reactor.listen_socket` (``ssl=`` and its timeouts).

        Also, on ``reactor``: the worker drains when the master dies, and tells
        the master it serves once the loop runs. If nothing handles SIGTERM
        yet, a default drain does: stop accepting, stop the reactor once no
        connection is left (a second SIGTERM stops it at once). Install your
        own handler (``reactor.add_signal_handler``) to close connections your
        way; the master kills a worker still running ``drain_timeout`` seconds
        after it asked it to stop.
        """
        if self._listener is not None:
            raise RuntimeError(f"worker {self.index}: listen() was already called")
        listener = reactor.listen_socket(self.socket, factory, **options)
        self._listener = listener
        reactor.add_reader(self._master_fd, self._master_gone, reactor)
        if signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None):
            reactor.add_signal_handler(signal.SIGTERM, self._default_drain, reactor, listener)
        reactor.call_soon(self._tell_ready, reactor)
        return listener

    def _tell_ready(self, reactor: Reactor) -> None:
        message = f"{self.index} {os.getpid()} {reactor.backend}\n".encode()
        try:
            os.write(self._ready_fd, message)  # shorter than PIPE_BUF: written whole
        except OSError as exc:  # the master is gone; the master pipe says so too
            log.warning("worker %d: cannot tell the master it serves: %s", self.index, exc)
        self.ready = True

    def _master_gone(self, reactor: Reactor) -> None:
        """The master's end of the pipe closed: it died. Drain as if it had said so."""
        reactor.remove_reader(self._master_fd)
        log.warning("worker %d: the master process is gone; draining and exiting", self.index)
        reactor.call_later(self.drain_timeout, reactor.stop)  # nobody else will enforce it
        os.kill(os.getpid(), signal.SIGTERM)

    def _default_drain(self, reactor: Reactor, listener: Listener) -> None:
        if self._draining:
            reactor.stop()
            return
        self._draining = True
        listener.close()
        log.info(
            "worker %d: draining (%d connections open)",
            self.index,
            reactor.stats()["connections"],
        )
        self._stop_when_idle(reactor)

    def _stop_when_idle(self, reactor: Reactor) -> None:
        stats = reactor.stats()
        if stats["connections"] or stats["lingering"]:
            reactor.call_later(0.02, self._stop_when_idle, reactor)
        else:
            reactor.stop()


def _check_workers(workers: object) -> int:
    if isinstance(workers, bool) or not isinstance(workers, int):
        raise ValueError(f"workers must be a whole number, not {workers!r}")
    if workers < 0:
        raise ValueError(f"workers must be 0 (one per CPU) or more, not {workers}")
    return workers or cpu_count()


def _bind_sockets(
    count: int, host: str | None, port: int, backlog: int, balanced: bool
) -> list[socket.socket]:
    """``count`` ``SO_REUSEPORT`` sockets listening on one port (one socket unless ``balanced``).

    The first is bound without the option, so a port that another program
    already listens on is refused rather than silently shared; it gets the
    option once it listens, and the others join it (port 0: the port it got).
    """
    first = listening_socket(host, port, backlog, reuse_port=False)
    sockets = [first]
    try:
        if balanced:
            set_reuse_port(first)
            port = first.getsockname()[1]
            sockets += [listening_socket(host, port, backlog, True) for _ in range(count - 1)]
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets


class Supervisor:
    """The master: binds the sockets now, runs and restarts workers in :meth:`run`.

    ``workers``: how many (0: one per CPU). ``setup(worker)`` is run in each
    worker process, with a :class:`WorkerContext`; it must serve with
    ``worker.listen(reactor, factory)`` and run the reactor, and the worker
    exits when it returns. ``host``/``port``/``backlog`` as for
    ``Reactor.listen_tcp`` (read the port from :attr:`address` after
    ``port=0``). ``reuse_port``: one ``SO_REUSEPORT`` socket per worker (True),
    one socket shared by all (False), or the first where the kernel balances
    such sockets (None). ``drain_timeout``: how long the workers may take to
    finish their connections on shutdown or rolling restart before they are
    killed. ``boot_timeout``: how long a worker may take to start serving.
    ``on_event(WorkerEvent)`` is called in the master for each worker
    spawned, ready or exited.

    Binding happens here, so a taken port raises OSError before anything forks.
    """

    def __init__(
        self,
        workers: int,
        setup: Callable[[WorkerContext], object],
        *,
        host: str | None = "127.0.0.1",
        port: int = 0,
        backlog: int = 1024,
        reuse_port: bool | None = None,
        drain_timeout: float = 30.0,
        boot_timeout: float = 30.0,
        on_event: Callable[[WorkerEvent], object] | None = None,
    ) -> None:
        self.count = _check_workers(workers)
        if not callable(setup):
            raise ValueError(f"setup must be a callable taking a WorkerContext, not {setup!r}")
        check_port(port, "serve_workers()")
        self.drain_timeout = check_timeout(drain_timeout, "drain_timeout")
        self.boot_timeout = check_timeout(boot_timeout, "boot_timeout")
        balances = _kernel_balances()
        if reuse_port and not balances:  # pragma: no cover - not Linux
            raise ValueError(
                "reuse_port=True: this platform's kernel does not balance connections over "
                "SO_REUSEPORT sockets; pass reuse_port=None to share one socket"
            )
        #: Whether each worker has its own socket (the kernel balances them).
        self.balanced = balances and reuse_port is not False
        self._setup = setup
        self._on_event = on_event
        self._sockets = _bind_sockets(self.count, host, port, backlog, self.balanced)
        #: The address the workers serve (with the port the kernel chose for port 0).
        self.address: Address = self._sockets[0].getsockname()
        self._children: dict[int, _Child] = {}
        self._starts = [0] * self.count  # workers started per slot
        self._crashes = [0] * self.count  # crashes in a row per slot (the back-off)
        self._boot_failures = [0] * self.count
        self._restart_at: dict[int, float] = {}  # slot -> when to start its next worker
        self._seq = 0
        self._signals: list[int] = []
        self._stopping = False
        self._kill_at: float | None = None  # the drain's deadline
        self._exit_code = 0
        self._ran = False
        self._ready_buf = b""
        # Made by run(): the pipe workers report on, the one they watch, the wake-up pipe.
        self._ready_r = self._ready_w = -1
        self._master_r = self._master_w = -1
        self._wake_r = self._wake_w = -1

    @property
    def port(self) -> int:
        return int(self.address[1])

    def close(self) -> None:
        """Close the listening sockets (run() does this itself when it returns)."""
        for sock in self._sockets:
            sock.close()

    # ------------------------------------------------------------------ master

    def run(self) -> int:
        """Fork the workers and supervise them until a signal or a boot failure stops it.

        Returns the exit status: 0 after SIGTERM/SIGINT, :data:`EXIT_BOOT_FAILED`
        if a worker failed to start. Main thread only, and no other thread may
        be running (fork() would copy only this one).
        """
        if self._ran:
            raise RuntimeError("Supervisor.run() can be called only once")
        if threading.current_thread() is not threading.main_thread():
            raise RuntimeError("serve_workers() must run in the main thread (it handles signals)")
        others = [t.name for t in threading.enumerate() if t is not threading.current_thread()]
        if others:
            raise RuntimeError(
                f"serve_workers() must run before any thread starts (running: {', '.join(others)}):"
                " fork() copies only the calling thread, and the workers would inherit the "
                "others' locks half-held; start threads in the workers' setup instead"
            )
        self._ran = True
        self._ready_r, self._ready_w = os.pipe()
        self._master_r, self._master_w = os.pipe()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._ready_r, False)
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        previous = {sig: signal.signal(sig, self._on_signal) for sig in _MASTER_SIGNALS}
        old_wakeup = signal.set_wakeup_fd(self._wake_w, warn_on_full_buffer=False)
        try:
            log.info(
                "master %d: %d workers on %s (%s)",
                os.getpid(),
                self.count,
                self.address,
                "one SO_REUSEPORT socket each" if self.balanced else "one shared socket",
            )
            for index in range(self.count):
                self._spawn(index)
            self._loop()
        finally:
            for child in list(self._children.values()):  # only if the loop itself failed
                self._kill(child, signal.SIGKILL)
            signal.set_wakeup_fd(old_wakeup)
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            for fd in (self._ready_r, self._ready_w, self._master_r, self._master_w):
                os.close(fd)
            os.close(self._wake_r)
            os.close(self._wake_w)
            self.close()
        return self._exit_code

    def _on_signal(self, signum: int, frame: Any) -> None:
        self._signals.append(signum)  # acted on by the loop; the wake-up fd wakes it

    def _loop(self) -> None:
        watched = [self._wake_r, self._ready_r]
        while True:
            self._read_ready()  # before reaping: a worker's last report counts
            self._reap()
            self._handle_signals()
            now = time.monotonic()
            self._check_times(now)
            if self._stopping and not self._children:
                return
            timeout = self._next_time(now)
            select.select(watched, [], [], timeout)
            try:
                while os.read(self._wake_r, 512):
                    pass
            except BlockingIOError:
                pass

    def _handle_signals(self) -> None:
        while self._signals:
            sig = self._signals.pop(0)
            if sig in (signal.SIGTERM, signal.SIGINT):
                if self._stopping:
                    log.warning("master: second signal; telling the workers to stop at once")
                    for child in self._children.values():
                        self._kill(child, signal.SIGTERM)
                else:
                    log.info("master: %s; draining the workers", signal.Signals(sig).name)
                    self._stop()
            elif sig == signal.SIGHUP:
                self._roll()

    def _stop(self) -> None:
        """Drain: no more accepting here, every worker told to finish, a deadline set."""
        self._stopping = True
        self._restart_at.clear()
        self.close()  # the workers' copies close as they drain
        for child in self._children.values():
            child.retiring = True
            self._kill(child, signal.SIGTERM)
        self._kill_at = time.monotonic() + self.drain_timeout

    def _roll(self) -> None:
        """SIGHUP: a new worker for every slot; each old one retires once its successor serves."""
        if self._stopping:
            return
        log.info("master: SIGHUP; replacing every worker")
        for index in range(self.count):
            self._restart_at.pop(index, None)
            self._spawn(index)

    def _spawn(self, index: int) -> None:
        sock = self._sockets[index if self.balanced else 0]
        starts = self._starts[index]
        self._starts[index] += 1
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, _MASTER_SIGNALS)
        try:
            pid = os.fork()
            if pid == 0:  # the new worker
                self._become_worker(index, sock, starts, blocked)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        try:
            os.setpgid(pid, pid)  # as the child does: whichever runs first
        except OSError:
            pass  # it has already exec'd or exited
        self._seq += 1
        now = time.monotonic()
        self._children[pid] = _Child(index, pid, self._seq, now)
        log.info("master: worker %d started (pid %d)", index, pid)
        self._emit(WorkerEvent("spawned", index, pid, now))

    def _read_ready(self) -> None:
        while True:
            try:
                chunk = os.read(self._ready_r, 4096)
            except BlockingIOError:
                break
            if not chunk:  # pragma: no cover - the master holds a writer itself
                break
            self._ready_buf += chunk
        *lines, self._ready_buf = self._ready_buf.split(b"\n")
        for line in lines:
            try:
                _index, pid_text, backend = line.decode().split(" ", 2)
                pid = int(pid_text)
            except ValueError:  # pragma: no cover - only workers write here
                log.error("master: unreadable report from a worker: %r", line)
                continue
            child = self._children.get(pid)
            if child is not None:
                self._ready(child, backend)

    def _ready(self, child: _Child, backend: str) -> None:
        now = time.monotonic()
        child.ready_at = now
        self._boot_failures[child.index] = 0
        log.info("master: worker %d (pid %d) serves", child.index, child.pid)
        self._emit(WorkerEvent("ready", child.index, child.pid, now, backend=backend))
        for other in self._children.values():
            if other.index == child.index and other.seq < child.seq and not other.retiring:
                other.retiring = True  # its successor serves: drain it
                log.info("master: retiring worker %d (pid %d)", other.index, other.pid)
                self._kill(other, signal.SIGTERM)

    def _reap(self) -> None:
        for pid in list(self._children):
            try:
                done, status = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:  # pragma: no cover - someone else reaped it
                done, status = pid, 0
            if done:
                self._exited(self._children.pop(pid), os.waitstatus_to_exitcode(status))

    def _exited(self, child: _Child, code: int) -> None:
        now = time.monotonic()
        self._emit(WorkerEvent("exited", child.index, child.pid, now, exit_code=code))
        how = f"exit status {code}" if code >= 0 else f"signal {signal.Signals(-code).name}"
        index = child.index
        if child.retiring or self._stopping:
            log.info("master: worker %d (pid %d) stopped (%s)", index, child.pid, how)
            return
        # During a rolling restart the slot has another worker: the one being
        # replaced, or the replacement that is already starting.
        other = any(c.index == index and not c.retiring for c in self._children.values())
        if child.ready_at is None:
            self._boot_failures[index] += 1
            if child.boot_timed_out or code == _WORKER_BOOT_ERROR:
                why = (
                    f"did not serve within boot_timeout={self.boot_timeout:g} s"
                    if child.boot_timed_out
                    else "failed to start (its error is logged above)"
                )
                if other:
                    log.error(
                        "master: worker %d (pid %d) %s; the slot's running worker keeps serving",
                        index,
                        child.pid,
                        why,
                    )
                    return
                self._give_up(f"worker {index} (pid {child.pid}) {why}")
                return
        if other:
            return
        if child.ready_at is None and self._boot_failures[index] >= MAX_BOOT_FAILURES:
            self._give_up(
                f"worker {index} died before serving {MAX_BOOT_FAILURES} times in a row "
                f"(last: {how})"
            )
            return
        if child.ready_at is not None and now - child.ready_at >= STABLE_AFTER:
            self._crashes[index] = 0
        delay = restart_delay(self._crashes[index])
        self._crashes[index] += 1
        log.warning(
            "master: worker %d (pid %d) died (%s); restarting it%s",
            index,
            child.pid,
            how,
            f" in {delay:g} s" if delay else "",
        )
        self._restart_at[index] = now + delay

    def _give_up(self, why: str) -> None:
        log.error("master: %s; stopping every worker and exiting with status 1", why)
        self._exit_code = EXIT_BOOT_FAILED
        self._stop()

    def _check_times(self, now: float) -> None:
        for index, when in list(self._restart_at.items()):
            if when <= now:
                del self._restart_at[index]
                self._spawn(index)
        for child in self._children.values():
            late = child.ready_at is None and not child.retiring and not child.boot_timed_out
            if late and now - child.started >= self.boot_timeout:
                child.boot_timed_out = True
                self._kill(child, signal.SIGKILL)
        if self._kill_at is not None and now >= self._kill_at:
            self._kill_at = None
            if self._children:
                log.warning(
                    "master: %d workers still running after drain_timeout=%g s; killing them",
                    len(self._children),
                    self.drain_timeout,
                )
            for child in self._children.values():
                self._kill(child, signal.SIGKILL)

    def _next_time(self, now: float) -> float | None:
        times = list(self._restart_at.values())
        times += [
            c.started + self.boot_timeout
            for c in self._children.values()
            if c.ready_at is None and not c.retiring and not c.boot_timed_out
        ]
        if self._kill_at is not None:
            times.append(self._kill_at)
        if not times:
            return None
        return max(min(times) - now, 0.0)

    def _kill(self, child: _Child, sig: int) -> None:
        try:
            os.kill(child.pid, sig)
        except ProcessLookupError:  # pragma: no cover - exited, not yet reaped
            pass

    def _emit(self, event: WorkerEvent) -> None:
        if self._on_event is None:
            return
        try:
            self._on_event(event)
        except Exception:
            log.exception("master: error in on_event(%r)", event)

    # ------------------------------------------------------------------ worker

    def _become_worker(
        self, index: int, sock: socket.socket, starts: int, blocked: set[int | signal.Signals]
    ) -> NoReturn:
        """In the new process: shed the master's state, run ``setup``, exit. Never returns."""
        code = 1
        context: WorkerContext | None = None
        try:
            signal.set_wakeup_fd(-1)
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD):
                signal.signal(sig, signal.SIG_DFL)
            signal.signal(signal.SIGHUP, signal.SIG_IGN)  # the master's business
            try:
                # Its own process group: a terminal's Ctrl-C reaches only the
                # master, which drains the workers once rather than twice.
                os.setpgid(0, 0)
            except OSError:
                pass
            keep = {sock.fileno(), self._ready_w, self._master_r}
            for other in self._sockets:
                if other.fileno() not in keep:
                    other.close()
            for fd in (self._ready_r, self._master_w, self._wake_r, self._wake_w):
                os.close(fd)
            self._children.clear()
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
            context = WorkerContext(
                index, self.count, sock, starts, self.drain_timeout, self._ready_w, self._master_r
            )
            self._setup(context)
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
            if exc.code is not None and not isinstance(exc.code, int):
                print(exc.code, file=sys.stderr)
        except BaseException:
            log.error("worker %d (pid %d) failed:\n%s", index, os.getpid(), traceback.format_exc())
            code = 1
        finally:
            if context is None or not context.ready:
                code = _WORKER_BOOT_ERROR
            try:
                sys.stdout.flush()
                sys.stderr.flush()
                logging.shutdown()
            finally:
                os._exit(code)


def restart_delay(crashes: int) -> float:
    """Seconds before restarting a worker whose slot crashed ``crashes`` times in a row before.

    0 the first time (a one-off crash is replaced at once), then
    :data:`FIRST_RESTART_DELAY` doubling up to :data:`MAX_RESTART_DELAY`.
    """
    if crashes <= 0:
        return 0.0
    return float(min(FIRST_RESTART_DELAY * 2 ** (crashes - 1), MAX_RESTART_DELAY))


def serve_workers(
    workers: int,
    setup: Callable[[WorkerContext], object],
    *,
    host: str | None = "127.0.0.1",
    port: int = 0,
    backlog: int = 1024,
    reuse_port: bool | None = None,
    drain_timeout: float = 30.0,
    boot_timeout: float = 30.0,
    on_event: Callable[[WorkerEvent], object] | None = None,
) -> int:
    """Serve ``host:port`` from ``workers`` processes running ``setup``; returns the exit status.

    ``Supervisor(...).run()``: see :class:`Supervisor` for the arguments and
    the module docstring for how it works. Returns 0 once a SIGTERM/SIGINT
    has drained the workers, :data:`EXIT_BOOT_FAILED` if a worker could not
    start.
    """
    supervisor = Supervisor(
        workers,
        setup,
        host=host,
        port=port,
        backlog=backlog,
        reuse_port=reuse_port,
        drain_timeout=drain_timeout,
        boot_timeout=boot_timeout,
        on_event=on_event,
    )
    try:
        return supervisor.run()
    finally:
        supervisor.close()  # run() does, unless it refused to start
