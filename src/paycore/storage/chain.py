"""The hash chain of a shard's history: what each transfer record's hash covers.

Every transfer a shard stores gets a sequence number (1, 2, ... in the shard's
timestamp order, which is its write order) and a hash::

    hash(n) = SHA-256(hash(n - 1) || record(n))
    hash(0) = SHA-256("paycore.chain.v1/genesis" || 0x00 || shard name)

``record`` is the one canonical encoding of the transfer's immutable fields, defined
here and used by the write path (``LedgerTx.write``), the one-off backfill of the
rows written before the chain existed, and the auditor: a compact JSON array
``[1, seq, id, debit_account_id, credit_account_id, amount, currency, code, flags,
pending_id, timeout_seconds, timestamp, metadata]`` (``1``: the encoding's version;
``flags``: the stored bitmask; ``metadata``: null or the object with its keys
sorted, at every depth). JSON strings are quoted and escaped and the array has a fixed
arity, so two different records never encode to the same bytes.

The shard keeps its head (the last sequence number and hash) in ``shard_meta``,
written in the same transaction as the transfers it covers. See
``docs/audit-trail.md`` for what the chain proves and what it cannot.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import msgspec

from paycore.ledger.model import Transfer
from paycore.storage.codec import transfer_flags_bits

__all__ = [
    "CHAIN_VERSION",
    "ChainHead",
    "ChainLinker",
    "chain_link",
    "genesis_hash",
    "record_bytes",
]

CHAIN_VERSION = 1

_encoder = msgspec.json.Encoder(order="sorted")
_sha256 = hashlib.sha256


class ChainHead(msgspec.Struct, frozen=True):
    """A point of a shard's chain: the record ``seq`` and its hash (hex), as shown and
    kept in checkpoint files; ``seq`` 0 is the genesis (no record yet)."""

    seq: int
    hash: str


def genesis_hash(shard: str) -> bytes:
    """The hash a shard's chain starts from, bound to the shard's name (its identity in
    the cluster: slot map, clearing accounts and outbox rows all name it)."""
    return _sha256(b"paycore.chain.v1/genesis\x00" + shard.encode()).digest()


def record_bytes(seq: int, t: Transfer) -> bytes:
    """The canonical encoding of transfer ``t`` at position ``seq`` (module docstring)."""
    return _encoder.encode(
        (
            CHAIN_VERSION,
            seq,
            t.id,
            t.debit_account_id,
            t.credit_account_id,
            t.amount,
            t.currency,
            t.code,
            transfer_flags_bits(t.flags),
            t.pending_id,
            t.timeout_seconds,
            t.timestamp,
            t.metadata,
        )
    )


def chain_link(previous: bytes, seq: int, t: Transfer) -> bytes:
    """The hash of record ``seq`` (transfer ``t``) following a record hashed ``previous``."""
    return _sha256(previous + record_bytes(seq, t)).digest()


class ChainLinker:
    """A shard's head inside one write transaction: extends it by the transfers written.

    Loaded when the transaction takes the shard's write turn (so no other writer moves
    the head meanwhile) and written back at its commit when ``moved``; dropped with a
    rollback.
    """

    __slots__ = ("hash", "seq", "start_seq")

    def __init__(self, shard: str, seq: int, digest: bytes | None) -> None:
        self.seq = seq
        self.start_seq = seq
        self.hash = genesis_hash(shard) if digest is None else bytes(digest)

    @property
    def moved(self) -> bool:
        return self.seq != self.start_seq

    def extend(self, transfers: Sequence[Transfer]) -> list[tuple[int, bytes]]:
        """Chain ``transfers`` (in timestamp order) after the head: their (seq, hash)."""
        links = []
        seq, digest = self.seq, self.hash
        for t in transfers:
            seq += 1
            digest = _sha256(digest + record_bytes(seq, t)).digest()
            links.append((seq, digest))
        self.seq, self.hash = seq, digest
        return links

    def head(self) -> ChainHead:
        return ChainHead(self.seq, self.hash.hex())
