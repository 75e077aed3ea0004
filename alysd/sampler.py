"""Resource readings of actor processes (the root's only reader of /proc).

Each incarnation is tracked from its fork to its exit. On Linux its
``/proc/<pid>/stat`` is opened once and re-read with one ``pread`` per
reading (~6 us here, against ~45 us for psutil's ``cpu_times`` plus
``memory_info``, ~125 us with ``oneshot``): that is what keeps sampling 50
actors ten times a second under 1 % of a core. The open file also guards
against pid reuse: once the process is reaped its file reads as gone, whatever
process gets the pid next. Elsewhere psutil does the reading.

A reading holds the RSS of the actor's process tree when asked for (an actor
with a memory limit may run helpers, e.g. an EVM node, whose memory counts
against it; their list is refreshed every ``TREE_RESCAN`` readings) and the
CPU seconds of the actor's process (children it reaped included).

Readings are scheduled per process: at the interval given to ``track``, or,
for processes nobody limits, at an interval that stretches with the number of
processes (2 s up to 400, then 5 ms each), so the cost of status figures for
a large tree stays bounded. ``refresh`` reads only what is due, within a small
time budget, so a large tree never stalls the supervisor's loop.
"""

from __future__ import annotations

import heapq
import itertools
import os
import time

import msgspec
import psutil

IDLE_INTERVAL = 2.0         # seconds between readings of a process without limits...
PER_PROCESS_INTERVAL = 0.005  # ...stretched to this many seconds per tracked process
REFRESH_BUDGET = 0.002      # seconds of reading per loop pass, at most
TREE_RESCAN = 8             # readings between two looks for the tree's processes
_PAGE = os.sysconf("SC_PAGE_SIZE")
_TICK = os.sysconf("SC_CLK_TCK")
_PROC = os.path.exists("/proc/self/stat")


class Reading(msgspec.Struct, frozen=True):
    at: float              # monotonic time of the reading
    rss_bytes: int         # of the process, or of its whole tree when tracked as one
    cpu_seconds: float     # user + system of the process and its reaped children, this incarnation
    cpu_percent: float     # of one core, since the previous reading
    stopped: bool = False  # stopped by a signal (SIGSTOP, a debugger)


class _Gone(Exception):
    """The process is gone."""


class _Process:
    """One process's figures: a pread of its stat file, or psutil off Linux."""

    def __init__(self, pid: int):
        self.pid = pid
        if _PROC:
            self.fd = os.open(f"/proc/{pid}/stat", os.O_RDONLY | os.O_CLOEXEC)
        else:
            self.proc = psutil.Process(pid)

    def read(self) -> tuple[float, int, bool]:
        """(CPU seconds, RSS bytes, stopped); raises _Gone."""
        if not _PROC:
            try:
                times = self.proc.cpu_times()
                rss = self.proc.memory_info().rss
                stopped = self.proc.status() == psutil.STATUS_STOPPED
            except psutil.Error:
                raise _Gone from None
            return times.user + times.system + times.children_user + times.children_system, \
                rss, stopped
        try:
            data = os.pread(self.fd, 1024, 0)
        except OSError:
            raise _Gone from None
        # The command name (field 2) may hold spaces or parentheses: split after the last ')'.
        fields = data[data.rindex(b")") + 2:].split()
        if fields[0] in (b"Z", b"X"):
            raise _Gone
        cpu = (int(fields[11]) + int(fields[12]) + int(fields[13]) + int(fields[14])) / _TICK
        return cpu, int(fields[21]) * _PAGE, fields[0] in (b"T", b"t")

    def children(self) -> list[int]:
        if not _PROC:
            try:
                return [c.pid for c in self.proc.children()]
            except psutil.Error:
                return []
        pids = []
        try:
            tasks = os.listdir(f"/proc/{self.pid}/task")
        except OSError:
            return []
        for task in tasks:
            try:
                with open(f"/proc/{self.pid}/task/{task}/children", "rb") as f:
                    pids += map(int, f.read().split())
            except OSError:
                pass
        return pids

    def close(self) -> None:
        if _PROC:
            os.close(self.fd)


class _Tracked:
    def __init__(self, key: str, process: _Process, interval: float | None, tree: bool):
        self.key = key
        self.process = process
        self.interval = interval
        self.tree: dict[int, _Process] | None = {} if tree else None
        self.readings = 0        # also the generation of its entry in the schedule
        self.reading: Reading | None = None
        self.gone = False

    def descendants_rss(self) -> int:
        """RSS of the processes below this one (rescanned every TREE_RESCAN readings)."""
        tree = self.tree
        if self.readings % TREE_RESCAN == 0:
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
                total += process.read()[1]
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
              tree: bool = False) -> None:
        """Start reading ``pid`` under ``key`` (replacing a previous incarnation),
        every ``interval`` seconds (None: the idle interval), with the RSS of
        its whole tree when ``tree``. A process already gone is not tracked."""
        self.forget(key)
        try:
            tracked = _Tracked(key, _Process(pid), interval, tree)
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
        read = []
        deadline = time.monotonic() + REFRESH_BUDGET
        due = self._due
        while due and due[0][0] <= now and time.monotonic() < deadline:
            entry = heapq.heappop(due)
            if _stale(entry):
                continue
            tracked = entry[2]
            if self._read(tracked, now):
                read.append(tracked.key)
        return read

    def _read(self, tracked: _Tracked, now: float) -> bool:
        try:
            cpu, rss, stopped = tracked.process.read()
        except _Gone:
            self._tracked.pop(tracked.key, None)
            tracked.close()
            return False
        if tracked.tree is not None:
            rss += tracked.descendants_rss()
        previous = tracked.reading
        if previous is None:
            percent = 0.0
        else:
            percent = max(0.0, (cpu - previous.cpu_seconds) / max(now - previous.at, 1e-6) * 100)
        tracked.reading = Reading(now, rss, cpu, round(percent, 1), stopped)
        tracked.readings += 1
        interval = tracked.interval if tracked.interval is not None else self.idle_interval
        heapq.heappush(self._due, (now + interval, next(self._seq), tracked, tracked.readings))
        return True


def _stale(entry: tuple[float, int, _Tracked, int]) -> bool:
    return entry[2].gone or entry[3] != entry[2].readings
