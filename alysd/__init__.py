"""alysd: a supervised process-actor runtime.

Every actor runs in its own OS process, forked from a preloaded zygote; actors
talk over ZeroMQ ROUTER/DEALER sockets with msgspec envelopes; a root
supervisor restarts them as an OTP application would.

Public API: ``Actor`` (subclass it), ``Context`` (what handlers receive),
``Health`` with ``Healthy``/``Degraded``/``Unhealthy``, ``Priority``, and the
typed errors in ``alysd.errors``.
"""

from alysd.actor import Actor, Degraded, Health, Healthy, Unhealthy

__version__ = "0.1.0"

__all__ = ["Actor", "Context", "Degraded", "Health", "Healthy", "Priority", "Unhealthy",
           "__version__"]


def __getattr__(name: str):
    # Context and Priority pull in zmq; alysctl and the config checker need not pay for it.
    if name == "Context":
        from alysd.proc_actor import Context
        return Context
    if name == "Priority":
        from alysd.zmq_bus import Priority
        return Priority
    raise AttributeError(f"module 'alysd' has no attribute {name!r}")
