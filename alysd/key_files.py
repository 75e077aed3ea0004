"""Secret files named by the configuration, checked the way ssh checks its keys.

alysd refuses to start (and a reload is refused) when a file holding a secret
can be read or written by anyone but its owner, or is owned by another user
than the one alysd runs as (root excepted): on a validator host such a file is
a leak waiting to happen, and saying so at start is cheaper than finding out
after the fact. Each issue names the key, the file and the command that fixes
it. Files are only looked at here, never opened or read.
"""

from __future__ import annotations

import os
import stat

from alysd.config import Config
from alysd.errors import ConfigIssue

SECRET_FILE_KEYS = (
    ("chain", "jwt_secret_file"),
    ("chain", "validator_key_file"),
    ("bridge", "bitcoin_rpc_password_file"),
    ("network", "curve_secret_file"),
    ("network", "network_key_file"),
)
"""(section, key) of every config key naming a file that holds a secret."""


def check_secret_files(config: Config, euid: int | None = None) -> list[ConfigIssue]:
    """One issue per secret file ``config`` names that is missing, not a regular
    file, owned by a user other than ``euid`` (default: this process's) or
    root, or open to its group or others."""
    euid = os.geteuid() if euid is None else euid
    issues = []
    for section, key in SECRET_FILE_KEYS:
        path = getattr(getattr(config, section), key)
        if path is None:
            continue
        problem = file_problem(path, euid)
        if problem is not None:
            issues.append(ConfigIssue(f"{section}.{key}", problem))
    return issues


def file_problem(path: str, euid: int) -> str | None:
    """Why the secret file at ``path`` must not be used, or None."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return f"no such file: {path}"
    except OSError as exc:
        return f"cannot look at {path}: {exc.strerror or exc}"
    if not stat.S_ISREG(info.st_mode):
        return f"{path} is not a regular file"
    if info.st_uid not in (euid, 0):
        return (f"{path} is owned by uid {info.st_uid}, not by the user alysd runs as "
                f"(uid {euid}) or root: chown {euid} {path}")
    if info.st_mode & 0o077:
        return (f"{path} is open to its group or others (mode "
                f"{stat.S_IMODE(info.st_mode):04o}): chmod 600 {path}")
    return None
