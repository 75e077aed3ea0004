"""A stand-in for a node actor that is not written yet.

It lets the seed's supervision tree run (and be restarted, stopped, inspected)
before the chain, engine, network, bridge, storage and other actors exist. It
says what it is: every reply is marked ``placeholder`` and its health is
``degraded``, so nobody mistakes a placeholder tree for a working node.
"""

from __future__ import annotations

from alysd import Actor, Degraded


class Placeholder(Actor):
    def handle_message(self, message, ctx):
        return {"actor": ctx.name, "placeholder": True, "received": message}

    def health_check(self):
        return Degraded("placeholder: this node actor is not implemented yet")
