"""Importing a benchmark script in a test as running it would.

The scripts in ``benchmarks/`` import the scripts beside them by name (they
run as ``python benchmarks/x.py``, with that folder first on ``sys.path``).
A test does the same for as long as it needs the module, then puts
``sys.path`` and ``sys.modules`` back as they were, so that no other test
sees a benchmark module it did not import.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType

BENCH_DIR = Path(__file__).resolve().parents[1] / "benchmarks"


@contextmanager
def bench_script(name: str, *neighbours: str) -> Iterator[ModuleType]:
    """``benchmarks/<name>.py`` imported; ``neighbours`` are the scripts it imports."""
    names = (name, *neighbours)
    saved = {module: sys.modules.pop(module, None) for module in names}
    sys.path.insert(0, str(BENCH_DIR))
    try:
        yield importlib.import_module(name)
    finally:
        sys.path.remove(str(BENCH_DIR))
        for module, previous in saved.items():
            sys.modules.pop(module, None)
            if previous is not None:
                sys.modules[module] = previous
