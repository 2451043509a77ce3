"""Every Python block in the docs runs as pasted: extracted from the Markdown and run here.

The blocks are read from the pages themselves (docs/**/*.md and README.md),
with pymdownx.snippets' includes (``--8<-- "file:section"``) resolved the way
the site shows them, so what is tested is what a reader copies. A ``python``
block is one of (a program that uses ``server.pem`` runs where ``python -m
trustme`` has made the certificates, as the TLS page tells the reader to):

* a whole program (no title, or ``title="name.py"``): it is written to a
  file and run with this interpreter, and must exit with status 0. A server
  (one that listens and runs until Ctrl-C: it installs a signal handler or
  loops ``while True``) must print a line once it listens; the test then
  talks to it and stops it with SIGINT, as a reader would with Ctrl-C. The
  only change made to the text is the port: a fixed port such as 8007 is
  replaced by a free one, so tests never collide;
* an excerpt (``title="excerpt ..."``): part of a program shown where it is
  explained; it must still be valid Python (it is compiled).

The tutorial's programs are run together: the server from the page, then the
client from the page against it. A ``text`` block titled "trace of NAME.py"
is checked against what program NAME.py prints (see the end of this file).

(A block that is only an include, ``--8<-- "file.py"``, is valid Python to
ruff's Markdown formatter, which would rewrite it: such blocks sit between
``<!-- fmt: off -->`` and ``<!-- fmt: on -->``.)
"""

from __future__ import annotations

import ast
import os
import re
import selectors
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(120)

REPO = Path(__file__).resolve().parent.parent
PAGES = [
    *sorted(p for p in (REPO / "docs").rglob("*.md")),
    REPO / "README.md",
]

_FENCE = re.compile(
    r"^(?P<indent>[ \t]*)```(?P<lang>[\w+-]*)(?P<attrs>[^\n]*)\n"
    r"(?P<body>.*?)^(?P=indent)```[ \t]*$",
    re.MULTILINE | re.DOTALL,
)
_TITLE = re.compile(r'title="([^"]*)"')
_SNIPPET = re.compile(r'^(?P<indent>[ \t]*)--8<-- "(?P<path>[^":]+)(?::(?P<section>[\w-]+))?"\s*$')
_MARKER = re.compile(r"--8<-- \[(start|end):[\w-]+\]")
# A fixed port in a listen or connect call of a program: replaced by a free one.
_PORT = re.compile(r"\b(80\d\d|70\d\d)\b")


@dataclass
class Block:
    page: Path
    line: int
    lang: str
    title: str
    code: str

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(REPO)}:{self.line}"

    @property
    def is_excerpt(self) -> bool:
        return self.title.startswith("excerpt")

    @property
    def is_server(self) -> bool:
        """Listens, and runs until stopped (Ctrl-C): not a program that ends by itself."""
        listens = re.search(r"listen_tcp\(|listen_udp\(|listen_unix\(|\.listen\(", self.code)
        forever = "add_signal_handler" in self.code or "while True" in self.code
        return bool(listens and forever)


def _include(path: str, section: str | None) -> str:
    """What ``--8<-- "path:section"`` puts on the page (marker lines dropped)."""
    text = (REPO / path).read_text()
    lines = text.splitlines()
    if section is not None:
        start = next(i for i, ln in enumerate(lines) if f"[start:{section}]" in ln)
        end = next(i for i, ln in enumerate(lines) if f"[end:{section}]" in ln)
        lines = lines[start + 1 : end]
        # snippets keeps the section's indentation; a reader's paste would not
        indent = min((len(ln) - len(ln.lstrip()) for ln in lines if ln.strip()), default=0)
        lines = [ln[indent:] for ln in lines]
    return "\n".join(ln for ln in lines if not _MARKER.search(ln)) + "\n"


def _resolve(body: str) -> str:
    out = []
    for line in body.splitlines():
        m = _SNIPPET.match(line)
        out.append(_include(m["path"], m["section"]) if m else line + "\n")
    return "".join(out)


def blocks(lang: str = "python") -> list[Block]:
    found = []
    for page in PAGES:
        text = page.read_text()
        for m in _FENCE.finditer(text):
            if m["lang"] != lang:
                continue
            title = _TITLE.search(m["attrs"])
            body = "\n".join(ln[len(m["indent"]) :] for ln in m["body"].splitlines())
            found.append(
                Block(
                    page,
                    text.count("\n", 0, m.start()) + 1,
                    m["lang"],
                    title[1] if title else "",
                    _resolve(body),
                )
            )
    return found


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env() -> dict[str, str]:
    path = os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])
    return {**os.environ, "PYTHONPATH": path, "PYTHONUNBUFFERED": "1"}


