"""reactor.aio.EventLoop: asyncio programs on the reactor, on every backend.

Each test makes an EventLoop on a reactor of the parametrized backend, runs
asyncio code on it (streams, TaskGroup, timeouts, threads, subprocesses,
datagrams, Unix sockets), and checks what asyncio promises: results, the
order callbacks run in, and the loop's life cycle. Where the order matters,
the same scenario is run on asyncio's own loop and the two orders compared.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import math
import os
import signal
import socket
import sys
import threading
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest

import reactor.aio
from protocols import Protocol
from reactor import Reactor
from reactor.aio import EventLoop
from tests.conftest import make_reactor

pytestmark = pytest.mark.timeout(60)

_T = TypeVar("_T")


def run(loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, _T]) -> _T:
    """Run ``coro`` on ``loop`` with a deadline, so a broken test fails instead of hanging."""
    return loop.run_until_complete(asyncio.wait_for(coro, 20))


class EchoProtocol(Protocol):
    """A native (reactor-style) echo protocol."""

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)


# ------------------------------------------------------------------ streams


async def _echo_client(port: int, messages: int) -> list[bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    got = []
    for i in range(messages):
        line = b"message %d\n" % i
        writer.write(line)
        await writer.drain()
        got.append(await reader.readline())
    writer.close()
    await writer.wait_closed()
    return got


def test_streams_echo_server_and_client(loop: EventLoop) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(1024):
            writer.write(data)
            await writer.drain()
        writer.close()

    async def main() -> list[list[bytes]]:
        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        async with server:
            return await asyncio.gather(*(_echo_client(port, 20) for _ in range(10)))

    results = run(loop, main())
    assert results == [[b"message %d\n" % i for i in range(20)]] * 10


def test_bulk_transfer_with_flow_control(loop: EventLoop) -> None:
    """4 MiB each way through a streams echo: drain() and pause_reading are exercised."""
    payload = os.urandom(4 * 1024 * 1024)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        writer.close()

    async def main() -> bytes:
        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)

        async def send() -> None:
            for offset in range(0, len(payload), 100_000):
                writer.write(payload[offset : offset + 100_000])
                await writer.drain()
            writer.write_eof()

        sender = asyncio.ensure_future(send())
        received = await reader.read(-1)
        await sender
        writer.close()
        server.close()
        await server.wait_closed()
        return received

    assert run(loop, main()) == payload


# ------------------------------------------------------ tasks, timeouts, threads


def test_taskgroup_queue_lock_and_gather(loop: EventLoop) -> None:
    async def main() -> list[int]:
        queue: asyncio.Queue[int] = asyncio.Queue()
        lock = asyncio.Lock()
        out: list[int] = []

        async def producer() -> None:
            for i in range(50):
                await queue.put(i)
            await queue.put(-1)

        async def consumer() -> None:
            while (item := await queue.get()) >= 0:
                async with lock:
                    out.append(item)

        if sys.version_info >= (3, 11):
            async with asyncio.TaskGroup() as group:
                group.create_task(producer())
                group.create_task(consumer())
        else:  # pragma: no cover - Python 3.10
            await asyncio.gather(producer(), consumer())
        return out

    assert run(loop, main()) == list(range(50))


def test_timeouts_and_sleep_order(loop: EventLoop) -> None:
    async def main() -> list[str]:
        order: list[str] = []

        async def sleeper(name: str, delay: float) -> None:
            await asyncio.sleep(delay)
            order.append(name)

        await asyncio.gather(sleeper("c", 0.03), sleeper("a", 0.01), sleeper("b", 0.02))
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.sleep(10), 0.01)
        if sys.version_info >= (3, 11):
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.01):
                    await asyncio.sleep(10)
        return order

    assert run(loop, main()) == ["a", "b", "c"]


def test_to_thread_executor_and_threadsafe_calls(loop: EventLoop) -> None:
    async def main() -> tuple[int, str, int]:
        in_thread = await asyncio.to_thread(lambda: threading.current_thread().name)
        total = await loop.run_in_executor(None, sum, [1, 2, 3])
        future: asyncio.Future[int] = loop.create_future()
        threading.Thread(target=loop.call_soon_threadsafe, args=(future.set_result, 7)).start()
        return total, in_thread, await future

    total, name, seven = run(loop, main())
    assert total == 6 and name != threading.current_thread().name and seven == 7


def test_run_coroutine_threadsafe_from_another_thread(loop: EventLoop) -> None:
    results: list[int] = []

    async def double(x: int) -> int:
        await asyncio.sleep(0)
        return 2 * x

    def worker() -> None:
        futures = [asyncio.run_coroutine_threadsafe(double(i), loop) for i in range(20)]
        results.extend(f.result(timeout=10) for f in futures)
        loop.call_soon_threadsafe(loop.stop)

    thread = threading.Thread(target=worker)
    thread.start()
    loop.run_forever()
    thread.join(10)
    assert results == [2 * i for i in range(20)]


def test_subprocess_exec_and_shell(loop: EventLoop) -> None:
    async def main() -> tuple[bytes, bytes, int]:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            "import sys; sys.stdout.write(sys.stdin.read().upper())",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        out, _ = await proc.communicate(b"hello reactor")
        shell = await asyncio.create_subprocess_shell(
            "echo shell; exit 3", stdout=asyncio.subprocess.PIPE
        )
        shell_out, _ = await shell.communicate()
        return out, shell_out, shell.returncode or 0

    assert run(loop, main()) == (b"HELLO REACTOR", b"shell\n", 3)


# ---------------------------------------------------- native and asyncio mixed


def test_native_server_and_coroutine_client_share_the_loop(loop: EventLoop) -> None:
    listener = loop.reactor.listen_tcp(0, EchoProtocol)

    async def main() -> list[bytes]:
        assert loop.reactor.is_running()
        return await _echo_client(listener.port, 30)

    assert run(loop, main()) == [b"message %d\n" % i for i in range(30)]


def test_native_client_to_asyncio_server(loop: EventLoop) -> None:
    received: list[bytes] = []

    class Client(Protocol):
        def connection_made(self, transport: Any) -> None:
            transport.write(b"ping\n")

        def data_received(self, data: bytes) -> None:
            received.append(data)
            done.set()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"pong " + await reader.readline())
        await writer.drain()
        writer.close()

    async def main() -> None:
        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        loop.reactor.connect_tcp("127.0.0.1", port, Client)
        await done.wait()
        server.close()
        await server.wait_closed()

    done = asyncio.Event()
    run(loop, main())
    assert b"".join(received) == b"pong ping\n"


def test_native_timers_and_callbacks_run_inside_the_asyncio_loop(loop: EventLoop) -> None:
    seen: list[str] = []

    async def main() -> None:
        fired = asyncio.Event()

        def native_timer() -> None:
            seen.append("native timer")
            fired.set()

        loop.reactor.call_later(0.01, native_timer)
        loop.reactor.call_soon(seen.append, "native soon")
        await fired.wait()

    run(loop, main())
    assert seen == ["native soon", "native timer"]


def test_reactor_stop_stops_the_asyncio_loop(loop: EventLoop) -> None:
    loop.reactor.call_later(0.01, loop.reactor.stop)
    loop.call_later(30, loop.stop)  # a bound for a broken stop
    started = loop.time()
    loop.run_forever()
    assert loop.time() - started < 10
    assert not loop.reactor.is_running()
    # Stopped cleanly: it runs again.
    assert loop.run_until_complete(asyncio.sleep(0, "again")) == "again"


def test_native_callback_errors_reach_the_loops_exception_handler(loop: EventLoop) -> None:
    contexts: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, context: contexts.append(context))

    def boom() -> None:
        raise ValueError("native boom")

    async def main() -> None:
        loop.reactor.call_soon(boom)
        loop.call_soon(lambda: 1 / 0)
        for _ in range(3):
            await asyncio.sleep(0)

    run(loop, main())
    kinds = sorted(type(c["exception"]).__name__ for c in contexts)
    assert kinds == ["ValueError", "ZeroDivisionError"]


# ------------------------------------------------------------------- ordering


def _ordering_scenario(loop: asyncio.AbstractEventLoop) -> list[str]:
    """A turn where a callback, an fd and a timer are all ready: who runs first?"""
    order: list[str] = []
    rsock, wsock = socket.socketpair()
    rsock.setblocking(False)

    def reader() -> None:
        order.append("fd")
        rsock.recv(10)
        loop.remove_reader(rsock)

    def kick() -> None:
        # Make the fd readable, queue a callback and a due timer, all in one
        # callback: the next turn finds all three ready.
        wsock.send(b"x")
        loop.call_soon(order.append, "soon")
        loop.call_at(loop.time() - 1, order.append, "timer")
        loop.call_soon(order.append, "soon 2")

    async def main() -> None:
        loop.add_reader(rsock, reader)
        loop.call_soon(kick)
        while len(order) < 4:
            await asyncio.sleep(0.001)

    try:
        loop.run_until_complete(asyncio.wait_for(main(), 10))
    finally:
        rsock.close()
        wsock.close()
    return order


def test_callback_order_is_asyncios(loop: EventLoop) -> None:
    stock = asyncio.SelectorEventLoop()
    try:
        expected = _ordering_scenario(stock)
    finally:
        stock.close()
    assert expected == ["soon", "soon 2", "fd", "timer"]
    assert _ordering_scenario(loop) == expected


def test_call_soon_context_and_cancel(loop: EventLoop) -> None:
    var: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="unset")
    seen: list[str] = []
    ctx = contextvars.copy_context()
    ctx.run(var.set, "in context")
    loop.call_soon(lambda: seen.append(var.get()), context=ctx)
    loop.call_later(0, lambda: seen.append("later " + var.get()), context=ctx)
    cancelled = loop.call_later(0, seen.append, "cancelled")
    cancelled.cancel()
    cancelled_soon = loop.call_soon(seen.append, "cancelled soon")
    cancelled_soon.cancel()
    loop.run_until_complete(asyncio.sleep(0.01))
    assert seen == ["in context", "later in context"]


def test_timer_limits(loop: EventLoop) -> None:
    never = loop.call_at(math.inf, pytest.fail, "an infinite timer fired")
    assert isinstance(never, asyncio.TimerHandle) and never.when() == math.inf
    past = loop.call_at(-math.inf, lambda: None)
    with pytest.raises(ValueError, match="NaN"):
        loop.call_at(math.nan, lambda: None)
    with pytest.raises(TypeError):
        loop.call_at(None, lambda: None)  # type: ignore[arg-type]
    loop.run_until_complete(asyncio.sleep(0.01))
    never.cancel()
    past.cancel()


# ----------------------------------------------------------------- life cycle


def test_loop_made_reactor_closes_with_the_loop() -> None:
    aio_loop = reactor.aio.new_event_loop()
    r = aio_loop.reactor
    assert isinstance(r, Reactor)
    assert repr(aio_loop).startswith(f"<EventLoop backend={r.backend}")
    aio_loop.close()
    aio_loop.close()  # twice is fine
    assert aio_loop.is_closed() and r.is_closed()


def test_given_reactor_stays_open_without_the_loops_timers(backend: str) -> None:
    r = make_reactor(backend)
    try:
        aio_loop = EventLoop(reactor=r)
        aio_loop.call_later(100, lambda: None)
        aio_loop.close()
        assert not r.is_closed()
        assert r.stats()["timers_pending"] == 0
        # The reactor still works on its own.
        fired: list[int] = []
        r.call_soon(fired.append, 1)
        r.run_once(0)
        assert fired == [1]
    finally:
        r.close()


def test_bad_construction_is_refused() -> None:
    with Reactor() as r, pytest.raises(ValueError, match="not both"):
        EventLoop(reactor=r, backend="poll")
    with pytest.raises(RuntimeError, match="closed"):
        EventLoop(reactor=r)
    with pytest.raises(TypeError, match=r"reactor\.Reactor"):
        EventLoop(reactor=object())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="available backends"):
        EventLoop(backend="nonesuch")


def test_running_reactor_cannot_be_driven_twice(loop: EventLoop) -> None:
    errors: list[str] = []

    def nested() -> None:
        second = EventLoop(reactor=loop.reactor)
        try:
            # A second asyncio loop on the same, running, reactor is refused.
            asyncio.events._set_running_loop(None)
            try:
                second.run_forever()
            except RuntimeError as exc:
                errors.append(str(exc))
            finally:
                asyncio.events._set_running_loop(loop)
        finally:
            second.close()

    loop.call_soon(nested)
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert errors and "already running" in errors[0]


def test_close_while_running_is_refused(loop: EventLoop) -> None:
    errors: list[str] = []

    def try_close() -> None:
        try:
            loop.close()
        except RuntimeError as exc:
            errors.append(str(exc))
        loop.stop()

    loop.call_soon(try_close)
    loop.run_forever()
    assert errors == ["Cannot close a running event loop"]


def test_debug_mode_warns_about_slow_callbacks(
    loop: EventLoop, caplog: pytest.LogCaptureFixture
) -> None:
    loop.set_debug(True)
    loop.slow_callback_duration = 0.01
    # A busy callback, measured on the loop's clock rather than slept.
    loop.call_soon(_busy, 0.02)
    with caplog.at_level(logging.WARNING, logger="asyncio"):
        loop.run_until_complete(asyncio.sleep(0.001))
    assert any("took" in message for message in caplog.messages)


def _busy(seconds: float) -> None:
    import time

    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass


# ---------------------------------------------------- the ways to run a program


async def _which_loop() -> str:
    await asyncio.sleep(0)
    return type(asyncio.get_running_loop()).__name__


def test_run_helper_and_backend() -> None:
    assert reactor.aio.run(_which_loop()) == "EventLoop"
    assert reactor.aio.run(_which_loop(), backend="poll", debug=True) == "EventLoop"
    with pytest.raises(TypeError, match="coroutine"):
        reactor.aio.run(_which_loop)  # type: ignore[arg-type]


@pytest.mark.skipif(sys.version_info < (3, 12), reason="asyncio.run(loop_factory=) is 3.12+")
def test_asyncio_run_with_loop_factory() -> None:
    run_with_factory: Callable[..., str] = asyncio.run  # 3.12's signature
    assert run_with_factory(_which_loop(), loop_factory=reactor.aio.new_event_loop) == "EventLoop"


def test_policy_for_older_code() -> None:
    old = asyncio.get_event_loop_policy()
    asyncio.set_event_loop_policy(reactor.aio.EventLoopPolicy())
    try:
        assert asyncio.run(_which_loop()) == "EventLoop"
    finally:
        asyncio.set_event_loop_policy(old)


# ---------------------------------------------- datagrams, Unix sockets, sockets


def test_datagram_endpoints(loop: EventLoop) -> None:
    class Echo(asyncio.DatagramProtocol):
        def connection_made(self, transport: Any) -> None:
            self.transport = transport

        def datagram_received(self, data: bytes, addr: Any) -> None:
            self.transport.sendto(data.upper(), addr)

    class Client(asyncio.DatagramProtocol):
        def __init__(self) -> None:
            self.got: asyncio.Future[bytes] = loop.create_future()

        def datagram_received(self, data: bytes, addr: Any) -> None:
            self.got.set_result(data)

    async def main() -> bytes:
        server, _ = await loop.create_datagram_endpoint(Echo, local_addr=("127.0.0.1", 0))
        address = server.get_extra_info("sockname")
        client, proto = await loop.create_datagram_endpoint(Client, remote_addr=address)
        client.sendto(b"datagram")
        try:
            return await proto.got
        finally:
            client.close()
            server.close()

    assert run(loop, main()) == b"DATAGRAM"


def test_unix_server_and_connection(loop: EventLoop, tmp_path: Path) -> None:
    path = str(tmp_path / "aio.sock")

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write((await reader.readline()).upper())
        await writer.drain()
        writer.close()

    async def main() -> bytes:
        server = await asyncio.start_unix_server(handle, path)
        async with server:
            reader, writer = await asyncio.open_unix_connection(path)
            writer.write(b"over unix\n")
            line = await reader.readline()
            writer.close()
            await writer.wait_closed()
            return line

    assert run(loop, main()) == b"OVER UNIX\n"


def test_low_level_socket_methods_and_sendfile(loop: EventLoop, tmp_path: Path) -> None:
    data = os.urandom(300_000)
    source = tmp_path / "payload"
    source.write_bytes(data)

    async def main() -> bytes:
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        listener.setblocking(False)
        client = socket.socket()
        client.setblocking(False)
        connect = asyncio.ensure_future(loop.sock_connect(client, listener.getsockname()))
        conn, _ = await loop.sock_accept(listener)
        await connect
        conn.setblocking(False)
        with open(source, "rb") as file:
            sent = await loop.sock_sendfile(client, file)
        assert sent == len(data)
        await loop.sock_sendall(client, b"!")
        client.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := await loop.sock_recv(conn, 65536):
            chunks.append(chunk)
        for sock in (listener, client, conn):
            sock.close()
        return b"".join(chunks)

    assert run(loop, main()) == data + b"!"


@pytest.mark.skipif(not hasattr(signal, "SIGUSR1"), reason="needs SIGUSR1")
def test_signal_handler(loop: EventLoop) -> None:
    caught: list[int] = []

    def handler(number: int) -> None:
        caught.append(number)
        loop.stop()

    loop.add_signal_handler(signal.SIGUSR1, handler, signal.SIGUSR1)
    try:
        loop.call_soon(os.kill, os.getpid(), signal.SIGUSR1)
        loop.call_later(20, loop.stop)
        loop.run_forever()
    finally:
        loop.remove_signal_handler(signal.SIGUSR1)
    assert caught == [signal.SIGUSR1]


def test_a_failed_construction_closes_the_reactor_it_made(monkeypatch: pytest.MonkeyPatch) -> None:
    from reactor.aio import eventloop

    made: list[Reactor] = []

    def making(backend: str | None = None) -> Reactor:
        made.append(Reactor(backend))
        return made[-1]

    def no_socketpair(*args: Any) -> Any:
        raise OSError("no more fds")

    monkeypatch.setattr(eventloop, "Reactor", making)
    monkeypatch.setattr(socket, "socketpair", no_socketpair)
    with pytest.raises(OSError, match="no more fds"):
        EventLoop()
    assert made and made[0].is_closed()
