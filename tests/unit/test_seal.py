"""Sealed envelopes between hosts (alysd/seal.py): what an opener refuses, and why."""

import os
import stat

import msgspec
import pytest
from hypothesis import given, settings, strategies as st

from alysd import seal
from alysd.seal import LinkHeader, LinkKind, Opener, SealReason, SealRefused

KEY = bytes(range(32))
S = 1_000_000_000
T0 = 1_700_000_000 * S


class Clock:
    def __init__(self, now: int = T0):
        self.now = now

    def __call__(self) -> int:
        return self.now


def header(message_id: bytes = b"\x01" * 16, sealed_at: int = T0, origin: str = "bob",
           **kw) -> LinkHeader:
    return LinkHeader(kind=LinkKind.DATA, origin=origin, message_id=message_id,
                      sealed_at=sealed_at, from_actor="chain", to_actor="storage", **kw)


def opener(clock=None, **kw) -> Opener:
    kw.setdefault("window", 30.0)
    kw.setdefault("capacity", 1000)
    kw.setdefault("max_bytes", 1 << 20)
    kw.setdefault("floor", 0)
    return Opener(KEY, clock=clock or Clock(), **kw)


def refusal(op: Opener, frame: bytes) -> SealReason:
    with pytest.raises(SealRefused) as caught:
        op.open(frame)
    return caught.value.reason


PAYLOAD = msgspec.msgpack.encode({"block": 7})


def test_a_sealed_frame_opens_to_its_header_and_payload():
    opened = opener().open(seal.seal(KEY, header(), PAYLOAD))
    assert opened.header == header()
    assert opened.payload == PAYLOAD
    assert not opened.duplicate


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_any_changed_byte_is_refused(data):
    frame = bytearray(seal.seal(KEY, header(), PAYLOAD))
    index = data.draw(st.integers(0, len(frame) - 1))
    frame[index] ^= data.draw(st.integers(1, 255))
    assert refusal(opener(), bytes(frame)) in (SealReason.BAD_MAC, SealReason.MALFORMED)


def test_a_frame_sealed_with_another_networks_key_is_refused():
    frame = seal.seal(bytes(32), header(), PAYLOAD)
    assert refusal(opener(), frame) is SealReason.BAD_MAC


def test_header_and_payload_cannot_trade_bytes():
    # The MAC binds where the header ends: moving bytes across the boundary fails.
    outer = msgspec.msgpack.decode(seal.seal(KEY, header(), PAYLOAD), type=seal.Sealed)
    moved = seal.Sealed(outer.version, outer.header[:-1], outer.header[-1:] + outer.payload,
                        outer.mac)
    assert refusal(opener(), msgspec.msgpack.encode(moved)) is SealReason.BAD_MAC


@pytest.mark.parametrize("frame", [b"", b"\xc0", b"garbage", msgspec.msgpack.encode([1, 2]),
                                   msgspec.msgpack.encode([2, b"h", b"p", b"m" * 32])])
def test_garbage_and_other_versions_are_malformed(frame):
    assert refusal(opener(), frame) is SealReason.MALFORMED


def test_an_oversized_frame_is_refused_before_decoding():
    frame = seal.seal(KEY, header(), b"\xc4" + b"x" * 100)
    assert refusal(opener(max_bytes=len(frame) - 1), frame) is SealReason.OVERSIZED


def test_a_key_holders_bad_header_is_malformed_not_a_crash():
    frame = seal.seal(KEY, header(message_id=b"short"), PAYLOAD)
    assert refusal(opener(), frame) is SealReason.MALFORMED


@pytest.mark.parametrize("offset, reason", [(-31 * S, SealReason.STALE),
                                            (31 * S, SealReason.FUTURE)])
def test_seal_time_outside_the_window_is_refused(offset, reason):
    frame = seal.seal(KEY, header(sealed_at=T0 + offset), PAYLOAD)
    assert refusal(opener(), frame) is reason


