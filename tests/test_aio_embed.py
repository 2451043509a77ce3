"""A Reactor hosted inside a stock asyncio loop: Reactor.fileno(), next_timeout(), host_reactor.

The host is asyncio's own loop (not reactor.aio). A native Protocol server
on the hosted reactor serves an asyncio client in the same thread; the host
sleeps when both are idle (CPU time and reactor turns stay put), and the
reactor's timers fire on time.
"""

from __future__ import annotations

import asyncio
import select
import threading
import time
from collections.abc import Iterator

import pytest

from protocols import Protocol
from reactor import Reactor
from reactor.aio import host_reactor
from tests.conftest import make_reactor

pytestmark = pytest.mark.timeout(120)

# Backends with an fd of their own (the kqueue adapter runs over an emulation
# here, whose fd is not a real kqueue: it cannot be hosted).
FD_BACKENDS = [name for name in ("epoll", "kqueue") if hasattr(select, name)]


class Echo(Protocol):
    def data_received(self, data: bytes) -> None:
        self.transport.write(data)


@pytest.fixture(params=FD_BACKENDS)
def hosted(request: pytest.FixtureRequest) -> Iterator[tuple[asyncio.AbstractEventLoop, Reactor]]:
    """A stock asyncio loop and a reactor on a backend with an fd."""
    loop = asyncio.SelectorEventLoop()
    r = Reactor(backend=request.param)
    try:
        yield loop, r
    finally:
        loop.close()
        r.close()


def test_fileno_and_next_timeout(backend: str) -> None:
    r = make_reactor(backend)
    try:
        if backend in FD_BACKENDS:
            assert r.fileno() >= 0
        elif backend in ("poll", "select"):
            with pytest.raises(NotImplementedError, match="backend='epoll'"):
                r.fileno()
        assert r.next_timeout() is None
        timer = r.call_later(5, lambda: None)
        timeout = r.next_timeout()
        assert timeout is not None and 4 < timeout <= 5
        r.call_at(r.time() - 1, lambda: None)
        assert r.next_timeout() == 0.0
        timer.cancel()
        r.call_soon(lambda: None)
        assert r.next_timeout() == 0.0
    finally:
        r.close()
    with pytest.raises(RuntimeError, match="closed"):
        r.fileno()


def test_fileno_is_readable_when_the_reactor_has_io() -> None:
    with Reactor(backend=FD_BACKENDS[0]) as r:
        fd = r.fileno()
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        assert poller.poll(0) == []
        # A call from another thread wakes it (the waker is in the set).
        thread = threading.Thread(target=r.call_from_thread, args=(lambda: None,))
        thread.start()
        thread.join()
        assert poller.poll(5000) == [(fd, select.POLLIN)]
        r.run_once(0)
        assert poller.poll(0) == []


def test_native_server_serves_10000_round_trips_inside_asyncio(
    hosted: tuple[asyncio.AbstractEventLoop, Reactor],
) -> None:
    loop, r = hosted

    async def main() -> int:
        host = host_reactor(r)
        listener = r.listen_tcp(0, Echo)
        reader, writer = await asyncio.open_connection("127.0.0.1", listener.port)
        done = 0
        for i in range(10_000):
            message = b"%d\n" % i
            writer.write(message)
            if await reader.readexactly(len(message)) == message:
                done += 1
        writer.close()
        await writer.wait_closed()
        host.close()
        return done

    assert loop.run_until_complete(asyncio.wait_for(main(), 100)) == 10_000


