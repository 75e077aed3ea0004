"""Peer systems that alysd's benchmarks measure side by side with alysd.

alysd's scripts (bench/rtt.py, bench/throughput.py, bench/spawn.py) import
this module and interleave rounds of alysd and of these peers in one run, so
that drift of the machine (on 2 cores, round trips are bimodal depending on
where the scheduler places the two processes) hits both sides alike and the
printed ratios are meaningful.  Every peer starts its own processes and
ends them before returning (raw peers: their process groups; Thespian: the
session its daemonized admin leads; Ray: every new descendant), killing
what does not exit.  Nothing binds anything but ipc:// sockets in a short private /tmp
directory, or loopback TCP (Ray, checked).

The peers:

* RawRoundTrip -- the floor for request/reply: bare pyzmq, DEALER in the
  calling process, ROUTER echo in a separate process over ipc://.  The caller
  encodes a ~50-byte msgspec-msgpack dict and decodes the reply inside the
  timed section, as alysd encodes and decodes its envelopes.
* RawOneWay -- the floor for one-way throughput: bare pyzmq DEALER -> ROUTER
  between two separate processes, one encoded message per frame, or `batch`
  encoded messages per frame; msgs/s are measured at the receiver.
* thespian_spawn -- Thespian actors (multiprocQueueBase: no sockets at all;
  multiprocTCPBase binds its admin and every actor on all interfaces, which
  this machine forbids), forked as Thespian does by default: time from
  createActor to each actor's first answer, and the actors' idle private
  memory (USS).
* ray_spawn -- the same for Ray actors, with a local Ray forced onto loopback.

Each spawn peer creates its actors one after another and waits for each
actor's first answer before creating the next, so per-actor latencies are
comparable between systems whose creation calls are blocking (Thespian) or
asynchronous (Ray).

`python -m bench.peers` (from the repo root) runs every peer with small
sizes and prints the results.
"""
from __future__ import annotations

import datetime
import logging
import os
import select
import signal
import statistics
import subprocess
import sys
import tempfile
import time

import msgspec
import psutil
import zmq

try:
    from thespian.actors import Actor as _ThespianActor
except ImportError:  # thespian_spawn() reports it
    _ThespianActor = object

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_ENCODE = msgspec.msgpack.Encoder().encode
_DECODE = msgspec.msgpack.Decoder().decode
_CHILD_CMD = "import sys, bench.peers as p; p._CHILDREN[sys.argv[1]](*sys.argv[2:])"
_LOOPBACK = ("127.0.0.1", "::1", "::ffff:127.0.0.1")


def payload(seq: int) -> dict:
    """The small message every raw peer sends: 48-52 bytes once encoded."""
    return {"to": "bench.echo", "kind": "ping", "seq": seq, "body": "0123456789ab"}


# ---------------------------------------------------------------- children
# Entry points of the raw peers' processes; each one exits by itself if the
# process that started it disappears, so a killed benchmark leaves no orphan.

def _recv_or_orphaned(sock: zmq.Socket, parent: int) -> list[bytes] | None:
    """Next multipart message, or None once the parent process is gone."""
    while True:
        try:
            return sock.recv_multipart()
        except zmq.Again:
            if os.getppid() != parent:
                return None


def _echo_child(addr: str) -> None:
    ctx = zmq.Context()
    sock = ctx.socket(zmq.ROUTER)
    sock.rcvtimeo = 1000
    sock.bind(addr)
    print("ready", flush=True)
    parent = os.getppid()
    while (frames := _recv_or_orphaned(sock, parent)) is not None:
        sock.send_multipart(frames)


