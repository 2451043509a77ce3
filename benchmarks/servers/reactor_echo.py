"""This project's echo server, as the benchmark runs it: ``python -m apps.echo``.

    python benchmarks/servers/reactor_echo.py --port 0 --backend epoll
    python benchmarks/servers/reactor_echo.py --port 0 --tls-cert server.pem --tls-key server.key

A thin wrapper so every server kind has a script here; the benchmark itself
runs ``python -m apps.echo`` directly, which is the same code. With
``--tls-cert FILE --tls-key FILE`` (apps.echo's own options) it serves the
same echo over TLS (``listen_tcp(ssl=...)``, reactor/tls.py): what
``tls_bench.py`` measures.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from apps.echo import main

if __name__ == "__main__":
    sys.exit(main())
