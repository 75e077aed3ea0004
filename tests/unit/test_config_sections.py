"""The node's config sections, the environment rules, and the effective document."""

import textwrap
from pathlib import Path

import msgspec
import pytest
from hypothesis import given, strategies as st

from alysd.config import (BridgeSpec, ChainSpec, ConfigError, Environment, GovernanceSpec,
                          LoggingSpec, NetworkSpec, StorageSpec, SyncSpec, SystemSpec,
                          config_document, config_from_dict, load_config, parse_config)
from alysd.config_checks import duration, size, spell
from alysd.node_sections import LinkPeer, is_loopback
from alysd.units import duration_text, parse_duration, parse_size, size_text
from tests.conftest import REPO

REPO_CONF = Path(REPO) / "conf"
ROOT = "[supervisors.alys]\n"
ACTOR = '[actors.engine]\nsupervisor = "alys"\nclass = "m:C"\n'

# Valid keys: compressed G1 generator of BLS12-381 and its negation; secp256k1's G, 2G, 3G.
BLS_1 = ("97f1d3a73197d7942695638c4fa9ac0fc3688c4f9774b905a14e3a3f171bac586c55e83ff97a1aeffb3af00"
         "adb22c6bb")
BLS_2 = "b7" + BLS_1[2:]
SECP_1 = "0279be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798"
SECP_2 = "02c6047f9441ed7d6d3045406e95c07cd85c778e4b8cef3ca7abac09b95c709ee5"
SECP_3 = "02f9308a019258c31049344f85f89d5229b531c845836f99b08601f113bce036f9"
ADDRESS_1 = "0x" + "ab" * 20
ADDRESS_2 = "0xCd" + "cd" * 19
DURATION = 'a duration such as "250ms", "5s" or "2m" (units: us, ms, s, m, h)'


def shown(value: str) -> str:
    """A long value as messages show it: its repr cut to 57 characters and "..."."""
    return repr(value)[:57] + "..."


def messages(text: str) -> dict[str, str]:
    with pytest.raises(ConfigError) as info:
        parse_config(text)
    return {issue.path: issue.message for issue in info.value.issues}


def tree(body: str) -> str:
    return textwrap.dedent(body) + "\n" + ROOT + ACTOR


# --- decoding ----------------------------------------------------------------

def test_defaults_are_a_development_node_on_v1_dev_values():
    config = parse_config(ROOT)
    assert config.environment is Environment.DEVELOPMENT
    assert config.chain == ChainSpec(
        chain_id=121212, slot_duration=4.0, max_blocks_without_pow=50000,
        required_btc_confirmations=144, bitcoin_start_height=0, is_validator=False,
        authorities=(), federation=(), federation_bitcoin_pubkeys=(),
        engine_url="http://127.0.0.1:8551", jwt_secret_file=None, validator_key_file=None,
        dev_keys=False)
    assert config.network == NetworkSpec(listen=("127.0.0.1", 30303), external_address=None,
                                         bootnodes=(), max_peers=50)
    assert config.bridge == BridgeSpec(
        bitcoin_network="regtest", bitcoin_rpc_url="http://127.0.0.1:18443",
        bitcoin_rpc_user=None, bitcoin_rpc_password_file=None,
        bridge_contract="0xbBbBBBBbbBBBbbbBbbBbbbbBBbBbbbbBbBbbBBbB", pegin_confirmations=6,
        pegout_confirmations=3, federation_threshold=2, poll_interval=30.0)
    assert config.storage == StorageSpec(data_dir=None, map_size=16 << 30,
                                         backup_interval=21600.0, backup_keep=7)
    assert config.governance == GovernanceSpec(endpoints=(), connect_timeout=10.0,
                                               heartbeat_interval=30.0)
    assert config.sync == SyncSpec(production_threshold=0.995, batch_size=256,
                                   parallel_downloads=16, checkpoint_interval=100,
                                   checkpoints_kept=10)
    assert config.logging == LoggingSpec(level="info")
    assert (config.system.reload_timeout, config.system.watch_config) == (30.0, False)
    assert config.actors == {} and config.warnings == ()


