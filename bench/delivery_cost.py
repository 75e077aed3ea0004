"""Cost of the delivery guarantee: one-way throughput with and without receipts, in one run.

Two pairs of actors in one daemon, as in ``bench.throughput``: a
``StampedBlaster`` (a ``Blaster`` that also returns when it began) does N
``ctx.send(sink, payload(i))`` (one envelope per frame), then one request to
its ``Sink``, queued behind the N messages and so answered once all of them
are handled, with the count and the ``perf_counter_ns`` stamps of the first
and last message.

* ``acked``: the sink has the default ``[actors.X.mailbox] delivery =
  "at_least_once"``: the sender keeps every message until the receiver's ACK
  receipt comes back (receipts are batched: every 64 messages, when the
  mailbox empties, or 5 ms after the first one owed).
* ``unacked``: the sink has ``delivery = "at_most_once"``: no receipts, no
  copy kept by the sender.

Figures per round: the rate at the receiver (messages after the first /
(last - first), as ``bench.throughput``), and the end-to-end rate, N / (last
message handled - the sender's first ``ctx.send``): ``perf_counter_ns`` is
the system-wide monotonic clock, so the two processes' stamps compare. Rounds
are interleaved (acked, unacked, unacked, acked, ...: the order alternates so
neither side always runs first); the report gives the median over rounds per
side and the ratio of the medians. The target is judged on the rate at the
receiver.

    python -m bench.delivery_cost [--rounds 12] [--n 200000] [--quick]
"""

from __future__ import annotations

import argparse
import time

from alysd.testing import run_daemon
from bench import common

TARGET_RATIO = 0.7
SIDES = ("acked", "unacked")


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.delivery_cost",
                                 description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=12, help="interleaved rounds per side")
    ap.add_argument("--n", type=int, default=200_000, help="messages per round")
    ap.add_argument("--quick", action="store_true", help="smoke run: 3 rounds of 20,000")
    args = ap.parse_args()
    if args.quick:
        args.rounds, args.n = 3, 20_000
    common.check_payload()
    mach = common.header("alysd cost of at-least-once delivery: one-way throughput, "
                         "receipts vs none")
    t_start = time.perf_counter()

    config = common.config_toml([
        {"name": "sink_acked", "class": "bench.actors:Sink",
         "mailbox": {"delivery": "at_least_once"}},
        {"name": "sink_unacked", "class": "bench.actors:Sink",
         "mailbox": {"delivery": "at_most_once"}},
        {"name": "blaster_acked", "class": "bench.actors:StampedBlaster",
         "config": {"target": "sink_acked"}},
        {"name": "blaster_unacked", "class": "bench.actors:StampedBlaster",
         "config": {"target": "sink_unacked"}},
    ])
    rx = {side: [] for side in SIDES}
    e2e = {side: [] for side in SIDES}
    sender = {side: [] for side in SIDES}
    with run_daemon(config) as d:
        for side in SIDES:  # connect and warm up
            d.request(f"blaster_{side}", {"n": 5000}, timeout=60)
        timeout = 60 + args.n / 5000
        print(f"   {args.rounds} rounds x {args.n:,} messages per side, interleaved; msgs/s")
        print(f"   {'round':>5}  {'acked rx':>10} {'unacked rx':>10} {'ratio':>6}   "
              f"{'acked e2e':>10} {'unacked e2e':>11} {'ratio':>6}")
        for r in range(args.rounds):
            order = SIDES if r % 2 == 0 else SIDES[::-1]
            for side in order:
                res = d.request(f"blaster_{side}", {"n": args.n}, timeout=timeout)
                if res["count"] != args.n:
                    raise SystemExit(f"sink_{side} counted {res['count']} of {args.n} messages")
                rx[side].append(common.rate_at_receiver(res))
                e2e[side].append(args.n * 1e9 / (res["last_ns"] - res["t0_ns"]))
                sender[side].append(args.n * 1e9 / res["send_ns"])
            print(f"   {r:>5}  {rx['acked'][-1]:>10,.0f} {rx['unacked'][-1]:>10,.0f} "
                  f"{rx['acked'][-1] / rx['unacked'][-1]:>6.2f}   {e2e['acked'][-1]:>10,.0f} "
                  f"{e2e['unacked'][-1]:>11,.0f} {e2e['acked'][-1] / e2e['unacked'][-1]:>6.2f}",
                  flush=True)

    med = {f"{kind}_{side}": common.median(vals[side]) for kind, vals in
           (("rx", rx), ("e2e", e2e), ("send", sender)) for side in SIDES}
    ratio = med["rx_acked"] / med["rx_unacked"]
    ratio_e2e = med["e2e_acked"] / med["e2e_unacked"]
    per_round = [a / b for a, b in zip(rx["acked"], rx["unacked"])]
    print("   median msgs/s      at receiver   end to end   sender's ctx.send calls")
    for side, label in (("acked", "at_least_once"), ("unacked", "at_most_once ")):
        print(f"   {label}   {med['rx_' + side]:>12,.0f} {med['e2e_' + side]:>12,.0f} "
              f"{med['send_' + side]:>12,.0f}")
    print(f"   ratio with/without receipts: at the receiver {ratio:.2f} (per-round min "
          f"{min(per_round):.2f} max {max(per_round):.2f}), end to end {ratio_e2e:.2f}")
    print(f"   target: with acks >= {TARGET_RATIO}x without -> "
          f"{common.verdict(ratio >= TARGET_RATIO)}")
    print(f"   [{time.perf_counter() - t_start:.1f} s wall]")
    common.result({
        "bench": "delivery_cost", "rounds": args.rounds, "n": args.n,
        **{f"{k}_msgs_per_s": round(v) for k, v in med.items()},
        "ratio": round(ratio, 3), "ratio_e2e": round(ratio_e2e, 3),
        "target_ratio": TARGET_RATIO, "target_met": ratio >= TARGET_RATIO,
        "rounds_rx": {side: [round(x) for x in rx[side]] for side in SIDES},
        "rounds_e2e": {side: [round(x) for x in e2e[side]] for side in SIDES},
        "machine": mach,
    })


if __name__ == "__main__":
    main()
