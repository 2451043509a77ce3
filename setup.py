"""The build: pure Python by default; ``REACTOR_COMPILE=1`` compiles the core with mypyc.

Everything about the package (name, version, packages, extras) is in
``pyproject.toml``; this file only adds the C extensions when asked:

    pip install .                       # pure Python: no C compiler, no mypy
    REACTOR_COMPILE=1 pip install .     # the same source compiled by mypyc

The compiled build needs mypy (the in-tree backend, ``_buildsys/mypyc_backend.py``,
adds it to the build requirements only then) and a C compiler with the
Python headers. ``reactor.COMPILED`` says which build is running.
"""

from __future__ import annotations

import os

from setuptools import setup

#: The modules mypyc compiles: the loop core, the backends and the transports
#: (the hot path of every request), and the layers that subclass or wrap them
#: (trace and debug mode, the assembled Reactor), which must be compiled with
#: what they subclass. Left interpreted: the package __init__ files (they
#: only re-export), reactor.aio (its classes derive from asyncio's, which a
#: compiled class cannot), workers (fork and process supervision, off the hot
#: path), interfaces (typing Protocols only), and protocols/ (what users
#: subclass in plain Python: Protocol and the framing receivers).
COMPILED_MODULES = [
    "reactor/_build.py",
    "reactor/backends/base.py",
    "reactor/backends/epoll.py",
    "reactor/backends/kqueue.py",
    "reactor/backends/poll.py",
    "reactor/backends/select.py",
    "reactor/timers.py",
    "reactor/waker.py",
    "reactor/resources.py",
    "reactor/fdwatch.py",
    "reactor/loop.py",
    "reactor/sockets.py",
    "reactor/flow.py",
    "reactor/factory.py",
    "reactor/transport.py",
    "reactor/stream.py",
    "reactor/tls.py",
    "reactor/tcp.py",
    "reactor/unix.py",
    "reactor/udp.py",
    "reactor/signals.py",
    "reactor/debug.py",
    "reactor/trace.py",
    "reactor/reactor.py",
]


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def _extensions() -> list[object]:
    if not _flag("REACTOR_COMPILE"):
        return []
    try:
        from mypyc.build import mypycify
    except ImportError as exc:  # pragma: no cover - the backend installs mypy
        raise SystemExit(
            "REACTOR_COMPILE=1 needs mypy (which ships mypyc) in the build environment: "
            "build with pip (the in-tree backend asks for it), or install mypy first and "
            f"build with --no-build-isolation ({exc})"
        ) from exc
    return list(
        mypycify(
            COMPILED_MODULES,
            opt_level=os.environ.get("REACTOR_COMPILE_OPT", "3"),
            # One shared library for all: calls between the modules are
            # direct C calls, not Python attribute lookups.
            group_name="reactor",
        )
    )


setup(ext_modules=_extensions())
