"""What ``bench.restart`` kills: an alysd actor that names its process, and the
same job done by supervisord and circus.

* ``PidEcho`` -- the alysd actor, loaded as ``bench.restart_peers:PidEcho``.
  It answers every request with ``{"pid", "seq", "t"}``: its own pid, the
  request it was sent, and ``time.time()`` when it answered.  The zygote
  preloads this module, so it imports nothing heavy at module level: only the
  standard library and ``alysd``.  supervisord and circus are never imported
  here; they run as their own programs (``python -m ...``).
* ``PING_PROGRAM`` -- the program supervisord and circus keep alive: a fresh
  interpreter that binds a ZeroMQ ROUTER at ``ipc://<tmp>/ping.sock`` and
  answers each request ``b"<seq>"`` with ``b"<pid> <seq> <time.time()>"``.  It
  does the same job as ``PidEcho`` and imports the same libzmq binding, so
  the three systems serve the same request once up.
* ``Supervisord`` and ``Circus`` -- run one daemon headless in a private temp
  dir with the ping program as its only program/watcher (a subclass can name
  others in ``programs()``, as ``bench.reload`` does), on their default
  options apart from what running in a temp dir needs (and circus's
  ``check_delay`` when asked).  Every socket is a unix socket in that dir;
  circus's UDP multicast discovery is switched off.  ``close()`` stops the
  daemon and kills whatever of its processes is left.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from typing import Self

from alysd import Actor


class PidEcho(Actor):
    """Answers with its pid, the request and the time it answered."""

    def handle_message(self, message, ctx):
        return {"pid": os.getpid(), "seq": message, "t": time.time()}


PING_PROGRAM = """\
import os, sys, time
import zmq

path = sys.argv[1]
ctx = zmq.Context()
sock = ctx.socket(zmq.ROUTER)
try:
    os.unlink(path)             # the socket file of the incarnation that was killed
except FileNotFoundError:
    pass
sock.bind("ipc://" + path)
pid = os.getpid()
while True:
    ident, seq = sock.recv_multipart()
    sock.send_multipart([ident, b"%d %s %r" % (pid, seq, time.time())])
"""


def encode_ping(seq: int) -> bytes:
    return b"%d" % seq


def decode_ping(frame: bytes) -> tuple[int, int, float]:
    """``(seq, pid, answered_at)`` of a ping program's answer."""
    pid, seq, t = frame.split()
    return int(seq), int(pid), float(t)


def _short_tempdir(prefix: str) -> str:
    base = "/tmp" if os.path.isdir("/tmp") else tempfile.gettempdir()
    return tempfile.mkdtemp(prefix=prefix, dir=base)


class _Daemon:
    """One process manager in its own temp dir, running the ping program once."""

    label = "?"
    tick_s = 0.0          # period of the manager's own timer, if restarts wait for one
    min_gap_s = 0.05      # the bench waits at least this long after a restart ...
    jitter_s = 0.0        # ... plus up to this much at random (timer-less managers)

    def __init__(self) -> None:
        self.workdir = _short_tempdir(f"rb-{self.label[:4]}-")
        self.sock_path = os.path.join(self.workdir, "ping.sock")
        self.program = os.path.join(self.workdir, "ping.py")
        self.log_path = os.path.join(self.workdir, "daemon.out")
        self.proc: subprocess.Popen | None = None
        self.seen_pids: set[int] = set()

    def command(self) -> list[str]:
        raise NotImplementedError

    def programs(self) -> dict[str, str]:
        """The programs the daemon keeps alive: name -> command line.  Here the
        ping program alone; ``bench.reload`` runs several."""
        return {"ping": f"{sys.executable} {self.program} {self.sock_path}"}

    def write_config(self) -> None:
        raise NotImplementedError

    def start(self) -> Self:
        with open(self.program, "w") as f:
            f.write(PING_PROGRAM)
        self.write_config()
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, cwd=self.workdir,
                                         start_new_session=True)
        return self

    def check_alive(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"{self.label} exited with {self.proc.returncode}:\n{self.log()[-3000:]}")

    def log(self) -> str:
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def close(self) -> None:
        """Stop the daemon (SIGTERM, then SIGKILL) and kill anything of it left over."""
        import psutil

        leftovers: list[psutil.Process] = []
        if self.proc is not None:
            try:
                leftovers = psutil.Process(self.proc.pid).children(recursive=True)
            except psutil.Error:
                pass
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
                try:
                    self.proc.wait(15)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)   # its own session/group
            except (ProcessLookupError, PermissionError):
                pass
        # Programs the daemon started lead their own groups/sessions: find them by
        # what we saw (their pids, checked to still be ours) as well as by descent.
        for pid in self.seen_pids:
            try:
                p = psutil.Process(pid)
                if any(self.workdir in part for part in p.cmdline()):
                    leftovers.append(p)
            except psutil.Error:
                pass
        alive = []
        for p in leftovers:
            try:
                if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                    p.kill()
                    alive.append(p)
            except psutil.Error:
                pass
        psutil.wait_procs(alive, timeout=5)
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()


