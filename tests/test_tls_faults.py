"""TLS under bad input and misbehaving peers, on every backend.

Each fault closes that one connection with a logged reason, never calls
``connection_made``/``connection_lost`` on a protocol whose handshake
failed, leaks no timer, and leaves a good connection opened before it
working after it.
"""

from __future__ import annotations

import logging
import os
import ssl
from collections.abc import Callable
from typing import Any

import pytest

from reactor import Reactor
from tests.conftest import run_until
from tests.test_tls import connect, quiet, serve
from tests.tls_helpers import Certs, Recorder, make_certs

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def certs() -> Certs:
    return make_certs()


class Raw(Recorder):
    """A plain TCP peer that sends whatever the test tells it to."""

    def __init__(self, send: Callable[[Any], None]) -> None:
        super().__init__()
        self.send = send

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        self.send(transport)


def client_hello(certs: Certs) -> bytes:
    """A real ClientHello, made by an SSLObject that is never finished."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    sslobj = certs.client_context().wrap_bio(incoming, outgoing, server_hostname="localhost")
    with pytest.raises(ssl.SSLWantReadError):
        sslobj.do_handshake()
    return outgoing.read()


def with_good_neighbour(
    reactor: Reactor,
    certs: Certs,
    caplog: pytest.LogCaptureFixture,
    fault: Callable[[int], Recorder],
    expected_log: str,
    bad_made: bool = False,
    mutual: bool = False,
) -> Any:
    """Open a good TLS connection, run ``fault`` against the same server, check
    the log and that the good connection still round-trips."""
    caplog.set_level(logging.INFO, logger="reactor")
    if mutual:  # the server asks for a client certificate from our CA
        listener = serve(reactor, certs, ssl_context=certs.mutual_server_context())
        good = Recorder()
        connect(reactor, listener.port, certs, good, ssl=certs.client_with_cert())
    else:
        listener = serve(reactor, certs)
        good = Recorder()
        connect(reactor, listener.port, certs, good)
    run_until(reactor, lambda: good.made)
    bad = fault(listener.port)
    run_until(reactor, lambda: bad.lost, what="the bad connection's end")
    assert expected_log in caplog.text
    good.transport.write(b"still served")
    run_until(reactor, lambda: good.data == b"still served")
    if not bad_made:  # a failed handshake: only the good connection was made
        assert [s.made for s in listener.servers] == [1] + [0] * (len(listener.servers) - 1)
        assert all(s.lost == [] for s in listener.servers)
    good.transport.close()
    run_until(reactor, lambda: good.lost and listener.servers[0].lost)
    listener.close()
    run_until(reactor, lambda: quiet(reactor), what="no leaked timer or socket")
    return bad


def raw_peer(reactor: Reactor, port: int, send: Callable[[Any], None]) -> Raw:
    peer = Raw(send)
    reactor.connect_tcp("127.0.0.1", port, lambda: peer)
    return peer


def test_plaintext_to_a_tls_port(
    reactor: Reactor, certs: Certs, caplog: pytest.LogCaptureFixture
) -> None:
    def fault(port: int) -> Recorder:
        return raw_peer(reactor, port, lambda t: t.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"))

    with_good_neighbour(reactor, certs, caplog, fault, "TLS handshake with")


def test_random_bytes(reactor: Reactor, certs: Certs, caplog: pytest.LogCaptureFixture) -> None:
    def fault(port: int) -> Recorder:
        # A whole handshake record (type 22, length 3000) of random bytes.
        record = b"\x16\x03\x01" + (3000).to_bytes(2, "big") + os.urandom(3000)
        return raw_peer(reactor, port, lambda t: t.write(record))

    with_good_neighbour(reactor, certs, caplog, fault, "TLS handshake with")


def test_client_hello_cut_in_half(
    reactor: Reactor, certs: Certs, caplog: pytest.LogCaptureFixture
) -> None:
    hello = client_hello(certs)

    def send(transport: Any) -> None:
        transport.write(hello[: len(hello) // 2])
        transport.write_eof()

    def fault(port: int) -> Recorder:
        return raw_peer(reactor, port, send)

    with_good_neighbour(reactor, certs, caplog, fault, "closed the connection during the TLS")


def test_truncated_record_after_the_handshake(
    reactor: Reactor, certs: Certs, caplog: pytest.LogCaptureFixture
) -> None:
    # A real client whose last record is cut short, then the TCP FIN.
    def fault(port: int) -> Recorder:
        client = Recorder()
        connect(reactor, port, certs, client)
        run_until(reactor, lambda: client.made)
        tls = client.transport
        tls._ssl.write(b"a record that will not arrive whole")
        record = tls._outgoing.read()
        plain = tls._plain
        plain.write(record[:-5])
        plain.write_eof()
        return client

    with_good_neighbour(reactor, certs, caplog, fault, "without a TLS close_notify", True)


def test_data_after_close_notify_is_discarded(reactor: Reactor, certs: Certs) -> None:
    server = Recorder()
    listener = reactor.listen_tcp(0, lambda: server, ssl=certs.server_context())
    client = Recorder()
    connect(reactor, listener.port, certs, client)
    run_until(reactor, lambda: client.made and server.made)
    tls = client.transport
    tls._ssl.write(b"before")
    with pytest.raises(ssl.SSLWantReadError):
        tls._ssl.unwrap()
    tls._plain.write(tls._outgoing.read() + b"\x17\x03\x03\x00\x05after")
    run_until(reactor, lambda: server.lost)
    assert server.data == b"before"
    assert server.eof == 1 and server.lost == [None]


def test_handshake_timeout_against_a_silent_client(
    reactor: Reactor, certs: Certs, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="reactor")
    listener = serve(reactor, certs, ssl_handshake_timeout=0.2)
    silent = raw_peer(reactor, listener.port, lambda t: None)
    run_until(reactor, lambda: silent.lost, what="the handshake timeout")
    assert "did not finish within 0.2 s" in caplog.text
    assert [s.made for s in listener.servers] == [0] and listener.servers[0].lost == []
    run_until(reactor, lambda: quiet(reactor))


def test_handshake_timeout_against_a_silent_server(reactor: Reactor, certs: Certs) -> None:
    silent = Recorder()
    listener = reactor.listen_tcp(0, lambda: silent)  # plain TCP: never answers the hello
    client = Recorder()
    outcome = connect(reactor, listener.port, certs, client, ssl_handshake_timeout=0.2)
    run_until(reactor, lambda: outcome)
    assert outcome[0][0] == "failed" and isinstance(outcome[0][1], TimeoutError)
    assert client.made == 0 and client.lost == []
    run_until(reactor, lambda: silent.lost)


@pytest.mark.parametrize(
    ("case", "error"),
    [
        ("wrong host name", "Hostname mismatch"),
        ("unknown CA", "unable to get local issuer certificate"),
    ],
)
def test_client_refuses_a_bad_server_certificate(
    reactor: Reactor, certs: Certs, caplog: pytest.LogCaptureFixture, case: str, error: str
) -> None:
    def fault(port: int) -> Recorder:
        client = Recorder()
        if case == "wrong host name":
            outcome = connect(reactor, port, certs, client, server_hostname="wrong.example")
        else:
            other = ssl.create_default_context()
            certs.other_ca.configure_trust(other)
            outcome = connect(reactor, port, certs, client, ssl=other)
        run_until(reactor, lambda: outcome)
        assert outcome[0][0] == "failed"
        assert isinstance(outcome[0][1], ssl.SSLCertVerificationError)
        assert error in str(outcome[0][1])
        assert client.made == 0 and client.lost == []
        client.lost.append(outcome[0][1])  # with_good_neighbour waits on lost
        return client

    with_good_neighbour(reactor, certs, caplog, fault, error)


def test_client_certificate_accepted(reactor: Reactor, certs: Certs) -> None:
    server = Recorder()
    listener = reactor.listen_tcp(0, lambda: server, ssl=certs.mutual_server_context())
    client = Recorder()
    outcome = connect(reactor, listener.port, certs, client, ssl=certs.client_with_cert())
    run_until(reactor, lambda: outcome and server.made)
    peer = server.transport.get_extra_info("peercert")
    assert peer["subjectAltName"] == (("DNS", "client.example"),)
    client.transport.close()
    run_until(reactor, lambda: server.lost == [None])


def test_expired_client_certificate(
    reactor: Reactor, certs: Certs, caplog: pytest.LogCaptureFixture
) -> None:
    def fault(port: int) -> Recorder:
        client = Recorder()
        outcome = connect(reactor, port, certs, client, ssl=certs.client_with_cert(expired=True))
        # TLS 1.3: the client's handshake may end before the server has
        # checked its certificate; the refusal then arrives as an alert.
        run_until(reactor, lambda: outcome and (outcome[0][0] == "failed" or client.lost))
        if not client.lost:
            client.lost.append(outcome[0][1])
        return client

    with_good_neighbour(reactor, certs, caplog, fault, "certificate has expired", mutual=True)


def test_no_client_certificate_when_one_is_required(
    reactor: Reactor, certs: Certs, caplog: pytest.LogCaptureFixture
) -> None:
    def fault(port: int) -> Recorder:
        ctx = certs.mutual_server_context()
        strict = Recorder()
        listener = reactor.listen_tcp(0, lambda: strict, ssl=ctx)
        client = Recorder()
        connect(reactor, listener.port, certs, client)
        run_until(reactor, lambda: client.lost or strict.lost or "certificate" in caplog.text)
        assert strict.made == 0
        listener.close()
        client.lost.append(None)
        return client

    with_good_neighbour(reactor, certs, caplog, fault, "certificate")
