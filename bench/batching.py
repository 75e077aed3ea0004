"""One-way throughput with batching: alysd against bare pyzmq batched frames, in one run.

alysd side: a ``BatchBlaster`` actor sends N messages as ``ctx.send_batch(
"sink", [payload(i) ... 64 of them])`` calls (each list built and encoded in
the loop) to a ``BatchSink`` actor that defines ``handle_batch`` and has
``[actors.sink.batch] max_batch = 64``, then one request to the sink. That
request is queued behind the N messages on the same socket, and a request is
never batched, so it is answered once all of them are handled; the answer
carries the count and the ``perf_counter_ns`` stamps of the first and last
batch. The rate is taken at the receiver, as the raw peer does: messages
after the first batch / (last stamp - first stamp).

Raw side: ``bench.peers.RawOneWay.run_batched(N, 64)``: DEALER -> ROUTER
between two fresh processes over ipc://, each frame one msgspec-encoded list
of 64 ``payload(i)``, decoded by the receiver; rate at the receiver.

For context (no target): messages sent one by one with ``ctx.send`` (the
``Blaster`` actor) to a second ``BatchSink``, which the runtime hands lists of
up to 64 (``max_wait`` 5 ms), and, as ``bench.throughput`` does, to a plain
``Sink`` (``handle_message``, no batch table).

Rounds are interleaved (raw, alysd batch, alysd one by one to each sink,
raw, ...); the
report gives the median over rounds per side and the ratio of the medians.

    python -m bench.batching [--rounds 10] [--n 1280000] [--single-n 100000] [--quick]
"""

from __future__ import annotations

import argparse
import time

from alysd.testing import run_daemon
from bench import common, peers

