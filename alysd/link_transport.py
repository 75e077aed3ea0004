"""The host link's network side (``alysd.host_link``): a thread of the link's
process that owns every TCP socket, so the actor's loop never waits on the
network. It listens for other nodes and keeps a connection to each peer;
seals what it sends and opens what it receives (``alysd.seal``); sends again
what is not acknowledged, after a timeout learnt from each peer
(``RetransmitTimer``), and expires what waited ``delivery_timeout``; hands
what arrives to the actor through the actor's own inbox, never blocking on it.
"""

from __future__ import annotations

import collections
import heapq
import itertools
import logging
import threading
import time
from typing import Any

import msgspec
import zmq

from alysd import curve, seal, zmq_bus
from alysd.config_checks import address_text
from alysd.errors import ProtocolError
from alysd.link_outbox import LinkOutbox, OutRecord, record_decoder
from alysd.log_throttle import LogThrottle
from alysd.node_sections import LinkPeer
from alysd.seal import LinkHeader, LinkKind, SealReason, SealRefused

log = logging.getLogger("alysd.host_link")
_get = zmq_bus.sockopt_get
_POLLOUT = int(zmq.POLLOUT)

MIN_RTO = 0.25              # s: a retransmission never comes sooner...
MAX_RTO = 4.0               # ...nor, backing off, later than this after the previous send
INITIAL_RTO = 1.0           # before the first acknowledgement was timed
UNSENT_RETRY = 0.01         # s between tries to hand the actor what its inbox had no room for
REMOVE_EVERY = 0.05         # s: acknowledged messages leave the outbox together


class Inbound(msgspec.Struct, array_like=True, frozen=True):
    """A message another node sent, as the transport hands it to the actor."""

    ident: bytes                 # the connection it came on (its acknowledgement goes back there)
    origin: str
    from_actor: str
    to_actor: str
    message_id: bytes
    payload: msgspec.Raw


class InboundBatch(msgspec.Struct, tag="$link_inbound", kw_only=True, frozen=True):
    """From the transport to the actor: what other nodes sent, in arrival order
    (one hand-in per pass of the transport's loop, not one per message)."""

    messages: list[Inbound]


class Expired(msgspec.Struct, tag="$link_expired", kw_only=True, frozen=True):
    """From the transport to the actor: a message no acknowledgement came for."""

    record: bytes
    detail: str


class _Pending(msgspec.Struct):
    record: OutRecord
    accepted: float     # monotonic
    due: float          # monotonic time of the next (re)transmission, or of expiry
    expires: float
    sent_at: float = 0.0
    delay: float = 0.0  # until the next try; the peer's RTO at first, then doubling
    sends: int = 0


class RetransmitTimer:
    """How long to wait for an acknowledgement before sending again, learnt
    from the acknowledgements of one peer (TCP's estimator, RFC 6298: smoothed
    round trip plus four times its variation, between ``MIN_RTO`` and
    ``MAX_RTO``). Only messages sent once are timed (Karn), so a
    retransmission never makes the estimate look shorter than it is."""

    def __init__(self) -> None:
        self.srtt: float | None = None
        self.rttvar = 0.0
        self.rto = INITIAL_RTO

    def sample(self, rtt: float) -> None:
        if self.srtt is None:
            self.srtt, self.rttvar = rtt, rtt / 2
        else:
            self.rttvar = 0.75 * self.rttvar + 0.25 * abs(self.srtt - rtt)
            self.srtt = 0.875 * self.srtt + 0.125 * rtt
        self.rto = min(MAX_RTO, max(MIN_RTO, self.srtt + 4 * self.rttvar))


class LinkSettings(msgspec.Struct, frozen=True, kw_only=True):
    """What the link reads of ``[network]`` (as ``ctx.settings["network"]``)."""

    node_name: str
    listen: tuple[str, int]
    network_key_file: str | None
    curve_secret_file: str | None
    curve_clients: tuple[str, ...]
    envelope_window: float
    replay_cache: int
    peers: tuple[LinkPeer, ...]


