"""The root supervisor: one loop that owns every actor's state.

Modelled on gunicorn's arbiter and OTP's supervisor: the ``Supervisor.run`` loop
is the only place that blocks, and each pass is a reconciliation::

    poll(control, system channel, zygote channel, signal wakeup, relays)
      → drain signals (handlers only wake the poller)
      → apply zygote events (Spawned / Exited: deaths arrive by event)
      → apply system messages (Hello / Ready / HealthReport / FilterHits)
      → run control commands (they register what they wait for, never block)
      → advance starts and stops, fire deadlines, answer finished commands
      → read resources that are due and act on limits; check heartbeats; probe
        health; advance a configuration reload; ping systemd's watchdog

Start is ordered and ready-gated: a child counts as started once its
``started()`` returned, and only then does the next one run ``started()``. To
keep that fast, up to ``FORK_AHEAD`` successors are forked early and wait for
their ``Go``. Stop is in reverse start order, SIGTERM to the actor's process
group, SIGKILL once its ``shutdown_timeout`` passes.

Restarts here follow each child's restart type with the restart intensity of
its supervisor; when a window overflows, the whole tree is stopped and alysd
exits non-zero so that systemd takes over.

Resource limits and liveness: an incarnation over a limit (``alysd.limits``)
or silent for three heartbeat intervals (``alysd.vitals``) is killed with SIGKILL, its
``last_exit.reason`` says why (``memory_limit``, ``cpu_limit``, ``hung``), and
its restart follows policy like any crash. The HTTP endpoint (``/metrics``,
``/health``) runs in its own thread but only ever sees snapshots this loop
builds when asked (``alysd.monitoring``). systemd hears READY once the whole
tree is up, STATUS on changes, WATCHDOG only from this loop, STOPPING.

A configuration reload (``alysctl reload``, SIGHUP, a watched file) is one
``ReloadRun`` at a time, advanced by this loop like everything else: the plan
comes from ``alysd.reload`` (pure), the new actor classes are imported by the
zygote, then the changes are applied and the affected actors watched until
they are healthy, or the previous config is applied again the same way.
"""

from __future__ import annotations

import enum
import glob
import logging
import os
import select
import signal
import socket
import time
from dataclasses import dataclass, field
from collections.abc import Iterable
from typing import Any, Callable

import msgspec
import zmq

import alysd
from alysd import health, outbox_journal, system_channel, zmq_bus
from alysd.actor_table import PROCESSING_BUCKETS, ActorTable, Counters
from alysd.actor_output import ActorOutput
from alysd.bus_control import BusControl, Recipient, deliver
from alysd.config import ActorSpec, Config, Restart, SupervisorSpec
from alysd.control import COMMANDS, CtlReply, request_decoder, request_encoder
from alysd.control_access import ZAP_DOMAIN, ZAP_ENDPOINT, ControlGate, busy_with
from alysd.errors import (ActorUnavailable, AlysdError, Busy, CommandError, ConfigError,
                          ConfigIssue, ProtocolError, UnknownActor)
from alysd.exits import LastExit, classify
from alysd.process import become_subreaper, raise_fd_limit, reap_exited, signal_group
from alysd.monitoring import ActorSnapshot, MonitoringServer, SnapshotExchange, SystemSnapshot
from alysd.poll import EventPoller
from alysd.protocol import (ActorBoot, CheckImports, Directory, Exited, FilterHits, Go,
                            HealthProbe, HealthReport, Hello, ImportsChecked, Inject, Preloaded,
                            PreserveOnStop, Ready, Reconfigure, Reconfigured, Spawn, Spawned,
                            SpawnFailed, Subscribe, Topology, system_encoder)
from alysd.reload import (SETTLED, WAITING, Awaited, Awaiting, Facts, ReloadPlan, Treatment,
                          describe, judge, plan_reload, summary, unsettled_reason)
from alysd.restart import Action, BreakerState, ChildTrack, RestartWindow, plan_group
from alysd.runtime_dir import DaemonLock, RuntimeDir
from alysd.sampler import Reading
from alysd.sd_notify import Notifier
from alysd.state_dir import dead_letter_path, prepare_state_dir
from alysd.zmq_bus import ErrorInfo, Kind
from alysd.versions import version_info
from alysd.vitals import Vital, Vitals
from alysd.zygote import start_zygote

log = logging.getLogger("alysd")

FORK_AHEAD = 4              # successors forked before their turn in an ordered start
PRELOAD_TIMEOUT = 120.0     # seconds the zygote may take to import every actor class
MAX_POLL_MS = 1000
ZYGOTE_EXIT_TIMEOUT = 2.0   # seconds the zygote gets to reap its spares at exit
FDS_PER_ACTOR = 7           # fds the root may hold per actor (channel, /proc files, relay, output)
CRASH_REPORT_LINES = 5      # lines of an ended incarnation's output its crash report quotes
FDS_BASE = 256
WATCH_INTERVAL = 1.0        # seconds between two looks at the config file (watch_config)


class State(str, enum.Enum):
    STARTING = "starting"
    RUNNING = "running"
    RESTARTING = "restarting"
    STOPPING = "stopping"
    STOPPED = "stopped"
    FAILED = "failed"


class ExitStatus(enum.IntEnum):
    """alysd's own exit codes."""

    OK = 0
    GAVE_UP = 1      # restart intensity exceeded at the root, or the zygote died
    CONFIG = 78      # EX_CONFIG: the configuration was refused


@dataclass
class Child:
    """Everything the root knows about one configured actor (one record, no parallel dicts)."""

    spec: ActorSpec
    state: State = State.STOPPED
    pid: int | None = None
    incarnation: int = 0
    restarts: int = 0
    held: bool = False                 # commanded stop: stays stopped until `start`
    restart_after_stop: bool = False   # a `restart` command is in progress
    spawn_pending: bool = False        # Spawn sent, the zygote has not answered yet
    go_sent: bool = False
    hello: bool = False
    spawned_at: float | None = None    # unix time of the current incarnation's fork
    ready_at: float | None = None      # unix time it became ready
    ready_mono: float | None = None
    last_exit: LastExit | None = None
    health: str = "unknown"
    health_reason: str | None = None
    counted: Counters = field(default_factory=Counters)   # of the incarnations that ended
    cpu_counted: float = 0.0           # CPU seconds of the incarnations that ended
    restarts_by: dict[str, int] = field(default_factory=dict)   # last_exit.reason -> restarts
    vital: Vital = field(default_factory=Vital)   # the current incarnation's limits, beat, probes
    conn: system_channel.Connection | None = None   # its system channel, once attached
    track: ChildTrack | None = None    # restart policy state (backoff, circuit breaker)
    reason: str | None = None          # why it is not running, for operators
    generation: int = 0                # the directory generation its incarnation was forked with
    restore_from: str | None = None    # a state blob its next incarnation restores (reload)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def shown_health(self) -> str:
        """Its health as reported: what it last said while running, else unknown."""
        return self.health if self.state == State.RUNNING else health.UNKNOWN

    @property
    def live(self) -> bool:
        """A process exists (or is being forked) for the current incarnation."""
        return self.pid is not None or self.spawn_pending



@dataclass
class SupervisorNode:
    """A supervisor of the tree: its strategy, restart intensity and children."""

    spec: SupervisorSpec
    window: RestartWindow
    children: list[str]               # actors and child supervisors, in start order


@dataclass(frozen=True)
class Answer:
    """Where the reply to one control request goes."""

    client: bytes
    request_id: int
    send: Callable[[bytes, int, bool, Any], None]

    def __call__(self, ok: bool, result: Any) -> None:
        self.send(self.client, self.request_id, ok, result)


@dataclass
class PendingCommand:
    """A control command that answers once its actors settle; until then they
    are busy with it (``what``: the command as typed, e.g. "restart a")."""

    names: list[str]
    want: State
    answer: Answer
    deadline: float
    what: str


@dataclass
class PendingSend:
    answer: Answer
    deadline: float
    actor: str


@dataclass
class ReloadRun:
    """One configuration reload in progress (at most one at a time)."""

    trigger: str                       # what asked for it: alysctl, SIGHUP, a file change
    answer: Answer | None
    old: Config                        # what a rollback returns to
    new: Config
    plan: ReloadPlan
    began: float                       # monotonic
    phase: str = "checking"            # checking imports -> applying -> (rolling_back)
    deadline: float = 0.0
    awaited: dict[str, Awaited] = field(default_factory=dict)
    preserved: dict[str, str] = field(default_factory=dict)   # actor -> its state blob
    restarted: dict[str, list[str]] = field(default_factory=dict)   # actor -> changed keys
    failure: str | None = None         # why the forward step failed, once it did


@dataclass
class _Relay:
    """The root's DEALER into one actor's inbox, for requests sent by alysctl."""

    sock: zmq.Socket
    pending: dict[int, PendingSend] = field(default_factory=dict)


