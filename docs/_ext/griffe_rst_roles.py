"""A Griffe extension for the API reference: this project's reST roles, as Markdown.

The docstrings in ``reactor/`` and ``protocols/`` are written for readers of
the source, in reST's inline style: ``:class:`Reactor```, ``:meth:`stop```,
double-backquoted literals, and ``::`` before an indented code block.
mkdocstrings renders docstrings as Markdown, where double backquotes already
make code and an indented block is already a code block. Before rendering,
this extension rewrites the rest:

* ``:role:`name``` becomes a cross-reference (``[`name`][full.path]``) when
  ``name`` resolves to an object the API reference documents (a public name
  of ``reactor`` or of the ``protocols`` modules, or a public member of one),
  and plain code otherwise (private helpers, the standard library). A leading
  ``~`` shows only the last component, as in Sphinx.
* A paragraph ending in ``::`` ends in ``:`` instead.

It is loaded by mkdocs.yml (``plugins.mkdocstrings.handlers.python.options.
extensions``); the documented names are read from the packages' sources, so
it needs no list of its own.
"""

from __future__ import annotations

import ast
import logging
import re
from pathlib import Path
from typing import Any

import griffe

log = logging.getLogger("mkdocs.plugins.griffe_rst_roles")

ROOT = Path(__file__).resolve().parents[2]
#: The modules whose ``__all__`` the API reference documents.
PROTOCOL_MODULES = (
    "protocols.base",
    "protocols.framing",
    "protocols.policies",
    "protocols.testing",
)

_ROLE = re.compile(r":(?:py:)?(class|meth|func|attr|mod|data|exc|obj):`([^`]+)`")
_LITERAL_BLOCK = re.compile(r"(?m)(\S)::$|^\s*::\s*$")


def _all_names(tree: ast.Module) -> list[str]:
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(target, ast.Name) and target.id == "__all__" for target in node.targets
        ):
            value = ast.literal_eval(node.value)
            return [str(name) for name in value]
    return []


def _reexports(package: str) -> dict[str, str]:
    """``{package.Name: defining.module.Name}`` for the names a package's ``__all__`` re-exports."""
    init = ast.parse((ROOT / package / "__init__.py").read_text(encoding="utf-8"))
    exported = set(_all_names(init))
    names: dict[str, str] = {}
    for node in init.body:
        if isinstance(node, ast.ImportFrom) and node.module:
            for alias in node.names:
                if alias.name in exported:
                    names[f"{package}.{alias.name}"] = f"{node.module}.{alias.name}"
    return names


def documented_names() -> dict[str, str]:
    """Every documented public name, as ``{a path users write: the canonical path}``.

    ``reactor.Reactor`` maps to ``reactor.reactor.Reactor`` (where it is defined,
    and where the reference renders it); a canonical path maps to itself.
    """
    names: dict[str, str] = {}
    for module in PROTOCOL_MODULES:
        path = ROOT.joinpath(*module.split(".")).with_suffix(".py")
        for name in _all_names(ast.parse(path.read_text(encoding="utf-8"))):
            names[f"{module}.{name}"] = f"{module}.{name}"
    for package in ("reactor", "protocols"):
        for spelling, canonical in _reexports(package).items():
            names[spelling] = canonical
            names[canonical] = canonical
    return names


def _literal_block(match: re.Match[str]) -> str:
    """``text::`` becomes ``text:``; a ``::`` alone on its line disappears."""
    return f"{match.group(1)}:" if match.group(1) else ""


class RstRoles(griffe.Extension):
    """Rewrites the docstrings of every object of a loaded package (see the module docstring)."""

    def __init__(self) -> None:
        super().__init__()
        self.documented = documented_names()
        #: ``(object path, role text, why)`` for each role rendered as plain code.
        self.unresolved: list[tuple[str, str, str]] = []

    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        if pkg.name in ("reactor", "protocols"):
            self._rewrite_tree(pkg)

    def _rewrite_tree(self, obj: griffe.Object) -> None:
        if obj.docstring is not None:
            obj.docstring.value = self.rewrite(obj, obj.docstring.value)
        for member in obj.members.values():
            if not member.is_alias and isinstance(member, griffe.Object):
                self._rewrite_tree(member)

    def rewrite(self, obj: griffe.Object, text: str) -> str:
        text = _ROLE.sub(lambda match: self._role(obj, match.group(1), match.group(2)), text)
        return _LITERAL_BLOCK.sub(_literal_block, text)

    def _role(self, obj: griffe.Object, role: str, target: str) -> str:
        short = target.startswith("~")
        target = target.lstrip("~!")
        shown = target.rsplit(".", 1)[-1] if short else target
        if role in ("meth", "func"):
            shown += "()"
        path, why = self._resolve(obj, target)
        if path is None:
            self.unresolved.append((obj.path, f":{role}:`{target}`", why))
            log.debug("%s: %s is shown as code: %s", obj.path, target, why)
            return f"`{shown}`"
        return f"[`{shown}`][{path}]"

    def _resolve(self, obj: griffe.Object, target: str) -> tuple[str | None, str]:
        """The canonical path of ``target`` seen from ``obj`` if the reference documents
        it, else None and why not."""
        head, _, rest = target.partition(".")
        if head in ("reactor", "protocols"):
            path = target
        else:
            try:
                path = obj.resolve(head)
            except griffe.NameResolutionError:
                return None, "not found in scope"
            if rest:
                path = f"{path}.{rest}"
        # Map a re-exported spelling (reactor.Reactor) to where it is rendered.
        parts = path.split(".")
        for cut in range(len(parts), 0, -1):
            prefix = ".".join(parts[:cut])
            canonical = self.documented.get(prefix)
            if canonical is not None:
                tail = parts[cut:]
                if any(part.startswith("_") for part in tail):
                    return None, f"{path} is private"  # not rendered
                return ".".join([canonical, *tail]), ""
        return None, f"{path} is not in the API reference"
