"""The pytest plugin of alysd (registered as ``alysd`` under pytest's
``pytest11`` entry points, so installing alysd is enough to use it).

Fixture:

* ``alysd_system``: a factory, ``alysd_system(config, **options)``, that starts
  a real alysd tree from ``config`` (TOML text, or a ``pathlib.Path``) in a
  fresh short runtime dir, waits until every actor runs, and returns its
  ``RunningDaemon``: ``send(actor, msg)``, ``request(actor, msg)``,
  ``status()``, ``kill(actor, signal)``, ``wait_until(predicate, timeout)``,
  ``call(command, args)``. Options are ``run_daemon``'s (``wait=False`` for a
  tree expected not to come up, ``env``, ``state_dir``, ``extra_args``). Every
  daemon started in a test is stopped when the test ends, and any process of
  its tree still alive then is killed: a test leaves nothing behind.

The test's rootdir is put on the daemons' ``PYTHONPATH``, so actor classes
of the project under test import by their module path.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from alysd.testing.daemon import RunningDaemon, run_daemon


@pytest.fixture
def alysd_system(request: pytest.FixtureRequest) -> Iterator[Callable[..., RunningDaemon]]:
    """``alysd_system(config, **options)`` -> a running alysd, ended with the test."""
    root = str(request.config.rootpath)
    with contextlib.ExitStack() as stack:
        def start(config: str | Path, **options) -> RunningDaemon:
            paths = [root, *options.pop("python_path", [])]
            return stack.enter_context(run_daemon(config, python_path=paths, **options))
        yield start
