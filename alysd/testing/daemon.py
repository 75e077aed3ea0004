"""Run a real alysd from tests, benchmarks and scripts, and end it without leftovers.

``run_daemon(config)`` starts ``alysd`` as a subprocess in a fresh short
runtime dir (unix socket paths are limited to 107 bytes, so pytest's deep temp
dirs will not do), waits until every actor is running, and on exit stops it
with SIGTERM, then kills whatever of its process tree is left, so a failing
test never leaks processes into the next one.

Waiting is always on a condition with a deadline (``wait_until``), never on a
bare sleep.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import psutil

from alysd.ctl import ControlClient
from alysd.errors import AlysdError, NoDaemon
from alysd.runtime_dir import RuntimeDir

REPO_ROOT = Path(__file__).resolve().parent.parent.parent


def wait_until(predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.005,
               message: str = "condition") -> Any:
    """Poll ``predicate`` until it returns a truthy value; return that value.

    Raises ``TimeoutError`` naming ``message`` after ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout:g}s waiting for {message}")
        time.sleep(interval)


def gone(pid: int) -> bool:
    """Whether process ``pid`` has ended (it no longer exists, or is a zombie
    nobody reaped yet)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def short_tempdir(prefix: str = "alysd-") -> str:
    """A private temp dir with a path short enough for unix sockets."""
    base = "/tmp" if os.path.isdir("/tmp") else tempfile.gettempdir()
    return tempfile.mkdtemp(prefix=prefix, dir=base)


class RunningDaemon:
    """A live alysd subprocess and a control client for it."""

    def __init__(self, proc: subprocess.Popen, rundir: RuntimeDir, workdir: str, log_path: str,
                 config_path: str):
        self.proc = proc
        self.config_path = config_path
        self.rundir = rundir
        self.workdir = workdir
        self.log_path = log_path
        self.client = ControlClient(rundir)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def call(self, command: str, args: dict | None = None, timeout: float = 30.0) -> Any:
        return self.client.call(command, args, timeout=timeout)

    def status(self) -> dict[str, dict]:
        """``alysctl status`` as a dict keyed by actor name."""
        return {row["name"]: row for row in self.call("status")}

    def request(self, name: str, payload: Any, timeout: float = 5.0) -> Any:
        """Send a request to an actor through the daemon and return its reply."""
        return self.call("send", {"name": name, "payload": payload, "timeout": timeout},
                         timeout=timeout + 5.0)

    def send(self, name: str, payload: Any) -> int:
        """Send a one-way message to an actor (from alysctl); its message id."""
        return self.call("tell", {"name": name, "payload": payload})["message_id"]

    def actor_pid(self, name: str) -> int | None:
        """The pid of an actor's running incarnation (None when it has none)."""
        return self.status()[name]["pid"]

    def kill(self, name: str, sig: int = signal.SIGKILL) -> int:
        """Send ``sig`` to an actor's process; returns the pid signalled.
        Raises ``AlysdError`` when the actor has no running process."""
        pid = self.actor_pid(name)
        if pid is None:
            raise AlysdError(f"actor {name!r} has no running process to signal")
        os.kill(pid, sig)
        return pid

    def wait_until(self, predicate: Callable[[], Any], timeout: float = 10.0,
                   message: str = "condition") -> Any:
        """``wait_until``, failing at once (with alysd's log) if alysd exits meanwhile."""
        def check():
            if self.proc.poll() is not None:
                raise AlysdError(f"alysd exited with {self.proc.returncode}:\n{self.log()}")
            return predicate()
        return wait_until(check, timeout, interval=0.01, message=message)

    def log(self) -> str:
        return Path(self.log_path).read_text(errors="replace")

    def wait_running(self, names: list[str] | None = None, timeout: float = 30.0) -> dict[str, dict]:
        """Wait until the named actors (default: all) are running; return the status."""
        def check():
            if self.proc.poll() is not None:
                raise AlysdError(f"alysd exited with {self.proc.returncode}:\n{self.log()}")
            try:
                rows = self.status()
            except NoDaemon:
                return None
            wanted = names or list(rows)
            return rows if all(rows[n]["state"] == "running" for n in wanted) else None
        return wait_until(check, timeout, interval=0.05, message=f"actors {names or 'all'} running")

    def descendants(self) -> list[psutil.Process]:
        try:
            return psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        """Signal alysd and wait for it to exit; returns its exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout)


def _kill_tree(procs: list[psutil.Process]) -> None:
    for p in procs:
        with contextlib.suppress(psutil.Error):
            p.kill()
    psutil.wait_procs(procs, timeout=5)


@contextlib.contextmanager
def run_daemon(config: str | Path, *, python_path: list[str] | None = None, env: dict[str, str] | None = None,
               wait: bool = True, timeout: float = 30.0, state_dir: str | None = None,
               extra_args: list[str] | None = None) -> Iterator[RunningDaemon]:
    """Start alysd on ``config`` (TOML text, or a ``Path`` to a file) and stop it afterwards.

    ``config_path`` of the daemon is the file it reloads. ``python_path`` entries are prepended to PYTHONPATH so that test actor
    modules import. ``state_dir`` (default: a fresh one inside the temporary
    work dir) is where the dead-letter queue lives; pass the same one to two
    runs to see state survive a restart. With ``wait``, returns once every actor is running. On exit
    the daemon gets SIGTERM; any process of its tree still alive after that is
    killed, so nothing outlives the block.
    """
    workdir = short_tempdir()
    if isinstance(config, Path):
        config_path = str(config)
    else:
        config_path = os.path.join(workdir, "alys.toml")
        Path(config_path).write_text(config)
    rundir = RuntimeDir(os.path.join(workdir, "run"))
    log_path = os.path.join(workdir, "alysd.log")
    # The environment's ALYS_* variables are configuration layers: a test gets only
    # the ones it passes.
    child_env = {k: v for k, v in (os.environ if env is None else env).items()
                 if env is not None or not k.startswith("ALYS_")}
    paths = [*(python_path or []), str(REPO_ROOT), child_env.get("PYTHONPATH", "")]
    child_env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
    child_env.pop("ALYSD_RUNTIME_DIR", None)
    child_env.pop("ALYSD_STATE_DIR", None)
    state_dir = state_dir or os.path.join(workdir, "state")
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "alysd", "--config", config_path, "--runtime-dir", rundir.path,
             "--state-dir", state_dir, *(extra_args or [])],
            stdout=log, stderr=subprocess.STDOUT, env=child_env, cwd=workdir)
    daemon = RunningDaemon(proc, rundir, workdir, log_path, config_path)
    tree: list[psutil.Process] = []
    try:
        if wait:
            daemon.wait_running(timeout=timeout)
        yield daemon
    finally:
        tree = daemon.descendants()
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        _kill_tree([p for p in tree if p.is_running() and p.status() != psutil.STATUS_ZOMBIE])
        shutil.rmtree(workdir, ignore_errors=True)
