"""Tests of alysd.config: specs, validation messages, start order, class import."""

import json
import sys
import textwrap
import tomllib
import types

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from alysd.config import (MAX_INSTANCES, ActorSpec, Backpressure, BackoffSpec, BatchSpec,
                          ChildPolicy, Config, ConfigError, Delivery, MailboxSpec, PoolRouting,
                          Restart, Strategy, SupervisorSpec, SystemSpec, check_imports,
                          config_from_dict, import_actor_class, load_config, parse_config,
                          settings_of)
from alysd.errors import ConfigIssue
from alysd.runtime_dir import MAX_NAME

EXAMPLE = """
[system]
runtime_dir = "/run/alysd"
heartbeat_interval = "1s"
start_timeout = "20s"
shutdown_timeout = "3s"
max_message_bytes = "16MiB"
log_level = "debug"

[supervisors.alys]
strategy = "one_for_all"
max_retries = 3
within_time = "5s"

[supervisors.chain_supervisor]
parent = "alys"
strategy = "one_for_one"
max_retries = 5
within_time = "10s"

[actors.engine]
supervisor = "chain_supervisor"
class = "actors.engine:EngineActor"
strategy = "circuit_breaker"
restart = "transient"
memory_limit = "512MiB"
cpu_limit = 0.5
shutdown_timeout = "brutal_kill"
failure_threshold = 3
recovery_timeout = "1m"
[actors.engine.mailbox]
capacity = 100
backpressure = "drop_oldest"
[actors.engine.config]
url = "http://127.0.0.1:8545"
retries = [1, 2]

[actors.monitor]
supervisor = "alys"
class = "actors.monitor:Monitor"
"""


def issues_of(text: str) -> list[ConfigIssue]:
    with pytest.raises(ConfigError) as info:
        parse_config(text)
    return info.value.issues


def messages(text: str) -> dict[str, str]:
    return {issue.path: issue.message for issue in issues_of(text)}


ROOT = '[supervisors.alys]\n'


def actor(name: str = "engine", body: str = "", supervisor: str = "alys",
          class_path: str = "m:C") -> str:
    return f'[actors.{name}]\nsupervisor = "{supervisor}"\nclass = "{class_path}"\n{body}\n'


# --- decoding ----------------------------------------------------------------

def test_example_decodes_to_specs():
    config = parse_config(EXAMPLE, source="alysd.toml")
    assert config.source == "alysd.toml"
    assert config.root == "alys"
    assert config.system == SystemSpec(runtime_dir="/run/alysd", heartbeat_interval=1.0,
                                       start_timeout=20.0, shutdown_timeout=3.0,
                                       max_message_bytes=16 << 20)
    assert config.logging.level == "debug"  # system.log_level is its alias
    assert config.supervisors["chain_supervisor"] == SupervisorSpec(
        name="chain_supervisor", parent="alys", strategy=Strategy.ONE_FOR_ONE,
        max_retries=5, within_time=10.0)
    engine = config.actors["engine"]
    assert engine.class_path == "actors.engine:EngineActor"
    assert engine.strategy is ChildPolicy.CIRCUIT_BREAKER
    assert engine.restart is Restart.TRANSIENT
    assert engine.memory_limit == 512 << 20
    assert engine.cpu_limit == 0.5
    assert engine.start_timeout == 20.0  # from [system]
    assert engine.shutdown_timeout is None  # brutal_kill
    assert engine.breaker.failure_threshold == 3 and engine.breaker.recovery_timeout == 60.0
    assert engine.mailbox == MailboxSpec(capacity=100, backpressure=Backpressure.DROP_OLDEST)
    assert engine.config == {"url": "http://127.0.0.1:8545", "retries": [1, 2]}
    monitor = config.actors["monitor"]
    assert monitor.shutdown_timeout == 3.0  # from [system]
    assert config.warnings == ()


def test_defaults():
    config = parse_config(ROOT + actor())
    assert config.system == SystemSpec()
    assert config.system.max_message_bytes == 16 << 20
    assert config.supervisors["alys"] == SupervisorSpec(name="alys")
    assert config.supervisors["alys"].strategy is Strategy.ONE_FOR_ONE
    assert config.supervisors["alys"].max_retries == 3
    engine = config.actors["engine"]
    assert engine == ActorSpec(name="engine", supervisor="alys", class_path="m:C")
    assert (engine.strategy, engine.restart) == (ChildPolicy.ONE_FOR_ONE, Restart.PERMANENT)
    assert (engine.start_timeout, engine.shutdown_timeout) == (10.0, 5.0)
    assert engine.memory_limit is None and engine.cpu_limit is None
    assert engine.backoff == BackoffSpec(initial_delay=0.1, max_delay=10.0, multiplier=2.0,
                                         max_retries=10, reset_after=1.0)
    assert engine.mailbox == MailboxSpec(capacity=10000, backpressure=Backpressure.BLOCK,
                                         delivery=Delivery.AT_LEAST_ONCE, max_retries=3)
    assert engine.config == {}


def test_defaults_of_delivery_batching_and_pools():
    config = parse_config(ROOT + actor())
    assert (config.system.state_dir, config.system.dead_letter_capacity,
            config.system.delivery_timeout) == (None, 10000, 30.0)
    engine = config.actors["engine"]
    assert engine.mailbox.delivery is Delivery.AT_LEAST_ONCE and engine.mailbox.max_retries == 3
    assert engine.batch is None
    assert (engine.instances, engine.routing, engine.pool) == (1, PoolRouting.ROUND_ROBIN, None)
    assert config.pools == {}
    assert BatchSpec() == BatchSpec(max_batch=64, max_wait=0.005)
    assert parse_config(ROOT + actor(body="[actors.engine.batch]")).actors["engine"].batch == \
        BatchSpec()


