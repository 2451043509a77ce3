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
knows it exists: ``Reactor(debug=True)`` makes an instance of
``reactor.reactor.DebugReactor``, a subclass whose overrides of the
scheduling and fd-watching methods call the checks here (time the callback,
check the calling thread), then the real ones. The subclass is an ordinary
class written out once, not made at run time, so the same source runs
compiled (mypyc) too; the work is done here.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from functools import partial
from typing import Any, cast

from reactor.loop import EventLoop
from reactor.resources import Resource

__all__ = [
    "TimedCallback",
    "check_thread",
    "debug_log",
    "timed",
    "timed_partial",
    "warn_never_closed",
    "warn_slow_iteration",
]

debug_log = logging.getLogger("reactor.debug")

#: Kinds of resources whose being left open at close() is worth a warning.
_REPORTED_KINDS = ("connection", "datagram")


def _name(callback: Any) -> str:
    func = getattr(callback, "func", callback)  # functools.partial
    name = getattr(func, "__qualname__", None) or repr(func)
    module = getattr(func, "__module__", None)
    return f"{module}.{name}" if module else str(name)


class TimedCallback:
    """A callback that logs a warning when one call takes longer than ``threshold``.

    ``func`` is the callback it runs (trace mode looks through it to name an
    fd's owner, as through ``functools.partial``).
    """

    __slots__ = ("func", "name", "threshold")

    def __init__(self, func: Callable[..., object], threshold: float) -> None:
        self.func = func
        self.name = _name(func)
        self.threshold = threshold

    def __repr__(self) -> str:
        return f"<timed {self.name}>"

    def __call__(self, *args: Any) -> object:
        start = time.perf_counter()
        try:
            return self.func(*args)
        finally:
            took = time.perf_counter() - start
            if took > self.threshold:
                debug_log.warning(
                    "slow callback: %s took %.3f s (over %.3f s): every other "
                    "connection waited meanwhile; move blocking work to a thread",
                    self.name,
                    took,
                    self.threshold,
                )


def timed(callback: Callable[..., object], threshold: float) -> TimedCallback:
    """``callback`` wrapped to warn when a call runs longer than ``threshold`` seconds."""
    return TimedCallback(callback, threshold)


def timed_partial(
    callback: Callable[..., object], args: tuple[Any, ...], threshold: float
) -> TimedCallback:
    """``callback(*args)`` as one timed callable (for add_reader/add_writer)."""
    return TimedCallback(partial(callback, *args) if args else callback, threshold)


def check_thread(loop: EventLoop, method: str) -> None:
    """Warn if ``loop`` runs in another thread: ``method`` is not thread-safe."""
    owner = loop.thread_id
    if owner is not None and owner != threading.get_ident():
        debug_log.warning(
            "Reactor.%s() called from thread %r while the reactor runs in another: "
            "it is not thread-safe; use reactor.call_from_thread() instead",
            method,
            threading.current_thread().name,
        )


def warn_slow_iteration(took: float, threshold: float) -> None:
    """The loop's slow-turn hook, in debug mode."""
    debug_log.warning(
        "slow loop iteration: %.3f s (over %.3f s): I/O waited that long",
        took,
        threshold,
    )


def warn_never_closed(resources: Iterable[Resource]) -> None:
    """At close(): warn about each connection or datagram endpoint left open."""
    # Only those two kinds are reported, and both are transports (is_closing()).
    for resource in resources:
        if resource.kind in _REPORTED_KINDS and not cast(Any, resource).is_closing():
            debug_log.warning(
                "%r was never closed: the reactor closed it; close transports "
                "when you are done with them",
                resource,
            )
