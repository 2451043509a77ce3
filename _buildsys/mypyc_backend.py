"""The build backend: setuptools', asking for mypy only for the compiled build.

``pip install .`` builds the pure-Python package and needs nothing but
setuptools. ``REACTOR_COMPILE=1 pip install .`` builds the same source
compiled by mypyc (``setup.py`` lists the modules), which needs mypy in the
build environment: this wrapper adds it to the wheel's build requirements
then, and only then, so the default install never downloads it. A static
``requires = ["setuptools", "mypy"]`` would do the same with no code here,
but every pure install would pay for fetching mypy.

The compiled build is never editable: an editable install would leave the
C extensions beside the sources, where they shadow every later edit of a
``.py`` file. It is refused with a message saying what to do instead.
"""

from __future__ import annotations

import os
from typing import Any

from setuptools import build_meta as _setuptools
from setuptools.build_meta import (
    build_sdist,
    build_wheel,
    get_requires_for_build_sdist,
    prepare_metadata_for_build_editable,
    prepare_metadata_for_build_wheel,
)

__all__ = [
    "build_editable",
    "build_sdist",
    "build_wheel",
    "get_requires_for_build_editable",
    "get_requires_for_build_sdist",
    "get_requires_for_build_wheel",
    "prepare_metadata_for_build_editable",
    "prepare_metadata_for_build_wheel",
]

#: mypy (which ships mypyc) for the compiled build: the versions it is tested with.
COMPILE_REQUIRES = ["mypy>=2.4,<3"]

ConfigSettings = dict[str, Any] | None


def compiling() -> bool:
    """Whether ``REACTOR_COMPILE`` asks for the compiled build."""
    return os.environ.get("REACTOR_COMPILE", "").strip().lower() in ("1", "true", "yes", "on")


def get_requires_for_build_wheel(config_settings: ConfigSettings = None) -> list[str]:
    if not compiling():
        return list(_setuptools.get_requires_for_build_wheel(config_settings))
    # setuptools runs setup.py to collect its requirements, before mypy is
    # installed: let that run see the pure build, then ask for mypy.
    flag = os.environ.pop("REACTOR_COMPILE")
    try:
        base = list(_setuptools.get_requires_for_build_wheel(config_settings))
    finally:
        os.environ["REACTOR_COMPILE"] = flag
    return [*base, *COMPILE_REQUIRES]


def _refuse_editable() -> None:
    if compiling():
        raise RuntimeError(
            "REACTOR_COMPILE=1 cannot make an editable install: the compiled modules would "
            "shadow the .py files you edit. Install it non-editable "
            "(REACTOR_COMPILE=1 pip install .), or drop REACTOR_COMPILE for pip install -e ."
        )


def get_requires_for_build_editable(config_settings: ConfigSettings = None) -> list[str]:
    _refuse_editable()
    return list(_setuptools.get_requires_for_build_editable(config_settings))


def build_editable(
    wheel_directory: str,
    config_settings: ConfigSettings = None,
    metadata_directory: str | None = None,
) -> str:
    _refuse_editable()
    return str(_setuptools.build_editable(wheel_directory, config_settings, metadata_directory))