TARGET_RATIO = 0.5
BATCH = 64


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.batching",
                                 description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=10, help="interleaved rounds per side")
    ap.add_argument("--n", type=int, default=1_280_000, help="messages per batched round")
    ap.add_argument("--single-n", type=int, default=100_000,
                    help="messages per round sent one by one (0: skip)")
    ap.add_argument("--quick", action="store_true", help="smoke run: 2 rounds, small counts")
    args = ap.parse_args()
    if args.quick:
        args.rounds, args.n, args.single_n = 2, 128_000, 40_000
    common.check_payload()
    mach = common.header("alysd one-way throughput with batching vs raw pyzmq batched frames")
    t_start = time.perf_counter()

    batch_table = {"max_batch": BATCH, "max_wait": "5ms"}
    config = common.config_toml([
        {"name": "sink", "class": "bench.actors:BatchSink", "batch": batch_table},
        {"name": "sink1", "class": "bench.actors:BatchSink", "batch": batch_table},
        {"name": "batcher", "class": "bench.actors:BatchBlaster", "config": {"target": "sink"}},
        {"name": "single", "class": "bench.actors:Blaster", "config": {"target": "sink1"}},
        {"name": "plain_sink", "class": "bench.actors:Sink"},
        {"name": "plain", "class": "bench.actors:Blaster", "config": {"target": "plain_sink"}},
    ])
    raw_peer = peers.RawOneWay()
    raw, alysd, send_rates, single, single_batch, single_send, plain = [], [], [], [], [], [], []
    with run_daemon(config) as d:
        # connect and warm up both paths
        d.request("batcher", {"n": 20 * BATCH, "batch": BATCH}, timeout=60)
        if args.single_n:
            d.request("single", {"n": 2000}, timeout=60)
            d.request("plain", {"n": 2000}, timeout=60)
        timeout = 60 + args.n / 20_000
        print(f"   {args.rounds} rounds x {args.n:,} messages ({args.n // BATCH:,} frames of "
              f"{BATCH}) per side, interleaved; msgs/s at the receiver")
        extra = f"  {'1-by-1':>10} {'avg batch':>9} {'1-by-1 plain':>12}" if args.single_n else ""
        print(f"   {'round':>5}  {'raw':>10}  {'alysd':>10}  {'ratio':>6}{extra}")
        for r in range(args.rounds):
            raw.append(raw_peer.run_batched(args.n, BATCH))
            res = d.request("batcher", {"n": args.n, "batch": BATCH}, timeout=timeout)
            if res["count"] != args.n:
                raise SystemExit(f"the sink counted {res['count']} of {args.n} messages")
            alysd.append(common.rate_at_receiver(res))
            send_rates.append(args.n * 1e9 / res["send_ns"])
            line = f"   {r:>5}  {raw[-1]:>10,.0f}  {alysd[-1]:>10,.0f}  {alysd[-1] / raw[-1]:>6.2f}"
            if args.single_n:
                res1 = d.request("single", {"n": args.single_n}, timeout=60 + args.single_n / 5000)
                if res1["count"] != args.single_n:
                    raise SystemExit(f"sink1 counted {res1['count']} of {args.single_n} messages")
                single.append(common.rate_at_receiver(res1))
                single_batch.append(res1["count"] / res1["batches"])
                single_send.append(args.single_n * 1e9 / res1["send_ns"])
                res2 = d.request("plain", {"n": args.single_n}, timeout=60 + args.single_n / 5000)
                if res2["count"] != args.single_n:
                    raise SystemExit(f"plain_sink counted {res2['count']} of {args.single_n}")
                plain.append(common.rate_at_receiver(res2))
                line += f"  {single[-1]:>10,.0f} {single_batch[-1]:>9.1f} {plain[-1]:>12,.0f}"
            print(line, flush=True)

    raw_m, alysd_m = common.median(raw), common.median(alysd)
    ratio = alysd_m / raw_m
    per_round = [a / b for a, b in zip(alysd, raw)]
    print(f"   raw pyzmq, frames of {BATCH}       median {raw_m:>10,.0f} msgs/s")
    print(f"   alysd send_batch -> handle_batch median {alysd_m:>10,.0f} msgs/s   (sender side: "
          f"{common.median(send_rates):,.0f} msgs/s)")
    if single:
        print(f"   alysd send 1-by-1 -> handle_batch median {common.median(single):>10,.0f} msgs/s"
              f"   (avg batch handed to handle_batch: {common.median(single_batch):.1f}; sender "
              f"side {common.median(single_send):,.0f} msgs/s; for context, no target)")
        print(f"   alysd send 1-by-1 -> handle_message median {common.median(plain):>8,.0f} msgs/s"
              f"   (bench.throughput's path, for context)")
    print(f"   ratio alysd/raw {ratio:.2f}  (per-round ratios: min {min(per_round):.2f} "
          f"max {max(per_round):.2f})")
    print(f"   target: >= {TARGET_RATIO}x raw -> {common.verdict(ratio >= TARGET_RATIO)}")
    print(f"   [{time.perf_counter() - t_start:.1f} s wall]")
    common.result({
        "bench": "batching", "rounds": args.rounds, "n": args.n, "batch": BATCH,
        "raw_msgs_per_s": round(raw_m), "alysd_msgs_per_s": round(alysd_m),
        "alysd_send_msgs_per_s": round(common.median(send_rates)),
        "single_n": args.single_n,
        "alysd_single_msgs_per_s": round(common.median(single)) if single else None,
        "alysd_single_avg_batch": round(common.median(single_batch), 1) if single else None,
        "ratio": round(ratio, 3), "target_ratio": TARGET_RATIO,
        "target_met": ratio >= TARGET_RATIO,
        "raw_rounds": [round(x) for x in raw], "alysd_rounds": [round(x) for x in alysd],
        "alysd_single_send_msgs_per_s": round(common.median(single_send)) if single else None,
        "alysd_plain_msgs_per_s": round(common.median(plain)) if plain else None,
        "single_rounds": [round(x) for x in single], "plain_rounds": [round(x) for x in plain],
        "machine": mach,
    })


if __name__ == "__main__":
    main()
