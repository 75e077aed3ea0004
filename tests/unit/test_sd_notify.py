"""Tests of alysd.sd_notify against real AF_UNIX datagram sockets standing in for systemd."""

from __future__ import annotations

import logging
import os
import shutil
import socket
import time
import uuid

import pytest

from alysd import sd_notify
from alysd.sd_notify import Notifier
from alysd.testing import short_tempdir

RECV_TIMEOUT = 2.0


class FakeSystemd:
    """systemd's end of NOTIFY_SOCKET: a bound datagram socket we read from."""

    def __init__(self, address: str, bind_to: str | bytes):
        self.address = address          # what goes into $NOTIFY_SOCKET
        self._bind_to = bind_to
        self.sock = self._bind()

    def _bind(self) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        sock.bind(self._bind_to)
        sock.settimeout(RECV_TIMEOUT)
        return sock

    def recv(self) -> bytes:
        return self.sock.recv(4096)

    def vanish(self) -> None:
        self.sock.close()
        if isinstance(self._bind_to, str):
            os.unlink(self._bind_to)

    def come_back(self) -> None:
        self.sock = self._bind()


@pytest.fixture
def systemd_path():
    workdir = short_tempdir()
    path = os.path.join(workdir, "notify")
    fake = FakeSystemd(path, path)
    try:
        yield fake
    finally:
        fake.sock.close()
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
def systemd_abstract():
    name = f"alysd-test-notify-{uuid.uuid4().hex}"
    fake = FakeSystemd("@" + name, b"\0" + name.encode())
    try:
        yield fake
    finally:
        fake.sock.close()


@pytest.fixture(params=["path", "abstract"])
def systemd(request):
    """systemd's socket, as a filesystem path and as an abstract name."""
    return request.getfixturevalue(f"systemd_{request.param}")


def notifier_for(fake: FakeSystemd, **extra: str) -> Notifier:
    notifier = Notifier.from_environment({"NOTIFY_SOCKET": fake.address, **extra})
    assert notifier.enabled
    return notifier


# --- messages ------------------------------------------------------------------------

def test_ready_sends_status_and_main_pid(systemd):
    notifier = notifier_for(systemd)
    notifier.ready("3 actors running, 0 restarting")
    assert systemd.recv() == (b"READY=1\nSTATUS=3 actors running, 0 restarting\n"
                              b"MAINPID=%d" % os.getpid())
    notifier.close()


def test_watchdog_and_stopping_messages(systemd):
    notifier = notifier_for(systemd)
    notifier.watchdog()
    notifier.stopping()
    assert systemd.recv() == b"WATCHDOG=1"
    assert systemd.recv() == b"STOPPING=1"
    notifier.close()


def test_reloading_carries_the_monotonic_clock_in_microseconds(systemd):
    notifier = notifier_for(systemd)
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    notifier.reloading()
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    reloading, stamp = systemd.recv().split(b"\n")
    assert reloading == b"RELOADING=1"
    key, _, value = stamp.partition(b"=")
    assert key == b"MONOTONIC_USEC" and value.isdigit()
    assert before <= int(value) <= after
    notifier.close()


def test_status_is_sent_only_when_it_changes(systemd_path):
    notifier = notifier_for(systemd_path)
    notifier.ready("2 actors running, 0 restarting")
    notifier.status("2 actors running, 0 restarting")   # same as READY's: not sent
    notifier.status("1 actors running, 1 restarting")
    notifier.status("1 actors running, 1 restarting")   # unchanged: not sent
    notifier.status("2 actors running, 0 restarting")
    notifier.watchdog()                                  # marks the end of what was sent
    assert [systemd_path.recv() for _ in range(4)] == [
        b"READY=1\nSTATUS=2 actors running, 0 restarting\nMAINPID=%d" % os.getpid(),
        b"STATUS=1 actors running, 1 restarting",
        b"STATUS=2 actors running, 0 restarting",
        b"WATCHDOG=1",
    ]
    notifier.close()


def test_a_newline_in_a_status_cannot_inject_an_assignment(systemd_path):
    notifier = notifier_for(systemd_path)
    notifier.status("bad\nREADY=1")
    assert systemd_path.recv() == b"STATUS=bad READY=1"
    notifier.close()


# --- environment ---------------------------------------------------------------------

def test_systemd_variables_are_removed_from_the_environment(systemd_path):
    environ = {"NOTIFY_SOCKET": systemd_path.address, "WATCHDOG_USEC": "30000000",
               "WATCHDOG_PID": str(os.getpid()), "PATH": "/usr/bin"}
    notifier = Notifier.from_environment(environ)
    assert environ == {"PATH": "/usr/bin"}
    assert notifier.enabled and notifier.watchdog_interval == 15.0
    notifier.close()


