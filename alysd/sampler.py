"""Resource readings of actor processes (the root's only reader of /proc).

Each incarnation is tracked from its fork to its exit. On Linux its
``/proc/<pid>/statm`` (memory) and ``/proc/<pid>/stat`` (CPU) are opened once
and re-read with one ``pread`` each, against ~45 us for psutil's
``cpu_times`` plus ``memory_info`` here (~125 us with ``oneshot``). Memory is
read at every reading (``statm``: ~2 us of kernel time); CPU, whose ``stat``
costs the kernel ~15 us for a multi-threaded actor, only every
``cpu_interval``: a CPU limit is judged over a window of seconds and needs far
fewer readings than a leak does. The open files also guard against pid reuse:
once the process is reaped they read as gone, whatever process gets the pid
next. Elsewhere psutil does the reading.

A reading holds the RSS of the actor's process tree when asked for (an actor
with a memory limit may run helpers, e.g. an EVM node, whose memory counts
against it; their list is refreshed every ``TREE_RESCAN`` seconds) and the
CPU seconds of the actor's process (children it reaped included).

Readings are scheduled per process: at the interval given to ``track``, or,
for processes nobody limits, at an interval that stretches with the number of
processes (2 s up to 400, then 5 ms each), so the cost of status figures for
a large tree stays bounded. Readings after the first fall on a grid of their
interval, so processes read at the same interval are read in the same pass
and the loop wakes once per interval for all of them, not once per process.
``refresh`` stops after a small time budget, so a large tree never stalls the
loop.
"""

from __future__ import annotations

import heapq
import itertools
import math
import os
import time

import msgspec
import psutil

IDLE_INTERVAL = 2.0         # seconds between readings of a process without limits...
PER_PROCESS_INTERVAL = 0.005  # ...stretched to this many seconds per tracked process
REFRESH_BUDGET = 0.002      # seconds of reading per loop pass, at most
COALESCE = 0.02             # readings (and CPU) due this soon are taken in the same pass
TREE_RESCAN = 2.0           # seconds between two looks for the processes of a tree
_PAGE = os.sysconf("SC_PAGE_SIZE")
_TICK = os.sysconf("SC_CLK_TCK")
_PROC = os.path.exists("/proc/self/stat")


class Reading(msgspec.Struct, frozen=True):
    at: float              # monotonic time of the reading (of memory)
    rss_bytes: int         # of the process, or of its whole tree when tracked as one
    cpu_at: float          # monotonic time CPU was last read (at or before ``at``)
    cpu_seconds: float     # user + system of the process and its reaped children, this incarnation
    cpu_percent: float     # of one core, between the last two CPU readings
    stopped: bool = False  # stopped by a signal (SIGSTOP, a debugger), as of ``cpu_at``


class _Gone(Exception):
    """The process is gone."""


