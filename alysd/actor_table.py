"""A table in memory shared by the root and every actor: one slot per actor.

The root creates it (an anonymous ``MAP_SHARED`` mapping) before it forks the
zygote, so every process of the tree inherits the same pages and nothing is
left on disk. Each field of a slot has one writer, so no lock is needed:

* liveness, written by the root: the current incarnation and whether it runs.
  A sender reads it to stash messages while its receiver is down and to
  redeliver what an incarnation that ended was holding.
* activity, written by the actor: the message it is handling (id, kind,
  sender, since when). The root reads it after the actor died, when nothing
  writes it any more, to say in the crash report what the actor was doing.
* crashes, written by the root when an incarnation dies while handling a
  message: that message's id and how many incarnations in a row died on it.
  A sender about to redeliver that message reads it to quarantine a poison
  message instead of feeding it to the next incarnation.
* depth, written by the actor: how many messages wait in its mailbox. Senders
  read it to apply the receiver's backpressure policy before they send, and
  ``alysctl status`` shows it.
* beat, written by the actor's heartbeat thread once per heartbeat interval:
  the root reads it to tell a live actor from a hung one without any message.
* counters, written by the actor every few messages and before it blocks:
  messages handled, handler failures, and a histogram of handling times
  (``PROCESSING_BUCKETS``). The root reads them for status and metrics; they
  start from zero with each incarnation.

Slot layout (little endian, 192 bytes)::

    0  u32 incarnation   4 u8 state
    8  u8 kind+1 (0 = idle)   9 u16 sender index   11 u64 message id   19 f64 since
    32 u64 id of the message the last crash happened on   40 u32 crashes in a row on it
    48 u32 mailbox depth   52 u32 beat
    56 u64 handled   64 u64 errors   72 f64 seconds spent handling
    80 u64 x 11 handling-time histogram: one count per bucket, the last for +Inf

Each field is written by one process with one aligned store (or a struct
pack of a few bytes) and read without a lock: a reader may see a value one
update old, never one torn across the fields it uses together, because the
fields read together are written together by the same writer. The counters
are the exception: read while being written they may mix two updates, which
figures for status and metrics tolerate.

Slots for actors added later (a reload): a mapping shared across fork cannot
grow, so the table is created with ``spare`` slots beyond the configured
actors. The root hands them out with ``add`` (``TableFull`` once they are all
used), and tells every process the new names' slots, which each records with
``adopt`` (the name-to-slot index is per process; the slots themselves are the
shared memory). A slot is never reused for another actor within the daemon's
life, even after its actor was removed: a process that has not yet heard of
the removal (a sender with messages in flight, the root reading a dead
incarnation's activity or crash count) may still read it under the old name,
and must then see that actor's last state, never another actor's liveness,
depth or poison-message count.
"""

from __future__ import annotations

import mmap
import struct
import time
from dataclasses import dataclass

from alysd.errors import AlysdError
from alysd.zmq_bus import CTL_IDENTITY

SLOT = 192
PROCESSING_BUCKETS = (0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0)
"""Upper bounds (seconds) of the handling-time histogram; a last bucket holds the rest."""
_LIVENESS = struct.Struct("<IB")
_ACTIVITY = struct.Struct("<BHQd")
_IDLE = struct.Struct("<B")
_CRASHES = struct.Struct("<QI")
_DEPTH = struct.Struct("<I")
_SINCE = struct.Struct("<d")
_LOOK = struct.Struct("<IB43xI")     # incarnation, state, ..., depth at 48
_BEAT = struct.Struct("<I")
_COUNTERS = struct.Struct(f"<QQd{len(PROCESSING_BUCKETS) + 1}Q")
_CRASHES_AT, _DEPTH_AT, _BEAT_AT, _COUNTERS_AT = 32, 48, 52, 56

RUNNING, EXITED = 1, 2
CONDEMNED = 0xFFFFFFFF   # crashes "in a row" of a message the root quarantines at once
CTL_SENDER = 0xFFFF      # alysctl, through the root
UNKNOWN_SENDER = 0xFFFE


@dataclass(frozen=True)
class Activity:
    """What an actor was handling."""

    kind: int
    sender: str
    message_id: int
    since: float


@dataclass(frozen=True)
class Counters:
    """An incarnation's message counters, as last published by it."""

    handled: int = 0
    errors: int = 0
    seconds: float = 0.0
    histogram: tuple[int, ...] = (0,) * (len(PROCESSING_BUCKETS) + 1)

    def __add__(self, other: "Counters") -> "Counters":
        return Counters(self.handled + other.handled, self.errors + other.errors,
                        self.seconds + other.seconds,
                        tuple(a + b for a, b in zip(self.histogram, other.histogram)))


class TableFull(AlysdError):
    """Every slot of the actor table was used: no more actors can be added
    until alysd restarts."""

    def __init__(self, name: str, capacity: int):
        self.name = name
        self.capacity = capacity
        super().__init__(f"cannot add actor {name!r}: all {capacity} slots of the actor table "
                         "were used (slots of removed actors are not reused); restart alysd "
                         "to add more")


