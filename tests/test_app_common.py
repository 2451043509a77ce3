"""apps/_common.py: what every app shares.

With ``--workers N`` several processes write to one stdout; each line must
reach it in one ``write`` or another process's line can land inside it
(stdout is unbuffered when a harness sets ``PYTHONUNBUFFERED``, and then
``print`` writes the text and its newline separately).
"""

from __future__ import annotations

import pytest

from apps._common import print_listening

pytestmark = pytest.mark.timeout(30)


class Recorder:
    """A stdout that keeps each ``write`` apart, as an unbuffered pipe would."""

    def __init__(self) -> None:
        self.writes: list[str] = []

    def write(self, text: str) -> int:
        self.writes.append(text)
        return len(text)

    def flush(self) -> None:
        pass


def test_the_listening_line_is_one_write(monkeypatch: pytest.MonkeyPatch) -> None:
    out = Recorder()
    monkeypatch.setattr("sys.stdout", out)
    print_listening("chat server", ("127.0.0.1", 7000), "epoll")
    print_listening("echo server", ("::1", 7001), "poll")
    assert out.writes == [
        "chat server listening on 127.0.0.1:7000 (backend epoll)\n",
        "echo server listening on [::1]:7001 (backend poll)\n",
    ]