def test_idle_host_does_not_poll_and_timers_fire_on_time(
    hosted: tuple[asyncio.AbstractEventLoop, Reactor],
) -> None:
    loop, r = hosted
    fired_at: dict[tuple[str, int], float] = {}

    async def main() -> tuple[int, float]:
        host = host_reactor(r)
        done = asyncio.Event()
        # Timers 50 ms apart over half a second (nothing to do between them),
        # each on the hosted reactor and, as a reference for the machine's
        # own scheduling delay, on the host loop for the same moment.
        start = r.time()
        for k in range(1, 11):
            when = start + 0.05 * k

            def tick(where: str, k: int = k) -> None:
                fired_at[(where, k)] = r.time()
                if len(fired_at) == 20:
                    done.set()

            r.call_at(when, tick, "reactor")
            loop.call_at(when, tick, "asyncio")
        host.wake()  # the timers were scheduled from the host's own code
        cpu = time.process_time()
        await done.wait()
        cpu = time.process_time() - cpu
        turns = host.turns
        host.close()
        return turns, cpu

    turns, cpu = loop.run_until_complete(asyncio.wait_for(main(), 30))
    # One turn per timer (and the wake): no spinning while idle.
    assert turns <= 15, f"{turns} reactor turns for 10 timers"
    assert cpu < 0.1, f"{cpu:.3f} s of CPU while idle for 0.5 s"
    # On time: within 10 ms of when the host loop's own timer for the same
    # moment fired (so a loaded machine's delay, which hits both, is not
    # counted against the hosting), and never early.
    for k in range(1, 11):
        delay = fired_at[("reactor", k)] - fired_at[("asyncio", k)]
        assert -0.010 <= delay <= 0.010, f"timer {k}: {delay * 1000:.1f} ms after the host's"
    assert [fired_at[("reactor", k)] for k in range(1, 11)] == sorted(
        fired_at[("reactor", k)] for k in range(1, 11)
    )


def test_close_and_misuse(hosted: tuple[asyncio.AbstractEventLoop, Reactor]) -> None:
    loop, r = hosted

    async def main() -> None:
        host = host_reactor(r)
        host.close()
        host.close()
        host.wake()  # a no-op once closed
        fired: list[int] = []
        r.call_soon(fired.append, 1)
        await asyncio.sleep(0.01)
        assert fired == []  # no longer driven
        again = host_reactor(r, loop)
        r.close()  # closed under the host: its next turn lets go
        again.wake()
        await asyncio.sleep(0)
        assert again.closed

    loop.run_until_complete(asyncio.wait_for(main(), 20))


def test_running_reactor_cannot_be_hosted() -> None:
    with Reactor(backend=FD_BACKENDS[0]) as r:
        errors: list[str] = []
        loop = asyncio.SelectorEventLoop()

        def attempt() -> None:
            try:
                host_reactor(r, loop)
            except RuntimeError as exc:
                errors.append(str(exc))
            r.stop()

        r.call_soon(attempt)
        r.run()
        loop.close()
        assert errors and "already running" in errors[0]


def test_host_follows_a_rebuilt_backend_and_idle_timers(
    hosted: tuple[asyncio.AbstractEventLoop, Reactor],
) -> None:
    loop, r = hosted

    async def main() -> list[str]:
        host = host_reactor(r)
        seen: list[str] = []
        done = asyncio.Event()
        old_fd = r.fileno()
        # A far timer sets the host's timer; cancelling it leaves nothing to
        # wait for, and the next turn drops the host's timer.
        far = r.call_later(60, seen.append, "far")
        host.wake()
        await asyncio.sleep(0)
        far.cancel()
        host.wake()
        await asyncio.sleep(0)
        # The fd registry replaces its backend (it does so to drop a closed fd
        # epoll keeps reporting): the host moves to the new fd.
        r._fds._rebuild()
        host.wake()
        await asyncio.sleep(0)

        def from_thread() -> None:
            seen.append("woken")
            done.set()

        # Only the new fd can announce this call.
        r.call_from_thread(from_thread)
        await asyncio.wait_for(done.wait(), 10)
        assert r.fileno() != old_fd or r.backend != "epoll"
        host.close()
        return seen

    assert loop.run_until_complete(asyncio.wait_for(main(), 20)) == ["woken"]