def test_delivery_batching_and_pool_keys_decode():
    config = parse_config('[system]\nstate_dir = "/var/lib/alysd"\ndead_letter_capacity = 1\n'
                          'delivery_timeout = "250ms"\n' + ROOT
                          + actor(body='instances = 2\nrouting = "least_loaded"\n'
                                  '[actors.engine.mailbox]\ndelivery = "at_most_once"\n'
                                  'max_retries = 0\n'
                                  '[actors.engine.batch]\nmax_batch = 1\nmax_wait = "2ms"'))
    assert config.system == SystemSpec(state_dir="/var/lib/alysd", dead_letter_capacity=1,
                                       delivery_timeout=0.25)
    member = config.actors["engine.0"]
    assert member.mailbox == MailboxSpec(delivery=Delivery.AT_MOST_ONCE, max_retries=0)
    assert member.batch == BatchSpec(max_batch=1, max_wait=0.002)
    assert (member.instances, member.routing) == (2, PoolRouting.LEAST_LOADED)
    assert config.warnings == ()


def test_instances_limits_accepted():
    config = parse_config(ROOT + actor(body=f"instances = {MAX_INSTANCES}"))
    assert config.pools["engine"][-1] == f"engine.{MAX_INSTANCES - 1}"
    assert len(config.actors) == MAX_INSTANCES
    assert parse_config(ROOT + actor(body="instances = 1")).actors["engine"].pool is None


def test_reset_after_defaults_to_ten_initial_delays():
    assert BackoffSpec(initial_delay=0.5).reset_after == 5.0
    backoff = parse_config(ROOT + actor(body='strategy = "exponential_backoff"\n'
                                         'initial_delay = "200ms"\nmultiplier = 3'
                                         )).actors["engine"].backoff
    assert (backoff.initial_delay, backoff.reset_after, backoff.multiplier) == (0.2, 2.0, 3.0)


def test_cpu_limit_accepts_int_and_zero_actors_are_allowed():
    assert parse_config(ROOT + actor(body="cpu_limit = 2")).actors["engine"].cpu_limit == 2.0
    assert parse_config(ROOT).actors == {}


def test_config_table_takes_any_toml_values():
    config = parse_config(ROOT + actor(body="[actors.engine.config]\nwhen = 1979-05-27\n"
                                       "nested = { a = [1, 'x', true] }"))
    assert config.actors["engine"].config["nested"] == {"a": [1, "x", True]}


# --- refusals ----------------------------------------------------------------

def test_syntax_error_is_one_issue_without_path():
    [issue] = issues_of("[supervisors.alys\n")
    assert issue.path == "" and "line 1" in issue.message


def test_every_issue_is_reported_with_its_key_path():
    found = messages(textwrap.dedent("""
        colour = "red"
        [system]
        log_level = "loud"
        heartbeat_interval = 5
        [supervisors.alys]
        strategy = "sideways"
        max_retries = -1
        within_time = "0s"
        [actors.engine]
        supervisor = "alys"
        class = "nope"
        colour = "blue"
        cpu_limit = "x"
        strategy = "foo"
        restart = "sometimes"
        memory_limit = 512
        shutdown_timeout = "5"
        multiplier = 0.5
        failure_threshold = 0
        [actors.engine.mailbox]
        capacity = 0
        backpressure = "shout"
        [actors.other]
        supervisor = "alys"
        class = "m:C"
        start_timeout = true
    """))
    assert found == {
        "colour": "unknown key",
        "system.log_level": "expected one of debug, info, warning, error; got 'loud'",
        "system.heartbeat_interval": 'expected a duration such as "250ms", "5s" or "2m" '
                                     "(units: us, ms, s, m, h), got 5",
        "supervisors.alys.strategy":
            "expected one of one_for_one, one_for_all, rest_for_one; got 'sideways'",
        "supervisors.alys.max_retries": "expected an integer >= 0, got -1",
        "supervisors.alys.within_time": "expected a duration > 0, got '0s'",
        "actors.engine.class": "expected \"module.path:ClassName\", got 'nope'",
        "actors.engine.colour": "unknown key",
        "actors.engine.cpu_limit": "expected a number > 0, got 'x'",
        "actors.engine.strategy": "expected one of one_for_one, exponential_backoff, "
                                  "circuit_breaker, never; got 'foo'",
        "actors.engine.restart": "expected one of permanent, transient, temporary; got 'sometimes'",
        "actors.engine.memory_limit": 'expected a size such as "64MiB", "512MiB" or "1GiB" '
                                      "(units: B, kB, KiB, MB, MiB, GB, GiB, TB, TiB), got 512",
        "actors.engine.shutdown_timeout": 'expected "brutal_kill" or a duration such as "250ms", '
                                          "\"5s\" or \"2m\" (units: us, ms, s, m, h), got '5'",
        "actors.engine.multiplier": "expected a number >= 1, got 0.5",
        "actors.engine.failure_threshold": "expected an integer >= 1, got 0",
        "actors.engine.mailbox.capacity": "expected an integer >= 1, got 0",
        "actors.engine.mailbox.backpressure":
            "expected one of drop_oldest, drop_newest, block, fail; got 'shout'",
        "actors.other.start_timeout": 'expected a duration such as "250ms", "5s" or "2m" '
                                      "(units: us, ms, s, m, h), got true",
    }


@pytest.mark.parametrize("body, path, message", [
    ("cpu_limit = nan", "actors.engine.cpu_limit", "expected a number > 0, got nan"),
    ("cpu_limit = inf", "actors.engine.cpu_limit", "expected a number > 0, got inf"),
    ("cpu_limit = 0", "actors.engine.cpu_limit", "expected a number > 0, got 0"),
    ("max_retries = 1.5", "actors.engine.max_retries", "expected an integer >= 0, got 1.5"),
    ("mailbox = 3", "actors.engine.mailbox", "expected a table, got 3"),
    ("config = [1]", "actors.engine.config", "expected a table, got an array"),
    ('memory_limit = "0B"', "actors.engine.memory_limit", "expected a size > 0, got '0B'"),
    ('max_delay = "50ms"', "actors.engine.max_delay",
     "expected a duration >= initial_delay (100ms), got 50ms"),
    ('initial_delay = "20s"', "actors.engine.initial_delay",
     "expected a duration <= max_delay (default 10s), got 20s"),
])
def test_actor_key_refusals(body, path, message):
    assert messages(ROOT + actor(body=body)) == {path: message}


