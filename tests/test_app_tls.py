"""The apps over TLS: the servers' --tls-cert/--tls-key, the clients' --tls options."""

from __future__ import annotations

import hashlib
import os
import socket
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.app_helpers import AppGroup, exits_with, run_cli, stop_cleanly
from tests.test_app_files import MIB, make_file
from tests.tls_helpers import Certs, make_certs

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def certs() -> Certs:
    return make_certs()


@pytest.fixture(scope="module")
def pem(certs: Certs, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The server's certificate chain and key, and the CA, as PEM files (what users pass)."""
    root = tmp_path_factory.mktemp("pem")
    paths = {"cert": root / "server.pem", "key": root / "server.key", "ca": root / "ca.pem"}
    certs.server.cert_chain_pems[0].write_to_path(str(paths["cert"]))
    for blob in certs.server.cert_chain_pems[1:]:
        blob.write_to_path(str(paths["cert"]), append=True)
    certs.server.private_key_pem.write_to_path(str(paths["key"]))
    certs.ca.cert_pem.write_to_path(str(paths["ca"]))
    return {name: str(path) for name, path in paths.items()}


@pytest.fixture
def apps() -> Iterator[AppGroup]:
    with AppGroup() as group:
        yield group


def tls_exchange(port: int, certs: Certs, payload: bytes) -> bytes:
    """Send ``payload`` over a verified TLS connection; returns what comes back to the close."""
    context = certs.client_context()
    with (
        socket.create_connection(("127.0.0.1", port), timeout=20) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as conn,
    ):
        conn.sendall(payload)
        received = b""
        while len(received) < len(payload):
            chunk = conn.recv(65536)
            if not chunk:
                break
            received += chunk
        return received


def test_echo_over_tls(apps: AppGroup, certs: Certs, pem: dict[str, str]) -> None:
    server = apps.server("apps.echo", "--tls-cert", pem["cert"], "--tls-key", pem["key"])
    assert "echo server (TLS)" in server.listening
    payload = os.urandom(300_000)
    assert tls_exchange(server.port, certs, payload) == payload
    # Plaintext to the TLS port closes that connection only.
    with socket.create_connection(("127.0.0.1", server.port), timeout=20) as plain:
        plain.sendall(b"hello in the clear\n")
        answer = b""
        while chunk := plain.recv(100):  # to the close (a TLS alert at most), within 20 s
            answer += chunk
        assert b"clear" not in answer
    assert tls_exchange(server.port, certs, b"still here") == b"still here"
    stop_cleanly(server)


def test_echo_workers_over_tls(apps: AppGroup, certs: Certs, pem: dict[str, str]) -> None:
    server = apps.server(
        "apps.echo", "--workers", "2", "--tls-cert", pem["cert"], "--tls-key", pem["key"]
    )
    for i in range(6):
        assert tls_exchange(server.port, certs, b"ping %d" % i) == b"ping %d" % i
    stop_cleanly(server)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--tls-cert", "x.pem"], "--tls-cert and --tls-key go together"),
        (["--tls-cert", "/nonexistent.pem", "--tls-key", "/nonexistent.key"], "cannot load"),
        (["--udp", "--tls-cert", "CERT", "--tls-key", "KEY"], "no DTLS"),
    ],
)
def test_echo_tls_option_errors(pem: dict[str, str], args: list[str], message: str) -> None:
    args = [pem["cert"] if a == "CERT" else pem["key"] if a == "KEY" else a for a in args]
    result = run_cli("apps.echo", "--port", "0", *args)
    assert message in exits_with(result, 2)


