"""The Alys node's configuration sections, and the rules of each environment.

``[chain]``, ``[network]``, ``[bridge]``, ``[storage]``, ``[governance]`` and
``[sync]`` configure the node's actors (an actor lists the sections it reads in
``uses``); ``[logging]`` configures the daemon. Every key has a default fit for
development: the chain values are V1's built-in DEV chain spec (4 s slots,
chain id 121212, 50000 blocks without PoW, 144 Bitcoin confirmations), every
endpoint is on loopback and Bitcoin is regtest.

Choices that are not obvious from the code:

* Keys are checked for their form, not just their type (length, hex digits,
  the compression prefix or flags), because a mistyped key here is found only
  much later, by a chain that does not advance or a peg-in that cannot be
  spent. Whether a key is a point of its curve, and EIP-55 checksums, are left
  to the actors that use the keys, with the cryptography libraries they load:
  the root does not carry curve arithmetic of its own.
* Keys are normalised: BLS keys to "0x" + lowercase hex, Bitcoin keys to
  lowercase hex; EVM addresses are kept as written (their case is a checksum).
* The Bitcoin RPC password is read from a file only; ``bitcoin_rpc_password``
  and credentials inside a URL are refused without showing the value.
* The environment rules judge the built configuration, so they see the values
  after every layer (file, environment variables, --set flags).
"""

from __future__ import annotations

import enum
import ipaddress
import re
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import msgspec

from alysd.config_checks import (REFUSED, Schema, address, address_text, array, boolean,
                                 choice, duration, integer, listen, number_between,
                                 refused_inline, redact, show, size, spelled_as, string, url)
from alysd.errors import ConfigIssue

if TYPE_CHECKING:
    from alysd.config import Config

LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("text", "json")
BITCOIN_NETWORKS = ("regtest", "testnet", "signet", "mainnet")
NODE_SECTIONS = ("chain", "network", "bridge", "storage", "governance", "sync")
"""The sections an actor may list in ``uses`` (and then reads as ``ctx.settings``)."""


class Environment(enum.Enum):
    """Where the node runs; production refuses development conveniences."""

    DEVELOPMENT = "development"
    STAGING = "staging"
    PRODUCTION = "production"


class ChainSpec(msgspec.Struct, frozen=True, kw_only=True):
    """Consensus parameters (V1's chain spec) and the execution engine.

    ``authorities`` are the Aura signers' BLS public keys, ``federation`` the
    federation members' EVM addresses and ``federation_bitcoin_pubkeys`` their
    Bitcoin keys. A validator signs with the key in ``validator_key_file``, or
    with the well-known development keys when ``dev_keys``.
    """

    chain_id: int = 121212
    slot_duration: float = 4.0
    max_blocks_without_pow: int = 50000
    required_btc_confirmations: int = 144
    bitcoin_start_height: int = 0
    is_validator: bool = False
    authorities: tuple[str, ...] = ()
    federation: tuple[str, ...] = ()
    federation_bitcoin_pubkeys: tuple[str, ...] = ()
    engine_url: str = "http://127.0.0.1:8551"
    jwt_secret_file: str | None = None
    validator_key_file: str | None = None
    dev_keys: bool = False


class LinkPeer(msgspec.Struct, frozen=True, kw_only=True):
    """Another node that the host link (``alysd.host_link``) exchanges messages
    with: its name, where it listens, and its CURVE public key (required unless
    its address is loopback)."""

    name: str
    address: tuple[str, int]
    public_key: str | None = None


class NetworkSpec(msgspec.Struct, frozen=True, kw_only=True):
    """Networking between nodes; addresses are (host, port).

    ``node_name``, ``network_key_file`` (the HMAC key every node of the network
    shares), ``envelope_window``, ``replay_cache`` and ``peers`` configure the
    host link that carries messages between the actors of different nodes.
    """

    listen: tuple[str, int] = ("127.0.0.1", 30303)
    external_address: tuple[str, int] | None = None
    bootnodes: tuple[tuple[str, int], ...] = ()
    max_peers: int = 50
    curve_secret_file: str | None = None   # this node's CURVE key (alysctl keygen)
    curve_clients: tuple[str, ...] = ()    # Z85 public keys of the peers it admits
    node_name: str = "node"
    network_key_file: str | None = None
    envelope_window: float = 30.0
    replay_cache: int = 100_000
    peers: tuple[LinkPeer, ...] = ()


class BridgeSpec(msgspec.Struct, frozen=True, kw_only=True):
    """The Bitcoin side of the peg: the node's bitcoind and the peg rules."""

    bitcoin_network: str = "regtest"
    bitcoin_rpc_url: str = "http://127.0.0.1:18443"
    bitcoin_rpc_user: str | None = None
    bitcoin_rpc_password_file: str | None = None
    bridge_contract: str = "0xbBbBBBBbbBBBbbbBbbBbbbbBBbBbbbbBbBbbBBbB"
    pegin_confirmations: int = 6
    pegout_confirmations: int = 3
    federation_threshold: int = 2
    poll_interval: float = 30.0


