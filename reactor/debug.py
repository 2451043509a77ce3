"""Debug mode: warnings about what makes an event loop misbehave.

Turned on by ``Reactor(debug=True)`` or ``REACTOR_DEBUG=1``. It warns, on
the ``reactor.debug`` logger, about:

* slow callbacks: any callback (I/O, timer, ``call_soon``) that runs longer
  than ``slow_callback_duration`` (100 ms by default), naming it, because
  while it runs every other connection waits;
* slow loop iterations, for the same reason, even when no single callback
  was slow;
* calls from the wrong thread: ``call_soon``, ``call_later``, ``add_reader``
  and the like are not thread-safe, so calling them from another thread
  while the reactor runs is a bug (use ``call_from_thread``);
* connections still open when the reactor is closed (listeners are not
  reported: a server's listener normally lives as long as its reactor).

Like trace mode it costs nothing when off, and nothing below this module
knows it exists: ``Reactor(debug=True)`` makes an instance of a subclass that
puts :class:`DebugMixin` in front of the reactor's class; its overrides of
the scheduling and fd-watching methods time and check, then call the real
ones.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from functools import partial
from typing import Any

from reactor.fdwatch import HasFileno
from reactor.loop import EventLoop
from reactor.timers import Handle, TimerHandle

__all__ = ["DebugMixin", "debug_log", "debug_variant"]

debug_log = logging.getLogger("reactor.debug")

#: Kinds of resources whose being left open at close() is worth a warning.
_REPORTED_KINDS = ("connection", "datagram")


def _name(callback: Any) -> str:
    func = getattr(callback, "func", callback)  # functools.partial
    name = getattr(func, "__qualname__", None) or repr(func)
    module = getattr(func, "__module__", None)
    return f"{module}.{name}" if module else str(name)


class DebugMixin(EventLoop):
    """Times every callback and checks the calling thread, then defers to the loop."""

    slow_callback_duration: float

    def _timed(self, callback: Callable[..., object]) -> Callable[..., object]:
        name = _name(callback)
        threshold = self.slow_callback_duration

        def run(*args: Any) -> object:
            start = time.perf_counter()
            try:
                return callback(*args)
            finally:
                took = time.perf_counter() - start
                if took > threshold:
                    debug_log.warning(
                        "slow callback: %s took %.3f s (over %.3f s): every other "
                        "connection waited meanwhile; move blocking work to a thread",
                        name,
                        took,
                        threshold,
                    )

        run.__qualname__ = name
        return run

    def _check_thread(self, method: str) -> None:
        owner = self.thread_id
        if owner is not None and owner != threading.get_ident():
            debug_log.warning(
                "Reactor.%s() called from thread %r while the reactor runs in another: "
                "it is not thread-safe; use reactor.call_from_thread() instead",
                method,
                threading.current_thread().name,
            )

    def call_soon(self, callback: Callable[..., object], *args: Any) -> Handle:
        self._check_thread("call_soon")
        return super().call_soon(self._timed(callback), *args)

    def call_later(self, delay: float, callback: Callable[..., object], *args: Any) -> TimerHandle:
        self._check_thread("call_later")
        return super().call_later(delay, self._timed(callback), *args)

    def call_at(self, when: float, callback: Callable[..., object], *args: Any) -> TimerHandle:
        self._check_thread("call_at")
        return super().call_at(when, self._timed(callback), *args)

    def call_from_thread(self, callback: Callable[..., object], *args: Any) -> Handle:
        return super().call_from_thread(self._timed(callback), *args)

    def add_reader(self, fd: int | HasFileno, callback: Callable[..., object], *args: Any) -> None:
        self._check_thread("add_reader")
        super().add_reader(fd, self._timed(partial(callback, *args) if args else callback))

    def add_writer(self, fd: int | HasFileno, callback: Callable[..., object], *args: Any) -> None:
        self._check_thread("add_writer")
        super().add_writer(fd, self._timed(partial(callback, *args) if args else callback))

    def remove_reader(self, fd: int | HasFileno) -> bool:
        self._check_thread("remove_reader")
        return super().remove_reader(fd)

    def remove_writer(self, fd: int | HasFileno) -> bool:
        self._check_thread("remove_writer")
        return super().remove_writer(fd)

    def watch_read(self, fd: int, callback: Callable[[], object]) -> None:
        self._check_thread("watch_read")
        super().watch_read(fd, self._timed(callback))

    def watch_write(self, fd: int, callback: Callable[[], object]) -> None:
        self._check_thread("watch_write")
        super().watch_write(fd, self._timed(callback))

    def unwatch_read(self, fd: int) -> bool:
        self._check_thread("unwatch_read")
        return super().unwatch_read(fd)

    def unwatch_write(self, fd: int) -> bool:
        self._check_thread("unwatch_write")
        return super().unwatch_write(fd)

    def _slow_iteration(self, took: float) -> None:
        debug_log.warning(
            "slow loop iteration: %.3f s (over %.3f s): I/O waited that long",
            took,
            self.slow_callback_duration,
        )

    def close(self) -> None:
        table = getattr(self, "resources", None)
        if table is not None and not self._closed and not self._running:
            for resource in list(table.open):
                if resource.kind in _REPORTED_KINDS and not resource.is_closing():
                    debug_log.warning(
                        "%r was never closed: the reactor closed it; close transports "
                        "when you are done with them",
                        resource,
                    )
        super().close()


_variants: dict[type, type] = {}


def debug_variant(cls: type[EventLoop]) -> type[EventLoop]:
    """``cls`` with :class:`DebugMixin` in front (made once per class)."""
    if issubclass(cls, DebugMixin):
        return cls
    variant = _variants.get(cls)
    if variant is None:
        variant = _variants[cls] = type(f"Debug{cls.__name__}", (DebugMixin, cls), {})
    return variant
