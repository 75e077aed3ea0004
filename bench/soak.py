"""Soak: 10 actors exchanging ~5 000 msg/s while one of them is SIGKILLed every 500 ms.

What runs:

* ``peer0`` .. ``peer9`` (``bench.actors:SoakPeer``), under one one_for_one
  supervisor with ``max_retries = 1000`` within ``1s`` (the actors' own
  policy is one_for_one: restart at once). Each is sender and receiver, with
  the default ``at_least_once`` delivery and ``block`` backpressure.
* ``ticker`` (``bench.actors:SoakTicker``), never killed, paces the load:
  every ``--tick`` seconds it tells each peer how many messages it owes
  (``--rate`` / peers per second since the start, so late ticks ask for more).
  A peer then sends that many ``{"id": "<name>:<seq>"}`` with ``ctx.send`` to
  random other peers.
* Each peer journals, in its own file (appended and flushed per line, no
  fsync), every id ``ctx.send`` accepted (returned without raising), every
  send that raised, and every id it handled. Sequence numbers are reserved in
  blocks in a side file before use, so they survive incarnations and are never
  reused.
* This driver SIGKILLs a random peer every ``--kill-every`` seconds (its pid
  from ``status``, checked to be a descendant of the daemon), and logs when.

At the end it stops the ticker, waits until the number of messages handled
or dead-lettered stops changing for ``--settle`` seconds (at most
``--drain-timeout``), reads the dead-letter queue, and prints:

* accepted, handled (unique ids), duplicates, dead-lettered (by reason);
* lost = accepted ids neither handled nor dead-lettered (must be 0). Each lost
  message is attributed by the kill log: whether its sender was killed within
  ``--window`` seconds after its acceptance, and whether its receiver was
  (or up to 50 ms before: it may still have been down). With the outbox
  journal no one-way message may be lost even when both ends are killed; the
  attribution is a diagnosis (before the journal, "sender killed only" was
  the signature of frames ZeroMQ had not written out). The first lost
  messages are listed with the kills of either end near them;
* the number of kills; zombies among the daemon's descendants at the end
  (those still zombies a second later: must be 0), and any zombie seen in two
  samples in a row during the run;
* the root's RSS before the load, after the warm-up (the first
  ``min(10 s, duration / 10)`` of load: the baseline), and at the end; growth
  over the baseline must be <= 10 %.

Exit status: 1 when lost > 0 or zombies > 0 (also 2 when the run could not be
completed), so that it can be run by hand as a check.

    python -m bench.soak [--duration 600] [--rate 5000] [--kill-every 0.5] [--quick]
"""

from __future__ import annotations

import argparse
import bisect
import collections
import os
import random
import shutil
import signal
import sys
import time

import psutil

from alysd.testing import run_daemon, short_tempdir
from bench import common

RSS_GROWTH_TARGET = 0.10
RECEIVER_DOWN = 0.05      # a receiver killed this long before an acceptance may still be down
_SEQ_BITS = 32


class Journals:
    """Reads the peers' journals incrementally (complete lines only)."""

    def __init__(self, directory: str, names: list[str]):
        self.dir = directory
        self.names = names
        self.index = {name: i for i, name in enumerate(names)}
        self.offsets = {name: 0 for name in names}
        self.rest = {name: b"" for name in names}
        self.accepted = 0                      # A lines
        self.outstanding: dict[int, tuple[float, int]] = {}   # accepted, not (yet) handled
        self.handled: set[int] = set()
        self.handled_lines = 0
        self.duplicates = 0
        self.send_errors: collections.Counter = collections.Counter()
        self.errored: set[int] = set()
        self.incarnations = 0
        self.malformed = 0

    def key(self, name: str, seq: int) -> int:
        return self.index[name] << _SEQ_BITS | seq

    def name_of(self, key: int) -> str:
        return self.names[key >> _SEQ_BITS]

    def poll(self) -> None:
        for name in self.names:
            path = os.path.join(self.dir, name + ".log")
            try:
                with open(path, "rb") as f:
                    f.seek(self.offsets[name])
                    data = f.read()
            except FileNotFoundError:
                continue
            self.offsets[name] += len(data)
            data = self.rest[name] + data
            cut = data.rfind(b"\n") + 1
            self.rest[name] = data[cut:]
            self._parse(name, data[:cut])

    def _parse(self, name: str, data: bytes) -> None:
        me = self.index[name] << _SEQ_BITS
        outstanding, handled, index = self.outstanding, self.handled, self.index
        for line in data.split(b"\n"):
            if not line:
                continue
            parts = line.split()
            try:
                tag = parts[0]
                if tag == b"H":
                    sender, seq = parts[1].split(b":")
                    key = index[sender.decode()] << _SEQ_BITS | int(seq)
                    self.handled_lines += 1
                    if key in handled:
                        self.duplicates += 1
                    else:
                        handled.add(key)
                        outstanding.pop(key, None)
                elif tag == b"A":
                    key = me | int(parts[1])
                    self.accepted += 1
                    if key not in handled:
                        outstanding[key] = (float(parts[3]), index[parts[2].decode()])
                elif tag == b"E":
                    self.send_errors[parts[3].decode()] += 1
                    self.errored.add(me | int(parts[1]))
                elif tag == b"I":
                    self.incarnations += 1
                else:
                    self.malformed += 1
            except (IndexError, ValueError, KeyError):
                # A line cut short by a SIGKILL (the next incarnation starts a new one).
                self.malformed += 1


