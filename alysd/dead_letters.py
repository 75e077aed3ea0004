"""The dead-letter queue: where every message alysd could not deliver lands,
with the reason why.

The queue is a directory holding an LMDB environment (``data.mdb``,
``lock.mdb``), shared by every process of the tree: each actor process and the
root open it themselves and write to it independently; LMDB's lock file
serialises their writers (a robust mutex, so a writer killed mid-transaction
does not wedge the others) and readers never block.

Guarantees:

- ids increase, are never reused (not after ``remove``, ``purge`` or a
  reopen) and order the letters by age;
- the queue is bounded: a write that would exceed ``capacity`` letters, or
  half the map in bytes, evicts the oldest letters in the same transaction and
  counts them in ``evicted``;
- a crash of any process leaves the store consistent; a crash of the machine
  may lose the last transaction, never the integrity of the file.

Open a queue in the process that uses it, after that process was forked: an
LMDB environment must not cross a fork. A queue inherited by a forked child
refuses every call with ``DeadLetterStoreError``; the child closes it (which
only drops its copy of the handle) and opens its own.
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import enum
import logging
import os
import time
from collections.abc import Callable, Iterator
from typing import Any, Self

import lmdb
import msgspec

from alysd import zmq_bus
from alysd.errors import AlysdError, ProtocolError
from alysd.log_throttle import LogThrottle

DEFAULT_CAPACITY = 10_000
# The map is address space, not memory or disk: the file grows with its
# contents. 1 GiB keeps the letters' byte budget (half of it) at 512 MiB, room
# for ~30 frames at the bus's 16 MiB limit; small enough to map in every actor.
DEFAULT_MAP_SIZE = 1 << 30
# Bytes counted per letter beyond its value: key and node header.
_RECORD_OVERHEAD = 16

_LETTERS_DB = b"letters"
_META_DB = b"meta"
_COUNTERS_KEY = b"counters"


class DeadLetterStoreError(AlysdError):
    """The dead-letter store cannot be opened or written; names the directory."""


class Reason(str, enum.Enum):
    """Why a message was dead-lettered."""

    UNKNOWN_ACTOR = "unknown_actor"      # no actor of that name
    DROPPED_OLDEST = "dropped_oldest"    # pushed out of a full mailbox (drop_oldest)
    DROPPED_NEWEST = "dropped_newest"    # refused by a full mailbox (drop_newest)
    MAILBOX_FULL = "mailbox_full"        # refused by a full mailbox (fail, block timed out)
    TIMEOUT = "timeout"                  # not delivered within its deadline
    EXPIRED = "expired"                  # arrived after its deadline had passed
    REJECTED = "rejected"                # malformed or oversized frame
    POISON = "poison"                    # crashed its receiver's handler too often
    FILTERED = "filtered"                # dropped by a fault-injection filter
    FORGED = "forged"                    # claimed a sender other than its socket's
    DENIED = "denied"                    # not allowed by its sender's permissions


class DeadLetter(msgspec.Struct, kw_only=True):
    """One undeliverable message and why it was not delivered."""

    reason: str             # a Reason value
    sender: str             # actor name, "$ctl" for alysctl, or "?" when unknown
    target: str
    message_id: int         # 0 when unknown (e.g. an undecodable frame)
    frame: bytes            # the envelope frame exactly as it travelled
    detail: str | None = None
    time: float = 0.0       # wall clock; put() fills it when 0
    id: int = 0             # assigned by put()


class DeadLetterStats(msgspec.Struct, kw_only=True):
    """What ``alysctl dead-letters`` reports beside the letters."""

    count: int                  # letters held now
    evicted: int                # letters evicted to stay bounded, since the store was created
    by_reason: dict[str, int]   # letters ever put, per reason


class _Counters(msgspec.Struct, kw_only=True):
    """What the store remembers beside the letters (in the ``meta`` database)."""

    next_id: int = 1
    evicted: int = 0
    bytes: int = 0
    by_reason: dict[str, int] = {}


_letter_decoder = msgspec.msgpack.Decoder(DeadLetter)
_counters_decoder = msgspec.msgpack.Decoder(_Counters)
_encoder = msgspec.msgpack.Encoder()


def _key(letter_id: int) -> bytes:
    # Big-endian, fixed width: LMDB's byte order of keys is the order of ids.
    return letter_id.to_bytes(8, "big")


class DeadLetterQueue:
    """The dead-letter store in directory ``path`` (created 0700 if missing).

    One instance per directory per process, opened after the process's last
    fork (see the module docstring). Not for use from several threads at once.
    """

    def __init__(self, path: str, *, capacity: int = DEFAULT_CAPACITY,
                 map_size: int = DEFAULT_MAP_SIZE):
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, got {capacity}")
        self.path = os.path.abspath(path)
        self.capacity = capacity
        self.map_size = map_size
        self.max_bytes = map_size // 2
        self._pid = os.getpid()
        old = os.umask(0o077)
        try:
            os.makedirs(self.path, mode=0o700, exist_ok=True)
        except OSError as exc:
            raise DeadLetterStoreError(
                f"cannot create dead-letter store {self.path!r}: {exc.strerror}") from exc
        finally:
            os.umask(old)
        try:
            self._env: lmdb.Environment | None = lmdb.open(
                self.path,
                subdir=True,
                map_size=map_size,
                max_dbs=2,          # letters and meta
                mode=0o600,
                lock=True,          # several processes write; LMDB's lock file serialises them
                # One fdatasync per commit (data pages), none for the meta page: a
                # machine crash may undo the last commit but the file stays valid on
                # any filesystem. Without any sync, integrity after a power loss would
                # depend on the filesystem preserving write order, and a corrupt map
                # can crash the reading process, here the root daemon. Writers batch
                # floods with put_many, so the sync is paid per batch, not per letter.
                sync=True,
                metasync=False,
                # The map is never written through: a stray write cannot corrupt it.
                writemap=False,
                # Letters are read one by one and rarely; readahead only evicts
                # useful pages from the page cache.
                readahead=False,
                # No cached read transaction: it would keep a reader slot in the
                # shared lock file between calls, which a forked child's teardown
                # of the inherited handle releases under the parent (py-lmdb
                # before 3.0 cached one by default).
                max_spare_txns=0,
            )
        except lmdb.Error as exc:
            raise DeadLetterStoreError(
                f"cannot open dead-letter store {self.path!r}: {exc}") from exc
        try:
            # Reader slots of processes that were killed pin old pages and make
            # the file grow; clear them before writing.
            self._env.reader_check()
            with self._env.begin(write=True) as txn:
                self._letters = self._env.open_db(_LETTERS_DB, txn=txn)
                self._meta = self._env.open_db(_META_DB, txn=txn)
        except lmdb.Error as exc:
            self._env.close()
            self._env = None
            raise DeadLetterStoreError(
                f"cannot open dead-letter store {self.path!r}: {exc}") from exc

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- writing ------------------------------------------------------------------------

    def put(self, letter: DeadLetter) -> int:
        """Store ``letter`` and return its id (``letter`` itself is left unchanged)."""
        return self.put_many([letter])[0]

    def put_many(self, letters: list[DeadLetter]) -> list[int]:
        """Store ``letters`` in one transaction and return their ids, in order
        (a batch larger than ``capacity`` evicts its own first letters).

        Raises ``TypeError`` (nothing stored) if a letter's fields do not have
        ``DeadLetter``'s types, ``DeadLetterStoreError`` if the store cannot take
        them (a letter larger than half the map, a failing disk).
        """
        if not letters:
            return []
        records = [self._encode(letter) for letter in letters]
        while True:
            try:
                with self._transaction("write", write=True, map_full_raises=True) as txn:
                    return self._append(txn, records)
            except lmdb.MapFullError as exc:
                # The byte budget keeps this rare: old pages still pinned by
                # readers, or free space too fragmented for a large letter.
                self._usable("write").reader_check()
                if not self._shed_half():
                    raise DeadLetterStoreError(
                        f"dead-letter store {self.path!r} is full: even emptied, its "
                        f"{self.map_size}-byte map has no room for "
                        f"{sum(len(value) for _, value in records)} bytes of dead letters "
                        f"(a live process may hold an old read transaction)") from exc

    def _encode(self, letter: DeadLetter) -> tuple[str, bytes]:
        """The letter's reason and its stored form: id 0 (the key holds the id),
        time filled in, reason as plain text."""
        reason = letter.reason.value if isinstance(letter.reason, Reason) else letter.reason
        stored = msgspec.structs.replace(letter, reason=reason, id=0,
                                         time=letter.time or time.time())
        try:
            value = _encoder.encode(stored)
            _letter_decoder.decode(value)   # refuse now what list() could not read back
        except (TypeError, msgspec.DecodeError) as exc:
            raise TypeError(f"not a valid DeadLetter ({exc}): {letter!r:.200}") from exc
        if len(value) + _RECORD_OVERHEAD > self.max_bytes:
            raise DeadLetterStoreError(
                f"dead letter of {len(value)} bytes (message {letter.message_id} to "
                f"{letter.target!r}) exceeds the {self.max_bytes}-byte budget of "
                f"dead-letter store {self.path!r}")
        return reason, value

    def _append(self, txn: lmdb.Transaction, records: list[tuple[str, bytes]]) -> list[int]:
        counters = self._counters(txn)
        count = txn.stat(self._letters)["entries"]
        cursor = txn.cursor(db=self._letters)
        ids = []
        for reason, value in records:
            letter_id = counters.next_id
            counters.next_id += 1
            # append=True: ids only grow under the write lock, so every key goes
            # at the end of the tree (and a repeated key would fail loudly).
            txn.put(_key(letter_id), value, db=self._letters, append=True)
            count += 1
            counters.bytes += len(value) + _RECORD_OVERHEAD
            counters.by_reason[reason] = counters.by_reason.get(reason, 0) + 1
            ids.append(letter_id)
            while (count > self.capacity or counters.bytes > self.max_bytes) and cursor.first():
                counters.bytes -= len(cursor.value()) + _RECORD_OVERHEAD
                cursor.delete()
                count -= 1
                counters.evicted += 1
        txn.put(_COUNTERS_KEY, _encoder.encode(counters), db=self._meta)
        return ids

    def _shed_half(self) -> bool:
        """Evict the oldest letters holding half the stored bytes, in a transaction
        of their own so that their pages are free for the next one; False when
        there is nothing left to evict."""
        with self._transaction("evict", write=True) as txn:
            counters = self._counters(txn)
            cursor = txn.cursor(db=self._letters)
            goal = counters.bytes // 2
            shed = 0
            while cursor.first():
                counters.bytes -= len(cursor.value()) + _RECORD_OVERHEAD
                cursor.delete()
                shed += 1
                if counters.bytes <= goal:
                    break
            counters.bytes = max(counters.bytes, 0)
            counters.evicted += shed
            txn.put(_COUNTERS_KEY, _encoder.encode(counters), db=self._meta)
        return shed > 0

    def remove(self, id: int) -> bool:
        """Delete letter ``id``; False if there is none."""
        if not 0 < id < 1 << 64:
            return False
        with self._transaction("remove", write=True) as txn:
            value = txn.pop(_key(id), db=self._letters)
            if value is None:
                return False
            counters = self._counters(txn)
            counters.bytes = max(counters.bytes - len(value) - _RECORD_OVERHEAD, 0)
            txn.put(_COUNTERS_KEY, _encoder.encode(counters), db=self._meta)
            return True

    def purge(self) -> int:
        """Delete every letter and return how many there were (counters and ids go on)."""
        with self._transaction("purge", write=True) as txn:
            count = txn.stat(self._letters)["entries"]
            txn.drop(self._letters, delete=False)
            counters = self._counters(txn)
            counters.bytes = 0
            txn.put(_COUNTERS_KEY, _encoder.encode(counters), db=self._meta)
            return count

    # --- reading ------------------------------------------------------------------------

    def list(self, limit: int | None = None) -> list[DeadLetter]:
        """The letters, newest first; at most ``limit`` of them."""
        out: list[DeadLetter] = []
        if limit is not None and limit <= 0:
            return out
        with self._transaction("read") as txn:
            for key, value in txn.cursor(db=self._letters).iterprev():
                out.append(self._decode(key, value))
                if limit is not None and len(out) >= limit:
                    break
        return out

    def get(self, id: int) -> DeadLetter | None:
        """Letter ``id``, or None if there is none (never was, evicted, removed)."""
        if not 0 < id < 1 << 64:
            return None
        with self._transaction("read") as txn:
            value = txn.get(_key(id), db=self._letters)
            return None if value is None else self._decode(_key(id), value)

    def stats(self) -> DeadLetterStats:
        with self._transaction("read") as txn:
            counters = self._counters(txn)
            return DeadLetterStats(count=txn.stat(self._letters)["entries"],
                                   evicted=counters.evicted, by_reason=counters.by_reason)

    def close(self) -> None:
        """Make the last commit durable and close the store; idempotent.

        In a forked child this only drops the inherited handle: nothing is
        synced or written through it, and since the queue never keeps a read
        transaction between calls, the child holds no reader slot of the
        parent's that the teardown could release.
        """
        env, self._env = self._env, None
        if env is None:
            return
        if os.getpid() == self._pid:
            env.sync(True)   # metasync=False left the last meta page unsynced
        env.close()

    # --- helpers ------------------------------------------------------------------------

    def _usable(self, action: str) -> lmdb.Environment:
        if self._env is None:
            raise DeadLetterStoreError(f"dead-letter store {self.path!r} is closed ({action})")
        if os.getpid() != self._pid:
            raise DeadLetterStoreError(
                f"dead-letter store {self.path!r} was opened by pid {self._pid} and cannot "
                f"be used in its forked child pid {os.getpid()}; open it after the fork")
        return self._env

    @contextlib.contextmanager
    def _transaction(self, action: str, *, write: bool = False,
                     map_full_raises: bool = False) -> Iterator[lmdb.Transaction]:
        """A transaction whose LMDB failures become ``DeadLetterStoreError``
        (except, with ``map_full_raises``, ``MapFullError`` for the caller to handle)."""
        env = self._usable(action)
        try:
            with env.begin(write=write, buffers=True) as txn:
                yield txn
        except lmdb.MapFullError as exc:
            if map_full_raises:
                raise
            raise DeadLetterStoreError(
                f"dead-letter store {self.path!r}: {action} failed: its "
                f"{self.map_size}-byte map is full") from exc
        except lmdb.Error as exc:
            raise DeadLetterStoreError(
                f"dead-letter store {self.path!r}: {action} failed: {exc}") from exc

    def _counters(self, txn: lmdb.Transaction) -> _Counters:
        raw = txn.get(_COUNTERS_KEY, db=self._meta)
        counters = _Counters() if raw is None else _counters_decoder.decode(raw)
        # Ids must never go back, even if the meta record were lost.
        last = txn.cursor(db=self._letters)
        if last.last():
            counters.next_id = max(counters.next_id, int.from_bytes(last.key(), "big") + 1)
        return counters

    def _decode(self, key: bytes | memoryview, value: bytes | memoryview) -> DeadLetter:
        letter_id = int.from_bytes(key, "big")
        try:
            letter = _letter_decoder.decode(value)
        except msgspec.DecodeError as exc:
            raise DeadLetterStoreError(
                f"dead-letter store {self.path!r}: letter {letter_id} is unreadable: {exc}"
            ) from exc
        letter.id = letter_id
        return letter


# --- presentation ---------------------------------------------------------------------------

def describe(letter: DeadLetter,
             max_bytes: int = zmq_bus.DEFAULT_MAX_MESSAGE_BYTES + zmq_bus.OVERSIZE_SLACK
             ) -> dict[str, Any]:
    """``letter`` as JSON-able builtins, its frame decoded, for ``alysctl dead-letters``.

    ``kind``, ``priority`` and ``retry_count`` are None when the frame is not an
    envelope; ``payload`` is None and ``payload_error`` says why when the frame
    or its payload does not decode (or is over ``max_bytes``: decoding it would
    stall the caller for a view nobody reads whole). Bytes appear as
    ``{"base64": ...}``.
    """
    out: dict[str, Any] = {
        "id": letter.id, "time": letter.time, "reason": letter.reason, "sender": letter.sender,
        "target": letter.target, "message_id": letter.message_id, "kind": None,
        "priority": None, "retry_count": None, "detail": letter.detail,
        "size": len(letter.frame), "payload": None, "payload_error": None,
    }
    try:
        env = zmq_bus.decode_envelope(letter.frame, max_bytes)
    except ProtocolError as exc:
        out["payload_error"] = str(exc)
        return out
    out["kind"] = _enum_name(zmq_bus.Kind, env.kind)
    out["priority"] = _enum_name(zmq_bus.Priority, env.priority)
    out["retry_count"] = env.metadata.retry_count
    try:
        out["payload"] = _jsonable(zmq_bus.decode_any(env.payload))
    except ProtocolError as exc:
        out["payload_error"] = str(exc)
    except RecursionError:
        out["payload_error"] = "payload nested too deeply to show"
    return out


def _enum_name(cls: type[enum.IntEnum], value: int) -> str:
    try:
        return cls(value).name.lower()
    except ValueError:
        return str(int(value))


def _jsonable(value: Any) -> Any:
    """Decoded msgpack as values JSON can hold (map keys as strings)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (bytes, bytearray, memoryview)):
        return {"base64": base64.b64encode(value).decode()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {_json_key(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (datetime.datetime, datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, msgspec.msgpack.Ext):
        return {"ext": value.code, "base64": base64.b64encode(value.data).decode()}
    return repr(value)


def _json_key(key: Any) -> str:
    if isinstance(key, str):
        return key
    return msgspec.json.encode(_jsonable(key)).decode()


# --- logging --------------------------------------------------------------------------------

class RateLimitedLog:
    """Warning lines for dead letters, at most ``burst`` per ``per`` seconds per
    reason, so that a flood of dead letters cannot flood the journal.

    Lines over the limit are counted, not lost: the next line logged for that
    reason after its window ended says how many were suppressed, and ``flush()``
    reports whatever is still pending (call it on a timer and before exit).
    """

    def __init__(self, logger: logging.Logger, *, burst: int = 10, per: float = 10.0,
                 clock: Callable[[], float] = time.monotonic):
        self.logger = logger
        self.throttle = LogThrottle(burst=burst, per=per, clock=clock)

    def dead_letter(self, letter: DeadLetter) -> None:
        reason = letter.reason.value if isinstance(letter.reason, Reason) else letter.reason
        suppressed = self.throttle.admit(reason)
        if suppressed is None:
            return
        self.logger.warning(
            "dead letter (%s): message %d from %s to %s%s%s", reason, letter.message_id,
            letter.sender, letter.target, f": {letter.detail}" if letter.detail else "",
            f" ({suppressed} more {reason} dead letters were not logged)" if suppressed else "")

    def flush(self) -> None:
        """Log how many lines each reason suppressed and were not reported yet."""
        for reason, suppressed in self.throttle.pending():
            self.logger.warning("%d more %s dead letters were not logged", suppressed, reason)
