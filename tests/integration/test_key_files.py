"""A secret file open to others stops alysd from starting, and refuses a reload."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from alysd.errors import CommandError
from tests.conftest import REPO, actor_toml, tree_toml


def _with_key(path: str) -> str:
    return f'[chain]\nis_validator = true\nvalidator_key_file = "{path}"\n' + tree_toml(
        actor_toml("a", uses=["chain"]))


def test_alysd_refuses_to_start_with_a_key_file_others_can_read(short_tmp):
    key = os.path.join(short_tmp, "validator.key")
    with open(key, "w") as f:
        f.write("secret")
    os.chmod(key, 0o644)
    config = os.path.join(short_tmp, "alys.toml")
    with open(config, "w") as f:
        f.write(_with_key(key))
    env = dict(os.environ, PYTHONPATH=REPO)
    run = subprocess.run([sys.executable, "-m", "alysd", "--config", config, "--runtime-dir",
                          os.path.join(short_tmp, "run"), "--state-dir",
                          os.path.join(short_tmp, "state")],
                         capture_output=True, text=True, env=env, timeout=30)
    assert run.returncode == 78
    assert (f"chain.validator_key_file: {key} is open to its group or others (mode 0644): "
            f"chmod 600 {key}") in run.stderr
    assert not os.path.exists(os.path.join(short_tmp, "run", "control.sock"))
    check = subprocess.run([sys.executable, "-m", "alysd", "check-config", config],
                           capture_output=True, text=True, env=env, timeout=30)
    assert check.returncode == 1 and "chmod 600" in check.stderr


def test_a_reload_is_refused_once_a_key_file_is_opened_up(start_daemon, short_tmp):
    key = os.path.join(short_tmp, "validator.key")
    with open(key, "w") as f:
        f.write("secret")
    os.chmod(key, 0o600)
    d = start_daemon(_with_key(key))
    pid = d.status()["a"]["pid"]
    os.chmod(key, 0o640)
    with pytest.raises(CommandError, match=r"chain\.validator_key_file: .*chmod 600"):
        d.call("reload", {"dry_run": False}, timeout=30)
    assert d.status()["a"]["pid"] == pid
