"""What alysd reads from outside, as fuzz targets: one function per input
surface, each taking raw bytes.

Every target feeds its input through the same code the daemon and its actors
run on that surface, and allows only the typed refusals that code is meant to
answer with. Anything else escaping (a crash) is a finding; so is a hang or
memory that grows over many inputs, which ``run.py`` and the test-suite watch.

* ``envelope``: a frame on an actor's inbox: envelope decoding, then what a
  receiver reads of it (message types for filters and permissions, the
  payload, a batch's length, a redelivery's rewrite).
* ``control``: a request on the control socket, as alysd decodes it.
* ``config``: a configuration file, through the same loader as ``alysd``
  (and ``alysd check-config``).
* ``sealed``: a frame from another host, as the host link opens it; and the
  same bytes as a header behind a valid MAC (what a key holder could send),
  to reach the checks past the MAC.
"""

from __future__ import annotations

import hashlib
import hmac

import msgspec

from alysd import permissions, seal, zmq_bus
from alysd.config import parse_config
from alysd.control import request_decoder
from alysd.errors import ConfigError, ProtocolError
from alysd.filters import message_type

MAX_BYTES = 1 << 20


def envelope(data: bytes) -> None:
    try:
        env = zmq_bus.decode_envelope(data, MAX_BYTES)
    except ProtocolError:
        return
    message_type(env)
    permissions.types_in(env)
    refusals = (ProtocolError, *zmq_bus.DECODE_ERRORS)
    try:
        zmq_bus.decode_any(env.payload)
    except refusals:
        pass
    if env.kind == zmq_bus.Kind.BATCH:
        try:
            zmq_bus.batch_length(env.payload)
        except refusals:
            pass
    try:
        zmq_bus.redelivery(data)
    except refusals:
        pass


def control(data: bytes) -> None:
    try:
        request_decoder.decode(data)
    except zmq_bus.DECODE_ERRORS:
        pass


def config(data: bytes) -> None:
    try:
        parse_config(data.decode("utf-8", errors="surrogateescape"))
    except ConfigError:
        pass
    except UnicodeEncodeError:
        pass   # surrogates: a file that is not UTF-8 is refused before parsing


_KEY = bytes(range(32))


def _opener() -> seal.Opener:
    return seal.Opener(_KEY, window=30.0, capacity=1000, max_bytes=MAX_BYTES, floor=0)


def sealed(data: bytes) -> None:
    for frame in (data, _behind_a_valid_mac(data)):
        try:
            _opener().open(frame)
        except seal.SealRefused:
            pass


def _behind_a_valid_mac(header: bytes) -> bytes:
    payload = b"\xc0"
    mac = hmac.new(_KEY, b"alysd-link/1\x00", hashlib.sha256)
    for part in (len(header).to_bytes(4, "big"), header, payload):
        mac.update(part)
    return msgspec.msgpack.encode(seal.Sealed(seal.VERSION, header, payload, mac.digest()))


TARGETS = {"envelope": envelope, "control": control, "config": config, "sealed": sealed}
