"""alysd.testing.strategies: what they draw is what alysd and msgspec accept."""

from __future__ import annotations

import enum
from typing import Annotated, Literal, Union

import msgspec
import pytest
from hypothesis import given, settings, strategies as st

from alysd import zmq_bus
from alysd.config import config_document, config_from_dict, parse_config
from alysd.testing.strategies import config_trees, envelope_frames, envelopes, messages


class Colour(enum.Enum):
    RED = "red"
    BLUE = "blue"


class Transfer(msgspec.Struct, tag="transfer"):
    to: Annotated[str, msgspec.Meta(pattern="^[a-z]{1,8}$")]
    amount: Annotated[int, msgspec.Meta(ge=1, le=1_000_000)]
    memo: str | None = None


class Balance(msgspec.Struct, tag="balance"):
    account: str
    colours: frozenset[Colour] = frozenset()


class Point(msgspec.Struct, array_like=True, frozen=True):
    x: int
    y: int


TYPES = [
    int, float, str, bytes, bool, None, list[int], dict[str, list[float]], tuple[int, str],
    Literal["a", "b"], Colour, Transfer, Transfer | Balance, Point, dict[str, Point],
    Union[int, str, None],
    Annotated[list[int], msgspec.Meta(min_length=2, max_length=3)],
    Annotated[float, msgspec.Meta(gt=0, lt=1)],
]


@pytest.mark.parametrize("tp", TYPES, ids=repr)
def test_every_drawn_message_round_trips_as_its_type(tp):
    @settings(max_examples=60, deadline=None)
    @given(messages(tp))
    def round_trips(value):
        assert msgspec.msgpack.decode(msgspec.msgpack.encode(value), type=tp) == value
    round_trips()


@settings(max_examples=100, deadline=None)
@given(messages(Transfer))
def test_constraints_are_drawn_within(transfer):
    assert 1 <= transfer.amount <= 1_000_000 and 1 <= len(transfer.to) <= 8


@settings(max_examples=100, deadline=None)
@given(messages())
def test_any_message_is_encodable(value):
    msgspec.msgpack.encode(value)


def test_a_type_the_bus_cannot_carry_is_refused_with_a_reason():
    with pytest.raises(TypeError, match="no strategy"):
        messages(complex)


@settings(max_examples=200, deadline=None)
@given(envelope_frames())
def test_envelope_frames_decode_as_a_receiver_reads_them(frame):
    env = zmq_bus.decode_envelope(frame, zmq_bus.DEFAULT_MAX_MESSAGE_BYTES)
    assert msgspec.msgpack.encode(env) == frame


@settings(max_examples=50, deadline=None)
@given(envelopes(messages(Transfer)))
def test_envelopes_carry_payloads_of_the_given_type(env):
    assert isinstance(msgspec.msgpack.decode(env.payload, type=Transfer), Transfer)


@settings(max_examples=80, deadline=None)
@given(config_trees(("actors.examples:Echo", "actors.examples:Counter")))
def test_every_drawn_config_tree_is_accepted_and_documents_itself(text):
    config = parse_config(text)
    assert config.actors and config.supervisors
    again = config_from_dict(config_document(config))
    # (Warnings come in the document's order, which groups actors by supervisor.)
    assert sorted(again.warnings) == sorted(config.warnings)
    assert again == msgspec.structs.replace(config, source=None, warnings=again.warnings)


@settings(max_examples=30, deadline=None)
@given(st.data())
def test_config_trees_respect_their_bounds(data):
    config = parse_config(data.draw(config_trees(max_supervisors=2, max_actors=3)))
    assert len(config.supervisors) <= 2
    assert len({a.pool or a.name for a in config.actors.values()}) <= 3