class ActorTable:
    """Fixed-size shared slots: the configured actors in configuration order,
    then ``spare`` slots for actors added later."""

    def __init__(self, names: list[str], spare: int = 0):
        self.names: list[str] = []              # slot -> actor name ("" if unused here)
        self.index: dict[str, int] = {}         # actor name -> slot
        self.capacity = len(names) + spare
        self._next = 0                          # the next slot never handed out
        self._mem = mmap.mmap(-1, max(1, self.capacity) * SLOT,
                              flags=mmap.MAP_SHARED, prot=mmap.PROT_READ | mmap.PROT_WRITE)
        self.adopt({name: slot for slot, name in enumerate(names)})

    def adopt(self, slots: dict[str, int]) -> None:
        """Record the slots of actors added elsewhere (by the root): in every
        process that will look at them. Adopting the same slots again changes
        nothing."""
        for name, slot in slots.items():
            if not 0 <= slot < self.capacity:
                raise ValueError(f"slot {slot} of actor {name!r} is outside the actor table "
                                 f"(capacity {self.capacity})")
            if slot >= len(self.names):
                self.names.extend([""] * (slot + 1 - len(self.names)))
            self.names[slot] = name
            self.index[name] = slot
            self._next = max(self._next, slot + 1)

    # --- the root's side ----------------------------------------------------------

    def add(self, name: str) -> int:
        """A slot for an actor added at run time: one never used before, so it
        reads as never started. Raises ``TableFull`` when none is left."""
        if self._next >= self.capacity:
            raise TableFull(name, self.capacity)
        slot = self._next
        self.adopt({name: slot})
        return slot

    def set_running(self, name: str, incarnation: int) -> None:
        _LIVENESS.pack_into(self._mem, self.index[name] * SLOT, incarnation, RUNNING)
        _ACTIVITY.pack_into(self._mem, self.index[name] * SLOT + 8, 0, 0, 0, 0.0)
        _DEPTH.pack_into(self._mem, self.index[name] * SLOT + _DEPTH_AT, 0)
        self._mem[self.index[name] * SLOT + _COUNTERS_AT:
                  self.index[name] * SLOT + _COUNTERS_AT + _COUNTERS.size] = bytes(_COUNTERS.size)

    def set_exited(self, name: str, incarnation: int) -> None:
        _LIVENESS.pack_into(self._mem, self.index[name] * SLOT, incarnation, EXITED)

    def record_crash(self, name: str, message_id: int) -> int:
        """Note that an incarnation of ``name`` died handling ``message_id``;
        returns how many incarnations in a row have died on that message."""
        at = self.index[name] * SLOT + _CRASHES_AT
        last, count = _CRASHES.unpack_from(self._mem, at)
        count = min(count + 1, CONDEMNED) if last == message_id else 1
        _CRASHES.pack_into(self._mem, at, message_id, count)
        return count

    def condemn(self, name: str, message_id: int) -> int:
        """Mark ``message_id`` as poison whatever its crash count: its handler
        was killed for running past ``max_cpu_time``. Returns ``CONDEMNED``."""
        _CRASHES.pack_into(self._mem, self.index[name] * SLOT + _CRASHES_AT, message_id, CONDEMNED)
        return CONDEMNED

    def activity(self, name: str) -> Activity | None:
        """The message ``name`` was handling, or None when it was idle."""
        kind, sender, mid, since = _ACTIVITY.unpack_from(self._mem, self.index[name] * SLOT + 8)
        if not kind:
            return None
        if sender == CTL_SENDER:
            who = "alysctl"
        elif sender < len(self.names) and self.names[sender]:
            who = self.names[sender]
        else:
            who = "?"
        return Activity(kind - 1, who, mid, since)

    def beat(self, name: str) -> int:
        """The heartbeat counter of ``name``: it changes while the actor lives."""
        return _BEAT.unpack_from(self._mem, self.index[name] * SLOT + _BEAT_AT)[0]

    def counters(self, name: str) -> Counters:
        handled, errors, seconds, *histogram = _COUNTERS.unpack_from(
            self._mem, self.index[name] * SLOT + _COUNTERS_AT)
        return Counters(handled, errors, seconds, tuple(histogram))

    # --- an actor's side --------------------------------------------------------------

    def set_beat(self, slot: int, beat: int) -> None:
        _BEAT.pack_into(self._mem, slot * SLOT + _BEAT_AT, beat & 0xFFFFFFFF)

    def set_counters(self, slot: int, handled: int, errors: int, seconds: float,
                     histogram: list[int]) -> None:
        _COUNTERS.pack_into(self._mem, slot * SLOT + _COUNTERS_AT, handled, errors, seconds,
                            *histogram)

    def look(self, slot: int) -> tuple[int, int, int]:
        """(incarnation, state, mailbox depth) of the actor in ``slot``, in one read:
        what a sender needs before each message."""
        return _LOOK.unpack_from(self._mem, slot * SLOT)

    def crashes(self, slot: int) -> tuple[int, int]:
        """(message id, crashes in a row on it) of the last crash while handling."""
        return _CRASHES.unpack_from(self._mem, slot * SLOT + _CRASHES_AT)

    def busy_since(self, slot: int) -> float:
        """When the actor in ``slot`` began the message in its hands; 0.0 when idle."""
        at = slot * SLOT + 8
        return _SINCE.unpack_from(self._mem, at + 11)[0] if self._mem[at] else 0.0

    def depth(self, slot: int) -> int:
        return _DEPTH.unpack_from(self._mem, slot * SLOT + _DEPTH_AT)[0]

    def set_depth(self, slot: int, depth: int) -> None:
        _DEPTH.pack_into(self._mem, slot * SLOT + _DEPTH_AT, min(depth, 0xFFFFFFFF))

    def sender_index(self, sender: str) -> int:
        if sender == CTL_IDENTITY:
            return CTL_SENDER
        return self.index.get(sender, UNKNOWN_SENDER)

    def handling(self, slot: int, kind: int, sender: int, message_id: int) -> None:
        _ACTIVITY.pack_into(self._mem, slot * SLOT + 8, kind + 1, sender, message_id, time.time())

    def idle(self, slot: int) -> None:
        _IDLE.pack_into(self._mem, slot * SLOT + 8, 0)
