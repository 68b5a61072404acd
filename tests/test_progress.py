"""The progress display: a live bar on a terminal, plain lines elsewhere."""

from __future__ import annotations

import io

import pytest

from aigi.pipeline.progress import Progress


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _drive(stream: io.StringIO, n: int = 5) -> str:
    p = Progress("generate/sd", n, 4 * n, "images", stream, min_interval=0.0)
    for i in range(n):
        p.update(4, failed=(i == 2))
    p.close()
    return stream.getvalue()


def test_terminal_gets_a_live_bar_redrawn_in_place(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AIGI_PROGRESS", raising=False)
    monkeypatch.setenv("TERM", "xterm")
    out = _drive(Terminal())
    assert "\r" in out  # redrawn in place, not a line per update
    last = out.split("\r")[-1]
    assert "[generate/sd]" in last and "20/20" in last and "5/5 units" in last and "1 failed" in last
    assert "images" in last


def test_a_pipe_gets_plain_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AIGI_PROGRESS", raising=False)
    out = _drive(io.StringIO())
    assert "\r" not in out
    lines = out.splitlines()
    assert len(lines) == 5 and lines[-1].startswith("  [generate/sd] 5/5 units  20 images")
    assert "1 failed" in lines[-1]


@pytest.mark.parametrize(("mode", "stream", "live"), [("plain", Terminal, False), ("live", io.StringIO, True)])
def test_environment_overrides_the_guess(monkeypatch: pytest.MonkeyPatch, mode: str, stream: type, live: bool) -> None:
    monkeypatch.setenv("AIGI_PROGRESS", mode)
    assert ("\r" in _drive(stream())) is live


def test_a_real_terminal_that_reports_no_size_still_shows_the_bar() -> None:
    """A fresh pty reports 0 x 0 (as under `script` or some CI runners): tqdm would draw nothing."""
    import os
    import pty
    import select
    import subprocess
    import sys

    code = ("import sys\nfrom aigi.pipeline.progress import Progress\n"
            "p = Progress('generate/sd', 2, 8, 'images', sys.stdout)\np.update(4)\np.update(4)\n")
    master, slave = pty.openpty()
    env = {k: v for k, v in os.environ.items() if k not in ("AIGI_PROGRESS", "COLUMNS", "LINES")}
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=slave, stdout=slave, stderr=slave,
                            env={**env, "TERM": "xterm"}, close_fds=True)
    os.close(slave)
    out = b""
    while select.select([master], [], [], 20)[0]:
        try:
            chunk = os.read(master, 4096)
        except OSError:  # the child closed the pty
            break
        if not chunk:
            break
        out += chunk
    proc.wait(20)
    os.close(master)
    text = out.decode("utf-8", "replace")
    assert "[generate/sd]" in text and "8/8" in text and "2/2 units" in text
