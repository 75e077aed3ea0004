"""Actors used by the integration tests, driven by their config and their messages
(as OTP's test suites drive a callback module through ``init/1``'s argument).

Config keys of ``Probe``:
    fail_start      started() raises
    ignore_term     SIGTERM is ignored (tests shutdown escalation)
    journal         path of a file that started()/stopped() append "<event> <name>" lines to
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time

import msgspec

from alysd import Actor, Degraded


def _journal(ctx, event: str) -> None:
    path = ctx.config.get("journal")
    if path:
        with open(path, "a") as f:
            f.write(f"{event} {ctx.name}\n")


class Probe(Actor):
    """Does what each message says; see ``handle_message``."""

    def started(self, ctx):
        if ctx.config.get("fail_start"):
            raise RuntimeError("told to fail in started()")
        if ctx.config.get("ignore_term"):
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        self.received = []
        self.degraded = None
        _journal(ctx, "started")

    def stopped(self, ctx):
        _journal(ctx, "stopped")

    def health_check(self):
        return Degraded(self.degraded) if self.degraded else super().health_check()

    def handle_message(self, m, ctx):
        if not isinstance(m, dict) or "op" not in m:
            self.received.append(m)
            return None
        op = m["op"]
        if op == "echo":
            return m.get("v")
        if op == "pid":
            return os.getpid()
        if op == "whoami":
            env = ctx.message
            return {"name": ctx.name, "from": env.metadata.from_actor, "id": env.message_id,
                    "incarnation": ctx.incarnation, "supervisor": ctx.supervisor}
        if op == "config":
            return ctx.config
        if op == "raise":
            raise ValueError(m.get("msg", "boom"))
        if op == "exit":
            os._exit(m.get("code", 1))
        if op == "ask":
            msg = {"pad": "y" * m["pad"]} if "pad" in m else m["msg"]
            return ctx.request(m["to"], msg, timeout=m.get("timeout", 5.0))
        if op == "send":
            ctx.send(m["to"], m["msg"])
            return "sent"
        if op == "publish":
            return ctx.publish(m["event"], m["msg"])
        if op == "received":
            return self.received
        if op == "degrade":
            self.degraded = m["reason"]
            return "ok"
        if op == "grandchild":
            child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
            return child.pid
        if op == "big":
            return "x" * m["n"]
        raise ValueError(f"unknown op {op!r}")


class AsyncProbe(Actor):
    """Async hooks: awaits a request to another actor inside its handler."""

    async def started(self, ctx):
        await asyncio.sleep(0)
        self.count = 0

    async def handle_message(self, m, ctx):
        self.count += 1
        if isinstance(m, dict) and "ask" in m:
            reply = await ctx.request(m["ask"], m["msg"], timeout=5.0)
            return {"async": True, "reply": reply, "count": self.count}
        await asyncio.sleep(0)
        return {"async": True, "echo": m, "count": self.count}


class Transfer(msgspec.Struct, tag=True):
    amount: int
    to: str


class Balance(msgspec.Struct, tag=True):
    account: str


class Ledger(Actor):
    """Declares its message type: payloads arrive as Structs, anything else is refused."""

    message_type = Transfer | Balance

    def started(self, ctx):
        self.balances: dict[str, int] = {}

    def handle_message(self, m, ctx):
        if isinstance(m, Transfer):
            self.balances[m.to] = self.balances.get(m.to, 0) + m.amount
            return self.balances[m.to]
        return self.balances.get(m.account, 0)


# --- delivery, routing and dead-letter tests --------------------------------------------------

def _record(path: str, entry: dict) -> None:
    """One JSON line, opened and closed per call: nothing is buffered when the process is
    SIGKILLed."""
    with open(path, "a") as f:
        f.write(msgspec.json.encode(entry).decode() + "\n")


def _hold(path: str, limit: float = 10.0) -> None:
    """Busy until the file ``path`` exists (a test releases the handler by creating it)."""
    deadline = time.monotonic() + limit
    while not os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.005)


class Recorder(Actor):
    """Appends one JSON line per message it begins to handle to ``config["journal"]``:
    ``{"name", "m", "from", "retry", "priority", "kind", "incarnation"}``; then does what the
    message says (when it is a dict):

        {"sleep": s}       sleep s seconds (a busy handler)
        {"hold": path}     stay busy until the file ``path`` exists (at most 10 s)
        {"die": true}      os._exit(1), every time

    A request is answered with ``{"name", "incarnation", "retry", "pid"}``.
    """

    def handle_message(self, m, ctx):
        env = ctx.message
        _record(ctx.config["journal"], {
            "name": ctx.name, "m": m, "from": env.metadata.from_actor,
            "retry": env.metadata.retry_count,
            "priority": int(env.priority), "kind": int(env.kind),
            "incarnation": ctx.incarnation, "origin": env.metadata.origin})
        if isinstance(m, dict):
            if m.get("sleep"):
                time.sleep(m["sleep"])
            if m.get("hold"):
                _hold(m["hold"])
            if m.get("die"):
                os._exit(1)
        return {"name": ctx.name, "incarnation": ctx.incarnation,
                "retry": env.metadata.retry_count, "pid": os.getpid()}


class Committer(Recorder):
    """A ``Recorder`` with ``commit(ctx)``: each call journals ``{"commit": k}``,
    k the messages handled since the last call that had any. With
    ``config["fail_first_commit"]`` (a path), the first commit that has
    messages to commit creates that file and raises instead."""

    def started(self, ctx):
        self.uncommitted = 0

    def handle_message(self, m, ctx):
        self.uncommitted += 1
        return super().handle_message(m, ctx)

    def commit(self, ctx):
        if not self.uncommitted:
            return
        flag = ctx.config.get("fail_first_commit")
        if flag and not os.path.exists(flag):
            open(flag, "w").close()
            raise OSError("the disk is full")
        _record(ctx.config["journal"], {"commit": self.uncommitted})
        self.uncommitted = 0


class Subscriber(Recorder):
    """A Recorder that subscribes at run time (``ctx.subscribe``) to every event type
    in ``config["subscribe_to"]``, in ``started``, so each incarnation subscribes anew."""

    def started(self, ctx):
        for event in ctx.config.get("subscribe_to", ()):
            ctx.subscribe(event)


class BatchRecorder(Actor):
    """Handles one-way messages in batches: one JSON line ``{"batch": [...]}`` per
    ``handle_batch`` call in ``config["journal"]``; a request is recorded as
    ``{"single": m}`` and answered with ``"pong"``."""

    def handle_batch(self, messages, ctx):
        _record(ctx.config["journal"], {"batch": list(messages)})

    def handle_message(self, m, ctx):
        _record(ctx.config["journal"], {"single": m})
        return "pong"


class Pump(Actor):
    """Sends on request. ``{"to", "msgs": [...], "priority": "low"|..., "timeout": s,
    "batch": n}`` sends each message as a tell (or, with ``batch``, in ``send_batch``
    chunks of n) and answers ``{"results": ["ok" | error kind, ...], "elapsed": s}``,
    one result per tell or chunk; with ``"then_die": true`` it SIGKILLs itself
    right after the last send instead of answering. ``{"publish": event, "msg": m}``
    answers how many subscribers ``publish`` reached."""

    def handle_message(self, m, ctx):
        from alysd.errors import AlysdError
        from alysd.zmq_bus import Priority

        if "publish" in m:
            return ctx.publish(m["publish"], m["msg"])
        priority = Priority[m.get("priority", "normal").upper()]
        timeout = m.get("timeout", 5.0)
        msgs = m["msgs"]
        size = m.get("batch")
        units = [msgs[i:i + size] for i in range(0, len(msgs), size)] if size else msgs
        results = []
        began = time.monotonic()
        for unit in units:
            try:
                if size:
                    ctx.send_batch(m["to"], unit, priority=priority, timeout=timeout)
                else:
                    ctx.send(m["to"], unit, priority=priority, timeout=timeout)
                results.append("ok")
            except AlysdError as exc:
                results.append(getattr(exc, "kind", type(exc).__name__))
        if m.get("then_die"):
            os.kill(os.getpid(), signal.SIGKILL)
        return {"results": results, "elapsed": time.monotonic() - began}


# --- limits and health tests -------------------------------------------------------------------

class Hog(Actor):
    """Misbehaves on request, one way per message (``{"op": ...}``):

        leak        keep ``mib`` more MiB of touched memory
        leak_child  start a child process that holds ``mib`` MiB (it counts against the tree)
        spin        burn CPU for ``seconds`` (default: until killed)
        sleep       sleep ``seconds`` in the handler (busy, but no CPU)
        oom         ask for an impossible allocation (MemoryError)
        health      set what health_check() answers: ``{"status", "reason"}``
        pid         answer its pid
    """

    def started(self, ctx):
        self.hoard: list[bytes] = []
        self.health = None

    def health_check(self):
        from alysd import Degraded, Unhealthy

        if self.health is None:
            return super().health_check()
        if self.health["status"] == "raise":
            raise RuntimeError("health_check() told to fail")
        make = Degraded if self.health["status"] == "degraded" else Unhealthy
        return make(self.health["reason"])

    def handle_message(self, m, ctx):
        op = m["op"]
        if op == "leak":
            self.hoard.append(b"\x01" * (m["mib"] << 20))   # written, so resident
        elif op == "leak_child":
            child = subprocess.Popen([sys.executable, "-c",
                                      f"import time; x = b'\\x01' * ({m['mib']} << 20); "
                                      "time.sleep(300)"])
            return child.pid
        elif op == "spin":
            end = time.monotonic() + m.get("seconds", 3600)
            while time.monotonic() < end:
                pass
        elif op == "sleep":
            time.sleep(m["seconds"])
        elif op == "oom":
            return len(bytearray(1 << 60))
        elif op == "health":
            self.health = m
        elif op == "pid":
            return os.getpid()
        return "ok"


# --- reload tests --------------------------------------------------------------------------------

class Tunable(Actor):
    """Takes a new config live (``config_changed``) and keeps it for ``health_check``.

    Requests: ``{"op": "config"}`` answers ``ctx.config``, ``{"op": "settings"}``
    ``ctx.settings``, ``{"op": "pid"}`` its pid. Config keys:

        refuse   config_changed() raises when the *new* config has ``"refuse": true``
        sick     health_check() answers Unhealthy while the config has ``"sick": true``
    """

    def started(self, ctx):
        self.config = ctx.config

    def config_changed(self, new, ctx):
        if new.get("refuse"):
            raise ValueError("told to refuse this config")
        self.config = new

    def health_check(self):
        from alysd import Unhealthy

        if self.config.get("sick"):
            return Unhealthy("the config says sick")
        return super().health_check()

    def handle_message(self, m, ctx):
        op = m["op"]
        if op == "config":
            return ctx.config
        if op == "settings":
            return ctx.settings
        if op == "pid":
            return os.getpid()
        raise ValueError(f"unknown op {op!r}")


class Counter(Actor):
    """Counts the messages it handles, and answers each (``{"op": "count"}`` say)
    with the count so far, itself included; ``{"op": "pid"}`` answers its pid. The
    count is carried across a reload restart (``preserve_state`` /
    ``restore_state``, as msgpack). Config keys:

        fail_start   started() raises
        preserve     "raise": preserve_state() raises; "not_bytes": it returns a str;
                     "garbage": it returns bytes restore_state() cannot read (so the
                     next incarnation fails to start)
    """

    def __init__(self):
        self.count = 0          # restore_state() runs before started()

    def started(self, ctx):
        if ctx.config.get("fail_start"):
            raise RuntimeError("told to fail in started()")
        self.preserve = ctx.config.get("preserve")

    def preserve_state(self):
        if self.preserve == "raise":
            raise RuntimeError("preserve_state() told to fail")
        if self.preserve == "not_bytes":
            return str(self.count)
        if self.preserve == "garbage":
            return b"\xc1"
        return msgspec.msgpack.encode(self.count)

    def restore_state(self, state):
        self.count = msgspec.msgpack.decode(state, type=int)

    def handle_message(self, m, ctx):
        self.count += 1
        if isinstance(m, dict) and m.get("op") == "pid":
            return os.getpid()
        return self.count


class NoLive(Actor):
    """Has no ``config_changed``: a new config needs a restart. ``{"op": "config"}``
    answers ``ctx.config``, ``{"op": "pid"}`` its pid."""

    def handle_message(self, m, ctx):
        if m["op"] == "config":
            return ctx.config
        if m["op"] == "pid":
            return os.getpid()
        raise ValueError(f"unknown op {m['op']!r}")


class RemoteSender(Actor):
    """Sends what it is asked to another node through the host link ``link``:
    a request ``{"node", "to", "message", "sensitive"?}`` answers "sent", or
    the error the link's handler raised."""

    def handle_message(self, m, ctx):
        from alysd.host_link import Remote
        ctx.send("link", Remote(node=m["node"], to=m["to"], message=m["message"],
                                sensitive=m.get("sensitive", False)))
        return "sent"


class Fetcher(Actor):
    """Answers each request with the body of an HTTP GET of ``config["url"]``
    (an external endpoint, for the chaos engine's slow_endpoint fault)."""

    def handle_message(self, m, ctx):
        import urllib.request
        with urllib.request.urlopen(ctx.config["url"], timeout=10) as response:
            return response.read().decode()


class Talker(Actor):
    """Writes what it is told: ``{"say": text}`` prints it to stdout and logs it
    at warning level; ``{"die": text}`` writes it to stderr and exits at once
    (status 1), as a crash would."""

    def handle_message(self, m, ctx):
        import sys
        if "say" in m:
            print(m["say"])
            ctx.log.warning("said %s", m["say"])
            return "said"
        sys.stderr.write(m["die"] + "\n")
        os._exit(1)
