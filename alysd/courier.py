"""The sending half of an actor: routing, backpressure, and at-least-once delivery.

Every message an actor sends goes through its ``Courier``. Guarantees, for a
receiver whose mailbox ``delivery`` is ``at_least_once`` (the default):

* A message accepted by ``tell``/``request`` (no error raised) is handled by its
  receiver or dead-lettered with a reason. The courier keeps each one until the
  receiver acknowledges it (an ``ACK`` receipt, or the reply to a request); when
  the incarnation holding it dies, it is sent again to the next incarnation with
  ``metadata.retry_count`` + 1. A message that was being handled when
  ``max_retries`` incarnations in a row died is quarantined as ``poison``.
* While the receiver is not running (restarting, stopped) messages wait here, as
  Akka's stash does, bounded by the receiver's capacity; one that waited
  ``delivery_timeout`` is dead-lettered as ``timeout``.
* Order per sender–receiver pair is FIFO within a priority; a redelivery can
  overtake nothing that was acknowledged and may duplicate what was handled just
  before a crash (at-least-once, not exactly-once: handlers should be
  idempotent; ``ctx.message.metadata.retry_count > 0`` marks a redelivery).
* The receiver's backpressure policy is applied here, before sending, from its
  mailbox depth in the shared actor table and what this sender has in flight to
  it: ``fail`` raises ``MailboxFull`` at once, ``block`` waits for room up to the
  send timeout then raises ``MailboxFull``, ``drop_newest`` dead-letters the
  message, ``drop_oldest`` sends it (the receiver evicts).

The sender's copies also outlive the sender: each one-way message is written
to its outbox journal (``alysd.outbox_journal``) before it is sent, so a sender
killed right after ``send`` returned (ZeroMQ may not have written the frame
out yet) has its next incarnation send it again, and what is still undelivered
when alysd stops is dead-lettered. Requests are not journaled: a request lives
as long as its requester waits. The ``at_most_once`` delivery mode skips all of
the above for receivers that prefer throughput.

A reload changes the directory under a running courier (``use_directory``):
an added actor can be sent to at once; a changed receiver's capacity and
policy apply from the next send; what is held for a removed actor (stashed
while it was down, or awaiting its receipt) is dead-lettered as
``unknown_actor``, and sending to its name raises ``UnknownActor`` from then on.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from typing import Any, Callable

import zmq
import zmq.asyncio

from alysd import zmq_bus
from alysd.actor_table import CONDEMNED, RUNNING, ActorTable
from alysd.config import Backpressure, Delivery, Permissions
from alysd.dead_letter_sink import DeadLetterSink
from alysd.dead_letters import Reason
from alysd.errors import (ActorExited, ActorUnavailable, MailboxFull, PermissionDenied,
                          PoisonMessage, ProtocolError, RequestTimeout, UnknownActor)
from alysd.outbox_journal import OutboxJournal
from alysd.permissions import denial, names_of, type_of
from alysd.protocol import Directory, Peer
from alysd.runtime_dir import RuntimeDir
from alysd.zmq_bus import Envelope, Kind, Priority, RoutingKind

TEND_INTERVAL = 0.02        # how often unacknowledged messages are looked after
SEND_TIMEOUT = 5.0          # how long a send may wait for room before it fails
DRAIN_EVERY = 64            # read receipts at least every this many sends to a target
_get, _set = zmq_bus.sockopt_get, zmq_bus.sockopt_set
_NOBLOCK = int(zmq.NOBLOCK)
log = logging.getLogger("alysd.courier")
_TELL, _ASK, _EVENT, _BATCH = int(Kind.TELL), int(Kind.ASK), int(Kind.EVENT), int(Kind.BATCH)
_ACK, _ERROR = int(Kind.ACK), int(Kind.ERROR)


class Outbox:
    """Everything one sender has in flight to one receiver (an actor, not a pool)."""

    __slots__ = ("target", "slot", "peer", "sock", "tracked", "pending", "sends", "incarnation",
                 "stashed")

    def __init__(self, target: str, slot: int, peer: Peer, sock: zmq.Socket):
        self.target = target
        self.slot = slot
        self.peer = peer
        self.sock = sock
        self.tracked = peer.delivery is Delivery.AT_LEAST_ONCE
        # message id -> [frame, incarnation it went to (0 = not sent yet), since,
        #                journal handle]
        self.pending: dict[int, list] = {}
        self.sends = 0
        # The receiver's incarnation as of the last tend: everything pending was
        # sent to it or is stashed, so a tend only scans when this changes.
        self.incarnation = 0
        self.stashed = 0


class Courier:
    def __init__(self, name: str, zctx: zmq.Context, rundir: RuntimeDir, directory: Directory,
                 table: ActorTable, *, max_bytes: int, sink: DeadLetterSink,
                 delivery_timeout: float, on_wait: Callable[[], None], journal: OutboxJournal):
        self.name = name
        self.zctx = zctx
        self.rundir = rundir
        self.directory = directory
        self.permissions = _own(directory, name)
        self._warned: set[tuple[str, str]] = set()   # (receiver, why) logged in development
        # event type -> subscribers: the configured ones, then those of run time
        self.subscribers: dict[str, tuple[str, ...]] = dict(directory.subscribers)
        self._run_time: dict[str, tuple[str, ...]] = {}
        self.table = table
        self.max_bytes = max_bytes
        self.sink = sink
        self.delivery_timeout = delivery_timeout
        self.journal = journal
        # Called while a send or request waits, so the process still heartbeats.
        self.on_wait = on_wait
        self.ids = zmq_bus.MessageIds()
        self.outboxes: dict[str, Outbox] = {}
        # Replies to requests in progress that were read while reading receipts.
        self.waiting: set[int] = set()
        self.replies: dict[int, Envelope] = {}
        self._round_robin: dict[str, int] = {}
        self.unacked = 0
        self._next_tend = 0.0

    # --- routing --------------------------------------------------------------------

    def resolve(self, to: str) -> str:
        """The actor a message for ``to`` goes to: ``to`` itself, or one member of
        the pool ``to`` (round robin, or the least loaded by mailbox depth)."""
        if to in self.directory.peers:
            return to
        members = self.directory.pools.get(to)
        if members is None:
            raise UnknownActor(f"no actor named {to!r}", actor=to)
        i = self._round_robin.get(to, -1) + 1
        self._round_robin[to] = i
        n = len(members)
        if to in self.directory.least_loaded:
            return min((members[(i + k) % n] for k in range(n)), key=self._load)
        return members[i % n]

    def _load(self, member: str) -> tuple[int, float]:
        """How loaded a pool member looks: its mailbox plus the message in its
        hands; between equals, one that is idle, else the one whose message
        began last (a long handler is the likeliest to stay busy). Exact ties
        keep the round-robin order ``min`` was given."""
        slot = self.table.index[member]
        since = self.table.busy_since(slot)
        if not since:
            return self.table.depth(slot), -math.inf
        return self.table.depth(slot) + 1, -since

    def outbox(self, target: str) -> Outbox:
        box = self.outboxes.get(target)
        if box is None:
            sock = zmq_bus.connect_dealer(self.zctx, self.rundir.inbox(target), self.name)
            peer = self.directory.peers[target]
            _fit(sock, peer)
            box = self.outboxes[target] = Outbox(target, self.table.index[target], peer, sock)
        return box

    # --- a reload ---------------------------------------------------------------------

    def use_directory(self, directory: Directory) -> None:
        """Route by ``directory`` from now on (see the module's guarantees for
        the actors it added, changed or no longer has)."""
        self.directory = directory
        self.permissions = _own(directory, self.name)
        for name in [name for name in self.outboxes if name not in directory.peers]:
            self._forget(self.outboxes.pop(name))
        for name, box in self.outboxes.items():
            peer = directory.peers[name]
            if peer != box.peer:
                self._repeer(box, peer)
        self._round_robin = {pool: i for pool, i in self._round_robin.items()
                             if pool in directory.pools}
        self._merge_subscribers()

    def use_run_time_subscribers(self, table: dict[str, tuple[str, ...]]) -> None:
        """Who subscribed to what at run time (``ctx.subscribe``), on top of the
        configured subscribers."""
        self._run_time = dict(table)
        self._merge_subscribers()

    def _merge_subscribers(self) -> None:
        """The configured subscribers of each event, then the run-time ones
        not already among them. A name the directory does not know (an actor
        a reload removed, before the root dropped its subscriptions) is left
        out: a publish must not fail for it."""
        directory = self.directory
        merged = {event: list(names) for event, names in directory.subscribers.items()}
        for event, names in self._run_time.items():
            known = merged.setdefault(event, [])
            known += [n for n in names if n not in known
                      and (n in directory.peers or n in directory.pools)]
        self.subscribers = {event: tuple(names) for event, names in merged.items() if names}

    def _forget(self, box: Outbox) -> None:
        """A receiver removed by a reload: what is held for it is dead-lettered."""
        for mid in list(box.pending):
            entry = self._release(box, mid)
            self.sink.add(Reason.UNKNOWN_ACTOR, sender=self.name, target=box.target,
                          message_id=mid, frame=entry[0],
                          detail=f"{box.target!r} was removed from the configuration by a reload")
        box.sock.close(linger=0)

    def _repeer(self, box: Outbox, peer: Peer) -> None:
        """A receiver whose mailbox changed: its capacity and policy apply from
        the next send."""
        box.peer = peer
        _fit(box.sock, peer)
        tracked = peer.delivery is Delivery.AT_LEAST_ONCE
        if box.tracked and not tracked:
            # At most once from now on: what is held goes (once) if it never
            # went, and is not waited for.
            for mid in list(box.pending):
                entry = self._release(box, mid)
                if not entry[1] and not self._resend(box, entry[0]):
                    self.sink.add(Reason.MAILBOX_FULL, sender=self.name, target=box.target,
                                  message_id=mid, frame=entry[0],
                                  detail=f"the socket to {box.target!r} was full when it "
                                         "changed to at_most_once delivery")
            box.stashed = 0
        box.tracked = tracked

    @property
    def busy(self) -> bool:
        """True while any message awaits a receipt (the loop then tends every
        ``TEND_INTERVAL``)."""
        return self.unacked > 0

    # --- sending ----------------------------------------------------------------------

    def frame(self, target: str, kind: int, message: Any, *, priority: int = Priority.NORMAL,
              timeout: float | None = None, routing: int = RoutingKind.DIRECT,
              route: str | None = None, origin: str | None = None) -> tuple[int, bytes]:
        mid = self.ids.next()
        frame = zmq_bus.encode_envelope(kind, mid, message, sender=self.name, target=target,
                                        priority=priority, timeout=timeout, routing=routing,
                                        route=route, origin=origin)
        zmq_bus.check_size(frame, self.max_bytes, target=target)
        return mid, frame

    def tell(self, to: str, kind: int, message: Any, *, priority: int = Priority.NORMAL,
             routing: int = RoutingKind.DIRECT, route: str | None = None,
             timeout: float = SEND_TIMEOUT, origin: str | None = None) -> None:
        """Send a one-way message (``TELL``, ``EVENT`` or ``BATCH``) to ``to``.
        ``origin`` is for the host link only: the remote sender it relays for."""
        box = self.outboxes.get(to)      # the common case: an actor already sent to
        if box is None:
            target = self._target(to, message)
            box = self.outbox(target)
            if route is None and to != target:
                route = to
        if self.permissions is not None:
            self.permit(to, box.target, kind, message,
                        route if routing == RoutingKind.BROADCAST else None)
        mid, frame = self.frame(box.target, kind, message, priority=priority, routing=routing,
                                route=route, origin=origin)
        # One read of the shared table serves backpressure and liveness.
        incarnation, state, depth = self.table.look(box.slot)
        capacity = box.peer.capacity
        if depth >= capacity or len(box.pending) >= capacity:
            if not self._admit(box, mid, frame, timeout):
                return
            incarnation, state, depth = self.table.look(box.slot)
        self._in_order(box, incarnation, state)
        if state == RUNNING or not box.tracked:
            if not self._push(box, mid, frame):
                return
        else:
            incarnation = 0      # stashed until the receiver runs again
            box.stashed += 1
        if box.tracked:
            self._hold(box, mid, frame, incarnation)
            box.sends += 1
            if box.sends % DRAIN_EVERY == 0:
                self.read_receipts(box)

    def publish(self, event_type: str, message: Any) -> int:
        """``message`` to every subscriber of ``event_type`` (one member per pool)."""
        targets = self.subscribers.get(event_type, ())
        reached = 0
        for to in targets:
            try:
                self.tell(to, _EVENT, message, routing=RoutingKind.BROADCAST, route=event_type)
                reached += 1
            except PermissionDenied:
                pass   # dead-lettered; the other subscribers still get it
        return reached

    def permit(self, to: str, target: str, kind: int, message: Any,
               event_type: str | None = None) -> None:
        """Raise ``PermissionDenied`` (the message dead-lettered ``denied``) when
        this actor's permissions do not let ``message`` go to ``to`` (resolved
        to ``target``). In development the refusal is only logged, once."""
        if event_type is not None:
            types = [event_type]
        elif kind == _BATCH:
            types = [type_of(m) for m in message]
        else:
            types = [type_of(message)]
        why = denial(self.permissions, (to, *names_of(target)), types)
        if why is None:
            return
        detail = f"{self.name} {why}"
        if not self.permissions.enforced:
            if (target, why) not in self._warned:
                self._warned.add((target, why))
                log.warning("a message to %s would be denied outside development: %s",
                            target, detail)
            return
        self.sink.add(Reason.DENIED, sender=self.name, target=target, message_id=0,
                      frame=self._refused_frame(kind, message, target), detail=detail)
        raise PermissionDenied(detail, actor=to)

    def _target(self, to: str, message: Any) -> str:
        try:
            return self.resolve(to)
        except UnknownActor:
            self.sink.add(Reason.UNKNOWN_ACTOR, sender=self.name, target=to, message_id=0,
                          frame=self._refused_frame(_TELL, message, to),
                          detail="no such actor or pool in the configuration")
            raise

    def _refused_frame(self, kind: int, message: Any, target: str) -> bytes:
        """A message refused before it got an id, framed for its dead letter
        (empty when it cannot even be encoded)."""
        try:
            return zmq_bus.encode_envelope(kind, 0, message, sender=self.name, target=target)
        except TypeError:
            return b""

    def _push(self, box: Outbox, mid: int, frame: bytes) -> bool:
        """Hand a new message to the socket. When the socket's buffers stay full
        (a receiver that does not read): the drop policies dead-letter it and
        return False; the others dead-letter it and raise."""
        try:
            box.sock.send(frame)
            return True
        except zmq.Again:
            pass
        policy = box.peer.backpressure
        detail = f"the socket to {box.target!r} stayed full for {_get(box.sock, zmq.SNDTIMEO)} ms"
        if policy is Backpressure.DROP_NEWEST or policy is Backpressure.DROP_OLDEST:
            self.sink.add(Reason.DROPPED_NEWEST, sender=self.name, target=box.target,
                          message_id=mid, frame=frame, detail=detail)
            return False
        self.sink.add(Reason.MAILBOX_FULL, sender=self.name, target=box.target, message_id=mid,
                      frame=frame, detail=detail)
        raise (MailboxFull if policy is Backpressure.FAIL else ActorUnavailable)(
            f"actor {box.target!r} accepts nothing: {detail}", actor=box.target,
            message_id=mid)

    @staticmethod
    def _resend(box: Outbox, frame: bytes) -> bool:
        """Hand a message already accepted to the socket again, never blocking
        the loop; False when the socket is full (it is retried on a later tend)."""
        try:
            box.sock.send(frame, _NOBLOCK)
            return True
        except zmq.Again:
            return False

    def _in_order(self, box: Outbox, incarnation: int, state: int) -> None:
        """Before a new message goes to a running receiver, send what must go
        first to keep FIFO order: what was stashed while it was down, and what
        its previous incarnation died holding."""
        if state == RUNNING and box.tracked and (incarnation != box.incarnation or box.stashed):
            self.read_receipts(box)
            self._redeliver(box, incarnation)

    def _hold(self, box: Outbox, mid: int, frame: bytes, incarnation: int) -> None:
        """Keep (and journal) a copy of a message until its receipt."""
        box.pending[mid] = [frame, incarnation, time.monotonic(),
                            self.journal.append(box.target, frame)]
        self.unacked += 1

    def _release(self, box: Outbox, mid: int) -> list | None:
        """Forget the copy of a message that needs no more delivery (receipted,
        answered or dead-lettered); returns it, or None if there was none."""
        entry = box.pending.pop(mid, None)
        if entry is not None:
            self.unacked -= 1
            self.journal.done(entry[3])
        return entry

    def _quarantined(self, box: Outbox, mid: int, frame: bytes) -> str | None:
        """Whether ``mid`` is the message ``max_retries`` incarnations in a row
        died handling; if so it is dead-lettered as poison and the reason is
        returned."""
        crashed, crashes = self.table.crashes(box.slot)
        if mid != crashed or crashes < box.peer.max_retries:
            return None
        why = ("its handler ran past max_cpu_time and was killed" if crashes == CONDEMNED
               else f"{crashes} incarnations in a row died handling it")
        self.sink.add(Reason.POISON, sender=self.name, target=box.target, message_id=mid,
                      frame=frame, detail=why)
        return why

    def _has_room(self, box: Outbox) -> bool:
        capacity = box.peer.capacity
        return self.table.depth(box.slot) < capacity and len(box.pending) < capacity

    def _admit(self, box: Outbox, mid: int, frame: bytes, timeout: float = SEND_TIMEOUT) -> bool:
        """Apply the receiver's backpressure policy; False when the message was
        dropped (and dead-lettered) instead of sent."""
        if self._has_room(box):
            return True
        self.read_receipts(box)
        if self._has_room(box):
            return True
        policy = box.peer.backpressure
        if policy is Backpressure.DROP_OLDEST:
            return True
        detail = f"mailbox at its capacity of {box.peer.capacity}"
        if policy is Backpressure.DROP_NEWEST:
            self.sink.add(Reason.DROPPED_NEWEST, sender=self.name, target=box.target,
                          message_id=mid, frame=frame, detail=detail)
            return False
        if policy is Backpressure.BLOCK:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                self._wait_for_receipts(box, deadline)
                if self._has_room(box):
                    return True
            detail += f"; waited {timeout:g}s for room"
        self.sink.add(Reason.MAILBOX_FULL, sender=self.name, target=box.target, message_id=mid,
                      frame=frame, detail=detail)
        raise MailboxFull(f"mailbox of {box.target!r} is full ({detail})", actor=box.target,
                          message_id=mid)

    def _wait_for_receipts(self, box: Outbox, deadline: float) -> None:
        wait = max(0.0, min(deadline - time.monotonic(), TEND_INTERVAL))
        if box.sock.poll(int(wait * 1000) or 1):
            self.read_receipts(box)
        else:
            self.tend()
            self.on_wait()

    # --- receipts ------------------------------------------------------------------------

    def read_receipts(self, box: Outbox) -> None:
        """Take in every receipt (and stray reply) waiting on ``box``'s socket."""
        sock = box.sock
        while _get(sock, zmq_bus.EVENTS) & zmq_bus.POLLIN:
            try:
                data = sock.recv(_NOBLOCK)
            except zmq.Again:
                return
            env = self._receipt(box, data)
            if env is not None and env.correlation_id in self.waiting:
                self.replies[env.correlation_id] = env

    def _receipt(self, box: Outbox, data: bytes) -> Envelope | None:
        """Apply one frame from a receiver; returns it when it is a reply."""
        try:
            env = zmq_bus.decode_envelope(data, self.max_bytes)
        except ProtocolError as exc:
            self.sink.log.warning("ignored a malformed frame from %r: %s", box.target, exc)
            return None
        kind = env.kind
        pending = box.pending
        if kind == _ACK:
            try:
                acked = zmq_bus.decode_any(env.payload)
            except ProtocolError:
                return None
            if isinstance(acked, list):
                for mid in acked:
                    if mid in pending:
                        self._release(box, mid)
            return None
        if env.correlation_id is not None:
            self._release(box, env.correlation_id)
        return env

    # --- looking after unacknowledged messages ---------------------------------------

    def tend_if_due(self) -> None:
        now = time.monotonic()
        if now >= self._next_tend:
            self._next_tend = now + TEND_INTERVAL
            self.tend()

    def tend(self) -> None:
        """Read receipts, send what waited for a receiver to run, redeliver what a
        dead incarnation held, dead-letter what waited too long.

        Costs one socket-option read and one table read per receiver with
        messages in flight, unless that receiver's incarnation changed (then
        its pending messages are scanned once)."""
        now = time.monotonic()
        for box in self.outboxes.values():
            if not box.pending:
                continue
            self.read_receipts(box)
            if not box.pending:
                continue
            incarnation, state, _ = self.table.look(box.slot)
            if state == RUNNING:
                if incarnation != box.incarnation or box.stashed:
                    self._redeliver(box, incarnation)
            else:
                self._expire(box, now)

    def take_over(self, records: list[tuple[str, bytes]]) -> int:
        """Adopt what a previous incarnation journaled and never saw receipted:
        each is sent again (``retry_count`` + 1) once its receiver runs.
        Returns how many were adopted; those for unknown actors are
        dead-lettered."""
        adopted = 0
        for target, frame in records:
            try:
                frame, env = zmq_bus.redelivery(frame)
            except zmq_bus.DECODE_ERRORS:
                continue
            if target not in self.directory.peers:
                self.sink.add(Reason.UNKNOWN_ACTOR, sender=self.name, target=target,
                              message_id=env.message_id, frame=frame,
                              detail="journaled for an actor no longer configured")
                continue
            box = self.outbox(target)
            if not box.tracked or env.message_id in box.pending:
                continue
            self._hold(box, env.message_id, frame, 0)
            box.stashed += 1
            adopted += 1
        return adopted

    def settle(self, timeout: float) -> None:
        """Wait up to ``timeout`` for the receipts of what is still in flight (an
        orderly stop: this process's copies are about to go)."""
        deadline = time.monotonic() + timeout
        while self.busy:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            poller = zmq.Poller()
            for box in self.outboxes.values():
                if box.pending:
                    poller.register(box.sock, zmq.POLLIN)
            poller.poll(max(1, int(min(remaining, TEND_INTERVAL) * 1000)))
            self.tend()       # reads the receipts that woke the poll

    def _redeliver(self, box: Outbox, incarnation: int) -> None:
        stale = [mid for mid, entry in box.pending.items() if entry[1] != incarnation]
        box.incarnation = incarnation
        box.stashed = 0
        for mid in stale:
            entry = box.pending[mid]
            if entry[1]:
                # A dead incarnation held it: quarantine, or send it once more.
                if self._quarantined(box, mid, entry[0]):
                    self._release(box, mid)
                    continue
                entry[0] = zmq_bus.redelivery(entry[0])[0]
            if self._resend(box, entry[0]):
                entry[1] = incarnation
            else:
                entry[1] = 0          # prepared; sent on a later tend
                box.stashed += 1

    def _expire(self, box: Outbox, now: float) -> None:
        # Pending messages are in sending order, so the expired ones come first.
        limit = now - self.delivery_timeout
        expired = []
        for mid, entry in box.pending.items():
            if entry[2] >= limit:
                break
            expired.append(mid)
        for mid in expired:
            entry = self._release(box, mid)
            self.sink.add(Reason.TIMEOUT, sender=self.name, target=box.target, message_id=mid,
                          frame=entry[0], detail=f"{box.target!r} was not running for "
                          f"{self.delivery_timeout:g}s")

    # --- requests ---------------------------------------------------------------------------

    def request(self, to: str, message: Any, *, timeout: float, priority: int) -> Any:
        """Send a request and block for its reply (see ``Context.request``)."""
        call = _Call(self, to, message, timeout, priority)
        sock = call.box.sock
        try:
            while True:
                remaining = call.remaining()
                # Block in recv (not poll: ~30 us faster), waking every TEND_INTERVAL to
                # see whether the target died, and to heartbeat: waiting is not hanging.
                _set(sock, zmq_bus.RCVTIMEO, max(1, min(int(remaining * 1000),
                                                         int(TEND_INTERVAL * 1000))))
                try:
                    env = call.answer(sock.recv())
                except zmq.Again:
                    env = call.tick()
                    self.on_wait()
                if env is not None:
                    return call.result(env)
        finally:
            call.close()

    async def request_async(self, to: str, message: Any, *, timeout: float,
                            priority: int) -> Any:
        call = _Call(self, to, message, timeout, priority)
        sock = zmq.asyncio.Socket.from_socket(call.box.sock)
        receiving = asyncio.ensure_future(sock.recv())
        try:
            while True:
                remaining = call.remaining()
                done, _ = await asyncio.wait({receiving}, timeout=min(remaining, TEND_INTERVAL))
                if done:
                    env = call.answer(receiving.result())
                    receiving = asyncio.ensure_future(sock.recv())
                else:
                    env = call.tick()
                if env is not None:
                    return call.result(env)
        finally:
            receiving.cancel()
            call.close()


