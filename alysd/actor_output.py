"""What actors write to their stdout and stderr, read by the root.

Every actor process writes both to one pipe (the fork server sets it up
before the actor's first instruction and passes its read end to the root).
The root reads each pipe when its loop sees it readable (never blocking on
it), cuts what it reads into lines, and for every line:

* keeps it in the actor's ring buffer (``[logging] buffer_lines`` lines per
  actor, across its incarnations), tagged with the pid and incarnation that
  wrote it and a sequence number shared by all actors, for ``alysctl logs``;
* writes it to alysd's own stderr (the journal under systemd): as it came
  when it is a log line of the actor's (text lines start with their date,
  JSON lines are objects), else wrapped as one, so that a bare ``print`` is
  tagged with the actor too.

When an incarnation ends, what its pipe still holds is read before the crash
report is written, so the report can quote the last lines.
"""

from __future__ import annotations

import collections
import datetime
import os
import re
import select
import sys
import time

import msgspec

from alysd.log_format import json_line

MAX_LINE = 64 * 1024          # a longer line is cut there
READ_CHUNK = 64 * 1024        # read at most this much from one pipe per pass
_DATED = re.compile(rb"\d{4}-\d\d-\d\d ")


class OutputLine(msgspec.Struct, frozen=True):
    seq: int
    time: float
    actor: str
    pid: int
    incarnation: int
    line: str


class _Pipe:
    def __init__(self, fd: int, actor: str, pid: int, incarnation: int):
        self.fd, self.actor, self.pid, self.incarnation = fd, actor, pid, incarnation
        self.partial = b""


class ActorOutput:
    """The actors' output pipes, their ring buffers, and the journal they feed."""

    def __init__(self, buffer_lines: int, fmt: str = "text", journal=None,
                 on_close=lambda fd: None):
        self.buffer_lines = buffer_lines
        self.on_close = on_close            # called with an fd before it is closed
        self.fmt = fmt
        self.journal = journal if journal is not None else sys.stderr.buffer
        self.pipes: dict[int, _Pipe] = {}            # by fd
        self.by_pid: dict[int, _Pipe] = {}
        self.buffers: dict[str, collections.deque[OutputLine]] = {}
        self.seq = 0

    def attach(self, fd: int, actor: str, pid: int, incarnation: int) -> None:
        os.set_blocking(fd, False)
        pipe = _Pipe(fd, actor, pid, incarnation)
        self.pipes[fd] = pipe
        self.by_pid[pid] = pipe

    def read(self, fd: int) -> bool:
        """Read what the pipe ``fd`` holds (one chunk); False once it is closed
        (then it is detached: ``on_close(fd)``, and the fd closed)."""
        pipe = self.pipes[fd]
        try:
            data = os.read(fd, READ_CHUNK)
        except BlockingIOError:
            return True
        except OSError:
            data = b""
        if not data:
            self._lines(pipe, pipe.partial + b"\n" if pipe.partial else b"")
            self._detach(pipe)
            return False
        self._lines(pipe, pipe.partial + data)
        return True

    def drain(self, pid: int) -> None:
        """Read all that the pipe of (ended) process ``pid`` still holds."""
        pipe = self.by_pid.get(pid)
        if pipe is None:
            return
        fd = pipe.fd
        # Until closed, or empty: a child of the actor's may still hold the pipe.
        while fd in self.pipes and select.select([fd], [], [], 0)[0]:
            self.read(fd)

    def tail(self, actor: str, lines: int) -> list[OutputLine]:
        buffer = self.buffers.get(actor)
        return list(buffer)[-lines:] if buffer and lines > 0 else []

    def since(self, after: int, actor: str | None = None, limit: int = 1000) -> list[OutputLine]:
        """Lines with a sequence number above ``after`` (of one actor, or of all,
        interleaved in the order they were read), at most the last ``limit``."""
        names = [actor] if actor is not None else list(self.buffers)
        found = [entry for name in names for entry in self.buffers.get(name, ())
                 if entry.seq > after]
        found.sort(key=lambda entry: entry.seq)
        return found[-limit:]

    def close(self) -> None:
        for pipe in list(self.pipes.values()):
            self._detach(pipe)

    # --- inside ---------------------------------------------------------------------

    def _detach(self, pipe: _Pipe) -> None:
        self.on_close(pipe.fd)
        self.pipes.pop(pipe.fd, None)
        if self.by_pid.get(pipe.pid) is pipe:
            del self.by_pid[pipe.pid]
        try:
            os.close(pipe.fd)
        except OSError:
            pass

    def _lines(self, pipe: _Pipe, data: bytes) -> None:
        *lines, pipe.partial = data.split(b"\n")
        if len(pipe.partial) > MAX_LINE:
            lines.append(pipe.partial[:MAX_LINE])
            pipe.partial = b""
        if not lines:
            return
        buffer = self.buffers.get(pipe.actor)
        if buffer is None:
            buffer = self.buffers[pipe.actor] = collections.deque(maxlen=self.buffer_lines)
        now = time.time()
        out = []
        for raw in lines:
            raw = raw[:MAX_LINE]
            self.seq += 1
            text = raw.decode(errors="replace")
            buffer.append(OutputLine(self.seq, now, pipe.actor, pipe.pid, pipe.incarnation, text))
            out.append(self._journal_line(pipe, raw, text, now))
        try:
            self.journal.write(b"".join(out))
            self.journal.flush()
        except (OSError, ValueError):
            pass   # no journal to write to (stderr closed): the buffers still have them

    def _journal_line(self, pipe: _Pipe, raw: bytes, text: str, now: float) -> bytes:
        if self.fmt == "json":
            if raw.startswith(b"{"):
                return raw + b"\n"
            return json_line(created=now, level="info", logger=f"alysd.actor.{pipe.actor}",
                             pid=pipe.pid, actor=pipe.actor, incarnation=pipe.incarnation,
                             message=text, event="output") + b"\n"
        if _DATED.match(raw):
            return raw + b"\n"
        stamp = datetime.datetime.fromtimestamp(now).strftime("%Y-%m-%d %H:%M:%S,%f")[:-3]
        return f"{stamp} INFO alysd.actor.{pipe.actor}[{pipe.pid}]: {text}\n".encode()
