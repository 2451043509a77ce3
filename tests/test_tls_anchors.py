"""The scenarios of the anchors' TLS test lists, ported, on every backend.

CPython's ``Lib/test/test_asyncio/test_ssl.py`` (22 tests) and uvloop's
``tests/test_tcp.py`` ``_TestSSL`` (28) were used as a checklist. Where each
scenario lives (this file unless named):

================================================  ===============================================
anchor test                                       here
================================================  ===============================================
create_server_ssl_1                               test_tls_interop: blocking ssl clients vs ours
create_connection_ssl_1                           test_tls_interop: ours vs a blocking ssl server
create_connection_ssl_slow_handshake              test_tls_faults: handshake timeout, silent server
create_connection_ssl_failed_certificate          test_tls_faults: bad server certificates
start_tls_wrong_args                              test_tls: start_tls refused on a closing transport
ssl_handshake_timeout                             test_tls_faults: handshake timeout, silent client
ssl_handshake_connection_lost                     test_connection_lost_during_the_handshake
ssl_connect_accepted_socket                       test_tls_interop: listen_socket with TLS
start_tls_client_corrupted_ssl                    test_a_corrupted_record_ends_that_connection
start_tls_client_reg_proto_1                      test_tls: start_tls after a plain reply
create_connection_memory_leak                     test_nothing_is_kept_after_the_close
start_tls_client_buf_proto_1                      test_start_tls_then_a_buffered_protocol
start_tls_slow_client_cancel                      test_tls_edges: handshake timeout (start_tls)
start_tls_server_1                                test_tls: STARTTLS tests
create_server_ssl_over_ssl                        test_tls_interop: TLS over TLS
renegotiation                                     not applicable: the ssl module cannot start one
shutdown_timeout                                  test_tls: shutdown timeout, peer never answers
shutdown_cleanly                                  test_tls: round trips (close_notify both ways)
write_to_closed_transport                         test_writes_after_the_end_are_dropped
flush_before_shutdown                             test_tls: close flushes a large buffer
remote_shutdown_receives_trailing_data            test_the_peers_close_notify_waits_for_our_data
connect_timeout_warning                           not applicable: asyncio's deprecated timeout=
handshake_timeout_handler_leak                    every test_tls* test ends with no timer pending
shutdown_timeout_handler_leak                     idem (``quiet()``)
shutdown_timeout_handler_not_set                  test_no_shutdown_timer_without_a_close
shutdown_while_pause_reading                      test_close_while_paused_for_reading
bpo_39951_discard_trailing_data                   test_tls_faults: data after close_notify
first_data_after_wakeup                           test_data_right_behind_the_handshake
================================================  ===============================================
"""

from __future__ import annotations

import gc
import logging
import socket
import ssl
from typing import Any

import pytest

from reactor import Reactor, TLSTransport
from tests.conftest import run_until
from tests.test_tls import connect, quiet, serve
from tests.tls_helpers import Certs, Recorder, make_certs

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def certs() -> Certs:
    return make_certs()


def pair(reactor: Reactor, certs: Certs, server: Any = Recorder, **kwargs: Any) -> Any:
    listener = serve(reactor, certs, factory=server, **kwargs)
    client = Recorder()
    connect(reactor, listener.port, certs, client)
    run_until(reactor, lambda: client.made and listener.servers and listener.servers[0].made)
    return client, listener.servers[0], listener


def test_connection_lost_during_the_handshake(reactor: Reactor, certs: Certs) -> None:
    class Hangup(Recorder):
        def data_received(self, data: bytes) -> None:  # the ClientHello: hang up on it
            self.transport.abort()

    listener = reactor.listen_tcp(0, Hangup)
    client = Recorder()
    outcome = connect(reactor, listener.port, certs, client)
    run_until(reactor, lambda: outcome)
    assert outcome[0][0] == "failed"
    assert isinstance(outcome[0][1], (ConnectionError, ssl.SSLError))
    assert client.made == 0 and client.lost == []
    run_until(reactor, lambda: quiet(reactor))


def test_a_corrupted_record_ends_that_connection(
    reactor: Reactor, certs: Certs, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="reactor")
    client, server, _ = pair(reactor, certs)
    tls = client.transport
    tls._ssl.write(b"a record that will be damaged on the way")
    record = bytearray(tls._outgoing.read())
    record[-3] ^= 0xFF  # the authentication tag no longer matches
    tls._plain.write(bytes(record))
    run_until(reactor, lambda: server.lost)
    assert isinstance(server.lost[0], ssl.SSLError)
    assert server.data == b""  # nothing of the damaged record is delivered
    assert "closing that connection" in caplog.text
    run_until(reactor, lambda: client.lost)


def test_nothing_is_kept_after_the_close(reactor: Reactor, certs: Certs) -> None:
    client, server, listener = pair(reactor, certs)
    ids = {id(client.transport), id(server.transport)}
    client.transport.close()
    run_until(reactor, lambda: client.lost and server.lost)
    listener.close()
    run_until(reactor, lambda: quiet(reactor))
    client.transport = server.transport = None
    listener.servers.clear()
    gc.collect()
    # Looked for among the objects the collector tracks, not through weak
    # references: a compiled (mypyc) TLSTransport takes none.
    assert not [o for o in gc.get_objects() if type(o) is TLSTransport and id(o) in ids]