class Supervisor:
    """Runs the configured tree until SIGTERM/SIGINT or until it gives up."""

    def __init__(self, config: Config, rundir: RuntimeDir, state_dir: str,
                 reload_config: Callable[[], Config] | None = None):
        self.config = config
        self.reload_config = reload_config
        self.rundir = rundir
        self.state_dir = state_dir
        self.children: dict[str, Child] = {
            name: Child(spec, track=ChildTrack(spec)) for name, spec in config.actors.items()}
        self.sups: dict[str, SupervisorNode] = {
            name: SupervisorNode(spec, RestartWindow(spec.max_retries, spec.within_time),
                                 [child for _, child in config.children(name)])
            for name, spec in config.supervisors.items()}
        self.delayed: dict[str, tuple[float, str]] = {}   # failed child -> (due, its supervisor)
        self.open_breakers: set[str] = set()
        self.by_pid: dict[int, Child] = {}
        # Ordered sets (dicts with None values): start order, O(1) membership and removal.
        self.start_queue: dict[str, None] = {}
        self.timers: dict[str, float] = {}   # actor -> its start or stop deadline (monotonic)
        self.stop_queue: list[str] = []
        self.commands: list[PendingCommand] = []
        self.relays: dict[str, _Relay] = {}
        self.ids = zmq_bus.MessageIds()
        self.booted = False
        self.tree_up_logged = False
        self.shutting_down = False
        self.exit_status = ExitStatus.OK
        self.started_mono = time.monotonic()
        self.bad_frames = 0
        self.denied = 0                        # refused system channel connections
        self.gate: ControlGate | None = None   # the control plane's access checks, from run()
        self.conns: dict[int, system_channel.Connection] = {}   # fd -> system connection
        self.conn_by_pid: dict[int, system_channel.Connection] = {}
        self.vitals: Vitals | None = None
        self.notifier: Notifier | None = None
        self.next_watchdog: float | None = None
        self.monitoring: MonitoringServer | None = None
        self.exchange: SnapshotExchange | None = None
        self.monitoring_error: str | None = None
        self.relay_of: dict[zmq.Socket, _Relay] = {}
        self.round_robin: dict[str, int] = {}
        self.bus: BusControl | None = None
        self.reloading: ReloadRun | None = None
        self.removed: set[str] = set()   # actors a reload removed, dropped once stopped
        self.directory = Directory.from_config(config)
        self.topologies: list[Topology] = []   # generation n is topologies[n - 1]
        self.reconfigure_seq = 0
        self.imports_asked = 0
        self.config_seen: tuple | None = None  # the config file's (inode, size, mtime) last loaded
        self.config_changing: tuple | None = None   # a new signature seen once: wait for it to settle
        self.next_config_look: float | None = None

    # --- setup -----------------------------------------------------------------

    def run(self) -> int:
        """Run until stopped; returns alysd's exit status."""
        # Before the zygote forks: systemd's variables must not reach any actor.
        self.notifier = Notifier.from_environment()
        # The root holds a few descriptors per actor (its system channel, the files
        # its resources are read from); a shell's default of 1024 is too few for
        # a large tree, and a reading that cannot open its file enforces nothing.
        wanted = FDS_PER_ACTOR * len(self.children) + FDS_BASE
        if (allowed := raise_fd_limit(wanted)) < wanted:
            log.warning("the open-file limit (%d) is below what %d actors need (%d): raise "
                        "LimitNOFILE or ulimit -n", allowed, len(self.children), wanted)
        try:
            self.gate = ControlGate.for_group(self.config.system.control_group, log)
        except ConfigError as exc:
            log.error("%s", exc)
            return int(ExitStatus.CONFIG)
        os.umask(0o077)
        self.rundir.prepare(group=self.gate.policy.group_gid)
        lock = DaemonLock(self.rundir)
        lock.acquire()
        state_dir = prepare_state_dir(self.state_dir)
        self.bus = BusControl(dead_letter_path(state_dir), self.config.system.dead_letter_capacity,
                              self.config.system.max_message_bytes, self._recipients)
        # Fork the zygote first: this process must not own a ZeroMQ context or
        # any thread when it forks.
        # Room for actors a reload adds: the table is mapped once, before any fork.
        self.table = ActorTable(list(self.children), spare=max(64, len(self.children)))
        self.zygote = start_zygote(self.config, self.rundir.path, self.table)
        self.vitals = Vitals(self.config, self.table)
        self.output = ActorOutput(self.config.logging.buffer_lines, self.config.logging.format,
                                  on_close=self._output_closed)
        try:
            self.vitals.adopt_kernel_caps([os.getpid(), self.zygote.pid])
            become_subreaper()
            self._install_signals()
            self.zctx = zmq.Context(io_threads=1)
            try:
                return self._run_loop()
            finally:
                if not self.shutting_down:
                    self.notifier.stopping()   # leaving without an orderly shutdown
                self.notifier.close()
                self.gate.close()
                self.output.close()
                self.vitals.close()
                if self.monitoring is not None:
                    self.monitoring.close()
                    self.exchange.close()
                self._stop_everything_now()
                self._collect_undelivered()
                self.bus.close()
                self.zctx.destroy(linger=zmq_bus.CLOSE_LINGER_MS)
        finally:
            spares = glob.glob(os.path.join(glob.escape(self.rundir.path), ".spare-*"))
            for path in (self.rundir.control, self.rundir.system,
                         *map(self.rundir.inbox, self.children), *spares):
                try:
                    os.unlink(path)
                except FileNotFoundError:
                    pass
            lock.release()

    def _collect_undelivered(self) -> None:
        """Every actor is gone: dead-letter what their outbox journals still hold."""
        for name in self.children:
            self._dead_letter_outbox(name)

    def _dead_letter_outbox(self, name: str) -> None:
        """``name`` has no incarnation left to send what its outbox journal
        holds: dead-letter it, and remove the journal."""
        path = self.rundir.outbox(name)
        try:
            self.bus.undelivered(name, outbox_journal.recover(path))
        except AlysdError as exc:
            log.error("could not dead-letter the undelivered messages of %s: %s", name, exc)
        outbox_journal.remove(path)

    def _install_signals(self) -> None:
        self.wake_r, wake_w = socket.socketpair()
        self.wake_r.setblocking(False)
        wake_w.setblocking(False)
        self._wake_w = wake_w
        signal.set_wakeup_fd(wake_w.fileno(), warn_on_full_buffer=False)
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD, signal.SIGHUP):
            # The handler does nothing: the wakeup fd carries the signal number to the loop.
            signal.signal(sig, _enqueue_only)

    def _run_loop(self) -> int:
        # The ZAP handler is bound before the control socket, so that no
        # connection is ever accepted unchecked; it is answered by this loop. A
        # ROUTER (libzmq asks with a REQ), so an answer may wait for a group
        # lookup while other handshakes are answered.
        self.zap = self.zctx.socket(zmq.ROUTER)
        self.zap.setsockopt(zmq.LINGER, 0)
        self.zap.bind(ZAP_ENDPOINT)
        self.control = zmq_bus.bind_router(
            self.zctx, self.rundir.control,
            max_message_bytes=self.config.system.max_message_bytes + zmq_bus.OVERSIZE_SLACK,
            zap_domain=ZAP_DOMAIN)
        if self.gate.policy.group_gid is not None:
            self.rundir.share_control(self.gate.policy.group_gid)
        self.listener = system_channel.listen(self.rundir.system)
        self.poller = EventPoller()
        for fd in (self.wake_r.fileno(), self.zygote.fileno(), self.listener.fileno(),
                   self.gate.lookups.fileno()):
            self.poller.add_fd(fd)
        self.poller.add_zmq(self.control)
        self.poller.add_zmq(self.zap)
        self._start_monitoring()
        if self.notifier.watchdog_interval is not None:
            self.next_watchdog = time.monotonic()
        if self.config.system.watch_config and self.config.source:
            self._watch_config_file()
        self.boot_deadline = time.monotonic() + PRELOAD_TIMEOUT
        log.info("alysd %s starting: %d actors, runtime dir %s, config %s", alysd.__version__,
                 len(self.children), self.rundir.path, self.config.source or "<built-in>")
        while True:
            fds, sockets = self.poller.poll(self._poll_timeout_ms() / 1000)
            if self.wake_r.fileno() in fds:
                self._drain_signals()
            if self.zygote.fileno() in fds:
                self._zygote_events()
            if self.gate.lookups.fileno() in fds:
                self._zap_looked_up()
            if self.listener.fileno() in fds:
                self._accept_system_connections()
            for fd in fds:
                conn = self.conns.get(fd)
                if conn is not None:
                    self._system_messages(conn)
                elif fd in self.output.pipes:
                    self.output.read(fd)
            if self.exchange is not None and self.exchange.fileno() in fds:
                self.exchange.serve(self._snapshot)
            for sock in sockets:
                if sock is self.control:
                    self._control_requests()
                elif sock is self.zap:
                    self._zap_requests()
                else:
                    self._relay_replies(self.relay_of[sock])
            self._reconcile()
            if self.shutting_down and not self.stop_queue and not any(
                    c.live for c in self.children.values()):
                log.info("all actors stopped; alysd exits with status %d", self.exit_status)
                return int(self.exit_status)

    def _poll_timeout_ms(self) -> int:
        now = time.monotonic()
        deadlines = list(self.timers.values())
        deadlines += [due for due, _ in self.delayed.values()]
        deadlines += [d for name in self.open_breakers
                      if (d := self.children[name].track.breaker_deadline()) is not None]
        deadlines += self.vitals.deadlines(watching=self.booted and not self.shutting_down)
        if self.next_watchdog is not None:
            deadlines.append(self.next_watchdog)
        deadlines += [p.deadline for p in self.commands]
        deadlines += [s.deadline for r in self.relays.values() for s in r.pending.values()]
        if not self.booted:
            deadlines.append(self.boot_deadline)
        if self.reloading is not None and self.reloading.phase != "checking":
            deadlines.append(self.reloading.deadline)
        if self.next_config_look is not None:
            deadlines.append(self.next_config_look)
        if not deadlines:
            return MAX_POLL_MS
        return max(0, min(MAX_POLL_MS, int((min(deadlines) - now) * 1000) + 1))

    # --- signals ---------------------------------------------------------------

    def _drain_signals(self) -> None:
        try:
            data = self.wake_r.recv(4096)
        except BlockingIOError:
            return
        for signum in data:
            if signum in (signal.SIGTERM, signal.SIGINT):
                if not self.shutting_down:
                    log.info("received %s: stopping every actor in reverse start order",
                             signal.Signals(signum).name)
                self.begin_shutdown(ExitStatus.OK)
            elif signum == signal.SIGCHLD:
                self._reap_own_children()
            elif signum == signal.SIGHUP:
                self._begin_reload("SIGHUP", None)

    def _reap_own_children(self) -> None:
        """Reap the zygote and adopted orphans (we are a subreaper)."""
        for pid, status in reap_exited():
            if pid == self.zygote.pid:
                self._zygote_died(status)

    def _zygote_died(self, status: int) -> None:
        exit = classify(status, pid=self.zygote.pid)
        for child in self.children.values():
            if child.live:
                self._forget_incarnation(child, LastExit(reason="zygote_died", pid=child.pid,
                                                         at=time.time()))
        if not self.shutting_down:
            log.critical("the zygote (fork server) died (%s); every actor died with it. "
                         "alysd gives up so that its service manager restarts it", exit)
            self.begin_shutdown(ExitStatus.GAVE_UP)

    # --- zygote channel -------------------------------------------------------------

    def _zygote_events(self) -> None:
        for msg, fds in self.zygote.receive():
            if msg is None:
                self.poller.remove_fd(self.zygote.fileno())
                return
            if isinstance(msg, Spawned):
                self._spawned(msg, fds)
                continue
            for fd in fds:
                os.close(fd)   # only Spawned carries one
            if isinstance(msg, Preloaded):
                self._preloaded(msg)
            elif isinstance(msg, ImportsChecked):
                self._imports_checked(msg)
            elif isinstance(msg, SpawnFailed):
                child = self.children.get(msg.name)
                if child is not None and child.incarnation == msg.incarnation:
                    self._incarnation_ended(child, LastExit(reason="spawn_failed", at=time.time()))
                    log.error("actor %s: %s", msg.name, msg.error)
            elif isinstance(msg, Exited):
                # Its last words first: the crash report quotes them.
                self.output.drain(msg.pid)
                child = self.by_pid.get(msg.pid)
                if child is not None:
                    # A kill of ours for a breach says why; the status only says SIGKILL.
                    why = self.vitals.exit_reason(child.name, child.vital)
                    self._incarnation_ended(child, classify(msg.status, pid=msg.pid,
                                                            at=time.time(), reason=why))

    def _output_closed(self, fd: int) -> None:
        self.poller.remove_fd(fd)

    def _preloaded(self, msg: Preloaded) -> None:
        self.booted = True
        if msg.issues:
            for path, text in msg.issues:
                log.error("invalid configuration: %s: %s", path, text)
            self.begin_shutdown(ExitStatus.CONFIG)
            return
        self.start_queue.update(dict.fromkeys(self.children))
        for child in self.children.values():
            child.state = State.STARTING

    def _spawned(self, msg: Spawned, fds: list[int]) -> None:
        child = self.children.get(msg.name)
        for fd in fds[1:]:
            os.close(fd)
        if fds:
            self.output.attach(fds[0], msg.name, msg.pid, msg.incarnation)
            self.poller.add_fd(fds[0])
        if child is None or child.incarnation != msg.incarnation:
            return
        child.spawn_pending = False
        child.pid = msg.pid
        self.by_pid[msg.pid] = child
        conn = self.conn_by_pid.get(msg.pid)
        if conn is not None:
            self._attach(child, conn)
        child.vital = self.vitals.spawned(child.name, msg.pid)
        if child.state == State.STOPPING:
            self._signal_stop(child)  # the stop was asked for while it was being forked

    def _spawn(self, child: Child, *, wait_for_go: bool) -> None:
        child.incarnation += 1
        child.hello = child.go_sent = False
        child.pid = None
        child.spawn_pending = True
        self.table.set_running(child.name, child.incarnation)
        child.spawned_at = time.time()
        child.ready_at = child.ready_mono = None
        child.health, child.health_reason = "unknown", None
        child.vital = Vital()
        self._set_deadline(child, time.monotonic() + child.spec.start_timeout)
        self.zygote.send(Spawn(ActorBoot(
            spec=child.spec,
            incarnation=child.incarnation,
            runtime_dir=self.rundir.path,
            heartbeat_interval=self.config.system.heartbeat_interval,
            max_message_bytes=self.config.system.max_message_bytes,
            dead_letters=self.bus.dead_letter_path,
            dead_letter_capacity=self.config.system.dead_letter_capacity,
            delivery_timeout=self.config.system.delivery_timeout,
            wait_for_go=wait_for_go,
            restore_from=child.restore_from,
        )))
        child.generation = self.generation

    # --- system channel ------------------------------------------------------------

    def _accept_system_connections(self) -> None:
        for conn in system_channel.accept_all(self.listener):
            if conn.uid not in (os.geteuid(), 0):
                self.denied += 1
                log.warning("refused a system connection from pid %d uid %d", conn.pid, conn.uid)
                conn.close()
                continue
            self.conns[conn.fileno()] = conn
            self.conn_by_pid[conn.pid] = conn
            self.poller.add_fd(conn.fileno())
            child = self.by_pid.get(conn.pid)
            if child is not None:
                self._attach(child, conn)

    def _attach(self, child: Child, conn: system_channel.Connection) -> None:
        """Bind a connection to the incarnation whose pid the kernel vouched for."""
        child.conn = conn
        for msg in conn.early:
            self._apply_system_message(child, msg)
        conn.early.clear()

    def _system_messages(self, conn: system_channel.Connection) -> None:
        try:
            messages = conn.receive()
        except ProtocolError as exc:
            self._bad_frame(f"system channel (pid {conn.pid})", exc)
            messages = []
        for msg in messages:
            if msg is None:
                self._close_conn(conn)
                return
            child = self.by_pid.get(conn.pid)
            if child is None:
                conn.early.append(msg)  # the zygote's Spawned for this pid is still on its way
            else:
                self._apply_system_message(child, msg)

    def _apply_system_message(self, child: Child, msg) -> None:
        if isinstance(msg, Subscribe):
            if child.pid is not None:
                self.bus.subscribe(self._recipient(child), msg.event_type)
            return
        if msg.incarnation != child.incarnation:
            return  # a message from an incarnation we no longer track
        Vitals.heard(child.vital, time.monotonic())
        if isinstance(msg, Hello):
            child.hello = True
            self.bus.greet(self._recipient(child))
            if child.generation < self.generation:
                # Forked before the zygote heard of the latest reload's directory.
                deliver(self._recipient(child), self.topologies[child.generation:])
        elif isinstance(msg, Reconfigured):
            self._reconfigured(child, msg)
        elif isinstance(msg, Ready):
            child.health, child.health_reason = msg.health, msg.health_reason
            self._ready(child)
        elif isinstance(msg, HealthReport):
            Vitals.answered(child.vital, msg.probe)
            child.health, child.health_reason = msg.health, msg.health_reason
            if msg.health == health.HEALTHY and child.state == State.RUNNING:
                child.track.on_healthy(time.monotonic())
        elif isinstance(msg, FilterHits):
            self.bus.heard(child.name, msg.hits)

    def _recipient(self, child: Child) -> Recipient:
        return Recipient(child.name, child.spec.pool, child.conn.send, child.pid)

    def _recipients(self) -> list[Recipient]:
        """Every incarnation the root can talk to now."""
        return [self._recipient(c) for c in self.children.values()
                if c.conn is not None and c.pid is not None]

    def _close_conn(self, conn: system_channel.Connection) -> None:
        self.poller.remove_fd(conn.fileno())
        self.conns.pop(conn.fileno(), None)
        if self.conn_by_pid.get(conn.pid) is conn:
            del self.conn_by_pid[conn.pid]
        child = self.by_pid.get(conn.pid)
        if child is not None and child.conn is conn:
            child.conn = None
        conn.close()

    def _bad_frame(self, where: str, exc: Exception) -> None:
        self.bad_frames += 1
        log.warning("rejected a malformed frame on the %s: %s", where, exc)

    def _ready(self, child: Child) -> None:
        if child.state not in (State.STARTING, State.RESTARTING):
            return
        child.state = State.RUNNING
        self._set_deadline(child, None)
        child.ready_at = time.time()
        child.ready_mono = time.monotonic()
        Vitals.heard(child.vital, child.ready_mono)
        child.reason = None
        child.track.on_ready(child.ready_mono)
        self.start_queue.pop(child.name, None)
        log.info("actor %s ready (pid %d, incarnation %d)", child.name, child.pid or 0,
                 child.incarnation)

    # --- lifecycle decisions ---------------------------------------------------------

    def _incarnation_ended(self, child: Child, exit: LastExit) -> None:
        was = child.state
        doing = self.table.activity(child.name)
        breach = child.vital.breach
        if doing and breach and breach.message_id == doing.message_id:
            crashes = self.table.condemn(child.name, doing.message_id)
        else:
            crashes = self.table.record_crash(child.name, doing.message_id) if doing else 0
        self._forget_incarnation(child, exit)
        self._fail_relayed_requests(child, exit)
        self.bus.incarnation_ended(child.name)
        if was == State.STOPPING or self.shutting_down or child.held:
            # An exit we asked for: a stop, or the stop half of a restart.
            if child.restart_after_stop and not self.shutting_down:
                child.restart_after_stop = False
                child.state = State.RESTARTING
                self.start_queue.setdefault(child.name, None)
            else:
                child.state = State.STOPPED
            return
        failed_start = child.name in self.start_queue
        self.start_queue.pop(child.name, None)
        verdict = child.track.on_exit(exit, time.monotonic())
        if verdict.action is Action.RESTART:
            child.restarts += 1
            child.restarts_by[exit.reason] = child.restarts_by.get(exit.reason, 0) + 1
            child.state = State.RESTARTING
            decision = self._child_failed(child.spec.supervisor, child.name, verdict.delay,
                                          failed_start)
        else:
            child.state = State.FAILED if verdict.action is Action.FAIL else State.STOPPED
            child.reason = verdict.reason
            self.delayed.pop(child.name, None)
            if child.track.breaker is BreakerState.OPEN:
                self.open_breakers.add(child.name)
            decision = f"left {child.state.value}: {verdict.reason}"
        handling = (f"handling {Kind(doing.kind).name.lower()} {doing.message_id} from "
                    f"{doing.sender} for {time.time() - doing.since:.3f}s (crash {crashes} in a "
                    f"row on that message)" if doing else "idle")
        last = [entry.line for entry in self.output.tail(child.name, CRASH_REPORT_LINES)
                if entry.pid == exit.pid]
        words = " | ".join(last) if last else "none"
        log.error("crash report: actor %s (supervisor %s) pid %s incarnation %d exited: %s; "
                  "it was %s; decision: %s; its last output: %s", child.name,
                  child.spec.supervisor, exit.pid, child.incarnation, _describe(exit), handling,
                  decision, words,
                  extra={"event": "crash_report",
                         "message_id": doing.message_id if doing else None})

    def _supervisors_under(self, sup: str) -> list[str]:
        """``sup`` and every supervisor below it."""
        found = [sup]
        for kind, name in self.config.children(sup):
            if kind == "supervisor":
                found += self._supervisors_under(name)
        return found

    def _actors_of(self, name: str) -> list[str]:
        """The actors a tree node stands for: itself, or every actor under a supervisor."""
        return [name] if name in self.children else self.config.actors_under(name)

    def _child_failed(self, sup: str, failed: str, delay: float, failed_start: bool = False) -> str:
        """A child of ``sup`` (actor or supervisor) failed and its policy wants a restart:
        count it against ``sup``'s intensity, then restart per ``sup``'s strategy,
        now or after ``delay``. Returns the decision, for the crash report."""
        node = self.sups[sup]
        if not node.window.record(time.monotonic()):
            return self._escalate(sup, f"{node.spec.max_retries} restarts in "
                                       f"{node.spec.within_time:g}s exceeded")
        if delay > 0:
            self.delayed[failed] = (time.monotonic() + delay, sup)
            for name in self._actors_of(failed):
                self.children[name].reason = f"restart after a {delay * 1000:.0f} ms backoff"
            return f"restart in {delay * 1000:.0f} ms"
        self._restart_group(sup, failed, front=failed_start)
        return ("restart now" if node.spec.strategy.value == "one_for_one"
                else f"restart now with its siblings ({node.spec.strategy.value} under {sup})")

    def _restart_group(self, sup: str, failed: str, front: bool = True) -> None:
        """Stop the group ``sup``'s strategy names (reverse start order, one at a time),
        then start it again in start order, each child gated on its predecessor."""
        _, group = plan_group(self.sups[sup].spec.strategy, self.sups[sup].children, failed)
        actors = [name for node in group for name in self._actors_of(node)]
        for node in group:
            if node in self.sups:
                for name in self._supervisors_under(node):
                    self.sups[name].window.clear()  # a restarted supervisor starts afresh
        for name in actors:
            self.delayed.pop(name, None)
        failed_actors = set(self._actors_of(failed))
        restart, stop_only = [], []
        for name in actors:
            child = self.children[name]
            if child.held:
                continue  # an operator stopped it: nothing but `alysctl start` revives it
            if name in failed_actors:
                restart.append(name)
            elif child.state in (State.STOPPED, State.FAILED):
                continue  # left stopped by its own policy: a sibling's failure does not revive it
            elif child.spec.restart is Restart.TEMPORARY:
                stop_only.append(name)  # OTP: a temporary child is never restarted
            else:
                restart.append(name)
        for name in reversed(stop_only):
            child = self.children[name]
            child.reason = "temporary: stopped with its group, not restarted"
            if child.live:
                self._queue_stop(name)
        self._restart_group_of(restart, front=front)

    def _escalate(self, sup: str, why: str) -> str:
        """``sup`` gives up: its actors stop, and its parent handles it as a failed child."""
        parent = self.sups[sup].spec.parent
        if parent is None:
            log.critical("the root supervisor %s gave up (%s): stopping the tree; alysd exits %d",
                         sup, why, ExitStatus.GAVE_UP)
            self.begin_shutdown(ExitStatus.GAVE_UP)
            return f"{sup} gave up ({why}); alysd stops"
        log.error("supervisor %s gave up (%s): its actors stop and %s handles it", sup, why, parent)
        return f"{sup} gave up ({why}); {parent}: " + self._child_failed(parent, sup, 0.0)

    def _forget_incarnation(self, child: Child, exit: LastExit) -> None:
        if child.pid is not None:
            # Nothing of an incarnation outlives its leader: sweep its process group.
            signal_group(child.pid, signal.SIGKILL)
            self.by_pid.pop(child.pid, None)
        if child.conn is not None:
            self._close_conn(child.conn)
            child.conn = None
        child.pid = None
        child.spawn_pending = False
        child.cpu_counted += self.vitals.ended(child.name)
        child.counted += self.table.counters(child.name)
        self._set_deadline(child, None)
        child.last_exit = exit
        child.ready_mono = None
        self.table.set_exited(child.name, child.incarnation)

    def _set_deadline(self, child: Child, deadline: float | None) -> None:
        if deadline is None:
            self.timers.pop(child.name, None)
        else:
            self.timers[child.name] = deadline

    def _terminate(self, child: Child) -> None:
        """Begin an orderly stop of ``child``'s current incarnation (idempotent)."""
        if child.state == State.STOPPING:
            return
        child.state = State.STOPPING
        self._set_deadline(child, None)
        if child.pid is not None:
            self._signal_stop(child)
        # else: the zygote is still forking it; _spawned() sends the signal.

    def _signal_stop(self, child: Child) -> None:
        timeout = child.spec.shutdown_timeout
        if timeout is None:
            signal_group(child.pid, signal.SIGKILL)
            self._set_deadline(child, None)
        else:
            signal_group(child.pid, signal.SIGTERM)
            self._set_deadline(child, time.monotonic() + timeout)

    def _queue_stop(self, name: str) -> None:
        """Stop ``name`` after the stops already queued (stops run one at a time)."""
        if name not in self.stop_queue:
            self.stop_queue.append(name)

    def begin_shutdown(self, status: ExitStatus) -> None:
        """Stop every actor in reverse start order, then leave the loop with ``status``."""
        if status != ExitStatus.OK and self.exit_status == ExitStatus.OK:
            self.exit_status = status
        if self.shutting_down:
            return
        self.shutting_down = True
        self.notifier.stopping()
        if self.reloading is not None:
            self._end_reload(False, "alysd is shutting down")
        self.start_queue.clear()
        self.delayed.clear()
        self.stop_queue = [name for name in reversed(self.children)]

    # --- reconciliation ----------------------------------------------------------------

    def _reconcile(self) -> None:
        now = time.monotonic()
        if not self.booted and now >= self.boot_deadline:
            log.critical("the zygote did not finish importing actor classes within %gs",
                         PRELOAD_TIMEOUT)
            self.booted = True
            self.begin_shutdown(ExitStatus.GAVE_UP)
        self._advance_stops()
        if self.removed:
            self._drop_removed()
        if not self.shutting_down:
            self._release_delayed(now)
            self._advance_start()
        self._fire_deadlines(now)
        self._finish_commands(now)
        self._expire_sends(now)
        self._watch_vitals(now)
        if self.reloading is not None:
            self._advance_reload(now)
        if self.next_config_look is not None and now >= self.next_config_look:
            self._look_at_config_file(now)
        if not self.tree_up_logged and self.booted and not self.shutting_down and not self.start_queue:
            self.tree_up_logged = True
            log.info("all %d actors running (%.0f ms after start)", len(self.children),
                     (now - self.started_mono) * 1000)
            self.notifier.ready(self._status_line())
        elif self.tree_up_logged and not self.shutting_down and self.notifier.enabled:
            self.notifier.status(self._status_line())
        if self.next_watchdog is not None and now >= self.next_watchdog:
            # Only this loop pings: a wedged loop stops the pings and systemd steps in.
            self.notifier.watchdog()
            self.next_watchdog = now + self.notifier.watchdog_interval

    def _status_line(self) -> str:
        running = sum(c.state == State.RUNNING for c in self.children.values())
        restarting = sum(c.state in (State.RESTARTING, State.STARTING)
                         for c in self.children.values())
        return f"{running} actors running, {restarting} restarting"

    # --- limits, liveness, health ---------------------------------------------------------

    def _watch_vitals(self, now: float) -> None:
        """Kill what breached a limit or went silent; probe health; mark the
        actors that did not answer their last probe."""
        watching = self.booted and not self.shutting_down
        if not self.vitals.due(now, watching):
            return

        def running() -> list[Child]:
            # asked for only when heartbeats or probes are due, not per reading
            return [c for c in self.children.values()
                    if c.state == State.RUNNING and c.pid is not None] if watching else []
        for child, breach in self.vitals.breaches(now, self.children, running):
            log.error("actor %s (pid %d, incarnation %d) %s: %s; killing it", child.name,
                      child.pid, child.incarnation, breach.reason.replace("_", " "),
                      breach.detail)
            signal_group(child.pid, signal.SIGKILL)
        if not watching:
            return
        ask, silent = self.vitals.probes(
            now, lambda: [c for c in running() if c.conn is not None])
        for child in ask:
            deliver(self._recipient(child), [HealthProbe(child.vital.probe)])
        for child in silent:
            child.health, child.health_reason = health.UNHEALTHY, health.NO_ANSWER

    def _advance_start(self) -> None:
        """Fork up to ``FORK_AHEAD`` queued children ahead; give the head its Go.

        A child whose previous incarnation is still stopping holds its place (and
        the Go of everyone behind it) but not the forking of those behind it, so a
        group restart's starts overlap its stops.
        """
        ahead = 0
        for i, name in enumerate(self.start_queue):
            if ahead >= FORK_AHEAD:
                return
            child = self.children[name]
            if child.state == State.STOPPING:
                continue
            ahead += 1
            if not child.live:
                # The head runs started() at once; the ones behind it wait for Go.
                self._spawn(child, wait_for_go=i > 0)
            elif (i == 0 and child.hello and not child.go_sent and child.ready_mono is None
                  and child.conn is not None):
                child.conn.send(Go())
                child.go_sent = True
                self._set_deadline(child, time.monotonic() + child.spec.start_timeout)

    def _advance_stops(self) -> None:
        while self.stop_queue:
            child = self.children[self.stop_queue[0]]
            if child.live:
                self._terminate(child)
                return
            if child.state == State.STOPPING or (self.shutting_down and child.state != State.FAILED):
                child.state = State.STOPPED
            self.stop_queue.pop(0)

    def _release_delayed(self, now: float) -> None:
        """Start the restarts whose backoff is over, and half-open due circuit breakers."""
        for failed, (due, sup) in list(self.delayed.items()):
            if now >= due:
                del self.delayed[failed]
                self._restart_group(sup, failed)
        for name in list(self.open_breakers):
            child = self.children[name]
            if child.held or child.live:
                self.open_breakers.discard(name)
            elif child.track.breaker_due(now):
                self.open_breakers.discard(name)
                child.state, child.reason = State.RESTARTING, "circuit half-open: one trial"
                self.start_queue[name] = None

    def _fire_deadlines(self, now: float) -> None:
        for name, deadline in list(self.timers.items()):
            if deadline > now:
                continue
            child = self.children[name]
            if child.state == State.STOPPING:
                if child.pid is not None:
                    log.warning("actor %s did not stop within %gs: SIGKILL", child.name,
                                child.spec.shutdown_timeout or 0)
                    signal_group(child.pid, signal.SIGKILL)
                self._set_deadline(child, None)
            elif child.state in (State.STARTING, State.RESTARTING) and child.pid is not None:
                log.error("actor %s not ready within %gs: killing it", child.name,
                          child.spec.start_timeout)
                self._incarnation_ended(child, LastExit(reason="start_timeout", pid=child.pid,
                                                        at=time.time()))
            else:
                self._set_deadline(child, None)  # a stale timer must not spin the loop

    def _stop_everything_now(self) -> None:
        """On the way out: nothing we started may outlive us, nor linger as a zombie."""
        for child in self.children.values():
            if child.pid is not None:
                signal_group(child.pid, signal.SIGKILL)
        self.zygote.close()
        try:
            os.kill(self.zygote.pid, signal.SIGTERM)  # it kills and reaps its spares
            if not _wait_pid(self.zygote.pid, ZYGOTE_EXIT_TIMEOUT):
                os.kill(self.zygote.pid, signal.SIGKILL)
                os.waitpid(self.zygote.pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass
        for _ in reap_exited():
            pass  # orphans the zygote left us (we are their subreaper)

    # --- control plane ----------------------------------------------------------------

    def _zap_requests(self) -> None:
        """Answer the handshakes of new control connections (``alysd.control_access``):
        libzmq holds each connection until its answer, without blocking us. One
        that waits for a group lookup is answered by ``_zap_looked_up``."""
        while True:
            try:
                frames = self.zap.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            # [routing id][empty][request...]: the REQ envelope travels back as it came.
            envelope, request = frames[:2], frames[2:]
            reply = self.gate.zap_reply(request, token=envelope)
            if reply is not None:
                self.zap.send_multipart(envelope + reply, zmq.NOBLOCK)

    def _zap_looked_up(self) -> None:
        for envelope, reply in self.gate.looked_up():
            self.zap.send_multipart(envelope + reply, zmq.NOBLOCK)

    def _control_requests(self) -> None:
        while True:
            try:
                frames = self.control.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            if len(frames) != 2:
                self._bad_frame("control socket", ProtocolError(
                    f"expected 2 frames, got {len(frames)}"))
                continue
            ident, data = frames[0].bytes, frames[1].bytes
            try:
                req = request_decoder.decode(data)
            except zmq_bus.DECODE_ERRORS as exc:
                self._bad_frame("control socket", exc)
                self._answer(ident, 0, False, CommandError(f"malformed request: {exc}"))
                continue
            answer = Answer(ident, req.id, self._answer)
            command = COMMANDS.get(req.command)
            if command is None:
                answer(False, CommandError(f"unknown command {req.command!r}; known: "
                                           + ", ".join(COMMANDS)))
                continue
            target = req.args.get("name", req.args.get("id"))
            refusal = self.gate.authorise(_user_id(frames[1]), command,
                                          None if target is None else str(target))
            if refusal is not None:
                answer(False, refusal)
                continue
            try:
                getattr(self, f"cmd_{command.name}")(req.args, answer)
            except AlysdError as exc:
                answer(False, exc)
            except (KeyError, TypeError, ValueError) as exc:
                answer(False, CommandError(f"bad arguments for {command.name}: {exc}"))

    def _answer(self, ident: bytes, request_id: int, ok: bool, result: Any) -> None:
        if ok:
            raw = result if isinstance(result, msgspec.Raw) else msgspec.Raw(zmq_bus.encode(result))
            reply = CtlReply(request_id, True, result=raw)
        else:
            err = result if isinstance(result, ErrorInfo) else ErrorInfo.from_exception(
                result, actor=getattr(result, "actor", None), message_id=None)
            reply = CtlReply(request_id, False, error=err)
        self.control.send_multipart([ident, request_encoder.encode(reply)])

    def _resolve(self, name: str) -> list[str]:
        """Actor names a command applies to: one actor, or every actor under a supervisor."""
        if name in self.children:
            return [name]
        if name in self.config.pools:
            return list(self.config.pools[name])
        if name in self.config.supervisors:
            return self.config.actors_under(name)
        raise UnknownActor(f"no actor or supervisor named {name!r}", actor=name)

    def _await(self, names: list[str], want: State, answer, timeout: float, what: str) -> None:
        self.commands.append(PendingCommand(names, want, answer, time.monotonic() + timeout,
                                            what))

    def _refuse_if_busy(self, names: Iterable[str], *, reload_too: bool = True) -> None:
        """Raise ``Busy`` when one of ``names`` is still being changed by an earlier
        command, or (``reload_too``) a reload is in progress: two commands never
        steer the same actor at once. Checked before anything is changed."""
        if reload_too and self.reloading is not None:
            raise Busy(f"busy: a reload ({self.reloading.trigger}) is in progress; try again "
                       "once it is over")
        why = busy_with(names, ((f"`{cmd.what}`", cmd.names) for cmd in self.commands))
        if why is not None:
            raise Busy(f"busy: {why}; try again once it answered")

    def _command_timeout(self, names: list[str]) -> float:
        return sum(self.children[n].spec.start_timeout + (self.children[n].spec.shutdown_timeout or 0)
                   for n in names) + 1.0

    def _refuse_while_stopping(self) -> None:
        if self.shutting_down:
            raise CommandError("alysd is shutting down")

    def cmd_status(self, args: dict, answer) -> None:
        answer(True, [self._status_of(c) for c in self.children.values()])

    def _counters(self, child: Child) -> Counters:
        """Message counters of every incarnation of ``child`` so far."""
        return child.counted + self.table.counters(child.name) if child.live else child.counted

    def _reading(self, child: Child) -> Reading | None:
        """The latest resource reading of ``child``'s current process."""
        return self.vitals.reading(child.name) if child.pid is not None else None

    def _mailbox_depth(self, child: Child) -> int:
        return self.table.depth(self.table.index[child.name]) if child.live else 0

    def _snapshot(self) -> SystemSnapshot:
        """What /metrics and /health show, built by this loop for the HTTP thread."""
        actors = []
        for child in self.children.values():
            reading = self._reading(child)
            counters = self._counters(child)
            actors.append(ActorSnapshot(
                name=child.name, supervisor=child.spec.supervisor, state=child.state.value,
                health=child.shown_health,
                health_reason=child.health_reason, pid=child.pid, incarnation=child.incarnation,
                restarts=dict(child.restarts_by), messages=counters.handled,
                errors=counters.errors, processing_counts=counters.histogram,
                processing_sum=counters.seconds,
                mailbox_depth=self._mailbox_depth(child),
                rss_bytes=reading.rss_bytes if reading else None,
                cpu_seconds=child.cpu_counted + (reading.cpu_seconds if reading else 0.0)))
        return SystemSnapshot(
            health=health.aggregate(a.health for a in actors),
            uptime_s=time.monotonic() - self.started_mono,
            processing_buckets=PROCESSING_BUCKETS, actors=tuple(actors),
            dead_letters=self.bus.dead_letters_by_reason())

    def _start_monitoring(self) -> None:
        """Serve /metrics and /health when configured. A port that cannot be
        bound is logged and shown by `alysctl version`; the node runs on."""
        listen = self.config.monitoring.listen
        if listen is None:
            return
        self.exchange = SnapshotExchange()
        self.monitoring = MonitoringServer(*listen, self.exchange)
        try:
            self.monitoring.start()
        except OSError as exc:
            self.monitoring_error = f"cannot listen on {listen[0]}:{listen[1]}: {exc.strerror or exc}"
            log.critical("monitoring endpoint disabled: %s", self.monitoring_error)
            self.exchange.close()
            self.monitoring = self.exchange = None
            return
        self.poller.add_fd(self.exchange.fileno())
        log.info("serving /metrics and /health on http://%s:%d", *self.monitoring.address[:2])

    def _status_of(self, child: Child) -> dict:
        sample = self._reading(child)
        counters = self._counters(child)
        uptime = time.monotonic() - child.ready_mono if child.ready_mono is not None else None
        return {
            "name": child.name,
            "supervisor": child.spec.supervisor,
            "pid": child.pid,
            "state": child.state.value,
            "restarts": child.restarts,
            "uptime_s": round(uptime, 3) if uptime is not None else None,
            "rss_bytes": sample.rss_bytes if sample else None,
            "cpu_percent": round(sample.cpu_percent, 1) if sample else None,
            "mailbox_depth": self._mailbox_depth(child),
            "health": child.shown_health,
            "health_reason": child.health_reason,
            "last_exit": msgspec.to_builtins(child.last_exit) if child.last_exit else None,
            "reason": child.reason,
            "breaker": (child.track.breaker.value
                        if child.spec.strategy.value == "circuit_breaker" else None),
            "restart_in_s": (round(max(0.0, self.delayed[child.name][0] - time.monotonic()), 3)
                             if child.name in self.delayed else None),
            "incarnation": child.incarnation,
            "handled": counters.handled,
            "errors": counters.errors,
            "spawned_at": child.spawned_at,
            "ready_at": child.ready_at,
        }

    def cmd_tree(self, args: dict, answer) -> None:
        def node(sup: str) -> dict:
            spec = self.config.supervisors[sup]
            kids = []
            for kind, name in self.config.children(sup):
                if kind == "supervisor":
                    kids.append(node(name))
                else:
                    c = self.children[name]
                    kids.append({"name": name, "kind": "actor", "strategy": c.spec.strategy.value,
                                 "state": c.state.value, "pid": c.pid})
            return {"name": sup, "kind": "supervisor", "strategy": spec.strategy.value,
                    "children": kids}
        answer(True, node(self.config.root))

    def cmd_stop(self, args: dict, answer) -> None:
        self._refuse_while_stopping()
        names = self._resolve(args["name"])
        self._refuse_if_busy(names)
        for name in reversed(names):
            self._hold(self.children[name], "stopped by command")
        self._await(names, State.STOPPED, answer, self._command_timeout(names),
                    f"stop {args['name']}")

    def _hold(self, child: Child, reason: str) -> None:
        """Stop ``child`` (if it runs) and keep it stopped: nothing restarts it
        until an operator or a reload releases it."""
        child.held, child.restart_after_stop = True, False
        child.reason = reason
        self.start_queue.pop(child.name, None)
        self.delayed.pop(child.name, None)
        if child.live:
            self._queue_stop(child.name)
        else:
            child.state = State.STOPPED

    def cmd_start(self, args: dict, answer, verb: str = "start") -> None:
        self._refuse_while_stopping()
        names = self._resolve(args["name"])
        self._refuse_if_busy(names)
        for name in names:
            self._release(self.children[name])
        self._await(names, State.RUNNING, answer, self._command_timeout(names),
                    f"{verb} {args['name']}")

    def cmd_reset(self, args: dict, answer) -> None:
        """Close circuit breakers, forget backoff, and start what they kept stopped:
        what ``start`` does to anything it starts, asked for by its own name."""
        self.cmd_start(args, answer, "reset")

    def _lift_holds(self, child: Child) -> None:
        """Forget a commanded stop, an open breaker and backoff: an operator acted."""
        child.held = False
        child.track.reset()
        self.open_breakers.discard(child.name)
        self.delayed.pop(child.name, None)

    def _release(self, child: Child) -> None:
        """An operator wants ``child`` running: lift what holds it and start it
        unless it runs already."""
        self._lift_holds(child)
        if child.state in (State.STOPPED, State.FAILED):
            child.state, child.reason = State.STARTING, None
            self.start_queue[child.name] = None
        elif child.state == State.STOPPING:
            child.restart_after_stop = True
            self.start_queue[child.name] = None

    def cmd_restart(self, args: dict, answer) -> None:
        """Restart an actor or a supervisor's subtree, with the siblings its supervisor's
        strategy ties to it (OTP ``restart_child``). It lifts a commanded stop and
        closes breakers of what it names, leaves siblings an operator stopped alone,
        and does not count against restart intensity."""
        self._refuse_while_stopping()
        name = args["name"]
        named = self._resolve(name)
        # A pool is restarted as its members are, each with the siblings its
        # supervisor's strategy ties to it.
        targets = list(self.config.pools.get(name, (name,)))
        parent = (self.children[targets[0]].spec.supervisor if targets[0] in self.children
                  else self.sups[name].spec.parent)
        if parent is None:
            nodes = [name]
        else:
            siblings = self.sups[parent].children
            tied = {node for target in targets
                    for node in plan_group(self.sups[parent].spec.strategy, siblings, target)[1]}
            nodes = [node for node in siblings if node in tied]
        self._refuse_if_busy(a for node in nodes for a in self._actors_of(node))
        for actor in named:
            self._lift_holds(self.children[actor])
        group = [a for node in nodes for a in self._actors_of(node) if not self.children[a].held]
        self._restart_group_of(group)
        self._await(group, State.RUNNING, answer, self._command_timeout(group),
                    f"restart {name}")

    def _restart_group_of(self, actors: list[str], front: bool = True) -> None:
        """Stop these actors (reverse order, one at a time) and start them again in
        order, ahead of other queued starts (``front``) or after them."""
        for name in reversed(actors):
            child = self.children[name]
            if child.live:
                child.restart_after_stop = True
                self._queue_stop(name)
            else:
                child.state, child.reason = State.RESTARTING, None
        queued = dict.fromkeys(actors)
        if front:
            self.start_queue = {**queued, **self.start_queue}
        else:
            self.start_queue.update(queued)

    def _finish_commands(self, now: float) -> None:
        still = []
        for cmd in self.commands:
            children = [self.children[n] for n in cmd.names]
            settled = all(c.state == cmd.want and not c.restart_after_stop for c in children)
            failed = [c.name for c in children if c.state == State.FAILED]
            if settled:
                cmd.answer(True, [self._status_of(c) for c in children])
            elif failed:
                cmd.answer(False, CommandError(
                    "actor failed: " + ", ".join(f"{c.name} ({_describe(c.last_exit)})"
                                                 for c in children if c.state == State.FAILED),
                    actor=failed[0]))
            elif now >= cmd.deadline:
                cmd.answer(False, CommandError(
                    f"timed out waiting for {', '.join(cmd.names)} to be {cmd.want.value}"))
            elif self.shutting_down:
                cmd.answer(False, CommandError("alysd is shutting down"))
            else:
                still.append(cmd)
        self.commands = still

    def cmd_send(self, args: dict, answer) -> None:
        timeout = float(args.get("timeout", 5.0))
        name, mid = self._relay_message(args, Kind.ASK, timeout)
        self.relays[name].pending[mid] = PendingSend(answer, time.monotonic() + timeout, name)

    def cmd_inject(self, args: dict, answer) -> None:
        if not self.config.system.fault_injection:
            raise CommandError("fault injection is off: set system.fault_injection = true "
                               "(never on a node that matters)")
        name = args["name"]
        if name not in self.children:
            raise UnknownActor(f"no actor named {name!r}", actor=name)
        self._refuse_if_busy([name], reload_too=False)
        child = self.children[name]
        if child.state != State.RUNNING or child.conn is None:
            raise ActorUnavailable(f"actor {name!r} is {child.state.value}", actor=name)
        kind, duration = args.get("fault"), args.get("duration")
        mib, gil = args.get("mib", 0), args.get("gil", False)
        if (kind not in ("memory", "cpu", "hang") or isinstance(duration, bool)
                or not isinstance(duration, (int, float)) or duration <= 0
                or isinstance(mib, bool) or not isinstance(mib, int) or mib < 0
                or not isinstance(gil, bool)):
            raise CommandError("inject: expected fault memory|cpu|hang, a positive duration "
                               "(s), mib >= 0 and gil true|false")
        fault = Inject(kind, float(duration), mib, gil)
        log.warning("control: actor %s is made to suffer %s for %gs", name, fault.fault,
                    fault.duration)
        deliver(self._recipient(child), [fault])
        answer(True, {"pid": child.pid})

    def cmd_logs(self, args: dict, answer) -> None:
        name = args.get("name")
        if name is not None and name not in self.children:
            raise UnknownActor(f"no actor named {name!r}", actor=name)
        lines, after = int(args.get("lines", 50)), int(args.get("after", 0))
        if after:
            found = self.output.since(after, name)
        elif name is not None:
            found = self.output.tail(name, lines)
        else:
            found = self.output.since(0, None, limit=lines) if lines > 0 else []
        answer(True, {"lines": [msgspec.structs.asdict(entry) for entry in found],
                      "last": self.output.seq})

    def cmd_tell(self, args: dict, answer) -> None:
        answer(True, {"message_id": self._relay_message(args, Kind.TELL, None)[1]})

    def _relay_message(self, args: dict, kind: Kind, timeout: float | None) -> tuple[str, int]:
        """Send ``args["payload"]`` to the actor (or a member of the pool)
        ``args["name"]`` from alysctl; (the actor, the message id)."""
        name = self._pool_member(args["name"])
        if name not in self.children:
            raise UnknownActor(f"no actor named {name!r}", actor=name)
        # Messages to one actor are many at once by nature (its mailbox orders them),
        # and flow during a reload as every actor's do; but an operator's command
        # stopping or replacing it is not raced.
        self._refuse_if_busy([name], reload_too=False)
        child = self.children[name]
        if child.state != State.RUNNING:
            raise ActorUnavailable(f"actor {name!r} is {child.state.value}", actor=name)
        relay = self._relay(name)
        mid = self.ids.next()
        frame = zmq_bus.encode_envelope(kind, mid, args.get("payload"),
                                        sender=zmq_bus.CTL_IDENTITY, target=name, timeout=timeout)
        zmq_bus.check_size(frame, self.config.system.max_message_bytes, target=name)
        relay.sock.send(frame, zmq.NOBLOCK)
        return name, mid

    def _pool_member(self, name: str) -> str:
        """``name``, or for a pool the member whose turn it is (round robin)."""
        members = self.config.pools.get(name)
        if not members:
            return name
        turn = self.round_robin.get(name, -1) + 1
        self.round_robin[name] = turn
        return members[turn % len(members)]

    def _relay(self, name: str) -> _Relay:
        relay = self.relays.get(name)
        if relay is None:
            sock = zmq_bus.connect_dealer(self.zctx, self.rundir.inbox(name), zmq_bus.CTL_IDENTITY)
            relay = self.relays[name] = _Relay(sock)
            self.relay_of[sock] = relay
            self.poller.add_zmq(sock)
        return relay

    def _relay_replies(self, relay: _Relay) -> None:
        while True:
            try:
                data = relay.sock.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            try:
                env = zmq_bus.decode_envelope(data, self.config.system.max_message_bytes)
            except ProtocolError as exc:
                self._bad_frame("reply relay", exc)
                continue
            pending = relay.pending.pop(env.correlation_id, None)
            if pending is None:
                continue  # the request already timed out
            if env.kind == Kind.ERROR:
                try:
                    err = msgspec.msgpack.decode(env.payload, type=ErrorInfo)
                except zmq_bus.DECODE_ERRORS as exc:
                    err = ErrorInfo(kind="RemoteError", message=f"undecodable error reply: {exc}")
                pending.answer(False, err)
            else:
                pending.answer(True, env.payload)

    def _fail_relayed_requests(self, child: Child, exit: LastExit) -> None:
        """Requests alysctl sent to an incarnation that ended get their answer now."""
        relay = self.relays.get(child.name)
        if relay is None:
            return
        for mid, pending in list(relay.pending.items()):
            del relay.pending[mid]
            pending.answer(False, ErrorInfo(
                kind="ActorExited", actor=child.name, message_id=mid,
                message=f"actor {child.name!r} exited while handling the request: {_describe(exit)}"))

    def _expire_sends(self, now: float) -> None:
        for relay in self.relays.values():
            for mid, pending in list(relay.pending.items()):
                if now >= pending.deadline:
                    del relay.pending[mid]
                    pending.answer(False, ErrorInfo(
                        kind="RequestTimeout", actor=pending.actor, message_id=mid,
                        message=f"no reply from {pending.actor!r} in time"))

    def cmd_dead_letters(self, args: dict, answer) -> None:
        answer(True, self.bus.list_dead_letters(args))

    def cmd_dead_letters_replay(self, args: dict, answer) -> None:
        def send(target: str, frame: bytes) -> None:
            # As for `send`: not raced with a command stopping or replacing the target
            # (the letter stays in the queue).
            self._refuse_if_busy([target], reload_too=False)
            self._relay(target).sock.send(frame, zmq.NOBLOCK)
        answer(True, self.bus.replay(args, set(self.children), send, self.ids.next))

    def cmd_dead_letters_purge(self, args: dict, answer) -> None:
        answer(True, self.bus.purge())

    def cmd_filter_add(self, args: dict, answer) -> None:
        answer(True, self.bus.add_filter(args, self.children))

    def cmd_filter_list(self, args: dict, answer) -> None:
        answer(True, self.bus.list_filters())

    def cmd_filter_remove(self, args: dict, answer) -> None:
        answer(True, self.bus.remove_filters(args))

    # --- configuration reload ----------------------------------------------------------

    @property
    def generation(self) -> int:
        """How many directory changes reloads made (0: the one the tree started with)."""
        return len(self.topologies)

    def cmd_reload(self, args: dict, answer) -> None:
        self._begin_reload("alysctl", answer, dry_run=bool(args.get("dry_run", False)))

    def _begin_reload(self, trigger: str, answer: Answer | None, dry_run: bool = False) -> None:
        """Load and check the configuration again, then apply what changed (see
        ``alysd.reload``). Nothing running changes unless the new config is
        valid, every new actor class imports, and no changed key needs a
        restart of alysd. Answers once the affected actors are healthy, or
        once a failed reload was rolled back."""
        def refuse(why: str, error: type[CommandError] = CommandError) -> None:
            log.error("reload (%s) refused: %s", trigger, why)
            if answer is not None:
                answer(False, error(why))

        if self.reload_config is None:
            return refuse("this alysd was started without a configuration to reload")
        if self.shutting_down:
            return refuse("alysd is shutting down")
        if self.reloading is not None:
            return refuse(f"busy: a reload ({self.reloading.trigger}) is in progress", Busy)
        if self.commands:
            # A reload may restart or reconfigure any actor, so it waits for none.
            return refuse(f"busy: `{self.commands[0].what}` is in progress; try again once "
                          "it answered", Busy)
        if not self.tree_up_logged:
            return refuse("alysd is still starting its actors")
        try:
            new = self.reload_config()
        except ConfigError as exc:
            return refuse(str(exc))
        finally:
            if self.next_config_look is not None:
                # What was just read counts as seen: the watch does not load it again.
                self.config_seen, self.config_changing = _file_signature(self.config.source), None
        plan = plan_reload(self.config, new)
        issues = list(plan.refused)
        wanted = sum(name not in self.table.index for name in plan.added)
        room = self.table.capacity - len(self.table.index)   # slots are never reused
        if wanted > room:
            issues.append(ConfigIssue("actors", f"adds {wanted} actors, but the actor table has "
                                      f"room for {room} more (of {self.table.capacity}); "
                                      "restart alysd to apply it"))
        issues += self._oversized(new, plan)
        if issues:
            return refuse(str(ConfigError(issues, new.source)).replace(
                "invalid configuration", "configuration cannot be applied by a reload", 1))
        for warning in new.warnings:
            log.warning("config: %s", warning)
        if dry_run or plan.empty:
            report = describe(plan) | {"outcome": "dry_run" if dry_run else "unchanged",
                                       "trigger": trigger, "config": new.source}
            log.info("reload (%s): %s", trigger, "dry run" if dry_run else "nothing changed")
            if answer is not None:
                answer(True, report)
            return
        run = self.reloading = ReloadRun(trigger, answer, self.config, new, plan, time.monotonic())
        classes = sorted({new.actors[name].class_path for name in plan.added}
                         | {new.actors[c.name].class_path for c in plan.changed
                            if "class" in c.fields})
        if classes:
            # The zygote imports them (and keeps them for its forks); the root never
            # runs actor code.
            self.imports_asked += 1
            self.zygote.send(CheckImports(self.imports_asked, tuple(classes)))
        else:
            self._apply_reload(run)

    def _oversized(self, new: Config, plan: ReloadPlan) -> list[ConfigIssue]:
        """Changes too big for one message of the system channel, which would
        never reach the actors."""
        def check(where: str, message) -> None:
            size = len(system_encoder.encode(message))
            if size > system_channel.MAX_MESSAGE:
                issues.append(ConfigIssue(where, f"too large to send to the running actors "
                                          f"({size} bytes; at most {system_channel.MAX_MESSAGE}):"
                                          " restart alysd to apply it"))
        issues: list[ConfigIssue] = []
        for change in plan.changed:
            if change.treatment is Treatment.LIVE:
                spec = new.actors[change.name]
                check(_config_key("actors", spec.pool or spec.name), Reconfigure(0, spec))
        directory = self._directory(new, plan.removed)
        if directory != self.directory:
            added = {name: 0 for name in directory.peers if name not in self.directory.peers}
            check("actors", Topology.between(self.generation + 1, self.directory, directory, added))
        return issues

    def _imports_checked(self, msg: ImportsChecked) -> None:
        run = self.reloading
        if run is None or run.phase != "checking" or msg.request != self.imports_asked:
            return
        if msg.issues:
            paths = {spec.class_path: _config_key("actors", spec.pool or name, "class")
                     for name, spec in run.new.actors.items()}
            issues = [ConfigIssue(paths.get(class_path, "actors"), f"cannot load {class_path}: "
                                  f"{error}") for class_path, error in msg.issues]
            self.reloading = None
            why = str(ConfigError(issues, run.new.source))
            log.error("reload (%s) refused: %s", run.trigger, why)
            if run.answer is not None:
                run.answer(False, CommandError(why))
            return
        self._apply_reload(run)

    def _apply_reload(self, run: ReloadRun) -> None:
        log.info("reload (%s) of %s: %s", run.trigger, run.new.source or "the configuration",
                 "; ".join(summary(describe(run.plan))) or "nothing")
        self.notifier.reloading()
        run.phase = "applying"
        self._apply_config(run, run.new, run.plan, forward=True)

    def _apply_config(self, run: ReloadRun, new: Config, plan: ReloadPlan, *, forward: bool) -> None:
        """Make ``new`` the running config with the least disruption: root-side
        values in place; the new directory to the zygote and every actor; then
        stop what was removed, reconfigure what can change live, restart what
        cannot (in start order), start what was added. Going ``forward``, what is
        stopped preserves its state for its next incarnation; rolling back, the
        state preserved going forward is restored instead."""
        now = time.monotonic()
        run.deadline = now + new.system.reload_timeout
        run.awaited = {}
        self.config = new
        self.sups = {name: SupervisorNode(
            spec, self._window_for(name, spec), [child for _, child in new.children(name)])
            for name, spec in new.supervisors.items()}
        for name in plan.added:
            child = self.children.get(name)
            if child is None:
                self.children[name] = Child(new.actors[name], track=ChildTrack(new.actors[name]))
            else:   # removed going forward and still stopping: it stays
                child.spec, child.held = new.actors[name], False
                self.removed.discard(name)
        # Records in the new start order; removed ones last, so that a shutdown
        # now stops them first.
        self.children = {**{name: self.children[name] for name in new.actors},
                         **{name: c for name, c in self.children.items() if name not in new.actors}}
        retune = self.vitals.reconfigure(new)
        live, restart = [], []
        for change in plan.changed:
            child = self.children[change.name]
            before, child.spec = child.spec, new.actors[change.name]
            if (before.strategy, before.backoff, before.breaker) != (
                    child.spec.strategy, child.spec.backoff, child.spec.breaker):
                child.track = ChildTrack(child.spec)
            else:
                child.track.spec = child.spec
            serving = child.state == State.RUNNING and child.conn is not None
            if change.treatment is Treatment.RESTART or (
                    # Rolling back, what going forward restarted (or left not running)
                    # is restarted again, to get its state from before the reload back.
                    not forward and (change.name in run.restarted or not serving)) or (
                    # Forked with the old spec and not serving yet: a new incarnation
                    # is the sure way for it to run the new one.
                    change.treatment is Treatment.LIVE and not serving and child.live):
                restart.append(change.name)
                if forward:
                    run.restarted[change.name] = list(change.fields)
            elif change.treatment is Treatment.LIVE and serving:
                live.append(change.name)
            # else: in place, or not running (its next incarnation gets the new spec)
        for name in retune:
            child = self.children.get(name)
            if child is not None and child.pid is not None and name not in restart:
                child.vital = self.vitals.retune(name, child.pid, child.vital)
        self._publish_directory(new, keep=plan.removed)
        for name in plan.removed:
            child = self.children[name]
            run.awaited[name] = Awaited(name=name, awaiting=Awaiting.GONE,
                                        incarnation=child.incarnation, restarts=child.restarts,
                                        health_before=child.health)
            self.removed.add(name)
            if forward and child.live and child.conn is not None:
                run.preserved[name] = self._preserve_on_stop(child)   # before its stop signal
            self._hold(child, "removed by a reload")
        for name in live:
            self._reconfigure_live(run, self.children[name])
        self._reload_restart(run, restart, forward=forward)
        for name in plan.added:
            child = self.children[name]
            child.restore_from = None if forward else run.preserved.get(name)
            if not child.live:
                child.state, child.reason = State.STARTING, None
            self._expect_incarnation(run, child)
        self._restart_group_of([n for n in plan.added if self.children[n].live])
        self.start_queue.update(dict.fromkeys(n for n in plan.added if not self.children[n].live))
        if new.system.watch_config and new.source and self.next_config_look is None:
            self._watch_config_file()
        elif not new.system.watch_config:
            self.next_config_look = None

    def _window_for(self, name: str, spec: SupervisorSpec) -> RestartWindow:
        """A supervisor's restart window: kept across a reload that left its
        intensity alone, so a reload cannot be used to forget a crash loop."""
        node = self.sups.get(name)
        if node is not None and (node.spec.max_retries, node.spec.within_time) == (
                spec.max_retries, spec.within_time):
            return node.window
        return RestartWindow(spec.max_retries, spec.within_time)

    def _publish_directory(self, new: Config, keep: tuple[str, ...] = ()) -> None:
        """Tell the zygote (so later forks inherit it) and every actor who can be
        messaged now, when that changed. Removed actors still stopping are
        ``keep``: their senders go on holding what they sent them until they are
        gone (a message one is handling is then not also dead-lettered)."""
        directory = self._directory(new, keep)
        if directory == self.directory:
            return
        added = [name for name in directory.peers if name not in self.directory.peers]
        slots = {name: self.table.index[name] if name in self.table.index else self.table.add(name)
                 for name in added}
        topology = Topology.between(self.generation + 1, self.directory, directory, slots)
        self.directory = directory
        self.topologies.append(topology)
        self.zygote.send(topology)
        for child in self.children.values():
            if child.conn is not None and child.pid is not None:
                deliver(self._recipient(child), [topology])
                child.generation = self.generation

    def _directory(self, config: Config, keep: Iterable[str] = ()) -> Directory:
        directory = Directory.from_config(config)
        kept = {name: self.directory.peers[name] for name in keep if name in self.directory.peers}
        if kept:
            directory = msgspec.structs.replace(directory, peers={**directory.peers, **kept})
        return directory

    def _preserve_on_stop(self, child: Child) -> str:
        path = self.rundir.state_blob(child.name)
        deliver(self._recipient(child), [PreserveOnStop(path)])
        return path

    def _reconfigure_live(self, run: ReloadRun, child: Child) -> None:
        """Send a running actor its new spec, to take between two messages."""
        self.reconfigure_seq += 1
        deliver(self._recipient(child), [Reconfigure(self.reconfigure_seq, child.spec)])
        run.awaited[child.name] = Awaited(
            name=child.name, awaiting=Awaiting.ANSWER, incarnation=child.incarnation,
            restarts=child.restarts, health_before=child.health, seq=self.reconfigure_seq)

    def _reload_restart(self, run: ReloadRun, names: list[str], *, forward: bool) -> None:
        """Restart these actors with their new spec, in start order, carrying their
        state; an actor an operator stopped stays stopped."""
        names = [name for name in names if not self.children[name].held]
        for name in names:
            child = self.children[name]
            self.delayed.pop(name, None)   # a backoff in progress is overtaken
            if forward:
                child.restore_from = (self._preserve_on_stop(child)
                                      if child.live and child.conn is not None else None)
                if child.restore_from is not None:
                    run.preserved[name] = child.restore_from
            else:
                child.restore_from = run.preserved.get(name)
            self._expect_incarnation(run, child)
        self._restart_group_of(names)

    def _expect_incarnation(self, run: ReloadRun, child: Child) -> None:
        run.awaited[child.name] = Awaited(
            name=child.name, awaiting=Awaiting.INCARNATION, incarnation=child.incarnation,
            restarts=child.restarts, health_before=child.health)

    def _reconfigured(self, child: Child, msg: Reconfigured) -> None:
        child.health, child.health_reason = msg.health, msg.health_reason
        run = self.reloading
        awaited = run.awaited.get(child.name) if run is not None else None
        if awaited is None or awaited.awaiting is not Awaiting.ANSWER or awaited.seq != msg.seq:
            return
        awaited.outcome, awaited.error = msg.outcome, msg.error
        if msg.outcome == "needs_restart":
            # Its class cannot take a new config live: a new incarnation takes it.
            change = run.plan.change(child.name)
            run.restarted[child.name] = list(change.fields) if change else ["config"]
            self._reload_restart(run, [child.name], forward=run.phase == "applying")

    def _advance_reload(self, now: float) -> None:
        run = self.reloading
        if run.phase == "checking":
            return
        verdicts = {name: judge(awaited, self._facts(awaited))
                    for name, awaited in run.awaited.items()}
        failed = {name: v for name, v in verdicts.items() if v not in (SETTLED, WAITING)}
        if not failed and all(v == SETTLED for v in verdicts.values()):
            if run.phase == "applying":
                self._end_reload(True)
            else:
                self._end_reload(False, f"{run.failure}; rolled back to the previous "
                                        "configuration")
            return
        if not failed and now < run.deadline:
            return
        if not failed:
            timeout = self.config.system.reload_timeout   # of the config being applied
            late = [run.awaited[name] for name, v in verdicts.items() if v == WAITING]
            failed = {a.name: f"{unsettled_reason(a, self._facts(a))} {timeout:g}s after the "
                              "reload" for a in late}
        why = "; ".join(f"actor {name}: {reason}" for name, reason in failed.items())
        if run.phase == "applying":
            run.failure = f"reload failed: {why}"
            log.error("reload (%s) failed (%s): rolling back to the previous configuration",
                      run.trigger, why)
            run.phase = "rolling_back"
            self.notifier.reloading()
            self._apply_config(run, run.old, plan_reload(run.new, run.old), forward=False)
        else:
            self._end_reload(False, f"{run.failure}; the rollback did not settle either ({why})")

    def _facts(self, awaited: Awaited) -> Facts | None:
        """What a reload judges of an actor; None once it is gone, or (unless
        its removal is what is awaited) once a reload removed it."""
        child = self.children.get(awaited.name)
        if child is None or (awaited.name in self.removed
                             and awaited.awaiting is not Awaiting.GONE):
            return None
        return Facts(child.state.value, child.incarnation, child.restarts, child.health)

    def _end_reload(self, ok: bool, why: str | None = None) -> None:
        run, self.reloading = self.reloading, None
        for child in self.children.values():
            child.restore_from = None
        for path in run.preserved.values():
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
        took = round(time.monotonic() - run.began, 3)
        if ok:
            report = describe(run.plan) | {
                "outcome": "applied", "trigger": run.trigger, "config": run.new.source,
                "seconds": took, "restarted": run.restarted,
                "updated_live": {c.name: list(c.fields) for c in run.plan.changed
                                 if c.treatment is not Treatment.RESTART
                                 and c.name not in run.restarted}}
            log.info("reload (%s) applied in %.3fs: %s", run.trigger, took, "; ".join(summary(report)))
            if run.answer is not None:
                run.answer(True, report)
        else:
            log.error("reload (%s): %s", run.trigger, why)
            if run.answer is not None:
                run.answer(False, CommandError(why))
        if not self.shutting_down:
            self.notifier.ready(self._status_line())

    def _drop_removed(self) -> None:
        """Forget the actors a reload removed once they have stopped: their
        records, sockets, watches, and (dead-lettered) undelivered messages;
        then tell the others they are gone."""
        gone = [name for name in self.removed
                if not self.children[name].live and self.children[name].state != State.STOPPING]
        for name in gone:
            child = self.children[name]
            for cmd in self.commands:
                if name in cmd.names:
                    cmd.names.remove(name)
            self._fail_relayed_requests(child, child.last_exit or LastExit(reason="removed"))
            relay = self.relays.pop(name, None)
            if relay is not None:
                self.poller.remove_zmq(relay.sock)
                del self.relay_of[relay.sock]
                relay.sock.close(linger=0)
            for table in (self.start_queue, self.timers, self.delayed, self.round_robin):
                table.pop(name, None)
            self.open_breakers.discard(name)
            self.vitals.forget(name)
            self._dead_letter_outbox(name)
            try:
                os.unlink(self.rundir.inbox(name))
            except FileNotFoundError:
                pass
            del self.children[name]
            self.removed.discard(name)
            log.info("actor %s removed by a reload", name)
        if gone:
            self._publish_directory(self.config, keep=tuple(self.removed))

    def _watch_config_file(self) -> None:
        self.config_seen = _file_signature(self.config.source)
        self.config_changing = None
        self.next_config_look = time.monotonic() + WATCH_INTERVAL

    def _look_at_config_file(self, now: float) -> None:
        """``watch_config``: reload once the file changed and then stayed the same
        for one look (an editor writing it in steps is not caught half way)."""
        self.next_config_look = now + WATCH_INTERVAL
        seen = _file_signature(self.config.source)
        if seen == self.config_seen or self.reloading is not None or self.commands:
            # Busy (a reload would be refused): the change is taken at a later look.
            return
        if seen != self.config_changing:
            self.config_changing = seen
            return
        self.config_seen, self.config_changing = seen, None
        self._begin_reload("file change", None)


    def cmd_version(self, args: dict, answer) -> None:
        answer(True, version_info() | {"pid": os.getpid(), "runtime_dir": self.rundir.path,
                                       "state_dir": os.path.abspath(self.state_dir),
                                       "config": self.config.source,
                                       "uptime_s": round(time.monotonic() - self.started_mono, 3),
                                       "rejected_frames": self.bad_frames,
                                       "denied_connections": self.denied,
                                       "denied_control_connections":
                                           self.gate.refused_connections,
                                       "denied_control_commands": self.gate.refused_commands,
                                       "monitoring": self._monitoring_address()})

    def _monitoring_address(self) -> str | None:
        if self.monitoring is None:
            return self.monitoring_error
        host, port = self.monitoring.address[:2]
        return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _enqueue_only(signum, frame) -> None:
    """Signal handler: the wakeup fd already carries ``signum`` to the loop."""


def _wait_pid(pid: int, timeout: float) -> bool:
    """Reap child ``pid`` within ``timeout`` seconds; False if it is still running."""
    pidfd = os.pidfd_open(pid)
    try:
        readable, _, _ = select.select([pidfd], [], [], timeout)  # readable once it exited
    finally:
        os.close(pidfd)
    if not readable:
        return False
    os.waitpid(pid, 0)
    return True


def _file_signature(path: str | None) -> tuple | None:
    """What tells a changed file from the one last loaded (None: unreadable)."""
    try:
        st = os.stat(path)
    except (OSError, TypeError):
        return None
    return st.st_ino, st.st_size, st.st_mtime_ns


def _user_id(frame: zmq.Frame) -> str | None:
    """The User-Id the ZAP handler gave the connection a frame came on."""
    try:
        return frame.get("User-Id")
    except zmq.ZMQError:
        return None


def _config_key(*parts: str) -> str:
    return ".".join(parts)


def _describe(exit: LastExit | None) -> str:
    if exit is None:
        return "no exit recorded"
    if exit.signal:
        return f"killed by {exit.signal}" + (f" ({exit.reason})" if exit.reason != "signal" else "")
    if exit.code is not None:
        return f"{exit.reason} (exit code {exit.code})"
    return exit.reason
