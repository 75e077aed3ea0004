"""The actor side of alysd: the loop that runs inside each actor process.

``run_actor(boot, cls)`` is called in a freshly forked child of the zygote. It
creates this process's own ZeroMQ context (never inherited across fork), binds
the actor's inbox, connects the system channel to the root, then:

1. sends ``Hello`` and, when the start is ordered, waits for ``Go``;
2. runs ``started(ctx)`` and sends ``Ready``;
3. serves the inbox until SIGTERM/SIGINT: messages are taken off the socket
   into the mailbox (a stable priority queue with the actor's capacity and
   backpressure policy) and handled one at a time, highest priority first;
4. runs ``stopped(ctx)``, closes its sockets with a bounded linger so replies
   already queued still leave, and returns the exit code.

Delivery, receiving half (the sending half is ``alysd.courier``): every one-way
message taken off the socket is acknowledged to its sender once it was handled
or dead-lettered (receipts are batched: sent when the mailbox empties, every
``ACK_EVERY`` messages, or ``ACK_DELAY`` after the first unsent one); a
request is acknowledged by its reply. What this process dead-letters (refused
by backpressure, filtered, expired, malformed) it writes to the dead-letter
queue itself.

Liveness and health: a small thread bumps this actor's beat in the actor
table once per ``heartbeat_interval`` (a stopped or wedged process stops
beating; a long handler does not), and the loop answers the root's health
probes between two messages. Message counters and handling times are
published in the actor table every few messages and before each idle wait.
A ``MemoryError`` in a handler of an actor with a ``memory_limit`` ends the
incarnation with ``ExitCode.MEMORY_LIMIT``.

A reload reaches a running actor as system mail: ``Reconfigure`` (a new spec:
mailbox capacity, memory limit, and its config and settings through
``config_changed``) and ``Topology`` (who can be messaged) are applied between
two messages, in the order sent. Read while a handler (or ``started``) waits
on a send or a request, they are held until it returns, while health probes
are still answered. ``PreserveOnStop`` makes the next orderly stop write
``preserve_state()`` to a file, which the next incarnation's
``restore_state()`` gets (``ActorBoot.restore_from``) before ``started()``.

A stop signal sets a flag; only while the loop idles in a blocking receive
does the handler also break that receive (by raising), so a message is never
abandoned half-handled. SIGUSR1 (system mail from the root) breaks an idle
receive the same way. The process's own threads (ZeroMQ's, the heartbeat)
block these signals, so the kernel hands them to the loop's thread. A
blocking ``ctx.request`` in a sync handler does not
serve the inbox while it waits, so two actors that request each other from
their handlers wait out the timeout (use ``send``, or ``async`` handlers and
replies by message, for cycles).
"""

from __future__ import annotations

import asyncio
import bisect
import collections
import contextlib
import heapq
import inspect
import itertools
import logging
import os
import signal
import tempfile
import threading
import time
import traceback
from dataclasses import dataclass
from typing import Any

import msgspec
import zmq
import zmq.asyncio

from alysd import fault_injection, filters, log_format, outbox_journal, permissions, zmq_bus
from alysd.actor import Actor, Health, overrides
from alysd.actor_table import PROCESSING_BUCKETS, ActorTable
from alysd.config import ActorSpec, Backpressure, Delivery, MailboxSpec
from alysd.courier import SEND_TIMEOUT, TEND_INTERVAL, Courier
from alysd.dead_letter_sink import DeadLetterSink
from alysd.dead_letters import Reason
from alysd.errors import (ActorConfigError, HandlerError, MailboxFull, MessageTooLarge,
                          PermissionDenied, ProtocolError, RemoteError)
from alysd.exits import ExitCode
from alysd.mailbox import Admission, Mailbox
from alysd.protocol import (APPLIED, FAILED, NEEDS_RESTART, SYSTEM_MAIL, ActorBoot, Directory,
                            FilterHits, Filters, FilterRule, Go, HealthProbe, HealthReport, Hello,
                            Inject, Peer, PreserveOnStop, Ready, Reconfigure, Reconfigured,
                            Subscribe, Subscribers, Topology)
from alysd.reload import Treatment, changed_fields, treatment_of
from alysd.system_channel import ActorLink
from alysd.runtime_dir import RuntimeDir
from alysd.zmq_bus import Envelope, Kind, Priority

DEFAULT_REQUEST_TIMEOUT = 5.0
DRAIN_BATCH = 256           # messages moved from the socket to the mailbox per pass
CHORES_EVERY = 16           # with a backlog, look at the socket (and the rest) this often
ACK_EVERY = 64              # receipts owed to a sender are sent at least this often...
ACK_DELAY = 0.005           # ...and at most this long after the oldest one was earned
SETTLE_TIMEOUT = 0.1        # an orderly stop waits this long for receipts still owed to it
_get, _set = zmq_bus.sockopt_get, zmq_bus.sockopt_set
_SNDMORE = int(zmq.SNDMORE)
_NOBLOCK = int(zmq.NOBLOCK)
WAKE_ENDPOINT = "inproc://wake"   # the inbox's second address, for this process only
WAKE_IDENTITY = "$wake"
_WAKE = WAKE_IDENTITY.encode()
_TELL, _ASK, _EVENT, _BATCH = int(Kind.TELL), int(Kind.ASK), int(Kind.EVENT), int(Kind.BATCH)
_ONE_WAY = frozenset((_TELL, _EVENT, _BATCH))
_CTL = zmq_bus.CTL_IDENTITY.encode()
# System mail applied only between two messages (held while a handler waits).
_BETWEEN_MESSAGES = (Reconfigure, Topology)
_LOOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, SYSTEM_MAIL)


class _MemoryLimit(BaseException):
    """A handler of an actor with a memory limit ran out of memory: the
    incarnation ends (a BaseException, so no handler-level ``except Exception``
    swallows it on the way out)."""


class Context:
    """What a handler sees of the runtime: its identity, its config, the bus.

    ``send``, ``send_batch`` and ``request`` raise ``UnknownActor`` at once for a
    name that is neither a configured actor nor a pool (and dead-letter the
    message), ``MessageTooLarge`` for an oversized message, and ``MailboxFull``
    when the receiver's backpressure policy refuses it.

    ``config`` is the actor's ``[actors.NAME.config]`` table and ``settings``
    the node sections it ``uses`` (section name -> table); a reload replaces
    them between two messages (see ``Actor.config_changed``).
    """

    def __init__(self, process: "ActorProcess"):
        self._p = process
        self.name: str = process.name
        self.supervisor: str = process.boot.spec.supervisor
        self.incarnation: int = process.boot.incarnation
        self.config: dict = process.boot.spec.config
        self.settings: dict = process.boot.spec.settings
        self.log = logging.getLogger(f"alysd.actor.{self.name}")

    @property
    def message(self) -> Envelope | None:
        """The envelope being handled (ids, sender, metadata), or None."""
        return self._p.current

    @property
    def state_dir(self) -> str:
        """alysd's state dir (private to its user, kept across restarts): where
        an actor keeps its durable files, under a name of its own."""
        return os.path.dirname(self._p.boot.dead_letters)

    def send(self, to: str, message: Any, *, priority: Priority = Priority.NORMAL,
             timeout: float = SEND_TIMEOUT) -> None:
        """Fire-and-forget ``message`` to actor (or pool) ``to``. ``timeout`` bounds
        how long a ``block`` receiver that is full makes this call wait."""
        self._p.courier.tell(to, _TELL, message, priority=priority, timeout=timeout)

    def send_batch(self, to: str, messages: list, *, priority: Priority = Priority.NORMAL,
                   timeout: float = SEND_TIMEOUT) -> None:
        """Send several one-way messages in one frame. The receiver's
        ``handle_batch`` gets them together; a plain ``handle_message`` gets
        them one by one, in order. Delivered, acknowledged and dead-lettered as
        one unit."""
        self._p.courier.tell(to, _BATCH, list(messages), priority=priority, timeout=timeout)

    def request(self, to: str, message: Any, *, timeout: float = DEFAULT_REQUEST_TIMEOUT,
                priority: Priority = Priority.NORMAL) -> Any:
        """Send a request and return the reply.

        Blocks in a sync handler; in an ``async`` handler returns an awaitable.
        Raises ``RequestTimeout`` when no reply comes within ``timeout`` seconds,
        and the typed remote error (``HandlerError``, ...) when the receiver
        answered with one. When the receiver dies holding the request it is
        redelivered to the next incarnation within the same timeout, or, after
        ``max_retries`` crashes on it, quarantined with ``PoisonMessage``.
        """
        courier = self._p.courier
        if asyncio._get_running_loop() is not None:
            return courier.request_async(to, message, timeout=timeout, priority=priority)
        return courier.request(to, message, timeout=timeout, priority=priority)

    def publish(self, event_type: str, message: Any) -> int:
        """Send ``message`` to every subscriber of ``event_type`` (one member of a
        subscribed pool); returns how many."""
        return self._p.courier.publish(event_type, message)

    def subscribe(self, event_type: str) -> None:
        """Receive ``event_type`` broadcasts from now on, for this incarnation's
        life (subscribe again in ``started`` to keep it across restarts)."""
        self._p.system.send(Subscribe(event_type))


@dataclass
class Endpoints:
    """The sockets of one actor process: its own ZeroMQ context, its inbox, its
    system link. A warm spare opens them before it knows which actor it becomes."""

    zctx: zmq.Context
    inbox: zmq.Socket
    system: ActorLink


def open_endpoints(runtime_dir: str, inbox_path: str, *, max_message_bytes: int,
                   heartbeat_interval: float, zctx: zmq.Context | None = None) -> Endpoints:
    """Create this process's context, bind an inbox at ``inbox_path`` and connect
    the system channel."""
    with _signals_to_the_main_thread():
        # ZeroMQ starts its threads with the first socket.
        zctx = zctx or zmq.Context(io_threads=1)
        inbox = zmq_bus.bind_router(zctx, inbox_path, max_message_bytes=max_message_bytes)
    inbox.bind(WAKE_ENDPOINT)
    # An idle actor wakes once per heartbeat interval, when its heartbeat is due.
    _set(inbox, zmq_bus.RCVTIMEO, max(1, int(heartbeat_interval * 1000)))
    return Endpoints(zctx, inbox, ActorLink(RuntimeDir(runtime_dir).system))


class _Interrupted(Exception):
    """Raised by a signal handler to break out of an idle blocking receive."""