def _sink_child(addr: str, n: str, curve_secret: str = "") -> None:
    """Receive `n` messages; print msgs/s over the frames after the first.
    Prints the endpoint it bound first (``tcp://...:*`` picks a port); with
    ``curve_secret`` (Z85) it is a CURVE server."""
    ctx = zmq.Context()
    sock = ctx.socket(zmq.ROUTER)
    sock.rcvtimeo = 1000
    if curve_secret:
        sock.curve_server = True
        sock.curve_secretkey = curve_secret.encode()
        sock.curve_publickey = zmq.curve_public(curve_secret.encode())
    sock.bind(addr)
    print(sock.last_endpoint.decode(), flush=True)
    parent, total, got, counted, first = os.getppid(), int(n), 0, 0, 0
    while got < total:
        frames = _recv_or_orphaned(sock, parent)
        if frames is None:
            return
        item = _DECODE(frames[1])
        now = time.perf_counter_ns()
        k = len(item) if isinstance(item, list) else 1
        if got:
            counted += k
        else:
            first = now
        got += k
    print(counted * 1e9 / (now - first), flush=True)
    # A ROUTER discards what it has queued from a peer that disconnects, so
    # the sender must not leave before this acknowledgement.
    sock.send_multipart([frames[0], b"done"])
    sock.close()
    ctx.term()


def _source_child(addr: str, n: str, batch: str, server_key: str = "") -> None:
    total, batch = int(n), int(batch)
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    if server_key:
        sock.curve_publickey, sock.curve_secretkey = zmq.curve_keypair()
        sock.curve_serverkey = server_key.encode()
    sock.connect(addr)
    if batch == 1:
        for i in range(total):
            sock.send(_ENCODE(payload(i)))
    else:
        for start in range(0, total, batch):
            sock.send(_ENCODE([payload(i) for i in range(start, min(start + batch, total))]))
    sock.rcvtimeo = 1000
    _recv_or_orphaned(sock, os.getppid())  # the receiver's "done"
    sock.close()
    ctx.term()


_CHILDREN = {"echo": _echo_child, "sink": _sink_child, "source": _source_child}


def _spawn_child(role: str, *args) -> subprocess.Popen:
    """A fresh interpreter (no fork) in its own process group."""
    return subprocess.Popen(
        [sys.executable, "-c", _CHILD_CMD, role, *map(str, args)],
        cwd=REPO_ROOT, stdout=subprocess.PIPE, bufsize=0, start_new_session=True)


def _read_line(proc: subprocess.Popen, timeout: float) -> str:
    """One line of the child's stdout (unbuffered pipe, so select is exact)."""
    if not select.select([proc.stdout], [], [], timeout)[0]:
        raise TimeoutError(f"child {proc.args[3]} said nothing in {timeout:.0f} s")
    line = proc.stdout.readline()
    if not line:
        raise RuntimeError(f"child {proc.args[3]} exited with {proc.wait()}")
    return line.decode().strip()


def _stop_child(proc: subprocess.Popen) -> None:
    if proc.poll() is None:  # not reaped yet, so the group id is still ours
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    proc.stdout.close()


def _short_tmpdir() -> tempfile.TemporaryDirectory:
    """ipc:// paths must stay under ~100 bytes, whatever $TMPDIR is."""
    return tempfile.TemporaryDirectory(prefix="peers-", dir="/tmp")


# ---------------------------------------------------------------- raw pyzmq

class RawRoundTrip:
    """Bare-pyzmq request/reply: the lower bound for an alysd round trip.

    `with RawRoundTrip() as rt:` starts an echo process (fresh interpreter,
    own process group) whose ROUTER is bound on ipc://<tmp>/raw.sock and sends
    every message back unchanged; this process connects a DEALER to it and
    warms the path up with 200 round trips.  Leaving the block kills the
    echo process group and removes the directory.
    """

    def __init__(self) -> None:
        self._tmp = self._proc = self._ctx = self._sock = None

    def __enter__(self) -> "RawRoundTrip":
        try:
            self._tmp = _short_tmpdir()
            addr = f"ipc://{self._tmp.name}/raw.sock"
            self._proc = _spawn_child("echo", addr)
            _read_line(self._proc, 30)
            self._ctx = zmq.Context()
            self._sock = self._ctx.socket(zmq.DEALER)
            self._sock.linger = 0
            self._sock.rcvtimeo = 5000
            self._sock.connect(addr)
            self.round(200)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc) -> None:
        if self._sock is not None:
            self._sock.close()
        if self._ctx is not None:
            self._ctx.term()
        if self._proc is not None:
            _stop_child(self._proc)
        if self._tmp is not None:
            self._tmp.cleanup()
        self._tmp = self._proc = self._ctx = self._sock = None

    def round(self, n: int) -> list[float]:
        """n sequential round trips; returns each one's duration in seconds.

        Timed per request, with time.perf_counter_ns: msgspec-encode
        payload(i) (the dict is built before the clock starts), send it,
        receive the echo, decode it.
        """
        sock, clock, out = self._sock, time.perf_counter_ns, []
        for i in range(n):
            msg = payload(i)
            t0 = clock()
            sock.send(_ENCODE(msg))
            _DECODE(sock.recv())
            out.append((clock() - t0) * 1e-9)
        return out


