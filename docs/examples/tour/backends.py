"""select, poll and epoll: the same loop on each backend, and where select stops.

The protocols cannot tell the backends apart: the trace of one echo is the
same line for line. What differs is the cost of each wait (select and poll
hand the kernel the whole list of fds on every call, epoll keeps it in the
kernel) and a hard limit of select: it cannot watch an fd numbered 1024
(FD_SETSIZE) or above.
"""

import resource
import socket
from typing import Any

from protocols import Protocol
from reactor import Reactor, available_backends


class Echo(Protocol):
    def data_received(self, data: bytes) -> None:
        self.transport.write(data)


class Ping(Protocol):
    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        transport.write(b"ping")

    def data_received(self, data: bytes) -> None:
        self.transport.abort()

    def connection_lost(self, exc: BaseException | None) -> None:
        self.transport.get_extra_info("reactor").stop()


for name in available_backends():  # e.g. ('epoll', 'poll', 'select') on Linux
    print("backend:", name)
    with Reactor(backend=name, trace=True) as reactor:
        listener = reactor.listen_tcp(0, Echo)
        reactor.connect_tcp("127.0.0.1", listener.port, Ping)
        reactor.run()

# Past FD_SETSIZE: take 1,030 descriptors, so the next socket's number is >= 1024.
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 4096)), hard))
for name in ("select", "epoll"):
    with Reactor(backend=name) as reactor:
        spare = [socket.socket() for _ in range(1030)]
        try:
            reactor.listen_tcp(0, Echo)
            print(f"{name}: listening on a socket numbered above {spare[-1].fileno()}")
        except (OSError, ValueError) as exc:
            print(f"{name}: {exc}")
        for s in spare:
            s.close()
