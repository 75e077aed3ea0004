"""Actor start-up time and idle memory: alysd against Thespian and Ray, in one run.

alysd side: a daemon whose config has N ``Echo`` actors under one supervisor
is launched (``alysd.testing.run_daemon``), and once every actor runs its
``status`` is read.  Figures, all from the root's own unix-time stamps:

* per-actor start latency, ``ready_at - spawned_at`` (the root sends the
  zygote a Spawn at ``spawned_at``; ``ready_at`` is when the actor's Ready
  reached the root, i.e. after its ``started()`` returned): p50 over the N;
* whole tree per actor, ``(max ready_at - min spawned_at) / N``;
* idle USS (private memory, psutil ``memory_full_info().uss``), median over
  the actor processes, right after the last actor became ready (as the
  peers measure it) and again after ``--idle`` seconds without traffic.

alysd starts children ordered and ready-gated: each child's ``started()``
runs only after its predecessor is ready, while a few successors
(``alysd.supervisor.FORK_AHEAD``) are forked ahead and wait for their Go.
So one actor's ``ready_at - spawned_at`` includes the time it waited for
its predecessors, and is not what the peers measure.  The peers
(``bench.peers.thespian_spawn`` and ``ray_spawn``) create actors one after
another, each waited for (its first answer) before the next is created:
their per-actor figure is a sequential per-actor cost, comparable with
alysd's whole-tree-per-actor figure.

Each size is run ``--repeat`` times, alysd and Thespian alternating, after
one untimed warm-up start of each; the report gives medians over the
repeats.  Ray runs once, at ``--ray-n`` actors (its start-up takes about a
second per actor here); ``--no-ray`` skips it.

    python -m bench.spawn [--n 10 50] [--repeat 3] [--idle 2] [--ray-n 20] [--no-ray]
                           [--no-thespian] [--no-warmup]
"""

from __future__ import annotations

import argparse
import time

from alysd.testing import run_daemon
from bench import common, peers

TARGET_P50_S = 0.003
TARGET_USS = 2.5 * 2**20


def alysd_spawn(n: int, idle: float) -> dict:
    config = common.tree_toml([(f"a{i:04d}", "bench.actors:Echo", None) for i in range(n)])
    t_launch = time.time()
    with run_daemon(config, wait=False) as d:
        common.wait_all_running(d, n, timeout=60 + n * 0.1)
        rows = list(d.status().values())
        pids = [r["pid"] for r in rows]
        uss_ready = common.uss_median(pids)
        time.sleep(idle)
        uss_idle = common.uss_median(pids)
        if any(r["incarnation"] != 1 for r in rows):
            raise SystemExit("an actor was restarted during the start: figures invalid")
    first = min(r["spawned_at"] for r in rows)
    last = max(r["ready_at"] for r in rows)
    lat = [r["ready_at"] - r["spawned_at"] for r in rows]
    head = min(rows, key=lambda r: r["spawned_at"])
    return {
        "n": n,
        "per_actor_p50_s": common.median(lat),
        "per_actor_max_s": max(lat),
        "first_actor_s": head["ready_at"] - head["spawned_at"],
        "tree_per_actor_s": (last - first) / n,
        "tree_s": last - first,
        "launch_to_all_s": last - t_launch,
        "uss_ready_bytes": uss_ready,
        "uss_idle_bytes": uss_idle,
    }


def _fork_ahead() -> str:
    try:
        from alysd import supervisor
        return str(supervisor.FORK_AHEAD)
    except (ImportError, AttributeError):
        return "some"


