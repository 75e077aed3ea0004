"""What ``bench.reload`` reconfigures: two alysd actors that name their process
and the configuration they run with, loaded as ``bench.reload_actors:<Class>``.

The zygote preloads this module, so it imports only the standard library and
``alysd``.

* ``ConfigEcho`` -- answers every request with ``{"pid", "seq", "t",
  "generation", "served"}``: its pid, the request it was sent, ``time.time()``
  when it answered, ``ctx.config["generation"]`` and how many requests it has
  answered.  It has no ``config_changed``, so a new ``config`` table restarts
  it; the count is carried across that restart (``preserve_state`` /
  ``restore_state``), as an actor with state would carry it.
* ``LiveConfigEcho`` -- the same, with ``config_changed``: it takes a new
  ``config`` table in the same process.
"""

from __future__ import annotations

import os
import time

from alysd import Actor


class ConfigEcho(Actor):
    """Answers with its pid, the request, the time, its config's generation and
    its count of answers; the count survives a reload restart."""

    def __init__(self):
        self.served = 0          # restore_state() runs before started()

    def preserve_state(self) -> bytes:
        return b"%d" % self.served

    def restore_state(self, state: bytes) -> None:
        self.served = int(state)

    def handle_message(self, message, ctx):
        self.served += 1
        return {"pid": os.getpid(), "seq": message, "t": time.time(),
                "generation": ctx.config["generation"], "served": self.served}


class LiveConfigEcho(ConfigEcho):
    """A ``ConfigEcho`` that takes a new config without a restart."""

    def config_changed(self, new, ctx):
        """Takes ``new`` as it is: ``handle_message`` reads ``ctx.config``, which
        is ``new`` once this returns."""
