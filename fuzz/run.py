"""Run a fuzz target by hand with atheris (``pip install atheris``)::

    python -m fuzz.run envelope [atheris/libFuzzer options, e.g. -max_total_time=600]
    python -m fuzz.run control
    python -m fuzz.run config -max_len=4096

Without atheris it says so and exits 2. The test-suite runs the same targets
with hypothesis on every change (tests/unit/test_fuzz_targets.py).
"""

from __future__ import annotations

import sys


def main(argv: list[str]) -> int:
    from fuzz.targets import TARGETS

    if len(argv) < 2 or argv[1] not in TARGETS:
        print(f"usage: python -m fuzz.run {{{','.join(TARGETS)}}} [libFuzzer options]",
              file=sys.stderr)
        return 2
    try:
        import atheris
    except ImportError:
        print("atheris is not installed: pip install atheris", file=sys.stderr)
        return 2
    target = TARGETS[argv[1]]
    atheris.Setup([argv[0], *argv[2:]], target)
    atheris.Fuzz()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
