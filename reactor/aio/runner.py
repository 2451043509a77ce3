"""Making and running :class:`~reactor.aio.EventLoop`: ``new_event_loop``, ``run``, a policy.

``run(main())`` is ``asyncio.run`` on the reactor (like ``uvloop.run``), on
every supported Python. On 3.12+ the standard library takes the loop
factory itself: ``asyncio.run(main(), loop_factory=reactor.aio.new_event_loop)``
or ``asyncio.Runner(loop_factory=...)``. Event-loop policies are deprecated
from Python 3.14, so :class:`EventLoopPolicy` is offered only for 3.10/3.11
code that installs one.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Coroutine
from functools import partial
from typing import Any, TypeVar

from reactor.aio.eventloop import EventLoop

__all__ = ["EventLoopPolicy", "new_event_loop", "run"]

_T = TypeVar("_T")


def new_event_loop(backend: str | None = None) -> EventLoop:
    """A new :class:`EventLoop` on a new reactor (``backend``: "epoll", "poll", ...)."""
    return EventLoop(backend=backend)


def run(
    main: Coroutine[Any, Any, _T], *, backend: str | None = None, debug: bool | None = None
) -> _T:
    """Run coroutine ``main`` on a new :class:`EventLoop` and return its result.

    As ``asyncio.run``: the loop is made, set as the current loop, runs
    ``main`` to completion, then the remaining tasks are cancelled, async
    generators and the default executor are shut down, and the loop (and its
    reactor) is closed. Refused inside a running event loop.
    """
    if not asyncio.iscoroutine(main):
        raise TypeError(f"run() needs a coroutine, not {type(main).__name__}: call it, run(main())")
    if sys.version_info >= (3, 11):
        with asyncio.Runner(debug=debug, loop_factory=partial(new_event_loop, backend)) as runner:
            return runner.run(main)
    return _run_310(main, backend, debug)  # pragma: no cover - Python 3.10 only


def _run_310(
    main: Coroutine[Any, Any, _T], backend: str | None, debug: bool | None
) -> _T:  # pragma: no cover - Python 3.10 only (3.11+ use asyncio.Runner)
    """``asyncio.run`` for 3.10, which takes no loop factory."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        main.close()
        raise RuntimeError("reactor.aio.run() cannot be called from a running event loop")
    loop = new_event_loop(backend)
    try:
        asyncio.set_event_loop(loop)
        if debug is not None:
            loop.set_debug(debug)
        return loop.run_until_complete(main)
    finally:
        try:
            _cancel_all_tasks(loop)
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(loop.shutdown_default_executor())
        finally:
            asyncio.set_event_loop(None)
            loop.close()


def _cancel_all_tasks(loop: EventLoop) -> None:  # pragma: no cover - Python 3.10 only
    tasks = [task for task in asyncio.all_tasks(loop) if not task.done()]
    if not tasks:
        return
    for task in tasks:
        task.cancel()
    loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
    for task in tasks:
        if not task.cancelled() and task.exception() is not None:
            loop.call_exception_handler(
                {
                    "message": "unhandled exception during reactor.aio.run() shutdown",
                    "exception": task.exception(),
                    "task": task,
                }
            )


class EventLoopPolicy(asyncio.DefaultEventLoopPolicy):
    """A policy whose new loops are :class:`EventLoop` (for 3.10/3.11-style code).

    ``asyncio.set_event_loop_policy(reactor.aio.EventLoopPolicy())`` makes
    ``asyncio.run`` and ``asyncio.new_event_loop`` use the reactor. Policies
    are deprecated from Python 3.14: prefer :func:`run` or ``loop_factory``.
    """

    def new_event_loop(self) -> EventLoop:
        return EventLoop()
