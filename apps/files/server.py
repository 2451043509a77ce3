"""The file server: serves the regular files under one directory, and nothing else.

How a download goes:

1. The name is checked and opened by :func:`open_under_root`: ``..``,
   absolute paths, symlinks that lead outside the root, directories,
   devices, pipes and sockets are refused with a message saying which.
2. The SHA-256 of the whole file comes from :class:`HashCache`: computed once,
   in a worker thread (hashing a big file would otherwise stall every other
   client), and remembered by (device, inode, size, mtime).
3. The bytes are streamed in :data:`CHUNK`-sized reads driven by the
   transport's flow control: write a chunk, and stop as soon as the transport
   calls ``pause_writing``; go on at ``resume_writing``. So a client of any
   speed costs the server a few chunks of memory, whatever the file's size.
   (``os.sendfile`` would save a copy, but the transport owns the socket and
   its buffer; the chunked path keeps the transport's state consistent.)
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import stat
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from concurrent.futures import Future
from functools import partial
from typing import Any, TypeVar

from apps.files.wire import (
    MAX_LINE,
    ProtocolError,
    Request,
    format_error,
    format_list_entry,
    format_ok,
    parse_request,
)
from protocols import IdleTimeoutMixin, LineReceiver
from reactor import Address

__all__ = [
    "CHUNK",
    "FileServerFactory",
    "FileServerProtocol",
    "FileService",
    "HashCache",
    "RefusedError",
    "Worker",
    "list_files",
    "open_under_root",
]

log = logging.getLogger("apps.files.server")

#: Bytes read from the file and written per step.
CHUNK = 256 * 1024
#: At most this much is written per loop turn for one connection, so one fast
#: client cannot hold the loop while others wait.
TURN_BUDGET = 4 * 1024 * 1024
#: Bytes read per step while hashing.
HASH_CHUNK = 1024 * 1024
#: LIST answers at most this many files.
MAX_LIST = 10_000

T = TypeVar("T")


class RefusedError(Exception):
    """A request the server will not serve; the message goes to the client."""


# --------------------------------------------------------------------- names


def open_under_root(root: str, name: str) -> tuple[int, os.stat_result]:
    """Open the regular file ``name`` under ``root`` (a resolved path) for reading.

    Returns the file descriptor and its status; raises :class:`RefusedError` with
    a message for the client otherwise. Symlinks are followed only where they
    stay inside ``root``.

    The check and the open are one operation: the name is walked a component
    at a time, each opened relative to the directory before it (``dir_fd``)
    with ``O_NOFOLLOW``, so the kernel never follows a symlink for us. A
    symlink met on the way is read (``readlink``) and its target walked the
    same way, from the directory that holds it (or from the root, for an
    absolute target that spells the root's path); a target that would leave
    the root is refused. A directory swapped for a symlink while the walk
    runs is therefore seen as a symlink, not followed out of the root.
    """
    if "\x00" in name:
        raise RefusedError("refused: the name contains a NUL character")
    if name.startswith("/"):
        raise RefusedError(
            f"refused: {name!r} is an absolute path; names are relative to the served directory"
        )
    parts = name.split("/")
    if ".." in parts:
        raise RefusedError(
            f"refused: {name!r} contains '..'; names may not leave the served directory"
        )
    try:
        root_fd = os.open(root, _DIR_FLAGS)
    except OSError as exc:
        raise RefusedError(f"cannot open the served directory: {exc.strerror}") from None
    # dirs[-1] is the directory the next component is looked up in; dirs[0] is
    # the root. Each is a descriptor opened beneath the one before it.
    dirs = [root_fd]
    try:
        return _walk_beneath(root, name, deque(_components(name)), dirs)
    finally:
        for fd in dirs:
            os.close(fd)


#: Flags for the directories of a walk (with _NOFOLLOW below the root), with
#: O_PATH where there is one, so that a directory that may be searched but not
#: listed can still be crossed.
_DIR_FLAGS = (
    os.O_RDONLY
    | getattr(os, "O_DIRECTORY", 0)
    | getattr(os, "O_PATH", 0)
    | getattr(os, "O_CLOEXEC", 0)
)
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_FILE_FLAGS = os.O_RDONLY | os.O_NONBLOCK | _NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
#: What opening with O_NOFOLLOW (and O_DIRECTORY) says when a symlink took the
#: place of what was just checked: ELOOP (Linux, macOS), EMLINK (FreeBSD), ENOTDIR.
_SWAPPED = frozenset({errno.ELOOP, errno.EMLINK, errno.ENOTDIR})
#: Symlinks expanded in one walk before it is refused as a loop (Linux's limit).
MAX_SYMLINKS = 40


def _components(path: str) -> list[str]:
    return [part for part in path.split("/") if part not in ("", ".")]


def _walk_beneath(
    root: str, name: str, todo: deque[str], dirs: list[int]
) -> tuple[int, os.stat_result]:
    """The walk of :func:`open_under_root`; the caller closes the descriptors in ``dirs``."""
    outside = RefusedError(f"refused: {name!r} leads outside the served directory")
    root_parts = _components(root)
    links = 0
    while todo:
        part = todo.popleft()
        if part == "..":  # only from a symlink's target: back to the directory before
            if len(dirs) == 1:
                raise outside
            os.close(dirs.pop())
            continue
        try:
            st = os.stat(part, dir_fd=dirs[-1], follow_symlinks=False)
        except (FileNotFoundError, NotADirectoryError):
            raise RefusedError(f"not found: {name!r}") from None
        except OSError as exc:
            raise RefusedError(f"cannot open {name!r}: {exc.strerror}") from None
        if stat.S_ISLNK(st.st_mode):
            links += 1
            if links > MAX_SYMLINKS:
                raise RefusedError(f"cannot open {name!r}: {os.strerror(errno.ELOOP)}")
            try:
                target = os.readlink(part, dir_fd=dirs[-1])
            except OSError as exc:
                raise RefusedError(f"cannot open {name!r}: {exc.strerror}") from None
            steps = _components(target)
            if target.startswith("/"):
                # Absolute: allowed only if it spells the root's own path.
                if steps[: len(root_parts)] != root_parts:
                    raise outside
                steps = steps[len(root_parts) :]
                while len(dirs) > 1:
                    os.close(dirs.pop())
            todo.extendleft(reversed(steps))
            continue
        if todo:  # a directory on the way
            if not stat.S_ISDIR(st.st_mode):
                raise RefusedError(f"not found: {name!r}")
            try:
                dirs.append(os.open(part, _DIR_FLAGS | _NOFOLLOW, dir_fd=dirs[-1]))
            except FileNotFoundError:
                raise RefusedError(f"not found: {name!r}") from None
            except OSError as exc:
                if exc.errno in _SWAPPED:
                    raise RefusedError(f"refused: {name!r} changed while being opened") from None
                raise RefusedError(f"cannot open {name!r}: {exc.strerror}") from None
            continue
        # The last component: checked before it is opened, so that a device or
        # a pipe is never opened, and checked again after.
        if stat.S_ISDIR(st.st_mode):
            raise RefusedError(f"refused: {name!r} is a directory")
        if not stat.S_ISREG(st.st_mode):
            raise RefusedError(
                f"refused: {name!r} is not a regular file (a device, pipe or socket)"
            )
        try:
            fd = os.open(part, _FILE_FLAGS, dir_fd=dirs[-1])
        except FileNotFoundError:
            raise RefusedError(f"not found: {name!r}") from None
        except OSError as exc:
            if exc.errno in _SWAPPED:
                raise RefusedError(f"refused: {name!r} changed while being opened") from None
            raise RefusedError(f"cannot open {name!r}: {exc.strerror}") from None
        st2 = os.fstat(fd)
        if not stat.S_ISREG(st2.st_mode) or (st2.st_dev, st2.st_ino) != (st.st_dev, st.st_ino):
            os.close(fd)
            raise RefusedError(f"refused: {name!r} changed while being opened")
        return fd, st2
    # Nothing left to open: the name was the root itself, or led to a directory.
    raise RefusedError(f"refused: {name!r} is a directory")


def list_files(root: str, limit: int = MAX_LIST) -> list[tuple[int, str]]:
    """``(size, name)`` of the regular files under ``root`` that GET would serve, sorted.

    Symlinked directories are not entered; symlinked files are listed if they
    stay inside the root (checked by :func:`open_under_root`). Names the
    protocol cannot carry are left out. The walk holds each directory open
    (``os.fwalk``), so a directory swapped for a symlink meanwhile is not
    followed out of the root.
    """
    found: list[tuple[int, str]] = []
    for dirpath, dirnames, filenames, dirfd in os.fwalk(root):
        dirnames.sort()
        for filename in sorted(filenames):
            name = os.path.relpath(os.path.join(dirpath, filename), root).replace(os.sep, "/")
            try:
                name.encode("utf-8")
            except UnicodeEncodeError:
                continue  # not UTF-8 on disk
            if any(ord(ch) < 32 or ord(ch) == 127 for ch in name) or len(name) > MAX_LINE - 32:
                continue
            try:
                st = os.stat(filename, dir_fd=dirfd, follow_symlinks=False)
            except OSError:
                continue
            if stat.S_ISLNK(st.st_mode):
                try:
                    fd, st = open_under_root(root, name)
                except RefusedError:
                    continue
                os.close(fd)
            if stat.S_ISREG(st.st_mode):
                found.append((st.st_size, name))
                if len(found) >= limit:
                    return sorted(found, key=lambda entry: entry[1])
    return sorted(found, key=lambda entry: entry[1])


# ------------------------------------------------------------- worker threads


_Done = Callable[[Any, BaseException | None], object]


class CancelledError(Exception):
    """The worker was closed while the job ran."""


class Worker:
    """Runs blocking jobs in the reactor's worker threads; each result comes back on the loop.

    ``submit(fn, done)`` runs ``fn()`` with ``reactor.run_in_thread``, then
    ``done(result, None)`` or ``done(None, exc)`` on the loop: the future's
    done callback hands it over with ``reactor.call_from_thread``. The
    worker owns no threads. It runs at most ``jobs`` jobs at once and keeps
    the rest waiting here, so a few long hashes cannot take every one of the
    reactor's threads. After :meth:`close`, waiting jobs are dropped, running
    ones see :attr:`closed` set (long jobs check it and stop), and no more
    results are delivered.
    """

    def __init__(self, reactor: Any, jobs: int = 2) -> None:
        self.reactor = reactor
        self.max_jobs = jobs
        self.closed = threading.Event()
        self._waiting: deque[tuple[Callable[[], Any], _Done, Callable[[], object] | None]] = deque()
        self._running: set[Future[Any]] = set()

    def submit(
        self,
        fn: Callable[[], T],
        done: Callable[[T | None, BaseException | None], object],
        cleanup: Callable[[], object] | None = None,
    ) -> None:
        """Run ``fn()`` in a worker thread; ``done(result, exc)`` runs on the loop after.

        ``cleanup()``, if given, runs instead when ``fn`` will never run (the
        worker or the reactor was closed first): for what ``fn`` would have released.
        """
        if self.closed.is_set():
            raise RuntimeError("the worker is closed")
        self._waiting.append((fn, done, cleanup))
        self._start_waiting()

    def _start_waiting(self) -> None:
        while self._waiting and len(self._running) < self.max_jobs:
            fn, done, cleanup = self._waiting.popleft()
            future = self.reactor.run_in_thread(fn)
            self._running.add(future)
            future.add_done_callback(partial(self._finished, done, cleanup))

    def _finished(
        self, done: _Done, cleanup: Callable[[], object] | None, future: Future[Any]
    ) -> None:
        """In the worker thread (or the loop's, if the job was already done)."""
        if future.cancelled() and cleanup is not None:
            cleanup()
        if self.closed.is_set():
            return
        try:
            self.reactor.call_from_thread(self._deliver, done, future)
        except RuntimeError:  # the reactor is closed: nobody is waiting
            pass

    def _deliver(self, done: _Done, future: Future[Any]) -> None:
        """On the loop: start the next job, then hand this one's outcome to ``done``."""
        self._running.discard(future)
        if self.closed.is_set():
            return
        self._start_waiting()
        if future.cancelled():
            done(None, CancelledError("the job was cancelled"))
        elif (exc := future.exception()) is not None:
            done(None, exc)
        else:
            done(future.result(), None)

    def close(self) -> None:
        """Stop: running jobs are told (``closed``), waiting ones dropped."""
        self.closed.set()
        waiting, self._waiting = self._waiting, deque()
        for _, _, cleanup in waiting:
            if cleanup is not None:
                cleanup()
        for future in list(self._running):
            future.cancel()  # only if its thread has not started it yet


_HashDone = Callable[[str | None, BaseException | None], object]


class FileChangedError(Exception):
    """The file changed while it was being hashed."""


class HashCache:
    """SHA-256 of files by (device, inode, size, mtime), computed in worker threads.

    Requests for a file being hashed wait for that one computation.
    """

    def __init__(self, worker: Worker, max_entries: int = 1024) -> None:
        self.worker = worker
        self.max_entries = max_entries
        self._done: OrderedDict[tuple[int, int, int, int], str] = OrderedDict()
        self._pending: dict[tuple[int, int, int, int], list[_HashDone]] = {}
        #: How many hashes were computed (not found in the cache).
        self.computed = 0

    @staticmethod
    def key(st: os.stat_result) -> tuple[int, int, int, int]:
        return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)

    def lookup(self, st: os.stat_result) -> str | None:
        """The cached hash of the file with status ``st``, if there is one."""
        key = self.key(st)
        digest = self._done.get(key)
        if digest is not None:
            self._done.move_to_end(key)
        return digest

    def remember(self, st: os.stat_result, digest: str) -> None:
        """Cache ``digest`` as the hash of the file with status ``st``."""
        key = self.key(st)
        self._done[key] = digest
        self._done.move_to_end(key)
        while len(self._done) > self.max_entries:
            self._done.popitem(last=False)

    def compute(self, fd: int, st: os.stat_result, done: _HashDone, name: str = "?") -> None:
        """Hash the open file ``fd`` (status ``st``) in a worker; then ``done(hex, None)``."""
        key = self.key(st)
        waiting = self._pending.get(key)
        if waiting is not None:
            waiting.append(done)
            return
        self._pending[key] = [done]
        copy = os.dup(fd)  # the worker's own descriptor: the caller may close fd meanwhile
        closed = self.worker.closed
        started = time.monotonic()

        def work() -> str:
            try:
                return _hash_fd(copy, st, closed)
            finally:
                os.close(copy)

        def finished(digest: str | None, exc: BaseException | None) -> None:
            callbacks = self._pending.pop(key, [])
            if digest is not None:
                log.info(
                    "sha256 of %r computed in %.2f s (%d bytes)",
                    name,
                    time.monotonic() - started,
                    st.st_size,
                )
                self.computed += 1
                self.remember(st, digest)
            for callback in callbacks:
                callback(digest, exc)

        self.worker.submit(work, finished, cleanup=lambda: os.close(copy))


def _hash_fd(fd: int, st: os.stat_result, cancelled: threading.Event) -> str:
    digest = hashlib.sha256()
    pos = 0
    while True:
        if cancelled.is_set():
            raise CancelledError("the server is shutting down")
        data = os.pread(fd, HASH_CHUNK, pos)
        if not data:
            break
        digest.update(data)
        pos += len(data)
    now = os.fstat(fd)
    if pos != st.st_size or (now.st_size, now.st_mtime_ns) != (st.st_size, st.st_mtime_ns):
        raise FileChangedError("the file changed while it was being hashed; try again")
    return digest.hexdigest()


# -------------------------------------------------------------------- serving


class FileService:
    """What the connections share: the root, the hash cache, the worker, the live set.

    ``idle_timeout``: a connection with no request, or no progress (nothing
    written because the client does not read), for this many seconds is
    closed. ``request_timeout``: the request line must be complete within this
    many seconds of its first byte (None: no limit), so a client that trickles
    a byte now and then cannot hold its slot.
    """

    def __init__(
        self,
        reactor: Any,
        root: str,
        *,
        idle_timeout: float = 30.0,
        request_timeout: float | None = 10.0,
    ) -> None:
        self.reactor = reactor
        self.root = os.path.realpath(root)
        self.idle_timeout = idle_timeout
        self.request_timeout = request_timeout
        self.worker = Worker(reactor)
        self.hashes = HashCache(self.worker)
        self.connections: set[FileServerProtocol] = set()
        self.shutting_down = False
        #: Counters: requests, files sent, bytes sent, refusals.
        self.requests = 0
        self.files_sent = 0
        self.bytes_sent = 0
        self.refused = 0

    def transports(self) -> list[Any]:
        return [conn.transport for conn in self.connections]

    def goodbye(self) -> None:
        """Tell the clients still waiting for an answer that the server is going away."""
        self.shutting_down = True
        self.worker.close()
        for conn in list(self.connections):
            conn.server_closing()

    def close(self) -> None:
        self.worker.close()
        for conn in list(self.connections):
            conn.release()


class FileServerProtocol(IdleTimeoutMixin, LineReceiver):
    """One connection: read the request line, answer, stream, close."""

    delimiter = b"\n"
    max_line_length = MAX_LINE

    def __init__(self, service: FileService) -> None:
        super().__init__()
        self.service = service
        self.clock = service.reactor
        self.idle_timeout = service.idle_timeout
        self.line_timeout = service.request_timeout
        #: "request", "hashing", "listing", "sending" or "done".
        self.state = "request"
        self.peer: Address = None
        self._fd = -1
        self._pos = 0
        self._end = 0
        self._paused = False
        self._pump_pending = False

    # ------------------------------------------------------------ connection

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        self.peer = transport.get_extra_info("peername")
        self.service.connections.add(self)

    def connection_lost(self, exc: BaseException | None) -> None:
        super().connection_lost(exc)
        self.service.connections.discard(self)
        if self.state == "sending" and self._pos < self._end:
            log.info("%s: connection lost after %d of %d bytes", self.peer, self._pos, self._end)
        self.release()

    def eof_received(self) -> bool:
        # The client may shut its side once its request is sent: keep answering.
        return self.state != "request"

    def release(self) -> None:
        """Close the file, if one is open."""
        self.state = "done"
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def server_closing(self) -> None:
        if self.state in ("request", "hashing", "listing"):
            self._error("the server is shutting down")

    # -------------------------------------------------------------- requests

    def line_received(self, line: bytes) -> None:
        if self.state != "request":
            return
        self.set_raw_mode()  # one request per connection: the rest is ignored
        self.service.requests += 1
        try:
            request = parse_request(line)
        except ProtocolError as exc:
            self._error(f"bad request: {exc}")
            return
        if self.service.shutting_down:
            self._error("the server is shutting down")
        elif request.command == "LIST":
            self._list()
        else:
            self._get(request)

    def data_received(self, data: bytes) -> None:
        if self.state == "request":
            super().data_received(data)  # through the idle timer: a request is progress
        # Past the request, what the client sends is ignored, and is not
        # progress: a client that sends a byte now and then but reads nothing
        # must not keep a stuck response alive. Only our writes count then.

    def raw_data_received(self, data: bytes) -> None:
        pass

    def line_timeout_exceeded(self) -> None:
        self.set_raw_mode()
        self._error(
            f"bad request: no complete request line within {self.line_timeout:g} s of its "
            "first byte; send the whole line at once"
        )

    def line_length_exceeded(self, line: bytes) -> None:
        self.set_raw_mode()
        self._error(f"bad request: the request line is longer than {MAX_LINE} bytes")

    def _error(self, message: str) -> None:
        self.service.refused += 1
        log.info("%s: %s", self.peer, message)
        self.state = "done"
        self.transport.write(format_error(message))
        self.transport.close()

    def _list(self) -> None:
        self.state = "listing"
        root = self.service.root
        self.service.worker.submit(lambda: list_files(root), self._listed)

    def _listed(self, entries: list[tuple[int, str]] | None, exc: BaseException | None) -> None:
        if self.state != "listing" or self.transport.is_closing():
            return
        if entries is None:
            self._error(f"cannot list the files: {exc}")
            return
        self.state = "done"
        out = [f"OK {len(entries)}\n".encode()]
        out.extend(format_list_entry(size, name) for size, name in entries)
        self.transport.write(b"".join(out))
        self.transport.close()

    def _get(self, request: Request) -> None:
        try:
            fd, st = open_under_root(self.service.root, request.name)
        except RefusedError as exc:
            self._error(str(exc))
            return
        self._fd = fd
        if request.offset > st.st_size:
            self._error(
                f"the offset {request.offset} is beyond the end of {request.name!r} "
                f"({st.st_size} bytes)"
            )
            self.release()
            return
        self._pos = request.offset
        self._end = st.st_size
        log.info("%s: GET %r from %d (%d bytes)", self.peer, request.name, self._pos, self._end)
        digest = self.service.hashes.lookup(st)
        if digest is not None:
            self._send(digest)
            return
        self.state = "hashing"
        self.service.hashes.compute(fd, st, self._hashed, request.name)

    def _hashed(self, digest: str | None, exc: BaseException | None) -> None:
        if self.state != "hashing" or self.transport.is_closing():
            return
        if digest is None:
            self._error(f"cannot read the file: {exc}")
            self.release()
            return
        self._send(digest)

    # --------------------------------------------------------------- sending

    def _send(self, digest: str) -> None:
        self.state = "sending"
        self.transport.write(format_ok(self._end, digest))
        self._pump()

    def _pump(self) -> None:
        """Write chunks until the transport pushes back, the turn's budget is spent, or EOF."""
        self._pump_pending = False
        transport = self.transport
        budget = TURN_BUDGET
        while not self._paused and self._pos < self._end and budget > 0:
            if self.state != "sending" or transport.is_closing():
                return
            try:
                data = os.pread(self._fd, min(CHUNK, self._end - self._pos), self._pos)
            except OSError as exc:
                log.warning("%s: reading the file failed: %s", self.peer, exc)
                transport.abort()
                return
            if not data:
                log.warning("%s: the file shrank while being sent", self.peer)
                transport.abort()
                return
            self._pos += len(data)
            budget -= len(data)
            self.service.bytes_sent += len(data)
            transport.write(data)  # may call pause_writing() before it returns
        if self.state != "sending":
            return
        if self._pos >= self._end:
            self.service.files_sent += 1
            self.release()
            transport.close()  # flushes what is buffered, then closes
        elif not self._paused and not self._pump_pending:
            self._pump_pending = True
            self.service.reactor.call_soon(self._pump)

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        if self.state == "sending" and not self._pump_pending:
            self._pump()


class FileServerFactory:
    """Builds a :class:`FileServerProtocol` per connection."""

    def __init__(self, service: FileService) -> None:
        self.service = service

    def build_protocol(self, addr: Address) -> FileServerProtocol:
        return FileServerProtocol(self.service)