def test_os_environ_is_the_default_and_is_cleaned(systemd_path, monkeypatch):
    monkeypatch.setenv("NOTIFY_SOCKET", systemd_path.address)
    monkeypatch.setenv("WATCHDOG_USEC", "200000")
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    notifier = Notifier.from_environment()
    assert not {"NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"} & set(os.environ)
    assert notifier.watchdog_interval == 0.1
    notifier.close()


@pytest.mark.parametrize(("env", "interval"), [
    ({"WATCHDOG_USEC": "200000"}, 0.1),                              # no WATCHDOG_PID: ours
    ({"WATCHDOG_USEC": "200000", "WATCHDOG_PID": "<ours>"}, 0.1),
    ({"WATCHDOG_USEC": "200000", "WATCHDOG_PID": "<other>"}, None),  # another process's watchdog
    ({"WATCHDOG_USEC": "200000", "WATCHDOG_PID": "x"}, None),
    ({}, None),
    ({"WATCHDOG_USEC": "0"}, None),
    ({"WATCHDOG_USEC": "soon"}, None),
])
def test_watchdog_interval_is_half_the_timeout_and_only_for_this_process(systemd_path, env, interval):
    pids = {"<ours>": str(os.getpid()), "<other>": str(os.getpid() + 1)}
    environ = {"NOTIFY_SOCKET": systemd_path.address,
               **{k: pids.get(v, v) for k, v in env.items()}}
    notifier = Notifier.from_environment(environ)
    assert notifier.enabled
    assert notifier.watchdog_interval == interval
    assert environ == {}
    notifier.close()


# --- no systemd, or a broken one -------------------------------------------------------

@pytest.mark.parametrize("environ", [{}, {"NOTIFY_SOCKET": ""}, {"WATCHDOG_USEC": "200000"},
                                     {"NOTIFY_SOCKET": "vsock:2:1234"}])
def test_without_a_usable_notify_socket_everything_is_a_no_op(environ, monkeypatch):
    def no_socket(*args, **kwargs):
        raise AssertionError("a disabled notifier must not open a socket")
    monkeypatch.setattr(sd_notify.socket, "socket", no_socket)
    notifier = Notifier.from_environment(dict(environ))
    assert not notifier.enabled
    assert notifier.watchdog_interval is None
    notifier.ready("x")
    notifier.status("y")
    notifier.watchdog()
    notifier.stopping()
    notifier.reloading()
    notifier.close()


def test_a_vanished_socket_does_not_raise_and_is_logged_once_per_kind(systemd_path, caplog):
    notifier = notifier_for(systemd_path)
    systemd_path.vanish()
    with caplog.at_level(logging.WARNING, logger="alysd"):
        for _ in range(3):
            notifier.ready("r")
            notifier.status("s")
            notifier.watchdog()
            notifier.stopping()
            notifier.reloading()
    warned = [r.getMessage() for r in caplog.records if r.name == "alysd"]
    assert len(warned) == 5, warned
    for kind in ("READY", "STATUS", "WATCHDOG", "STOPPING", "RELOADING"):
        assert sum(f"could not send {kind} " in m for m in warned) == 1, (kind, warned)
    notifier.close()


def test_a_status_that_was_not_delivered_is_sent_again(systemd_path):
    notifier = notifier_for(systemd_path)
    systemd_path.vanish()
    notifier.status("1 actors running, 0 restarting")
    systemd_path.come_back()
    notifier.status("1 actors running, 0 restarting")
    assert systemd_path.recv() == b"STATUS=1 actors running, 0 restarting"
    notifier.close()


def test_a_full_socket_never_blocks_the_sender(systemd_path, caplog):
    systemd_path.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1)  # the kernel's minimum
    notifier = notifier_for(systemd_path)
    with caplog.at_level(logging.WARNING, logger="alysd"):
        for _ in range(100_000):        # a blocking send would hang here (pytest-timeout)
            notifier.watchdog()
            if caplog.records:
                break
    assert any("could not send WATCHDOG" in r.getMessage() for r in caplog.records)
    assert systemd_path.recv() == b"WATCHDOG=1"   # what fitted was delivered
    notifier.close()


def test_close_is_idempotent_and_silences_the_notifier(systemd_path):
    notifier = notifier_for(systemd_path)
    notifier.close()
    notifier.close()
    notifier.watchdog()
    notifier.stopping()
    systemd_path.sock.settimeout(0)
    with pytest.raises(BlockingIOError):
        systemd_path.recv()
