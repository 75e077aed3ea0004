"""Running a chaos scenario (``alysd.chaos``) against a live alysd.

``run(scenario, rundir)`` drives it from outside, as ``alysctl chaos run``
does: signals go straight to the actors' processes (so it must run as alysd's
user or root), partitions and message faults are installed as bus filters
through the control socket and removed when they end (and in every case
before it returns). Meanwhile a monitor reads ``status`` every 20 ms, and the
traffic, if any, sends one request at a time through the control socket.

A ``slow_endpoint`` fault puts a TCP proxy (``alysd.chaos_proxy``) at its
``listen`` address for the whole run, in front of ``upstream``; during the
fault it holds each response ``delay``. The actor must be configured to reach
the endpoint through that address.

What it measures per actor: restarts during the run; ``detected_s``, from
the first fault to the first reading that shows the actor not running (or
with a new pid); ``recovered_s``, from the end of the last fault to the
first reading where it runs and is not unhealthy (``degraded`` counts as
recovered: a placeholder actor always is). The run goes on after the last
fault until every actor has recovered or ``recover_within`` has passed.
"""

from __future__ import annotations

import heapq
import itertools
import os
import random
import re
import signal
import threading
import time
from dataclasses import dataclass, field

from alysd.chaos import (INJECTED_FAULTS, KILL_SIGNALS, ActorOutcome, Fault, FaultKind, Report,
                         Scenario, judge, kill_times, pick)
from alysd.chaos_proxy import EndpointProxy
from alysd.ctl import ControlClient
from alysd.errors import AlysdError, NoDaemon, RemoteError
from alysd.runtime_dir import RuntimeDir

MONITOR_INTERVAL = 0.02


@dataclass
class _Undo:
    """What the run has in place and must take back, even when it fails."""

    filters: list[int] = field(default_factory=list)    # bus filter ids
    paused: list[int] = field(default_factory=list)     # SIGSTOPped pids


@dataclass
class _Readings:
    """What the monitor saw, per actor."""

    first_restarts: dict[str, int]
    down_at: dict[str, float] = field(default_factory=dict)
    up_at: dict[str, float] = field(default_factory=dict)
    last: dict[str, dict] = field(default_factory=dict)


def run(scenario: Scenario, rundir: RuntimeDir, *, seed: int | None = None) -> Report:
    """Run ``scenario`` against the alysd at ``rundir``; the report, judged."""
    client = ControlClient(rundir)
    rows = {row["name"]: row for row in client.call("status")}
    tree = client.call("tree")
    actors_under = _actors_under(tree)
    letters_before = client.call("dead_letters", {"limit": 0})["by_reason"]
    readings = _Readings({n: r["restarts"] for n, r in rows.items()})
    _observe(readings, rows, time.monotonic())   # faults at 0s strike what runs now
    rng = random.Random(seed)
    applied: list[str] = []
    undo = _Undo()
    stop = threading.Event()
    traffic = _TrafficCounts()
    # Proxies stand for the whole run, so connections through them outlive the fault.
    proxies = {id(f): EndpointProxy(f.listen, f.upstream, f.delay) for f in scenario.faults
               if f.kind is FaultKind.SLOW_ENDPOINT}
    for proxy in proxies.values():
        proxy.start()
    start = time.monotonic()
    threads = [threading.Thread(target=_monitor, args=(rundir, readings, stop), daemon=True)]
    if scenario.traffic is not None:
        threads.append(threading.Thread(target=_traffic, daemon=True,
                                        args=(rundir, scenario.traffic, traffic, stop)))
    for thread in threads:
        thread.start()
    try:
        for when, action in _timeline(scenario, proxies):
            _sleep_until(start + when, stop)
            applied += action(client, actors_under, readings, rng, undo)
        _sleep_until(start + scenario.duration, stop)
        faults_end = start + scenario.faults_end
        deadline = max(time.monotonic(), faults_end) + scenario.recover_within
        while time.monotonic() < deadline and not _all_recovered(readings):
            time.sleep(MONITOR_INTERVAL)
    finally:
        # Whatever happened, nothing of the scenario stays in place.
        for rule in undo.filters:
            try:
                client.call("filter_remove", {"id": rule})
            except (AlysdError, NoDaemon):
                pass
        for pid in undo.paused:
            _signal(pid, signal.SIGCONT)
        stop.set()
        for thread in threads:
            thread.join(10)
        for proxy in proxies.values():
            proxy.close()
    letters_after = client.call("dead_letters", {"limit": 0})["by_reason"]
    report = _report(scenario, readings, start, applied, traffic, letters_before, letters_after)
    report.failures = judge(scenario, report)
    return report


# --- the timeline ---------------------------------------------------------------------

