"""The host link: messages between the actors of different alysd nodes.

A node that talks to other nodes runs one actor of class
``alysd.host_link:HostLink`` that ``uses = ["network"]``. A local actor sends
it ``Remote(node="bob", to="chain", message=...)``; the link on node ``bob``
hands ``message`` to its actor ``chain``, whose ``ctx.message`` then shows the
link as ``from_actor`` and ``"sender@alice"`` as ``metadata.origin``.

::

    node alice                                            node bob
    actor ─ctx.send(Remote)→ HostLink ──Sealed DATA──▶ HostLink ─ctx.send→ chain
                                      ◀──Sealed ACK───
                             (TCP; CURVE off loopback)

Guarantees:

* **Sealed.** Every frame, data and acknowledgement, is sealed with the
  network's key (``alysd.seal``: HMAC-SHA256 over header and payload, a seal
  time within ``network.envelope_window``, a replay cache). A frame that fails
  any check is refused, logged (rate-limited) and counted by reason in the
  link's status; nothing an outsider wrote is decoded past its MAC.
* **Encrypted off loopback.** The link listens with ``bind_tcp_router`` and
  connects with ``connect_tcp_dealer`` (``alysd.curve``): an address other
  than loopback is CURVE or nothing. A message sent with ``sensitive=True``
  goes only to a peer reached over CURVE; to any other it is refused and
  dead-lettered ``denied``. (CurveZMQ is the encryption: no second crypto
  library is involved.)
* **At least once, across hosts.** A ``Remote`` is written to the link's
  outbox (LMDB, in the state dir) before the link's handler returns, so it
  survives the link, alysd and the host restarting. It is sent, and sent
  again (re-sealed, with backoff) until the peer acknowledges it; the peer
  acknowledges once it handed the message to its local actor (whose own
  delivery is at-least-once from there). A message not acknowledged within
  ``system.delivery_timeout`` is dead-lettered ``timeout``. The receiving
  link delivers a retransmission it already took only once while its replay
  cache remembers it (a restart forgets: handlers stay idempotent).
* **Only what it is allowed.** What comes in is sent on by the link like any
  message of its own: its ``permissions`` (``send_to``, ``operations``) say
  which local actors other nodes may reach.

The network side runs on a thread of the link's process (``Transport``, in
``alysd.link_transport``): it owns every TCP socket, so the actor's loop
never waits on the network; the outbox is ``alysd.link_outbox``. It
hands what arrives to the actor's own inbox, as messages from the link to
itself, and the actor passes acknowledgements back over an inproc pair. One
message at a time is forwarded; the link is not a fast path for bulk data.

The link is part of the runtime, not an actor written against the public API
alone: it uses its own process's ZeroMQ context, courier (to stamp
``origin``, which ``ctx.send`` does not offer) and dead-letter sink.
"""

from __future__ import annotations

import os
import time
from typing import Any

import msgspec
import zmq

from alysd import seal, zmq_bus
from alysd.actor import Actor, Degraded, Health, Healthy, Unhealthy
from alysd.dead_letters import Reason
from alysd.errors import ActorConfigError, PermissionDenied, RemoteError, UnknownActor
from alysd.link_outbox import LinkOutbox, OutRecord, record_decoder
from alysd.link_transport import Expired, Inbound, InboundBatch, LinkSettings, Transport

UNREACHABLE_AFTER = 10.0    # s a message may wait for its acknowledgement before health degrades
COMMIT_EVERY = 256          # records written to the outbox in one transaction at most


class Remote(msgspec.Struct, tag="remote", kw_only=True, frozen=True):
    """Send ``message`` to actor ``to`` of node ``node`` (one way). With
    ``sensitive``, only over a CURVE connection."""

    node: str
    to: str
    message: Any
    sensitive: bool = False


class LinkStatus(msgspec.Struct, tag="link_status", frozen=True):
    """A request for the link's status: where it listens, its peers and what
    is pending to each, and its counters (``refused`` by reason)."""


class _RemoteOut(msgspec.Struct, tag="remote", kw_only=True, frozen=True):
    # ``Remote`` as the link reads it: the message stays encoded.
    node: str
    to: str
    message: msgspec.Raw
    sensitive: bool = False


