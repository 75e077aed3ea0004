"""How alysd's start, control plane and root grow with the number of actors.

For each N (default 10, 100, 1000): a daemon with N ``Echo`` actors under
one supervisor is launched (``alysd.testing.run_daemon``), and:

* start: from process launch (the benchmark's ``time.time()`` right
  before ``run_daemon`` starts the process) to all serving (the latest
  ``ready_at`` in ``status``), and from the root's first spawn (the earliest
  ``spawned_at``) to all serving; the root's own "all N actors running
  (... ms after start)" log figure is shown too when present.  While the
  tree starts, the benchmark watches the log file and asks the root only
  every 2 s, and once the log says all run (cheap ``tree`` command), so it
  hardly disturbs the start;
* ``status`` latency: wall time of ``ControlClient.call("status")``
  (what ``alysctl status --json`` does, without the CLI's interpreter
  start), median and p90 of ``--status-calls`` calls, made one after
  another once every actor runs;
* root memory: psutil RSS of the alysd root process (``d.pid``) after those
  calls (and the zygote's RSS, for reference);
* root CPU while idle: the root's CPU time over ``--idle`` seconds with no
  traffic but heartbeats (every actor sends one per second), in % of one core;
* stop: time for an orderly SIGTERM stop of the whole tree (reverse start
  order), until the root exits.

    python -m bench.scale [--n 10 100 1000] [--status-calls 20] [--idle 3]
"""

from __future__ import annotations

import argparse
import re
import time

import psutil

from alysd.testing import run_daemon
from bench import common

TARGETS_1000 = {"all_serving_s": 5.0, "status_ms": 100.0, "root_rss_mib": 50.0}


def _cpu_s(proc: psutil.Process) -> float:
    t = proc.cpu_times()
    return t.user + t.system