def dead_letters(d) -> tuple[dict, dict[int, str], int]:
    """(the queue's summary, {message key: reason} of the peers' messages,
    letters of other messages)."""
    summary = d.call("dead_letters", {"limit": 0})
    listing = d.call("dead_letters", {"limit": summary["count"]}, timeout=120) \
        if summary["count"] else {"letters": []}
    keyed, other = {}, 0
    for letter in listing["letters"]:
        payload = letter.get("payload")
        mid = payload.get("id") if isinstance(payload, dict) else None
        if isinstance(mid, str) and ":" in mid:
            sender, seq = mid.rsplit(":", 1)
            keyed[(sender, int(seq))] = letter["reason"]
        else:
            other += 1
    return summary, keyed, other


def zombies(d) -> list[int]:
    out = []
    for proc in d.descendants():
        try:
            if proc.status() == psutil.STATUS_ZOMBIE:
                out.append(proc.pid)
        except psutil.NoSuchProcess:
            pass
    return out


def rss(pid: int) -> int:
    return psutil.Process(pid).memory_info().rss


def main() -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.splitlines()[0])
    ap.add_argument("--duration", type=float, default=600.0, help="seconds of load and kills")
    ap.add_argument("--rate", type=float, default=5000.0, help="messages/s, all peers together")
    ap.add_argument("--actors", type=int, default=10, help="number of peers")
    ap.add_argument("--kill-every", type=float, default=0.5, help="seconds between SIGKILLs")
    ap.add_argument("--tick", type=float, default=0.02, help="the ticker's period (s)")
    ap.add_argument("--settle", type=float, default=5.0,
                    help="drained once nothing changed for this long (s)")
    ap.add_argument("--drain-timeout", type=float, default=90.0, help="give up draining after (s)")
    ap.add_argument("--window", type=float, default=1.0,
                    help="a loss is attributed to both ends being killed within this (s)")
    ap.add_argument("--report-every", type=float, default=10.0, help="progress line period (s)")
    ap.add_argument("--list", type=int, default=10, help="lost messages listed in detail")
    ap.add_argument("--seed", type=int, default=None, help="seed of the kill schedule")
    ap.add_argument("--keep", action="store_true", help="keep the journals' directory")
    ap.add_argument("--quick", action="store_true", help="smoke run: 20 s, settle 3 s")
    args = ap.parse_args()
    if args.quick:
        args.duration, args.settle, args.report_every = 20.0, 3.0, 5.0
    seed = args.seed if args.seed is not None else random.randrange(1 << 30)
    rng = random.Random(seed)
    mach = common.header(f"alysd soak: {args.actors} actors, {args.rate:,.0f} msg/s, "
                         f"SIGKILL every {args.kill_every * 1000:.0f} ms, {args.duration:g} s")
    t_start = time.perf_counter()

    names = [f"peer{i}" for i in range(args.actors)]
    jdir = short_tempdir(prefix="soak-journals-")
    config = common.config_toml(
        [{"name": "ticker", "class": "bench.actors:SoakTicker", "config": {"peers": names}}]
        + [{"name": n, "class": "bench.actors:SoakPeer", "config": {"dir": jdir, "peers": names},
            "options": {"strategy": "one_for_one"}} for n in names],
        max_retries=1000, within_time="1s", system={"dead_letter_capacity": 200_000})
    journals = Journals(jdir, names)
    kills: list[tuple[float, str, int]] = []
    kill_misses = collections.Counter()
    rss_samples: list[tuple[float, int]] = []
    zombie_seen: set[int] = set()
    zombies_during: set[int] = set()
    print(f"   journals in {jdir}; kill schedule seed {seed}")
    exit_code = 0
    try:
        with run_daemon(config) as d:
            root = d.pid
            # The root opens the dead-letter queue (an LMDB map) on first use: open it
            # now, so that its pages are in every RSS figure, not only the last.
            d.call("dead_letters", {"limit": 0})
            rss_before = rss(root)
            d.request("ticker", {"op": "start", "rate": args.rate / args.actors,
                                 "interval": args.tick})
            t0 = time.monotonic()
            warm_at = t0 + min(10.0, args.duration / 10)
            rss_base = None
            end = t0 + args.duration
            next_kill = t0 + args.kill_every
            next_report = t0 + args.report_every
            last_accepted = 0
            last_report_t = t0
            print(f"   {'t(s)':>6} {'accepted':>10} {'msg/s':>7} {'handled':>10} {'outst.':>7} "
                  f"{'dups':>5} {'kills':>5} {'restarts':>8} {'root RSS':>9}")
            while True:
                now = time.monotonic()
                if now >= end:
                    break
                if rss_base is None and now >= warm_at:
                    rss_base = rss(root)
                if now >= next_kill:
                    next_kill += args.kill_every
                    if next_kill < now:          # fell behind: do not burst kills
                        next_kill = now + args.kill_every
                    name = rng.choice(names)
                    row = d.status()[name]
                    pid = row.get("pid")
                    if row["state"] != "running" or not pid:
                        kill_misses["not running"] += 1
                    elif pid not in {p.pid for p in d.descendants()}:
                        kill_misses["pid not a descendant"] += 1
                    else:
                        try:
                            os.kill(pid, signal.SIGKILL)
                            kills.append((time.time(), name, pid))
                        except ProcessLookupError:
                            kill_misses["gone already"] += 1
                if now >= next_report:
                    next_report += args.report_every
                    journals.poll()
                    status = d.status()
                    restarts = sum(status[n]["restarts"] for n in names)
                    r = rss(root)
                    rss_samples.append((now - t0, r))
                    z = set(zombies(d))
                    zombies_during |= z & zombie_seen
                    zombie_seen = z
                    rate = (journals.accepted - last_accepted) / (now - last_report_t)
                    last_accepted, last_report_t = journals.accepted, now
                    print(f"   {now - t0:>6.0f} {journals.accepted:>10,} {rate:>7,.0f} "
                          f"{len(journals.handled):>10,} {len(journals.outstanding):>7,} "
                          f"{journals.duplicates:>5,} {len(kills):>5} {restarts:>8} "
                          f"{r / 2**20:>7.1f}Mi", flush=True)
                time.sleep(max(0.0, min(next_kill, next_report, end) - time.monotonic()))
            load_s = time.monotonic() - t0
            if rss_base is None:
                rss_base = rss(root)
            ticker = d.request("ticker", {"op": "stop"}, timeout=30)

            # Drain: until handled + dead-lettered stops changing for --settle s.
            t_drain = time.monotonic()
            last, stable_since, drained = None, time.monotonic(), False
            while time.monotonic() - t_drain < args.drain_timeout:
                journals.poll()
                dead_count = d.call("dead_letters", {"limit": 0})["count"]
                figure = (len(journals.handled), journals.handled_lines, journals.accepted,
                          dead_count)
                if figure != last:
                    last, stable_since = figure, time.monotonic()
                elif time.monotonic() - stable_since >= args.settle:
                    drained = True
                    break
                time.sleep(0.25)
            drain_s = time.monotonic() - t_drain
            journals.poll()
            rss_end = rss(root)
            status = d.status()
            summary, letters, other_letters = dead_letters(d)
            z_end = zombies(d)
            if z_end:
                time.sleep(1.0)   # a process killed just now may not be reaped yet
                z_end = sorted(set(z_end) & set(zombies(d)))
            descendants = len(d.descendants())
    finally:
        if not args.keep:
            shutil.rmtree(jdir, ignore_errors=True)

    # --- accounting --------------------------------------------------------------
    dead_keys = {journals.key(s, q): reason for (s, q), reason in letters.items()
                 if s in journals.index}
    dead_by_reason = collections.Counter(dead_keys.values())
    lost_keys = [k for k in journals.outstanding if k not in dead_keys]
    accepted_handled = journals.accepted - len(journals.outstanding)
    handled_unrecorded = len(journals.handled) - accepted_handled
    dead_and_handled = sum(1 for k in dead_keys if k in journals.handled)
    errored_handled = sum(1 for k in journals.errored if k in journals.handled)
    kill_times: dict[str, list[float]] = collections.defaultdict(list)
    for t, name, _ in kills:
        kill_times[name].append(t)

    def first_kill(name: str, lo: float, hi: float) -> float | None:
        times = kill_times.get(name, [])
        i = bisect.bisect_left(times, lo)
        return times[i] if i < len(times) and times[i] <= hi else None

    # Attribute each lost message by which of its ends were killed near its acceptance:
    # the sender in [accepted, accepted + window]; the receiver in the same span, or
    # up to RECEIVER_DOWN before it (it may still have been restarting when accepted).
    w = args.window
    categories: dict[str, list[int]] = {"both ends killed": [], "sender killed only": [],
                                        "receiver killed only": [], "neither end killed": []}
    sender_delay_ms: dict[int, float] = {}
    for k in lost_keys:
        t_acc, to = journals.outstanding[k]
        sender, receiver = journals.name_of(k), names[to]
        s_kill = first_kill(sender, t_acc, t_acc + w)
        r_kill = first_kill(receiver, t_acc - RECEIVER_DOWN, t_acc + w)
        if s_kill is not None and r_kill is not None:
            categories["both ends killed"].append(k)
        elif s_kill is not None:
            categories["sender killed only"].append(k)
            sender_delay_ms[k] = (s_kill - t_acc) * 1000
        elif r_kill is not None:
            categories["receiver killed only"].append(k)
        else:
            categories["neither end killed"].append(k)
    # Listed first: what no kill explains, then the sender-only losses, longest
    # acceptance -> kill first, then both ends killed.
    listed = (categories["neither end killed"] + categories["receiver killed only"]
              + sorted(categories["sender killed only"], key=lambda k: -sender_delay_ms[k])
              + categories["both ends killed"])
    lost = len(lost_keys)
    growth = (rss_end - rss_base) / rss_base
    restarts = {n: status[n]["restarts"] for n in names}
    not_running = [n for n in names + ["ticker"] if status[n]["state"] != "running"]

    print(f"   -- load {load_s:.1f} s, then drained in {drain_s:.1f} s"
          f"{'' if drained else ' (NOT settled: drain timeout)'}")
    print(f"   ticker: {ticker['ticks']:,} ticks ({ticker['late']} late), asked each peer for "
          f"{ticker['asked_per_peer']:,} messages ({ticker['asked_per_peer'] * args.actors:,} "
          f"in all)")
    print(f"   accepted (ctx.send returned)  {journals.accepted:>10,}   "
          f"= {journals.accepted / load_s:,.0f} msg/s over the load")
    print(f"   send raised (not accepted)    {sum(journals.send_errors.values()):>10,}   "
          f"{dict(journals.send_errors) or ''}")
    print(f"   handled, unique ids           {len(journals.handled):>10,}   "
          f"(of which accepted: {accepted_handled:,}; handled though the sender was killed "
          f"before journalling the accept: {handled_unrecorded:,})")
    print(f"   duplicates (handled again)    {journals.duplicates:>10,}")
    print(f"   dead-lettered (peers' msgs)   {len(dead_keys):>10,}   {dict(dead_by_reason) or ''}")
    print(f"     dead-letter queue: {summary['count']:,} letters ({other_letters:,} not the "
          f"peers' messages), evicted {summary['evicted']:,}, by reason (all time) "
          f"{summary['by_reason'] or {}}")
    if dead_and_handled or errored_handled:
        print(f"     both dead-lettered and handled: {dead_and_handled:,}; handled though "
              f"ctx.send raised: {errored_handled:,}")
    print(f"   lost = accepted - handled - dead-lettered = {lost:,}  -> "
          f"{'ok' if lost == 0 else 'LOST MESSAGES'}")
    if lost:
        print(f"     by which ends were killed within {w:g} s after the acceptance (the "
              f"receiver also up to {RECEIVER_DOWN * 1000:.0f} ms before): " + ", ".join(
            f"{name} {len(ks):,}" for name, ks in categories.items()))
        if sender_delay_ms:
            delays = list(sender_delay_ms.values())
            bins = collections.Counter(next(f"<= {b} ms" for b in (1, 5, 20, 100, 1000) if x <= b)
                                       for x in delays)
            print(f"     sender killed only: acceptance -> SIGKILL of the sender "
                  f"{min(delays):.1f}-{max(delays):.1f} ms (median "
                  f"{common.median(delays):.1f} ms); " + ", ".join(
                      f"{b}: {bins[b]}" for b in sorted(bins, key=lambda b: int(b.split()[1]))))
    for k in listed[:args.list]:
        t_acc, to = journals.outstanding[k]
        sender, receiver = journals.name_of(k), names[to]
        near = [f"{n}@{(t - t_acc) * 1000:+.0f}ms" for t, n, _ in kills
                if n in (sender, receiver) and abs(t - t_acc) <= 2.0]
        if not any(n == receiver for t, n, _ in kills if abs(t - t_acc) <= 2.0):
            before = [t for t in kill_times.get(receiver, []) if t < t_acc]
            if before:
                near.append(f"({receiver} last killed {t_acc - before[-1]:.1f}s before)")
        stamp = time.strftime("%H:%M:%S", time.localtime(t_acc)) + f"{t_acc % 1:.3f}"[1:]
        print(f"     lost {sender}:{k & ((1 << _SEQ_BITS) - 1)} -> {receiver}, accepted at "
              f"{stamp}; kills of either end within 2 s: {', '.join(near) or 'none'}")
    print(f"   kills: {len(kills):,} done ({len(kills) / load_s:.2f}/s)"
          + (f", skipped {dict(kill_misses)}" if kill_misses else "")
          + f"; restarts per peer {min(restarts.values())}-{max(restarts.values())} "
          f"(total {sum(restarts.values()):,}); journals show {journals.incarnations:,} "
          f"incarnations started")
    if not_running:
        print(f"   NOT running at the end: {not_running}")
    print(f"   zombies among the daemon's {descendants} descendants at the end: {len(z_end)}"
          f"{' ' + str(z_end) if z_end else ''}; zombies seen in two samples in a row during "
          f"the run: {len(zombies_during)}  -> {'ok' if not z_end else 'ZOMBIES'}")
    print(f"   root RSS: before load {rss_before / 2**20:.1f} MiB, after warm-up (baseline) "
          f"{rss_base / 2**20:.1f} MiB, end {rss_end / 2**20:.1f} MiB -> growth "
          f"{growth * 100:+.1f} %  (target <= {RSS_GROWTH_TARGET * 100:.0f} %: "
          f"{common.verdict(growth <= RSS_GROWTH_TARGET)})")
    if rss_samples:
        step = max(1, len(rss_samples) // 12)
        print("   root RSS over the run (MiB): " + ", ".join(
            f"{t:.0f}s {r / 2**20:.1f}" for t, r in rss_samples[::step]))
    if journals.malformed:
        print(f"   journal lines cut short by a kill (ignored): {journals.malformed}")
    print(f"   [{time.perf_counter() - t_start:.1f} s wall]")
    ok = lost == 0 and not z_end
    common.result({
        "bench": "soak", "duration_s": round(load_s, 1), "rate_target": args.rate,
        "actors": args.actors, "kill_every_s": args.kill_every, "seed": seed,
        "accepted": journals.accepted, "accepted_per_s": round(journals.accepted / load_s),
        "send_errors": dict(journals.send_errors), "handled_unique": len(journals.handled),
        "handled_unrecorded_accept": handled_unrecorded, "duplicates": journals.duplicates,
        "dead_lettered": len(dead_keys), "dead_lettered_by_reason": dict(dead_by_reason),
        "dead_letter_queue": {k: summary[k] for k in ("count", "evicted", "by_reason")},
        "lost": lost, "lost_by_kills": {name: len(ks) for name, ks in categories.items()},
        "kills": len(kills),
        "kill_misses": dict(kill_misses), "restarts": sum(restarts.values()),
        "drained": drained, "drain_s": round(drain_s, 1),
        "zombies_end": len(z_end), "zombies_during": len(zombies_during),
        "root_rss_before_mib": round(rss_before / 2**20, 1),
        "root_rss_base_mib": round(rss_base / 2**20, 1),
        "root_rss_end_mib": round(rss_end / 2**20, 1), "root_rss_growth": round(growth, 4),
        "rss_target_met": growth <= RSS_GROWTH_TARGET, "ok": ok, "machine": mach,
    })
    if not drained:
        exit_code = 2
    if not ok:
        exit_code = 1
    return exit_code


if __name__ == "__main__":
    sys.exit(main())