def _own(directory: Directory, name: str) -> Permissions | None:
    """This actor's own permissions, as the directory has them."""
    peer = directory.peers.get(name)
    return peer.permissions if peer is not None else None


def _fit(sock: zmq.Socket, peer: Peer) -> None:
    """Set a sender's socket to its receiver's mailbox."""
    # A receiver that refuses when full must not make its senders wait on
    # ZeroMQ's own high-water mark either.
    sock.setsockopt(zmq.SNDTIMEO, 0 if peer.backpressure is Backpressure.FAIL
                    else int(SEND_TIMEOUT * 1000))
    # The receiver's capacity, not ZeroMQ's default of 1000, bounds what this
    # sender has in flight (it keeps a copy of each until receipted). ZeroMQ
    # keeps a connection's high-water mark for its life: a capacity changed by
    # a reload reaches it at the next connection, and the sender's own checks
    # of depth and in-flight messages against the capacity at once.
    sock.setsockopt(zmq.SNDHWM, peer.capacity + DRAIN_EVERY)


class _Call:
    """One request in flight: its frame, where it went, and what its reply means."""

    def __init__(self, courier: Courier, to: str, message: Any, timeout: float, priority: int):
        self.courier = courier
        self.to = to
        self.timeout = timeout
        self.deadline = time.monotonic() + timeout
        target = courier._target(to, message)
        if courier.permissions is not None:
            courier.permit(to, target, _ASK, message)
        self.box = box = courier.outbox(target)
        self.mid, self.frame = courier.frame(target, _ASK, message, priority=priority,
                                             timeout=timeout,
                                             route=to if to != target else None)
        if not courier._admit(box, self.mid, self.frame, timeout):
            raise self._dropped()
        courier.waiting.add(self.mid)
        incarnation, state, _ = courier.table.look(box.slot)
        courier._in_order(box, incarnation, state)
        # The incarnation holding the request; 0 while none does (an untracked
        # request pushed to a receiver that is down latches onto the next one).
        self.sent_to = 0
        self.pushed = False
        if state == RUNNING or not box.tracked:
            if not courier._push(box, self.mid, self.frame):
                raise self._dropped()
            self.pushed = True
            self.sent_to = incarnation if state == RUNNING else 0

    def _dropped(self) -> MailboxFull:
        """A request the receiver's drop policy refused: unlike a one-way
        message, its sender is told, since it would otherwise wait for nothing."""
        self.courier.waiting.discard(self.mid)
        return MailboxFull(f"mailbox of {self.box.target!r} is full: request {self.mid} was "
                           f"dead-lettered by its {self.box.peer.backpressure.value} policy",
                           actor=self.box.target, message_id=self.mid)

    def remaining(self) -> float:
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            if not self.pushed:
                self.courier.sink.add(Reason.TIMEOUT, sender=self.courier.name,
                                      target=self.box.target, message_id=self.mid,
                                      frame=self.frame,
                                      detail=f"not running within the request's {self.timeout:g}s")
            raise RequestTimeout(f"no reply from {self.to!r} within {self.timeout:g}s",
                                 actor=self.box.target, message_id=self.mid)
        return remaining

    def close(self) -> None:
        self.courier.waiting.discard(self.mid)
        self.courier.replies.pop(self.mid, None)

    def answer(self, data: bytes) -> Envelope | None:
        """The reply, if ``data`` is it (else it was a receipt or a late answer)."""
        env = self.courier._receipt(self.box, data)
        if env is None or env.correlation_id != self.mid:
            return None
        return env

    @staticmethod
    def result(env: Envelope) -> Any:
        if env.kind == _ERROR:
            raise zmq_bus.decode_error(env.payload)
        return zmq_bus.decode_any(env.payload)

    def tick(self) -> Envelope | None:
        """Between waits: tend every outbox; follow the target across a restart.
        Returns the reply when tending read it."""
        courier, box = self.courier, self.box
        courier.tend()
        env = courier.replies.pop(self.mid, None)
        if env is not None:
            return env
        incarnation, state, _ = courier.table.look(box.slot)
        if state != RUNNING or incarnation == self.sent_to:
            return None
        if self.sent_to == 0 and self.pushed:
            self.sent_to = incarnation
            return None
        if self.sent_to:
            # The incarnation holding the request is gone.
            if not box.tracked:
                raise ActorExited(f"actor {box.target!r} exited while handling request "
                                  f"{self.mid}", actor=box.target, message_id=self.mid)
            why = courier._quarantined(box, self.mid, self.frame)
            if why:
                raise PoisonMessage(f"request {self.mid} to {box.target!r} was quarantined: "
                                    f"{why}", actor=box.target, message_id=self.mid)
            self.frame = zmq_bus.redelivery(self.frame)[0]
            self.sent_to = 0
            self.pushed = False
        if courier._resend(box, self.frame):
            self.pushed = True
            self.sent_to = incarnation
        return None

