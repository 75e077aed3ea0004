"""Benchmark actors, loaded by alysd's zygote as ``bench.actors:<Class>``.

This module is imported (preloaded) by the zygote of every benchmark daemon,
so it imports nothing heavy: in particular not ``bench.peers`` (which pulls in
Thespian), whose pages would otherwise sit in every forked actor.  The
message the actors send is ``payload(i)``, a copy of ``bench.peers.payload``;
the driver scripts check that the two agree before they measure anything.

* ``Echo``    -- replies with what it was sent.
* ``Pinger``  -- ``{"n": N}``: N sequential ``ctx.request(config.target,
  payload(i))`` (the actor-to-actor path); replies with the N round-trip
  times in ns (``time.perf_counter_ns``).
* ``Blaster`` -- ``{"n": N}``: N one-way ``ctx.send(config.target,
  payload(i))``, then one request ``{"op": "count"}`` to the sink, which is
  queued behind the N messages on the same socket and so answers once all
  of them are handled; replies with the send time and the sink's figures.
* ``Sink``    -- counts the messages it is sent; the request
  ``{"op": "count"}`` answers ``{"count", "first_ns", "last_ns"}`` (stamped
  with ``perf_counter_ns`` once each message is decoded, i.e. at the start of
  ``handle_message``) and resets the counter.
* ``RemoteBlaster`` -- ``{"n": N}``: N ``Remote`` messages to another node
  through the host link (``bench.link``).
* ``BatchBlaster``   -- as ``Blaster``, with ``ctx.send_batch`` of lists of B.
* ``BatchSink``      -- as ``Sink``, counting what ``handle_batch`` is given.
* ``StampedBlaster`` -- ``Blaster`` that also returns when its first send began.
* ``SoakPeer``, ``SoakTicker`` -- the soak's actors (``bench.soak``): peers
  journal what they sent and handled; the ticker paces their sends.
* ``Leaker``  -- ``{"limit_mib", "step_mib", "every", "report"}``: grows its
  RSS by ``step_mib`` every ``every`` seconds; the moment it is over
  ``limit_mib`` it writes ``time.time()`` to the file ``report`` (``bench.limits``).
* ``Steady``  -- a well-behaved actor: holds ``hold_mib`` MiB and burns
  ``work_ms`` of CPU every ``period`` seconds, paced by a tick it sends itself.
"""

from __future__ import annotations

import os
import random
import time

from alysd import Actor
from alysd.errors import AlysdError


def payload(seq: int) -> dict:
    """Same as ``bench.peers.payload``: the small dict every raw peer sends."""
    return {"to": "bench.echo", "kind": "ping", "seq": seq, "body": "0123456789ab"}


class Echo(Actor):
    """Replies with the message it received."""

    def handle_message(self, message, ctx):
        return message


class Pinger(Actor):
    """On ``{"n": N}``: N timed sequential requests to ``config.target``."""

    def started(self, ctx):
        self.target = ctx.config["target"]

    def handle_message(self, message, ctx):
        n = int(message["n"])
        timeout = float(message.get("timeout", 5.0))
        request, target, clock = ctx.request, self.target, time.perf_counter_ns
        out = []
        for i in range(n):
            msg = payload(i)          # built before the clock starts, as RawRoundTrip does
            t0 = clock()
            request(target, msg, timeout=timeout)
            out.append(clock() - t0)
        return out


class Blaster(Actor):
    """On ``{"n": N}``: N one-way sends to ``config.target``, then read its count."""

    def started(self, ctx):
        self.target = ctx.config["target"]

    def handle_message(self, message, ctx):
        n = int(message["n"])
        send, target, clock = ctx.send, self.target, time.perf_counter_ns
        t0 = clock()
        for i in range(n):
            send(target, payload(i))  # built and encoded per message, as RawOneWay does
        t1 = clock()
        stats = ctx.request(target, {"op": "count"}, timeout=float(message.get("timeout", 60.0)))
        return {"send_ns": t1 - t0, **stats}


class Sink(Actor):
    """Counts messages; ``{"op": "count"}`` reads and resets the figures,
    ``{"op": "peek"}`` reads the count alone."""

    def started(self, ctx):
        self.count = self.first = self.last = 0

    def handle_message(self, message, ctx):
        now = time.perf_counter_ns()
        if "op" in message:
            if message["op"] == "peek":
                return self.count
            out = {"count": self.count, "first_ns": self.first, "last_ns": self.last}
            self.count = self.first = self.last = 0
            return out
        if not self.count:
            self.first = now
        self.count += 1
        self.last = now
        return None


