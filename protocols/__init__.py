"""What users subclass and reuse: protocols, factories, framing, policies, test helpers."""

from protocols.base import ClientFactory, DatagramProtocol, Factory, Protocol
from protocols.framing import (
    ANY_NEWLINE,
    FrameTooLongError,
    FramingError,
    Int8Receiver,
    Int16Receiver,
    Int32Receiver,
    LengthPrefixedReceiver,
    LineReceiver,
    LineTimeoutError,
    LineTooLongError,
    NetstringError,
    NetstringReceiver,
)
from protocols.policies import (
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
    "ANY_NEWLINE",
    "ClientFactory",
    "Clock",
    "ConnectionLimiter",
    "DatagramProtocol",
    "Factory",
    "FrameTooLongError",
    "FramingError",
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
    "LineTimeoutError",
    "LineTooLongError",
    "MemoryTransport",
    "NetstringError",
    "NetstringReceiver",
    "Protocol",
    "ProtocolWrapper",
    "Pump",
    "WrappingTransport",
    "connect_pair",
]
