"""Restart latency: SIGKILL of an actor until its next incarnation answers a
request, alysd against supervisord and circus, in one run.

    python -m bench.restart [--kills 30] [--warmup 1] [--ofa-kills 30] [--skip-circus-default]
                            [--skip-circus] [--skip-supervisord] [--skip-one-for-all] [--seed N]

What is timed, the same way for every system: ``t0 = time.time()`` just
before ``os.kill(pid, SIGKILL)``; the figure is the ``time.time()`` at which
the bench process receives the first answer, to a request it sent after
``t0``, that comes from a pid other than the killed one.  The bench talks to
each program directly, with a ZeroMQ DEALER connected to the program's unix
socket (reconnect interval 1 ms, no back-off: up to 1 ms of every figure is
the client finding the new socket).  It sends a request at the kill; again as
soon as the DEALER's monitor reports the old connection gone (ZeroMQ holds
that one until the new incarnation's socket takes the connection); and again
whenever its latest request has gone unanswered for 5 ms (20 ms after the
first 50 ms), in case one went to the dying process.  A process that still
answers is not sent more.  The kernel's report that the killed process is
gone (a pidfd becoming readable) is timed too.

* **alysd**: one ``PidEcho`` actor (``bench.restart_peers``) under a root
  supervisor with ``max_retries = 1000`` within ``1s``.  An actor binds its
  inbox before ``started()`` and serves it only after ``started()`` has
  returned, so an answer means that the new incarnation's ``started()`` has
  run.  The root's own stamps from ``status`` break the time down: process
  gone → exit seen (``last_exit.at``) → Spawn sent (``spawned_at``) → Ready
  seen (``ready_at``) → answer.
* **supervisord** and **circus** (default ``check_delay``, which is 5 s in a
  config file, and ``check_delay = 0.1``): ``restart_peers.PING_PROGRAM``, a
  fresh interpreter that binds a ROUTER and answers with its pid, the same
  program for both.
* **one_for_all**: alysd with 10 ``PidEcho`` siblings under a
  ``one_for_all`` root.  One of them, chosen at random, is killed; the figure
  runs until all 10 have answered from new pids.  If only the killed one
  comes back within 3 s, the report says that this build does not implement
  ``one_for_all``.

Kills are interleaved across the systems.  Each system's next kill is due a
pause after its last restart was seen, the bench takes whichever system is
due first, and only one restart is ever in flight.  circus reaps and respawns
only from a timer (every ``check_delay``), so its pauses are drawn uniformly
over that period and its kills fall at a uniform phase of the timer.
supervisord restarts on its next 1 s poll timeout after the reap, whatever
the phase.  A kill of its program within ``startsecs`` (1 s) of the spawn
would count as a failed start, so its kills are at least 1.05 s apart.
alysd's pauses are 50-300 ms.  The first ``--warmup`` kills of each system
are not counted.

Every daemon and program the run starts is stopped at the end, also on an
error, Ctrl-C or SIGTERM.

For reference, the bench times two things in its own process (pyzmq,
msgspec and alysd loaded): ``os.fork()`` until the child has written a byte
to a pipe, and SIGKILL of such a child until ``waitpid`` returns it.  No
fork-based restart that waits for the exit can beat their sum.
"""

from __future__ import annotations

import argparse
import os
import random
import select
import signal
import time
from collections.abc import Callable
from typing import Any

import zmq

from alysd import zmq_bus
from alysd.testing import run_daemon, wait_until
from alysd.zmq_bus import Kind
from bench import common, restart_peers
from bench.restart_peers import Circus, Supervisord

TARGET_P50_S = 0.003
TARGET_P90_S = 0.006
TARGET_X_SUPERVISORD = 300.0
TARGET_X_CIRCUS_TUNED = 25.0
TARGET_OFA_S = 0.020
ACTOR_CLASS = "bench.restart_peers:PidEcho"
CLIENT_ID = "bench-restart"
RESEND_S = 0.005           # resend while waiting, the first RESEND_FAST_FOR_S
RESEND_FAST_FOR_S = 0.050
RESEND_SLOW_S = 0.020
ANSWER_TIMEOUT_S = 30.0


# --- the client: which process answers ---------------------------------------

class Probe:
    """A DEALER into one program's socket, and a monitor of its connection."""

    def __init__(self, zctx: zmq.Context, path: str, encode: Callable[[int], bytes],
                 decode: Callable[[bytes], tuple[int, int, float]]):
        self.sock = zctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.ROUTING_ID, CLIENT_ID.encode())
        self.sock.setsockopt(zmq.RECONNECT_IVL, 1)
        self.sock.setsockopt(zmq.RECONNECT_IVL_MAX, 0)   # a constant 1 ms, no back-off
        self.sock.setsockopt(zmq.LINGER, 0)
        self.mon = self.sock.get_monitor_socket(zmq.EVENT_DISCONNECTED)
        self.sock.connect(zmq_bus.ipc(path))
        self.encode, self.decode = encode, decode
        self.seq = 0

    def send(self) -> None:
        self.seq += 1
        try:
            self.sock.send(self.encode(self.seq), zmq.NOBLOCK)
        except zmq.Again:
            pass   # the queue is full while the program is down: there are enough

    def drain(self) -> None:
        """Discard late answers and old connection events."""
        for s in (self.sock, self.mon):
            while True:
                try:
                    s.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    break

    def close(self) -> None:
        self.sock.disable_monitor()
        self.mon.close(linger=0)
        self.sock.close(linger=0)


def wait_answers(probes: list[Probe], old_pids: list[int | None],
                 timeout: float = ANSWER_TIMEOUT_S, exited: dict | None = None,
                 partial: bool = False) -> list:
    """For each probe, the first answer from a pid other than its old pid:
    ``(received_at, pid, answered_at)`` in ``time.time()`` seconds.

    ``exited``, if given, is ``{"fd": pidfd}`` of the killed process; the time
    the kernel reports it gone is stored under ``"at"``.  On timeout, raises
    ``TimeoutError``, or with ``partial`` returns what came (None for the rest).

    Each probe sends one request now, one whenever its connection drops (that
    one waits in ZeroMQ's queue for the next connection), and one more when its
    latest request has had no answer for ``RESEND_S`` (it may have gone to a
    process that died with it).  A process that is still up and answering is
    not sent more, so siblings that are still serving are not loaded.
    """
    poller = zmq.Poller()
    owner: dict[zmq.Socket, int] = {}
    for i, p in enumerate(probes):
        for s in (p.sock, p.mon):
            poller.register(s, zmq.POLLIN)
            owner[s] = i
    pidfd = exited["fd"] if exited else None
    if pidfd is not None:
        poller.register(pidfd, zmq.POLLIN)
    n = len(probes)
    first_seq = [p.seq + 1 for p in probes]
    start = time.monotonic()
    sent_at = [start] * n
    answered = [False] * n       # the latest request has been answered
    for p in probes:
        p.send()
    got: list[tuple[float, int, float] | None] = [None] * n

    def resend(i: int, now: float) -> None:
        probes[i].send()
        sent_at[i] = now
        answered[i] = False

    while True:
        now = time.monotonic()
        pending = [i for i in range(n) if got[i] is None]
        if not pending:
            return got   # type: ignore[return-value]
        if now - start > timeout:
            if partial:
                return got
            raise TimeoutError(f"no answer from a new process within {timeout:g}s "
                               f"({len(pending)} of {n} missing)")
        interval = RESEND_S if now - start < RESEND_FAST_FOR_S else RESEND_SLOW_S
        due = [sent_at[i] + interval for i in pending if not answered[i]]
        wait_ms = (min(due) - now) * 1000 if due else 50.0
        ready = dict(poller.poll(max(0, int(wait_ms + 0.999))))
        received = time.time()
        now = time.monotonic()
        if pidfd is not None and pidfd in ready:
            exited["at"] = received
            poller.unregister(pidfd)
            del ready[pidfd]
            pidfd = None
        for s in ready:
            i = owner[s]
            p = probes[i]
            if s is p.mon:
                dropped = False
                while True:
                    try:
                        p.mon.recv_multipart(zmq.NOBLOCK)
                        dropped = True
                    except zmq.Again:
                        break
                if dropped and got[i] is None:
                    resend(i, now)
                continue
            while True:
                try:
                    frame = p.sock.recv(zmq.NOBLOCK)
                except zmq.Again:
                    break
                seq, pid, t_answer = p.decode(frame)
                if seq == p.seq:
                    answered[i] = True
                if got[i] is None and seq >= first_seq[i] and pid != old_pids[i]:
                    got[i] = (received, pid, t_answer)
        for i in pending:
            if got[i] is None and not answered[i] and now >= sent_at[i] + interval:
                resend(i, now)


def alysd_codec(name: str, identity: Callable[[dict], Any] = lambda body: int(body["pid"]),
                seen: dict[str, dict] | None = None
                ) -> tuple[Callable[[int], bytes], Callable[[bytes], tuple[int, Any, float]]]:
    """Requests to actor ``name`` and its answers as ``(seq, identity(answer),
    t)``; the whole answer is kept in ``seen[name]`` when given."""
    ids = zmq_bus.MessageIds()

    def encode(seq: int) -> bytes:
        return zmq_bus.encode_envelope(Kind.ASK, ids.next(), seq, sender=CLIENT_ID, target=name)

    def decode(frame: bytes) -> tuple[int, Any, float]:
        env = zmq_bus.decode_envelope(frame, zmq_bus.DEFAULT_MAX_MESSAGE_BYTES)
        if env.kind != Kind.REPLY:
            raise RuntimeError(f"{name} answered with an error: {zmq_bus.decode_error(env.payload)}")
        body = zmq_bus.decode_any(env.payload)
        if seen is not None:
            seen[name] = body
        return int(body["seq"]), identity(body), float(body["t"])

    return encode, decode


def kill_and_wait(probe: Probe, old: int) -> tuple[float, tuple[float, int, float], float | None]:
    """SIGKILL ``old``; returns ``(t0, first answer from another pid, time the
    kernel reported ``old`` gone)``."""
    exited: dict = {"fd": os.pidfd_open(old)}
    try:
        t0 = time.time()
        os.kill(old, signal.SIGKILL)
        answer = wait_answers([probe], [old], exited=exited)[0]
        if "at" not in exited:   # gone before the answer, reported after it: rare
            select.select([exited["fd"]], [], [], 5.0)
            exited["at"] = time.time()
    finally:
        os.close(exited["fd"])
    return t0, answer, exited.get("at")


def current_pid(probe: Probe, timeout: float = ANSWER_TIMEOUT_S) -> int:
    """Which process answers now (waits until one does)."""
    probe.drain()
    return wait_answers([probe], [None], timeout)[0][1]


# --- the systems ---------------------------------------------------------------

def tree_toml(names: list[str], strategy: str) -> str:
    lines = ["[system]", 'log_level = "info"', "",
             "[supervisors.bench]", f'strategy = "{strategy}"',
             "max_retries = 1000", 'within_time = "1s"', ""]
    for name in names:
        lines += [f"[actors.{name}]", 'supervisor = "bench"', f'class = "{ACTOR_CLASS}"', ""]
    return "\n".join(lines)


