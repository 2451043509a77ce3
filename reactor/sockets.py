"""Socket helpers shared by the transports: arguments, options, error messages.

Everything here is plain socket-module work with no loop in it: checking a
port, telling an IP literal from a name, setting TCP_NODELAY and
SO_REUSEPORT, and turning the kernel's terse errnos into messages that say
what to do.
"""

from __future__ import annotations

import errno
import socket
import struct
from typing import SupportsFloat, SupportsIndex, TypeAlias

__all__ = [
    "Port",
    "Seconds",
    "bind_error",
    "check_port",
    "check_timeout",
    "connect_error",
    "ip_family",
    "listening_socket",
    "set_abortive_close",
    "set_nodelay",
    "set_reuse_port",
]


#: What the public calls take as a port, and as a duration in seconds. Both are
#: checked at the call (check_port, check_timeout), which refuse anything but an
#: int in 0-65535 (not a bool) and a positive finite number. They are typed with
#: protocols rather than ``int`` and ``float`` for the compiled build: mypyc turns
#: an argument declared ``int``/``float`` into one before the check runs (True
#: into 1, so ``listen_tcp(True, ...)`` would listen on port 1) and refuses a
#: str with its own TypeError, where the check names the range. Statically they
#: still refuse a str.
Port: TypeAlias = SupportsIndex
Seconds: TypeAlias = SupportsFloat


def check_port(port: object, what: str) -> int:
    """``port`` if it is an int in 0-65535; ValueError naming the range otherwise.

    getaddrinfo() would wrap 70000 to 4464 and bind that, and report -5 as
    an unknown service, so the range is checked before anything is made.
    """
    if isinstance(port, bool) or not isinstance(port, int):
        raise ValueError(f"{what}: port must be an int in 0-65535, not {port!r}")
    if not 0 <= port <= 65535:
        raise ValueError(f"{what}: port must be in 0-65535, not {port}")
    return port


def check_timeout(seconds: object, what: str) -> float:
    """``seconds`` if it is a positive, finite number; ValueError naming ``what`` otherwise."""
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
        raise ValueError(f"{what} must be a number of seconds, not {seconds!r}")
    if not 0 < seconds < float("inf"):  # NaN fails both comparisons
        raise ValueError(f"{what} must be positive and finite, not {seconds!r}")
    return float(seconds)


def ip_family(host: str) -> int | None:
    """The family of an IP address literal, or None for a name that needs resolving."""
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            socket.inet_pton(family, host)
        except OSError:
            continue
        return family
    return None


def set_nodelay(sock: socket.socket) -> None:
    """Send small writes at once (no Nagle delay) on TCP; nothing for other families."""
    if sock.family in (socket.AF_INET, socket.AF_INET6):
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:  # pragma: no cover - the peer already reset it
            pass


def set_reuse_port(sock: socket.socket) -> None:
    """Let several sockets bind the same port (the kernel spreads the traffic)."""
    if not hasattr(socket, "SO_REUSEPORT"):  # pragma: no cover - Windows
        raise ValueError("reuse_port=True: SO_REUSEPORT is not supported on this platform")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)


def set_abortive_close(sock: socket.socket) -> None:
    """Make close() send a reset and drop unsent data at once (SO_LINGER 0).

    For a connection given up on: a plain close() of a socket whose peer
    reads nothing leaves the kernel holding it and its unsent data (up to
    megabytes) until TCP's own timers end it, and the peer never learns.
    """
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:  # pragma: no cover - the peer reset it already
        pass


def bind_error(exc: OSError, host: str | None, port: int) -> OSError:
    """A bind() failure, said with what to do about it."""
    where = f"{host or '*'}:{port}"
    if exc.errno == errno.EADDRINUSE:
        hint = "another program is listening there; pick another port or stop it"
    elif exc.errno == errno.EACCES:
        hint = "ports below 1024 need privileges; pick a port above 1023"
    elif exc.errno == errno.EADDRNOTAVAIL:
        hint = "that address is not one of this machine's"
    else:
        hint = exc.strerror or str(exc)
    return OSError(exc.errno, f"cannot listen on {where}: {exc.strerror} ({hint})")


def connect_error(err: int, host: str, port: int) -> OSError:
    """A failed connect (an errno from connect_ex or SO_ERROR) as the right exception."""
    message = f"connect to {host}:{port} failed: {errno.errorcode.get(err, err)}"
    if err == errno.ECONNREFUSED:
        return ConnectionRefusedError(err, message + " (nothing listens there)")
    if err == errno.ETIMEDOUT:
        return TimeoutError(err, message)
    if err in (errno.EADDRNOTAVAIL, errno.EAGAIN):
        message += (
            " (no free local port or route: too many connections open or in TIME_WAIT; "
            "close some, retry later, or widen the local port range)"
        )
    return OSError(err, message)


def listening_socket(host: str | None, port: int, backlog: int, reuse_port: bool) -> socket.socket:
    """A non-blocking TCP socket listening on ``host:port`` (None: every interface)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise OSError(errno.EINVAL, f"cannot listen on {host}:{port}: {exc}") from None
    family, _type, proto, _name, sockaddr = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            set_reuse_port(sock)
        try:
            sock.bind(sockaddr)
        except OSError as exc:
            raise bind_error(exc, host, port) from None
        sock.listen(backlog)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock
