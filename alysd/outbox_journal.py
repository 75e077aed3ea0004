"""A sender's copies of its unacknowledged messages, kept where its death cannot
take them: two memory-mapped files in the runtime dir.

ZeroMQ's ``send`` returns once a frame is queued inside the sending process;
its I/O thread writes it to the kernel later. A sender SIGKILLed in between
loses the frame, and with it the courier's in-memory copy: the message would
be gone although ``ctx.send`` accepted it. The journal closes that gap: every
one-way message to an ``at_least_once`` receiver is appended here before it is
sent and marked done when the receiver's receipt arrives. The pages belong to
a shared file mapping, so what was written survives the process; the next
incarnation of the same actor re-sends what is still live (as a redelivery),
and the root dead-letters what is left when alysd stops.

Layout: two files of equal size used in turn, each a run of records::

    u16 magic  u8 state (1 live, 0 done)  u8 pad  u32 body length  u64 sequence
    body: u16 target length, target (UTF-8), the envelope frame

ended by a zeroed header. A record is written body first, then the zeroed
header after it, then its own header, so a process killed mid-append leaves
either the whole record or nothing a reader would take. The writer moves to the
other file when the current one is full, and only once every record in the
other file is done; if it is not, the message is sent unjournaled (counted in
``unjournaled``). It is not a disk log: nothing is fsynced, and it lives as
long as the runtime dir (a reboot clears it).
"""

from __future__ import annotations

import mmap
import os
import struct

MAGIC = 0xA15D
LIVE, DONE = 1, 0
_HEAD = struct.Struct("<HBxIQ")
_TARGET = struct.Struct("<H")
_STATE_AT = 2
_END = bytes(_HEAD.size)
DEFAULT_BYTES = 4 * 1024 * 1024        # both files together; pages are used as written


class OutboxJournal:
    """The writer's side; one per actor process, opened after the fork."""

    def __init__(self, path: str, size: int = DEFAULT_BYTES):
        self.half = size // 2
        self.maps = [_map(f"{path}.{i}", self.half) for i in (0, 1)]
        self.current = 0
        self.pos = 0
        self.live = [0, 0]
        self.seq = 0
        self.unjournaled = 0
        self._prefixes: dict[str, bytes] = {}
        for mm in self.maps:
            _HEAD.pack_into(mm, 0, 0, 0, 0, 0)

    def append(self, target: str, frame: bytes) -> int:
        """Journal one message; returns its handle for ``done``, or -1 when it
        could not be journaled (too large, or both files still hold live ones)."""
        prefix = self._prefixes.get(target)
        if prefix is None:
            name = target.encode()
            prefix = self._prefixes[target] = _TARGET.pack(len(name)) + name
        length = len(prefix) + len(frame)
        need = _HEAD.size + length
        if self.pos + need + _HEAD.size > self.half:
            other = 1 - self.current
            if self.live[other] or need + _HEAD.size > self.half:
                self.unjournaled += 1
                return -1
            self.current, self.pos = other, 0
            _HEAD.pack_into(self.maps[other], 0, 0, 0, 0, 0)
        mm, pos = self.maps[self.current], self.pos
        body = pos + _HEAD.size
        end = body + length
        # Body and the zeroed header after it first, this record's header last.
        mm[body:end + _HEAD.size] = prefix + frame + _END
        _HEAD.pack_into(mm, pos, MAGIC, LIVE, length, self.seq)
        self.seq += 1
        self.live[self.current] += 1
        self.pos = end
        return (self.current << 32) | pos

    def done(self, handle: int) -> None:
        """Mark a journaled message delivered (or dead-lettered)."""
        if handle < 0:
            return
        which = handle >> 32
        self.maps[which][(handle & 0xFFFFFFFF) + _STATE_AT] = DONE
        self.live[which] -= 1

    def close(self) -> None:
        for mm in self.maps:
            mm.close()


def recover(path: str) -> list[tuple[str, bytes]]:
    """The live messages a journal at ``path`` holds, oldest first, as (target,
    frame). Missing or damaged files yield what can be read."""
    found: list[tuple[int, str, bytes]] = []
    for i in (0, 1):
        # Mapped, not read: the walk touches only the pages records were written
        # to (the rest of the file is a hole), which is what a restart pays for.
        try:
            with open(f"{path}.{i}", "rb") as file:
                data = mmap.mmap(file.fileno(), 0, prot=mmap.PROT_READ)
        except (OSError, ValueError):   # missing, unreadable, or empty
            continue
        with data:
            pos = 0
            while pos + _HEAD.size <= len(data):
                magic, state, length, seq = _HEAD.unpack_from(data, pos)
                body = pos + _HEAD.size
                if magic != MAGIC or body + length > len(data) or length < _TARGET.size:
                    break
                if state == LIVE:
                    (size,) = _TARGET.unpack_from(data, body)
                    target = data[body + 2:body + 2 + size].decode(errors="replace")
                    found.append((seq, target, data[body + 2 + size:body + length]))
                pos = body + length
    found.sort(key=lambda record: record[0])
    return [(target, frame) for _, target, frame in found]


def remove(path: str) -> None:
    for i in (0, 1):
        try:
            os.unlink(f"{path}.{i}")
        except FileNotFoundError:
            pass


def _map(path: str, size: int) -> mmap.mmap:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        if os.fstat(fd).st_size != size:
            os.ftruncate(fd, size)
        return mmap.mmap(fd, size)
    finally:
        os.close(fd)
