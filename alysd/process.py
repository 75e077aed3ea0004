"""Linux process hygiene: parent-death signals, subreaping, process titles.

alysd promises that every process it starts dies with it, even when alysd itself
is SIGKILLed. The kernel offers two tools and we use both:

* ``PR_SET_PDEATHSIG``: the child is sent a signal when its parent *thread*
  exits. It is set right after fork, and ``getppid()`` is compared with the
  expected parent afterwards, because the parent may already have died between
  ``fork()`` and ``prctl()`` (the signal would then never come).
* ``PR_SET_CHILD_SUBREAPER``: orphaned descendants are reparented to the
  nearest subreaper instead of PID 1, so alysd (and the zygote) can reap them;
  PID 1 in containers often does not.
"""

from __future__ import annotations

import ctypes
import os
import resource
import signal
from collections.abc import Iterator

try:
    import setproctitle as _setproctitle
except ImportError:  # pragma: no cover - a declared dependency; titles are cosmetic
    _setproctitle = None

_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36

_libc = ctypes.CDLL(None, use_errno=True)


def _prctl(option: int, arg: int) -> None:
    if _libc.prctl(option, arg, 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl({option}, {arg}): {os.strerror(err)}")


def die_with_parent(expected_parent: int, sig: int = signal.SIGKILL) -> None:
    """Arrange to receive ``sig`` when the parent dies; exit now if it already has.

    Must be called from the main thread of a freshly forked child: the death
    signal is tied to the parent thread that forked us and is cleared by exec.
    """
    _prctl(_PR_SET_PDEATHSIG, int(sig))
    if os.getppid() != expected_parent:
        os._exit(1)


def become_subreaper() -> None:
    """Adopt orphaned descendants so that they are reaped here, not by PID 1."""
    _prctl(_PR_SET_CHILD_SUBREAPER, 1)


def set_title(title: str) -> None:
    """Set the process title seen in ``ps``/``top`` (no-op without setproctitle)."""
    if _setproctitle is not None:
        _setproctitle.setproctitle(title)


def reap_exited() -> Iterator[tuple[int, int]]:
    """Reap every child that has exited, yielding ``(pid, wait status)``; never blocks.

    ``waitpid(-1)`` rather than per-pid waits, because a subreaper also inherits
    orphans it never started and must reap those too.
    """
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        yield pid, status


def signal_group(pgid: int, sig: int) -> bool:
    """Send ``sig`` to a process group; False when the group no longer exists."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    return True


def raise_fd_limit(wanted: int) -> int:
    """Raise this process's soft limit on open files towards ``wanted`` (never
    above the hard limit, never lowering it); returns the soft limit now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        return target
    return soft