class StorageSpec(msgspec.Struct, frozen=True, kw_only=True):
    """The chain database; ``data_dir`` None means a directory in the state dir."""

    data_dir: str | None = None
    map_size: int = 16 << 30
    backup_interval: float = 6 * 3600.0
    backup_keep: int = 7


class GovernanceSpec(msgspec.Struct, frozen=True, kw_only=True):
    """The governance stream's endpoints (none: no stream)."""

    endpoints: tuple[str, ...] = ()
    connect_timeout: float = 10.0
    heartbeat_interval: float = 30.0


class SyncSpec(msgspec.Struct, frozen=True, kw_only=True):
    """Catching up with the chain; block production starts once the synced
    fraction reaches ``production_threshold``."""

    production_threshold: float = 0.995
    batch_size: int = 256
    parallel_downloads: int = 16
    checkpoint_interval: int = 100
    checkpoints_kept: int = 10


class LoggingSpec(msgspec.Struct, frozen=True, kw_only=True):
    """The daemon's logging (``alysd --log-level`` overrides ``level``); ``format``
    is ``text`` or ``json`` (one object per line; ``alysd.log_format``)."""

    level: str = "info"
    format: str = "text"
    buffer_lines: int = 1000    # lines of each actor's output kept for alysctl logs


# --- key checkers specific to the node

_HEX = re.compile(r"[0-9a-fA-F]*")

def bls_public_key(value: Any) -> str:
    """A compressed BLS12-381 G1 public key: 48 bytes as 96 hex digits, optional "0x"."""
    digits = value[2:] if isinstance(value, str) and value[:2] in ("0x", "0X") else value
    if not (isinstance(digits, str) and len(digits) == 96 and _HEX.fullmatch(digits)):
        raise ValueError("expected a BLS public key (96 hex digits, optional 0x), "
                         f"got {show(value)}")
    flags = int(digits[:2], 16)
    # Flags in the top three bits: compressed (must be set), infinity (must not), sign of y.
    if not (flags & 0x80 and not flags & 0x40):
        raise ValueError(f"expected a BLS public key, got {show(value)}: not in compressed "
                         "form, or the point at infinity")
    return "0x" + digits.lower()


def secp256k1_public_key(value: Any) -> str:
    """A compressed secp256k1 public key: 33 bytes as 66 hex digits starting 02 or 03."""
    if not (isinstance(value, str) and len(value) == 66 and value[:2] in ("02", "03")
            and _HEX.fullmatch(value)):
        raise ValueError("expected a compressed secp256k1 public key (66 hex digits starting "
                         f"02 or 03), got {show(value)}")
    return value.lower()


_Z85 = re.compile(r"[0-9a-zA-Z.\-:+=^!/*?&<>()\[\]{}@%$#]{40}")


def _z85_key(value: Any) -> str:
    """A CURVE public key in Z85: 40 characters, as ``alysctl keygen`` prints it."""
    if not (isinstance(value, str) and _Z85.fullmatch(value)):
        raise ValueError(f"expected a CURVE public key (40 Z85 characters), got {show(value)}")
    return value


_NODE_NAME = re.compile(r"[a-z][a-z0-9_-]{0,47}")


def node_name(value: Any) -> str:
    """A node's name on the host link: like an actor's name."""
    if not (isinstance(value, str) and _NODE_NAME.fullmatch(value)):
        raise ValueError(f"expected a node name (a-z, then a-z, 0-9, _ or -; at most 48), "
                         f"got {show(value)}")
    return value


_PEER_KEYS = ("name", "address", "public_key")


@spelled_as(lambda peer: {key: (address_text(value) if key == "address" else value)
                          for key, value in msgspec.structs.asdict(peer).items()
                          if value is not None})
def link_peer(value: Any) -> LinkPeer:
    """``{name = "bob", address = "203.0.113.7:30303", public_key = "Z85..."}``."""
    if not isinstance(value, dict):
        raise ValueError(f'expected a table such as {{name = "bob", address = '
                         f'"203.0.113.7:30303", public_key = "..."}}, got {show(value)}')
    unknown = sorted(set(value) - set(_PEER_KEYS))
    if unknown:
        raise ValueError(f"unknown key {unknown[0]!r} (expected {', '.join(_PEER_KEYS)})")
    for key in ("name", "address"):
        if key not in value:
            raise ValueError(f"{key} is missing")
    name, host_port = node_name(value["name"]), address(value["address"])
    public_key = value.get("public_key")
    if public_key is not None:
        _z85_key(public_key)
    elif not is_loopback(host_port[0]):
        raise ValueError(f"peer {name!r}: an address other than loopback needs its public_key "
                         "(CURVE)")
    return LinkPeer(name=name, address=host_port, public_key=public_key)


