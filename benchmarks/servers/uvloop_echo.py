"""asyncio's Protocol echo on uvloop: the same server as ``asyncio_echo.py``.

python benchmarks/servers/uvloop_echo.py --port 0
python benchmarks/servers/uvloop_echo.py --port 0 --tls-cert server.pem --tls-key server.key
"""

from __future__ import annotations

import sys

from asyncio_echo import main  # this script's folder is on sys.path

if __name__ == "__main__":
    sys.exit(main(use_uvloop=True))
