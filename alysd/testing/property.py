"""``ActorPropertyTest``: an invariant of an actor, checked in a real process
over generated message sequences.

Subclass it in a test module (pytest collects classes named ``Test*``)::

    from hypothesis import strategies as st
    from alysd.testing import ActorPropertyTest

    class TestCounter(ActorPropertyTest):
        actor = "actors.examples:Counter"
        config = {"start": 0}
        messages = st.one_of(st.just({"op": "get"}), st.integers())

        def invariant(self, state, sent):
            assert state["count"] == sum(1 for m in sent if m != {"op": "get"})

``test_invariant`` then starts one alysd with the actor (wrapped by
``alysd.testing.probe:Probed``), and for each sequence hypothesis draws
(``messages``, at most ``max_messages`` long): restarts the actor, so every
sequence meets a fresh incarnation; sends the messages one by one (requests,
or one-way messages with ``one_way = True``); after each, reads the actor's
state (its ``test_state()``, else its public attributes) and calls
``invariant(state, sent)``. A failing invariant, or a handler that raises
(unless ``errors_allowed``), fails the test; hypothesis shrinks the sequence
and the failure names the shortest one it found, the state, and the message
after which it broke.

Needs pytest and hypothesis (``pip install "alysd[test]"``).
"""

from __future__ import annotations

from typing import Any, ClassVar

import msgspec
from hypothesis import given, settings as hypothesis_settings, strategies as st

from alysd.errors import RemoteError
from alysd.testing.probe import ACTOR_KEY, STATE_QUERY

SUBJECT = "subject"
_QUERY = {"type": STATE_QUERY}


class InvariantBroken(AssertionError):
    """The actor's state broke the invariant (or its handler raised) after a
    sequence of messages; the message names the sequence and the state."""


class ActorPropertyTest:
    actor: ClassVar[str]                     # "module:Class" of the actor under test
    config: ClassVar[dict[str, Any]] = {}    # its [actors.NAME.config] table
    messages: ClassVar[st.SearchStrategy]    # one message; sequences are drawn from it
    max_messages: ClassVar[int] = 20
    one_way: ClassVar[bool] = False          # send one-way messages instead of requests
    errors_allowed: ClassVar[bool] = False   # a handler that raises is not a failure
    settings: ClassVar[hypothesis_settings] = hypothesis_settings(max_examples=50,
                                                                  deadline=None)
    extra_config: ClassVar[str] = ""         # TOML appended to the generated configuration

    def invariant(self, state: Any, sent: list[Any]) -> None:
        """Raise ``AssertionError`` when ``state``, read after the messages in
        ``sent`` were handled (in order), is wrong."""
        raise NotImplementedError(f"{type(self).__name__} defines no invariant")

    def configuration(self) -> str:
        """The configuration the actor runs in (one supervisor, one actor)."""
        document = {
            "supervisors": {"root": {"strategy": "one_for_one", "max_retries": 1000,
                                     "within_time": "1s"}},
            "actors": {SUBJECT: {"supervisor": "root", "class": "alysd.testing.probe:Probed",
                                 "config": {ACTOR_KEY: self.actor, **self.config}}},
        }
        return msgspec.toml.encode(document).decode() + self.extra_config

    def test_invariant(self, alysd_system) -> None:
        system = alysd_system(self.configuration())

        @self.settings
        @given(st.lists(self.messages, max_size=self.max_messages))
        def holds(sequence: list[Any]) -> None:
            system.call("restart", {"name": SUBJECT})
            sent: list[Any] = []
            for message in sequence:
                sent.append(message)
                try:
                    if self.one_way:
                        system.send(SUBJECT, message)
                    else:
                        system.request(SUBJECT, message)
                except RemoteError as exc:
                    if not self.errors_allowed:
                        raise InvariantBroken(f"{self._after(sent)}: the actor answered "
                                              f"{exc.kind}: {exc}") from None
                # Handled after the message: the query comes from the same sender.
                state = system.request(SUBJECT, _QUERY)
                try:
                    self.invariant(state, list(sent))
                except AssertionError as exc:
                    raise InvariantBroken(f"{self._after(sent)}: state {state!r}: "
                                          f"{exc}") from None

        holds()

    @staticmethod
    def _after(sent: list[Any]) -> str:
        return (f"invariant broken after {len(sent)} message(s) {sent!r} "
                f"(the last one is where it broke)")