class HostLink(Actor):
    """The actor that carries messages to and from other nodes (see the module)."""

    message_type = _RemoteOut | LinkStatus | InboundBatch | Expired

    def started(self, ctx) -> None:
        try:
            self.settings = _link_settings(ctx)
            key = seal.load_network_key(self.settings.network_key_file)
        except seal.NetworkKeyError as exc:
            raise ActorConfigError(str(exc)) from None
        process = ctx._p
        self.ids = seal.MessageIds()
        self.peers = {peer.name: peer for peer in self.settings.peers}
        self.outbox = LinkOutbox(os.path.join(ctx.state_dir, f"link-outbox-{ctx.name}"))
        self.control = process.zctx.socket(zmq.PAIR)
        self.control.setsockopt(zmq.LINGER, 0)
        endpoint = f"inproc://alysd-host-link-{id(self)}"
        self.control.bind(endpoint)
        self.transport = Transport(
            name=ctx.name, settings=self.settings, key=key, zctx=process.zctx,
            inbox_path=process.rundir.inbox(ctx.name), control=endpoint, outbox=self.outbox,
            max_bytes=process.max_bytes, delivery_timeout=process.boot.delivery_timeout)
        self.transport.start()
        self.transport.ready.wait()
        if self.transport.failure is not None:
            raise RuntimeError(f"the host link cannot open its sockets: "
                               f"{self.transport.failure}")
        ctx.log.info("host link %s listens on %s:%d; peers: %s", self.settings.node_name,
                     self.settings.listen[0], self.transport.port,
                     ", ".join(self.peers) or "none")

    def commit(self, ctx) -> None:
        self.outbox.commit()

    def stopped(self, ctx) -> None:
        self.outbox.commit()
        self.control.send(b"stop")
        self.transport.join(5.0)
        self.control.close()
        self.outbox.close()

    def health_check(self) -> Health:
        transport = self.transport
        if transport.failure is not None or not transport.is_alive():
            return Unhealthy(f"the transport stopped: {transport.failure or 'no reason'}")
        late = {name: info for name, info in transport.status()["peers"].items()
                if info["oldest_pending_s"] > UNREACHABLE_AFTER}
        if late:
            return Degraded("; ".join(f"node {name}: {info['pending']} messages unacknowledged "
                                      f"for {info['oldest_pending_s']:.0f}s"
                                      for name, info in late.items()))
        return Healthy()

    def handle_message(self, message, ctx):
        if isinstance(message, _RemoteOut):
            return self._send(message, ctx)
        if isinstance(message, (InboundBatch, Expired)) and (
                ctx.message.metadata.from_actor != ctx.name):
            # Only the link's own transport hands these in: another actor of
            # this node cannot pass itself off as a remote sender.
            raise PermissionDenied(f"{ctx.message.metadata.from_actor} may not hand the link "
                                   "messages from other nodes", actor=ctx.name)
        if isinstance(message, InboundBatch):
            acks = [b"ack"]
            for one in message.messages:
                self._deliver(one, ctx)
                acks += (one.ident, one.origin.encode(), one.message_id)
            self.control.send_multipart(acks)
            return None
        if isinstance(message, Expired):
            record = record_decoder.decode(message.record)
            return self._refused_remote(ctx, Reason.TIMEOUT, record, message.detail)
        return self.transport.status()

    def _send(self, message: _RemoteOut, ctx) -> None:
        record = OutRecord(message.node, self.ids.next(), ctx.message.metadata.from_actor,
                           message.to,
                           bytes(message.message), message.sensitive, time.time())
        peer = self.peers.get(message.node)
        if peer is None:
            self._refused_remote(ctx, Reason.UNKNOWN_ACTOR, record,
                                 f"no peer node {message.node!r} in network.peers")
            raise UnknownActor(f"no peer node {message.node!r}", actor=message.node)
        if message.sensitive and peer.public_key is None:
            self._refused_remote(ctx, Reason.DENIED, record, f"a sensitive message to node "
                                 f"{message.node!r}, which is not reached over CURVE")
            raise PermissionDenied(f"a sensitive message goes only over CURVE; node "
                                   f"{message.node!r} has no public_key", actor=message.node)
        self.outbox.add(record)
        # Durable before acknowledged: a one-way message's sender is receipted
        # after commit() (in batches); a request is answered right away.
        if ctx.message.kind == zmq_bus.Kind.ASK or self.outbox.uncommitted >= COMMIT_EVERY:
            self.outbox.commit()
        self.control.send_multipart([b"send", msgspec.msgpack.encode(record)])

    def _deliver(self, message: Inbound, ctx) -> None:
        """Send on what another node sent; it is acknowledged after this: once
        sent on (at least once from here), or refused here for good
        (dead-lettered on this node; sending it again could not help)."""
        origin = f"{message.from_actor}@{message.origin}"
        if message.to_actor == ctx.name:
            _dead_letter(ctx, Reason.UNKNOWN_ACTOR, ctx.name, message.payload,
                         f"from {origin}: the host link takes no messages from other nodes "
                         "for itself", origin=origin)
        else:
            try:
                ctx._p.courier.tell(message.to_actor, zmq_bus.Kind.TELL,
                                    zmq_bus.decode_any(message.payload), origin=origin)
            except RemoteError as exc:
                # UnknownActor, PermissionDenied, MailboxFull, MessageTooLarge: the
                # courier has dead-lettered it here (to be replayed from this
                # node's queue), as for a local sender.
                ctx.log.warning("a message from %s for %s was refused: %s", origin,
                                message.to_actor, exc)

    @staticmethod
    def _refused_remote(ctx, reason: Reason, record: OutRecord, detail: str) -> None:
        """Dead-letter a ``Remote`` this link will not send, as it was sent to it."""
        _dead_letter(ctx, reason, record.from_actor,
                     Remote(node=record.node, to=record.to_actor,
                            message=msgspec.Raw(record.payload), sensitive=record.sensitive),
                     detail)


def _dead_letter(ctx, reason: Reason, sender: str, message, detail: str,
                 origin: str | None = None) -> None:
    """Put ``message`` (to this link, from ``sender``) in the dead-letter queue."""
    frame = zmq_bus.encode_envelope(zmq_bus.Kind.TELL, 0, message, sender=sender,
                                    target=ctx.name, origin=origin)
    ctx._p.sink.add(reason, sender=sender, target=ctx.name, message_id=0, frame=frame,
                    detail=detail)


def _link_settings(ctx) -> LinkSettings:
    network = ctx.settings.get("network")
    if network is None:
        raise ActorConfigError('the host link reads [network]: give it uses = ["network"]')
    if network.get("network_key_file") is None:
        raise ActorConfigError("network.network_key_file is not set: messages between nodes are "
                             "sealed with the network's key (alysctl keygen --network-key)")
    return msgspec.convert({key: network[key] for key in LinkSettings.__struct_fields__},
                           LinkSettings)
