"""Why a process ended: the exit-code contract and the classification of exits.

Actors exit with one of the ``ExitCode`` values on purpose; anything else is a
crash. ``classify`` turns a raw ``waitpid`` status into the ``LastExit`` record
shown by ``alysctl status`` (``last_exit``) and used by restart decisions. It is
pure, so it is tested without processes.
"""

from __future__ import annotations

import enum
import os
import signal

import msgspec


class ExitCode(enum.IntEnum):
    """Exit codes an actor process uses on purpose."""

    OK = 0              # stopped cleanly (SIGTERM or commanded stop)
    CRASH = 1           # an unexpected exception escaped the runtime loop
    START_FAILED = 3    # ``started()`` raised: the incarnation never became ready
    MEMORY_LIMIT = 4    # a handler ran out of memory in an actor that has a memory_limit
    CONFIG = 78         # EX_CONFIG: the actor cannot run with this config; do not restart


class LastExit(msgspec.Struct, frozen=True, kw_only=True):
    """How the previous incarnation of an actor ended."""

    reason: str                 # clean | exit_code | signal | start_failed | config | start_timeout | ...
    code: int | None = None     # exit status when the process exited
    signal: str | None = None   # signal name when it was killed by one
    pid: int | None = None
    at: float | None = None     # unix time of the exit


def classify(wait_status: int, *, pid: int | None = None, at: float | None = None,
             reason: str | None = None) -> LastExit:
    """Classify a ``waitpid`` status; ``reason`` overrides the derived reason.

    An override is how the supervisor records causes the status cannot show,
    e.g. ``start_timeout`` for an incarnation it killed because it never became
    ready.
    """
    if os.WIFSIGNALED(wait_status):
        signum = os.WTERMSIG(wait_status)
        try:
            name = signal.Signals(signum).name
        except ValueError:
            name = f"SIG{signum}"
        return LastExit(reason=reason or "signal", signal=name, pid=pid, at=at)
    code = os.WEXITSTATUS(wait_status) if os.WIFEXITED(wait_status) else None
    derived = {
        ExitCode.OK: "clean",
        ExitCode.START_FAILED: "start_failed",
        ExitCode.MEMORY_LIMIT: "memory_limit",
        ExitCode.CONFIG: "config",
    }.get(code, "exit_code")
    return LastExit(reason=reason or derived, code=code, pid=pid, at=at)
