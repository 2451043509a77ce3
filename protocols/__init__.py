"""What users subclass and reuse: protocols, factories, framing, policies, test helpers."""

from protocols.base import ClientFactory, DatagramProtocol, Factory, Protocol
from protocols.framing import (
    Int8Receiver,
    Int16Receiver,
    Int32Receiver,
    LengthPrefixedReceiver,
    LineReceiver,
    NetstringReceiver,
)
from protocols.policies import (
    ClockLike,
    ConnectionLimiter,
    HeartbeatMixin,
    HeartbeatTimeoutError,
    IdleTimeout,
    IdleTimeoutError,
    IdleTimeoutMixin,
    ProtocolWrapper,
    WrappingTransport,
)
from protocols.testing import Clock, MemoryTransport, Pump, connect_pair

__all__ = [
    "ClientFactory",
    "Clock",
    "ClockLike",
    "ConnectionLimiter",
    "DatagramProtocol",
    "Factory",
    "HeartbeatMixin",
    "HeartbeatTimeoutError",
    "IdleTimeout",
    "IdleTimeoutError",
    "IdleTimeoutMixin",
    "Int8Receiver",
    "Int16Receiver",
    "Int32Receiver",
    "LengthPrefixedReceiver",
    "LineReceiver",
    "MemoryTransport",
    "NetstringReceiver",
    "Protocol",
    "ProtocolWrapper",
    "Pump",
    "WrappingTransport",
    "connect_pair",
]