def _write(block: Block, tmp_path: Path, port: int | None = None) -> Path:
    code = block.code if port is None else _PORT.sub(str(port), block.code)
    name = block.title if block.title.endswith(".py") else "program.py"
    path = tmp_path / name
    path.write_text(code)
    return path


def _first_line(proc: subprocess.Popen[str], limit: float = 30.0) -> str:
    """The program's first line of output (its 'listening on' line), waited for."""
    assert proc.stdout is not None
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        if not sel.select(limit):
            proc.kill()
            pytest.fail(f"no output within {limit} s: {proc.communicate()}")
    return proc.stdout.readline()


def _stop(proc: subprocess.Popen[str]) -> tuple[str, str]:
    proc.send_signal(signal.SIGINT)
    try:
        return proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"did not stop on SIGINT: {out}{err}")


def _exchange(port: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=20) as conn:
        conn.sendall(b"hello\n")
        return conn.recv(4096)


def _ids(items: list[Block]) -> list[str]:
    return [b.where for b in items]


PROGRAMS = [b for b in blocks() if not b.is_excerpt and b.title not in ("kvclient.py",)]
EXCERPTS = [b for b in blocks() if b.is_excerpt]


def test_blocks_are_found() -> None:
    assert len(PROGRAMS) >= 10
    assert any(b.title == "kvstore.py" for b in PROGRAMS)
    assert any(b.title == "kvclient.py" for b in blocks())


@pytest.mark.parametrize("block", EXCERPTS, ids=_ids(EXCERPTS))
def test_excerpts_are_valid_python(block: Block) -> None:
    ast.parse(block.code, filename=block.where)


@pytest.mark.parametrize("block", PROGRAMS, ids=_ids(PROGRAMS))
def test_programs_run_as_pasted(block: Block, tmp_path: Path) -> None:
    if "server.pem" in block.code:
        _make_certificates(tmp_path)
    if block.title == "kvstore.py":
        _tutorial(block, tmp_path)
    elif block.is_server:
        _server(block, tmp_path)
    else:
        path = _write(block, tmp_path)
        proc = subprocess.run(
            [sys.executable, str(path)],
            capture_output=True,
            text=True,
            env=_env(),
            cwd=tmp_path,
            timeout=90,
            check=False,
        )
        assert proc.returncode == 0, f"{block.where} failed:\n{proc.stdout}{proc.stderr}"


def _make_certificates(directory: Path) -> None:
    """What the TLS page tells the reader to run first: ``python -m trustme``
    (server.pem, server.key and the CA's client.pem, for localhost and 127.0.0.1)."""
    subprocess.run([sys.executable, "-m", "trustme", "-q"], cwd=directory, check=True, timeout=60)


