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
"""

from __future__ import annotations

from alysd import permissions, zmq_bus
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


TARGETS = {"envelope": envelope, "control": control, "config": config}