# --- batching (bench.batching) ----------------------------------------------------


class RemoteBlaster(Actor):
    """On ``{"n": N}``: N one-way ``Remote(node=config.node, to=config.target,
    message=payload(i))`` to the host link ``link`` (``bench.link``); replies
    with the send time."""

    def handle_message(self, message, ctx):
        from alysd.host_link import Remote
        node, target = ctx.config["node"], ctx.config["target"]
        send, clock = ctx.send, time.perf_counter_ns
        t0 = clock()
        for i in range(int(message["n"])):
            send("link", Remote(node=node, to=target, message=payload(i)))
        return {"send_ns": clock() - t0}


class BatchBlaster(Actor):
    """On ``{"n": N, "batch": B}``: N messages to ``config.target`` as
    ``ctx.send_batch`` calls of B ``payload(i)`` each (each list built and
    encoded in the loop, as ``RawOneWay.run_batched`` does), then one request
    ``{"op": "count"}`` to the sink, queued behind them; replies with the send
    time and the sink's figures."""

    def started(self, ctx):
        self.target = ctx.config["target"]

    def handle_message(self, message, ctx):
        n, size = int(message["n"]), int(message.get("batch", 64))
        send_batch, target, clock = ctx.send_batch, self.target, time.perf_counter_ns
        t0 = clock()
        for start in range(0, n, size):
            send_batch(target, [payload(i) for i in range(start, min(start + size, n))])
        t1 = clock()
        stats = ctx.request(target, {"op": "count"}, timeout=float(message.get("timeout", 60.0)))
        return {"send_ns": t1 - t0, "t0_ns": t0, **stats}


class BatchSink(Actor):
    """Counts the messages ``handle_batch`` is given; ``{"op": "count"}`` (a
    request, which is never batched) answers ``{"count", "batches", "first_n",
    "first_ns", "last_ns"}`` and resets them. The stamps are taken with
    ``perf_counter_ns`` when ``handle_batch`` starts, i.e. once the batch is
    decoded; ``first_n`` is the size of the first batch."""

    def started(self, ctx):
        self._reset()

    def _reset(self):
        self.count = self.batches = self.first_n = self.first = self.last = 0

    def handle_batch(self, messages, ctx):
        now = time.perf_counter_ns()
        if not self.count:
            self.first = now
            self.first_n = len(messages)
        self.count += len(messages)
        self.batches += 1
        self.last = now

    def handle_message(self, message, ctx):
        if message.get("op") == "count":
            out = {"count": self.count, "batches": self.batches, "first_n": self.first_n,
                   "first_ns": self.first, "last_ns": self.last}
            self._reset()
            return out
        self.handle_batch([message], ctx)
        return None


# --- delivery cost (bench.delivery_cost) -------------------------------------------


class StampedBlaster(Blaster):
    """``Blaster`` that also returns ``t0_ns``, the ``perf_counter_ns`` just
    before its first send, for an end-to-end rate (first send -> last handled)."""

    def handle_message(self, message, ctx):
        n = int(message["n"])
        send, target, clock = ctx.send, self.target, time.perf_counter_ns
        t0 = clock()
        for i in range(n):
            send(target, payload(i))
        t1 = clock()
        stats = ctx.request(target, {"op": "count"}, timeout=float(message.get("timeout", 60.0)))
        return {"send_ns": t1 - t0, "t0_ns": t0, **stats}


# --- soak (bench.soak) ---------------------------------------------------------------
#
# Every SoakPeer keeps one journal, ``<config.dir>/<name>.log``, appended and
# flushed per line (no fsync: a SIGKILL does not lose what was written):
#
#   I <incarnation> <unix time>       an incarnation started
#   A <seq> <to> <unix time>          message "<name>:<seq>" was accepted by ctx.send
#   E <seq> <to> <error>              ctx.send raised: not accepted
#   H <sender>:<seq> <unix time>      a message was handled
#
# Sequence numbers are reserved in blocks in ``<name>.seq`` (replaced
# atomically) before they are used, so a new incarnation never reuses the
# number of a message its predecessor may have sent but not journalled.

SEQ_BLOCK = 1000


