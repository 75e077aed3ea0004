"""Faults an actor process suffers on purpose (``Inject`` system mail, sent by
``alysctl chaos`` when ``system.fault_injection`` is on), to check that the
supervisor notices and acts as it would on the real thing.

* ``memory``: a thread allocates ``mib`` MiB, 8 MiB every 20 ms (each page
  touched, so it is resident), and holds it for ``duration``, then lets it go.
  Under a ``memory_limit`` below that, the root kills the actor on the way up.
* ``cpu``: a thread spins for ``duration``: about one core, which a
  ``cpu_limit`` below one core is to act on.
* ``hang``: the actor's loop (the thread that runs handlers) stops for
  ``duration``, as a handler that does not return: health probes go
  unanswered. With ``gil`` it spins holding the GIL (the switch interval
  raised for the duration), as code wedged in C would: the heartbeat thread
  cannot run either, and the root kills the actor as hung.
"""

from __future__ import annotations

import sys
import threading
import time

from alysd.protocol import Inject

STEP_MIB = 8
STEP_EVERY = 0.02
_MIB = 1 << 20


def suffer(fault: Inject) -> None:
    """Apply ``fault``: ``hang`` here, on the calling (the loop's) thread; the
    others on a thread of their own, returning at once."""
    if fault.fault == "hang":
        _hang(fault.duration, fault.gil)
    elif fault.fault == "memory":
        threading.Thread(target=_allocate, args=(fault.mib, fault.duration),
                         name="fault-memory", daemon=True).start()
    elif fault.fault == "cpu":
        threading.Thread(target=_spin, args=(fault.duration,), name="fault-cpu",
                         daemon=True).start()
    else:
        raise ValueError(f"no such fault: {fault.fault!r}")


def _allocate(mib: int, duration: float) -> None:
    held, deadline = [], time.monotonic() + duration
    while len(held) * STEP_MIB < mib and time.monotonic() < deadline:
        block = bytearray(STEP_MIB * _MIB)
        for offset in range(0, len(block), 4096):
            block[offset] = 1
        held.append(block)
        time.sleep(STEP_EVERY)
    time.sleep(max(0.0, deadline - time.monotonic()))
    held.clear()


def _spin(duration: float) -> None:
    deadline = time.monotonic() + duration
    while time.monotonic() < deadline:
        pass


def _hang(duration: float, gil: bool) -> None:
    if not gil:
        time.sleep(duration)
        return
    interval = sys.getswitchinterval()
    sys.setswitchinterval(duration + 1.0)
    try:
        _spin(duration)
    finally:
        sys.setswitchinterval(interval)
