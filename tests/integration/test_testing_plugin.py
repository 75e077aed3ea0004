"""The pytest plugin and ActorPropertyTest (alysd.testing), as their users run
them: the fixture in this suite, and whole test files in a pytest of their own
(pytester), with real daemons and real processes."""

from __future__ import annotations

import json
import os
import re
import signal
import textwrap

import psutil
import pytest

from alysd.testing import gone
from tests.conftest import actor_toml, tree_toml

pytest_plugins = ["pytester"]


def test_alysd_system_sends_requests_kills_and_reads_status(alysd_system, short_tmp):
    journal = os.path.join(short_tmp, "journal")
    system = alysd_system(tree_toml(actor_toml("r", "tests.actors:Recorder",
                                               config={"journal": journal})))
    assert isinstance(system.send("r", {"n": 1}), int)
    system.wait_until(lambda: os.path.exists(journal), message="the one-way message handled")
    assert system.request("r", {"n": 2})["name"] == "r"
    with open(journal) as f:
        assert [json.loads(line)["m"] for line in f] == [{"n": 1}, {"n": 2}]
    before = system.kill("r", signal.SIGKILL)
    after = system.wait_until(lambda: (row := system.status()["r"])["state"] == "running"
                              and row["pid"] != before and row, message="r restarted")
    assert after["restarts"] == 1 and after["last_exit"]["signal"] == "SIGKILL"


def test_a_test_using_the_fixture_leaves_no_process(pytester):
    record = pytester.path / "pids.json"
    pytester.makepyfile(test_uses_alysd=textwrap.dedent(f"""
        import json

        def test_tree(alysd_system):
            system = alysd_system('''
        [supervisors.root]
        [actors.echo]
        supervisor = "root"
        class = "actors.examples:Echo"
        ''')
            assert system.request("echo", {{"hi": 1}}) == {{"hi": 1}}
            pids = [system.pid] + [p.pid for p in system.descendants()]
            open({str(record)!r}, "w").write(json.dumps(pids))
    """))
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    pids = json.loads(record.read_text())
    assert len(pids) >= 3       # alysd, its fork server, the actor
    assert all(gone(pid) for pid in pids), [p for p in pids if not gone(p)]


BUGGY = '''
from alysd import Actor


class WrappingCounter(Actor):
    """Counts increments, but wraps at 5: a bug the property must find."""

    def started(self, ctx):
        self.count = 0

    def handle_message(self, m, ctx):
        if m != {"op": "get"}:
            self.count = (self.count + 1) % 5
        return self.count
'''

PROPERTY = '''
from hypothesis import settings, strategies as st

from alysd.testing import ActorPropertyTest
from alysd.testing.strategies import messages


class Counting:
    config = {{"start": 0}}
    messages = st.one_of(st.just({{"op": "get"}}), messages(int))
    settings = settings(max_examples=25, deadline=None)

    def invariant(self, state, sent):
        assert state["count"] == sum(1 for m in sent if m != {{"op": "get"}})


class Test{name}(Counting, ActorPropertyTest):
    actor = "{actor}"
'''


def test_a_property_that_holds_passes(pytester):
    pytester.makepyfile(test_counter=PROPERTY.format(name="Counter",
                                                     actor="actors.examples:Counter"))
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)


def test_a_broken_invariant_fails_with_the_shortest_sequence(pytester):
    pytester.makepyfile(buggy=BUGGY)
    pytester.makepyfile(test_buggy=PROPERTY.format(name="Buggy", actor="buggy:WrappingCounter"))
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    # Shrunk: five increments by the simplest integer, then the state that broke it.
    result.stdout.re_match_lines([
        ".*InvariantBroken: " + re.escape("invariant broken after 5 message(s) [0, 0, 0, 0, 0]")
        + ".*" + re.escape("state {'count': 0}")])


def test_a_handler_that_raises_fails_the_property(pytester):
    pytester.makepyfile(test_raises=textwrap.dedent('''
        from hypothesis import settings, strategies as st
        from alysd.testing import ActorPropertyTest

        class TestRelay(ActorPropertyTest):
            actor = "actors.examples:Relay"
            config = {"target": "nobody"}
            messages = st.integers(0, 10)
            settings = settings(max_examples=5, deadline=None)

            def invariant(self, state, sent):
                pass
    '''))
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    result.stdout.re_match_lines([".*" + re.escape("invariant broken after 1 message(s) [0]")
                                  + ".*HandlerError"])


@pytest.fixture(autouse=True)
def _no_alysd_left():
    yield
    mine = psutil.Process().children(recursive=True)
    assert not [p for p in mine if "alysd" in " ".join(p.cmdline()) and p.is_running()
                and p.status() != psutil.STATUS_ZOMBIE]