@pytest.mark.parametrize("body, path, message", [
    ('state_dir = ""', "system.state_dir", "expected a directory path, got ''"),
    ("state_dir = 1", "system.state_dir", "expected a directory path, got 1"),
    ("dead_letter_capacity = 0", "system.dead_letter_capacity",
     "expected an integer >= 1, got 0"),
    ("dead_letter_capacity = 1.5", "system.dead_letter_capacity",
     "expected an integer >= 1, got 1.5"),
    ("dead_letter_capacity = true", "system.dead_letter_capacity",
     "expected an integer >= 1, got true"),
    ('delivery_timeout = "0s"', "system.delivery_timeout", "expected a duration > 0, got '0s'"),
    ("delivery_timeout = 30", "system.delivery_timeout",
     'expected a duration such as "250ms", "5s" or "2m" (units: us, ms, s, m, h), got 30'),
])
def test_system_key_refusals(body, path, message):
    assert messages("[system]\n" + body + "\n" + ROOT) == {path: message}


@pytest.mark.parametrize("body, path, message", [
    ('[actors.engine.mailbox]\ndelivery = "exactly_once"', "actors.engine.mailbox.delivery",
     "expected one of at_least_once, at_most_once; got 'exactly_once'"),
    ("[actors.engine.mailbox]\ndelivery = 1", "actors.engine.mailbox.delivery",
     "expected one of at_least_once, at_most_once; got 1"),
    ("[actors.engine.mailbox]\nmax_retries = -1", "actors.engine.mailbox.max_retries",
     "expected an integer >= 0, got -1"),
    ('[actors.engine.mailbox]\nmax_retries = "3"', "actors.engine.mailbox.max_retries",
     "expected an integer >= 0, got '3'"),
    ("batch = 3", "actors.engine.batch", "expected a table, got 3"),
    ("[actors.engine.batch]\nmax_batch = 0", "actors.engine.batch.max_batch",
     "expected an integer >= 1, got 0"),
    ("[actors.engine.batch]\nmax_batch = 2.0", "actors.engine.batch.max_batch",
     "expected an integer >= 1, got 2.0"),
    ('[actors.engine.batch]\nmax_wait = "0ms"', "actors.engine.batch.max_wait",
     "expected a duration > 0, got '0ms'"),
    ("[actors.engine.batch]\nmax_wait = 0.005", "actors.engine.batch.max_wait",
     'expected a duration such as "250ms", "5s" or "2m" (units: us, ms, s, m, h), got 0.005'),
    ("[actors.engine.batch]\nsize = 4", "actors.engine.batch.size", "unknown key"),
    ("instances = 0", "actors.engine.instances", "expected an integer from 1 to 256, got 0"),
    ("instances = 257", "actors.engine.instances", "expected an integer from 1 to 256, got 257"),
    ('instances = "3"', "actors.engine.instances", "expected an integer from 1 to 256, got '3'"),
    ("instances = true", "actors.engine.instances", "expected an integer from 1 to 256, got true"),
    ('routing = "random"', "actors.engine.routing",
     "expected one of round_robin, least_loaded; got 'random'"),
    ('pool = "engine"', "actors.engine.pool", "unknown key"),
])
def test_delivery_batching_and_pool_key_refusals(body, path, message):
    assert messages(ROOT + actor(body=body)) == {path: message}


def test_refused_delay_is_not_compared_again():
    assert list(messages(ROOT + actor(body='initial_delay = "x"\nmax_delay = "1ms"'))) == [
        "actors.engine.initial_delay"]


def test_required_actor_keys():
    assert messages(ROOT + "[actors.engine]\n") == {
        "actors.engine.supervisor": "required key missing",
        "actors.engine.class": "required key missing",
    }


def test_sections_must_be_tables():
    assert messages('system = 1\nsupervisors = "x"\nactors = []') == {
        "system": "expected a table, got 1",
        "supervisors": "expected a table of supervisors, got 'x'",
        "actors": "expected a table of actors, got an array",
    }
    assert messages(ROOT + "[actors]\nengine = 3") == {"actors.engine": "expected a table, got 3"}


@pytest.mark.parametrize("name", ["Engine", "1st", "a.b", "x" * 49, "", "é", "a b"])
def test_names_must_be_lowercase_identifiers(name):
    key = json.dumps(name, ensure_ascii=False)
    [issue] = issues_of(ROOT + f'[actors.{key}]\nsupervisor = "alys"\nclass = "m:C"\n')
    assert issue.path == "actors." + (name if name in ("Engine", "1st", "x" * 49) else key)
    assert issue.message.startswith(f"invalid name {name!r}: expected a lowercase letter")


def test_name_limits_accepted():
    name = "a" + "-_09" * 11 + "z" * 3
    assert len(name) == 48
    assert name in parse_config(ROOT + actor(name)).actors


def test_pool_member_names_must_fit_the_name_limit():
    long = "w" * (MAX_NAME - 1)  # the longest name with a "." to spare: no pool fits
    assert messages(ROOT + actor(long, body="instances = 2")) == {
        f"actors.{long}.instances": "expected at most 1 for this name: member names must fit in "
                                    f"48 characters, '{long}.1' has 49; got 2"}
    two_digits = "w" * (MAX_NAME - 3)
    assert messages(ROOT + actor(two_digits, body="instances = 101")) == {
        f"actors.{two_digits}.instances": "expected at most 100 for this name: member names "
                                          f"must fit in 48 characters, '{two_digits}.100' has "
                                          "49; got 101"}
    assert parse_config(ROOT + actor(two_digits, body="instances = 100")).pools[two_digits][-1] \
        == f"{two_digits}.99"
    assert len(max(parse_config(ROOT + actor("w" * (MAX_NAME - 4), body="instances = 256")
                                ).actors, key=len)) == MAX_NAME


def test_invalid_name_with_instances_is_reported_once():
    assert list(messages(ROOT + actor("x" * 49, body="instances = 2"))) == ["actors." + "x" * 49]


def test_names_are_unique_across_sections():
    assert messages(ROOT + actor("alys")) == {"actors.alys": "name already used by supervisor alys"}


def test_references_must_name_supervisors():
    found = messages(ROOT + '[supervisors.sub]\nparent = "ghost"\n'
                     + actor("engine", supervisor="nobody") + actor("worker", supervisor="engine"))
    assert found == {
        "supervisors.sub.parent": "no supervisor named 'ghost'",
        "actors.engine.supervisor": "no supervisor named 'nobody'",
        "actors.worker.supervisor": "no supervisor named 'engine' ('engine' is an actor)",
    }


