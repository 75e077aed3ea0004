"""Vitals' decisions about heartbeats and probes, on a real actor table, without processes."""

from __future__ import annotations

from dataclasses import dataclass, field

from alysd.actor_table import ActorTable
from alysd.config import parse_config
from alysd.vitals import HUNG_AFTER, Vital, Vitals

CONFIG = parse_config('[system]\nheartbeat_interval = "1s"\nhealth_interval = "5s"\n'
                      'health_timeout = "3s"\n[supervisors.r]\n'
                      '[actors.a]\nsupervisor = "r"\nclass = "m:A"\n'
                      '[actors.b]\nsupervisor = "r"\nclass = "m:A"\n')


@dataclass
class Child:
    name: str
    pid: int | None = None        # no process: only heartbeats and probes are looked at
    vital: Vital = field(default_factory=Vital)


def _setup():
    table = ActorTable(["a", "b"])
    vitals = Vitals(CONFIG, table)
    children = {"a": Child("a"), "b": Child("b")}
    return table, vitals, children


def test_a_beating_actor_is_never_hung_and_a_silent_one_is_after_three_intervals():
    table, vitals, children = _setup()
    slot_a, slot_b = table.index["a"], table.index["b"]
    running = lambda: list(children.values())   # noqa: E731
    for second in range(HUNG_AFTER + 2):
        table.set_beat(slot_a, second + 1)         # a beats every second, b beat once
        if second == 0:
            table.set_beat(slot_b, 1)
        found = vitals.breaches(float(second), children, running)
        if second <= HUNG_AFTER:
            assert found == []
    assert [(c.name, b.reason) for c, b in found] == [("b", "hung")]
    assert "no heartbeat" in found[0][1].detail
    # reported once: its Vital keeps the breach
    assert vitals.breaches(float(HUNG_AFTER + 3), children, running) == []


def test_any_message_counts_as_a_sign_of_life():
    table, vitals, children = _setup()
    running = lambda: [children["a"]]   # noqa: E731
    table.set_beat(table.index["a"], 1)
    vitals.breaches(0.0, children, running)
    for second in range(1, 10):
        Vitals.heard(children["a"].vital, float(second))   # no beat, but messages
        assert vitals.breaches(float(second), children, running) == []


def test_one_probe_in_flight_and_silence_past_the_timeout():
    _, vitals, children = _setup()
    running = lambda: list(children.values())   # noqa: E731
    ask, silent = vitals.probes(0.0, running)
    assert [c.name for c in ask] == ["a", "b"] and silent == []
    assert children["a"].vital.probe == 1
    assert vitals.probes(1.0, running) == ([], [])     # not due before health_interval
    Vitals.answered(children["a"].vital, 1)
    ask, silent = vitals.probes(5.0, running)
    # a answered: asked again; b did not answer for 5 s > health_timeout: silent, not re-asked
    assert [c.name for c in ask] == ["a"] and [c.name for c in silent] == ["b"]
    Vitals.answered(children["b"].vital, 0)             # a stale answer does not count
    assert children["b"].vital.probe_sent is not None


def test_a_reload_retunes_only_actors_whose_limits_changed_and_keeps_removed_ones_until_forgotten():
    _, vitals, _ = _setup()
    limited = parse_config('[system]\nheartbeat_interval = "1s"\nhealth_interval = "5s"\n'
                           'health_timeout = "3s"\n[supervisors.r]\n[actors.a]\nsupervisor = "r"\n'
                           'class = "m:A"\nmemory_limit = "64MiB"\n')
    assert vitals.reconfigure(limited) == {"a"}          # b was removed, a got a limit
    assert vitals.limits["a"].memory == 64 << 20
    assert "b" in vitals.limits                          # still stopping, still watched
    vitals.forget("b")
    assert "b" not in vitals.limits
    paced = parse_config('[system]\nsample_interval = "100ms"\n[supervisors.r]\n'
                         '[actors.a]\nsupervisor = "r"\nclass = "m:A"\nmemory_limit = "64MiB"\n')
    assert vitals.reconfigure(paced) == {"a"}            # a new pace retunes everything
    assert vitals.reconfigure(paced) == set()
