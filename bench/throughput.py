"""One-way actor-to-actor throughput: alysd against bare pyzmq, in one run.

alysd side: a ``Blaster`` actor does N ``ctx.send("sink", payload(i))``
(one envelope per frame, each message built and msgspec-encoded in the
loop) to a ``Sink`` actor, then one request to the sink, which is queued
behind the N messages and answers with its count and with the
``perf_counter_ns`` stamps of the first and last message handled.  The rate
is taken at the receiver, as ``bench.peers.RawOneWay`` does: messages after
the first / (last stamp - first stamp).

Raw side: ``bench.peers.RawOneWay.run(N)``: DEALER -> ROUTER between two
fresh processes, one encoded ``payload(i)`` per frame, rate at the receiver.

Rounds are interleaved (raw, alysd, raw, alysd, ...); the report gives the
median over rounds per side and their ratio.

    python -m bench.throughput [--rounds 6] [--n 200000]
"""

from __future__ import annotations

import argparse
import time

from alysd.testing import run_daemon
from bench import common, peers

TARGET_RATIO = 0.6


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.throughput",
                                 description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=6, help="interleaved rounds per side")
    ap.add_argument("--n", type=int, default=200_000, help="messages per round")
    args = ap.parse_args()
    common.check_payload()
    mach = common.header("alysd one-way actor-to-actor throughput vs raw pyzmq")
    t_start = time.perf_counter()

    config = common.tree_toml([("sink", "bench.actors:Sink", None),
                               ("blaster", "bench.actors:Blaster", {"target": "sink"})])
    raw_peer = peers.RawOneWay()
    raw, alysd, send_rates = [], [], []
    with run_daemon(config) as d:
        d.request("blaster", {"n": 2000}, timeout=60)  # connect and warm up
        timeout = 60 + args.n / 5000
        print(f"   {args.rounds} rounds x {args.n:,} messages per side, interleaved; "
              f"msgs/s at the receiver")
        print(f"   {'round':>5}  {'raw':>10}  {'alysd':>10}  {'ratio':>6}")
        for r in range(args.rounds):
            raw.append(raw_peer.run(args.n))
            res = d.request("blaster", {"n": args.n}, timeout=timeout)
            if res["count"] != args.n:
                raise SystemExit(f"the sink counted {res['count']} of {args.n} messages")
            alysd.append((res["count"] - 1) * 1e9 / (res["last_ns"] - res["first_ns"]))
            send_rates.append(args.n * 1e9 / res["send_ns"])
            print(f"   {r:>5}  {raw[-1]:>10,.0f}  {alysd[-1]:>10,.0f}  {alysd[-1] / raw[-1]:>6.2f}",
                  flush=True)

    raw_m, alysd_m = common.median(raw), common.median(alysd)
    ratio = alysd_m / raw_m
    print(f"   raw pyzmq  median {raw_m:>10,.0f} msgs/s")
    print(f"   alysd      median {alysd_m:>10,.0f} msgs/s   (sender side: "
          f"{common.median(send_rates):,.0f} msgs/s of ctx.send calls)")
    print(f"   ratio alysd/raw {ratio:.2f}")
    print(f"   target: >= {TARGET_RATIO}x raw -> {common.verdict(ratio >= TARGET_RATIO)}")
    print(f"   [{time.perf_counter() - t_start:.1f} s wall]")
    common.result({
        "bench": "throughput", "rounds": args.rounds, "n": args.n,
        "raw_msgs_per_s": round(raw_m), "alysd_msgs_per_s": round(alysd_m),
        "alysd_send_msgs_per_s": round(common.median(send_rates)),
        "ratio": round(ratio, 3), "target_ratio": TARGET_RATIO, "target_met": ratio >= TARGET_RATIO,
        "raw_rounds": [round(x) for x in raw], "alysd_rounds": [round(x) for x in alysd],
        "machine": mach,
    })


if __name__ == "__main__":
    main()
