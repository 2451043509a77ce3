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
* transports and listeners still open when the reactor is closed.

Like trace mode it costs nothing when off: the reactor's scheduling methods
are replaced on the instance by checking versions only in debug mode.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from reactor.timers import Handle, TimerHandle

if TYPE_CHECKING:
    from reactor.loop import Reactor

__all__ = ["debug_log", "install_debug"]

debug_log = logging.getLogger("reactor.debug")


def _name(callback: Any) -> str:
    func = getattr(callback, "func", callback)  # functools.partial
    name = getattr(func, "__qualname__", None) or repr(func)
    module = getattr(func, "__module__", None)
    return f"{module}.{name}" if module else str(name)


def install_debug(reactor: Reactor) -> None:
    """Replace the reactor's scheduling methods with timing, thread-checking ones."""
    cls = type(reactor)
    threshold = reactor.slow_callback_duration

    def timed(callback: Callable[..., object]) -> Callable[..., object]:
        name = _name(callback)

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

    def check_thread(method: str) -> None:
        owner = reactor._thread_id
        if owner is not None and owner != threading.get_ident():
            debug_log.warning(
                "Reactor.%s() called from thread %r while the reactor runs in another: "
                "it is not thread-safe; use reactor.call_from_thread() instead",
                method,
                threading.current_thread().name,
            )

    def call_soon(callback: Callable[..., object], *args: Any) -> Handle:
        check_thread("call_soon")
        return cls.call_soon(reactor, timed(callback), *args)

    def call_later(delay: float, callback: Callable[..., object], *args: Any) -> TimerHandle:
        check_thread("call_later")
        return cls.call_later(reactor, delay, timed(callback), *args)

    def call_at(when: float, callback: Callable[..., object], *args: Any) -> TimerHandle:
        check_thread("call_at")
        return cls.call_at(reactor, when, timed(callback), *args)

    def call_from_thread(callback: Callable[..., object], *args: Any) -> Handle:
        return cls.call_from_thread(reactor, timed(callback), *args)

    def add_fd_callback(name: str) -> Callable[[int, Callable[[], object]], None]:
        inner = getattr(cls, name)

        def add(fd: int, callback: Callable[[], object]) -> None:
            check_thread(name.lstrip("_"))
            inner(reactor, fd, timed(callback))

        return add

    def remove_fd_callback(name: str) -> Callable[[int], bool]:
        inner = getattr(cls, name)

        def remove(fd: int) -> bool:
            check_thread(name.lstrip("_"))
            return bool(inner(reactor, fd))

        return remove

    # Instance attributes shadow the class's methods, so the reactor's own
    # code (and its transports) go through these too.
    replacements: dict[str, Callable[..., Any]] = {
        "call_soon": call_soon,
        "call_later": call_later,
        "call_at": call_at,
        "call_from_thread": call_from_thread,
        "call_soon_threadsafe": call_from_thread,
        "_add_reader": add_fd_callback("_add_reader"),
        "_add_writer": add_fd_callback("_add_writer"),
        "_remove_reader": remove_fd_callback("_remove_reader"),
        "_remove_writer": remove_fd_callback("_remove_writer"),
    }
    for name, replacement in replacements.items():
        setattr(reactor, name, replacement)


def warn_slow_iteration(took: float, threshold: float) -> None:
    debug_log.warning(
        "slow loop iteration: %.3f s (over %.3f s): I/O waited that long", took, threshold
    )


def warn_unclosed(resources: list[Any]) -> None:
    for resource in resources:
        debug_log.warning(
            "%r was never closed: the reactor closed it; close transports and "
            "listeners when you are done with them",
            resource,
        )
