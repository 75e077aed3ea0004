"""Restart decisions, as pure functions of data (no processes; time is passed in).

Three layers, applied in this order to every unexpected exit of an actor:

1. The child's restart type (OTP): ``temporary`` never restarts, ``transient``
   only after an abnormal exit, ``permanent`` always. An actor that exited with
   EX_CONFIG cannot run with its configuration and is left ``failed``.
2. The child's policy (the seed's ``SupervisionStrategy``), kept in a
   ``ChildTrack``: ``one_for_one`` restarts at once; ``exponential_backoff``
   waits ``min(max_delay, initial_delay * multiplier**n)`` plus up to 20 %
   jitter (group restarts must not thunder), with ``n`` reset once the child
   has stayed up for ``reset_after``; ``circuit_breaker`` counts consecutive
   failures and, at ``failure_threshold``, opens: the actor stays stopped with
   a visible reason for ``recovery_timeout``, then one incarnation is let
   through (half-open); ``success_threshold`` healthy health reports close it
   again, a failure reopens it; ``never`` leaves it stopped.
3. The supervisor's restart intensity, ``RestartWindow`` (OTP ``add_restart``):
   more than ``max_retries`` restarts within ``within_time`` and the
   supervisor gives up: it stops its children and fails itself, which its
   parent handles by its own strategy (``escalate``). Failed start attempts
   count too.

``plan_group`` turns a supervisor's strategy into which siblings to stop and
which to start again.
"""

from __future__ import annotations

import collections
import enum
import math
import random
from dataclasses import dataclass

from alysd.config import ActorSpec, ChildPolicy, Restart, Strategy
from alysd.exits import LastExit

JITTER = 0.2   # a backoff delay is stretched by up to this fraction, at random


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

    def clear(self) -> None:
        self._stamps.clear()

    def __len__(self) -> int:
        return len(self._stamps)


def is_abnormal(exit: LastExit) -> bool:
    """An exit other than a clean stop (OTP: not ``normal``/``shutdown``)."""
    return exit.reason != "clean"


def wants_restart(spec: ActorSpec, exit: LastExit) -> bool:
    """Whether the child's restart type (and the ``never`` policy) allow a restart."""
    if exit.reason == "config":
        return False
    if spec.restart is Restart.TEMPORARY or spec.strategy is ChildPolicy.NEVER:
        return False
    if spec.restart is Restart.TRANSIENT:
        return is_abnormal(exit)
    return True