class System:
    """One system under test: how to kill it once, when to kill it next, its figures."""

    label = "?"
    tick_s = 0.0            # period of the manager's own restart timer (0: event-driven)
    min_gap_s = 0.05        # pause after a restart is seen, at least ...
    jitter_s = 0.0          # ... plus up to this much, at random
    guess_s = 0.5           # how long one kill takes, until one has been timed

    def __init__(self, kills: int, warmup: int, rng: random.Random):
        self.left = kills + warmup
        self.warmup = warmup
        self.kills = kills
        self.rng = rng
        self.runs: list[dict] = []
        self.durations: list[float] = []
        self.next_at = 0.0
        self.strata: list[float] | None = None

    def pause(self) -> float:
        """The pause before the next kill.  Against a timer, the timed kills take
        stratified phases (one in each 1/N of the period, shuffled), so that 30
        kills sample the period evenly rather than at 30 random points."""
        if self.left == 0:
            return 0.0
        if self.tick_s <= 0:
            return self.min_gap_s + self.rng.uniform(0.0, self.jitter_s)
        if self.strata is None:
            self.strata = [(i + self.rng.random()) / self.kills for i in range(self.kills)]
            self.rng.shuffle(self.strata)
        if self.warmup > 0:
            frac = self.rng.random()          # the pause before another untimed kill
        else:
            frac = self.strata.pop() if self.strata else self.rng.random()
        return self.min_gap_s + frac * self.tick_s

    def expected_s(self) -> float:
        return max(self.durations[-5:]) if self.durations else self.guess_s

    def kill_once(self) -> dict:
        raise NotImplementedError

    def record(self, res: dict, took: float) -> None:
        self.durations.append(took)
        if self.warmup > 0:
            self.warmup -= 1
        else:
            self.runs.append(res)
        self.left -= 1


class AlysdSystem(System):
    label = "alysd"
    jitter_s = 0.25         # event-driven; spread anyway (heartbeats, the root's sampling)
    guess_s = 0.2

    def __init__(self, d, zctx: zmq.Context, kills: int, warmup: int, rng: random.Random):
        super().__init__(kills, warmup, rng)
        self.d = d
        self.name = "echo"
        self.probe = Probe(zctx, d.rundir.inbox(self.name), *alysd_codec(self.name))

    def kill_once(self) -> dict:
        old = current_pid(self.probe)
        row = self.d.status()[self.name]
        if row["pid"] != old:
            raise RuntimeError(f"alysd status says pid {row['pid']}, the actor says {old}")
        t0, (received, pid, answered), gone = kill_and_wait(self.probe, old)

        def ready_row():
            r = self.d.status()[self.name]
            return r if r["pid"] == pid and r["ready_at"] is not None else None
        row2 = wait_until(ready_row, 10.0, 0.002, "the new incarnation in status")
        exit_at = row2["last_exit"]["at"]
        return {"s": received - t0, "answered_s": answered - t0, "gone_s": gone - t0,
                "gone_to_exit_seen_s": exit_at - gone,
                "exit_seen_s": exit_at - t0, "exit_seen_to_ready_s": row2["ready_at"] - exit_at,
                "exit_seen_to_spawn_s": row2["spawned_at"] - exit_at,
                "spawn_to_ready_s": row2["ready_at"] - row2["spawned_at"],
                "ready_to_answered_s": answered - row2["ready_at"],
                "kill_to_ready_s": row2["ready_at"] - t0,
                "incarnation": row2["incarnation"], "reason": row2["last_exit"]["reason"]}


class ManagedSystem(System):
    """supervisord or circus running the ping program."""

    def __init__(self, daemon, zctx: zmq.Context, kills: int, warmup: int, rng: random.Random):
        super().__init__(kills, warmup, rng)
        self.daemon = daemon
        self.label = daemon.label
        self.tick_s = daemon.tick_s
        self.min_gap_s = daemon.min_gap_s
        self.jitter_s = daemon.jitter_s
        self.guess_s = 2 * daemon.tick_s + daemon.min_gap_s + 0.5
        self.probe = Probe(zctx, daemon.sock_path, restart_peers.encode_ping,
                           restart_peers.decode_ping)

    def kill_once(self) -> dict:
        self.daemon.check_alive()
        old = current_pid(self.probe)
        self.daemon.seen_pids.add(old)
        t0, (received, pid, answered), gone = kill_and_wait(self.probe, old)
        self.daemon.seen_pids.add(pid)
        return {"s": received - t0, "answered_s": answered - t0, "gone_s": gone - t0}