class RawOneWay:
    """Bare-pyzmq one-way throughput: the lower bound for alysd's `tell`.

    Each call starts a receiver process (ROUTER bound on ipc://, or with
    ``tcp=True`` on loopback TCP, and with ``curve=True`` a CURVE server) and
    a sender process (DEALER), both fresh interpreters in their own process
    groups, and kills both before returning.  The sender builds and msgspec-encodes
    every message (payload(i)); the receiver decodes every frame.  Rates
    are taken at the receiver with time.perf_counter_ns, from the first
    frame to the last (each stamped once decoded), counting the messages
    after the first frame, so process start-up and connection set-up are
    excluded.  The sender's default send high-water mark (1000 frames)
    paces it to the receiver.
    """

    def __init__(self, *, tcp: bool = False, curve: bool = False) -> None:
        self.tcp = tcp or curve
        self.curve = curve

    def run(self, n: int) -> float:
        """msgs/s for n messages, one message per frame."""
        return self._run(n, 1)

    def run_batched(self, n: int, batch: int = 64) -> float:
        """msgs/s (messages, not frames) for n messages sent as frames that
        each carry a msgspec-encoded list of `batch` messages."""
        return self._run(n, batch)

    def _run(self, n: int, batch: int) -> float:
        if n < 2 * batch:
            raise ValueError("need at least two frames to time")
        procs = []
        public, secret = zmq.curve_keypair() if self.curve else (b"", b"")
        with _short_tmpdir() as tmp:
            addr = "tcp://127.0.0.1:*" if self.tcp else f"ipc://{tmp}/oneway.sock"
            try:
                procs.append(_spawn_child("sink", addr, n, secret.decode()))
                addr = _read_line(procs[0], 30)
                procs.append(_spawn_child("source", addr, n, batch, public.decode()))
                rate = float(_read_line(procs[0], 30 + n / 20_000))
                procs[1].wait(30)
                return rate
            finally:
                for proc in procs:
                    _stop_child(proc)


# ---------------------------------------------------------------- spawn peers

def _descendants() -> list[psutil.Process]:
    return psutil.Process().children(recursive=True)


def _reap(procs: list[psutil.Process], timeout: float = 10.0) -> None:
    """Wait up to `timeout` for procs to exit, then SIGKILL the rest."""
    _, alive = psutil.wait_procs(procs, timeout=timeout)
    for proc in alive:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=5)


def _sid(pid: int) -> int | None:
    try:
        return os.getsid(pid)
    except OSError:
        return None


def _non_loopback_listeners(procs: list[psutil.Process]) -> list[str]:
    bad = []
    for proc in procs:
        try:
            conns = proc.net_connections(kind="inet")
        except psutil.NoSuchProcess:
            continue
        bad += [f"{proc.name()}:{c.laddr.ip}:{c.laddr.port}" for c in conns
                if c.status == psutil.CONN_LISTEN and c.laddr.ip not in _LOOPBACK]
    return bad


