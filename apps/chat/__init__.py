"""A line-based chat: ``python -m apps.chat server`` and ``python -m apps.chat client``.

The protocol (plain UTF-8 lines over TCP, usable with ``nc`` or ``telnet``)
is described in ``docs/chat-protocol.md``; :mod:`apps.chat.wire` is its code,
:mod:`apps.chat.server` the room, :mod:`apps.chat.client` the terminal client.
The room reaches the other chat servers, if any, through a broker
(:mod:`apps.chat.broker`): :class:`LocalBroker` alone, :class:`RedisBroker`
on Redis pub/sub (``--redis URL``; ``docs/scaling.md``).
"""

from apps.chat.broker import Broker, LocalBroker
from apps.chat.redis_broker import RedisBroker
from apps.chat.server import ChatConfig, ChatRoom, ChatSession

__all__ = ["Broker", "ChatConfig", "ChatRoom", "ChatSession", "LocalBroker", "RedisBroker"]
