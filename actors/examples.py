"""Example actors for the development configuration (``alysd --dev``).

They show the actor API end to end until the node's own actors take their
place: ``Echo`` answers with what it was sent, ``Counter`` keeps state across
messages, ``Relay`` asks another actor (actor-to-actor request/reply).
"""

from __future__ import annotations

from alysd import Actor


class Echo(Actor):
    """Replies with the message it received."""

    def handle_message(self, message, ctx):
        return message


class Counter(Actor):
    """Counts messages; ``{"op": "get"}`` reads the count, anything else adds one."""

    def started(self, ctx):
        self.count = int(ctx.config.get("start", 0))

    def handle_message(self, message, ctx):
        if isinstance(message, dict) and message.get("op") == "get":
            return self.count
        self.count += 1
        return self.count


class Relay(Actor):
    """Forwards each request to ``config.target`` and replies with that actor's answer."""

    def started(self, ctx):
        self.target = ctx.config["target"]

    def handle_message(self, message, ctx):
        return {"via": ctx.name, "reply": ctx.request(self.target, message, timeout=2.0)}
