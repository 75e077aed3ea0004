"""Layered configuration: file, ALYS_* variables and --set flags, their origins, discovery."""

import json
import os
import tomllib

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from alysd import config_layers
from alysd.config import Config, ConfigError, parse_config
from alysd.config_layers import (ConfigSources, Override, discover, env_key, literal,
                                 load_layered, parse_override, render_json, render_text)
from alysd.errors import ConfigIssue

TREE = """
[chain]
slot_duration = "3s"
chain_id = 7

[supervisors.alys]

[actors.engine]
supervisor = "alys"
class = "m:C"
uses = ["chain"]
memory_limit = "512MiB"
[actors.engine.mailbox]
capacity = 10
backpressure = "fail"

[actors.my-actor]
supervisor = "alys"
class = "m:C"

[actors.pool]
supervisor = "alys"
class = "m:C"
instances = 2
"""


@pytest.fixture
def config_file(tmp_path):
    path = tmp_path / "alys.toml"
    path.write_text(TREE)
    return path


def layered(path, env=None, flags=()):
    return load_layered(ConfigSources.capture(str(path), env or {}, flags))


def issues(path, env=None, flags=()) -> list[str]:
    with pytest.raises(ConfigError) as info:
        layered(path, env, flags)
    return [str(issue) for issue in info.value.issues]


# --- each layer over the one before --------------------------------------------------

def test_each_layer_overrides_the_one_before(config_file):
    result = layered(config_file,
                     env={"ALYS_CHAIN__SLOT_DURATION": "2s", "ALYS_CHAIN__CHAIN_ID": "8"},
                     flags=["chain.chain_id=9"])
    chain = result.config.chain
    assert (chain.max_blocks_without_pow, chain.slot_duration, chain.chain_id) == (50000, 2.0, 9)
    assert result.origins["chain.max_blocks_without_pow"] == "default"
    assert result.origins["chain.slot_duration"] == "env ALYS_CHAIN__SLOT_DURATION"
    assert result.origins["chain.chain_id"] == "flag --set chain.chain_id=9"
    assert result.origins["actors.engine.memory_limit"] == "file"
    # settings follow the layered values
    assert result.config.actors["engine"].settings["chain"]["chain_id"] == 9


def test_without_layers_the_file_decides(config_file):
    result = layered(config_file)
    assert result.config == parse_config(TREE, source=str(config_file))
    assert set(result.origins.values()) == {"default", "file"}
    assert result.origin("chain.chain_id") == "file" and result.origin("no.such") == "default"


def test_origins_cover_every_key_of_the_effective_config(config_file):
    result = layered(config_file)
    document = json.loads(render_json(result))
    leaves = []

    def walk(prefix, table):
        for key, value in table.items():
            if isinstance(value, dict) and value:
                walk(prefix + [key], value)
            else:
                leaves.append(".".join(prefix + [key]))

    walk([], document["config"])
    assert sorted(document["origins"]) == sorted(leaves)
    assert document["origins"]["actors.engine.mailbox.backpressure"] == "file"
    assert document["origins"]["actors.engine.mailbox.max_retries"] == "default"


def test_env_tables_merge_and_flags_replace_arrays(config_file):
    result = layered(config_file,
                     env={"ALYS_ACTORS__ENGINE__MAILBOX": '{capacity = 20}',
                          "ALYS_CHAIN__AUTHORITIES": "[]"},
                     flags=['chain.federation=["0x' + "ab" * 20 + '"]',
                            "bridge.federation_threshold=1"])
    mailbox = result.config.actors["engine"].mailbox
    assert (mailbox.capacity, mailbox.backpressure.value) == (20, "fail")  # merged, not replaced
    assert result.origins["actors.engine.mailbox.capacity"] == "env ALYS_ACTORS__ENGINE__MAILBOX"
    assert result.origins["actors.engine.mailbox.backpressure"] == "file"
    assert result.config.chain.federation == ("0x" + "ab" * 20,)


def test_env_vars_apply_in_name_order_so_a_key_beats_its_table(config_file):
    result = layered(config_file, env={"ALYS_ACTORS__ENGINE__MAILBOX__CAPACITY": "7",
                                       "ALYS_ACTORS__ENGINE__MAILBOX": "{capacity = 20}"})
    assert result.config.actors["engine"].mailbox.capacity == 7


def test_a_pool_is_configured_by_its_name(config_file):
    result = layered(config_file, env={"ALYS_ACTORS__POOL__MEMORY_LIMIT": "1GiB"})
    assert {result.config.actors[m].memory_limit for m in result.config.pools["pool"]} == {1 << 30}