FULL = f"""
environment = "staging"

[system]
reload_timeout = "1m"
watch_config = true

[logging]
level = "warning"
format = "json"

[chain]
chain_id = 727272
slot_duration = "5s"
max_blocks_without_pow = 20
required_btc_confirmations = 6
bitcoin_start_height = 2500000
is_validator = true
authorities = ["0x{BLS_1.upper()}", "{BLS_2}"]
federation = ["{ADDRESS_1}", "{ADDRESS_2}"]
federation_bitcoin_pubkeys = ["{SECP_1.upper()}", "{SECP_2}", "{SECP_3}"]
engine_url = "https://engine.example:8551/"
jwt_secret_file = "/etc/alysd/jwt.hex"
validator_key_file = "/etc/alysd/validator.key"

[network]
listen = "0.0.0.0:30303"
curve_secret_file = "/etc/alysd/node.key"
external_address = "[2001:db8::1]:30303"
bootnodes = ["203.0.113.7:30303", "node.example:1"]
max_peers = 8
node_name = "alice"
network_key_file = "/etc/alysd/network.key"
envelope_window = "10s"
replay_cache = 5000
peers = [{{name = "bob", address = "203.0.113.8:30303", public_key = "{"b" * 40}"}},
         {{name = "carol", address = "[::1]:30304"}}]

[bridge]
bitcoin_network = "testnet"
bitcoin_rpc_url = "http://10.0.0.5:18332"
bitcoin_rpc_user = "alys"
bitcoin_rpc_password_file = "/etc/alysd/bitcoin.pass"
bridge_contract = "{ADDRESS_1}"
pegin_confirmations = 1
pegout_confirmations = 1
federation_threshold = 2
poll_interval = "10s"

[storage]
data_dir = "/srv/alys"
map_size = "1TiB"
backup_interval = "1h"
backup_keep = 1

[governance]
endpoints = ["wss://gov.example", "http://127.0.0.1:9000"]
connect_timeout = "2s"
heartbeat_interval = "5s"

[sync]
production_threshold = 1
batch_size = 10000
parallel_downloads = 256
checkpoint_interval = 1
checkpoints_kept = 1

[supervisors.alys]

[actors.bridge]
supervisor = "alys"
class = "m:C"
uses = ["bridge", "chain", "bridge"]
instances = 2

[actors.plain]
supervisor = "alys"
class = "m:C"
"""


def test_every_key_decodes():
    config = parse_config(FULL)
    assert config.environment is Environment.STAGING
    assert config.system == SystemSpec(reload_timeout=60.0, watch_config=True)
    assert config.logging == LoggingSpec(level="warning", format="json")
    chain = config.chain
    assert (chain.chain_id, chain.slot_duration, chain.max_blocks_without_pow,
            chain.required_btc_confirmations, chain.bitcoin_start_height) == (
        727272, 5.0, 20, 6, 2500000)
    assert chain.authorities == ("0x" + BLS_1, "0x" + BLS_2)  # normalised
    assert chain.federation == (ADDRESS_1, ADDRESS_2)  # as written: the case is a checksum
    assert chain.federation_bitcoin_pubkeys == (SECP_1, SECP_2, SECP_3)
    assert (chain.engine_url, chain.jwt_secret_file, chain.validator_key_file, chain.is_validator,
            chain.dev_keys) == ("https://engine.example:8551/", "/etc/alysd/jwt.hex",
                                "/etc/alysd/validator.key", True, False)
    assert config.network == NetworkSpec(listen=("0.0.0.0", 30303),
                                         external_address=("2001:db8::1", 30303),
                                         bootnodes=(("203.0.113.7", 30303), ("node.example", 1)),
                                         max_peers=8, curve_secret_file="/etc/alysd/node.key",
                                         node_name="alice",
                                         network_key_file="/etc/alysd/network.key",
                                         envelope_window=10.0, replay_cache=5000, peers=(
        LinkPeer(name="bob", address=("203.0.113.8", 30303), public_key="b" * 40),
        LinkPeer(name="carol", address=("::1", 30304))))
    assert config.bridge == BridgeSpec(
        bitcoin_network="testnet", bitcoin_rpc_url="http://10.0.0.5:18332",
        bitcoin_rpc_user="alys", bitcoin_rpc_password_file="/etc/alysd/bitcoin.pass",
        bridge_contract=ADDRESS_1, pegin_confirmations=1, pegout_confirmations=1,
        federation_threshold=2, poll_interval=10.0)
    assert config.storage == StorageSpec(data_dir="/srv/alys", map_size=1 << 40,
                                         backup_interval=3600.0, backup_keep=1)
    assert config.governance == GovernanceSpec(
        endpoints=("wss://gov.example", "http://127.0.0.1:9000"), connect_timeout=2.0,
        heartbeat_interval=5.0)
    assert config.sync == SyncSpec(production_threshold=1.0, batch_size=10000,
                                   parallel_downloads=256, checkpoint_interval=1,
                                   checkpoints_kept=1)