class SoakPeer(Actor):
    """``{"k": K}`` (from the ticker): send K messages ``{"id": "<name>:<seq>"}``
    to random other peers. ``{"id": ...}``: journal it as handled."""

    def started(self, ctx):
        cfg = ctx.config
        self.others = [p for p in cfg["peers"] if p != ctx.name]
        self.rng = random.Random()
        base = os.path.join(cfg["dir"], ctx.name)
        self.seq_path = base + ".seq"
        try:
            with open(self.seq_path) as f:
                self.seq = int(f.read().strip() or 0)
        except FileNotFoundError:
            self.seq = 0
        self.reserved = self.seq
        # Held open for the incarnation's life (closed in stopped(), or by the kill).
        self.journal = open(base + ".log", "a")  # noqa: SIM115
        # "\n" first: a line its predecessor was writing when killed stays apart.
        self.journal.write(f"\nI {ctx.incarnation} {time.time():.6f}\n")
        self.journal.flush()

    def stopped(self, ctx):
        self.journal.close()

    def _reserve(self) -> None:
        self.reserved = self.seq + SEQ_BLOCK
        tmp = self.seq_path + ".tmp"
        with open(tmp, "w") as f:
            f.write(str(self.reserved))
        os.replace(tmp, self.seq_path)

    def handle_message(self, message, ctx):
        journal = self.journal
        mid = message.get("id")
        if mid is not None:
            journal.write(f"H {mid} {time.time():.6f}\n")
            journal.flush()
            return
        k = int(message.get("k", 0))
        for _ in range(k):
            if self.seq >= self.reserved:
                self._reserve()
            seq = self.seq
            self.seq += 1
            to = self.rng.choice(self.others)
            try:
                ctx.send(to, {"id": f"{ctx.name}:{seq}"})
            except AlysdError as exc:
                journal.write(f"E {seq} {to} {type(exc).__name__}\n")
            else:
                journal.write(f"A {seq} {to} {time.time():.6f}\n")
            journal.flush()


class SoakTicker(Actor):
    """Paces the soak's load: after ``{"op": "start", "rate": R, "interval": S}``
    it sends every peer ``{"k": K}`` every S seconds, K chosen so that each peer
    is asked for R messages/s since the start (late ticks ask for more). The
    pace is kept by a tick the ticker sends itself, sleeping in its handler
    until the tick is due, so requests (``{"op": "stop"}``) are served between
    ticks. Never killed by the soak."""

    def started(self, ctx):
        self.peers = list(ctx.config["peers"])
        self.running = False
        self.generation = 0
        self.ticks = self.asked = self.late = 0

    def handle_message(self, message, ctx):
        op = message.get("op")
        if op == "tick":
            if self.running and message.get("gen") == self.generation:
                self._tick(ctx)
            return None
        if op == "start":
            self.rate = float(message["rate"])
            self.interval = float(message.get("interval", 0.02))
            self.t0 = time.monotonic()
            self.ticks = self.asked = self.late = 0
            self.generation += 1
            self.running = True
            ctx.send(ctx.name, {"op": "tick", "gen": self.generation})
            return {"started": True}
        if op == "stop":
            self.running = False
            return {"ticks": self.ticks, "asked_per_peer": self.asked, "late": self.late,
                    "seconds": time.monotonic() - self.t0}
        return None

    def _tick(self, ctx):
        due_at = self.t0 + (self.ticks + 1) * self.interval
        wait = due_at - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        elif wait < -self.interval:
            self.late += 1
        self.ticks = max(self.ticks + 1, int((time.monotonic() - self.t0) / self.interval))
        due = int((time.monotonic() - self.t0) * self.rate)
        k = due - self.asked
        if k > 0:
            for peer in self.peers:
                ctx.send(peer, {"k": k})
            self.asked = due
        ctx.send(ctx.name, {"op": "tick", "gen": self.generation})


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class Leaker(Actor):
    """Leaks on request until killed; reports when it crossed its limit."""

    def handle_message(self, message, ctx):
        hoard, reported = [], False
        limit = message["limit_mib"] << 20
        while len(hoard) * message["step_mib"] < 4 * message["limit_mib"]:
            hoard.append(b"\x01" * (message["step_mib"] << 20))
            if not reported and _rss_bytes() > limit:
                with open(message["report"], "w") as f:
                    f.write(f"{time.time():.6f}")
                reported = True
            time.sleep(message["every"])
        time.sleep(60)


class Steady(Actor):
    """Stays well inside its limits for as long as it runs."""

    def started(self, ctx):
        cfg = ctx.config
        self.hold = b"\x01" * (cfg["hold_mib"] << 20)
        self.work = cfg["work_ms"] / 1000
        self.period = cfg["period"]
        self.next = time.monotonic()
        ctx.send(ctx.name, "tick")

    def handle_message(self, message, ctx):
        end = time.monotonic() + self.work
        while time.monotonic() < end:
            pass
        self.next += self.period
        time.sleep(max(0.0, self.next - time.monotonic()))
        ctx.send(ctx.name, "tick")