def test_a_later_layer_replaces_an_alias_instead_of_conflicting(tmp_path):
    path = tmp_path / "alys.toml"
    path.write_text('[system]\nlog_level = "warning"\n[supervisors.alys]\n'
                    '[actors.a]\nsupervisor = "alys"\nclass = "m:C"\nmax_mailbox_size = 5\n')
    result = layered(path, env={"ALYS_LOGGING__LEVEL": "error"},
                     flags=["actors.a.mailbox.capacity=9"])
    assert result.config.logging.level == "error"
    assert result.config.actors["a"].mailbox.capacity == 9
    assert result.origins["logging.level"] == "env ALYS_LOGGING__LEVEL"
    assert "system.log_level" not in result.origins
    # the alias set by a layer is shown under the canonical key, with its origin
    by_alias = layered(path, flags=["system.log_level=debug"])
    assert by_alias.config.logging.level == "debug"
    assert by_alias.origins["logging.level"] == "flag --set system.log_level=debug"
    assert layered(path).origins["logging.level"] == "file"


def test_environment_comes_from_alys_environment(config_file):
    result = layered(config_file, env={"ALYS_ENVIRONMENT": "staging",
                                       "ALYS_LOGGING__LEVEL": "debug"})
    assert result.config.environment.value == "staging"
    assert result.origins["environment"] == "env ALYS_ENVIRONMENT"
    assert "logging.level: debug logging is refused in production, got 'debug'" in \
        result.config.warnings
    assert issues(config_file, env={"ALYS_ENVIRONMENT": "production"}) == [
        "bridge.bitcoin_network: regtest is refused in production, got 'regtest'"]
    assert layered(config_file, env={"ALYS_ENVIRONMENT": "production"},
                   flags=["bridge.bitcoin_network=mainnet"]).config.environment.value == \
        "production"


# --- errors name their origin ---------------------------------------------------------

def test_errors_name_the_variable_or_flag_their_value_came_from(config_file):
    assert issues(config_file, env={"ALYS_CHAIN__SLOT_DURATION": "fast",
                                    "ALYS_CHAIN__COLOUR": "red"},
                  flags=["sync.batch_size=0", "chain.authorities=[\"zz\"]"]) == [
        "chain.slot_duration: expected a duration such as \"250ms\", \"5s\" or \"2m\" (units: "
        "us, ms, s, m, h), got 'fast' (from env ALYS_CHAIN__SLOT_DURATION)",
        "chain.colour: unknown key (from env ALYS_CHAIN__COLOUR)",
        "chain.authorities[0]: expected a BLS public key (96 hex digits, optional 0x), got 'zz' "
        "(from flag --set chain.authorities=[\"zz\"])",
        "sync.batch_size: expected an integer from 1 to 10000, got 0 "
        "(from flag --set sync.batch_size=0)",
    ]


def test_an_error_in_the_file_names_no_origin(tmp_path):
    path = tmp_path / "alys.toml"
    path.write_text("[chain]\nchain_id = 0\n[supervisors.alys]\n")
    assert issues(path, env={"ALYS_CHAIN__SLOT_DURATION": "2s"}) == [
        "chain.chain_id: expected an integer >= 1, got 0"]


def test_a_table_set_by_a_variable_names_it_for_the_keys_inside(config_file):
    assert issues(config_file, env={"ALYS_ACTORS__ENGINE__MAILBOX": "{capacity = 0}"}) == [
        "actors.engine.mailbox.capacity: expected an integer >= 1, got 0 "
        "(from env ALYS_ACTORS__ENGINE__MAILBOX)"]
    assert issues(config_file, env={"ALYS_ACTORS__ENGINE": "5"}) == [
        "actors.engine: expected a table, got 5 (from env ALYS_ACTORS__ENGINE)"]


def test_layers_change_entries_but_do_not_add_them(config_file):
    assert issues(config_file, env={"ALYS_ACTORS__ENGNE__MEMORY_LIMIT": "1GiB"},
                  flags=["supervisors.root.max_retries=1", "actors.pool.0.memory_limit=1GiB"]) == [
        "actors.engne: no actor named 'engne' in the config file "
        "(from env ALYS_ACTORS__ENGNE__MEMORY_LIMIT)",
        "supervisors.root: no supervisor named 'root' in the config file "
        "(from flag --set supervisors.root.max_retries=1)",
        "actors.pool.0: unknown key (from flag --set actors.pool.0.memory_limit=1GiB)",
    ]
    assert issues(config_file, flags=['actors={ghost = {supervisor = "alys", class = "m:C"}}']) \
        == ["actors.ghost: no actor named 'ghost' in the config file (from flag --set "
            "actors={ghost = {supervisor = \"alys\", class = \"m:C\"}})"]