def _server(block: Block, tmp_path: Path) -> None:
    port = _free_port()
    fixed = _PORT.search(block.code)
    args = [] if fixed else ["--port", str(port)]
    path = _write(block, tmp_path, port)
    proc = subprocess.Popen(
        [sys.executable, str(path), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
        cwd=tmp_path,
    )
    try:
        banner = _first_line(proc)
        assert str(port) in banner, f"{block.where}: the first line should say the port: {banner!r}"
        assert _exchange(port), f"{block.where}: no reply"
    finally:
        out, err = _stop(proc)
    stopped_by_hand = "KeyboardInterrupt" in err  # a blocking server has no handler
    assert proc.returncode == 0 or stopped_by_hand, f"{block.where}:\n{out}{err}"


def _tutorial(server_block: Block, tmp_path: Path) -> None:
    client_block = next(b for b in blocks() if b.title == "kvclient.py")
    server = _write(server_block, tmp_path)
    client = _write(client_block, tmp_path)
    proc = subprocess.Popen(
        [sys.executable, str(server), "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
        cwd=tmp_path,
    )
    try:
        banner = _first_line(proc)
        assert banner.startswith("kvstore listening on 127.0.0.1:"), banner
        port = banner.split(":")[1].split()[0]
        run = subprocess.run(
            [sys.executable, str(client), "127.0.0.1", port, "SET name alice", "GET name", "KEYS"],
            capture_output=True,
            text=True,
            env=_env(),
            cwd=tmp_path,
            timeout=60,
            check=False,
        )
        assert run.returncode == 0, run.stderr
        assert run.stdout.splitlines() == ["OK", "VALUE alice", "KEYS name"]
    finally:
        _out, err = _stop(proc)
    assert proc.returncode == 0, err


# --------------------------------------------------------------- trace excerpts
#
# A ``text`` block titled "trace of NAME.py" shows trace lines of the program
# block titled NAME.py (on any page). The program is run as pasted and each
# shown line must appear in its trace, in the same order; numbers that differ
# from run to run (ports, fd numbers, poll timeouts) are compared as wildcards,
# and a poll line matches one that lists at least the fds it shows.

_VARYING = (
    (re.compile(r"(\d+\.\d+\.\d+\.\d+|\[[0-9a-f:]+\]):\d+"), r"\1:*"),
    (re.compile(r"\bfd \d+"), "fd *"),
    (re.compile(r"timeout=\d+\.\d+s"), "timeout=*"),
    (re.compile(r"within \d+\.?\d* s"), "within * s"),
    # The cipher suite is whatever this machine's OpenSSL prefers.
    (re.compile(r"(TLS handshake done: \S+), \S+"), r"\1, *"),
)


def _normal(line: str) -> str:
    for pattern, replacement in _VARYING:
        line = pattern.sub(replacement, line)
    return line.strip()


def _matches(shown: str, actual: str) -> bool:
    if shown.startswith("poll ") and actual.startswith("poll "):
        head, _, items = shown.partition(" ready: ")
        a_head, _, a_items = actual.partition(" ready: ")
        if head.split(" -> ")[0] != a_head.split(" -> ")[0]:
            return False
        if not items:
            return shown == actual
        return set(items.split(", ")) <= set(a_items.split(", "))
    return shown == actual


def _traced_run(program: Block, tmp_path: Path) -> list[str]:
    path = _write(program, tmp_path)
    proc = subprocess.run(
        [sys.executable, str(path)],
        capture_output=True,
        text=True,
        env=_env(),
        cwd=tmp_path,
        timeout=90,
        check=False,
    )
    assert proc.returncode == 0, f"{program.where} failed:\n{proc.stdout}{proc.stderr}"
    return [
        _normal(ln[len("trace: ") :]) for ln in proc.stderr.splitlines() if ln.startswith("trace: ")
    ]


TRACES = [b for b in blocks("text") if b.title.startswith("trace of ")]


def test_trace_excerpts_are_found() -> None:
    assert len(TRACES) >= 8


@pytest.mark.parametrize("block", TRACES, ids=_ids(TRACES))
def test_trace_excerpts_are_what_the_program_prints(block: Block, tmp_path: Path) -> None:
    name = block.title.removeprefix("trace of ").split()[0]
    program = next((b for b in blocks() if b.title == name), None)
    assert program is not None, f"{block.where}: no program block titled {name!r}"
    actual = _traced_run(program, tmp_path)
    position = 0
    for shown in (_normal(ln) for ln in block.code.splitlines() if ln.strip()):
        if shown == "...":
            continue  # lines left out on purpose
        while position < len(actual) and not _matches(shown, actual[position]):
            position += 1
        assert position < len(actual), (
            f"{block.where}: {shown!r} is not in the trace of {name} (in this order); it printed:\n"
            + "\n".join(actual)
        )
        position += 1


# ------------------------------------------------------- where in the code
#
# The tour's table names, for each idea, the file and the functions in
# reactor/ (or protocols/) where it happens: each must exist, so the table
# cannot drift from the code. A cell reads "`file.py`: `Class.method`, `_other`;
# `file2.py`: ...", where a bare `_other` is a method of the last class named.


def _definitions(path: Path) -> set[str]:
    """``Class``, ``Class.method``, ``function`` and ``CONSTANT`` names defined in a module."""
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            names.add(node.name)
            for item in node.body:
                if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    names.add(f"{node.name}.{item.name}")
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
    return names


def _code_references() -> list[tuple[str, str]]:
    """(file, name) pairs from the last column of the tour's table."""
    refs = []
    for line in (REPO / "docs/tour/index.md").read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 4 or not cells[3].startswith("`"):
            continue
        file = ""
        for part in cells[3].split(";"):
            if ":" in part:  # "`file.py`: names"; else more names in the same file
                file, _, names = part.partition(":")
                file = file.strip().strip("`")
            else:
                names = part
            cls = ""
            for found in re.findall(r"`([\w.]+)`", names):
                if found.endswith(".py"):
                    continue  # a file named whole (the backends)
                name = found
                if "." in found:
                    cls = found.split(".")[0]
                elif found.lstrip("_")[0].isupper():  # a class, private or not
                    cls = found
                elif cls:
                    name = f"{cls}.{found}"
                refs.append((file, name))
    return refs


def test_the_tours_code_references_exist() -> None:
    refs = _code_references()
    assert len(refs) >= 25
    missing = []
    for file, name in refs:
        path = REPO / file if "/" in file else REPO / "reactor" / file
        if path.is_dir():
            continue  # a package named as a whole (backends/)
        if not path.exists() or name not in _definitions(path):
            missing.append(f"{file}: {name}")
    assert not missing, f"docs/tour/index.md names code that does not exist: {missing}"
