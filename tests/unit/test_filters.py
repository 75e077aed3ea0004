"""Which filter rule a message falls under."""

from __future__ import annotations

import msgspec

from alysd import zmq_bus
from alysd.filters import field_matches, message_type, verdict
from alysd.protocol import FilterRule
from alysd.zmq_bus import Kind, RoutingKind


class Transfer(msgspec.Struct, tag="transfer"):
    amount: int


class Vote(msgspec.Struct, tag="vote", array_like=True):
    height: int


def envelope(message, *, sender="a", kind=Kind.TELL, event=None):
    frame = zmq_bus.encode_envelope(kind, 1, message, sender=sender, target="b",
                                    routing=RoutingKind.BROADCAST if event else RoutingKind.DIRECT,
                                    route=event)
    return zmq_bus.decode_envelope(frame, 1 << 20)


def test_fields_match_exactly_by_prefix_or_always():
    assert field_matches(None, "x") and field_matches(None, None)
    assert field_matches("chain", "chain") and not field_matches("chain", "chains")
    assert field_matches("chain*", "chain_supervisor") and not field_matches("chain*", "net")
    assert not field_matches("chain", None)


def test_message_type_is_the_tag_or_the_event_type():
    assert message_type(envelope(Transfer(5))) == "transfer"
    assert message_type(envelope(Vote(3))) == "vote"
    assert message_type(envelope({"type": "ping"})) == "ping"
    assert message_type(envelope(42)) is None
    assert message_type(envelope({"x": 1}, kind=Kind.EVENT, event="block_imported")) == "block_imported"


def test_first_matching_rule_wins_and_unset_fields_match_anything():
    rules = (FilterRule(id=1, action="drop", sender="x"),
             FilterRule(id=2, action="delay", receiver="b", delay=0.1),
             FilterRule(id=3, action="duplicate"))
    assert verdict(rules, envelope(1, sender="x"), "b").id == 1
    assert verdict(rules, envelope(1, sender="y"), "b").id == 2
    assert verdict(rules, envelope(1, sender="y"), "c").id == 3


def test_type_rules_only_match_their_type():
    rules = (FilterRule(id=1, action="drop", message_type="vote"),)
    assert verdict(rules, envelope(Vote(1)), "b").id == 1
    assert verdict(rules, envelope(Transfer(1)), "b") is None


def test_rate_draws_decide_partial_rules():
    rules = (FilterRule(id=1, action="drop", rate=0.25),)
    assert verdict(rules, envelope(1), "b", draw=lambda: 0.2).id == 1
    assert verdict(rules, envelope(1), "b", draw=lambda: 0.3) is None
