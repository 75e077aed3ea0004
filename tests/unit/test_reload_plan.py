"""Tests of alysd.reload: what a new config changes, how each change is applied,
and when a reload has settled (pure; no processes)."""

import pytest

from alysd.config import parse_config
from alysd.reload import (ACTOR_FIELDS, REFUSED_SYSTEM_KEYS, SETTLED, WAITING, Awaited, Awaiting,
                          Facts, Treatment, describe, judge, plan_reload, treatment_of,
                          unsettled_reason)

BASE = """
[supervisors.root]
[supervisors.chain]
parent = "root"

[actors.a]
supervisor = "root"
class = "m:A"
[actors.a.config]
level = 1

[actors.b]
supervisor = "chain"
class = "m:B"

[actors.c]
supervisor = "chain"
class = "m:C"
"""


def plan(after: str, before: str = BASE):
    return plan_reload(parse_config(before), parse_config(after))


def test_the_same_config_is_an_empty_plan():
    result = plan(BASE)
    assert result.empty and result.changed == () and result.refused == ()


def test_a_config_table_change_is_live_and_names_the_key():
    result = plan(BASE.replace("level = 1", "level = 2"))
    assert [(c.name, c.fields, c.treatment) for c in result.changed] == [
        ("a", ("config",), Treatment.LIVE)]
    assert describe(result)["updated_live"] == {"a": ["config"]}


@pytest.mark.parametrize("extra, fields, treatment", [
    ('cpu_limit = 0.5', ("cpu_limit",), Treatment.ROOT),
    ('strategy = "exponential_backoff"', ("strategy",), Treatment.ROOT),
    ('start_timeout = "3s"', ("start_timeout",), Treatment.ROOT),
    ('memory_limit = "64MiB"', ("memory_limit",), Treatment.LIVE),
    ('max_mailbox_size = 7', ("mailbox.capacity",), Treatment.LIVE),
    ('memory_limit = "64MiB"\nmax_cpu_time = "1s"', ("memory_limit", "max_cpu_time"),
     Treatment.LIVE),
    ('mailbox = { backpressure = "fail" }', ("mailbox.backpressure",), Treatment.RESTART),
    ('batch = { max_batch = 8 }', ("batch",), Treatment.RESTART),
    ('memory_limit = "64MiB"\nbatch = { max_batch = 8 }', ("memory_limit", "batch"),
     Treatment.RESTART),
])
def test_the_strongest_treatment_of_the_changed_fields_wins(extra, fields, treatment):
    after = BASE.replace('class = "m:B"', f'class = "m:B"\n{extra}')
    (change,) = plan(after).changed
    assert (change.name, sorted(change.fields), change.treatment) == ("b", sorted(fields), treatment)


def test_a_class_change_is_a_restart_under_its_toml_name():
    (change,) = plan(BASE.replace('"m:C"', '"m:D"')).changed
    assert (change.name, change.fields, change.treatment) == ("c", ("class",), Treatment.RESTART)


def test_moving_an_actor_to_another_supervisor_restarts_it():
    (change,) = plan(BASE.replace('supervisor = "chain"\nclass = "m:B"',
                                  'supervisor = "root"\nclass = "m:B"')).changed
    assert (change.name, change.treatment) == ("b", Treatment.RESTART)


def test_unknown_spec_fields_are_restarts_by_default():
    assert treatment_of("some_future_field") is Treatment.RESTART
    assert all(isinstance(t, Treatment) for t in ACTOR_FIELDS.values())


def test_added_in_new_start_order_and_removed_in_stop_order():
    after = (BASE.replace('[actors.a]', '[actors.x]\nsupervisor = "root"\nclass = "m:X"\n\n[actors.a]')
             + '\n[actors.y]\nsupervisor = "chain"\nclass = "m:Y"\n')
    after = after.replace('[actors.b]\nsupervisor = "chain"\nclass = "m:B"\n', "")
    after = after.replace('[actors.c]\nsupervisor = "chain"\nclass = "m:C"\n', "")
    result = plan(after)
    assert result.added == ("y", "x")    # depth first: chain (holding y) is before x in the file
    assert result.removed == ("c", "b")    # reverse start order
    assert result.changed == ()