@pytest.mark.parametrize("offset", [-29 * S, 29 * S])
def test_clock_skew_within_the_window_is_accepted(offset):
    assert opener().open(seal.seal(KEY, header(sealed_at=T0 + offset), PAYLOAD))


def test_the_same_frame_again_is_a_replay_and_refused():
    op = opener()
    frame = seal.seal(KEY, header(), PAYLOAD)
    op.open(frame)
    assert refusal(op, frame) is SealReason.REPLAYED


def test_the_same_message_resealed_is_a_duplicate_not_delivered_twice():
    op = opener()
    op.open(seal.seal(KEY, header(sealed_at=T0), PAYLOAD))
    again = op.open(seal.seal(KEY, header(sealed_at=T0 + S), PAYLOAD))
    assert again.duplicate


def test_ids_are_per_origin_node():
    op = opener()
    op.open(seal.seal(KEY, header(origin="bob"), PAYLOAD))
    assert not op.open(seal.seal(KEY, header(origin="carol"), PAYLOAD)).duplicate


def test_a_new_opener_refuses_what_was_sealed_before_it_started():
    clock = Clock()
    frame = seal.seal(KEY, header(sealed_at=T0 - S), PAYLOAD)
    fresh = Opener(KEY, window=30.0, capacity=100, max_bytes=1 << 20, clock=clock)
    assert refusal(fresh, frame) is SealReason.STALE
    assert fresh.open(seal.seal(KEY, header(sealed_at=T0 + 1), PAYLOAD))


def test_a_full_cache_forgets_the_oldest_and_refuses_replays_of_it():
    clock = Clock()
    op = opener(clock, capacity=1000)
    frames = [seal.seal(KEY, header(message_id=i.to_bytes(16, "big"), sealed_at=T0 + i),
                        PAYLOAD) for i in range(1001)]
    for frame in frames:
        op.open(frame)
    assert op.remembered == 1000
    # The first was forgotten: its replay is refused all the same (the floor rose).
    assert refusal(op, frames[0]) is SealReason.STALE
    assert refusal(op, frames[1000]) is SealReason.REPLAYED


def test_entries_past_the_window_are_forgotten():
    clock = Clock()
    op = opener(clock)
    frame = seal.seal(KEY, header(), PAYLOAD)
    op.open(frame)
    clock.now += 31 * S
    op.open(seal.seal(KEY, header(message_id=b"\x02" * 16, sealed_at=clock.now), PAYLOAD))
    assert op.remembered == 1
    assert refusal(op, frame) is SealReason.STALE     # the window still refuses it


def test_acks_carry_ids():
    ack = LinkHeader(kind=LinkKind.ACK, origin="bob", message_id=b"\x03" * 16, sealed_at=T0,
                     acks=(b"\x01" * 16, b"\x02" * 16))
    assert opener().open(seal.seal(KEY, ack)).header.acks == ack.acks


def test_network_key_file_is_written_private_and_never_overwritten(tmp_path):
    path = str(tmp_path / "network.key")
    seal.generate_network_key(path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    key = seal.load_network_key(path)
    assert len(key) == 32
    with pytest.raises(seal.NetworkKeyError, match="never overwrites"):
        seal.generate_network_key(path)
    assert seal.load_network_key(path) == key


@pytest.mark.parametrize("content, error", [("abcd", "2-byte key"), ("zz" * 32, "in hex")])
def test_a_short_or_garbled_network_key_is_refused(tmp_path, content, error):
    path = tmp_path / "k"
    path.write_text(content)
    with pytest.raises(seal.NetworkKeyError, match=error):
        seal.load_network_key(str(path))


def test_a_missing_network_key_names_the_file(tmp_path):
    with pytest.raises(seal.NetworkKeyError, match="nope"):
        seal.load_network_key(str(tmp_path / "nope"))


def test_message_ids_are_unique_per_source_and_across_sources():
    first, second = seal.MessageIds(), seal.MessageIds()
    ids = [first.next() for _ in range(1000)] + [second.next() for _ in range(1000)]
    assert len(set(ids)) == 2000 and all(len(i) == seal.MESSAGE_ID_BYTES for i in ids)
