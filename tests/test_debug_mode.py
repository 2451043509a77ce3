"""Debug mode's "never closed" warnings: about what leaks, not about normal endings.

A listener that lives as long as the reactor is the usual shape of a server:
the reactor closing it is how it is meant to end, so debug mode says nothing.
A stream connection still open when the reactor closes is a leak, and is
still reported on the ``reactor.debug`` logger.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from protocols.base import Protocol
from reactor import Reactor
from tests.conftest import make_reactor, run_until

pytestmark = pytest.mark.timeout(60)


class Echo(Protocol):
    def data_received(self, data: bytes) -> None:
        self.transport.write(data)


def never_closed(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [
        r for r in caplog.records if r.name == "reactor.debug" and "never closed" in r.getMessage()
    ]


@pytest.fixture
def debug_log(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG, logger="reactor.debug")
    return caplog


def test_a_tcp_listener_closed_by_the_reactor_is_not_reported(
    backend: str, debug_log: pytest.LogCaptureFixture
) -> None:
    with make_reactor(backend, debug=True) as r:
        r.listen_tcp(0, Echo)
    assert r.is_closed()
    assert never_closed(debug_log) == []


def test_a_unix_listener_closed_by_the_reactor_is_not_reported(
    backend: str, debug_log: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    with make_reactor(backend, debug=True) as r:
        r.listen_unix(str(tmp_path / "s.sock"), Echo)
    assert never_closed(debug_log) == []


def test_a_listener_that_served_connections_is_not_reported(
    backend: str, debug_log: pytest.LogCaptureFixture
) -> None:
    with make_reactor(backend, debug=True) as r:
        listener = r.listen_tcp(0, Echo)
        made: list[Any] = []
        r.connect_tcp("127.0.0.1", listener.port, Echo, on_connect=made.append)
        run_until(r, lambda: made and r.stats()["connections"] == 2, what="a connection")
        made[0].transport.close()  # the client closes; the server side follows
        run_until(r, lambda: r.stats()["connections"] == 0, what="both sides to close")
    assert never_closed(debug_log) == []


def test_an_open_stream_connection_is_still_reported(
    backend: str, debug_log: pytest.LogCaptureFixture
) -> None:
    with make_reactor(backend, debug=True) as r:
        listener = r.listen_tcp(0, Echo)
        made: list[Any] = []
        r.connect_tcp("127.0.0.1", listener.port, Echo, on_connect=made.append)
        run_until(r, lambda: made and r.stats()["connections"] == 2, what="a connection")
        open_connections = r.stats()["connections"]
        assert never_closed(debug_log) == []
    # Both ends of the connection leaked (and are reported); the listener is not.
    reported = never_closed(debug_log)
    assert len(reported) == open_connections == 2, [x.getMessage() for x in reported]
    assert all(x.levelno >= logging.WARNING for x in reported)


def test_an_open_unix_connection_is_still_reported(
    backend: str, debug_log: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    path = str(tmp_path / "s.sock")
    with make_reactor(backend, debug=True) as r:
        r.listen_unix(path, Echo)
        made: list[Any] = []
        r.connect_unix(path, Echo, on_connect=made.append)
        run_until(r, lambda: made and r.stats()["connections"] == 2, what="a connection")
    assert len(never_closed(debug_log)) == 2


def test_without_debug_mode_nothing_is_reported(
    backend: str, debug_log: pytest.LogCaptureFixture
) -> None:
    with make_reactor(backend, debug=False) as r:
        listener = r.listen_tcp(0, Echo)
        made: list[Any] = []
        r.connect_tcp("127.0.0.1", listener.port, Echo, on_connect=made.append)
        run_until(r, lambda: made and r.stats()["connections"] == 2, what="a connection")
    assert never_closed(debug_log) == []


def test_debug_reactor_still_closes_the_listener(backend: str) -> None:
    r: Reactor
    with make_reactor(backend, debug=True) as r:
        listener = r.listen_tcp(0, Echo)
        assert r.stats()["listeners"] == 1
    assert listener.closed