def test_at_least_one_supervisor():
    assert messages("") == {"supervisors": "at least one supervisor is required"}
    assert messages(actor()) == {
        "supervisors": "at least one supervisor is required",
        "actors.engine.supervisor": "no supervisor named 'alys'",
    }


def test_exactly_one_root():
    assert messages("[supervisors.a]\n[supervisors.b]\n[supervisors.c]\nparent = 'a'") == {
        "supervisors": "2 root supervisors (a, b): exactly one supervisor must have no parent"}
    assert messages("[supervisors.a]\nparent = 'b'\n[supervisors.b]\nparent = 'a'") == {
        "supervisors": "no root supervisor: exactly one supervisor must have no parent",
        "supervisors.a.parent": "parent cycle: a -> b -> a",
    }


def test_cycles_are_named_once():
    found = issues_of(ROOT + "[supervisors.x]\nparent = 'z'\n[supervisors.y]\nparent = 'x'\n"
                      "[supervisors.z]\nparent = 'y'\n[supervisors.w]\nparent = 'x'\n"
                      "[supervisors.self]\nparent = 'self'\n")
    assert [str(issue) for issue in found] == [
        "supervisors.x.parent: parent cycle: x -> z -> y -> x",
        "supervisors.self.parent: parent cycle: self -> self",
    ]


def test_refused_parent_causes_no_second_issue():
    # sub's place in the tree is unknown, so neither "two roots" nor "no root".
    assert messages(ROOT + "[supervisors.sub]\nparent = 5\n") == {
        "supervisors.sub.parent": "expected a supervisor name, got 5"}
    assert messages("[supervisors.sub]\nparent = 5\n") == {
        "supervisors.sub.parent": "expected a supervisor name, got 5"}


def test_odd_keys_are_quoted_in_paths():
    assert messages(ROOT + actor(body='"a.b" = 1')) == {'actors.engine."a.b"': "unknown key"}


def test_config_error_carries_source_and_lists_issues():
    with pytest.raises(ConfigError) as info:
        parse_config("[supervisors.alys]\nstrategy = 1\n", source="x.toml")
    assert info.value.source == "x.toml"
    assert "invalid configuration in x.toml" in str(info.value)
    assert "supervisors.alys.strategy: expected one of" in str(info.value)


# --- warnings ----------------------------------------------------------------

def test_unreachable_intensity_window_is_a_warning():
    config = parse_config('[supervisors.alys]\nmax_retries = 3\nwithin_time = "5s"\n'
                          + actor(body='strategy = "exponential_backoff"\nmax_delay = "2s"'))
    assert config.warnings == (
        "actors.engine: restart intensity window unreachable with this backoff: max_delay (2s)"
        " x max_retries of supervisor alys (3) = 6s > its within_time (5s)",)
    reachable = parse_config('[supervisors.alys]\nmax_retries = 3\nwithin_time = "5s"\n'
                             + actor(body='strategy = "exponential_backoff"\nmax_delay = "1s"'))
    assert reachable.warnings == ()


@pytest.mark.parametrize("body", ['routing = "least_loaded"',
                                  'routing = "round_robin"\ninstances = 1'])
def test_routing_without_a_pool_is_a_warning(body):
    config = parse_config(ROOT + actor(body=body))
    assert config.warnings == (
        "actors.engine: routing ignored: only used with instances > 1, not 1",)
    assert config.pools == {}


def test_pool_warnings_name_the_pool_once():
    config = parse_config(ROOT + actor(body='instances = 3\nrouting = "least_loaded"\n'
                                       'failure_threshold = 2'))
    assert config.warnings == (
        ("actors.engine: failure_threshold ignored: only used with strategy = "
         '"circuit_breaker", not "one_for_one"'),)


def test_keys_of_another_policy_are_a_warning():
    config = parse_config(ROOT + actor(body='max_delay = "1s"\nfailure_threshold = 2'))
    assert config.warnings == (
        'actors.engine: max_delay ignored: only used with strategy = "exponential_backoff",'
        ' not "one_for_one"',
        'actors.engine: failure_threshold ignored: only used with strategy = "circuit_breaker",'
        ' not "one_for_one"',
    )


# --- start order and tree queries -----------------------------------------------

INTERLEAVED = """
[actors.first]
supervisor = "alys"
class = "m:C"
[actors.first.mailbox]
capacity = 5

[supervisors.sub]
parent = "alys"

[actors.deep]
supervisor = "sub"
class = "m:C"

[supervisors.alys]

[actors.last]
supervisor = "alys"
class = "m:C"

[actors."sub2-actor"]
supervisor = "sub"
class = "m:C"
"""


def test_children_start_in_file_order_depth_first():
    config = parse_config(INTERLEAVED)
    assert config.start_order == (("supervisor", "alys"), ("actor", "first"),
                                  ("supervisor", "sub"), ("actor", "deep"),
                                  ("actor", "sub2-actor"), ("actor", "last"))
    assert list(config.supervisors) == ["alys", "sub"]
    assert list(config.actors) == ["first", "deep", "sub2-actor", "last"]
    assert config.children("alys") == [("actor", "first"), ("supervisor", "sub"),
                                       ("actor", "last")]
    assert config.children("sub") == [("actor", "deep"), ("actor", "sub2-actor")]
    assert config.actors_under("sub") == ["deep", "sub2-actor"]
    assert config.actors_under("alys") == list(config.actors)
    assert config.path("deep") == ["alys", "sub", "deep"]
    assert config.path("sub") == ["alys", "sub"]
    assert config.path("alys") == ["alys"]


def test_tree_queries_refuse_unknown_names():
    config = parse_config(INTERLEAVED)
    for query in (config.children, config.actors_under):
        with pytest.raises(KeyError):
            query("first")
    with pytest.raises(KeyError):
        config.path("ghost")


POOLED = """
[supervisors.alys]

[actors.first]
supervisor = "alys"
class = "m:C"

[supervisors.sub]
parent = "alys"

[actors.worker]
supervisor = "sub"
class = "m:W"
instances = 3
routing = "least_loaded"
subscribe = ["block_imported", "tick"]
[actors.worker.config]
n = 1

[actors.after]
supervisor = "sub"
class = "m:C"

[actors.pair]
supervisor = "alys"
class = "m:C"
instances = 2
"""


