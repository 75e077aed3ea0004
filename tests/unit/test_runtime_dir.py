"""Tests of alysd.runtime_dir: a private socket directory, path limits, the daemon lock."""

import os
import socket
import stat
import tempfile

import pytest

from alysd import runtime_dir as rd_mod
from alysd.errors import RuntimeDirError
from alysd.runtime_dir import MAX_IPC_PATH, MAX_NAME, DaemonLock, RuntimeDir, default_runtime_dir

# Longest runtime dir whose longest socket path (<dir>/<48 chars>.inbox) fits in 107 bytes.
LONGEST_DIR = MAX_IPC_PATH - len("/" + "x" * MAX_NAME + ".inbox")


def mode_of(path: str) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


# --- prepare -------------------------------------------------------------------------

def test_prepare_creates_a_private_directory(short_tmp):
    path = os.path.join(short_tmp, "run", "alysd")
    RuntimeDir(path).prepare()
    assert os.path.isdir(path)
    assert mode_of(path) == 0o700
    assert os.lstat(path).st_uid == os.geteuid()


def test_prepare_restores_the_umask(short_tmp):
    old = os.umask(0o022)
    try:
        RuntimeDir(os.path.join(short_tmp, "d")).prepare()
        assert os.umask(0o022) == 0o022
    finally:
        os.umask(old)


def test_prepare_is_idempotent_and_keeps_a_private_dir(short_tmp):
    path = os.path.join(short_tmp, "d")
    RuntimeDir(path).prepare()
    RuntimeDir(path).prepare()
    assert mode_of(path) == 0o700


@pytest.mark.parametrize("mode", [0o777, 0o755, 0o775, 0o707, 0o770])
def test_prepare_narrows_a_wide_directory_it_owns(short_tmp, mode):
    path = os.path.join(short_tmp, "d")
    os.mkdir(path)
    os.chmod(path, mode)
    RuntimeDir(path).prepare()
    got = mode_of(path)
    assert got & 0o027 == 0, oct(got)          # nothing for others, no group write
    assert got & 0o700 == 0o700


def test_prepare_without_a_control_group_closes_a_group_readable_dir(short_tmp):
    path = os.path.join(short_tmp, "d")
    os.mkdir(path)
    os.chmod(path, 0o750)   # left by a run with control_group
    RuntimeDir(path).prepare()
    assert mode_of(path) == 0o700


@pytest.mark.parametrize("before", [None, 0o700, 0o755, 0o2770])
def test_prepare_with_a_control_group_opens_the_dir_to_it_read_only(short_tmp, before):
    path = os.path.join(short_tmp, "d")
    if before is not None:
        os.mkdir(path)
        os.chmod(path, before)
    group = os.getegid()   # a group any user may give its files to
    RuntimeDir(path).prepare(group=group)
    assert mode_of(path) == 0o750
    assert os.lstat(path).st_gid == group


def test_share_control_opens_the_control_socket_alone_to_the_group(short_tmp):
    rd = RuntimeDir(os.path.join(short_tmp, "d"))
    rd.prepare(group=os.getegid())
    old = os.umask(0o077)
    socks = []
    try:
        for path in (rd.control, rd.system, rd.inbox("a")):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.bind(path)
            socks.append(s)
    finally:
        os.umask(old)
    rd.share_control(os.getegid())
    assert mode_of(rd.control) == 0o660
    assert os.lstat(rd.control).st_gid == os.getegid()
    assert mode_of(rd.system) & 0o077 == 0
    assert mode_of(rd.inbox("a")) & 0o077 == 0
    for s in socks:
        s.close()


@pytest.mark.skipif(os.geteuid() == 0, reason="root may give a file to any group")
def test_a_group_alysd_is_not_in_is_refused_naming_the_key(short_tmp):
    foreign = next(g for g in range(1, 65535) if g not in os.getgroups() and g != os.getegid())
    with pytest.raises(RuntimeDirError, match="system.control_group"):
        RuntimeDir(os.path.join(short_tmp, "d")).prepare(group=foreign)


