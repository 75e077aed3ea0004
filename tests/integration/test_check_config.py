"""``alysd check-config`` and the layered configuration of a real ``alysd``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from alysd.config_layers import SYSTEM_CONFIG
from tests.conftest import REPO, actor_toml, tree_toml

VALID = tree_toml(actor_toml("a", uses=["chain"])) + """
[chain]
chain_id = 7
"""


def _env(**alys: str) -> dict[str, str]:
    """The test's environment without its ALYS_* variables, plus ``alys``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ALYS_")}
    return {**env, "PYTHONPATH": REPO, **alys}


def _alysd(*args: str, cwd: Path, **alys: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "alysd", *args], capture_output=True, text=True,
                          env=_env(**alys), cwd=cwd, timeout=60)


@pytest.fixture
def valid(tmp_path) -> Path:
    path = tmp_path / "valid.toml"
    path.write_text(VALID)
    return path


def test_a_valid_config_is_printed_with_the_origin_of_each_value(valid, tmp_path):
    out = _alysd("check-config", str(valid), cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == f"# {valid}"
    assert "chain_id = 7  # file" in lines
    assert 'slot_duration = "4s"  # default' in lines
    assert 'uses = ["chain"]  # file' in lines
    assert "[actors.a]" in lines and out.stderr == ""


def test_json_output_parses(valid, tmp_path):
    out = _alysd("check-config", str(valid), "--json", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    document = json.loads(out.stdout)
    assert document["source"] == str(valid)
    assert document["config"]["chain"]["chain_id"] == 7
    assert document["origins"]["chain.chain_id"] == "file"
    assert document["origins"]["network.max_peers"] == "default"
    assert document["warnings"] == []


def test_variables_and_flags_are_layered_and_named(valid, tmp_path):
    out = _alysd("check-config", str(valid), "--json", "--set", "chain.chain_id=9",
                 "--set", "sync.batch_size=32", cwd=tmp_path,
                 ALYS_CHAIN__CHAIN_ID="8", ALYS_CHAIN__SLOT_DURATION="2s",
                 ALYS_ACTORS__A__MEMORY_LIMIT="1GiB")
    assert out.returncode == 0, out.stderr
    document = json.loads(out.stdout)
    assert document["config"]["chain"]["chain_id"] == 9
    assert document["config"]["chain"]["slot_duration"] == "2s"
    assert document["config"]["actors"]["a"]["memory_limit"] == "1GiB"
    assert document["origins"]["chain.chain_id"] == "flag --set chain.chain_id=9"
    assert document["origins"]["chain.slot_duration"] == "env ALYS_CHAIN__SLOT_DURATION"
    assert document["origins"]["actors.a.memory_limit"] == "env ALYS_ACTORS__A__MEMORY_LIMIT"


def test_an_invalid_config_prints_every_error_with_its_key_path(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text(tree_toml(actor_toml("a", strategy="sometimes", uses=["ledger"]))
                    + '[chain]\nchain_id = 0\nauthorities = ["zz"]\n[sync]\nbatch_size = 0\n')
    out = _alysd("check-config", str(path), cwd=tmp_path, ALYS_NETWORK__LISTEN="nowhere")
    assert out.returncode == 1 and out.stdout == ""
    lines = out.stderr.splitlines()
    assert sorted(line.split(": ")[0] for line in lines) == [
        "actors.a.strategy", "actors.a.uses[0]", "chain.authorities[0]", "chain.chain_id",
        "network.listen", "sync.batch_size"]
    assert "network.listen: expected \"host:port\" such as \"127.0.0.1:9615\", got 'nowhere' " \
           "(from env ALYS_NETWORK__LISTEN)" in lines
    out = _alysd("check-config", str(path), "--json", cwd=tmp_path)
    assert out.returncode == 1
    errors = json.loads(out.stdout)["errors"]
    assert {"path": "chain.chain_id", "message": "expected an integer >= 1, got 0"} in errors


def test_actor_classes_are_imported(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text(tree_toml(actor_toml("a"), actor_toml("b", cls="tests.no_such_module:X")))
    out = _alysd("check-config", str(path), cwd=tmp_path)
    assert out.returncode == 1
    [line] = out.stderr.splitlines()
    assert line.startswith("actors.b.class: cannot load tests.no_such_module:X: ImportError:")


def test_warnings_go_to_stderr_and_the_config_is_valid(valid, tmp_path):
    out = _alysd("check-config", str(valid), cwd=tmp_path, ALYS_ENVIRONMENT="staging")
    assert out.returncode == 0
    assert out.stderr.splitlines() == [
        "warning: bridge.bitcoin_network: regtest is refused in production, got 'regtest'"]
    assert 'environment = "staging"  # env ALYS_ENVIRONMENT' in out.stdout.splitlines()
    out = _alysd("check-config", str(valid), cwd=tmp_path, ALYS_ENVIRONMENT="production")
    assert out.returncode == 1
    assert out.stderr == "bridge.bitcoin_network: regtest is refused in production, got 'regtest'\n"


def test_without_a_path_the_config_is_found_as_alysd_finds_it(valid, tmp_path):
    out = _alysd("check-config", cwd=tmp_path, ALYS_CONFIG_PATH=str(valid))
    assert out.returncode == 0 and out.stdout.startswith(f"# {valid}\n")
    (tmp_path / "alys.toml").write_text(VALID)
    out = _alysd("check-config", cwd=tmp_path)
    assert out.returncode == 0 and out.stdout.startswith(f"# {tmp_path / 'alys.toml'}\n")
    out = _alysd("check-config", "--dev", cwd=tmp_path)
    assert out.returncode == 0 and "dev_keys = true  # file" in out.stdout


@pytest.mark.skipif(os.path.exists(SYSTEM_CONFIG), reason=f"{SYSTEM_CONFIG} exists here")
def test_no_config_anywhere(tmp_path):
    out = _alysd("check-config", cwd=tmp_path)
    assert out.returncode == 1
    assert out.stderr.startswith("no configuration file: give --config PATH or set "
                                 "ALYS_CONFIG_PATH (looked for")
    out = _alysd(cwd=tmp_path)
    assert out.returncode == 78 and "no configuration file" in out.stderr


@pytest.mark.parametrize("args, text", [
    (["--set", "nokey"], "Invalid value for '--set'"),
    (["check-config", "--set", "a.b"], "Invalid value for '--set'"),
    (["--config", "x.toml", "--dev"], "give a config file or --dev, not both"),
    (["check-config", "x.toml", "--dev"], "give a config file or --dev, not both"),
    (["--dev", "check-config"], "--dev is an option of the node itself"),
])
def test_usage_errors(tmp_path, args, text):
    out = _alysd(*args, cwd=tmp_path)
    assert out.returncode == 2 and text in out.stderr


def test_a_daemon_runs_with_its_layers(start_daemon):
    d = start_daemon(tree_toml(actor_toml("a", config={"greeting": "file"}),
                               actor_toml("t", cls="tests.actors:Tunable", uses=["chain"])),
                     env=_env(ALYS_ACTORS__A__CONFIG__GREETING="env",
                              ALYS_MONITORING__LISTEN="127.0.0.1:0",
                              ALYS_CHAIN__SLOT_DURATION="2s"),
                     extra_args=["--set", "chain.chain_id=9"])
    assert d.request("a", {"op": "config"}) == {"greeting": "env"}
    settings = d.request("t", {"op": "settings"})
    assert (settings["chain"]["slot_duration"], settings["chain"]["chain_id"]) == (2.0, 9)
    with urllib.request.urlopen(d.call("version")["monitoring"] + "/health", timeout=10) as resp:
        assert resp.status == 200
    assert "config: chain.slot_duration from env ALYS_CHAIN__SLOT_DURATION" in d.log()
