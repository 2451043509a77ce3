"""The asyncio echo servers on asyncio's loop, uvloop and reactor.aio, in both harnesses.

    python benchmarks/servers/aio_bench.py echo --scenarios pingpong-1k --repeats 3 --duration 4
    python benchmarks/servers/aio_bench.py callgrind --scenarios pingpong-1k

Adds six servers to ``echo_bench.py`` (as ``--extra`` servers) or to
``callgrind_bench.py`` (instructions per request): asyncio's Protocol echo
(``aio_echo.py``) and a streams echo (``aio_streams_echo.py``), each on
asyncio's loop, uvloop and ``reactor.aio``. The harness's own ``asyncio``
server is the Protocol echo on asyncio's loop, the baseline of the ratios.
Everything after the first word goes to the harness.
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

#: name -> (script, loop); "asyncio" (the Protocol echo on asyncio) is the harness's own.
AIO_SERVERS = {
    "protocol-uvloop": ("aio_echo.py", "uvloop"),
    "protocol-reactor-aio": ("aio_echo.py", "reactor"),
    "streams-asyncio": ("aio_streams_echo.py", "asyncio"),
    "streams-uvloop": ("aio_streams_echo.py", "uvloop"),
    "streams-reactor-aio": ("aio_streams_echo.py", "reactor"),
}


def argv_for(name: str) -> list[str]:
    script, loop = AIO_SERVERS[name]
    return [str(HERE / script), "--host", "127.0.0.1", "--port", "0", "--loop", loop]


def echo(argv: list[str]) -> int:
    import shlex

    import echo_bench

    extras = []
    for name in AIO_SERVERS:
        command = " ".join(shlex.quote(part) for part in [sys.executable, *argv_for(name)])
        extras += ["--extra", f"{name}={command}"]
    if "--servers" not in argv:
        argv = [*argv, "--servers", "asyncio"]
    return int(echo_bench.main([*argv, *extras]))


def callgrind(argv: list[str]) -> int:
    import callgrind_bench
    from echo_bench import ServerKind

    original = callgrind_bench.server_kinds

    def server_kinds(project: Path) -> dict[str, ServerKind]:
        kinds = original(project)
        for name in AIO_SERVERS:
            needs = "uvloop" if "uvloop" in name else None
            kinds[name] = ServerKind(name, argv_for(name), needs)
        return kinds

    callgrind_bench.server_kinds = server_kinds
    setattr(callgrind_bench, "SERVER_NAMES", (*callgrind_bench.SERVER_NAMES, *AIO_SERVERS))  # noqa: B010
    if "--servers" not in argv:
        argv = [*argv, "--servers", ",".join(["asyncio", *AIO_SERVERS])]
    return int(callgrind_bench.main(argv))


if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in ("echo", "callgrind"):
        raise SystemExit(__doc__)
    harness = echo if sys.argv[1] == "echo" else callgrind
    sys.exit(harness(sys.argv[2:]))
