"""The root's side of the bus: run-time filters and subscriptions, and the
dead-letter queue's control commands.

The root never carries actor traffic; what it owns here is state every actor
must agree on, pushed over the system channel:

* message filters (``alysctl filter add|list|remove``), applied by each
  receiving actor;
* run-time subscriptions (``ctx.subscribe``), kept per incarnation and dropped
  when it ends, on top of the configured ones;
* the dead-letter queue, read, replayed and purged for ``alysctl dead-letters``.

A new incarnation gets the current filters and subscriptions as soon as it
says Hello, before it handles anything.
"""

from __future__ import annotations

import logging
import os
from typing import Callable, Iterable

import msgspec

from alysd import zmq_bus
from alysd.dead_letters import DeadLetter, DeadLetterQueue, Reason, describe
from alysd.errors import CommandError, ProtocolError, UnknownActor
from alysd.filters import ACTIONS
from alysd.protocol import SYSTEM_MAIL, FilterRule, Filters, Subscribers
from alysd.zmq_bus import Kind

log = logging.getLogger("alysd")

DEFAULT_LISTING = 50


class Recipient:
    """How the root reaches one live incarnation: its system connection and pid."""

    __slots__ = ("name", "pool", "send", "pid")

    def __init__(self, name: str, pool: str | None, send: Callable[[object], None], pid: int):
        self.name, self.pool, self.send, self.pid = name, pool, send, pid


