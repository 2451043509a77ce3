"""Short and long connections: three requests, each on its own connection
(connect, ask, close), then three requests on one connection that stays open.

The trace shows the cost of the short ones: a handshake and a close per
request, where the long connection pays them once.
"""

from typing import Any

from protocols import Protocol
from reactor import Reactor

REQUESTS = 3


class Echo(Protocol):
    def data_received(self, data: bytes) -> None:
        self.transport.write(data)


class Short(Protocol):
    """One request per connection: connect, ask, read the answer, hang up."""

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        transport.write(b"one request\n")

    def data_received(self, data: bytes) -> None:
        self.transport.close()

    def connection_lost(self, exc: BaseException | None) -> None:
        done.append("short")
        if len(done) < REQUESTS:
            reactor.connect_tcp("127.0.0.1", listener.port, Short)
        else:
            reactor.connect_tcp("127.0.0.1", listener.port, Long)


class Long(Protocol):
    """Every request on the same connection."""

    sent = 0

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        self.ask()

    def ask(self) -> None:
        self.sent += 1
        self.transport.write(b"request %d\n" % self.sent)

    def data_received(self, data: bytes) -> None:
        if self.sent < REQUESTS:
            self.ask()
        else:
            self.transport.close()

    def connection_lost(self, exc: BaseException | None) -> None:
        reactor.stop()


done: list[str] = []
with Reactor(trace=True) as reactor:
    listener = reactor.listen_tcp(0, Echo)
    reactor.connect_tcp("127.0.0.1", listener.port, Short)
    reactor.run()
    while reactor.stats()["lingering"]:
        reactor.run_once(5.0)  # let the last close finish
print(f"{REQUESTS} short requests took {REQUESTS} connections; {REQUESTS} long ones took 1")
