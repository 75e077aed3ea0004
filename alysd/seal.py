"""Sealed envelopes: what crosses from one alysd host to another.

A message leaving the host travels as one ``Sealed`` frame::

    Sealed = [version=1][header: msgpack LinkHeader][payload: msgpack][mac: 32 bytes]
    mac    = HMAC-SHA256(network key, "alysd-link/1" 0x00 || len(header):4 || header || payload)

The key is the network's (every node of one network holds the same
``network.network_key_file``): a valid MAC proves the frame was made by a
member of the network and not changed since, whatever carried it. It does not
say which member; which host is at the other end of a connection is CURVE's
job (``alysd.curve``), and CURVE also encrypts the channel.

``Opener.open`` decides, in this order, and raises ``SealRefused`` with a
``SealReason`` at the first failure:

1. the frame's length, before anything is decoded (``oversized``);
2. its outer form (``malformed``);
3. the MAC, compared in constant time, before the header is parsed: nothing
   an outsider wrote is ever decoded further (``bad_mac``);
4. the header's form (``malformed``: only a key holder can get here);
5. the seal time against the local clock, at most ``window`` old or ahead
   (``stale``, ``future``), and not older than what the replay cache has had
   to forget (``stale``);
6. the replay cache, by (origin node, message id): the very same frame again
   is ``replayed`` and refused; the same message re-sealed later (a sender
   retransmitting because it missed the acknowledgement) is opened with
   ``duplicate`` set, to be acknowledged again but not delivered twice.

The cache holds what it saw within the window, at most ``capacity`` entries.
When it must forget an entry early it raises its floor to that entry's seal
time, so a replay of anything it forgot is refused as ``stale`` rather than
let through: under a flood the cache refuses more, never less. A new
``Opener`` starts with its floor at its creation time, so frames sealed before
a restart (which the new process never saw) cannot be replayed into it; the
senders re-seal what they retransmit, so their messages still arrive.

Everything here is pure: the clock is a parameter.
"""

from __future__ import annotations

import collections
import enum
import hashlib
import hmac
import itertools
import os
import time
from collections.abc import Callable

import msgspec

from alysd.errors import AlysdError

VERSION = 1
MAC_BYTES = 32
MIN_KEY_BYTES = 32
MESSAGE_ID_BYTES = 16
_CONTEXT = b"alysd-link/1\x00"
_NS = 1_000_000_000


class LinkKind(enum.IntEnum):
    DATA = 0     # a message for an actor of the receiving node
    ACK = 1      # the receiving node took these messages: stop retransmitting them


class LinkHeader(msgspec.Struct, array_like=True, frozen=True, kw_only=True):
    """Who sent what to whom, and when it was sealed (wall clock, ns)."""

    kind: LinkKind
    origin: str                       # the sending node's name
    message_id: bytes                 # random, MESSAGE_ID_BYTES long
    sealed_at: int
    from_actor: str = ""
    to_actor: str = ""
    sensitive: bool = False
    acks: tuple[bytes, ...] = ()      # ACK: the message ids taken


class Sealed(msgspec.Struct, array_like=True):
    version: int
    header: bytes
    payload: bytes
    mac: bytes


class SealReason(enum.Enum):
    """Why a frame from another host was refused."""

    OVERSIZED = "oversized"
    MALFORMED = "malformed"
    BAD_MAC = "bad_mac"
    STALE = "stale"
    FUTURE = "future"
    REPLAYED = "replayed"
    # Decided by the host link, not by the opener: a peer's CURVE key used to
    # speak for another node.
    FORGED = "forged"


class SealRefused(AlysdError):
    """A frame from another host that is not opened; ``reason`` says why."""

    def __init__(self, reason: SealReason, detail: str, *, origin: str | None = None):
        self.reason = reason
        self.origin = origin
        super().__init__(f"{reason.value}: {detail}")


class NetworkKeyError(AlysdError):
    """The network key file cannot be read or holds no usable key."""


class Opened(msgspec.Struct, frozen=True):
    header: LinkHeader
    payload: bytes
    duplicate: bool = False


_encoder = msgspec.msgpack.Encoder()
_sealed_decoder = msgspec.msgpack.Decoder(Sealed)
_header_decoder = msgspec.msgpack.Decoder(LinkHeader)
_DECODE_ERRORS = (msgspec.DecodeError, UnicodeDecodeError, RecursionError)


