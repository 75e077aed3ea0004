"""An actor's mailbox: a bounded, stable priority queue with a backpressure policy.

Pure data structure, no sockets: the receive loop offers each accepted message
and pops the next one to handle. Guarantees:

* higher priority first, and FIFO within a priority (stable);
* ``len()`` is the number of messages waiting, a batch counting as its size;
* a full mailbox never grows past ``capacity`` through ``offer`` except under
  ``block`` (the loop stops taking messages off the socket instead, so the
  sender's own send waits, and an overshoot is bounded by what was already in
  flight);
* every message refused or evicted is returned to the caller, which
  dead-letters it: nothing leaves the mailbox silently;
* ``resize`` never drops, evicts or reorders a message already in: a
  capacity below the current depth keeps every message held, and the
  mailbox then takes more only as its policy does when full (``drop_newest``
  and ``fail`` refuse, ``drop_oldest`` evicts an entry for each one it takes,
  ``block`` accepts while the loop reads no more off the socket) until
  handling brings the depth under the new capacity.
"""

from __future__ import annotations

import collections
import enum
from typing import Any

from alysd.config import Backpressure

PRIORITIES = 4     # zmq_bus.Priority: LOW, NORMAL, HIGH, CRITICAL


class Admission(enum.Enum):
    """What ``offer`` did with a message."""

    ACCEPTED = "accepted"
    EVICTED = "evicted"        # accepted; the oldest lowest-priority message made room
    REFUSED = "refused"        # not accepted (drop_newest, fail)


_ACCEPTED = (Admission.ACCEPTED, None)


class Mailbox:
    """Messages waiting to be handled. An entry is any object; ``size`` is how
    many messages it stands for (a batch is one entry of many messages)."""

    def __init__(self, capacity: int, policy: Backpressure):
        self.capacity = capacity
        self.policy = policy
        self._queues: tuple[collections.deque, ...] = tuple(
            collections.deque() for _ in range(PRIORITIES))
        # Scanned highest priority first.
        self._order = tuple(reversed(self._queues))
        self._depth = 0
        self._sizes: dict[int, int] = {}

    def __len__(self) -> int:
        return self._depth

    def __bool__(self) -> bool:
        return self._depth > 0

    def resize(self, capacity: int) -> None:
        """Change the capacity from the next ``offer`` on (see the module's
        guarantees for a capacity below the current depth)."""
        if capacity < 1:
            raise ValueError(f"a mailbox capacity must be at least 1, not {capacity}")
        self.capacity = capacity

    def offer(self, entry: Any, priority: int, size: int = 1) -> tuple[Admission, Any]:
        """Take ``entry`` in, or not, by the policy; returns what happened and the
        entry that left (the evicted one, the refused one itself, or None)."""
        if self._depth + size <= self.capacity or not self._depth:
            self._put(entry, priority, size)
            return _ACCEPTED
        policy = self.policy
        if policy is Backpressure.DROP_NEWEST or policy is Backpressure.FAIL:
            return Admission.REFUSED, entry
        if policy is Backpressure.DROP_OLDEST:
            evicted = self._evict(priority)
            if evicted is None:
                return Admission.REFUSED, entry
            self._put(entry, priority, size)
            return Admission.EVICTED, evicted
        self._put(entry, priority, size)
        return _ACCEPTED

    def _put(self, entry: Any, priority: int, size: int) -> None:
        self._queues[priority].append(entry)
        self._depth += size
        if size != 1:
            # Entries are stored bare (no per-message wrapper); the rare
            # multi-message ones have their size noted aside.
            self._sizes[id(entry)] = size

    def _taken(self, entry: Any) -> Any:
        self._depth -= self._sizes.pop(id(entry), 1) if self._sizes else 1
        return entry

    def _evict(self, incoming: int) -> Any:
        """Remove the oldest entry of the lowest priority present, never one of
        higher priority than the incoming message."""
        for priority in range(incoming + 1):
            queue = self._queues[priority]
            if queue:
                return self._taken(queue.popleft())
        return None

    def pop(self) -> Any:
        """The next entry to handle; raises IndexError when empty."""
        for queue in self._order:
            if queue:
                return self._taken(queue.popleft())
        raise IndexError("pop from an empty mailbox")

    def drain(self) -> list[Any]:
        """Remove and return every entry, in the order ``pop`` would."""
        out = []
        while self._depth:
            out.append(self.pop())
        return out