def evm_address(value: Any) -> str:
    """An EVM address: "0x" and 40 hex digits, kept as written."""
    if not (isinstance(value, str) and len(value) == 42 and value.startswith("0x")
            and _HEX.fullmatch(value[2:])):
        raise ValueError(f"expected an EVM address (0x and 40 hex digits), got {show(value)}")
    return value


_PATH = string("a file path")
_HTTP = ("http", "https")

CHAIN: Schema = {
    "chain_id": integer(1),
    "slot_duration": duration,
    "max_blocks_without_pow": integer(1),
    "required_btc_confirmations": integer(1),
    "bitcoin_start_height": integer(0),
    "is_validator": boolean,
    "authorities": array(bls_public_key, "BLS public keys", key=str.lower),
    "federation": array(evm_address, "EVM addresses", key=str.lower),
    "federation_bitcoin_pubkeys": array(secp256k1_public_key, "secp256k1 public keys",
                                        key=str.lower),
    "engine_url": url(_HTTP, "http://127.0.0.1:8551"),
    "jwt_secret_file": _PATH,
    "validator_key_file": _PATH,
    "dev_keys": boolean,
}
NETWORK: Schema = {
    "listen": listen,
    "external_address": address,
    "bootnodes": array(address, '"host:port" addresses'),
    "max_peers": integer(1),
    "curve_secret_file": _PATH,
    "curve_clients": array(_z85_key, "CURVE public keys", key=lambda k: k),
    "node_name": node_name,
    "network_key_file": _PATH,
    "envelope_window": duration,
    "replay_cache": integer(1000),
    "peers": array(link_peer, "peer tables", key=lambda peer: peer.name),
}
BRIDGE: Schema = {
    "bitcoin_network": choice(BITCOIN_NETWORKS),
    "bitcoin_rpc_url": url(_HTTP, "http://127.0.0.1:18443"),
    "bitcoin_rpc_user": string("a user name"),
    "bitcoin_rpc_password_file": _PATH,
    "bitcoin_rpc_password": refused_inline("write the password to a file and give its path "
                                           "as bitcoin_rpc_password_file"),
    "bridge_contract": evm_address,
    "pegin_confirmations": integer(1),
    "pegout_confirmations": integer(1),
    "federation_threshold": integer(1),
    "poll_interval": duration,
}
STORAGE: Schema = {
    "data_dir": string("a directory path"),
    "map_size": size,
    "backup_interval": duration,
    "backup_keep": integer(1),
}
GOVERNANCE: Schema = {
    "endpoints": array(url(("http", "https", "ws", "wss"), "wss://governance.example:443"),
                       "URLs"),
    "connect_timeout": duration,
    "heartbeat_interval": duration,
}
SYNC: Schema = {
    "production_threshold": number_between(0.95, 1.0),
    "batch_size": integer(1, 10000),
    "parallel_downloads": integer(1, 256),
    "checkpoint_interval": integer(1),
    "checkpoints_kept": integer(1),
}
LOGGING: Schema = {
    "level": choice(LOG_LEVELS),
    "format": choice(LOG_FORMATS),
    "buffer_lines": integer(10, 1_000_000),
}

SECRET_KEYS = frozenset({"bitcoin_rpc_password"})
"""Keys refused because they would hold a secret: their values are never shown."""

SECTIONS: dict[str, tuple[Schema, type[msgspec.Struct]]] = {
    "chain": (CHAIN, ChainSpec),
    "network": (NETWORK, NetworkSpec),
    "bridge": (BRIDGE, BridgeSpec),
    "storage": (STORAGE, StorageSpec),
    "governance": (GOVERNANCE, GovernanceSpec),
    "sync": (SYNC, SyncSpec),
    "logging": (LOGGING, LoggingSpec),
}
"""Section name -> (its schema, the Struct built from it)."""


