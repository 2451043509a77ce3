"""A reset (RST): a client closes while data it never read sits in its socket.

Closing a socket with unread data makes the kernel send RST instead of FIN:
the connection ends at once, both ways, and the server's next recv fails.
"""

from typing import Any

from protocols import Protocol
from reactor import Reactor


class Greeter(Protocol):
    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        transport.write(b"welcome\n")

    def connection_lost(self, exc: BaseException | None) -> None:
        print("server saw:", repr(exc))
        reactor.stop()


class Rude(Protocol):
    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        transport.pause_reading()  # leave the welcome unread in the socket
        reactor.call_later(0.1, transport.abort)  # then hang up on it


with Reactor(trace=True) as reactor:
    listener = reactor.listen_tcp(0, Greeter)
    reactor.connect_tcp("127.0.0.1", listener.port, Rude)
    reactor.run()
