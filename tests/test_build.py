"""Which build runs: ``reactor.COMPILED`` tells the truth, and both builds behave alike.

The same source runs interpreted, or compiled by mypyc (``REACTOR_COMPILE=1
pip install .``; ``setup.py`` lists the modules). CI runs the whole suite
against each build; ``REACTOR_EXPECT_COMPILED`` (set by ``.ci/compiled``)
makes this file fail if the build under test is not the one expected, so a
compiled run that silently imported the pure source cannot pass.
"""

from __future__ import annotations

import ast
import importlib
import importlib.machinery
import logging
import os
import platform
from pathlib import Path

import pytest

import reactor
from apps._common import version_text
from protocols import DatagramProtocol, LineReceiver, Protocol
from reactor import Reactor, available_backends
from tests.app_helpers import exits_with, run_cli
from tests.conftest import run_until

pytestmark = pytest.mark.timeout(30)

SETUP = Path(__file__).resolve().parents[1] / "setup.py"


def compiled_modules() -> list[str]:
    """The modules setup.py compiles, as dotted names (read from its source)."""
    tree = ast.parse(SETUP.read_text())
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Assign)
            and any(isinstance(t, ast.Name) and t.id == "COMPILED_MODULES" for t in node.targets)
            and isinstance(node.value, ast.List)
        ):
            paths = [ast.literal_eval(element) for element in node.value.elts]
            return [p.removesuffix(".py").replace("/", ".") for p in paths]
    raise AssertionError("setup.py has no COMPILED_MODULES list")


def is_extension(module_name: str) -> bool:
    path = importlib.import_module(module_name).__file__ or ""
    return path.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES))


def test_compiled_is_a_bool_that_matches_the_modules_loaded() -> None:
    assert isinstance(reactor.COMPILED, bool)
    modules = compiled_modules()
    assert "reactor.loop" in modules
    assert "reactor.stream" in modules
    loaded = {name: is_extension(name) for name in modules}
    # All of them compiled, or none: never a mix of a stale build and new source.
    assert set(loaded.values()) == {reactor.COMPILED}, loaded


def test_the_expected_build_runs() -> None:
    expected = os.environ.get("REACTOR_EXPECT_COMPILED")
    if expected is None:
        pytest.skip("REACTOR_EXPECT_COMPILED is not set: this run tests whichever build is here")
    assert reactor.COMPILED is (expected == "1")


def test_the_package_init_is_python_in_both_builds() -> None:
    # reactor/__init__.py and the apps stay interpreted: what they export is the same.
    assert not is_extension("reactor")
    assert not is_extension("protocols.base")


def test_trace_mode_says_which_build(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="reactor.trace")
    with Reactor("poll", trace=True):
        pass
    build = "compiled (mypyc)" if reactor.COMPILED else "pure-Python"
    assert any(r.getMessage() == f"trace on: {build} build, backend poll" for r in caplog.records)


def test_debug_mode_is_a_subclass_chosen_at_construction() -> None:
    with Reactor("poll", debug=True) as debugged, Reactor("poll") as plain:
        assert type(plain) is Reactor
        assert isinstance(debugged, Reactor)
        assert type(debugged) is not Reactor
        assert debugged.debug and not plain.debug


def test_the_exception_sink_is_replaced_and_restored_per_reactor() -> None:
    seen: list[dict[str, object]] = []
    with Reactor("poll") as r, Reactor("poll") as other:
        r.call_exception_handler = seen.append
        r.report_error({"message": "one"})
        assert seen == [{"message": "one"}]
        assert other.call_exception_handler != seen.append  # per reactor
        r.call_exception_handler = None  # the default again
        assert r.call_exception_handler == r.default_exception_handler


class Upper(LineReceiver):
    """A plain-Python subclass of a framing receiver, with state of its own."""

    delimiter = b"\n"

    def __init__(self) -> None:
        super().__init__()
        self.lines: list[bytes] = []
        self.extra = "instances of user subclasses keep a __dict__"

    def line_received(self, line: bytes) -> None:
        self.lines.append(line)
        self.send_line(line.upper())


def test_plain_python_protocol_subclasses_work_in_both_builds() -> None:
    class Counter(Protocol):
        received = 0

        def data_received(self, data: bytes) -> None:
            self.received += len(data)
            self.transport.write(data)

    class Quiet(DatagramProtocol):
        pass

    with Reactor("poll") as r:
        servers: list[Upper] = []

        def make() -> Upper:
            servers.append(Upper())
            return servers[-1]

        listener = r.listen_tcp(0, make)
        client = Counter()
        r.connect_tcp("127.0.0.1", listener.port, lambda: client)
        run_until(r, lambda: getattr(client, "transport", None) is not None and bool(servers))
        client.transport.write(b"one\ntwo\n")
        run_until(r, lambda: client.received == 8)
        assert servers[0].lines == [b"one", b"two"]
        endpoint = r.listen_udp(0, Quiet())
        endpoint.close()


@pytest.mark.parametrize(
    ("module", "prog", "args"),
    [
        ("apps.echo", "reactor-echo", ["--version"]),
        ("apps.chat", "reactor-chat", ["--version"]),
        ("apps.files", "reactor-files", ["--version"]),
        ("apps.udpchat", "reactor-udpchat", ["--version"]),
        ("apps.chat", "reactor-chat server", ["server", "--backend", "poll", "--version"]),
        ("apps.udpchat", "reactor-udpchat client", ["client", "--backend", "select", "--version"]),
    ],
)
def test_every_app_says_which_build_runs(module: str, prog: str, args: list[str]) -> None:
    # Run as the user would, in a subprocess: the build the app reports is
    # the one this test process imported (and test_the_expected_build_runs
    # checks that against what CI built).
    result = run_cli(module, *args)
    exits_with(result, 0)
    build = "compiled (mypyc)" if reactor.COMPILED else "pure-Python"
    python = f"{platform.python_implementation()} {platform.python_version()}"
    default = os.environ.get("REACTOR_BACKEND") or available_backends()[0]
    backend = args[args.index("--backend") + 1] if "--backend" in args else default
    expected = f"{prog} {reactor.__version__}: {build} build, {python}, backend {backend}\n"
    assert result.stdout == expected


def test_version_names_a_bad_backend_instead_of_failing() -> None:
    text = version_text("prog", "nope")
    assert text.startswith(f"prog {reactor.__version__}: ")
    assert "backend none (backend 'nope' is unknown" in text


def test_a_reactor_keeps_its_attributes_where_they_are_fast() -> None:
    # Interpreted, CPython keeps at most 30 of an instance's attributes
    # inline; one more moves them all to a dict and every self.x in the loop
    # gets slower (docs/architecture.md, "The compiled build"). Compiled, a
    # reactor is a C struct and has no instance dict at all.
    with Reactor("poll") as r:
        if reactor.COMPILED:
            assert not hasattr(r, "__dict__")
        else:
            assert len(vars(r)) <= 30, sorted(vars(r))