def _timeline(scenario: Scenario, proxies: dict[int, EndpointProxy]):
    """(seconds from the start, action), in time order."""
    events, order = [], itertools.count()
    for fault in scenario.faults:
        if fault.kind is FaultKind.SLOW_ENDPOINT:
            events.append((fault.at, next(order), _slow(fault, proxies[id(fault)], True)))
            events.append((fault.ends, next(order), _slow(fault, proxies[id(fault)], False)))
        elif fault.kind is FaultKind.KILL:
            for when in kill_times(fault):
                events.append((when, next(order), _kill(fault)))
        elif fault.kind in INJECTED_FAULTS:
            events.append((fault.at, next(order), _inject(fault)))
        elif fault.kind is FaultKind.PAUSE:
            holder: dict = {}
            events.append((fault.at, next(order), _pause(fault, holder)))
            events.append((fault.ends, next(order), _resume(holder)))
        else:
            holder = {}
            events.append((fault.at, next(order), _install(fault, holder)))
            events.append((fault.ends, next(order), _uninstall(holder)))
    heapq.heapify(events)
    while events:
        when, _, action = heapq.heappop(events)
        yield when, action


def _running(readings: _Readings) -> list[str]:
    return [n for n, row in readings.last.items() if row["state"] == "running" and row["pid"]]


def _kill(fault: Fault):
    def action(client, actors_under, readings, rng, undo):
        name = pick(fault.target, actors_under, _running(readings), rng)
        if name is None:
            return [f"kill {fault.target}: nothing running to kill"]
        if not _signal(readings.last[name]["pid"], KILL_SIGNALS[fault.signal]):
            return [f"kill {name}: it was already gone"]
        return [f"{fault.signal} {name}"]
    return action


def _slow(fault: Fault, proxy: EndpointProxy, on: bool):
    def action(client, actors_under, readings, rng, undo):
        where = f"{fault.listen[0]}:{fault.listen[1]} -> {fault.upstream[0]}:{fault.upstream[1]}"
        if on:
            proxy.slowed.set()
            return [f"slow endpoint {where}: responses held {fault.delay:g}s for "
                    f"{fault.duration:g}s"]
        proxy.slowed.clear()
        return [f"slow endpoint {where}: {proxy.delayed} responses held"]
    return action


def _inject(fault: Fault):
    def action(client, actors_under, readings, rng, undo):
        name = pick(fault.target, actors_under, _running(readings), rng)
        if name is None:
            return [f"{fault.kind.value} {fault.target}: nothing running to strike"]
        client.call("inject", {"name": name, "fault": fault.kind.value,
                               "duration": fault.duration, "mib": fault.mib, "gil": fault.gil})
        what = {FaultKind.MEMORY: f"allocates {fault.mib} MiB",
                FaultKind.CPU: "burns a core",
                FaultKind.HANG: "hangs" + (" holding the GIL" if fault.gil else "")}[fault.kind]
        return [f"{name} {what} for {fault.duration:g}s"]
    return action


def _pause(fault: Fault, holder: dict):
    def action(client, actors_under, readings, rng, undo):
        name = pick(fault.target, actors_under, _running(readings), rng)
        if name is None:
            return [f"pause {fault.target}: nothing running to pause"]
        holder["pid"], holder["name"] = readings.last[name]["pid"], name
        _signal(holder["pid"], signal.SIGSTOP)
        undo.paused.append(holder["pid"])
        return [f"SIGSTOP {name} for {fault.duration:g}s"]
    return action


def _resume(holder: dict):
    def action(client, actors_under, readings, rng, undo):
        if "pid" not in holder:
            return []
        _signal(holder["pid"], signal.SIGCONT)
        undo.paused.remove(holder["pid"])
        return [f"SIGCONT {holder['name']}"]
    return action


def _install(fault: Fault, holder: dict):
    def action(client, actors_under, readings, rng, undo):
        rules = []
        if fault.kind is FaultKind.PARTITION:
            one, other = (_members(group, actors_under) for group in fault.groups)
            for sender, receiver in [(a, b) for a in one for b in other] + \
                                    [(b, a) for a in one for b in other]:
                rules.append({"sender": sender, "receiver": receiver, "action": "drop"})
            what = f"partition {sorted(one)} | {sorted(other)}"
        else:
            rules.append({"sender": fault.sender, "receiver": fault.receiver,
                          "message_type": fault.type, "action": fault.kind.value,
                          "rate": fault.rate, "delay": fault.delay})
            what = (f"{fault.kind.value} {fault.sender or '*'} -> {fault.receiver or '*'} "
                    f"rate {fault.rate:g}")
        holder["ids"] = [client.call("filter_add", rule)["id"] for rule in rules]
        undo.filters.extend(holder["ids"])
        return [f"{what} for {fault.duration:g}s ({len(rules)} filters)"]
    return action


def _uninstall(holder: dict):
    def action(client, actors_under, readings, rng, undo):
        for rule in holder.get("ids", ()):
            client.call("filter_remove", {"id": rule})
            undo.filters.remove(rule)
        return []
    return action


