"""Bad arguments to listen_*/connect_* are refused at the call, leaving nothing behind.

Ports must be ints in 0..65535 (not bools, strings or floats): anything else
raises ValueError naming the range, before a socket is made, a timer set or a
connector registered. Stream APIs take a factory (``build_protocol(addr)``)
or a zero-argument callable such as a Protocol class; passing a protocol
*instance* is a TypeError saying to pass the class. Datagram APIs take one
protocol instance; passing the class is a TypeError saying to pass an instance.
"""

from __future__ import annotations

import asyncio
import gc
import os
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from protocols.base import DatagramProtocol, Factory, Protocol
from reactor import Reactor
from tests.conftest import run_until

pytestmark = pytest.mark.timeout(60)

#: What a port error must say: the valid range (either spelling).
PORT_RANGE = r"0(-|\.\.)65535"

#: Ports that are not in 0..65535, or not ints at all (bool is an int subclass,
#: but ``True`` as a port is a mistake, not port 1).
BAD_PORTS: list[Any] = [65536, 70000, 2**32 + 80, -1, -5, "80", 8.0, True, False]
BAD_PORT_IDS = ["65536", "70000", "2**32+80", "-1", "-5", "str", "float", "True", "False"]

#: A TypeError for a protocol instance must say what to pass instead.
CLASS_OR_FACTORY = r"(?is)\bclass\b.*\bfactory\b|\bfactory\b.*\bclass\b"

#: A TypeError for a datagram protocol class must say to pass an instance.
PASS_AN_INSTANCE = r"(?is)instance.*\bSink\(\)|\bSink\(\).*instance"

#: Things that are neither a factory nor a zero-argument callable.
NOT_FACTORIES: list[Any] = [None, 42]


class Echo(Protocol):
    """Sends back what it receives."""

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)


class Sink(DatagramProtocol):
    """A datagram protocol that ignores what it receives."""


class Failures:
    """An ``on_failure`` callback that records what it is given."""

    def __init__(self) -> None:
        self.reasons: list[BaseException] = []

    def __call__(self, reason: BaseException) -> None:
        self.reasons.append(reason)


# ---------------------------------------------------------------- helpers


def snapshot(reactor: Reactor) -> dict[str, int]:
    """The counters that say what a reactor has open (public API only)."""
    stats = reactor.stats()
    return {
        "resources": stats["resources"],
        "connections": stats["connections"],
        "listeners": stats["listeners"],
        "datagram_endpoints": stats["datagram_endpoints"],
        "registered_fds": stats["registered_fds"],
        "timers_pending": stats["timers_pending"],
    }


def turn_a_few_times(reactor: Reactor, turns: int = 5) -> None:
    """Run a few loop turns, so anything a failed call scheduled would run."""
    for _ in range(turns):
        reactor.run_once(0.01)