class MessageIds:
    """Message ids for sealed envelopes: a random 8-byte prefix per source and
    a counter, so no two sources (nor two incarnations of one) share an id,
    without a system call per message."""

    def __init__(self) -> None:
        self._prefix = os.urandom(MESSAGE_ID_BYTES // 2)
        self._counter = itertools.count()

    def next(self) -> bytes:
        return self._prefix + next(self._counter).to_bytes(MESSAGE_ID_BYTES // 2, "big")


def new_message_id() -> bytes:
    """A random id, for a one-off envelope."""
    return os.urandom(MESSAGE_ID_BYTES)


def _mac(key: bytes, header: bytes, payload: bytes) -> bytes:
    mac = hmac.new(key, _CONTEXT, hashlib.sha256)
    mac.update(len(header).to_bytes(4, "big"))
    mac.update(header)
    mac.update(payload)
    return mac.digest()


def seal(key: bytes, header: LinkHeader, payload: bytes = b"") -> bytes:
    """The wire frame carrying ``payload`` (already msgpack) under ``header``."""
    head = _encoder.encode(header)
    return _encoder.encode(Sealed(VERSION, head, payload, _mac(key, head, payload)))


class Opener:
    """Opens frames from other hosts, refusing forged, altered, old and replayed
    ones (see the module's notes). Not thread-safe: one per receiving loop."""

    def __init__(self, key: bytes, *, window: float, capacity: int, max_bytes: int,
                 clock: Callable[[], int] = time.time_ns, floor: int | None = None):
        self._key = key
        self.window_ns = int(window * _NS)
        self.capacity = capacity
        self.max_bytes = max_bytes
        self.clock = clock
        # Frames sealed at or before the floor are refused: the cache cannot
        # tell whether it saw them (before it started, or since forgotten).
        self.floor = clock() if floor is None else floor
        self._seen: dict[tuple[str, bytes], tuple[int, bytes]] = {}
        self._order: collections.deque[tuple[int, tuple[str, bytes]]] = collections.deque()

    def open(self, frame: bytes) -> Opened:
        """The header and payload of a frame that passes every check; raises
        ``SealRefused`` otherwise. Remembers what it opened."""
        if len(frame) > self.max_bytes:
            raise SealRefused(SealReason.OVERSIZED, f"frame of {len(frame)} bytes exceeds the "
                              f"{self.max_bytes}-byte limit")
        try:
            outer = _sealed_decoder.decode(frame)
        except _DECODE_ERRORS as exc:
            raise SealRefused(SealReason.MALFORMED, f"not a sealed envelope: {exc}") from None
        if outer.version != VERSION:
            raise SealRefused(SealReason.MALFORMED, f"version {outer.version}, expected {VERSION}")
        if not hmac.compare_digest(_mac(self._key, outer.header, outer.payload), outer.mac):
            raise SealRefused(SealReason.BAD_MAC, "the MAC does not match: altered, or sealed "
                              "with another network's key")
        try:
            header = _header_decoder.decode(outer.header)
        except _DECODE_ERRORS as exc:
            raise SealRefused(SealReason.MALFORMED, f"undecodable header: {exc}") from None
        if len(header.message_id) != MESSAGE_ID_BYTES:
            raise SealRefused(SealReason.MALFORMED, f"message id of {len(header.message_id)} "
                              f"bytes, expected {MESSAGE_ID_BYTES}", origin=header.origin)
        now = self.clock()
        self._forget_expired(now)
        age = now - header.sealed_at
        if age > self.window_ns:
            raise SealRefused(SealReason.STALE, f"sealed {age / _NS:.1f}s ago, outside the "
                              f"{self.window_ns / _NS:g}s window", origin=header.origin)
        if -age > self.window_ns:
            raise SealRefused(SealReason.FUTURE, f"sealed {-age / _NS:.1f}s ahead of this clock, "
                              f"outside the {self.window_ns / _NS:g}s window", origin=header.origin)
        key = (header.origin, header.message_id)
        seen = self._seen.get(key)
        if seen is not None:
            if hmac.compare_digest(seen[1], outer.mac):
                raise SealRefused(SealReason.REPLAYED, f"message {header.message_id.hex()} from "
                                  f"{header.origin} was received before", origin=header.origin)
            return Opened(header, outer.payload, duplicate=True)
        if header.sealed_at <= self.floor:
            raise SealRefused(SealReason.STALE, "sealed before what the replay cache remembers "
                              "(a restart, or a flood)", origin=header.origin)
        self._remember(key, header.sealed_at, outer.mac)
        return Opened(header, outer.payload)

    def forget(self, origin: str, message_id: bytes) -> None:
        """Take back an opened message that could not be delivered after all,
        so that its sender's retransmission is opened as new (not as a
        duplicate of something never delivered)."""
        self._seen.pop((origin, message_id), None)

    @property
    def remembered(self) -> int:
        return len(self._seen)

    def _remember(self, key: tuple[str, bytes], sealed_at: int, mac: bytes) -> None:
        self._seen[key] = (sealed_at, mac)
        self._order.append((sealed_at, key))
        while len(self._seen) > self.capacity:
            forgotten_at, forgotten = self._order.popleft()
            if self._seen.pop(forgotten, None) is not None:
                self.floor = max(self.floor, forgotten_at)

    def _forget_expired(self, now: int) -> None:
        # Anything sealed before now - window is refused as stale anyway.
        oldest = now - self.window_ns
        order, seen = self._order, self._seen
        while order and order[0][0] < oldest:
            seen.pop(order.popleft()[1], None)


def generate_network_key(path: str) -> None:
    """Write a new random network key (64 hex digits) at ``path``, 0600; never
    overwrites a file. Raises ``NetworkKeyError``."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise NetworkKeyError(f"{path} exists: alysd never overwrites a key") from None
    except OSError as exc:
        raise NetworkKeyError(f"cannot write {path}: {exc.strerror or exc}") from None
    with os.fdopen(fd, "w") as out:
        out.write(os.urandom(MIN_KEY_BYTES).hex() + "\n")


def load_network_key(path: str) -> bytes:
    """The key in ``path``: hex digits, at least ``MIN_KEY_BYTES`` bytes of key.
    Raises ``NetworkKeyError`` naming the file."""
    try:
        with open(path, encoding="ascii") as src:
            text = src.read().strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise NetworkKeyError(f"cannot read the network key {path}: {exc}") from None
    try:
        key = bytes.fromhex(text)
    except ValueError:
        raise NetworkKeyError(f"{path} does not hold a key in hex (alysctl keygen "
                              "--network-key writes one)") from None
    if len(key) < MIN_KEY_BYTES:
        raise NetworkKeyError(f"{path} holds a {len(key)}-byte key; at least {MIN_KEY_BYTES} "
                              "bytes are needed")
    return key