def _pick(systems: list[System]) -> System | None:
    """The system to kill next: the one due first, unless its kill would still
    be running when a system with a slow timer is due (its kills must fall at
    the phases drawn for them); then that one goes first."""
    due = [s for s in systems if s.left > 0]
    if not due:
        return None
    first = min(due, key=lambda x: x.next_at)
    start = max(first.next_at, time.monotonic())
    for y in due:
        if y is not first and y.tick_s >= 1.0 and start + first.expected_s() > y.next_at:
            return y
    return first


def run_interleaved(systems: list[System]) -> None:
    now = time.monotonic()
    for s in systems:
        s.next_at = now + s.min_gap_s   # supervisord's program may have just been spawned
    while (s := _pick(systems)) is not None:
        delay = s.next_at - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        began = time.monotonic()
        res = s.kill_once()
        s.record(res, time.monotonic() - began)
        s.next_at = time.monotonic() + s.pause()
        done = len(s.runs)
        if done and (done % 10 == 0 or s.left == 0) and s.warmup == 0:
            xs = [r["s"] for r in s.runs]
            print(f"   {s.label:<12} {done:3d} kills: p50 {_ms(common.pct(xs, .5))}  "
                  f"p90 {_ms(common.pct(xs, .9))}", flush=True)


# --- one_for_all -------------------------------------------------------------------

def one_for_all(zctx: zmq.Context, kills: int, warmup: int, rng: random.Random) -> dict:
    names = [f"s{i:02d}" for i in range(10)]
    with run_daemon(tree_toml(names, "one_for_all"), wait=False) as d:
        common.wait_all_running(d, len(names), timeout=60)
        probes = [Probe(zctx, d.rundir.inbox(n), *alysd_codec(n)) for n in names]
        runs: list[dict] = []
        try:
            for k in range(kills + warmup):
                for p in probes:
                    p.drain()
                olds = [a[1] for a in wait_answers(probes, [None] * len(probes))]
                victim = rng.randrange(len(names))
                t0 = time.time()
                os.kill(olds[victim], signal.SIGKILL)
                # All ten at once.  If some never come back, wait far longer than the
                # target before deciding that this build restarts only the one killed.
                got = wait_answers(probes, olds, timeout=3.0, partial=True)
                if got[victim] is None:
                    raise RuntimeError(f"{names[victim]} was not restarted within 3 s")
                if any(g is None for g in got):
                    rows = d.status()
                    restarted = [n for i, n in enumerate(names)
                                 if i != victim and rows[n]["pid"] != olds[i]]
                    if not restarted:
                        return {"implemented": False, "victim": names[victim],
                                "siblings_restarted": [], "victim_s": got[victim][0] - t0}
                    missing = [i for i, g in enumerate(got) if g is None]
                    late = wait_answers([probes[i] for i in missing], [olds[i] for i in missing])
                    for i, g in zip(missing, late):
                        got[i] = g
                all_received = max(g[0] for g in got)

                def all_ready(t0=t0):
                    rows = d.status()
                    ok = all(rows[n]["ready_at"] is not None and rows[n]["ready_at"] > t0
                             for n in names)
                    return rows if ok else None
                rows = wait_until(all_ready, 10.0, 0.005, "all siblings ready in status")
                if k >= warmup:
                    last_exit = max(r["last_exit"]["at"] for r in rows.values())
                    first_spawn = min(r["spawned_at"] for r in rows.values())
                    last_ready = max(r["ready_at"] for r in rows.values())
                    runs.append({"s": all_received - t0,
                                 "victim_s": got[victim][0] - t0,
                                 "kill_to_all_ready_s": last_ready - t0,
                                 "kill_to_last_exit_s": last_exit - t0,
                                 "first_spawn_to_last_ready_s": last_ready - first_spawn})
                time.sleep(rng.uniform(0.05, 0.3))
        finally:
            for p in probes:
                p.close()
    return {"implemented": True, "runs": runs}


