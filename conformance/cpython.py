"""Run CPython's own asyncio tests (``test.test_asyncio``) against reactor.aio.EventLoop.

Every module named is run twice, each time in fresh child processes: once on
asyncio's own loop ("asyncio") and once with every asyncio loop the tests
make replaced by ``reactor.aio.EventLoop`` ("reactor"). The two outcome sets
are compared test by test. The tests ship with every interpreter, so nothing
is downloaded; run it with the interpreter whose tests you want.

How the loop is replaced, in the "reactor" children: ``asyncio.SelectorEventLoop``
becomes a subclass of ``EventLoop`` (the selector a test passes picks the
reactor backend: EpollSelector runs on epoll, PollSelector on poll,
SelectSelector on select), and the default policy's loop factory becomes
that class, so ``asyncio.new_event_loop()``, ``asyncio.run()`` and
``IsolatedAsyncioTestCase`` use it too. Tests that make no real loop (the
mock-time ``TestLoop`` of ``test_utils``) run as they are; the report counts
separately the tests that did run on an EventLoop.

Each test has a time limit; a test that hangs is recorded as "timeout" and
the module goes on in a new child after it.

    python conformance/cpython.py                     # the default modules
    python conformance/cpython.py test_events test_streams --jobs 2
    python conformance/cpython.py --ci                # the CI subset

Writes ``conformance/results/cpython-<X.Y>.json`` (counts, every difference) and prints
a summary; the exit status is 1 if the pass rate is below ``--target``.
"""

from __future__ import annotations

import argparse
import sys
import unittest
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import Suite, flatten, main

#: The modules issue 13 names (test_ssl, test_taskgroups and test_timeouts
#: exist from 3.11 on).
MODULES = [
    "test_events",
    "test_streams",
    "test_server",
    "test_sock_lowlevel",
    "test_sendfile",
    "test_tasks",
    "test_futures",
    "test_locks",
    "test_queues",
    "test_timeouts",
    "test_taskgroups",
    "test_runners",
    "test_subprocess",
    "test_ssl",
    # Cheap extras that exercise a real loop.
    "test_context",
    "test_pep492",
    "test_buffered_proto",
    "test_waitfor",
    "test_threads",
]
#: A subset for CI: the modules that exercise the loop's own I/O and turn
#: (most of test_tasks/test_futures run on the mock-time TestLoop).
CI_MODULES = [
    "test_events",
    "test_streams",
    "test_server",
    "test_sock_lowlevel",
    "test_sendfile",
    "test_runners",
    "test_subprocess",
    "test_ssl",
    "test_taskgroups",
    "test_timeouts",
    "test_locks",
    "test_queues",
]


def _patch_asyncio(counter: list[int]) -> None:
    """Make every real asyncio loop the tests create a reactor.aio.EventLoop."""
    import asyncio
    import selectors
    from asyncio import unix_events

    from reactor.aio import EventLoop

    backends = {"EpollSelector": "epoll", "PollSelector": "poll", "SelectSelector": "select"}

    class ConformanceLoop(EventLoop):
        def __init__(self, selector: selectors.BaseSelector | None = None) -> None:
            backend = None
            if selector is not None:
                backend = backends.get(type(selector).__name__)
                selector.close()
            counter[0] += 1
            super().__init__(backend=backend)

    ConformanceLoop.__name__ = ConformanceLoop.__qualname__ = "SelectorEventLoop"
    asyncio.SelectorEventLoop = ConformanceLoop  # type: ignore[misc]
    unix_events.SelectorEventLoop = ConformanceLoop  # type: ignore[misc]
    policy_class: Any = unix_events._UnixDefaultEventLoopPolicy  # type: ignore[attr-defined]
    policy_class._loop_factory = ConformanceLoop


def _count_real_loops(counter: list[int]) -> None:
    """On asyncio's loop: count the real loops tests make, as on ours."""
    import asyncio
    from asyncio import unix_events

    real = unix_events._UnixSelectorEventLoop  # type: ignore[attr-defined]

    class CountingLoop(real):  # type: ignore[valid-type,misc]
        def __init__(self, selector: Any = None) -> None:
            counter[0] += 1
            super().__init__(selector)

    CountingLoop.__name__ = CountingLoop.__qualname__ = "SelectorEventLoop"
    asyncio.SelectorEventLoop = CountingLoop  # type: ignore[misc]
    unix_events.SelectorEventLoop = CountingLoop  # type: ignore[misc]
    unix_events._UnixDefaultEventLoopPolicy._loop_factory = CountingLoop  # type: ignore[attr-defined]


def load(module: str, loop: str, counter: list[int], args: argparse.Namespace) -> list[Any]:
    if loop == "reactor":
        _patch_asyncio(counter)
    else:
        _count_real_loops(counter)
    suite = unittest.defaultTestLoader.loadTestsFromName(f"test.test_asyncio.{module}")
    return list(flatten(suite))


def present(args: argparse.Namespace) -> list[str]:
    test_dir = Path(unittest.__file__).resolve().parent.parent / "test" / "test_asyncio"
    return [m for m in MODULES if (test_dir / f"{m}.py").exists()]


SUITE = Suite(
    name="cpython",
    title="CPython test.test_asyncio",
    script=Path(__file__).resolve(),
    modules=MODULES,
    ci_modules=CI_MODULES,
    load=load,
    present=present,
)


if __name__ == "__main__":
    sys.exit(main(SUITE, __doc__.split("\n\n")[0]))