class BreakerState(str, enum.Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class Action(str, enum.Enum):
    RESTART = "restart"          # after ``delay`` seconds
    STAY_STOPPED = "stopped"     # by its restart type or policy; not a failure
    FAIL = "failed"              # given up on; ``alysctl start``/``reset`` brings it back


@dataclass(frozen=True)
class Verdict:
    action: Action
    delay: float = 0.0
    reason: str | None = None


class ChildTrack:
    """Per-actor restart policy state. Methods take ``now`` (monotonic seconds)."""

    def __init__(self, spec: ActorSpec, rng: random.Random | None = None):
        self.spec = spec
        self.rng = rng or random.Random()
        self.attempts = 0                 # consecutive restarts without a healthy stretch
        self.up_since: float | None = None
        self.breaker = BreakerState.CLOSED
        self.failures = 0                 # consecutive failures counted by the breaker
        self.successes = 0                # healthy health reports seen while half-open
        self.opened_at: float | None = None

    def on_ready(self, now: float) -> None:
        self.up_since = now

    def on_healthy(self, now: float) -> None:
        """A health report said the actor is healthy."""
        backoff = self.spec.backoff
        if self.up_since is not None and now - self.up_since >= backoff.reset_after:
            self.attempts = 0
        if self.breaker is BreakerState.HALF_OPEN:
            self.successes += 1
            if self.successes >= self.spec.breaker.success_threshold:
                self.breaker, self.failures, self.successes = BreakerState.CLOSED, 0, 0
        elif self.breaker is BreakerState.CLOSED:
            self.failures = 0

    def on_exit(self, exit: LastExit, now: float) -> Verdict:
        """Decide what an unexpected exit of the current incarnation leads to."""
        self.up_since = None
        if exit.reason == "config":
            return Verdict(Action.FAIL, reason="cannot run with its configuration (EX_CONFIG)")
        if not wants_restart(self.spec, exit):
            why = ("policy never" if self.spec.strategy is ChildPolicy.NEVER
                   else f"restart = {self.spec.restart.value}")
            return Verdict(Action.STAY_STOPPED, reason=why)
        policy = self.spec.strategy
        if policy is ChildPolicy.CIRCUIT_BREAKER:
            return self._breaker_failure(now)
        if policy is ChildPolicy.EXPONENTIAL_BACKOFF:
            backoff = self.spec.backoff
            if self.attempts >= backoff.max_retries:
                return Verdict(Action.FAIL, reason=f"backoff gave up after {self.attempts} "
                                                   "restarts without a healthy stretch")
            delay = _backoff_delay(backoff, self.attempts)
            self.attempts += 1
            return Verdict(Action.RESTART, delay=delay * (1 + self.rng.uniform(0, JITTER)))
        self.attempts += 1
        return Verdict(Action.RESTART)

    def _breaker_failure(self, now: float) -> Verdict:
        self.failures += 1
        if self.breaker is BreakerState.HALF_OPEN or self.failures >= self.spec.breaker.failure_threshold:
            self.breaker, self.opened_at, self.successes = BreakerState.OPEN, now, 0
            return Verdict(Action.STAY_STOPPED, reason=self.open_reason(now))
        return Verdict(Action.RESTART)

    def open_reason(self, now: float) -> str:
        left = max(0.0, self.opened_at + self.spec.breaker.recovery_timeout - now)
        return f"circuit open after {self.failures} failures; half-open in {left:.1f}s"

    def breaker_due(self, now: float) -> bool:
        """If the breaker is open and its recovery timeout passed, go half-open: True
        means the caller should start one trial incarnation now."""
        if self.breaker is BreakerState.OPEN and self.opened_at is not None and \
                now >= self.opened_at + self.spec.breaker.recovery_timeout:
            self.breaker, self.successes = BreakerState.HALF_OPEN, 0
            return True
        return False

    def breaker_deadline(self) -> float | None:
        if self.breaker is BreakerState.OPEN and self.opened_at is not None:
            return self.opened_at + self.spec.breaker.recovery_timeout
        return None

    def reset(self) -> None:
        """Close the breaker and forget failures (``alysctl reset``, a commanded start)."""
        self.attempts = self.failures = self.successes = 0
        self.breaker, self.opened_at = BreakerState.CLOSED, None


def _backoff_delay(backoff, attempts: int) -> float:
    """``min(max_delay, initial_delay * multiplier ** attempts)``, without computing a
    power that overflows a float in a long crash loop: the exponent stops growing
    once the cap is reached."""
    if backoff.multiplier <= 1 or backoff.max_delay <= backoff.initial_delay:
        return min(backoff.max_delay, backoff.initial_delay)
    to_cap = math.ceil(math.log(backoff.max_delay / backoff.initial_delay, backoff.multiplier))
    return min(backoff.max_delay,
               backoff.initial_delay * backoff.multiplier ** min(attempts, to_cap))


def plan_group(strategy: Strategy, siblings: list[str], failed: str) -> tuple[list[str], list[str]]:
    """For a restart of ``failed`` among ``siblings`` (in start order): the siblings to
    stop first (in reverse start order) and the ones to start again (in start order).

    ``one_for_one``: only the failed child. ``one_for_all``: every sibling.
    ``rest_for_one``: the failed child and every sibling started after it.
    """
    if strategy is Strategy.ONE_FOR_ALL:
        group = list(siblings)
    elif strategy is Strategy.REST_FOR_ONE:
        group = siblings[siblings.index(failed):]
    else:
        group = [failed]
    return [name for name in reversed(group) if name != failed], group
