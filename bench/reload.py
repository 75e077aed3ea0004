"""Configuration reload: how fast, and how disruptive, alysd's ``reload`` is
against supervisord (``reread`` + ``update``) and circus (``reloadconfig``),
in one run.

    python -m bench.reload [--n 20] [--repeat 10] [--warmup 1] [--quick]
                           [--skip-supervisord] [--skip-circus] [--skip-cli]

Each system manages N processes, started once for the whole run:

* **alysd**: N-1 ``ConfigEcho`` actors and one ``LiveConfigEcho``
  (``bench.reload_actors``), each with a ``[actors.NAME.config]`` table holding
  a ``generation``.  ``ConfigEcho`` has no ``config_changed``, so a new table
  restarts it (its count of answers is carried across, ``preserve_state`` /
  ``restore_state``); ``LiveConfigEcho`` takes it in the same process.  The
  daemon runs on default settings.
* **supervisord** and **circus**: N copies of ``restart_peers.PING_PROGRAM``,
  one program / watcher each, whose command line ends in ``generation=G``
  (the program ignores it), on the defaults of ``restart_peers``.

The bench talks to every process directly, with a ZeroMQ DEALER on its unix
socket (``bench.restart.Probe``), and each answer names the pid (and for
alysd the config generation) that answered.  Each reload is triggered through
the system's own control interface, from a client in the bench process, so
that no interpreter start-up is in the figure: alysd's ``reload`` control
command (what ``alysctl reload`` sends); supervisord's XML-RPC calls as
``supervisorctl reread`` and then ``supervisorctl update`` make them
(``reloadConfig``; ``reloadConfig`` again, then ``stopProcessGroup``,
``removeProcessGroup``, ``addProcessGroup`` for each changed group); circus's
``reloadconfig`` with ``waiting``, so that it answers once applied, as the
other two do.  Measures, each ``--repeat`` times after ``--warmup`` untimed:

1. **restart one**: the generation of one process is bumped in the config
   file (alysd: a ``ConfigEcho``'s table; the peers: the program's command
   line), then the reload is triggered (``t0 = time.time()`` just before) in
   a thread while the bench asks the process again and again (as
   ``bench.restart`` does after a kill).  Figures: **serves**, until the first
   answer from a new pid running the new generation (for the peers the new
   pid's command line is checked afterwards); **returned**, until the
   reload command returned.  Then every other process is asked for its pid:
   **disturbed** counts the others whose pid changed.  The process changed
   goes round the N-1 in turn; the systems take turns, in a rotating order.
2. **live change** (alysd only; supervisord and circus restart a process to
   give it a new configuration): the ``LiveConfigEcho``'s generation is
   bumped.  Figures: until the reload returned, until the actor answered with
   the new generation, and the later of the two; its pid must not change.
3. **no-op reload**: the file unchanged.  Figure: the command's latency (for
   supervisord both steps, as in 1).  alysd must answer ``unchanged`` and
   supervisord's ``reread`` must report no change.  Also timed as an operator
   types it, a fresh ``python -m`` of each CLI (``alysd.ctl reload``;
   ``supervisorctl reread`` then ``update``; ``circusctl reloadconfig``),
   which is mostly interpreter start-up (``--skip-cli`` skips it).

Before each measurement every process of the system is asked for its pid
again, so a pid that changed between measurements is reported too.  Ratios
are alysd / peer: lower is better.  Every daemon and program the run starts is
stopped at the end, also on an error, Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
import xmlrpc.client
from collections.abc import Callable
from pathlib import Path

import psutil
import zmq

from alysd.ctl import ControlClient
from alysd.testing import REPO_ROOT, run_daemon
from bench import common, restart_peers
from bench.restart import Probe, alysd_codec, wait_answers
from bench.restart_peers import Circus, Supervisord

ACTOR_CLASS = "bench.reload_actors:ConfigEcho"
LIVE_CLASS = "bench.reload_actors:LiveConfigEcho"
LIVE = "live"
RELOAD_TIMEOUT_S = 60.0
PAUSE_S = 0.1            # between two measurements, so that one's aftermath is not in the next
LIVE_POLL_S = 0.0005     # how often a live-changed actor is asked for its config
Identity = tuple[int, int | None]     # (pid, config generation if the answer names it)


# --- the systems -------------------------------------------------------------------------

class System:
    """One process manager with N processes: how to change one, reload, and check."""

    label = "?"

    def __init__(self, names: list[str]):
        self.names = names
        self.generation = dict.fromkeys(names, 0)
        self.probes: dict[str, Probe] = {}
        self.known: dict[str, int] = {}       # name -> pid, as last observed
        self.between: list[str] = []          # names whose pid changed between measurements

    def write_config(self) -> None:
        raise NotImplementedError

    def reload(self) -> dict:
        """Trigger a reload of the file and return once the system says it is done."""
        raise NotImplementedError

    def check_noop(self, report: dict) -> None:
        """Raise unless ``report`` (of ``reload``) says that nothing changed; here
        nothing to check (circus's answer does not say)."""

    def check_restarted(self, name: str, report: dict, ident: Identity, generation: int) -> None:
        """Raise unless ``name`` was restarted for the change and runs ``generation``."""
        raise NotImplementedError

    def cli(self) -> list[tuple[list[str], str]]:
        """The command lines an operator runs for a reload, each with a text its
        output must contain when nothing changed."""
        raise NotImplementedError

    def mark(self, name: str) -> object:
        """What ``restart_details`` needs from before the reload (nothing here)."""
        return None

    def restart_details(self, name: str, mark: object, old_pid: int, report: dict,
                        t0: float) -> dict:
        """Figures of a restart beyond the common ones (none here)."""
        return {}

    def bump(self, name: str) -> int:
        self.generation[name] += 1
        self.write_config()
        return self.generation[name]

    def observe(self, changing: str | None = None) -> tuple[dict[str, Identity], list[str]]:
        """Every process's identity, from its own answer, and the names other than
        ``changing`` whose pid differs from the last observation."""
        probes = [self.probes[n] for n in self.names]
        for p in probes:
            p.drain()
        got = wait_answers(probes, [None] * len(probes))
        idents = {n: g[1] for n, g in zip(self.names, got)}
        moved = [n for n in self.names
                 if n != changing and n in self.known and idents[n][0] != self.known[n]]
        self.known = {n: i[0] for n, i in idents.items()}
        return idents, moved


class AlysdSystem(System):
    label = "alysd"

    def __init__(self, names: list[str], stack: contextlib.ExitStack, zctx: zmq.Context):
        super().__init__(names)
        self.bodies: dict[str, dict] = {}     # each actor's latest answer
        self.d = stack.enter_context(run_daemon(self.config_text()))
        for n in names:
            self.probes[n] = stack.enter_context(
                contextlib.closing(Probe(zctx, self.d.rundir.inbox(n), *self.codec(n))))

    def config_text(self) -> str:
        return common.config_toml(
            {"name": n, "class": LIVE_CLASS if n == LIVE else ACTOR_CLASS,
             "config": {"generation": g}} for n, g in self.generation.items())

    def codec(self, name: str) -> tuple[Callable[[int], bytes], Callable[[bytes], tuple]]:
        return alysd_codec(name, lambda body: (int(body["pid"]), int(body["generation"])),
                           seen=self.bodies)

    def write_config(self) -> None:
        # A new inode, as editors and config management write files.
        path = Path(self.d.config_path)
        fresh = path.with_name(path.name + ".new")
        fresh.write_text(self.config_text())
        os.replace(fresh, path)

    def reload(self) -> dict:
        # A client of its own: this runs in the trigger thread.
        return ControlClient(self.d.rundir).call("reload", {"dry_run": False},
                                                 timeout=RELOAD_TIMEOUT_S)

    def check_noop(self, report: dict) -> None:
        if report["outcome"] != "unchanged":
            raise RuntimeError(f"alysd: a reload of the unchanged file answered {report}")

    def check_restarted(self, name: str, report: dict, ident: Identity, generation: int) -> None:
        if report["restarted"] != {name: ["config"]} or report["updated_live"]:
            raise RuntimeError(f"alysd: expected {name} alone restarted for its config: {report}")
        if ident[1] != generation:
            raise RuntimeError(f"alysd: {name} answers generation {ident[1]}, not {generation}")

    def cli(self) -> list[tuple[list[str], str]]:
        return [([sys.executable, "-m", "alysd.ctl", "--runtime-dir", self.d.rundir.path, "reload"],
                 "no change")]

    def mark(self, name: str) -> int:
        """The count of answers of ``name``'s running incarnation, as last observed."""
        return self.bodies[name]["served"]

    def restart_details(self, name: str, mark: object, old_pid: int, report: dict,
                        t0: float) -> dict:
        """The daemon's own figure, whether the count was carried (a fresh
        incarnation would have answered only the observation after the reload),
        and the root's stamps from ``status``, from ``t0``."""
        row = self.d.status()[name]
        if row["last_exit"]["pid"] != old_pid:
            raise RuntimeError(f"alysd: {name}'s last exit is of pid {row['last_exit']['pid']}, "
                               f"not {old_pid}")
        return {"daemon_s": report["seconds"], "state_carried": self.bodies[name]["served"] > mark,
                "exit_seen_s": row["last_exit"]["at"] - t0,
                "spawned_s": row["spawned_at"] - t0, "ready_s": row["ready_at"] - t0}


def _ping_codec(probe_decode: Callable[[bytes], tuple[int, int, float]]):
    def decode(frame: bytes) -> tuple[int, Identity, float]:
        seq, pid, t = probe_decode(frame)
        return seq, (pid, None), t
    return decode


class _Fleet:
    """For a ``restart_peers`` daemon: one ping program per name, each on its own
    socket, its command line ending in its generation.  ``generation`` is the
    ``System``'s own dict, so that ``System.bump`` reaches the config."""

    generation: dict[str, int]
    workdir: str
    program: str

    def sock(self, name: str) -> str:
        return os.path.join(self.workdir, f"{name}.sock")

    def programs(self) -> dict[str, str]:
        return {n: f"{sys.executable} {self.program} {self.sock(n)} generation={g}"
                for n, g in self.generation.items()}


class SupervisordFleet(_Fleet, Supervisord):
    def __init__(self, generation: dict[str, int]):
        super().__init__()
        self.generation = generation


class CircusFleet(_Fleet, Circus):
    def __init__(self, generation: dict[str, int]):
        super().__init__()
        self.generation = generation


class PeerSystem(System):
    """supervisord or circus running one ping program per name."""

    def __init__(self, names: list[str], stack: contextlib.ExitStack, zctx: zmq.Context):
        super().__init__(names)
        self.daemon = self.make_daemon()
        stack.callback(self.daemon.close)
        self.daemon.start()
        self.label = self.daemon.label
        decode = _ping_codec(restart_peers.decode_ping)
        for n in names:
            self.probes[n] = stack.enter_context(contextlib.closing(
                Probe(zctx, self.daemon.sock(n), restart_peers.encode_ping, decode)))

    def make_daemon(self):
        raise NotImplementedError

    def write_config(self) -> None:
        self.daemon.write_config()

    def observe(self, changing: str | None = None):
        self.daemon.check_alive()
        idents, moved = super().observe(changing)
        self.daemon.seen_pids.update(i[0] for i in idents.values())   # for its cleanup
        return idents, moved

    def check_restarted(self, name: str, report: dict, ident: Identity, generation: int) -> None:
        cmdline = psutil.Process(ident[0]).cmdline()
        if cmdline[-2:] != [self.daemon.sock(name), f"generation={generation}"]:
            raise RuntimeError(f"{self.label}: pid {ident[0]} runs {cmdline}, "
                               f"not {name} at generation {generation}")


class SupervisordSystem(PeerSystem):
    def make_daemon(self):
        return SupervisordFleet(self.generation)

    def rpc(self):
        # Imported here, as circus below: a run that skips a peer does not need it.
        from supervisor.xmlrpc import SupervisorTransport
        url = f"unix://{self.daemon.workdir}/supervisor.sock"
        return xmlrpc.client.ServerProxy("http://127.0.0.1", SupervisorTransport(None, None, url))

    def reload(self) -> dict:
        server = self.rpc().supervisor
        t0 = time.time()
        reread = server.reloadConfig()[0]                         # supervisorctl reread
        reread_s = time.time() - t0
        added, changed, removed = server.reloadConfig()[0]        # supervisorctl update
        if added or removed:
            raise RuntimeError(f"supervisord: groups added {added}, removed {removed}")
        for group in changed:       # what update does with a changed group
            server.stopProcessGroup(group)
            server.removeProcessGroup(group)
            server.addProcessGroup(group)
        return {"reread": reread, "changed": changed, "reread_s": reread_s}

    def check_noop(self, report: dict) -> None:
        if any(report["reread"]):
            raise RuntimeError(f"supervisord: reread of the unchanged file reports {report['reread']}")

    def check_restarted(self, name: str, report: dict, ident: Identity, generation: int) -> None:
        if report["changed"] != [name]:
            raise RuntimeError(f"supervisord: update changed {report['changed']}, not [{name!r}]")
        super().check_restarted(name, report, ident, generation)

    def cli(self) -> list[tuple[list[str], str]]:
        conf = os.path.join(self.daemon.workdir, "supervisord.conf")
        ctl = [sys.executable, "-m", "supervisor.supervisorctl", "-c", conf]
        return [(ctl + ["reread"], "No config updates"), (ctl + ["update"], "")]


class CircusSystem(PeerSystem):
    def make_daemon(self):
        return CircusFleet(self.generation)

    def endpoint(self) -> str:
        return f"ipc://{self.daemon.workdir}/circus-ctl.sock"

    def reload(self) -> dict:
        from circus.client import CircusClient
        client = CircusClient(endpoint=self.endpoint(), timeout=RELOAD_TIMEOUT_S)
        try:
            answer = client.call({"command": "reloadconfig", "properties": {"waiting": True}})
        finally:
            client.stop()
        if answer.get("status") != "ok":
            raise RuntimeError(f"circus: reloadconfig answered {answer}")
        return answer

    def cli(self) -> list[tuple[list[str], str]]:
        return [([sys.executable, "-m", "circus.circusctl", "--endpoint", self.endpoint(),
                  "reloadconfig"], "ok")]


# --- the measurements --------------------------------------------------------------------

def until_new(probe: Probe, old: Identity) -> tuple[float, Identity, float]:
    """Ask ``probe``'s process, one request every ``LIVE_POLL_S``, until an
    answer comes from an identity other than ``old``.  For a process that is not
    restarted: ``wait_answers`` asks again only once its connection drops."""
    while True:
        answer = wait_answers([probe], [None])[0]
        if answer[1] != old:
            return answer
        time.sleep(LIVE_POLL_S)


def reload_while(system: System, name: str, old: Identity,
                 live: bool = False) -> tuple[dict, tuple[float, Identity, float], float, float]:
    """Trigger a reload in a thread while asking ``name`` until an answer comes
    from an identity other than ``old`` (``live``: a process that keeps its pid).
    Returns ``(report, first such answer, t0, time the reload returned)``; ``t0``
    is taken just before the trigger."""
    box: dict = {}

    def trigger() -> None:
        box["t0"] = time.time()
        try:
            box["report"] = system.reload()
        except BaseException as exc:      # handed to the main thread
            box["error"] = exc
        box["t1"] = time.time()

    thread = threading.Thread(target=trigger, name=f"reload-{system.label}", daemon=True)
    thread.start()
    probe = system.probes[name]
    try:
        answer = until_new(probe, old) if live else wait_answers([probe], [old])[0]
    except TimeoutError:
        # The reload's own failure says more, if it failed.  (Ctrl-C does not
        # wait for the thread: it is a daemon thread.)
        thread.join(RELOAD_TIMEOUT_S + 5)
        if "error" in box:
            raise box["error"] from None
        raise
    thread.join(RELOAD_TIMEOUT_S + 5)
    if "error" in box:
        raise box["error"]
    if thread.is_alive():
        raise TimeoutError(f"{system.label}: the reload did not return")
    return box["report"], answer, box["t0"], box["t1"]


def restart_one(system: System, name: str) -> dict:
    before, moved = system.observe()
    system.between += moved
    mark = system.mark(name)
    generation = system.bump(name)
    report, (received, ident, _), t0, t1 = reload_while(system, name, before[name])
    after, disturbed = system.observe(changing=name)
    if ident[0] == before[name][0] or after[name] != ident:
        raise RuntimeError(f"{system.label}: {name} answered from {ident} after the reload, "
                           f"{after[name]} then; it ran as {before[name]} before")
    system.check_restarted(name, report, ident, generation)
    return {"serves_s": received - t0, "returned_s": t1 - t0, "disturbed": disturbed,
            **system.restart_details(name, mark, before[name][0], report, t0)}


def live_change(system: AlysdSystem) -> dict:
    before, moved = system.observe()
    system.between += moved
    generation = system.bump(LIVE)
    report, (received, ident, _), t0, t1 = reload_while(system, LIVE, before[LIVE], live=True)
    if report["updated_live"] != {LIVE: ["config"]} or report["restarted"]:
        raise RuntimeError(f"alysd: expected {LIVE} updated live for its config: {report}")
    if ident[1] != generation:
        raise RuntimeError(f"alysd: {LIVE} answers generation {ident[1]}, not {generation}")
    _, disturbed = system.observe(changing=LIVE)
    after = system.known[LIVE]
    return {"returned_s": t1 - t0, "serves_s": received - t0, "done_s": max(t1, received) - t0,
            "daemon_s": report["seconds"],
            "same_pid": ident[0] == before[LIVE][0] == after,
            "disturbed": disturbed}


def noop(system: System) -> dict:
    t0 = time.time()
    report = system.reload()
    took = time.time() - t0
    system.check_noop(report)
    row = {"s": took}
    if isinstance(system, SupervisordSystem):
        row["reread_s"] = report["reread_s"]
    return row


def noop_cli(system: System, env: dict[str, str]) -> dict:
    t0 = time.time()
    for argv, expect in system.cli():
        done = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=REPO_ROOT,
                              timeout=RELOAD_TIMEOUT_S, check=False)
        if done.returncode != 0 or expect not in done.stdout:
            raise RuntimeError(f"{system.label}: {' '.join(argv[1:4])} ... exited "
                               f"{done.returncode}: {done.stdout}{done.stderr}")
    return {"s": time.time() - t0}