def test_two_spellings_of_one_variable_must_agree(config_file):
    assert issues(config_file, env={"ALYS_CHAIN__CHAIN_ID": "5", "ALYS_CHAIN__chain_id": "6"}) \
        == ["chain.chain_id: set by both env ALYS_CHAIN__CHAIN_ID and env ALYS_CHAIN__chain_id, "
            "to different values"]
    assert layered(config_file, env={"ALYS_CHAIN__CHAIN_ID": "5",
                                     "ALYS_CHAIN__chain_id": "5"}).config.chain.chain_id == 5


def test_a_flag_never_shows_a_secret(config_file):
    [issue] = issues(config_file, flags=["bridge.bitcoin_rpc_password=hunter2"])
    assert issue.startswith("bridge.bitcoin_rpc_password: secrets are not accepted")
    assert issue.endswith("(from flag --set bridge.bitcoin_rpc_password=***)")
    [issue] = issues(config_file, flags=["bridge.bitcoin_rpc_url=http://alys:hunter2@h:8332"])
    assert "hunter2" not in issue and "http://***@h:8332" in issue


def test_whole_document_errors_come_first_and_alone(tmp_path):
    path = tmp_path / "alys.toml"
    path.write_text("[chain\n")
    assert [i.split(":")[0] for i in issues(path, env={"ALYS_CHAIN__X": "1"})] == [
        "not valid TOML"]
    assert issues(tmp_path / "missing.toml") == ["cannot read the file: No such file or directory"]


# --- names and values -------------------------------------------------------------------

@pytest.mark.parametrize("name, path", [
    ("ALYS_CHAIN__SLOT_DURATION", ("chain", "slot_duration")),
    ("ALYS_ACTORS__ENGINE__MEMORY_LIMIT", ("actors", "engine", "memory_limit")),
    ("ALYS_ACTORS__MY-ACTOR__MAILBOX__CAPACITY", ("actors", "my-actor", "mailbox", "capacity")),
    ("ALYS_ACTORS__MY_ACTOR__X", ("actors", "my_actor", "x")),
    ("ALYS_Chain__Slot_Duration", ("chain", "slot_duration")),
    ("ALYS_ENVIRONMENT", ("environment",)),
    ("ALYS_CHAIN__", ("chain", "")),
    ("ALYS_CONFIG_PATH", None),
    ("ALYS_LOG_LEVEL", None),          # upstream's spelling: no "__", not a key
    ("ALYS_SERVICE_HOST", None),       # set by Kubernetes for a service named alys
    ("ALYSD_RUNTIME_DIR", None),
    ("ALYSD_STATE_DIR", None),
    ("alys_chain__chain_id", None),
    ("CHAIN__CHAIN_ID", None),
])
def test_env_names_map_to_key_paths(name, path):
    assert env_key(name) == path


def test_the_variable_of_an_actor_with_a_dash(config_file):
    result = layered(config_file, env={"ALYS_ACTORS__MY-ACTOR__MEMORY_LIMIT": "64MiB"})
    assert result.config.actors["my-actor"].memory_limit == 64 << 20


def test_other_variables_are_ignored(config_file):
    result = layered(config_file, env={"ALYS_LOG_LEVEL": "debug", "ALYS_SERVICE_HOST": "10.0.0.1",
                                       "ALYS_CONFIG_PATH": "/nowhere"})
    assert result.config == layered(config_file).config


def test_sources_keep_only_alys_variables(tmp_path):
    sources = ConfigSources.capture("rel.toml", {"ALYS_B": "2", "ALYS_A": "1", "HOME": "/root",
                                                 "ALYSD_STATE_DIR": "/s"}, ["a.b=1"])
    assert sources.env == (("ALYS_A", "1"), ("ALYS_B", "2"))
    assert sources.path == os.path.join(os.getcwd(), "rel.toml")
    assert sources.overrides == (Override(("a", "b"), "1"),)
    assert ConfigSources.capture(None, {}).path is None


