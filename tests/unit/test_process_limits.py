"""raise_fd_limit in a real child process (it changes process-wide limits)."""

from __future__ import annotations

import subprocess
import sys

SCRIPT = """
import resource
from alysd.process import raise_fd_limit
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
print(raise_fd_limit(512), resource.getrlimit(resource.RLIMIT_NOFILE)[0])
print(raise_fd_limit(300), resource.getrlimit(resource.RLIMIT_NOFILE)[0])
print(raise_fd_limit(10 ** 9) <= hard or hard == resource.RLIM_INFINITY)
"""


def test_raises_the_soft_limit_never_lowers_it_and_stops_at_the_hard_one():
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                         check=True, timeout=30).stdout.split("\n")
    assert out[0] == "512 512"          # raised
    assert out[1] == "512 512"          # not lowered
    assert out[2] == "True"             # capped by the hard limit
