"""Hosting a Reactor inside someone else's running asyncio loop, without polling.

The host loop watches the reactor's backend fd (:meth:`Reactor.fileno`,
readable whenever the reactor has I/O, including a wake-up from another
thread) and keeps one timer at :meth:`Reactor.next_timeout`. Either one runs
a reactor turn with ``run_once(0)``; the reactor's own callbacks, timers and
native transports then run in the host loop's thread, between its callbacks.
Nothing runs while both are idle.

Work given to the reactor from the host's own code (``reactor.call_soon``
or ``call_later`` from a coroutine) is not announced by any fd: call
:meth:`HostedReactor.wake` after it, or use ``reactor.call_from_thread``,
which wakes the fd.
"""

from __future__ import annotations

import asyncio

from reactor.reactor import Reactor

__all__ = ["HostedReactor", "host_reactor"]


class HostedReactor:
    """A reactor driven by an asyncio loop; :meth:`close` hands it back."""

    def __init__(self, reactor: Reactor, loop: asyncio.AbstractEventLoop) -> None:
        if reactor.is_running():
            raise RuntimeError(
                "that reactor is already running (reactor.run()); a hosted "
                "reactor is driven by the host loop alone"
            )
        self.reactor = reactor
        self.loop = loop
        self.turns = 0
        """Reactor turns run so far (a test of idleness: it stays put while idle)."""
        self._fd = reactor.fileno()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_when: float | None = None
        self._closed = False
        loop.add_reader(self._fd, self._turn)
        self._schedule()

    def _turn(self) -> None:
        reactor = self.reactor
        if self._closed or reactor.is_closed():
            self.close()
            return
        self.turns += 1
        reactor.run_once(0.0)
        fd = reactor.fileno()
        if fd != self._fd:  # the fd registry rebuilt the backend
            self.loop.remove_reader(self._fd)
            self._fd = fd
            self.loop.add_reader(fd, self._turn)
        self._schedule()

    def _schedule(self) -> None:
        """Keep the one host timer at the reactor's next deadline."""
        timeout = self.reactor.next_timeout()
        if timeout is None:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = self._timer_when = None
            return
        when = self.loop.time() + timeout
        if self._timer is not None:
            if self._timer_when is not None and abs(self._timer_when - when) < 1e-4:
                return  # already set for (about) then
            self._timer.cancel()
        self._timer_when = when
        self._timer = self.loop.call_at(when, self._timer_fired)

    def _timer_fired(self) -> None:
        self._timer = self._timer_when = None
        self._turn()

    @property
    def closed(self) -> bool:
        """Whether the hosting has stopped (close(), or the reactor was closed)."""
        return self._closed

    def wake(self) -> None:
        """Run a turn soon: call after giving the reactor work from the host's own code."""
        if not self._closed:
            self.loop.call_soon(self._turn)

    def close(self) -> None:
        """Stop driving the reactor (it stays open: close it yourself)."""
        if self._closed:
            return
        self._closed = True
        if not self.loop.is_closed():
            self.loop.remove_reader(self._fd)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


def host_reactor(reactor: Reactor, loop: asyncio.AbstractEventLoop | None = None) -> HostedReactor:
    """Drive ``reactor`` from ``loop`` (default: the running asyncio loop).

    The reactor must be on a backend with an fd (epoll, kqueue): see
    :meth:`Reactor.fileno`. Returns the :class:`HostedReactor`; its
    ``close()`` stops the hosting.
    """
    if loop is None:
        loop = asyncio.get_running_loop()
    return HostedReactor(reactor, loop)