@pytest.mark.parametrize("text, value", [
    ("5", 5), ("-3", -3), ("0.5", 0.5), ("true", True), ("false", False), ("inf", float("inf")),
    ('["a", "b"]', ["a", "b"]), ('"quoted"', "quoted"), ('"2s"', "2s"), ("'lit'", "lit"),
    ("{capacity = 3}", {"capacity": 3}), ("  7  ", 7), ("5 # comment", 5),
    ("2s", "2s"), ("1GiB", "1GiB"), ("127.0.0.1:9615", "127.0.0.1:9615"),
    ("http://h:1/x", "http://h:1/x"), ("", ""), ("fast", "fast"), ("[abc]", "[abc]"),
    ("0x" + "ab" * 20, "0x" + "ab" * 20), ("0x10", "0x10"), ("0o7", "0o7"), ("0b1", "0b1"),
    ("5\nx = 1", "5\nx = 1"), ("[" * 2000, "[" * 2000), (" spaced ", "spaced"),
])
def test_values_are_toml_literals_or_text(text, value):
    assert literal(text) == value


@pytest.mark.parametrize("text, override", [
    ("chain.slot_duration=2s", Override(("chain", "slot_duration"), "2s")),
    ("a.b=c=d", Override(("a", "b"), "c=d")),
    (" actors.my-actor.memory_limit = 1GiB", Override(("actors", "my-actor", "memory_limit"),
                                                       " 1GiB")),
    ("environment=", Override(("environment",), "")),
])
def test_set_flags_parse(text, override):
    assert parse_override(text) == override


@pytest.mark.parametrize("text", ["chain.slot_duration", "=2s", "a..b=1", "a.b c=1", 'a."b".c=1',
                                  "a.=1", ".a=1", ""])
def test_malformed_set_flags_are_refused(text):
    with pytest.raises(ValueError, match="expected KEY=VALUE with a dotted key"):
        parse_override(text)


# --- discovery -------------------------------------------------------------------------

@pytest.fixture
def places(tmp_path, monkeypatch):
    """A private cwd and /etc/alysd/alys.toml, both without a config yet."""
    cwd, etc = tmp_path / "cwd", tmp_path / "etc"
    cwd.mkdir()
    etc.mkdir()
    monkeypatch.setattr(config_layers, "SYSTEM_CONFIG", str(etc / "alys.toml"))
    return cwd, etc / "alys.toml"


def test_discovery_order(places):
    cwd, system = places
    local = cwd / "alys.toml"
    with pytest.raises(ConfigError) as info:
        discover(None, {}, str(cwd))
    assert [str(i) for i in info.value.issues] == [
        f"no configuration file: give --config PATH or set ALYS_CONFIG_PATH (looked for {local} "
        f"and {system})"]
    system.write_text("")
    assert discover(None, {}, str(cwd)) == str(system)
    local.write_text("")
    assert discover(None, {}, str(cwd)) == str(local)
    assert discover(None, {"ALYS_CONFIG_PATH": "/from/env.toml"}, str(cwd)) == "/from/env.toml"
    assert discover(None, {"ALYS_CONFIG_PATH": ""}, str(cwd)) == str(local)  # empty: unset
    assert discover("/explicit.toml", {"ALYS_CONFIG_PATH": "/from/env.toml"}, str(cwd)) == \
        "/explicit.toml"


def test_discovery_skips_a_directory_named_like_the_config(places):
    cwd, system = places
    (cwd / "alys.toml").mkdir()
    system.write_text("")
    assert discover(None, {}, str(cwd)) == str(system)


def test_discovery_uses_the_working_directory(places, monkeypatch):
    cwd, _ = places
    (cwd / "alys.toml").write_text("")
    monkeypatch.chdir(cwd)
    assert discover(None, {}) == str(cwd / "alys.toml")


def test_the_bundled_dev_config_is_the_file_layer_without_a_path():
    result = load_layered(ConfigSources.capture(None, {"ALYS_SYNC__BATCH_SIZE": "9"}))
    assert result.config.source == config_layers.dev_config_path()
    assert result.config.sync.batch_size == 9 and result.config.chain.dev_keys


def test_a_reload_reads_the_file_again_with_the_same_variables_and_flags(config_file):
    sources = ConfigSources.capture(str(config_file), {"ALYS_CHAIN__CHAIN_ID": "8"},
                                    ["sync.batch_size=3"])
    config_file.write_text(TREE.replace('slot_duration = "3s"', 'slot_duration = "6s"'))
    config = load_layered(sources).config
    assert (config.chain.slot_duration, config.chain.chain_id, config.sync.batch_size) == (
        6.0, 8, 3)


# --- showing the effective config ------------------------------------------------------

