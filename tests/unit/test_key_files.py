"""Secret files named by the config: private, owned by alysd's user or root (as ssh insists)."""

import os

import pytest

from alysd.config import parse_config
from alysd.key_files import SECRET_FILE_KEYS, check_secret_files, file_problem

TREE = '[supervisors.root]\n[actors.a]\nsupervisor = "root"\nclass = "m:A"\n'


def secret(tmp_path, mode: int, name: str = "secret") -> str:
    path = tmp_path / name
    path.write_bytes(b"s3cret")
    os.chmod(path, mode)
    return str(path)


def test_a_private_file_passes(tmp_path):
    assert file_problem(secret(tmp_path, 0o600), os.geteuid()) is None
    assert file_problem(secret(tmp_path, 0o400, "ro"), os.geteuid()) is None


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o660, 0o644, 0o602, 0o620])
def test_a_file_open_to_group_or_others_is_refused_with_the_fix(tmp_path, mode):
    path = secret(tmp_path, mode)
    assert file_problem(path, os.geteuid()) == (
        f"{path} is open to its group or others (mode {mode:04o}): chmod 600 {path}")


def test_missing_and_not_regular(tmp_path):
    assert file_problem(str(tmp_path / "nope"), 0) == f"no such file: {tmp_path / 'nope'}"
    assert file_problem(str(tmp_path), 0) == f"{tmp_path} is not a regular file"


def test_a_file_of_another_user_is_refused(tmp_path):
    path = secret(tmp_path, 0o600)
    if os.geteuid() == 0:
        os.chown(path, 65534, -1)
        owner, euid = 65534, 1000   # alysd running as a user other than the file's owner
    else:
        owner, euid = os.geteuid(), os.geteuid() + 1
    assert file_problem(path, euid) == (
        f"{path} is owned by uid {owner}, not by the user alysd runs as (uid {euid}) or root: "
        f"chown {euid} {path}")


def test_every_secret_file_key_is_checked_and_named(tmp_path):
    assert {key for _, key in SECRET_FILE_KEYS} == {
        "jwt_secret_file", "validator_key_file", "bitcoin_rpc_password_file", "curve_secret_file",
        "network_key_file"}
    config = parse_config(
        f'[chain]\njwt_secret_file = "{secret(tmp_path, 0o644, "jwt")}"\n'
        f'validator_key_file = "{secret(tmp_path, 0o600, "key")}"\nis_validator = true\n'
        f'[bridge]\nbitcoin_rpc_password_file = "{tmp_path / "missing"}"\n'
        f'[network]\nnetwork_key_file = "{secret(tmp_path, 0o640, "net")}"\n' + TREE)
    issues = check_secret_files(config)
    assert [issue.path for issue in issues] == ["chain.jwt_secret_file",
                                                "bridge.bitcoin_rpc_password_file",
                                                "network.network_key_file"]
    assert "chmod 600" in issues[0].message and "no such file" in issues[1].message
    assert check_secret_files(parse_config(TREE)) == []