def _med(runs: list[dict], key: str) -> float:
    return common.median(r[key] for r in runs)


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.spawn", description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, nargs="+", default=[10, 50], help="actor counts")
    ap.add_argument("--repeat", type=int, default=3, help="runs per size and system")
    ap.add_argument("--idle", type=float, default=2.0,
                    help="seconds idle before alysd's idle USS is read")
    ap.add_argument("--ray-n", type=int, default=20, help="Ray actors")
    ap.add_argument("--no-ray", action="store_true", help="skip Ray")
    ap.add_argument("--no-thespian", action="store_true", help="skip Thespian")
    ap.add_argument("--no-warmup", action="store_true",
                    help="skip the untimed warm-up start of each system")
    args = ap.parse_args()
    mach = common.header("actor start-up and idle memory: alysd vs Thespian vs Ray")
    t_start = time.perf_counter()

    if not args.no_warmup:  # page cache and first-run effects, untimed
        alysd_spawn(min(args.n), 0.0)
        if not args.no_thespian:
            peers.thespian_spawn(2)
    alysd_runs: dict[int, list[dict]] = {n: [] for n in args.n}
    th_runs: dict[int, list[dict]] = {n: [] for n in args.n}
    for rep in range(args.repeat):
        for n in args.n:
            res = alysd_spawn(n, args.idle)
            alysd_runs[n].append(res)
            line = (f"   run {rep} n={n:<4} alysd: per-actor p50 {res['per_actor_p50_s'] * 1e3:6.1f} ms, "
                    f"tree/N {res['tree_per_actor_s'] * 1e3:5.1f} ms, "
                    f"USS {res['uss_idle_bytes'] / 2**20:.2f} MiB")
            if not args.no_thespian:
                th = peers.thespian_spawn(n)
                if "error" in th:
                    raise SystemExit(f"thespian: {th['error']}")
                th_runs[n].append(th)
                line += (f" | thespian: per-actor p50 {th['per_actor_p50_s'] * 1e3:5.1f} ms, "
                         f"total/N {th['total_s'] / n * 1e3:5.1f} ms")
            print(line, flush=True)
    ray = None
    if not args.no_ray:
        ray = peers.ray_spawn(args.ray_n)
        if "error" in ray:
            print(f"   ray: ERROR {ray['error']}")
            ray = None

    out = {"bench": "spawn", "repeat": args.repeat, "idle_s": args.idle, "machine": mach,
           "sizes": {}}
    print()
    print("   ms per actor, MiB; medians over runs.  Comparable across systems: alysd's")
    print("   'tree/N' with the peers' per-actor figures (sequential create-and-wait).")
    print("   alysd's 'latency p50' (ready_at - spawned_at) includes waiting for the")
    print(f"   predecessors' ready gate ({_fork_ahead()} forked ahead): an alysd-only figure.")
    for n in args.n:
        a = {k: _med(alysd_runs[n], k) for k in alysd_runs[n][0]}
        fig = {"alysd": {
            "per_actor_p50_ms": round(a["per_actor_p50_s"] * 1e3, 2),
            "per_actor_max_ms": round(a["per_actor_max_s"] * 1e3, 2),
            "first_actor_ms": round(a["first_actor_s"] * 1e3, 2),
            "tree_per_actor_ms": round(a["tree_per_actor_s"] * 1e3, 2),
            "tree_ms": round(a["tree_s"] * 1e3, 1),
            "launch_to_all_ms": round(a["launch_to_all_s"] * 1e3, 1),
            "uss_ready_mib": round(a["uss_ready_bytes"] / 2**20, 3),
            "uss_idle_mib": round(a["uss_idle_bytes"] / 2**20, 3),
        }}
        print(f"   n={n}")
        print(f"     alysd       tree/N {a['tree_per_actor_s'] * 1e3:6.2f}   "
              f"latency p50 {a['per_actor_p50_s'] * 1e3:6.2f} (max {a['per_actor_max_s'] * 1e3:.1f}, "
              f"first actor {a['first_actor_s'] * 1e3:.1f})   "
              f"USS at ready {a['uss_ready_bytes'] / 2**20:.2f}, after {args.idle:g} s idle "
              f"{a['uss_idle_bytes'] / 2**20:.2f}")
        print(f"                 whole tree {a['tree_s'] * 1e3:.0f} ms from first spawn, "
              f"{a['launch_to_all_s'] * 1e3:.0f} ms from process launch")
        if th_runs[n]:
            t = {k: _med(th_runs[n], k) for k in ("per_actor_p50_s", "total_s", "idle_uss_bytes")}
            fig["thespian"] = {
                "per_actor_p50_ms": round(t["per_actor_p50_s"] * 1e3, 2),
                "total_per_actor_ms": round(t["total_s"] / n * 1e3, 2),
                "uss_mib": round(t["idle_uss_bytes"] / 2**20, 3),
                "ratio_alysd_tree_per_actor": round(a["tree_per_actor_s"] / t["per_actor_p50_s"], 3),
                "ratio_alysd_uss_ready": round(a["uss_ready_bytes"] / t["idle_uss_bytes"], 3),
            }
            print(f"     thespian    per-actor p50 {t['per_actor_p50_s'] * 1e3:6.2f}   total/N "
                  f"{t['total_s'] / n * 1e3:6.2f}   USS {t['idle_uss_bytes'] / 2**20:.2f}   "
                  f"(multiprocQueueBase, fork)")
            print(f"     ratio alysd/thespian: start per actor "
                  f"{fig['thespian']['ratio_alysd_tree_per_actor']:.2f}, "
                  f"USS {fig['thespian']['ratio_alysd_uss_ready']:.2f}")
        if ray is not None:
            fig["ray"] = {
                "n": ray["n"],
                "per_actor_p50_ms": round(ray["per_actor_p50_s"] * 1e3, 2),
                "total_per_actor_ms": round(ray["total_s"] / ray["n"] * 1e3, 2),
                "uss_mib": round(ray["idle_uss_bytes"] / 2**20, 3),
                "ratio_alysd_tree_per_actor": round(a["tree_per_actor_s"] / ray["per_actor_p50_s"], 4),
                "ratio_alysd_uss_ready": round(a["uss_ready_bytes"] / ray["idle_uss_bytes"], 3),
            }
            print(f"     ray (n={ray['n']}) per-actor p50 {ray['per_actor_p50_s'] * 1e3:6.1f}   total/N "
                  f"{ray['total_s'] / ray['n'] * 1e3:6.1f}   USS {ray['idle_uss_bytes'] / 2**20:.2f}")
            print(f"     ratio alysd/ray: start per actor {fig['ray']['ratio_alysd_tree_per_actor']:.3f}, "
                  f"USS {fig['ray']['ratio_alysd_uss_ready']:.2f}")
        p50_ok = a["per_actor_p50_s"] <= TARGET_P50_S
        tree_ok = a["tree_per_actor_s"] <= TARGET_P50_S
        uss_ok = a["uss_idle_bytes"] <= TARGET_USS
        print(f"     targets: per-actor p50 <= 3 ms -> {common.verdict(p50_ok)} "
              f"({a['per_actor_p50_s'] * 1e3:.1f} ms; tree/N {a['tree_per_actor_s'] * 1e3:.1f} ms "
              f"-> {common.verdict(tree_ok)}); idle USS <= 2.5 MiB -> {common.verdict(uss_ok)} "
              f"({a['uss_idle_bytes'] / 2**20:.2f} MiB)")
        fig["targets"] = {"per_actor_p50_ms": 3.0, "per_actor_p50_met": p50_ok,
                          "tree_per_actor_met": tree_ok, "uss_mib": 2.5, "uss_met": uss_ok}
        out["sizes"][str(n)] = fig
    print(f"   [{time.perf_counter() - t_start:.1f} s wall]")
    common.result(out)


if __name__ == "__main__":
    main()