def check_sections(values: dict[str, dict[str, Any]], issues: list[ConfigIssue]) -> None:
    """Checks across keys: a validator has a signing key, and the federation
    threshold fits the federation. ``values`` maps each section name to its
    accepted values (REFUSED for a refused key, which is not checked again)."""
    chain, bridge = values.get("chain", {}), values.get("bridge", {})
    key_file, dev_keys = chain.get("validator_key_file"), chain.get("dev_keys", False)
    if chain.get("is_validator") is True and key_file is None and dev_keys is False:
        issues.append(ConfigIssue("chain.is_validator", "a validator needs "
                                  "chain.validator_key_file (or chain.dev_keys = true), got true"))
    if dev_keys is True and key_file not in (None, REFUSED):
        issues.append(ConfigIssue("chain.dev_keys", "conflicts with chain.validator_key_file "
                                  f"({key_file!r}): give one of them, got true"))
    network = values.get("network", {})
    listen, curve = network.get("listen"), network.get("curve_secret_file")
    # In every environment: what leaves the host is encrypted and authenticated.
    if isinstance(listen, tuple) and not is_loopback(listen[0]) and curve is None:
        issues.append(ConfigIssue("network.listen", "an address other than loopback needs "
                                  "network.curve_secret_file (CURVE; alysctl keygen makes one), "
                                  f"got {show(f'{listen[0]}:{listen[1]}')}"))
    peers = network.get("peers", ())
    if peers and peers is not REFUSED:
        if network.get("network_key_file") is None:
            issues.append(ConfigIssue("network.peers", "messages to other nodes are sealed with "
                                      "the network's key: give network.network_key_file "
                                      "(alysctl keygen --network-key makes one)"))
        if curve is None and any(peer.public_key for peer in peers):
            issues.append(ConfigIssue("network.peers", "a peer with a public_key is reached "
                                      "over CURVE: give network.curve_secret_file"))
        own = network.get("node_name", NetworkSpec().node_name)
        if any(peer.name == own for peer in peers):
            issues.append(ConfigIssue("network.peers", f"a peer named {own!r} is this node "
                                      "(network.node_name)"))
    threshold = bridge.get("federation_threshold", BridgeSpec().federation_threshold)
    if threshold is REFUSED:
        return
    shown = f"{threshold}{'' if 'federation_threshold' in bridge else ' (default)'}"
    for key, what in (("federation", "addresses"), ("federation_bitcoin_pubkeys", "keys")):
        members = chain.get(key, ())
        if members is not REFUSED and 0 < len(members) < threshold:
            issues.append(ConfigIssue("bridge.federation_threshold", f"expected at most "
                                      f"{len(members)} (the number of chain.{key} {what}), "
                                      f"got {shown}"))


# --- environment rules

def is_loopback(host: str) -> bool:
    """Whether ``host`` names this machine only: "localhost", 127.0.0.0/8 or ::1."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:  # a host name: it may resolve anywhere
        return False


def _host(url_text: str) -> str:
    return urlsplit(url_text).hostname or ""


def _production_findings(config: Config) -> tuple[list[ConfigIssue], list[ConfigIssue]]:
    """What production refuses (errors) and what it only warns about."""
    refused, warned = [], []
    if config.logging.level == "debug":
        refused.append(ConfigIssue("logging.level", "debug logging is refused in production, "
                                   "got 'debug'"))
    chain, bridge = config.chain, config.bridge
    if chain.dev_keys:
        refused.append(ConfigIssue("chain.dev_keys", "the well-known development keys are "
                                   "refused in production, got true"))
    if bridge.bitcoin_network == "regtest":
        refused.append(ConfigIssue("bridge.bitcoin_network", "regtest is refused in production, "
                                   "got 'regtest'"))
    if not (is_loopback(_host(bridge.bitcoin_rpc_url))
            or (bridge.bitcoin_rpc_user and bridge.bitcoin_rpc_password_file)):
        refused.append(ConfigIssue("bridge.bitcoin_rpc_url", "an endpoint on a non-loopback host "
                                   "without bitcoin_rpc_user and bitcoin_rpc_password_file is "
                                   "refused in production, got "
                                   + show(redact(bridge.bitcoin_rpc_url))))
    if not (is_loopback(_host(chain.engine_url)) or chain.jwt_secret_file):
        refused.append(ConfigIssue("chain.engine_url", "an engine on a non-loopback host without "
                                   "chain.jwt_secret_file is refused in production, got "
                                   + show(redact(chain.engine_url))))
    for index, endpoint in enumerate(config.governance.endpoints):
        if urlsplit(endpoint).scheme in ("http", "ws") and not is_loopback(_host(endpoint)):
            refused.append(ConfigIssue(f"governance.endpoints[{index}]", "a connection without "
                                       "TLS to a non-loopback host is refused in production "
                                       "(use https:// or wss://), got " + show(redact(endpoint))))
    listen = config.monitoring.listen
    if listen is not None and not is_loopback(listen[0]):
        warned.append(ConfigIssue("monitoring.listen", "/metrics and /health are served without "
                                  "authentication beyond this machine, got "
                                  + show(address_text(listen))))
    return refused, warned


def environment_rules(config: Config) -> tuple[list[ConfigIssue], list[ConfigIssue]]:
    """(errors, warnings) of ``config`` under its environment: production
    refuses development conveniences, staging warns about the same things, and
    development accepts everything."""
    if config.environment is Environment.DEVELOPMENT:
        return [], []
    refused, warned = _production_findings(config)
    if config.environment is Environment.STAGING:
        return [], refused + warned
    return refused, warned