def test_pools_are_expanded_in_place_in_index_order():
    config = parse_config(POOLED)
    assert config.start_order == (
        ("supervisor", "alys"), ("actor", "first"), ("supervisor", "sub"),
        ("actor", "worker.0"), ("actor", "worker.1"), ("actor", "worker.2"), ("actor", "after"),
        ("actor", "pair.0"), ("actor", "pair.1"))
    assert list(config.actors) == ["first", "worker.0", "worker.1", "worker.2", "after",
                                   "pair.0", "pair.1"]
    assert config.pools == {"worker": ("worker.0", "worker.1", "worker.2"),
                            "pair": ("pair.0", "pair.1")}
    assert list(config.pools) == ["worker", "pair"]
    assert "worker" not in config.actors and "pair" not in config.actors
    configured = ActorSpec(name="worker", supervisor="sub", class_path="m:W", instances=3,
                           routing=PoolRouting.LEAST_LOADED,
                           subscribe=("block_imported", "tick"), config={"n": 1})
    for index, name in enumerate(config.pools["worker"]):
        member = config.actors[name]
        assert name == f"worker.{index}"
        assert member == msgspec.structs.replace(configured, name=name, pool="worker")
        assert member.subscribe == ("block_imported", "tick")
    assert config.actors["pair.1"].pool == "pair" and config.actors["first"].pool is None


def test_tree_queries_see_pool_members():
    config = parse_config(POOLED)
    assert config.children("sub") == [("actor", "worker.0"), ("actor", "worker.1"),
                                      ("actor", "worker.2"), ("actor", "after")]
    assert config.actors_under("sub") == ["worker.0", "worker.1", "worker.2", "after"]
    assert config.actors_under("alys") == list(config.actors)
    assert config.path("worker.1") == ["alys", "sub", "worker.1"]
    assert config.path("pair.0") == ["alys", "pair.0"]
    with pytest.raises(KeyError):
        config.path("worker")  # a pool is not a node of the tree; its members are
    assert_sound(config)


def test_resolve_actor():
    config = parse_config(POOLED)
    assert config.resolve_actor("worker") == ["worker.0", "worker.1", "worker.2"]
    assert config.resolve_actor("pair") == ["pair.0", "pair.1"]
    assert config.resolve_actor("first") == ["first"]
    assert config.resolve_actor("worker.2") == ["worker.2"]
    for name in ("sub", "alys", "ghost", "worker.3"):
        with pytest.raises(KeyError, match=f"no actor or pool named '{name}'"):
            config.resolve_actor(name)
    resolved = config.resolve_actor("worker")
    resolved.append("x")  # a fresh list each time
    assert config.resolve_actor("worker") == ["worker.0", "worker.1", "worker.2"]


def test_pools_from_a_dict_expand_too():
    config = config_from_dict({
        "supervisors": {"root": {}},
        "actors": {"w": {"supervisor": "root", "class": "m:C", "instances": 2},
                   "a": {"supervisor": "root", "class": "m:C"}},
    })
    assert [name for _, name in config.start_order] == ["root", "w.0", "w.1", "a"]
    assert config.pools == {"w": ("w.0", "w.1")}


def test_dict_without_text_starts_supervisors_then_actors():
    config = config_from_dict({
        "actors": {"a1": {"supervisor": "root", "class": "m:C"}},
        "supervisors": {"root": {}, "sub": {"parent": "root"}},
    })
    assert config.children("root") == [("supervisor", "sub"), ("actor", "a1")]
    assert config.source is None


def test_entries_without_header_follow_those_with_one():
    config = parse_config('supervisors.alys = {}\n[actors.b]\nsupervisor = "alys"\n'
                          'class = "m:C"\n[actors]\na = { supervisor = "alys", class = "m:C" }\n')
    assert list(config.actors) == ["b", "a"]


def test_deep_chain_of_supervisors():
    text = ROOT + "".join(f"[supervisors.s{i}]\nparent = '{'s' + str(i - 1) if i else 'alys'}'\n"
                          for i in range(2000))
    config = parse_config(text + actor("leaf", supervisor="s1999"))
    assert len(config.path("leaf")) == 2002


def test_config_from_dict_refuses_non_tables():
    with pytest.raises(ConfigError) as info:
        config_from_dict([1])  # type: ignore[arg-type]
    assert [str(i) for i in info.value.issues] == ["expected a table, got an array"]


# --- files -------------------------------------------------------------------

def test_load_config(tmp_path):
    path = tmp_path / "alysd.toml"
    path.write_text(EXAMPLE)
    config = load_config(path)
    assert config.source == str(path)
    assert config.actors["engine"].memory_limit == 512 << 20


@pytest.mark.parametrize("content, expected", [
    (None, "cannot read the file"),
    (b"\xff\xfe[", "not UTF-8 text"),
    (b"[supervisors.alys\n", "not valid TOML"),
    (b"a = " + b"[" * 3000, "not valid TOML"),
    (b"a = " + b"9" * 5000, "not valid TOML"),
])
def test_load_config_failures_are_config_errors(tmp_path, content, expected):
    path = tmp_path / "alysd.toml"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.source == str(path)
    [issue] = info.value.issues
    assert issue.path == "" and issue.message.startswith(expected)


# --- actor classes -----------------------------------------------------------

class StandInActor:
    """Takes the place of alysd.actor.Actor, which these tests must not depend on."""


class GoodActor(StandInActor):
    pass


class NotAnActor:
    pass


not_a_class = 42


@pytest.fixture
def actor_base(monkeypatch):
    module = types.ModuleType("alysd.actor")
    module.Actor = StandInActor
    monkeypatch.setitem(sys.modules, "alysd.actor", module)


def test_import_actor_class(actor_base):
    assert import_actor_class(f"{__name__}:GoodActor") is GoodActor


