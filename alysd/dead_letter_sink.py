"""One process's way into the dead-letter queue: buffered, logged, never blocking
the caller on a failure of the store.

Each process (an actor, or the root) has one sink. It opens the queue on its
first letter, after the fork that made the process (an LMDB environment must not
cross a fork), collects letters while a handler pass runs and writes them in
one transaction at ``flush()``. A letter that cannot be stored (disk full, a
broken store) is logged with its ids and counted in ``lost``, so even then it
does not vanish silently.
"""

from __future__ import annotations

import logging
import time

from alysd.dead_letters import DeadLetter, DeadLetterQueue, RateLimitedLog, Reason


FLUSH_DELAY = 0.05     # seconds a dead letter may wait in memory while the process is busy
FLUSH_BATCH = 256


class DeadLetterSink:
    def __init__(self, path: str, capacity: int, log: logging.Logger):
        self.path = path
        self.capacity = capacity
        self.log = log
        self.written = 0
        self.lost = 0
        self._queue: DeadLetterQueue | None = None
        self.pending: list[DeadLetter] = []
        self._due = 0.0
        self._rate_limited = RateLimitedLog(log)

    def add(self, reason: Reason, *, sender: str, target: str, message_id: int, frame: bytes,
            detail: str | None = None) -> None:
        """Queue one letter for the next ``flush`` and log it (rate-limited)."""
        letter = DeadLetter(reason=reason.value, sender=sender, target=target,
                            message_id=message_id, frame=bytes(frame), detail=detail)
        if not self.pending:
            self._due = time.monotonic() + FLUSH_DELAY
        self.pending.append(letter)
        self._rate_limited.dead_letter(letter)

    def flush_if_due(self) -> None:
        """Flush when letters have waited ``FLUSH_DELAY`` or ``FLUSH_BATCH`` are
        queued: a process that never idles still stores its letters promptly."""
        if self.pending and (len(self.pending) >= FLUSH_BATCH or time.monotonic() >= self._due):
            self.flush()

    def flush(self) -> None:
        """Write every queued letter in one transaction."""
        if not self.pending:
            return
        letters, self.pending = self.pending, []
        try:
            if self._queue is None:
                self._queue = DeadLetterQueue(self.path, capacity=self.capacity)
            self._queue.put_many(letters)
            self.written += len(letters)
        except Exception as exc:
            self.lost += len(letters)
            self.log.error("could not store %d dead letters in %s (%s: %s); message ids: %s",
                           len(letters), self.path, type(exc).__name__, exc,
                           ", ".join(str(letter.message_id) for letter in letters))

    def close(self) -> None:
        self.flush()
        self._rate_limited.flush()
        if self._queue is not None:
            self._queue.close()
            self._queue = None
