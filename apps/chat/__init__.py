"""A line-based chat: ``python -m apps.chat server`` and ``python -m apps.chat client``.

The protocol (plain UTF-8 lines over TCP, usable with ``nc`` or ``telnet``)
is described in ``docs/chat-protocol.md``; :mod:`apps.chat.wire` is its code,
:mod:`apps.chat.server` the room, :mod:`apps.chat.client` the terminal client.
"""

from apps.chat.server import ChatConfig, ChatRoom, ChatSession

__all__ = ["ChatConfig", "ChatRoom", "ChatSession"]