def test_prepare_refuses_a_regular_file(short_tmp):
    path = os.path.join(short_tmp, "file")
    with open(path, "w") as f:
        f.write("not a dir")
    with pytest.raises(RuntimeDirError) as info:
        RuntimeDir(path).prepare()
    assert repr(path) in str(info.value)
    assert os.path.isfile(path)


def test_prepare_refuses_a_symlink_to_a_directory(short_tmp):
    real = os.path.join(short_tmp, "real")
    os.mkdir(real, 0o700)
    link = os.path.join(short_tmp, "link")
    os.symlink(real, link)
    with pytest.raises(RuntimeDirError, match="not a directory") as info:
        RuntimeDir(link).prepare()
    assert repr(link) in str(info.value)


def test_prepare_refuses_a_path_below_a_file(short_tmp):
    blocker = os.path.join(short_tmp, "file")
    open(blocker, "w").close()
    path = os.path.join(blocker, "sub")
    with pytest.raises(RuntimeDirError) as info:
        RuntimeDir(path).prepare()
    assert repr(path) in str(info.value)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give a directory away")
def test_prepare_refuses_a_directory_of_another_user(short_tmp):
    path = os.path.join(short_tmp, "d")
    os.mkdir(path, 0o700)
    os.chown(path, 12345, 12345)
    with pytest.raises(RuntimeDirError, match="belongs to uid 12345") as info:
        RuntimeDir(path).prepare()
    assert repr(path) in str(info.value)
    assert mode_of(path) == 0o700


# --- socket path lengths --------------------------------------------------------------

def _dir_of_length(base: str, n: int, fill: str = "p") -> str:
    path = base + "/" + fill * (n - len(base) - 1)
    assert len(os.fsencode(path)) == n
    return path


def test_longest_allowed_dir_fits_every_socket(short_tmp):
    path = _dir_of_length(short_tmp, LONGEST_DIR)
    rd = RuntimeDir(path)
    rd.prepare()
    longest = rd.inbox("x" * MAX_NAME)
    assert len(os.fsencode(longest)) == MAX_IPC_PATH
    # The kernel agrees: a unix socket can be bound at the longest path.
    for p in (longest, rd.control, rd.system):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.bind(p)
        finally:
            s.close()
            os.unlink(p)


def test_one_byte_too_long_is_refused_naming_the_path(short_tmp):
    path = _dir_of_length(short_tmp, LONGEST_DIR + 1)
    with pytest.raises(RuntimeDirError, match="too long") as info:
        RuntimeDir(path).prepare()
    assert repr(path) in str(info.value)
    assert not os.path.exists(path)


def test_length_is_counted_in_bytes_not_characters(short_tmp):
    # 'é' is two bytes in UTF-8: LONGEST_DIR characters but one byte too many.
    chars = LONGEST_DIR - len(short_tmp) - 1
    path = short_tmp + "/" + "é" + "p" * (chars - 1)
    assert len(path) == LONGEST_DIR and len(os.fsencode(path)) == LONGEST_DIR + 1
    with pytest.raises(RuntimeDirError, match="too long"):
        RuntimeDir(path).prepare()


def test_socket_layout():
    rd = RuntimeDir("/run/alysd")
    assert rd.control == "/run/alysd/control.sock"
    assert rd.system == "/run/alysd/system.sock"
    assert rd.inbox("engine") == "/run/alysd/engine.inbox"
    assert rd.lock == "/run/alysd/alysd.lock"
    rd.check_lengths()


# --- DaemonLock -------------------------------------------------------------------------

def _read(path: str) -> str:
    with open(path) as f:
        return f.read()


def test_lock_records_the_owner_and_can_be_taken_again_after_release(short_tmp):
    rd = RuntimeDir(os.path.join(short_tmp, "d"))
    rd.prepare()
    lock = DaemonLock(rd)
    lock.acquire()
    try:
        assert _read(rd.lock) == f"{os.getpid()}\n"
        assert mode_of(rd.lock) & 0o077 == 0
    finally:
        lock.release()
    again = DaemonLock(rd)
    again.acquire()
    again.release()


