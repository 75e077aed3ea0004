"""Actor-to-actor request/reply latency: alysd against bare pyzmq, in one run.

alysd side: a ``Pinger`` actor does N sequential ``ctx.request("echo",
payload(i))`` to an ``Echo`` actor (two forked actor processes, DEALER ->
ROUTER over ipc://, msgspec envelopes) and times each one with
``time.perf_counter_ns`` inside the actor.  The root is not on this path; it
only relays the ``{"n": N}`` order to the Pinger and the list of times back.

Raw side: ``bench.peers.RawRoundTrip`` (DEALER in this process, ROUTER echo in
a separate fresh interpreter over ipc://), timing encode + send + receive +
decode of the same ``payload(i)`` dict.

Rounds are interleaved (raw, alysd, raw, alysd, ...) so that drift of a
shared 2-core machine hits both sides alike; each round's p50 and p90 are
taken, and the report gives the median over rounds of each.

    python -m bench.rtt [--rounds 20] [--n 2000] [--ctl 200]
"""

from __future__ import annotations

import argparse
import time

from alysd.testing import run_daemon
from bench import common, peers

TARGET_RATIO_P50 = 1.5


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.rtt", description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=20, help="interleaved rounds per side")
    ap.add_argument("--n", type=int, default=2000, help="sequential requests per round")
    ap.add_argument("--warmup", type=int, default=200, help="untimed alysd requests first")
    ap.add_argument("--ctl", type=int, default=200,
                    help="also time N requests through the root (alysctl's path; 0: skip)")
    args = ap.parse_args()
    common.check_payload()
    mach = common.header("alysd actor-to-actor request/reply vs raw pyzmq")
    t_start = time.perf_counter()

    config = common.tree_toml([("echo", "bench.actors:Echo", None),
                               ("pinger", "bench.actors:Pinger", {"target": "echo"})])
    rows = []
    with run_daemon(config) as d, peers.RawRoundTrip() as raw:
        d.request("pinger", {"n": args.warmup}, timeout=60)
        timeout = 30 + args.n * 0.01
        print(f"   {args.rounds} rounds x {args.n} sequential requests per side, interleaved")
        print(f"   {'round':>5}  {'raw p50':>8} {'raw p90':>8}  {'alysd p50':>9} {'alysd p90':>9}"
              f"  {'ratio p50':>9}")
        for r in range(args.rounds):
            raw_us = [x * 1e6 for x in raw.round(args.n)]
            alysd_us = [x / 1e3 for x in d.request("pinger", {"n": args.n}, timeout=timeout)]
            row = {"raw_p50": common.pct(raw_us, .5), "raw_p90": common.pct(raw_us, .9),
                   "alysd_p50": common.pct(alysd_us, .5), "alysd_p90": common.pct(alysd_us, .9)}
            rows.append(row)
            print(f"   {r:>5}  {row['raw_p50']:>8.1f} {row['raw_p90']:>8.1f}  "
                  f"{row['alysd_p50']:>9.1f} {row['alysd_p90']:>9.1f}  "
                  f"{row['alysd_p50'] / row['raw_p50']:>9.2f}", flush=True)
        ctl_us = []
        for i in range(args.ctl):
            msg = peers.payload(i)
            t0 = time.perf_counter_ns()
            d.request("echo", msg)
            ctl_us.append((time.perf_counter_ns() - t0) / 1e3)

    fig = {k: common.median(row[k] for row in rows) for k in rows[0]}
    ratio50 = fig["alysd_p50"] / fig["raw_p50"]
    ratio90 = fig["alysd_p90"] / fig["raw_p90"]
    per_round = [row["alysd_p50"] / row["raw_p50"] for row in rows]
    print("   (microseconds; per side: median over rounds of each round's percentile)")
    print(f"   raw pyzmq      p50 {fig['raw_p50']:7.1f} us   p90 {fig['raw_p90']:7.1f} us")
    print(f"   alysd a2a      p50 {fig['alysd_p50']:7.1f} us   p90 {fig['alysd_p90']:7.1f} us")
    print(f"   ratio alysd/raw p50 {ratio50:.2f}  p90 {ratio90:.2f}  "
          f"(per-round p50 ratios: min {min(per_round):.2f} max {max(per_round):.2f})")
    print(f"   target: p50 <= {TARGET_RATIO_P50}x raw -> {common.verdict(ratio50 <= TARGET_RATIO_P50)}")
    if ctl_us:
        print(f"   for reference, not comparable: {args.ctl} requests through the root "
              f"(ControlClient 'send', alysctl's path, new socket per call): "
              f"p50 {common.pct(ctl_us, .5):.0f} us, p90 {common.pct(ctl_us, .9):.0f} us")
    print(f"   [{time.perf_counter() - t_start:.1f} s wall]")
    common.result({
        "bench": "rtt", "rounds": args.rounds, "n": args.n,
        "raw_p50_us": round(fig["raw_p50"], 1), "raw_p90_us": round(fig["raw_p90"], 1),
        "alysd_p50_us": round(fig["alysd_p50"], 1), "alysd_p90_us": round(fig["alysd_p90"], 1),
        "ratio_p50": round(ratio50, 3), "ratio_p90": round(ratio90, 3),
        "target_ratio_p50": TARGET_RATIO_P50, "target_met": ratio50 <= TARGET_RATIO_P50,
        "ctl_send_p50_us": round(common.pct(ctl_us, .5), 1) if ctl_us else None,
        "machine": mach,
    })


if __name__ == "__main__":
    main()
