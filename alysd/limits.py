"""Resource sampling of actor processes with psutil (the root's only psutil user).

One ``psutil.Process`` is kept per incarnation for its whole life: it guards
against pid reuse, and CPU use is measured between two readings of the same
process. Sampling is incremental: each call to ``refresh`` samples only the
stalest processes, within a small time budget, so a status query never walks
/proc for every actor and a large tree never stalls the loop. The interval
stretches with the number of actors (2 s up to 400 actors, then 5 ms per
actor): a psutil reading costs ~70-100 us here, so this bounds the root's
sampling cost at ~2 % of one core whatever the size of the tree.

Numbers stay numbers here; formatting belongs to alysctl.
"""

from __future__ import annotations

import collections
import time
from dataclasses import dataclass

import msgspec
import psutil

MIN_INTERVAL = 2.0          # seconds between two samples of one process
PER_ACTOR_INTERVAL = 0.005  # ... stretched to this many seconds per tracked process
REFRESH_BUDGET = 0.002      # seconds of sampling per loop pass, at most


class Sample(msgspec.Struct, frozen=True):
    rss_bytes: int
    cpu_percent: float      # of one core, averaged since the previous sample
    at: float               # monotonic time of the reading


@dataclass
class _Tracked:
    proc: psutil.Process
    cpu_total: float
    at: float
    sample: Sample | None = None
    gone: bool = False


class Sampler:
    """Keeps the latest ``Sample`` of every tracked process."""

    def __init__(self) -> None:
        self._tracked: dict[str, _Tracked] = {}
        # Stalest first: sampling takes from the left and puts back on the right,
        # so the queue stays in order without sorting. Forgotten entries are
        # dropped lazily.
        self._queue: collections.deque[_Tracked] = collections.deque()

    def track(self, key: str, pid: int) -> None:
        """Start sampling ``pid`` under ``key`` (replacing a previous incarnation)."""
        try:
            proc = psutil.Process(pid)
            with proc.oneshot():
                times = proc.cpu_times()
                started = proc.create_time()
            # The first reading averages over the process's life so far.
            tracked = _Tracked(proc, 0.0, time.monotonic() - max(time.time() - started, 1e-3))
            self._take(tracked, time.monotonic(), times)
        except psutil.Error:
            self.forget(key)
            return
        self.forget(key)
        self._tracked[key] = tracked
        self._queue.append(tracked)

    def forget(self, key: str) -> None:
        tracked = self._tracked.pop(key, None)
        if tracked is not None:
            tracked.gone = True

    def latest(self, key: str) -> Sample | None:
        tracked = self._tracked.get(key)
        return tracked.sample if tracked else None

    @property
    def interval(self) -> float:
        return max(MIN_INTERVAL, len(self._tracked) * PER_ACTOR_INTERVAL)

    def next_due(self) -> float | None:
        """Monotonic time at which the stalest process is due, or None when idle."""
        while self._queue and self._queue[0].gone:
            self._queue.popleft()
        return self._queue[0].at + self.interval if self._queue else None

    def refresh(self, now: float) -> None:
        """Sample the processes that are due, stalest first, within the budget."""
        due = now - self.interval
        deadline = time.monotonic() + REFRESH_BUDGET
        queue = self._queue
        while queue and time.monotonic() < deadline:
            tracked = queue[0]
            if not tracked.gone and tracked.at > due:
                return
            queue.popleft()
            if tracked.gone:
                continue
            try:
                self._take(tracked, now, tracked.proc.cpu_times())
            except psutil.Error:
                tracked.at = now  # gone: its exit is reported by event, not found here
            queue.append(tracked)

    @staticmethod
    def _take(tracked: _Tracked, now: float, times) -> None:
        total = times.user + times.system
        elapsed = max(now - tracked.at, 1e-6)
        cpu = max(0.0, (total - tracked.cpu_total) / elapsed * 100.0)
        rss = tracked.proc.memory_info().rss
        tracked.cpu_total, tracked.at = total, now
        tracked.sample = Sample(rss, round(cpu, 1), now)
