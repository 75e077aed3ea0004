"""Run a fuzz target by hand with atheris (``pip install atheris``)::

    python -m fuzz.run envelope [atheris/libFuzzer options, e.g. -max_total_time=600]
    python -m fuzz.run control
    python -m fuzz.run config -max_len=4096
    python -m fuzz.run sealed -max_total_time=120

msgspec decodes in C, which atheris does not see: a directory of valid inputs
to start from (libFuzzer's corpus argument) takes a run much further than
random bytes do (for ``sealed``, 5 corpus entries and 30 edges in a minute
from two seeds, 1 and 22 without).

Without atheris it says so and exits 2. The test-suite runs the same targets
with hypothesis on every change (tests/unit/test_fuzz_targets.py).
"""

from __future__ import annotations

import sys


def main(argv: list[str]) -> int:
    try:
        import atheris
    except ImportError:
        print("atheris is not installed: pip install atheris", file=sys.stderr)
        return 2
    # Instrumented, so that atheris is guided by the coverage of alysd's code
    # (without it, a run mutates blindly and its corpus never grows).
    with atheris.instrument_imports(include=["alysd", "fuzz"]):
        from fuzz.targets import TARGETS
    if len(argv) < 2 or argv[1] not in TARGETS:
        print(f"usage: python -m fuzz.run {{{','.join(TARGETS)}}} [libFuzzer options]",
              file=sys.stderr)
        return 2
    target = TARGETS[argv[1]]
    atheris.Setup([argv[0], *argv[2:]], target)
    atheris.Fuzz()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
