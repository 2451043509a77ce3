"""Unix-domain stream sockets: the same transport and hooks as TCP, over a path.

A server that dies leaves its socket file behind, and ``bind()`` then fails
with EADDRINUSE although nobody listens. So before binding we try to connect
to an existing file: if that is refused the file is stale and is replaced;
if it succeeds a live server owns the path and we refuse with a clear error.
The listener removes its file when it closes, but only if the file is still
the one it made (another server may have replaced it meanwhile).
"""

from __future__ import annotations

import errno
import os
import socket
import stat
from collections.abc import Callable
from typing import Any

from reactor.factory import check_factory
from reactor.interfaces import Cancellable, FactoryArg, ReactorPort
from reactor.stream import StreamTransport
from reactor.tcp import Connector, Listener, TransportMaker

__all__ = ["UnixConnector", "UnixListener", "connect_unix", "listen_unix"]


class UnixListener(Listener):
    """A listener on a Unix socket path; removes the file when closed."""

    def __init__(
        self,
        reactor: ReactorPort,
        sock: socket.socket,
        factory: FactoryArg,
        path: str,
        make_transport: TransportMaker = StreamTransport,
    ) -> None:
        self.path = path
        self._inode: tuple[int, int] | None = None
        if not path.startswith("\0"):  # abstract names (Linux) have no file
            st = os.stat(path)
            self._inode = (st.st_dev, st.st_ino)
        super().__init__(reactor, sock, factory, make_transport)

    @property
    def port(self) -> int:
        raise AttributeError("a Unix socket listener has no port; use .path")

    def close(self) -> None:
        if self.closed:
            return
        super().close()
        if self._inode is not None:
            try:
                st = os.stat(self.path)
                if (st.st_dev, st.st_ino) == self._inode:
                    os.unlink(self.path)
            except OSError:
                pass


def _clear_stale(path: str) -> None:
    """Remove a socket file nobody listens on; refuse a live or non-socket path."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise FileExistsError(
            errno.EEXIST, f"cannot listen on {path!r}: it exists and is not a socket; remove it"
        )
    # A non-blocking probe: listen_unix() must not block the loop, and a live
    # server with a full backlog answers EAGAIN at once instead of making a
    # blocking connect wait.
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.setblocking(False)
        err = probe.connect_ex(path)
    finally:
        probe.close()
    if err in (errno.ECONNREFUSED, errno.ENOENT):
        try:
            os.unlink(path)  # stale: its server is gone
        except FileNotFoundError:
            pass
        return
    if err in (0, errno.EAGAIN, errno.EINPROGRESS, errno.EINTR):
        raise OSError(
            errno.EADDRINUSE,
            f"cannot listen on {path!r}: a running server is listening there; stop it or "
            "pick another path",
        )
    if err == errno.EPROTOTYPE:
        raise OSError(
            errno.EADDRINUSE,
            f"cannot listen on {path!r}: a live socket of another type (not a stream "
            "server) is bound there; stop its program or pick another path",
        )
    raise OSError(
        err,
        f"cannot listen on {path!r}: cannot tell whether a server owns the socket file "
        f"there ({os.strerror(err)}); remove it if it is stale",
    )


def listen_unix(
    reactor: ReactorPort,
    path: str,
    factory: FactoryArg,
    backlog: int = 1024,
    make_transport: TransportMaker = StreamTransport,
) -> UnixListener:
    """Listen on the Unix socket ``path`` (a leading NUL: Linux's abstract namespace)."""
    check_factory(factory, "listen_unix")
    if not path.startswith("\0"):
        _clear_stale(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(path)
        sock.listen(backlog)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        if exc.errno is None:  # "AF_UNIX path too long" has no errno
            raise OSError(f"cannot listen on {path!r}: {exc}") from None
        raise OSError(exc.errno, f"cannot listen on {path!r}: {exc.strerror}") from None
    try:
        return UnixListener(reactor, sock, factory, path, make_transport)
    except BaseException:
        sock.close()
        raise


#: Delays between connect attempts while a server's backlog is full.
_BACKLOG_RETRY_FIRST = 0.005
_BACKLOG_RETRY_MAX = 0.1


class UnixConnector(Connector):
    """A connection attempt to a Unix socket path."""

    _retry: Cancellable | None = None
    _retry_delay = _BACKLOG_RETRY_FIRST

    def _start(self) -> None:
        self._addrs = [(socket.AF_UNIX, self.host)]
        self._try_next()

    def _try_next(self) -> None:
        self.state = "connecting"
        self._retry = None
        if not self._addrs:
            # _connect_ready() found that the attempt failed (SO_ERROR).
            last = self._last_error
            err = last.errno if isinstance(last, OSError) and last.errno else errno.ECONNABORTED
            self._fail(_unix_connect_error(err, self.host))
            return
        try:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        except OSError as exc:  # EMFILE: out of descriptors
            self._fail(exc)
            return
        sock.setblocking(False)
        err = sock.connect_ex(self.host)
        if err in (0, errno.EINPROGRESS, errno.EINTR):
            self._addrs = []
            self._watch_connect(sock)
            return
        sock.close()
        if err == errno.EAGAIN:
            # Linux: the server's backlog is full. A blocking connect would wait
            # for room, so wait too (the connector's timeout still applies);
            # this socket never becomes connected, so it is not watched.
            self._retry = self._reactor.call_later(self._retry_delay, self._try_next)
            self._retry_delay = min(self._retry_delay * 2, _BACKLOG_RETRY_MAX)
            return
        self._fail(_unix_connect_error(err, self.host))

    def _fail(self, reason: BaseException) -> None:
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None
        super()._fail(reason)

    def __repr__(self) -> str:
        return f"<UnixConnector {self.host!r} {self.state}>"


def _unix_connect_error(err: int, path: str) -> OSError:
    message = f"cannot connect to Unix socket {path!r}: {os.strerror(err)}"
    if err == errno.ECONNREFUSED:
        message += " (nothing listens there: the socket file may be stale)"
    elif err == errno.ENOENT:
        message += " (no socket file: is the server running?)"
    return OSError(err, message)


def connect_unix(
    reactor: ReactorPort,
    path: str,
    factory: FactoryArg,
    *,
    timeout: float | None = 30.0,
    on_connect: Callable[[Any], object] | None = None,
    on_failure: Callable[[BaseException], object] | None = None,
    make_transport: TransportMaker = StreamTransport,
) -> UnixConnector:
    """Connect to the Unix socket ``path``; failures are reported like connect_tcp's."""
    check_factory(factory, "connect_unix")
    connector = UnixConnector(
        reactor, path, 0, factory, timeout, on_connect, on_failure, make_transport
    )
    connector._start()
    return connector