class Transport(threading.Thread):
    """The link's network thread: listens for other nodes, keeps a connection
    to each peer, seals, opens, retransmits and expires. Every socket it uses
    is created and closed on this thread."""

    def __init__(self, *, name: str, settings: LinkSettings, key: bytes, zctx: zmq.Context,
                 inbox_path: str, control: str, outbox: LinkOutbox, max_bytes: int,
                 delivery_timeout: float):
        super().__init__(name="host-link", daemon=True)
        self.actor_name = name
        self.settings = settings
        self.key = key
        self.zctx = zctx
        self.inbox_path = inbox_path
        self.control_endpoint = control
        self.outbox = outbox
        self.max_bytes = max_bytes
        self.delivery_timeout = delivery_timeout
        self.peers = {peer.name: peer for peer in settings.peers}
        self.names_by_key = {peer.public_key: peer.name for peer in settings.peers
                             if peer.public_key}
        self.curve = settings.curve_secret_file is not None
        self.opener = seal.Opener(key, window=settings.envelope_window,
                                  capacity=settings.replay_cache, max_bytes=max_bytes + 4096)
        self.pending: dict[str, dict[bytes, _Pending]] = {name: {} for name in self.peers}
        self.timers = {name: RetransmitTimer() for name in self.peers}
        self.counts: dict[str, int] = dict.fromkeys(
            ("sent", "retransmitted", "received", "duplicates", "deferred", "acknowledged",
             "expired"), 0)
        self.refused: dict[str, int] = {}
        self.port: int | None = None
        self.ready = threading.Event()
        self.failure: str | None = None
        self._acks: dict[bytes, list[bytes]] = {}
        self._removals: dict[str, list[bytes]] = {}   # node -> acknowledged ids, to remove
        self._removals_due = 0.0
        # (origin, id) handed to the actor and not yet sent on by it: a
        # retransmission of one of these is not acknowledged before it is.
        self._in_hand: set[tuple[str, bytes]] = set()
        self._unsent: collections.deque = collections.deque()   # hand-ins the inbox had no room for
        self._due: list[tuple[float, int, str, bytes]] = []   # heap: (when, seq, node, id)
        self._ack_ids = seal.MessageIds()
        self._seq = itertools.count()
        self._ids = zmq_bus.MessageIds()
        self._throttle = LogThrottle(burst=5, per=60.0)

    # --- the thread ------------------------------------------------------------------

    def run(self) -> None:
        sockets: list[zmq.Socket] = []
        server = None
        try:
            control = self.zctx.socket(zmq.PAIR)
            sockets.append(control)
            control.connect(self.control_endpoint)
            hand_in = zmq_bus.connect_dealer(self.zctx, self.inbox_path, self.actor_name)
            sockets.append(hand_in)
            settings = self.settings
            host, port = settings.listen
            server = curve.bind_tcp_router(
                self.zctx, host, port, secret_file=settings.curve_secret_file,
                allowed=[*settings.curve_clients,
                         *(peer.public_key for peer in settings.peers if peer.public_key)],
                max_message_bytes=self.max_bytes)
            self.port = server.port
            dealers = {}
            for peer in self.peers.values():
                phost, pport = peer.address
                sock = curve.connect_tcp_dealer(self.zctx, phost, pport, settings.node_name,
                                                server_key=peer.public_key,
                                                secret_file=settings.curve_secret_file)
                # Queue only to a connection that is up (and past its CURVE
                # handshake): while a peer is away, retransmissions try again
                # rather than pile up copies to flood it when it returns.
                sock.setsockopt(zmq.IMMEDIATE, 1)
                sockets.append(sock)
                dealers[peer.name] = sock
        except Exception as exc:
            self.failure = f"{type(exc).__name__}: {exc}"
            self.ready.set()
            self._close(sockets, server)
            return
        self.control, self.hand_in, self.server, self.dealers = control, hand_in, server, dealers
        self._adopt(self.outbox.records())
        self.ready.set()
        try:
            self._serve()
        except Exception as exc:   # the actor's health turns unhealthy; the supervisor restarts it
            self.failure = f"{type(exc).__name__}: {exc}"
            log.exception("the host link's transport failed")
        finally:
            self._close(sockets, server)

    @staticmethod
    def _close(sockets: list[zmq.Socket], server: curve.CurveServer | None) -> None:
        # linger 0: what is pending is in the outbox and is sent again by the next
        # incarnation; what came in unacknowledged is retransmitted by its sender.
        for sock in sockets:
            sock.close(linger=0)
        if server is not None:
            server.close()

    def _serve(self) -> None:
        poller = zmq.Poller()
        poller.register(self.control, zmq.POLLIN)
        poller.register(self.hand_in, zmq.POLLIN)
        poller.register(self.server.sock, zmq.POLLIN)
        by_socket = {sock: node for node, sock in self.dealers.items()}
        for sock in by_socket:
            poller.register(sock, zmq.POLLIN)
        while True:
            timeout = self._next_due() - time.monotonic()
            events = dict(poller.poll(max(0, min(1000, int(timeout * 1000) + 1))))
            if self.control in events and not self._commands():
                self._flush_removals()
                return
            if self.server.sock in events:
                self._receive_data()
            for sock, node in by_socket.items():
                if sock in events:
                    self._receive_acks(sock, node)
            if self.hand_in in events:
                _drain(self.hand_in)   # receipts from the actor's own inbox
            self._send_acks()
            self._hand_in_unsent()
            now = time.monotonic()
            self._tend(now)
            self._flush_removals(now)

    # --- from the actor ---------------------------------------------------------------

    def _commands(self) -> bool:
        """Handle what the actor sent; False on stop."""
        while True:
            try:
                frames = self.control.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return True
            verb = frames[0]
            if verb == b"send":
                self._adopt([record_decoder.decode(frames[1])])
            elif verb == b"ack":      # [ident, origin, id]...: sent on by the actor
                for i in range(1, len(frames) - 2, 3):
                    ident, origin, message_id = frames[i:i + 3]
                    self._in_hand.discard((origin.decode(), message_id))
                    self._acks.setdefault(ident, []).append(message_id)
            elif verb == b"stop":
                return False

    def _adopt(self, records: list[OutRecord]) -> None:
        now, wall = time.monotonic(), time.time()
        for record in records:
            boxes = self.pending.get(record.node)
            if boxes is None:
                # A peer removed from the configuration since it was accepted.
                self._remove(record.node, [record.message_id])
                self._expire(record, f"node {record.node!r} is no longer a peer")
                continue
            accepted = now - max(0.0, wall - record.accepted_at)
            item = _Pending(record, accepted, now, accepted + self.delivery_timeout)
            boxes[record.message_id] = item
            self._schedule(record.node, item)

    # --- to other nodes -----------------------------------------------------------------

    def _seal_data(self, record: OutRecord) -> bytes:
        header = LinkHeader(kind=LinkKind.DATA, origin=self.settings.node_name,
                            message_id=record.message_id, sealed_at=time.time_ns(),
                            from_actor=record.from_actor, to_actor=record.to_actor,
                            sensitive=record.sensitive)
        return seal.seal(self.key, header, record.payload)

    def _schedule(self, node: str, item: _Pending) -> None:
        heapq.heappush(self._due, (item.due, next(self._seq), node, item.record.message_id))

    def _next_due(self) -> float:
        now = time.monotonic()
        due = min(self._due[0][0], now + 1.0) if self._due else now + 1.0
        if self._unsent:
            due = min(due, now + UNSENT_RETRY)
        if self._removals:
            due = min(due, self._removals_due)
        return due

    def _tend(self, now: float) -> None:
        """Send what is due (first sends and retransmissions) and expire what
        waited ``delivery_timeout``; the heap holds one live entry per pending
        message (entries of acknowledged messages are skipped)."""
        due, expired = self._due, {}
        while due and due[0][0] <= now:
            when, _, node, message_id = heapq.heappop(due)
            item = self.pending[node].get(message_id)
            if item is None or item.due != when:
                continue
            if now >= item.expires:
                del self.pending[node][message_id]
                expired.setdefault(node, []).append(item.record)
                continue
            item.delay = min(MAX_RTO, 2 * item.delay) if item.delay else self.timers[node].rto
            sock = self.dealers[node]
            # No connection to the peer (yet), or its queue is full: try again
            # later, without sealing for nothing.
            if _get(sock, zmq_bus.EVENTS) & _POLLOUT:
                sock.send(self._seal_data(item.record), zmq.NOBLOCK)
                self.counts["retransmitted" if item.sends else "sent"] += 1
                item.sends += 1
                item.sent_at = now
            item.due = min(now + item.delay, item.expires)
            self._schedule(node, item)
        for node, records in expired.items():
            self._remove(node, [record.message_id for record in records])
            for record in records:
                self._expire(record, f"node {node!r} did not acknowledge it within "
                             f"{self.delivery_timeout:g}s")

    def _remove(self, node: str, message_ids: list[bytes]) -> None:
        """Take these out of the outbox, soon: removals are written together at
        most every ``REMOVE_EVERY`` seconds (one sync for all), as losing one to
        a crash only sends a message again, which its receiver drops."""
        if not self._removals:
            self._removals_due = time.monotonic() + REMOVE_EVERY
        self._removals.setdefault(node, []).extend(message_ids)

    def _flush_removals(self, now: float | None = None) -> None:
        if self._removals and (now is None or now >= self._removals_due):
            self.outbox.remove(self._removals)
            self._removals = {}

    def _expire(self, record: OutRecord, detail: str) -> None:
        self.counts["expired"] += 1
        self._unsent.append(Expired(record=msgspec.msgpack.encode(record), detail=detail))
        self._hand_in_unsent()

    def _hand_in_unsent(self) -> None:
        while self._unsent and self._hand_in(self._unsent[0]):
            self._unsent.popleft()

    def _hand_in(self, message: Any) -> bool:
        """Give the actor ``message`` through its own inbox; False when the inbox
        has no room (this thread never blocks on it)."""
        frame = zmq_bus.encode_envelope(zmq_bus.Kind.TELL, self._ids.next(), message,
                                        sender=self.actor_name, target=self.actor_name)
        try:
            self.hand_in.send(frame, zmq.NOBLOCK)
        except zmq.Again:
            return False
        return True

    # --- from other nodes -------------------------------------------------------------

    def _open(self, frame: bytes, expected: LinkKind) -> seal.Opened | None:
        try:
            opened = self.opener.open(frame)
        except SealRefused as exc:
            self._refuse(exc.reason, str(exc))
            return None
        if opened.header.kind is not expected:
            self._refuse(SealReason.MALFORMED, f"a {opened.header.kind.name} frame where "
                         f"{expected.name} frames come")
            return None
        return opened

    def _refuse(self, reason: SealReason, detail: str) -> None:
        self.refused[reason.value] = self.refused.get(reason.value, 0) + 1
        left_out = self._throttle.admit(reason.value)
        if left_out is not None:
            more = f" ({left_out} more since the last line)" if left_out else ""
            log.warning("%s: refused a frame from another host (%s): %s%s",
                        self.actor_name, reason.value, detail, more)

    def _receive_data(self) -> None:
        sock, taken = self.server.sock, []
        for _ in range(256):
            try:
                frames = sock.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                break
            if len(frames) != 2:
                self._refuse(SealReason.MALFORMED, f"expected 2 frames, got {len(frames)}")
                continue
            ident, frame = frames[0].bytes, frames[1]
            opened = self._open(frame.bytes, LinkKind.DATA)
            if opened is None:
                continue
            header = opened.header
            # Over CURVE the connection says which key it was opened with: a
            # peer's key speaks for that peer only.
            speaks_for = self.names_by_key.get(frame.get("User-Id")) if self.curve else None
            if speaks_for is not None and header.origin != speaks_for:
                self._refuse(SealReason.FORGED, f"node {speaks_for!r} sent a message "
                             f"claiming to come from {header.origin!r}")
                continue
            key = (header.origin, header.message_id)
            if opened.duplicate:
                # Taken before: acknowledged again once sent on (the sender
                # missed the acknowledgement, or it is still to come).
                self.counts["duplicates"] += 1
                if key not in self._in_hand:
                    self._acks.setdefault(ident, []).append(header.message_id)
                continue
            try:
                # What the actor's inbox could not take (a payload nested past
                # the decoder's depth, say) is refused here, unacknowledged:
                # it stays the sending node's to dead-letter.
                zmq_bus.decode_any(opened.payload)
            except ProtocolError as exc:
                self.opener.forget(*key)
                self._refuse(SealReason.MALFORMED, f"message {header.message_id.hex()} from "
                             f"{header.origin}: {exc}")
                continue
            taken.append(Inbound(ident, header.origin, header.from_actor, header.to_actor,
                                 header.message_id, msgspec.Raw(opened.payload)))
            self._in_hand.add(key)
        if not taken:
            return
        if self._hand_in(InboundBatch(messages=taken)):
            self.counts["received"] += len(taken)
            return
        # The actor is behind: not acknowledged, so the senders send them again
        # later, and then they are opened as new.
        for message in taken:
            key = (message.origin, message.message_id)
            self._in_hand.discard(key)
            self.opener.forget(*key)
        self.counts["deferred"] += len(taken)

    def _receive_acks(self, sock: zmq.Socket, node: str) -> None:
        boxes, timer, taken, now = self.pending[node], self.timers[node], [], time.monotonic()
        for _ in range(256):
            try:
                frame = sock.recv(zmq.NOBLOCK)
            except zmq.Again:
                break
            opened = self._open(frame, LinkKind.ACK)
            if opened is None:
                continue
            if opened.header.origin != node:
                self._refuse(SealReason.FORGED, f"the connection to node {node!r} carried "
                             f"an acknowledgement from {opened.header.origin!r}")
                continue
            for message_id in opened.header.acks:
                item = boxes.pop(message_id, None)
                if item is not None:
                    taken.append(message_id)
                    if item.sends == 1:
                        timer.sample(now - item.sent_at)
        if taken:
            self._remove(node, taken)
            self.counts["acknowledged"] += len(taken)

    def _send_acks(self) -> None:
        for ident, message_ids in self._acks.items():
            header = LinkHeader(kind=LinkKind.ACK, origin=self.settings.node_name,
                                message_id=self._ack_ids.next(), sealed_at=time.time_ns(),
                                acks=tuple(message_ids))
            try:
                self.server.sock.send_multipart([ident, seal.seal(self.key, header)],
                                                zmq.NOBLOCK)
            except zmq.Again:
                pass   # the sender retransmits and is acknowledged again
        self._acks.clear()

    # --- seen from the actor's thread ---------------------------------------------------

    def status(self) -> dict:
        now = time.monotonic()
        peers = {}
        for name, peer in self.peers.items():
            boxes = list(self.pending[name].values())
            oldest = max((now - item.accepted for item in boxes), default=0.0)
            peers[name] = {"address": address_text(peer.address),
                           "curve": peer.public_key is not None, "pending": len(boxes),
                           "oldest_pending_s": round(oldest, 3)}
        return {"node": self.settings.node_name, "listen": [self.settings.listen[0], self.port],
                "peers": peers, **self.counts, "refused": dict(self.refused),
                "replay_cache": self.opener.remembered}


def _drain(sock: zmq.Socket) -> None:
    while True:
        try:
            sock.recv_multipart(zmq.NOBLOCK)
        except zmq.Again:
            return
