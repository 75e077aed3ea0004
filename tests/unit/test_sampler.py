"""The sampler against real processes: what it reads, and when."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from alysd.sampler import IDLE_INTERVAL, Sampler
from alysd.testing import wait_until

MiB = 1 << 20


def _python(code: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE)


@pytest.fixture
def procs():
    started: list[subprocess.Popen] = []
    yield lambda code: started.append(_python(code)) or started[-1]
    for p in started:
        p.kill()
        p.wait()


def _read_until(sampler: Sampler, key: str, predicate, timeout: float = 10.0):
    def check():
        due = sampler.next_due()
        if due is not None and time.monotonic() >= due:
            sampler.refresh(time.monotonic())
        reading = sampler.latest(key)
        return reading if reading is not None and predicate(reading) else None
    return wait_until(check, timeout=timeout, interval=0.01, message=f"a reading of {key}")


def test_reads_rss_and_cpu_of_a_busy_process(procs):
    p = procs("import sys; x = b'1' * (64 << 20); sys.stdout.flush()\nwhile True: pass")
    sampler = Sampler()
    sampler.track("busy", p.pid, interval=0.05)
    reading = _read_until(sampler, "busy", lambda r: r.rss_bytes > 64 * MiB and r.cpu_seconds > 0.3)
    assert reading.cpu_percent > 20
    assert not reading.stopped


def test_tree_rss_counts_the_children(procs):
    p = procs("import subprocess, sys, time\n"
              "c = subprocess.Popen([sys.executable, '-c', "
              "\"import time; x = b'1' * (80 << 20); time.sleep(60)\"])\n"
              "time.sleep(60)")
    alone, tree = Sampler(), Sampler()
    alone.track("p", p.pid, interval=0.05)
    tree.track("p", p.pid, interval=0.05, tree=True)
    reading = _read_until(tree, "p", lambda r: r.rss_bytes > 80 * MiB)
    assert _read_until(alone, "p", lambda r: True).rss_bytes < reading.rss_bytes - 60 * MiB


def test_a_stopped_process_reads_as_stopped(procs):
    import os
    import signal
    p = procs("import time; time.sleep(60)")
    sampler = Sampler()
    sampler.track("p", p.pid, interval=0.05)
    os.kill(p.pid, signal.SIGSTOP)
    try:
        _read_until(sampler, "p", lambda r: r.stopped)
    finally:
        os.kill(p.pid, signal.SIGCONT)


def test_a_reaped_process_is_dropped_and_its_pid_never_misread(procs):
    p = procs("import time; time.sleep(60)")
    sampler = Sampler()
    sampler.track("p", p.pid, interval=0.01)
    assert sampler.latest("p") is not None
    p.kill()
    p.wait()
    wait_until(lambda: (sampler.refresh(time.monotonic()), sampler.latest("p") is None)[1],
               message="the gone process dropped")
    assert sampler.next_due() is None


def test_intervals_are_per_process_and_soon_brings_a_reading_forward(procs):
    p = procs("import time; time.sleep(60)")
    q = procs("import time; time.sleep(60)")
    sampler = Sampler()
    sampler.track("fast", p.pid, interval=0.05)
    sampler.track("idle", q.pid)
    first = sampler.latest("idle").at
    # the next reading falls on the interval's grid, 0.75 to 1.75 intervals on
    wait = sampler.next_due() - sampler.latest("fast").at
    assert 0.0375 <= wait <= 0.0875
    assert sampler.next_due() / 0.05 == pytest.approx(round(sampler.next_due() / 0.05))
    read = []
    deadline = time.monotonic() + 0.5
    while time.monotonic() < deadline:
        read += sampler.refresh(time.monotonic())
        time.sleep(0.01)
    assert read.count("fast") >= 5 and "idle" not in read
    assert sampler.latest("idle").at == first and IDLE_INTERVAL > 0.5
    sampler.soon("idle", 0.0)
    assert "idle" in sampler.refresh(time.monotonic())
    # forgetting returns the last reading and stops the schedule
    assert sampler.forget("fast") is not None and sampler.latest("fast") is None