@pytest.fixture
def no_leaked_sockets() -> Iterator[None]:
    """Fail if a socket made during the test was dropped without being closed.

    An unclosed socket emits ResourceWarning when it is collected; record
    them all (not just the first) and collect before checking.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        yield
        gc.collect()
    leaked = [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]
    assert not leaked, leaked


@pytest.fixture
def path(tmp_path: Path) -> str:
    p = str(tmp_path / "s.sock")
    assert len(p.encode()) < 100, "tmp_path is too long for a Unix socket path"
    return p


def assert_refused_at_the_call(
    reactor: Reactor,
    call: Callable[[], object],
    error: type[Exception],
    match: str,
    failures: Failures | None = None,
) -> None:
    """``call()`` raises ``error`` matching ``match``; afterwards nothing is left
    open, and nothing it scheduled reaches ``failures`` (an on_failure callback)."""
    before = snapshot(reactor)
    with pytest.raises(error, match=match):
        call()
    assert snapshot(reactor) == before
    turn_a_few_times(reactor)
    assert snapshot(reactor) == before
    if failures is not None:
        assert failures.reasons == [], "on_failure was called after the call raised"


# ------------------------------------------------------------------ ports


@pytest.mark.parametrize("port", BAD_PORTS, ids=BAD_PORT_IDS)
def test_listen_tcp_refuses_a_bad_port(
    reactor: Reactor, port: Any, no_leaked_sockets: None
) -> None:
    assert_refused_at_the_call(
        reactor, lambda: reactor.listen_tcp(port, Echo), ValueError, PORT_RANGE
    )


@pytest.mark.parametrize("port", BAD_PORTS, ids=BAD_PORT_IDS)
def test_listen_tcp_refuses_a_bad_port_on_every_interface(
    reactor: Reactor, port: Any, no_leaked_sockets: None
) -> None:
    assert_refused_at_the_call(
        reactor, lambda: reactor.listen_tcp(port, Echo, host=None), ValueError, PORT_RANGE
    )


@pytest.mark.parametrize("port", BAD_PORTS, ids=BAD_PORT_IDS)
def test_connect_tcp_refuses_a_bad_port_and_never_calls_on_failure(
    reactor: Reactor, port: Any, no_leaked_sockets: None
) -> None:
    failures = Failures()
    assert_refused_at_the_call(
        reactor,
        lambda: reactor.connect_tcp("127.0.0.1", port, Echo, on_failure=failures),
        ValueError,
        PORT_RANGE,
        failures,
    )


@pytest.mark.parametrize("port", BAD_PORTS, ids=BAD_PORT_IDS)
def test_connect_tcp_to_a_host_name_refuses_a_bad_port_before_resolving(
    reactor: Reactor, port: Any, no_leaked_sockets: None
) -> None:
    # A name is resolved in a worker thread: the port must be checked first,
    # at the call, not after the lookup.
    failures = Failures()
    assert_refused_at_the_call(
        reactor,
        lambda: reactor.connect_tcp("localhost", port, Echo, on_failure=failures),
        ValueError,
        PORT_RANGE,
        failures,
    )


@pytest.mark.parametrize("port", BAD_PORTS, ids=BAD_PORT_IDS)
def test_listen_udp_refuses_a_bad_port(
    reactor: Reactor, port: Any, no_leaked_sockets: None
) -> None:
    assert_refused_at_the_call(
        reactor, lambda: reactor.listen_udp(port, Sink()), ValueError, PORT_RANGE
    )


@pytest.mark.parametrize("port", BAD_PORTS, ids=BAD_PORT_IDS)
def test_connect_udp_refuses_a_bad_port(
    reactor: Reactor, port: Any, no_leaked_sockets: None
) -> None:
    assert_refused_at_the_call(
        reactor, lambda: reactor.connect_udp("127.0.0.1", port, Sink()), ValueError, PORT_RANGE
    )


@pytest.mark.parametrize("port", BAD_PORTS, ids=BAD_PORT_IDS)
def test_connect_udp_refuses_a_bad_local_port(
    reactor: Reactor, port: Any, no_leaked_sockets: None
) -> None:
    assert_refused_at_the_call(
        reactor,
        lambda: reactor.connect_udp("127.0.0.1", 9, Sink(), local_port=port),
        ValueError,
        PORT_RANGE,
    )


def test_the_edges_of_the_port_range_are_accepted(reactor: Reactor) -> None:
    # 0 picks a free port; 65535 is a valid destination (connecting a UDP
    # socket sends nothing, so nothing needs to listen there).
    listener = reactor.listen_tcp(0, Echo)
    assert 0 < listener.port <= 65535
    endpoint = reactor.listen_udp(0, Sink())
    connected = reactor.connect_udp("127.0.0.1", 65535, Sink(), local_port=0)
    assert connected.get_extra_info("peername")[1] == 65535
    listener.close()
    endpoint.close()
    connected.close()
    run_until(
        reactor,
        lambda: reactor.stats()["resources"] == 0,
        what="the listener and both endpoints to close",
    )


# -------------------------------------------------------- stream factories


def protocol_instances() -> list[Any]:
    """Protocol instances someone might pass where a factory is wanted."""
    return [Echo(), asyncio.Protocol()]


@pytest.mark.parametrize("bad", protocol_instances(), ids=["Echo()", "asyncio.Protocol()"])
def test_listen_tcp_refuses_a_protocol_instance(
    reactor: Reactor, bad: Any, no_leaked_sockets: None
) -> None:
    assert_refused_at_the_call(
        reactor, lambda: reactor.listen_tcp(0, bad), TypeError, CLASS_OR_FACTORY
    )


@pytest.mark.parametrize("bad", protocol_instances(), ids=["Echo()", "asyncio.Protocol()"])
def test_connect_tcp_refuses_a_protocol_instance(
    reactor: Reactor, bad: Any, no_leaked_sockets: None
) -> None:
    failures = Failures()
    listener = reactor.listen_tcp(0, Echo)  # something to connect to
    assert_refused_at_the_call(
        reactor,
        lambda: reactor.connect_tcp("127.0.0.1", listener.port, bad, on_failure=failures),
        TypeError,
        CLASS_OR_FACTORY,
        failures,
    )
    assert reactor.stats()["connections"] == 0  # no connection was made either


@pytest.mark.parametrize("bad", protocol_instances(), ids=["Echo()", "asyncio.Protocol()"])
def test_listen_unix_refuses_a_protocol_instance(
    reactor: Reactor, bad: Any, path: str, no_leaked_sockets: None
) -> None:
    assert_refused_at_the_call(
        reactor, lambda: reactor.listen_unix(path, bad), TypeError, CLASS_OR_FACTORY
    )
    assert not os.path.exists(path), "a socket file was left behind"


@pytest.mark.parametrize("bad", protocol_instances(), ids=["Echo()", "asyncio.Protocol()"])
def test_connect_unix_refuses_a_protocol_instance(
    reactor: Reactor, bad: Any, path: str, no_leaked_sockets: None
) -> None:
    failures = Failures()
    reactor.listen_unix(path, Echo)  # something to connect to
    assert_refused_at_the_call(
        reactor,
        lambda: reactor.connect_unix(path, bad, on_failure=failures),
        TypeError,
        CLASS_OR_FACTORY,
        failures,
    )
    assert reactor.stats()["connections"] == 0


@pytest.mark.parametrize("bad", NOT_FACTORIES, ids=["None", "int"])
def test_stream_apis_refuse_what_is_not_a_factory(
    reactor: Reactor, bad: Any, path: str, no_leaked_sockets: None
) -> None:
    failures = Failures()
    calls: list[Callable[[], object]] = [
        lambda: reactor.listen_tcp(0, bad),
        lambda: reactor.connect_tcp("127.0.0.1", 9, bad, on_failure=failures),
        lambda: reactor.listen_unix(path, bad),
        lambda: reactor.connect_unix(path, bad, on_failure=failures),
    ]
    for call in calls:
        assert_refused_at_the_call(reactor, call, TypeError, "", failures)
    assert not os.path.exists(path)


class CallableFactory:
    """Not a class, not a Factory: an object whose call makes a protocol."""

    def __init__(self) -> None:
        self.made: list[Echo] = []

    def __call__(self) -> Echo:
        protocol = Echo()
        self.made.append(protocol)
        return protocol


def make_echo() -> Echo:
    return Echo()


def connect_once(reactor: Reactor, factory: Any) -> None:
    """Listen with ``factory``, connect to it with ``factory``, wait for the connection."""
    listener = reactor.listen_tcp(0, factory)
    made: list[object] = []
    reactor.connect_tcp("127.0.0.1", listener.port, factory, on_connect=made.append)
    run_until(reactor, lambda: made, what=f"a connection with {factory!r}")
    listener.close()


def test_every_kind_of_factory_is_still_accepted(reactor: Reactor, path: str) -> None:
    """The checks refuse instances without refusing the things that work."""
    callable_object = CallableFactory()
    factories: list[Any] = [
        Echo,  # a Protocol class
        Factory(Echo),  # a Twisted-style factory
        make_echo,  # a zero-argument function
        callable_object,  # an instance, but callable
        asyncio.Protocol,  # asyncio's class
    ]
    for factory in factories:
        connect_once(reactor, factory)
    assert len(callable_object.made) == 2  # the server's and the client's
    unix_made: list[object] = []
    reactor.listen_unix(path, Factory(Echo))
    reactor.connect_unix(path, Echo, on_connect=unix_made.append)
    run_until(reactor, lambda: unix_made, what="a Unix connection")


# -------------------------------------------------------- datagram protocols


def test_listen_udp_refuses_a_protocol_class(reactor: Reactor, no_leaked_sockets: None) -> None:
    bad: Any = Sink
    assert_refused_at_the_call(
        reactor, lambda: reactor.listen_udp(0, bad), TypeError, PASS_AN_INSTANCE
    )


def test_connect_udp_refuses_a_protocol_class(reactor: Reactor, no_leaked_sockets: None) -> None:
    bad: Any = Sink
    assert_refused_at_the_call(
        reactor,
        lambda: reactor.connect_udp("127.0.0.1", 9, bad),
        TypeError,
        PASS_AN_INSTANCE,
    )


def test_asyncio_datagram_protocol_class_is_refused_too(
    reactor: Reactor, no_leaked_sockets: None
) -> None:
    bad: Any = asyncio.DatagramProtocol
    assert_refused_at_the_call(
        reactor, lambda: reactor.listen_udp(0, bad), TypeError, r"DatagramProtocol\(\)"
    )


def test_datagram_protocol_instances_are_still_accepted(reactor: Reactor) -> None:
    sink = Sink()
    asyncio_sink: Any = asyncio.DatagramProtocol()  # typed a little differently from ours
    a = reactor.listen_udp(0, sink)
    b = reactor.connect_udp("127.0.0.1", a.get_extra_info("sockname")[1], asyncio_sink)
    run_until(reactor, lambda: reactor.stats()["datagram_endpoints"] == 2, what="two endpoints")
    a.close()
    b.close()
