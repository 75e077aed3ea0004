"""``alysctl top`` as an operator runs it: a real subprocess on a pseudo-terminal
(or on pipes), against a real daemon; every run ends within a deadline."""

from __future__ import annotations

import errno
import fcntl
import os
import select
import struct
import subprocess
import sys
import termios
import time
from typing import Self

import pytest

from alysd.top import CLEAR_TO_LINE_END, CLEAR_TO_SCREEN_END, HOME, LEAVE_SCREEN
from tests.conftest import REPO, actor_toml, tree_toml

NAMES = ("alpha", "bravo", "charlie")
TERMINAL_LINES, TERMINAL_COLUMNS = 30, 160
DEADLINE = 20.0


@pytest.fixture
def daemon(start_daemon):
    return start_daemon(tree_toml(*(actor_toml(name) for name in NAMES)))


def alysctl(rundir: str, *args: str) -> list[str]:
    return [sys.executable, "-m", "alysd.ctl", "--runtime-dir", rundir, *args]


def run_without_a_terminal(rundir: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(alysctl(rundir, *args), cwd=REPO, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, check=False, timeout=DEADLINE)


def _take_controlling_terminal() -> None:
    """In the child, a new session leader: make the pty its terminal, so that
    Ctrl-C typed on it sends SIGINT as a real terminal does. (Safe between fork
    and exec: one system call, no lock that another thread could hold.)"""
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


class TopOnPty:
    """``alysctl top`` with a pseudo-terminal as stdin, stdout and stderr; the
    test types on and reads from the master side."""

    def __init__(self, daemon, *args: str):
        self.master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ,
                    struct.pack("HHHH", TERMINAL_LINES, TERMINAL_COLUMNS, 0, 0))
        self.settings_before = termios.tcgetattr(slave)
        env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
        try:
            self.proc = subprocess.Popen(
                alysctl(daemon.rundir.path, "top", *args), stdin=slave, stdout=slave, stderr=slave,
                cwd=REPO, env=env, start_new_session=True,
                preexec_fn=_take_controlling_terminal)  # noqa: PLW1509
        finally:
            os.close(slave)     # the child holds it; the master reads EOF once it exits
        self.output = b""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(DEADLINE)
        os.close(self.master)

    @property
    def text(self) -> str:
        return self.output.decode(errors="replace")

    def type(self, keys: bytes) -> None:
        os.write(self.master, keys)

    def _read(self, timeout: float) -> bool:
        """Read what is there within ``timeout``; False at end of output."""
        if not select.select([self.master], [], [], timeout)[0]:
            return True
        try:
            chunk = os.read(self.master, 65536)
        except OSError as exc:
            if exc.errno != errno.EIO:      # Linux's EOF on a pty master
                raise
            chunk = b""
        self.output += chunk
        return bool(chunk)

    def read_until(self, predicate, what: str) -> None:
        deadline = time.monotonic() + DEADLINE
        while not predicate():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no {what} within {DEADLINE:g}s; got {self.text!r}")
            if not self._read(remaining):
                raise AssertionError(f"alysctl top ended before {what}: {self.text!r}")

    def exit_status(self) -> int:
        """Read to the end of the output (the master sees it once alysctl has
        exited), then alysctl's exit status."""
        deadline = time.monotonic() + DEADLINE
        while self._read(max(deadline - time.monotonic(), 0)):
            if time.monotonic() >= deadline:
                raise TimeoutError(f"alysctl top still running after {DEADLINE:g}s: {self.text!r}")
        return self.proc.wait(DEADLINE)

    def frames_showing(self, names) -> list[list[str]]:
        """The complete frames drawn so far that show every one of ``names``, as lines."""
        frames = [f for f in self.text.split(HOME) if CLEAR_TO_SCREEN_END in f]
        return [[line.replace(CLEAR_TO_LINE_END, "").rstrip("\r")
                 for line in f.split(CLEAR_TO_SCREEN_END)[0].split("\n")]
                for f in frames if all(name in f for name in names)]

    def terminal_restored(self) -> bool:
        return termios.tcgetattr(self.master) == self.settings_before


def message_rate(frame: list[str], name: str) -> str:
    """The MSG/S cell of actor ``name`` in ``frame`` (lines; the header is the second)."""
    start = frame[1].index("MSG/S")
    line = next(line for line in frame[2:] if line.split()[0] == name)
    return line[start:].split()[0]


def test_top_refreshes_until_q_and_leaves_the_terminal_as_it_was(daemon):
    with TopOnPty(daemon, "--interval", "0.2") as top:
        top.read_until(lambda: len(top.frames_showing(NAMES)) >= 2, "two frames of every actor")
        first, second = top.frames_showing(NAMES)[:2]
        assert first[0].startswith("system: healthy (3/3 actors running)")
        assert first[1].split() == ["NAME", "STATE", "PID", "CPU%", "RSS", "MAILBOX", "MSG/S",
                                    "RESTARTS", "HEALTH"]
        assert [message_rate(first, name) for name in NAMES] == ["-", "-", "-"]
        assert all(float(message_rate(second, name)) >= 0 for name in NAMES)
        top.type(b"q")
        assert top.exit_status() == 0
        assert top.output.endswith(LEAVE_SCREEN.encode())
        assert top.terminal_restored()


def test_ctrl_c_quits_with_status_0(daemon):
    with TopOnPty(daemon, "--interval", "0.2") as top:
        top.read_until(lambda: top.frames_showing(NAMES), "a frame of every actor")
        top.type(b"\x03")                   # the terminal turns it into SIGINT
        assert top.exit_status() == 0
        assert top.output.endswith(LEAVE_SCREEN.encode())
        assert "Aborted" not in top.text and "Traceback" not in top.text
        assert top.terminal_restored()


def test_a_daemon_that_goes_away_ends_top_with_status_3(daemon):
    # A long interval, so that the next status is asked for when a key is pressed,
    # after the daemon is gone: never while it is going.
    with TopOnPty(daemon, "--interval", "60") as top:
        top.read_until(lambda: top.frames_showing(NAMES), "a frame of every actor")
        assert daemon.stop() == 0
        top.type(b" ")
        assert top.exit_status() == 3
        after_screen = top.text.rsplit(LEAVE_SCREEN, 1)[1]
        assert f"alysctl: no alysd at {daemon.rundir.control}" in after_screen
        assert top.terminal_restored()


def test_once_without_a_terminal_prints_one_plain_frame(daemon):
    out = run_without_a_terminal(daemon.rundir.path, "top", "--once", "--interval", "0.1")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert "\x1b" not in out.stdout
    assert lines[0].startswith("system: ") and "(3/3 actors running)" in lines[0]
    assert lines[1].split()[0] == "NAME"
    assert [line.split()[0] for line in lines[2:]] == list(NAMES)
    assert all(float(message_rate(lines, name)) >= 0 for name in NAMES)


def test_without_a_terminal_top_prints_one_frame_even_without_once(daemon):
    out = run_without_a_terminal(daemon.rundir.path, "top", "--interval", "0.1")
    assert out.returncode == 0, out.stderr
    assert [line.split()[0] for line in out.stdout.splitlines()[2:]] == list(NAMES)


def test_top_without_a_daemon_exits_3(short_tmp):
    out = run_without_a_terminal(short_tmp, "top")
    assert out.returncode == 3
    assert f"no alysd at {short_tmp}/control.sock" in out.stderr