def test_uses_gives_the_actor_its_sections_as_settings():
    config = parse_config(FULL)
    for member in config.pools["bridge"]:
        spec = config.actors[member]
        assert spec.uses == ("bridge", "chain")  # repeats dropped
        assert spec.settings == {"bridge": msgspec.to_builtins(config.bridge),
                                 "chain": {**msgspec.to_builtins(config.chain),
                                           "authorities": ["0x" + BLS_1, "0x" + BLS_2],
                                           "federation": [ADDRESS_1, ADDRESS_2],
                                           "federation_bitcoin_pubkeys": [SECP_1, SECP_2, SECP_3]}}
    assert spec.settings["bridge"]["poll_interval"] == 10.0
    assert spec.settings["chain"]["authorities"] == ["0x" + BLS_1, "0x" + BLS_2]
    assert config.actors["plain"].uses == () and config.actors["plain"].settings == {}


def test_a_change_of_a_used_section_changes_the_actors_spec():
    before = parse_config(ROOT + ACTOR + 'uses = ["sync"]\n')
    after = parse_config("[sync]\nbatch_size = 1\n" + ROOT + ACTOR + 'uses = ["sync"]\n')
    unrelated = parse_config("[chain]\nchain_id = 1\n" + ROOT + ACTOR + 'uses = ["sync"]\n')
    assert after.actors["engine"] != before.actors["engine"]
    assert after.actors["engine"].settings["sync"]["batch_size"] == 1
    assert unrelated.actors["engine"] == before.actors["engine"]


# --- refusals ----------------------------------------------------------------

UNCOMPRESSED = "17" + BLS_1[2:]  # the compression flag is not set
INFINITY = "c0" + "00" * 47


