"""``alysctl top``: every actor's state, resources, message rate and health, refreshed.

The pure part computes message rates from two ``status`` snapshots and lays
one frame out for a terminal of a given size, so it is tested without
processes; the rest drives the terminal with plain ANSI sequences (alternate
screen, cursor home, clear to end) and reads keys in cbreak mode, waiting for
them with ``select`` so a key acts at once instead of at the next refresh.
"""

from __future__ import annotations

import os
import select
import shutil
import sys
import termios
import time
import tty
from collections.abc import Callable, Iterator, Mapping, Sequence

from alysd.ctl import format_system, format_table, format_time, status_cells, truncate

COLUMNS = ("NAME", "STATE", "PID", "CPU%", "RSS", "MAILBOX", "MSG/S", "RESTARTS", "HEALTH")
MIN_NAME_WIDTH = len("NAME")
QUIT_KEY = b"q"                          # either case; Ctrl-C quits too

ENTER_SCREEN = "\x1b[?1049h\x1b[?25l"    # the alternate screen, cursor hidden
LEAVE_SCREEN = "\x1b[?25h\x1b[?1049l"    # cursor shown, back to the screen as it was
HOME = "\x1b[H"
CLEAR_TO_LINE_END = "\x1b[K"
CLEAR_TO_SCREEN_END = "\x1b[J"

Fetch = Callable[[], list[dict]]


def message_rates(before: Sequence[dict] | None, after: Sequence[dict],
                  elapsed: float) -> dict[str, float | None]:
    """Messages handled per second by each actor of ``after`` since ``before``,
    a snapshot taken ``elapsed`` seconds earlier.

    Guarantees: one entry per actor of ``after`` and no other; a rate is None
    (unknown, not zero) when there is no earlier snapshot, the actor is not in
    it, either count is missing, the count went down, or ``elapsed`` is not
    positive; otherwise it is >= 0.
    """
    earlier = {r["name"]: r.get("handled") for r in before or ()}
    rates: dict[str, float | None] = {}
    for row in after:
        was, now = earlier.get(row["name"]), row.get("handled")
        known = was is not None and now is not None and now >= was and elapsed > 0
        rates[row["name"]] = (now - was) / elapsed if known else None
    return rates


def render_frame(rows: Sequence[dict], rates: Mapping[str, float | None], *, now: float,
                 width: int | None = None, height: int | None = None) -> str:
    """One frame: the system line (health, actors running, the time ``now``), then
    the actor table in the order of ``rows``, a rate of None shown as "-".

    Guarantees: with ``width``, no line is longer than it (names are cut first,
    down to ``MIN_NAME_WIDTH``, then whole lines; a cut ends in "…"); with
    ``height``, at most ``max(height, 3)`` lines, the actors that do not fit
    counted in a last "… N more" line; without them, every actor in full.
    """
    fits = height is None or len(rows) <= max(height - 2, 0)
    shown = rows if fits else rows[:max(height - 3, 0)]
    table = [COLUMNS, *(_cells(row, rates.get(row["name"])) for row in shown)]
    if width is not None:
        table = _cut_names(table, width)
    lines = [f"{format_system(rows)}  {format_time(now)}", *format_table(table).split("\n")]
    if not fits:
        lines.append(f"… {len(rows) - len(shown)} more")
    return "\n".join(lines if width is None else (truncate(line, width) for line in lines))


def _cells(row: dict, rate: float | None) -> list[str]:
    cells = {**status_cells(row), "MSG/S": "-" if rate is None else f"{rate:.1f}"}
    return [cells[column] for column in COLUMNS]


def _cut_names(table: list[Sequence[str]], width: int) -> list[Sequence[str]]:
    """``table`` (header first) with names cut so that every column up to the
    health word fits in ``width``: a health reason is cut at the edge rather
    than the names, which say which actor a line is about."""
    others = sum(max(len(row[i]) for row in table) for i in range(1, len(COLUMNS) - 1))
    health_word = max(len(row[-1].split(" ", 1)[0]) for row in table)
    room = width - others - health_word - 2 * (len(COLUMNS) - 1)
    name_width = max(MIN_NAME_WIDTH, room)
    return [table[0], *([truncate(row[0], name_width), *row[1:]] for row in table[1:])]


def snapshots(fetch: Fetch) -> Iterator[tuple[list[dict], dict[str, float | None]]]:
    """Endless (status rows, message rates since the previous rows) pairs, one
    ``fetch`` each; the first pair's rates are all None."""
    previous, previous_at = None, 0.0
    while True:
        rows, at = fetch(), time.monotonic()
        yield rows, message_rates(previous, rows, at - previous_at)
        previous, previous_at = rows, at


def one_frame(fetch: Fetch, interval: float, width: int | None = None) -> str:
    """A plain frame, every actor in it, its rates measured over ``interval`` seconds."""
    frames = snapshots(fetch)
    next(frames)
    time.sleep(interval)
    rows, rates = next(frames)
    return render_frame(rows, rates, now=time.time(), width=width)


def run_live(fetch: Fetch, interval: float) -> None:
    """On the terminal of stdin and stdout: redraw a frame fitted to it every
    ``interval`` seconds (at once after a key) until q, Q, Ctrl-C or the end of input.

    Guarantees: however it ends, quitting or an exception from ``fetch``
    (which is re-raised), the terminal settings are restored, the alternate
    screen is left and the cursor shown.
    """
    fd, out = sys.stdin.fileno(), sys.stdout
    saved = termios.tcgetattr(fd)
    try:
        out.write(ENTER_SCREEN)
        tty.setcbreak(fd)       # keys arrive one by one, unechoed; Ctrl-C still signals
        for rows, rates in snapshots(fetch):
            size = shutil.get_terminal_size()
            frame = render_frame(rows, rates, now=time.time(), width=size.columns,
                                 height=size.lines)
            out.write(HOME + frame.replace("\n", CLEAR_TO_LINE_END + "\n")
                      + CLEAR_TO_LINE_END + CLEAR_TO_SCREEN_END)
            out.flush()
            if _quit_asked(fd, interval):
                return
    except KeyboardInterrupt:   # Ctrl-C is the other way to quit, not an error
        return
    finally:
        out.write(LEAVE_SCREEN)
        out.flush()
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def _quit_asked(fd: int, timeout: float) -> bool:
    """Wait up to ``timeout`` seconds for keys on ``fd``; whether they ask to quit.
    Any other key ends the wait (a refresh now, as in top(1)); end of input quits,
    as nobody is left to press q."""
    if not select.select([fd], [], [], timeout)[0]:
        return False
    pressed = os.read(fd, 64)
    return not pressed or QUIT_KEY in pressed.lower()
