"""Testing with alysd: real daemons, real processes, for this project's tests
and for anyone writing actors.

* ``run_daemon(config)`` runs a real ``alysd`` in a fresh short runtime dir and
  ends it, and every process of its tree, afterwards; the ``RunningDaemon``
  it yields sends, requests, signals and reads status (``alysd.testing.daemon``).
* ``wait_until(predicate, timeout)`` polls with a deadline: tests never sleep
  to synchronise.
* The pytest plugin (``alysd.testing.plugin``, registered by entry point when
  alysd is installed) gives the ``alysd_system`` fixture.
* ``alysd.testing.strategies``: hypothesis strategies for envelopes, messages
  of a msgspec type, and configuration trees.
* ``ActorPropertyTest`` (``alysd.testing.property``): an actor in a real
  process fed generated message sequences, an invariant checked over its state
  after each message, failures shrunk to a minimal sequence.

The last two need hypothesis (and pytest), which alysd itself does not: they
are imported only when used.
"""

from __future__ import annotations

from alysd.testing.daemon import (REPO_ROOT, RunningDaemon, gone, run_daemon, short_tempdir,
                                  wait_until)

__all__ = ["REPO_ROOT", "ActorPropertyTest", "RunningDaemon", "gone", "run_daemon",
           "short_tempdir", "wait_until"]


def __getattr__(name: str):
    if name == "ActorPropertyTest":
        from alysd.testing.property import ActorPropertyTest
        return ActorPropertyTest
    raise AttributeError(f"module 'alysd.testing' has no attribute {name!r}")