def _members(group: tuple[str, ...], actors_under: dict[str, list[str]]) -> set[str]:
    return {actor for name in group for actor in actors_under.get(name, [name])}


def _signal(pid: int | None, sig: int) -> bool:
    if pid is None:
        return False
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        return False
    return True


def _actors_under(tree: dict) -> dict[str, list[str]]:
    """Supervisor name -> every actor below it (from the ``tree`` command)."""
    out: dict[str, list[str]] = {}

    def walk(node: dict) -> list[str]:
        if node.get("kind") != "supervisor":
            return [node["name"]]
        below = [a for child in node.get("children", ()) for a in walk(child)]
        out[node["name"]] = below
        return below
    walk(tree)
    return out


def _sleep_until(deadline: float, stop: threading.Event) -> None:
    while (left := deadline - time.monotonic()) > 0 and not stop.is_set():
        time.sleep(min(left, 0.05))


# --- the monitor and the traffic -------------------------------------------------------------

def _monitor(rundir: RuntimeDir, readings: _Readings, stop: threading.Event) -> None:
    client = ControlClient(rundir)
    while not stop.is_set():
        try:
            rows = {row["name"]: row for row in client.call("status", timeout=5)}
        except (AlysdError, NoDaemon):
            time.sleep(MONITOR_INTERVAL)
            continue
        _observe(readings, rows, time.monotonic())
        time.sleep(MONITOR_INTERVAL)


def _observe(readings: _Readings, rows: dict[str, dict], now: float) -> None:
    """Take one reading of every actor's status."""
    for name, row in rows.items():
        previous = readings.last.get(name)
        if row["state"] != "running" or (previous is not None
                                         and row["pid"] != previous["pid"]):
            readings.down_at.setdefault(name, now)
            readings.up_at.pop(name, None)
        elif row["health"] != "unhealthy":
            readings.up_at.setdefault(name, now)
        else:
            readings.up_at.pop(name, None)
        readings.last[name] = row


def _all_recovered(readings: _Readings) -> bool:
    return bool(readings.last) and all(
        row["state"] == "running" and row["health"] != "unhealthy"
        and name in readings.up_at for name, row in readings.last.items())


@dataclass
class _TrafficCounts:
    requests: int = 0
    answered: int = 0
    refused: dict[str, int] = field(default_factory=dict)
    lost: int = 0


def _traffic(rundir: RuntimeDir, traffic, counts: _TrafficCounts, stop: threading.Event) -> None:
    client = ControlClient(rundir)
    while not stop.is_set():
        began = time.monotonic()
        counts.requests += 1
        try:
            client.call("send", {"name": traffic.to, "payload": traffic.message,
                                 "timeout": traffic.timeout}, timeout=traffic.timeout + 5)
            counts.answered += 1
        except RemoteError as exc:
            if exc.kind == "RequestTimeout":
                counts.lost += 1
            else:
                label = _refusal(exc)
                counts.refused[label] = counts.refused.get(label, 0) + 1
        except (AlysdError, NoDaemon) as exc:
            counts.refused[type(exc).__name__] = counts.refused.get(type(exc).__name__, 0) + 1
        stop.wait(max(0.0, traffic.every - (time.monotonic() - began)))


_DEAD_LETTERED = re.compile(r"was dead-lettered \((\w+)\)")


def _refusal(exc: RemoteError) -> str:
    """How a refused request is counted: its error kind, or for one the actor's
    side dead-lettered (a dropped message, say), ``dead-lettered REASON``."""
    found = _DEAD_LETTERED.search(str(exc))
    return f"dead-lettered {found.group(1)}" if found else exc.kind


def _report(scenario: Scenario, readings: _Readings, start: float, applied: list[str],
            traffic: _TrafficCounts, before: dict, after: dict) -> Report:
    faults_end = start + scenario.faults_end
    first_fault = start + min((f.at for f in scenario.faults), default=0.0)
    actors = {}
    for name, row in readings.last.items():
        down, up = readings.down_at.get(name), readings.up_at.get(name)
        actors[name] = ActorOutcome(
            restarts=row["restarts"] - readings.first_restarts.get(name, 0),
            detected_s=None if down is None else max(0.0, down - first_fault),
            recovered_s=None if up is None else max(0.0, up - faults_end))
    recovered = [o.recovered_s for o in actors.values()]
    return Report(
        scenario=scenario.name, seconds=time.monotonic() - start, faults_applied=applied,
        actors=actors, requests=traffic.requests, answered=traffic.answered,
        refused=dict(traffic.refused), lost=traffic.lost,
        dead_letters={k: v - before.get(k, 0) for k, v in after.items()
                      if v - before.get(k, 0) > 0},
        all_healthy_after_s=None if None in recovered or not recovered else max(recovered))
