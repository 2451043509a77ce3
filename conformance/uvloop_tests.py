"""Run uvloop's own test suite with reactor.aio.EventLoop as a third loop.

uvloop's tests run every test case on two loops: each ``_TestX`` mixin is
made into ``Test_UV_X`` (uvloop) and ``Test_AIO_X`` (asyncio's loop) through
the base classes of ``uvloop._testbase``. This runner takes every
``Test_AIO_*`` class and runs it as it is ("asyncio") and with ``new_loop``
returning ``reactor.aio.EventLoop`` ("reactor"), so our loop meets exactly
the expectations uvloop's authors wrote for asyncio's, and compares the two
test by test.

uvloop's source distribution ships ``tests/`` with their certificates; the
runner takes it from ``--tests DIR`` (an unpacked sdist's ``tests``), or
fetches the sdist of the installed uvloop with ``pip download`` into a
cache under the temporary directory. uvloop itself must be installed (the
tests import ``uvloop._testbase``; ``pip install -e '.[bench]'``).

    python conformance/uvloop_tests.py                      # TCP, UDP, Unix, sockets, ...
    python conformance/uvloop_tests.py test_tcp --jobs 2

Writes ``conformance/results/uvloop-<X.Y>.json`` and prints a summary; the
exit status is 1 if the pass rate is below ``--target``.
"""

from __future__ import annotations

import argparse
import importlib
import subprocess
import sys
import tarfile
import tempfile
import unittest
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import Suite, flatten, main

#: The issue's list: TCP (with SSL), UDP, Unix, sockets, signals, DNS,
#: context and the base loop tests; then executors and pipes.
MODULES = [
    "test_base",
    "test_tcp",
    "test_udp",
    "test_unix",
    "test_sockets",
    "test_signals",
    "test_dns",
    "test_context",
    "test_executors",
    "test_pipes",
]


def _uvloop_version() -> str:
    from importlib.metadata import version

    return version("uvloop")


def _fetch_tests() -> Path:
    """The installed uvloop's sdist ``tests/``, fetched once with pip into a cache."""
    version = _uvloop_version()
    cache = Path(tempfile.gettempdir()) / f"reactor-conformance-uvloop-{version}"
    tests = cache / f"uvloop-{version}" / "tests"
    if tests.is_dir():
        return tests
    cache.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary",
         ":all:", "--dest", str(cache), f"uvloop=={version}"],
        check=True,
    )  # fmt: skip
    sdist = next(cache.glob(f"uvloop-{version}.tar.gz"))
    with tarfile.open(sdist) as archive:
        members = [m for m in archive.getmembers() if "/tests/" in m.name]
        archive.extractall(cache, members=members, filter="data")
    return tests


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tests", help="uvloop's tests/ directory (default: fetch the sdist)")


def _prepare(args: argparse.Namespace) -> None:
    args.tests = str(Path(args.tests).resolve() if args.tests else _fetch_tests())


def _present(args: argparse.Namespace) -> list[str]:
    return [m for m in MODULES if (Path(args.tests) / f"{m}.py").exists()]


def _reactor_variant(cls: type[Any], counter: list[int]) -> type[Any]:
    """``cls`` (a Test_AIO_* case) with reactor.aio.EventLoop as its loop; same test ids."""
    from reactor.aio import EventLoop

    def new_loop(self: Any) -> EventLoop:
        counter[0] += 1
        return EventLoop()

    def is_asyncio_loop(self: Any) -> bool:
        return True  # it is asyncio's loop implementation, on the reactor

    variant = type(cls.__name__, (cls,), {"new_loop": new_loop, "is_asyncio_loop": is_asyncio_loop})
    variant.__module__ = cls.__module__
    variant.__qualname__ = cls.__qualname__
    return variant


def _counting(cls: type[Any], counter: list[int]) -> type[Any]:
    original = cls.new_loop

    def new_loop(self: Any) -> Any:
        counter[0] += 1
        return original(self)

    variant = type(cls.__name__, (cls,), {"new_loop": new_loop})
    variant.__module__ = cls.__module__
    variant.__qualname__ = cls.__qualname__
    return variant


def _load(module: str, loop: str, counter: list[int], args: argparse.Namespace) -> list[Any]:
    from uvloop import _testbase

    tests_dir = Path(args.tests)
    sys.path.insert(0, str(tests_dir.parent))
    mod = importlib.import_module(f"{tests_dir.name}.{module}")
    loader = unittest.TestLoader()
    found: list[Any] = []
    for value in list(vars(mod).values()):
        if (
            isinstance(value, type)
            and issubclass(value, _testbase.AIOTestCase)
            and value.__module__ == mod.__name__
        ):
            variant = (
                _reactor_variant(value, counter) if loop == "reactor" else _counting(value, counter)
            )
            found += flatten(loader.loadTestsFromTestCase(variant))
    return found


SUITE = Suite(
    name="uvloop",
    title="uvloop's test suite (its asyncio test cases)",
    script=Path(__file__).resolve(),
    modules=MODULES,
    ci_modules=MODULES,
    load=_load,
    present=_present,
    child_args=lambda args: ["--tests", args.tests],
    add_arguments=_add_arguments,
    prepare=_prepare,
)


if __name__ == "__main__":
    sys.exit(main(SUITE, __doc__.split("\n\n")[0]))
