"""files: serve a directory over TCP, and download from it with verification and resume.

``python -m apps.files serve --root DIR`` serves the regular files under
DIR; ``python -m apps.files get HOST PORT NAME [-o OUT] [--resume]``
downloads one, checking its SHA-256 before renaming it into place;
``python -m apps.files list HOST PORT`` lists them. The protocol is in
:mod:`apps.files.wire` and docs/apps-files.md.
"""

from apps.files.client import GetClient, ListClient
from apps.files.server import FileServerProtocol, FileService, open_under_root

__all__ = ["FileServerProtocol", "FileService", "GetClient", "ListClient", "open_under_root"]
