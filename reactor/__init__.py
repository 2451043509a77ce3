"""A small, fast, Twisted-style event-loop reactor with asyncio's protocol API.

Make a :class:`Reactor`, listen or connect with a protocol factory, and
``run()`` it. Nothing happens at import time and there is no global reactor.
``COMPILED`` says whether this is the build compiled by mypyc
(``REACTOR_COMPILE=1 pip install .``) or the pure-Python one: the same source.
"""

from reactor._build import COMPILED
from reactor.backends import available_backends
from reactor.factory import build_protocol
from reactor.flow import DEFAULT_HIGH_WATER, DEFAULT_LOW_WATER, resolve_limits
from reactor.interfaces import (
    Address,
    Clock,
    DatagramProtocolInterface,
    DatagramTransportInterface,
    FactoryArg,
    ProtocolFactoryInterface,
    ProtocolInterface,
    ReactorPort,
    TransportInterface,
)
from reactor.loop import EventLoop
from reactor.reactor import Reactor, ReactorStats
from reactor.stream import StreamTransport
from reactor.tcp import Connector, Listener
from reactor.timers import Handle, PeriodicCall, TimerHandle, TimerQueue
from reactor.tls import TLSTransport
from reactor.udp import DatagramTransport
from reactor.unix import UnixConnector, UnixListener
from reactor.workers import Supervisor, WorkerContext, WorkerEvent, serve_workers

__all__ = [
    "COMPILED",
    "DEFAULT_HIGH_WATER",
    "DEFAULT_LOW_WATER",
    "Address",
    "Clock",
    "Connector",
    "DatagramProtocolInterface",
    "DatagramTransport",
    "DatagramTransportInterface",
    "EventLoop",
    "FactoryArg",
    "Handle",
    "Listener",
    "PeriodicCall",
    "ProtocolFactoryInterface",
    "ProtocolInterface",
    "Reactor",
    "ReactorPort",
    "ReactorStats",
    "StreamTransport",
    "Supervisor",
    "TLSTransport",
    "TimerHandle",
    "TimerQueue",
    "TransportInterface",
    "UnixConnector",
    "UnixListener",
    "WorkerContext",
    "WorkerEvent",
    "available_backends",
    "build_protocol",
    "resolve_limits",
    "serve_workers",
]

__version__ = "0.1.0"
