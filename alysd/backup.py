"""Online snapshots of alysd's durable state (``alysctl backup DEST``).

Everything alysd keeps across restarts is in LMDB environments under its
state dir: the dead-letter queue (``dead-letters``) and each host link's
outbox (``link-outbox-NAME``); node actors that keep data there add theirs.
LMDB copies an environment consistently while other processes write to it
(the copy reads one snapshot), so a backup needs no stop. Each environment
is copied compacted to ``DEST/NAME/data.mdb``, 0600 in a 0700 directory.

Restore: stop alysd, put the copied directories back in the state dir
(``DEST/NAME`` over ``STATE_DIR/NAME``), start alysd.
"""

from __future__ import annotations

import os

import lmdb

from alysd.errors import AlysdError


class BackupError(AlysdError):
    """A backup could not be made (the destination, or an environment)."""


def environments(state_dir: str) -> list[str]:
    """The names of the LMDB environments under ``state_dir``."""
    try:
        names = sorted(os.listdir(state_dir))
    except OSError as exc:
        raise BackupError(f"cannot list the state dir {state_dir}: {exc.strerror}") from None
    return [n for n in names if os.path.isfile(os.path.join(state_dir, n, "data.mdb"))]


def backup(state_dir: str, dest: str) -> dict[str, int]:
    """Copy every environment of ``state_dir`` to ``dest`` (which must not exist
    or be empty); the size in bytes of each copy, by name."""
    if os.path.exists(dest) and os.listdir(dest):
        raise BackupError(f"{dest} is not empty: a backup never overwrites one")
    os.makedirs(dest, mode=0o700, exist_ok=True)
    sizes = {}
    for name in environments(state_dir):
        target = os.path.join(dest, name)
        os.makedirs(target, mode=0o700)
        try:
            env = lmdb.open(os.path.join(state_dir, name), readonly=True, max_dbs=16,
                            lock=True)
            try:
                env.copy(target, compact=True)
            finally:
                env.close()
        except lmdb.Error as exc:
            raise BackupError(f"cannot copy {name}: {exc}") from None
        copied = os.path.join(target, "data.mdb")
        os.chmod(copied, 0o600)
        sizes[name] = os.path.getsize(copied)
    return sizes
