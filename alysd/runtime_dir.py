"""Where alysd keeps its sockets, and how that place is made safe.

Both programs resolve the same directory: ``--runtime-dir``, else
``$ALYSD_RUNTIME_DIR``, else ``$RUNTIME_DIRECTORY`` (systemd), else
``/run/alysd`` as root, else ``$XDG_RUNTIME_DIR/alysd``, else
``<tempdir>/alysd-<uid>``.

The directory is the first boundary of the control plane: it is created
0700 under umask 077 (ZeroMQ ipc sockets take their mode from the umask), and
an existing one must belong to us; its mode is set to 0700 whatever it was.
With ``[system] control_group`` it is 0750 owned by that group and only
``control.sock`` is opened to the group (0660): every other socket and file in
it stays owner-only, so the group reaches the control plane and nothing else
(where alysd checks each caller itself: ``alysd.control_access``). Unix socket
paths are limited to 107 bytes, so the layout is checked up front instead of
failing at the first ``bind``.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
import tempfile
from dataclasses import dataclass

from alysd.errors import RuntimeDirError

ENV_VAR = "ALYSD_RUNTIME_DIR"
MAX_IPC_PATH = 107
MAX_NAME = 48  # longest actor name the config accepts


def dir_from_environment(own: str, systemd: str, as_root: str, xdg: str) -> str | None:
    """The first of: ``$own``; the first of the colon-separated paths in ``$systemd``
    (set by systemd's ``RuntimeDirectory=``/``StateDirectory=``); ``as_root`` when
    running as root; ``$xdg/alysd`` when ``$xdg`` is an absolute path (the XDG spec
    says a relative one is invalid and ignored). None when none applies."""
    env = os.environ.get(own)
    if env:
        return env
    # The service runs as its own user, not root: without this it would land in
    # its private temp dir (PrivateTmp=), where alysctl can never find it.
    given = os.environ.get(systemd, "").split(":")[0]
    if given:
        return given
    if os.geteuid() == 0:
        return as_root
    base = os.environ.get(xdg)
    if base and os.path.isabs(base):
        return os.path.join(base, "alysd")
    return None


def default_runtime_dir() -> str:
    """The runtime directory used when none is given explicitly: ``$ALYSD_RUNTIME_DIR``,
    else ``$RUNTIME_DIRECTORY``, else ``/run/alysd`` as root, else
    ``$XDG_RUNTIME_DIR/alysd``, else ``<tempdir>/alysd-<uid>``."""
    return (dir_from_environment(ENV_VAR, "RUNTIME_DIRECTORY", "/run/alysd", "XDG_RUNTIME_DIR")
            or os.path.join(tempfile.gettempdir(), f"alysd-{os.getuid()}"))


@dataclass(frozen=True)
class RuntimeDir:
    """The socket layout inside one runtime directory."""

    path: str

    def state_blob(self, actor: str) -> str:
        """Where an actor's preserved state waits for its next incarnation during a
        reload (``Actor.preserve_state``); removed when the reload ends."""
        return os.path.join(self.path, f"{actor}.state")

    @property
    def control(self) -> str:
        """Unix socket path of the control plane (alysctl ↔ alysd)."""
        return os.path.join(self.path, "control.sock")

    @property
    def system(self) -> str:
        """Unix socket path of the system channel (actors ↔ root)."""
        return os.path.join(self.path, "system.sock")

    def inbox(self, actor: str) -> str:
        """Unix socket path of an actor's inbox."""
        return os.path.join(self.path, f"{actor}.inbox")

    def outbox(self, actor: str) -> str:
        """Base path of an actor's outbox journal (``alysd.outbox_journal``)."""
        return os.path.join(self.path, f"{actor}.outbox")

    @property
    def lock(self) -> str:
        return os.path.join(self.path, "alysd.lock")

    def check_lengths(self) -> None:
        """Raise ``RuntimeDirError`` if the longest socket path would not fit."""
        longest = self.inbox("x" * MAX_NAME)
        if len(os.fsencode(longest)) > MAX_IPC_PATH:
            raise RuntimeDirError(
                f"runtime dir {self.path!r} is too long for unix socket paths "
                f"({len(os.fsencode(longest))} > {MAX_IPC_PATH} bytes for {longest!r}); "
                f"choose a shorter --runtime-dir")

    def prepare(self, group: int | None = None) -> None:
        """Create the directory, or check an existing one is ours; then make it
        0700, or 0750 owned by ``group`` (the gid of ``control_group``).

        Raises ``RuntimeDirError`` naming the path and the fix.
        """
        self.check_lengths()
        old = os.umask(0o077)
        try:
            os.makedirs(self.path, mode=0o700, exist_ok=True)
        except OSError as exc:
            raise RuntimeDirError(f"cannot create runtime dir {self.path!r}: {exc.strerror}") from exc
        finally:
            os.umask(old)
        st = os.lstat(self.path)
        if not stat.S_ISDIR(st.st_mode):
            raise RuntimeDirError(f"runtime dir {self.path!r} is not a directory")
        if st.st_uid != os.geteuid():
            raise RuntimeDirError(
                f"runtime dir {self.path!r} belongs to uid {st.st_uid}, not to us (uid {os.geteuid()})")
        if group is not None and st.st_gid != group:
            _give_to_group(self.path, group)
        mode = 0o700 if group is None else 0o750
        if stat.S_IMODE(st.st_mode) != mode:
            os.chmod(self.path, mode)

    def share_control(self, group: int) -> None:
        """Open the bound control socket to ``group`` (0660): connecting to a unix
        socket needs write permission on it. Every other socket stays owner-only."""
        _give_to_group(self.control, group)
        os.chmod(self.control, 0o660)


def _give_to_group(path: str, group: int) -> None:
    try:
        os.chown(path, -1, group)
    except PermissionError as exc:
        raise RuntimeDirError(
            f"cannot give {path!r} to group {group} (system.control_group): "
            f"{exc.strerror}; alysd's user must be a member of that group "
            "(under systemd: SupplementaryGroups= in the unit)") from exc


class DaemonLock:
    """An exclusive ``flock`` on ``alysd.lock``: one daemon per runtime dir.

    The lock file holds the owner's pid so the refusal can name it. The lock is
    released by the kernel when the process dies, so a crashed daemon never
    leaves a stale lock behind.
    """

    def __init__(self, rundir: RuntimeDir):
        self._path = rundir.lock
        self._fd: int | None = None

    def acquire(self) -> None:
        fd = os.open(self._path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            owner = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            if exc.errno in (errno.EAGAIN, errno.EACCES):
                raise RuntimeDirError(
                    f"another alysd (pid {owner}) is running with runtime dir "
                    f"{os.path.dirname(self._path)!r}") from exc
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