@pytest.mark.parametrize("class_path, error, text", [
    ("no_colon", ImportError, "invalid class path 'no_colon'"),
    ("alysd_no_such_module_x:C", ImportError, "No module named 'alysd_no_such_module_x'"),
    (f"{__name__}:Missing", AttributeError, "has no attribute 'Missing'"),
    (f"{__name__}:NotAnActor", TypeError, "is not a subclass of alysd.actor.Actor"),
    (f"{__name__}:not_a_class", TypeError, "is not a subclass of alysd.actor.Actor"),
])
def test_import_actor_class_errors(actor_base, class_path, error, text):
    with pytest.raises(error, match=text):
        import_actor_class(class_path)


def test_check_imports_reports_each_broken_actor(actor_base, tmp_path, monkeypatch):
    (tmp_path / "alysd_test_broken_module.py").write_text("raise RuntimeError('boom')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    config = parse_config(ROOT + actor("good", class_path=f"{__name__}:GoodActor")
                          + actor("broken", class_path="alysd_test_broken_module:C")
                          + actor("wrong", class_path=f"{__name__}:NotAnActor"))
    found = {issue.path: issue.message for issue in check_imports(config)}
    assert list(found) == ["actors.broken.class", "actors.wrong.class"]
    assert found["actors.broken.class"] == (
        "cannot load alysd_test_broken_module:C: RuntimeError: boom")
    assert found["actors.wrong.class"].startswith(
        f"cannot load {__name__}:NotAnActor: TypeError:")


def test_check_imports_reports_a_pool_once(actor_base):
    config = parse_config(ROOT + actor("pool", class_path="alysd_no_such_module_x:C",
                                       body="instances = 3")
                          + actor("good", class_path=f"{__name__}:GoodActor", body="instances = 2"))
    assert [issue.path for issue in check_imports(config)] == ["actors.pool.class"]


# --- properties --------------------------------------------------------------

def toml_key(key: str) -> str:
    return key if key and all(c.isascii() and (c.isalnum() or c in "_-") for c in key) \
        else json.dumps(key, ensure_ascii=False)


def toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)  # inf, -inf and 1e+16 are TOML too
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # JSON escapes are TOML escapes
    if isinstance(value, list):
        return "[" + ", ".join(map(toml_value, value)) + "]"
    return "{" + ", ".join(f"{toml_key(k)} = {toml_value(v)}" for k, v in value.items()) + "}"


def toml_document(data: dict) -> str:
    """A tiny TOML writer: a [header] per nested table, inline values otherwise."""
    lines: list[str] = []

    def table(path: list[str], body: dict) -> None:
        for key, value in body.items():
            if not isinstance(value, dict):
                lines.append(f"{toml_key(key)} = {toml_value(value)}")
        for key, value in body.items():
            if isinstance(value, dict):
                lines.append("[" + ".".join(map(toml_key, path + [key])) + "]")
                table(path + [key], value)

    table([], data)
    return "\n".join(lines) + "\n"


# Printable text only: TOML forbids raw control characters (and DEL) in strings.
short_text = st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=6)
junk = st.one_of(st.booleans(), st.integers(-3, 20), st.floats(allow_nan=False), short_text,
                 st.lists(st.integers(), max_size=2),
                 st.dictionaries(short_text, st.integers(), max_size=2))


def mostly(valid: st.SearchStrategy, other: st.SearchStrategy = junk) -> st.SearchStrategy:
    """``valid`` nine times in ten, else ``other`` (the valid side shrinks first)."""
    return st.integers(0, 9).flatmap(lambda i: other if i == 9 else valid)


LONGEST = "w" * MAX_NAME  # a valid name no pool member name fits
names = mostly(st.sampled_from(["alys", "sub", "engine", "a", "b", LONGEST]),
               st.sampled_from(["Bad", "x y", "", "a.0"]) | short_text)
durations = st.sampled_from(["250ms", "5s", "0s", "1.5m", "10 h", "5", "-1s", "2us"])
plausible = {
    "parent": names, "supervisor": names,
    "class": st.sampled_from(["m:C", "pkg.mod:Klass", "nope", ":C"]),
    "strategy": st.sampled_from(["one_for_one", "one_for_all", "rest_for_one",
                                 "exponential_backoff", "circuit_breaker", "never", "foo"]),
    "restart": st.sampled_from(["permanent", "transient", "temporary", "x"]),
    "log_level": st.sampled_from(["debug", "info", "loud"]),
    "memory_limit": st.sampled_from(["64MiB", "1GB", "0B", "12"]),
    "max_message_bytes": st.sampled_from(["16MiB", "1kB", "x"]),
    "runtime_dir": st.sampled_from(["/run/alysd", ""]),
    "state_dir": st.sampled_from(["/var/lib/alysd", ""]),
    "dead_letter_capacity": st.integers(-1, 3),
    "delivery": st.sampled_from(["at_least_once", "at_most_once", "exactly_once"]),
    "max_batch": st.integers(-1, 3),
    "instances": st.integers(0, 4) | st.sampled_from([MAX_INSTANCES, MAX_INSTANCES + 1]),
    "routing": st.sampled_from(["round_robin", "least_loaded", "random"]),
    "pool": names,
    "subscribe": st.lists(st.sampled_from(["tick", "block_imported", ""]), max_size=2),
    "cpu_limit": st.sampled_from([0.5, 2, 0, -1, float("inf")]),
    "multiplier": st.sampled_from([1, 2.5, 0.5]),
    "max_retries": st.integers(-1, 12), "capacity": st.integers(-1, 3),
    "failure_threshold": st.integers(0, 3), "success_threshold": st.integers(0, 3),
    "backpressure": st.sampled_from(["block", "fail", "drop_oldest", "maybe"]),
    "config": st.dictionaries(short_text, junk, max_size=3),
    "shutdown_timeout": durations | st.just("brutal_kill"),
}
for duration_key in ("heartbeat_interval", "start_timeout", "within_time", "initial_delay",
                     "max_delay", "reset_after", "recovery_timeout", "delivery_timeout",
                     "max_wait", "reload_timeout", "slot_duration", "poll_interval",
                     "backup_interval", "connect_timeout"):
    plausible[duration_key] = durations

# The node sections: valid keys and addresses, and near misses.
BLS_KEY = ("97f1d3a73197d7942695638c4fa9ac0fc3688c4f9774b905a14e3a3f171bac586c55e83ff97a1aeffb3af00"
           "adb22c6bb")  # the BLS12-381 G1 generator, compressed
