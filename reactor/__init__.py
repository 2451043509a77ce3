"""A small, fast, Twisted-style event-loop reactor with asyncio's protocol API.

Make a :class:`Reactor`, listen or connect with a protocol factory, and
``run()`` it. Nothing happens at import time and there is no global reactor.
"""

from reactor.backends import available_backends
from reactor.interfaces import (
    Address,
    DatagramProtocolInterface,
    DatagramTransportInterface,
    FactoryArg,
    ProtocolFactoryInterface,
    ProtocolInterface,
    TransportInterface,
)
from reactor.loop import Reactor, ReactorStats
from reactor.stream import StreamTransport
from reactor.tcp import Connector, Listener
from reactor.timers import Handle, PeriodicCall, TimerHandle
from reactor.udp import DatagramTransport
from reactor.unix import UnixConnector, UnixListener

__all__ = [
    "Address",
    "Connector",
    "DatagramProtocolInterface",
    "DatagramTransport",
    "DatagramTransportInterface",
    "FactoryArg",
    "Handle",
    "Listener",
    "PeriodicCall",
    "ProtocolFactoryInterface",
    "ProtocolInterface",
    "Reactor",
    "ReactorStats",
    "StreamTransport",
    "TimerHandle",
    "TransportInterface",
    "UnixConnector",
    "UnixListener",
    "available_backends",
]

__version__ = "0.1.0"
