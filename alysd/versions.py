"""Versions of alysd and of the libraries it runs on (for ``--version`` and support)."""

from __future__ import annotations

import subprocess
import sys
from functools import lru_cache
from pathlib import Path

import msgspec
import psutil
import zmq

import alysd


@lru_cache(maxsize=1)
def _commit() -> str | None:
    """The git commit of a source checkout, or None for an installed release."""
    here = Path(__file__).resolve().parent.parent
    if not (here / ".git").exists():
        return None
    try:
        out = subprocess.run(["git", "-C", str(here), "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True, timeout=2, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def version_info() -> dict:
    return {
        "alysd": alysd.__version__,
        "commit": _commit(),
        "python": sys.version.split()[0],
        "pyzmq": zmq.__version__,
        "libzmq": zmq.zmq_version(),
        "msgspec": msgspec.__version__,
        "psutil": psutil.__version__,
    }