SECP_KEY = "0279be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798"  # secp256k1's G
EVM_ADDRESS = "0x" + "ab" * 20
SECRET = "hunter2"
paths = st.sampled_from(["/etc/alysd/jwt.hex", ""])
endpoints = st.sampled_from(["127.0.0.1:0", "0.0.0.0:30303", "[::1]:9615", "localhost:1", "x",
                             "h:70000", ":1"])
urls = st.sampled_from(["http://127.0.0.1:8551", "https://node.example", "ws://10.0.0.1:1",
                        "wss://gov.example", "ftp://x", f"http://u:{SECRET}@h", "http://", "nope"])
small = st.integers(-1, 3)
plausible.update({
    "environment": st.sampled_from(["development", "staging", "production", "prod"]),
    "watch_config": st.booleans(),
    "uses": st.lists(st.sampled_from(["chain", "bridge", "sync", "ledger"]), max_size=3),
    "chain_id": small, "max_blocks_without_pow": small, "required_btc_confirmations": small,
    "bitcoin_start_height": small, "max_peers": small, "backup_keep": small,
    "pegin_confirmations": small, "pegout_confirmations": small,
    "checkpoint_interval": small, "checkpoints_kept": small,
    "federation_threshold": st.integers(-1, 4),
    "is_validator": st.booleans(), "dev_keys": st.booleans(),
    "authorities": st.lists(st.sampled_from([BLS_KEY, "0x" + BLS_KEY.upper(), "zz",
                                             "80" + "00" * 47, "c0" + "00" * 47]), max_size=3),
    "federation": st.lists(st.sampled_from([EVM_ADDRESS, "0x" + "cd" * 20, "0x12"]), max_size=3),
    "federation_bitcoin_pubkeys": st.lists(st.sampled_from([SECP_KEY, "02" + "11" * 32,
                                                           "04" + "00" * 32]), max_size=3),
    "engine_url": urls, "bitcoin_rpc_url": urls, "endpoints": st.lists(urls, max_size=2),
    "jwt_secret_file": paths, "validator_key_file": paths, "bitcoin_rpc_password_file": paths,
    "data_dir": paths, "bitcoin_rpc_user": st.sampled_from(["alys", ""]),
    "bitcoin_rpc_password": st.just(SECRET),
    "listen": endpoints, "external_address": endpoints,
    "bootnodes": st.lists(endpoints, max_size=2),
    "bitcoin_network": st.sampled_from(["regtest", "testnet", "signet", "mainnet", "main"]),
    "bridge_contract": st.sampled_from([EVM_ADDRESS, "0x12"]),
    "map_size": st.sampled_from(["16GiB", "0B", "12"]),
    "production_threshold": st.sampled_from([0.95, 1, 0.995, 0.9, 1.5]),
    "batch_size": st.sampled_from([0, 1, 10000, 10001]),
    "parallel_downloads": st.sampled_from([0, 1, 256, 257]),
    "level": st.sampled_from(["debug", "info", "trace"]),
})
NODE_KEYS = {
    "chain": ["chain_id", "slot_duration", "max_blocks_without_pow", "required_btc_confirmations",
              "bitcoin_start_height", "is_validator", "authorities", "federation",
              "federation_bitcoin_pubkeys", "engine_url", "jwt_secret_file",
              "validator_key_file", "dev_keys"],
    "network": ["listen", "external_address", "bootnodes", "max_peers"],
    "bridge": ["bitcoin_network", "bitcoin_rpc_url", "bitcoin_rpc_user",
               "bitcoin_rpc_password_file", "bitcoin_rpc_password", "bridge_contract",
               "pegin_confirmations", "pegout_confirmations", "federation_threshold",
               "poll_interval"],
    "storage": ["data_dir", "map_size", "backup_interval", "backup_keep"],
    "governance": ["endpoints", "connect_timeout", "heartbeat_interval"],
    "sync": ["production_threshold", "batch_size", "parallel_downloads", "checkpoint_interval",
             "checkpoints_kept"],
    "logging": ["level"],
    "monitoring": ["listen"],
}


def table_of(keys: list[str], required: tuple[str, ...] = ()) -> st.SearchStrategy[dict]:
    """Tables of some of ``keys`` (often all ``required``, sometimes an unknown key)."""
    chosen = st.lists(mostly(st.sampled_from(keys), st.just("colour")), unique=True, max_size=6)
    some_required = (mostly(st.just(list(required)),
                            st.lists(st.sampled_from(required), unique=True, max_size=1))
                     if required else st.just([]))
    return st.tuples(some_required, chosen).flatmap(
        lambda picked: st.fixed_dictionaries({key: mostly(plausible.get(key, junk))
                                              for key in dict.fromkeys(picked[0] + picked[1])}))


plausible["mailbox"] = table_of(["capacity", "backpressure", "delivery", "max_retries"])
plausible["batch"] = table_of(["max_batch", "max_wait"])
actor_keys = ["supervisor", "class", "strategy", "restart", "memory_limit", "cpu_limit",
              "start_timeout", "shutdown_timeout", "initial_delay", "max_delay", "multiplier",
              "max_retries", "reset_after", "failure_threshold", "recovery_timeout",
              "success_threshold", "mailbox", "batch", "instances", "routing", "pool",
              "subscribe", "uses", "config"]
actor_tables = table_of(actor_keys, required=("supervisor", "class"))
sections = st.fixed_dictionaries({
    "supervisors": st.dictionaries(names, table_of(["parent", "strategy", "max_retries",
                                                    "within_time"]), max_size=4),
}, optional={
    "environment": mostly(plausible["environment"]),
    "system": table_of(["runtime_dir", "state_dir", "heartbeat_interval", "start_timeout",
                        "shutdown_timeout", "max_message_bytes", "log_level",
                        "dead_letter_capacity", "delivery_timeout", "reload_timeout",
                        "watch_config"]),
    "actors": st.dictionaries(names, actor_tables, max_size=4),
    **{section: table_of(keys) for section, keys in NODE_KEYS.items()},
})
TOP_KEYS = ("environment", "system", "supervisors", "actors", *NODE_KEYS, "extra")
documents = st.tuples(sections, mostly(st.just({}), st.fixed_dictionaries({"extra": junk}))).map(
    lambda parts: parts[0] | parts[1])


