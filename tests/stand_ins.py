"""Stand-ins that replace a part of a reactor for a test, in either build.

A compiled (mypyc) object takes no per-instance method and no new attribute,
so a test cannot monkeypatch ``poller.register`` or ``reactor.watch_read``
there. It swaps the whole part instead: :class:`OverridingPoller` is a
poller whose given methods replace the real one's, the rest delegating.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from reactor.backends import Poller


class OverridingPoller:
    """``real`` with the methods given in ``methods`` replaced (a Poller)."""

    def __init__(self, real: Poller, **methods: Callable[..., Any]) -> None:
        self._real = real
        self._methods = methods
        self.name = real.name

    def _method(self, name: str) -> Callable[..., Any]:
        method = self._methods.get(name)
        return method if method is not None else getattr(self._real, name)

    def __getattr__(self, name: str) -> Any:  # fileno() and the like
        return getattr(self._real, name)

    def register(self, fd: int, events: int) -> None:
        self._method("register")(fd, events)

    def modify(self, fd: int, events: int) -> None:
        self._method("modify")(fd, events)

    def unregister(self, fd: int) -> None:
        self._method("unregister")(fd)

    def poll(self, timeout: float | None) -> list[tuple[int, int]]:
        events: list[tuple[int, int]] = self._method("poll")(timeout)
        return events

    def close(self) -> None:
        self._method("close")()
