"""Resource limits of an actor and the decision to act on them (pure).

``Limits`` is plain data taken from an actor's spec; ``LimitWatch`` follows one
incarnation's readings (``alysd.sampler.Reading``) and says when a limit is
breached for real:

* ``memory_limit``: the RSS of the actor's process tree is over the limit in
  ``breaches`` readings in a row (one reading over is noise: a transient
  allocation that is freed again does not kill a validator's actor);
* ``cpu_limit``: CPU use averaged over ``cpu_window`` is over the limit (in
  cores) in ``breaches`` readings in a row; nothing is judged before a whole
  window of readings exists, so a busy start is never a breach;
* ``max_cpu_time``: the message in the actor's hands has used more CPU than
  this since it was first seen in a reading (a lower bound of what it used).
  One reading suffices: CPU time only grows. The breach is ``hung``.

Nothing here touches a process; the supervisor samples and kills.
"""

from __future__ import annotations

import collections

import msgspec

from alysd.config import ActorSpec

CPU_READINGS_PER_WINDOW = 10


class Limits(msgspec.Struct, frozen=True):
    memory: int | None = None            # bytes
    cpu: float | None = None             # cores
    cpu_window: float = 5.0              # seconds
    max_cpu_time: float | None = None    # seconds of CPU for one message

    @classmethod
    def of(cls, spec: ActorSpec) -> "Limits":
        return cls(spec.memory_limit, spec.cpu_limit, spec.cpu_window, spec.max_cpu_time)

    @property
    def any(self) -> bool:
        return self.memory is not None or self.cpu is not None or self.max_cpu_time is not None

    @property
    def capped(self) -> bool:
        """Whether a kernel cap (memory.max, cpu.max) can back these limits up."""
        return self.memory is not None or self.cpu is not None

    def reading_interval(self, base: float) -> float | None:
        """How often to read the actor at all: as ``sample_interval`` when memory
        or ``max_cpu_time`` is limited, else as CPU needs; None (the sampler's idle
        interval) without limits."""
        if self.memory is not None or self.max_cpu_time is not None:
            return self.sample_interval(base)
        return self.cpu_interval(base)

    def sample_interval(self, base: float) -> float:
        """How often readings are needed: ``base``, or often enough to catch a
        handler at most half a ``max_cpu_time`` late."""
        if self.max_cpu_time is None:
            return base
        return min(base, self.max_cpu_time / 2)

    def cpu_interval(self, base: float) -> float | None:
        """How often CPU must be read, at most: often enough for ``max_cpu_time``,
        and ``CPU_READINGS_PER_WINDOW`` times per ``cpu_window`` (not more often
        than ``base``) for ``cpu_limit``; None when no CPU limit needs it."""
        wanted = []
        if self.max_cpu_time is not None:
            wanted.append(self.sample_interval(base))
        if self.cpu is not None:
            wanted.append(max(base, self.cpu_window / CPU_READINGS_PER_WINDOW))
        return min(wanted) if wanted else None


class Breach(msgspec.Struct, frozen=True):
    reason: str        # memory_limit | cpu_limit | hung: becomes last_exit.reason
    detail: str        # for the log and the crash report
    message_id: int | None = None   # for hung: the message that ran too long


class LimitWatch:
    """One incarnation's readings against its limits."""

    def __init__(self, limits: Limits, breaches: int):
        self.limits = limits
        self.breaches = breaches
        self.memory_over = 0            # readings in a row over the memory limit
        self.cpu_over = 0
        # (monotonic time, cumulative CPU seconds): the readings in the last window
        self.window: collections.deque[tuple[float, float]] = collections.deque()
        self.handling: tuple[int, float] | None = None   # (message id, CPU seconds when first seen)
        self.cpu_at = float("-inf")     # when the CPU of the last reading was read

    def observe(self, at: float, rss_bytes: int, cpu_seconds: float,
                message_id: int | None) -> Breach | None:
        """Take one reading (``at``: when ``cpu_seconds`` was read; ``message_id``:
        the message in hand, None when idle); returns the breach to act on, if any.
        A reading whose CPU is not newer than the last one's counts for memory only."""
        limits = self.limits
        fresh_cpu = at > self.cpu_at
        if fresh_cpu:
            self.cpu_at = at
        if limits.max_cpu_time is not None and fresh_cpu:
            if message_id is None:
                self.handling = None
            elif self.handling is None or self.handling[0] != message_id:
                self.handling = (message_id, cpu_seconds)
            elif cpu_seconds - self.handling[1] > limits.max_cpu_time:
                used = cpu_seconds - self.handling[1]
                return Breach("hung", f"message {message_id} has used {used:.2f}s of CPU, over "
                              f"max_cpu_time {limits.max_cpu_time:g}s", message_id)
        if limits.memory is not None:
            self.memory_over = self.memory_over + 1 if rss_bytes > limits.memory else 0
            if self.memory_over >= self.breaches:
                return Breach("memory_limit", f"RSS {rss_bytes} bytes over memory_limit "
                              f"{limits.memory} in {self.memory_over} readings in a row")
        if limits.cpu is not None and fresh_cpu:
            cores = self._cpu_average(at, cpu_seconds)
            if cores is not None:
                self.cpu_over = self.cpu_over + 1 if cores > limits.cpu else 0
                if self.cpu_over >= self.breaches:
                    return Breach("cpu_limit", f"{cores:.2f} cores over the last "
                                  f"{limits.cpu_window:g}s, over cpu_limit {limits.cpu:g} in "
                                  f"{self.cpu_over} readings in a row")
        return None

    def _cpu_average(self, at: float, cpu_seconds: float) -> float | None:
        """Cores used over the last ``cpu_window`` (None until a whole window was seen)."""
        window = self.window
        window.append((at, cpu_seconds))
        horizon = at - self.limits.cpu_window
        # Keep the newest reading at or before the horizon as the window's start.
        while len(window) > 1 and window[1][0] <= horizon:
            window.popleft()
        start_at, start_cpu = window[0]
        if start_at > horizon or at <= start_at:
            return None
        return (cpu_seconds - start_cpu) / (at - start_at)