class ActorProcess:
    """One incarnation of one actor, from sockets up to exit code."""

    def __init__(self, boot: ActorBoot, directory: Directory, table: ActorTable,
                 actor_cls: type[Actor]):
        spec = boot.spec
        self.boot = boot
        self.name = spec.name
        self.table = table
        self.slot = table.index[self.name]
        self.rundir = RuntimeDir(boot.runtime_dir)
        self.max_bytes = boot.max_message_bytes
        self.directory = directory
        self.restricted = _restricted(directory, self.name)
        self.log = logging.getLogger(f"alysd.actor.{self.name}")
        self.actor = actor_cls()
        self.ctx = Context(self)
        self.current: Envelope | None = None
        self.mailbox = Mailbox(spec.mailbox.capacity, spec.mailbox.backpressure)
        self.blocking = spec.mailbox.backpressure is Backpressure.BLOCK
        self.intake_limit = _intake_limit(spec.mailbox)
        self.acking = spec.mailbox.delivery is Delivery.AT_LEAST_ONCE
        self.sink = DeadLetterSink(boot.dead_letters, boot.dead_letter_capacity, self.log)
        self.handled = 0
        self.errors = 0
        self._seconds = 0.0                  # spent in handlers
        self._histogram = [0] * (len(PROCESSING_BUCKETS) + 1)
        self._began = 0.0
        self._published = (0, 0)             # (handled, errors) as last written to the table
        self._hits_sent: dict[int, int] = {}
        self._beating = threading.Event()
        self.rules: tuple[FilterRule, ...] = ()
        self.filter_hits: dict[int, int] = {}
        self._delayed: list = []             # heap of (due, seq, entry) held by a delay filter
        self._seq = itertools.count()
        self._receipts: dict[bytes, list[int]] = {}
        self._receipts_owed = 0
        self._receipts_due = 0.0
        self._stopping = False
        self._system_mail = False
        self._between: collections.deque = collections.deque()   # held until between two messages
        self._warned: set[tuple[str, str]] = set()   # (sender, why) denials logged in development
        self._preserve_to: str | None = None
        self._idle = False
        self._next_report = 0.0
        self.journal: outbox_journal.OutboxJournal | None = None
        self._rcvtimeo = max(1, int(boot.heartbeat_interval * 1000))   # as open_endpoints set it
        self._depth_shown = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._async_handler = inspect.iscoroutinefunction(self.actor.handle_message)
        self._commit = self.actor.commit if overrides(self.actor, "commit") else None
        batch_handler = getattr(self.actor, "handle_batch", None)
        self.batch = spec.batch if batch_handler is not None else None
        if actor_cls.message_type is Any:
            self._payload_decoder = msgspec.msgpack.Decoder()
            self._batch_decoder = msgspec.msgpack.Decoder(list)
        else:
            self._payload_decoder = msgspec.msgpack.Decoder(actor_cls.message_type)
            self._batch_decoder = msgspec.msgpack.Decoder(list[actor_cls.message_type])

    # --- lifecycle ---------------------------------------------------------

    def run(self, endpoints: Endpoints | None = None) -> int:
        """Serve until told to stop; returns the process exit code."""
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_stop_signal)
        signal.signal(SYSTEM_MAIL, self._on_system_mail)
        try:
            endpoints = endpoints or open_endpoints(
                self.boot.runtime_dir, self.rundir.inbox(self.name),
                max_message_bytes=self.max_bytes, heartbeat_interval=self.boot.heartbeat_interval)
        except Exception:
            self.log.critical("cannot open its sockets:\n%s", traceback.format_exc().rstrip())
            return ExitCode.CRASH
        self.zctx, self.inbox, self.system = endpoints.zctx, endpoints.inbox, endpoints.system
        self._wake = zmq_bus.dealer(self.zctx, WAKE_ENDPOINT, WAKE_IDENTITY)
        # What the previous incarnation sent and never saw receipted is read
        # before this one's journal starts over, then sent again.
        journal_path = self.rundir.outbox(self.name)
        inherited = outbox_journal.recover(journal_path)
        self.journal = outbox_journal.OutboxJournal(journal_path)
        self.courier = Courier(self.name, self.zctx, self.rundir, self.directory, self.table,
                               max_bytes=self.max_bytes, sink=self.sink,
                               delivery_timeout=self.boot.delivery_timeout,
                               on_wait=self._while_waiting, journal=self.journal)
        if inherited:
            adopted = self.courier.take_over(inherited)
            self.log.info("re-sends %d messages its previous incarnation had not seen "
                          "delivered", adopted)
        try:
            self.system.send(Hello(self.boot.incarnation, os.getpid()))
            if self.boot.wait_for_go and not self._await_go():
                return ExitCode.OK
            if not self._restore():
                return ExitCode.START_FAILED
            try:
                self._call(self.actor.started, self.ctx)
            except ActorConfigError as exc:
                self.log.critical("cannot run with its configuration: %s", exc)
                return ExitCode.CONFIG
            except Exception:
                self.log.error("started() failed:\n%s", traceback.format_exc().rstrip())
                return ExitCode.START_FAILED
            health = self._health()
            self.system.send(Ready(self.boot.incarnation, health.status, health.reason))
            # Started once ready: starting a thread costs ~0.5 ms, which would lengthen
            # every ordered start; until now start_timeout watched this incarnation.
            with _signals_to_the_main_thread():
                threading.Thread(target=self._beat, name="beat", daemon=True).start()
            try:
                self._serve()
            except _MemoryLimit as exc:
                self.log.critical("out of memory in a handler (memory_limit %d bytes): the "
                                  "incarnation ends:\n%s", self.boot.spec.memory_limit,
                                  "".join(traceback.format_exception(exc.__cause__)).rstrip())
                return ExitCode.MEMORY_LIMIT
            # Mail the root sent before the stop signal still counts (a
            # PreserveOnStop is sent just before it).
            self._read_system_mail()
            try:
                self._call(self.actor.stopped, self.ctx)
            except Exception:
                self.log.error("stopped() failed:\n%s", traceback.format_exc().rstrip())
            if self._preserve_to is not None:
                self._preserve(self._preserve_to)
            self._settle()
            return ExitCode.OK
        finally:
            self._beating.set()
            self.sink.close()
            if self.journal is not None:
                self.journal.close()
            self.system.close()
            self.zctx.destroy(linger=zmq_bus.CLOSE_LINGER_MS)
            if self._loop is not None:
                self._loop.close()

    def _beat(self) -> None:
        """The heartbeat thread: proof of life that needs no message and no help
        from the loop (which may be deep in a handler)."""
        beat, interval = 0, self.boot.heartbeat_interval
        while True:
            beat += 1
            self.table.set_beat(self.slot, beat)
            if self._beating.wait(interval):
                return

    def _settle(self) -> None:
        """On an orderly stop: owe no receipt, and leave nothing undelivered here
        without a dead letter (what the mailbox still holds is redelivered by its
        senders to the next incarnation; what this actor sent and was not
        acknowledged gets a last chance)."""
        self._send_receipts()
        self.courier.settle(SETTLE_TIMEOUT)

    def _on_stop_signal(self, signum, frame) -> None:
        self._stopping = True
        # Only an idle wait is interrupted; a handler in progress runs to completion.
        if self._idle:
            self._idle = False
            raise _Interrupted

    def _on_system_mail(self, signum, frame) -> None:
        # Never raises: an exception here could land just after the blocking
        # receive returned and lose the frame it took. An idle actor is woken by
        # a frame sent to its own inbox instead; a busy one looks between
        # two messages.
        self._system_mail = True
        if self._idle:
            try:
                self._wake.send(b"", _NOBLOCK)
            except zmq.Again:
                pass   # a wake frame is already waiting

    def _await_go(self) -> bool:
        """Wait for the root's Go (an ordered start); False if told to stop first."""
        while not self._stopping:
            try:
                msg = self._idle_receive(lambda: self.system.receive(1.0))
            except ProtocolError as exc:
                self.log.warning("ignored a malformed system message: %s", exc)
                continue
            if isinstance(msg, Go):
                return True
            if msg is not None:
                self._apply_system(msg, started=False)
        return False

    def _idle_receive(self, receive):
        """Run a blocking ``receive()``; None on its timeout or on a stop signal.

        A blocking receive is ~30 us faster per message than poll-then-receive,
        which is why the loop has no poller: a stop signal breaks the wait by
        raising from its handler, only while ``_idle`` is set. (Should it land
        just after a message was taken, that message goes unacknowledged, and
        its sender delivers it to the next incarnation.)
        """
        got = None
        self._idle = True
        try:
            if not self._stopping:
                got = receive()
            # Cleared inside the try: a signal landing right here is still caught.
            self._idle = False
        except (zmq.Again, _Interrupted):
            self._idle = False
        return got

    # --- system mail ---------------------------------------------------------------

    def _read_system_mail(self, between: bool = True) -> None:
        """Apply the system mail waiting. ``between`` is False while a handler
        waits: what must run between two messages is then held, in order, and
        applied at the next call between two messages (``_system_mail`` stays
        set until then)."""
        self._system_mail = False
        for msg in self._system_messages():
            if isinstance(msg, _BETWEEN_MESSAGES):
                self._between.append(msg)
            else:
                self._apply_system(msg)
        if not between:
            if self._between:
                self._system_mail = True
            return
        # A queue, not a snapshot: what a config_changed() reads while it
        # waits on a send is held behind the rest and applied here too.
        while self._between:
            self._apply_system(self._between.popleft())

    def _system_messages(self):
        """Every message waiting on the system channel."""
        while True:
            try:
                msg = self.system.receive(0.0)
            except ProtocolError as exc:
                self.log.warning("ignored a malformed system message: %s", exc)
                continue
            except BlockingIOError:
                return
            except ConnectionError:
                return   # the root is gone; this process follows it (PDEATHSIG)
            if msg is None:
                return
            yield msg

    def _apply_system(self, msg, started: bool = True) -> None:
        """One system message; ``started`` is False while waiting for Go."""
        if isinstance(msg, HealthProbe):
            health = self._health()
            self.system.send_nowait(HealthReport(self.boot.incarnation, msg.probe, health.status,
                                                 health.reason))
        elif isinstance(msg, Reconfigure):
            self._reconfigure(msg, started)
        elif isinstance(msg, Topology):
            self._use_topology(msg)
        elif isinstance(msg, PreserveOnStop):
            self._preserve_to = msg.path
        elif isinstance(msg, Filters):
            self.rules = tuple(msg.rules)
        elif isinstance(msg, Subscribers):
            self.courier.use_run_time_subscribers(msg.table)
        elif isinstance(msg, Inject):
            self.log.warning("suffers an injected fault: %s for %gs%s", msg.fault, msg.duration,
                             f" ({msg.mib} MiB)" if msg.mib else "")
            fault_injection.suffer(msg)

    # --- a reload ------------------------------------------------------------------------

    def _reconfigure(self, msg: Reconfigure, started: bool) -> None:
        """Take a new spec and answer how it went. Before ``started()`` nothing
        has used the config yet, so a new one is simply taken; after, only
        through ``config_changed()``."""
        spec, ctx = msg.spec, self.ctx
        new_config = spec.config != ctx.config or spec.settings != ctx.settings
        outcome, error = APPLIED, None
        if any(treatment_of(field) is Treatment.RESTART
               for field in changed_fields(self.boot.spec, spec)):
            outcome = NEEDS_RESTART
            self.log.info("a reload changed what its process was built from: it needs a restart")
        elif started and new_config and not overrides(self.actor, "config_changed"):
            outcome = NEEDS_RESTART
            self.log.info("a reload changed its config, and it has no config_changed(): it "
                          "needs a restart")
        else:
            self.mailbox.resize(spec.mailbox.capacity)
            self.intake_limit = _intake_limit(spec.mailbox)
            if new_config and started:
                error = self._config_changed(spec)
                outcome = APPLIED if error is None else FAILED
            else:
                ctx.config, ctx.settings = spec.config, spec.settings
            # The spec this process runs: the new one, with the config in use.
            self.boot = msgspec.structs.replace(self.boot, spec=msgspec.structs.replace(
                spec, config=ctx.config, settings=ctx.settings))
        # Before started() the actor's own state is not there to judge.
        health = self._health() if started else Health("healthy")
        self.system.send(Reconfigured(self.boot.incarnation, msg.seq, outcome, error,
                                      health.status, health.reason))

    def _config_changed(self, spec: ActorSpec) -> str | None:
        """Hand the actor its new config (its new settings already in
        ``ctx.settings``); on failure both stay as they were and the error is
        returned, on one line."""
        ctx = self.ctx
        settings = ctx.settings
        ctx.settings = spec.settings
        try:
            self._call(self.actor.config_changed, spec.config, ctx)
        except Exception as exc:
            ctx.settings = settings
            self.log.error("config_changed() failed; the config in use stays:\n%s",
                           "".join(traceback.format_exception(exc)).rstrip())
            return " ".join(f"{type(exc).__name__}: {exc}".split())
        ctx.config = spec.config
        return None

    def _use_topology(self, topology: Topology) -> None:
        """Who can be messaged changed (added and removed actors, resized
        mailboxes, pools, subscribers)."""
        if topology.generation < self.directory.generation:
            return   # older than what this process was forked with
        self.table.adopt(topology.slots)
        self.directory = self.directory.with_topology(topology)
        self.restricted = _restricted(self.directory, self.name)
        self.courier.use_directory(self.directory)

    def _restore(self) -> bool:
        """Before ``started()``: hand ``restore_state()`` what the previous
        incarnation preserved, if it did. False when that raised (or the file
        could not be read): the start failed."""
        path = self.boot.restore_from
        if path is None or not overrides(self.actor, "restore_state"):
            return True
        try:
            with open(path, "rb") as f:
                state = f.read()
        except FileNotFoundError:
            self.log.info("no preserved state at %s: it starts afresh", path)
            return True
        except OSError as exc:
            self.log.error("cannot read its preserved state: %s", exc)
            return False
        try:
            self._call(self.actor.restore_state, state)
        except Exception:
            self.log.error("restore_state() failed:\n%s", traceback.format_exc().rstrip())
            return False
        self.log.info("restored its state (%d bytes) from %s", len(state), path)
        return True

    def _preserve(self, path: str) -> None:
        """After ``stopped()``, when the supervisor asked: write
        ``preserve_state()`` to ``path`` for the next incarnation. Whatever goes
        wrong is logged and nothing is written (the next one starts afresh)."""
        if not overrides(self.actor, "preserve_state"):
            return
        try:
            state = self._call(self.actor.preserve_state)
            if not isinstance(state, bytes):
                self.log.error("preserve_state() returned %s, not bytes: nothing preserved",
                               type(state).__name__)
                return
            _write_private(path, state)
        except Exception:
            self.log.error("preserving its state failed; nothing preserved:\n%s",
                           traceback.format_exc().rstrip())

    # --- the receive loop ----------------------------------------------------

    def _serve(self) -> None:
        mailbox = self.mailbox
        inbox = self.inbox
        courier = self.courier
        while not self._stopping:
            if self._system_mail:
                self._read_system_mail()
            if courier.busy:
                courier.tend_if_due()
            if self._delayed:
                self._release_delayed()
            if mailbox:
                self._handle_mailbox()
                continue
            self._idle_duties()
            ident = self._idle_receive(inbox.recv)
            if ident is None:
                continue
            self._accept(ident)
            self._take_burst()
            if self._system_mail:
                # Mail signalled before these messages were sent goes first
                # (a reload's new peers, say, before a message that uses them).
                self._read_system_mail()
            self._handle_mailbox()

    def _idle_duties(self) -> None:
        """Before blocking: pay what is owed and set how long the block may last."""
        if self._receipts_owed:
            self._send_receipts()
        elif self._commit is not None:
            self._call(self._commit, self.ctx)   # at-most-once messages owe no receipt
        if self.sink.pending:
            self.sink.flush()
        if self._depth_shown:
            self._show_depth()
        self._report_if_due()
        # The wait is one heartbeat interval (a report is at most that late), less
        # while messages await receipts or a delay filter holds some.
        wait = self.boot.heartbeat_interval
        if self.courier.busy:
            wait = TEND_INTERVAL
        if self._delayed:
            wait = min(wait, self._delayed[0][0] - time.monotonic())
        ms = max(1, int(wait * 1000))
        if ms != self._rcvtimeo:
            _set(self.inbox, zmq_bus.RCVTIMEO, ms)
            self._rcvtimeo = ms

    def _take_burst(self) -> None:
        """Move whatever else is already queued on the socket into the mailbox,
        so that priorities apply across it and its depth is real.

        One ZMQ_EVENTS query tells a lone request (the common case) from a
        burst; only a burst pays for the exception that ends a run of
        non-blocking receives (~6 us). A ``block`` mailbox that is full takes
        nothing: the senders wait instead.
        """
        inbox = self.inbox
        if not _get(inbox, zmq_bus.EVENTS) & zmq_bus.POLLIN:
            return
        room = self.mailbox.capacity - len(self.mailbox) if self.blocking else DRAIN_BATCH
        for _ in range(min(room, DRAIN_BATCH)):
            try:
                ident = inbox.recv(_NOBLOCK)
            except zmq.Again:
                break
            self._accept(ident)
        self._show_depth()

    def _show_depth(self) -> None:
        """Publish the mailbox depth in the actor table (for senders and status)."""
        depth = len(self.mailbox)
        if depth != self._depth_shown:
            self.table.set_depth(self.slot, depth)
            self._depth_shown = depth

    def _handle_mailbox(self) -> None:
        mailbox = self.mailbox
        pop = mailbox.pop
        handle = self._handle_batch if self.batch is not None else self._handle
        since_chores = 0
        while mailbox and not self._stopping:
            handle(pop())
            if self._receipts_owed >= ACK_EVERY:
                self._send_receipts()
            # The rest is done every few messages: a ZMQ_EVENTS query alone
            # costs ~2 us. With a backlog, newer messages then join it, so that
            # priorities apply; without one, the idle receive takes them.
            since_chores += 1
            if since_chores >= CHORES_EVERY or not mailbox:
                since_chores = 0
                self._chores()

    def _chores(self) -> None:
        """Between messages: receipts, intake, system mail, heartbeat, resends,
        dead letters, each only when due."""
        if self._receipts_owed and time.monotonic() >= self._receipts_due:
            self._send_receipts()
        if self.mailbox and len(self.mailbox) < self.intake_limit:
            self._take_burst()
        if self._system_mail:
            self._read_system_mail()
        self._report_if_due()
        if self.courier.busy:
            self.courier.tend_if_due()
        if self.sink.pending:
            self.sink.flush_if_due()

    # --- taking messages in -------------------------------------------------------------

    def _accept(self, ident: bytes) -> None:
        """Read the rest of the message whose identity frame was just received,
        validate it, and offer it to the mailbox.

        ZeroMQ delivers the frames of a message together, so these receives
        never wait. A frame object's ``more`` flag costs ~1 us less than a
        ``ZMQ_RCVMORE`` query, and both beat ``recv_multipart``.
        """
        frame = self.inbox.recv(copy=False)
        data = frame.bytes
        if frame.more:
            frames, more = 2, True
            while more:
                more = self.inbox.recv(copy=False).more
                frames += 1
            self._reject(ident, data, f"expected 2 frames, got {frames}")
            return
        try:
            env = zmq_bus.decode_envelope(data, self.max_bytes)
        except ProtocolError as exc:
            self._reject(ident, data, str(exc))
            return
        kind = env.kind
        if kind != _ASK and kind not in _ONE_WAY:
            self._reject(ident, data, f"a {Kind(kind).name} envelope cannot be delivered to an inbox")
            return
        # The sender is who the socket says it is: an envelope claiming another
        # one is refused, not believed, nor silently corrected. Except on a
        # connection whose routing id libzmq made up (it starts with a zero
        # byte, which no name can): that is a sender's previous connection,
        # renamed when its next incarnation connected under its name
        # (ROUTER_HANDOVER), delivering the last frames it had in flight.
        sender = ident.decode(errors="replace")
        if env.metadata.from_actor != sender and not ident.startswith(b"\x00"):
            self._reject(ident, data, f"claims to come from {env.metadata.from_actor!r}",
                         Reason.FORGED, env.message_id)
            return
        entry = (ident, env, data)
        # Most trees give no actor permissions: then this costs one truth test.
        restricted = self.restricted
        if restricted and sender in restricted and self._denied(entry, restricted[sender]):
            return
        if self.rules:
            rule = filters.verdict(self.rules, env, self.name)
            if rule is not None:
                self._filtered(rule, entry)
                return
        self._offer(entry)

    def _denied(self, entry: tuple, sender: Peer) -> bool:
        """Whether the sender's permissions refuse this message (checked again
        here: a receiver does not take the sending process's word). A refused
        one is dead-lettered ``denied`` and a requester gets ``PermissionDenied``;
        in development it is only logged, once per sender and reason."""
        env = entry[1]
        why = permissions.denial(sender.permissions, permissions.names_of(self.name),
                                 permissions.types_in(env))
        if why is None:
            return False
        detail = f"{env.metadata.from_actor} {why}"
        if not sender.permissions.enforced:
            if (env.metadata.from_actor, why) not in self._warned:
                self._warned.add((env.metadata.from_actor, why))
                self.log.warning("a message from %s would be denied outside development: %s",
                                 env.metadata.from_actor, detail)
            return False
        self.errors += 1
        self.log.warning("denied message %d: %s", env.message_id, detail)
        self._dead_letter(entry, Reason.DENIED, detail, PermissionDenied)
        return True

    def _offer(self, entry: tuple) -> None:
        env = entry[1]
        size = zmq_bus.batch_length(env.payload) if env.kind == _BATCH else 1
        admission, out = self.mailbox.offer(entry, env.priority, size)
        if admission is Admission.ACCEPTED:
            return
        if admission is Admission.EVICTED:
            reason = Reason.DROPPED_OLDEST
        elif self.mailbox.policy is Backpressure.FAIL:
            reason = Reason.MAILBOX_FULL
        else:
            reason = Reason.DROPPED_NEWEST
        self._dead_letter(out, reason, f"mailbox at its capacity of {self.mailbox.capacity}",
                          MailboxFull)

    def _filtered(self, rule: FilterRule, entry: tuple) -> None:
        self.filter_hits[rule.id] = self.filter_hits.get(rule.id, 0) + 1
        if rule.action == "drop":
            self._dead_letter(entry, Reason.FILTERED, f"dropped by filter {rule.id}", None)
        elif rule.action == "delay":
            due = time.monotonic() + (rule.delay or 0.0)
            heapq.heappush(self._delayed, (due, next(self._seq), entry))
        else:
            self._offer(entry)
            self._offer((entry[0], entry[1], entry[2]))   # its own entry, not the same object

    def _release_delayed(self) -> None:
        now = time.monotonic()
        while self._delayed and self._delayed[0][0] <= now:
            self._offer(heapq.heappop(self._delayed)[2])

    def _dead_letter(self, entry: tuple, reason: Reason, detail: str,
                     error: type[RemoteError] | None) -> None:
        """Dead-letter a message this process will not handle, and settle it with
        its sender: a receipt for a one-way message, an error for a request."""
        ident, env, data = entry
        self.sink.add(reason, sender=env.metadata.from_actor, target=self.name,
                      message_id=env.message_id, frame=data, detail=detail)
        if env.kind == _ASK:
            exc = (error or RemoteError)(f"message {env.message_id} to {self.name!r} was "
                                         f"dead-lettered ({reason.value}): {detail}",
                                         actor=self.name, message_id=env.message_id)
            self._reply(ident, env, zmq_bus.ErrorInfo.from_exception(
                exc, actor=self.name, message_id=env.message_id), error=True)
        else:
            self._owe_receipt(ident, env.message_id)

    def _reject(self, ident: bytes, data: bytes, why: str, reason: Reason = Reason.REJECTED,
                message_id: int = 0) -> None:
        """Refuse a frame that is not a message this actor may take: counted as an
        error, logged, dead-lettered under ``reason``, never answered."""
        if ident == _WAKE:
            self._system_mail = True    # our own wake frame: not a message
            return
        self.errors += 1
        sender = ident.decode(errors="replace")
        self.log.warning("rejected a frame from %r: %s", sender, why)
        self.sink.add(reason, sender=sender, target=self.name, message_id=message_id,
                      frame=data, detail=why)

    # --- handling --------------------------------------------------------------------------

    def _expired(self, entry: tuple) -> bool:
        """A request whose requester has given up is dead-lettered, not handled."""
        env = entry[1]
        timeout = env.metadata.timeout
        if env.metadata.created_at + timeout >= time.time():
            return False
        self._dead_letter(entry, Reason.EXPIRED,
                          f"its {timeout:g}s timeout passed before it was handled", None)
        return True

    def _begin(self, env: Envelope) -> None:
        self.current = env
        self.table.handling(self.slot, env.kind, self.table.sender_index(env.metadata.from_actor),
                            env.message_id)
        self._began = time.perf_counter()

    def _end(self) -> None:
        took = time.perf_counter() - self._began
        self._seconds += took
        self._histogram[bisect.bisect_left(PROCESSING_BUCKETS, took)] += 1
        self.current = None
        self.table.idle(self.slot)

    def _handle(self, entry: tuple) -> None:
        ident, env, data = entry
        kind = env.kind
        if kind == _ASK and env.metadata.timeout is not None and self._expired(entry):
            return
        self._begin(env)
        try:
            try:
                if kind == _BATCH:
                    self._each_of_batch(env)
                    result = None
                else:
                    result = self.actor.handle_message(self._decode(env), self.ctx)
                    if self._async_handler:
                        result = self._run_async(result)
            except Exception as exc:
                self._handler_failed(exc, env)
                if kind == _ASK:
                    self._reply(ident, env, zmq_bus.ErrorInfo.handler_failed(
                        exc, actor=self.name, message_id=env.message_id), error=True)
                else:
                    self._owe_receipt(ident, env.message_id)
                return
        finally:
            self._end()
        self.handled += 1
        if kind == _ASK:
            self._reply(ident, env, result)
        else:
            self._owe_receipt(ident, env.message_id)

    def _decode(self, env: Envelope) -> Any:
        try:
            return self._payload_decoder.decode(env.payload)
        except zmq_bus.DECODE_ERRORS as exc:
            raise ProtocolError(f"payload does not match {self.actor.message_type!r}: {exc}") from exc

    def _decode_batch(self, env: Envelope) -> list:
        try:
            return self._batch_decoder.decode(env.payload)
        except zmq_bus.DECODE_ERRORS as exc:
            raise ProtocolError(f"batch payload is not a list of {self.actor.message_type!r}: "
                                f"{exc}") from exc

    def _each_of_batch(self, env: Envelope) -> None:
        """A batch for an actor without ``handle_batch``: each message in order; a
        failure is logged and the rest of the batch still runs."""
        for message in self._decode_batch(env):
            try:
                result = self.actor.handle_message(message, self.ctx)
                if self._async_handler:
                    self._run_async(result)
            except Exception as exc:
                self._handler_failed(exc, env)

    def _handler_failed(self, exc: Exception, env: Envelope) -> None:
        if isinstance(exc, MemoryError) and self.boot.spec.memory_limit is not None:
            raise _MemoryLimit from exc
        self.errors += 1
        self.log.error("handler failed on message %d from %s:\n%s", env.message_id,
                       env.metadata.from_actor,
                       "".join(traceback.format_exception(exc)).rstrip(),
                       extra={"event": "handler_failed", "message_id": env.message_id})

    def _handle_batch(self, first: tuple) -> None:
        """Gather one-way messages into a list of up to ``max_batch`` (waiting up
        to ``max_wait`` for more) and hand it to ``handle_batch``. A request is
        never batched: it is handled alone, in its turn."""
        if first[1].kind == _ASK:
            self._handle(first)
            return
        batch = self.batch
        entries: list = []
        messages: list = []
        self._gather(first, entries, messages)
        deadline = time.monotonic() + batch.max_wait
        mailbox = self.mailbox
        while len(messages) < batch.max_batch and not self._stopping:
            if not mailbox:
                self._take_burst()
                if not mailbox:
                    wait = deadline - time.monotonic()
                    if wait <= 0 or not self.inbox.poll(max(1, int(wait * 1000))):
                        break
                    continue
            entry = mailbox.pop()
            if entry[1].kind == _ASK:
                # Requests keep their turn: handle the batch so far, then it.
                self._run_batch(entries, messages)
                entries, messages = [], []
                self._handle(entry)
                return
            self._gather(entry, entries, messages)
        self._run_batch(entries, messages)

    def _gather(self, entry: tuple, entries: list, messages: list) -> None:
        """Add one message (or a sent batch) to the batch being gathered; one that
        does not decode is logged as a handler failure and receipted."""
        env = entry[1]
        try:
            if env.kind == _BATCH:
                messages.extend(self._decode_batch(env))
            else:
                messages.append(self._decode(env))
        except ProtocolError as exc:
            self._handler_failed(exc, env)
            self._owe_receipt(entry[0], env.message_id)
            return
        entries.append(entry)

    def _run_batch(self, entries: list, messages: list) -> None:
        if not entries:
            return
        self._begin(entries[0][1])
        size = self.batch.max_batch
        try:
            # A sent batch may be larger than max_batch: it is cut to size.
            for start in range(0, len(messages), size):
                chunk = messages[start:start + size]
                try:
                    self._call(self.actor.handle_batch, chunk, self.ctx)
                    self.handled += len(chunk)
                except Exception as exc:
                    self._handler_failed(exc, entries[0][1])
        finally:
            self._end()
        for ident, env, _ in entries:
            self._owe_receipt(ident, env.message_id)

    # --- answering ----------------------------------------------------------------------

    def _owe_receipt(self, ident: bytes, message_id: int) -> None:
        if not self.acking or ident == _CTL:
            return
        owed = self._receipts.get(ident)
        if owed is None:
            self._receipts[ident] = [message_id]
        else:
            owed.append(message_id)
        if not self._receipts_owed:
            self._receipts_due = time.monotonic() + ACK_DELAY
        self._receipts_owed += 1

    def _send_receipts(self) -> None:
        # Durable first: an exception here ends the incarnation unacknowledged.
        if self._commit is not None:
            self._call(self._commit, self.ctx)
        for ident, mids in self._receipts.items():
            frame = zmq_bus.encode_ack(self.name, ident.decode(errors="replace"), mids,
                                       message_id=self.courier.ids.next())
            try:
                self.inbox.send(ident, _SNDMORE | _NOBLOCK)
                self.inbox.send(frame, _NOBLOCK)
            except zmq.Again:
                pass   # the sender is gone or not reading: it redelivers what it still holds
        self._receipts.clear()
        self._receipts_owed = 0
        self._show_depth()

    def _reply(self, ident: bytes, env: Envelope, result: Any, error: bool = False) -> None:
        """Answer a request; a reply that cannot travel becomes an error reply."""
        try:
            frame = zmq_bus.encode_reply(env, self.name, result,
                                         message_id=self.courier.ids.next(), error=error)
            zmq_bus.check_size(frame, self.max_bytes, target=env.metadata.from_actor)
        except (TypeError, MessageTooLarge) as exc:
            self.errors += 1
            self.log.error("cannot reply to message %d from %s: %s", env.message_id,
                           env.metadata.from_actor, exc)
            info = zmq_bus.ErrorInfo.from_exception(
                exc if isinstance(exc, MessageTooLarge) else HandlerError(f"unencodable reply: {exc}"),
                actor=self.name, message_id=env.message_id)
            frame = zmq_bus.encode_reply(env, self.name, info, message_id=self.courier.ids.next(),
                                         error=True)
        self.inbox.send(ident, _SNDMORE)
        self.inbox.send(frame)

    # --- system channel --------------------------------------------------------

    def _health(self) -> Health:
        try:
            health = self._call(self.actor.health_check)
        except Exception as exc:
            return Health("unhealthy", f"health_check() raised {type(exc).__name__}: {exc}")
        if not isinstance(health, Health):
            return Health("unhealthy", f"health_check() returned {health!r}")
        return health

    def _while_waiting(self) -> None:
        """While a handler waits on a send or a request: the root's probes are
        still answered (waiting is not hanging)."""
        if self._system_mail:
            self._read_system_mail(between=False)
        self._report_if_due()

    def _report_if_due(self) -> None:
        """Publish the counters in the actor table when they moved, and send
        what the filters matched when that changed (at most once per heartbeat
        interval: a busy filter must not flood the root)."""
        if (self.handled, self.errors) != self._published:
            self.table.set_counters(self.slot, self.handled, self.errors, self._seconds,
                                    self._histogram)
            self._published = (self.handled, self.errors)
        if self.filter_hits != self._hits_sent:
            now = time.monotonic()
            if now >= self._next_report:
                self._next_report = now + self.boot.heartbeat_interval
                # Best effort: a root that is not keeping up is not waited for.
                self.system.send_nowait(FilterHits(self.boot.incarnation, dict(self.filter_hits)))
                self._hits_sent = dict(self.filter_hits)

    # --- sync/async hooks ------------------------------------------------------

    def _call(self, fn, *args):
        result = fn(*args)
        if inspect.isawaitable(result):
            result = self._run_async(result)
        return result

    def _run_async(self, awaitable):
        if self._loop is None:
            self._loop = asyncio.new_event_loop()
        return self._loop.run_until_complete(awaitable)


