"""Tests of alysd.state_dir: where durable state lives and how that directory is checked."""

import os
import stat

import pytest

from alysd import state_dir as sd_mod
from alysd.state_dir import (
    StateDirError,
    dead_letter_path,
    default_state_dir,
    prepare_state_dir,
)

ENV_VARS = ("ALYSD_STATE_DIR", "STATE_DIRECTORY", "XDG_STATE_HOME")


@pytest.fixture
def clean_env(monkeypatch):
    for name in ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def mode_of(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


# --- default_state_dir -----------------------------------------------------------------------

def test_env_var_wins(clean_env):
    clean_env.setenv("ALYSD_STATE_DIR", "/srv/alysd")
    clean_env.setenv("STATE_DIRECTORY", "/var/lib/alysd")
    clean_env.setenv("XDG_STATE_HOME", "/home/u/.local/state")
    assert default_state_dir() == "/srv/alysd"


def test_systemd_state_directory_is_next_and_its_first_path_is_taken(clean_env):
    clean_env.setenv("ALYSD_STATE_DIR", "")                  # empty counts as unset
    clean_env.setenv("STATE_DIRECTORY", "/var/lib/alysd:/var/lib/other")
    clean_env.setenv("XDG_STATE_HOME", "/home/u/.local/state")
    assert default_state_dir() == "/var/lib/alysd"


def test_root_uses_var_lib(clean_env):
    clean_env.setenv("STATE_DIRECTORY", "")
    clean_env.setenv("XDG_STATE_HOME", "/root/.local/state")
    clean_env.setattr(sd_mod.os, "geteuid", lambda: 0)
    assert default_state_dir() == "/var/lib/alysd"


def test_user_uses_xdg_state_home(clean_env):
    clean_env.setenv("XDG_STATE_HOME", "/home/u/.state")
    clean_env.setattr(sd_mod.os, "geteuid", lambda: 1000)
    assert default_state_dir() == "/home/u/.state/alysd"


@pytest.mark.parametrize("xdg", [None, "", "relative/state"])
def test_user_without_a_usable_xdg_state_home_uses_the_home_dir(clean_env, xdg):
    if xdg is not None:
        clean_env.setenv("XDG_STATE_HOME", xdg)           # relative paths are invalid (XDG spec)
    clean_env.setenv("HOME", "/home/u")
    clean_env.setattr(sd_mod.os, "geteuid", lambda: 1000)
    assert default_state_dir() == "/home/u/.local/state/alysd"


def test_dead_letter_path():
    assert dead_letter_path("/var/lib/alysd") == "/var/lib/alysd/dead-letters"


# --- prepare_state_dir -----------------------------------------------------------------------

def test_prepare_creates_it_and_its_parents_private(tmp_path):
    path = tmp_path / "a" / "b" / "alysd"
    assert prepare_state_dir(str(path)) == str(path)
    assert mode_of(path) == 0o700
    assert mode_of(tmp_path / "a") == 0o700
    assert os.stat(path).st_uid == os.geteuid()


def test_prepare_returns_an_absolute_path_and_restores_the_umask(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    old = os.umask(0o022)
    try:
        assert prepare_state_dir("state") == str(tmp_path / "state")
        assert os.umask(0o022) == 0o022
    finally:
        os.umask(old)


@pytest.mark.parametrize("mode", [0o700, 0o750, 0o755, 0o705])
def test_prepare_accepts_a_directory_others_may_read(tmp_path, mode):
    path = tmp_path / "d"
    path.mkdir()
    path.chmod(mode)
    assert prepare_state_dir(str(path)) == str(path)
    assert mode_of(path) == mode                            # left as it was


@pytest.mark.parametrize("mode, who", [
    (0o770, "group"), (0o757, "others"), (0o777, "group and others"),
])
def test_prepare_refuses_a_directory_others_may_write_and_names_the_fix(tmp_path, mode, who):
    path = tmp_path / "d"
    path.mkdir()
    path.chmod(mode)
    with pytest.raises(StateDirError) as info:
        prepare_state_dir(str(path))
    text = str(info.value)
    assert repr(str(path)) in text
    assert f"writable by {who} (mode {mode:04o})" in text
    assert text.endswith(f"fix it with: chmod go-w {path}")
    assert mode_of(path) == mode                            # refused, not changed


def test_the_fix_is_quoted_for_the_shell(tmp_path):
    path = tmp_path / "with space"
    path.mkdir()
    path.chmod(0o777)
    with pytest.raises(StateDirError, match=r"chmod go-w '.*/with space'$"):
        prepare_state_dir(str(path))


def test_prepare_refuses_a_directory_that_is_not_ours(tmp_path, monkeypatch):
    path = tmp_path / "d"
    path.mkdir(mode=0o700)
    me = os.geteuid()
    monkeypatch.setattr(sd_mod.os, "geteuid", lambda: me + 1)
    with pytest.raises(StateDirError, match=f"belongs to uid {me}, not to us") as info:
        prepare_state_dir(str(path))
    assert f"chown {me + 1} {path}" in str(info.value)


def test_prepare_refuses_a_regular_file(tmp_path):
    path = tmp_path / "file"
    path.write_text("not a dir")
    with pytest.raises(StateDirError, match="is not a directory") as info:
        prepare_state_dir(str(path))
    assert repr(str(path)) in str(info.value)


def test_prepare_refuses_a_path_below_a_file(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(StateDirError, match="cannot create state dir"):
        prepare_state_dir(str(blocker / "alysd"))


def test_prepare_follows_a_symlink_and_checks_its_target(tmp_path):
    real = tmp_path / "private" / "alysd"
    real.mkdir(parents=True, mode=0o700)
    link = tmp_path / "alysd"
    link.symlink_to(real)
    assert prepare_state_dir(str(link)) == str(link)
    real.chmod(0o777)
    with pytest.raises(StateDirError, match="writable by group and others"):
        prepare_state_dir(str(link))
