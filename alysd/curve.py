"""ZeroMQ CURVE for the endpoints alysd opens over TCP: key pairs, and the one
way to bind a TCP ROUTER.

Guarantees:

* ``bind_tcp_router`` refuses (``CurveRequired``) a non-loopback address
  without a CURVE key, in every environment: traffic that leaves the host is
  encrypted and authenticated, or it does not happen.
* With CURVE, only clients whose public key is in the allow-list complete the
  handshake; the others are refused by ZeroMQ's own authentication (ZAP,
  pyzmq's authenticator), before any frame of theirs is read. Refusals are
  counted on the ``CurveServer``.
* ``generate_keypair`` writes the secret key readable by its owner only (0600)
  and the public key beside it, and never overwrites a key.

Key files are ZeroMQ's certificate format (``zmq.auth``); a secret key file
holds its public key too.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

from alysd.errors import AlysdError
from alysd.node_sections import is_loopback
from alysd.zmq_bus import OVERSIZE_SLACK

ZAP_DOMAIN = "alysd"


class CurveRequired(AlysdError):
    """A non-loopback TCP address was to be bound without CURVE."""


class KeyFileError(AlysdError):
    """A key file cannot be written or read."""


def generate_keypair(secret_path: str) -> str:
    """Write a new key pair: the secret key at ``secret_path`` (0600) and the
    public key at ``secret_path + ".pub"``. Returns the public key (Z85).
    Raises ``KeyFileError`` when either file exists already."""
    public_path = secret_path + ".pub"
    for path in (secret_path, public_path):
        if os.path.lexists(path):
            raise KeyFileError(f"{path} exists: alysd never overwrites a key")
    directory = os.path.dirname(os.path.abspath(secret_path))
    # zmq.auth writes NAME.key and NAME.key_secret in a directory: a private
    # scratch dir, then moved in place, so the secret is never readable by others.
    with tempfile.TemporaryDirectory(dir=directory) as scratch:
        os.chmod(scratch, 0o700)
        public_file, secret_file = zmq.auth.create_certificates(scratch, "key")
        os.chmod(secret_file, 0o600)
        os.chmod(public_file, 0o644)
        os.link(secret_file, secret_path)    # fails rather than replace a file made meanwhile
        os.link(public_file, public_path)
    public, _ = zmq.auth.load_certificate(public_path)
    return public.decode()


def load_secret(path: str) -> tuple[bytes, bytes]:
    """(public, secret) keys from a secret key file."""
    try:
        public, secret = zmq.auth.load_certificate(path)
    except (OSError, ValueError) as exc:
        raise KeyFileError(f"cannot read the CURVE key {path}: {exc}") from None
    if secret is None:
        raise KeyFileError(f"{path} holds no secret key (a public key file?)")
    return public, secret


@dataclass
class CurveServer:
    """A TCP ROUTER and the authenticator that admits its clients."""

    sock: zmq.Socket
    authenticator: ThreadAuthenticator | None
    refused: list[bytes] = field(default_factory=list)   # public keys turned away

    @property
    def port(self) -> int:
        return int(self.sock.getsockopt_string(zmq.LAST_ENDPOINT).rsplit(":", 1)[1])

    def close(self) -> None:
        self.sock.close(linger=0)
        if self.authenticator is not None:
            self.authenticator.stop()


def bind_tcp_router(ctx: zmq.Context, host: str, port: int, *, secret_file: str | None,
                    allowed: list[str], max_message_bytes: int | None = None) -> CurveServer:
    """A ROUTER bound at tcp://host:port (port 0 picks one): a CURVE server with
    the key in ``secret_file`` admitting the Z85 public keys in ``allowed``, or,
    on a loopback address only, a plain one when ``secret_file`` is None.
    A client that connects again under the same routing id takes its old
    connection over. With ``max_message_bytes``, libzmq disconnects a peer
    sending a frame far over it before buffering it."""
    if secret_file is None:
        if not is_loopback(host):
            raise CurveRequired(f"refusing to bind tcp://{host}:{port} without CURVE: give a "
                                "key (alysctl keygen) for an address other than loopback")
        sock = _router(ctx, max_message_bytes)
        sock.ipv6 = ":" in host
        sock.bind(_endpoint(host, port))
        return CurveServer(sock, None)
    public, secret = load_secret(secret_file)
    server = CurveServer(_router(ctx, max_message_bytes), None)
    admitted = {key.encode() for key in allowed}

    auth = ThreadAuthenticator(ctx)
    auth.start()
    auth.configure_curve_callback(ZAP_DOMAIN, credentials_provider=_AllowList(admitted, server))
    server.authenticator = auth
    sock = server.sock
    sock.curve_server = True
    sock.curve_publickey, sock.curve_secretkey = public, secret
    sock.zap_domain = ZAP_DOMAIN.encode()
    sock.ipv6 = ":" in host
    sock.bind(_endpoint(host, port))
    return server


def connect_tcp_dealer(ctx: zmq.Context, host: str, port: int, identity: str, *,
                       server_key: str | None, secret_file: str | None) -> zmq.Socket:
    """A DEALER with routing id ``identity`` connected to tcp://host:port: a
    CURVE client of the server whose Z85 public key is ``server_key``, using the
    key pair in ``secret_file``; without ``server_key``, a plain connection, to
    a loopback address only (``CurveRequired`` otherwise)."""
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.ROUTING_ID, identity.encode())
    sock.setsockopt(zmq.LINGER, 0)
    sock.ipv6 = ":" in host
    if server_key is None:
        if not is_loopback(host):
            sock.close()
            raise CurveRequired(f"refusing to connect to tcp://{host}:{port} without CURVE: "
                                "give the server's public key")
    else:
        if secret_file is None:
            sock.close()
            raise CurveRequired(f"a CURVE connection to tcp://{host}:{port} needs this node's "
                                "own key (curve_secret_file)")
        public, secret = load_secret(secret_file)
        sock.curve_publickey, sock.curve_secretkey = public, secret
        sock.curve_serverkey = server_key.encode()
    sock.connect(_endpoint(host, port))
    return sock


def _router(ctx: zmq.Context, max_message_bytes: int | None) -> zmq.Socket:
    sock = ctx.socket(zmq.ROUTER)
    sock.setsockopt(zmq.ROUTER_HANDOVER, 1)
    if max_message_bytes is not None:
        sock.setsockopt(zmq.MAXMSGSIZE, max_message_bytes + OVERSIZE_SLACK)
    return sock


@dataclass
class _AllowList:
    """pyzmq's credentials provider: asked with each client's Z85 public key."""

    admitted: set[bytes]
    server: CurveServer

    def callback(self, domain: str, key: bytes) -> bool:
        if key in self.admitted:
            return True
        self.server.refused.append(key)
        return False


def _endpoint(host: str, port: int) -> str:
    return f"tcp://[{host}]:{port}" if ":" in host else f"tcp://{host}:{port}"
