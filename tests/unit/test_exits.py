"""Tests of alysd.exits: classifying real waitpid statuses into LastExit records."""

import os
import signal

import msgspec
import pytest
from hypothesis import given, settings, strategies as st

from alysd.exits import ExitCode, LastExit, classify


def _reap(pid: int) -> int:
    _, status = os.waitpid(pid, 0)
    return status


def exited_with(code: int) -> tuple[int, int]:
    """(pid, waitpid status) of a real child that called ``_exit(code)``."""
    pid = os.fork()
    if pid == 0:
        os._exit(code)
    return pid, _reap(pid)


def killed_by(signum: int) -> tuple[int, int]:
    """(pid, waitpid status) of a real child killed by ``signum``."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(w)
            if signum != signal.SIGKILL:
                signal.signal(signum, signal.SIG_DFL)
                signal.pthread_sigmask(signal.SIG_UNBLOCK, [signum])
                os.kill(os.getpid(), signum)
            os.read(r, 1)          # SIGKILL: wait here for the parent's kill
        finally:
            os._exit(97)           # not reached when the signal killed us
    os.close(r)
    try:
        if signum == signal.SIGKILL:
            os.kill(pid, signal.SIGKILL)
    finally:
        os.close(w)
        status = _reap(pid)
    return pid, status


@pytest.mark.parametrize("code, reason", [
    (0, "clean"),
    (3, "start_failed"),
    (78, "config"),
    (1, "exit_code"),
    (2, "exit_code"),
    (77, "exit_code"),
    (79, "exit_code"),
    (255, "exit_code"),
])
def test_exit_codes(code, reason):
    pid, status = exited_with(code)
    last = classify(status, pid=pid, at=1234.5)
    assert last == LastExit(reason=reason, code=code, signal=None, pid=pid, at=1234.5)


def test_exit_code_enum_values_are_the_contract():
    assert (ExitCode.OK, ExitCode.CRASH, ExitCode.START_FAILED, ExitCode.CONFIG) == (0, 1, 3, 78)
    _, status = exited_with(ExitCode.CRASH)
    assert classify(status).reason == "exit_code"
    assert classify(status).code == 1


@pytest.mark.parametrize("signum, name", [
    (signal.SIGKILL, "SIGKILL"),
    (signal.SIGTERM, "SIGTERM"),
    (signal.SIGINT, "SIGINT"),
    (signal.SIGUSR1, "SIGUSR1"),
])
def test_killed_by_signal(signum, name):
    pid, status = killed_by(signum)
    assert os.WIFSIGNALED(status), "the child was expected to die by the signal"
    last = classify(status, pid=pid, at=7.0)
    assert last == LastExit(reason="signal", code=None, signal=name, pid=pid, at=7.0)


def test_signal_without_a_name_is_numbered():
    # Real-time signals between SIGRTMIN and SIGRTMAX have no enum name.
    signum = signal.SIGRTMIN + 1
    pid, status = killed_by(signum)
    assert os.WIFSIGNALED(status)
    last = classify(status, pid=pid)
    assert last.reason == "signal"
    assert last.signal == f"SIG{int(signum)}"
    assert last.code is None


def test_override_replaces_the_derived_reason_of_a_kill():
    # The supervisor killed an incarnation that never became ready.
    pid, status = killed_by(signal.SIGKILL)
    last = classify(status, pid=pid, at=5.0, reason="start_timeout")
    assert last == LastExit(reason="start_timeout", signal="SIGKILL", pid=pid, at=5.0)


def test_override_replaces_the_derived_reason_of_an_exit_and_keeps_the_code():
    pid, status = exited_with(0)
    last = classify(status, pid=pid, reason="stop_timeout")
    assert last.reason == "stop_timeout"
    assert last.code == 0
    assert last.signal is None


def test_defaults_when_no_pid_or_time_given():
    _, status = exited_with(3)
    last = classify(status)
    assert last.pid is None and last.at is None


def test_last_exit_survives_status_serialisation():
    # alysctl status receives last_exit as msgspec.to_builtins(LastExit).
    pid, status = killed_by(signal.SIGTERM)
    last = classify(status, pid=pid, at=1.5)
    data = msgspec.to_builtins(last)
    assert data == {"reason": "signal", "code": None, "signal": "SIGTERM", "pid": pid, "at": 1.5}
    assert msgspec.convert(data, LastExit) == last


# Synthetic statuses cover the whole range cheaply; they are cross-checked against
# the interpreter's own decoding (os.waitstatus_to_exitcode), so they are the
# statuses waitpid would return.

@settings(max_examples=100, deadline=None, database=None)
@given(st.integers(min_value=0, max_value=255))
def test_every_exit_code(code):
    status = code << 8
    assert os.waitstatus_to_exitcode(status) == code
    last = classify(status)
    assert last.code == code
    assert last.signal is None
    expected = {0: "clean", 3: "start_failed", 4: "memory_limit", 78: "config"}.get(code, "exit_code")
    assert last.reason == expected


@settings(max_examples=60, deadline=None, database=None)
@given(st.integers(min_value=1, max_value=64))
def test_every_signal(signum):
    status = signum
    assert os.waitstatus_to_exitcode(status) == -signum
    last = classify(status)
    assert last.reason == "signal"
    assert last.code is None
    try:
        assert last.signal == signal.Signals(signum).name
    except ValueError:
        assert last.signal == f"SIG{signum}"
