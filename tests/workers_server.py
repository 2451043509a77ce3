"""A server under reactor's worker supervisor, for tests/test_workers.py.

Run as ``python -m tests.workers_server [--workers N] ...``.

It prints one line per supervisor event on stdout, which is what the tests
synchronise on::

    listening PORT balanced|shared
    event spawned|ready|exited INDEX PID TIME [BACKEND|EXIT_CODE]

Each connection is told the serving worker's pid first (``PID\\n``), then:
``GET N\\n`` sends N bytes (:func:`pattern`) and closes; any other line is
echoed back. Options pick a failure to test: ``--fail-boot`` (setup raises
before serving; ``--fail-restarts``: all but each slot's first worker),
``--die-at-boot`` (killed before serving), ``--hang-boot`` (never serves),
``--crash-after-ready`` (each worker dies just after it serves).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from typing import Any

from reactor import Reactor, Supervisor, WorkerContext, WorkerEvent

__all__ = ["main", "pattern"]


def pattern(size: int) -> bytes:
    """The bytes ``GET size`` sends: a counter pattern, so a lost or moved byte shows."""
    block = bytes(range(251))  # a prime length: a missing chunk shifts the pattern
    return (block * (size // len(block) + 1))[:size]


class _Served:
    """Tells the client its worker's pid, then serves GET and echo lines."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.buf = b""
        self.transport: Any = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        transport.write(f"{self.pid}\n".encode())

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while b"\n" in self.buf:
            line, self.buf = self.buf.split(b"\n", 1)
            if line.startswith(b"GET "):
                self.transport.write(pattern(int(line[4:])))
                self.transport.close()  # after the buffer is flushed
                return
            self.transport.write(line + b"\n")

    def eof_received(self) -> bool:
        return False  # close our side too

    def connection_lost(self, exc: BaseException | None) -> None:
        pass

    def pause_writing(self) -> None:
        pass

    def resume_writing(self) -> None:
        pass


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--shared", action="store_true", help="one socket for all workers")
    parser.add_argument("--drain-timeout", type=float, default=10.0)
    parser.add_argument("--boot-timeout", type=float, default=10.0)
    parser.add_argument("--fail-boot", action="store_true")
    parser.add_argument("--fail-restarts", action="store_true")
    parser.add_argument("--hang-boot", action="store_true")
    parser.add_argument("--die-at-boot", action="store_true")
    parser.add_argument("--crash-after-ready", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(process)d %(name)s: %(message)s")

    def setup(worker: WorkerContext) -> None:
        if args.fail_boot or (args.fail_restarts and worker.starts > 0):
            raise RuntimeError("this worker is configured to fail at boot")
        if args.die_at_boot:
            os.kill(os.getpid(), signal.SIGKILL)
        if args.hang_boot:
            signal.sigwait({signal.SIGUSR1})  # nobody sends it: the boot never ends
        pid = os.getpid()
        with Reactor() as reactor:
            worker.listen(reactor, lambda: _Served(pid))
            if args.crash_after_ready:
                reactor.call_soon(reactor.stop)  # after the ready report, queued first
            reactor.run()
        if args.crash_after_ready:
            raise RuntimeError("this worker is configured to crash once it serves")

    def on_event(event: WorkerEvent) -> None:
        extra = event.backend if event.kind == "ready" else event.exit_code
        tail = "" if extra is None else f" {extra}"
        print(f"event {event.kind} {event.index} {event.pid} {event.time:.6f}{tail}", flush=True)

    supervisor = Supervisor(
        args.workers,
        setup,
        reuse_port=False if args.shared else None,
        drain_timeout=args.drain_timeout,
        boot_timeout=args.boot_timeout,
        on_event=on_event,
    )
    mode = "balanced" if supervisor.balanced else "shared"
    print(f"listening {supervisor.port} {mode}", flush=True)
    return supervisor.run()


if __name__ == "__main__":
    sys.exit(main())
