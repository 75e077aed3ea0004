"""Messages between nodes: alysd's host link against raw pyzmq over loopback
TCP, in one run.

alysd side: two daemons, ``a`` and ``b``, each with a host link
(``alysd.host_link:HostLink``) on loopback TCP and the same network key. On
``a`` a ``RemoteBlaster`` sends N ``Remote(node="b", to="sink",
message=payload(i))`` to its link; on ``b`` the link hands each to a
``Sink``. What the figure includes, per message: the link's handler on
``a`` (decode, outbox write to LMDB with its sync, hand-off to the network
thread), sealing (HMAC-SHA256), TCP, opening on ``b`` (MAC, window, replay
cache), the hand-in to ``b``'s link actor, its ``ctx.send`` to the sink,
and the acknowledgement back to ``a`` (whose outbox entry is then removed).
The rate is taken at the receiving sink: messages after the first / (last
stamp - first stamp), as the raw peer does.

Raw side: ``bench.peers.RawOneWay(tcp=True)``: one DEALER -> ROUTER over
loopback TCP between two fresh processes, one encoded ``payload(i)`` per
frame, no sealing, no durability, no acknowledgement. With ``--curve`` both
sides are CURVE (the link's own keys and peers' public keys; the raw pair a
CURVE server and client).

Rounds are interleaved (raw, alysd, ...); the report gives medians and
their ratio. The link forwards one message at a time and writes each to
disk before taking the next: it is built for the node's control traffic,
and the ratio says what its guarantees cost against a bare socket.

At the end, ``--flood`` frames sealed with another network's key are sent
to ``b`` from one raw socket: the rate at which ``b``'s link refuses them
(counted, MAC checked before anything else is decoded), and whether it
stayed healthy.

    python -m bench.link [--rounds 4] [--n 5000] [--curve] [--flood 20000]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import tempfile
import time

from alysd.curve import generate_keypair
from alysd.seal import generate_network_key
from alysd.testing import run_daemon, wait_until
from bench import common, peers


def node_toml(name: str, actors: list[tuple[str, str, dict | None]], key: str, *,
              peers_toml: str = "[]", curve: str = "") -> str:
    text = common.tree_toml([("link", "alysd.host_link:HostLink", None), *actors])
    text = text.replace('class = "alysd.host_link:HostLink"',
                        'class = "alysd.host_link:HostLink"\nuses = ["network"]')
    return text + (f'\n[network]\nnode_name = "{name}"\nlisten = "127.0.0.1:0"\n'
                   f'network_key_file = "{key}"\npeers = {peers_toml}\n{curve}')


def link_status(d) -> dict:
    return d.request("link", {"type": "link_status"})


def flood(b, port: int, n: int, curve: tuple[str, str] | None) -> float:
    """Send ``n`` frames sealed with another network's key to ``b``'s link as
    fast as one socket goes; frames/s refused (the time until ``b`` counted
    them all). With ``curve`` (a client key file ``b`` admits, ``b``'s public
    key) the flood comes over CURVE: a peer admitted by its key but without
    the network's key (without an admitted key it could not even connect)."""
    import zmq

    from alysd.curve import load_secret
    from alysd.seal import LinkHeader, LinkKind, new_message_id, seal

    before = link_status(b)["refused"].get("bad_mac", 0)
    zctx = zmq.Context()
    sock = zctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SNDTIMEO, 30_000)    # a flood that cannot get through fails, not hangs
    if curve is not None:
        sock.curve_publickey, sock.curve_secretkey = load_secret(curve[0])
        sock.curve_serverkey = curve[1].encode()
    sock.connect(f"tcp://127.0.0.1:{port}")
    frames = [seal(b"x" * 32, LinkHeader(kind=LinkKind.DATA, origin="mallory",
                                         message_id=new_message_id(), sealed_at=time.time_ns(),
                                         to_actor="sink"), b"\xc0") for _ in range(1000)]
    try:
        t0 = time.perf_counter()
        for i in range(n):
            sock.send(frames[i % 1000])
        wait_until(lambda: link_status(b)["refused"].get("bad_mac", 0) - before >= n,
                   timeout=60 + n / 1000, interval=0.02, message="the flood refused")
        return n / (time.perf_counter() - t0)
    finally:
        sock.close()
        zctx.term()


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.link", description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=4, help="interleaved rounds per side")
    ap.add_argument("--n", type=int, default=5000, help="messages per round")
    ap.add_argument("--curve", action="store_true", help="CURVE on both sides")
    ap.add_argument("--flood", type=int, default=20000,
                    help="frames sealed with another key sent to b at the end (0: none)")
    args = ap.parse_args()
    common.check_payload()
    mode = "CURVE" if args.curve else "plain"
    mach = common.header(f"host link one-way throughput between two nodes vs raw pyzmq TCP "
                         f"({mode}, loopback)")
    t_start = time.perf_counter()
    raw_peer = peers.RawOneWay(tcp=True, curve=args.curve)
    raw, alysd, send_rates = [], [], []
    with contextlib.ExitStack() as stack:
        tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-link-", dir="/tmp"))
        key = os.path.join(tmp, "network.key")
        generate_network_key(key)
        curve_a = curve_b = ""
        public_b = ""
        if args.curve:
            public_a = generate_keypair(os.path.join(tmp, "a.curve"))
            public_b = generate_keypair(os.path.join(tmp, "b.curve"))
            curve_a = f'curve_secret_file = "{tmp}/a.curve"\n'
            curve_b = (f'curve_secret_file = "{tmp}/b.curve"\n'
                       f'curve_clients = ["{public_a}"]\n')
        b = stack.enter_context(run_daemon(node_toml("b", [("sink", "bench.actors:Sink", None)],
                                                     key, curve=curve_b)))
        port = link_status(b)["listen"][1]
        peer = f'{{ name = "b", address = "127.0.0.1:{port}"'
        peer += f', public_key = "{public_b}" }}' if public_b else " }"
        a = stack.enter_context(run_daemon(node_toml(
            "a", [("blaster", "bench.actors:RemoteBlaster", {"node": "b", "target": "sink"})],
            key, peers_toml=f"[{peer}]", curve=curve_a)))

        def one_round(n: int) -> tuple[float, float]:
            acknowledged = link_status(a)["acknowledged"]
            sent = a.request("blaster", {"n": n}, timeout=60 + n / 500)
            wait_until(lambda: link_status(a)["acknowledged"] - acknowledged >= n,
                       timeout=60 + n / 200, interval=0.05, message=f"{n} acknowledged")
            wait_until(lambda: b.request("sink", {"op": "peek"}) >= n, timeout=30,
                       interval=0.02, message=f"{n} at the sink")
            res = b.request("sink", {"op": "count"})
            if res["count"] != n:
                raise SystemExit(f"the sink counted {res['count']} of {n} messages")
            return ((res["count"] - 1) * 1e9 / (res["last_ns"] - res["first_ns"]),
                    n * 1e9 / sent["send_ns"])

        one_round(200)   # connect and warm up
        print(f"   {args.rounds} rounds x {args.n:,} messages per side, interleaved; "
              f"msgs/s at the receiver")
        print(f"   {'round':>5}  {'raw':>10}  {'link':>10}  {'ratio':>6}")
        for r in range(args.rounds):
            raw.append(raw_peer.run(args.n))
            rate, send_rate = one_round(args.n)
            alysd.append(rate)
            send_rates.append(send_rate)
            print(f"   {r:>5}  {raw[-1]:>10,.0f}  {rate:>10,.0f}  {rate / raw[-1]:>6.3f}",
                  flush=True)
        flood_rate = flood(b, port, args.flood,
                           (os.path.join(tmp, "a.curve"), public_b) if args.curve else None
                           ) if args.flood else None
        status_a, status_b = link_status(a), link_status(b)
        status_b["health"] = b.status()["link"]["health"]

    raw_m, alysd_m = common.median(raw), common.median(alysd)
    ratio = alysd_m / raw_m
    print(f"   raw pyzmq TCP  median {raw_m:>10,.0f} msgs/s")
    print(f"   host link      median {alysd_m:>10,.0f} msgs/s   (sender side: "
          f"{common.median(send_rates):,.0f} msgs/s of ctx.send to the link)")
    print(f"   ratio link/raw {ratio:.3f}")
    print(f"   retransmitted {status_a['retransmitted']}, refused on b {status_b['refused']}")
    if flood_rate is not None:
        print(f"   a flood of {args.flood:,} frames under another key: refused at "
              f"{flood_rate:,.0f} frames/s ({flood_rate / raw_m:.3f} of raw's receive rate); "
              f"b's link stayed {status_b['health']}")
    print(f"   [{time.perf_counter() - t_start:.1f} s wall]")
    common.result({
        "bench": "link", "mode": mode, "rounds": args.rounds, "n": args.n,
        "raw_msgs_per_s": round(raw_m), "link_msgs_per_s": round(alysd_m),
        "link_send_msgs_per_s": round(common.median(send_rates)), "ratio": round(ratio, 4),
        "retransmitted": status_a["retransmitted"], "refused": status_b["refused"],
        "flood_refused_per_s": round(flood_rate) if flood_rate else None,
        "raw_rounds": [round(x) for x in raw], "link_rounds": [round(x) for x in alysd],
        "machine": mach,
    })


if __name__ == "__main__":
    main()
