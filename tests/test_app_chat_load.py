"""The chat server under load: 200 clients each send 50 numbered messages.

Every client must receive every message (its own included: the server
echoes to the sender too), none lost, none reordered per sender: 200 x 50 =
10,000 lines sent, 2,000,000 lines received. The 200 clients are plain
sockets driven by one ``selectors`` loop in the test process, reading in
bulk and checking the lines with one regular-expression scan per chunk.
"""

from __future__ import annotations

import re
import selectors
import signal
import socket
import time
from operator import itemgetter

import pytest

from tests.test_app_chat import WAIT, ChatServer

pytestmark = pytest.mark.timeout(120)

CLIENTS = 200
MESSAGES = 50
ROUNDS = 5  # messages are sent in rounds across all clients, so they interleave
MESSAGE_RE = re.compile(rb"^<c(\d{3}> \d+)\r$", re.MULTILINE)
ERROR_RE = re.compile(rb"^! .*$", re.MULTILINE)
DEADLINE = 90.0


def _read_until(
    sel: selectors.BaseSelector, done: list[bool], handle: object, what: str, deadline: float
) -> None:
    """Run the selector loop, calling ``handle(i, chunk)``, until every ``done[i]``."""
    assert callable(handle)
    while not all(done):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            pytest.fail(f"timed out waiting for {what}: {done.count(False)} clients not done")
        for key, _ in sel.select(min(remaining, 1.0)):
            sock: socket.socket = key.fileobj  # type: ignore[assignment]
            chunk = sock.recv(1 << 20)
            if not chunk:
                pytest.fail(f"client {key.data} was disconnected while waiting for {what}")
            handle(key.data, chunk)


def test_200_clients_50_messages_each_nothing_lost_nothing_reordered() -> None:
    timings: dict[str, float] = {}
    start = time.monotonic()
    deadline = start + DEADLINE
    with ChatServer("--max-per-ip", str(CLIENTS + 10)) as server:
        socks: list[socket.socket] = []
        sel = selectors.DefaultSelector()
        try:
            # Connect everyone and ask for a nick.
            for i in range(CLIENTS):
                sock = socket.create_connection(("127.0.0.1", server.port), timeout=WAIT)
                socks.append(sock)
                sock.sendall(b"/nick c%03d\n" % i)
                sel.register(sock, selectors.EVENT_READ, i)

            # Wait until each has seen its own join: then all are in the room.
            pending = [b""] * CLIENTS
            joined = [False] * CLIENTS

            def on_join_data(i: int, chunk: bytes) -> None:
                pending[i] += chunk
                if b"* c%03d joined\r\n" % i in pending[i]:
                    joined[i] = True
                assert b"! error" not in pending[i], pending[i]

            _read_until(sel, joined, on_join_data, "the joins", deadline)
            for i in range(CLIENTS):  # keep only an unfinished line, if any
                pending[i] = pending[i][pending[i].rfind(b"\n") + 1 :]
            timings["connect and join"] = time.monotonic() - start

            # Everyone sends, in rounds so that the senders interleave.
            t0 = time.monotonic()
            per_round = MESSAGES // ROUNDS
            for r in range(ROUNDS):
                first = r * per_round
                for sock in socks:
                    sock.sendall(b"".join(b"%d\n" % seq for seq in range(first, first + per_round)))
            timings["send"] = time.monotonic() - t0

            # Everyone reads everything. While reading, only lines are counted
            # (every line from now on should be a message); the check comes after.
            t0 = time.monotonic()
            total = CLIENTS * MESSAGES
            chunks: list[list[bytes]] = [[] for _ in range(CLIENTS)]
            lines_in = [0] * CLIENTS
            complete = [False] * CLIENTS

            def on_message_data(i: int, chunk: bytes) -> None:
                data = pending[i] + chunk
                cut = data.rfind(b"\n") + 1
                pending[i] = data[cut:]
                chunks[i].append(data[:cut])
                lines_in[i] += data.count(b"\n", 0, cut)
                complete[i] = lines_in[i] >= total

            _read_until(sel, complete, on_message_data, "the messages", deadline)
            timings["receive"] = time.monotonic() - t0

            # Per receiver: sorting its messages ("SSS> N", sender and number) by
            # sender is stable, so they must then read c000's 0..49, c001's 0..49, ...
            t0 = time.monotonic()
            wanted = [b"%03d> %d" % (s, n) for s in range(CLIENTS) for n in range(MESSAGES)]
            by_sender = itemgetter(slice(0, 3))
            for i in range(CLIENTS):
                data = b"".join(chunks[i])
                assert not ERROR_RE.findall(data)
                got = MESSAGE_RE.findall(data)
                assert len(got) == total, f"client {i}: {len(got)} messages, not {total}"
                got.sort(key=by_sender)
                if got != wanted:
                    bad = next(k for k in range(total) if got[k] != wanted[k])
                    pytest.fail(f"client {i}: got <c{got[bad]!r}> where <c{wanted[bad]!r}> was due")
            timings["check"] = time.monotonic() - t0

            t0 = time.monotonic()
            assert server.stop(signal.SIGTERM) == 0
            timings["shutdown"] = time.monotonic() - t0
        finally:
            sel.close()
            for sock in socks:
                sock.close()
    timings["total"] = time.monotonic() - start
    print(" ".join(f"{name}: {value:.2f} s;" for name, value in timings.items()))