@pytest.mark.parametrize("body, path, message", [
    ('environment = "prod"', "environment",
     "expected one of development, staging, production; got 'prod'"),
    ("[system]\nreload_timeout = 30", "system.reload_timeout", f"expected {DURATION}, got 30"),
    ('[system]\nwatch_config = "yes"', "system.watch_config", "expected true or false, got 'yes'"),
    ('[logging]\nlevel = "trace"', "logging.level",
     "expected one of debug, info, warning, error; got 'trace'"),
    ("[logging]\nformat = 'xml'", "logging.format", "expected one of text, json; got 'xml'"),
    ("[logging]\nfile = 'x'", "logging.file", "unknown key"),
    ("chain = 5", "chain", "expected a table, got 5"),
    ("[chain]\ncolour = 1", "chain.colour", "unknown key"),
    ("[chain]\nchain_id = 0", "chain.chain_id", "expected an integer >= 1, got 0"),
    ('[chain]\nslot_duration = "0s"', "chain.slot_duration", "expected a duration > 0, got '0s'"),
    ("[chain]\nmax_blocks_without_pow = 0", "chain.max_blocks_without_pow",
     "expected an integer >= 1, got 0"),
    ("[chain]\nrequired_btc_confirmations = 1.5", "chain.required_btc_confirmations",
     "expected an integer >= 1, got 1.5"),
    ("[chain]\nbitcoin_start_height = -1", "chain.bitcoin_start_height",
     "expected an integer >= 0, got -1"),
    ("[chain]\nis_validator = 1", "chain.is_validator", "expected true or false, got 1"),
    ('[chain]\nauthorities = "x"', "chain.authorities",
     "expected an array of BLS public keys, got 'x'"),
    ('[chain]\nauthorities = ["zz"]', "chain.authorities[0]",
     "expected a BLS public key (96 hex digits, optional 0x), got 'zz'"),
    (f'[chain]\nauthorities = ["{UNCOMPRESSED}"]', "chain.authorities[0]",
     f"expected a BLS public key, got {shown(UNCOMPRESSED)}: not in compressed form, or "
     "the point at infinity"),
    (f'[chain]\nauthorities = ["{INFINITY}"]', "chain.authorities[0]",
     f"expected a BLS public key, got {shown(INFINITY)}: not in compressed form, or "
     "the point at infinity"),
    (f'[chain]\nauthorities = ["{BLS_1}", "0x{BLS_1.upper()}"]', "chain.authorities[1]",
     f"duplicate of item 0, got {shown('0x' + BLS_1.upper())}"),
    ('[chain]\nfederation = ["0x12"]', "chain.federation[0]",
     "expected an EVM address (0x and 40 hex digits), got '0x12'"),
    (f'[chain]\nfederation = ["{ADDRESS_1}", "{ADDRESS_1.upper().replace("0X", "0x")}"]',
     "chain.federation[1]", f"duplicate of item 0, got {ADDRESS_1.upper().replace('0X', '0x')!r}"),
    (f'[chain]\nfederation_bitcoin_pubkeys = ["04{SECP_1[2:]}"]',
     "chain.federation_bitcoin_pubkeys[0]",
     "expected a compressed secp256k1 public key (66 hex digits starting 02 or 03), got "
     f"{shown('04' + SECP_1[2:])}"),
    ('[chain]\nengine_url = "127.0.0.1:8551"', "chain.engine_url",
     'expected a URL (http:// or https://) such as "http://127.0.0.1:8551", got '
     "'127.0.0.1:8551'"),
    ('[chain]\nengine_url = "ws://127.0.0.1:8551"', "chain.engine_url",
     'expected a URL (http:// or https://) such as "http://127.0.0.1:8551", got '
     "'ws://127.0.0.1:8551'"),
    ('[chain]\njwt_secret_file = ""', "chain.jwt_secret_file", "expected a file path, got ''"),
    ("[chain]\nvalidator_key_file = 1", "chain.validator_key_file",
     "expected a file path, got 1"),
    ('[network]\nlisten = "30303"', "network.listen",
     "expected \"host:port\" such as \"127.0.0.1:9615\", got '30303'"),
    ('[network]\nexternal_address = "203.0.113.7:0"', "network.external_address",
     "expected \"host:port\" such as \"203.0.113.7:30303\", got '203.0.113.7:0'"),
    ('[network]\nbootnodes = ["a:1", "b"]', "network.bootnodes[1]",
     "expected \"host:port\" such as \"203.0.113.7:30303\", got 'b'"),
    ("[network]\nmax_peers = 0", "network.max_peers", "expected an integer >= 1, got 0"),
    ('[bridge]\nbitcoin_network = "main"', "bridge.bitcoin_network",
     "expected one of regtest, testnet, signet, mainnet; got 'main'"),
    ('[bridge]\nbitcoin_rpc_url = "http://user:pw@127.0.0.1:18443"', "bridge.bitcoin_rpc_url",
     "expected a URL without credentials (they belong in a password file), got "
     "'http://***@127.0.0.1:18443'"),
    ('[bridge]\nbitcoin_rpc_user = ""', "bridge.bitcoin_rpc_user", "expected a user name, got ''"),
    ('[bridge]\nbitcoin_rpc_password = "hunter2"', "bridge.bitcoin_rpc_password",
     "secrets are not accepted in the configuration: write the password to a file and give "
     "its path as bitcoin_rpc_password_file"),
    ('[bridge]\nbridge_contract = "bbbb"', "bridge.bridge_contract",
     "expected an EVM address (0x and 40 hex digits), got 'bbbb'"),
    ("[bridge]\npegin_confirmations = 0", "bridge.pegin_confirmations",
     "expected an integer >= 1, got 0"),
    ("[bridge]\npegout_confirmations = true", "bridge.pegout_confirmations",
     "expected an integer >= 1, got true"),
    ("[bridge]\nfederation_threshold = 0", "bridge.federation_threshold",
     "expected an integer >= 1, got 0"),
    ("[bridge]\npoll_interval = 30", "bridge.poll_interval", f"expected {DURATION}, got 30"),
    ("[storage]\ndata_dir = 1", "storage.data_dir", "expected a directory path, got 1"),
    ('[storage]\nmap_size = "0B"', "storage.map_size", "expected a size > 0, got '0B'"),
    ('[storage]\nbackup_interval = "6"', "storage.backup_interval",
     f"expected {DURATION}, got '6'"),
    ("[storage]\nbackup_keep = 0", "storage.backup_keep", "expected an integer >= 1, got 0"),
    ('[governance]\nendpoints = ["tcp://gov:1"]', "governance.endpoints[0]",
     'expected a URL (http:// or https:// or ws:// or wss://) such as '
     "\"wss://governance.example:443\", got 'tcp://gov:1'"),
    ('[governance]\nconnect_timeout = "0ms"', "governance.connect_timeout",
     "expected a duration > 0, got '0ms'"),
    ("[sync]\nproduction_threshold = 0.9", "sync.production_threshold",
     "expected a number from 0.95 to 1, got 0.9"),
    ("[sync]\nproduction_threshold = nan", "sync.production_threshold",
     "expected a number from 0.95 to 1, got nan"),
    ('[sync]\nproduction_threshold = "1"', "sync.production_threshold",
     "expected a number from 0.95 to 1, got '1'"),
    ("[sync]\nbatch_size = 10001", "sync.batch_size",
     "expected an integer from 1 to 10000, got 10001"),
    ("[sync]\nparallel_downloads = 0", "sync.parallel_downloads",
     "expected an integer from 1 to 256, got 0"),
    ("[sync]\ncheckpoint_interval = 0", "sync.checkpoint_interval",
     "expected an integer >= 1, got 0"),
    ("[sync]\ncheckpoints_kept = -1", "sync.checkpoints_kept", "expected an integer >= 1, got -1"),
])
def test_key_refusals(body, path, message):
    assert messages(tree(body)) == {path: message}


