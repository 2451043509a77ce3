"""Heartbeats and idle kicks: a server closes a silent client, and a client
declares a server dead when its pings go unanswered.

The times are short so that it runs in a second: 0.25 s of silence for the
idle timeout, pings 0.1 s apart and 2 misses for the heartbeat.
"""

from protocols import Protocol
from protocols.framing import LineReceiver
from protocols.policies import HeartbeatMixin, IdleTimeoutMixin
from reactor import Reactor


class Session(IdleTimeoutMixin, LineReceiver):
    """Kicks a client that says nothing for 0.25 s."""

    idle_timeout = 0.25

    def line_received(self, line: bytes) -> None:
        self.send_line(b"you said " + line)


class Silent(Protocol):
    """Connects and never says a word."""

    def connection_lost(self, exc: BaseException | None) -> None:
        print("the silent client was kicked:", exc or "the server closed")


class Deaf(Protocol):
    """A server that reads and never answers: alive to TCP, dead to its client."""


class Pinger(HeartbeatMixin, LineReceiver):
    heartbeat_interval = 0.1
    heartbeat_misses = 2

    def send_ping(self) -> None:
        self.send_line(b"PING")

    def line_received(self, line: bytes) -> None:
        self.pong_received()  # any line proves the server is alive

    def connection_lost(self, exc: BaseException | None) -> None:
        super().connection_lost(exc)
        print("the pinger gave up:", self.heartbeat_reason)
        reactor.stop()


with Reactor(trace=True) as reactor:
    idle = reactor.listen_tcp(0, Session)
    reactor.connect_tcp("127.0.0.1", idle.port, Silent)
    deaf = reactor.listen_tcp(0, Deaf)
    reactor.connect_tcp("127.0.0.1", deaf.port, Pinger)
    reactor.run()