def test_start_tls_then_a_buffered_protocol(reactor: Reactor, certs: Certs) -> None:
    class Buffered:
        def __init__(self) -> None:
            self.buf = bytearray(7)  # small: many reads per record
            self.got = bytearray()

        def get_buffer(self, sizehint: int) -> bytearray:
            return self.buf

        def buffer_updated(self, n: int) -> None:
            self.got += self.buf[:n]

        def eof_received(self) -> None:
            return None

        def connection_lost(self, exc: BaseException | None) -> None:
            pass

    server = Recorder()
    listener = reactor.listen_tcp(0, lambda: server)
    client = Recorder()
    reactor.connect_tcp("127.0.0.1", listener.port, lambda: client)
    run_until(reactor, lambda: client.made and server.made)
    server_tls = server.transport.start_tls(certs.server_context(), server_side=True)
    tls = client.transport.start_tls(certs.client_context(), server_hostname="localhost")
    buffered = Buffered()
    tls.set_protocol(buffered)
    payload = b"to a buffered protocol, after the upgrade" * 50
    server_tls.write(payload)
    run_until(reactor, lambda: len(buffered.got) == len(payload))
    assert bytes(buffered.got) == payload
    tls.abort()
    run_until(reactor, lambda: server.lost)


def test_writes_after_the_end_are_dropped(
    reactor: Reactor, certs: Certs, caplog: pytest.LogCaptureFixture
) -> None:
    client, server, _ = pair(reactor, certs)
    server.transport.abort()
    run_until(reactor, lambda: client.lost)
    client.transport.write(b"into the void")  # no exception: dropped, said once
    client.transport.write(b"and again")
    assert caplog.text.count("was dropped") == 1


def test_the_peers_close_notify_waits_for_our_data(reactor: Reactor, certs: Certs) -> None:
    # The server has much to send when the client's close_notify arrives:
    # everything is sent before the server's own close_notify.
    client, server, _ = pair(reactor, certs)
    client.transport.pause_reading()
    sock = server.transport.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16384)
    payload = bytes(range(256)) * 32768  # 8 MiB: far more than the socket buffers hold
    server.transport.write(payload)
    assert server.transport.get_write_buffer_size() > 0
    # The client sends close_notify by hand (its TLS object), and keeps reading.
    tls = client.transport
    with pytest.raises(ssl.SSLWantReadError):
        tls._ssl.unwrap()
    tls._plain.write(tls._outgoing.read())
    tls._state = "open"  # as a peer that reads on after sending close_notify
    client.transport.resume_reading()
    run_until(reactor, lambda: server.eof == 1)
    run_until(reactor, lambda: len(client.data) == len(payload))
    assert bytes(client.data) == payload
    run_until(reactor, lambda: server.lost == [None])


def test_no_shutdown_timer_without_a_close(reactor: Reactor, certs: Certs) -> None:
    client, server, _ = pair(reactor, certs)
    client.transport.write(b"x")
    run_until(reactor, lambda: server.data == b"x")
    assert reactor.stats()["timers_pending"] == 0  # no handshake timer left, no shutdown timer
    client.transport.close()
    run_until(reactor, lambda: quiet(reactor))


def test_close_while_paused_for_reading(reactor: Reactor, certs: Certs) -> None:
    client, server, _ = pair(reactor, certs)
    server.transport.pause_reading()
    client.transport.write(b"unread")
    server.transport.close()  # must still read the client's close_notify
    run_until(reactor, lambda: server.lost and client.lost)
    assert server.lost == [None] and client.lost == [None]
    assert server.data == b""


def test_data_right_behind_the_handshake(reactor: Reactor, certs: Certs) -> None:
    # The client writes before its handshake ends: the data follows its
    # Finished message at once, often in the same segment, and must be
    # delivered then, not when more data happens to arrive.
    silent_until_tls = Recorder()
    listener = reactor.listen_tcp(0, lambda: silent_until_tls)
    client = Recorder()
    reactor.connect_tcp("127.0.0.1", listener.port, lambda: client)
    run_until(reactor, lambda: client.made and silent_until_tls.made)
    server_tls = silent_until_tls.transport.start_tls(certs.server_context(), server_side=True)
    tls = client.transport.start_tls(certs.client_context(), server_hostname="localhost")
    tls.write(b"first words")
    run_until(reactor, lambda: silent_until_tls.data == b"first words")
    assert server_tls.get_extra_info("cipher") is not None
    tls.close()
    run_until(reactor, lambda: silent_until_tls.lost == [None])


def test_a_socket_error_ends_the_tls_connection(reactor: Reactor, certs: Certs) -> None:
    client, server, _ = pair(reactor, certs)
    sock = server.transport.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")
    server.transport.abort()  # a reset
    run_until(reactor, lambda: client.lost)
    assert client.transport.is_closing()