def test_every_bad_item_of_an_array_is_reported():
    assert messages(tree('[network]\nbootnodes = ["a", "b:1", 3]')) == {
        "network.bootnodes[0]": "expected \"host:port\" such as \"203.0.113.7:30303\", got 'a'",
        "network.bootnodes[2]": "expected \"host:port\" such as \"203.0.113.7:30303\", got 3",
    }


def test_an_inline_secret_is_never_shown():
    with pytest.raises(ConfigError) as info:
        parse_config(tree('[bridge]\nbitcoin_rpc_password = "hunter2"\n'
                          'bitcoin_rpc_url = "http://alys:hunter2@10.0.0.1:8332"'))
    assert "hunter2" not in str(info.value)


def test_uses_names_node_sections_only():
    assert messages(ROOT + ACTOR + 'uses = ["chain", "monitoring", "ledger"]') == {
        "actors.engine.uses[1]": "expected one of chain, network, bridge, storage, governance, "
                                 "sync; got 'monitoring'",
        "actors.engine.uses[2]": "expected one of chain, network, bridge, storage, governance, "
                                 "sync; got 'ledger'",
    }
    assert messages(ROOT + ACTOR + 'uses = "chain"') == {
        "actors.engine.uses": "expected an array of section names, got 'chain'"}
    assert messages(ROOT + ACTOR + 'settings = {}') == {"actors.engine.settings": "unknown key"}


