"""Chaos scenarios (alysd/chaos.py): parsing, timing, targets and judgement, without processes."""

import random

import pytest

from alysd.chaos import (ActorOutcome, FaultKind, Report, judge, format_report, kill_times,
                         parse_scenario, pick)
from alysd.errors import ConfigError

FULL = '''
name = "all of it"
duration = "20s"
recover_within = "3s"
max_restarts = 50

[traffic]
to = "echo"
every = "10ms"
message = {ping = true}

[[faults]]
kind = "kill"
target = "random"
every = "200ms"
duration = "1s"

[[faults]]
kind = "pause"
target = "chain"
at = "2s"
duration = "500ms"

[[faults]]
kind = "partition"
groups = [["chain_supervisor"], ["network_supervisor"]]
at = "5s"
duration = "10s"

[[faults]]
kind = "delay"
from = "chain"
to = "storage"
rate = 0.5
delay = "100ms"
at = "1s"
duration = "2s"
'''


def test_a_full_scenario_decodes_with_durations_in_seconds():
    scenario = parse_scenario(FULL)
    assert (scenario.duration, scenario.recover_within, scenario.max_restarts) == (20.0, 3.0, 50)
    assert scenario.traffic.to == "echo" and scenario.traffic.every == 0.01
    kinds = [f.kind for f in scenario.faults]
    assert kinds == [FaultKind.KILL, FaultKind.PAUSE, FaultKind.PARTITION, FaultKind.DELAY]
    delay = scenario.faults[3]
    assert (delay.sender, delay.receiver, delay.rate, delay.delay) == ("chain", "storage", 0.5, 0.1)
    assert scenario.faults_end == 15.0


@pytest.mark.parametrize("text, where, what", [
    ('duration = "1s"\n[[faults]]\nkind = "kill"\n', "faults[0].target", "needs a target"),
    ('duration = "1s"\n[[faults]]\nkind = "kill"\ntarget = "a"\nsignal = "SIGHUP"\n',
     "faults[0].signal", "SIGKILL or SIGTERM"),
    ('duration = "1s"\n[[faults]]\nkind = "partition"\ngroups = [["a"]]\nduration = "1s"\n',
     "faults[0].groups", "two groups"),
    ('duration = "1s"\n[[faults]]\nkind = "drop"\nrate = 2.0\nduration = "1s"\n',
     "faults[0].rate", "0 < rate <= 1"),
    ('duration = "1s"\n[[faults]]\nkind = "delay"\nduration = "1s"\n', "faults[0].delay",
     "needs its delay"),
    ('duration = "1s"\n[[faults]]\nkind = "pause"\ntarget = "a"\n', "faults[0].duration",
     "needs a duration"),
    ('duration = "1s"\n[[faults]]\nkind = "pause"\ntarget = "a"\nduration = "2s"\n',
     "faults[0]", "after the scenario"),
    ('duration = "soon"\n', "duration", "expected a duration"),
    ('duration = "1s"\n[[faults]]\nkind = "flood"\n', "faults[0].kind", "Invalid enum value"),
    ('recover_within = "1s"\n', "", "missing required field `duration`"),
    ('duration = \n', "", "not valid TOML"),
])
def test_a_bad_scenario_is_refused_naming_the_key(text, where, what):
    with pytest.raises(ConfigError) as refused:
        parse_scenario(text, "s.toml")
    issue = refused.value.issues[0]
    assert issue.path == where and what in issue.message, issue


def test_kills_repeat_every_interval_until_the_fault_ends():
    fault = parse_scenario('duration = "2s"\n[[faults]]\nkind = "kill"\ntarget = "a"\n'
                           'at = "1s"\nevery = "250ms"\nduration = "1s"\n').faults[0]
    assert kill_times(fault) == [1.0, 1.25, 1.5, 1.75, 2.0]
    once = parse_scenario('duration = "2s"\n[[faults]]\nkind = "kill"\ntarget = "a"\n'
                          'at = "1s"\n').faults[0]
    assert kill_times(once) == [1.0]


def test_targets_are_an_actor_one_under_a_supervisor_or_any_running_one():
    under = {"chain_supervisor": ["chain", "engine"], "alys": ["chain", "engine", "echo"]}
    rng = random.Random(3)
    assert pick("echo", under, ["echo", "chain"], rng) == "echo"
    assert pick("echo", under, ["chain"], rng) is None                   # not running
    assert {pick("chain_supervisor", under, ["chain", "engine", "echo"], rng)
            for _ in range(50)} == {"chain", "engine"}
    assert {pick("random", under, ["chain", "echo"], rng) for _ in range(50)} == {"chain", "echo"}
    assert pick("random", under, [], rng) is None


def report(**kw) -> Report:
    defaults = dict(scenario="s", seconds=1.0, faults_applied=["SIGKILL a"],
                    actors={"a": ActorOutcome(restarts=1, detected_s=0.01, recovered_s=0.2)},
                    all_healthy_after_s=0.2)
    return Report(**{**defaults, **kw})


def test_judgement():
    scenario = parse_scenario('duration = "1s"\nrecover_within = "1s"\nmax_restarts = 3\n'
                              '[traffic]\nto = "echo"\n')
    assert judge(scenario, report()) == []
    late = report(actors={"a": ActorOutcome(recovered_s=None)}, all_healthy_after_s=None)
    assert judge(scenario, late) == ["not every actor was running and healthy within 1s of the "
                                     "last fault: a"]
    assert judge(scenario, report(requests=10, lost=2)) == [
        "2 of 10 requests were lost (no reply, no error)"]
    many = report(actors={"a": ActorOutcome(restarts=4, recovered_s=0.1)})
    assert judge(scenario, many) == ["4 restarts, over max_restarts = 3"]
    # Refusals are answers, not losses.
    assert judge(scenario, report(requests=10, answered=7, refused={"ActorUnavailable": 3})) == []


def test_the_report_reads_as_a_table_and_says_what_failed():
    text = format_report(report(requests=5, answered=4, refused={"ActorExited": 1},
                                dead_letters={"filtered": 3}, failures=["it broke"]))
    assert "a                           1    0.010s     0.200s" in text
    assert "requests: 5 sent, 4 answered, refused: ActorExited 1, lost: 0" in text
    assert "dead letters during the run: filtered 3" in text
    assert text.endswith("FAILED: it broke")
    assert format_report(report()).endswith("passed")


@pytest.mark.parametrize("name", ["random-kills.toml", "partition.toml", "memory-leak.toml",
                                  "hung-handler.toml"])
def test_the_shipped_scenarios_parse(name):
    from tests.conftest import REPO
    with open(f"{REPO}/conf/chaos/{name}") as src:
        assert parse_scenario(src.read(), name).faults
