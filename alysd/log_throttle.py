"""At most so many log lines per key per window, and a count of the rest.

A flood (a crash loop, a client retrying a refused command, a storm of dead
letters) must not flood the journal, but nothing may vanish silently either:
what a window suppressed is handed to the next line logged for the same key,
and ``pending`` reports what no later line carried yet.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass


@dataclass
class _Window:
    start: float
    logged: int = 0
    suppressed: int = 0


class LogThrottle:
    """``admit(key)`` says whether a line for ``key`` may be logged now: at most
    ``burst`` per ``per`` seconds for each key."""

    def __init__(self, *, burst: int, per: float, clock: Callable[[], float] = time.monotonic):
        self.burst = burst
        self.per = per
        self.clock = clock
        self._windows: dict[str, _Window] = {}

    def admit(self, key: str) -> int | None:
        """None when the line must not be logged (it is counted); otherwise how
        many lines for ``key`` a window that ended suppressed, to say so."""
        now = self.clock()
        window = self._windows.get(key)
        left_out = 0
        if window is None or now - window.start >= self.per:
            left_out = window.suppressed if window else 0
            window = self._windows[key] = _Window(start=now)
        if window.logged >= self.burst:
            window.suppressed += 1
            return None
        window.logged += 1
        return left_out

    def forget_quiet(self) -> None:
        """Drop the windows that are over and held nothing back (keys that come
        and go, such as formatted messages, would otherwise pile up)."""
        now = self.clock()
        self._windows = {key: w for key, w in self._windows.items()
                         if w.suppressed or now - w.start < self.per}

    def __len__(self) -> int:
        return len(self._windows)

    def pending(self) -> Iterator[tuple[str, int]]:
        """(key, lines suppressed) not reported yet; each is reported once."""
        for key, window in self._windows.items():
            if window.suppressed:
                yield key, window.suppressed
                window.suppressed = 0
