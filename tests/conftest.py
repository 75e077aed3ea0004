"""Shared fixtures: real daemons in short private runtime dirs, always torn down."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from alysd.testing import short_tempdir

REPO = str(Path(__file__).resolve().parent.parent)  # so daemons can import tests.actors


def actor_toml(name: str, cls: str = "tests.actors:Probe", supervisor: str = "root",
               **keys) -> str:
    """One ``[actors.NAME]`` table (plus its ``config`` table from ``config=``)."""
    config = keys.pop("config", None)
    lines = [f"[actors.{name}]", f'supervisor = "{supervisor}"', f'class = "{cls}"']
    lines += [f"{k} = {_toml(v)}" for k, v in keys.items()]
    if config:
        lines.append(f"[actors.{name}.config]")
        lines += [f"{k} = {_toml(v)}" for k, v in config.items()]
    return "\n".join(lines) + "\n"


def tree_toml(*actors: str, strategy: str = "one_for_one", max_retries: int = 3,
              within_time: str = "5s", system: str = "") -> str:
    """A one-supervisor tree named ``root`` holding ``actors`` (from ``actor_toml``)."""
    head = f"[system]\n{system}\n" if system else ""
    head += (f'[supervisors.root]\nstrategy = "{strategy}"\nmax_retries = {max_retries}\n'
             f'within_time = "{within_time}"\n')
    return head + "\n".join(actors)


def _toml(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, list):
        return "[" + ", ".join(_toml(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{k} = {_toml(x)}" for k, x in v.items()) + " }"
    return str(v)


@pytest.fixture
def short_tmp():
    """A short private directory under /tmp (pytest's tmp_path is too long for sockets)."""
    path = short_tempdir()
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def start_daemon(alysd_system):
    """``start_daemon(config, **kw)`` runs alysd for the rest of the test: the
    plugin's ``alysd_system`` (alysd.testing.plugin), under the name this
    suite grew up with. The repository is the rootdir, so ``tests.actors``
    imports in the daemons."""
    return alysd_system