def test_file_download_over_tls(
    apps: AppGroup, certs: Certs, pem: dict[str, str], tmp_path: Path
) -> None:
    root = tmp_path / "root"
    root.mkdir()
    data = os.urandom(3 << 20)
    (root / "blob.bin").write_bytes(data)
    server = apps.server(
        "apps.files",
        "serve",
        "--root",
        str(root),
        "--tls-cert",
        pem["cert"],
        "--tls-key",
        pem["key"],
    )
    assert "TLS file server" in server.listening
    port = str(server.port)
    out = tmp_path / "out.bin"
    common = ["127.0.0.1", port]
    result = run_cli(
        "apps.files",
        "get",
        *common,
        "blob.bin",
        "-o",
        str(out),
        "--tls",
        "--cafile",
        pem["ca"],
        "--server-name",
        "localhost",
    )
    exits_with(result, 0)
    assert hashlib.sha256(out.read_bytes()).digest() == hashlib.sha256(data).digest()
    # --insecure works against it, with a warning.
    listing = run_cli("apps.files", "list", *common, "--insecure")
    assert "--insecure" in exits_with(listing, 0)
    assert "blob.bin" in listing.stdout
    # A client that does not trust the CA is refused, and says why.
    untrusted = run_cli("apps.files", "list", *common, "--tls")
    assert "certificate verify failed" in exits_with(untrusted, 1)
    # A plain client against the TLS server fails, and the server goes on.
    plain = run_cli("apps.files", "list", *common, "--timeout", "5")
    assert plain.returncode != 0
    again = run_cli(
        "apps.files", "list", *common, "--cafile", pem["ca"], "--server-name", "localhost"
    )
    assert "blob.bin" in again.stdout
    stop_cleanly(server)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--insecure", "--cafile", "x.pem"], "contradict"),
        (["--server-name", "localhost"], "--server-name needs --tls"),
        (["--cafile", "/nonexistent.pem"], "cannot load the CA file"),
    ],
)
def test_client_tls_option_errors(args: list[str], message: str) -> None:
    result = run_cli("apps.files", "list", "127.0.0.1", "1", *args)
    assert message in exits_with(result, 2)


def test_the_system_store_is_the_default(certs: Certs) -> None:
    """--tls without --cafile verifies against the system store (ssl's default context)."""
    from argparse import Namespace

    from apps._tls import client_tls_context

    context = client_tls_context(
        "test", Namespace(tls=True, cafile=None, insecure=False, server_name=None)
    )
    assert context is not None
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname


def test_256_mib_download_over_tls(
    apps: AppGroup, certs: Certs, pem: dict[str, str], tmp_path: Path
) -> None:
    root = tmp_path / "root"
    root.mkdir()
    digest = make_file(root / "big.bin", 256 * MIB)
    server = apps.server(
        "apps.files",
        "serve",
        "--root",
        str(root),
        "--tls-cert",
        pem["cert"],
        "--tls-key",
        pem["key"],
    )
    out = tmp_path / "big.bin"
    result = run_cli(
        "apps.files",
        "get",
        "127.0.0.1",
        str(server.port),
        "big.bin",
        "-o",
        str(out),
        "--cafile",
        pem["ca"],
        "--server-name",
        "localhost",
        timeout=110,
    )
    exits_with(result, 0)
    assert _sha256_file(out) == digest
    stop_cleanly(server)


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def test_chat_session_over_tls(apps: AppGroup, pem: dict[str, str]) -> None:
    server = apps.server("apps.chat", "server", "--tls-cert", pem["cert"], "--tls-key", pem["key"])
    assert "chat server (TLS)" in server.listening
    tls = ["--tls", "--cafile", pem["ca"], "--server-name", "localhost"]
    where = ["127.0.0.1", str(server.port)]
    alice = apps.start(
        "apps.chat", "client", *where, "--nick", "alice", *tls, stdin=subprocess.PIPE
    )
    alice.expect("welcome")
    bob = apps.start("apps.chat", "client", *where, "--nick", "bob", *tls, stdin=subprocess.PIPE)
    bob.expect("welcome")
    alice.expect(r"\* bob joined")
    bob.send("hello over TLS\n")
    alice.expect("<bob> hello over TLS")
    alice.send("/msg bob psst\n")
    bob.expect("<- alice: psst")
    bob.close_stdin()  # end of input: bob quits
    alice.expect(r"\* bob left")
    exits_with_code = bob.finish()
    assert exits_with_code[0] == 0, exits_with_code[1]
    alice.close_stdin()
    assert alice.finish()[0] == 0
    # A client that does not trust the server's CA cannot join, and says why.
    refused = run_cli("apps.chat", "client", *where, "--nick", "eve", "--tls")
    assert "certificate verify failed" in exits_with(refused, 1)
    stop_cleanly(server)
