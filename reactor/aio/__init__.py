"""asyncio on the reactor, and the reactor inside someone else's asyncio loop.

``reactor.aio.run(main())`` runs an asyncio program on a new reactor;
``EventLoop(reactor=r)`` runs asyncio code on a reactor you already have, so
native Protocol servers and coroutines share one loop and one thread; and
``host_reactor(r)`` drives a reactor from a running stock asyncio loop
(through the reactor's fd and one timer, no polling). See ``docs/aio.md``.
"""

from reactor.aio.embed import HostedReactor, host_reactor
from reactor.aio.eventloop import EventLoop
from reactor.aio.runner import EventLoopPolicy, new_event_loop, run

__all__ = [
    "EventLoop",
    "EventLoopPolicy",
    "HostedReactor",
    "host_reactor",
    "new_event_loop",
    "run",
]