# --- checks across keys ---------------------------------------------------------

def test_a_validator_needs_a_key():
    assert messages(tree("[chain]\nis_validator = true")) == {
        "chain.is_validator": "a validator needs chain.validator_key_file (or chain.dev_keys = "
                              "true), got true"}
    for body in ("is_validator = true\ndev_keys = true",
                 'is_validator = true\nvalidator_key_file = "/k"'):
        assert parse_config(tree("[chain]\n" + body)).chain.is_validator


def test_dev_keys_and_a_key_file_conflict():
    assert messages(tree('[chain]\ndev_keys = true\nvalidator_key_file = "/k"')) == {
        "chain.dev_keys": "conflicts with chain.validator_key_file ('/k'): give one of them, "
                          "got true"}


def test_the_federation_threshold_fits_the_federation():
    assert messages(tree(f'[chain]\nfederation = ["{ADDRESS_1}"]')) == {
        "bridge.federation_threshold": "expected at most 1 (the number of chain.federation "
                                       "addresses), got 2 (default)"}
    one = f'[chain]\nfederation = ["{ADDRESS_1}"]\nfederation_bitcoin_pubkeys = ["{SECP_1}"]\n'
    with pytest.raises(ConfigError) as info:
        parse_config(tree(one + "[bridge]\nfederation_threshold = 3"))
    assert [str(issue) for issue in info.value.issues] == [
        "bridge.federation_threshold: expected at most 1 (the number of chain.federation "
        "addresses), got 3",
        "bridge.federation_threshold: expected at most 1 (the number of "
        "chain.federation_bitcoin_pubkeys keys), got 3"]
    assert parse_config(tree(one + "[bridge]\nfederation_threshold = 1")).bridge \
        .federation_threshold == 1
    # an empty federation (the default) sets no bound; a refused one is not checked again
    assert parse_config(tree("[bridge]\nfederation_threshold = 9")).bridge.federation_threshold == 9
    assert list(messages(tree('[chain]\nfederation = ["x"]\n[bridge]\nfederation_threshold = 9'))) \
        == ["chain.federation[0]"]


def test_system_log_level_is_the_alias_of_logging_level():
    assert parse_config('[system]\nlog_level = "debug"\n' + ROOT).logging.level == "debug"
    assert parse_config('[system]\nlog_level = "error"\n[logging]\nlevel = "error"\n'
                        + ROOT).logging.level == "error"
    assert messages('[system]\nlog_level = "debug"\n[logging]\nlevel = "info"\n' + ROOT) == {
        "system.log_level": "conflicts with logging.level ('info'): give one of them, "
                            "got 'debug'"}


# --- environments -----------------------------------------------------------------

PRODUCTION_MISTAKES = """
[logging]
level = "debug"
[chain]
is_validator = true
dev_keys = true
engine_url = "http://10.0.0.2:8551"
[bridge]
bitcoin_rpc_url = "http://bitcoind.internal:8332"
bitcoin_rpc_user = "alys"
[governance]
endpoints = ["wss://gov.example", "ws://gov.example", "http://[::1]:1", "http://10.0.0.3"]
[monitoring]
listen = "0.0.0.0:9615"
"""
REFUSED_IN_PRODUCTION = [
    "logging.level: debug logging is refused in production, got 'debug'",
    "chain.dev_keys: the well-known development keys are refused in production, got true",
    "bridge.bitcoin_network: regtest is refused in production, got 'regtest'",
    "bridge.bitcoin_rpc_url: an endpoint on a non-loopback host without bitcoin_rpc_user and "
    "bitcoin_rpc_password_file is refused in production, got 'http://bitcoind.internal:8332'",
    "chain.engine_url: an engine on a non-loopback host without chain.jwt_secret_file is "
    "refused in production, got 'http://10.0.0.2:8551'",
    "governance.endpoints[1]: a connection without TLS to a non-loopback host is refused in "
    "production (use https:// or wss://), got 'ws://gov.example'",
    "governance.endpoints[3]: a connection without TLS to a non-loopback host is refused in "
    "production (use https:// or wss://), got 'http://10.0.0.3'",
]
MONITORING_WARNING = ("monitoring.listen: /metrics and /health are served without "
                      "authentication beyond this machine, got '0.0.0.0:9615'")


