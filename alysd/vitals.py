"""The root's watch over each incarnation: resources against limits, heartbeat,
health probes, and kernel caps where the host allows them.

``Vitals`` decides and the supervisor's loop acts: it returns the breaches to
kill for and the actors to probe, and never signals a process itself. Its
per-incarnation state is a ``Vital`` kept in the supervisor's child record,
so one record still holds everything about a child.

Guarantees:

* an incarnation is killed for a limit only after ``limit_breaches`` readings
  in a row over it (``alysd.limits``); a reading over the memory limit is
  confirmed a quarter interval later rather than a whole one;
* a running incarnation whose heartbeat (``ActorTable.beat``) did not move for
  ``HUNG_AFTER`` heartbeat intervals, and that sent no system message in that
  time, is hung;
* at most one health probe per actor is in flight; one unanswered for
  ``health_timeout`` makes the actor unhealthy until it answers;
* kernel caps (``alysd.cgroup``) sit ``KERNEL_HEADROOM`` above the limits, so
  that the readings, which say why, act first; a failure to set them is logged
  and the readings still enforce the limits.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol

from alysd.actor_table import ActorTable
from alysd.cgroup import CgroupError, KernelCaps
from alysd.config import Config
from alysd.limits import Breach, Limits, LimitWatch
from alysd.sampler import Reading, Sampler

log = logging.getLogger("alysd")

HUNG_AFTER = 3              # heartbeat intervals of silence after which an actor is hung
CONFIRM_SOON = 0.25         # a reading over a limit is confirmed after this share of the interval
KERNEL_HEADROOM = 1.25      # kernel caps sit this far above the limits the readings enforce


@dataclass
class Vital:
    """What the root watches of one incarnation."""

    watch: LimitWatch | None = None    # its readings against its limits
    breach: Breach | None = None       # why the root killed it, once it did
    beat: int = 0                      # its heartbeat counter, as last seen...
    beat_seen: float = 0.0             # ...and when it last moved or a message came (monotonic)
    probe: int = 0                     # the last health probe sent...
    probe_sent: float | None = None    # ...and when, while it is unanswered (monotonic)
    oom_kills: int = 0                 # kernel OOM kills in its cgroup before it started


class Incarnation(Protocol):
    name: str
    pid: int | None
    vital: Vital


class Vitals:
    def __init__(self, config: Config, table: ActorTable):
        self.system = config.system
        self.table = table
        self.sampler = Sampler()
        self.limits = {name: Limits.of(spec) for name, spec in config.actors.items()}
        self.caps: KernelCaps | None = None
        self.next_beat_check = 0.0
        self.next_probe = 0.0

    # --- incarnations come and go -------------------------------------------------------

    def adopt_kernel_caps(self, pids: Iterable[int]) -> None:
        """Where this host delegates a cgroup v2 to alysd, actors with limits also
        get kernel caps; elsewhere the readings alone enforce the limits."""
        if not any(limits.capped for limits in self.limits.values()):
            return
        caps, why_not = KernelCaps.detect()
        if caps is None:
            log.info("limits are enforced by sampling only: no kernel caps (%s)", why_not)
            return
        try:
            caps.adopt(pids)
        except CgroupError as exc:
            log.warning("limits are enforced by sampling only: %s", exc)
            return
        self.caps = caps
        log.info("actors with limits also get kernel caps in %s", caps.own)

    def spawned(self, name: str, pid: int) -> Vital:
        """Start watching a new incarnation; returns its Vital."""
        limits = self.limits[name]
        base = self.system.sample_interval
        self.sampler.track(name, pid, interval=limits.reading_interval(base),
                           cpu_interval=limits.cpu_interval(base), tree=limits.memory is not None)
        vital = Vital(watch=LimitWatch(limits, self.system.limit_breaches) if limits.any else None)
        if self.caps is not None and limits.capped:
            memory = None if limits.memory is None else int(limits.memory * KERNEL_HEADROOM)
            cpu = None if limits.cpu is None else limits.cpu * KERNEL_HEADROOM
            try:
                self.caps.place(name, pid, memory_max=memory, cpu_max=cpu)
                vital.oom_kills = self.caps.oom_kills(name)
            except CgroupError as exc:
                log.error("actor %s runs without kernel caps (its limits are still read): %s",
                          name, exc)
        return vital

    def reconfigure(self, config: Config) -> set[str]:
        """Take a reloaded config: its system values and every actor's limits.
        Returns the actors whose running incarnation must be ``retune``d: those
        whose limits changed, or all of them when the reading pace or the
        breach count changed."""
        pace = (self.system.sample_interval, self.system.limit_breaches)
        self.system = config.system
        limits = {name: Limits.of(spec) for name, spec in config.actors.items()}
        if pace != (config.system.sample_interval, config.system.limit_breaches):
            retune = set(limits)
        else:
            retune = {name for name, new in limits.items() if self.limits.get(name, new) != new}
        # Removed actors keep theirs until ``forget``: they may still be stopping.
        self.limits = {**self.limits, **limits}
        return retune

    def retune(self, name: str, pid: int, vital: Vital) -> Vital:
        """Watch a running incarnation under its new limits: it is read at the new
        pace and judged afresh (readings over the old limits do not count
        against the new ones); what is known of its heartbeat and probes stays."""
        fresh = self.spawned(name, pid)
        fresh.beat, fresh.beat_seen = vital.beat, vital.beat_seen
        fresh.probe, fresh.probe_sent = vital.probe, vital.probe_sent
        return fresh

    def forget(self, name: str) -> None:
        """``name`` is no longer configured: nothing of it is watched any more."""
        self.sampler.forget(name)
        self.limits.pop(name, None)
        if self.caps is not None:
            try:
                self.caps.remove(name)
            except CgroupError as exc:
                log.warning("could not remove the cgroup of actor %s: %s", name, exc)

    def ended(self, name: str) -> float:
        """Stop watching ``name``'s incarnation; returns the CPU seconds it used
        (as of its last reading)."""
        last = self.sampler.forget(name)
        return last.cpu_seconds if last is not None else 0.0

    def exit_reason(self, name: str, vital: Vital) -> str | None:
        """Why an incarnation died when its exit status cannot say: a breach the
        root killed it for, or the kernel's OOM kill in its cgroup."""
        if vital.breach is not None:
            return vital.breach.reason
        if self.caps is not None and self.caps.oom_kills(name) > vital.oom_kills:
            return "memory_limit"
        return None

    def reading(self, name: str) -> Reading | None:
        return self.sampler.latest(name)

    def close(self) -> None:
        if self.caps is not None:
            try:
                self.caps.close()
            except CgroupError as exc:
                log.warning("could not remove an actor cgroup: %s", exc)

    # --- what the loop asks each pass ------------------------------------------------------

    def deadlines(self, watching: bool) -> list[float]:
        """When the loop must wake for readings (and, ``watching``, for
        heartbeat checks and probes)."""
        due = self.sampler.next_due()
        found = [] if due is None else [due]
        if watching:
            found += [self.next_beat_check, self.next_probe]
        return found

    def due(self, now: float, watching: bool) -> bool:
        """Whether a reading, a heartbeat check or probes are due: most loop
        passes have none, and then cost nothing here."""
        return any(now >= when for when in self.deadlines(watching))

    def breaches(self, now: float, children: Mapping[str, Incarnation],
                 running: Callable[[], Iterable[Incarnation]]) -> list[tuple[Incarnation, Breach]]:
        """Take the readings that are due (of ``children`` that have a process)
        and check heartbeats when due (of the ``running()`` ones); returns the
        incarnations to kill and why. Each is returned once: its Vital keeps
        the breach."""
        found = []
        due = self.sampler.next_due()
        if due is not None and now >= due:
            for name in self.sampler.refresh(now):
                child = children[name]
                if child.pid is not None and (breach := self._judge(child)) is not None:
                    found.append((child, breach))
        if now >= self.next_beat_check:
            interval = self.system.heartbeat_interval
            self.next_beat_check = now + interval
            for child in running():
                vital = child.vital
                if vital.breach is not None:
                    continue
                beat = self.table.beat(child.name)
                if beat != vital.beat:
                    vital.beat, vital.beat_seen = beat, now
                elif now - vital.beat_seen > HUNG_AFTER * interval:
                    found.append((child, Breach("hung", f"no heartbeat for "
                                                f"{now - vital.beat_seen:.1f}s ({HUNG_AFTER} "
                                                f"intervals of {interval:g}s)")))
        for child, breach in found:
            child.vital.breach = breach
        return found

    def probes(self, now: float,
               running: Callable[[], Iterable[Incarnation]]) -> tuple[list, list]:
        """When probes are due: (incarnations to probe now, with their probe
        number advanced; incarnations whose last probe went unanswered for
        ``health_timeout``). Otherwise two empty lists."""
        if now < self.next_probe:
            return [], []
        self.next_probe = now + self.system.health_interval
        ask, silent = [], []
        for child in running():
            vital = child.vital
            if vital.probe_sent is None:
                vital.probe += 1
                vital.probe_sent = now
                ask.append(child)
            elif now - vital.probe_sent >= self.system.health_timeout:
                silent.append(child)   # one probe in flight at a time: no second one
        return ask, silent

    @staticmethod
    def answered(vital: Vital, probe: int) -> None:
        if probe == vital.probe:
            vital.probe_sent = None

    @staticmethod
    def heard(vital: Vital, now: float) -> None:
        """Any message from the incarnation is a sign of life."""
        vital.beat_seen = now

    def _judge(self, child: Incarnation) -> Breach | None:
        vital = child.vital
        reading = self.sampler.latest(child.name)
        if vital.watch is None or reading is None or vital.breach is not None:
            return None
        # What the actor is handling matters only to max_cpu_time.
        doing = self.table.activity(child.name) if vital.watch.limits.max_cpu_time else None
        breach = vital.watch.observe(reading.cpu_at, reading.rss_bytes, reading.cpu_seconds,
                                     doing.message_id if doing else None)
        if breach is None and vital.watch.memory_over:
            # A leak is confirmed a quarter interval on. CPU is judged over a window and
            # confirmed at its own readings.
            interval = self.limits[child.name].sample_interval(self.system.sample_interval)
            self.sampler.soon(child.name, interval * CONFIRM_SOON)
        return breach