class BusControl:
    def __init__(self, dead_letter_path: str, dead_letter_capacity: int, max_bytes: int,
                 recipients: Callable[[], Iterable[Recipient]]):
        # Every live incarnation, asked for only when there is something to push.
        self.recipients = recipients
        self.rules: dict[int, FilterRule] = {}
        # filter id -> matches counted by incarnations that ended; and by live
        # ones, per actor, as of their last heartbeat
        self.hits_done: dict[int, int] = {}
        self.hits_live: dict[str, dict[int, int]] = {}
        self._next_rule = 1
        # event type -> actor name -> the name it subscribed under (itself or its pool)
        self.subscriptions: dict[str, dict[str, str]] = {}
        self.dead_letter_path = dead_letter_path
        self.dead_letter_capacity = dead_letter_capacity
        self.max_bytes = max_bytes
        self._queue: DeadLetterQueue | None = None

    # --- pushing state to actors ------------------------------------------------------

    def greet(self, recipient: Recipient) -> None:
        """Bring a new incarnation up to date (nothing to send in the common case)."""
        messages = []
        if self.rules:
            messages.append(self._filters())
        if self.subscriptions:
            messages.append(self._subscribers())
        if messages:
            deliver(recipient, messages)

    def _broadcast(self, message) -> None:
        for recipient in self.recipients():
            deliver(recipient, [message])


    def _filters(self) -> Filters:
        return Filters(tuple(self.rules.values()))

    def _subscribers(self) -> Subscribers:
        table: dict[str, tuple[str, ...]] = {}
        for event, by_actor in self.subscriptions.items():
            names = list(dict.fromkeys(by_actor.values()))
            if names:
                table[event] = tuple(names)
        return Subscribers(table)

    # --- subscriptions -------------------------------------------------------------------

    def subscribe(self, recipient: Recipient, event_type: str) -> None:
        self.subscriptions.setdefault(event_type, {})[recipient.name] = (
            recipient.pool or recipient.name)
        self._broadcast(self._subscribers())

    def heard(self, name: str, filter_hits: dict[int, int]) -> None:
        """An incarnation's latest filter-match counts (from its heartbeat)."""
        if filter_hits:
            self.hits_live[name] = filter_hits

    def incarnation_ended(self, name: str) -> None:
        """Run-time subscriptions belong to the incarnation that made them; its
        filter matches are kept."""
        for rule_id, hits in self.hits_live.pop(name, {}).items():
            self.hits_done[rule_id] = self.hits_done.get(rule_id, 0) + hits
        changed = False
        for by_actor in self.subscriptions.values():
            if by_actor.pop(name, None) is not None:
                changed = True
        if changed:
            self.subscriptions = {e: s for e, s in self.subscriptions.items() if s}
            self._broadcast(self._subscribers())

    # --- filters ----------------------------------------------------------------------------

    def add_filter(self, args: dict, actors: Iterable[str]) -> dict:
        action = args.get("action")
        if action not in ACTIONS:
            raise CommandError(f"filter action must be one of {', '.join(ACTIONS)}, "
                               f"got {action!r}")
        rate = float(args.get("rate") if args.get("rate") is not None else 1.0)
        if not 0.0 < rate <= 1.0:
            raise CommandError(f"filter rate must be in (0, 1], got {rate:g}")
        delay = args.get("delay")
        if action == "delay":
            if delay is None or float(delay) <= 0:
                raise CommandError("a delay filter needs a positive delay")
            delay = float(delay)
        else:
            delay = None
        known = set(actors)
        for key in ("sender", "receiver"):
            name = args.get(key)
            if name is not None and not name.endswith("*") and name not in known:
                raise UnknownActor(f"filter {key} {name!r} is not a configured actor",
                                   actor=name)
        rule = FilterRule(id=self._next_rule, action=action, sender=args.get("sender"),
                          receiver=args.get("receiver"), message_type=args.get("message_type"),
                          rate=rate, delay=delay)
        self._next_rule += 1
        self.rules[rule.id] = rule
        self._broadcast(self._filters())
        log.warning("installed message filter %d: %s", rule.id, _show(rule))
        return {"id": rule.id}

    def matched(self, rule_id: int) -> int:
        """Messages ``rule_id`` matched so far (live counts as of the last heartbeats)."""
        return self.hits_done.get(rule_id, 0) + sum(
            hits.get(rule_id, 0) for hits in self.hits_live.values())

    def list_filters(self) -> dict:
        return {"filters": [msgspec.structs.asdict(rule) | {"matched": self.matched(rule.id)}
                            for rule in self.rules.values()]}

    def remove_filters(self, args: dict) -> dict:
        if args.get("all"):
            removed = list(self.rules)
        else:
            rule_id = args.get("id")
            if rule_id not in self.rules:
                raise CommandError(f"no filter with id {rule_id!r}")
            removed = [rule_id]
        for rule_id in removed:
            del self.rules[rule_id]
        if removed:
            self._broadcast(self._filters())
            log.warning("removed message filters %s", ", ".join(map(str, removed)))
        return {"removed": len(removed)}

    # --- dead letters -----------------------------------------------------------------------

    @property
    def queue(self) -> DeadLetterQueue:
        # Opened on first use, in the root only (after the zygote was forked).
        if self._queue is None:
            self._queue = DeadLetterQueue(self.dead_letter_path,
                                          capacity=self.dead_letter_capacity)
        return self._queue

    def list_dead_letters(self, args: dict) -> dict:
        limit = args.get("limit")
        limit = DEFAULT_LISTING if limit is None else int(limit)
        if limit < 0:
            raise CommandError(f"limit must be at least 0, got {limit}")
        stats = self.queue.stats()
        return {"letters": [describe(letter) for letter in self.queue.list(limit)],
                "count": stats.count, "evicted": stats.evicted,
                "by_reason": dict(stats.by_reason)}

    def dead_letters_by_reason(self) -> dict[str, int]:
        """Dead letters ever put, per reason (what eviction and purges leave counted)."""
        return dict(self.queue.stats().by_reason)

    def replay(self, args: dict, actors: set[str], send: Callable[[str, bytes], None],
               next_id: Callable[[], int]) -> dict:
        """Re-send one dead letter's payload to its target, as a one-way message
        from alysctl, and take it out of the queue."""
        letter_id = int(args["id"])
        letter = self.queue.get(letter_id)
        if letter is None:
            raise CommandError(f"no dead letter with id {letter_id}")
        if letter.target not in actors:
            raise UnknownActor(f"dead letter {letter_id} was for {letter.target!r}, which is "
                               f"not a configured actor", actor=letter.target)
        try:
            env = zmq_bus.decode_envelope(letter.frame, self.max_bytes)
        except ProtocolError as exc:
            raise CommandError(f"dead letter {letter_id} holds no valid message: {exc}") from None
        kind = Kind.BATCH if env.kind == Kind.BATCH else Kind.TELL
        mid = next_id()
        frame = zmq_bus.encode_envelope(kind, mid, msgspec.Raw(env.payload),
                                        sender=zmq_bus.CTL_IDENTITY, target=letter.target,
                                        priority=env.priority)
        send(letter.target, frame)
        self.queue.remove(letter_id)
        log.info("replayed dead letter %d to %s as message %d", letter_id, letter.target, mid)
        return {"id": letter_id, "target": letter.target, "message_id": mid}

    def undelivered(self, sender: str, records: list[tuple[str, bytes]]) -> int:
        """Dead-letter what ``sender`` journaled and nobody delivered, as alysd
        stops: nothing in flight vanishes with the runtime dir."""
        letters = []
        for target, frame in records:
            try:
                message_id = zmq_bus.decode_envelope(frame, self.max_bytes).message_id
            except ProtocolError:
                message_id = 0
            letters.append(DeadLetter(reason=Reason.TIMEOUT.value, sender=sender, target=target,
                                      message_id=message_id, frame=frame,
                                      detail="not delivered when alysd stopped"))
        if letters:
            self.queue.put_many(letters)
            log.warning("dead-lettered %d messages from %s that were not delivered when alysd "
                        "stopped", len(letters), sender)
        return len(letters)

    def purge(self) -> dict:
        purged = self.queue.purge()
        log.warning("purged %d dead letters", purged)
        return {"purged": purged}

    def close(self) -> None:
        if self._queue is not None:
            self._queue.close()
            self._queue = None


def _show(rule: FilterRule) -> str:
    parts = [rule.action]
    for key in ("sender", "receiver", "message_type"):
        value = getattr(rule, key)
        if value is not None:
            parts.append(f"{key}={value}")
    if rule.rate < 1.0:
        parts.append(f"rate={rule.rate:g}")
    if rule.delay is not None:
        parts.append(f"delay={rule.delay:g}s")
    return " ".join(parts)


def deliver(recipient: Recipient, messages: list) -> None:
    """System mail: send ``messages`` on the recipient's system channel, then
    SIGUSR1 so that it reads them now, idle or between two messages."""
    for message in messages:
        recipient.send(message)
    try:
        os.kill(recipient.pid, SYSTEM_MAIL)
    except ProcessLookupError:
        pass   # it died; its successor is greeted