def measure(n: int, status_calls: int, idle: float, start_timeout: float) -> dict:
    config = common.tree_toml([(f"a{i:04d}", "bench.actors:Echo", None) for i in range(n)])
    t_launch = time.time()
    with run_daemon(config, wait=False, timeout=max(30.0, n * 0.2)) as d:
        common.wait_all_running(d, n, timeout=start_timeout)
        t_seen = time.time()
        rows = list(d.status().values())
        status_ms = []
        for _ in range(status_calls):
            t0 = time.perf_counter()
            reply = d.client.call("status")
            status_ms.append((time.perf_counter() - t0) * 1e3)
            if len(reply) != n:
                raise SystemExit(f"status listed {len(reply)} actors, not {n}")
        root = psutil.Process(d.pid)
        zygote = min(root.children(), key=lambda p: p.create_time())
        root_rss, zygote_rss = root.memory_info().rss, zygote.memory_info().rss
        cpu0, t0 = _cpu_s(root), time.monotonic()
        time.sleep(idle)
        root_idle_cpu = (_cpu_s(root) - cpu0) / (time.monotonic() - t0) * 100
        m = re.search(rf"all {n} actors running \((\d+) ms after start\)", d.log())
        t0 = time.perf_counter()
        code = d.stop(timeout=max(60.0, n * 0.2))
        stop_s = time.perf_counter() - t0
        restarted = sum(r["incarnation"] != 1 for r in rows)
    first = min(r["spawned_at"] for r in rows)
    last = max(r["ready_at"] for r in rows)
    return {
        "n": n,
        "launch_to_all_s": last - t_launch,
        "spawn_to_all_s": last - first,
        "launch_to_first_spawn_s": first - t_launch,
        "root_logged_all_s": int(m.group(1)) / 1e3 if m else None,
        "seen_by_bench_s": t_seen - t_launch,
        "per_actor_ms": (last - first) / n * 1e3,
        "status_p50_ms": common.median(status_ms),
        "status_p90_ms": common.pct(status_ms, .9),
        "root_rss_mib": root_rss / 2**20,
        "zygote_rss_mib": zygote_rss / 2**20,
        "root_idle_cpu_pct": root_idle_cpu,
        "stop_s": stop_s,
        "exit_code": code,
        "restarted": restarted,
    }


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.scale", description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, nargs="+", default=[10, 100, 1000], help="actor counts")
    ap.add_argument("--status-calls", type=int, default=20, help="timed status calls per size")
    ap.add_argument("--idle", type=float, default=3.0, help="seconds of idle root CPU sampling")
    ap.add_argument("--start-timeout", type=float, default=240.0,
                    help="seconds allowed for the largest tree to start")
    args = ap.parse_args()
    mach = common.header("alysd at scale: start, status latency, root memory")
    t_start = time.perf_counter()

    runs = []
    for n in args.n:
        res = measure(n, args.status_calls, args.idle, args.start_timeout)
        runs.append(res)
        logged = (f", root logged {res['root_logged_all_s']:.2f} s"
                  if res["root_logged_all_s"] is not None else "")
        print(f"   n={n:<5} all serving {res['launch_to_all_s']:7.2f} s after launch "
              f"({res['spawn_to_all_s']:.2f} s after first spawn, {res['per_actor_ms']:.1f} ms/actor"
              f"{logged}); status p50 {res['status_p50_ms']:6.1f} ms (p90 "
              f"{res['status_p90_ms']:.1f}); root RSS {res['root_rss_mib']:5.1f} MiB; "
              f"root idle CPU {res['root_idle_cpu_pct']:4.1f}%; stop {res['stop_s']:.2f} s",
              flush=True)
        if res["restarted"]:
            print(f"   WARNING: {res['restarted']} actors were restarted during the run")
        if res["exit_code"] != 0:
            print(f"   WARNING: alysd exited with {res['exit_code']} after SIGTERM")

    print()
    cols = [("launch_to_all_s", "launch -> all serving (s)", "{:.2f}"),
            ("spawn_to_all_s", "first spawn -> all serving (s)", "{:.2f}"),
            ("launch_to_first_spawn_s", "launch -> first spawn (s)", "{:.2f}"),
            ("per_actor_ms", "start per actor (ms)", "{:.1f}"),
            ("status_p50_ms", "status p50 (ms)", "{:.1f}"),
            ("status_p90_ms", "status p90 (ms)", "{:.1f}"),
            ("root_rss_mib", "root RSS (MiB)", "{:.1f}"),
            ("zygote_rss_mib", "zygote RSS (MiB)", "{:.1f}"),
            ("root_idle_cpu_pct", "root CPU idle (% core)", "{:.1f}"),
            ("stop_s", "orderly stop (s)", "{:.2f}")]
    print("   " + f"{'':32}" + "".join(f"{'n=' + str(r['n']):>10}" for r in runs)
          + ("   growth per x10" if len(runs) > 1 else ""))
    for key, label, fmt in cols:
        line = "   " + f"{label:32}" + "".join(f"{fmt.format(r[key]):>10}" for r in runs)
        growth = [b[key] / a[key] for a, b in zip(runs, runs[1:]) if a[key]]
        if growth:
            line += "   " + " ".join(f"x{g:.1f}" for g in growth)
        print(line)

    out = {"bench": "scale", "machine": mach,
           "sizes": {str(r["n"]): {k: (round(v, 4) if isinstance(v, float) else v)
                                   for k, v in r.items()} for r in runs}}
    big = next((r for r in runs if r["n"] == 1000), None)
    if big is not None:
        checks = {
            "all_serving_s": big["launch_to_all_s"] <= TARGETS_1000["all_serving_s"],
            "status_ms": big["status_p50_ms"] <= TARGETS_1000["status_ms"],
            "root_rss_mib": big["root_rss_mib"] <= TARGETS_1000["root_rss_mib"],
        }
        print(f"   targets at 1000: all serving <= 5 s -> {common.verdict(checks['all_serving_s'])} "
              f"({big['launch_to_all_s']:.2f} s); status <= 100 ms -> "
              f"{common.verdict(checks['status_ms'])} ({big['status_p50_ms']:.1f} ms); "
              f"root RSS <= 50 MiB -> {common.verdict(checks['root_rss_mib'])} "
              f"({big['root_rss_mib']:.1f} MiB)")
        out["targets_1000"] = TARGETS_1000
        out["targets_1000_met"] = checks
    print(f"   [{time.perf_counter() - t_start:.1f} s wall]")
    common.result(out)


if __name__ == "__main__":
    main()