@contextlib.contextmanager
def _signals_to_the_main_thread():
    """Threads started inside block the signals the loop relies on, so the
    kernel delivers those to the main thread, where they break a blocking
    receive at once (taken by another thread, one would wait out the
    receive's timeout, up to a heartbeat interval)."""
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, _LOOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)


def _restricted(directory: Directory, own: str) -> dict[str, Peer]:
    """The senders whose messages are checked against their permissions: those
    that have some, but this actor itself (what it sends itself, such as the
    host link's thread handing in what came from another host, goes nowhere
    else)."""
    return {name: peer for name, peer in directory.peers.items()
            if peer.permissions is not None and name != own}


def _intake_limit(mailbox: MailboxSpec) -> int:
    """How big a backlog is taken off the socket. ``block`` leaves the rest in
    the socket (that is how its senders come to wait), and a backlog of Python
    objects costs far more per message than one of ZeroMQ frames; the other
    policies need every waiting message in hand to drop or refuse the right
    ones."""
    if mailbox.backpressure is Backpressure.BLOCK:
        return min(DRAIN_BATCH, mailbox.capacity)
    return mailbox.capacity


def _write_private(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (a reader sees the old file or the
    whole new one), readable by this user only."""
    fd, temporary = tempfile.mkstemp(dir=os.path.dirname(path) or ".",
                                     prefix=f".{os.path.basename(path)}.")   # mode 0600
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise


def run_actor(boot: ActorBoot, directory: Directory, table: ActorTable, actor_cls: type[Actor],
              endpoints: Endpoints | None = None) -> int:
    """Run one incarnation in this (freshly forked) process; returns its exit code.

    ``endpoints`` are this process's own sockets when a warm spare opened them
    ahead of time (never a context inherited across fork).
    """
    log_format.set_context(boot.spec.name, boot.incarnation)
    log = logging.getLogger(f"alysd.actor.{boot.spec.name}")
    try:
        return ActorProcess(boot, directory, table, actor_cls).run(endpoints)
    except Exception:
        log.critical("crashed:\n%s", traceback.format_exc().rstrip())
        return ExitCode.CRASH
