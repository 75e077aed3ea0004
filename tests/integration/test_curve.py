"""CURVE on real TCP sockets: a non-loopback bind needs a key, and only allowed
client keys get through."""

from __future__ import annotations

import os
import stat

import pytest
import zmq

from alysd.curve import CurveRequired, KeyFileError, bind_tcp_router, generate_keypair, load_secret
from alysd.node_sections import is_loopback


@pytest.fixture
def zctx():
    ctx = zmq.Context()
    yield ctx
    ctx.destroy(linger=0)


def test_loopback_addresses():
    assert all(map(is_loopback, ["127.0.0.1", "127.8.0.1", "::1", "localhost"]))
    assert not any(map(is_loopback, ["0.0.0.0", "10.0.0.1", "::", "example.org"]))


def test_a_non_loopback_bind_without_curve_is_refused(zctx):
    with pytest.raises(CurveRequired, match=r"refusing to bind tcp://0\.0\.0\.0:0 without CURVE"):
        bind_tcp_router(zctx, "0.0.0.0", 0, secret_file=None, allowed=[])
    plain = bind_tcp_router(zctx, "127.0.0.1", 0, secret_file=None, allowed=[])
    assert plain.port > 0
    plain.close()


def test_keygen_writes_a_private_secret_and_never_overwrites(tmp_path):
    path = str(tmp_path / "node.key")
    public = generate_keypair(path)
    assert len(public) == 40
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert load_secret(path)[0].decode() == public
    assert sorted(os.listdir(tmp_path)) == ["node.key", "node.key.pub"]
    with pytest.raises(KeyFileError, match="exists"):
        generate_keypair(path)
    with pytest.raises(KeyFileError, match="no secret key"):
        load_secret(path + ".pub")


def _client(zctx, server_public: bytes, key_path: str | None) -> zmq.Socket:
    sock = zctx.socket(zmq.DEALER)
    sock.linger = 0
    if key_path is not None:
        public, secret = load_secret(key_path)
        sock.curve_serverkey = server_public
        sock.curve_publickey, sock.curve_secretkey = public, secret
    return sock


def test_only_allowed_client_keys_get_through(zctx, tmp_path):
    server_key, good, bad = (str(tmp_path / n) for n in ("server.key", "good.key", "bad.key"))
    generate_keypair(server_key)
    good_public = generate_keypair(good)
    generate_keypair(bad)
    server = bind_tcp_router(zctx, "0.0.0.0", 0, secret_file=server_key, allowed=[good_public])
    try:
        server_public = load_secret(server_key)[0]
        endpoint = f"tcp://127.0.0.1:{server.port}"
        for key in (bad, None):        # a wrong key, and no CURVE at all
            intruder = _client(zctx, server_public, key)
            intruder.connect(endpoint)
            intruder.send(b"let me in")
            assert not server.sock.poll(500), "nothing from a refused client reaches the server"
            intruder.close()
        client = _client(zctx, server_public, good)
        client.connect(endpoint)
        client.send(b"hello")
        assert server.sock.poll(5000)
        ident, body = server.sock.recv_multipart()
        assert body == b"hello"
        server.sock.send_multipart([ident, b"welcome"])
        assert client.poll(5000) and client.recv() == b"welcome"
        client.close()
        assert load_secret(bad)[0] in server.refused
    finally:
        server.close()


def test_alysctl_keygen_prints_the_public_key_and_refuses_to_overwrite(tmp_path):
    import subprocess
    import sys

    from tests.conftest import REPO

    env = dict(os.environ, PYTHONPATH=REPO)
    path = str(tmp_path / "node.key")
    made = subprocess.run([sys.executable, "-m", "alysd.ctl", "keygen", path],
                          capture_output=True, text=True, env=env, timeout=30)
    assert made.returncode == 0, made.stderr
    assert made.stdout.strip() == load_secret(path)[0].decode()
    again = subprocess.run([sys.executable, "-m", "alysd.ctl", "keygen", path],
                           capture_output=True, text=True, env=env, timeout=30)
    assert again.returncode == 1 and "never overwrites a key" in again.stderr