class Supervisord(_Daemon):
    """supervisord, default options; headless: nodaemon, files and its unix socket
    server in the temp dir, and ``autorestart = true`` for the program."""

    label = "supervisord"
    # supervisord reaps on its next loop pass and spawns on the pass after,
    # which comes when its 1 s poll timeout runs out: no phase to randomise,
    # but a kill within ``startsecs`` (1 s) of a spawn counts as a failed start
    # (BACKOFF, then FATAL after ``startretries``), so kills must be spaced.
    min_gap_s = 1.05
    jitter_s = 0.2

    def command(self) -> list[str]:
        return [sys.executable, "-m", "supervisor.supervisord", "-c",
                os.path.join(self.workdir, "supervisord.conf")]

    def write_config(self) -> None:
        w = self.workdir
        text = f"""\
[unix_http_server]
file = {w}/supervisor.sock

[supervisord]
nodaemon = true
logfile = {w}/supervisord.log
pidfile = {w}/supervisord.pid
childlogdir = {w}

[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface

[supervisorctl]
serverurl = unix://{w}/supervisor.sock
"""
        for name, command in self.programs().items():
            text += f"\n[program:{name}]\ncommand = {command}\nautorestart = true\n"
        with open(os.path.join(w, "supervisord.conf"), "w") as f:
            f.write(text)


class Circus(_Daemon):
    """circusd, default options or with ``check_delay``; its ZeroMQ endpoints are
    ipc:// in the temp dir and multicast discovery is off (it would bind UDP)."""

    label = "circus"

    def __init__(self, check_delay: float | None = None) -> None:
        self.check_delay = check_delay
        # circus reaps and respawns only from its periodic check, every
        # check_delay seconds (5 s unless configured): kills are spread over
        # that period so that their phase against it is uniform.
        self.tick_s = 5.0 if check_delay is None else check_delay
        self.label = "circus" if check_delay is None else f"circus-{check_delay:g}"
        super().__init__()

    def command(self) -> list[str]:
        return [sys.executable, "-m", "circus.circusd", os.path.join(self.workdir, "circus.ini")]

    def write_config(self) -> None:
        w = self.workdir
        lines = ["[circus]",
                 f"endpoint = ipc://{w}/circus-ctl.sock",
                 f"pubsub_endpoint = ipc://{w}/circus-pub.sock",
                 "multicast_endpoint =",
                 f"logoutput = {w}/circusd.log"]
        if self.check_delay is not None:
            lines.append(f"check_delay = {self.check_delay:g}")
        for name, command in self.programs().items():
            lines += ["", f"[watcher:{name}]", f"cmd = {command}", "numprocesses = 1"]
        lines.append("")
        with open(os.path.join(w, "circus.ini"), "w") as f:
            f.write("\n".join(lines))