def _spawn_result(n: int, per_actor: list[float], total: float, pids: list[int]) -> dict:
    return {
        "per_actor_s": per_actor,
        "total_s": total,
        "per_actor_p50_s": statistics.median(per_actor),
        "idle_uss_bytes": statistics.median(
            psutil.Process(pid).memory_full_info().uss for pid in pids),
        "n": n,
    }


class _ThespianEcho(_ThespianActor):
    """Answers "ping" with its process id."""

    def receiveMessage(self, message, sender):
        if message == "ping":
            self.send(sender, os.getpid())


def thespian_spawn(n: int, start_method: str = "fork") -> dict:
    """Create n Thespian actors one at a time, each answering one message.

    System base: multiprocQueueBase (multiprocessing queues, no sockets).
    multiprocTCPBase is not used: it binds every actor on 0.0.0.0.
    `start_method` is multiprocessing's, for the Thespian admin and every
    actor.  "fork" (default) is Thespian's own default, so it measures
    Thespian as it is normally run: actors are forked from the admin, which
    is forked (then daemonized) from the calling process; this works next
    to a live pyzmq context because the forked processes never touch zmq.
    "spawn" makes every actor a fresh interpreter, which must import the
    caller's __main__ module and bench.peers (pyzmq, msgspec, psutil), so
    it costs more than Thespian alone (here +~50 ms and +~1.7 MB per actor
    against a module that imports only thespian).

    Measured, with time.perf_counter: for each actor, createActor plus a
    blocking ask("ping") answered with the actor's pid (per_actor_s);
    total_s runs from the first createActor to the n-th answer.  The
    ActorSystem itself (admin and logger processes) is started before the
    clock.  idle_uss_bytes: median psutil USS over the n actor processes
    right after the last answer (USS counts private pages only, so a forked
    actor's pages still shared with the admin are not in it).  Afterwards
    the system is shut down and
    every process it started is waited for, then killed if still there.
    """
    try:
        from thespian.actors import ActorSystem
    except ImportError as exc:
        return {"error": f"thespian is not installed: {exc}"}
    before = {proc.pid for proc in psutil.Process().children()}
    asys, pids = None, []
    try:
        asys = ActorSystem("multiprocQueueBase",
                           {"Process Startup Method": start_method},
                           transientUnique=True)
        per_actor = []
        start = time.perf_counter()
        for _ in range(n):
            t0 = time.perf_counter()
            pid = asys.ask(asys.createActor(_ThespianEcho), "ping",
                           datetime.timedelta(seconds=30))
            if pid is None:
                raise TimeoutError("an actor did not answer within 30 s")
            per_actor.append(time.perf_counter() - t0)
            pids.append(pid)
        total = time.perf_counter() - start
        return _spawn_result(n, per_actor, total, pids)
    except Exception as exc:
        return {"error": f"thespian multiprocQueueBase failed: {exc!r}"}
    finally:
        # The admin daemonizes (setsid, then fork), so it and the actors it
        # starts are not our descendants: they are the members of the session
        # led by our new child (the admin's first process), which is also
        # every actor's session.
        sids = {proc.pid for proc in psutil.Process().children() if proc.pid not in before}
        sids.update(_sid(pid) for pid in pids)
        sids -= {None, os.getsid(0)}
        ours = [proc for proc in psutil.process_iter() if _sid(proc.pid) in sids]
        try:
            if asys is not None:
                asys.shutdown()
        finally:
            _reap(ours)