def test_production_refuses_development_conveniences():
    with pytest.raises(ConfigError) as info:
        parse_config('environment = "production"\n' + PRODUCTION_MISTAKES + ROOT)
    assert [str(issue) for issue in info.value.issues] == REFUSED_IN_PRODUCTION


def test_staging_warns_about_the_same_and_development_says_nothing():
    staging = parse_config('environment = "staging"\n' + PRODUCTION_MISTAKES + ROOT)
    assert staging.warnings == (*REFUSED_IN_PRODUCTION, MONITORING_WARNING)
    assert parse_config(PRODUCTION_MISTAKES + ROOT).warnings == ()


PRODUCTION_READY = """
environment = "production"
[chain]
engine_url = "http://10.0.0.2:8551"
jwt_secret_file = "/etc/alysd/jwt.hex"
[bridge]
bitcoin_network = "mainnet"
bitcoin_rpc_url = "http://10.0.0.5:8332"
bitcoin_rpc_user = "alys"
bitcoin_rpc_password_file = "/etc/alysd/bitcoin.pass"
[governance]
endpoints = ["wss://gov.example", "https://gov.example", "ws://localhost:1", "http://127.0.0.9"]
[network]
listen = "0.0.0.0:30303"
curve_secret_file = "/etc/alysd/node.key"
"""


def test_production_accepts_authenticated_or_loopback_endpoints():
    config = parse_config(PRODUCTION_READY + "[monitoring]\nlisten = \"[::1]:9615\"\n" + ROOT)
    assert config.environment is Environment.PRODUCTION and config.warnings == ()


def test_production_only_warns_about_an_exposed_monitoring_endpoint():
    config = parse_config(PRODUCTION_READY + "[monitoring]\nlisten = \"0.0.0.0:9615\"\n" + ROOT)
    assert config.warnings == (MONITORING_WARNING,)


def test_the_bundled_development_config_is_refused_in_production(tmp_path):
    path = tmp_path / "dev.toml"
    path.write_text('environment = "production"\n' + (REPO_CONF / "dev.toml").read_text())
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert {issue.path for issue in info.value.issues} == {"chain.dev_keys",
                                                           "bridge.bitcoin_network"}


@pytest.mark.parametrize("host, loopback", [
    ("localhost", True), ("LocalHost", True), ("127.0.0.1", True), ("127.8.9.10", True),
    ("::1", True), ("[::1]", True), ("0.0.0.0", False), ("::", False), ("10.0.0.1", False),
    ("node.example", False), ("localhost.example", False), ("", False),
])
def test_loopback_hosts(host, loopback):
    assert is_loopback(host) is loopback


# --- the effective document --------------------------------------------------------

@pytest.mark.parametrize("text", [FULL, PRODUCTION_READY + ROOT, "[system]\nlog_level = 'error'\n"
                                  + ROOT + ACTOR + 'shutdown_timeout = "brutal_kill"\n'
                                  'max_mailbox_size = 5\n[actors.engine.batch]\n'
                                  '[actors.engine.config]\nwhen = 1979-05-27T07:32:00Z\n'])
def test_the_effective_document_loads_to_the_same_config(text):
    config = parse_config(text)
    document = config_document(config)
    assert "log_level" not in document["system"] and "max_mailbox_size" not in str(document)
    again = msgspec.structs.replace(config_from_dict(document), source=None)
    assert again == msgspec.structs.replace(config, source=None)


@pytest.mark.parametrize("name", ["alys.toml", "dev.toml"])
def test_the_bundled_configs_document_loads_to_the_same_config(name):
    config = load_config(REPO_CONF / name)
    assert config_from_dict(config_document(config)) == msgspec.structs.replace(
        config, source=None)


