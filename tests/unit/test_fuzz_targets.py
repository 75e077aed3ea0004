"""The fuzz targets (fuzz/targets.py) under hypothesis: what alysd reads from
outside never crashes it, and many inputs do not make memory grow."""

import gc
import tracemalloc

import msgspec
from hypothesis import given, settings, strategies as st

from alysd import zmq_bus
from alysd import seal
from fuzz.targets import TARGETS, config, control, envelope, sealed

# Raw bytes, and bytes that are almost a valid frame (a real envelope cut or
# with bytes flipped), which reach deeper than random ones.
VALID = zmq_bus.encode_envelope(zmq_bus.Kind.BATCH, 3, [{"type": "x"}, [1, 2]], sender="a",
                                target="b")


def mutated(base: bytes):
    return st.tuples(st.integers(0, len(base)), st.binary(max_size=8)).map(
        lambda cut: base[:cut[0]] + cut[1] + base[cut[0] + len(cut[1]):])


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=512) | mutated(VALID))
def test_inbox_frames_never_crash_a_receiver(data):
    envelope(data)


SEALED = seal.seal(bytes(range(32)), seal.LinkHeader(
    kind=seal.LinkKind.DATA, origin="bob", message_id=bytes(16), sealed_at=1, from_actor="a",
    to_actor="b"), msgspec.msgpack.encode({"x": [1, 2]}))
HEADER = msgspec.msgpack.Decoder(seal.Sealed).decode(SEALED).header


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=512) | mutated(SEALED) | mutated(HEADER))
def test_frames_from_other_hosts_never_crash_the_link(data):
    sealed(data)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=256) | mutated(msgspec.msgpack.encode([1, "status", {"name": "a"}])))
def test_control_requests_never_crash_the_daemon(data):
    control(data)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=256) | st.text(max_size=256).map(str.encode)
       | mutated(b'[supervisors.r]\n[actors.a]\nsupervisor = "r"\nclass = "m:A"\n'))
def test_config_files_never_crash_the_loader(data):
    config(data)


def test_deeply_nested_input_is_refused_not_a_crash():
    for target in TARGETS.values():
        target(b"\x91" * 100_000 + b"\xc0")
        target(b"[" * 100_000)


def test_many_inputs_do_not_make_memory_grow():
    samples = [VALID[:n] + b"\xff" * (n % 7) for n in range(len(VALID))] * 20
    for target in TARGETS.values():
        for data in samples[:200]:      # warm caches first
            target(data)
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        for target in TARGETS.values():
            for data in samples:
                target(data)
        gc.collect()
        grown = sum(s.size_diff for s in tracemalloc.take_snapshot().compare_to(before, "lineno"))
    finally:
        tracemalloc.stop()
    assert grown < 256 * 1024, f"memory grew by {grown} bytes over {3 * len(samples)} inputs"