def test_pool_size_changes_add_and_remove_members_only():
    before = BASE + '\n[actors.p]\nsupervisor = "root"\nclass = "m:P"\ninstances = 3\n'
    result = plan(before.replace("instances = 3", "instances = 2"), before)
    assert result.removed == ("p.2",)
    assert {c.name: c.fields for c in result.changed} == {"p.0": ("instances",),
                                                         "p.1": ("instances",)}
    assert all(c.treatment is Treatment.ROOT for c in result.changed)
    grown = plan(before.replace("instances = 3", "instances = 4"), before)
    assert grown.added == ("p.3",)


def test_supervisor_changes_are_listed():
    after = BASE.replace('[supervisors.chain]\nparent = "root"',
                         '[supervisors.chain]\nparent = "root"\nmax_retries = 9\n\n'
                         '[supervisors.extra]\nparent = "root"')
    result = plan(after)
    assert (result.supervisors_added, result.supervisors_changed) == (("extra",), ("chain",))
    assert result.changed == ()


@pytest.mark.parametrize("key, toml", [
    ("system.heartbeat_interval", '[system]\nheartbeat_interval = "2s"\n'),
    ("system.max_message_bytes", '[system]\nmax_message_bytes = "1MiB"\n'),
    ("system.runtime_dir", '[system]\nruntime_dir = "/run/elsewhere"\n'),
    ("monitoring.listen", '[monitoring]\nlisten = "127.0.0.1:9999"\n'),
])
def test_keys_built_into_the_running_processes_refuse_the_reload(key, toml):
    result = plan(toml + BASE)
    assert key in REFUSED_SYSTEM_KEYS
    assert [issue.path for issue in result.refused] == [key]
    assert "only when alysd restarts" in result.refused[0].message
    assert key not in result.system


def test_root_side_system_keys_apply_in_place():
    result = plan('[system]\nhealth_interval = "2s"\nreload_timeout = "5s"\n' + BASE)
    assert result.refused == ()
    assert set(result.system) == {"system.health_interval", "system.reload_timeout"}
    assert not result.empty


def test_a_system_default_folded_into_actors_shows_on_each_actor():
    result = plan('[system]\nstart_timeout = "3s"\n' + BASE)
    assert {c.name for c in result.changed} == {"a", "b", "c"}
    assert all(c.fields == ("start_timeout",) and c.treatment is Treatment.ROOT
               for c in result.changed)


# --- judging a reload's progress ---------------------------------------------------------

def awaited(awaiting=Awaiting.INCARNATION, health_before="healthy", **kw):
    return Awaited(name="a", awaiting=awaiting, incarnation=2, restarts=0,
                   health_before=health_before, **kw)


def facts(state="running", incarnation=3, restarts=0, health="healthy"):
    return Facts(state, incarnation, restarts, health)


def test_a_new_incarnation_that_is_healthy_settles():
    assert judge(awaited(), facts()) == SETTLED


@pytest.mark.parametrize("now", [facts(incarnation=2), facts(state="restarting"),
                                 facts(health="unhealthy"), facts(health="degraded"),
                                 facts(health="unknown")])
def test_not_yet_settled_is_waiting(now):
    assert judge(awaited(), now) == WAITING


def test_degraded_is_enough_only_for_an_actor_that_already_was():
    assert judge(awaited(health_before="degraded"), facts(health="degraded")) == SETTLED


@pytest.mark.parametrize("now, why", [(facts(restarts=1), "it crashed"),
                                      (facts(state="failed"), "it is failed"),
                                      (None, "it is no longer configured")])
def test_a_crash_or_a_failure_fails_at_once(now, why):
    assert judge(awaited(), now) == why


def test_an_answer_must_have_applied():
    live = awaited(Awaiting.ANSWER, seq=4)
    assert judge(live, facts(incarnation=2)) == WAITING
    assert unsettled_reason(live, facts(incarnation=2)) == "it did not answer the new config"
    live.outcome = "applied"
    assert judge(live, facts(incarnation=2)) == SETTLED
    live.outcome, live.error = "failed", "ValueError: no"
    assert judge(live, facts(incarnation=2)) == "config_changed() raised: ValueError: no"


def test_the_reason_given_at_the_deadline():
    assert unsettled_reason(awaited(), facts(health="unhealthy")) == "it is unhealthy"
    assert unsettled_reason(awaited(), facts(state="starting", incarnation=3)) == \
        "it is still starting"
