"""Where alysd keeps durable state (the dead-letter queue), and how that place is
checked.

Resolved as: ``$ALYSD_STATE_DIR``, else ``$STATE_DIRECTORY`` (set by systemd's
``StateDirectory=``; the first of its colon-separated paths), else
``/var/lib/alysd`` as root, else ``$XDG_STATE_HOME/alysd``, else
``~/.local/state/alysd``.

Unlike the runtime dir, the state dir may be readable by others (systemd
creates ``StateDirectory=`` 0755 unless told otherwise); what is refused is a
directory someone else could write to, because alysd reads back what it finds
there. What alysd stores inside it is created 0700.
"""

from __future__ import annotations

import os
import shlex
import stat

from alysd.errors import AlysdError
from alysd.runtime_dir import dir_from_environment

ENV_VAR = "ALYSD_STATE_DIR"


class StateDirError(AlysdError):
    """The state directory cannot be used (cannot be created, not ours, writable
    by others); the message names the path and the fix."""


def default_state_dir() -> str:
    """The state directory used when none is given explicitly: ``$ALYSD_STATE_DIR``,
    else ``$STATE_DIRECTORY``, else ``/var/lib/alysd`` as root, else
    ``$XDG_STATE_HOME/alysd``, else ``~/.local/state/alysd``."""
    return (dir_from_environment(ENV_VAR, "STATE_DIRECTORY", "/var/lib/alysd", "XDG_STATE_HOME")
            or os.path.join(os.path.expanduser("~"), ".local", "state", "alysd"))


def prepare_state_dir(path: str) -> str:
    """Create ``path`` (and missing parents) 0700, or check an existing one is
    ours and not writable by group or others; return it absolute.

    A symlink is followed (systemd's ``DynamicUser=`` makes the state dir one);
    the directory it leads to is what is checked. Raises ``StateDirError``.
    """
    path = os.path.abspath(os.path.expanduser(path))
    old = os.umask(0o077)
    try:
        os.makedirs(path, mode=0o700, exist_ok=True)
    except FileExistsError:
        raise StateDirError(f"state dir {path!r} is not a directory") from None
    except OSError as exc:
        raise StateDirError(f"cannot create state dir {path!r}: {exc.strerror}") from exc
    finally:
        os.umask(old)
    st = os.stat(path)
    if not stat.S_ISDIR(st.st_mode):
        raise StateDirError(f"state dir {path!r} is not a directory")
    if st.st_uid != os.geteuid():
        raise StateDirError(
            f"state dir {path!r} belongs to uid {st.st_uid}, not to us (uid {os.geteuid()}); "
            f"fix it with: chown {os.geteuid()} {shlex.quote(path)}")
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o022:
        raise StateDirError(
            f"state dir {path!r} is writable by {_who_writes(mode)} (mode {mode:04o}); "
            f"fix it with: chmod go-w {shlex.quote(path)}")
    return path


def _who_writes(mode: int) -> str:
    if mode & 0o020 and mode & 0o002:
        return "group and others"
    return "group" if mode & 0o020 else "others"


def dead_letter_path(state_dir: str) -> str:
    """The dead-letter queue's directory inside ``state_dir``."""
    return os.path.join(state_dir, "dead-letters")
