"""A table in memory shared by the root and every actor: one slot per actor.

The root creates it (an anonymous ``MAP_SHARED`` mapping) before it forks the
zygote, so every process of the tree inherits the same pages and nothing is
left on disk. Each slot has two halves with one writer each, so no lock is
needed:

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

Slot layout (little endian, 64 bytes)::

    0  u32 incarnation   4 u8 state
    8  u8 kind+1 (0 = idle)   9 u16 sender index   11 u64 message id   19 f64 since
    32 u64 id of the message the last crash happened on   40 u32 crashes in a row on it
    48 u32 mailbox depth

Each field is written by one process with one aligned store (or a struct
pack of a few bytes) and read without a lock: a reader may see a value one
update old, never one torn across the fields it uses together, because the
fields read together are written together by the same writer.
"""

from __future__ import annotations

import mmap
import struct
import time
from dataclasses import dataclass

from alysd.zmq_bus import CTL_IDENTITY

SLOT = 64
_LIVENESS = struct.Struct("<IB")
_ACTIVITY = struct.Struct("<BHQd")
_IDLE = struct.Struct("<B")
_CRASHES = struct.Struct("<QI")
_DEPTH = struct.Struct("<I")
_SINCE = struct.Struct("<d")
_LOOK = struct.Struct("<IB43xI")     # incarnation, state, ..., depth at 48
_CRASHES_AT, _DEPTH_AT = 32, 48

RUNNING, EXITED = 1, 2
CTL_SENDER = 0xFFFF      # alysctl, through the root
UNKNOWN_SENDER = 0xFFFE


@dataclass(frozen=True)
class Activity:
    """What an actor was handling."""

    kind: int
    sender: str
    message_id: int
    since: float


class ActorTable:
    """Fixed-size shared slots, indexed by the actors' position in the configuration."""

    def __init__(self, names: list[str]):
        self.names = list(names)
        self.index = {name: i for i, name in enumerate(self.names)}
        self._mem = mmap.mmap(-1, max(1, len(self.names)) * SLOT,
                              flags=mmap.MAP_SHARED, prot=mmap.PROT_READ | mmap.PROT_WRITE)

    # --- the root's side ----------------------------------------------------------

    def set_running(self, name: str, incarnation: int) -> None:
        _LIVENESS.pack_into(self._mem, self.index[name] * SLOT, incarnation, RUNNING)
        _ACTIVITY.pack_into(self._mem, self.index[name] * SLOT + 8, 0, 0, 0, 0.0)
        _DEPTH.pack_into(self._mem, self.index[name] * SLOT + _DEPTH_AT, 0)

    def set_exited(self, name: str, incarnation: int) -> None:
        _LIVENESS.pack_into(self._mem, self.index[name] * SLOT, incarnation, EXITED)

    def record_crash(self, name: str, message_id: int) -> int:
        """Note that an incarnation of ``name`` died handling ``message_id``;
        returns how many incarnations in a row have died on that message."""
        at = self.index[name] * SLOT + _CRASHES_AT
        last, count = _CRASHES.unpack_from(self._mem, at)
        count = count + 1 if last == message_id else 1
        _CRASHES.pack_into(self._mem, at, message_id, count)
        return count

    def activity(self, name: str) -> Activity | None:
        """The message ``name`` was handling, or None when it was idle."""
        kind, sender, mid, since = _ACTIVITY.unpack_from(self._mem, self.index[name] * SLOT + 8)
        if not kind:
            return None
        if sender == CTL_SENDER:
            who = "alysctl"
        elif sender < len(self.names):
            who = self.names[sender]
        else:
            who = "?"
        return Activity(kind - 1, who, mid, since)

    # --- an actor's side --------------------------------------------------------------

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
