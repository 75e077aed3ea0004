"""Restart decisions, as pure functions of data (no processes, no clock reads).

``RestartWindow`` is OTP's restart intensity: a supervisor allows at most
``max_restarts`` restarts within a sliding window of ``period`` seconds; one
more and it gives up. Every restart counts, failed start attempts included.

``wants_restart`` applies a child's restart type and policy to one exit.
"""

from __future__ import annotations

import collections

from alysd.config import ActorSpec, ChildPolicy, Restart
from alysd.exits import LastExit


class RestartWindow:
    """Sliding window of restart times (OTP ``add_restart``)."""

    def __init__(self, max_restarts: int, period: float):
        self.max_restarts = max_restarts
        self.period = period
        self._stamps: collections.deque[float] = collections.deque()

    def record(self, now: float) -> bool:
        """Record a restart at ``now``; False when it exceeds the intensity."""
        self._stamps.append(now)
        while self._stamps and self._stamps[0] < now - self.period:
            self._stamps.popleft()
        return len(self._stamps) <= self.max_restarts

    def __len__(self) -> int:
        return len(self._stamps)


def is_abnormal(exit: LastExit) -> bool:
    """An exit other than a clean stop (OTP: not ``normal``/``shutdown``)."""
    return exit.reason != "clean"


def wants_restart(spec: ActorSpec, exit: LastExit) -> bool:
    """Whether this exit of an unsupervised-by-command child calls for a restart.

    ``temporary`` children and the ``never`` policy are left stopped;
    ``transient`` children restart only after an abnormal exit; an actor that
    exits with EX_CONFIG cannot run with its config, so restarting it would only
    loop.
    """
    if exit.reason == "config":
        return False
    if spec.restart is Restart.TEMPORARY or spec.strategy is ChildPolicy.NEVER:
        return False
    if spec.restart is Restart.TRANSIENT:
        return is_abnormal(exit)
    return True
