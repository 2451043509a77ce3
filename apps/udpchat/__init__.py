"""udpchat: chat over UDP, the connectionless counterpart of apps.chat.

``python -m apps.udpchat server`` runs a relay that admits the addresses
that prove they receive (they echo a cookie it sends them) and relays each
message to the others;
``python -m apps.udpchat client HOST PORT --nick NAME`` chats through it
(``--broadcast`` for serverless chat on a LAN). The datagram format is in
:mod:`apps.udpchat.wire` and docs/apps-udpchat.md.
"""

from apps.udpchat.client import ChatClient, LanPeer, LineInput
from apps.udpchat.server import RelayServer

__all__ = ["ChatClient", "LanPeer", "LineInput", "RelayServer"]
