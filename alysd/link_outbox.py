"""The host link's outbox: messages accepted for other nodes and not
acknowledged yet, in LMDB in the state dir, so that they outlive the link,
alysd and the host restarting (``alysd.host_link``)."""

from __future__ import annotations

import os

import lmdb
import msgspec

OUTBOX_MAP_SIZE = 1 << 30   # address space only; the file grows with what is pending


class OutRecord(msgspec.Struct, array_like=True, frozen=True):
    """A message accepted for another node, as kept in the outbox."""

    node: str
    message_id: bytes
    from_actor: str
    to_actor: str
    payload: bytes
    sensitive: bool
    accepted_at: float


record_decoder = msgspec.msgpack.Decoder(OutRecord)


class LinkOutbox:
    """Messages accepted for other nodes and not acknowledged yet, in LMDB.

    ``add`` buffers a record; ``commit`` writes what was added in one
    transaction, synced to disk (one fdatasync for the batch, none for the meta
    page: a machine crash may undo the last commit, never corrupt the file),
    so a crash after it loses nothing. The actor's thread adds and commits;
    the transport's removes; LMDB serialises the two writers.
    """

    def __init__(self, path: str):
        os.makedirs(path, mode=0o700, exist_ok=True)
        self._env = lmdb.open(path, map_size=OUTBOX_MAP_SIZE, subdir=True, max_dbs=0,
                              mode=0o600, sync=True, metasync=False, readahead=False)
        self._added: list[OutRecord] = []

    @staticmethod
    def _key(node: str, message_id: bytes) -> bytes:
        return node.encode() + b"/" + message_id

    def add(self, record: OutRecord) -> None:
        self._added.append(record)

    @property
    def uncommitted(self) -> int:
        return len(self._added)

    def commit(self) -> None:
        if not self._added:
            return
        with self._env.begin(write=True) as txn:
            for record in self._added:
                txn.put(self._key(record.node, record.message_id),
                        msgspec.msgpack.encode(record))
        self._added.clear()

    def remove(self, message_ids: dict[str, list[bytes]]) -> None:
        """Delete these (node -> ids) in one transaction."""
        with self._env.begin(write=True) as txn:
            for node, ids in message_ids.items():
                for message_id in ids:
                    txn.delete(self._key(node, message_id))

    def records(self) -> list[OutRecord]:
        with self._env.begin() as txn:
            return [record_decoder.decode(value) for _, value in txn.cursor()]

    def close(self) -> None:
        self._env.close()
