"""Readiness backends, one module each, and the choice between them.

The reactor asks :func:`make_poller` for the best mechanism the platform
has (epoll, then kqueue, then poll, then select) unless a name is given,
either as an argument or through the ``REACTOR_BACKEND`` environment
variable.
"""

from __future__ import annotations

import os
import select as _select_module

from reactor.backends.base import ERROR, HANGUP, INVALID, READ, READ_BITS, WRITE, WRITE_BITS, Poller

__all__ = [
    "ERROR",
    "HANGUP",
    "INVALID",
    "READ",
    "READ_BITS",
    "WRITE",
    "WRITE_BITS",
    "Poller",
    "available_backends",
    "make_poller",
]

_PREFERENCE = ("epoll", "kqueue", "poll", "select")


def available_backends() -> list[str]:
    """The backends this platform has, best first."""
    return [name for name in _PREFERENCE if hasattr(_select_module, name)]


def make_poller(name: str | None = None) -> Poller:
    """A new poller by name; None means ``$REACTOR_BACKEND`` or else the best one.

    Raises ValueError naming the available backends if ``name`` is unknown or
    not available here.
    """
    if name is None:
        name = os.environ.get("REACTOR_BACKEND") or None
    available = available_backends()
    if name is None:
        name = available[0]
    name = name.strip().lower()
    if name not in available:
        kind = "unknown" if name not in _PREFERENCE else "not available on this platform"
        raise ValueError(
            f"backend {name!r} is {kind}; available backends: {', '.join(available)} "
            "(choose one with Reactor(backend=...) or REACTOR_BACKEND)"
        )
    if name == "epoll":
        from reactor.backends.epoll import EpollPoller

        return EpollPoller()
    if name == "kqueue":  # pragma: no cover - not on Linux; tested via emulation
        from reactor.backends.kqueue import KqueuePoller

        return KqueuePoller()
    if name == "poll":
        from reactor.backends.poll import PollPoller

        return PollPoller()
    from reactor.backends.select import SelectPoller

    return SelectPoller()
