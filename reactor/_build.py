"""Which build of the package is running: pure Python, or compiled by mypyc.

The same source is either interpreted or, built with ``REACTOR_COMPILE=1``,
compiled to a C extension by mypyc (``setup.py`` lists the modules). This
module is compiled with the others, so the probe below tells which one ran:
mypyc turns a function into a builtin, not a Python ``function``.
"""

from __future__ import annotations

from types import FunctionType

__all__ = ["COMPILED"]


def _probe() -> None:
    """Never called: only its type is looked at."""


#: True when the loop core runs as compiled C (``REACTOR_COMPILE=1`` build).
COMPILED: bool = not isinstance(_probe, FunctionType)