def assert_sound(config: Config) -> None:
    """What a Config promises: one root, resolvable references, depth-first order,
    pools replaced by their members, consecutive and in index order."""
    assert config.supervisors[config.root].parent is None
    assert config.start_order[0] == ("supervisor", config.root)
    assert len(config.start_order) == len(config.supervisors) + len(config.actors)
    for name in list(config.supervisors) + list(config.actors):
        assert config.path(name)[0] == config.root
        assert len(name) <= MAX_NAME
    assert config.actors_under(config.root) == list(config.actors)
    order = [name for _, name in config.start_order]
    for pool, members in config.pools.items():
        assert pool not in config.actors and len(members) > 1
        assert members == tuple(f"{pool}.{i}" for i in range(len(members)))
        start = order.index(members[0])
        assert tuple(order[start:start + len(members)]) == members
        assert config.resolve_actor(pool) == list(members)
        assert {config.actors[m].instances for m in members} == {len(members)}
    assert {name: spec.pool for name, spec in config.actors.items() if spec.pool} == {
        member: pool for pool, members in config.pools.items() for member in members}
    for spec in config.actors.values():  # each actor sees the sections it uses, as they are
        assert spec.settings == {section: settings_of(getattr(config, section))
                                 for section in spec.uses}
    assert all(SECRET not in warning for warning in config.warnings)


@settings(max_examples=150, deadline=None)
@given(st.text(max_size=200) | st.lists(st.sampled_from(
    ["[system]", "[supervisors.alys]", "[supervisors.sub]", "parent = 'alys'", "[actors.e]",
     "supervisor = 'alys'", "supervisor = 'sub'", "class = 'm:C'", "strategy = 'never'",
     "capacity = 3", "[actors.e.mailbox]", "x = 1", "max_retries = -1", "log_level = 'info'",
     "within_time = '1s'", "[[actors.q]]", "a = [[[", "= ", "'", "instances = 2",
     "routing = 'least_loaded'", "[actors.e.batch]", "max_batch = 2", "pool = 'e'",
     "delivery = 'at_most_once'"]), max_size=12).map("\n".join))
def test_arbitrary_text_yields_config_or_config_error(text):
    try:
        config = parse_config(text)
    except ConfigError as e:
        assert e.issues and all(isinstance(issue, ConfigIssue) for issue in e.issues)
    else:
        assert_sound(config)


@settings(max_examples=100, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(content=st.binary(max_size=200))
def test_arbitrary_bytes_yield_config_or_config_error(tmp_path, content):
    path = tmp_path / "fuzz.toml"
    path.write_bytes(content)
    try:
        assert_sound(load_config(path))
    except ConfigError as e:
        assert e.source == str(path) and e.issues


@settings(max_examples=300, deadline=None)
@given(documents)
def test_generated_documents_yield_config_or_located_issues(data):
    text = toml_document(data)
    assert tomllib.loads(text) == data  # the writer is faithful
    try:
        config = parse_config(text)
    except ConfigError as e:
        assert e.issues
        for issue in e.issues:
            assert issue.path, issue
            assert issue.path.split(".")[0].partition("[")[0] in TOP_KEYS
            assert SECRET not in issue.message  # secrets are never shown
        # The same findings from the dict: the text only adds start order
        # (the writer moves sub-tables last, hence sorted).
        with pytest.raises(ConfigError) as from_dict:
            config_from_dict(data)
        assert sorted(map(str, from_dict.value.issues)) == sorted(map(str, e.issues))
    else:
        assert_sound(config)


@st.composite
def trees(draw):
    """A valid tree and the file order of its tables: (text, file order, parent of
    each node, instances of each actor)."""
    supervisors = [f"s{i}" for i in range(draw(st.integers(1, 4)))]
    parent = {name: (draw(st.sampled_from(supervisors[:i])) if i else None)
              for i, name in enumerate(supervisors)}
    actors = [f"a{i}" for i in range(draw(st.integers(0, 6)))]
    parent.update({name: draw(st.sampled_from(supervisors)) for name in actors})
    instances = {name: draw(st.integers(1, 3)) for name in actors}
    nodes = draw(st.permutations(supervisors + actors))
    parts = []
    for name in nodes:
        if name in supervisors:
            parts.append(f"[supervisors.{name}]\n"
                         + (f'parent = "{parent[name]}"\n' if parent[name] else ""))
        else:
            parts.append(f'[actors.{name}]\nsupervisor = "{parent[name]}"\nclass = "m:C"\n'
                         + (f"instances = {instances[name]}\n" if instances[name] > 1 else "")
                         + (f"[actors.{name}.mailbox]\ncapacity = 2\n"
                            if draw(st.booleans()) else ""))
    return "".join(parts), nodes, parent, instances


@settings(max_examples=200, deadline=None)
@given(trees())
def test_start_order_is_file_order_depth_first(tree):
    text, file_order, parent, instances = tree
    config = parse_config(text)

    def placed(node: str) -> list[str]:
        """A node as the config lists it: a pool stands for its members."""
        count = instances.get(node, 1)
        return [node] if count == 1 else [f"{node}.{i}" for i in range(count)]

    expected: list[str] = []

    def visit(supervisor: str) -> None:
        expected.append(supervisor)
        for child in file_order:
            if parent[child] == supervisor:
                if child.startswith("s"):
                    visit(child)
                else:
                    expected.extend(placed(child))

    visit("s0")
    assert [name for _, name in config.start_order] == expected
    assert list(config.supervisors) == [n for n in expected if n.startswith("s")]
    assert list(config.actors) == [n for n in expected if n.startswith("a")]
    pools: dict[str, list[str]] = {}
    for name in expected:
        if "." in name:
            pools.setdefault(name.partition(".")[0], []).append(name)
    assert config.pools == {pool: tuple(members) for pool, members in pools.items()}
    assert list(config.pools) == list(pools)  # in start order
    for supervisor in config.supervisors:
        assert [name for _, name in config.children(supervisor)] == [
            member for n in file_order if parent[n] == supervisor for member in placed(n)]
    assert_sound(config)