class _Process:
    """One process's figures: preads of its statm and stat files, or psutil off Linux."""

    def __init__(self, pid: int):
        self.pid = pid
        self.children_fd: int | None = None
        if _PROC:
            self.statm = os.open(f"/proc/{pid}/statm", os.O_RDONLY | os.O_CLOEXEC)
            try:
                self.stat = os.open(f"/proc/{pid}/stat", os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                os.close(self.statm)
                raise
        else:
            self.proc = psutil.Process(pid)

    def rss(self) -> int:
        """Resident bytes; raises _Gone."""
        if not _PROC:
            try:
                return self.proc.memory_info().rss
            except psutil.Error:
                raise _Gone from None
        try:
            return int(os.pread(self.statm, 128, 0).split(None, 2)[1]) * _PAGE
        except OSError:
            raise _Gone from None

    def cpu(self) -> tuple[float, bool]:
        """(CPU seconds, stopped); raises _Gone."""
        if not _PROC:
            try:
                times = self.proc.cpu_times()
                stopped = self.proc.status() == psutil.STATUS_STOPPED
            except psutil.Error:
                raise _Gone from None
            return times.user + times.system + times.children_user + times.children_system, \
                stopped
        try:
            data = os.pread(self.stat, 1024, 0)
        except OSError:
            raise _Gone from None
        # The command name (field 2) may hold spaces or parentheses: split after the last ')'.
        fields = data.rpartition(b")")[2].split(None, 15)
        if fields[0] in (b"Z", b"X"):
            raise _Gone
        cpu = (int(fields[11]) + int(fields[12]) + int(fields[13]) + int(fields[14])) / _TICK
        return cpu, fields[0] in (b"T", b"t")

    def children(self) -> list[int]:
        """The processes this one forked from its main thread (where actor code
        runs; the runtime's own threads fork nothing), or every child off Linux."""
        if not _PROC:
            try:
                return [c.pid for c in self.proc.children()]
            except psutil.Error:
                return []
        try:
            if self.children_fd is None:
                self.children_fd = os.open(f"/proc/{self.pid}/task/{self.pid}/children",
                                           os.O_RDONLY | os.O_CLOEXEC)
            return [int(pid) for pid in os.pread(self.children_fd, 65536, 0).split()]
        except OSError:
            return []

    def close(self) -> None:
        if _PROC:
            os.close(self.statm)
            os.close(self.stat)
            if self.children_fd is not None:
                os.close(self.children_fd)


class _Tracked:
    def __init__(self, key: str, process: _Process, interval: float | None,
                 cpu_interval: float | None, tree: bool):
        self.key = key
        self.process = process
        self.interval = interval
        self.cpu_interval = cpu_interval
        self.cpu_due = float("-inf")
        self.tree: dict[int, _Process] | None = {} if tree else None
        self.readings = 0        # also the generation of its entry in the schedule
        self.tree_scanned = float("-inf")
        self.reading: Reading | None = None
        self.gone = False

    def descendants_rss(self, now: float) -> int:
        """RSS of the processes below this one (looked for every TREE_RESCAN seconds)."""
        tree = self.tree
        if now - self.tree_scanned >= TREE_RESCAN:
            self.tree_scanned = now
            found, frontier = set(), [self.process]
            while frontier:
                for pid in frontier.pop().children():
                    if pid not in found:
                        found.add(pid)
                        if pid not in tree:
                            try:
                                tree[pid] = _Process(pid)
                            except (OSError, psutil.Error):
                                continue
                        frontier.append(tree[pid])
            for pid in set(tree) - found:
                tree.pop(pid).close()
        total = 0
        for pid, process in list(tree.items()):
            try:
                total += process.rss()
            except _Gone:
                tree.pop(pid).close()
        return total

    def close(self) -> None:
        self.gone = True
        self.process.close()
        for process in (self.tree or {}).values():
            process.close()


class Sampler:
    """Keeps the latest ``Reading`` of every tracked process."""

    def __init__(self) -> None:
        self._tracked: dict[str, _Tracked] = {}
        # Heap of (due, seq, tracked, generation): an entry is stale, and dropped
        # when met, once its process was forgotten or read since it was pushed.
        self._due: list[tuple[float, int, _Tracked, int]] = []
        self._seq = itertools.count()

    def track(self, key: str, pid: int, *, interval: float | None = None,
              cpu_interval: float | None = None, tree: bool = False) -> None:
        """Start reading ``pid`` under ``key`` (replacing a previous incarnation):
        memory every ``interval`` seconds (None: the idle interval), of its
        whole tree when ``tree``; CPU at the first reading after each
        ``cpu_interval`` (None: at every reading). A process already gone is not
        tracked."""
        self.forget(key)
        try:
            tracked = _Tracked(key, _Process(pid), interval, cpu_interval, tree)
        except (OSError, psutil.Error):
            return
        self._tracked[key] = tracked
        self._read(tracked, time.monotonic())

    def forget(self, key: str) -> Reading | None:
        """Stop reading ``key``; returns its last reading."""
        tracked = self._tracked.pop(key, None)
        if tracked is None:
            return None
        tracked.close()
        return tracked.reading

    def latest(self, key: str) -> Reading | None:
        tracked = self._tracked.get(key)
        return tracked.reading if tracked else None

    def soon(self, key: str, delay: float) -> None:
        """Read ``key`` again after ``delay`` rather than at its interval."""
        tracked = self._tracked.get(key)
        if tracked is not None:
            heapq.heappush(self._due, (time.monotonic() + delay, next(self._seq), tracked,
                                       tracked.readings))

    @property
    def idle_interval(self) -> float:
        return max(IDLE_INTERVAL, len(self._tracked) * PER_PROCESS_INTERVAL)

    def next_due(self) -> float | None:
        """Monotonic time at which the next reading is due, or None when idle."""
        due = self._due
        while due and _stale(due[0]):
            heapq.heappop(due)
        return due[0][0] if due else None

    def refresh(self, now: float) -> list[str]:
        """Read the processes that are due, earliest first, within the budget;
        returns the keys read (a process found gone is dropped silently: its
        exit is reported by event)."""
        read: list[str] = []
        deadline = time.monotonic() + REFRESH_BUDGET
        due = self._due
        horizon = now + COALESCE
        pop, take = heapq.heappop, self._read
        while due and due[0][0] <= horizon:
            entry = pop(due)
            if _stale(entry):
                continue
            tracked = entry[2]
            if take(tracked, now):
                read.append(tracked.key)
            # the clock is looked at every few readings: it costs as much as one
            if len(read) % 16 == 0 and time.monotonic() >= deadline:
                break
        return read

    def _read(self, tracked: _Tracked, now: float) -> bool:
        previous = tracked.reading
        try:
            rss = tracked.process.rss()
            if now >= tracked.cpu_due:
                cpu, stopped = tracked.process.cpu()
                cpu_at = now
                if tracked.cpu_interval is not None:
                    tracked.cpu_due = now + tracked.cpu_interval - COALESCE
            else:
                cpu_at, cpu, stopped = previous.cpu_at, previous.cpu_seconds, previous.stopped
        except _Gone:
            self._tracked.pop(tracked.key, None)
            tracked.close()
            return False
        if tracked.tree is not None and (tracked.tree or now - tracked.tree_scanned >= TREE_RESCAN):
            rss += tracked.descendants_rss(now)
        if previous is None or cpu_at <= previous.cpu_at:
            percent = previous.cpu_percent if previous is not None else 0.0
        else:
            percent = (cpu - previous.cpu_seconds) / (cpu_at - previous.cpu_at) * 100
        tracked.reading = Reading(now, rss, cpu_at, cpu, percent, stopped)
        tracked.readings += 1
        interval = tracked.interval if tracked.interval is not None else self.idle_interval
        # On a grid of the interval: processes read at the same interval fall into
        # step, so that the loop wakes once per interval for all of them.
        due = math.ceil((now + interval * 0.75) / interval) * interval
        heapq.heappush(self._due, (due, next(self._seq), tracked, tracked.readings))
        return True


def _stale(entry: tuple[float, int, _Tracked, int]) -> bool:
    return entry[2].gone or entry[3] != entry[2].readings
