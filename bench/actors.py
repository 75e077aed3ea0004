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
"""

from __future__ import annotations

import time

from alysd import Actor


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
    """Counts messages; ``{"op": "count"}`` reads and resets the figures."""

    def started(self, ctx):
        self.count = self.first = self.last = 0

    def handle_message(self, message, ctx):
        now = time.perf_counter_ns()
        if "op" in message:
            out = {"count": self.count, "first_ns": self.first, "last_ns": self.last}
            self.count = self.first = self.last = 0
            return out
        if not self.count:
            self.first = now
        self.count += 1
        self.last = now
        return None
