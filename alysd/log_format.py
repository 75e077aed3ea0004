"""How alysd and its actors write their logs: ``[logging] format = "text" | "json"``,
and repeated lines held back.

Every process of the tree (the root, the fork server, each actor) writes to
the stderr it inherited, which journald stores under the unit. ``configure``
installs one handler on the root logger of the process that calls it (alysd,
at start); forked processes inherit it, and an actor process names itself
with ``set_context(actor, incarnation)`` right after the fork, so its lines
carry who wrote them.

* ``text``: ``TIME LEVEL LOGGER[PID]: MESSAGE``, as before.
* ``json``: one object per line, ``{"time", "level", "logger", "pid",
  "actor", "incarnation", "message_id", "event", "message"}``; ``time`` is
  UTC ISO 8601 with milliseconds; ``actor`` and ``incarnation`` are null in
  the root; ``message_id`` and ``event`` come from a record's ``extra``
  (``log.warning(..., extra={"event": "crash", "message_id": 7})``) and are
  null otherwise; an exception's traceback is in ``"exc"``.

``RepeatFilter``: at most ``burst`` lines per ``per`` seconds from one place
in the code (logger, level and format string, so a crash loop's reports
count as one line however their arguments differ); the next line from that
place once the window is over says how many were held back. Nothing is held
back silently, a line from another place always goes through, and audit
lines (``event`` "audit": who ran which control command) are never held back.
"""

from __future__ import annotations

import datetime
import logging
import sys
import time
from collections.abc import Callable

import msgspec

from alysd.log_throttle import LogThrottle

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s[%(process)d]: %(message)s"
REPEAT_BURST = 20        # lines from one place...
REPEAT_PER = 60.0        # ...per this many seconds; the rest are counted
MAX_PLACES = 4096        # places remembered before the quiet ones are forgotten
AUDIT = "audit"          # the event of an audit line (who ran which command): never held back

_context: dict[str, object] = {"actor": None, "incarnation": None}
_encode = msgspec.json.Encoder().encode


def set_context(actor: str | None, incarnation: int | None) -> None:
    """Name the process's lines (an actor process, after the fork)."""
    _context["actor"], _context["incarnation"] = actor, incarnation


def json_line(*, created: float, level: str, logger: str, pid: int, actor: str | None,
              incarnation: int | None, message: str, message_id: int | None = None,
              event: str | None = None, exc: str | None = None) -> bytes:
    """One log line in the JSON format (without its newline)."""
    line = {
        "time": datetime.datetime.fromtimestamp(created, datetime.timezone.utc)
                .isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "level": level, "logger": logger, "pid": pid, "actor": actor,
        "incarnation": incarnation, "message_id": message_id, "event": event,
        "message": message,
    }
    if exc is not None:
        line["exc"] = exc
    return _encode(line)


class JsonFormatter(logging.Formatter):
    """One JSON object per record (see the module)."""

    def format(self, record: logging.LogRecord) -> str:
        return json_line(
            created=record.created, level=record.levelname.lower(), logger=record.name,
            pid=record.process, actor=_context["actor"], incarnation=_context["incarnation"],
            message=record.getMessage(), message_id=getattr(record, "message_id", None),
            event=getattr(record, "event", None),
            exc=self.formatException(record.exc_info) if record.exc_info else None).decode()


class RepeatFilter(logging.Filter):
    """Holds back lines from a place in the code that logs too often (see the module)."""

    def __init__(self, burst: int = REPEAT_BURST, per: float = REPEAT_PER,
                 clock: Callable[[], float] = time.monotonic):
        super().__init__()
        self.throttle = LogThrottle(burst=burst, per=per, clock=clock)

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "event", None) == AUDIT:
            return True
        if len(self.throttle) > MAX_PLACES:
            self.throttle.forget_quiet()
        left_out = self.throttle.admit(f"{record.name}\0{record.levelno}\0{record.msg}")
        if left_out is None:
            return False
        if left_out:
            record.msg = f"{record.msg} ({left_out} similar lines held back)"
        return True


def configure(level: str, fmt: str = "text", stream=None) -> logging.Handler:
    """Send this process's log records (and its children's) to ``stream``
    (stderr) in ``fmt``, at ``level`` and above, repeated lines held back."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    handler.addFilter(RepeatFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    return handler