# --- reference: the fork floor ---------------------------------------------------------

def kill_floor(n: int) -> list[float]:
    """SIGKILL of a forked child of this process until ``waitpid`` returns it:
    the kernel's teardown, which any supervisor waits for before it sees the exit."""
    out = []
    for _ in range(n):
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.write(w, b"x")
            time.sleep(60)
            os._exit(0)
        os.read(r, 1)
        time.sleep(0.01)
        t0 = time.perf_counter()
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        out.append(time.perf_counter() - t0)
        os.close(r)
        os.close(w)
    return out


def fork_floor(n: int) -> list[float]:
    """``os.fork()`` of this process until the child has written one byte to a pipe."""
    out = []
    for _ in range(n):
        r, w = os.pipe()
        t0 = time.perf_counter()
        pid = os.fork()
        if pid == 0:
            os.write(w, b"x")
            os._exit(0)
        os.read(r, 1)
        out.append(time.perf_counter() - t0)
        os.waitpid(pid, 0)
        os.close(r)
        os.close(w)
        time.sleep(0.01)
    return out


def _tree_state() -> str:
    """The commit measured, and whether alysd/ had uncommitted changes."""
    import subprocess
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        head = subprocess.run(["git", "-C", root, "rev-parse", "--short", "HEAD"],
                              check=False, capture_output=True, text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", root, "status", "--porcelain", "--", "alysd"],
                               check=False, capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return (head or "unknown") + (" + uncommitted changes in alysd/" if dirty else "")


# --- report ------------------------------------------------------------------------------

def _ms(s: float) -> str:
    return f"{s * 1e3:8.2f} ms"


def _fig(xs: list[float]) -> dict:
    return {"n": len(xs), "p50_ms": round(common.pct(xs, .5) * 1e3, 3),
            "p90_ms": round(common.pct(xs, .9) * 1e3, 3),
            "min_ms": round(min(xs) * 1e3, 3), "max_ms": round(max(xs) * 1e3, 3)}


def _exit_on_signal(signum, frame) -> None:
    raise SystemExit(128 + signum)


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.restart", description=__doc__.splitlines()[0])
    ap.add_argument("--kills", type=int, default=30, help="timed kills per system")
    ap.add_argument("--warmup", type=int, default=1, help="untimed kills per system first")
    ap.add_argument("--ofa-kills", type=int, default=30, help="timed one_for_all kills")
    ap.add_argument("--skip-circus-default", action="store_true",
                    help="skip circus with its default check_delay (5 s; ~2.5 s per restart)")
    ap.add_argument("--skip-circus", action="store_true", help="skip circus altogether")
    ap.add_argument("--skip-supervisord", action="store_true")
    ap.add_argument("--skip-one-for-all", action="store_true")
    ap.add_argument("--seed", type=int, default=None, help="seed of the pauses between kills")
    args = ap.parse_args()
    # A SIGTERM (or SIGHUP) unwinds through the finally blocks below, which stop
    # every daemon and program this run started.
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _exit_on_signal)
    mach = common.header("restart latency: SIGKILL -> new incarnation answers; "
                         "alysd vs supervisord vs circus")
    print(f"   alysd at {_tree_state()}")
    rng = random.Random(args.seed)
    zctx = zmq.Context(io_threads=1)
    fork, kill = fork_floor(30), kill_floor(30)
    print(f"   reference, this process (pyzmq, msgspec, alysd loaded): os.fork -> child's first "
          f"byte p50 {_ms(common.pct(fork, .5))}; SIGKILL of a forked child -> waitpid "
          f"p50 {_ms(common.pct(kill, .5))}", flush=True)

    daemons: list = []
    systems: list[System] = []
    out: dict = {"bench": "restart", "kills": args.kills, "warmup": args.warmup, "machine": mach,
                 "systems": {}}
    t_start = time.monotonic()
    try:
        with run_daemon(tree_toml(["echo"], "one_for_one")) as d:
            try:
                if not args.skip_supervisord:
                    daemons.append(Supervisord().start())
                if not args.skip_circus:
                    daemons.append(Circus(check_delay=0.1).start())
                    if not args.skip_circus_default:
                        daemons.append(Circus().start())
                systems.append(AlysdSystem(d, zctx, args.kills, args.warmup, rng))
                for dm in daemons:
                    systems.append(ManagedSystem(dm, zctx, args.kills, args.warmup, rng))
                for s in systems[1:]:
                    try:
                        current_pid(s.probe, timeout=30)   # its program is up and answering
                    except TimeoutError:
                        s.daemon.check_alive()
                        raise RuntimeError(f"{s.label}: the ping program never answered:\n"
                                           f"{s.daemon.log()[-3000:]}") from None
                order = ", ".join(s.label for s in systems)
                print(f"   {args.kills} timed kills each (after {args.warmup} untimed), "
                      f"interleaved: {order}", flush=True)
                run_interleaved(systems)
            finally:
                for s in systems:
                    s.probe.close()
                for dm in daemons:
                    dm.close()
        ofa = None
        if not args.skip_one_for_all:
            ofa = one_for_all(zctx, args.ofa_kills, args.warmup, rng)
    finally:
        zctx.term()
    elapsed = time.monotonic() - t_start

    print()
    print("   SIGKILL -> first answer from the new process, as received by the bench:")
    figs: dict[str, dict] = {}
    for s in systems:
        xs = [r["s"] for r in s.runs]
        figs[s.label] = _fig(xs)
        figs[s.label]["answered"] = _fig([r["answered_s"] for r in s.runs])
        figs[s.label]["process_gone"] = _fig([r["gone_s"] for r in s.runs])
        gone = [r["gone_s"] for r in s.runs]
        print(f"     {s.label:<12} p50 {_ms(common.pct(xs, .5))}   p90 {_ms(common.pct(xs, .9))}"
              f"   (min {_ms(min(xs))}, max {_ms(max(xs))}, n={len(xs)}; "
              f"killed process gone after p50 {_ms(common.pct(gone, .5)).strip()})")
    a = systems[0]
    stages = [("gone_s", "kill -> process gone (pidfd readable)"),
              ("gone_to_exit_seen_s", "process gone -> exit seen by the root"),
              ("exit_seen_s", "kill -> exit seen by the root (last_exit.at)"),
              ("exit_seen_to_spawn_s", "exit seen -> Spawn sent (spawned_at)"),
              ("spawn_to_ready_s", "Spawn sent -> Ready seen (ready_at)"),
              ("ready_to_answered_s", "ready_at -> the actor answers (its clock)"),
              ("exit_seen_to_ready_s", "exit seen -> ready (the root's restart figure)"),
              ("kill_to_ready_s", "kill -> ready")]
    root = {k: _fig([r[k] for r in a.runs]) for k, _ in stages}
    figs["alysd"]["root_stamps"] = root
    bad = [r for r in a.runs if r["reason"] != "signal"]
    print("     alysd, where the time goes (the root's stamps from status; p50 / p90):")
    for k, what in stages:
        print(f"       {what:<48} {_ms(root[k]['p50_ms'] / 1e3)} / {_ms(root[k]['p90_ms'] / 1e3)}")
    if bad:
        print(f"     WARNING: {len(bad)} alysd exits not recorded as a signal: {bad[:3]}")
    out["systems"] = figs

    ap50, ap90 = figs["alysd"]["p50_ms"], figs["alysd"]["p90_ms"]
    verdicts = {"p50_le_3ms": ap50 <= TARGET_P50_S * 1e3, "p90_le_6ms": ap90 <= TARGET_P90_S * 1e3}
    print()
    print(f"   alysd p50 {ap50:.2f} ms (target <= {TARGET_P50_S * 1e3:g} ms): "
          f"{common.verdict(verdicts['p50_le_3ms'])};  p90 {ap90:.2f} ms "
          f"(target <= {TARGET_P90_S * 1e3:g} ms): {common.verdict(verdicts['p90_le_6ms'])}")
    ratios = {}
    targets = {"supervisord": TARGET_X_SUPERVISORD, "circus-0.1": TARGET_X_CIRCUS_TUNED}
    for s in systems[1:]:
        f = figs[s.label]
        r50, r90 = f["p50_ms"] / ap50, f["p90_ms"] / ap90
        ratios[s.label] = {"p50_x": round(r50, 1), "p90_x": round(r90, 1)}
        line = f"   {s.label:<12} / alysd: p50 {r50:7.1f}x   p90 {r90:7.1f}x"
        if s.label in targets:
            ok = r50 >= targets[s.label]
            verdicts[f"x_{s.label}"] = ok
            line += f"   (target >= {targets[s.label]:g}x at p50: {common.verdict(ok)})"
        print(line)
    out["ratios"] = ratios
    print(f"   reference: os.fork p50 {_ms(common.pct(fork, .5))} p90 {_ms(common.pct(fork, .9))}; "
          f"SIGKILL -> reaped p50 {_ms(common.pct(kill, .5))} p90 {_ms(common.pct(kill, .9))}")
    out["fork_floor"] = _fig(fork)
    out["kill_floor"] = _fig(kill)

    if ofa is not None:
        print()
        if not ofa["implemented"]:
            print("   one_for_all not implemented in this build: after SIGKILL of "
                  f"{ofa['victim']} only it was restarted ({_ms(ofa['victim_s'])}); "
                  f"siblings restarted: {ofa['siblings_restarted'] or 'none'} within 2 s")
            out["one_for_all"] = {"implemented": False, "siblings_restarted": ofa["siblings_restarted"]}
            verdicts["one_for_all_le_20ms"] = False
        else:
            runs = ofa["runs"]
            xs = [r["s"] for r in runs]
            ready = [r["kill_to_all_ready_s"] for r in runs]
            out["one_for_all"] = {"implemented": True, **_fig(xs),
                                  "victim": _fig([r["victim_s"] for r in runs]),
                                  "kill_to_all_ready": _fig(ready),
                                  "kill_to_last_exit": _fig([r["kill_to_last_exit_s"] for r in runs]),
                                  "first_spawn_to_last_ready":
                                      _fig([r["first_spawn_to_last_ready_s"] for r in runs])}
            ok = common.pct(xs, .5) <= TARGET_OFA_S
            verdicts["one_for_all_le_20ms"] = ok
            print(f"   one_for_all, 10 siblings, SIGKILL of one -> all 10 answer from new pids: "
                  f"p50 {_ms(common.pct(xs, .5))}  p90 {_ms(common.pct(xs, .9))} (n={len(xs)}); "
                  f"target <= {TARGET_OFA_S * 1e3:g} ms: {common.verdict(ok)}")
            o = out["one_for_all"]
            print(f"     root's stamps, p50: kill -> last sibling's exit seen "
                  f"{_ms(o['kill_to_last_exit']['p50_ms'] / 1e3).strip()} (the stop half), "
                  f"first Spawn -> last ready {_ms(o['first_spawn_to_last_ready']['p50_ms'] / 1e3).strip()} "
                  f"(the start half), kill -> last ready {_ms(common.pct(ready, .5)).strip()}; "
                  f"the killed one answers after {_ms(o['victim']['p50_ms'] / 1e3).strip()}")
    out["verdicts"] = verdicts
    out["alysd_tree"] = _tree_state()
    out["elapsed_s"] = round(elapsed, 1)
    out["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    print(f"   ({elapsed:.0f} s; load average at the end {out['loadavg_end']})")
    common.result(out)


if __name__ == "__main__":
    main()