def test_the_document_shows_only_the_keys_of_the_actors_policy():
    config = parse_config(ROOT + ACTOR + 'strategy = "circuit_breaker"\nshutdown_timeout = '
                          '"brutal_kill"\nmemory_limit = "1.5GiB"')
    engine = config_document(config)["actors"]["engine"]
    assert {"failure_threshold", "recovery_timeout", "success_threshold"} <= set(engine)
    assert not {"initial_delay", "max_delay", "multiplier", "reset_after"} & set(engine)
    assert (engine["shutdown_timeout"], engine["memory_limit"]) == ("brutal_kill", "1536MiB")


@given(st.floats(min_value=1e-6, max_value=1e9))
def test_durations_are_spelled_back_exactly(seconds):
    text = duration_text(seconds)
    assert parse_duration(text) == seconds and spell(duration, seconds) == text


@given(st.integers(0, 1 << 50))
def test_sizes_are_spelled_back_exactly(n):
    text = size_text(n)
    assert parse_size(text) == n and spell(size, n) == text


def test_a_network_listen_off_loopback_needs_a_curve_key_in_every_environment():
    for environment in ("development", "staging", "production"):
        with pytest.raises(ConfigError) as refused:
            parse_config(f'environment = "{environment}"\n[network]\nlisten = "0.0.0.0:30303"\n'
                         + ROOT + ACTOR)
        assert any(issue.path == "network.listen" and "needs network.curve_secret_file"
                   in issue.message for issue in refused.value.issues)
    config = parse_config('[network]\nlisten = "0.0.0.0:30303"\ncurve_secret_file = "/k"\n'
                          'curve_clients = ["' + "a" * 40 + '"]\n' + ROOT + ACTOR)
    assert config.network.curve_clients == ("a" * 40,)
    with pytest.raises(ConfigError, match=r"network\.curve_clients\[0\]: expected a CURVE public "
                                          r"key \(40 Z85 characters\), got 'short'"):
        parse_config('[network]\ncurve_clients = ["short"]\n' + ROOT + ACTOR)


PEER_KEY = "p" * 40


@pytest.mark.parametrize("peers, extra, error", [
    ('[{name = "bob", address = "10.0.0.2:30303"}]', "",
     r"network\.peers\[0\]: peer 'bob': an address other than loopback needs its public_key"),
    ('[{name = "bob", address = "127.0.0.1:1"}, {name = "bob", address = "127.0.0.1:2"}]', "",
     r"network\.peers\[1\]: duplicate of item 0"),
    ('[{name = "Bob!", address = "127.0.0.1:1"}]', "", r"network\.peers\[0\]: expected a node name"),
    ('[{name = "bob", address = "127.0.0.1:1", port = 2}]', "",
     r"network\.peers\[0\]: unknown key 'port'"),
    ('[{name = "bob"}]', "", r"network\.peers\[0\]: address is missing"),
    ('["bob"]', "", r"network\.peers\[0\]: expected a table"),
    ('[{name = "node", address = "127.0.0.1:1"}]', "",
     r"network\.peers: a peer named 'node' is this node"),
    (f'[{{name = "bob", address = "10.0.0.2:1", public_key = "{PEER_KEY}"}}]', "",
     r"network\.peers: a peer with a public_key is reached over CURVE: give "
     r"network\.curve_secret_file"),
])
def test_bad_link_peers_are_refused_with_their_key_path(peers, extra, error):
    with pytest.raises(ConfigError, match=error):
        parse_config(f'[network]\nnetwork_key_file = "/k"\npeers = {peers}\n{extra}' + ROOT + ACTOR)


def test_link_peers_need_the_network_key():
    with pytest.raises(ConfigError, match=r"network\.peers: messages to other nodes are sealed "
                                          r"with the network's key"):
        parse_config('[network]\npeers = [{name = "bob", address = "127.0.0.1:1"}]\n'
                     + ROOT + ACTOR)