def test_second_daemon_is_refused_naming_the_first_owner(short_tmp):
    rd = RuntimeDir(os.path.join(short_tmp, "d"))
    rd.prepare()
    # A stale longer pid from an earlier owner must not leak into the message.
    with open(rd.lock, "w") as f:
        f.write("9999999999\n")
    ready_r, ready_w = os.pipe()
    go_r, go_w = os.pipe()
    pid = os.fork()
    if pid == 0:                                   # the first daemon
        code = 1
        try:
            os.close(ready_r)
            os.close(go_w)
            DaemonLock(rd).acquire()
            os.write(ready_w, b"1")
            os.read(go_r, 1)                       # hold the lock until the parent is done
            code = 0
        finally:
            os._exit(code)
    os.close(ready_w)
    os.close(go_r)
    try:
        assert os.read(ready_r, 1) == b"1", "the child could not take the lock"
        with pytest.raises(RuntimeDirError) as info:
            DaemonLock(rd).acquire()
        message = str(info.value)
        assert f"(pid {pid})" in message
        assert repr(rd.path) in message
        # The refused attempt did not clobber the owner's record.
        assert _read(rd.lock) == f"{pid}\n"
    finally:
        os.close(go_w)                             # EOF: the child releases and exits
        os.close(ready_r)
        _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    # The kernel released the dead owner's lock: no stale lock is left behind.
    lock = DaemonLock(rd)
    lock.acquire()
    try:
        assert _read(rd.lock) == f"{os.getpid()}\n"
    finally:
        lock.release()


# --- default_runtime_dir -------------------------------------------------------------------

@pytest.fixture(autouse=True)
def _outside_systemd(monkeypatch):
    """These tests describe alysd run by hand: systemd's RUNTIME_DIRECTORY is not set."""
    monkeypatch.delenv("RUNTIME_DIRECTORY", raising=False)


def test_env_var_wins(monkeypatch):
    monkeypatch.setenv("ALYSD_RUNTIME_DIR", "/somewhere/else")
    monkeypatch.setenv("XDG_RUNTIME_DIR", "/run/user/1000")
    assert default_runtime_dir() == "/somewhere/else"


def test_without_env_var_for_the_real_user(monkeypatch):
    monkeypatch.delenv("ALYSD_RUNTIME_DIR", raising=False)
    monkeypatch.setenv("XDG_RUNTIME_DIR", "/run/user/1000")
    expected = "/run/alysd" if os.geteuid() == 0 else "/run/user/1000/alysd"
    assert default_runtime_dir() == expected


def test_root_uses_run_alysd(monkeypatch):
    monkeypatch.delenv("ALYSD_RUNTIME_DIR", raising=False)
    monkeypatch.setenv("XDG_RUNTIME_DIR", "/run/user/0")
    monkeypatch.setattr(rd_mod.os, "geteuid", lambda: 0)
    assert default_runtime_dir() == "/run/alysd"


def test_user_uses_xdg_runtime_dir(monkeypatch):
    monkeypatch.setenv("ALYSD_RUNTIME_DIR", "")        # empty counts as unset
    monkeypatch.setenv("XDG_RUNTIME_DIR", "/run/user/1000")
    monkeypatch.setattr(rd_mod.os, "geteuid", lambda: 1000)
    assert default_runtime_dir() == "/run/user/1000/alysd"


def test_user_without_xdg_falls_back_to_tempdir(monkeypatch):
    monkeypatch.delenv("ALYSD_RUNTIME_DIR", raising=False)
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    monkeypatch.setattr(rd_mod.os, "geteuid", lambda: 1000)
    assert default_runtime_dir() == os.path.join(tempfile.gettempdir(), f"alysd-{os.getuid()}")
