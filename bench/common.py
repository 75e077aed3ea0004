"""Helpers shared by the benchmark scripts: configs, statistics, reporting."""

from __future__ import annotations

import datetime
import json
import os
import platform
import statistics
import time
from typing import Any, Iterable

import psutil

SUPERVISOR = "bench"


def tree_toml(actors: Iterable[tuple[str, str, dict | None]], *, log_level: str = "info",
              supervisor: str = SUPERVISOR) -> str:
    """A config with one root supervisor and the given (name, class, config) actors,
    started in the order given."""
    lines = ["[system]", f'log_level = "{log_level}"', "",
             f"[supervisors.{supervisor}]", 'strategy = "one_for_one"',
             "max_retries = 3", 'within_time = "5s"', ""]
    for name, cls, config in actors:
        lines += [f"[actors.{name}]", f'supervisor = "{supervisor}"', f'class = "{cls}"']
        if config:
            lines.append(f"[actors.{name}.config]")
            lines += [f"{k} = {json.dumps(v)}" for k, v in config.items()]
        lines.append("")
    return "\n".join(lines)


def pct(xs: list[float], q: float) -> float:
    """Nearest-rank percentile (as bench.peers prints them)."""
    s = sorted(xs)
    return s[int(q * (len(s) - 1))]


def median(xs: Iterable[float]) -> float:
    return statistics.median(list(xs))


def machine() -> dict[str, Any]:
    load = os.getloadavg()
    return {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "cpus": os.cpu_count(),
        "loadavg": [round(x, 2) for x in load],
        "python": platform.python_version(),
        "mem_total_mb": psutil.virtual_memory().total >> 20,
    }


def header(title: str) -> dict[str, Any]:
    m = machine()
    print(f"== {title} ==")
    print(f"   {m['date']}  {m['cpus']} cpus  load {m['loadavg']}  python {m['python']}")
    return m


def result(figures: dict[str, Any]) -> None:
    print("RESULT " + json.dumps(figures, sort_keys=True, default=float), flush=True)


def verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


def check_payload() -> None:
    """bench.actors.payload must be bench.peers.payload (the same small dict)."""
    from bench import actors, peers
    for i in (0, 1, 1999, 123456):
        if actors.payload(i) != peers.payload(i):
            raise SystemExit(f"bench.actors.payload({i}) differs from bench.peers.payload({i})")


def _actor_states(node: dict) -> list[str]:
    if node.get("kind") == "actor":
        return [node["state"]]
    return [s for kid in node.get("children", []) for s in _actor_states(kid)]


def wait_all_running(d, n: int, timeout: float, tree_interval: float = 2.0) -> None:
    """Wait until the daemon ``d`` (``alysd.testing.RunningDaemon``) runs ``n`` actors.

    Disturbs the starting root as little as possible: it watches the daemon's
    log (read incrementally from a file, no request to the root) for the
    root's "all N actors running" line, and asks the root only every
    ``tree_interval`` seconds, and once at the end, with the ``tree``
    command, which reads no per-process figures (``status`` asks psutil
    about every actor).  The start figures themselves come from ``status``'s
    ``spawned_at`` and ``ready_at`` afterwards, so how often this polls does
    not enter them.
    """
    from alysd.errors import AlysdError, NoDaemon

    def all_running() -> bool:
        try:
            states = _actor_states(d.call("tree"))
        except NoDaemon:
            return False
        return len(states) == n and all(s == "running" for s in states)

    marker = f"all {n} actors running".encode()
    deadline = time.monotonic() + timeout
    next_tree = time.monotonic() + tree_interval
    seen = b""
    with open(d.log_path, "rb") as log:
        while True:
            if d.proc.poll() is not None:
                raise AlysdError(f"alysd exited with {d.proc.returncode}:\n{d.log()[-4000:]}")
            seen = seen[-200:] + log.read()
            now = time.monotonic()
            if marker in seen or now >= next_tree:
                if all_running():
                    return
                next_tree = now + tree_interval
            if now >= deadline:
                raise TimeoutError(f"timed out after {timeout:g}s waiting for {n} actors running")
            time.sleep(0.01)


def uss_median(pids: list[int]) -> float:
    return median(psutil.Process(pid).memory_full_info().uss for pid in pids)


def config_toml(actors: Iterable[dict], *, supervisor: str = SUPERVISOR,
                strategy: str = "one_for_one", max_retries: int = 3, within_time: str = "5s",
                system: dict | None = None, log_level: str = "info") -> str:
    """A config with one root supervisor and the given actors, started in the
    order given. Each actor is a dict: ``name``, ``class``, and optionally
    ``config``, ``mailbox``, ``batch`` (each a table of that name under the
    actor) and ``options`` (plain keys of the actor's own table, e.g.
    ``strategy``)."""
    lines = ["[system]", f'log_level = "{log_level}"']
    lines += [f"{k} = {json.dumps(v)}" for k, v in (system or {}).items()]
    lines += ["", f"[supervisors.{supervisor}]", f'strategy = "{strategy}"',
              f"max_retries = {max_retries}", f'within_time = "{within_time}"', ""]
    for actor in actors:
        name = actor["name"]
        lines += [f"[actors.{name}]", f'supervisor = "{supervisor}"',
                  f'class = "{actor["class"]}"']
        lines += [f"{k} = {json.dumps(v)}" for k, v in actor.get("options", {}).items()]
        for table in ("config", "mailbox", "batch"):
            if actor.get(table):
                lines.append(f"[actors.{name}.{table}]")
                lines += [f"{k} = {json.dumps(v)}" for k, v in actor[table].items()]
        lines.append("")
    return "\n".join(lines)


def rate_at_receiver(stats: dict) -> float:
    """msgs/s from a sink's ``{"count", "first_n", "first_ns", "last_ns"}``: the
    messages after the first delivery, over the time from the first to the last
    (``first_n`` is how many messages the first delivery carried; 1 when absent)."""
    return (stats["count"] - stats.get("first_n", 1)) * 1e9 / (stats["last_ns"] - stats["first_ns"])