def rounds(systems: list[System], warmup: int, repeat: int, measure: Callable[[System, int], dict],
           label: str) -> dict[str, list[dict]]:
    """``warmup + repeat`` rounds; in each, every system once, in an order that
    rotates from round to round.  The first ``warmup`` rounds are not kept."""
    runs: dict[str, list[dict]] = {s.label: [] for s in systems}
    for k in range(warmup + repeat):
        shift = k % len(systems)
        for s in systems[shift:] + systems[:shift]:
            row = measure(s, k)
            if k >= warmup:
                runs[s.label].append(row)
            time.sleep(PAUSE_S)
    print(f"   {label}: done", flush=True)
    return runs


# --- report ------------------------------------------------------------------------------

def _stats(xs: list[float]) -> dict:
    return {"n": len(xs), "median_ms": round(statistics.median(xs) * 1e3, 3),
            "p90_ms": round(common.pct(xs, .9) * 1e3, 3),
            "min_ms": round(min(xs) * 1e3, 3), "max_ms": round(max(xs) * 1e3, 3)}


def _cell(f: dict | None) -> str:
    return "-" if f is None else f"{f['median_ms']:9.1f} / {f['p90_ms']:7.1f}"


def _exit_on_signal(signum, frame) -> None:
    raise SystemExit(128 + signum)


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.reload", description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=20, help="processes per system (at least 2)")
    ap.add_argument("--repeat", type=int, default=10, help="timed runs of each measure per system")
    ap.add_argument("--warmup", type=int, default=1, help="untimed runs of each measure first")
    ap.add_argument("--quick", action="store_true", help="smoke run: --n 5 --repeat 3")
    ap.add_argument("--skip-supervisord", action="store_true")
    ap.add_argument("--skip-circus", action="store_true")
    ap.add_argument("--skip-cli", action="store_true", help="skip the no-op reload through the CLIs")
    args = ap.parse_args()
    if args.quick:
        args.n, args.repeat = 5, 3
    if args.n < 2 or args.repeat < 1:
        ap.error("--n must be at least 2 and --repeat at least 1")
    # A SIGTERM (or SIGHUP) unwinds through the ExitStack below, which stops every
    # daemon and program this run started.
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _exit_on_signal)
    mach = common.header("configuration reload: alysd reload vs supervisord reread + update "
                         "vs circus reloadconfig")
    peers = [p for p, skip in (("supervisor", args.skip_supervisord), ("circus", args.skip_circus))
             if not skip]
    versions = {p: importlib.metadata.version(p) for p in peers}
    print(f"   N = {args.n} processes per system, {args.repeat} timed runs of each measure "
          f"(after {args.warmup} untimed); "
          + ", ".join(f"{p} {v}" for p, v in versions.items()), flush=True)
    names = [f"p{i:02d}" for i in range(args.n - 1)] + [LIVE]
    changed = names[:-1]        # the processes restarted in turn; LIVE is alysd's live one
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH")) if p)

    t_start = time.monotonic()
    zctx = zmq.Context(io_threads=1)
    try:
        with contextlib.ExitStack() as stack:
            systems: list[System] = [AlysdSystem(names, stack, zctx)]
            if not args.skip_supervisord:
                systems.append(SupervisordSystem(names, stack, zctx))
            if not args.skip_circus:
                systems.append(CircusSystem(names, stack, zctx))
            for s in systems:
                s.observe()                     # every process is up and answering
            alysd = systems[0]
            print(f"   {len(systems) * args.n} processes up after "
                  f"{time.monotonic() - t_start:.1f} s", flush=True)

            restart = rounds(systems, args.warmup, args.repeat,
                             lambda s, k: restart_one(s, changed[k % len(changed)]), "restart one")
            live = rounds([alysd], args.warmup, args.repeat, lambda s, k: live_change(s),
                          "live change")["alysd"]
            for s in systems:
                s.between += s.observe()[1]
            noop_api = rounds(systems, args.warmup, args.repeat, lambda s, k: noop(s), "no-op reload")
            noop_via_cli = None
            if not args.skip_cli:
                noop_via_cli = rounds(systems, args.warmup, args.repeat,
                                      lambda s, k: noop_cli(s, env), "no-op reload, CLI")
            noop_disturbed = {s.label: s.observe()[1] for s in systems}
            between = {s.label: s.between for s in systems}
            labels = [s.label for s in systems]
    finally:
        zctx.term()
    elapsed = time.monotonic() - t_start

    figs: dict[str, dict] = {}
    for label in labels:
        rs = restart[label]
        f = {"restart_serves": _stats([r["serves_s"] for r in rs]),
             "restart_returned": _stats([r["returned_s"] for r in rs]),
             "restart_disturbed": sum(len(r["disturbed"]) for r in rs),
             "restart_disturbed_names": sorted({n for r in rs for n in r["disturbed"]}),
             "noop": _stats([r["s"] for r in noop_api[label]]),
             "noop_disturbed": noop_disturbed[label],
             "between_disturbed": between[label]}
        if noop_via_cli is not None:
            f["noop_cli"] = _stats([r["s"] for r in noop_via_cli[label]])
        figs[label] = f
    a = figs["alysd"]
    for key in ("daemon", "exit_seen", "spawned", "ready"):
        a[f"restart_{key}"] = _stats([r[f"{key}_s"] for r in restart["alysd"]])
    a["restart_state_carried"] = sum(r["state_carried"] for r in restart["alysd"])
    a["live_returned"] = _stats([r["returned_s"] for r in live])
    a["live_serves"] = _stats([r["serves_s"] for r in live])
    a["live_done"] = _stats([r["done_s"] for r in live])
    a["live_daemon"] = _stats([r["daemon_s"] for r in live])
    a["live_pid_changed"] = sum(not r["same_pid"] for r in live)
    a["live_disturbed"] = sum(len(r["disturbed"]) for r in live)
    if "supervisord" in figs:
        figs["supervisord"]["noop_reread"] = _stats([r["reread_s"] for r in noop_api["supervisord"]])

    n_others = (args.n - 1) * args.repeat
    print()
    print("   median / p90, ms" + "".join(f"{lb:>22}" for lb in labels))

    def line(what: str, key: str) -> None:
        print(f"   {what:<40}" + "".join(f"{_cell(figs[lb].get(key)):>22}" for lb in labels))

    line("restart one: trigger -> serves again", "restart_serves")
    line("restart one: trigger -> command returned", "restart_returned")
    line("  alysd: old incarnation's exit seen", "restart_exit_seen")
    line("  alysd: Spawn sent", "restart_spawned")
    line("  alysd: new incarnation Ready", "restart_ready")
    line("  alysd's own figure (plan -> answer)", "restart_daemon")
    print(f"   {'restart one: others disturbed':<40}" + "".join(
        f"{str(figs[lb]['restart_disturbed']) + f' of {n_others}':>22}" for lb in labels))
    print(f"   {'  state carried across the restart':<40}"
          f"{str(a['restart_state_carried']) + f' of {args.repeat}':>22}")
    line("live change: reload returned", "live_returned")
    line("live change: new config served", "live_serves")
    line("live change: returned and served", "live_done")
    line("  alysd's own figure (plan -> answer)", "live_daemon")
    print(f"   {'live change: pid changed; others dist.':<40}"
          f"{str(a['live_pid_changed']) + '; ' + str(a['live_disturbed']):>22}"
          + "".join(f"{'no live change':>22}" for lb in labels[1:]))
    line("no-op reload (control API)", "noop")
    if "supervisord" in labels:
        line("  of which supervisord's reread", "noop_reread")
    if noop_via_cli is not None:
        line("no-op reload, CLI as typed", "noop_cli")
    print(f"   {'no-op reloads: processes disturbed':<40}"
          + "".join(f"{len(figs[lb]['noop_disturbed']):>22}" for lb in labels))
    print(f"   {'pids changed between measurements':<40}"
          + "".join(f"{len(figs[lb]['between_disturbed']):>22}" for lb in labels))
    for lb in labels:
        f = figs[lb]
        if f["restart_disturbed"] or f["noop_disturbed"] or f["between_disturbed"]:
            print(f"   {lb} disturbed: restart one {f['restart_disturbed_names']}, "
                  f"no-op {f['noop_disturbed']}, between {f['between_disturbed']}")

    # No ratio of "command returned": it means healthy for alysd, the new process
    # added for supervisord, spawned for circus.
    ratios: dict[str, dict] = {}
    measures = [("restart_serves", "restart one -> serves"), ("noop", "no-op (API)")]
    if noop_via_cli is not None:
        measures.append(("noop_cli", "no-op (CLI)"))
    print()
    if len(labels) > 1:
        print("   alysd / peer (lower is better), median (p90):")
    for lb in labels[1:]:
        ratios[lb] = {}
        cells = []
        for key, what in measures:
            r50 = a[key]["median_ms"] / figs[lb][key]["median_ms"]
            r90 = a[key]["p90_ms"] / figs[lb][key]["p90_ms"]
            ratios[lb][key] = {"median": round(r50, 4), "p90": round(r90, 4)}
            cells.append(f"{what} {r50:.3f} ({r90:.3f})")
        print(f"     vs {lb:<12} " + ";  ".join(cells))
    print("     live change: no peer equivalent (supervisord and circus restart the process "
          "to give it a new configuration)")
    out = {"bench": "reload", "n": args.n, "repeat": args.repeat, "warmup": args.warmup,
           "machine": mach, "versions": versions, "systems": figs, "ratios": ratios,
           "elapsed_s": round(elapsed, 1),
           "loadavg_end": [round(x, 2) for x in os.getloadavg()]}
    print(f"   ({elapsed:.0f} s; load average at the end {out['loadavg_end']})")
    common.result(out)


if __name__ == "__main__":
    main()