def test_the_text_form_is_toml_with_the_origin_of_each_key(config_file):
    result = layered(config_file, env={"ALYS_CHAIN__SLOT_DURATION": "2s"},
                     flags=["actors.engine.mailbox.capacity=5"])
    text = render_text(result)
    lines = text.splitlines()
    assert lines[0] == f"# {config_file}"
    assert 'slot_duration = "2s"  # env ALYS_CHAIN__SLOT_DURATION' in lines
    assert "chain_id = 7  # file" in lines
    assert "max_peers = 50  # default" in lines
    assert "capacity = 5  # flag --set actors.engine.mailbox.capacity=5" in lines
    assert "[actors.my-actor]" in lines and "[actors.engine.mailbox]" in lines
    assert "[actors]" not in lines and "[supervisors]" not in lines
    # it is a config file that loads to the same config
    assert parse_config(text) == parse_config(text, source=None)
    again = parse_config(text)
    assert again.chain == result.config.chain and again.actors == result.config.actors


def test_the_json_form(config_file):
    result = layered(config_file, env={"ALYS_ENVIRONMENT": "staging",
                                       "ALYS_LOGGING__LEVEL": "debug"})
    document = json.loads(render_json(result))
    assert set(document) == {"source", "config", "origins", "warnings"}
    assert document["source"] == str(config_file)
    assert document["config"]["chain"]["slot_duration"] == "3s"
    assert document["origins"]["logging.level"] == "env ALYS_LOGGING__LEVEL"
    assert document["warnings"] == list(result.config.warnings) and document["warnings"]


# --- properties ---------------------------------------------------------------------------

env_names = st.one_of(
    st.sampled_from(["ALYS_ENVIRONMENT", "ALYS_CONFIG_PATH", "ALYS_CHAIN__SLOT_DURATION",
                     "ALYS_CHAIN__CHAIN_ID", "ALYS_ACTORS__ENGINE__MEMORY_LIMIT",
                     "ALYS_ACTORS__ENGINE__MAILBOX", "ALYS_ACTORS__ENGINE__MAILBOX__CAPACITY",
                     "ALYS_ACTORS__GHOST__X", "ALYS_SUPERVISORS__ALYS__MAX_RETRIES",
                     "ALYS_SYSTEM__LOG_LEVEL", "ALYS_LOGGING__LEVEL", "ALYS_BRIDGE",
                     "ALYS___X", "ALYS_ACTORS", "ALYS_ACTORS__", "ALYS_CHAIN____X",
                     "ALYS_NETWORK__BOOTNODES", "ALYS_ACTORS__ENGINE__USES"]),
    st.text(min_size=1, max_size=20).map(lambda rest: "ALYS_" + rest))
env_values = st.one_of(
    st.sampled_from(["2s", "0s", "5", "-1", "true", "1GiB", "production", "staging", "debug",
                     "{capacity = 3}", "{capacity = 0}", "[]", '["chain"]', '["a:1", "b"]',
                     "[[[", "\"x\"", "inf", "nan", "0x1f", "{a = {b = 1}}", ""]),
    st.text(max_size=20))
flag_texts = st.one_of(
    st.sampled_from(["chain.chain_id=5", "chain.chain_id=0", "actors={}", "actors=5",
                     "actors.engine=5", "actors.engine.mailbox={capacity = 2}",
                     "supervisors.alys.strategy=never", "system.log_level=debug",
                     "logging.level=loud", "environment=production", "chain=[]",
                     "actors.engine.uses=[\"ledger\"]", "x.y.z=1"]),
    st.tuples(st.text(max_size=12), st.text(max_size=12)).map("=".join))


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(env=st.dictionaries(env_names, env_values, max_size=5),
       flags=st.lists(flag_texts, max_size=4))
def test_garbage_layers_yield_a_config_or_located_issues(config_file, env, flags):
    well_formed = []
    for text in flags:
        try:
            parse_override(text)
        except ValueError:
            continue
        well_formed.append(text)
    try:
        result = layered(config_file, env, well_formed)
    except ConfigError as e:
        assert e.issues and e.source == str(config_file)
        for issue in e.issues:
            assert isinstance(issue, ConfigIssue) and issue.path, issue
    else:
        assert isinstance(result.config, Config)
        assert tomllib.loads(render_text(result))  # the text form stays TOML
        assert json.loads(render_json(result))["origins"]


def test_origins_stay_on_one_line(config_file):
    result = layered(config_file, env={"ALYS_ACTORS__ENGINE__CONFIG__A\nB": "1"},
                     flags=["storage.data_dir=/srv/a\nb"])
    assert result.origins["storage.data_dir"] == 'flag --set storage.data_dir="/srv/a\\nb"'
    assert result.origins['actors.engine.config."a\\nb"'] == \
        'env "ALYS_ACTORS__ENGINE__CONFIG__A\\nB"'
    assert tomllib.loads(render_text(result))["storage"]["data_dir"] == "/srv/a\nb"
