"""Resource limits: what sampling costs the root, how fast a leak is acted on,
and that well-behaved actors are never killed.

* sampling: N idle processes (``sleep``) read ten times a second for
  ``--seconds``, by alysd's ``Sampler`` as it reads an actor with a memory and
  a CPU limit (tree RSS at every reading, CPU ten times per 5 s window) and,
  in the same run, by a naive psutil pass (``cpu_percent`` + ``memory_info``
  per process, the peer). Figures: CPU of the reading
  thread in % of one core, and the ratio alysd / psutil. Then the root of a
  real daemon with N actors whose limits are sampled at 10 Hz, against the
  same daemon without limits: the difference is what limits cost the root.
  Targets: 50 actors at 10 Hz <= 1 % of a core, 500 actors <= 5 %.
* leak: an actor with ``memory_limit`` grows by 8 MiB every 10 ms and notes
  when it crossed its limit; the time from there to its exit (``last_exit.at``)
  in sampling intervals. Target: <= 2 intervals.
* false kills: ``--actors`` well-behaved actors (64 MiB held, 20 ms of CPU
  every 100 ms) with limits (256 MiB, 0.5 core over 5 s, 1 s CPU per message)
  for ``--duration`` seconds; every restart is a false kill. Target: 0 in 600 s.

    python -m bench.limits [--n 50 500] [--seconds 10] [--trials 5] [--duration 60]
                           [--parts sampling leak false_kills]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import tempfile
import time

import psutil

from alysd.limits import Limits
from alysd.sampler import Sampler
from alysd.testing import run_daemon, wait_until
from bench import common

HZ = 10
SAMPLE_INTERVAL = 1 / HZ
TARGET_PCT = {50: 1.0, 500: 5.0}
PARTS = ["sampling", "leak", "false_kills"]


def _config(actors: list[tuple[str, str, dict, dict]], system: str = "") -> str:
    """(name, class, actor keys, actor config) -> a one-supervisor tree."""
    lines = ["[system]", 'log_level = "warning"', system, "",
             "[supervisors.bench]", "max_retries = 1000", 'within_time = "1s"', ""]
    for name, cls, keys, config in actors:
        lines += [f"[actors.{name}]", 'supervisor = "bench"', f'class = "{cls}"']
        lines += [f"{k} = {v!r}".replace("'", '"') for k, v in keys.items()]
        if config:
            lines.append(f"[actors.{name}.config]")
            lines += [f"{k} = {v!r}".replace("'", '"') for k, v in config.items()]
        lines.append("")
    return "\n".join(lines)


def _reading_cost(read, seconds: float) -> tuple[float, float]:
    """``read()`` called for ``seconds``; it returns (how many processes it
    read, when it wants to be called next). Returns (its CPU in % of one
    core, readings per second)."""
    cpu, readings = 0.0, 0
    start = time.monotonic()
    while time.monotonic() - start < seconds:
        t0 = time.thread_time()
        count, next_at = read()
        cpu += time.thread_time() - t0
        readings += count
        time.sleep(max(0.0, next_at - time.monotonic()))
    elapsed = time.monotonic() - start
    return cpu / elapsed * 100, readings / elapsed


def sampling_in_process(n: int, seconds: float) -> dict:
    procs = [subprocess.Popen(["sleep", "600"]) for _ in range(n)]
    try:
        sampler = Sampler()
        # what an actor with memory_limit and cpu_limit (5 s window) is read with
        limits = Limits(memory=1 << 30, cpu=1.0, cpu_window=5.0)
        for i, p in enumerate(procs):
            sampler.track(f"p{i}", p.pid, interval=limits.sample_interval(SAMPLE_INTERVAL),
                          cpu_interval=limits.cpu_interval(SAMPLE_INTERVAL), tree=True)
        naive = [psutil.Process(p.pid) for p in procs]

        def psutil_pass() -> tuple[int, float]:
            began = time.monotonic()
            for p in naive:
                p.cpu_percent(None)
                p.memory_info()
            return len(naive), began + SAMPLE_INTERVAL

        def alysd_pass() -> tuple[int, float]:
            # as the supervisor's loop does: read what is due, wake when the next one is
            count = len(sampler.refresh(time.monotonic()))
            return count, sampler.next_due()
        # alternating quarters, so that both see the same machine
        quarter = seconds / 4
        runs = [(_reading_cost(alysd_pass, quarter), _reading_cost(psutil_pass, quarter))
                for _ in range(2)]
        ours = sum(r[0][0] for r in runs) / 2
        peer = sum(r[1][0] for r in runs) / 2
        rate = sum(r[0][1] for r in runs) / 2
    finally:
        for p in procs:
            p.kill()
            p.wait()
    return {"n": n, "alysd_pct": round(ours, 3), "psutil_pct": round(peer, 3),
            "ratio": round(ours / peer, 3) if peer else None,
            "readings_per_s": round(rate), "wanted_per_s": n * HZ}


def _root_cpu_pct(d, seconds: float) -> float:
    root = psutil.Process(d.pid)
    t0, c0 = time.monotonic(), sum(root.cpu_times()[:2])
    time.sleep(seconds)
    return (sum(root.cpu_times()[:2]) - c0) / (time.monotonic() - t0) * 100


def sampling_in_daemon(n: int, seconds: float) -> dict:
    figures = {}
    for label, keys in (("limited", {"memory_limit": "1GiB", "cpu_limit": 1.0}), ("plain", {})):
        actors = [(f"a{i:03d}", "bench.actors:Echo", keys, {}) for i in range(n)]
        system = f'sample_interval = "{int(SAMPLE_INTERVAL * 1000)}ms"'
        with run_daemon(_config(actors, system), timeout=max(30.0, n * 0.2)) as d:
            figures[label] = _root_cpu_pct(d, seconds)
    return {"n": n, "root_limited_pct": round(figures["limited"], 2),
            "root_plain_pct": round(figures["plain"], 2),
            "limits_cost_pct": round(figures["limited"] - figures["plain"], 2)}


def leak_latency(trials: int) -> dict:
    latencies = []
    with tempfile.TemporaryDirectory() as tmp:
        report = os.path.join(tmp, "crossed")
        actors = [("leaker", "bench.actors:Leaker", {"memory_limit": "200MiB"}, {})]
        system = f'sample_interval = "{int(SAMPLE_INTERVAL * 1000)}ms"'
        with run_daemon(_config(actors, system)) as d:
            for _ in range(trials):
                before = d.status()["leaker"]
                if os.path.exists(report):
                    os.unlink(report)
                try:
                    d.request("leaker", {"limit_mib": 200, "step_mib": 8, "every": 0.01,
                                         "report": report}, timeout=0.2)
                except Exception:
                    pass   # the leak is still going when the request times out
                row = wait_until(lambda: (r := d.status()["leaker"])["state"] == "running"
                                 and r["incarnation"] > before["incarnation"] and r,
                                 timeout=30, message="leaker restarted")
                assert row["last_exit"]["reason"] == "memory_limit", row["last_exit"]
                with open(report) as f:
                    crossed = float(f.read())
                latencies.append(row["last_exit"]["at"] - crossed)
    worst = max(latencies)
    return {"trials": trials, "latency_ms": [round(x * 1000, 1) for x in latencies],
            "worst_intervals": round(worst / SAMPLE_INTERVAL, 2),
            "verdict": common.verdict(worst <= 2 * SAMPLE_INTERVAL)}


def false_kills(actors: int, duration: float) -> dict:
    keys = {"memory_limit": "256MiB", "cpu_limit": 0.5, "max_cpu_time": "1s"}
    config = {"hold_mib": 64, "work_ms": 20, "period": 0.1}
    tree = [(f"s{i:02d}", "bench.actors:Steady", keys, config) for i in range(actors)]
    with run_daemon(_config(tree, 'sample_interval = "100ms"')) as d:
        deadline = time.monotonic() + duration
        while time.monotonic() < deadline:
            time.sleep(min(5.0, max(0.0, deadline - time.monotonic())))
            rows = d.status()
            restarts = sum(r["restarts"] for r in rows.values())
        rss = max(r["rss_bytes"] or 0 for r in rows.values())
        cpu = max(r["cpu_percent"] or 0 for r in rows.values())
    return {"actors": actors, "seconds": duration, "restarts": restarts,
            "max_rss_mib": round(rss / (1 << 20), 1), "max_cpu_percent": cpu,
            "verdict": common.verdict(restarts == 0)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, nargs="+", default=[50, 500])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--actors", type=int, default=10)
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--parts", nargs="+", choices=PARTS, default=PARTS)
    args = parser.parse_args()
    common.header("resource limits")
    for n in args.n if "sampling" in args.parts else ():
        own = sampling_in_process(n, args.seconds)
        target = TARGET_PCT.get(n)
        print(f"sampling {n} processes at {HZ} Hz: alysd {own['alysd_pct']:.3f} % of a core "
              f"({own['readings_per_s']} readings/s), naive psutil {own['psutil_pct']:.3f} % "
              f"(ratio {own['ratio']})"
              + (f"; target <= {target} %: {common.verdict(own['alysd_pct'] <= target)}"
                 if target else ""))
        common.result({"sampling": own})
        root = sampling_in_daemon(n, args.seconds)
        print(f"root of a daemon with {n} actors: {root['root_limited_pct']} % of a core with "
              f"limits at {HZ} Hz, {root['root_plain_pct']} % without "
              f"(limits cost {root['limits_cost_pct']} %)")
        common.result({"root": root})
    if "leak" in args.parts:
        report_leak(args.trials)
    if "false_kills" in args.parts:
        report_false_kills(args.actors, args.duration)


def report_leak(trials: int) -> None:
    leak = leak_latency(trials)
    print(f"leak acted on after {leak['latency_ms']} ms; worst {leak['worst_intervals']} "
          f"sampling intervals (target <= 2): {leak['verdict']}")
    common.result({"leak": leak})


def report_false_kills(actors: int, duration: float) -> None:
    kills = false_kills(actors, duration)
    print(f"{kills['actors']} well-behaved actors for {kills['seconds']:.0f} s: "
          f"{kills['restarts']} restarts (max RSS {kills['max_rss_mib']} MiB, max CPU "
          f"{kills['max_cpu_percent']} %): {kills['verdict']}")
    common.result({"false_kills": kills})


if __name__ == "__main__":
    main()