def ray_spawn(n: int) -> dict:
    """Create n Ray actors one at a time, each answering one .remote() call.

    Starts a private local Ray: ray.init(num_cpus=2, include_dashboard=False,
    object_store_memory=200 MB, _temp_dir=<fresh /tmp dir>), with usage
    stats off and RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 so that Ray takes
    127.0.0.1 as the node address and binds only loopback (checked after
    init and after the actors: any other listener returns an error).
    Ray's own start-up (~4-5 s) is outside the clock.

    Measured, with time.perf_counter: for each actor, `Echo.remote()` plus
    `ray.get(actor.pid.remote())` (per_actor_s); total_s runs from the first
    creation to the n-th answer.  Ray starts the actor worker processes
    itself, and may hand the first actors to workers it prestarted at init.
    idle_uss_bytes: median psutil USS over the n actor worker processes
    right after the last answer.  Afterwards ray.shutdown(), then every
    process that Ray started (new descendants, or any process whose command
    line names the private temp dir) is waited for and killed if still there.
    """
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # node ip := 127.0.0.1
    try:
        import ray
    except ImportError as exc:
        return {"error": f"ray is not installed: {exc}"}
    before = {proc.pid for proc in _descendants()}
    tmp = tempfile.TemporaryDirectory(prefix="ray-", dir="/tmp")
    try:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
                 logging_level=logging.WARNING, object_store_memory=200 << 20,
                 _temp_dir=tmp.name)
        if bad := _non_loopback_listeners(_descendants()):
            return {"error": f"ray listens beyond loopback: {bad}"}

        @ray.remote
        class Echo:
            def pid(self) -> int:
                return os.getpid()

        per_actor, pids, actors = [], [], []
        start = time.perf_counter()
        for _ in range(n):
            t0 = time.perf_counter()
            actors.append(Echo.remote())
            pids.append(ray.get(actors[-1].pid.remote(), timeout=60))
            per_actor.append(time.perf_counter() - t0)
        total = time.perf_counter() - start
        if bad := _non_loopback_listeners(_descendants()):
            return {"error": f"ray listens beyond loopback: {bad}"}
        return _spawn_result(n, per_actor, total, pids)
    except Exception as exc:
        return {"error": f"ray failed: {exc!r}"}
    finally:
        ours = {proc.pid: proc for proc in _descendants() if proc.pid not in before}
        try:
            if ray.is_initialized():
                ray.shutdown()
        finally:
            for proc in psutil.process_iter(["cmdline"]):
                if tmp.name in " ".join(proc.info["cmdline"] or ()):
                    ours.setdefault(proc.pid, proc)
            _reap(list(ours.values()))
            tmp.cleanup()


# ---------------------------------------------------------------- self-check

def _main() -> None:
    def us(xs: list[float], q: float) -> float:
        return sorted(xs)[int(q * (len(xs) - 1))] * 1e6

    def timed(label: str, fn, *args):
        t0 = time.perf_counter()
        out = fn(*args)
        print(f"  [{label}: {time.perf_counter() - t0:.1f} s wall]", flush=True)
        return out

    def show_spawn(name: str, res: dict) -> None:
        if "error" in res:
            print(f"{name}: ERROR {res['error']}")
        else:
            print(f"{name} n={res['n']}: total {res['total_s']:.3f} s, per-actor "
                  f"p50 {res['per_actor_p50_s'] * 1e3:.1f} ms "
                  f"(min {min(res['per_actor_s']) * 1e3:.1f}, "
                  f"max {max(res['per_actor_s']) * 1e3:.1f}), "
                  f"idle USS p50 {res['idle_uss_bytes'] / 2**20:.1f} MiB")

    t0 = time.perf_counter()
    with RawRoundTrip() as rt:
        for r in range(5):
            xs = rt.round(2000)
            print(f"raw rtt round {r}: p50 {us(xs, .5):.1f} us, p99 {us(xs, .99):.1f} us, "
                  f"mean {statistics.fmean(xs) * 1e6:.1f} us")
    print(f"  [raw rtt: {time.perf_counter() - t0:.1f} s wall]")
    ow = RawOneWay()
    print(f"raw one-way 200k: {timed('one-way', ow.run, 200_000):,.0f} msgs/s")
    print(f"raw one-way batched 1M x64: "
          f"{timed('batched', ow.run_batched, 1_000_000, 64):,.0f} msgs/s")
    show_spawn("thespian(fork)", timed("thespian fork", thespian_spawn, 20))
    show_spawn("thespian(spawn)", timed("thespian spawn", thespian_spawn, 20, "spawn"))
    show_spawn("ray", timed("ray", ray_spawn, 20))


if __name__ == "__main__":
    _main()
